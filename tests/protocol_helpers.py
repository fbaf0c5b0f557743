"""Helpers for testing the sans-I/O messaging layer (h11 style).

:class:`Pair` wires a client :class:`~coap_trio.protocol.messaging.Messaging`
and a server one (each with a seeded :class:`random.Random`) through a fake
network: every ``Transmit`` is logged in :attr:`Pair.wire`, passed through an
optional filter that may drop, duplicate or delay it, and delivered to the
other side. Time is a float the pair keeps; :meth:`Pair.run_until` calls
``timeout()`` on both sides at each ``next_deadline()`` (and delivers delayed
datagrams and runs scheduled application actions) with a bounded loop.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from coap_trio.codec import decode, encode
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.options import Options
from coap_trio.protocol.config import MessagingConfig
from coap_trio.protocol.exchanges import (
    ClientExchange,
    Event,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    ServerExchange,
    Transmit,
)
from coap_trio.protocol.messaging import Messaging

CLIENT = "client"
SERVER = "server"

#: (sender, datagram) -> the delays of the copies to deliver (empty: drop it).
Filter = Callable[[str, bytes], Sequence[float]]


def other(side: str) -> str:
    return SERVER if side == CLIENT else CLIENT


def make(
    mtype: Type,
    code: int,
    mid: int,
    token: bytes = b"",
    payload: bytes = b"",
    options: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """The datagram for a message built from raw fields."""
    return encode(
        Message(
            code=code,
            mtype=mtype,
            mid=mid,
            token=token,
            payload=payload,
            opt=Options(options),
        )
    )


def empty(mtype: Type, mid: int) -> bytes:
    """An Empty message (0.00) of type ``mtype``."""
    return make(mtype, Code.EMPTY, mid)


def transmits(events: Sequence[Event]) -> list[Transmit]:
    return [e for e in events if isinstance(e, Transmit)]


def decoded(events: Sequence[Event]) -> list[Message]:
    """The messages of the Transmit events, decoded."""
    return [decode(e.data) for e in transmits(events)]


def others(events: Sequence[Event]) -> list[Event]:
    """The events that are not Transmit."""
    return [e for e in events if not isinstance(e, Transmit)]


def get(path: str = "x", mtype: Type | None = None, **kw: Any) -> Message:
    """A GET request for ``/path``."""
    return Message(code=Code.GET, mtype=mtype, uri_path=(path,), **kw)


class Datagram(NamedTuple):
    time: float
    sender: str
    data: bytes

    @property
    def message(self) -> Message:
        return decode(self.data)


def drop_first(sender: str, predicate: Callable[[Message], bool], times: int = 1) -> Filter:
    """A filter dropping the first ``times`` datagrams from ``sender`` matching ``predicate``."""
    left = [times]

    def filter_(side: str, data: bytes) -> Sequence[float]:
        if side == sender and left[0] > 0 and predicate(decode(data)):
            left[0] -= 1
            return ()
        return (0.0,)

    return filter_


def drop_all(sender: str, predicate: Callable[[Message], bool] = lambda m: True) -> Filter:
    """A filter dropping every datagram from ``sender`` matching ``predicate``."""

    def filter_(side: str, data: bytes) -> Sequence[float]:
        if side == sender and predicate(decode(data)):
            return ()
        return (0.0,)

    return filter_


class Pair:
    """A client and a server Messaging connected by a fake network."""

    def __init__(
        self,
        client_config: MessagingConfig | None = None,
        server_config: MessagingConfig | None = None,
        *,
        seed: int = 0,
        filter: Filter | None = None,
        on_request: Callable[[Pair, RequestReceived], None] | None = None,
    ) -> None:
        self.client = Messaging(client_config, random.Random(seed))
        self.server = Messaging(server_config, random.Random(seed + 1_000_003))
        self.now = 0.0
        self.filter = filter
        #: Called for each RequestReceived of the server (None: the test answers itself).
        self.on_request = on_request
        #: Every datagram transmitted, before the filter.
        self.wire: list[Datagram] = []
        #: Every datagram handed to a receiver: (time, receiver, data).
        self.delivered: list[Datagram] = []
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self._flight: list[tuple[float, int, str, bytes]] = []
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._pumping = False

    # -- plumbing -----------------------------------------------------------------

    def endpoint(self, side: str) -> Messaging:
        return self.client if side == CLIENT else self.server

    def handle(self, side: str, events: Sequence[Event]) -> None:
        """Perform the events ``side`` returned: transmit datagrams, log the rest."""
        log = self.client_events if side == CLIENT else self.server_events
        for event in events:
            if isinstance(event, Transmit):
                assert event.remote == other(side), event
                self.wire.append(Datagram(self.now, side, event.data))
                delays = (0.0,) if self.filter is None else self.filter(side, event.data)
                for delay in delays:
                    self._seq += 1
                    heapq.heappush(
                        self._flight, (self.now + delay, self._seq, other(side), event.data)
                    )
            else:
                log.append(event)
                if isinstance(event, RequestReceived) and self.on_request is not None:
                    self.on_request(self, event)
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                if self._flight and self._flight[0][0] <= self.now:
                    _, _, receiver, data = heapq.heappop(self._flight)
                    self.delivered.append(Datagram(self.now, receiver, data))
                    events = self.endpoint(receiver).receive(data, other(receiver), self.now)
                    self.handle(receiver, events)
                elif self._actions and self._actions[0][0] <= self.now:
                    _, _, action = heapq.heappop(self._actions)
                    action()
                else:
                    break
        finally:
            self._pumping = False

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` (an application step) at time ``when``."""
        self._seq += 1
        heapq.heappush(self._actions, (when, self._seq, action))

    def inject(self, receiver: str, data: bytes) -> list[Event]:
        """Hand ``data`` to ``receiver`` as if the other side sent it; returns its events
        (which are also performed)."""
        events = self.endpoint(receiver).receive(data, other(receiver), self.now)
        self.handle(receiver, events)
        return list(events)

    # -- application calls ----------------------------------------------------------

    def request(self, message: Message | None = None) -> ClientExchange:
        exchange, events = self.client.send_request(message or get(), SERVER, self.now)
        self.handle(CLIENT, events)
        return exchange

    def respond(self, exchange: ServerExchange, response: Message | None) -> list[Event]:
        events = self.server.respond(exchange, response, self.now)
        self.handle(SERVER, events)
        return events

    def abandon(self, exchange: ClientExchange) -> list[Event]:
        events = self.client.abandon(exchange, self.now)
        self.handle(CLIENT, events)
        return events

    # -- time -----------------------------------------------------------------------

    def _next(self) -> float | None:
        candidates = [
            d for d in (self.client.next_deadline(), self.server.next_deadline()) if d is not None
        ]
        if self._flight:
            candidates.append(self._flight[0][0])
        if self._actions:
            candidates.append(self._actions[0][0])
        return min(candidates, default=None)

    def run_until(self, t: float, max_steps: int = 100_000) -> None:
        """Advance time to ``t``, firing every timer, delivery and action due on the way."""
        for _ in range(max_steps):
            when = self._next()
            if when is None or when > t:
                break
            self.now = max(self.now, when)
            self.handle(CLIENT, self.client.timeout(self.now))
            self.handle(SERVER, self.server.timeout(self.now))
            self._pump()
        else:  # pragma: no cover - a livelock is a test failure
            raise AssertionError(f"run_until({t}) did not settle in {max_steps} steps")
        self.now = max(self.now, t)

    def advance(self, dt: float) -> None:
        self.run_until(self.now + dt)

    # -- inspection -----------------------------------------------------------------

    def sent_by(self, side: str) -> list[Datagram]:
        return [d for d in self.wire if d.sender == side]

    def outcome(self, exchange: ClientExchange) -> list[Event]:
        """The client events (ResponseReceived / RequestFailed) about ``exchange``."""
        return [
            e
            for e in self.client_events
            if isinstance(e, ResponseReceived | RequestFailed) and e.exchange is exchange
        ]

    def received_requests(self) -> list[RequestReceived]:
        return [e for e in self.server_events if isinstance(e, RequestReceived)]


def drive(
    messaging: Messaging, until: float, max_steps: int = 1_000_000
) -> list[tuple[float, Event]]:
    """Call ``timeout`` on a lone Messaging at each deadline up to ``until``;
    returns every event with the time it happened."""
    out: list[tuple[float, Event]] = []
    for _ in range(max_steps):
        when = messaging.next_deadline()
        if when is None or when > until:
            return out
        out.extend((when, event) for event in messaging.timeout(when))
    raise AssertionError(f"drive({until}) did not settle")  # pragma: no cover
