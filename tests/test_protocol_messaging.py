"""Tests for coap_trio.protocol.messaging: RFC 7252 §4 / §5.3 messaging, sans-I/O.

Most tests wire a client and a server :class:`Messaging` through
:class:`~tests.protocol_helpers.Pair` (a fake network with drop / duplicate /
delay filters and a simulated clock); the rest drive one endpoint alone with
hand-made datagrams. Datagrams are checked as exact bytes where it matters.

Documented choices checked here (see the module docstring of messaging.py):

* A piggybacked response (in an ACK) with an unrecognized critical option
  fails the request with BadResponseError and stops retransmission, but sends
  no RST: §4.2 says rejecting an ACK means silently ignoring it.
* A duplicate CON that arrives while the request is still being handled (no
  reply recorded yet) is dropped silently; once the reply exists, every
  duplicate gets exactly the same bytes again (§4.5).
* A response with an unknown token gets an RST, for CON and NON alike
  (§4.3, RFC 7641 §3.6).
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import (
    CLIENT,
    SERVER,
    Pair,
    decoded,
    drive,
    drop_all,
    drop_first,
    empty,
    get,
    make,
    others,
    transmits,
)

from coap_trio.codec import decode
from coap_trio.errors import (
    BadResponseError,
    DtlsAlertError,
    HandshakeError,
    LocalProtocolError,
    NetworkError,
    RequestTimeoutError,
    ResetByPeerError,
)
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.numbers.types import Type
from coap_trio.protocol.config import MessagingConfig
from coap_trio.protocol.exchanges import (
    ClientExchange,
    ClientState,
    MessageIdsExhausted,
    RequestFailed,
    RequestReceived,
    ResponseAcknowledged,
    ResponseFailed,
    ResponseReceived,
    ServerExchange,
    ServerState,
    Transmit,
)
from coap_trio.protocol.messaging import Messaging

CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST
GET, CONTENT, EMPTY = Code.GET, Code.CONTENT, Code.EMPTY
P = TransmissionParameters()
EXCHANGE_LIFETIME = P.EXCHANGE_LIFETIME  # 247 s
NON_LIFETIME = P.NON_LIFETIME  # 145 s
MAX_TRANSMIT_WAIT = P.MAX_TRANSMIT_WAIT  # 93 s
ACK_DELAY = MessagingConfig().ack_delay
TOKEN = b"\x01\x02\x03\x04"
URI_PATH_X = ((11, b"x"),)


def content(payload: bytes = b"hello", **kw: Any) -> Message:
    return Message(code=CONTENT, payload=payload, **kw)


def answer_now(payload: bytes = b"hello") -> Any:
    def on_request(pair: Pair, event: RequestReceived) -> None:
        pair.respond(event.exchange, content(payload))

    return on_request


def is_empty_ack(message: Message) -> bool:
    return message.mtype is ACK and message.code is EMPTY


def server_exchange(pair: Pair, index: int = 0) -> ServerExchange:
    return pair.received_requests()[index].exchange


def only(events: list[Any], kind: type) -> Any:
    matching = [e for e in events if isinstance(e, kind)]
    assert len(matching) == 1, events
    return matching[0]


def lone(config: MessagingConfig | None = None, seed: int = 0) -> Messaging:
    return Messaging(config, random.Random(seed))


# --- retransmission (§4.2) ----------------------------------------------------------


def first_timeout(seed: int, params: TransmissionParameters = P) -> float:
    messaging = lone(MessagingConfig(params=params), seed)
    messaging.send_request(get(), SERVER, 0.0)
    deadline = messaging.next_deadline()
    assert deadline is not None
    return deadline


def test_initial_timeout_is_uniform_between_ack_timeout_and_its_random_factor() -> None:
    timeouts = [first_timeout(seed) for seed in range(400)]
    assert all(P.ACK_TIMEOUT <= t <= P.ACK_TIMEOUT * P.ACK_RANDOM_FACTOR for t in timeouts)
    # Spread over the whole interval, not a constant.
    assert min(timeouts) < 2.05
    assert max(timeouts) > 2.95
    assert len(set(timeouts)) == len(timeouts)


def test_default_initial_timeouts_are_random_without_asking_the_os_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without a given rng, tokens and MID starts come from the OS, but the
    # retransmission jitter (no secret) does not: SystemRandom's random() would
    # be one getrandom() call per CON request.
    def refuse(self: random.SystemRandom) -> float:
        raise AssertionError("the jitter asked the OS")

    monkeypatch.setattr(random.SystemRandom, "random", refuse)
    messaging = Messaging(MessagingConfig(params=P))
    timeouts = []
    for index in range(200):
        remote = ("192.0.2.1", 5000 + index)  # one CON per remote: each has its own timer
        exchange, _ = messaging.send_request(get(), remote, 0.0)
        assert exchange.transmission is not None
        timeouts.append(exchange.transmission.interval)
    assert all(P.ACK_TIMEOUT <= t <= P.ACK_TIMEOUT * P.ACK_RANDOM_FACTOR for t in timeouts)
    assert len(set(timeouts)) == len(timeouts)


def test_initial_timeout_is_reproducible_with_a_seed() -> None:
    assert first_timeout(42) == first_timeout(42)
    assert first_timeout(42) != first_timeout(43)


def test_initial_timeout_bounds_with_custom_parameters() -> None:
    params = TransmissionParameters(ACK_TIMEOUT=0.5, ACK_RANDOM_FACTOR=3.0)
    timeouts = [first_timeout(seed, params) for seed in range(200)]
    assert all(0.5 <= t <= 1.5 for t in timeouts)
    assert min(timeouts) < 0.6
    assert max(timeouts) > 1.4
    fixed = TransmissionParameters(ACK_TIMEOUT=1.25, ACK_RANDOM_FACTOR=1.0)
    assert {first_timeout(seed, fixed) for seed in range(20)} == {1.25}


@pytest.mark.parametrize(
    ("params", "seed"),
    [
        (P, 0),
        (P, 1),
        (P, 12345),
        (TransmissionParameters(ACK_TIMEOUT=1.0, ACK_RANDOM_FACTOR=1.0, MAX_RETRANSMIT=2), 0),
        (TransmissionParameters(ACK_TIMEOUT=0.5, ACK_RANDOM_FACTOR=2.0, MAX_RETRANSMIT=6), 3),
        (TransmissionParameters(ACK_TIMEOUT=3.0, ACK_RANDOM_FACTOR=1.2, MAX_RETRANSMIT=1), 4),
        (TransmissionParameters(MAX_RETRANSMIT=0), 5),
    ],
)
def test_retransmission_schedule(params: TransmissionParameters, seed: int) -> None:
    client = lone(MessagingConfig(params=params), seed)
    exchange, events = client.send_request(get(), SERVER, 0.0)
    [first] = transmits(events)
    assert first.remote == SERVER
    initial = client.next_deadline()
    assert initial is not None
    assert params.ACK_TIMEOUT <= initial <= params.ACK_TIMEOUT * params.ACK_RANDOM_FACTOR

    timeline = drive(client, 10_000.0)
    sends = [(t, e) for t, e in timeline if isinstance(e, Transmit)]
    failures = [(t, e) for t, e in timeline if isinstance(e, RequestFailed)]
    retransmit = params.MAX_RETRANSMIT
    # Exactly MAX_RETRANSMIT retransmissions, the k-th at (2**k - 1) * T, same bytes.
    assert len(sends) == retransmit
    for k, (t, event) in enumerate(sends, start=1):
        assert t == pytest.approx((2**k - 1) * initial)
        assert event.data == first.data
        assert event.remote == SERVER
    # Then it gives up at (2**(R+1) - 1) * T, within MAX_TRANSMIT_WAIT.
    [(t, failure)] = failures
    assert t == pytest.approx((2 ** (retransmit + 1) - 1) * initial)
    assert t <= params.MAX_TRANSMIT_WAIT + 1e-9
    assert failure.exchange is exchange
    assert isinstance(failure.error, RequestTimeoutError)
    assert failure.error.transmissions == retransmit + 1
    assert exchange.transmissions == retransmit + 1
    assert exchange.state is ClientState.DONE
    assert len(timeline) == retransmit + 1
    assert client.next_deadline() is None
    stats = client.statistics
    assert stats.retransmissions == retransmit
    assert stats.requests_timed_out == 1
    assert stats.outstanding_requests == 0


def test_default_schedule_gives_up_at_31_times_the_initial_timeout() -> None:
    client = lone(seed=99)
    client.send_request(get(), SERVER, 100.0)
    initial = client.next_deadline()
    assert initial is not None
    t0 = initial - 100.0
    timeline = drive(client, 1000.0)
    times = [t - 100.0 for t, _ in timeline]
    assert times == pytest.approx([t0, 3 * t0, 7 * t0, 15 * t0, 31 * t0])
    assert 31 * t0 <= MAX_TRANSMIT_WAIT
    assert isinstance(timeline[-1][1], RequestFailed)


def test_retransmission_stops_at_the_ack() -> None:
    # The server's reply is lost twice: the client retransmits, the server replays.
    pair = Pair(filter=drop_first(SERVER, lambda m: m.mtype is ACK, times=2))
    pair.on_request = answer_now()
    exchange = pair.request()
    pair.run_until(1000.0)
    requests = pair.sent_by(CLIENT)
    assert len(requests) == 3
    assert len({d.data for d in requests}) == 1
    replies = pair.sent_by(SERVER)
    assert len(replies) == 3
    assert len({d.data for d in replies}) == 1
    assert len(pair.received_requests()) == 1
    [event] = pair.outcome(exchange)
    assert isinstance(event, ResponseReceived)
    assert pair.server.statistics.duplicates == 2
    assert pair.client.statistics.retransmissions == 2


# --- piggybacked and separate responses (§5.2) -------------------------------------------


def test_piggybacked_response() -> None:
    pair = Pair(on_request=answer_now(b"hello"))
    exchange = pair.request(get(token=TOKEN))
    request, reply = pair.wire
    assert request.sender == CLIENT
    mid = exchange.mid
    assert mid is not None
    assert request.data == make(CON, GET, mid, TOKEN, options=URI_PATH_X)
    assert reply.sender == SERVER
    assert reply.data == make(ACK, CONTENT, mid, TOKEN, b"hello")
    [event] = pair.outcome(exchange)
    assert isinstance(event, ResponseReceived)
    assert event.response.code is CONTENT
    assert event.response.payload == b"hello"
    assert event.response.mtype is ACK
    assert exchange.state is ClientState.DONE
    [received] = pair.received_requests()
    assert received.exchange.state is ServerState.DONE
    assert received.exchange.token == TOKEN
    assert received.exchange.request.opt.uri_path == ("x",)
    pair.run_until(2000.0)
    assert len(pair.wire) == 2
    assert others(pair.server_events) == pair.received_requests()
    assert pair.client.statistics.outstanding_requests == 0


def test_empty_ack_then_separate_con_response() -> None:
    pair = Pair()
    exchange = pair.request(get(token=TOKEN))
    mid = exchange.mid
    assert mid is not None
    server_side = server_exchange(pair)
    assert server_side.state is ServerState.PENDING
    assert pair.server.statistics.pending_server_requests == 1
    pair.run_until(ACK_DELAY)
    assert pair.wire[-1] == (ACK_DELAY, SERVER, empty(ACK, mid))
    assert server_side.state is ServerState.ACKNOWLEDGED
    assert exchange.state is ClientState.ACKNOWLEDGED
    assert pair.server.statistics.pending_server_requests == 0

    pair.run_until(1.5)
    pair.respond(server_side, content(b"later"))
    response, ack = pair.wire[2:]
    separate = decode(response.data)
    assert separate.mtype is CON
    assert separate.code is CONTENT
    assert separate.token == TOKEN
    assert separate.payload == b"later"
    assert response.data == make(CON, CONTENT, separate.mid, TOKEN, b"later")
    assert ack == (1.5, CLIENT, empty(ACK, separate.mid))
    [event] = pair.outcome(exchange)
    assert isinstance(event, ResponseReceived)
    assert event.response.payload == b"later"
    assert only(pair.server_events, ResponseAcknowledged).exchange is server_side
    assert server_side.state is ServerState.DONE
    pair.run_until(2000.0)
    assert len(pair.wire) == 4  # request, empty ACK, response, ACK: no retransmission
    assert pair.client.statistics.retransmissions == 0
    assert pair.server.statistics.retransmissions == 0


def test_separate_response_after_lost_empty_ack_is_implicit_acknowledgement() -> None:
    pair = Pair(filter=drop_first(SERVER, is_empty_ack))
    exchange = pair.request()
    pair.run_until(0.5)
    assert exchange.state is ClientState.SENT  # the empty ACK was lost
    pair.respond(server_exchange(pair), content())
    assert isinstance(pair.outcome(exchange)[0], ResponseReceived)
    pair.run_until(2000.0)
    client_sent = [d.message for d in pair.sent_by(CLIENT)]
    assert [(m.mtype, m.code) for m in client_sent] == [(CON, GET), (ACK, EMPTY)]
    assert pair.client.statistics.retransmissions == 0
    assert only(pair.server_events, ResponseAcknowledged).exchange is server_exchange(pair)


def test_separate_response_stops_retransmissions_after_every_empty_ack_was_lost() -> None:
    pair = Pair(filter=drop_all(SERVER, is_empty_ack), seed=5)
    exchange = pair.request()
    pair.run_until(10.0)
    # T in [2, 3]: retransmissions at T and 3T happened, 7T >= 14 not yet.
    assert len(pair.sent_by(CLIENT)) == 3
    assert len(pair.received_requests()) == 1
    assert pair.server.statistics.duplicates == 2
    pair.respond(server_exchange(pair), content())
    assert isinstance(pair.outcome(exchange)[0], ResponseReceived)
    pair.run_until(2000.0)
    client_sent = [d.message for d in pair.sent_by(CLIENT)]
    assert [m.mtype for m in client_sent] == [CON, CON, CON, ACK]
    assert pair.client.statistics.retransmissions == 2
    assert len(pair.outcome(exchange)) == 1


def test_separate_response_retransmitted_until_acknowledged() -> None:
    pair = Pair(filter=drop_first(CLIENT, lambda m: m.mtype is ACK, times=2))
    exchange = pair.request()
    pair.run_until(1.0)
    server_side = server_exchange(pair)
    pair.respond(server_side, content())
    assert server_side.state is ServerState.RESPONDING
    pair.run_until(2000.0)
    responses = [d for d in pair.sent_by(SERVER) if d.message.mtype is CON]
    assert len(responses) == 3
    assert len({d.data for d in responses}) == 1
    acks = [d for d in pair.sent_by(CLIENT) if d.message.mtype is ACK]
    assert len(acks) == 3
    assert len({d.data for d in acks}) == 1  # replayed from the dedup store
    assert len(pair.outcome(exchange)) == 1
    assert pair.client.statistics.duplicates == 2
    assert only(pair.server_events, ResponseAcknowledged).exchange is server_side
    assert server_side.state is ServerState.DONE
    assert pair.server.statistics.retransmissions == 2


def test_separate_response_given_up_when_never_acknowledged() -> None:
    pair = Pair(filter=drop_all(CLIENT, lambda m: m.mtype is ACK))
    exchange = pair.request()
    pair.run_until(1.0)
    server_side = server_exchange(pair)
    pair.respond(server_side, content())
    pair.run_until(2000.0)
    responses = [d for d in pair.sent_by(SERVER) if d.message.mtype is CON]
    assert len(responses) == P.MAX_RETRANSMIT + 1
    assert responses[-1].time - responses[0].time <= P.MAX_TRANSMIT_SPAN
    failed = only(pair.server_events, ResponseFailed)
    assert failed.exchange is server_side
    assert isinstance(failed.error, RequestTimeoutError)
    assert failed.error.transmissions == P.MAX_RETRANSMIT + 1
    assert server_side.state is ServerState.DONE
    assert not any(isinstance(e, ResponseAcknowledged) for e in pair.server_events)
    # The client got the response once and acknowledged each copy.
    [event] = pair.outcome(exchange)
    assert isinstance(event, ResponseReceived)
    assert pair.client.statistics.duplicates == P.MAX_RETRANSMIT


def test_reset_of_separate_response_fails_it() -> None:
    pair = Pair()
    exchange = pair.request()
    pair.run_until(1.0)
    assert exchange.state is ClientState.ACKNOWLEDGED
    pair.abandon(exchange)
    server_side = server_exchange(pair)
    pair.respond(server_side, content())
    response, reset = pair.wire[-2:]
    mid = response.message.mid
    assert reset == (1.0, CLIENT, empty(RST, mid))
    failed = only(pair.server_events, ResponseFailed)
    assert failed.exchange is server_side
    assert isinstance(failed.error, ResetByPeerError)
    assert server_side.state is ServerState.DONE
    assert pair.client.statistics.unmatched == 1
    assert pair.client.statistics.resets_sent == 1
    assert pair.outcome(exchange) == []  # abandoned: no event
    pair.run_until(2000.0)
    assert len(pair.wire) == 4


def test_separate_response_may_be_non() -> None:
    pair = Pair()
    exchange = pair.request(get(token=TOKEN))
    pair.run_until(1.0)
    server_side = server_exchange(pair)
    pair.respond(server_side, content(mtype=NON))
    response = pair.wire[-1]
    message = response.message
    assert response.data == make(NON, CONTENT, message.mid, TOKEN, b"hello")
    assert isinstance(pair.outcome(exchange)[0], ResponseReceived)
    assert server_side.state is ServerState.DONE
    pair.run_until(2000.0)
    assert len(pair.wire) == 3  # request, empty ACK, NON response: nothing acknowledges it


def test_separate_response_timeout() -> None:
    config = MessagingConfig(separate_response_timeout=30.0)
    pair = Pair(config)
    exchange = pair.request()
    pair.run_until(ACK_DELAY)
    assert exchange.state is ClientState.ACKNOWLEDGED
    pair.run_until(ACK_DELAY + 29.9)
    assert pair.outcome(exchange) == []
    pair.run_until(ACK_DELAY + 30.0)
    [failed] = pair.outcome(exchange)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, RequestTimeoutError)
    assert failed.error.transmissions == 1
    assert pair.client.statistics.requests_timed_out == 1


def test_separate_response_timeout_defaults_to_exchange_lifetime() -> None:
    pair = Pair()
    exchange = pair.request()
    pair.run_until(ACK_DELAY + EXCHANGE_LIFETIME - 0.01)
    assert pair.outcome(exchange) == []
    pair.run_until(ACK_DELAY + EXCHANGE_LIFETIME)
    assert isinstance(pair.outcome(exchange)[0], RequestFailed)


def test_respond_twice_is_refused() -> None:
    pair = Pair()
    pair.request()
    server_side = server_exchange(pair)
    pair.respond(server_side, content())
    with pytest.raises(LocalProtocolError):
        pair.respond(server_side, content())


def test_respond_with_none_to_a_con_sends_an_empty_ack() -> None:
    pair = Pair()
    exchange = pair.request()
    events = pair.respond(server_exchange(pair), None)
    assert [e.data for e in transmits(events)] == [empty(ACK, exchange.mid)]
    assert exchange.state is ClientState.ACKNOWLEDGED


def test_respond_with_none_after_empty_ack_sends_nothing() -> None:
    pair = Pair()
    pair.request()
    pair.run_until(1.0)
    server_side = server_exchange(pair)
    assert pair.respond(server_side, None) == []
    assert server_side.state is ServerState.DONE


def test_server_out_of_message_ids_fails_the_separate_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = Pair()
    pair.request()
    pair.run_until(1.0)
    monkeypatch.setattr(pair.server._mids, "allocate", lambda remote, now: None)
    events = pair.respond(server_exchange(pair), content())
    failed = only(events, ResponseFailed)
    assert isinstance(failed.error, NetworkError)
    assert transmits(events) == []
    assert pair.server.statistics.overloaded == 1


# --- NON requests (§4.3) -----------------------------------------------------------------


def test_non_request_gets_non_response() -> None:
    pair = Pair(on_request=answer_now(b"n"))
    exchange = pair.request(get(mtype=NON, token=TOKEN))
    request, response = pair.wire
    assert request.data == make(NON, GET, exchange.mid, TOKEN, options=URI_PATH_X)
    message = response.message
    assert response.data == make(NON, CONTENT, message.mid, TOKEN, b"n")
    [event] = pair.outcome(exchange)
    assert isinstance(event, ResponseReceived)
    assert event.response.payload == b"n"
    assert pair.received_requests()[0].exchange.con is False
    pair.run_until(2000.0)
    assert len(pair.wire) == 2
    assert pair.client.statistics.retransmissions == 0


def test_non_request_response_may_be_con() -> None:
    pair = Pair(on_request=lambda p, e: p.respond(e.exchange, content(mtype=CON)))
    exchange = pair.request(get(mtype=NON))
    _, response, ack = pair.wire
    assert response.message.mtype is CON
    assert ack.data == empty(ACK, response.message.mid)
    assert isinstance(pair.outcome(exchange)[0], ResponseReceived)
    assert isinstance(pair.server_events[-1], ResponseAcknowledged)


@pytest.mark.parametrize(("timeout", "expected"), [(None, MAX_TRANSMIT_WAIT), (5.0, 5.0)])
def test_non_request_without_response_times_out(timeout: float | None, expected: float) -> None:
    client = lone(MessagingConfig(non_response_timeout=timeout))
    exchange, _ = client.send_request(get(mtype=NON), SERVER, 0.0)
    timeline = drive(client, 10_000.0)
    [(t, failed)] = [(t, e) for t, e in timeline if not isinstance(e, Transmit)]
    assert not any(isinstance(e, Transmit) for _, e in timeline)  # never retransmitted
    assert t == expected
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is exchange
    assert isinstance(failed.error, RequestTimeoutError)
    assert failed.error.transmissions == 1
    assert client.statistics.requests_timed_out == 1
    assert client.statistics.outstanding_requests == 0


def test_reset_fails_a_non_request() -> None:
    client = lone()
    exchange, _ = client.send_request(get(mtype=NON), SERVER, 0.0)
    assert exchange.mid is not None
    events = client.receive(empty(RST, exchange.mid), SERVER, 1.0)
    [failed] = events
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is exchange
    assert isinstance(failed.error, ResetByPeerError)
    assert client.statistics.outstanding_requests == 0
    # Nothing more: no timeout later.
    assert [e for _, e in drive(client, 10_000.0)] == []
    # A second RST for the same MID is ignored.
    assert client.receive(empty(RST, exchange.mid), SERVER, 2.0) == []


def test_reset_fails_a_con_request() -> None:
    client = lone()
    exchange, _ = client.send_request(get(), SERVER, 0.0)
    assert exchange.mid is not None
    [failed] = client.receive(empty(RST, exchange.mid), SERVER, 0.5)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, ResetByPeerError)
    assert [e for _, e in drive(client, 10_000.0)] == []  # no retransmission


def test_reset_of_a_non_request_after_non_lifetime_is_ignored() -> None:
    client = lone(MessagingConfig(non_response_timeout=1000.0))
    exchange, _ = client.send_request(get(mtype=NON), SERVER, 0.0)
    assert exchange.mid is not None
    assert client.receive(empty(RST, exchange.mid), SERVER, NON_LIFETIME) == []
    assert exchange.state is ClientState.SENT
    assert client.statistics.unmatched == 1


# --- deduplication (§4.5) ------------------------------------------------------------------


def test_duplicate_con_while_pending_is_not_delivered_twice() -> None:
    pair = Pair(filter=lambda side, data: (0.0, 0.0) if side == CLIENT else (0.0,))
    exchange = pair.request()
    assert len(pair.received_requests()) == 1
    assert pair.server.statistics.duplicates == 1
    assert pair.sent_by(SERVER) == []  # nothing to replay yet
    pair.respond(server_exchange(pair), content())
    [reply] = pair.sent_by(SERVER)
    # A later duplicate gets exactly the stored reply.
    request_bytes = pair.sent_by(CLIENT)[0].data
    events = pair.inject(SERVER, request_bytes)
    assert [e.data for e in events if isinstance(e, Transmit)] == [reply.data]
    assert others(events) == []
    assert len(pair.received_requests()) == 1
    assert pair.server.statistics.duplicates == 2
    assert len(pair.outcome(exchange)) == 1


def test_duplicate_after_empty_ack_replays_the_empty_ack() -> None:
    pair = Pair()
    exchange = pair.request()
    pair.run_until(1.0)
    request_bytes = pair.sent_by(CLIENT)[0].data
    events = pair.server.receive(request_bytes, CLIENT, 1.0)
    assert [e.data for e in events] == [empty(ACK, exchange.mid)]
    # ...still after the separate response went out.
    pair.respond(server_exchange(pair), content())
    events = pair.server.receive(request_bytes, CLIENT, 2.0)
    assert [e.data for e in events] == [empty(ACK, exchange.mid)]
    assert len(pair.received_requests()) == 1


def test_duplicate_non_is_dropped() -> None:
    server = lone()
    request = make(NON, GET, 0x0A0B, TOKEN)
    [received] = server.receive(request, CLIENT, 0.0)
    assert isinstance(received, RequestReceived)
    assert server.receive(request, CLIENT, 0.5) == []  # while pending
    response_events = server.respond(received.exchange, content(), 1.0)
    assert len(transmits(response_events)) == 1
    assert server.receive(request, CLIENT, 2.0) == []  # after the response
    assert server.statistics.duplicates == 2


def test_dedup_entry_of_con_expires_after_exchange_lifetime() -> None:
    server = lone()
    request = make(CON, GET, 0x1111, TOKEN)
    [received] = server.receive(request, CLIENT, 0.0)
    [reply] = server.respond(received.exchange, content(), 0.0)
    assert isinstance(reply, Transmit)
    assert [e.data for e in server.receive(request, CLIENT, EXCHANGE_LIFETIME - 0.001)] == [
        reply.data
    ]
    events = server.receive(request, CLIENT, EXCHANGE_LIFETIME)
    assert [type(e) for e in events] == [RequestReceived]


def test_dedup_entry_of_non_expires_after_non_lifetime() -> None:
    server = lone()
    request = make(NON, GET, 0x2222, TOKEN)
    [received] = server.receive(request, CLIENT, 0.0)
    server.respond(received.exchange, None, 0.0)
    assert server.receive(request, CLIENT, NON_LIFETIME - 0.001) == []
    events = server.receive(request, CLIENT, NON_LIFETIME)
    assert [type(e) for e in events] == [RequestReceived]


def test_dedup_entries_are_swept() -> None:
    server = lone()
    for mid in range(5):
        [received] = server.receive(make(CON, GET, mid, TOKEN), CLIENT, float(mid))
        server.respond(received.exchange, content(), float(mid))
    assert server.statistics.dedup_entries == 5
    drive(server, EXCHANGE_LIFETIME + 2.5)
    assert server.statistics.dedup_entries == 2
    drive(server, 10_000.0)
    assert server.statistics.dedup_entries == 0
    assert server.next_deadline() is None


@pytest.mark.parametrize("trigger", ["reserved-non", "unknown-token-non", "critical-non"])
def test_non_dedup_records_are_swept_too(trigger: str) -> None:
    endpoint = lone()
    if trigger == "reserved-non":
        endpoint.receive(make(NON, Code.from_dotted("6.01"), 1, TOKEN), "peer", 0.0)
    elif trigger == "unknown-token-non":
        endpoint.receive(make(NON, CONTENT, 1, TOKEN), "peer", 0.0)
    else:
        endpoint.send_request(get(token=TOKEN, mtype=NON), "peer", 0.0)
        bad = make(NON, CONTENT, 1, TOKEN, options=((2001, b""),))
        assert endpoint.receive(bad, "peer", 0.0) == []
    assert endpoint.statistics.dedup_entries == 1
    drive(endpoint, 10_000.0)
    assert endpoint.statistics.dedup_entries == 0
    assert endpoint.next_deadline() is None


def answer(server: Messaging, data: bytes, remote: str, now: float) -> list[Any]:
    events = server.receive(data, remote, now)
    for event in events:
        if isinstance(event, RequestReceived):
            return server.respond(event.exchange, content(), now)
    return events


def test_dedup_max_per_remote_evicts_oldest() -> None:
    server = lone(MessagingConfig(dedup_max_per_remote=3))
    requests = [make(CON, GET, mid, TOKEN) for mid in range(5)]
    for data in requests:
        answer(server, data, CLIENT, 0.0)
    stats = server.statistics
    assert stats.dedup_entries == 3
    assert stats.dedup_evicted == 2
    # The newest are still recognized; the evicted oldest are new again.
    assert decoded(server.receive(requests[4], CLIENT, 1.0))[0].mtype is ACK
    assert [type(e) for e in server.receive(requests[0], CLIENT, 1.0)] == [RequestReceived]
    # Another remote has its own budget.
    answer(server, requests[0], "other", 1.0)
    assert server.statistics.dedup_evicted == 2


def test_dedup_max_total_evicts_oldest_overall() -> None:
    server = lone(MessagingConfig(dedup_max_total=4))
    for i in range(6):
        answer(server, make(CON, GET, 7, TOKEN), f"remote{i}", float(i))
    stats = server.statistics
    assert stats.dedup_entries == 4
    assert stats.dedup_evicted == 2
    assert [type(e) for e in server.receive(make(CON, GET, 7, TOKEN), "remote0", 10.0)] == [
        RequestReceived
    ]
    assert transmits(server.receive(make(CON, GET, 7, TOKEN), "remote5", 10.0))


def test_a_thousand_remotes_do_not_exceed_the_dedup_bound() -> None:
    server = lone(MessagingConfig(dedup_max_total=100, dedup_max_per_remote=10))
    for i in range(1000):
        for mid in range(3):
            answer(server, make(CON, GET, mid, TOKEN), ("10.0.0.1", i), i * 0.01)
            assert server.statistics.dedup_entries <= 100
    stats = server.statistics
    assert stats.dedup_entries == 100
    assert stats.dedup_evicted == 3000 - 100
    assert stats.pending_server_requests == 0
    assert server._dedup.remotes <= 100


def test_forget_makes_the_retransmission_new() -> None:
    server = lone()
    request = make(CON, GET, 0x3333, TOKEN)
    [first] = server.receive(request, CLIENT, 0.0)
    server.forget(first.exchange)
    assert first.exchange.state is ServerState.DONE
    assert server.statistics.pending_server_requests == 0
    with pytest.raises(LocalProtocolError):
        server.respond(first.exchange, content(), 0.0)
    [second] = server.receive(request, CLIENT, 2.5)
    assert isinstance(second, RequestReceived)
    assert second.exchange is not first.exchange
    assert server.statistics.duplicates == 0
    # Only the second one gets its empty ACK when the piggyback window closes.
    timeline = drive(server, 10.0)
    assert [(t, e.data) for t, e in timeline] == [(2.5 + ACK_DELAY, empty(ACK, 0x3333))]


def test_forget_is_harmless_twice_and_after_the_window() -> None:
    server = lone()
    [event] = server.receive(make(CON, GET, 1, TOKEN), CLIENT, 0.0)
    drive(server, 1.0)
    server.forget(event.exchange)
    server.forget(event.exchange)
    assert event.exchange.state is ServerState.DONE


def test_overloaded_server_resets_con_and_drops_non() -> None:
    server = lone(MessagingConfig(max_pending_requests=1))
    assert [type(e) for e in server.receive(make(CON, GET, 1, TOKEN), CLIENT, 0.0)] == [
        RequestReceived
    ]
    events = server.receive(make(CON, GET, 2, TOKEN), CLIENT, 0.0)
    assert [e.data for e in events] == [empty(RST, 2)]
    assert server.receive(make(NON, GET, 3, TOKEN), CLIENT, 0.0) == []
    stats = server.statistics
    assert stats.overloaded == 2
    assert stats.pending_server_requests == 1
    # Not recorded: once there is room, the retransmission is processed.
    drive(server, 1.0)  # the empty ACK frees the pending slot
    assert [type(e) for e in server.receive(make(CON, GET, 2, TOKEN), CLIENT, 2.0)] == [
        RequestReceived
    ]


# --- pings, unknown tokens, reserved codes (§4.2, §4.3) --------------------------------------


def test_ping_gets_reset_with_same_mid() -> None:
    server = lone()
    events = server.receive(b"\x40\x00\x12\x34", CLIENT, 0.0)
    assert [e.data for e in events] == [b"\x70\x00\x12\x34"]
    assert events[0].remote == CLIENT
    assert server.statistics.pings == 1
    assert server.statistics.resets_sent == 1
    assert server.statistics.dedup_entries == 0


def test_ping_between_pair() -> None:
    pair = Pair()
    pair.inject(SERVER, empty(CON, 0xBEEF))
    assert pair.wire == [(0.0, SERVER, empty(RST, 0xBEEF))]
    assert pair.client.statistics.unmatched == 1  # the RST matched nothing on the client


def test_empty_non_is_ignored() -> None:
    server = lone()
    assert server.receive(empty(NON, 5), CLIENT, 0.0) == []
    assert server.statistics.pings == 0
    assert server.statistics.resets_sent == 0


@pytest.mark.parametrize("mtype", [CON, NON])
def test_response_with_unknown_token_gets_reset(mtype: Type) -> None:
    client = lone()
    data = make(mtype, CONTENT, 0x4444, b"\xde\xad", b"?")
    events = client.receive(data, SERVER, 0.0)
    assert [e.data for e in events] == [empty(RST, 0x4444)]
    stats = client.statistics
    assert stats.unmatched == 1
    assert stats.resets_sent == 1
    # A duplicate of the CON gets the same RST (replayed); of a NON, nothing.
    again = client.receive(data, SERVER, 1.0)
    if mtype is CON:
        assert [e.data for e in again] == [empty(RST, 0x4444)]
    else:
        assert again == []
    assert client.statistics.duplicates == 1


@pytest.mark.parametrize("dotted", ["1.01", "1.31", "6.01", "7.01", "7.02"])
def test_reserved_code_class_con_is_reset_non_ignored(dotted: str) -> None:
    code = Code.from_dotted(dotted)
    endpoint = lone()
    con = make(CON, code, 0x5555, TOKEN)
    assert [e.data for e in endpoint.receive(con, "peer", 0.0)] == [empty(RST, 0x5555)]
    assert [e.data for e in endpoint.receive(con, "peer", 1.0)] == [empty(RST, 0x5555)]
    assert endpoint.receive(make(NON, code, 0x5556, TOKEN), "peer", 0.0) == []
    assert endpoint.statistics.unmatched == 2
    assert endpoint.statistics.pending_server_requests == 0


def test_unmatched_ack_and_rst_are_ignored_and_counted() -> None:
    endpoint = lone()
    assert endpoint.receive(empty(ACK, 1), "peer", 0.0) == []
    assert endpoint.receive(make(ACK, CONTENT, 2, TOKEN, b"x"), "peer", 0.0) == []
    assert endpoint.receive(empty(RST, 3), "peer", 0.0) == []
    stats = endpoint.statistics
    assert stats.unmatched == 3
    assert stats.resets_sent == 0


def test_ack_from_another_remote_does_not_match() -> None:
    client = lone()
    exchange, _ = client.send_request(get(), SERVER, 0.0)
    assert exchange.mid is not None
    assert client.receive(empty(ACK, exchange.mid), "impostor", 0.1) == []
    assert exchange.state is ClientState.SENT
    assert client.statistics.unmatched == 1


# --- malformed datagrams (§3, §4.2, §4.3) -----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x49\x01\x12\x34" + bytes(9), id="tkl9"),
        pytest.param(b"\x4f\x01\x12\x34", id="tkl15"),
        pytest.param(b"\x40\x01\x12\x34\xff", id="empty-payload"),
        pytest.param(b"\x40\x01\x12\x34\xf1\x00", id="reserved-delta"),
        pytest.param(b"\x40\x01\x12\x34\x1f", id="reserved-length"),
        pytest.param(b"\x42\x01\x12\x34\x01", id="truncated-token"),
        pytest.param(b"\x40\x00\x12\x34\xff\x01", id="nonempty-empty"),
    ],
)
def test_malformed_con_gets_reset_with_its_mid(data: bytes) -> None:
    endpoint = lone()
    events = endpoint.receive(data, "peer", 0.0)
    assert [(e.remote, e.data) for e in events] == [("peer", b"\x70\x00\x12\x34")]
    stats = endpoint.statistics
    assert stats.malformed == 1
    assert stats.resets_sent == 1
    assert stats.datagrams_received == 1


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x59\x01\x12\x34" + bytes(9), id="non-tkl9"),
        pytest.param(b"\x69\x45\x12\x34" + bytes(9), id="ack-tkl9"),
        pytest.param(b"\x79\x00\x12\x34" + bytes(9), id="rst-tkl9"),
        pytest.param(b"\x50\x01\x12\x34\xff", id="non-empty-payload"),
        pytest.param(b"\x60\x00\x12\x34\x00", id="ack-nonempty-empty"),
        pytest.param(b"\x80\x01\x12\x34", id="version2-con"),
        pytest.param(b"\x00\x01\x12\x34", id="version0-con"),
        pytest.param(b"\xc0\x00\x12\x34", id="version3-ping"),
        pytest.param(b"\x40\x01\x12", id="too-short"),
        pytest.param(b"", id="nothing"),
    ],
)
def test_other_malformed_datagrams_are_ignored(data: bytes) -> None:
    endpoint = lone()
    assert endpoint.receive(data, "peer", 0.0) == []
    stats = endpoint.statistics
    assert stats.malformed == 1
    assert stats.resets_sent == 0


def test_malformed_ack_does_not_stop_retransmission() -> None:
    client = lone()
    exchange, _ = client.send_request(get(), SERVER, 0.0)
    assert exchange.mid is not None
    bad = bytes((0x69, 0x45, exchange.mid >> 8, exchange.mid & 0xFF)) + bytes(9)
    assert client.receive(bad, SERVER, 0.1) == []
    assert exchange.state is ClientState.SENT
    assert any(isinstance(e, Transmit) for _, e in drive(client, 5.0))


# --- critical options in responses (§5.4.1) ----------------------------------------------------


def bad_option_response(number: int) -> Message:
    response = content()
    response.opt.add(number, b"\x02")
    return response


@pytest.mark.parametrize("number", [2001, 9, 19])
def test_piggybacked_response_with_unrecognized_critical_option(number: int) -> None:
    pair = Pair(on_request=lambda p, e: p.respond(e.exchange, bad_option_response(number)))
    exchange = pair.request()
    [failed] = pair.outcome(exchange)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, BadResponseError)
    pair.run_until(2000.0)
    # §4.2: rejecting an ACK is ignoring it: no RST; and no retransmission either.
    assert [d.sender for d in pair.wire] == [CLIENT, SERVER]
    stats = pair.client.statistics
    assert stats.rejected_responses == 1
    assert stats.resets_sent == 0
    assert stats.retransmissions == 0
    assert stats.outstanding_requests == 0


def test_piggybacked_response_with_malformed_recognized_critical_option() -> None:
    response = content()
    response.opt.add(7, b"\x01\x02\x03")  # Uri-Port: at most 2 bytes
    pair = Pair(on_request=lambda p, e: p.respond(e.exchange, response))
    exchange = pair.request()
    [failed] = pair.outcome(exchange)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, BadResponseError)


@pytest.mark.parametrize("number", [2000, 2002, 60, 14])
def test_unknown_or_elective_options_are_fine(number: int) -> None:
    response = content()
    response.opt.add(number, b"\x01\x02\x03\x04\x05\x06")  # Max-Age (14) too long: elective
    pair = Pair(on_request=lambda p, e: p.respond(e.exchange, response))
    exchange = pair.request()
    [event] = pair.outcome(exchange)
    assert isinstance(event, ResponseReceived)
    assert event.response.opt.get_all(number) == (b"\x01\x02\x03\x04\x05\x06",)


def test_recognized_response_options_are_configurable() -> None:
    config = MessagingConfig(recognized_response_options=frozenset({23}))
    pair = Pair(config, on_request=lambda p, e: p.respond(e.exchange, bad_option_response(23)))
    exchange = pair.request()
    assert isinstance(pair.outcome(exchange)[0], ResponseReceived)


def test_piggybacked_response_with_wrong_token_fails_the_request() -> None:
    client = lone()
    exchange, _ = client.send_request(get(token=TOKEN), SERVER, 0.0)
    assert exchange.mid is not None
    events = client.receive(make(ACK, CONTENT, exchange.mid, b"\x09"), SERVER, 0.1)
    [failed] = events
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, BadResponseError)
    assert client.statistics.rejected_responses == 1
    assert [e for _, e in drive(client, 1000.0)] == []


def test_piggybacked_ack_with_request_code_fails_the_request() -> None:
    client = lone()
    exchange, _ = client.send_request(get(token=TOKEN), SERVER, 0.0)
    assert exchange.mid is not None
    [failed] = client.receive(make(ACK, GET, exchange.mid, TOKEN), SERVER, 0.1)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, BadResponseError)


def test_con_separate_response_with_unrecognized_critical_option_is_reset() -> None:
    pair = Pair()
    exchange = pair.request()
    pair.run_until(1.0)
    server_side = server_exchange(pair)
    pair.respond(server_side, bad_option_response(2001))
    response, reset = pair.wire[-2:]
    assert reset == (1.0, CLIENT, empty(RST, response.message.mid))
    [failed] = pair.outcome(exchange)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, BadResponseError)
    assert isinstance(only(pair.server_events, ResponseFailed).error, ResetByPeerError)
    assert pair.client.statistics.rejected_responses == 1
    # Its retransmission (were the RST lost) gets the same RST.
    events = pair.client.receive(response.data, SERVER, 2.0)
    assert [e.data for e in events] == [reset.data]


def test_non_separate_response_with_unrecognized_critical_option_is_ignored() -> None:
    client = lone()
    exchange, _ = client.send_request(get(token=TOKEN), SERVER, 0.0)
    assert exchange.mid is not None
    client.receive(empty(ACK, exchange.mid), SERVER, 0.1)
    bad = make(NON, CONTENT, 0x7000, TOKEN, b"bad", options=((2001, b""),))
    assert client.receive(bad, SERVER, 0.5) == []
    assert exchange.state is ClientState.ACKNOWLEDGED  # still waiting
    assert client.statistics.rejected_responses == 1
    good = make(NON, CONTENT, 0x7001, TOKEN, b"good")
    [event] = client.receive(good, SERVER, 0.6)
    assert isinstance(event, ResponseReceived)
    assert event.response.payload == b"good"


# --- message IDs (§4.4) ---------------------------------------------------------------------


class StartAt(random.Random):
    """A Random whose randrange (the MID start) is fixed."""

    def __init__(self, start: int) -> None:
        super().__init__(0)
        self.start = start

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return self.start


def test_mid_start_is_random_per_seed_and_per_remote() -> None:
    starts = set()
    for seed in range(20):
        client = lone(seed=seed)
        exchange, _ = client.send_request(get(), SERVER, 0.0)
        starts.add(exchange.mid)
    assert len(starts) >= 19
    client = lone(seed=1)
    client.set_nstart(100)
    a = [client.send_request(get(), f"r{i}", 0.0)[0].mid for i in range(10)]
    assert len(set(a)) >= 9


def test_mids_increment_and_wrap() -> None:
    client = Messaging(rng=StartAt(0xFFFE))
    client.set_nstart(10)
    mids = []
    for _ in range(4):
        exchange, events = client.send_request(get(), SERVER, 0.0)
        [message] = decoded(events)
        assert message.mid == exchange.mid
        mids.append(exchange.mid)
    assert mids == [0xFFFE, 0xFFFF, 0, 1]


def test_mid_space_exhaustion_queues_until_exchange_lifetime() -> None:
    client = lone(seed=11)
    client.set_nstart(10**9)
    mids = []
    request = get()  # not modified by send_request: reusable
    for _ in range(0x10000):
        exchange, events = client.send_request(request, SERVER, 0.0)
        assert len(events) == 1
        mids.append(exchange.mid)
        client.abandon(exchange, 0.0)
    assert len(set(mids)) == 0x10000
    assert all((b - a) & 0xFFFF == 1 for a, b in pairwise(mids))
    assert not client.mid_available(SERVER, 0.0)
    assert client.mid_available("other", 0.0)

    queued, events = client.send_request(get(), SERVER, 0.0)
    # The driver is told (it may send the request from another endpoint).
    [exhausted] = events
    assert isinstance(exhausted, MessageIdsExhausted)
    assert (exhausted.remote, exhausted.queued) == (SERVER, (queued,))
    assert exhausted.free_at == EXCHANGE_LIFETIME
    assert queued.state is ClientState.QUEUED
    assert queued.mid is None
    assert client.statistics.queued_requests == 1
    # Another remote has its own MID space.
    elsewhere, events = client.send_request(get(), "other", 0.0)
    assert len(transmits(events)) == 1
    client.abandon(elsewhere, 0.0)

    timeline = drive(client, EXCHANGE_LIFETIME - 0.5)
    assert not any(isinstance(e, Transmit) and e.remote == SERVER for _, e in timeline)
    assert not client.mid_available(SERVER, EXCHANGE_LIFETIME - 0.5)
    assert queued.state is ClientState.QUEUED
    timeline = drive(client, EXCHANGE_LIFETIME)
    [(t, sent)] = [(t, e) for t, e in timeline if isinstance(e, Transmit)]
    assert t == EXCHANGE_LIFETIME
    assert sent.remote == SERVER
    assert decode(sent.data).mid == mids[0] == queued.mid
    assert queued.state is ClientState.SENT
    assert client.statistics.queued_requests == 0
    assert client.mid_available(SERVER, EXCHANGE_LIFETIME)


def _answer(exchange: ClientExchange) -> bytes:
    """A piggybacked 2.05 for ``exchange``."""
    assert exchange.mid is not None
    return make(ACK, Code.CONTENT, exchange.mid, exchange.token)


def test_a_queue_that_runs_out_of_mids_is_reported_in_order() -> None:
    """Requests queued behind NSTART, then the remote's MIDs run out (a small
    ``mid_space``): the queue is reported, in order, each time one finds no MID;
    a request moved away (abandoned while queued) is never sent from here."""
    client = lone(MessagingConfig(mid_space=3), seed=3)
    sent = [client.send_request(get(), SERVER, 0.0) for _ in range(5)]
    assert [len(transmits(events)) for _, events in sent] == [1, 0, 0, 0, 0]
    first, *queued = [exchange for exchange, _ in sent]
    assert client.mid_available(SERVER, 0.0)
    # Each answer starts the next; the third MID is the last.
    events = client.receive(_answer(first), SERVER, 1.0)
    assert len(transmits(events)) == 1
    assert queued[0].mid is not None
    events = client.receive(_answer(queued[0]), SERVER, 2.0)
    assert len(transmits(events)) == 1
    events = client.receive(_answer(queued[1]), SERVER, 3.0)
    [exhausted] = [e for e in events if isinstance(e, MessageIdsExhausted)]
    assert transmits(events) == []
    assert exhausted.remote == SERVER
    assert exhausted.queued == (queued[2], queued[3])
    assert exhausted.free_at == EXCHANGE_LIFETIME
    assert not client.mid_available(SERVER, 3.0)
    assert client.abandon(queued[2], 3.0) == []
    assert client.statistics.queued_requests == 1
    # The first MID frees after EXCHANGE_LIFETIME: the request left in the queue goes.
    timeline = drive(client, EXCHANGE_LIFETIME)
    [(t, out)] = [(t, e) for t, e in timeline if isinstance(e, Transmit)]
    assert t == EXCHANGE_LIFETIME
    assert decode(out.data).token == queued[3].token
    assert queued[2].mid is None
    assert client.statistics.queued_requests == 0


def test_mid_space_out_of_range_is_refused() -> None:
    for space in (0, 0x10001):
        with pytest.raises(ValueError):
            MessagingConfig(mid_space=space)
    assert MessagingConfig().mid_space == 0x10000


# --- tokens (§5.3.1) --------------------------------------------------------------------------


def test_default_token_is_random_eight_bytes() -> None:
    client = lone()
    client.set_nstart(10)
    tokens = [client.send_request(get(), SERVER, 0.0)[0].token for _ in range(10)]
    assert all(len(t) == 8 for t in tokens)
    assert len(set(tokens)) == 10
    other = lone(seed=1).send_request(get(), SERVER, 0.0)[0].token
    assert other not in tokens


@pytest.mark.parametrize("length", range(9))
def test_token_length_config(length: int) -> None:
    client = lone(MessagingConfig(token_length=length))
    exchange, events = client.send_request(get(), SERVER, 0.0)
    assert len(exchange.token) == length
    assert decoded(events)[0].token == exchange.token


def test_token_length_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="token length"):
        lone(MessagingConfig(token_length=9))


def test_zero_length_token_space_is_one_token_per_remote() -> None:
    client = lone(MessagingConfig(token_length=0))
    first, _ = client.send_request(get(), SERVER, 0.0)
    with pytest.raises(LocalProtocolError, match="no free token"):
        client.send_request(get(), SERVER, 0.0)
    client.send_request(get(), "other", 0.0)  # another remote is fine
    client.abandon(first, 0.0)
    assert client.send_request(get(), SERVER, 0.0)[0].token == b""


def test_user_token_is_used_and_in_use_token_refused() -> None:
    client = lone()
    request = get(token=TOKEN)
    exchange, events = client.send_request(request, SERVER, 0.0)
    assert exchange.token == TOKEN
    assert decoded(events)[0].token == TOKEN
    with pytest.raises(LocalProtocolError, match="already in use"):
        client.send_request(get(token=TOKEN), SERVER, 0.0)
    other, _ = client.send_request(get(token=TOKEN), "other", 0.0)
    assert other.token == TOKEN
    # The request object itself is not modified.
    assert request.mid is None
    assert request.mtype is None
    # Once done, the token is free again.
    client.receive(make(ACK, CONTENT, exchange.mid, TOKEN), SERVER, 0.1)
    again, _ = client.send_request(get(token=TOKEN), SERVER, 0.2)
    assert again.token == TOKEN


def test_queued_request_token_is_in_use() -> None:
    client = lone()
    client.send_request(get(), SERVER, 0.0)
    queued, _ = client.send_request(get(token=TOKEN), SERVER, 0.0)
    assert queued.state is ClientState.QUEUED
    with pytest.raises(LocalProtocolError):
        client.send_request(get(token=TOKEN), SERVER, 0.0)


def test_response_to_a_queued_request_token_gets_reset() -> None:
    client = lone()
    client.send_request(get(), SERVER, 0.0)
    queued, _ = client.send_request(get(token=TOKEN), SERVER, 0.0)
    events = client.receive(make(CON, CONTENT, 0x1234, TOKEN), SERVER, 0.1)
    assert [e.data for e in events] == [empty(RST, 0x1234)]
    assert queued.state is ClientState.QUEUED


@pytest.mark.parametrize(
    "request_",
    [
        Message(code=CONTENT),
        Message(code=Code.EMPTY),
        Message(code=GET, mtype=ACK),
        Message(code=GET, mtype=RST),
    ],
)
def test_invalid_requests_are_refused(request_: Message) -> None:
    client = lone()
    with pytest.raises(LocalProtocolError):
        client.send_request(request_, SERVER, 0.0)
    assert client.statistics.outstanding_requests == 0
    assert client.statistics.queued_requests == 0


# --- NSTART (§4.7) ------------------------------------------------------------------------------


def test_nstart_one_queues_the_second_request() -> None:
    pair = Pair()
    first = pair.request(get("a"))
    second = pair.request(get("b"))
    assert second.state is ClientState.QUEUED
    assert len(pair.sent_by(CLIENT)) == 1
    assert pair.client.statistics.outstanding_requests == 1
    assert pair.client.statistics.queued_requests == 1
    pair.respond(server_exchange(pair), content())
    assert isinstance(pair.outcome(first)[0], ResponseReceived)
    assert second.state is ClientState.SENT
    assert [d.message.opt.uri_path for d in pair.sent_by(CLIENT)] == [("a",), ("b",)]
    assert pair.client.statistics.queued_requests == 0


def test_nstart_counts_acknowledged_requests_until_their_response() -> None:
    pair = Pair()
    first = pair.request(get("a"))
    pair.run_until(1.0)
    assert first.state is ClientState.ACKNOWLEDGED
    second = pair.request(get("b"))
    assert second.state is ClientState.QUEUED


def test_nstart_is_per_remote() -> None:
    client = lone()
    client.send_request(get(), SERVER, 0.0)
    queued, events = client.send_request(get(), SERVER, 0.0)
    assert events == []
    elsewhere, events = client.send_request(get(), "other", 0.0)
    assert [e.remote for e in transmits(events)] == ["other"]
    assert elsewhere.state is ClientState.SENT
    assert queued.state is ClientState.QUEUED


def test_set_nstart() -> None:
    client = lone()
    client.set_nstart(64)
    exchanges = [client.send_request(get(), SERVER, 0.0)[0] for _ in range(65)]
    assert [e.state for e in exchanges].count(ClientState.SENT) == 64
    assert exchanges[-1].state is ClientState.QUEUED
    assert client.statistics.outstanding_requests == 64
    with pytest.raises(ValueError, match="NSTART"):
        client.set_nstart(0)
    # Finishing one starts the queued one.
    events = client.abandon(exchanges[0], 0.0)
    assert [decode(e.data).mid for e in transmits(events)] == [exchanges[-1].mid]


def test_params_nstart_is_used() -> None:
    client = lone(MessagingConfig(params=TransmissionParameters(NSTART=3)))
    states = [client.send_request(get(), SERVER, 0.0)[0].state for _ in range(4)]
    assert states == [ClientState.SENT] * 3 + [ClientState.QUEUED]


def test_queue_is_first_in_first_out() -> None:
    client = lone()
    first, _ = client.send_request(get("0"), SERVER, 0.0)
    queued = [client.send_request(get(str(i)), SERVER, 0.0)[0] for i in range(1, 4)]
    order = []
    current = first
    for _ in range(3):
        events = client.abandon(current, 1.0)
        [message] = decoded(events)
        order.append(message.opt.uri_path)
        current = next(e for e in queued if e.state is ClientState.SENT)
    assert order == [("1",), ("2",), ("3",)]


def test_abandon_queued_request() -> None:
    pair = Pair()
    first = pair.request()
    queued = pair.request()
    assert pair.abandon(queued) == []
    assert queued.state is ClientState.DONE
    assert pair.client.statistics.queued_requests == 0
    assert pair.abandon(queued) == []  # idempotent
    pair.respond(server_exchange(pair), content())
    assert isinstance(pair.outcome(first)[0], ResponseReceived)
    pair.run_until(2000.0)
    assert len(pair.sent_by(CLIENT)) == 1
    assert pair.outcome(queued) == []


def test_abandon_in_flight_request() -> None:
    pair = Pair(filter=drop_all(CLIENT))
    exchange = pair.request(get(token=TOKEN))
    pair.run_until(2.5)
    sent_before = len(pair.wire)
    assert pair.abandon(exchange) == []
    assert exchange.state is ClientState.DONE
    assert pair.abandon(exchange) == []
    pair.run_until(100_000.0)
    assert len(pair.wire) == sent_before
    assert pair.outcome(exchange) == []
    stats = pair.client.statistics
    assert stats.outstanding_requests == 0
    assert stats.requests_timed_out == 0
    # The token is free: a late response now gets RST.
    events = pair.client.receive(make(CON, CONTENT, 0x0101, TOKEN), SERVER, 100_001.0)
    assert [e.data for e in events] == [empty(RST, 0x0101)]
    events = pair.client.receive(make(NON, CONTENT, 0x0102, TOKEN), SERVER, 100_001.0)
    assert [e.data for e in events] == [empty(RST, 0x0102)]


def test_abandon_in_flight_request_starts_the_next() -> None:
    client = lone()
    first, _ = client.send_request(get("a"), SERVER, 0.0)
    second, _ = client.send_request(get("b"), SERVER, 0.0)
    events = client.abandon(first, 0.5)
    [message] = decoded(events)
    assert message.opt.uri_path == ("b",)
    assert second.state is ClientState.SENT
    assert second.first_sent == 0.5
    # The late ACK of the abandoned one is unmatched, without effect.
    assert first.mid is not None
    assert client.receive(make(ACK, CONTENT, first.mid, first.token), SERVER, 0.6) == []
    assert client.statistics.unmatched == 1


def test_abandon_acknowledged_request() -> None:
    pair = Pair()
    exchange = pair.request()
    pair.run_until(1.0)
    assert pair.abandon(exchange) == []
    pair.run_until(10_000.0)
    assert pair.outcome(exchange) == []
    assert pair.client.statistics.requests_timed_out == 0


# --- network errors ------------------------------------------------------------------------------


def test_peer_error_fails_outstanding_requests_to_that_remote() -> None:
    client = lone()
    client.set_nstart(2)
    sent, _ = client.send_request(get(), SERVER, 0.0)
    acked, _ = client.send_request(get(), SERVER, 0.0)
    assert acked.mid is not None
    client.receive(empty(ACK, acked.mid), SERVER, 0.1)
    assert acked.state is ClientState.ACKNOWLEDGED
    elsewhere, _ = client.send_request(get(), "other", 0.0)
    error = ConnectionRefusedError(111, "refused")
    events = client.peer_error(SERVER, error, 0.2)
    failed = [e for e in events if isinstance(e, RequestFailed)]
    assert {id(e.exchange) for e in failed} == {id(sent), id(acked)}
    for event in failed:
        assert isinstance(event.error, NetworkError)
        assert event.error.os_error is error
    assert transmits(events) == []
    assert elsewhere.state is ClientState.SENT
    assert client.statistics.outstanding_requests == 1
    # No more retransmissions towards SERVER.
    timeline = drive(client, 1000.0)
    assert all(e.remote == "other" for _, e in timeline if isinstance(e, Transmit))


def test_peer_error_does_not_fail_queued_requests() -> None:
    client = lone()
    sent, _ = client.send_request(get("a"), SERVER, 0.0)
    queued, _ = client.send_request(get("b"), SERVER, 0.0)
    events = client.peer_error(SERVER, OSError("unreachable"), 1.0)
    failed = [e.exchange for e in events if isinstance(e, RequestFailed)]
    assert failed == [sent]
    # The queued request now gets its turn (and is not declared failed after being sent).
    [message] = decoded(events)
    assert message.opt.uri_path == ("b",)
    assert queued.state is ClientState.SENT
    assert client.statistics.outstanding_requests == 1


def test_peer_error_for_unknown_remote_is_harmless() -> None:
    client = lone()
    assert client.peer_error("nobody", OSError(), 0.0) == []


def test_a_failed_session_ends_every_exchange_with_the_remote_with_that_error() -> None:
    client = lone()
    client.set_nstart(2)  # (an observation frees its slot)
    observing, events = client.send_request(get("obs", observe=0), SERVER, 0.0)
    [registration] = decoded(events)
    assert registration.mid is not None
    notification = make(ACK, CONTENT, registration.mid, registration.token, b"1", [(6, b"\x01")])
    client.receive(notification, SERVER, 0.1)
    assert observing.state is ClientState.OBSERVING
    acked, events = client.send_request(get("a"), SERVER, 0.2)
    assert acked.mid is not None
    client.receive(empty(ACK, acked.mid), SERVER, 0.3)
    sent, _ = client.send_request(get("b"), SERVER, 0.4)
    ping, _ = client.send_ping(SERVER, 0.5)  # (NSTART 2: it waits)
    queued, _ = client.send_request(get("c"), SERVER, 0.5)
    assert ping.state is ClientState.QUEUED
    assert queued.state is ClientState.QUEUED
    elsewhere, _ = client.send_request(get(), "other", 0.5)
    error = HandshakeError("the peer's Finished does not match", 51)
    events = client.peer_error(SERVER, error, 1.0)
    failed = {id(e.exchange): e.error for e in events if isinstance(e, RequestFailed)}
    assert failed == {id(x): error for x in (observing, acked, sent, ping, queued)}
    assert transmits(events) == []
    assert elsewhere.state is ClientState.SENT
    assert client.statistics.queued_requests == 0
    assert client.statistics.outstanding_requests == 1
    timeline = drive(client, 1000.0)
    assert all(e.remote == "other" for _, e in timeline if isinstance(e, Transmit))


def test_a_failed_session_ends_a_sent_ping_and_the_notifications_in_flight() -> None:
    server = lone()
    request = make(CON, GET, 0x10, TOKEN, options=[(6, b""), *URI_PATH_X])
    [received] = [e for e in server.receive(request, CLIENT, 0.0) if isinstance(e, RequestReceived)]
    server.respond(received.exchange, content(observe=1), 0.01)
    events = server.notify(received.exchange, content(observe=2), 0.5, confirmable=True)
    assert len(transmits(events)) == 1
    ping, _ = server.send_ping(CLIENT, 0.6)
    assert ping.state is ClientState.SENT
    error = DtlsAlertError(2, 20, "bad_record_mac")
    events = server.peer_error(CLIENT, error, 1.0)
    assert only(events, ResponseFailed).error is error
    assert only(events, ResponseFailed).exchange is received.exchange
    assert only(events, RequestFailed).exchange is ping
    assert only(events, RequestFailed).error is error
    assert drive(server, 1000.0) == []  # nothing retransmitted


def test_an_rst_to_an_earlier_non_notification_stops_the_con_one_in_flight() -> None:
    server = lone()
    request = make(CON, GET, 0x10, TOKEN, options=[(6, b""), *URI_PATH_X])
    [received] = [e for e in server.receive(request, CLIENT, 0.0) if isinstance(e, RequestReceived)]
    server.respond(received.exchange, content(observe=1), 0.01)
    [non] = decoded(server.notify(received.exchange, content(observe=2), 0.1))
    [con] = decoded(server.notify(received.exchange, content(observe=3), 0.2, confirmable=True))
    assert (non.mtype, con.mtype) == (NON, CON)
    assert non.mid is not None
    assert con.mid is not None
    events = server.receive(empty(RST, non.mid), CLIENT, 0.3)  # the observer is gone
    assert only(events, ResponseFailed).exchange is received.exchange
    # The CON notification is no longer retransmitted, and its late ACK is unmatched.
    assert server.receive(empty(ACK, con.mid), CLIENT, 0.4) == []
    assert drive(server, 1000.0) == []


def test_a_failed_session_forgets_its_deduplication_entries() -> None:
    # A reply of one session is never replayed into the next one (another peer, maybe).
    server = lone()
    request = make(CON, GET, 0x77, TOKEN, options=URI_PATH_X)
    [received] = [e for e in server.receive(request, CLIENT, 0.0) if isinstance(e, RequestReceived)]
    server.respond(received.exchange, content(), 0.01)
    assert others(server.receive(request, CLIENT, 0.5)) == []  # a duplicate: the reply again
    assert server.statistics.dedup_entries == 1
    assert server.peer_error(CLIENT, HandshakeError("replaced"), 1.0) == []
    assert server.statistics.dedup_entries == 0
    again = server.receive(request, CLIENT, 1.5)
    assert isinstance(only(again, RequestReceived), RequestReceived)  # new, in the new session


# --- statistics ----------------------------------------------------------------------------------


def test_statistics_start_at_zero() -> None:
    stats = lone().statistics
    assert all(value == 0 for value in vars_of(stats).values())


def vars_of(stats: Any) -> dict[str, int]:
    import attrs

    return attrs.asdict(stats)


def test_statistics_move_as_expected() -> None:
    config = MessagingConfig(max_pending_requests=2, dedup_max_per_remote=2, max_remotes=2)
    endpoint = lone(config)
    before = vars_of(endpoint.statistics)

    def delta() -> dict[str, int]:
        now = vars_of(endpoint.statistics)
        changed = {k: now[k] - before[k] for k in now if now[k] != before[k]}
        before.update(now)
        return changed

    endpoint.receive(b"\x40\x00\x00\x01", "a", 0.0)
    assert delta() == {"datagrams_received": 1, "pings": 1, "resets_sent": 1}
    endpoint.receive(b"\x49\x01\x00\x02", "a", 0.0)
    assert delta() == {"datagrams_received": 1, "malformed": 1, "resets_sent": 1}
    [got] = endpoint.receive(make(CON, GET, 3, TOKEN), "a", 0.0)
    assert delta() == {"datagrams_received": 1, "pending_server_requests": 1}
    endpoint.receive(make(CON, GET, 3, TOKEN), "a", 0.0)
    assert delta() == {"datagrams_received": 1, "duplicates": 1}
    endpoint.receive(make(NON, GET, 4, TOKEN), "a", 0.0)
    endpoint.receive(make(NON, GET, 5, TOKEN), "a", 0.0)
    assert delta() == {"datagrams_received": 2, "pending_server_requests": 1, "overloaded": 1}
    endpoint.respond(got.exchange, content(), 0.0)
    assert delta() == {"pending_server_requests": -1, "dedup_entries": 1}
    endpoint.receive(empty(ACK, 9), "a", 0.0)
    assert delta() == {"datagrams_received": 1, "unmatched": 1}
    endpoint.receive(make(CON, CONTENT, 10, b"\x77"), "a", 0.0)
    assert delta() == {
        "datagrams_received": 1,
        "unmatched": 1,
        "resets_sent": 1,
        "dedup_entries": 1,
    }
    endpoint.receive(make(CON, CONTENT, 11, b"\x77"), "a", 0.0)
    assert delta() == {
        "datagrams_received": 1,
        "unmatched": 1,
        "resets_sent": 1,
        "dedup_evicted": 1,
    }
    # Client side.
    exchange, _ = endpoint.send_request(get(), "b", 0.0)
    assert delta() == {"outstanding_requests": 1, "mid_remotes": 1}
    endpoint.send_request(get(), "b", 0.0)
    assert delta() == {"queued_requests": 1}
    endpoint.send_request(get(), "c", 0.0)
    assert delta() == {"outstanding_requests": 1, "mid_remotes": 1}
    endpoint.send_request(get(), "d", 0.0)
    assert delta() == {"outstanding_requests": 1, "mid_remotes_evicted": 1}
    assert exchange.mid is not None
    rejected = make(ACK, CONTENT, exchange.mid, exchange.token, options=((2001, b""),))
    endpoint.receive(rejected, "b", 0.1)
    # The queued request to "b" starts; "b" was evicted from the MID state, so
    # it comes back and evicts "c" (the least recently used).
    assert delta() == {
        "datagrams_received": 1,
        "rejected_responses": 1,
        "queued_requests": -1,
        "mid_remotes_evicted": 1,
    }
    drive(endpoint, 1000.0)
    changed = delta()
    assert changed["retransmissions"] == 3 * P.MAX_RETRANSMIT
    assert changed["requests_timed_out"] == 3
    assert changed["outstanding_requests"] == -3
    assert changed["dedup_entries"] == -2
    assert endpoint.statistics.pending_server_requests == 1  # the unanswered NON


# --- property: random loss, duplication and delay ------------------------------------------------

#: How the server answers, by request: (request type, what the application does, when).
KINDS = {
    "piggy": (CON, "content", 0.0),
    "separate": (CON, "content", 1.0),
    "separate-non": (CON, "content-non", 1.0),
    "con-none": (CON, None, 0.5),
    "non": (NON, "content", 0.0),
    "non-late": (NON, "content", 2.0),
    "non-none": (NON, None, 0.5),
    # After the client gave up (93 s for NON, 247 s after an empty ACK): RST.
    "non-too-late": (NON, "content", 120.0),
    "separate-too-late": (CON, "content", 300.0),
}

network_plans = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.0, 0.05, 1.0, 3.5])),
    max_size=30,
)


def run_scenario(
    kinds: list[str], starts: list[float], plan: list[tuple[int, float]], nstart: int
) -> None:
    seen = [0]

    def network(side: str, data: bytes) -> tuple[float, ...]:
        index = seen[0]
        seen[0] += 1
        if index >= len(plan):
            return (0.0,)
        copies, delay = plan[index]
        return tuple(delay + 0.3 * i for i in range(copies))

    def on_request(pair: Pair, event: RequestReceived) -> None:
        exchange = event.exchange
        _, action, after = KINDS[exchange.request.payload.split(b":")[0].decode()]
        if action is None:
            response = None
        else:
            mtype = NON if action == "content-non" else None
            response = content(exchange.request.payload + b"!", mtype=mtype)
        pair.at(pair.now + after, lambda: pair.respond(exchange, response))

    pair = Pair(filter=network, on_request=on_request, seed=len(plan))
    pair.client.set_nstart(nstart)
    sent: list[tuple[ClientExchange, str, bytes]] = []

    def send(kind: str, payload: bytes) -> None:
        mtype = KINDS[kind][0]
        sent.append((pair.request(get(mtype=mtype, payload=payload)), kind, payload))

    for i, (kind, start) in enumerate(zip(kinds, starts, strict=False)):
        payload = f"{kind}:{i}".encode()
        pair.at(start, lambda kind=kind, payload=payload: send(kind, payload))
    pair.run_until(5000.0)

    assert len(sent) == len(kinds)
    received = Counter(e.exchange.request.payload for e in pair.received_requests())
    assert all(count == 1 for count in received.values()), received
    for exchange, kind, payload in sent:
        outcomes = pair.outcome(exchange)
        assert len(outcomes) == 1, (kind, outcomes)  # ends exactly once
        assert exchange.state is ClientState.DONE
        if isinstance(outcomes[0], ResponseReceived):
            assert KINDS[kind][1] is not None
            assert outcomes[0].response.payload == payload + b"!"
            assert received[payload] == 1  # the server saw it exactly once
    server_outcomes = Counter(
        id(e.exchange)
        for e in pair.server_events
        if isinstance(e, ResponseAcknowledged | ResponseFailed)
    )
    assert all(count == 1 for count in server_outcomes.values())
    for event in pair.received_requests():
        assert event.exchange.state is ServerState.DONE
    for endpoint in (pair.client, pair.server):
        stats = endpoint.statistics
        assert stats.outstanding_requests == 0
        assert stats.queued_requests == 0
        assert stats.pending_server_requests == 0
        assert stats.dedup_entries == 0
        assert endpoint._reliability.awaiting_ack == 0
        assert endpoint._reliability._sent_non == {}
        assert len(endpoint._matcher) == 0
        assert endpoint.next_deadline() is None


@settings(deadline=None, max_examples=150)
@given(
    kinds=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=6),
    starts=st.lists(st.sampled_from([0.0, 0.0, 0.2, 4.0, 60.0]), min_size=6, max_size=6),
    plan=network_plans,
    nstart=st.sampled_from([1, 2, 8]),
)
def test_every_request_ends_exactly_once_despite_loss_and_duplication(
    kinds: list[str], starts: list[float], plan: list[tuple[int, float]], nstart: int
) -> None:
    run_scenario(kinds, starts, plan, nstart)


@pytest.mark.parametrize("seed", range(20))
def test_lossy_network_scenarios(seed: int) -> None:
    rng = random.Random(seed)
    kinds = [rng.choice(sorted(KINDS)) for _ in range(8)]
    starts = [rng.choice([0.0, 0.5, 3.0, 30.0]) for _ in range(8)]
    plan = [(rng.choice([0, 1, 1, 1, 2]), rng.choice([0.0, 0.1, 2.0])) for _ in range(60)]
    run_scenario(kinds, starts, plan, rng.choice([1, 3]))


def test_reset_after_retransmissions_leaves_no_timer() -> None:
    client = lone()
    exchange, _events = client.send_request(get(), SERVER, 0.0)
    assert exchange.mid is not None
    retransmitted = []
    for when, event in drive(client, 10.0):  # two retransmissions by 10 s (at 2-3 s, 6-9 s)
        assert isinstance(event, Transmit)
        retransmitted.append(when)
    assert len(retransmitted) == 2
    [failed] = client.receive(empty(RST, exchange.mid), SERVER, 10.0)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, ResetByPeerError)
    assert client.next_deadline() is None  # the retransmission timer is gone, not just stale
    assert [e for _, e in drive(client, 10_000.0)] == []
    assert client.statistics.retransmissions == 2


def test_reset_of_a_con_notification_leaves_no_timer() -> None:
    server = lone()
    [received] = server.receive(
        make(CON, GET, 0x77, TOKEN, b"", ((6, b""), *URI_PATH_X)), CLIENT, 0.0
    )
    assert isinstance(received, RequestReceived)
    server.respond(received.exchange, content(b"v1", observe=1), 0.0)
    [sent] = transmits(
        server.notify(received.exchange, content(b"v2", observe=2), 1.0, confirmable=True)
    )
    mid = decode(sent.data).mid
    assert mid is not None
    retransmitted = [e for _, e in drive(server, 4.5) if isinstance(e, Transmit)]
    assert len(retransmitted) == 1  # one retransmission (at 3-4 s), then the RST
    [failed] = server.receive(empty(RST, mid), CLIENT, 4.5)
    assert isinstance(failed, ResponseFailed)
    assert isinstance(failed.error, ResetByPeerError)
    # Only the sweep of the registration's deduplication entry is left.
    assert server.next_deadline() == EXCHANGE_LIFETIME
    assert [e for _, e in drive(server, 10_000.0)] == []
    assert server.statistics.retransmissions == 1


@pytest.mark.parametrize("mtype", [Type.CON, Type.NON])
def test_a_received_request_s_exchange_is_what_its_constructor_makes(mtype: Type) -> None:
    # The machine builds a received request's exchange and event inline (the
    # hot path); every field must be what ServerExchange(...) would have set.
    from coap_trio.codec import encode

    machine = Messaging(MessagingConfig(), random.Random(1))
    request = Message(code=Code.GET, mtype=mtype, mid=0x1234, token=b"tk", uri_path=("a",))
    (event,) = machine.receive(encode(request), "peer", 0.0)
    assert type(event) is RequestReceived
    made = event.exchange
    expected = ServerExchange(made.request, "peer", ServerState.PENDING)
    for name in ServerExchange.__slots__:
        if name == "ack_ticket":  # the piggyback window (a CON's) is the machine's
            continue
        assert getattr(made, name) == getattr(expected, name), name
    assert made.ack_ticket == (-1 if mtype is Type.CON else 0)
    assert len(RequestReceived.__slots__) == 1
