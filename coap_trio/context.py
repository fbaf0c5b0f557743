"""The Context: the nursery that owns every endpoint, timer and handler of coap_trio.

Owns the wiring of the trio shell around the sans-I/O messaging machines
(``coap_trio.protocol.machine.Machine``): for each transport endpoint an
endpoint runner (``coap_trio._runner``) with one receive task (the
endpoint's ``run``) and one timer task, the client side (``ClientCore`` of
``coap_trio._client``: requests in flight, routing, block-wise transfers,
observations) and the server side (``RequestDispatcher`` of
``coap_trio._server``: a fixed pool of handler tasks fed by one bounded
queue, observations served, block-wise serving through the block-wise
server and the responder). Received datagrams are processed synchronously in
the receive task (no task spawn or channel hop per datagram): a response
ends its waiting request there, a request goes to the handler queue. The
public methods (:meth:`Context.request`, :meth:`Context.observe`, ...)
delegate to the two sides.

Resource handling: leaving ``async with open_context()`` cancels every task,
closes every socket, and fails every unfinished request with
:class:`~coap_trio.errors.RequestCancelledError`; nothing of ours outlives it.

Error handling: bad input from the network never reaches this level as an
exception (the messaging layer answers or counts it). A handler's exception
becomes 5.00 Internal Server Error without details on the wire and is
logged. Errors of requests are raised from ``await request.response``, as
themselves.

Full queues: when the handler queue is full, a CON request is
answered 5.03 Service Unavailable (with Max-Age) and a NON request is dropped;
both are counted (``ContextStatistics``). A dropped request's MID is not
recorded, so its retransmission is processed as new.

Many requests to one peer: the message-ID rule caps one local endpoint at
65,536 messages per remote per EXCHANGE_LIFETIME (~265/s sustained). Open the
context with ``client_endpoints=N`` to spread requests over N local ports:
each new request goes out from the first endpoint that has a free MID
towards its destination.
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import random
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from ._client.blockwise import Progress
from ._client.core import ClientCore
from ._client.multicast import GroupResponses, group_request
from ._client.observation import Observation
from ._client.observe import observe_resource
from ._client.request import Request
from ._client.routing import RequestRouter
from ._client.stream import ResponseStream, open_stream
from ._runner import EndpointRunner
from ._server.blockwise import BlockwiseServer
from ._server.dispatch import RequestDispatcher
from ._server.echo import AmplificationGuard
from ._server.observations import ServerObservations
from ._server.responder import DEFAULT_MAX_PAYLOAD, Responder
from .interfaces import Resource
from .message import Message
from .numbers.codes import Code
from .numbers.optionnumbers import OptionNumber
from .protocol.config import BlockwiseConfig, MessagingConfig, MessagingStatistics
from .protocol.machine import Machine
from .protocol.messaging import GroupMessaging, Messaging
from .protocol.stream_messaging import StreamMessaging
from .remote import DatagramRemote
from .transports.base import DatagramEndpoint, DatagramNetwork, EndpointStatistics
from .transports.stream import STREAM_SCHEMES, StreamEndpoint, StreamLimits, StreamStatistics
from .transports.websocket import require_wsproto

if TYPE_CHECKING:
    from .oscore_credentials import CredentialsMap
    from .protocol.dtls.credentials import DtlsCredentials
    from .protocol.oscore.context import SecurityContext
    from .protocol.oscore.edhoc import EdhocCredentials
    from .protocol.oscore.engine import OscoreStatistics
    from .transports.dtls import DtlsEndpoint, DtlsEndpointStatistics, DtlsLimits

__all__ = ["Context", "ContextStatistics", "bind_endpoints", "open_context"]


#: ``Code.GET`` as a module constant: an Enum class attribute costs ~0.1 µs on
#: Python 3.11 (the metaclass' ``__getattr__``), and ``get`` runs per request.
_GET = Code.GET


@attrs.frozen
class ContextStatistics:
    """Counters of a Context: per endpoint, and of its request handling."""

    #: One entry per endpoint, in the order they were opened.
    endpoints: tuple[EndpointStatistics, ...]
    #: The messaging counters of each endpoint, same order.
    messaging: tuple[MessagingStatistics, ...]
    #: Requests waiting for a handler right now.
    handler_queue_depth: int
    #: CON requests answered 5.03 because the handler queue was full.
    overloaded_responses: int
    #: NON requests dropped because the handler queue was full.
    dropped_requests: int
    #: Handlers that raised (answered 5.00).
    handler_errors: int
    #: Requests answered 4.13 because their payload exceeded ``max_request_payload``.
    oversized_requests: int
    #: Server: Block1 uploads being assembled right now, and the bytes they hold.
    blockwise_assemblies: int
    blockwise_assembly_bytes: int
    #: Server: Block1 uploads completed and handed to their resource.
    blockwise_uploads_completed: int
    #: Server: uploads answered 4.13 (body, or its announced Size1, over ``max_body_size``).
    blockwise_oversized: int
    #: Server: unfinished uploads dropped before their lifetime because a bound was reached.
    blockwise_evicted: int
    #: Server: representations kept for Block2 transfers in progress, and their bytes.
    cached_representations: int
    cached_representation_bytes: int
    #: Server: kept representations dropped before their lifetime because a bound was reached.
    cached_representations_evicted: int
    #: Server: later blocks asked for after their representation was dropped (rendered
    #: again for GET/FETCH, 4.08 otherwise).
    blockwise_cache_misses: int
    #: Server: observations being served right now (RFC 7641).
    observations: int
    #: Server: registrations served without Observe because a limit was reached.
    observations_refused: int
    #: Client: requests started and not ended yet (block-wise transfers count once).
    requests_in_flight: int
    #: Client: block-wise uploads holding a Request-Tag right now (RFC 9175).
    upload_tags_in_use: int
    #: The messaging counters of the reliable transports (RFC 8323: TCP, TLS,
    #: WebSockets; all their connections), once one is in use; else None.
    stream_messaging: MessagingStatistics | None = None
    #: The messaging counters of each multicast group endpoint (``multicast_groups``).
    group_messaging: tuple[MessagingStatistics, ...] = ()
    #: Server: requests received through a group that got no answer because it
    #: would have been an error response (RFC 7252 §8.2), or declined.
    multicast_unanswered: int = 0
    #: Server: responses replaced by a 4.01 Echo challenge because they were larger
    #: than ``amplification_factor`` times the request of an unverified client.
    amplification_challenges: int = 0
    #: The counters of OSCORE (RFC 8613), both sides: protected, verified,
    #: failures by kind, Echo challenges; None for a Context without credentials.
    oscore: OscoreStatistics | None = None
    #: Server: requests refused before any handler by OSCORE (a failed
    #: verification, or no OSCORE for a resource that requires it).
    oscore_refused: int = 0
    #: Client: responses and notifications discarded because they did not verify.
    oscore_rejected_responses: int = 0
    #: Server: EDHOC exchanges (RFC 9528) completed, refused (answered 4.00),
    #: waiting for their message_3 now, and dropped before it (expired or evicted).
    edhoc_completed: int = 0
    edhoc_refused: int = 0
    edhoc_pending: int = 0
    edhoc_evicted: int = 0
    #: The messaging counters of each DTLS endpoint (``coaps://``), in the order
    #: of :attr:`Context.dtls_addresses`.
    dtls_messaging: tuple[MessagingStatistics, ...] = ()
    #: The sessions of each DTLS endpoint, same order: sessions and handshakes
    #: now, handshakes completed and failed, cookies sent, sessions refused at
    #: a limit, records dropped (tampered, replayed, malformed)...
    dtls: tuple[DtlsEndpointStatistics, ...] = ()


class Context:
    """A CoAP endpoint: client (:meth:`request`, :meth:`get`...) and, with a site, server.

    Create it with :func:`open_context`; it is the
    :class:`coap_trio.interfaces.RequestProvider` of the seed contracts.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        network: DatagramNetwork,
        config: MessagingConfig,
        site: Resource | None,
        rng: random.Random | None,
        dns_ttl: float,
        max_request_payload: int = DEFAULT_MAX_PAYLOAD,
        max_observations: int = 100_000,
        max_observations_per_remote: int = 1_000,
        blockwise: BlockwiseConfig | None = None,
        multicast_leisure: float = 5.0,
        amplification_factor: float | None = None,
        oscore: CredentialsMap | None = None,
        edhoc: EdhocCredentials | None = None,
    ) -> None:
        self._nursery = nursery
        blockwise_config = blockwise or BlockwiseConfig()
        self._network = network
        self._config = config
        self._rng = rng
        self._runners: list[EndpointRunner] = []
        responder = Responder(site, max_payload=max_request_payload) if site is not None else None
        observations = ServerObservations(nursery, max_observations, max_observations_per_remote)
        block_server = BlockwiseServer(blockwise_config, trio.current_time)
        router = RequestRouter(network, self._runners, dns_ttl)
        #: Received requests: prechecks, the handler pool, block-wise, observations.
        self._server: RequestDispatcher
        guard = (
            AmplificationGuard(trio.current_time, factor=amplification_factor)
            if amplification_factor is not None
            else None
        )
        #: Requests in flight, routing, block-wise transfers, observations' plumbing.
        self._client: ClientCore
        if oscore is None and edhoc is not None:
            from . import oscore_credentials

            oscore = oscore_credentials.CredentialsMap({})
        if oscore is None:
            self._server = RequestDispatcher(
                nursery,
                site,
                responder,
                observations,
                block_server,
                leisure=multicast_leisure,
                rng=rng,
                amplification=guard,
            )
            self._client = ClientCore(nursery, router, blockwise_config)
        else:
            # (OSCORE needs the oscore extra: imported only when credentials are given.)
            from ._client.oscore import OscoreClientCore
            from ._server.oscore import OscoreDispatcher
            from .protocol.oscore.engine import OscoreEngine

            responders = None
            identities = oscore.edhoc_identities() if site is not None else {}
            if site is not None and (edhoc is not None or identities):
                from .protocol.oscore.edhoc import EdhocResponders

                default = edhoc if edhoc is not None else next(iter(identities.values()))
                responders = EdhocResponders(default, identities=identities)
            engine = OscoreEngine(oscore.contexts)
            self._server = OscoreDispatcher(
                nursery,
                site,
                responder,
                observations,
                block_server,
                engine,
                leisure=multicast_leisure,
                rng=rng,
                edhoc=responders,
                amplification=guard,
            )
            self._client = OscoreClientCore(
                nursery, router, blockwise_config, engine, oscore.security_for, edhoc
            )
        #: The credentials given to open_context (None: no OSCORE).
        self._credentials = oscore
        #: Every TCP/TLS/WebSocket connection and listener (RFC 8323), and its runner.
        self._stream: StreamEndpoint | None = None
        self._stream_runner: EndpointRunner | None = None
        #: The endpoints of the multicast groups joined (server side, RFC 7252 §8.2).
        self._group_runners: list[EndpointRunner] = []
        #: The DTLS endpoints (coaps://) and their runners.
        self._dtls: list[tuple[DtlsEndpoint, EndpointRunner]] = []

    # -- setup ---------------------------------------------------------------------

    def _runner(self, endpoint: DatagramEndpoint, machine: Machine) -> EndpointRunner:
        return EndpointRunner(endpoint, machine, self._client, self._server)

    async def _open_endpoint(self, host: str, port: int) -> EndpointRunner:
        return await self._start_endpoint(self._network.open_endpoint(host, port))

    async def _start_endpoint(self, endpoint: DatagramEndpoint) -> EndpointRunner:
        runner = self._runner(endpoint, Messaging(self._config, self._rng))
        self._runners.append(runner)
        await self._nursery.start(_run_endpoint, runner)
        self._nursery.start_soon(runner.run_timers)
        return runner

    async def _join_group(self, group: str, port: int, interface: str | None) -> None:
        """Join ``group`` on ``port``; answers go out through a unicast endpoint of its family."""
        ipv6 = ipaddress.ip_address(group.partition("%")[0]).version == 6
        reply = None
        for runner in self._runners:
            host = runner.endpoint.local_address.host
            if (":" in host) == ipv6 or (not ipv6 and host == "::"):
                reply = runner.endpoint
                break
        if reply is None:
            reply = (await self._open_endpoint("::" if ipv6 else "0.0.0.0", 0)).endpoint
        endpoint = self._network.open_group_endpoint(group, port, reply, interface)
        runner = self._runner(endpoint, GroupMessaging(self._config, self._rng))
        self._group_runners.append(runner)
        await self._nursery.start(_run_endpoint, runner)
        self._nursery.start_soon(runner.run_timers)

    async def _open_streams(
        self,
        listeners: list[tuple[str, int, str, ssl.SSLContext | None]],
        limits: StreamLimits,
        client_ssl_context: ssl.SSLContext | None,
    ) -> None:
        """Bind the stream listeners and start the one runner of every connection."""
        from .transports.tcp import framer_for

        endpoint = StreamEndpoint(framer_for, limits=limits, client_ssl_context=client_ssl_context)
        if any(scheme.endswith("+ws") for _, _, scheme, _ in listeners):
            require_wsproto()
        for host, port, scheme, context in listeners:
            await _listen(endpoint, host, port, scheme, context)
        machine = StreamMessaging(
            self._config,
            self._rng,
            max_message_size=limits.max_message_size,
            block_wise_transfer=limits.block_wise_transfer,
        )
        runner = self._runner(endpoint, machine)
        endpoint.on_connection_made = runner.connection_made
        endpoint.on_connection_lost = runner.connection_lost
        self._stream, self._stream_runner = endpoint, runner
        self._client.router.set_streams(endpoint, runner)
        await self._nursery.start(_run_endpoint, runner)
        self._nursery.start_soon(runner.run_timers)

    async def _open_dtls(
        self,
        binds: list[tuple[str, int]],
        credentials: DtlsCredentials,
        limits: DtlsLimits | None,
    ) -> None:
        """Bind the DTLS endpoints (or, without ``binds``, one to send from); route coaps."""
        from .transports.dtls import DtlsEndpoint

        endpoints = [
            DtlsEndpoint(inner, credentials, limits=limits)
            for host, port in binds
            for inner in await bind_endpoints(self._network, host, port)
        ]
        if not endpoints:  # a client: it serves no handshakes
            inner = self._network.open_endpoint("::", 0)
            endpoints.append(DtlsEndpoint(inner, credentials, limits=limits, serve=False))
        for endpoint in endpoints:
            endpoint.keep_alive = self._server.observations.has_remote
            runner = self._runner(endpoint, Messaging(self._config, self._rng))
            self._dtls.append((endpoint, runner))
            await self._nursery.start(_run_endpoint, runner)
            self._nursery.start_soon(runner.run_timers)
        self._client.router.set_dtls(self._dtls)

    # -- introspection -------------------------------------------------------------

    @property
    def addresses(self) -> list[DatagramRemote]:
        """The local address of every UDP endpoint, in the order they were bound.

        Each is a :class:`~coap_trio.remote.DatagramRemote`: ``.host`` is
        the IP address as text (``"::1"``), ``.port`` the real port (also
        when port 0 was asked for), ``.scheme`` ``"coap"``, and
        ``.uri_base``, which ``str()`` gives too, the start of a URI for it
        (``"coap://[::1]:49152"``; the default port is left out).
        """
        return [runner.endpoint.local_address for runner in self._runners]

    @property
    def stream_addresses(self) -> list[DatagramRemote]:
        """The address of every TCP/TLS/WebSocket listener, with its real port and scheme.

        :class:`~coap_trio.remote.DatagramRemote` objects as in
        :attr:`addresses`: ``str()`` of one is e.g. ``"coap+tcp://[::1]:49153"``.
        """
        return self._stream.addresses if self._stream is not None else []

    @property
    def dtls_addresses(self) -> list[DatagramRemote]:
        """The address of every DTLS endpoint (``dtls_bind``), with its real port.

        :class:`~coap_trio.remote.DtlsRemote` objects, scheme ``coaps``:
        ``str()`` of one is e.g. ``"coaps://[::1]:49154"``. Empty without
        ``dtls_bind`` (a client's DTLS endpoint is not listed).
        """
        return [endpoint.local_address for endpoint, _ in self._dtls if endpoint.serving]

    @property
    def stream_statistics(self) -> StreamStatistics | None:
        """The connection counters of the reliable transports (RFC 8323)."""
        return self._stream.connection_statistics if self._stream is not None else None

    @property
    def statistics(self) -> ContextStatistics:
        """A snapshot of the counters."""
        server = self._server
        blockwise = server.blockwise
        responder = server.responder
        return ContextStatistics(
            endpoints=tuple(r.endpoint.statistics for r in self._runners),
            messaging=tuple(r.machine.statistics for r in self._runners),
            stream_messaging=(
                self._stream_runner.machine.statistics if self._stream_runner is not None else None
            ),
            group_messaging=tuple(r.machine.statistics for r in self._group_runners),
            dtls_messaging=tuple(runner.machine.statistics for _, runner in self._dtls),
            dtls=tuple(endpoint.dtls_statistics for endpoint, _ in self._dtls),
            multicast_unanswered=server.multicast_unanswered,
            amplification_challenges=(
                server.amplification.challenges if server.amplification is not None else 0
            ),
            handler_queue_depth=len(server.queue),
            overloaded_responses=server.overloaded,
            dropped_requests=server.dropped,
            handler_errors=responder.handler_errors if responder else 0,
            oversized_requests=responder.oversized if responder else 0,
            blockwise_assemblies=len(blockwise.assembler),
            blockwise_assembly_bytes=blockwise.assembler.buffered,
            blockwise_uploads_completed=blockwise.uploads_completed,
            blockwise_oversized=blockwise.oversized,
            blockwise_evicted=blockwise.assembler.evicted,
            cached_representations=len(blockwise.cache),
            cached_representation_bytes=blockwise.cache.nbytes,
            cached_representations_evicted=blockwise.cache.evicted,
            blockwise_cache_misses=blockwise.cache_misses,
            observations=len(server.observations),
            observations_refused=server.observations.refused,
            requests_in_flight=len(self._client.inflight),
            upload_tags_in_use=len(self._client.upload_tags),
            **self._oscore_counters(),
        )

    def _oscore_counters(self) -> dict[str, Any]:
        server = self._server
        client = self._client
        engine = getattr(server, "engine", None)
        if engine is None:
            return {}
        counters = {
            "oscore": copy.deepcopy(engine.statistics),
            "oscore_refused": getattr(server, "oscore_refused", 0),
            "oscore_rejected_responses": getattr(client, "rejected", 0),
        }
        responders = getattr(server, "edhoc", None)
        if responders is not None:
            counters.update(
                edhoc_completed=responders.completed,
                edhoc_refused=getattr(server, "edhoc_refused", 0),
                edhoc_pending=len(responders),
                edhoc_evicted=responders.evicted,
            )
        return counters

    @property
    def credentials(self) -> CredentialsMap | None:
        """The OSCORE credentials the Context was opened with (None: no OSCORE).

        Requests whose URI matches one of its entries are protected; its
        security contexts verify the protected requests a server receives.
        """
        return self._credentials

    def set_nstart(self, nstart: int) -> None:
        """Allow ``nstart`` outstanding requests per remote (RFC 7252 §4.7; default 1)."""
        for runner in self._runners:
            runner.machine.set_nstart(nstart)
        if self._stream_runner is not None:
            self._stream_runner.machine.set_nstart(nstart)
        for _, runner in self._dtls:
            runner.machine.set_nstart(nstart)

    # -- client --------------------------------------------------------------------

    def request(self, message: Message, *, progress: Progress | None = None) -> Request:
        """Start sending ``message`` (a request with ``uri=`` or ``remote=`` set).

        Returns at once; the exchange runs whether or not ``.response`` is
        awaited. Raises :class:`~coap_trio.errors.UnsupportedTransportError`
        for a scheme this context has no transport for (``coaps://`` without
        ``dtls`` credentials, an unknown scheme), and
        :class:`~coap_trio.errors.LocalProtocolError` for a message that is no
        request or has no destination.

        Block-wise transfers (RFC 7959) are automatic: a payload larger than
        ``BlockwiseConfig.block_size`` is uploaded in Block1 blocks (with a
        Request-Tag when another upload to the same resource is in flight),
        and a response in Block2 blocks is fetched whole: ``.response`` is
        one message with the whole payload and the first block's options
        (limited to ``max_body_size``, see :meth:`stream`). A message that
        already carries Block1, or Block2 with a block number above 0, is
        sent and answered as is; Block2 number 0 sets the block size of the
        whole transfer. ``progress(done_bytes, total)`` is called after each
        block of an upload (total: the body's length) and of a download
        (total: Size2, or None).
        """
        return self._client.request(message, progress)

    def stream(
        self, target: str | Message, *, progress: Progress | None = None
    ) -> AbstractAsyncContextManager[ResponseStream]:
        """Receive a large response chunk by chunk: ``async with ctx.stream(uri) as body:``.

        ``target`` is a URI (a GET is built) or a request message. The block
        is entered once the first response arrived (``body.response``; an
        error response needs no iteration); ``async for chunk in body:``
        yields its payload in chunks, asking for each further Block2 block
        only when the consumer wants it, so memory stays about one block and
        no ``max_body_size`` applies. Leaving the block stops the transfer.
        See :class:`~coap_trio.ResponseStream`.
        """
        return open_stream(self._client, target, progress)

    def observe(
        self,
        target: str | Message,
        *,
        keep: int = 1,
        deregister_timeout: float = 5.0,
        reregister: bool = False,
    ) -> AbstractAsyncContextManager[Observation]:
        """Observe a resource (RFC 7641): ``async with ctx.observe(uri) as notifications:``.

        ``target`` is a URI (a GET is built) or a request message (its
        Observe is set to 0). Iterating yields the first response, then each
        fresh notification (see :class:`~coap_trio.Observation`;
        ``keep`` bounds the notifications buffered for a slow consumer).
        Leaving the block, or cancelling the task in it, ends the
        observation: the exchange is abandoned (later notifications get RST)
        and a GET with Observe=1 deregisters it on the wire from the
        Context's nursery, given at most ``deregister_timeout`` seconds, so
        leaving never waits for it. With ``reregister``, the registration is
        sent again when Max-Age (default 60 s) passes without a notification
        (RFC 7641 §3.3.1), e.g. after the server restarted.
        """
        return observe_resource(
            self._client,
            target,
            keep=keep,
            deregister_timeout=deregister_timeout,
            reregister=reregister,
        )

    def multicast(
        self, target: str | Message, *, timeout: float = 5.0, max_responses: int = 1000
    ) -> AbstractAsyncContextManager[GroupResponses]:
        """Send one request to a multicast group and read every member's response
        (RFC 7252 §8): ``async with ctx.multicast(uri) as responses:`` then
        ``async for remote, response in responses:``.

        ``target`` is a ``coap://`` URI of a group (``coap://[ff02::fd]/...``,
        ``coap://224.0.1.187/...``; a GET is built) or a request message to
        one. It goes out as NON with a fresh token, kept open for the whole
        window: responses from every member match it, each yielded with the
        member's address, until ``timeout`` seconds pass; then the iteration
        ends. Leaving the block ends the window early; answers arriving later
        get RST. At most ``max_responses`` wait unread (later ones are
        dropped and counted in :attr:`GroupResponses.dropped`). A CON message
        is refused (``LocalProtocolError``: multicast requests are NON, §8.1),
        and so is a scheme other than ``coap://``.
        """
        message = Message(code=Code.GET, uri=target) if isinstance(target, str) else target
        return group_request(self._client.router, message, timeout, max_responses)

    async def edhoc(self, uri: str, credentials: EdhocCredentials | None = None) -> SecurityContext:
        """Establish an OSCORE security context with a server by EDHOC (RFC 9528).

        ``uri``'s origin (``coap://host:port``; its path is ignored) is asked
        at ``/.well-known/edhoc``, as the initiator, with ``credentials``
        (default: the ``edhoc`` given to :func:`open_context`); from then on,
        requests to that origin are protected with the new context. With
        ``credentials.combined`` (the default) message_3 travels in front of
        the first such request (the EDHOC + OSCORE request, RFC 9668), else
        in a request of its own, answered with message_4. Raises
        :class:`~coap_trio.errors.EdhocError` when the exchange fails (an
        untrusted server, an error answer), :class:`~coap_trio.errors.LocalProtocolError`
        on a Context opened without ``oscore`` or ``edhoc``.
        """
        from ._client.oscore import OscoreClientCore
        from .errors import LocalProtocolError

        client = self._client
        if not isinstance(client, OscoreClientCore):
            raise LocalProtocolError("EDHOC needs a Context opened with oscore= or edhoc=")
        chosen = credentials if credentials is not None else client.edhoc_credentials
        if chosen is None:
            raise LocalProtocolError("no EDHOC credentials: give them here or to open_context")
        origin = Message(code=Code.GET, uri=uri).remote
        assert origin is not None
        return await client.edhoc(str(getattr(origin, "uri_base", origin)), chosen)

    async def ping(self, uri: str) -> float:
        """Send a CoAP ping to the host of ``uri``; returns the round-trip time in seconds
        once it is answered. Over UDP an empty CON answered by RST; over a stream
        (``coap+tcp://`` ...) a 7.02 Ping answered by a 7.03 Pong (RFC 8323 §5.4).
        Raises RequestTimeoutError if it never is."""
        return await self._client.ping(Message(code=Code.GET, uri=uri))

    async def get(self, uri: str, **options: Any) -> Message:
        """GET ``uri`` and return the response (any keyword sets a typed option)."""
        return await self.request(Message(code=_GET, uri=uri, **options)).response

    async def post(self, uri: str, payload: bytes = b"", **options: Any) -> Message:
        """POST ``payload`` to ``uri``."""
        return await self._with_payload(Code.POST, uri, payload, options)

    async def put(self, uri: str, payload: bytes = b"", **options: Any) -> Message:
        """PUT ``payload`` to ``uri``."""
        return await self._with_payload(Code.PUT, uri, payload, options)

    async def delete(self, uri: str, **options: Any) -> Message:
        """DELETE ``uri``."""
        return await self.request(Message(code=Code.DELETE, uri=uri, **options)).response

    async def fetch(self, uri: str, payload: bytes = b"", **options: Any) -> Message:
        """FETCH (RFC 8132) ``uri`` with ``payload`` as the query body."""
        return await self._with_payload(Code.FETCH, uri, payload, options)

    async def patch(self, uri: str, payload: bytes = b"", **options: Any) -> Message:
        """PATCH (RFC 8132) ``uri``."""
        return await self._with_payload(Code.PATCH, uri, payload, options)

    async def ipatch(self, uri: str, payload: bytes = b"", **options: Any) -> Message:
        """iPATCH (RFC 8132) ``uri``."""
        return await self._with_payload(Code.iPATCH, uri, payload, options)

    async def _with_payload(
        self, code: Code, uri: str, payload: bytes, options: dict[str, Any]
    ) -> Message:
        message = Message(code=code, uri=uri, payload=payload, **options)
        return await self.request(message).response

    def _close(self) -> None:
        self._client.close()


async def _run_endpoint(runner: EndpointRunner, *, task_status: trio.TaskStatus[None]) -> None:
    await runner.endpoint.run(runner.on_datagrams, runner.on_error, task_status=task_status)


#: Tries at one port for every address of a bound name, when port 0 was asked for.
_SAME_PORT_ATTEMPTS = 8
#: Errors that say the host has no such address (``::1`` with IPv6 off): left out
#: when another address of the same name could be bound.
_NO_SUCH_ADDRESS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _unresolvable(host: str, error: OSError) -> socket.gaierror:
    code = error.errno if error.errno is not None else socket.EAI_NONAME
    return socket.gaierror(code, f"cannot resolve {host!r}: {error.strerror or error}")


async def bind_endpoints(network: DatagramNetwork, host: str, port: int) -> list[DatagramEndpoint]:
    """Bind endpoints of ``network`` on ``host`` and ``port``, as ``open_context(bind=)`` does.

    An IP literal (or wildcard, ``::``, ``0.0.0.0``) gives one endpoint. A
    host name is resolved by ``network.resolve``, as the host of a request
    URI is (real UDP: trio's ``getaddrinfo``), and gives one endpoint per
    address, all on one port: ``localhost`` may be ``::1`` and
    ``127.0.0.1``, and a client may try either. With port 0, the first
    address picks a free port and the others take the same one (when it is
    taken on one of them, all are tried again on a new port, up to 8
    times). An address the machine does not have (``EADDRNOTAVAIL``, such as
    ``::1`` with IPv6 off) is left out when another one could be bound.

    Raises ``socket.gaierror`` (an OSError) when the name does not resolve,
    OSError when binding fails, ValueError for a malformed literal.
    """
    if _is_ip_literal(host):
        return [network.open_endpoint(host, port)]
    try:
        addresses = await network.resolve(host, port)
    except OSError as error:
        raise _unresolvable(host, error) from None
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host!r}: no address")
    for attempt in range(_SAME_PORT_ATTEMPTS):
        endpoints: list[DatagramEndpoint] = []
        missing: list[OSError] = []
        chosen = port
        try:
            for address in addresses:
                try:
                    endpoint = network.open_endpoint(address, chosen)
                except OSError as error:
                    if error.errno not in _NO_SUCH_ADDRESS:
                        raise
                    missing.append(error)
                    continue
                endpoints.append(endpoint)
                chosen = endpoint.local_address.port
        except OSError as error:
            for endpoint in endpoints:
                endpoint.close()
            taken = error.errno == errno.EADDRINUSE and port == 0 and endpoints
            if taken and attempt + 1 < _SAME_PORT_ATTEMPTS:
                continue  # the port the first address got is taken on another one
            raise
        if not endpoints:
            raise missing[0]
        return endpoints
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


async def _listen(
    endpoint: StreamEndpoint, host: str, port: int, scheme: str, context: ssl.SSLContext | None
) -> None:
    """Listen on ``host``: an IP literal, or every address of a name (one port for all)."""
    if _is_ip_literal(host):
        endpoint.listen(host, port, scheme, context)
        return
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise _unresolvable(host, error) from None
    except UnicodeError:  # not encodable as a host name (IDNA)
        raise socket.gaierror(socket.EAI_NONAME, f"invalid host name {host!r}") from None
    addresses: list[str] = []
    for _, _, _, _, sockaddr in infos:
        if str(sockaddr[0]) not in addresses:
            addresses.append(str(sockaddr[0]))
    missing: list[OSError] = []
    for address in addresses:
        try:
            endpoint.listen(address, port, scheme, context)
        except OSError as error:
            if error.errno not in _NO_SUCH_ADDRESS:
                raise
            missing.append(error)
            continue
        port = endpoint.addresses[-1].port  # the other addresses on the same port
    if missing and len(missing) == len(addresses):
        raise missing[0]


def _as_binds(bind: tuple[str, int] | Sequence[tuple[str, int]] | None) -> list[tuple[str, int]]:
    if bind is None:
        return []
    if len(bind) == 2 and isinstance(bind[0], str) and isinstance(bind[1], int):
        return [cast(tuple[str, int], bind)]  # one pair
    return list(cast(Sequence[tuple[str, int]], bind))


@asynccontextmanager
async def open_context(
    *,
    bind: tuple[str, int] | Sequence[tuple[str, int]] | None = None,
    site: Resource | None = None,
    network: DatagramNetwork | None = None,
    config: MessagingConfig | None = None,
    client_endpoints: int | None = None,
    server_concurrency: int = 64,
    request_queue: int = 1024,
    dns_ttl: float = 60.0,
    rng: random.Random | None = None,
    max_request_payload: int = DEFAULT_MAX_PAYLOAD,
    max_observations: int = 100_000,
    max_observations_per_remote: int = 1_000,
    blockwise: BlockwiseConfig | None = None,
    multicast_groups: Sequence[str | tuple[str, int] | tuple[str, int, str]] = (),
    multicast_interface: str | None = None,
    multicast_leisure: float = 5.0,
    amplification_factor: float | None = None,
    tcp_bind: tuple[str, int] | Sequence[tuple[str, int]] | None = None,
    tls_bind: tuple[str, int] | Sequence[tuple[str, int]] | None = None,
    ws_bind: tuple[str, int] | Sequence[tuple[str, int]] | None = None,
    wss_bind: tuple[str, int] | Sequence[tuple[str, int]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    client_ssl_context: ssl.SSLContext | None = None,
    stream_limits: StreamLimits | None = None,
    oscore: CredentialsMap | None = None,
    edhoc: EdhocCredentials | None = None,
    dtls_bind: tuple[str, int] | Sequence[tuple[str, int]] | None = None,
    dtls: DtlsCredentials | None = None,
    dtls_limits: DtlsLimits | None = None,
) -> AsyncIterator[Context]:
    """Open a CoAP context; everything it starts ends when the block is left.

    ``bind`` is one ``(host, port)`` or a list of them (port 0: any free
    port, see :attr:`Context.addresses`); a host is an IP literal or a name,
    which is resolved and bound on every address it has, all on one port
    (:func:`bind_endpoints`; ``socket.gaierror`` when it does not resolve).
    With ``site`` the bound endpoints
    serve requests through ``server_concurrency`` handler tasks fed by a
    queue of ``request_queue`` entries. Client requests go out from the
    bound endpoints, plus ``client_endpoints`` extra ones bound to
    ``("::", 0)`` (default: 1 when nothing is bound, else 0). ``network``
    defaults to real UDP; pass a :class:`coap_trio.testing.MemoryNetwork`
    to test without sockets. ``rng`` seeds MIDs and tokens (default: the
    system's secure source). Requests with payloads over
    ``max_request_payload`` bytes are answered 4.13 before any handler runs
    (a BERT block over a stream is bounded by the connection's
    Max-Message-Size instead, and its assembled body by ``blockwise``).
    Observations (RFC 7641) of resources with ``add_observation`` are kept up
    to ``max_observations`` in total and ``max_observations_per_remote`` per
    client; beyond that a registration is served without Observe.
    Block-wise transfers (RFC 7959) follow ``blockwise`` (block size, the
    limits on assembled bodies and kept representations).

    Multicast (RFC 7252 §8): ``multicast_groups`` lists the groups to join —
    an address (All-CoAP-Nodes: ``224.0.1.187``, ``ff02::fd``, ``ff05::fd``;
    port 5683), a ``(group, port)`` pair, or a ``(group, port, interface)``
    triple to join it on one interface (list a group once per interface to
    join it on several) — on ``multicast_interface`` unless a triple names
    another (a name or an index; None: the system's choice; a link-local
    IPv6 group needs one). Requests sent to a group are served like others, except that
    the answer waits a random time up to ``multicast_leisure`` seconds
    (§8.2.1), goes out from a unicast address of ours, and is never an error
    response nor an empty ACK or RST (§8.2); a resource with
    ``multicast = False`` does not answer them. ``Context.multicast`` sends
    group requests.

    Amplification (RFC 7252 §11.3, RFC 9175 §2.4): with
    ``amplification_factor`` (3 is the RFC's figure) a response over UDP that
    is larger than that many times its request goes to a client address not
    verified yet as a 4.01 with an Echo option instead; a client that repeats
    the request with the Echo value is verified for 10 minutes (a bounded
    table). Off by default: libcoap's 4.3.1 client repeats with the Echo value,
    but aiocoap's 0.4.17 client stops at the 4.01. Our client always answers
    an Echo challenge by itself (once per request), and resources may ask for
    Echo freshness of unsafe requests (:attr:`Resource.echo_unsafe
    <coap_trio.resource.Resource.echo_unsafe>`).

    Reliable transports (RFC 8323): ``coap+tcp://``, ``coaps+tcp://``,
    ``coap+ws://`` and ``coaps+ws://`` requests open one connection per
    destination on first use (kept until idle). ``tcp_bind``, ``tls_bind``
    (``coaps+tcp``), ``ws_bind`` (``coap+ws``) and ``wss_bind`` (``coaps+ws``)
    take ``(host, port)`` pairs like ``bind`` (names too) and listen there (see
    :attr:`Context.stream_addresses`); the TLS listeners use ``ssl_context``
    (a server context with its certificate; ALPN ``coap`` is set on it).
    ``client_ssl_context`` secures the connections we open (default:
    :func:`ssl.create_default_context`, which verifies the server's
    certificate and host name). ``stream_limits`` bounds connections,
    frame size, send buffers and idle time
    (:class:`~coap_trio.transports.stream.StreamLimits`).

    OSCORE (RFC 8613; the ``oscore`` extra): ``oscore`` is a
    :class:`~coap_trio.oscore_credentials.CredentialsMap`, read from a JSON
    credentials file in aiocoap's ``--credentials`` format
    (:func:`~coap_trio.oscore_credentials.load_credentials`) or made with
    :meth:`~coap_trio.oscore_credentials.CredentialsMap.from_contexts`.
    Client: a request whose URI matches an entry is protected with its
    security context, every block of a block-wise transfer included, and
    its responses and notifications are verified before anything else
    looks at them (one that fails ends the request with
    :class:`~coap_trio.errors.OscoreVerificationError`; a notification
    that fails is dropped); a server's Echo challenge after its restart is
    answered by sending the request once more. Server: protected requests
    are verified with the map's security contexts before they are queued
    for a handler (a failure is answered as RFC 8613 §8.2 says, counted in
    :attr:`ContextStatistics.oscore`, and reaches no handler), handlers see
    an :class:`~coap_trio.remote.OscoreRemote` on ``request.remote``, and
    responses and notifications are protected on the way out; a resource
    (or a :class:`~coap_trio.resource.Site`) with ``requires_oscore`` gets
    only protected requests, a plain one is answered 4.01. Over UDP, TCP,
    TLS and WebSockets alike.

    EDHOC (RFC 9528, on lakers): ``edhoc`` is this side's
    :class:`~coap_trio.protocol.oscore.edhoc.EdhocCredentials`. Serving, the
    Context answers ``/.well-known/edhoc`` as the responder (at most 64
    exchanges waiting for their message_3, each for 60 s; the contexts
    established, at most 1,024, verify requests like the configured ones,
    the EDHOC + OSCORE request of RFC 9668 included, and handlers see the
    client's credential on :attr:`OscoreRemote.credential
    <coap_trio.remote.OscoreRemote.credential>`); as a client,
    :meth:`Context.edhoc` establishes a context with a server.

    DTLS (``coaps://``, RFC 7252 §9; the ``dtls`` extra): ``dtls`` is the
    :class:`~coap_trio.DtlsCredentials` of both
    sides: with them, ``coaps://`` requests open one DTLS session per
    destination on first use (reused by later requests; closed after the
    idle time), and ``dtls_bind`` (``(host, port)`` pairs like ``bind``)
    serves the site over DTLS there too (see :attr:`Context.dtls_addresses`),
    beside UDP and the streams. Handlers see who a peer proved to be on
    ``request.remote.peer`` (:class:`~coap_trio.remote.DtlsPeer`: its PSK
    identity, certificate subject or raw public key fingerprint).
    ``dtls_limits`` bounds sessions in total, per address and in handshake,
    and sets the idle and handshake timeouts
    (:class:`~coap_trio.DtlsLimits`). A handshake that fails
    fails the requests to that peer with a
    :class:`~coap_trio.errors.HandshakeError` (our refusal, or
    :class:`~coap_trio.errors.HandshakeTimeoutError`) or a
    :class:`~coap_trio.errors.DtlsAlertError` (the peer's). Without ``dtls``,
    ``coaps://`` raises :class:`~coap_trio.errors.UnsupportedTransportError`
    and ``dtls_bind`` ``ValueError``.
    """
    if network is None:
        from .transports.udp import UDPNetwork

        # A group's socket shares the port of a wildcard bind only if both reuse it.
        network = UDPNetwork(reuse_address=bool(multicast_groups))
    config = config or MessagingConfig()
    if oscore is not None or edhoc is not None:
        # The machines pass responses carrying OSCORE on (verified above them).
        recognized = config.recognized_response_options | {int(OptionNumber.OSCORE)}
        config = attrs.evolve(config, recognized_response_options=recognized)
    binds = _as_binds(bind)
    dtls_binds = _as_binds(dtls_bind)
    if dtls_binds and dtls is None:
        raise ValueError("dtls_bind needs dtls= credentials (DtlsCredentials)")
    extra = client_endpoints if client_endpoints is not None else (0 if binds else 1)
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        context = Context(
            nursery,
            network,
            config,
            site,
            rng,
            dns_ttl,
            max_request_payload,
            max_observations,
            max_observations_per_remote,
            blockwise,
            multicast_leisure,
            amplification_factor,
            oscore,
            edhoc,
        )
        try:
            if site is not None:
                context._server.start_handlers(server_concurrency, request_queue)
            for host, port in binds:
                for endpoint in await bind_endpoints(network, host, port):
                    await context._start_endpoint(endpoint)
            for _ in range(extra):
                await context._open_endpoint("::", 0)
            for entry in multicast_groups:
                if isinstance(entry, str):
                    await context._join_group(entry, 5683, multicast_interface)
                elif len(entry) == 2:
                    await context._join_group(entry[0], entry[1], multicast_interface)
                else:
                    await context._join_group(entry[0], entry[1], entry[2])
            listeners = [
                (host, port, scheme, ssl_context if STREAM_SCHEMES[scheme] else None)
                for scheme, binding in (
                    ("coap+tcp", tcp_bind),
                    ("coaps+tcp", tls_bind),
                    ("coap+ws", ws_bind),
                    ("coaps+ws", wss_bind),
                )
                for host, port in _as_binds(binding)
            ]
            await context._open_streams(
                listeners, stream_limits or StreamLimits(), client_ssl_context
            )
            if dtls is not None:
                await context._open_dtls(dtls_binds, dtls, dtls_limits)
            yield context
        except BaseException as error:  # re-raised below, unwrapped
            body_error = error
        finally:
            context._close()
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
