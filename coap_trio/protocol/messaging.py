"""The messaging layer of one local endpoint: RFC 7252 §4 reliability plus §5.3 matching.

Owns, for one local endpoint and all its remotes: message-ID allocation,
CON retransmission (§4.2 schedule) and its timeout, ACK/RST matching by
MID, deduplication of incoming CON/NON with reply replay (§4.5), pings,
RST for what cannot be processed, NSTART with queueing (§4.7), token
matching of responses, and the server side of piggybacked / separate / NON
responses.

It is sans-I/O: the driver calls :meth:`Messaging.receive`,
:meth:`~Messaging.send_request`, :meth:`~Messaging.respond`,
:meth:`~Messaging.abandon` and :meth:`~Messaging.timeout` with the current
time and performs the returned events (``Transmit``, ``ResponseReceived``,
``RequestFailed``, ``RequestReceived``...). It imports no trio and reads no
clock. Must not know about sockets, tasks, resources or URIs.

Timeouts of a client exchange: a CON gives up after MAX_RETRANSMIT
retransmissions (RequestTimeoutError, within MAX_TRANSMIT_WAIT); a NON request
waits ``non_response_timeout`` (default MAX_TRANSMIT_WAIT) for its response;
after an empty ACK, the separate response is awaited for
``separate_response_timeout`` (default EXCHANGE_LIFETIME). Callers who want
less use their own cancel scopes.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Hashable
from typing import Any

from ..codec import decode, encode, encode_empty, encode_observed, encode_reply, observe_parts
from ..errors import (
    BadResponseError,
    LocalProtocolError,
    MessageFormatError,
    NetworkError,
    RequestError,
    RequestTimeoutError,
    ResetByPeerError,
)
from ..message import Message
from ..numbers.codes import Code
from ..numbers.types import Type
from ..options import Options
from .config import MessagingConfig, MessagingStatistics
from .dedup import DedupStore
from .exchanges import (
    ClientExchange,
    ClientState,
    Event,
    GroupResponseReceived,
    MessageIdsExhausted,
    NotificationReceived,
    RequestFailed,
    RequestReceived,
    ResponseAcknowledged,
    ResponseFailed,
    ResponseReceived,
    ServerExchange,
    ServerState,
    StreamClientState,
    StreamServerState,
    Transmit,
)
from .matcher import Matcher, has_unrecognized_critical
from .midalloc import MessageIdAllocator
from .observe import SharedNotification
from .reliability import RETRANSMIT, Reliability
from .timers import TimerHeap

__all__ = [
    "CLIENT_TRANSITIONS",
    "SERVER_TRANSITIONS",
    "ClientInput",
    "GroupMessaging",
    "Messaging",
    "MessagingConfig",
    "MessagingStatistics",
    "ServerInput",
]

_CON, _NON, _ACK, _RST = Type.CON, Type.NON, Type.ACK, Type.RST
_new = object.__new__
_EMPTY = Code.EMPTY


class ClientInput(enum.IntEnum):
    """What moves a :class:`~coap_trio.protocol.exchanges.ClientExchange` (a request we sent)."""

    #: It gets its message ID and goes out (at once, or when NSTART or IDs allow).
    TRANSMIT = 0
    #: An empty ACK acknowledged the CON request: a separate response follows.
    EMPTY_ACK = 1
    #: Its final response arrived (for a ping: the RST or empty ACK), or, for an
    #: observation, a notification that ends it.
    RESPONSE = 2
    #: A 2.xx with Observe answered a registration: an observation (RFC 7641).
    REGISTERED = 3
    #: It ended without a response: timeout, RST, rejected response, network error.
    FAIL = 4
    #: The driver gave it up (:meth:`Messaging.abandon`).
    ABANDON = 5


class ServerInput(enum.IntEnum):
    """What moves a :class:`~coap_trio.protocol.exchanges.ServerExchange` (a request received)."""

    #: The piggyback window passed: the empty ACK went out.
    ACK_DUE = 0
    #: :meth:`Messaging.respond`: the response (or none) went out in the ACK, as
    #: a NON, or as a separate NON; a separate CON then goes on with SEND_CON.
    RESPOND = 1
    #: A CON response or notification goes out, to be retransmitted until acknowledged.
    SEND_CON = 2
    #: The client acknowledged the CON response or notification.
    ACKNOWLEDGED = 3
    #: The CON response or notification was reset, never acknowledged, or found
    #: no free message ID; or an RST answered a NON one.
    FAIL = 4
    #: :meth:`Messaging.forget`: the request will not be handled.
    FORGET = 5


_C, _S, _CI, _SI = ClientState, ServerState, ClientInput, ServerInput

#: The legal moves of a request we sent: ``(state, input) -> next state``. Any
#: pair not in the table is illegal (a ``KeyError`` in the machine is a bug;
#: a driver's illegal call is a ``LocalProtocolError``).
CLIENT_TRANSITIONS: dict[tuple[ClientState | StreamClientState, ClientInput], ClientState] = {
    (_C.QUEUED, _CI.TRANSMIT): _C.SENT,
    (_C.QUEUED, _CI.ABANDON): _C.DONE,
    (_C.QUEUED, _CI.FAIL): _C.DONE,  # its remote's security session failed before it went out
    (_C.SENT, _CI.EMPTY_ACK): _C.ACKNOWLEDGED,
    (_C.SENT, _CI.RESPONSE): _C.DONE,
    (_C.SENT, _CI.REGISTERED): _C.OBSERVING,
    (_C.SENT, _CI.FAIL): _C.DONE,
    (_C.SENT, _CI.ABANDON): _C.DONE,
    (_C.ACKNOWLEDGED, _CI.RESPONSE): _C.DONE,
    (_C.ACKNOWLEDGED, _CI.REGISTERED): _C.OBSERVING,
    (_C.ACKNOWLEDGED, _CI.FAIL): _C.DONE,
    (_C.ACKNOWLEDGED, _CI.ABANDON): _C.DONE,
    (_C.OBSERVING, _CI.RESPONSE): _C.DONE,
    (_C.OBSERVING, _CI.FAIL): _C.DONE,
    (_C.OBSERVING, _CI.ABANDON): _C.DONE,
}

#: The legal moves of a request we received: ``(state, input) -> next state``.
#: DONE is left again only by an observation's CON notification (RFC 7641).
SERVER_TRANSITIONS: dict[tuple[ServerState | StreamServerState, ServerInput], ServerState] = {
    (_S.PENDING, _SI.ACK_DUE): _S.ACKNOWLEDGED,
    (_S.PENDING, _SI.RESPOND): _S.DONE,
    (_S.PENDING, _SI.FORGET): _S.DONE,
    (_S.ACKNOWLEDGED, _SI.RESPOND): _S.DONE,
    (_S.ACKNOWLEDGED, _SI.FORGET): _S.DONE,
    (_S.DONE, _SI.SEND_CON): _S.RESPONDING,
    (_S.DONE, _SI.FAIL): _S.DONE,  # an RST answered a NON response or notification
    (_S.RESPONDING, _SI.SEND_CON): _S.RESPONDING,
    (_S.RESPONDING, _SI.ACKNOWLEDGED): _S.DONE,
    (_S.RESPONDING, _SI.FAIL): _S.DONE,
}

# The moves of the hot paths, looked up once (module constants: an Enum class
# attribute is slow on 3.11).
_QUEUED, _OBSERVING, _DONE = ClientState.QUEUED, ClientState.OBSERVING, ClientState.DONE
_SENT, _CLIENT_ACKNOWLEDGED = ClientState.SENT, ClientState.ACKNOWLEDGED
_SENT_NOW = CLIENT_TRANSITIONS[_QUEUED, _CI.TRANSMIT]
_TRANSMIT, _EMPTY_ACK, _RESPONSE = _CI.TRANSMIT, _CI.EMPTY_ACK, _CI.RESPONSE
_REGISTERED, _FAIL, _ABANDON = _CI.REGISTERED, _CI.FAIL, _CI.ABANDON
_PENDING, _ACKNOWLEDGED = ServerState.PENDING, ServerState.ACKNOWLEDGED
_RESPONDING, _SERVER_DONE = ServerState.RESPONDING, ServerState.DONE
_ACK_DUE, _RESPOND, _SEND_CON = _SI.ACK_DUE, _SI.RESPOND, _SI.SEND_CON
_PENDING_ANSWERED = SERVER_TRANSITIONS[_PENDING, _RESPOND]
_ACKED, _SERVER_FAIL, _FORGET = _SI.ACKNOWLEDGED, _SI.FAIL, _SI.FORGET
_CLIENT, _SERVER = CLIENT_TRANSITIONS, SERVER_TRANSITIONS

# Timer kinds.
_ACK_DELAY, _DEADLINE, _MID_WAIT, _SWEEP = range(1, 5)
#: ``ServerExchange.ack_ticket`` of a piggyback window kept in the FIFO (not the heap).
_ACK_IN_FIFO = -1
#: Forgetting idle remotes' message-ID state scans them all; do it this rarely.
_MID_SWEEP_INTERVAL = 30.0


class Messaging:
    """RFC 7252 messaging for one local endpoint. See the module docstring.

    It implements :class:`~coap_trio.protocol.machine.Machine`.
    """

    #: Datagrams may be reordered: notifications are ordered by their Observe numbers.
    in_order = False
    #: Requests arrive by unicast (see :class:`GroupMessaging` for a multicast group).
    multicast = False

    def __init__(self, config: MessagingConfig | None = None, rng: random.Random | None = None):
        self.config = config = config or MessagingConfig()
        # Tokens and MID starts come from the OS (unpredictable, RFC 7252 §5.3.1);
        # the retransmission jitter needs no secrecy, and SystemRandom would make
        # one getrandom() call per CON: a seeded Random draws it. A given rng
        # (tests: seeded, reproducible) does both.
        self._rng = rng if rng is not None else random.SystemRandom()
        jitter = rng if rng is not None else random.Random()
        params = config.params
        self._params = params
        self._exchange_lifetime = params.EXCHANGE_LIFETIME
        self._non_lifetime = params.NON_LIFETIME
        self._non_timeout = config.non_response_timeout or params.MAX_TRANSMIT_WAIT
        self._separate_timeout = config.separate_response_timeout or params.EXCHANGE_LIFETIME
        self._max_pending = config.max_pending_requests
        self._ack_delay = config.ack_delay
        self._timers: TimerHeap[tuple[int, Any]] = TimerHeap()
        self._mids = MessageIdAllocator(
            params.EXCHANGE_LIFETIME, self._rng, config.max_remotes, config.mid_space
        )
        self._dedup = DedupStore(config.dedup_max_total, config.dedup_max_per_remote)
        self._matcher = Matcher(self._rng, config.token_length)
        self._reliability = Reliability(params, jitter, self._timers)
        #: Received requests being handled, by (remote, MID).
        self._pending: dict[tuple[Hashable, int], ServerExchange] = {}
        #: Piggyback windows in deadline order: (when the empty ACK is due, exchange).
        #: They all last ``ack_delay``, so arrival order is deadline order and no
        #: heap entry (push, cancel, pop) is needed per request; an entry whose
        #: exchange was answered meanwhile is skipped when it reaches the front.
        self._ack_fifo: deque[tuple[float, ServerExchange]] = deque()
        self._outstanding: dict[Hashable, int] = {}
        self._queued: dict[Hashable, deque[ClientExchange]] = {}
        self._nstart = params.NSTART
        #: After send_request always False (a UDP request's deadline is on the timer
        #: heap, looked at per request); after respond, whether the deduplication
        #: sweep was already due no later than the new entry's expiry.
        self.kept_next_deadline = False
        self._sweep_ticket = 0
        self._sweep_at: float | None = None
        self._mids_swept = -_MID_SWEEP_INTERVAL
        self._counts = dict.fromkeys(
            (
                "datagrams_received",
                "malformed",
                "duplicates",
                "pings",
                "resets_sent",
                "requests_timed_out",
                "unmatched",
                "rejected_responses",
                "overloaded",
            ),
            0,
        )

    # -- introspection -----------------------------------------------------------

    @property
    def statistics(self) -> MessagingStatistics:
        """A snapshot of the counters and store sizes."""
        return MessagingStatistics(
            **self._counts,
            retransmissions=self._reliability.retransmissions,
            dedup_entries=len(self._dedup),
            dedup_evicted=self._dedup.evicted,
            mid_remotes=len(self._mids),
            mid_remotes_evicted=self._mids.evicted,
            outstanding_requests=sum(self._outstanding.values()),
            queued_requests=sum(len(q) for q in self._queued.values()),
            pending_server_requests=len(self._pending),
        )

    def set_nstart(self, nstart: int) -> None:
        """Change NSTART (outstanding requests per remote) for future requests."""
        if nstart < 1:
            raise ValueError("NSTART must be at least 1")
        self._nstart = nstart

    def bert_size(self, remote: Hashable) -> int | None:
        """None: BERT blocks (RFC 8323 §6) are never used over UDP."""
        return None

    def connection_made(self, remote: Hashable, now: float) -> list[Event]:
        """Nothing: UDP has no connections."""
        return []

    def connection_lost(self, remote: Hashable, error: Exception | None, now: float) -> list[Event]:
        """Nothing: UDP has no connections."""
        return []

    def end_observation(self, exchange: ServerExchange) -> None:
        """Nothing: the UDP machine keeps no state for an observation's notifications."""

    def mid_available(self, remote: Hashable, now: float) -> bool:
        """Whether a new message towards ``remote`` could get a message ID now."""
        return self._mids.available(remote, now)

    def next_deadline(self) -> float | None:
        """When :meth:`timeout` should next be called (None: no timer pending)."""
        deadline = self._timers.next_deadline()
        ack = self._next_ack_due()
        if ack is not None and (deadline is None or ack < deadline):
            return ack
        return deadline

    # -- client side --------------------------------------------------------------

    def send_request(
        self, request: Message, remote: Hashable, now: float
    ) -> tuple[ClientExchange, list[Event]]:
        """Start a request towards ``remote``.

        The token is allocated here unless ``request.token`` is already set;
        ``request.mtype`` None means CON. The request is transmitted at once,
        or queued while NSTART requests are outstanding towards ``remote`` or
        its message IDs are exhausted. ``request`` is not modified; the
        exchange holds an encoded copy.
        """
        if not request.code.is_request():
            raise LocalProtocolError(f"{request.code} is not a request code")
        mtype = request.mtype
        if mtype is None:
            mtype = _CON
        elif mtype not in (_CON, _NON):
            raise LocalProtocolError("a request is sent as CON or NON")
        token = request.token
        if token:
            if self._matcher.in_use(remote, token):
                raise LocalProtocolError(f"token {token.hex()} is already in use")
        else:
            new = self._matcher.new_token(remote)
            if new is None:
                raise LocalProtocolError("no free token (token_length is too small)")
            token = new
        exchange = ClientExchange(request, remote, token, mtype is _CON, _QUEUED)
        self._matcher.register(exchange)
        self.kept_next_deadline = False
        return exchange, self._start_or_queue(exchange, now)

    def send_group_request(
        self, request: Message, group: Hashable, now: float
    ) -> tuple[ClientExchange, list[Event]]:
        """Start a request to the multicast group ``group`` (RFC 7252 §8.1).

        It goes out as NON (a CON is refused: ``LocalProtocolError``) with a
        fresh token. Every member's response, from the member's own address,
        matches it by token and becomes a ``GroupResponseReceived``; the
        exchange stays open (no deadline, an RST from one member does not end
        it) until :meth:`abandon`, which the driver calls when its window
        ends. ``request`` is not modified.
        """
        if not request.code.is_request():
            raise LocalProtocolError(f"{request.code} is not a request code")
        if request.mtype is not None and request.mtype is not _NON:
            raise LocalProtocolError("a multicast request is sent as NON (RFC 7252 §8.1)")
        token = request.token
        if token:
            if self._matcher.in_use(group, token):
                raise LocalProtocolError(f"token {token.hex()} is already in use")
        else:
            new = self._matcher.new_token(group)
            if new is None:
                raise LocalProtocolError("no free token (token_length is too small)")
            token = new
        exchange = ClientExchange(request, group, token, False, _QUEUED)
        exchange.group = True
        self._matcher.register(exchange)
        return exchange, self._start_or_queue(exchange, now)

    def send_ping(self, remote: Hashable, now: float) -> tuple[ClientExchange, list[Event]]:
        """Send a CoAP ping (an empty CON, §4.3) to ``remote``.

        The exchange ends with ``ResponseReceived`` carrying the peer's RST (or
        empty ACK) when it answers, or ``RequestFailed`` with a timeout.
        """
        ping = Message.from_fields(_EMPTY, _CON, None, b"", Options(), b"", remote)
        exchange = ClientExchange(ping, remote, b"", True, _QUEUED)
        exchange.ping = True
        return exchange, self._start_or_queue(exchange, now)

    def _start_or_queue(self, exchange: ClientExchange, now: float) -> list[Event]:
        """Transmit now, or queue behind NSTART / message-ID exhaustion."""
        events: list[Event] = []
        remote = exchange.remote
        queue = self._queued.get(remote)
        if queue or self._outstanding.get(remote, 0) >= self._nstart:
            if queue is None:
                queue = self._queued[remote] = deque()
            queue.append(exchange)
        elif not self._start(exchange, now, events):
            queue = self._queued[remote] = deque((exchange,))
            self._stalled(remote, queue, events)
        return events

    def _start(self, exchange: ClientExchange, now: float, events: list[Event]) -> bool:
        """Transmit a queued exchange; False when no MID is free (see :meth:`_stalled`)."""
        remote = exchange.remote
        mid = self._mids.allocate(remote, now)
        if mid is None:
            return False
        request = exchange.request
        wire = Message.from_fields(
            request.code,
            _CON if exchange.con else _NON,
            mid,
            exchange.token,
            request.opt,
            request.payload,
            remote,
        )
        data = encode(wire)
        exchange.mid = mid
        exchange.state = _SENT_NOW  # (QUEUED, TRANSMIT): only queued exchanges start
        exchange.first_sent = now
        exchange.transmissions = 1
        exchange.counted = True
        self._outstanding[remote] = self._outstanding.get(remote, 0) + 1
        key = (remote, mid)
        if exchange.con:
            exchange.transmission = self._reliability.send_con(key, data, exchange, now)
        elif not exchange.group:  # (a group request lasts until the driver abandons it)
            self._remember_non(key, exchange, now)
            exchange.deadline_ticket = self._timers.schedule(
                now + self._non_timeout, (_DEADLINE, exchange)
            )
        events.append(Transmit(remote, data))
        return True

    def _stalled(self, remote: Hashable, queue: deque[ClientExchange], events: list[Event]) -> None:
        """No MID is free towards ``remote`` for its queue: wake up when one frees, and
        tell the driver, which may send the queued requests from another endpoint."""
        free_at = self._mids.next_free_time(remote)
        if free_at is not None:
            self._timers.schedule(free_at, (_MID_WAIT, remote))
        events.append(MessageIdsExhausted(remote, tuple(queue), free_at))

    def _remember_non(self, key: tuple[Hashable, int], owner: Any, now: float) -> None:
        self._ensure_sweep(self._reliability.remember_non(key, owner, now))

    def abandon(self, exchange: ClientExchange, now: float) -> list[Event]:
        """Give up on ``exchange``: no more retransmissions, token freed, no event for it.

        Idempotent. Starting the next queued request towards the same remote
        may produce events.
        """
        if exchange.state is _DONE:
            return []
        if exchange.state is _QUEUED:
            queue = self._queued.get(exchange.remote)
            if queue is not None and exchange in queue:
                queue.remove(exchange)
                if not queue:
                    del self._queued[exchange.remote]
            exchange.state = _CLIENT[_QUEUED, _ABANDON]
            self._matcher.unregister(exchange)
            return []
        events: list[Event] = []
        self._finish(exchange, _ABANDON, now, events)
        return events

    def _finish(
        self, exchange: ClientExchange, cause: ClientInput, now: float, events: list[Event]
    ) -> None:
        """End ``exchange`` (``cause``: a response, a failure or abandon) and free what it held."""
        exchange.state = _CLIENT[exchange.state, cause]
        self._matcher.unregister(exchange)
        if exchange.transmission is not None:
            self._reliability.cancel(exchange.transmission)
            exchange.transmission = None
        self._timers.cancel(exchange.deadline_ticket)
        exchange.deadline_ticket = 0
        self._uncount(exchange, now, events)

    def _uncount(self, exchange: ClientExchange, now: float, events: list[Event]) -> None:
        """Free the exchange's NSTART slot (once) and start what waited for it."""
        if not exchange.counted:
            return
        exchange.counted = False
        remote = exchange.remote
        left = self._outstanding.get(remote, 1) - 1
        if left:
            self._outstanding[remote] = left
        else:
            self._outstanding.pop(remote, None)
        self._release_queue(remote, now, events)

    def _deliver(
        self, exchange: ClientExchange, message: Message, now: float, events: list[Event]
    ) -> None:
        """A response for ``exchange``: the final one, or one of an observation (RFC 7641).

        A registration answered with a 2.xx carrying Observe stays matched
        (state OBSERVING) and frees its NSTART slot; every later response is a
        ``NotificationReceived``; one without Observe (or an error) ends it. A
        multicast request's responses are each a ``GroupResponseReceived``.
        """
        if exchange.group:
            events.append(GroupResponseReceived(exchange, message))
            return
        if exchange.observe and message.code.is_successful() and message.opt.observe is not None:
            if exchange.state is _OBSERVING:
                events.append(NotificationReceived(exchange, message))
                return
            if exchange.transmission is not None:
                self._reliability.cancel(exchange.transmission)
                exchange.transmission = None
            self._timers.cancel(exchange.deadline_ticket)
            exchange.deadline_ticket = 0
            exchange.state = _CLIENT[exchange.state, _REGISTERED]
            self._uncount(exchange, now, events)
            events.append(ResponseReceived(exchange, message))
            return
        observing = exchange.state is _OBSERVING
        self._finish(exchange, _RESPONSE, now, events)
        if observing:
            events.append(NotificationReceived(exchange, message))
        else:
            events.append(ResponseReceived(exchange, message))

    def _release_queue(self, remote: Hashable, now: float, events: list[Event]) -> None:
        queue = self._queued.get(remote)
        while queue and self._outstanding.get(remote, 0) < self._nstart:
            if not self._start(queue[0], now, events):
                self._stalled(remote, queue, events)
                return
            queue.popleft()
        if queue is not None and not queue:
            del self._queued[remote]

    # -- server side ----------------------------------------------------------------

    def _on_request(
        self,
        message: Message,
        remote: Hashable,
        mid: int,
        con: bool,
        now: float,
        events: list[Event],
        key: tuple[Hashable, int] | None = None,
    ) -> None:
        """A new request arrived: track it and hand it to the driver (or refuse it when full).

        ``key`` is ``(remote, mid)`` when the caller made it already."""
        pending = self._pending
        if len(pending) >= self._max_pending:
            self._counts["overloaded"] += 1
            if con:
                self._reset(remote, mid, events)
            return
        # ServerExchange(message, remote, _PENDING) and RequestReceived(exchange),
        # inline: a type call with an __init__ costs more than the fields (every
        # request comes here; the fields are those the constructors set).
        exchange = _new(ServerExchange)
        exchange.request = message
        exchange.remote = remote
        exchange.mid = mid
        exchange.token = message.token
        exchange.con = con
        exchange.state = _PENDING
        exchange.ack_ticket = 0
        exchange.transmission = None
        exchange.owner = None
        exchange.security = None
        pending[key if key is not None else (remote, mid)] = exchange
        if con:
            due = now + self._ack_delay
            fifo = self._ack_fifo
            if not fifo or fifo[-1][0] <= due:
                fifo.append((due, exchange))
                exchange.ack_ticket = _ACK_IN_FIFO
            else:  # the caller's clock went back: keep the order right with the heap
                exchange.ack_ticket = self._timers.schedule(due, (_ACK_DELAY, exchange))
        event = _new(RequestReceived)
        event.exchange = exchange
        events.append(event)

    def _next_ack_due(self) -> float | None:
        """When the earliest piggyback window in the FIFO still open ends (None: none)."""
        fifo = self._ack_fifo
        while fifo:
            due, exchange = fifo[0]
            if exchange.ack_ticket == _ACK_IN_FIFO:
                return due
            fifo.popleft()  # answered (or forgotten) in time
        return None

    def _acks_due(self, now: float, events: list[Event]) -> None:
        """Send the empty ACKs of the FIFO's piggyback windows that ended by ``now``."""
        fifo = self._ack_fifo
        while fifo and fifo[0][0] <= now:
            _, exchange = fifo.popleft()
            self._ack_due(exchange, _ACK_IN_FIFO, now, events)

    def _cancel_ack(self, exchange: ServerExchange) -> None:
        """Close the piggyback window of ``exchange`` (a FIFO entry is skipped later)."""
        if exchange.ack_ticket > 0:
            self._timers.cancel(exchange.ack_ticket)
        exchange.ack_ticket = 0

    def _ack_due(
        self, exchange: ServerExchange, ticket: int, now: float, events: list[Event]
    ) -> None:
        """The piggyback window of ``exchange`` passed: send the empty ACK now."""
        if exchange.ack_ticket == ticket and exchange.state is _PENDING:
            exchange.ack_ticket = 0
            self._pending.pop((exchange.remote, exchange.mid), None)
            exchange.state = _SERVER[_PENDING, _ACK_DUE]
            ack = encode_empty(_ACK, exchange.mid)
            self._seen_con(exchange.remote, exchange.mid, ack, now)
            events.append(Transmit(exchange.remote, ack))

    def respond(
        self, exchange: ServerExchange, response: Message | None, now: float
    ) -> list[Event]:
        """Answer a received request (``None``: no response, e.g. RFC 7967 No-Response).

        A CON still in its piggyback window gets the response in its ACK; after
        the empty ACK it becomes a separate CON response (retransmitted; its
        fate is reported by ResponseAcknowledged / ResponseFailed); a NON
        request gets a NON response. The response's token, MID and type are
        set here; its code, options and payload are used as given.
        """
        state = exchange.state
        remote = exchange.remote
        mid = exchange.mid
        if state is _PENDING and exchange.con:
            # The common case first: a piggybacked response (or empty ACK) in the
            # window. Nothing is scheduled unless the deduplication sweep is not.
            exchange.state = _PENDING_ANSWERED
            key = (remote, mid)
            self._pending.pop(key, None)
            ticket = exchange.ack_ticket
            if ticket > 0:
                self._timers.cancel(ticket)
            exchange.ack_ticket = 0
            if response is None:
                data = encode_empty(_ACK, mid)
            else:
                data = encode_reply(
                    response.code,
                    _ACK,
                    mid,
                    exchange.token,
                    response.opt.raw_items,
                    response.payload,
                )
            self._dedup.record(remote, mid, data, self._exchange_lifetime, now)
            sweep_at = self._sweep_at
            self.kept_next_deadline = (
                sweep_at is not None and sweep_at <= now + self._exchange_lifetime
            )
            if not self.kept_next_deadline:
                self._ensure_sweep(now + self._exchange_lifetime)
            return [Transmit(remote, data)]
        self.kept_next_deadline = False
        answered = _SERVER.get((state, _RESPOND))
        if answered is None:
            raise LocalProtocolError(f"{exchange!r} was already answered")
        exchange.state = answered
        events: list[Event] = []
        key = (remote, mid)
        if state is _PENDING:  # a NON request
            self._pending.pop(key, None)
            self._cancel_ack(exchange)
            self._seen_non(remote, mid, now)
            if response is not None:
                mtype = response.mtype if response.mtype in (_CON, _NON) else _NON
                self._send_new(exchange, response, mtype, now, events)
            return events
        # ACKNOWLEDGED: a separate response.
        if response is not None:
            mtype = response.mtype if response.mtype in (_CON, _NON) else _CON
            self._send_new(exchange, response, mtype, now, events)
        return events

    def respond_piggybacked(
        self, exchange: ServerExchange, response: Message, now: float
    ) -> bytes | None:
        """:meth:`respond` for the usual case, the datagram returned instead of an event:
        a CON request still in its piggyback window, answered when the deduplication
        sweep is due no later than the new entry's expiry (nothing is scheduled, the
        next deadline stays where it was). None, with nothing done, otherwise:
        call :meth:`respond` then."""
        sweep_at = self._sweep_at
        if exchange.state is not _PENDING or not exchange.con or sweep_at is None:
            return None
        if sweep_at > now + self._exchange_lifetime:  # (the clock went back)
            return None
        exchange.state = _PENDING_ANSWERED
        remote = exchange.remote
        mid = exchange.mid
        self._pending.pop((remote, mid), None)
        ticket = exchange.ack_ticket
        if ticket > 0:
            self._timers.cancel(ticket)
        exchange.ack_ticket = 0
        opt = response.opt
        data = encode_reply(
            response.code, _ACK, mid, exchange.token, opt.raw_items, response.payload
        )
        self._dedup.record(remote, mid, data, self._exchange_lifetime, now)
        return data

    def _send_new(
        self,
        exchange: ServerExchange,
        response: Message,
        mtype: Type,
        now: float,
        events: list[Event],
        shared: SharedNotification | None = None,
        observe: int = 0,
    ) -> None:
        remote = exchange.remote
        mid = self._mids.allocate(remote, now)
        if mid is None:
            self._counts["overloaded"] += 1
            if exchange.state is _RESPONDING:  # a superseded CON notification's
                exchange.state = _SERVER[_RESPONDING, _SERVER_FAIL]
            events.append(ResponseFailed(exchange, NetworkError("no free message ID")))
            return
        if shared is None:
            data = self._encode_response(response, mtype, mid, exchange.token)
        else:
            parts = shared.parts
            if parts is None:  # the first observer: encoded once for all of them
                parts = shared.parts = observe_parts(response.opt.raw_items, response.payload)
            data = encode_observed(response.code, mtype, mid, exchange.token, parts, observe)
        key = (remote, mid)
        if mtype is _CON:
            exchange.state = _SERVER[exchange.state, _SEND_CON]
            exchange.transmission = self._reliability.send_con(key, data, exchange, now)
        else:
            self._remember_non(key, exchange, now)
        events.append(Transmit(remote, data))

    def notify(
        self,
        exchange: ServerExchange,
        notification: Message,
        now: float,
        *,
        confirmable: bool = False,
    ) -> list[Event]:
        """Send a further response (an RFC 7641 notification) for an answered ``exchange``.

        It gets a fresh MID and the request's token; a CON one is retransmitted
        (its fate: ResponseAcknowledged / ResponseFailed; an RST or a timeout
        ends the observation, §3.6, §4.5). A CON notification still
        unacknowledged is superseded (RFC 7641 §4.5.2): it is no longer
        retransmitted, and the new notification goes out as CON whatever
        ``confirmable`` says, taking over its retransmission counter and
        timeout, so a client that vanished is still detected.
        """
        if (exchange.state, _SEND_CON) not in _SERVER:  # PENDING or ACKNOWLEDGED
            raise LocalProtocolError("answer the registration with respond() first")
        previous = exchange.transmission
        if previous is not None:
            self._reliability.cancel(previous)
            exchange.transmission = None
            confirmable = True
        events: list[Event] = []
        self._send_new(exchange, notification, _CON if confirmable else _NON, now, events)
        if previous is not None and exchange.transmission is not None:
            self._reliability.inherit(exchange.transmission, previous, now)
        return events

    def notify_shared(
        self,
        exchange: ServerExchange,
        shared: SharedNotification,
        observe: int,
        now: float,
        *,
        confirmable: bool = False,
    ) -> list[Event]:
        """:meth:`notify` with ``shared.message`` and Observe ``observe``, the
        message encoded once for every observer it goes to (its parts are kept
        in ``shared``): the same bytes, the same rules.

        Afterwards :attr:`kept_next_deadline` says whether the next deadline
        stayed where it was (a NON notification that scheduled nothing).
        """
        if (exchange.state, _SEND_CON) not in _SERVER:  # PENDING or ACKNOWLEDGED
            raise LocalProtocolError("answer the registration with respond() first")
        previous = exchange.transmission
        if previous is not None:
            self._reliability.cancel(previous)
            exchange.transmission = None
            confirmable = True
        events: list[Event] = []
        sweep_at = self._sweep_at
        mtype = _CON if confirmable else _NON
        self._send_new(exchange, shared.message, mtype, now, events, shared, observe)
        if previous is not None and exchange.transmission is not None:
            self._reliability.inherit(exchange.transmission, previous, now)
        self.kept_next_deadline = (
            mtype is _NON and sweep_at is not None and sweep_at == self._sweep_at
        )
        return events

    @staticmethod
    def _encode_response(response: Message, mtype: Type, mid: int, token: bytes) -> bytes:
        return encode_reply(
            response.code, mtype, mid, token, response.opt.raw_items, response.payload
        )

    def forget(self, exchange: ServerExchange) -> None:
        """Drop a received request that will not be handled (e.g. a full queue); harmless
        once it was answered or forgotten.

        Its message ID is not recorded, so a retransmission is processed as
        new, not as a duplicate with nothing to replay.
        """
        forgotten = _SERVER.get((exchange.state, _FORGET))
        if forgotten is None:  # answered or forgotten already: harmless
            return
        key = (exchange.remote, exchange.mid)
        if self._pending.get(key) is exchange:
            del self._pending[key]
        self._cancel_ack(exchange)
        exchange.state = forgotten

    # -- input --------------------------------------------------------------------

    def receive(self, data: bytes, remote: Hashable, now: float) -> list[Event]:
        """Process one incoming datagram from ``remote``."""
        self._counts["datagrams_received"] += 1
        events: list[Event] = []
        try:
            message = decode(data, remote)
        except MessageFormatError as error:
            self._counts["malformed"] += 1
            if error.should_reset and error.mid is not None:  # §4.2: a bad CON gets RST
                self._counts["resets_sent"] += 1
                events.append(Transmit(remote, encode_empty(_RST, error.mid)))
            return events
        mtype = message.mtype
        if mtype is _ACK:
            self._on_ack(message, remote, now, events)
        elif mtype is _RST:
            self._on_rst(message, remote, now, events)
        else:
            self._on_con_non(message, remote, now, events)
        return events

    def _on_ack(self, message: Message, remote: Hashable, now: float, events: list[Event]) -> None:
        owner = self._reliability.acknowledged((remote, message.mid))  # type: ignore[arg-type]
        if owner is None:
            self._counts["unmatched"] += 1
            return
        if isinstance(owner, ServerExchange):
            owner.state = _SERVER[owner.state, _ACKED]
            owner.transmission = None
            events.append(ResponseAcknowledged(owner))
            return
        exchange: ClientExchange = owner
        exchange.transmission = None
        if exchange.ping:
            self._finish(exchange, _RESPONSE, now, events)
            events.append(ResponseReceived(exchange, message))
            return
        if message.code is _EMPTY:
            exchange.state = _CLIENT[exchange.state, _EMPTY_ACK]
            exchange.deadline_ticket = self._timers.schedule(
                now + self._separate_timeout, (_DEADLINE, exchange)
            )
            return
        if message.token != exchange.token or not message.code.is_response():
            # Acknowledges the request but is no valid response to it.
            self._counts["rejected_responses"] += 1
            self._finish(exchange, _FAIL, now, events)
            events.append(
                RequestFailed(
                    exchange, BadResponseError("piggybacked response does not match the request")
                )
            )
            return
        if has_unrecognized_critical(message, self.config.recognized_response_options):
            # §4.2: rejecting an ACK is silently ignoring it, but it does prove
            # receipt; the request cannot succeed, so it fails now.
            self._counts["rejected_responses"] += 1
            self._finish(exchange, _FAIL, now, events)
            events.append(
                RequestFailed(
                    exchange, BadResponseError("response has an unrecognized critical option")
                )
            )
            return
        self._deliver(exchange, message, now, events)

    def _on_rst(self, message: Message, remote: Hashable, now: float, events: list[Event]) -> None:
        owner = self._reliability.reset((remote, message.mid), now)  # type: ignore[arg-type]
        if owner is None:
            self._counts["unmatched"] += 1
            return
        if isinstance(owner, ServerExchange):
            if owner.transmission is not None:  # (an RST to an earlier NON notification)
                self._reliability.cancel(owner.transmission)
            owner.state = _SERVER[owner.state, _SERVER_FAIL]
            owner.transmission = None
            events.append(ResponseFailed(owner, ResetByPeerError("the client reset the response")))
        elif owner.state is not _DONE:
            self._finish(owner, _RESPONSE if owner.ping else _FAIL, now, events)
            if owner.ping:
                events.append(ResponseReceived(owner, message))
            else:
                events.append(
                    RequestFailed(owner, ResetByPeerError("the server reset the request"))
                )

    def _on_con_non(
        self, message: Message, remote: Hashable, now: float, events: list[Event]
    ) -> None:
        mid: int = message.mid  # type: ignore[assignment]
        con = message.mtype is _CON
        code = message.code
        if code is _EMPTY:
            if con:  # CoAP ping (§4.3): answered with RST
                self._counts["pings"] += 1
                self._reset(remote, mid, events)
            return
        entry = self._dedup.lookup(remote, mid, now)
        key = (remote, mid)
        if entry is not None or key in self._pending:
            self._counts["duplicates"] += 1
            if con and entry is not None and entry[1] is not None:
                events.append(Transmit(remote, entry[1]))
            return
        if 1 <= code <= 31:  # a request (code.is_request(), inline)
            self._on_request(message, remote, mid, con, now, events, key)
            return
        if 64 <= code < 192:  # a response
            self._on_separate_response(message, remote, mid, con, now, events)
            return
        # Reserved classes (1.xx, 6.xx) and signaling codes have no meaning over UDP.
        self._counts["unmatched"] += 1
        if con:
            self._reset(remote, mid, events, record=now)
        else:
            self._seen_non(remote, mid, now)

    def _on_separate_response(
        self,
        message: Message,
        remote: Hashable,
        mid: int,
        con: bool,
        now: float,
        events: list[Event],
    ) -> None:
        exchange = self._matcher.find(remote, message.token)
        if exchange is None or exchange.state is _QUEUED:
            # §4.3 / RFC 7641 §3.6: unknown token -> RST, for CON and NON alike.
            self._counts["unmatched"] += 1
            self._reset(remote, mid, events, record=now if con else None)
            if not con:
                self._seen_non(remote, mid, now)
            return
        if has_unrecognized_critical(message, self.config.recognized_response_options):
            self._counts["rejected_responses"] += 1
            if con and exchange.group:  # one member's bad response ends nothing
                self._reset(remote, mid, events, record=now)
            elif con:
                self._reset(remote, mid, events, record=now)
                self._finish(exchange, _FAIL, now, events)
                events.append(
                    RequestFailed(
                        exchange, BadResponseError("response has an unrecognized critical option")
                    )
                )
            else:
                self._seen_non(remote, mid, now)
            return
        if con:
            ack = encode_empty(_ACK, mid)
            self._seen_con(remote, mid, ack, now)
            events.append(Transmit(remote, ack))
        else:
            self._seen_non(remote, mid, now)
        # A response also proves the request arrived (its ACK may be lost).
        self._deliver(exchange, message, now, events)

    def _reset(
        self, remote: Hashable, mid: int, events: list[Event], record: float | None = None
    ) -> None:
        data = encode_empty(_RST, mid)
        self._counts["resets_sent"] += 1
        if record is not None:
            self._seen_con(remote, mid, data, record)
        events.append(Transmit(remote, data))

    def peer_error(
        self, remote: Hashable, error: OSError | RequestError, now: float
    ) -> list[Event]:
        """The network reported ``error`` for ``remote``: fail what is in flight towards it.

        An ``OSError`` (an ICMP report) fails the requests already sent to it,
        each with a :class:`~coap_trio.errors.NetworkError`; queued ones go out
        later. A :class:`~coap_trio.errors.RequestError` says that the secure
        session with ``remote`` failed or ended (a DTLS handshake that failed,
        a fatal alert, a closed session): nothing towards it can be answered in
        that session any more, so every exchange with it ends with that very
        error: requests sent, queued (NSTART, message IDs) and observing, pings,
        and CON responses and notifications awaiting their ACK
        (``ResponseFailed``); and the deduplication entries of the session are
        forgotten, so that no reply of it is replayed into another one.
        """
        events: list[Event] = []
        if isinstance(error, RequestError):
            self._session_ended(remote, error, now, events)
            return events
        # Decide first: finishing one starts queued requests, which were not sent yet.
        sent = [
            exchange
            for exchange in self._matcher.towards(remote)
            if exchange.state is _SENT or exchange.state is _CLIENT_ACKNOWLEDGED
        ]
        for exchange in sent:
            self._finish(exchange, _FAIL, now, events)
            events.append(RequestFailed(exchange, NetworkError(str(error), error)))
        return events

    def _session_ended(
        self, remote: Hashable, error: RequestError, now: float, events: list[Event]
    ) -> None:
        """:meth:`peer_error` with a RequestError: end every exchange with ``remote``."""
        queued = self._queued.pop(remote, None) or ()  # first: nothing of it may start now
        doomed: list[ClientExchange] = list(queued)
        for exchange in self._matcher.towards(remote):
            if exchange.state is not _DONE and exchange.state is not _QUEUED:
                doomed.append(exchange)
        for transmission in self._reliability.towards(remote):
            owner = transmission.owner
            if isinstance(owner, ClientExchange):
                if owner.ping and owner.state is not _DONE:
                    doomed.append(owner)  # (pings have no token: not in the matcher)
            elif isinstance(owner, ServerExchange):
                self._reliability.cancel(transmission)
                owner.transmission = None
                owner.state = _SERVER[owner.state, _SERVER_FAIL]
                events.append(ResponseFailed(owner, error))
        for exchange in doomed:
            self._finish(exchange, _FAIL, now, events)
            events.append(RequestFailed(exchange, error))
        self._dedup.forget(remote)

    # -- small shared steps ---------------------------------------------------------

    def _seen_con(self, remote: Hashable, mid: int, reply: bytes, now: float) -> None:
        """Record a finished incoming CON and the reply to replay to its duplicates."""
        self._dedup.record(remote, mid, reply, self._exchange_lifetime, now)
        self._ensure_sweep(now + self._exchange_lifetime)

    def _seen_non(self, remote: Hashable, mid: int, now: float) -> None:
        """Record a finished incoming NON (duplicates are dropped)."""
        self._dedup.record(remote, mid, None, self._non_lifetime, now)
        self._ensure_sweep(now + self._non_lifetime)

    # -- time ---------------------------------------------------------------------

    def _ensure_sweep(self, when: float) -> None:
        if self._sweep_at is None or when < self._sweep_at:
            self._sweep_at = when
            self._sweep_ticket = self._timers.schedule(when, (_SWEEP, None))

    def timeout(self, now: float) -> list[Event]:
        """Process every timer due at ``now``: retransmissions, give-ups, empty ACKs,
        response deadlines, queued requests whose message ID freed, expiries."""
        events: list[Event] = []
        if self._ack_fifo:
            self._acks_due(now, events)
        for ticket, (kind, subject) in self._timers.pop_due(now):
            if kind == RETRANSMIT:
                outcome = self._reliability.fire(subject, ticket, now)
                if isinstance(outcome, bytes):
                    if isinstance(subject.owner, ClientExchange):
                        subject.owner.transmissions += 1
                    events.append(Transmit(subject.key[0], outcome))
                elif outcome is False:
                    self._give_up(subject.owner, subject.count + 1, now, events)
            elif kind == _ACK_DELAY:
                self._ack_due(subject, ticket, now, events)
            elif kind == _DEADLINE:
                client: ClientExchange = subject
                if client.deadline_ticket == ticket and client.state is not _DONE:
                    self._counts["requests_timed_out"] += 1
                    self._finish(client, _FAIL, now, events)
                    error = RequestTimeoutError(client.transmissions, "no response arrived in time")
                    events.append(RequestFailed(client, error))
            elif kind == _MID_WAIT:
                self._release_queue(subject, now, events)
            elif ticket == self._sweep_ticket:
                self._sweep_at = None
                self._sweep(now)
        return events

    def _give_up(self, owner: Any, transmissions: int, now: float, events: list[Event]) -> None:
        error = RequestTimeoutError(transmissions)
        if isinstance(owner, ServerExchange):
            owner.state = _SERVER[owner.state, _SERVER_FAIL]
            owner.transmission = None
            events.append(ResponseFailed(owner, error))
        else:
            self._counts["requests_timed_out"] += 1
            self._finish(owner, _FAIL, now, events)
            events.append(RequestFailed(owner, error))

    def _sweep(self, now: float) -> None:
        next_dedup = self._dedup.sweep(now)
        next_non = self._reliability.sweep(now)
        if now - self._mids_swept >= _MID_SWEEP_INTERVAL:
            self._mids_swept = now
            self._mids.sweep(now)
        candidates = [t for t in (next_dedup, next_non) if t is not None]
        if candidates:
            self._ensure_sweep(min(candidates))


class GroupMessaging(Messaging):
    """The messaging machine of a multicast group endpoint (RFC 7252 §8.2).

    What arrives here was sent to a group: only NON requests are taken (a
    multicast request is NON, §8.1); anything else, and a datagram that does
    not decode, is dropped and counted without an answer — no RST, no ACK
    (§8.2: a server must not answer a multicast request with Reset, and
    nothing else sent to a group calls for an answer). Requests are
    deduplicated and answered like unicast NON requests (a NON response, from
    the unicast address the driver sends from); whether and when to answer
    (Leisure, §8.2.1; no error responses) is the driver's decision.
    """

    #: Requests arrive through a multicast group.
    multicast = True

    def receive(self, data: bytes, remote: Hashable, now: float) -> list[Event]:
        """Process one datagram sent to the group by ``remote``."""
        counts = self._counts
        counts["datagrams_received"] += 1
        try:
            message = decode(data, remote)
        except MessageFormatError:
            counts["malformed"] += 1
            return []
        if message.mtype is not _NON or not message.code.is_request():
            counts["unmatched"] += 1
            return []
        mid: int = message.mid  # type: ignore[assignment]  # (decoded: always set)
        if self._dedup.lookup(remote, mid, now) is not None or (remote, mid) in self._pending:
            counts["duplicates"] += 1
            return []
        events: list[Event] = []
        self._on_request(message, remote, mid, False, now, events)
        return events
