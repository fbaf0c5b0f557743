"""One RFC 8323 connection, run by exactly one task: its socket, TLS, framer and queue.

Owns :class:`StreamConnection`: the
:class:`~coap_trio.transports.stream.StreamEndpoint` makes one for every
connection it opens or accepts, and a single task of the endpoint's nursery
does all of that connection's work through it (connecting, the TLS and
WebSocket handshakes, reading, writing, the idle time, closing), with no
nursery of its own. Whoever runs that task decides what the connection is
for; this module knows sockets, a :class:`~coap_trio.transports.tls.TLSSession`
and a :class:`~coap_trio.transports.stream.Framer`, and nothing of CoAP.

I/O is done on the non-blocking socket itself: ``recv`` and ``send`` until
they would block, then ``trio.lowlevel.wait_readable`` / ``wait_writable``.
TLS (memory buffers) and the WebSocket upgrade (part of the framer) are
driven by bytes in and bytes out, so the one task runs them too.

Sending (:meth:`StreamConnection.queue`, from any task) never blocks: the
frame is wrapped (framer, then TLS) and appended to the connection's
bounded queue. The task, parked waiting for input, is woken by cancelling
that wait when the queue stops being empty; it then sends everything queued
(up to 256 KiB) in one ``send`` call, so the frames of one scheduler tick
cost one system call, and keeps what the kernel did not take. While the
kernel's send buffer is full it waits for room a short time at most, then
reads what arrived, and tries again: two peers that both write without
reading do not deadlock, the queue's bound still limits memory, and a peer
that takes none of our bytes for ``idle_timeout`` is disconnected.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from typing import TYPE_CHECKING, Protocol

import trio

from ..errors import FrameTooLarge, IdleTimeoutError
from .tls import TLSSession

if TYPE_CHECKING:
    from ..remote import DatagramRemote
    from .base import DatagramHandler

__all__ = ["CLOSE_GRACE", "Framer", "IdleTimeoutError", "StreamConnection"]

#: Seconds a closing connection may spend flushing its last frames, and closing.
CLOSE_GRACE = 0.25
#: Bytes asked of the kernel per read.
_RECEIVE_SIZE = 65536
#: Bytes handed to the kernel per send at most (a backlog is not copied whole each time).
_SEND_SIZE = 256 * 1024
#: Seconds a connection whose peer does not take its bytes waits for room before reading.
_BACKED_UP_WAIT = 0.03
#: Reads a closing connection drains (after its last frames) waiting for the peer's end.
_DRAIN_READS = 64


class Framer(Protocol):
    """Turns one connection's wire bytes into stream frames and back, without I/O.

    The connection's task sends what :meth:`start` returns once TLS (if
    any) is up, then feeds every byte received to :meth:`feed` and sends
    its replies: until :attr:`established`, those are the opening
    handshake's (a WebSocket upgrade); the connection counts as made once
    it is.
    """

    @property
    def established(self) -> bool:
        """True once the opening handshake is complete (frames flow)."""
        ...

    @property
    def closed(self) -> bool:
        """True once the peer ended the session (a WebSocket close): the connection ends."""
        ...

    #: False when :meth:`wrap` returns frames as they are (TCP, TLS): the
    #: connection then skips the call (it is made for every frame sent).
    wraps: bool

    def start(self) -> bytes:
        """The bytes that open the session (a WebSocket client's upgrade request), if any."""
        ...

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Received bytes in; complete stream frames and bytes to send back out.

        Raises :class:`~coap_trio.errors.FrameTooLarge` for a frame over the limit and
        ``OSError`` for anything else that must end the connection (a
        refused or malformed handshake included).
        """
        ...

    def wrap(self, frame: bytes) -> bytes:
        """A stream frame to send, as wire bytes (``OSError`` if the session is over)."""
        ...

    def close(self) -> bytes:
        """The last bytes to send before the connection closes (a WebSocket Close), if any."""
        ...

    def set_max_message_size(self, size: int) -> None:
        """Change the largest frame accepted."""
        ...


class StreamConnection:
    """One connection (see the module).

    The connection's task calls :meth:`open_client` or :meth:`open_server`
    (bounded by the caller's timeout), then :meth:`serve`, both inside
    :attr:`scope`, and at the end, always, :meth:`close`; any task may call
    :meth:`queue` and :meth:`fail`. ``sock`` is an accepted socket (server
    side), or None for a client that connects itself.
    """

    __slots__ = (
        "_chunks",
        "_closing",
        "_held",
        "_idle_timeout",
        "_last_progress",
        "_max_send_buffer",
        "_queued",
        "_unsent_frames",
        "_wake",
        "client",
        "early",
        "error",
        "framer",
        "frames_sent",
        "last_activity",
        "open",
        "remote",
        "scope",
        "sock",
        "tls",
    )

    def __init__(
        self,
        remote: DatagramRemote,
        framer: Framer,
        *,
        sock: socket.socket | None = None,
        max_send_buffer: int,
        idle_timeout: float,
    ) -> None:
        self.remote = remote
        self.framer = framer
        #: True for a connection we open, False for one accepted.
        self.client = sock is None
        self.sock: socket.socket | None = None if sock is None else _prepare(sock)
        self.tls: TLSSession | None = None
        #: Set by the endpoint once established (frames are then queued, not held).
        self.open = False
        #: Frames sent before the connection was established (after our CSM once it is).
        self.early: list[bytes] = []
        #: Why the connection ends (the first reason given); None: the peer closed it.
        self.error: OSError | FrameTooLarge | None = None
        #: Cancelled to end the connection from any task (see :meth:`fail`).
        self.scope = trio.CancelScope()
        #: Frames the kernel took in full.
        self.frames_sent = 0
        self.last_activity = trio.current_time()
        self._max_send_buffer = max_send_buffer
        self._idle_timeout = idle_timeout
        #: Wire bytes to send, in order (the first may be the rest of a partial send).
        self._chunks: list[bytes | memoryview] = []
        self._queued = 0
        self._unsent_frames = 0
        self._last_progress = self.last_activity
        #: Frames that arrived with the handshakes, handed over by :meth:`serve`.
        self._held: list[bytes] = []
        #: The wait for input that :meth:`queue` cancels to wake the task.
        self._wake: trio.CancelScope | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        """Bytes waiting to be sent."""
        return self._queued

    @property
    def unsent_frames(self) -> int:
        """Frames queued that the kernel has not taken in full."""
        return self._unsent_frames

    # -- any task ------------------------------------------------------------------

    def queue(self, frame: bytes, *, force: bool = False) -> bool:
        """Wrap ``frame`` (framer, then TLS) and queue it; never blocks or raises.

        Returns False when it was dropped: the connection is closing, could
        not wrap it, or its queue would pass ``max_send_buffer`` (unless
        ``force``, for a last Abort); the last two make it fail (the last with
        ``BlockingIOError``). Wakes the task if it waits for input.
        """
        if self._closing:
            return False
        try:
            framer = self.framer
            wire = framer.wrap(frame) if framer.wraps else frame
            tls = self.tls
            if tls is not None:
                wire = tls.encrypt(wire)
        except OSError as exc:
            self.fail(exc)
            return False
        queued = self._queued + len(wire)
        if queued > self._max_send_buffer and not force:
            self.fail(BlockingIOError(errno.ENOBUFS, "the peer does not read: buffer full"))
            return False
        chunks = self._chunks
        chunks.append(wire)
        self._queued = queued
        self._unsent_frames += 1
        if len(chunks) == 1:  # the queue was empty: the task may be parked waiting for input
            wake = self._wake
            if wake is not None:
                self._wake = None
                wake.cancel()
        return True

    def fail(self, error: OSError) -> None:
        """End the connection from any task (the first error given is the one reported)."""
        if self.error is None:
            self.error = error
        self.scope.cancel()

    # -- the connection's task -------------------------------------------------------

    async def open_client(self, tls: ssl.SSLContext | None) -> None:
        """Connect (happy eyeballs), then run the TLS (with ``tls``) and WebSocket handshakes.

        The server's certificate is verified against the remote's host.
        """
        remote = self.remote
        stream = await trio.open_tcp_stream(remote.host, remote.port)
        self.sock = _prepare(socket.socket(fileno=stream.socket.detach()))
        if tls is not None:
            self.tls = TLSSession(tls, server_side=False, server_hostname=remote.host)
        await self._handshakes()

    async def open_server(self, tls: ssl.SSLContext | None) -> None:
        """Run the TLS (with ``tls``) and WebSocket handshakes of an accepted connection."""
        if tls is not None:
            self.tls = TLSSession(tls, server_side=True)
        await self._handshakes()

    async def serve(self, on_frames: DatagramHandler) -> None:
        """Hand over received frames and send what is queued, until the connection ends.

        Returns when the peer closed; raises ``OSError`` when the connection
        fails (:class:`IdleTimeoutError` after ``idle_timeout`` without
        traffic, or without the peer taking any of our bytes).
        """
        sock = self.sock
        assert sock is not None
        idle = self._idle_timeout
        self.last_activity = self._last_progress = trio.current_time()
        held, self._held = self._held, []
        if held:
            remote = self.remote
            on_frames([(frame, remote) for frame in held])
        if self.framer.closed:
            return
        wait_readable = trio.lowlevel.wait_readable
        cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
        while True:
            if self._chunks:
                self._flush()
                if self._chunks:  # the kernel's buffer is full: wait for room, but read too
                    with trio.move_on_after(_BACKED_UP_WAIT):
                        await trio.lowlevel.wait_writable(sock)
                    if trio.current_time() >= self._last_progress + idle:
                        raise IdleTimeoutError(
                            errno.ETIMEDOUT, "the peer read nothing for too long"
                        )
                    if self._receive(on_frames) is None:
                        return
                    continue
            with trio.CancelScope(deadline=self.last_activity + idle) as waiting:
                self._wake = waiting
                try:
                    await wait_readable(sock)
                finally:
                    self._wake = None
            if waiting.cancelled_caught:  # woken to send, or idle
                if not self._chunks and trio.current_time() >= self.last_activity + idle:
                    raise IdleTimeoutError(errno.ETIMEDOUT, "idle connection closed")
                continue
            handed_over = self._receive(on_frames)
            if handed_over is None:
                return
            if handed_over and not self._chunks:
                # The frames just handed over woke tasks that are likely to
                # queue frames (the next requests, the answers): let them run
                # first, so that what they queue goes out in one send, with no
                # wake-up through cancelling the wait for input below. Two
                # yields: the tasks woken run before this one's second turn.
                await cancel_shielded_checkpoint()
                if not self._chunks:
                    await cancel_shielded_checkpoint()

    async def close(self, flush: bool) -> None:
        """Close the socket, first (with ``flush``) sending what is queued and our goodbyes.

        The goodbyes are the framer's (a WebSocket Close, or a refused
        upgrade's answer) and TLS's ``close_notify``. When frames were still
        queued (an Abort, say), our side is half-closed and the peer's input
        drained briefly, so it reads them before any reset (unread input
        makes the kernel answer the close with RST, which can destroy them in
        flight). All within :data:`CLOSE_GRACE`, shielded from cancellation;
        never raises ``OSError``. Later frames are dropped.
        """
        self._closing = True
        sock = self.sock
        if sock is None:
            return
        try:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(CLOSE_GRACE),
                contextlib.suppress(OSError),
            ):
                if flush:
                    await self._say_goodbye(sock)
                elif self.tls is not None and not self.tls.established and self._chunks:
                    self._flush()  # the alert telling the peer why its handshake failed
        finally:
            sock.close()

    # -- inside the task ---------------------------------------------------------------

    async def _handshakes(self) -> None:
        """TLS, then the framer's opening (WebSocket upgrade); frames that came along are held."""
        tls = self.tls
        if tls is not None:
            await self._tls_handshake(tls)
        framer = self.framer
        self._push(framer.start())
        data = b""
        if tls is not None:  # what came with the last handshake flight
            data = tls.receive(b"")
            self._append(tls.take_output())
        while True:  # a few reads: the framer gives up on a long handshake
            if data:
                frames, reply = framer.feed(data)
                self._push(reply)
                self._held += frames
            if framer.established:
                return
            await self._flush_all()
            data = await self._receive_handshake()
            if tls is not None:
                data = tls.receive(data)
                self._append(tls.take_output())
                if tls.peer_closed:
                    raise ConnectionResetError(errno.ECONNRESET, "closed during the handshake")

    async def _tls_handshake(self, tls: TLSSession) -> None:
        data = b""
        while True:  # a few flights, bounded by the caller's timeout
            try:
                done = tls.handshake(data)
            finally:
                self._append(tls.take_output())  # our flight, or the alert saying why not
            if done:
                return
            await self._flush_all()
            data = await self._receive_handshake()

    async def _receive_handshake(self) -> bytes:
        """Wait for bytes; ConnectionResetError when the peer closes first."""
        sock = self.sock
        assert sock is not None
        while True:  # readable means a read succeeds, but for rare spurious wake-ups
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(_RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                raise ConnectionResetError(errno.ECONNRESET, "closed during the handshake")
            return data

    def _receive(self, on_frames: DatagramHandler) -> int | None:
        """Read what the socket has (without waiting), hand its frames over.

        Returns how many frames were handed over; None at the end.
        """
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(_RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return 0
        if not data:
            return None  # the peer closed its side
        self.last_activity = trio.current_time()
        ended = False
        count = 0
        tls = self.tls
        if tls is not None:
            data = tls.receive(data)
            self._append(tls.take_output())
            ended = tls.peer_closed
        if data:
            framer = self.framer
            frames, reply = framer.feed(data)
            if reply:
                self._push(reply)
            count = len(frames)
            if frames:
                remote = self.remote
                on_frames([(frame, remote) for frame in frames])
            ended = ended or framer.closed
        return None if ended else count

    def _push(self, wire: bytes) -> None:
        """Queue the framer's own bytes (handshake, pongs, close), through TLS."""
        if wire:
            if self.tls is not None:
                wire = self.tls.encrypt(wire)
            self._append(wire)

    def _append(self, wire: bytes) -> None:
        """Queue wire bytes of the task's own (it is running: no wake-up needed)."""
        if wire:
            self._chunks.append(wire)
            self._queued += len(wire)

    def _flush(self) -> None:
        """Send what is queued (up to :data:`_SEND_SIZE`) in one call, without waiting.

        What the kernel does not take stays first in the queue.
        """
        sock = self.sock
        assert sock is not None
        chunks = self._chunks
        taken = len(chunks)
        if taken == 1:
            data = chunks[0]
        else:
            if self._queued > _SEND_SIZE:  # a backlog: no copying all of it per call
                size = taken = 0
                for chunk in chunks:
                    taken += 1
                    size += len(chunk)
                    if size >= _SEND_SIZE:
                        break
            data = b"".join(chunks[:taken] if taken < len(chunks) else chunks)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent:
            self.last_activity = self._last_progress = trio.current_time()
            self._queued -= sent
        if sent == len(data):
            del chunks[:taken]
        elif sent or taken > 1:
            chunks[:taken] = [memoryview(data)[sent:]]
        if not chunks:
            self.frames_sent += self._unsent_frames
            self._unsent_frames = 0

    async def _flush_all(self) -> None:
        """Send everything queued, waiting for room as needed."""
        sock = self.sock
        assert sock is not None
        while self._chunks:
            self._flush()
            if self._chunks:
                await trio.lowlevel.wait_writable(sock)

    async def _say_goodbye(self, sock: socket.socket) -> None:
        frames_pending = bool(self._chunks)
        self._push(self.framer.close())
        if self.tls is not None:
            self._append(self.tls.close())
        await self._flush_all()
        if frames_pending:
            sock.shutdown(socket.SHUT_WR)
            for _ in range(_DRAIN_READS):  # until the peer's end, or the grace time
                await trio.lowlevel.wait_readable(sock)
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    if not sock.recv(_RECEIVE_SIZE):
                        return


def _prepare(sock: socket.socket) -> socket.socket:
    """A connected socket made non-blocking, without Nagle's delay."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    return sock
