"""A proxy server in one call: the serving Context, the client Context and the HTTP side.

Owns :func:`open_proxy` and the :class:`ProxyServer` it yields: a
:class:`~coap_trio.context.Context` serving a :class:`~coap_trio.resource.Site`
whose ``proxy`` is a :class:`~coap_trio.proxy.forward.ForwardProxy`, a
second Context the requests go upstream from, the
:class:`~coap_trio.proxy.upstream.Upstream` between them (with its cache and
its task for shared observations) and, with ``http_bind``, the HTTP-CoAP
cross-proxy (:mod:`coap_trio.proxy.http`, the ``http`` extra). Everything
stops when the block is left.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ..context import Context, open_context
from ..remote import DatagramRemote
from ..resource import Site
from ..transports.base import DatagramNetwork
from .allow import AllowList
from .cache import ResponseCache
from .forward import ForwardProxy
from .upstream import DEFAULT_HOP_LIMIT, DEFAULT_TIMEOUT, Upstream

__all__ = ["DEFAULT_NSTART", "ProxyServer", "open_proxy"]

#: Requests the upstream Context keeps in flight per destination (RFC 7252
#: §4.7's NSTART, 1 for a single client). A proxy sends the requests of many
#: clients: with 1, one slow request would hold up every other one to the same
#: server, and proxies forwarding to each other would wait on each other until
#: their timeouts.
DEFAULT_NSTART = 32


@attrs.define
class ProxyServer:
    """What :func:`open_proxy` runs (all of it stops when its block is left)."""

    #: The Context serving CoAP clients (its site routes Proxy-Uri requests to :attr:`forward`).
    context: Context
    #: The Context the requests go upstream from.
    client: Context
    #: Forwarding, cache, Hop-Limit and shared observations.
    upstream: Upstream
    #: The forward proxy resource.
    forward: ForwardProxy
    #: The served site: add resources or reverse proxies to it.
    site: Site
    #: The ``(host, port)`` of every HTTP listener (empty without ``http_bind``).
    http_addresses: list[tuple[str, int]] = attrs.Factory(list)

    @property
    def addresses(self) -> list[DatagramRemote]:
        """The bound UDP addresses of :attr:`context` (then its stream listeners)."""
        return [*self.context.addresses, *self.context.stream_addresses]


@asynccontextmanager
async def open_proxy(
    bind: tuple[str, int] | Sequence[tuple[str, int]],
    *,
    allow: AllowList | Iterable[str] = (),
    cache: ResponseCache | bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    hop_limit: int = DEFAULT_HOP_LIMIT,
    via: str | None = None,
    site: Site | None = None,
    http_bind: tuple[str, int] | Sequence[tuple[str, int]] | None = None,
    http_to_http: bool = False,
    network: DatagramNetwork | None = None,
    client_bind: tuple[str, int] | None = None,
    client_endpoints: int = 1,
    nstart: int = DEFAULT_NSTART,
    **context_options: Any,
) -> AsyncIterator[ProxyServer]:
    """Serve a forward proxy on ``bind`` while the block runs; yields the :class:`ProxyServer`.

    ``allow`` names the destinations served (see
    :class:`~coap_trio.proxy.allow.AllowList`; none by default). ``cache``
    is a :class:`~coap_trio.proxy.cache.ResponseCache`, True (the default:
    one with its default bounds) or False (no cache). ``timeout``, ``hop_limit`` and
    ``via`` go to the :class:`~coap_trio.proxy.upstream.Upstream`. ``site``
    is served beside the proxy (default: an empty Site; its ``proxy`` is
    replaced). ``http_bind`` also listens for HTTP/1.1 (the cross-proxy,
    RFC 8075); with ``http_to_http`` CoAP clients may reach ``http://``
    targets too (Proxy-Scheme ``http``). ``network`` (default real UDP) is
    used by both Contexts; the upstream one sends from ``client_endpoints``
    local ports (the first bound to ``client_bind`` when given, else any
    address, any port; RFC 7252 §4.4 lets one port send about 265 requests
    per second to one destination, sustained: a busy proxy needs more) and
    allows ``nstart`` requests in flight per destination (RFC 7252 §4.7; see
    :data:`DEFAULT_NSTART`). Other keywords go to the serving
    :func:`~coap_trio.context.open_context`.
    """
    served = site if site is not None else Site()
    if cache is True:
        cache = ResponseCache()
    body_error: BaseException | None = None
    async with (
        open_context(
            network=network,
            bind=client_bind,
            client_endpoints=client_endpoints if client_bind is None else client_endpoints - 1,
        ) as client,
        trio.open_nursery() as nursery,
    ):
        client.set_nstart(nstart)
        http_forwarder = None
        if http_to_http:
            from .http import forward_to_http

            http_forwarder = forward_to_http
        upstream = Upstream(
            client,
            cache=cache if isinstance(cache, ResponseCache) else None,
            timeout=timeout,
            hop_limit=hop_limit,
            via=via,
            http=http_forwarder,
        )
        forward = ForwardProxy(upstream, allow)
        served.proxy = forward
        await nursery.start(upstream.run)
        try:
            async with open_context(
                bind=bind, site=served, network=network, **context_options
            ) as context:
                server = ProxyServer(context, client, upstream, forward, served)
                if http_bind is not None:
                    from .http import serve_http

                    server.http_addresses = await nursery.start(serve_http, forward, http_bind)
                yield server
        except BaseException as error:  # re-raised below, outside the nursery
            body_error = error
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
