"""The messaging machines' transition tables, walked.

Each machine moves its exchanges only through its tables
(``CLIENT_TRANSITIONS``, ``SERVER_TRANSITIONS`` in
``coap_trio.protocol.messaging`` and ``coap_trio.protocol.stream_messaging``).
Here a client machine and a server machine talk over a simulated link
(datagrams lost, duplicated and reordered for UDP; frames in order, with
connections that break, abort and release for streams) under random
operations of their drivers, and:

- every state change seen on any exchange is a move of the table (also
  when the secure session with the peer fails: ``peer_error`` with a
  ``RequestError`` ends every exchange with it, queued ones included);
- a seeded walk takes every entry of every table at least once (the moves
  the machines look up once at import, on their hot paths, are seen as the
  state changes they make);
- Hypothesis finds no operation sequence that makes a machine take a move
  outside its table (a ``KeyError`` there) or raise anything else.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import HandshakeError, LocalProtocolError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.protocol import messaging, stream_messaging
from coap_trio.protocol.exchanges import (
    ClientExchange,
    ClientState,
    CloseConnection,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerExchange,
    StreamClientState,
    Transmit,
)
from coap_trio.protocol.framing import encode_stream
from coap_trio.protocol.messaging import Messaging
from coap_trio.protocol.signaling import build_release
from coap_trio.protocol.stream_messaging import StreamMessaging

CLIENT, SERVER = "client", "server"
#: An option number nobody recognizes, and critical (odd): a response carrying it is rejected.
UNKNOWN_CRITICAL = 65001

Table = dict[tuple[Any, Any], Any]


class Recording(dict[Any, Any]):
    """A transition table that remembers which of its entries were looked up as moves."""

    def __init__(self, table: Table, used: set[tuple[Any, Any]]) -> None:
        super().__init__(table)
        self.used = used

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        self.used.add(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            self.used.add(key)
        return super().get(key, default)


class Tracker:
    """Every exchange of a walk, and the state changes they made."""

    def __init__(self, tables: dict[type[enum.Enum], Table]) -> None:
        #: For each state type, the (state, next state) pairs its table allows.
        self.allowed = {
            kind: {(key[0], target) for key, target in table.items()}
            for kind, table in tables.items()
        }
        #: The same, or two moves in one driver call (a separate CON response:
        #: RESPOND, then SEND_CON).
        self.reachable = {
            kind: pairs | {(a, d) for a, b in pairs for c, d in pairs if b is c}
            for kind, pairs in self.allowed.items()
        }
        self.exchanges: list[ClientExchange | ServerExchange] = []
        self.states: list[Any] = []
        #: (state, next state) pairs seen, with the events that came with them.
        self.seen: set[tuple[Any, Any]] = set()
        self.answered: set[tuple[Any, Any]] = set()

    def start(self) -> None:
        """A new walk, with new machines: forget the exchanges of the last one."""
        self.exchanges = []
        self.states = []

    def add(self, exchange: ClientExchange | ServerExchange) -> None:
        self.exchanges.append(exchange)
        self.states.append(exchange.state)

    def check(self, events: list[Event]) -> None:
        answered = {id(e.exchange) for e in events if type(e) is ResponseReceived}
        for index, exchange in enumerate(self.exchanges):
            before, after = self.states[index], exchange.state
            if before is after:
                continue
            assert type(before) is type(after), (exchange, before, after)
            move = (before, after)
            assert move in self.reachable[type(before)], f"{exchange!r}: {before!r} -> {after!r}"
            self.seen.add(move)
            if id(exchange) in answered:
                self.answered.add(move)
            self.states[index] = after


def request(rng: random.Random, *, large: int = 0) -> Message:
    message = Message(code=Code.GET, mtype=rng.choice([Type.CON, Type.CON, Type.NON]))
    if rng.random() < 0.35:
        message.opt.observe = 0
    if large:
        message.code = Code.FETCH
        message.payload = b"x" * large
    return message


def response(rng: random.Random, exchange: ServerExchange, number: int) -> Message | None:
    if rng.random() < 0.08:
        return None
    answer = Message(code=Code.CONTENT, payload=b"r")
    if exchange.request.opt.observe == 0 and rng.random() < 0.8:
        answer.opt.observe = number
    answer.mtype = rng.choice([None, Type.CON, Type.NON])
    return answer


def notification(rng: random.Random, number: int) -> Message:
    roll = rng.random()
    if roll < 0.1:
        return Message(code=Code.NOT_FOUND)  # the last one
    note = Message(code=Code.CONTENT, payload=b"n")
    note.opt.observe = number
    if roll < 0.18:
        note.opt.add(UNKNOWN_CRITICAL, b"")  # the client rejects it
    return note


# -- UDP ------------------------------------------------------------------------------------------


def walk_udp(rng: random.Random, steps: int, tracker: Tracker) -> None:
    """Random operations on a UDP client and server over a lossy, duplicating link."""
    tracker.start()
    client = Messaging(rng=random.Random(rng.random()))
    server = Messaging(rng=random.Random(rng.random()))
    machines: dict[Hashable, Messaging] = {CLIENT: client, SERVER: server}
    flying: list[tuple[Hashable, bytes]] = []  # (sender, datagram)
    now = 0.0
    number = 2

    def carry(sender: Hashable, events: list[Event]) -> None:
        for event in events:
            if type(event) is Transmit:
                flying.append((sender, event.data))
            elif type(event) is RequestReceived:
                tracker.add(event.exchange)
        tracker.check(events)

    def client_exchanges() -> list[ClientExchange]:
        return [e for e in tracker.exchanges if isinstance(e, ClientExchange)]

    def server_exchanges() -> list[ServerExchange]:
        return [e for e in tracker.exchanges if isinstance(e, ServerExchange)]

    for _ in range(steps):
        roll = rng.random()
        if roll < 0.14:
            exchange, events = client.send_request(request(rng), SERVER, now)
            tracker.add(exchange)
            carry(CLIENT, events)
        elif roll < 0.17:
            exchange, events = client.send_ping(SERVER, now)
            tracker.add(exchange)
            carry(CLIENT, events)
        elif roll < 0.45 and flying:
            sender, data = flying.pop(rng.randrange(len(flying)))
            fate = rng.random()
            if fate < 0.12:
                continue  # lost
            if fate < 0.2:
                flying.append((sender, data))  # duplicated
            receiver = CLIENT if sender == SERVER else SERVER
            carry(receiver, machines[receiver].receive(data, sender, now))
        elif roll < 0.6:
            waiting = [e for e in server_exchanges() if e.state.name in ("PENDING", "ACKNOWLEDGED")]
            if waiting:
                served = rng.choice(waiting)
                number += 1
                carry(SERVER, server.respond(served, response(rng, served, number), now))
        elif roll < 0.72:
            answered = [e for e in server_exchanges() if e.state.name in ("DONE", "RESPONDING")]
            observed = [e for e in answered if e.request.opt.observe == 0]
            if observed:
                number += 1
                carry(
                    SERVER,
                    server.notify(
                        rng.choice(observed),
                        notification(rng, number),
                        now,
                        confirmable=rng.random() < 0.5,
                    ),
                )
        elif roll < 0.78:
            mine = client_exchanges()
            if mine:
                carry(CLIENT, client.abandon(rng.choice(mine), now))
        elif roll < 0.81:
            theirs = server_exchanges()
            if theirs:
                server.forget(rng.choice(theirs))
                tracker.check([])
        elif roll < 0.82:
            carry(CLIENT, client.peer_error(SERVER, ConnectionRefusedError(), now))
        elif roll < 0.83:
            # The secure session with the peer failed: every exchange with it ends.
            side = rng.choice([CLIENT, SERVER])
            peer = SERVER if side == CLIENT else CLIENT
            carry(side, machines[side].peer_error(peer, HandshakeError("walked", 40), now))
        else:
            now += rng.choice([0.05, 0.3, 1.0, 3.0, 20.0, 100.0, 300.0])
            carry(CLIENT, client.timeout(now))
            carry(SERVER, server.timeout(now))


# -- streams --------------------------------------------------------------------------------------


def walk_stream(rng: random.Random, steps: int, tracker: Tracker) -> None:
    """Random operations on an RFC 8323 client and server over one connection at a time."""
    tracker.start()
    client = StreamMessaging(rng=random.Random(rng.random()))
    server = StreamMessaging(
        rng=random.Random(rng.random()), max_message_size=rng.choice([1152, 1600, 8000])
    )
    machines: dict[Hashable, StreamMessaging] = {CLIENT: client, SERVER: server}
    #: Frames in order per direction, by sender; None: the sender closed the connection.
    queues: dict[Hashable, list[bytes | None]] = {CLIENT: [], SERVER: []}
    now = 0.0
    number = 2

    def lose_connection() -> None:
        queues[CLIENT].clear()
        queues[SERVER].clear()
        carry(CLIENT, client.connection_lost(SERVER, ConnectionResetError(), now))
        carry(SERVER, server.connection_lost(CLIENT, ConnectionResetError(), now))

    def carry(sender: Hashable, events: list[Event]) -> None:
        for event in events:
            if type(event) is Transmit:
                queues[sender].append(event.data)
            elif type(event) is CloseConnection:
                queues[sender].append(None)
            elif type(event) is RequestReceived:
                tracker.add(event.exchange)
        tracker.check(events)

    def server_exchanges() -> list[ServerExchange]:
        return [e for e in tracker.exchanges if isinstance(e, ServerExchange)]

    for _ in range(steps):
        roll = rng.random()
        if roll < 0.16:
            large = rng.choice([0, 0, 0, 1400, 3000])
            exchange, events = client.send_request(request(rng, large=large), SERVER, now)
            tracker.add(exchange)
            carry(CLIENT, events)
        elif roll < 0.19:
            exchange, events = client.send_ping(SERVER, now)
            tracker.add(exchange)
            carry(CLIENT, events)
        elif roll < 0.5:
            sender = rng.choice([CLIENT, SERVER])
            if queues[sender]:
                data = queues[sender].pop(0)
                if data is None:
                    lose_connection()
                else:
                    receiver = CLIENT if sender == SERVER else SERVER
                    carry(receiver, machines[receiver].receive(data, sender, now))
        elif roll < 0.63:
            waiting = [e for e in server_exchanges() if e.state.name == "PENDING"]
            if waiting:
                served = rng.choice(waiting)
                number += 1
                carry(SERVER, server.respond(served, response(rng, served, number), now))
        elif roll < 0.72:
            observed = [
                e
                for e in server_exchanges()
                if e.state.name == "DONE" and e.request.opt.observe == 0
            ]
            if observed:
                number += 1
                carry(SERVER, server.notify(rng.choice(observed), notification(rng, number), now))
        elif roll < 0.78:
            mine = [e for e in tracker.exchanges if isinstance(e, ClientExchange)]
            if mine:
                carry(CLIENT, client.abandon(rng.choice(mine), now))
        elif roll < 0.8:
            theirs = server_exchanges()
            if theirs:
                server.forget(rng.choice(theirs))
                tracker.check([])
        elif roll < 0.82:
            lose_connection()
        elif roll < 0.84:
            carry(SERVER, server.abort(CLIENT, now, "walked"))
        elif roll < 0.86 and server.connected(CLIENT):
            queues[SERVER].append(encode_stream(build_release()))
        else:
            now += rng.choice([0.5, 5.0, 31.0, 300.0])
            carry(CLIENT, client.timeout(now))
            carry(SERVER, server.timeout(now))


# -- the tests ------------------------------------------------------------------------------------

Walk = Callable[[random.Random, int, Tracker], None]


def tables_of(module: Any) -> dict[type[enum.Enum], Table]:
    """A machine's two tables, by the state type each moves. (Kept apart: states and
    inputs are IntEnums, so a client key and a server key can compare equal.)"""
    return {
        next(iter(table))[0].__class__: table
        for table in (module.CLIENT_TRANSITIONS, module.SERVER_TRANSITIONS)
    }


#: Moves a machine makes through a constant looked up at import (its hot path);
#: a walk must show the state change each makes instead.
HOT_MOVES = {
    messaging: {(ClientState.QUEUED, messaging.ClientInput.TRANSMIT)},
    stream_messaging: {
        (StreamClientState.QUEUED, stream_messaging.StreamClientInput.TRANSMIT),
        (StreamClientState.SENT, stream_messaging.StreamClientInput.RESPONSE),
    },
}


@pytest.mark.parametrize(
    ("module", "walk"), [(messaging, walk_udp), (stream_messaging, walk_stream)], ids=["udp", "tcp"]
)
def test_a_seeded_walk_takes_every_move_of_the_tables(
    monkeypatch: pytest.MonkeyPatch, module: Any, walk: Walk
) -> None:
    used_client: set[tuple[Any, Any]] = set()
    used_server: set[tuple[Any, Any]] = set()
    monkeypatch.setattr(module, "_CLIENT", Recording(module.CLIENT_TRANSITIONS, used_client))
    monkeypatch.setattr(module, "_SERVER", Recording(module.SERVER_TRANSITIONS, used_server))
    tracker = Tracker(tables_of(module))
    for seed in range(40):
        walk(random.Random(seed), 400, tracker)
    for state, move in HOT_MOVES[module]:
        target = module.CLIENT_TRANSITIONS[state, move]
        seen = tracker.answered if move.name == "RESPONSE" else tracker.seen
        assert (state, target) in seen
        used_client.add((state, move))
    assert set(module.CLIENT_TRANSITIONS) - used_client == set()
    assert set(module.SERVER_TRANSITIONS) - used_server == set()


@pytest.mark.parametrize(
    ("module", "walk"), [(messaging, walk_udp), (stream_messaging, walk_stream)], ids=["udp", "tcp"]
)
@settings(deadline=None, max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 300))
def test_no_operation_sequence_leaves_the_tables(
    module: Any, walk: Walk, seed: int, steps: int
) -> None:
    walk(random.Random(seed), steps, Tracker(tables_of(module)))


@pytest.mark.parametrize("module", [messaging, stream_messaging], ids=["udp", "tcp"])
def test_every_state_is_reached_and_only_done_has_no_way_out(module: Any) -> None:
    for table in (module.CLIENT_TRANSITIONS, module.SERVER_TRANSITIONS):
        states = {key[0] for key in table} | set(table.values())
        kind = next(iter(states)).__class__
        assert states == set(kind), kind  # every member is used by its machine
        starts = {key[0] for key in table}
        if table is module.CLIENT_TRANSITIONS:
            assert starts == states - {kind.DONE}  # a finished request never moves again


@pytest.mark.parametrize("machine", [Messaging, StreamMessaging], ids=["udp", "tcp"])
def test_illegal_driver_calls_are_local_protocol_errors(machine: type[Any]) -> None:
    client, server = machine(rng=random.Random(1)), machine(rng=random.Random(2))
    _, events = client.send_request(Message(code=Code.GET), SERVER, 0.0)
    received: list[Event] = []
    for data in [e.data for e in events if type(e) is Transmit]:
        received += server.receive(data, CLIENT, 0.0)
    [exchange] = [e.exchange for e in received if type(e) is RequestReceived]
    with pytest.raises(LocalProtocolError):
        server.notify(exchange, Message(code=Code.CONTENT), 0.0)
    server.respond(exchange, Message(code=Code.CONTENT), 0.0)
    with pytest.raises(LocalProtocolError):
        server.respond(exchange, Message(code=Code.CONTENT), 0.0)
    server.forget(exchange)  # harmless once answered
    assert exchange.state.name == "DONE"
