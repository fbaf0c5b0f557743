"""A client with several endpoints and requests queued when one runs out of message IDs.

RFC 7252 §4.4: a message ID is not reused towards the same remote within
EXCHANGE_LIFETIME (247 s), so one endpoint sends at most 65,536 messages per
remote in that time (``MessagingConfig.mid_space`` shrinks that here, to run
out in a few requests). A request is routed to the first endpoint with a free
ID and may then queue there behind NSTART; when that endpoint runs out, the
requests queued on it move to an endpoint that has IDs to spare (found by
benchmarks/soak.py: they used to wait up to EXCHANGE_LIFETIME). A request whose
first datagram went out keeps its endpoint: its retransmissions carry the same
MID from the same port (§4.2, §4.5).

All on the MemoryNetwork with trio's autojump clock: minutes cost no real time.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import trio
import trio.testing

from coap_trio.codec import decode
from coap_trio.context import open_context
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.numbers.types import Type
from coap_trio.protocol.config import MessagingConfig
from coap_trio.testing import LinkConditions, MemoryNetwork

SERVER = "10.0.0.2"
PORT = 5683
URI = f"coap://{SERVER}/x"
LIFETIME = TransmissionParameters().EXCHANGE_LIFETIME
SPACE = 8  # message IDs per endpoint and remote (65,536 in RFC 7252)


class Slow:
    """Answers 2.05 with the request's payload after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def render(self, request: Message) -> Message:
        await trio.sleep(self.delay)
        return Message(code=Code.CONTENT, payload=request.payload)

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False


async def _run(
    net: MemoryNetwork, count: int, *, delay: float = 0.05, endpoints: int = 2, nstart: int = 2
) -> tuple[list[float], list[tuple[int, int]]]:
    """``count`` GETs made at once through a client with ``endpoints`` endpoints of
    SPACE message IDs: when each was answered, and the client's endpoint ports."""
    config = MessagingConfig(mid_space=SPACE)
    answered: list[float] = [0.0] * count
    async with (
        open_context(network=net, bind=(SERVER, PORT), site=Slow(delay), rng=random.Random(1)),
        open_context(
            network=net, config=config, client_endpoints=endpoints, rng=random.Random(2)
        ) as client,
    ):
        client.set_nstart(nstart)
        # Not on a whole second: an ID frees on the second after its EXCHANGE_LIFETIME,
        # by then the server's record of it (made as it answered) has expired too.
        await trio.sleep(0.5)
        start = trio.current_time()
        requests = [
            client.request(Message(code=Code.GET, uri=URI, payload=b"%d" % i)) for i in range(count)
        ]

        async def wait(index: int) -> None:
            response = await requests[index].response
            assert response.code is Code.CONTENT
            assert response.payload == b"%d" % index
            answered[index] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(wait, index)
        ports = [address.port for address in client.addresses]
    return answered, ports


def _requests_by_port(net: MemoryNetwork) -> dict[int, list[Message]]:
    """The client's requests on the wire (every copy), by source port, in order."""
    sent: dict[int, list[Message]] = defaultdict(list)
    for record in net.capture:
        if record.destination.host == SERVER and not record.duplicate:
            message = decode(record.data)
            if message.code.is_request():
                sent[record.source.port].append(message)
    return sent


async def test_queued_requests_move_to_an_endpoint_with_free_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Twelve requests, all routed to the first endpoint (it had free IDs when they
    were made) and queued there behind NSTART 2; it has 8 IDs. The four it cannot
    send go out from the second endpoint at once, not after EXCHANGE_LIFETIME."""
    net = MemoryNetwork(seed=0)
    with trio.fail_after(10 * LIFETIME):
        answered, ports = await _run(net, 12)
    assert max(answered) < 5.0  # 12 requests, 2 at a time, 0.05 s each: well under 1 s
    sent = _requests_by_port(net)
    assert sorted(len(sent[port]) for port in ports) == [4, SPACE]
    assert len(sent[ports[0]]) == SPACE
    for port in ports:  # no message ID used twice from one endpoint (§4.4)
        mids = [message.mid for message in sent[port]]
        assert len(set(mids)) == len(mids)
    # Every request went out once, from one endpoint.
    payloads = [message.payload for port in ports for message in sent[port]]
    assert sorted(payloads) == sorted(b"%d" % i for i in range(12))


async def test_without_a_spare_endpoint_requests_wait_for_ids_to_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With one endpoint there is nowhere to go: the requests beyond its IDs wait
    until the first ones expire, EXCHANGE_LIFETIME after they were taken."""
    net = MemoryNetwork(seed=0)
    with trio.fail_after(10 * LIFETIME):
        answered, _ = await _run(net, 12, endpoints=1)
    assert sorted(answered)[SPACE - 1] < 5.0
    assert LIFETIME <= min(sorted(answered)[SPACE:]) < LIFETIME + 5.0


async def test_when_every_endpoint_is_out_of_ids_they_wait_where_they_are(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Twenty requests, 16 IDs in all: sixteen go out at once, four wait for an ID
    to free (no request is sent twice, none is lost)."""
    net = MemoryNetwork(seed=0)
    with trio.fail_after(10 * LIFETIME):
        answered, ports = await _run(net, 20)
    early = [t for t in answered if t < 5.0]
    assert len(early) == 2 * SPACE
    assert all(LIFETIME <= t < LIFETIME + 5.0 for t in answered if t >= 5.0)
    sent = _requests_by_port(net)
    assert sum(len(sent[port]) for port in ports) == 20


@pytest.mark.parametrize("seed", range(4))
async def test_a_request_sent_once_keeps_its_endpoint_for_retransmissions(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """On a lossy link, every copy of a request (same token) leaves from one port
    with one MID: a request moves only before its first datagram went out."""
    net = MemoryNetwork(seed=seed)
    net.set_conditions(LinkConditions(loss=0.3), destination=SERVER)
    with trio.fail_after(10 * LIFETIME):
        answered, ports = await _run(net, 12, delay=0.0)
    # Some requests needed retransmissions, and the last of them ended well
    # before EXCHANGE_LIFETIME (the transmissions of one take at most 93 s).
    assert max(answered) < LIFETIME
    copies: dict[bytes, set[tuple[int, int | None]]] = defaultdict(set)
    for port, messages in _requests_by_port(net).items():
        assert port in ports
        for message in messages:
            assert message.mtype is Type.CON
            copies[message.token].add((port, message.mid))
    assert len(copies) == 12
    assert all(len(where) == 1 for where in copies.values())
