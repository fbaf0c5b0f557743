"""Reverse proxies: a remote server, or a path of one, mounted into a local Site.

Owns :class:`ReverseProxy`, a resource added to a
:class:`~coap_trio.resource.Site` as a subtree::

    site.add(["sensors"], ReverseProxy(upstream, "coap://[2001:db8::1]/s"), subtree=True)

A request for ``/sensors/a/b?x`` is sent on as ``coap://[2001:db8::1]/s/a/b?x``
(the base's path, then the rest of the request's; the base's query, then
the request's), through the :class:`~coap_trio.proxy.upstream.Upstream`
with everything it does (Hop-Limit, cache, error mapping, shared
observations). The client sees an ordinary resource; Location-Path and
Location-Query of a 2.01 are passed on as the remote server wrote them.
"""

from __future__ import annotations

from ..interfaces import ServerObservation
from ..message import Message
from ..options import Options
from ..uri import build_uri, split_uri
from .upstream import Upstream

__all__ = ["ReverseProxy"]


class ReverseProxy:
    """Serves what ``base`` (an absolute CoAP URI) serves, below where it is mounted.

    Raises :class:`~coap_trio.errors.InvalidURIError` for a ``base`` that is
    no CoAP URI.
    """

    def __init__(self, upstream: Upstream, base: str) -> None:
        self.upstream = upstream
        origin, uri_host, path, query = split_uri(base)
        self._origin = origin
        self._host = uri_host
        self._path = tuple(path[:-1] if path and path[-1] == "" else path)
        self._query = tuple(query)
        #: The base URI, normalized.
        self.base = self.target_for((), ())

    def target_for(self, path: tuple[str, ...], query: tuple[str, ...]) -> str:
        """The remote URI of a request for ``path`` (below the mount point) and ``query``."""
        options = Options()
        if self._host is not None:
            options.uri_host = self._host
        if self._path or path:
            options.uri_path = (*self._path, *path)
        if self._query or query:
            options.uri_query = (*self._query, *query)
        return build_uri(options, self._origin)

    def target(self, request: Message) -> str:
        """The remote URI ``request`` (as the Site routed it) is forwarded to."""
        return self.target_for(request.opt.uri_path, request.opt.uri_query)

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        """True: uploads are assembled before they go upstream, responses sliced after."""
        return True

    async def render(self, request: Message) -> Message:
        """Forward ``request`` to the remote server; its response for the client."""
        target = self.target(request)
        if request.opt.observe is not None:  # a registration, or a deregistration
            latest = self.upstream.current(request, target)
            if latest is not None:
                return latest
        return await self.upstream.forward(request, target)

    async def add_observation(self, request: Message, observation: ServerObservation) -> None:
        """Join the shared upstream observation of the remote resource (if observable)."""
        await self.upstream.observe(request, self.target(request), observation)
