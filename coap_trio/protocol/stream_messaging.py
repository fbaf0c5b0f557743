"""The messaging machine for CoAP over reliable transports (RFC 8323): TCP, TLS, WebSockets.

Owns, for one local endpoint and every connection it has: the CSM exchange
(ours first on each connection, §5.3; the peer's must be its first message,
and sets its Max-Message-Size and BERT support), Ping/Pong (§5.4), Release
(§5.5) and Abort (§5.6), token matching of responses (no message IDs, no
CON/ACK, no retransmission, no deduplication: the transport is reliable),
the requests we serve and the observations we serve per connection, and
what happens to all of them when a connection ends.

It has the interface the endpoint runner drives on
:class:`~coap_trio.protocol.messaging.Messaging` (``send_request``,
``send_ping``, ``receive``, ``respond``, ``notify``, ``abandon``,
``forget``, ``timeout``, ``next_deadline``, ``peer_error``,
``mid_available``, ``set_nstart``, ``statistics``) and returns the same
events, plus connection hooks (:meth:`StreamMessaging.connection_made`,
:meth:`~StreamMessaging.connection_lost`) and one more event,
:class:`~coap_trio.protocol.exchanges.CloseConnection`, which asks the
driver to close a connection (after sending the ``Transmit`` events before
it). ``receive`` takes one complete frame: a stream frame cut by
:class:`~coap_trio.protocol.framing.StreamDecoder`, or one WebSocket message
when the machine was made with ``websocket=True``; ``Transmit`` data is
framed the same way.

Decisions where RFC 8323 leaves room:

- A response whose token matches no request is ignored and counted
  (``unmatched``): there is no Reset on reliable transports.
- A frame that does not decode, a first message that is not a CSM, and a
  signal with an unknown critical option abort the connection (Abort, with
  Bad-CSM-Option for a CSM, then ``CloseConnection``).
- Requests larger than the peer's Max-Message-Size fail with
  :class:`~coap_trio.errors.MessageTooLargeError` without being sent; before
  the peer's CSM arrives (the limit is then the default 1152) such a request
  waits for the CSM instead of failing.
- A response or notification larger than the peer's limit: the response
  becomes 5.00 with a diagnostic; the notification is not sent and the
  observation fails (``ResponseFailed``).
- Release: requests already sent still get their responses; new ones fail
  with :class:`~coap_trio.errors.ConnectionReleasedError`; the connection is
  closed (``CloseConnection``) once no request is outstanding (observations
  do not keep it open).
- Observe (§7): every notification is delivered (no reordering on a
  stream); the Context's freshness filter is the shell's business.

Request deadlines are a :class:`~coap_trio.protocol.deadline_fifo.DeadlineFifo`;
Pong deadlines are on a timer heap.

It imports no trio and reads no clock. Must not know about sockets, tasks,
resources or URIs.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Hashable
from typing import Any

import attrs

from ..errors import (
    BadResponseError,
    ConnectionAbortedByPeerError,
    ConnectionLostError,
    ConnectionReleasedError,
    LocalProtocolError,
    MessageFormatError,
    MessageTooLargeError,
    RequestError,
    RequestTimeoutError,
    SignalingError,
)
from ..message import Message
from ..numbers.codes import Code
from ..options import Options
from .blockwise import bert_block_size
from .config import MessagingConfig, MessagingStatistics
from .deadline_fifo import IN_FIFO, DeadlineFifo
from .exchanges import (
    ClientExchange,
    ClientState,
    CloseConnection,
    Event,
    NotificationReceived,
    RequestFailed,
    RequestReceived,
    ResponseFailed,
    ResponseReceived,
    ServerExchange,
    ServerState,
    StreamClientState,
    StreamServerState,
    Transmit,
)
from .framing import (
    decode_frame,
    decode_websocket,
    encode_stream,
    encode_stream_parts,
    encode_websocket,
)
from .matcher import Matcher, has_unrecognized_critical
from .observe import SharedNotification
from .signaling import (
    Abort,
    Csm,
    Ping,
    Pong,
    Release,
    build_abort,
    build_csm,
    build_pong,
    parse_signal,
)
from .stream_state import ConnectionState, PeerSettings, StreamMessagingConfig
from .timers import TimerHeap

__all__ = [
    "CLIENT_TRANSITIONS",
    "SERVER_TRANSITIONS",
    "PeerSettings",
    "StreamClientInput",
    "StreamMessaging",
    "StreamMessagingConfig",
    "StreamServerInput",
]

_EMPTY = Code.EMPTY
_CSM = Code.CSM


class StreamClientInput(enum.IntEnum):
    """What moves a :class:`~coap_trio.protocol.exchanges.ClientExchange` (a request or
    Ping we sent) on a reliable transport."""

    #: It goes out (at once, or when the peer's CSM allows its size).
    TRANSMIT = 0
    #: Its final response (for a Ping: the Pong) arrived, or, for an
    #: observation, a notification that ends it.
    RESPONSE = 2
    #: A 2.xx with Observe answered a registration: an observation (RFC 7641).
    REGISTERED = 3
    #: It ended without a response: timeout, rejected response, too large for
    #: the peer, Release, or the connection's end.
    FAIL = 4
    #: The driver gave it up (:meth:`StreamMessaging.abandon`), or a newer Ping
    #: replaced it (no token to tell them apart).
    ABANDON = 5


class StreamServerInput(enum.IntEnum):
    """What moves a :class:`~coap_trio.protocol.exchanges.ServerExchange` on a stream."""

    #: :meth:`StreamMessaging.respond`: the response (or none) went out.
    RESPOND = 1
    #: :meth:`StreamMessaging.forget`: the request will not be handled.
    FORGET = 5


_C, _S, _CI, _SI = StreamClientState, StreamServerState, StreamClientInput, StreamServerInput

#: The legal moves of a request we sent: ``(state, input) -> next state``. Any
#: pair not in the table is illegal (a ``KeyError`` in the machine is a bug;
#: a driver's illegal call is a ``LocalProtocolError``).
CLIENT_TRANSITIONS: dict[
    tuple[ClientState | StreamClientState, StreamClientInput], StreamClientState
] = {
    (_C.QUEUED, _CI.TRANSMIT): _C.SENT,
    (_C.QUEUED, _CI.FAIL): _C.DONE,
    (_C.QUEUED, _CI.ABANDON): _C.DONE,
    (_C.SENT, _CI.RESPONSE): _C.DONE,
    (_C.SENT, _CI.REGISTERED): _C.OBSERVING,
    (_C.SENT, _CI.FAIL): _C.DONE,
    (_C.SENT, _CI.ABANDON): _C.DONE,
    (_C.OBSERVING, _CI.RESPONSE): _C.DONE,
    (_C.OBSERVING, _CI.FAIL): _C.DONE,
    (_C.OBSERVING, _CI.ABANDON): _C.DONE,
}

#: The legal moves of a request we received: ``(state, input) -> next state``.
#: An observation's notifications leave it DONE (nothing is acknowledged).
SERVER_TRANSITIONS: dict[
    tuple[ServerState | StreamServerState, StreamServerInput], StreamServerState
] = {
    (_S.PENDING, _SI.RESPOND): _S.DONE,
    (_S.PENDING, _SI.FORGET): _S.DONE,
}

# The moves of the hot paths, looked up once (module constants: an Enum class
# attribute is slow on 3.11).
_QUEUED, _SENT, _OBSERVING = _C.QUEUED, _C.SENT, _C.OBSERVING
_DONE = _C.DONE
_SENT_NOW = CLIENT_TRANSITIONS[_QUEUED, _CI.TRANSMIT]
_ANSWERED = CLIENT_TRANSITIONS[_SENT, _CI.RESPONSE]
_TRANSMIT, _RESPONSE, _REGISTERED = _CI.TRANSMIT, _CI.RESPONSE, _CI.REGISTERED
_FAIL, _ABANDON = _CI.FAIL, _CI.ABANDON
_PENDING, _RESPOND, _FORGET = _S.PENDING, _SI.RESPOND, _SI.FORGET
_CLIENT, _SERVER = CLIENT_TRANSITIONS, SERVER_TRANSITIONS

#: The kind of a Pong deadline on the timer heap (the heap holds nothing else).
_PING_TIMER = 0
_OBSERVABLE_METHODS = (Code.GET, Code.FETCH)

#: Remotes remembered as closing (frames from them ignored) at most.
_MAX_CLOSING = 4096


class StreamMessaging:
    """RFC 8323 messaging for one local endpoint and its connections (see the module).

    It implements :class:`~coap_trio.protocol.machine.Machine`.
    """

    #: A reliable, ordered transport: notifications are never stale (RFC 8323 §7).
    in_order = True
    #: Connections are unicast.
    multicast = False

    def __init__(
        self,
        config: StreamMessagingConfig | MessagingConfig | None = None,
        rng: random.Random | None = None,
        *,
        websocket: bool = False,
        max_message_size: int | None = None,
        block_wise_transfer: bool | None = None,
    ) -> None:
        if config is None:
            config = StreamMessagingConfig()
        elif isinstance(config, MessagingConfig):
            config = StreamMessagingConfig.from_messaging_config(config)
        if max_message_size is not None:
            config = attrs.evolve(config, max_message_size=max_message_size)
        if block_wise_transfer is not None:
            config = attrs.evolve(config, block_wise_transfer=block_wise_transfer)
        #: The tunables in use (a ``MessagingConfig`` given is translated).
        self.config: StreamMessagingConfig = config
        #: Whether frames are WebSocket messages (RFC 8323 §4.4) rather than stream frames.
        self.websocket = websocket
        self._encode = encode_websocket if websocket else encode_stream
        self._decode = decode_websocket if websocket else decode_frame
        self._rng = rng if rng is not None else random.SystemRandom()
        self._matcher = Matcher(self._rng, config.token_length)
        self._pending = self._matcher.pending
        #: Whether the last :meth:`send_request` left :meth:`next_deadline` where
        #: it was (another request's response deadline, an earlier one, was live);
        #: then a driver whose timer is armed for the earliest need not look again.
        self.kept_next_deadline = False
        self._recognized = config.recognized_response_options
        #: Pong deadlines.
        self._timers: TimerHeap[tuple[int, Any]] = TimerHeap()
        #: Response deadlines of requests, in sending order: every request gets the
        #: same response_timeout, so a FIFO is ordered (cheaper than the heap, where
        #: one push and one cancel per request were a visible share of a busy
        #: client's time).
        self._deadlines = DeadlineFifo()
        self._connections: dict[Hashable, ConnectionState] = {}
        #: Remotes whose connection we closed, until the driver reports it gone.
        self._closing: dict[Hashable, None] = {}
        #: Received requests not answered yet, over every connection.
        self._serving = 0
        self._nstart = 1
        self._counts = dict.fromkeys(
            (
                "datagrams_received",
                "malformed",
                "pings",
                "requests_timed_out",
                "unmatched",
                "rejected_responses",
                "overloaded",
            ),
            0,
        )

    # -- introspection -------------------------------------------------------------

    @property
    def statistics(self) -> MessagingStatistics:
        """A snapshot of the counters, in the UDP machine's shape.

        ``datagrams_received`` counts frames; duplicates, resets,
        retransmissions, deduplication and message-ID fields are always 0.
        """
        return MessagingStatistics(
            **self._counts,
            duplicates=0,
            resets_sent=0,
            retransmissions=0,
            dedup_entries=0,
            dedup_evicted=0,
            mid_remotes=0,
            mid_remotes_evicted=0,
            outstanding_requests=sum(1 for e in self._matcher.pending.values() if e.state is _SENT),
            queued_requests=sum(len(c.waiting) for c in self._connections.values()),
            pending_server_requests=self._serving,
            served_observations=sum(len(c.observations) for c in self._connections.values()),
        )

    def peer_settings(self, remote: Hashable) -> PeerSettings | None:
        """What ``remote`` announced (defaults until its CSM); None without a connection."""
        conn = self._connections.get(remote)
        if conn is None:
            return None
        return PeerSettings(conn.max_message_size, conn.bert, conn.csm_received)

    def bert_size(self, remote: Hashable) -> int | None:
        """The largest BERT block payload to use with ``remote`` (RFC 8323 §6), or None
        when BERT is not agreed: both we and the peer must have announced
        Block-Wise-Transfer, and the smaller Max-Message-Size must leave room for one
        1024-byte unit besides the headers."""
        conn = self._connections.get(remote)
        if conn is None or not conn.bert or not self.config.block_wise_transfer:
            return None
        return bert_block_size(min(conn.max_message_size, self.config.max_message_size))

    def connected(self, remote: Hashable) -> bool:
        """Whether the machine has a connection to ``remote``."""
        return remote in self._connections

    def set_nstart(self, nstart: int) -> None:
        """Accepted for interface compatibility; a reliable transport has no NSTART limit."""
        if nstart < 1:
            raise ValueError("NSTART must be at least 1")
        self._nstart = nstart

    def mid_available(self, remote: Hashable, now: float) -> bool:
        """Always True: reliable transports have no message IDs."""
        return True

    def next_deadline(self) -> float | None:
        """When :meth:`timeout` should next be called (None: no timer pending)."""
        head = self._deadlines.next_deadline()
        pong = self._timers.next_deadline()
        if head is None:
            return pong
        return head if pong is None or head < pong else pong

    # -- connections ---------------------------------------------------------------

    def _connection(self, remote: Hashable, events: list[Event]) -> ConnectionState:
        """The connection to ``remote``, made (our CSM transmitted first) if new."""
        conn = self._connections.get(remote)
        if conn is None:
            self._closing.pop(remote, None)
            conn = self._connections[remote] = ConnectionState(remote)
            config = self.config
            csm = build_csm(config.max_message_size, block_wise_transfer=config.block_wise_transfer)
            events.append(Transmit(remote, self._encode(csm)))
        return conn

    def connection_made(self, remote: Hashable, now: float) -> list[Event]:
        """A connection to ``remote`` is up: transmit our CSM (§5.3.1: first, on both sides).

        Idempotent. Sending a request or a ping to an unknown remote makes the
        connection implicitly (our CSM still goes out first), and so does a frame
        from one, unless the machine itself closed that remote's connection
        (``CloseConnection``) and neither ``connection_lost`` nor
        ``connection_made`` has been called since: frames still arriving on a
        connection being closed are ignored.
        """
        events: list[Event] = []
        self._connection(remote, events)
        return events

    def connection_lost(self, remote: Hashable, error: Exception | None, now: float) -> list[Event]:
        """The connection to ``remote`` closed (``error`` None) or broke.

        Every request sent over it fails with
        :class:`~coap_trio.errors.ConnectionLostError`, pings included, and
        every observation served over it ends (``ResponseFailed``). No
        ``CloseConnection`` is emitted (it is closed already).
        """
        self._closing.pop(remote, None)
        conn = self._connections.get(remote)
        if conn is None:
            return []
        os_error = error if isinstance(error, OSError) else None
        text = "the connection was closed" if error is None else f"the connection broke: {error}"
        events: list[Event] = []
        self._close(conn, ConnectionLostError(text, os_error), now, events, None)
        return events

    def peer_error(
        self, remote: Hashable, error: OSError | RequestError, now: float
    ) -> list[Event]:
        """The network reported ``error`` for ``remote``: the connection is lost, close it.

        Its requests fail with a :class:`~coap_trio.errors.ConnectionLostError`
        for an ``OSError``, and with ``error`` itself for a
        :class:`~coap_trio.errors.RequestError`.
        """
        conn = self._connections.get(remote)
        if conn is None:
            return []
        events: list[Event] = []
        failure = (
            error if isinstance(error, RequestError) else ConnectionLostError(str(error), error)
        )
        self._close(conn, failure, now, events, f"{error}")
        return events

    def abort(self, remote: Hashable, now: float, diagnostic: str = "") -> list[Event]:
        """Abort the connection to ``remote`` ourselves (§5.6): Transmit an Abort, then close."""
        conn = self._connections.get(remote)
        if conn is None:
            return []
        events: list[Event] = []
        self._abort(conn, now, events, diagnostic or "aborted")
        return events

    def _abort(
        self,
        conn: ConnectionState,
        now: float,
        events: list[Event],
        diagnostic: str,
        bad_csm_option: int | None = None,
    ) -> None:
        events.append(Transmit(conn.remote, self._encode(build_abort(bad_csm_option, diagnostic))))
        error = ConnectionLostError(f"connection aborted: {diagnostic}")
        self._close(conn, error, now, events, diagnostic)

    def _close(
        self,
        conn: ConnectionState,
        error: RequestError,
        now: float,
        events: list[Event],
        reason: str | None,
    ) -> None:
        """Forget ``conn``: fail its requests and pings, end its observations;
        ``reason`` not None also asks the driver to close it."""
        remote = conn.remote
        del self._connections[remote]
        for exchange in list(self._matcher.towards(remote)):
            self._finish(exchange, _FAIL)
            events.append(RequestFailed(exchange, error))
        conn.waiting.clear()
        for ping in conn.pings.values():
            self._cancel_deadline(ping)
            ping.state = _CLIENT[ping.state, _FAIL]
            events.append(RequestFailed(ping, error))
        conn.pings.clear()
        self._serving -= len(conn.serving)
        conn.serving.clear()
        for served in conn.observations:
            events.append(ResponseFailed(served, error))
        conn.observations.clear()
        if reason is not None:
            closing = self._closing
            closing[remote] = None
            if len(closing) > _MAX_CLOSING:  # the driver never said; forget the oldest
                del closing[next(iter(closing))]
            events.append(CloseConnection(remote, reason, error))

    # -- client side ---------------------------------------------------------------

    def send_request(
        self, request: Message, remote: Hashable, now: float
    ) -> tuple[ClientExchange, list[Event]]:
        """Start a request towards ``remote`` (the connection is made if new).

        The token is allocated here unless ``request.token`` is set; ``mtype``
        and ``mid`` are ignored. The request is transmitted at once, or fails at
        once (``RequestFailed``): after the peer's Release, or when larger than
        the peer's Max-Message-Size (a request over the default 1152 bytes waits
        for the peer's CSM first). ``request`` is not modified.
        """
        if not 1 <= request.code <= 31:
            raise LocalProtocolError(f"{request.code} is not a request code")
        token = request.token
        if token:
            if self._matcher.in_use(remote, token):
                raise LocalProtocolError(f"token {token.hex()} is already in use")
        else:
            new = self._matcher.new_token(remote)
            if new is None:
                raise LocalProtocolError("no free token (token_length is too small)")
            token = new
        exchange = ClientExchange(request, remote, token, True, _QUEUED)
        if self.websocket:
            opt, payload = request.opt, request.payload
            data = self._encode(
                Message.from_fields(request.code, None, None, token, opt, payload, None)
            )
        else:
            data = encode_stream_parts(request.code, token, request.opt.raw_items, request.payload)
        events: list[Event] = []
        conn = self._connections.get(remote)
        if conn is None:
            conn = self._connection(remote, events)
        if conn.released is not None:
            exchange.state = _CLIENT[_QUEUED, _FAIL]
            events.append(RequestFailed(exchange, conn.released))
            return exchange, events
        too_large = len(data) > conn.max_message_size
        if too_large:
            if conn.csm_received:
                exchange.state = _CLIENT[_QUEUED, _FAIL]
                events.append(
                    RequestFailed(exchange, MessageTooLargeError(len(data), conn.max_message_size))
                )
                return exchange, events
            conn.waiting.append((exchange, data))  # the peer's CSM may allow it
        self._pending[(remote, token)] = exchange  # (Matcher.register, inline)
        deadlines = self._deadlines
        deadlines.add(now + self.config.response_timeout, exchange)
        # Another response deadline was live: the FIFO is ordered, so this one is
        # not the earliest, and a driver's timer armed for the earliest stays right.
        self.kept_next_deadline = deadlines.live > 1
        if not too_large:  # (_transmit, inline)
            exchange.state = _SENT_NOW  # (QUEUED, TRANSMIT)
            exchange.first_sent = now
            exchange.transmissions = 1
            events.append(Transmit(remote, data))
        return exchange, events

    def send_group_request(
        self, request: Message, group: Hashable, now: float
    ) -> tuple[ClientExchange, list[Event]]:
        """Refused (``LocalProtocolError``): multicast is a UDP feature (RFC 7252 §8)."""
        raise LocalProtocolError("multicast requests need UDP (RFC 7252 §8)")

    def _transmit(
        self, exchange: ClientExchange, data: bytes, now: float, events: list[Event]
    ) -> None:
        exchange.state = _CLIENT[exchange.state, _TRANSMIT]
        exchange.first_sent = now
        exchange.transmissions = 1
        events.append(Transmit(exchange.remote, data))

    def abandon(self, exchange: ClientExchange, now: float) -> list[Event]:
        """Give up on ``exchange``: token freed, no event for it. Idempotent.

        After a Release, abandoning the last outstanding request closes the
        connection (``CloseConnection``).
        """
        if exchange.state is _DONE:
            return []
        conn = self._connections.get(exchange.remote)
        if exchange.ping:
            self._cancel_deadline(exchange)
            exchange.state = _CLIENT[exchange.state, _ABANDON]
            if conn is not None and conn.pings.get(exchange.token) is exchange:
                del conn.pings[exchange.token]
            return []
        self._finish(exchange, _ABANDON)
        events: list[Event] = []
        if conn is not None:
            conn.waiting = [item for item in conn.waiting if item[0] is not exchange]
            self._close_if_released(conn, now, events)
        return events

    def _finish(self, exchange: ClientExchange, cause: StreamClientInput) -> None:
        """End ``exchange`` (``cause``: a response, a failure or abandon), free its token."""
        exchange.state = _CLIENT[exchange.state, cause]
        self._matcher.unregister(exchange)
        self._cancel_deadline(exchange)

    def _cancel_deadline(self, exchange: ClientExchange) -> None:
        """Forget ``exchange``'s response or Pong deadline (idempotent)."""
        ticket = exchange.deadline_ticket
        if ticket == IN_FIFO:
            self._deadlines.cancel(exchange)
        elif ticket:
            self._timers.cancel(ticket)
        exchange.deadline_ticket = 0

    def _close_if_released(self, conn: ConnectionState, now: float, events: list[Event]) -> None:
        """After a Release: close once no request (observations aside) is outstanding."""
        if conn.released is None or conn.remote not in self._connections:
            return
        for exchange in self._matcher.towards(conn.remote):
            if exchange.state is not _OBSERVING:
                return
        self._close(conn, conn.released, now, events, "released by the peer")

    def _deliver(self, exchange: ClientExchange, message: Message, events: list[Event]) -> None:
        """A response for ``exchange``: the final one, or one of an observation (RFC 7641).

        A registration answered with a 2.xx carrying Observe stays matched
        (OBSERVING, no deadline); every later response is a
        ``NotificationReceived`` (all delivered: the stream keeps their order,
        RFC 8323 §7); one without Observe, or an error, ends it.
        """
        if exchange.observe and message.code.is_successful() and message.opt.observe is not None:
            if exchange.state is _OBSERVING:
                events.append(NotificationReceived(exchange, message))
                return
            self._cancel_deadline(exchange)
            exchange.state = _CLIENT[exchange.state, _REGISTERED]
            events.append(ResponseReceived(exchange, message))
            return
        observing = exchange.state is _OBSERVING
        self._finish(exchange, _RESPONSE)
        if observing:
            events.append(NotificationReceived(exchange, message))
        else:
            events.append(ResponseReceived(exchange, message))

    # -- input ---------------------------------------------------------------------

    def receive(self, data: bytes, remote: Hashable, now: float) -> list[Event]:
        """Process one complete frame from ``remote`` (a stream frame, or a WebSocket message)."""
        self._counts["datagrams_received"] += 1
        if remote in self._closing:  # a connection we closed: what is still in flight
            return []
        events: list[Event] = []
        conn = self._connections.get(remote)
        if conn is None:
            conn = self._connection(remote, events)
        try:
            message = self._decode(data)
        except MessageFormatError as error:
            self._counts["malformed"] += 1
            self._abort(conn, now, events, f"malformed message: {error}")
            return events
        message.remote = remote
        code = message.code
        if not conn.csm_received and code is not _CSM:
            self._counts["malformed"] += 1
            self._abort(conn, now, events, "the first message was not a CSM")
            return events
        # Code is an IntEnum: plain comparisons classify it (7.xx, 0.01-0.31, 2.00-5.31).
        if 64 <= code < 192:
            self._on_response(conn, message, now, events)
        elif code >= 224:
            self._on_signal(conn, message, now, events)
        elif 1 <= code <= 31:
            self._on_request(conn, message, events)
        elif code is not _EMPTY:  # 0.00 is a keepalive, ignored (§3.3); 1.xx, 6.xx unknown
            self._counts["unmatched"] += 1
        return events

    def _on_response(
        self, conn: ConnectionState, message: Message, now: float, events: list[Event]
    ) -> None:
        key = (conn.remote, message.token)
        exchange = self._pending.get(key)  # (Matcher.find, inline)
        if exchange is None or exchange.state is _QUEUED:
            self._counts["unmatched"] += 1  # no Reset on reliable transports: ignored
            return
        if has_unrecognized_critical(message, self._recognized):
            self._counts["rejected_responses"] += 1
            self._finish(exchange, _FAIL)
            events.append(
                RequestFailed(
                    exchange, BadResponseError("response has an unrecognized critical option")
                )
            )
        elif not exchange.observe and exchange.state is _SENT:
            # The common case, inline: a plain request answered (what _deliver and
            # _finish would do for it).
            exchange.state = _ANSWERED  # (SENT, RESPONSE)
            del self._pending[key]  # (Matcher.unregister: it was found under key)
            ticket = exchange.deadline_ticket
            if ticket == IN_FIFO:  # (_cancel_deadline's usual case)
                self._deadlines.cancel(exchange)
                exchange.deadline_ticket = 0
            elif ticket:
                self._cancel_deadline(exchange)
            events.append(ResponseReceived(exchange, message))
        else:
            self._deliver(exchange, message, events)
        if conn.released is not None and exchange.state is _DONE:
            self._close_if_released(conn, now, events)

    # -- server side: requests received, observations served ------------------------

    def _on_request(self, conn: ConnectionState, message: Message, events: list[Event]) -> None:
        if self._serving >= self.config.max_pending_requests:
            self._counts["overloaded"] += 1
            busy = Message.from_fields(
                Code.SERVICE_UNAVAILABLE, None, None, message.token, Options(), b"", None
            )
            busy.opt.max_age = 2
            events.append(Transmit(conn.remote, self._encode(busy)))
            return
        exchange = ServerExchange(message, conn.remote, _PENDING)
        exchange.con = True  # every request over a reliable transport expects its response
        conn.serving.add(exchange)
        self._serving += 1
        events.append(RequestReceived(exchange))

    def _take(self, exchange: ServerExchange) -> ConnectionState | None:
        """Stop tracking a request being handled; its connection if still open."""
        conn = self._connections.get(exchange.remote)
        if conn is None or exchange not in conn.serving:
            return None
        conn.serving.discard(exchange)
        self._serving -= 1
        return conn

    def respond(
        self, exchange: ServerExchange, response: Message | None, now: float
    ) -> list[Event]:
        """Answer a received request (``None``: no response, e.g. RFC 7967 No-Response).

        The response gets the request's token; its code, options and payload are
        used as given. A 2.xx with Observe to a GET/FETCH with Observe=0 makes
        ``exchange`` a served observation: :meth:`notify` sends its notifications
        until a final one, or until the connection ends (``ResponseFailed``).
        Answering after the connection ended sends nothing.
        """
        answered = _SERVER.get((exchange.state, _RESPOND))
        if answered is None:
            raise LocalProtocolError(f"{exchange!r} was already answered")
        exchange.state = answered
        self.kept_next_deadline = True  # answering schedules nothing
        conn = self._take(exchange)
        if conn is None or response is None:
            return []
        data = self._encode_response(exchange, response)
        if len(data) > conn.max_message_size:
            self._counts["overloaded"] += 1
            failure = Message.from_fields(
                Code.INTERNAL_SERVER_ERROR,
                None,
                None,
                exchange.token,
                Options(),
                b"response larger than Max-Message-Size",
                None,
            )
            data = self._encode(failure)
        elif (
            exchange.request.opt.observe == 0
            and exchange.request.code in _OBSERVABLE_METHODS
            and response.code.is_successful()
            and response.opt.observe is not None
        ):
            conn.observations.add(exchange)
        return [Transmit(conn.remote, data)]

    def _encode_response(self, exchange: ServerExchange, response: Message) -> bytes:
        return self._encode(
            Message.from_fields(
                response.code, None, None, exchange.token, response.opt, response.payload, None
            )
        )

    def notify(
        self,
        exchange: ServerExchange,
        notification: Message,
        now: float,
        *,
        confirmable: bool = False,
    ) -> list[Event]:
        """Send a notification (RFC 7641 over RFC 8323 §7) for a served observation.

        ``confirmable`` is ignored (the transport is reliable). A notification
        that is not 2.xx or has no Observe is the last one. When the connection
        is gone, or the notification is larger than the peer accepts, nothing
        is sent and ``ResponseFailed`` ends the observation.
        """
        if exchange.state is _PENDING:
            raise LocalProtocolError("answer the registration with respond() first")
        conn = self._connections.get(exchange.remote)
        if conn is None or exchange not in conn.observations:
            return [ResponseFailed(exchange, ConnectionLostError("the connection is closed"))]
        data = self._encode_response(exchange, notification)
        if len(data) > conn.max_message_size:
            conn.observations.discard(exchange)
            return [
                ResponseFailed(exchange, MessageTooLargeError(len(data), conn.max_message_size))
            ]
        if not notification.code.is_successful() or notification.opt.observe is None:
            conn.observations.discard(exchange)
        return [Transmit(conn.remote, data)]

    def notify_shared(
        self,
        exchange: ServerExchange,
        shared: SharedNotification,
        observe: int,
        now: float,
        *,
        confirmable: bool = False,
    ) -> list[Event]:
        """:meth:`notify` with a copy of ``shared.message`` carrying Observe ``observe``."""
        notification = shared.message.copy()
        notification.opt.observe = observe
        self.kept_next_deadline = True  # a notification schedules nothing here
        return self.notify(exchange, notification, now, confirmable=confirmable)

    def forget(self, exchange: ServerExchange) -> None:
        """Drop a received request that will not be handled (nothing is sent); harmless
        once it was answered or forgotten."""
        forgotten = _SERVER.get((exchange.state, _FORGET))
        if forgotten is None:  # answered or forgotten already: harmless
            return
        self._take(exchange)
        exchange.state = forgotten

    def end_observation(self, exchange: ServerExchange) -> None:
        """Stop treating ``exchange`` as a served observation (it ended in the shell)."""
        conn = self._connections.get(exchange.remote)
        if conn is not None:
            conn.observations.discard(exchange)

    # -- signals: what we receive, the Pings we send ---------------------------------

    def send_ping(self, remote: Hashable, now: float) -> tuple[ClientExchange, list[Event]]:
        """Send a Ping (7.02, §5.4) to ``remote``.

        The exchange ends with ``ResponseReceived`` carrying the Pong, or, after
        ``ping_timeout``, with ``RequestFailed`` (RequestTimeoutError) followed
        by the connection's end: its requests fail and ``CloseConnection``.
        """
        events: list[Event] = []
        conn = self._connection(remote, events)
        length = self.config.token_length
        token = self._rng.randbytes(length) if length else b""
        while token in conn.pings and length:
            token = self._rng.randbytes(length)
        ping = Message.from_fields(Code.PING, None, None, token, Options(), b"", remote)
        exchange = ClientExchange(ping, remote, token, True, _QUEUED)
        exchange.ping = True
        previous = conn.pings.get(token)
        if previous is not None:  # token_length 0: one Ping at a time, the new one replaces it
            self._cancel_deadline(previous)
            previous.state = _CLIENT[previous.state, _ABANDON]
        conn.pings[token] = exchange
        exchange.deadline_ticket = self._timers.schedule(
            now + self.config.ping_timeout, (_PING_TIMER, exchange)
        )
        self._transmit(exchange, self._encode(ping), now, events)
        return exchange, events

    def _on_signal(
        self, conn: ConnectionState, message: Message, now: float, events: list[Event]
    ) -> None:
        try:
            signal = parse_signal(message)
        except SignalingError as error:
            self._counts["malformed"] += 1
            bad = error.option if message.code is _CSM else None
            self._abort(conn, now, events, str(error), bad)
            return
        if signal is None:
            self._counts["unmatched"] += 1
        elif isinstance(signal, Csm):
            self._on_csm(conn, signal, now, events)
        elif isinstance(signal, Ping):
            self._counts["pings"] += 1
            pong = build_pong(signal.token, custody=signal.custody)
            events.append(Transmit(conn.remote, self._encode(pong)))
        elif isinstance(signal, Pong):
            exchange = conn.pings.pop(signal.token, None)
            if exchange is None and not signal.token and len(conn.pings) == 1:
                # Some peers (libcoap 4.3.1) answer with an empty token instead of
                # echoing ours (§5.4); with one Ping outstanding it can only be its Pong.
                exchange = conn.pings.pop(next(iter(conn.pings)))
            if exchange is None:
                self._counts["unmatched"] += 1
                return
            self._cancel_deadline(exchange)
            exchange.state = _CLIENT[exchange.state, _RESPONSE]
            events.append(ResponseReceived(exchange, message))
        elif isinstance(signal, Release):
            self._on_release(conn, signal, now, events)
        else:
            self._on_abort(conn, signal, now, events)

    def _on_csm(self, conn: ConnectionState, csm: Csm, now: float, events: list[Event]) -> None:
        conn.csm_received = True
        if csm.max_message_size is not None:
            conn.max_message_size = csm.max_message_size
        if csm.block_wise_transfer:
            conn.bert = True
        waiting, conn.waiting = conn.waiting, []
        limit = conn.max_message_size
        for exchange, data in waiting:
            if exchange.state is not _QUEUED:
                continue
            if len(data) > limit:
                self._finish(exchange, _FAIL)
                events.append(RequestFailed(exchange, MessageTooLargeError(len(data), limit)))
            else:
                self._transmit(exchange, data, now, events)

    def _on_release(
        self, conn: ConnectionState, release: Release, now: float, events: list[Event]
    ) -> None:
        text = "the peer released the connection"
        if release.diagnostic:
            text += f": {release.diagnostic}"
        error = ConnectionReleasedError(text, release.alternative_addresses, release.hold_off)
        conn.released = error  # (nothing waits: the peer's CSM came first and flushed it)
        self._close_if_released(conn, now, events)

    def _on_abort(
        self, conn: ConnectionState, abort: Abort, now: float, events: list[Event]
    ) -> None:
        text = "the peer aborted the connection"
        if abort.diagnostic:
            text += f": {abort.diagnostic}"
        error = ConnectionAbortedByPeerError(text, abort.bad_csm_option)
        self._close(conn, error, now, events, "aborted by the peer")

    # -- time ----------------------------------------------------------------------

    def timeout(self, now: float) -> list[Event]:
        """Process every timer due at ``now``: response deadlines and Pong deadlines.

        A request without a response fails with RequestTimeoutError; a Ping
        without a Pong fails the same way and ends its connection (its requests
        fail, ``CloseConnection``).
        """
        events: list[Event] = []
        for exchange in self._deadlines.pop_due(now):
            if exchange.state is _DONE:
                continue
            conn = self._connections.get(exchange.remote)
            self._counts["requests_timed_out"] += 1
            self._finish(exchange, _FAIL)
            timed_out = RequestTimeoutError(1, "no response arrived in time")
            events.append(RequestFailed(exchange, timed_out))
            if conn is not None:
                conn.waiting = [item for item in conn.waiting if item[0] is not exchange]
                self._close_if_released(conn, now, events)
        for ticket, (_, subject) in self._timers.pop_due(now):
            exchange = subject
            if exchange.deadline_ticket != ticket or exchange.state is _DONE:
                continue
            conn = self._connections.get(exchange.remote)
            exchange.state = _CLIENT[exchange.state, _FAIL]
            events.append(RequestFailed(exchange, RequestTimeoutError(1, "no Pong arrived")))
            if conn is not None:
                conn.pings.pop(exchange.token, None)
                dead = ConnectionLostError("no Pong arrived in time: the connection is dead")
                self._close(conn, dead, now, events, "no Pong arrived in time")
        return events
