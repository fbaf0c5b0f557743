"""Client routing: where a request goes (an endpoint runner and a remote).

Owns the choice of endpoint for each request (a UDP endpoint with a free
message ID for the destination, a DTLS endpoint likewise for ``coaps``, or
the Context's stream endpoint for
``coap+tcp``/``coaps+tcp``/``coap+ws``/``coaps+ws``), the DNS cache of host
names (``dns_ttl``; concurrent lookups of one name share one resolution) and
the "scheme not supported" errors. The route of the last stream Origin
is remembered (copies of one message share their Origin). Used by the
Context's request path; must not send or wait for anything but a name
resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..errors import CoapError, LocalProtocolError, UnresolvableHostError, UnsupportedTransportError
from ..message import Message
from ..remote import DatagramRemote
from ..transports.stream import STREAM_SCHEMES, StreamEndpoint
from ..transports.websocket import require_wsproto
from ..uri import Origin, is_ip_literal

if TYPE_CHECKING:
    from .._runner import EndpointRunner
    from ..transports.base import DatagramNetwork
    from ..transports.dtls import DtlsEndpoint

__all__ = ["RequestRouter"]

#: The URI schemes a Context can send to.
_SUPPORTED_SCHEMES = frozenset({"coap", *STREAM_SCHEMES})


class RequestRouter:
    """The routes of one Context's requests (see the module).

    ``runners`` is the Context's list of UDP endpoint runners (shared, grows
    as endpoints open); :meth:`set_streams` adds the stream endpoint.
    """

    def __init__(
        self, network: DatagramNetwork, runners: list[EndpointRunner], dns_ttl: float
    ) -> None:
        self._network = network
        self._runners = runners
        self._dns_ttl = dns_ttl
        self._dns: dict[str, tuple[float, list[str]]] = {}
        #: Resolutions in progress: the event set when done, and its outcome.
        self._resolving: dict[str, tuple[trio.Event, list[list[str] | OSError]]] = {}
        self._websockets_checked = False
        self._stream: StreamEndpoint | None = None
        self._stream_runner: EndpointRunner | None = None
        #: The Origin of the last stream request and its route (see route_now).
        self._stream_origin: Origin | None = None
        self._stream_route: tuple[EndpointRunner, DatagramRemote] | None = None
        #: The DTLS endpoints (coaps://) and their runners; empty without credentials.
        self._dtls_runners: list[EndpointRunner] = []
        self._dtls: dict[EndpointRunner, DtlsEndpoint] = {}

    def set_dtls(self, routes: list[tuple[DtlsEndpoint, EndpointRunner]]) -> None:
        """Route ``coaps`` to these DTLS endpoints."""
        self._dtls = {runner: endpoint for endpoint, runner in routes}
        self._dtls_runners = [runner for _, runner in routes]

    def set_streams(self, endpoint: StreamEndpoint, runner: EndpointRunner) -> None:
        """Route ``coap+tcp`` and the other RFC 8323 schemes to ``endpoint``."""
        self._stream, self._stream_runner = endpoint, runner

    def route_now(self, message: Message) -> tuple[EndpointRunner, DatagramRemote] | None:
        """Where to send ``message``: an endpoint runner and the remote; None when a
        host name must be resolved first (then :meth:`route_resolved`).

        Raises :class:`~coap_trio.errors.LocalProtocolError` for a message that
        is no request or has no destination, and
        :class:`~coap_trio.errors.UnsupportedTransportError` for a scheme
        without a transport here.
        """
        if not 1 <= message.code <= 31:
            raise LocalProtocolError(f"{message.code} is not a request code")
        remote = message.remote
        if remote is self._stream_origin and remote is not None:
            return self._stream_route  # the same (immutable) Origin as last time
        if isinstance(remote, DatagramRemote):
            if remote.scheme == "coaps":
                return self.pick(lambda runner: remote, self._dtls_endpoints())
            return self.pick(lambda runner: remote)
        if not isinstance(remote, Origin):
            raise LocalProtocolError("the request has no destination: pass uri= or remote=")
        if remote.scheme not in _SUPPORTED_SCHEMES:
            if remote.scheme == "coaps":
                return self._route_dtls(remote)
            raise UnsupportedTransportError(
                f"{remote.scheme}:// is not supported (coap:// over UDP, coaps:// over DTLS, "
                "coap+tcp, coaps+tcp, coap+ws, coaps+ws)"
            )
        if remote.scheme in STREAM_SCHEMES:  # a connection, opened (and resolved) on first use
            stream, runner = self._stream, self._stream_runner
            if stream is None or runner is None:
                raise UnsupportedTransportError("this context has no stream transports")
            if remote.scheme.endswith("+ws") and not self._websockets_checked:
                try:
                    require_wsproto()
                except ImportError as error:
                    raise UnsupportedTransportError(str(error)) from None
                self._websockets_checked = True
            try:
                route = runner, stream.remote_for(remote.host, remote.port, remote.scheme)
            except ValueError as error:
                raise LocalProtocolError(str(error)) from None
            # Requests made from copies of one message share its Origin: remembered.
            self._stream_origin, self._stream_route = remote, route
            return route
        host = remote.host
        if not is_ip_literal(host):
            cached = self._dns.get(host)
            if cached is None or cached[0] <= trio.current_time():
                return None
            host = cached[1][0]
        port = remote.port
        return self.pick(lambda runner: runner.remote_for(host, port))

    def _dtls_endpoints(self) -> list[EndpointRunner]:
        """The DTLS runners; UnsupportedTransportError when the Context has none."""
        if not self._dtls_runners:
            raise UnsupportedTransportError(
                "coaps:// needs DTLS credentials: open_context(dtls=DtlsCredentials(...))"
            )
        return self._dtls_runners

    def _route_dtls(self, origin: Origin) -> tuple[EndpointRunner, DatagramRemote] | None:
        """A coaps:// request: a DTLS endpoint, and the remote (None: resolve first)."""
        runners = self._dtls_endpoints()
        host, port = origin.host, origin.port
        if is_ip_literal(host):
            return self.pick(lambda runner: runner.remote_for(host, port), runners)
        cached = self._dns.get(host)
        if cached is None or cached[0] <= trio.current_time():
            return None
        address = cached[1][0]
        endpoints = self._dtls
        return self.pick(
            lambda runner: endpoints[runner].remote_for_name(address, port, host), runners
        )

    def pick(
        self,
        make: Callable[[EndpointRunner], DatagramRemote],
        runners: list[EndpointRunner] | None = None,
    ) -> tuple[EndpointRunner, DatagramRemote]:
        """The first endpoint (of ``runners``, default: the UDP ones) that can reach the
        destination and has a free MID for it."""
        now = trio.current_time()
        fallback: tuple[EndpointRunner, DatagramRemote] | None = None
        error: OSError | None = None
        for runner in self._runners if runners is None else runners:
            try:
                remote = make(runner)
            except OSError as exc:
                error = exc
                continue
            if runner.machine.mid_available(remote, now):
                return runner, remote
            if fallback is None:
                fallback = (runner, remote)
        if fallback is not None:
            return fallback
        raise LocalProtocolError(f"no endpoint of this context can reach it: {error}")

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host``: cached for ``dns_ttl``; concurrent lookups share one."""
        while True:
            cached = self._dns.get(host)
            if cached is not None and cached[0] > trio.current_time():
                return cached[1]
            pending = self._resolving.get(host)
            if pending is None:
                break
            event, outcome = pending
            await event.wait()
            if outcome and isinstance(outcome[0], OSError):
                raise outcome[0]
        event, outcome = self._resolving[host] = (trio.Event(), [])
        try:
            addresses = await self._network.resolve(host, port)
        except OSError as error:
            outcome.append(error)
            raise
        finally:
            del self._resolving[host]
            event.set()
        self._dns[host] = (trio.current_time() + self._dns_ttl, addresses)
        outcome.append(addresses)
        return addresses

    async def route_resolved(self, origin: Origin) -> tuple[EndpointRunner, DatagramRemote]:
        """Resolve ``origin``'s host name (cached) and pick an endpoint for it."""
        try:
            addresses = await self.resolve(origin.host, origin.port)
            if origin.scheme == "coaps":
                endpoints, host, port = self._dtls, origin.host, origin.port
                return self.pick(
                    lambda r: endpoints[r].remote_for_name(addresses[0], port, host),
                    self._dtls_endpoints(),
                )
            return self.pick(lambda r: r.remote_for(addresses[0], origin.port))
        except OSError as error:
            raise UnresolvableHostError(f"cannot resolve {origin.host!r}: {error}") from None
        except CoapError as error:
            raise UnresolvableHostError(str(error)) from None
