"""End-to-end tests of the server: the Responder's rules, served by a Context.

A server :class:`~coap_trio.context.Context` runs on a
:class:`~coap_trio.testing.MemoryNetwork` under pytest-trio's
``autojump_clock`` (timeouts of minutes cost no real time); every test is
bounded by ``trio.fail_after``. It is driven either by a client Context or,
to send exact bytes and see every reply, by a bare network endpoint
(:class:`RawPeer`). What is checked is what the wire shows (replies and the
network's capture), what the handler saw (render counts) and the server's
``statistics``. The Site and Resource classes of :mod:`coap_trio.resource`
are tested here only through the network; their own unit tests live elsewhere.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing

from coap_trio import linkformat
from coap_trio.codec import decode, encode
from coap_trio.context import Context, open_context
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.numbers.contentformat import ContentFormat
from coap_trio.numbers.optionnumbers import OptionNumber
from coap_trio.numbers.types import Type
from coap_trio.options import encode_uint
from coap_trio.protocol.config import MessagingConfig
from coap_trio.remote import DatagramRemote
from coap_trio.resource import Resource, Site
from coap_trio.response_errors import NotFound
from coap_trio.testing import LinkConditions, MemoryNetwork

SERVER = "10.0.0.2"
PORT = 5683
SERVER_ADDRESS = DatagramRemote((SERVER, PORT), "coap")
PEER = "10.0.0.9"  # where the raw peer sends from
BASE = f"coap://{SERVER}"

PARAMS = TransmissionParameters()
ACK_DELAY = MessagingConfig().ack_delay
#: Generous bound for one test in virtual time (autojump makes it free).
VIRTUAL_LIMIT = 1000.0
#: How long a render of ``/slow`` takes: far past the piggyback window.
SLOW = 1.0


# -- the site of most tests ----------------------------------------------------------------


class Scripted:
    """A plain ``render`` object (the Resource contract) that behaves by its first segment.

    ``/missing`` raises ``NotFound("gone")``, ``/broken`` raises
    ``ValueError("secret")``, ``/slow`` takes :attr:`delay` seconds, ``/gate``
    waits for :attr:`release`; anything else answers 2.05 at once. Every
    render is recorded (when it starts) in :attr:`rendered`.
    """

    def __init__(self, delay: float = SLOW) -> None:
        self.rendered: list[Message] = []
        self.release = trio.Event()
        self.delay = delay

    async def render(self, request: Message) -> Message:
        self.rendered.append(request)
        kind = request.opt.uri_path[0] if request.opt.uri_path else ""
        if kind == "missing":
            raise NotFound("gone")
        if kind == "broken":
            raise ValueError("secret")
        if kind == "slow":
            await trio.sleep(self.delay)
        elif kind == "gate":
            await self.release.wait()
        return Message(code=Code.CONTENT, payload=b"hello " + request.payload)

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False


# -- helpers ---------------------------------------------------------------------------------


class RawPeer:
    """A bare endpoint at PEER: sends exact datagrams to the server, records every reply."""

    def __init__(self, net: MemoryNetwork, host: str = PEER) -> None:
        self.endpoint = net.open_endpoint(host, 0)
        #: The datagrams received from the server, in order.
        self.received: list[bytes] = []
        self._changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.endpoint.run, self._on_datagrams, self._on_error)

    def _on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, source in batch:
            assert source == SERVER_ADDRESS, source
            self.received.append(data)
        self._changed.set()
        self._changed = trio.Event()

    @staticmethod
    def _on_error(remote: DatagramRemote, error: OSError) -> None:
        raise AssertionError(f"unexpected network error from {remote}: {error}")

    def send(self, datagram: bytes | Message) -> bytes:
        data = datagram if isinstance(datagram, bytes) else encode(datagram)
        self.endpoint.send(data, SERVER_ADDRESS)
        return data

    @property
    def messages(self) -> list[Message]:
        return [decode(data) for data in self.received]

    async def wait_for(self, count: int) -> list[Message]:
        """Wait (bounded by the test's ``fail_after``) until ``count`` replies arrived."""
        while len(self.received) < count:
            await self._changed.wait()
        return self.messages


def request(
    path: str | tuple[str, ...] = "ok",
    *,
    mtype: Type = Type.CON,
    mid: int = 0x1234,
    token: bytes = b"\x01\x02",
    code: Code = Code.GET,
    payload: bytes = b"",
    options: tuple[tuple[int, bytes], ...] = (),
    **typed: Any,
) -> bytes:
    """The datagram of a request to the server, with raw ``options`` added."""
    segments = (path,) if isinstance(path, str) else path
    message = Message(code=code, mtype=mtype, mid=mid, token=token, payload=payload, **typed)
    if segments:
        message.opt.uri_path = segments
    for number, value in options:
        message.opt.add(number, value)
    return encode(message)


def empty_ack(mid: int) -> bytes:
    return encode(Message(code=Code.EMPTY, mtype=Type.ACK, mid=mid))


@asynccontextmanager
async def server_and_peer(
    net: MemoryNetwork, site: Any, **server_options: Any
) -> AsyncIterator[tuple[Context, RawPeer]]:
    """A server at SERVER:PORT serving ``site``, and a started RawPeer."""
    async with (
        open_context(
            network=net, bind=(SERVER, PORT), site=site, rng=random.Random(1), **server_options
        ) as server,
        trio.open_nursery() as nursery,
    ):
        peer = RawPeer(net)
        await peer.start(nursery)
        yield server, peer
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def server_and_client(
    net: MemoryNetwork, site: Any, **server_options: Any
) -> AsyncIterator[tuple[Context, Context]]:
    """A server at SERVER:PORT serving ``site``, and a client Context on the wildcard."""
    async with (
        open_context(
            network=net, bind=(SERVER, PORT), site=site, rng=random.Random(1), **server_options
        ) as server,
        open_context(network=net, rng=random.Random(2)) as client,
    ):
        yield server, client


def from_server(net: MemoryNetwork) -> list[tuple[float, bytes, int]]:
    """(time, bytes, copy number) of every datagram the server sent, oldest first."""
    return [(r.time, r.data, r.copy) for r in net.capture if r.source == SERVER_ADDRESS]


# -- piggybacked and separate responses ----------------------------------------------------------


async def test_quick_render_is_piggybacked_in_the_ack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (server, peer):
            peer.send(request(code=Code.POST, mid=0xBEEF, token=b"\xaa\xbb\xcc", payload=b"p"))
            (reply,) = await peer.wait_for(1)
            assert trio.current_time() == 0.0  # answered at once, no ACK delay
            await trio.sleep(60)  # nothing else follows: no separate response, no retransmission
            assert len(peer.received) == 1
            assert server.statistics.messaging[0].retransmissions == 0
    assert (reply.mtype, reply.code, reply.mid, reply.token) == (
        Type.ACK,
        Code.CONTENT,
        0xBEEF,
        b"\xaa\xbb\xcc",
    )
    assert reply.payload == b"hello p"
    assert len(site.rendered) == 1


@pytest.mark.parametrize(("render_time", "piggybacked"), [(0.3, True), (0.7, False)])
async def test_the_piggyback_window_is_the_configured_ack_delay(
    autojump_clock: trio.testing.MockClock, render_time: float, piggybacked: bool
) -> None:
    net = MemoryNetwork(seed=0)
    config = MessagingConfig(ack_delay=0.5)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, Scripted(delay=render_time), config=config) as (_, peer):
            peer.send(request("slow", mid=5))
            first = (await peer.wait_for(1))[0]
            first_at = trio.current_time()
    assert first.mid == 5
    assert first.mtype is Type.ACK
    if piggybacked:
        assert first.code is Code.CONTENT
        assert first_at == pytest.approx(render_time)
    else:
        assert first.code is Code.EMPTY
        assert first_at == pytest.approx(0.5)


async def test_slow_render_gives_an_empty_ack_then_a_separate_con_retransmitted_until_acked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (server, peer):
            peer.send(request("slow", mid=0x0101, token=b"tk"))
            (ack,) = await peer.wait_for(1)
            assert trio.current_time() == pytest.approx(ACK_DELAY)
            assert (ack.mtype, ack.code, ack.mid, ack.token) == (Type.ACK, Code.EMPTY, 0x0101, b"")
            assert encode(ack) == peer.received[0] == empty_ack(0x0101)  # the bare 4-byte header
            # Leave the separate response unacknowledged for two retransmissions, then ACK it.
            replies = await peer.wait_for(4)
            separate = replies[1]
            assert (separate.mtype, separate.code, separate.token) == (
                Type.CON,
                Code.CONTENT,
                b"tk",
            )
            assert peer.received[1] == peer.received[2] == peer.received[3]
            peer.send(empty_ack(separate.mid))
            await trio.sleep(200)  # past every further retransmission the schedule could have
            assert len(peer.received) == 4
            assert server.statistics.messaging[0].retransmissions == 2
            assert server.statistics.messaging[0].pending_server_requests == 0
    copies = [(time, copy) for time, data, copy in from_server(net) if data == peer.received[1]]
    assert [copy for _, copy in copies] == [0, 1, 2]
    assert copies[0][0] == pytest.approx(SLOW)
    first_gap, second_gap = (b[0] - a[0] for a, b in pairwise(copies))
    assert PARAMS.ACK_TIMEOUT <= first_gap <= PARAMS.ACK_TIMEOUT * PARAMS.ACK_RANDOM_FACTOR
    assert second_gap == pytest.approx(2 * first_gap)
    assert len(site.rendered) == 1


async def test_unacknowledged_separate_response_is_given_up_after_max_retransmit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (server, peer):
            peer.send(request("slow", mid=0x0202, token=b"gu"))
            await trio.sleep(SLOW + PARAMS.MAX_TRANSMIT_WAIT + 100)
            separate = peer.received[1]
            assert peer.received[1:] == [separate] * (1 + PARAMS.MAX_RETRANSMIT)
            assert server.statistics.messaging[0].retransmissions == PARAMS.MAX_RETRANSMIT
            # Giving up left the server healthy: a new request is answered.
            peer.send(request("ok", mid=0x0203, token=b"ok"))
            await trio.sleep(1)
            last = decode(peer.received[-1])
    times = [time for time, data, _ in from_server(net) if data == separate]
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) == PARAMS.MAX_RETRANSMIT
    assert PARAMS.ACK_TIMEOUT <= gaps[0] <= PARAMS.ACK_TIMEOUT * PARAMS.ACK_RANDOM_FACTOR
    assert gaps == pytest.approx([gaps[0] * 2**i for i in range(PARAMS.MAX_RETRANSMIT)])
    assert (last.mtype, last.code, last.mid, last.token) == (Type.ACK, Code.CONTENT, 0x0203, b"ok")
    assert len(site.rendered) == 2


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_separate_responses_arrive_under_20_percent_loss(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    net = MemoryNetwork(seed=seed, conditions=LinkConditions(loss=0.2))
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (server, client):
            client.set_nstart(8)
            pending = []
            for index in range(8):
                pending.append(
                    client.request(
                        Message(code=Code.POST, uri=f"{BASE}/slow", payload=b"%d" % index)
                    )
                )
                # Staggered, so that every step happens at its own instant: then the MIDs,
                # tokens and (seeded) losses are the same whatever order trio runs tasks in.
                await trio.sleep(0.0371)
            responses = [await request.response for request in pending]
            server_retransmissions = server.statistics.messaging[0].retransmissions
    assert net.statistics.dropped > 0
    assert server_retransmissions > 0  # some separate responses (or their ACKs) were lost
    for index, response in enumerate(responses):
        assert (response.mtype, response.code) == (Type.CON, Code.CONTENT)
        assert response.payload == b"hello %d" % index
    # Lost requests were retransmitted, but each was rendered once (deduplicated).
    assert sorted(m.payload for m in site.rendered) == [b"%d" % i for i in range(8)]


@pytest.mark.parametrize("path", ["ok", "slow"])
async def test_non_request_gets_a_non_response(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, Scripted()) as (_, peer):
            peer.send(request(path, mtype=Type.NON, mid=0x2222, token=b"nn"))
            (reply,) = await peer.wait_for(1)
            answered_at = trio.current_time()
            await trio.sleep(60)
            assert len(peer.received) == 1  # no ACK of any kind, no retransmission
    assert (reply.mtype, reply.code, reply.token) == (Type.NON, Code.CONTENT, b"nn")
    assert answered_at == pytest.approx(SLOW if path == "slow" else 0.0)


# -- deduplication of requests still being rendered ------------------------------------------------


async def test_duplicate_con_while_rendering_is_not_rendered_twice_and_gets_the_reply_replayed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (server, peer):
            data = peer.send(request("gate", mid=7, token=b"d1"))
            await trio.sleep(0.01)
            peer.send(data)  # a retransmission while the handler still runs
            await trio.sleep(0.01)
            assert len(site.rendered) == 1
            assert peer.received == []  # dropped: nothing to replay yet
            site.release.set()  # within the piggyback window
            (reply,) = await peer.wait_for(1)
            peer.send(data)  # and one after the response
            await peer.wait_for(2)
            await trio.sleep(60)
            assert server.statistics.messaging[0].duplicates == 2
    assert (reply.mtype, reply.code, reply.mid, reply.token) == (Type.ACK, Code.CONTENT, 7, b"d1")
    assert peer.received == [peer.received[0]] * 2  # the very same bytes
    assert len(site.rendered) == 1


async def test_duplicate_con_during_a_slow_render_gets_the_empty_ack_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (server, peer):
            data = peer.send(request("gate", mid=8, token=b"d2"))
            await peer.wait_for(1)  # the empty ACK, at ACK_DELAY
            await trio.sleep(0.5)
            peer.send(data)
            await peer.wait_for(2)
            assert peer.received[1] == peer.received[0] == empty_ack(8)
            site.release.set()
            separate = (await peer.wait_for(3))[2]
            assert (separate.mtype, separate.code, separate.token) == (
                Type.CON,
                Code.CONTENT,
                b"d2",
            )
            peer.send(empty_ack(separate.mid))
            await trio.sleep(1)
            peer.send(data)  # after the separate response: the same empty ACK again
            await peer.wait_for(4)
            await trio.sleep(60)
            assert server.statistics.messaging[0].duplicates == 2
    assert peer.received[3] == empty_ack(8)
    assert len(peer.received) == 4
    assert len(site.rendered) == 1


async def test_duplicate_non_while_rendering_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            data = peer.send(request("gate", mtype=Type.NON, mid=9, token=b"d3"))
            await trio.sleep(0.5)
            peer.send(data)
            await trio.sleep(0.5)
            site.release.set()
            await peer.wait_for(1)
            peer.send(data)
            await trio.sleep(60)
    assert len(peer.received) == 1
    assert len(site.rendered) == 1


# -- options --------------------------------------------------------------------------------


UNRECOGNIZED_CRITICAL = {
    "unknown 2001": (2001, b"x"),
    "Q-Block1 (not handled yet)": (int(OptionNumber.Q_BLOCK1), encode_uint(0x02)),
    "Q-Block2 (not handled yet)": (int(OptionNumber.Q_BLOCK2), encode_uint(0x02)),
    "Block2 of 4 bytes (malformed)": (int(OptionNumber.BLOCK2), b"\x00\x00\x00\x02"),
    "Uri-Port of 3 bytes (malformed)": (int(OptionNumber.URI_PORT), b"\x00\x00\x01"),
}


@pytest.mark.parametrize("option", UNRECOGNIZED_CRITICAL.values(), ids=UNRECOGNIZED_CRITICAL)
async def test_unrecognized_critical_option_on_con_is_4_02_without_calling_the_handler(
    autojump_clock: trio.testing.MockClock, option: tuple[int, bytes]
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            peer.send(request("ok", mid=0x0402, token=b"bo", options=(option,)))
            (reply,) = await peer.wait_for(1)
            assert trio.current_time() == 0.0
            await trio.sleep(60)
            assert len(peer.received) == 1
    assert (reply.mtype, reply.code, reply.mid, reply.token) == (
        Type.ACK,
        Code.BAD_OPTION,
        0x0402,
        b"bo",
    )
    assert site.rendered == []


@pytest.mark.parametrize("option", UNRECOGNIZED_CRITICAL.values(), ids=UNRECOGNIZED_CRITICAL)
async def test_unrecognized_critical_option_on_non_is_ignored(
    autojump_clock: trio.testing.MockClock, option: tuple[int, bytes]
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            peer.send(request("ok", mtype=Type.NON, mid=0x0403, options=(option,)))
            await trio.sleep(60)
            assert peer.received == []
            assert site.rendered == []
            # The server is fine: the same request without the option is answered.
            peer.send(request("ok", mtype=Type.NON, mid=0x0404, token=b"ok"))
            (reply,) = await peer.wait_for(1)
    assert (reply.mtype, reply.code, reply.token) == (Type.NON, Code.CONTENT, b"ok")
    assert len(site.rendered) == 1


async def test_unrecognized_elective_option_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            peer.send(request("ok", mid=0x2000, token=b"el", options=((2000, b"whatever"),)))
            (reply,) = await peer.wait_for(1)
    assert (reply.mtype, reply.code, reply.mid, reply.token) == (
        Type.ACK,
        Code.CONTENT,
        0x2000,
        b"el",
    )
    (rendered,) = site.rendered
    assert rendered.opt.get_all(2000) == (b"whatever",)


PROXY_OPTIONS = {
    "Proxy-Uri": (int(OptionNumber.PROXY_URI), b"coap://example.org/x"),
    "Proxy-Scheme": (int(OptionNumber.PROXY_SCHEME), b"http"),
}


@pytest.mark.parametrize("mtype", [Type.CON, Type.NON])
@pytest.mark.parametrize("option", PROXY_OPTIONS.values(), ids=PROXY_OPTIONS)
async def test_proxy_request_is_5_05(
    autojump_clock: trio.testing.MockClock, option: tuple[int, bytes], mtype: Type
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            peer.send(request((), mtype=mtype, mid=0x0505, token=b"px", options=(option,)))
            (reply,) = await peer.wait_for(1)
            await trio.sleep(60)
            assert len(peer.received) == 1
    assert reply.code is Code.PROXYING_NOT_SUPPORTED
    assert reply.token == b"px"
    if mtype is Type.CON:
        assert (reply.mtype, reply.mid) == (Type.ACK, 0x0505)
    else:
        assert reply.mtype is Type.NON
    assert site.rendered == []


async def test_proxy_uri_through_the_client_api_is_5_05(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (_, client):
            message = Message(code=Code.GET)
            message.set_request_uri("coap://example.org/ok", proxy=f"{BASE}")
            response = await client.request(message).response
    assert response.code is Code.PROXYING_NOT_SUPPORTED
    assert site.rendered == []


# -- handler errors ------------------------------------------------------------------------------


async def test_handler_raising_not_found_answers_4_04_with_its_diagnostic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, Scripted()) as (server, client):
            response = await client.get(f"{BASE}/missing")
            assert server.statistics.handler_errors == 0  # a RenderableError is no failure
    assert response.code is Code.NOT_FOUND
    assert response.payload == b"gone"
    assert response.opt.content_format == ContentFormat.TEXT


async def test_handler_raising_value_error_answers_a_bare_5_00(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT), caplog.at_level(logging.ERROR, logger="coap_trio"):
        async with server_and_client(net, Scripted()) as (server, client):
            response = await client.get(f"{BASE}/broken")
            assert server.statistics.handler_errors == 1
            # The server keeps serving, and counts every failure.
            assert (await client.get(f"{BASE}/ok")).code is Code.CONTENT
            assert (await client.post(f"{BASE}/broken")).code is Code.INTERNAL_SERVER_ERROR
            assert server.statistics.handler_errors == 2
    assert response.code is Code.INTERNAL_SERVER_ERROR
    assert response.payload == b""
    assert len(response.opt) == 0
    assert net.capture
    for record in net.capture:
        assert b"secret" not in record.data.lower()
        assert b"ValueError" not in record.data
    assert any(r.exc_info and "secret" in str(r.exc_info[1]) for r in caplog.records)


class ContractBreakers(Resource):
    """Handlers that break the contract: GET returns None, POST is no coroutine function."""

    async def render_get(self, request: Message) -> Message:
        return None  # type: ignore[return-value]

    def render_post(self, request: Message) -> Message:  # type: ignore[override]
        return Message(code=Code.CHANGED)


@pytest.mark.parametrize(
    ("method", "problem"),
    [
        ("get", "ContractBreakers.render_get returned None, not the response Message"),
        ("post", "ContractBreakers.render_post is not async: define it with async def"),
    ],
)
async def test_a_handler_that_breaks_its_contract_is_logged_by_name_and_answers_5_00(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    method: str,
    problem: str,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Site()
    site.add(("thing",), ContractBreakers())
    with trio.fail_after(VIRTUAL_LIMIT), caplog.at_level(logging.ERROR, logger="coap_trio"):
        async with server_and_client(net, site) as (server, client):
            response = await getattr(client, method)(f"{BASE}/thing")
            assert server.statistics.handler_errors == 1
    assert response.code is Code.INTERNAL_SERVER_ERROR
    assert response.payload == b""
    failures = [r for r in caplog.records if r.name == "coap_trio.server"]
    assert len(failures) == 1
    assert problem in failures[0].getMessage()
    assert isinstance(failures[0].exc_info[1], TypeError)  # type: ignore[index]
    assert "NoneType" not in failures[0].getMessage()
    assert "can't be used in 'await' expression" not in failures[0].getMessage()


# -- No-Response (RFC 7967) ---------------------------------------------------------------------

#: path -> response class it produces
OUTCOMES = {"ok": 2, "missing": 4, "broken": 5}
#: No-Response value -> classes it suppresses
NO_RESPONSE = {0: set(), 2: {2}, 8: {4}, 16: {5}, 2 | 16: {2, 5}, 2 | 8 | 16: {2, 4, 5}}


@pytest.mark.parametrize("mtype", [Type.CON, Type.NON])
@pytest.mark.parametrize("value", list(NO_RESPONSE))
@pytest.mark.parametrize("path", list(OUTCOMES))
async def test_no_response_suppresses_exactly_the_classes_asked(
    autojump_clock: trio.testing.MockClock, path: str, value: int, mtype: Type
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    suppressed = OUTCOMES[path] in NO_RESPONSE[value]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            peer.send(request(path, mtype=mtype, mid=0x7967, token=b"nr", no_response=value))
            await trio.sleep(60)
            replies = peer.messages
    assert len(site.rendered) == 1  # No-Response never stops the request from being processed
    if mtype is Type.CON:
        (reply,) = replies  # a CON is always acknowledged
        assert (reply.mtype, reply.mid) == (Type.ACK, 0x7967)
        if suppressed:
            assert reply.code is Code.EMPTY
            assert peer.received == [empty_ack(0x7967)]
        else:
            assert reply.code.class_ == OUTCOMES[path]
            assert reply.token == b"nr"
    elif suppressed:
        assert replies == []
    else:
        (reply,) = replies
        assert (reply.mtype, reply.code.class_, reply.token) == (Type.NON, OUTCOMES[path], b"nr")


async def test_no_response_after_the_empty_ack_sends_nothing_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            peer.send(request("slow", mid=0x0A0A, no_response=2))
            await trio.sleep(60)
    assert peer.received == [empty_ack(0x0A0A)]
    assert len(site.rendered) == 1


_BAD = (2001, b"x")
_PROXY = (int(OptionNumber.PROXY_URI), b"coap://example.org/")


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        # 4.02 suppressed: the CON gets its empty ACK; the NON is ignored anyway (§5.4.1).
        (_BAD, 8, [(Type.ACK, Code.EMPTY)]),
        (_BAD, 16, [(Type.ACK, Code.BAD_OPTION)]),
        # 5.05 suppressed: the CON gets its empty ACK, the NON nothing.
        (_PROXY, 16, [(Type.ACK, Code.EMPTY)]),
        (
            _PROXY,
            8,
            [(Type.ACK, Code.PROXYING_NOT_SUPPORTED), (Type.NON, Code.PROXYING_NOT_SUPPORTED)],
        ),
    ],
)
async def test_no_response_applies_to_the_early_errors_too(
    autojump_clock: trio.testing.MockClock,
    option: tuple[int, bytes],
    value: int,
    expected: list[tuple[Type, Code]],
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site) as (_, peer):
            peer.send(request("ok", mid=0x0B0B, options=(option,), no_response=value))
            await trio.sleep(1)
            peer.send(
                request("ok", mtype=Type.NON, mid=0x0B0C, options=(option,), no_response=value)
            )
            await trio.sleep(60)
            replies = peer.messages
    assert [(m.mtype, m.code) for m in replies] == expected
    assert replies[0].mid == 0x0B0B
    assert site.rendered == []


# -- overload ------------------------------------------------------------------------------------


async def test_overload_answers_5_03_drops_non_and_never_stalls_the_receive_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    site = Scripted()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, site, server_concurrency=1, request_queue=1) as (
            server,
            peer,
        ):
            peer.send(request("gate", mid=1, token=b"t1"))  # taken by the only handler
            await trio.sleep(0.01)
            assert len(site.rendered) == 1
            peer.send(request("gate", mid=2, token=b"t2"))  # waits in the queue
            await trio.sleep(0.01)
            assert server.statistics.handler_queue_depth == 1
            sent_at = trio.current_time()
            peer.send(request("gate", mid=3, token=b"t3"))  # no room: 5.03
            peer.send(request("gate", mtype=Type.NON, mid=4, token=b"t4"))  # no room: dropped
            peer.send(Message(code=Code.EMPTY, mtype=Type.CON, mid=5))  # a CoAP ping
            await peer.wait_for(2)
            assert trio.current_time() == sent_at  # answered at once while the handler blocks
            overloaded, pong = peer.messages
            # The piggyback window still runs: both accepted CONs get their empty ACK.
            await peer.wait_for(4)
            assert sorted(peer.received[2:4]) == [empty_ack(1), empty_ack(2)]
            stats = server.statistics
            assert (stats.overloaded_responses, stats.dropped_requests) == (1, 1)
            assert len(site.rendered) == 1
            # Released, the handler serves the queued request too; the dropped NON is gone.
            site.release.set()
            await peer.wait_for(6)
            for separate in peer.messages[4:6]:
                peer.send(empty_ack(separate.mid))
            await trio.sleep(60)
            separates = peer.messages[4:]
            final = server.statistics
    assert (overloaded.mtype, overloaded.code, overloaded.mid, overloaded.token) == (
        Type.ACK,
        Code.SERVICE_UNAVAILABLE,
        3,
        b"t3",
    )
    assert overloaded.opt.max_age is not None
    assert overloaded.opt.max_age > 0
    assert (pong.mtype, pong.code, pong.mid) == (Type.RST, Code.EMPTY, 5)
    assert sorted(m.token for m in separates) == [b"t1", b"t2"]
    assert all((m.mtype, m.code) == (Type.CON, Code.CONTENT) for m in separates)
    assert [m.token for m in site.rendered] == [b"t1", b"t2"]
    assert (final.overloaded_responses, final.dropped_requests) == (1, 1)
    assert final.handler_queue_depth == 0


# -- tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", [Type.CON, Type.NON])
@pytest.mark.parametrize("token", [b"", b"\x07", bytes(range(1, 9))], ids=["empty", "1", "8"])
async def test_response_carries_the_request_token(
    autojump_clock: trio.testing.MockClock, token: bytes, mtype: Type
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net, Scripted()) as (_, peer):
            peer.send(request("ok", mtype=mtype, mid=0x0707, token=token))
            peer.send(request("slow", mtype=mtype, mid=0x0708, token=token[::-1]))
            replies = await peer.wait_for(2 if mtype is Type.NON else 3)
    quick, *rest = replies
    slow = rest[-1]
    assert (quick.code, quick.token) == (Code.CONTENT, token)
    assert (slow.code, slow.token) == (Code.CONTENT, token[::-1])
    if mtype is Type.CON:
        assert quick.mtype is Type.ACK
        assert slow.mtype is Type.CON  # separate, after the empty ACK
    else:
        assert quick.mtype is slow.mtype is Type.NON


# -- Site routing, end to end --------------------------------------------------------------------


class Named(Resource):
    """GET answers its name and the Uri-Path it was given (a subtree gets what is left)."""

    def __init__(self, name: str, **attributes: Any) -> None:
        self.name = name
        self.calls = 0
        for key, value in attributes.items():
            setattr(self, key, value)

    async def render_get(self, request: Message) -> Message:
        self.calls += 1
        rest = "/".join(request.opt.uri_path)
        return Message(code=Code.CONTENT, payload=f"{self.name}:{rest}".encode())


async def get_text(client: Context, path: str, **options: Any) -> tuple[Code, bytes]:
    response = await client.get(f"{BASE}{path}", **options)
    return response.code, response.payload


async def test_site_routes_nested_paths_and_subtrees(
    autojump_clock: trio.testing.MockClock,
) -> None:
    site = Site()
    site.add((), Named("root"))
    site.add(("a",), Named("a"))
    site.add(("a", "b", "c"), Named("abc"))
    site.add(("files",), Named("files"), subtree=True)
    site.add(("files", "special"), Named("special"))
    inner = Site(well_known_core=False)
    inner.add(("x",), Named("inner-x"))
    site.add(("nested",), inner)
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (_, client):
            got = {
                path: await get_text(client, path)
                for path in (
                    "/",
                    "/a",
                    "/a/b/c",
                    "/a/b",
                    "/files",
                    "/files/one/two",
                    "/files/special",
                    "/nested/x",
                    "/nested/y",
                    "/nope",
                )
            }
    ok = Code.CONTENT
    assert got == {
        "/": (ok, b"root:"),
        "/a": (ok, b"a:a"),  # an exact resource sees the whole path
        "/a/b/c": (ok, b"abc:a/b/c"),
        "/a/b": (Code.NOT_FOUND, got["/a/b"][1]),
        "/files": (ok, b"files:"),  # a subtree sees what is left below it
        "/files/one/two": (ok, b"files:one/two"),
        "/files/special": (ok, b"special:files/special"),  # exact wins over subtree
        "/nested/x": (ok, b"inner-x:x"),  # routed again by the nested site
        "/nested/y": (Code.NOT_FOUND, got["/nested/y"][1]),
        "/nope": (Code.NOT_FOUND, got["/nope"][1]),
    }


async def test_unknown_path_is_4_04(autojump_clock: trio.testing.MockClock) -> None:
    site = Site()
    site.add(("here",), Named("here"))
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (server, client):
            response = await client.get(f"{BASE}/not/here")
            non = await client.request(
                Message(code=Code.GET, uri=f"{BASE}/elsewhere", mtype=Type.NON)
            ).response
            assert server.statistics.handler_errors == 0
    assert (response.code, response.mtype) == (Code.NOT_FOUND, Type.ACK)
    assert (non.code, non.mtype) == (Code.NOT_FOUND, Type.NON)


@pytest.mark.parametrize("method", [Code.POST, Code.PUT, Code.DELETE, Code.FETCH, Code.iPATCH])
async def test_method_not_implemented_by_the_resource_is_4_05(
    autojump_clock: trio.testing.MockClock, method: Code
) -> None:
    resource = Named("get-only")
    site = Site()
    site.add(("r",), resource)
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (_, client):
            response = await client.request(Message(code=method, uri=f"{BASE}/r")).response
            assert (await get_text(client, "/r")) == (Code.CONTENT, b"get-only:r")
    assert response.code is Code.METHOD_NOT_ALLOWED
    assert resource.calls == 1  # only the GET


async def test_resource_content_checks_travel_end_to_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Typed(Resource):
        representations = (ContentFormat.JSON,)
        accepted_formats = (ContentFormat.JSON,)

        async def render_get(self, request: Message) -> Message:
            return Message(payload=b"{}")

        async def render_put(self, request: Message) -> Message:
            return Message()

    site = Site()
    site.add(("t",), Typed())
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (_, client):
            json = await client.get(f"{BASE}/t")
            not_acceptable = await client.get(f"{BASE}/t", accept=ContentFormat.TEXT)
            unsupported = await client.put(
                f"{BASE}/t", payload=b"x", content_format=ContentFormat.TEXT
            )
            changed = await client.put(
                f"{BASE}/t", payload=b"{}", content_format=ContentFormat.JSON
            )
    assert (json.code, json.opt.content_format, json.payload) == (
        Code.CONTENT,
        ContentFormat.JSON,
        b"{}",
    )
    assert not_acceptable.code is Code.NOT_ACCEPTABLE
    assert unsupported.code is Code.UNSUPPORTED_CONTENT_FORMAT
    assert changed.code is Code.CHANGED


async def test_resources_added_and_removed_while_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    site = Site()
    site.add(("stay",), Named("stay"))
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (_, client):
            before = await get_text(client, "/new")
            site.add(("new",), Named("new"))
            added = await get_text(client, "/new")
            listed = linkformat.parse(
                (await client.get(f"{BASE}/.well-known/core")).payload.decode()
            )
            site.add(("new",), Named("replaced"))
            replaced = await get_text(client, "/new")
            site.remove(("new",))
            removed = await get_text(client, "/new")
            unlisted = linkformat.parse(
                (await client.get(f"{BASE}/.well-known/core")).payload.decode()
            )
            site.add(("tree",), Named("tree"), subtree=True)
            subtree = await get_text(client, "/tree/leaf")
            site.remove(("tree",))
            subtree_gone = await get_text(client, "/tree/leaf")
            stay = await get_text(client, "/stay")
    assert before[0] is Code.NOT_FOUND
    assert added == (Code.CONTENT, b"new:new")
    assert [link.target for link in listed] == ["/stay", "/new"]
    assert replaced == (Code.CONTENT, b"replaced:new")
    assert removed[0] is Code.NOT_FOUND
    assert [link.target for link in unlisted] == ["/stay"]
    assert subtree == (Code.CONTENT, b"tree:leaf")
    assert subtree_gone[0] is Code.NOT_FOUND
    assert stay == (Code.CONTENT, b"stay:stay")


async def test_well_known_core_with_filters_over_the_network(
    autojump_clock: trio.testing.MockClock,
) -> None:
    site = Site()
    site.add(
        ("sensors", "temp"),
        Named("t", rt="temperature-c", if_="sensor", representations=(ContentFormat.TEXT,)),
    )
    site.add(("sensors", "light"), Named("l", rt="light-lux", if_="sensor", obs=True))
    site.add(("actuators", "led"), Named("led", rt="led", if_="actuator", title="The LED"))
    site.add(("secret",), Named("s", hidden=True))
    net = MemoryNetwork(seed=0)

    async def discover(client: Context, *query: str) -> tuple[Message, list[str]]:
        message = Message(code=Code.GET, uri=f"{BASE}/.well-known/core")
        message.opt.uri_query = query
        response = await client.request(message).response
        return response, [link.target for link in linkformat.parse(response.payload.decode())]

    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site) as (_, client):
            everything, all_targets = await discover(client)
            _, sensors = await discover(client, "if=sensor")
            _, temperature = await discover(client, "rt=temperature*")
            _, by_href = await discover(client, "href=/actuators/*")
            _, both = await discover(client, "if=sensor", "rt=light*")
            nothing, none = await discover(client, "rt=nonexistent")
            not_acceptable = await client.get(f"{BASE}/.well-known/core", accept=ContentFormat.JSON)
    assert everything.code is Code.CONTENT
    assert everything.opt.content_format == ContentFormat.LINKFORMAT
    assert all_targets == ["/sensors/temp", "/sensors/light", "/actuators/led"]
    links = {link.target: link for link in linkformat.parse(everything.payload.decode())}
    assert links["/sensors/temp"].rt == ("temperature-c",)
    assert links["/sensors/temp"].ct == (int(ContentFormat.TEXT),)
    assert links["/sensors/light"].obs
    assert links["/actuators/led"].title == "The LED"
    assert sensors == ["/sensors/temp", "/sensors/light"]
    assert temperature == ["/sensors/temp"]
    assert by_href == ["/actuators/led"]
    assert both == ["/sensors/light"]
    assert (nothing.code, none) == (Code.CONTENT, [])
    assert not_acceptable.code is Code.NOT_ACCEPTABLE
