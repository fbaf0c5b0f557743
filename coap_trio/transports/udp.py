"""UDP transport: real datagram sockets, each driven by its endpoint's own trio task.

Owns :class:`UDPNetwork` (binding endpoints, resolving host names) and
:class:`UDPEndpoint` (one non-blocking stdlib socket: batched receiving, the
never-blocking send with its bounded outbox, and the OS's reports about
unreachable peers). It moves bytes and socket addresses only and must not know
CoAP: no parsing, retransmission, deduplication or caching of resolved names
(the Context does those).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..remote import DatagramRemote, MulticastRemote
from .base import DatagramEndpoint, DatagramHandler, EndpointStatistics, ErrorHandler

__all__ = ["UDPEndpoint", "UDPGroupEndpoint", "UDPNetwork"]

_MAX_DATAGRAM = 65535
_RCVBUF = 4 * 1024 * 1024  # asked for; the OS may cap it (Linux: net.core.rmem_max)
_SNDBUF = 1024 * 1024
_REMOTE_CACHE_LIMIT = 65536
_ERROR_BACKOFF = 0.01  # seconds to pause after an unexpected receive error
#: After this many wake-ups in a row with one datagram each, the receive loop
#: reads one datagram per wake-up, and drains the socket every _PROBE_EVERY-th.
_SINGLES = 8
_PROBE_EVERY = 16
#: Errors that report a peer's (ICMP) state rather than trouble with our socket.
_PEER_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE}
)

if sys.platform == "linux":
    # Python 3.11's socket module lacks these (<linux/in.h>, <linux/in6.h>,
    # <linux/socket.h>): IP(V6)_RECVERR makes the kernel queue ICMP errors about
    # unconnected peers, with the original destination, on the socket's error
    # queue, which recvmsg(..., MSG_ERRQUEUE) reads.
    _IP_RECVERR = 11
    _IPV6_RECVERR = 25
    _MSG_ERRQUEUE = 0x2000
    _RECVERR_CMSGS = frozenset(
        {(socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)}
    )
    # struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data
    _SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
    _ANCBUFSIZE = socket.CMSG_SPACE(512)
    # IP(V6)_MULTICAST_ALL 0: a socket receives only the groups it joined itself
    # (by default Linux hands it every group any socket joined, if the port fits).
    _IP_MULTICAST_ALL = 49
    _IPV6_MULTICAST_ALL = 29


def _parse_ip(host: str, port: int) -> tuple[socket.AddressFamily, str, int]:
    """The family, canonical text and scope id of an IP literal (ValueError otherwise).

    The scope (``%eth0`` or ``%2``) is kept only for addresses that need one, as
    the kernel reports them: link-local unicast, interface/link-local multicast.
    """
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port!r}")
    address, percent, zone = host.partition("%")
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except (OSError, ValueError):
        pass
    else:
        scope = 0
        if percent:
            scope = int(zone) if zone.isascii() and zone.isdigit() else socket.if_nametoindex(zone)
            if scope >= 1 << 32:
                raise ValueError(f"scope id out of range: {host!r}")
        scoped = (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80) or (
            packed[0] == 0xFF and packed[1] & 0x0F in (1, 2)
        )
        return socket.AF_INET6, socket.inet_ntop(socket.AF_INET6, packed), scope if scoped else 0
    if not percent:
        with contextlib.suppress(OSError, ValueError):
            packed = socket.inet_pton(socket.AF_INET, address)
            return socket.AF_INET, socket.inet_ntop(socket.AF_INET, packed), 0
    raise ValueError(f"not an IP address literal: {host!r}")


class UDPNetwork:
    """Real UDP: endpoints are stdlib sockets, names go to the system resolver.

    ``outbox_capacity`` is passed on to every endpoint (see :class:`UDPEndpoint`).
    ``reuse_port`` sets ``SO_REUSEPORT`` on every socket before binding, so that
    several processes can serve one port (the kernel spreads remotes over them
    by a hash of the addresses; where the option is missing, opening an
    endpoint raises OSError). ``reuse_address`` sets ``SO_REUSEADDR``, which
    lets a socket that joined a multicast group (:meth:`open_group_endpoint`)
    take the same port as a wildcard bind (``[::]:5683`` beside
    ``[ff02::fd]:5683``).
    """

    def __init__(
        self, *, outbox_capacity: int = 1024, reuse_port: bool = False, reuse_address: bool = False
    ) -> None:
        self._outbox_capacity = outbox_capacity
        self._reuse_port = reuse_port
        self._reuse_address = reuse_address

    def open_endpoint(self, host: str, port: int) -> UDPEndpoint:
        """Bind a UDP socket synchronously and wrap it in an endpoint.

        ``"::"`` gives a dual-stack socket (IPv4 peers appear IPv4-mapped), any
        other IPv6 literal an IPv6 socket, an IPv4 literal an IPv4 one; anything
        else raises ValueError. Bind failures raise OSError.
        """
        family, address, scope = _parse_ip(host, port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and address == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if self._reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                reuse = getattr(socket, "SO_REUSEPORT", None)
                if reuse is None:
                    raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
                sock.setsockopt(socket.SOL_SOCKET, reuse, 1)
            for option, size in ((socket.SO_RCVBUF, _RCVBUF), (socket.SO_SNDBUF, _SNDBUF)):
                while size >= 65536:  # some systems refuse, rather than cap, big buffers
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, option, size)
                        break
                    except OSError:
                        size //= 2
            if sys.platform == "linux":  # unicast only: groups arrive on their own sockets
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
            sock.bind((address, port, 0, scope) if family == socket.AF_INET6 else (address, port))
            return UDPEndpoint(sock, outbox_capacity=self._outbox_capacity)
        except BaseException:
            sock.close()
            raise

    def open_group_endpoint(
        self, group: str, port: int, reply: DatagramEndpoint, interface: str | None = None
    ) -> UDPGroupEndpoint:
        """Join the multicast ``group`` on ``interface`` and receive what is sent to it on
        ``port`` (see :class:`UDPGroupEndpoint`).

        The socket is bound to the group address itself (only datagrams sent
        to the group arrive), with ``SO_REUSEADDR`` (and ``SO_REUSEPORT``
        where it exists) so that other servers on this host can join the same
        group and port. ``interface`` is a name (``"eth0"``) or an index
        (``"2"``); None lets the system choose. ValueError when ``group`` is
        not a multicast literal; OSError when joining or binding fails.
        """
        family, address, scope = _parse_ip(group, port)
        packed = socket.inet_pton(family, address)
        if not (packed[0] == 0xFF if family == socket.AF_INET6 else 224 <= packed[0] <= 239):
            raise ValueError(f"not a multicast address: {group!r}")
        index = 0
        if interface is not None:
            index = int(interface) if interface.isdigit() else socket.if_nametoindex(interface)
        index = index or scope
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reuse = getattr(socket, "SO_REUSEPORT", None)
            if reuse is not None:
                sock.setsockopt(socket.SOL_SOCKET, reuse, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address, port, 0, index))
                membership = packed + struct.pack("@I", index)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, membership)
            else:
                sock.bind((address, port))
                # struct ip_mreqn: the group, any local address, the interface index.
                membership = packed + bytes(4) + struct.pack("@i", index)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            return UDPGroupEndpoint(sock, address, reply, outbox_capacity=0)
        except BaseException:
            sock.close()
            raise

    async def resolve(self, host: str, port: int) -> list[str]:
        """The unique IP addresses of ``host``, in resolver order (OSError if none).

        Scoped IPv6 addresses come back as ``fe80::1%4``, as :meth:`UDPEndpoint.remote_for`
        accepts them.
        """
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except UnicodeError as exc:  # not encodable as a host name (IDNA)
            raise socket.gaierror(socket.EAI_NONAME, f"invalid host name {host!r}") from exc
        addresses: list[str] = []
        for family, _, _, _, sockaddr in infos:
            address = str(sockaddr[0])
            if family == socket.AF_INET6 and len(sockaddr) == 4 and sockaddr[3]:
                address = f"{address}%{sockaddr[3]}"
            if address not in addresses:
                addresses.append(address)
        return addresses


class UDPEndpoint:
    """One bound UDP socket: receives in batches, sends without ever blocking.

    Made by :meth:`UDPNetwork.open_endpoint`, or from any bound, datagram
    ``socket.socket`` (which the endpoint then owns and makes non-blocking).
    ``outbox_capacity`` bounds the datagrams waiting for the socket buffer to
    drain; ``batch_limit`` bounds the datagrams read per wake-up and handed to
    the handler in one call. A wake-up reads until the socket is empty, but
    after 8 wake-ups in a row that each found one datagram (a client or server
    doing one exchange at a time) it reads one datagram and skips the read that
    would fail with EAGAIN (a system call and an exception per datagram). It
    drains the socket on every 16th wake-up still, and keeps draining from the
    first such wake-up that finds more than one datagram; a datagram left
    behind keeps the socket readable, so the next wake-up takes it.

    Resource handling:
        The endpoint owns the socket. :meth:`run` closes it when it exits for
        any reason; :meth:`close` closes it at once (idempotent), which makes
        a running :meth:`run` return. Datagrams still in the outbox are then
        dropped and counted. Remotes are interned in a dict that is cleared
        when it exceeds 65536 entries, so a busy server's memory stays bounded.

    Error handling:
        :meth:`send` never raises for network trouble: a full socket buffer
        queues the datagram, other OSErrors drop it (``send_dropped``) and
        are handed to ``on_error`` with its remote from run's tasks, never from
        inside :meth:`send`. On Linux the kernel's ICMP reports (``IP_RECVERR``)
        are read from the socket's error queue and handed to ``on_error`` with
        the original destination (``peer_errors``); a send that fails only
        because such a report was pending is retried once. Other receive
        errors are counted (:attr:`receive_errors`) and briefly backed off
        from. Exceptions raised by the handlers propagate out of :meth:`run`.

    Cancellation:
        :meth:`run` holds a nursery of two tasks: itself, the only one waiting
        for the socket to be readable, and a flusher, the only one waiting
        for it to be writable (while the outbox is non-empty) and the one that
        reports send errors. Cancelling run stops both and closes the socket.
    """

    def __init__(
        self, sock: socket.socket, *, outbox_capacity: int = 1024, batch_limit: int = 256
    ) -> None:
        if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"not an IPv4/IPv6 datagram socket: {sock!r}")
        if outbox_capacity < 0 or batch_limit < 1:
            raise ValueError("outbox_capacity must be >= 0 and batch_limit >= 1")
        sock.setblocking(False)
        self._sock = sock
        self._family = sock.family
        self._batch_limit = batch_limit
        self._outbox_capacity = outbox_capacity
        self._outbox: deque[tuple[bytes, DatagramRemote]] = deque()
        self._pending_errors: deque[tuple[DatagramRemote, OSError]] = deque(maxlen=1024)
        self._wakeup = trio.lowlevel.ParkingLot()
        self._on_error: ErrorHandler | None = None
        self._remotes: dict[tuple[Any, ...], DatagramRemote] = {}
        self._local = DatagramRemote(sock.getsockname())
        self._received = self._sent = self._send_dropped = 0
        self._peer_errors = self._receive_errors = 0
        self._closed = False
        self._recverr = False
        if sys.platform == "linux":
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)  # IPv4(-mapped) peers
                if self._family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                self._recverr = True

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, to inspect or set options; don't read or write it."""
        return self._sock

    @property
    def local_address(self) -> DatagramRemote:
        """The bound address, with the real port when port 0 was asked for."""
        return self._local

    @property
    def statistics(self) -> EndpointStatistics:
        """A snapshot of the counters."""
        return EndpointStatistics(
            datagrams_received=self._received,
            datagrams_sent=self._sent,
            outbox_depth=len(self._outbox),
            send_dropped=self._send_dropped,
            peer_errors=self._peer_errors,
        )

    @property
    def receive_errors(self) -> int:
        """Receive-side OSErrors not attributable to a peer (counted, then ignored)."""
        return self._receive_errors

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        """The canonical remote for an IP literal, as this socket's receive calls report it.

        On an IPv6 socket IPv4 becomes ``("::ffff:a.b.c.d", port, 0, 0)`` and a
        zone (``fe80::1%eth0`` or ``%2``) the scope id; on an IPv4 socket an
        IPv6 host raises ``OSError(EAFNOSUPPORT)``. Not a literal: ValueError.
        """
        family, address, scope = _parse_ip(host, port)
        if self._family == socket.AF_INET6:
            if family == socket.AF_INET:
                return self._remote(("::ffff:" + address, port, 0, 0))
            return self._remote((address, port, 0, scope))
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, f"IPv6 host {host!r} on an IPv4 endpoint")
        return self._remote((address, port))

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        """Send one datagram now, or queue it behind the outbox; never blocks or raises."""
        if not self._outbox and not self._closed:
            try:  # the common case, without _try_send's frame (remote[0]: its sockaddr)
                self._sock.sendto(data, remote[0])
            except BlockingIOError:
                pass  # queued below
            except OSError as exc:
                self._send_failed(data, remote, exc, True)
                return
            else:
                self._sent += 1
                return
        if self._closed:
            self._send_dropped += 1
        elif self._outbox or not self._try_send(data, remote):
            if len(self._outbox) >= self._outbox_capacity:
                self._send_dropped += 1
            else:
                self._outbox.append((data, remote))
                self._wakeup.unpark_all()

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive (and flush the outbox) until cancelled or closed; then close the socket."""
        if self._closed:
            raise trio.ClosedResourceError("the endpoint is closed")
        if self._on_error is not None:
            raise trio.BusyResourceError("the endpoint is already running")
        self._on_error = on_error
        failures: list[Exception] = []
        try:
            async with trio.open_nursery() as nursery:
                stop = nursery.cancel_scope
                nursery.start_soon(self._supervise, self._flush_loop, stop, failures)
                task_status.started()
                receive = functools.partial(self._receive_loop, on_datagrams, on_error)
                await self._supervise(receive, stop, failures)
        finally:
            self._on_error = None
            self.close()
        if failures:  # a handler's bug, raised as itself rather than in an ExceptionGroup
            raise failures[0]

    def close(self) -> None:
        """Close the socket now (idempotent); a running :meth:`run` returns."""
        if self._closed:
            return
        self._closed = True
        self._send_dropped += len(self._outbox)
        self._outbox.clear()
        self._pending_errors.clear()
        with contextlib.suppress(RuntimeError):  # outside trio.run nobody can be waiting
            trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        self._wakeup.unpark_all()

    async def _supervise(
        self, job: Callable[[], Awaitable[None]], stop: trio.CancelScope, failures: list[Exception]
    ) -> None:
        """Run one of run's tasks; when either ends (closed, or a bug), stop both."""
        try:
            await job()
        except Exception as exc:
            if not (self._closed and isinstance(exc, trio.ClosedResourceError)):
                failures.append(exc)
        stop.cancel()

    async def _receive_loop(self, on_datagrams: DatagramHandler, on_error: ErrorHandler) -> None:
        sock = self._sock
        # Into one reused buffer, then copied at its size: recvfrom(65535) would
        # allocate (and shrink) 64 KiB per datagram.
        buffer = bytearray(_MAX_DATAGRAM)
        view = memoryview(buffer)
        recvfrom_into = sock.recvfrom_into
        remotes = self._remotes
        drain = range(self._batch_limit)
        one = range(1)
        #: Wake-ups in a row that found one datagram (and then an empty socket).
        singles = 0
        while not self._closed:
            await trio.lowlevel.wait_readable(sock)
            batch: list[tuple[bytes, DatagramRemote]] = []
            failure: OSError | None = None
            # One datagram per wake-up (a request and its response at a time): the
            # read that would find the socket empty (EAGAIN: a system call and an
            # exception) is skipped, but for every _PROBE_EVERY-th wake-up. A datagram
            # left behind keeps the socket readable: the next wake-up takes it.
            attempts = one if singles >= _SINGLES and singles % _PROBE_EVERY else drain
            for _ in attempts:
                try:
                    size, address = recvfrom_into(buffer)
                except BlockingIOError:
                    break
                except OSError as exc:  # e.g. a pending ICMP error
                    failure = exc
                    break
                remote = remotes.get(address)
                if remote is None:
                    remote = self._remote(address)
                batch.append((bytes(view[:size]), remote))
            singles = singles + 1 if len(batch) == 1 else 0
            if batch:
                self._received += len(batch)
                on_datagrams(batch)
            if (failure is not None or not batch) and not self._closed:
                reports = self._read_error_queue()
                for remote, error in reports:
                    on_error(remote, error)
                if failure is not None and not reports:
                    self._receive_errors += 1
                    if failure.errno not in _PEER_ERRNOS:  # no busy loop on a sick socket
                        await trio.sleep(_ERROR_BACKOFF)

    async def _flush_loop(self) -> None:
        while not self._closed:
            if not (self._outbox or self._pending_errors):
                await self._wakeup.park()
                continue
            while self._pending_errors:
                remote, error = self._pending_errors.popleft()
                if self._on_error is not None:
                    self._on_error(remote, error)
            if self._outbox:
                await trio.lowlevel.wait_writable(self._sock)
                outbox = self._outbox
                while outbox and self._try_send(*outbox[0]):
                    outbox.popleft()

    def _try_send(self, data: bytes, remote: DatagramRemote, retry: bool = True) -> bool:
        """Write one datagram, or fail it for good: True; socket buffer full: False."""
        try:
            self._sock.sendto(data, remote.sockaddr)
        except BlockingIOError:
            return False
        except OSError as exc:
            return self._send_failed(data, remote, exc, retry)
        self._sent += 1
        return True

    def _send_failed(self, data: bytes, remote: DatagramRemote, exc: OSError, retry: bool) -> bool:
        """A send failed for good (not for a full buffer): report, maybe retry once; True."""
        # On Linux the error queue may hold this very failure (IPv6 EMSGSIZE),
        # or a pending ICMP report about another peer failed this send: then
        # pass the reports on and retry once.
        reports = self._read_error_queue() if retry else []
        own = any(r == remote and e.errno == exc.errno for r, e in reports)
        if self._on_error is not None:  # reported by the flusher task, not from send()
            self._pending_errors.extend(reports if own else reports or [(remote, exc)])
            self._wakeup.unpark_all()
        if reports and not own:
            return self._try_send(data, remote, retry=False)
        self._send_dropped += 1
        return True

    def _read_error_queue(self) -> list[tuple[DatagramRemote, OSError]]:
        """Pop the kernel's queued reports about peers (Linux ``IP_RECVERR``); [] elsewhere."""
        reports: list[tuple[DatagramRemote, OSError]] = []
        if sys.platform != "linux" or not self._recverr:
            return reports
        for _ in range(self._batch_limit):
            try:
                _, ancdata, _, address = self._sock.recvmsg(0, _ANCBUFSIZE, _MSG_ERRQUEUE)
            except OSError:  # BlockingIOError: the queue is empty
                break
            for level, kind, data in ancdata:
                if (level, kind) in _RECVERR_CMSGS and len(data) >= _SOCK_EXTENDED_ERR.size:
                    code = _SOCK_EXTENDED_ERR.unpack_from(data)[0]
                    if code and address:
                        self._peer_errors += 1
                        reports.append((self._remote(address), OSError(code, os.strerror(code))))
        return reports

    def _remote(self, address: tuple[Any, ...]) -> DatagramRemote:
        """The interned remote for a socket address."""
        remote = self._remotes.get(address)
        if remote is None:
            if len(self._remotes) >= _REMOTE_CACHE_LIMIT:
                self._remotes.clear()
            remote = self._remotes[address] = DatagramRemote(address)
        return remote


class UDPGroupEndpoint(UDPEndpoint):
    """A socket that joined a multicast group: it receives what is sent to the group.

    Made by :meth:`UDPNetwork.open_group_endpoint`. Peers are reported as
    :class:`~coap_trio.remote.MulticastRemote` (their own address, and the
    group); what is sent through it goes out through ``reply``, a unicast
    endpoint of the same family, so that answers come from a unicast
    address (RFC 7252 §8.2) and the group socket is only ever read.
    """

    def __init__(
        self,
        sock: socket.socket,
        group: str,
        reply: DatagramEndpoint,
        *,
        outbox_capacity: int = 0,
        batch_limit: int = 256,
    ) -> None:
        super().__init__(sock, outbox_capacity=outbox_capacity, batch_limit=batch_limit)
        #: The group address joined.
        self.group = group
        self._reply = reply
        self._reply_remotes: dict[DatagramRemote, DatagramRemote] = {}

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        """Send through the reply endpoint, to ``remote`` as that endpoint addresses it."""
        target = self._reply_remotes.get(remote)
        if target is None:
            try:
                sockaddr = remote.sockaddr
                host = remote.host
                if len(sockaddr) == 4 and sockaddr[3]:  # a scoped (link-local) peer
                    host = f"{host}%{sockaddr[3]}"
                target = self._reply.remote_for(host, remote.port)
            except (OSError, ValueError):
                return  # a peer the reply endpoint's family cannot reach
            if len(self._reply_remotes) >= _REMOTE_CACHE_LIMIT:
                self._reply_remotes.clear()
            self._reply_remotes[remote] = target
        self._reply.send(data, target)

    def _remote(self, address: tuple[Any, ...]) -> DatagramRemote:
        """The interned remote for a socket address, marked with the group."""
        remote = self._remotes.get(address)
        if remote is None:
            if len(self._remotes) >= _REMOTE_CACHE_LIMIT:
                self._remotes.clear()
            remote = self._remotes[address] = MulticastRemote(address, "coap", self.group)
        return remote
