"""Fuzz target: the server's receive path, bytes in, events and replies out.

The input is a short script of arrivals. Over UDP, a ``Messaging`` gets
datagrams from three remotes, with time moving on between them (so that
piggyback windows close, separate responses are retransmitted and given
up, deduplication entries expire); a minimal synchronous responder answers
every ``RequestReceived`` at once or at the next arrival (a 2.05 with a
payload, an empty answer for No-Response, or a 4.04). Over a stream, a
``StreamMessaging`` gets the frames a ``StreamDecoder`` cuts from the
bytes (or, for WebSocket, the bytes as messages), answered the same way.

``receive``, ``respond`` and ``timeout`` must never raise, whatever the
bytes; every datagram the UDP machine transmits must decode, and a reply
replayed to a duplicate must be the bytes first sent.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import atheris
from common import instrumented, main

with instrumented():
    from coap_trio.codec import decode
    from coap_trio.errors import FrameTooLarge
    from coap_trio.message import Message
    from coap_trio.numbers.codes import Code
    from coap_trio.protocol.exchanges import RequestReceived, ServerExchange, Transmit
    from coap_trio.protocol.framing import StreamDecoder
    from coap_trio.protocol.messaging import Messaging
    from coap_trio.protocol.stream_messaging import StreamMessaging

REMOTES = (("192.0.2.1", 5683), ("192.0.2.2", 40000), ("2001:db8::1", 5683))


class Responder:
    """Answers requests; the input decides when and how."""

    def __init__(self, machine: Messaging | StreamMessaging, provider: atheris.FuzzedDataProvider):
        self.machine = machine
        self.provider = provider
        self.later: list[ServerExchange] = []
        self.sent: dict[tuple[object, bytes], bytes] = {}

    def answer(self, exchange: ServerExchange, now: float) -> list[object]:
        choice = self.provider.ConsumeIntInRange(0, 3)
        if choice == 0:
            response = None
        elif choice == 1:
            response = Message(code=Code.NOT_FOUND)
        else:
            response = Message(code=Code.CONTENT, payload=b"x" * (choice * 7))
        return list(self.machine.respond(exchange, response, now))

    def handle(self, events: list[object], now: float) -> None:
        pending = list(events)
        while pending:
            event = pending.pop(0)
            if isinstance(event, RequestReceived):
                if self.provider.ConsumeBool():
                    self.later.append(event.exchange)
                else:
                    pending += self.answer(event.exchange, now)
            elif isinstance(event, Transmit) and isinstance(self.machine, Messaging):
                decode(event.data)  # every datagram sent must decode

    def answer_later(self, now: float) -> None:
        later, self.later = self.later, []
        for exchange in later:
            self.handle(self.answer(exchange, now), now)


def fuzz_udp(provider: atheris.FuzzedDataProvider) -> None:
    machine = Messaging(None, random.Random(0))
    responder = Responder(machine, provider)
    now = 1000.0
    for _ in range(provider.ConsumeIntInRange(1, 8)):
        remote = REMOTES[provider.ConsumeIntInRange(0, 2)]
        datagram = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64))
        repeat = provider.ConsumeBool()
        events = machine.receive(datagram, remote, now)
        responder.handle(events, now)
        if repeat:  # the same datagram again: a duplicate gets the same reply, or none
            first = [e.data for e in events if isinstance(e, Transmit)]
            again = machine.receive(datagram, remote, now)
            replayed = [e.data for e in again if isinstance(e, Transmit)]
            assert all(data in first for data in replayed) or not first, (first, replayed)
            responder.handle(again, now)
        responder.answer_later(now)
        now += provider.ConsumeIntInRange(0, 300) / 4
        deadline = machine.next_deadline()
        while deadline is not None and deadline <= now:
            responder.handle(machine.timeout(deadline), deadline)
            deadline = machine.next_deadline()


def fuzz_stream(provider: atheris.FuzzedDataProvider, websocket: bool) -> None:
    machine = StreamMessaging(None, random.Random(0), websocket=websocket)
    responder = Responder(machine, provider)
    now = 1000.0
    remote = REMOTES[0]
    responder.handle(machine.connection_made(remote, now), now)
    decoder = StreamDecoder(1152)
    for _ in range(provider.ConsumeIntInRange(1, 6)):
        chunk = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64))
        if websocket:
            frames = [chunk]
        else:
            try:
                frames = decoder.feed(chunk)
            except FrameTooLarge:
                responder.handle(machine.abort(remote, now, "frame too large"), now)
                return
        for frame in frames:
            responder.handle(machine.receive(frame, remote, now), now)
        responder.answer_later(now)
        now += provider.ConsumeIntInRange(0, 300) / 4
        deadline = machine.next_deadline()
        while deadline is not None and deadline <= now:
            responder.handle(machine.timeout(deadline), deadline)
            deadline = machine.next_deadline()
    responder.handle(machine.connection_lost(remote, None, now), now)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    kind = provider.ConsumeIntInRange(0, 3)
    if kind < 2:
        fuzz_udp(provider)
    else:
        fuzz_stream(provider, websocket=kind == 3)


if __name__ == "__main__":
    main(test_one_input)
