"""Reliable transports (RFC 8323): the connections of one Context, behind a datagram face.

Owns :class:`StreamEndpoint`: every TCP, TLS and WebSocket connection of a
Context, client side (opened on the first send to a remote, one per remote)
and server side (accepted by its listeners), with their limits. It presents
the same face as a :class:`~coap_trio.transports.base.DatagramEndpoint`
(``send(data, remote)``, ``run(on_datagrams, on_error, task_status=)``), so
the endpoint runner feeds each complete frame to the messaging machine as if
it were a datagram; connection made and lost are reported through
:attr:`StreamEndpoint.on_connection_made` / :attr:`on_connection_lost`.

The data handed in and out are RFC 8323 §3.2 stream frames (Len/TKL, extended
length, code, token, options, payload), whatever the wire: a
:class:`Framer` per connection turns wire bytes into such frames and back
(:mod:`~coap_trio.transports.tcp` for TCP and TLS,
:mod:`~coap_trio.transports.websocket` for WebSockets). This module must not
parse CoAP beyond that.

Resource handling: each connection is one task (plus its writer, in a
nursery of its own) in the nursery of :meth:`StreamEndpoint.run`, which runs
in the Context's nursery; cancelling ``run`` closes every connection and
listener. Memory per connection is bounded: received bytes by the largest
frame (``max_message_size``), queued outgoing bytes by ``max_send_buffer``
(a peer that stops reading is disconnected rather than buffered for).

Error handling: network errors never escape ``send`` or ``run``; a
connection that fails (refused, reset, TLS or WebSocket handshake failure,
an oversized or malformed frame, a full send buffer, idleness) is closed and
reported once through ``on_connection_lost`` with an ``OSError`` saying why.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from ..remote import DatagramRemote
from .base import DatagramHandler, EndpointStatistics, ErrorHandler

__all__ = [
    "STREAM_SCHEMES",
    "ConnectionHandler",
    "FrameTooLargeError",
    "Framer",
    "FramerFactory",
    "LostHandler",
    "StreamEndpoint",
    "StreamLimits",
    "StreamStatistics",
]

#: The URI schemes of RFC 8323, and whether each runs over TLS.
STREAM_SCHEMES: dict[str, bool] = {
    "coap+tcp": False,
    "coaps+tcp": True,
    "coap+ws": False,
    "coaps+ws": True,
}

#: Called with the remote of a connection just established.
ConnectionHandler = Callable[[DatagramRemote], None]
#: Called with the remote of a connection that ended and why (None: closed cleanly).
LostHandler = Callable[[DatagramRemote, OSError | None], None]

_RECEIVE_SIZE = 65536
#: Seconds a closing connection may spend flushing its last frames, and closing.
_CLOSE_GRACE = 0.25


@attrs.frozen
class StreamLimits:
    """The bounds of a Context's connections (sizes in bytes, times in seconds)."""

    #: Accepted connections open at once; beyond it a new one is closed at once.
    max_connections: int = 1024
    #: The largest frame received (a larger announced length aborts the connection).
    max_message_size: int = 1152 + 64
    #: Outgoing bytes queued per connection; a peer that lets more pile up is disconnected.
    max_send_buffer: int = 1024 * 1024
    #: A connection with no traffic either way for this long is closed
    #: (``math.inf``: never; observations with rare notifications need a long one).
    idle_timeout: float = 300.0
    #: Time allowed to connect, and to finish a TLS or WebSocket handshake.
    connect_timeout: float = 10.0
    #: Announce Block-Wise-Transfer in our CSM (RFC 8323 §5.3.2): with a peer that
    #: announced it too, block-wise transfers use BERT blocks (§6). A BERT block
    #: larger than 1024 bytes needs a ``max_message_size`` above 1152 on both sides.
    block_wise_transfer: bool = True


@attrs.frozen
class StreamStatistics:
    """Counters of a :class:`StreamEndpoint`."""

    #: Connections open now (client and server side).
    connections: int
    #: Connections opened by us, and accepted from peers, since the start.
    connections_opened: int
    connections_accepted: int
    #: Accepted connections closed at once because ``max_connections`` were open.
    connections_refused: int
    #: Connections closed for a frame over ``max_message_size``.
    closed_oversized: int
    #: Connections closed because their send buffer filled (the peer stopped reading).
    closed_slow: int
    #: Connections closed after ``idle_timeout`` without traffic.
    closed_idle: int
    #: Connections that failed to open or ended with a network error.
    failed: int


class FrameTooLargeError(OSError):
    """A peer sent (or announced) a frame over the limit."""


class Framer(Protocol):
    """Turns one connection's wire bytes into stream frames and back."""

    async def handshake(self, stream: trio.abc.Stream) -> None:
        """Run the connection's opening handshake (WebSocket upgrade), if any."""
        ...

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Received bytes in; complete stream frames and bytes to send back out.

        Raises :class:`FrameTooLargeError` for a frame over the limit and
        ``OSError`` for anything else that must end the connection.
        """
        ...

    def wrap(self, frame: bytes) -> bytes:
        """A stream frame to send, as wire bytes."""
        ...

    def set_max_message_size(self, size: int) -> None:
        """Change the largest frame accepted."""
        ...


#: Makes the framer of a new connection: ``(scheme, client side, host header, limit)``.
FramerFactory = Callable[[str, bool, str, int], Framer]


class _Connection:
    """One connection: its stream, framer, outbox and the cancel scope that ends it."""

    __slots__ = (
        "client",
        "early",
        "error",
        "framer",
        "last_activity",
        "open",
        "outbox",
        "queued",
        "remote",
        "scope",
        "stream",
        "wakeup",
    )

    def __init__(self, remote: DatagramRemote, client: bool, framer: Framer) -> None:
        self.remote = remote
        self.client = client
        self.framer = framer
        self.open = False
        #: Frames sent before the connection was established (after our CSM once it is).
        self.early: list[bytes] = []
        self.outbox: deque[bytes] = deque()
        self.queued = 0
        self.scope = trio.CancelScope()
        self.wakeup = trio.Event()
        self.error: OSError | None = None
        self.stream: trio.abc.Stream | None = None
        self.last_activity = trio.current_time()

    def fail(self, error: OSError) -> None:
        """End the connection from any task (the connection task reports it)."""
        if self.error is None:
            self.error = error
        self.scope.cancel()


def canonical_host(host: str) -> str:
    """An IP literal in its canonical text (IPv4-mapped IPv6 as IPv4); names lower-cased."""
    address, percent, zone = host.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip) + (percent + zone if percent else "")


class StreamEndpoint:
    """Every connection of a Context (see the module): a datagram endpoint's face.

    ``framers`` makes each connection's :class:`Framer`; ``client_ssl_context``
    (default: :func:`ssl.create_default_context`, verifying certificates)
    secures ``coaps+tcp`` and ``coaps+ws`` connections we open. Listeners are
    added with :meth:`listen` before :meth:`run`.
    """

    def __init__(
        self,
        framers: FramerFactory,
        *,
        limits: StreamLimits | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._framers = framers
        self._limits = limits or StreamLimits()
        self._client_ssl = client_ssl_context
        self._connections: dict[DatagramRemote, _Connection] = {}
        #: Remotes asked for by the Context (cached), which sending to may open.
        self._dialable: dict[tuple[str, int, str], DatagramRemote] = {}
        self._may_dial: set[DatagramRemote] = set()
        self._listeners: list[tuple[trio.SocketListener, str, ssl.SSLContext | None]] = []
        self._addresses: list[DatagramRemote] = []
        self._nursery: trio.Nursery | None = None
        self._on_frames: DatagramHandler | None = None
        #: Set by the Context: called when a connection is established / has ended.
        self.on_connection_made: ConnectionHandler | None = None
        self.on_connection_lost: LostHandler | None = None
        self._accepted_open = 0
        self._received = self._sent = self._dropped = 0
        self._opened = self._accepted = self._refused = 0
        self._oversized = self._slow = self._idle = self._failed = 0
        self._closed = False

    # -- the datagram face ---------------------------------------------------------

    @property
    def local_address(self) -> DatagramRemote:
        """The first listener's address (``("::", 0)`` over ``coap+tcp`` without one)."""
        return self._addresses[0] if self._addresses else DatagramRemote(("::", 0), "coap+tcp")

    @property
    def addresses(self) -> list[DatagramRemote]:
        """Every listener's address, with the real port and its scheme."""
        return list(self._addresses)

    @property
    def statistics(self) -> EndpointStatistics:
        """Frames in and out, bytes queued, frames dropped, connections lost with an error."""
        return EndpointStatistics(
            datagrams_received=self._received,
            datagrams_sent=self._sent,
            outbox_depth=sum(c.queued for c in self._connections.values()),
            send_dropped=self._dropped,
            peer_errors=self._failed,
        )

    @property
    def connection_statistics(self) -> StreamStatistics:
        """A snapshot of the connection counters."""
        return StreamStatistics(
            connections=len(self._connections),
            connections_opened=self._opened,
            connections_accepted=self._accepted,
            connections_refused=self._refused,
            closed_oversized=self._oversized,
            closed_slow=self._slow,
            closed_idle=self._idle,
            failed=self._failed,
        )

    @property
    def limits(self) -> StreamLimits:
        """The bounds in force."""
        return self._limits

    def remote_for(self, host: str, port: int, scheme: str = "coap+tcp") -> DatagramRemote:
        """The remote of ``scheme://host:port``; sending to it opens a connection.

        The host stays as given (an IP literal in canonical form, or a name,
        which the connection resolves and verifies TLS certificates against).
        """
        key = (host, port, scheme)
        remote = self._dialable.get(key)
        if remote is not None:
            return remote
        if scheme not in STREAM_SCHEMES:
            raise ValueError(f"not a stream scheme: {scheme!r}")
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"port out of range: {port!r}")
        remote = DatagramRemote((canonical_host(host), port), scheme)
        if len(self._dialable) > 4096:
            self._dialable.clear()
            self._may_dial.clear()
        self._dialable[key] = remote
        self._may_dial.add(remote)
        return remote

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        """Queue one frame on the connection of ``remote`` (opening it when we may).

        Never blocks or raises: a frame for a remote with no connection that
        we cannot open (a peer whose connection to us ended) is dropped and
        counted; a connection whose queue passes ``max_send_buffer`` is closed.
        """
        connection = self._connections.get(remote)
        if connection is None:
            if self._closed or self._nursery is None or remote not in self._may_dial:
                self._dropped += 1
                return
            connection = self._dial(remote)
        if not connection.open:
            connection.early.append(data)
            return
        self._queue(connection, data)

    def set_peer_max_message_size(self, remote: DatagramRemote, size: int) -> None:
        """Nothing to do for the sender side: frames are never split (kept for symmetry)."""

    def close_connection(self, remote: DatagramRemote, reason: str) -> None:
        """Close the connection of ``remote`` (after Abort/Release, or a dead ping)."""
        connection = self._connections.get(remote)
        if connection is not None:
            connection.fail(ConnectionAbortedError(errno.ECONNABORTED, reason))

    def set_max_message_size(self, size: int) -> None:
        """Change the largest frame accepted on every connection (and new ones)."""
        self._limits = attrs.evolve(self._limits, max_message_size=size)
        for connection in self._connections.values():
            connection.framer.set_max_message_size(size)

    def listen(self, host: str, port: int, scheme: str, ssl_context: ssl.SSLContext | None) -> None:
        """Bind a listener for ``scheme`` on ``host:port`` now (port 0: any free port).

        Secure schemes need ``ssl_context`` (its ALPN protocols are set to
        ``coap`` for ``coaps+tcp``). Bind failures raise OSError.
        """
        secure = STREAM_SCHEMES.get(scheme)
        if secure is None:
            raise ValueError(f"not a stream scheme: {scheme!r}")
        if secure and ssl_context is None:
            raise ValueError(f"{scheme} needs an ssl_context")
        if secure and scheme == "coaps+tcp":
            assert ssl_context is not None
            ssl_context.set_alpn_protocols(["coap"])
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        plain = socket.socket(family, socket.SOCK_STREAM)
        try:
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host == "::":
                plain.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            plain.bind((host, port))
            plain.listen(128)
        except BaseException:
            plain.close()
            raise
        sock = trio.socket.from_stdlib_socket(plain)
        address = sock.getsockname()
        self._listeners.append((trio.SocketListener(sock), scheme, ssl_context))
        self._addresses.append(DatagramRemote((canonical_host(address[0]), address[1]), scheme))

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept, and serve every connection, until cancelled; then close them all."""
        self._on_frames = on_datagrams
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for listener, scheme, context in self._listeners:
                    nursery.start_soon(self._accept_loop, listener, scheme, context)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.close()

    def close(self) -> None:
        """Close every listener and connection now (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for listener, _, _ in self._listeners:
            listener.socket.close()
        for connection in list(self._connections.values()):
            connection.fail(ConnectionAbortedError(errno.ECONNABORTED, "the context was closed"))

    # -- connections ---------------------------------------------------------------

    def _queue(self, connection: _Connection, data: bytes) -> None:
        wire = connection.framer.wrap(data)
        if connection.queued + len(wire) > self._limits.max_send_buffer:
            self._dropped += 1
            if connection.error is None:
                self._slow += 1
            connection.fail(BlockingIOError(errno.ENOBUFS, "the peer does not read: buffer full"))
            return
        connection.queued += len(wire)
        connection.outbox.append(wire)
        connection.wakeup.set()

    def _dial(self, remote: DatagramRemote) -> _Connection:
        assert self._nursery is not None
        framer = self._framers(remote.scheme, True, remote.hostinfo, self._limits.max_message_size)
        connection = _Connection(remote, True, framer)
        self._connections[remote] = connection
        self._opened += 1
        self._nursery.start_soon(self._connection_task, connection, self._establish_client, None)
        return connection

    async def _establish_client(self, connection: _Connection, _: ssl.SSLContext | None) -> None:
        remote = connection.remote
        tcp = await trio.open_tcp_stream(remote.host, remote.port)
        connection.stream = tcp
        _tune(tcp)
        if STREAM_SCHEMES[remote.scheme]:
            context = self._client_ssl or ssl.create_default_context()
            if remote.scheme == "coaps+tcp":
                context.set_alpn_protocols(["coap"])
            tls = trio.SSLStream(tcp, context, server_hostname=remote.host)
            connection.stream = tls
            await tls.do_handshake()
        await connection.framer.handshake(connection.stream)

    async def _establish_server(
        self, connection: _Connection, context: ssl.SSLContext | None
    ) -> None:
        if context is not None:
            assert isinstance(connection.stream, trio.SocketStream)
            tls = trio.SSLStream(connection.stream, context, server_side=True)
            connection.stream = tls
            await tls.do_handshake()
        assert connection.stream is not None
        await connection.framer.handshake(connection.stream)
        old = self._connections.get(connection.remote)
        if old is not None:  # a stale entry for a reused address: end it first
            old.fail(ConnectionResetError(errno.ECONNRESET, "replaced by a new connection"))
        self._connections[connection.remote] = connection

    async def _accept_loop(
        self, listener: trio.SocketListener, scheme: str, context: ssl.SSLContext | None
    ) -> None:
        assert self._nursery is not None
        nursery = self._nursery
        while True:
            try:
                tcp = await listener.accept()
            except (OSError, trio.ClosedResourceError):
                if self._closed:
                    return
                await trio.sleep(0.01)  # e.g. EMFILE: no busy loop
                continue
            if self._accepted_open >= self._limits.max_connections:
                self._refused += 1
                await trio.aclose_forcefully(tcp)
                continue
            try:
                peer = tcp.socket.getpeername()
            except OSError:
                await trio.aclose_forcefully(tcp)
                continue
            _tune(tcp)
            remote = DatagramRemote((canonical_host(peer[0]), peer[1]), scheme)
            framer = self._framers(scheme, False, "", self._limits.max_message_size)
            connection = _Connection(remote, False, framer)
            connection.stream = tcp
            self._accepted += 1
            self._accepted_open += 1
            nursery.start_soon(self._connection_task, connection, self._establish_server, context)

    async def _connection_task(
        self,
        connection: _Connection,
        establish: Callable[[_Connection, ssl.SSLContext | None], Awaitable[None]],
        context: ssl.SSLContext | None,
    ) -> None:
        """One connection from opening (or accepting) to its end; reports made and lost."""
        made = False
        try:
            with connection.scope:
                try:
                    with trio.fail_after(self._limits.connect_timeout):
                        await establish(connection, context)
                except trio.TooSlowError:
                    connection.error = TimeoutError(errno.ETIMEDOUT, "connect/handshake timed out")
                if connection.error is None:
                    made = True
                    await self._serve(connection)
        except (OSError, trio.BrokenResourceError) as exc:
            if connection.error is None:
                connection.error = _as_os_error(exc)
        finally:
            stream = connection.stream
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await _close_gracefully(connection, stream)
            error = connection.error
            if isinstance(error, FrameTooLargeError):
                self._oversized += 1
            elif error is not None and not isinstance(
                error, (ConnectionAbortedError, BlockingIOError, TimeoutError)
            ):
                self._failed += 1
            if not connection.client:
                self._accepted_open -= 1
            if made or connection.client:
                self._finish(connection)
            elif self._connections.get(connection.remote) is connection:
                del self._connections[connection.remote]

    async def _serve(self, connection: _Connection) -> None:
        """Run an established connection until it ends."""
        stream = connection.stream
        assert stream is not None
        connection.open = True
        connection.last_activity = trio.current_time()
        if self.on_connection_made is not None:
            self.on_connection_made(connection.remote)  # queues our CSM first
        early, connection.early = connection.early, []
        for data in early:
            self._queue(connection, data)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop, connection, stream)
            await self._read_loop(connection, stream)
            nursery.cancel_scope.cancel()

    def _finish(self, connection: _Connection) -> None:
        remote = connection.remote
        if self._connections.get(remote) is connection:
            del self._connections[remote]
        dropped = len(connection.early) + len(connection.outbox)
        self._dropped += dropped
        connection.early.clear()
        connection.outbox.clear()
        error = connection.error
        if error is None and connection.client:
            error = ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
        if self.on_connection_lost is not None:
            self.on_connection_lost(remote, error)

    async def _read_loop(self, connection: _Connection, stream: trio.abc.Stream) -> None:
        framer = connection.framer
        idle = self._limits.idle_timeout
        remote = connection.remote
        on_frames = self._on_frames
        assert on_frames is not None
        data = b""  # first round: what the handshake read past its end
        first = True
        while True:
            if not first:
                data = b""
                with trio.move_on_at(connection.last_activity + idle) as waited:
                    data = bytes(await stream.receive_some(_RECEIVE_SIZE))
                if waited.cancelled_caught:
                    if trio.current_time() >= connection.last_activity + idle:
                        self._idle += 1
                        connection.error = TimeoutError(errno.ETIMEDOUT, "idle connection closed")
                        return
                    continue
                if not data:
                    return  # the peer closed its side
                connection.last_activity = trio.current_time()
            first = False
            try:
                frames, reply = framer.feed(data)
            except OSError as exc:
                connection.error = exc
                if isinstance(exc, FrameTooLargeError):  # flushed (after any CSM) on closing
                    connection.outbox.append(framer.wrap(_abort_frame(str(exc))))
                return
            if reply:
                connection.outbox.append(reply)
                connection.queued += len(reply)
                connection.wakeup.set()
            if frames:
                self._received += len(frames)
                on_frames([(frame, remote) for frame in frames])
            if framer_closed(framer):
                return

    async def _write_loop(self, connection: _Connection, stream: trio.abc.Stream) -> None:
        outbox = connection.outbox
        while True:
            if not outbox:
                connection.wakeup = trio.Event()
                await connection.wakeup.wait()
                continue
            count = len(outbox)
            data = b"".join(outbox)
            await stream.send_all(data)
            for _ in range(count):  # removed once sent: a cancelled send leaves them to flush
                outbox.popleft()
            connection.queued -= len(data)
            self._sent += count
            connection.last_activity = trio.current_time()


def framer_closed(framer: Framer) -> bool:
    """Whether the framer saw the peer end the session (a WebSocket close)."""
    return bool(getattr(framer, "closed", False))


def _abort_frame(diagnostic: str) -> bytes:
    """An Abort signal (7.05, RFC 8323 §5.6) as a stream frame, with a diagnostic payload."""
    payload = b"\xff" + diagnostic.encode("utf-8")[:200]
    length = len(payload)
    if length < 13:
        return bytes([length << 4]) + b"\xe5" + payload
    return bytes([13 << 4, length - 13]) + b"\xe5" + payload


def _tune(tcp: trio.SocketStream) -> None:
    with contextlib.suppress(OSError):
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)


def _as_os_error(exc: BaseException) -> OSError:
    """The OSError behind ``exc`` (trio's "all attempts failed" gives the first attempt's)."""
    if isinstance(exc, OSError) and exc.errno is None:
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup):
            for inner in cause.exceptions:
                if isinstance(inner, OSError):
                    return inner
    if isinstance(exc, OSError):
        return exc
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return cause
    return ConnectionResetError(errno.ECONNRESET, str(exc) or type(exc).__name__)


async def _close_gracefully(connection: _Connection, stream: trio.abc.Stream) -> None:
    """Flush what is queued (an Abort, say) unless the stream broke, and close it.

    After a flush, a TCP stream is half-closed and drained briefly, so the
    peer reads our last frames before a reset (unread input makes the
    kernel answer the close with RST, which can destroy them in flight).
    """
    error = connection.error
    flush = error is None or isinstance(
        error, (FrameTooLargeError, ConnectionAbortedError, TimeoutError)
    )
    with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        with trio.move_on_after(_CLOSE_GRACE):
            if flush and connection.outbox:
                await stream.send_all(b"".join(connection.outbox))
                connection.outbox.clear()
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                    for _ in range(64):  # bounded: until EOF or the grace period ends
                        if not await stream.receive_some(_RECEIVE_SIZE):
                            break
    with trio.move_on_after(_CLOSE_GRACE):
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.aclose()
        return
    await trio.aclose_forcefully(stream)
