"""The server half of the messaging machine: answering requests we received.

Owns the received requests still being handled (by (remote, MID), bounded by
``max_pending_requests``), the piggyback window (``ack_delay``: a CON
answered within it gets its response in the ACK; after it, an empty ACK
goes out and the response becomes a separate one) and the choice of message
type and ID for responses. Mixed into
:class:`~coap_trio.protocol.messaging.Messaging`, whose state it shares;
must not know about tasks, sockets or resources.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from ..codec import encode, encode_empty
from ..errors import LocalProtocolError, NetworkError
from ..message import Message
from ..numbers.types import Type
from .config import MessagingConfig
from .dedup import DedupStore
from .exchanges import Event, RequestReceived, ResponseFailed, ServerExchange, ServerState, Transmit
from .midalloc import MessageIdAllocator
from .timers import TimerHeap

__all__ = ["ACK_DELAY", "ServerSide"]

#: The timer kind of the piggyback window.
ACK_DELAY = 1
#: ``ServerExchange.ack_ticket`` of a piggyback window kept in the FIFO (not the heap).
ACK_IN_FIFO = -1

_CON, _NON, _ACK, _RST = Type.CON, Type.NON, Type.ACK, Type.RST


class ServerSide:
    """Request handling state and steps of :class:`Messaging` (see the module docstring)."""

    config: MessagingConfig
    _pending: dict[tuple[Hashable, int], ServerExchange]
    #: Piggyback windows in deadline order: (when the empty ACK is due, exchange).
    #: They all last ``ack_delay``, so arrival order is deadline order and no
    #: heap entry (push, cancel, pop) is needed per request; an entry whose
    #: exchange was answered meanwhile is skipped when it reaches the front.
    _ack_fifo: deque[tuple[float, ServerExchange]]
    _timers: TimerHeap[tuple[int, Any]]
    _dedup: DedupStore
    _mids: MessageIdAllocator
    _counts: dict[str, int]

    # Provided by Messaging:
    def _seen_con(self, remote: Hashable, mid: int, reply: bytes, now: float) -> None: ...
    def _seen_non(self, remote: Hashable, mid: int, now: float) -> None: ...
    def _reset(
        self, remote: Hashable, mid: int, events: list[Event], record: float | None = None
    ) -> None: ...
    def _send_con(self, key: tuple[Hashable, int], data: bytes, owner: Any, now: float) -> Any: ...
    def _remember_non(self, key: tuple[Hashable, int], owner: Any, now: float) -> None: ...
    def _cancel_transmission(self, transmission: Any) -> None: ...
    def _inherit_transmission(self, new: Any, old: Any, now: float) -> None: ...

    def _on_request(
        self,
        message: Message,
        remote: Hashable,
        mid: int,
        con: bool,
        now: float,
        events: list[Event],
    ) -> None:
        """A new request arrived: track it and hand it to the driver (or refuse it when full)."""
        if len(self._pending) >= self.config.max_pending_requests:
            self._counts["overloaded"] += 1
            if con:
                self._reset(remote, mid, events)
            return
        exchange = ServerExchange(message, remote)
        self._pending[(remote, mid)] = exchange
        if con:
            due = now + self.config.ack_delay
            fifo = self._ack_fifo
            if not fifo or fifo[-1][0] <= due:
                fifo.append((due, exchange))
                exchange.ack_ticket = ACK_IN_FIFO
            else:  # the caller's clock went back: keep the order right with the heap
                exchange.ack_ticket = self._timers.schedule(due, (ACK_DELAY, exchange))
        events.append(RequestReceived(exchange))

    def _next_ack_due(self) -> float | None:
        """When the earliest piggyback window in the FIFO still open ends (None: none)."""
        fifo = self._ack_fifo
        while fifo:
            due, exchange = fifo[0]
            if exchange.ack_ticket == ACK_IN_FIFO:
                return due
            fifo.popleft()  # answered (or forgotten) in time
        return None

    def _acks_due(self, now: float, events: list[Event]) -> None:
        """Send the empty ACKs of the FIFO's piggyback windows that ended by ``now``."""
        fifo = self._ack_fifo
        while fifo and fifo[0][0] <= now:
            _, exchange = fifo.popleft()
            self._ack_due(exchange, ACK_IN_FIFO, now, events)

    def _cancel_ack(self, exchange: ServerExchange) -> None:
        """Close the piggyback window of ``exchange`` (a FIFO entry is skipped later)."""
        if exchange.ack_ticket > 0:
            self._timers.cancel(exchange.ack_ticket)
        exchange.ack_ticket = 0

    def _ack_due(
        self, exchange: ServerExchange, ticket: int, now: float, events: list[Event]
    ) -> None:
        """The piggyback window of ``exchange`` passed: send the empty ACK now."""
        if exchange.ack_ticket == ticket and exchange.state is ServerState.PENDING:
            exchange.ack_ticket = 0
            self._pending.pop((exchange.remote, exchange.mid), None)
            exchange.state = ServerState.ACKNOWLEDGED
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
        if exchange.state is not ServerState.PENDING and exchange.state is not (
            ServerState.ACKNOWLEDGED
        ):
            raise LocalProtocolError(f"{exchange!r} was already answered")
        events: list[Event] = []
        remote = exchange.remote
        key = (remote, exchange.mid)
        if exchange.state is ServerState.PENDING:
            self._pending.pop(key, None)
            self._cancel_ack(exchange)
            if exchange.con:
                if response is None:
                    data = encode_empty(_ACK, exchange.mid)
                else:
                    data = self._encode_response(response, _ACK, exchange.mid, exchange.token)
                self._seen_con(remote, exchange.mid, data, now)
                events.append(Transmit(remote, data))
                exchange.state = ServerState.DONE
                return events
            self._seen_non(remote, exchange.mid, now)
            exchange.state = ServerState.DONE
            if response is not None:
                mtype = response.mtype if response.mtype in (_CON, _NON) else _NON
                self._send_new(exchange, response, mtype, now, events)
            return events
        # ACKNOWLEDGED: a separate response.
        exchange.state = ServerState.DONE
        if response is not None:
            mtype = response.mtype if response.mtype in (_CON, _NON) else _CON
            self._send_new(exchange, response, mtype, now, events)
        return events

    def _send_new(
        self,
        exchange: ServerExchange,
        response: Message,
        mtype: Type,
        now: float,
        events: list[Event],
    ) -> None:
        remote = exchange.remote
        mid = self._mids.allocate(remote, now)
        if mid is None:
            self._counts["overloaded"] += 1
            events.append(ResponseFailed(exchange, NetworkError("no free message ID")))
            return
        data = self._encode_response(response, mtype, mid, exchange.token)
        key = (remote, mid)
        if mtype is _CON:
            exchange.state = ServerState.RESPONDING
            exchange.transmission = self._send_con(key, data, exchange, now)
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
        if exchange.state in (ServerState.PENDING, ServerState.ACKNOWLEDGED):
            raise LocalProtocolError("answer the registration with respond() first")
        previous = exchange.transmission
        if previous is not None:
            self._cancel_transmission(previous)
            exchange.transmission = None
            confirmable = True
        events: list[Event] = []
        self._send_new(exchange, notification, _CON if confirmable else _NON, now, events)
        if previous is not None and exchange.transmission is not None:
            self._inherit_transmission(exchange.transmission, previous, now)
        return events

    @staticmethod
    def _encode_response(response: Message, mtype: Type, mid: int, token: bytes) -> bytes:
        return encode(
            Message.from_fields(
                response.code, mtype, mid, token, response.opt, response.payload, None
            )
        )

    def forget(self, exchange: ServerExchange) -> None:
        """Drop a received request that will not be handled (e.g. a full queue).

        Its message ID is not recorded, so a retransmission is processed as
        new, not as a duplicate with nothing to replay.
        """
        key = (exchange.remote, exchange.mid)
        if self._pending.get(key) is exchange:
            del self._pending[key]
        self._cancel_ack(exchange)
        exchange.state = ServerState.DONE
