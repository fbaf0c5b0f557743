"""CoAP over DTLS (RFC 7252 §9): a datagram endpoint that secures the one it wraps.

Owns :class:`DtlsEndpoint` (one DTLS 1.2 session per peer address over an
inner UDP or in-memory endpoint, in a bounded table), its limits
(:class:`DtlsLimits`) and counters (:class:`DtlsEndpointStatistics`). To the
endpoint runner above it, it is an ordinary
:class:`~coap_trio.transports.base.DatagramEndpoint`: ``send`` takes a CoAP
datagram and ``on_datagrams`` gets the decrypted ones, so the messaging on
top is the unchanged UDP machine (CoAP over DTLS is CoAP over UDP, §9.1).
The sessions are the sans-I/O engine's
(``coap_trio.protocol.dtls.session.DtlsSession``); this module gives
them datagrams, the time (trio's clock, and the wall clock certificates
are checked at) and a timer task. Must not know CoAP beyond telling a
request from other messages (only a request, or a ping, opens a session).

- **Serving** (``serve=True``): a datagram from an address without a session
  goes through the stateless cookie check
  (``coap_trio.protocol.dtls.cookie.CookieVerifier``): a ClientHello
  without a valid cookie is answered with a HelloVerifyRequest and nothing
  is kept; only one that echoes its cookie (its sender proved it receives at
  that address) may start a session, within the limits on sessions in total,
  per IP address, and on handshakes in progress. A new ClientHello from an
  address whose session is established goes the same way, and once its
  cookie checks out it replaces that session (RFC 6347 §4.2.8: the client
  restarted).
- **Client**: the first request (or ping) to an address without a session
  starts a handshake; what is sent meanwhile waits (``max_queued``
  datagrams, retransmissions of one datagram counted once) and goes out
  once the session is up. The session is reused by every later request.
- **Failures**: a client handshake that fails (our refusal: a
  :class:`~coap_trio.errors.HandshakeError` with the alert we sent, its
  time running out: :class:`~coap_trio.errors.HandshakeTimeoutError`; the
  peer's fatal alert: :class:`~coap_trio.errors.DtlsAlertError`), an
  established session failing or closed by the peer, replaced, or closed
  after ``idle_timeout`` without traffic: the peer is reported to
  ``on_error`` with that :class:`~coap_trio.errors.RequestError`, and every
  exchange with it ends with it. A server handshake that fails is only
  counted (nothing was waiting for it). A record that does not
  authenticate, replays an earlier one or cannot be read is dropped and
  counted by its session; a datagram from an address without a session that
  is no ClientHello is dropped and counted here.
- **Peers**: remotes are :class:`~coap_trio.remote.DtlsRemote` (scheme
  ``coaps``) carrying the :class:`~coap_trio.remote.DtlsPeer` the session
  authenticated, so that a resource sees who asked (``request.remote.peer``).

Cancellation: :meth:`DtlsEndpoint.run` runs the inner endpoint's ``run`` and
the timer task (flight retransmissions, handshake deadlines, the idle sweep,
errors to report) in one nursery; cancelling it first sends close_notify to
the peer of every established session, both roles
(:meth:`DtlsEndpoint.close_sessions`: synchronous, one record per session,
never waiting on the socket), then stops both tasks and closes the inner
endpoint. So leaving ``open_context`` tells every DTLS peer the session is
over, and a cancellation still stops everything at once.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime

import attrs
import trio

from ..errors import HandshakeError, NetworkError, RequestError
from ..protocol.dtls.cookie import Accept, CookieVerifier, SendHelloVerifyRequest
from ..protocol.dtls.credentials import DtlsCredentials
from ..protocol.dtls.record import MAX_PLAINTEXT
from ..protocol.dtls.session import (
    AlertReceived,
    Closed,
    DtlsConfig,
    DtlsEvent,
    DtlsSession,
    DtlsState,
    Failed,
    HandshakeComplete,
    Received,
    Role,
)
from ..remote import DatagramRemote, DtlsPeer, DtlsRemote
from .base import DatagramEndpoint, DatagramHandler, EndpointStatistics, ErrorHandler

__all__ = ["DtlsEndpoint", "DtlsEndpointStatistics", "DtlsLimits"]

_ESTABLISHED = DtlsState.ESTABLISHED
_HANDSHAKING = frozenset(
    {
        DtlsState.IDLE,
        DtlsState.WAIT_SERVER_HELLO,
        DtlsState.WAIT_SERVER_HELLO_DONE,
        DtlsState.WAIT_SERVER_FINISHED,
        DtlsState.WAIT_CLIENT_FINISHED,
    }
)
#: The timer heap is rebuilt when stale entries outnumber live handshakes this much.
_HEAP_SLACK = 4

#: Peers to report to the runner, with what their requests fail with.
_Errors = list[tuple[DatagramRemote, OSError | RequestError]]


@attrs.frozen
class DtlsLimits:
    """The bounds of a :class:`DtlsEndpoint`: what peers can make it hold, and its timers.

    A ClientHello beyond ``max_sessions``, ``max_sessions_per_address`` or
    ``max_handshakes`` gets no answer (counted in ``sessions_refused``); a
    request of ours beyond them fails with a
    :class:`~coap_trio.errors.HandshakeError`.
    """

    #: Sessions at once, established or in their handshake, both roles.
    max_sessions: int = 10_000
    #: Sessions at once with one IP address (any port).
    max_sessions_per_address: int = 64
    #: Handshakes in progress at once (they hold more state and cost CPU).
    max_handshakes: int = 256
    #: An established session without traffic either way for this long is
    #: closed (with close_notify), seconds; unless its peer has observations
    #: served (see ``DtlsEndpoint.keep_alive``).
    idle_timeout: float = 300.0
    #: A handshake fails this long after its first flight, seconds.
    handshake_timeout: float = 60.0
    #: Datagrams waiting for a client session's handshake, per session (a
    #: retransmission counted once): what NSTART lets out towards one peer
    #: (``set_nstart``) should fit, or the rest waits for its own retransmission.
    max_queued: int = 64
    #: Largest datagram sent: handshake flights are cut to fit (RFC 7252 §4.6: 1152).
    mtu: int = 1152

    def __attrs_post_init__(self) -> None:
        for name in ("max_sessions", "max_sessions_per_address", "max_handshakes", "max_queued"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not (self.idle_timeout > 0 and self.handshake_timeout > 0):
            raise ValueError("idle_timeout and handshake_timeout must be positive")
        if self.mtu < 256:
            raise ValueError("mtu must be at least 256 bytes")


@attrs.frozen
class DtlsEndpointStatistics:
    """Counters of a :class:`DtlsEndpoint` (of its sessions: live ones and ended ones)."""

    #: Sessions held now (established or in their handshake).
    sessions: int
    #: Handshakes in progress now.
    handshakes_in_progress: int
    #: Handshakes that completed, as a server and as a client.
    handshakes_completed: int
    #: Handshakes that failed: refused by us, by the peer's alert, or timed out.
    handshakes_failed: int
    #: HelloVerifyRequests sent (a cookie for a ClientHello without a valid one).
    hello_verify_requests: int
    #: ClientHellos with a valid cookie refused because a limit was reached.
    sessions_refused: int
    #: Established sessions closed after ``idle_timeout`` without traffic.
    sessions_idle_closed: int
    #: Established sessions replaced by a new handshake from the same address.
    sessions_replaced: int
    #: Established sessions we ended with close_notify: idle, or the endpoint stopping.
    close_notify_sent: int
    #: Established sessions the peer ended with close_notify (answered with ours).
    close_notify_received: int
    #: Datagrams from an address without a session that were no ClientHello.
    datagrams_dropped: int
    #: Records dropped because they failed authentication (tampered, or another key).
    records_rejected: int
    #: Records dropped as replays (already received, or older than the window).
    records_replayed: int
    #: Records that could not be read, or belonged to no epoch the session reads.
    records_malformed: int
    #: Handshake flights sent again (their timer, or the peer repeating its own).
    retransmissions: int
    #: Datagrams of ours dropped: no session to send them on (and none to open),
    #: a handshake's queue full, too large for a record, or the session gone.
    sends_dropped: int


class _Peer:
    """One address's session and what the endpoint keeps beside it."""

    __slots__ = (
        "client",
        "deadline",
        "host",
        "inner",
        "queue",
        "remote",
        "seen",
        "sent",
        "session",
    )

    def __init__(
        self,
        session: DtlsSession,
        remote: DtlsRemote,
        inner: DatagramRemote,
        now: float,
        client: bool,
    ) -> None:
        self.session = session
        #: The remote the runner sees (with the authenticated peer, once known).
        self.remote = remote
        #: The inner endpoint's remote for the same address.
        self.inner = inner
        self.host: str = inner[0][0]
        self.client = client
        #: Datagrams waiting for a client session's handshake (None: not waiting).
        self.queue: list[bytes] | None = [] if client else None
        #: The session's timer as last put on the heap (None: none).
        self.deadline: float | None = None
        #: When traffic was last seen from it (or found sent to it by the idle sweep).
        self.seen = now
        #: Something was sent to it since the last idle sweep.
        self.sent = False


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _opens_session(data: bytes) -> bool:
    """A CoAP request (CON or NON, code 0.01-0.31) or a ping (an empty CON)."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return False
    mtype, code = (data[0] >> 4) & 3, data[1]
    return mtype <= 1 and (1 <= code <= 31 or (code == 0 and mtype == 0))


def _is_client_hello(data: bytes) -> bool:
    """An epoch-0 handshake record carrying (the start of) a ClientHello."""
    return len(data) > 25 and data[0] == 22 and data[3] == 0 and data[4] == 0 and data[13] == 1


class DtlsEndpoint:
    """Sessions of DTLS 1.2 over an inner datagram endpoint (see the module).

    ``credentials`` serve both roles (:class:`~coap_trio.DtlsCredentials`:
    a PSK and identity, or a certificate or raw public key, to be a client;
    a PSK table, or a certificate or raw public key, to serve). With
    ``serve`` false, ClientHellos are ignored (a client-only endpoint).
    ``wall_clock`` gives the time certificates are checked at.

    Resource handling: the endpoint owns ``inner``; :meth:`run` closes it
    when it ends, after close_notify to every established peer
    (:meth:`close_sessions`); :meth:`close` closes it at once, without. Every table a peer can
    make grow is bounded by ``limits``.
    """

    def __init__(
        self,
        inner: DatagramEndpoint,
        credentials: DtlsCredentials,
        *,
        limits: DtlsLimits | None = None,
        serve: bool = True,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._inner = inner
        self._credentials = credentials
        self.limits = limits = limits or DtlsLimits()
        self._serve = serve and bool(credentials.suites(server=True))
        self._config = DtlsConfig(mtu=limits.mtu, handshake_timeout=limits.handshake_timeout)
        self._wall_clock = wall_clock
        self._cookies = CookieVerifier()
        self._local = DtlsRemote(inner.local_address[0])
        #: Sessions by socket address.
        self._sessions: dict[tuple[object, ...], _Peer] = {}
        #: Sessions per IP address.
        self._per_host: dict[str, int] = {}
        self._handshaking = 0
        #: (deadline, tie-break, socket address, session): handshake timers, stale ones skipped.
        self._timers: list[tuple[float, int, tuple[object, ...], DtlsSession]] = []
        self._tiebreak = itertools.count()
        #: Peers to report to the runner from the timer task (found inside send()).
        self._pending_errors: _Errors = []
        self._on_datagrams: DatagramHandler | None = None
        self._on_error: ErrorHandler | None = None
        self._timer_scope: trio.CancelScope | None = None
        self._armed = math.inf
        self._next_sweep = math.inf
        self._closed = False
        #: Trio's clock (the clock's own method once running: two calls fewer).
        self._time: Callable[[], float] = trio.current_time
        #: Whether an idle session with this peer must stay (the Context: it has
        #: observations served). None: every idle session is closed.
        self.keep_alive: Callable[[DatagramRemote], bool] | None = None
        # Counters (of ended sessions, for the per-session ones).
        self._received = self._sent = self._sends_dropped = 0
        self._completed = self._failed = self._hello_verifies = self._refused = 0
        self._idle_closed = self._replaced = self._dropped = 0
        self._goodbyes_sent = self._goodbyes_received = 0
        self._rejected = self._replayed = self._malformed = self._retransmissions = 0

    # -- the DatagramEndpoint face -----------------------------------------------------

    @property
    def local_address(self) -> DatagramRemote:
        """The inner endpoint's address, with the scheme ``coaps``."""
        return self._local

    @property
    def serving(self) -> bool:
        """Whether ClientHellos from peers are taken (``serve``, and server credentials)."""
        return self._serve

    @property
    def statistics(self) -> EndpointStatistics:
        """CoAP datagrams handed up and sent (application data), and the inner endpoint's
        outbox and errors."""
        inner = self._inner.statistics
        return EndpointStatistics(
            datagrams_received=self._received,
            datagrams_sent=self._sent,
            outbox_depth=inner.outbox_depth,
            send_dropped=self._sends_dropped + inner.send_dropped,
            peer_errors=inner.peer_errors,
        )

    @property
    def dtls_statistics(self) -> DtlsEndpointStatistics:
        """A snapshot of the session counters (live sessions' records included)."""
        rejected, replayed = self._rejected, self._replayed
        malformed, retransmissions = self._malformed, self._retransmissions
        for peer in self._sessions.values():
            records = peer.session.record_statistics
            rejected += records.bad_record_mac
            replayed += records.replayed
            malformed += records.malformed + records.wrong_epoch + records.bad_version
            retransmissions += peer.session.statistics.retransmissions
        return DtlsEndpointStatistics(
            sessions=len(self._sessions),
            handshakes_in_progress=self._handshaking,
            handshakes_completed=self._completed,
            handshakes_failed=self._failed,
            hello_verify_requests=self._hello_verifies,
            sessions_refused=self._refused,
            sessions_idle_closed=self._idle_closed,
            sessions_replaced=self._replaced,
            close_notify_sent=self._goodbyes_sent,
            close_notify_received=self._goodbyes_received,
            datagrams_dropped=self._dropped,
            records_rejected=rejected,
            records_replayed=replayed,
            records_malformed=malformed,
            retransmissions=retransmissions,
            sends_dropped=self._sends_dropped,
        )

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        """The ``coaps`` remote for an IP literal (the inner endpoint's canonical address)."""
        return DtlsRemote(self._inner.remote_for(host, port)[0])

    def remote_for_name(self, address: str, port: int, server_name: str) -> DtlsRemote:
        """The ``coaps`` remote for ``address`` (an IP literal that ``server_name`` resolved
        to): a session opened to it checks the server's certificate against ``server_name``."""
        return DtlsRemote(self._inner.remote_for(address, port)[0], server_name=server_name)

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        """Send a CoAP datagram in the session with ``remote``; never blocks or raises.

        Without a session, a request or a ping opens one (a client handshake)
        and waits for it; anything else is dropped. A response to a remote
        whose peer is not the session's (it was replaced) is dropped.
        """
        peer = self._sessions.get(remote[0])
        if (
            peer is not None
            and peer.session.state is _ESTABLISHED
            and (remote is peer.remote or remote.peer is None or remote.peer == peer.remote.peer)
            and len(data) <= MAX_PLAINTEXT
        ):
            self._inner.send(peer.session.send(data), peer.inner)
            peer.sent = True
            self._sent += 1
            return
        self._send_otherwise(data, remote, peer)

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the inner endpoint and the sessions' timers until cancelled; then close.

        Calls ``task_status.started()`` once the inner endpoint receives. An
        exception raised by a callback propagates as itself.
        """
        if self._closed:
            raise trio.ClosedResourceError("the endpoint is closed")
        if self._on_datagrams is not None:
            raise trio.BusyResourceError("the endpoint is already running")
        self._on_datagrams, self._on_error = on_datagrams, on_error
        self._time = trio.lowlevel.current_clock().current_time
        self._next_sweep = self._time() + self._sweep_interval()
        failures: list[Exception] = []
        # The inner endpoint outlives a cancellation of run() just long enough for
        # the close_notify records to go out through it.
        inner_scope = trio.CancelScope(shield=True)
        try:
            async with trio.open_nursery() as nursery:
                stop = nursery.cancel_scope
                await nursery.start(self._run_inner, stop, failures, inner_scope)
                nursery.start_soon(self._run_timers, stop, failures)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self.close_sessions()
                    inner_scope.cancel()
        finally:
            self._on_datagrams = self._on_error = None
            self.close()
        if failures:  # a callback's bug, raised as itself rather than in an ExceptionGroup
            raise failures[0]

    def close_sessions(self) -> int:
        """Send close_notify to every peer with an established session and forget them.

        Synchronous and bounded: one alert record per session (at most
        ``max_sessions``), handed to the inner endpoint without waiting (a
        datagram its socket does not take at once waits in its outbox, which
        closing it discards). Handshakes in progress are dropped without a word.
        Returns how many close_notify were sent. :meth:`run` calls it when it
        is cancelled; the endpoint goes on serving new handshakes after it.
        """
        sent = 0
        for peer in list(self._sessions.values()):
            if peer.session.state is _ESTABLISHED:
                self._say_goodbye(peer)
                sent += 1
            self._forget(peer)
        return sent

    def _say_goodbye(self, peer: _Peer) -> None:
        """close_notify to an established session's peer (the caller forgets the session)."""
        send = self._inner.send
        for datagram in peer.session.close():
            send(datagram, peer.inner)
        self._goodbyes_sent += 1

    def close(self) -> None:
        """Close the inner endpoint now and forget every session (idempotent).

        No close_notify is sent from here (:meth:`close_sessions` sends them)."""
        if self._closed:
            return
        self._closed = True
        for peer in list(self._sessions.values()):
            self._forget(peer)
        self._timers.clear()
        self._inner.close()

    # -- time --------------------------------------------------------------------------

    def _sweep_interval(self) -> float:
        return max(self.limits.idle_timeout / 4, 0.25)

    # -- the tasks ---------------------------------------------------------------------

    async def _run_inner(
        self,
        stop: trio.CancelScope,
        failures: list[Exception],
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                await self._inner.run(self._receive, self._inner_error, task_status=task_status)
        except Exception as exc:
            if not (self._closed and isinstance(exc, trio.ClosedResourceError)):
                failures.append(exc)
        stop.cancel()

    async def _run_timers(self, stop: trio.CancelScope, failures: list[Exception]) -> None:
        try:
            while True:
                wake = self._next_wake()
                self._armed = wake
                with trio.CancelScope(deadline=wake) as scope:
                    self._timer_scope = scope
                    await trio.sleep_forever()
                self._timer_scope = None
                self._fire(self._time())
        except Exception as exc:
            failures.append(exc)
            stop.cancel()

    def _next_wake(self) -> float:
        if self._pending_errors:
            return -math.inf
        timers = self._timers
        wake = self._next_sweep if self._sessions else math.inf
        while timers:
            deadline, _, key, session = timers[0]
            peer = self._sessions.get(key)
            if peer is not None and peer.session is session and peer.deadline == deadline:
                return min(wake, deadline)
            heapq.heappop(timers)  # stale
        return wake

    def _kick(self, deadline: float) -> None:
        """Wake the timer task by ``deadline`` at the latest."""
        scope = self._timer_scope
        if scope is not None and deadline < self._armed:
            scope.deadline = self._armed = deadline

    def _fire(self, now: float) -> None:
        """The timer task's work: due flights and handshake deadlines, the idle sweep,
        errors found in send()."""
        errors: _Errors = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, key, session = heapq.heappop(timers)
            peer = self._sessions.get(key)
            if peer is None or peer.session is not session or peer.deadline != deadline:
                continue
            peer.deadline = None
            self._take(peer, session.timeout(now), now, None, errors)
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval()
            self._sweep(now, errors)
        errors[:0] = self._pending_errors
        self._pending_errors = []
        self._report(errors)

    def _sweep(
        self, now: float, errors: list[tuple[DatagramRemote, OSError | RequestError]]
    ) -> None:
        """Close established sessions idle for ``idle_timeout`` (a scan, every quarter of it)."""
        idle = self.limits.idle_timeout
        keep = self.keep_alive
        for peer in list(self._sessions.values()):
            if peer.sent:
                peer.sent = False
                peer.seen = now
                continue
            if peer.session.state is not _ESTABLISHED or now - peer.seen < idle:
                continue
            if keep is not None and keep(peer.remote):
                peer.seen = now
                continue
            self._say_goodbye(peer)
            self._idle_closed += 1
            self._forget(peer)
            errors.append(
                (peer.remote, NetworkError(f"the DTLS session was closed after {idle:g} s idle"))
            )
        if len(self._timers) > _HEAP_SLACK * (self._handshaking + 16):
            self._timers = [
                entry
                for entry in self._timers
                if (p := self._sessions.get(entry[2])) is not None
                and p.session is entry[3]
                and p.deadline == entry[0]
            ]
            heapq.heapify(self._timers)

    def _report(self, errors: _Errors) -> None:
        on_error = self._on_error
        if on_error is not None:
            for remote, error in errors:
                on_error(remote, error)

    # -- receiving ---------------------------------------------------------------------

    def _receive(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        """The inner endpoint's batch: into the sessions; CoAP datagrams up in one batch."""
        now = self._time()
        sessions = self._sessions
        delivered: list[tuple[bytes, DatagramRemote]] = []
        errors: _Errors = []
        for data, inner in batch:
            peer = sessions.get(inner[0])
            if peer is not None and data[:1] == b"\x17":  # application data: the fast path
                plaintext = peer.session.receive_application_data(data)
                if plaintext is not None:
                    peer.seen = now
                    delivered.append((plaintext, peer.remote))
                    continue
            if peer is None:
                peer = self._admit(data, inner, now, None, errors)
                if peer is None:
                    continue
            elif peer.session.state is _ESTABLISHED and _is_client_hello(data):
                peer = self._admit(data, inner, now, peer, errors)
                if peer is None:
                    continue
            peer.seen = now
            session = peer.session
            wall_time = self._wall_clock() if session.needs_wall_time else None
            self._take(peer, session.receive(data, now, wall_time), now, delivered, errors)
        if delivered:
            self._received += len(delivered)
            on_datagrams = self._on_datagrams
            if on_datagrams is not None:
                on_datagrams(delivered)
        if errors:
            self._report(errors)

    def _take(
        self,
        peer: _Peer,
        received: Received,
        now: float,
        delivered: list[tuple[bytes, DatagramRemote]] | None,
        errors: _Errors,
    ) -> None:
        """Carry out what a session's receive or timeout produced."""
        send = self._inner.send
        for datagram in received.datagrams:
            send(datagram, peer.inner)
        if received.events:
            self._events(peer, received.events, errors)
        if received.data and delivered is not None and peer.session.state is _ESTABLISHED:
            remote = peer.remote
            delivered.extend((data, remote) for data in received.data)
        session = peer.session
        if session.state in _HANDSHAKING:
            deadline = session.next_deadline()
            if deadline is not None and deadline != peer.deadline:
                peer.deadline = deadline
                heapq.heappush(
                    self._timers, (deadline, next(self._tiebreak), peer.inner[0], session)
                )
                self._kick(deadline)

    def _events(
        self,
        peer: _Peer,
        events: list[DtlsEvent],
        errors: _Errors,
    ) -> None:
        for event in events:
            if isinstance(event, HandshakeComplete):
                self._completed += 1
                self._handshaking -= 1
                peer.remote = peer.remote.with_peer(
                    DtlsPeer(
                        psk_identity=event.psk_identity,
                        certificate_subject=event.certificate_subject,
                        rpk_fingerprint=event.rpk_fingerprint,
                    )
                )
                peer.deadline = None
                queue, peer.queue = peer.queue, None
                for data in queue or ():
                    self._inner.send(peer.session.send(data), peer.inner)
                    self._sent += 1
            elif isinstance(event, Failed):
                established = peer.session.peer is not None
                if not established:
                    self._failed += 1
                self._forget(peer)
                if peer.client or established:
                    errors.append((peer.remote, event.error))
            elif isinstance(event, Closed):
                self._goodbyes_received += 1
                self._forget(peer)
                errors.append((peer.remote, NetworkError("the peer closed the DTLS session")))
            else:
                assert isinstance(event, AlertReceived)  # a warning: nothing to do

    def _admit(
        self,
        data: bytes,
        inner: DatagramRemote,
        now: float,
        existing: _Peer | None,
        errors: _Errors,
    ) -> _Peer | None:
        """A datagram from an address without a session (or a new ClientHello from one
        with an established session): the cookie check, then the limits."""
        if not self._serve:
            self._dropped += 1
            return None
        decision = self._cookies.check(data, inner[0], now)
        if isinstance(decision, SendHelloVerifyRequest):
            self._inner.send(decision.datagram, inner)
            self._hello_verifies += 1
            return None
        if not isinstance(decision, Accept):
            if existing is not None:
                return existing  # not a whole ClientHello: the session judges it
            self._dropped += 1
            return None
        host: str = inner[0][0]
        replacing = existing is not None
        limits = self.limits
        if (
            len(self._sessions) - replacing >= limits.max_sessions
            or self._per_host.get(host, 0) - replacing >= limits.max_sessions_per_address
            or self._handshaking >= limits.max_handshakes
        ):
            self._refused += 1
            return None
        if existing is not None:
            self._replaced += 1
            self._forget(existing)
            errors.append(
                (existing.remote, NetworkError("the DTLS session was replaced by a new handshake"))
            )
        session = DtlsSession(Role.SERVER, self._credentials, config=self._config)
        peer = _Peer(session, DtlsRemote(inner[0]), inner, now, client=False)
        self._add(peer)
        return peer

    def _inner_error(self, inner: DatagramRemote, error: OSError | RequestError) -> None:
        """The inner endpoint's report about a peer (ICMP): a client handshake with it
        ends; the runner is told in any case."""
        peer = self._sessions.get(inner[0])
        remote: DatagramRemote = DtlsRemote(inner[0]) if peer is None else peer.remote
        if peer is not None and peer.client and peer.session.state in _HANDSHAKING:
            self._failed += 1
            self._forget(peer)
        self._report([(remote, error)])

    # -- sending -----------------------------------------------------------------------

    def _send_otherwise(self, data: bytes, remote: DatagramRemote, peer: _Peer | None) -> None:
        """:meth:`send` off its fast path: queue for a handshake, open one, or drop."""
        if len(data) > MAX_PLAINTEXT:  # (one record carries at most 2^14 bytes)
            self._sends_dropped += 1
            return
        if peer is not None:
            queue = peer.queue
            if peer.session.state in _HANDSHAKING and queue is not None:
                if data not in queue:  # (a CoAP retransmission waits once)
                    if len(queue) >= self.limits.max_queued:
                        self._sends_dropped += 1
                    else:
                        queue.append(data)
                return
            self._sends_dropped += 1  # replaced, too large, or a server handshake
            return
        if self._closed or not _opens_session(data):
            self._sends_dropped += 1
            return
        refusal = self._client_refusal(remote)
        if refusal is not None:
            self._sends_dropped += 1
            self._pending_errors.append((remote, HandshakeError(refusal)))
            self._kick(-math.inf)
            return
        server_name = remote.server_name if isinstance(remote, DtlsRemote) else None
        session = DtlsSession(
            Role.CLIENT,
            self._credentials,
            config=self._config,
            server_name=server_name or remote.host,
        )
        sockaddr = remote[0]
        target = remote if isinstance(remote, DtlsRemote) else DtlsRemote(sockaddr)
        now = self._time()
        peer = _Peer(session, target, DatagramRemote(sockaddr), now, client=True)
        self._add(peer)
        assert peer.queue is not None
        peer.queue.append(data)
        received = Received(datagrams=session.start(now))
        self._take(peer, received, now, None, self._pending_errors)

    def _client_refusal(self, remote: DatagramRemote) -> str | None:
        """Why no client session to ``remote`` can start now (None: it can)."""
        limits = self.limits
        if not self._credentials.suites(server=False):
            return "the DTLS credentials allow no cipher suite for a client"
        if len(self._sessions) >= limits.max_sessions:
            return f"too many DTLS sessions ({limits.max_sessions})"
        if self._per_host.get(remote[0][0], 0) >= limits.max_sessions_per_address:
            return f"too many DTLS sessions with {remote.host}"
        if self._handshaking >= limits.max_handshakes:
            return f"too many DTLS handshakes in progress ({limits.max_handshakes})"
        return None

    # -- the table ---------------------------------------------------------------------

    def _add(self, peer: _Peer) -> None:
        self._sessions[peer.inner[0]] = peer
        self._per_host[peer.host] = self._per_host.get(peer.host, 0) + 1
        self._handshaking += 1

    def _forget(self, peer: _Peer) -> None:
        """Take ``peer`` out of the table (its counters into the endpoint's)."""
        key = peer.inner[0]
        if self._sessions.get(key) is not peer:
            return
        del self._sessions[key]
        left = self._per_host[peer.host] - 1
        if left:
            self._per_host[peer.host] = left
        else:
            del self._per_host[peer.host]
        session = peer.session
        if session.peer is None and session.state is not _ESTABLISHED:
            self._handshaking -= 1
        if peer.queue:
            self._sends_dropped += len(peer.queue)
            peer.queue = None
        records = session.record_statistics
        self._rejected += records.bad_record_mac
        self._replayed += records.replayed
        self._malformed += records.malformed + records.wrong_epoch + records.bad_version
        self._retransmissions += session.statistics.retransmissions
