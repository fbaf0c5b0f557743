"""Multicast in the messaging machines (RFC 7252 §8): a client's group request and a
group endpoint's server side, sans-I/O (time passed in, no sockets)."""

from __future__ import annotations

import random

import pytest

from coap_trio.codec import decode, encode
from coap_trio.errors import LocalProtocolError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.protocol.exchanges import (
    ClientState,
    Event,
    GroupResponseReceived,
    RequestReceived,
    Transmit,
)
from coap_trio.protocol.messaging import GroupMessaging, Messaging
from coap_trio.protocol.stream_messaging import StreamMessaging

GROUP = ("224.0.1.187", 5683)
MEMBER_A, MEMBER_B = ("192.0.2.1", 5683), ("192.0.2.2", 5683)
CLIENT = ("192.0.2.9", 40000)


def sent(events: list[Event]) -> list[Message]:
    return [decode(e.data) for e in events if type(e) is Transmit]


def response(request: Message, mid: int, mtype: Type = Type.NON, payload: bytes = b"x") -> bytes:
    answer = Message(code=Code.CONTENT, mtype=mtype, mid=mid, token=request.token, payload=payload)
    return encode(answer)


def group_request() -> tuple[Messaging, Message, object, list[Event]]:
    client = Messaging(rng=random.Random(1))
    exchange, events = client.send_group_request(Message(code=Code.GET), GROUP, 0.0)
    [wire] = sent(events)
    return client, wire, exchange, events


def test_a_group_request_goes_out_as_non_and_takes_every_members_response() -> None:
    client, wire, exchange, _ = group_request()
    assert wire.mtype is Type.NON
    assert wire.token
    first = client.receive(response(wire, 100), MEMBER_A, 0.1)
    second = client.receive(response(wire, 200, payload=b"y"), MEMBER_B, 0.2)
    assert [type(e) for e in first + second] == [GroupResponseReceived] * 2
    members = [e.response.remote for e in first + second if type(e) is GroupResponseReceived]
    assert members == [MEMBER_A, MEMBER_B]
    # A duplicate from one member is dropped; the exchange is still open.
    assert client.receive(response(wire, 100), MEMBER_A, 0.3) == []
    assert exchange.state is ClientState.SENT  # type: ignore[attr-defined]


def test_a_group_request_has_no_deadline_and_ends_by_abandon() -> None:
    client, wire, exchange, _ = group_request()
    assert [e for e in client.timeout(10_000.0) if type(e) is not Transmit] == []
    assert exchange.state is ClientState.SENT  # type: ignore[attr-defined]
    client.abandon(exchange, 10_000.0)  # type: ignore[arg-type]
    late = client.receive(response(wire, 300), MEMBER_A, 10_001.0)
    [reset] = sent(late)
    assert reset.mtype is Type.RST
    assert reset.mid == 300
    assert client.statistics.outstanding_requests == 0


def test_a_con_response_from_a_member_is_acknowledged_and_the_window_stays_open() -> None:
    client, wire, exchange, _ = group_request()
    events = client.receive(response(wire, 7, Type.CON), MEMBER_A, 0.1)
    assert [m.mtype for m in sent(events)] == [Type.ACK]
    assert any(type(e) is GroupResponseReceived for e in events)
    bad = Message(code=Code.CONTENT, mtype=Type.CON, mid=8, token=wire.token)
    bad.opt.add(65001, b"")  # an unrecognized critical option: rejected, with RST
    events = client.receive(encode(bad), MEMBER_B, 0.2)
    assert [m.mtype for m in sent(events)] == [Type.RST]
    assert not any(type(e) is GroupResponseReceived for e in events)
    assert exchange.state is ClientState.SENT  # type: ignore[attr-defined]
    later = client.receive(response(wire, 9), MEMBER_B, 0.3)
    assert [type(e) for e in later] == [GroupResponseReceived]


def test_group_tokens_are_not_reused_for_unicast_requests() -> None:
    client, wire, _, _ = group_request()
    for _ in range(200):
        exchange, _ = client.send_request(Message(code=Code.GET, mtype=Type.NON), MEMBER_A, 0.0)
        assert exchange.token != wire.token


def test_a_confirmable_group_request_is_refused() -> None:
    client = Messaging(rng=random.Random(1))
    with pytest.raises(LocalProtocolError):
        client.send_group_request(Message(code=Code.GET, mtype=Type.CON), GROUP, 0.0)
    with pytest.raises(LocalProtocolError):
        StreamMessaging().send_group_request(Message(code=Code.GET), GROUP, 0.0)


def test_the_group_endpoint_takes_non_requests_only_and_never_answers_with_rst_or_ack() -> None:
    server = GroupMessaging(rng=random.Random(2))
    non = Message(code=Code.GET, mtype=Type.NON, mid=1, token=b"t")
    [received] = server.receive(encode(non), CLIENT, 0.0)
    assert type(received) is RequestReceived
    assert server.receive(encode(non), CLIENT, 0.1) == []  # a duplicate
    con = Message(code=Code.GET, mtype=Type.CON, mid=2, token=b"u")
    ping = Message(code=Code.EMPTY, mtype=Type.CON, mid=3)
    stray = Message(code=Code.CONTENT, mtype=Type.NON, mid=4, token=b"v")
    for wire in (encode(con), encode(ping), encode(stray), b"\x40", b"\xff\xff"):
        assert server.receive(wire, CLIENT, 0.2) == []
    stats = server.statistics
    assert stats.duplicates == 1
    assert stats.resets_sent == 0
    assert stats.malformed == 2
    # The answer is a NON response with the request's token.
    [answer] = sent(server.respond(received.exchange, Message(code=Code.CONTENT), 0.3))
    assert (answer.mtype, answer.token, answer.code) == (Type.NON, b"t", Code.CONTENT)
    assert server.multicast
    assert not Messaging().multicast
