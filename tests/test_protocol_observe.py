"""Tests for RFC 7641 (Observe) in the sans-I/O layer, plus one look through a Context.

* :mod:`coap_trio.protocol.observe`: the §3.4 freshness rule (``is_newer``,
  ``NotificationOrder``) and the 24-bit server sequence (``ObserveSequence``).
* The client side of :class:`~coap_trio.protocol.messaging.Messaging`: a
  registration (GET with Observe=0) answered 2.xx with Observe becomes
  OBSERVING, frees its NSTART slot and receives ``NotificationReceived``
  until a final response, an error or ``abandon()`` ends it (later
  notifications then get RST, §3.6).
* The server side: ``notify()`` sends further responses with fresh MIDs and
  the request's token; CON notifications are retransmitted and superseded
  (§4.5.2).
* A plain ``Context.request`` with Observe=0 leaves no observation behind.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import CLIENT, SERVER, Pair, decoded, drop_all, get

from coap_trio.codec import decode, encode
from coap_trio.context import open_context
from coap_trio.errors import LocalProtocolError, RequestTimeoutError, ResetByPeerError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.numbers.types import Type
from coap_trio.protocol.config import MessagingConfig
from coap_trio.protocol.exchanges import (
    ClientExchange,
    ClientState,
    NotificationReceived,
    RequestFailed,
    ResponseAcknowledged,
    ResponseFailed,
    ResponseReceived,
    ServerExchange,
)
from coap_trio.protocol.observe import (
    FRESHNESS_WINDOW,
    NotificationOrder,
    ObserveSequence,
    is_newer,
)
from coap_trio.remote import DatagramRemote
from coap_trio.testing import MemoryNetwork

CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST
GET, CONTENT, NOT_FOUND = Code.GET, Code.CONTENT, Code.NOT_FOUND
P = TransmissionParameters()
ACK_DELAY = MessagingConfig().ack_delay
MOD = 1 << 24
HALF = 1 << 23

values = st.integers(0, MOD - 1)
times = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


# -- observe.py: §3.4 freshness ----------------------------------------------------------


def rfc_is_newer(v1: int, t1: float, v2: int, t2: float) -> bool:
    """RFC 7641 §3.4, transcribed literally."""
    return (v1 < v2 and v2 - v1 < 2**23) or (v1 > v2 and v1 - v2 > 2**23) or (t2 > t1 + 128)


@settings(deadline=None)
@given(values, times, values, times)
def test_is_newer_is_the_rfc_formula(v1: int, t1: float, v2: int, t2: float) -> None:
    assert is_newer(v1, t1, v2, t2) is rfc_is_newer(v1, t1, v2, t2)


@settings(deadline=None)
@given(values, st.integers(1, HALF - 1), times, st.floats(0, FRESHNESS_WINDOW))
def test_is_newer_forward_distance_below_half(v: int, d: int, t1: float, dt: float) -> None:
    later = (v + d) % MOD
    assert is_newer(v, t1, later, t1 + dt)
    assert not is_newer(later, t1, v, t1 + dt)


@settings(deadline=None)
@given(values, times, st.floats(0, FRESHNESS_WINDOW))
def test_is_newer_same_value_or_half_apart_is_not_newer_within_128s(
    v: int, t1: float, dt: float
) -> None:
    assert not is_newer(v, t1, v, t1 + dt)
    opposite = (v + HALF) % MOD
    assert not is_newer(v, t1, opposite, t1 + dt)
    assert not is_newer(opposite, t1, v, t1 + dt)


@pytest.mark.parametrize(
    ("v1", "v2", "newer"),
    [
        (0xFFFFFF, 0, True),  # wrap-around
        (0, 0xFFFFFF, False),
        (0xFFFFF0, 5, True),
        (5, 0xFFFFF0, False),
        (0, HALF - 1, True),  # just below 2**23 ahead
        (0, HALF, False),  # exactly 2**23: neither is newer
        (HALF, 0, False),
        (0, HALF + 1, False),  # more than half ahead is behind
        (HALF + 1, 0, True),
        (1, 2, True),
        (2, 1, False),
        (7, 7, False),
    ],
)
def test_is_newer_examples(v1: int, v2: int, newer: bool) -> None:
    assert is_newer(v1, 10.0, v2, 10.0) is newer


def test_is_newer_128_second_rule() -> None:
    # An older value (or the same one) counts as newer only strictly after 128 s.
    assert not is_newer(10, 0.0, 9, 128.0)
    assert is_newer(10, 0.0, 9, 128.001)
    assert is_newer(10, 0.0, 10, 200.0)
    assert is_newer(0, 5.0, HALF, 133.5)
    assert FRESHNESS_WINDOW == 128.0


def test_notification_order_drops_reordered_and_accepts_after_128s() -> None:
    order = NotificationOrder()
    assert order.accept(10, 0.0)  # the first one is always fresh
    assert order.accept(11, 1.0)
    assert not order.accept(10, 2.0)  # reordered: older
    assert not order.accept(11, 2.0)  # duplicate value
    assert order.accept(12, 3.0)
    # A rejected notification is not remembered: 128 s counts from 12's arrival.
    assert not order.accept(5, 3.0 + FRESHNESS_WINDOW)
    assert order.accept(5, 3.0 + FRESHNESS_WINDOW + 0.5)
    # ...and now 5 at t=131.5 is the reference.
    assert not order.accept(4, 140.0)
    assert order.accept(6, 140.0)


def test_notification_order_across_wrap_around() -> None:
    order = NotificationOrder()
    assert order.accept(0xFFFFFE, 0.0)
    assert order.accept(0xFFFFFF, 1.0)
    assert order.accept(0, 2.0)
    assert not order.accept(0xFFFFFF, 3.0)
    assert order.accept(1, 4.0)


@settings(deadline=None)
@given(st.lists(st.tuples(values, st.floats(0, 1000)), max_size=30))
def test_notification_order_matches_a_model(items: list[tuple[int, float]]) -> None:
    order = NotificationOrder()
    last: tuple[int, float] | None = None
    now = 0.0
    for value, dt in items:
        now += dt
        expected = last is None or rfc_is_newer(last[0], last[1], value, now)
        assert order.accept(value, now) is expected
        if expected:
            last = (value, now)


def test_observe_sequence_increases_and_wraps() -> None:
    seq = ObserveSequence()
    assert [seq.next() for _ in range(3)] == [0, 1, 2]
    seq = ObserveSequence(MOD - 2)
    assert [seq.next() for _ in range(4)] == [MOD - 2, MOD - 1, 0, 1]
    assert ObserveSequence(MOD + 3).next() == 3


@settings(deadline=None)
@given(st.integers(0, 2 * MOD), st.integers(1, 50))
def test_observe_sequence_each_value_is_newer(start: int, n: int) -> None:
    seq = ObserveSequence(start)
    previous = seq.next()
    assert 0 <= previous < MOD
    for _ in range(n):
        value = seq.next()
        assert 0 <= value < MOD
        assert value == (previous + 1) % MOD
        assert is_newer(previous, 0.0, value, 0.0)
        previous = value


# -- client side, through a Pair ---------------------------------------------------------


def content(observe: int | None, payload: bytes = b"") -> Message:
    if observe is None:
        return Message(code=CONTENT, payload=payload)
    return Message(code=CONTENT, observe=observe, payload=payload)


def register(
    pair: Pair, mtype: Type | None = None, answer: Message | None = None
) -> tuple[ClientExchange, ServerExchange]:
    """Send a registration and answer it at once (piggybacked) with ``answer``."""
    exchange = pair.request(get(observe=0, mtype=mtype))
    (received,) = pair.received_requests()
    assert received.exchange.request.opt.observe == 0
    pair.respond(received.exchange, content(5, b"v5") if answer is None else answer)
    return exchange, received.exchange


def notify(pair: Pair, exchange: ServerExchange, message: Message, confirmable: bool) -> None:
    events = pair.server.notify(exchange, message, pair.now, confirmable=confirmable)
    pair.handle(SERVER, events)


def notifications(pair: Pair, exchange: ClientExchange) -> list[Message]:
    return [
        e.response
        for e in pair.client_events
        if isinstance(e, NotificationReceived) and e.exchange is exchange
    ]


def server_outcomes(pair: Pair, exchange: ServerExchange) -> list[object]:
    return [
        e
        for e in pair.server_events
        if isinstance(e, ResponseAcknowledged | ResponseFailed) and e.exchange is exchange
    ]


@pytest.mark.parametrize("mtype", [None, NON])
def test_registration_enters_observing_and_frees_nstart(mtype: Type | None) -> None:
    pair = Pair()
    exchange, _ = register(pair, mtype)
    (outcome,) = pair.outcome(exchange)
    assert isinstance(outcome, ResponseReceived)
    assert outcome.response.opt.observe == 5
    assert outcome.response.payload == b"v5"
    assert exchange.state is ClientState.OBSERVING
    stats = pair.client.statistics
    assert stats.outstanding_requests == 0
    assert stats.queued_requests == 0
    assert len(pair.client._matcher) == 1  # still matched by its token
    # NSTART=1: a second request to the same server goes out at once.
    assert P.NSTART == 1
    second = pair.request(get("y"))
    assert second.state is ClientState.SENT
    assert [d.message.opt.uri_path for d in pair.sent_by(CLIENT)] == [("x",), ("y",)]
    assert pair.client.statistics.outstanding_requests == 1


def test_registration_releases_a_queued_request() -> None:
    pair = Pair()
    exchange = pair.request(get(observe=0))
    second = pair.request(get("y"))
    assert second.state is ClientState.QUEUED
    assert pair.client.statistics.queued_requests == 1
    registration = pair.received_requests()[0].exchange
    pair.respond(registration, content(1, b"v1"))
    assert exchange.state is ClientState.OBSERVING
    assert second.state is ClientState.SENT
    assert pair.client.statistics.queued_requests == 0
    assert pair.client.statistics.outstanding_requests == 1
    assert [d.message.opt.uri_path for d in pair.sent_by(CLIENT)] == [("x",), ("y",)]


def test_observation_has_no_timeout() -> None:
    pair = Pair()
    exchange, server_exchange = register(pair, NON)
    pair.run_until(3 * P.EXCHANGE_LIFETIME)
    assert exchange.state is ClientState.OBSERVING
    assert pair.outcome(exchange) == [pair.client_events[0]]
    notify(pair, server_exchange, content(6, b"late"), confirmable=False)
    assert [m.payload for m in notifications(pair, exchange)] == [b"late"]


def test_registration_with_separate_response() -> None:
    pair = Pair()
    exchange = pair.request(get(observe=0))
    (received,) = pair.received_requests()
    pair.advance(ACK_DELAY + 0.5)  # empty ACK goes out
    assert exchange.state is ClientState.ACKNOWLEDGED
    pair.respond(received.exchange, content(1, b"one"))  # separate CON response
    assert exchange.state is ClientState.OBSERVING
    assert isinstance(pair.outcome(exchange)[0], ResponseReceived)
    assert [type(e) for e in server_outcomes(pair, received.exchange)] == [ResponseAcknowledged]
    pair.run_until(3 * P.EXCHANGE_LIFETIME)  # the separate-response deadline was cancelled
    assert exchange.state is ClientState.OBSERVING
    assert len(pair.outcome(exchange)) == 1


def test_notifications_non_and_con_arrive_in_order() -> None:
    pair = Pair()
    exchange, server_exchange = register(pair)
    notify(pair, server_exchange, content(6, b"n6"), confirmable=False)
    notify(pair, server_exchange, content(7, b"c7"), confirmable=True)
    notify(pair, server_exchange, content(8, b"n8"), confirmable=False)
    notify(pair, server_exchange, content(9, b"c9"), confirmable=True)
    got = notifications(pair, exchange)
    assert [m.payload for m in got] == [b"n6", b"c7", b"n8", b"c9"]
    assert [m.opt.observe for m in got] == [6, 7, 8, 9]
    assert exchange.state is ClientState.OBSERVING

    sent = [d.message for d in pair.sent_by(SERVER)][1:]  # after the piggybacked ACK
    assert [m.mtype for m in sent] == [NON, CON, NON, CON]
    assert all(m.token == exchange.token for m in sent)
    assert len({m.mid for m in sent} | {exchange.mid}) == 5  # fresh MIDs
    # The client ACKed each CON notification (empty ACK with its MID).
    acks = [d.message for d in pair.sent_by(CLIENT) if d.message.mtype is ACK]
    assert [(a.code, a.mid) for a in acks] == [(Code.EMPTY, m.mid) for m in sent if m.mtype is CON]
    assert [type(e) for e in server_outcomes(pair, server_exchange)] == [
        ResponseAcknowledged,
        ResponseAcknowledged,
    ]
    pair.run_until(300.0)  # nothing is retransmitted
    assert len(pair.sent_by(SERVER)) == 5
    assert pair.server.statistics.retransmissions == 0


@pytest.mark.parametrize("confirmable", [False, True])
def test_final_response_without_observe_ends_the_observation(confirmable: bool) -> None:
    pair = Pair()
    exchange, server_exchange = register(pair)
    notify(pair, server_exchange, content(6, b"n6"), confirmable=False)
    notify(pair, server_exchange, content(None, b"final"), confirmable=confirmable)
    assert [m.payload for m in notifications(pair, exchange)] == [b"n6", b"final"]
    assert exchange.state is ClientState.DONE
    assert len(pair.client._matcher) == 0
    assert len(pair.outcome(exchange)) == 1  # only the registration's ResponseReceived
    # A further notification is unknown now: RST, and the server learns it.
    before = len(server_outcomes(pair, server_exchange))
    notify(pair, server_exchange, content(7, b"n7"), confirmable=False)
    assert len(notifications(pair, exchange)) == 2
    assert pair.sent_by(CLIENT)[-1].message.mtype is RST
    failed = server_outcomes(pair, server_exchange)[before:]
    assert len(failed) == 1
    assert isinstance(failed[0], ResponseFailed)
    assert isinstance(failed[0].error, ResetByPeerError)


def test_error_notification_ends_the_observation() -> None:
    pair = Pair()
    exchange, server_exchange = register(pair)
    notify(pair, server_exchange, Message(code=NOT_FOUND, observe=6), confirmable=False)
    (last,) = notifications(pair, exchange)
    assert last.code is NOT_FOUND
    assert exchange.state is ClientState.DONE
    assert len(pair.client._matcher) == 0


@pytest.mark.parametrize("confirmable", [False, True])
def test_abandon_observing_exchange_resets_later_notifications(confirmable: bool) -> None:
    pair = Pair()
    exchange, server_exchange = register(pair)
    assert pair.abandon(exchange) == []
    assert exchange.state is ClientState.DONE
    assert len(pair.client._matcher) == 0
    assert pair.client.statistics.outstanding_requests == 0
    notify(pair, server_exchange, content(6, b"n6"), confirmable=confirmable)
    assert notifications(pair, exchange) == []
    notification = pair.sent_by(SERVER)[-1].message
    reply = pair.sent_by(CLIENT)[-1].message
    assert (reply.mtype, reply.code, reply.mid) == (RST, Code.EMPTY, notification.mid)
    (failed,) = server_outcomes(pair, server_exchange)
    assert isinstance(failed, ResponseFailed)
    assert isinstance(failed.error, ResetByPeerError)
    pair.run_until(300.0)  # a reset CON notification is not retransmitted
    assert pair.sent_by(SERVER)[-1].message.mid == notification.mid
    assert len([d for d in pair.sent_by(SERVER) if d.message.mid == notification.mid]) == 1
    assert pair.abandon(exchange) == []  # idempotent


def test_error_response_to_registration_is_final() -> None:
    pair = Pair()
    exchange, _ = register(pair, answer=Message(code=NOT_FOUND))
    (outcome,) = pair.outcome(exchange)
    assert isinstance(outcome, ResponseReceived)
    assert outcome.response.code is NOT_FOUND
    assert exchange.state is ClientState.DONE
    assert len(pair.client._matcher) == 0
    assert pair.client.statistics.outstanding_requests == 0


def test_error_response_with_observe_to_registration_is_final() -> None:
    pair = Pair()
    exchange, _ = register(pair, answer=Message(code=NOT_FOUND, observe=3))
    (outcome,) = pair.outcome(exchange)
    assert isinstance(outcome, ResponseReceived)
    assert exchange.state is ClientState.DONE
    assert len(pair.client._matcher) == 0


def test_success_without_observe_to_registration_is_plain_final_response() -> None:
    pair = Pair()
    exchange, server_exchange = register(pair, answer=content(None, b"plain"))
    (outcome,) = pair.outcome(exchange)
    assert isinstance(outcome, ResponseReceived)
    assert outcome.response.payload == b"plain"
    assert exchange.state is ClientState.DONE
    assert len(pair.client._matcher) == 0
    notify(pair, server_exchange, content(1, b"n1"), confirmable=False)
    assert notifications(pair, exchange) == []
    assert pair.sent_by(CLIENT)[-1].message.mtype is RST


def test_observe_on_a_request_without_observe_zero_is_ignored() -> None:
    # Only Observe=0 registers; a plain GET answered with Observe is final.
    pair = Pair()
    exchange = pair.request(get())
    (received,) = pair.received_requests()
    pair.respond(received.exchange, content(4, b"x"))
    assert exchange.state is ClientState.DONE
    assert isinstance(pair.outcome(exchange)[0], ResponseReceived)


# -- server side -------------------------------------------------------------------------


def test_notify_before_respond_raises() -> None:
    pair = Pair()
    pair.request(get(observe=0))
    (received,) = pair.received_requests()
    with pytest.raises(LocalProtocolError):
        pair.server.notify(received.exchange, content(1), pair.now)
    # Also after the empty ACK, before the separate response.
    pair.advance(ACK_DELAY + 0.5)
    with pytest.raises(LocalProtocolError):
        pair.server.notify(received.exchange, content(1), pair.now, confirmable=True)


def is_client_ack(message: Message) -> bool:
    return message.mtype is ACK and message.code is Code.EMPTY


def test_unacknowledged_con_notification_is_retransmitted_then_fails() -> None:
    pair = Pair(filter=drop_all(CLIENT, is_client_ack))
    exchange, server_exchange = register(pair)
    notify(pair, server_exchange, content(6, b"c6"), confirmable=True)
    pair.run_until(P.MAX_TRANSMIT_WAIT + 10)
    copies = [d for d in pair.sent_by(SERVER) if d.message.payload == b"c6"]
    assert len(copies) == 1 + P.MAX_RETRANSMIT
    assert len({d.data for d in copies}) == 1  # the same bytes each time
    (failed,) = server_outcomes(pair, server_exchange)
    assert isinstance(failed, ResponseFailed)
    assert isinstance(failed.error, RequestTimeoutError)
    assert failed.error.transmissions == 1 + P.MAX_RETRANSMIT
    assert pair.server.next_deadline() is None or pair.server.next_deadline() > pair.now
    # The client delivered it once (the copies were duplicates).
    assert [m.payload for m in notifications(pair, exchange)] == [b"c6"]
    assert pair.client.statistics.duplicates == P.MAX_RETRANSMIT


def test_new_con_notification_supersedes_unacknowledged_one() -> None:
    pair = Pair(filter=drop_all(CLIENT, is_client_ack))
    exchange, server_exchange = register(pair)
    notify(pair, server_exchange, content(6, b"first"), confirmable=True)
    pair.advance(1.0)  # before the first retransmission (>= ACK_TIMEOUT = 2 s)
    notify(pair, server_exchange, content(7, b"second"), confirmable=True)
    pair.run_until(P.MAX_TRANSMIT_WAIT + 10)
    sent = [d.message for d in pair.sent_by(SERVER)][1:]
    first = [m for m in sent if m.payload == b"first"]
    second = [m for m in sent if m.payload == b"second"]
    assert len(first) == 1
    assert len(second) == 1 + P.MAX_RETRANSMIT
    assert len({m.mid for m in second}) == 1
    assert first[0].mid != second[0].mid
    (failed,) = server_outcomes(pair, server_exchange)
    assert isinstance(failed, ResponseFailed)
    assert isinstance(failed.error, RequestTimeoutError)
    assert pair.server.statistics.retransmissions == P.MAX_RETRANSMIT
    assert [m.payload for m in notifications(pair, exchange)] == [b"first", b"second"]


def test_superseded_notification_ack_is_ignored_and_new_one_acked() -> None:
    # The first CON notification's ACK is lost; the second's gets through.
    lost: list[int | None] = [None]
    pair = Pair(filter=drop_all(CLIENT, lambda m: is_client_ack(m) and m.mid == lost[0]))
    _, server_exchange = register(pair)
    events = pair.server.notify(server_exchange, content(6, b"a"), pair.now, confirmable=True)
    (first,) = decoded(events)
    lost[0] = first.mid
    pair.handle(SERVER, events)
    assert server_outcomes(pair, server_exchange) == []
    notify(pair, server_exchange, content(7, b"b"), confirmable=True)
    assert [type(e) for e in server_outcomes(pair, server_exchange)] == [ResponseAcknowledged]
    # A late ACK for the superseded one is unmatched, with no event.
    unmatched = pair.server.statistics.unmatched
    assert pair.server.receive(encode_empty_ack(first.mid), CLIENT, pair.now) == []
    assert pair.server.statistics.unmatched == unmatched + 1
    pair.run_until(300.0)
    assert [d.message.payload for d in pair.sent_by(SERVER)][1:] == [b"a", b"b"]


def encode_empty_ack(mid: int) -> bytes:
    return encode(Message(code=Code.EMPTY, mtype=ACK, mid=mid))


# -- through a Context -------------------------------------------------------------------

SERVER_HOST = "10.0.0.2"
PORT = 5683
URI = f"coap://{SERVER_HOST}/x"


class ObservableResource:
    """Answers 2.05 with Observe=1 (as if it registered the observer)."""

    async def render(self, request: Message) -> Message:
        return Message(code=CONTENT, observe=1, payload=b"v1")

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False


async def test_context_plain_request_with_observe_leaves_no_observation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=3)
    with trio.fail_after(1000):
        async with (
            open_context(
                network=net,
                bind=(SERVER_HOST, PORT),
                site=ObservableResource(),
                rng=random.Random(1),
            ) as server,
            open_context(network=net, rng=random.Random(2)) as client,
        ):
            response = await client.request(Message(code=GET, uri=URI, observe=0)).response
            assert response.code is CONTENT
            assert response.opt.observe == 1
            assert response.payload == b"v1"
            assert client.statistics.messaging[0].outstanding_requests == 0
            runner = client._runners[0]
            assert len(runner.machine._matcher) == 0
            assert client.statistics.requests_in_flight == 0
            await trio.sleep(P.EXCHANGE_LIFETIME)
            assert server.statistics.messaging[0].pending_server_requests == 0


async def test_context_later_notification_is_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A bare endpoint plays the server: piggybacked 2.05 Observe=1, then a NON notification."""
    net = MemoryNetwork(seed=3)
    received: list[Message] = []
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            endpoint = net.open_endpoint(SERVER_HOST, PORT)
            peers: list[DatagramRemote] = []

            def on_datagrams(batch: list[tuple[bytes, DatagramRemote]]) -> None:
                for data, remote in batch:
                    message = decode(data)
                    received.append(message)
                    if message.code is GET:
                        peers.append(remote)
                        reply = Message(
                            code=CONTENT,
                            mtype=ACK,
                            mid=message.mid,
                            token=message.token,
                            observe=1,
                        )
                        endpoint.send(encode(reply), remote)

            await nursery.start(endpoint.run, on_datagrams, lambda remote, error: None)
            async with open_context(network=net, rng=random.Random(2)) as client:
                response = await client.request(Message(code=GET, uri=URI, observe=0)).response
                assert response.opt.observe == 1
                (request,) = received
                notification = Message(
                    code=CONTENT, mtype=NON, mid=0x4242, token=request.token, observe=2
                )
                endpoint.send(encode(notification), peers[0])
                await trio.sleep(1.0)
                assert len(client._runners[0].machine._matcher) == 0
            nursery.cancel_scope.cancel()
    assert [(m.mtype, m.code, m.mid) for m in received[1:]] == [(RST, Code.EMPTY, 0x4242)]


def test_request_failed_not_produced_for_observations() -> None:
    # Guard for the Pair-level tests above: no RequestFailed appears anywhere.
    pair = Pair()
    exchange, server_exchange = register(pair)
    for i in range(3):
        notify(pair, server_exchange, content(6 + i), confirmable=bool(i % 2))
    pair.run_until(1000.0)
    assert not [e for e in pair.client_events if isinstance(e, RequestFailed)]
    assert len(notifications(pair, exchange)) == 3


@pytest.mark.parametrize("retransmitted", [1, 2, 3])
def test_superseding_notification_inherits_count_and_timeout(retransmitted: int) -> None:
    # RFC 7641 §4.5.2: after k retransmissions of the first CON notification,
    # the one superseding it goes on from there: k retransmissions already
    # counted, the doubled timeout, and the give-up after MAX_RETRANSMIT in all.
    pair = Pair(filter=drop_all(CLIENT, is_client_ack))
    _, server_exchange = register(pair)
    notify(pair, server_exchange, content(6, b"first"), confirmable=True)

    def sent(payload: bytes) -> list[float]:
        return [d.time for d in pair.sent_by(SERVER) if d.message.payload == payload]

    start = sent(b"first")[0]
    pair.advance(2.0)  # the first retransmission comes between 2 and 3 s
    while len(sent(b"first")) < 1 + retransmitted:
        pair.advance(0.5)
    times = sent(b"first")
    assert len(times) == 1 + retransmitted
    initial = times[1] - start
    # Each timeout doubles: initial * 2**(k+1) - initial after the first sending.
    assert times[-1] - start == pytest.approx(initial * (2**retransmitted - 1))
    interval = initial * 2**retransmitted  # the timeout now running
    pair.advance(0.25)
    superseded_at = pair.now
    notify(pair, server_exchange, content(7, b"second"), confirmable=True)
    pair.run_until(superseded_at + interval * 2 ** (P.MAX_RETRANSMIT - retransmitted + 1))
    assert sent(b"first") == times  # no more retransmissions of the superseded one
    second = sent(b"second")
    assert len(second) == 1 + P.MAX_RETRANSMIT - retransmitted
    expected = [superseded_at]
    for step in range(P.MAX_RETRANSMIT - retransmitted):
        expected.append(expected[-1] + interval * 2**step)
    assert second == pytest.approx(expected)
    assert pair.server.statistics.retransmissions == P.MAX_RETRANSMIT
    (failed,) = server_outcomes(pair, server_exchange)
    assert isinstance(failed, ResponseFailed)
    assert isinstance(failed.error, RequestTimeoutError)
    assert failed.error.transmissions == 1 + P.MAX_RETRANSMIT


def test_superseding_notification_gives_up_when_the_last_timeout_ends() -> None:
    pair = Pair(filter=drop_all(CLIENT, is_client_ack))
    _, server_exchange = register(pair)
    notify(pair, server_exchange, content(6, b"first"), confirmable=True)
    pair.advance(2.0)
    while len([d for d in pair.sent_by(SERVER) if d.message.payload == b"first"]) < 2:
        pair.advance(0.5)
    first = [d.time for d in pair.sent_by(SERVER) if d.message.payload == b"first"]
    initial = first[1] - first[0]
    notify(pair, server_exchange, content(7, b"second"), confirmable=True)
    superseded_at = pair.now
    # One retransmission done: MAX_RETRANSMIT - 1 more, then the last timeout.
    give_up = superseded_at + sum(initial * 2**n for n in range(1, P.MAX_RETRANSMIT + 1))
    pair.run_until(give_up - 0.01)
    assert server_outcomes(pair, server_exchange) == []
    pair.run_until(give_up)
    (failed,) = server_outcomes(pair, server_exchange)
    assert isinstance(failed, ResponseFailed)
