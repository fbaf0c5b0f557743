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

Resource handling: each connection is exactly one task in the nursery of
:meth:`StreamEndpoint.run` (which runs in the Context's nursery), with no
nursery of its own: it connects or accepts, runs the TLS and WebSocket
handshakes, reads, writes and closes through a
:class:`~coap_trio.transports.stream_connection.StreamConnection` on the
non-blocking socket (TLS being a sans-I/O
:class:`~coap_trio.transports.tls.TLSSession`). Cancelling ``run`` closes
every connection and listener. Memory per connection is bounded: received
bytes by the largest frame (``max_message_size``), queued outgoing bytes by
``max_send_buffer`` (a peer that stops reading is disconnected rather than
buffered for). Frames sent during one scheduler tick leave in one system call.

Error handling: network errors never escape ``send`` or ``run``; a
connection that fails (refused, reset, TLS or WebSocket handshake failure,
an oversized or malformed frame, a full send buffer, idleness) is closed and
reported once through ``on_connection_lost`` with an ``OSError`` saying why
(for an oversized frame a ``ConnectionAbortedError`` with ``errno.EMSGSIZE``,
caused by the :class:`~coap_trio.errors.FrameTooLarge` the framer raised; for
a connection of ours that could not be opened a
:class:`~coap_trio.errors.ConnectFailure` saying whether it was refused,
unreachable or timed out, caused by the error behind it).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import ssl
from collections.abc import Callable

import attrs
import trio

from ..errors import ConnectFailure, FrameTooLarge, IdleTimeoutError
from ..remote import DatagramRemote
from .base import DatagramHandler, EndpointStatistics, ErrorHandler
from .stream_connection import Framer, StreamConnection
from .tls import client_context

__all__ = [
    "STREAM_SCHEMES",
    "ConnectionHandler",
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


@attrs.frozen
class StreamLimits:
    """The bounds of a Context's connections (sizes in bytes, times in seconds)."""

    #: Accepted connections open at once; beyond it a new one is closed at once.
    max_connections: int = 1024
    #: The largest frame received (a larger announced length aborts the connection),
    #: announced as Max-Message-Size in our CSM. The default leaves room for BERT
    #: blocks of 64 KiB plus their header (RFC 8323 §6); a connection buffers at
    #: most one frame of received bytes.
    max_message_size: int = 65536 + 256
    #: Outgoing bytes queued per connection; a peer that lets more pile up is disconnected.
    max_send_buffer: int = 1024 * 1024
    #: A connection with no traffic either way for this long is closed
    #: (``math.inf``: never; observations with rare notifications need a long one).
    idle_timeout: float = 300.0
    #: Time allowed to connect, and to finish a TLS or WebSocket handshake.
    connect_timeout: float = 10.0
    #: Announce Block-Wise-Transfer in our CSM (RFC 8323 §5.3.2): with a peer that
    #: announced it too, block-wise transfers use BERT blocks (§6), as large as both
    #: sides' ``max_message_size`` allow (in 1024-byte units, 256 bytes kept for headers).
    block_wise_transfer: bool = True


@attrs.frozen
class StreamStatistics:
    """Counters of the reliable transports' connections (``Context.stream_statistics``)."""

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


#: Makes the framer of a new connection: ``(scheme, client side, host header, limit)``.
FramerFactory = Callable[[str, bool, str, int], Framer]


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
        self._connections: dict[DatagramRemote, StreamConnection] = {}
        #: Remotes asked for by the Context (cached), which sending to may open.
        self._dialable: dict[tuple[str, int, str], DatagramRemote] = {}
        self._may_dial: set[DatagramRemote] = set()
        self._listeners: list[tuple[socket.socket, str, ssl.SSLContext | None]] = []
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
            datagrams_sent=self._sent + sum(c.frames_sent for c in self._connections.values()),
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
        elif not connection.queue(data):
            self._dropped += 1

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
        plain.setblocking(False)
        address = plain.getsockname()
        self._listeners.append((plain, scheme, ssl_context))
        self._addresses.append(DatagramRemote((canonical_host(address[0]), address[1]), scheme))

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept, and serve every connection, until cancelled; then close them all.

        Its nursery holds one task per listener and one per connection.
        """
        self._on_frames = on_datagrams
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for listener, scheme, context in self._listeners:
                    nursery.start_soon(self._accept_loop, listener, scheme, context)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self.close()  # before the nursery closes: no new connection after this
        finally:
            self.close()

    def close(self) -> None:
        """Close every listener and connection now (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for listener, _, _ in self._listeners:
            with contextlib.suppress(RuntimeError):  # outside trio.run nobody can be waiting
                trio.lowlevel.notify_closing(listener)
            listener.close()
        for connection in list(self._connections.values()):
            connection.fail(ConnectionAbortedError(errno.ECONNABORTED, "the context was closed"))

    # -- connections ---------------------------------------------------------------

    def _dial(self, remote: DatagramRemote) -> StreamConnection:
        assert self._nursery is not None
        limits = self._limits
        framer = self._framers(remote.scheme, True, remote.hostinfo, limits.max_message_size)
        connection = StreamConnection(
            remote,
            framer,
            max_send_buffer=limits.max_send_buffer,
            idle_timeout=limits.idle_timeout,
        )
        self._connections[remote] = connection
        self._opened += 1
        self._nursery.start_soon(self._connection_task, connection, None)
        return connection

    async def _accept_loop(
        self, listener: socket.socket, scheme: str, context: ssl.SSLContext | None
    ) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                try:
                    await trio.lowlevel.wait_readable(listener)
                except trio.ClosedResourceError:
                    return
                continue
            except OSError:
                if self._closed:
                    return
                await trio.sleep(0.01)  # e.g. EMFILE: no busy loop
                continue
            self._accepted_one(sock, peer, scheme, context)
            await trio.lowlevel.checkpoint()  # a flood of connections cannot starve the rest

    def _accepted_one(
        self,
        sock: socket.socket,
        peer: tuple[str, int] | tuple[str, int, int, int],
        scheme: str,
        context: ssl.SSLContext | None,
    ) -> None:
        """Start the task of a connection just accepted, or refuse it (over ``max_connections``)."""
        assert self._nursery is not None
        if self._accepted_open >= self._limits.max_connections:
            self._refused += 1
            sock.close()
            return
        limits = self._limits
        remote = DatagramRemote((canonical_host(peer[0]), peer[1]), scheme)
        framer = self._framers(scheme, False, "", limits.max_message_size)
        connection = StreamConnection(
            remote,
            framer,
            sock=sock,
            max_send_buffer=limits.max_send_buffer,
            idle_timeout=limits.idle_timeout,
        )
        self._accepted += 1
        self._accepted_open += 1
        self._nursery.start_soon(self._connection_task, connection, context)

    async def _connection_task(
        self, connection: StreamConnection, context: ssl.SSLContext | None
    ) -> None:
        """One connection from opening (or accepting) to its end: its only task.

        ``context`` secures an accepted connection (a client's comes from the
        remote's scheme). No network error escapes: each ends the connection.
        """
        made = False
        try:
            with connection.scope:
                with trio.move_on_after(self._limits.connect_timeout) as opening:
                    if connection.client:
                        scheme = connection.remote.scheme
                        secure = STREAM_SCHEMES[scheme]
                        tls = client_context(scheme, self._client_ssl) if secure else None
                        await connection.open_client(tls)
                    else:
                        await connection.open_server(context)
                if opening.cancelled_caught:
                    raise TimeoutError(errno.ETIMEDOUT, "connect/handshake timed out")
                made = True
                self._open(connection)
                await connection.serve(self._deliver)
        except (OSError, trio.BrokenResourceError) as exc:
            if connection.error is None:
                connection.error = _as_os_error(exc)
        except FrameTooLarge as exc:
            if connection.error is None:
                connection.error = exc
        finally:
            error = connection.error
            if isinstance(error, FrameTooLarge):  # after anything queued (our CSM)
                connection.queue(_abort_frame(str(error)), force=True)
            flush = error is None or isinstance(
                error,
                (FrameTooLarge, ConnectionAbortedError, ConnectionRefusedError, TimeoutError),
            )
            await connection.close(flush)
            if isinstance(error, FrameTooLarge):
                self._oversized += 1
            elif isinstance(error, BlockingIOError):  # its queue passed max_send_buffer
                self._slow += 1
            elif isinstance(error, IdleTimeoutError):
                self._idle += 1
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

    def _open(self, connection: StreamConnection) -> None:
        """The connection is established: registered, reported, and its early frames queued."""
        remote = connection.remote
        if not connection.client:
            old = self._connections.get(remote)
            if old is not None:  # a stale entry for a reused address: end it first
                old.fail(ConnectionResetError(errno.ECONNRESET, "replaced by a new connection"))
            self._connections[remote] = connection
        connection.open = True
        if self.on_connection_made is not None:
            self.on_connection_made(remote)  # queues our CSM first
        early, connection.early = connection.early, []
        for data in early:
            if not connection.queue(data):
                self._dropped += 1

    def _deliver(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        """A connection's received frames, to the handler (counted)."""
        self._received += len(batch)
        on_frames = self._on_frames
        assert on_frames is not None
        on_frames(batch)

    def _finish(self, connection: StreamConnection) -> None:
        remote = connection.remote
        if self._connections.get(remote) is connection:
            del self._connections[remote]
        self._sent += connection.frames_sent
        self._dropped += len(connection.early) + connection.unsent_frames
        connection.early.clear()
        reason = connection.error
        error: OSError | None
        if isinstance(reason, FrameTooLarge):
            error = ConnectionAbortedError(errno.EMSGSIZE, str(reason))
            error.__cause__ = reason
        elif reason is None and connection.client:
            error = ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
        elif reason is not None and connection.client and not connection.open:
            error = _connect_failure(remote, reason)
        else:
            error = reason
        if self.on_connection_lost is not None:
            self.on_connection_lost(remote, error)


def _abort_frame(diagnostic: str) -> bytes:
    """An Abort signal (7.05, RFC 8323 §5.6) as a stream frame, with a diagnostic payload."""
    payload = b"\xff" + diagnostic.encode("utf-8")[:200]
    length = len(payload)
    if length < 13:
        return bytes([length << 4]) + b"\xe5" + payload
    return bytes([13 << 4, length - 13]) + b"\xe5" + payload


#: The errnos of a destination the network cannot reach.
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


def _connect_failure(remote: DatagramRemote, reason: OSError) -> ConnectFailure:
    """What a client connection that never opened reports: what happened, and why."""
    if isinstance(reason, ConnectionRefusedError):
        what = "refused"
    elif reason.errno in _UNREACHABLE:
        what = "unreachable"
    elif isinstance(reason, TimeoutError):
        what = "timed out"
    elif isinstance(reason, ConnectionResetError | BrokenPipeError):
        what = "reset by the peer"
    elif isinstance(reason, ssl.SSLError):
        what = "the TLS handshake failed"
    else:
        what = "failed"
    detail = reason.strerror if isinstance(reason.strerror, str) else str(reason)
    failure = ConnectFailure(reason.errno, f"could not connect to {remote}: {what} ({detail})")
    failure.__cause__ = reason
    return failure


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
