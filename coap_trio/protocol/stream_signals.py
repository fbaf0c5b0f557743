"""Signaling in the RFC 8323 messaging machine: Ping/Pong, CSM, Release, Abort (§5).

Owns what the machine does with the 7.xx signals it receives (a CSM updates
the connection's settings and lets requests that waited for it go; a Ping
is answered with a Pong; a Pong ends our Ping; Release and Abort end the
connection) and the Pings it sends (:meth:`StreamSignals.send_ping`, with a
Pong deadline on the timer heap). Mixed into
:class:`~coap_trio.protocol.stream_messaging.StreamMessaging`, whose state
and helpers it uses; must not know about tasks or sockets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from ..errors import (
    ConnectionAbortedByPeerError,
    ConnectionLostError,
    ConnectionReleasedError,
    MessageTooLargeError,
)
from ..message import Message
from ..numbers.codes import Code
from ..options import Options
from .exchanges import (
    ClientExchange,
    ClientState,
    Event,
    RequestFailed,
    ResponseReceived,
    Transmit,
)
from .signaling import (
    Abort,
    Csm,
    Ping,
    Pong,
    Release,
    SignalingError,
    build_pong,
    parse_signal,
)

if TYPE_CHECKING:
    from .stream_state import ConnectionState, StreamMessagingConfig
    from .timers import TimerHeap

__all__ = ["PING_TIMER", "StreamSignals"]

#: The kind of a Pong deadline on the timer heap.
PING_TIMER = 0
_CSM = Code.CSM


class StreamSignals:
    """Signaling steps of :class:`StreamMessaging` (see the module docstring)."""

    config: StreamMessagingConfig
    _counts: dict[str, int]
    _rng: random.Random
    _timers: TimerHeap[tuple[int, Any]]
    _encode: Callable[[Message], bytes]

    if TYPE_CHECKING:  # provided by StreamMessaging

        def _connection(self, remote: Hashable, events: list[Event]) -> ConnectionState: ...
        def _cancel_deadline(self, exchange: ClientExchange) -> None: ...
        def _finish(self, exchange: ClientExchange) -> None: ...
        def _transmit(
            self, exchange: ClientExchange, data: bytes, now: float, events: list[Event]
        ) -> None: ...
        def _close_if_released(
            self, conn: ConnectionState, now: float, events: list[Event]
        ) -> None: ...
        def _abort(
            self,
            conn: ConnectionState,
            now: float,
            events: list[Event],
            diagnostic: str,
            bad_csm_option: int | None = None,
        ) -> None: ...
        def _close(
            self,
            conn: ConnectionState,
            error: ConnectionLostError,
            now: float,
            events: list[Event],
            reason: str | None,
        ) -> None: ...

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
        exchange = ClientExchange(ping, remote, token, True)
        exchange.ping = True
        previous = conn.pings.get(token)
        if previous is not None:  # token_length 0: one Ping at a time, the new one replaces it
            self._cancel_deadline(previous)
            previous.state = ClientState.DONE
        conn.pings[token] = exchange
        exchange.deadline_ticket = self._timers.schedule(
            now + self.config.ping_timeout, (PING_TIMER, exchange)
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
            exchange.state = ClientState.DONE
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
            if exchange.state is not ClientState.QUEUED:
                continue
            if len(data) > limit:
                self._finish(exchange)
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
