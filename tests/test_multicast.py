"""Group communication (RFC 7252 §8) through Contexts on a MemoryNetwork.

Servers join a group with ``open_context(multicast_groups=...)``; a client
sends one request with ``ctx.multicast(...)`` and reads every member's
answer. Checked on the wire (the network's capture) and through the public
API: one NON request, answers from the members' unicast addresses after a
random Leisure, no error responses and no RST/ACK towards a group, No-Response
honoured, resources that decline, and late answers reset. Virtual time
(``autojump_clock``): Leisure waits cost nothing.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from coap_trio.codec import decode
from coap_trio.context import Context, open_context
from coap_trio.errors import LocalProtocolError, UnsupportedTransportError
from coap_trio.linkformat import parse
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.remote import DatagramRemote, MulticastRemote
from coap_trio.resource import Resource, Site
from coap_trio.testing import MemoryNetwork

GROUP = "224.0.1.187"
MEMBERS = ("10.0.0.2", "10.0.0.3", "10.0.0.4")
CLIENT = "10.0.0.1"
LEISURE = 2.0


class Hello(Resource):
    """GET: the member's name; records what ``request.remote`` was."""

    def __init__(self, name: str, *, multicast: bool = True) -> None:
        super().__init__()
        self.name = name
        self.multicast = multicast
        self.remotes: list[object] = []

    async def render_get(self, request: Message) -> Message:
        self.remotes.append(request.remote)
        return Message(code=Code.CONTENT, payload=self.name.encode())


@asynccontextmanager
async def group(
    network: MemoryNetwork, *, declining: int = -1, leisure: float = LEISURE
) -> AsyncIterator[list[Hello]]:
    """Three servers on MEMBERS joined to GROUP (the one at ``declining`` does not
    answer group requests), each serving /hello."""
    resources: list[Hello] = []
    async with AsyncExitStack() as stack:
        for number, host in enumerate(MEMBERS):
            hello = Hello(host, multicast=number != declining)
            site = Site()
            site.add(("hello",), hello)
            resources.append(hello)
            await stack.enter_async_context(
                open_context(
                    network=network,
                    bind=(host, 5683),
                    site=site,
                    multicast_groups=[GROUP],
                    multicast_leisure=leisure,
                    rng=random.Random(number),
                )
            )
        yield resources


async def collect(
    client: Context, target: str | Message, timeout: float
) -> list[tuple[DatagramRemote, Message, float]]:
    seen: list[tuple[DatagramRemote, Message, float]] = []
    started = trio.current_time()
    async with client.multicast(target, timeout=timeout) as responses:
        async for remote, response in responses:
            seen.append((remote, response, trio.current_time() - started))
    return seen


async def test_every_member_answers_from_its_unicast_address_within_the_leisure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=1)
    with trio.fail_after(100):
        async with group(network) as resources, open_context(network=network) as client:
            network.clear_capture()
            seen = await collect(client, f"coap://{GROUP}/hello", timeout=LEISURE + 1)
    assert sorted(r.host for r, _, _ in seen) == sorted(MEMBERS)
    assert sorted(m.payload for _, m, _ in seen) == sorted(h.encode() for h in MEMBERS)
    assert all(r.port == 5683 and type(r) is DatagramRemote for r, _, _ in seen)
    assert all(0 <= delay <= LEISURE for _, _, delay in seen)
    assert len({delay for _, _, delay in seen}) > 1  # random points in the Leisure
    # One NON request to the group; the answers are NON, each from a member's address.
    wire = [(d.source.host, d.destination.host, decode(d.data)) for d in network.capture]
    requests = [m for _, dst, m in wire if dst == GROUP]  # one copy per member
    assert len(requests) == len(MEMBERS)
    assert len({(m.mid, m.token) for m in requests}) == 1
    assert (requests[0].mtype, requests[0].code) == (Type.NON, Code.GET)
    answers = [(src, m) for src, dst, m in wire if dst == CLIENT]
    assert sorted(src for src, _ in answers) == sorted(MEMBERS)
    assert all(m.mtype is Type.NON and m.token == requests[0].token for _, m in answers)
    # Handlers saw where the request came from, and through which group.
    for hello in resources:
        [remote] = hello.remotes
        assert isinstance(remote, MulticastRemote)
        assert (remote.host, remote.group) == (CLIENT, GROUP)


async def test_no_error_response_and_declining_resources_stay_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=2)
    with trio.fail_after(100):
        async with (
            group(network, declining=1) as resources,
            open_context(network=network) as client,
        ):
            seen = await collect(client, f"coap://{GROUP}/hello", timeout=LEISURE + 1)
            missing = await collect(client, f"coap://{GROUP}/nothing-here", timeout=LEISURE + 1)
            ask = Message(code=Code.GET, uri=f"coap://{GROUP}/hello")
            ask.opt.no_response = 2  # not interested in 2.xx (RFC 7967)
            quiet = await collect(client, ask, timeout=LEISURE + 1)
            unicast = await client.get(f"coap://{MEMBERS[1]}/hello")
    assert sorted(r.host for r, _, _ in seen) == [MEMBERS[0], MEMBERS[2]]
    # The declining resource was reached by the unicast GET only.
    assert [type(r) for r in resources[1].remotes] == [DatagramRemote]
    assert missing == []
    assert quiet == []
    assert unicast.payload == MEMBERS[1].encode()  # declining is for group requests only


async def test_answers_after_the_window_are_reset_and_nothing_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=3)
    with trio.fail_after(100):
        async with group(network, leisure=10.0), open_context(network=network) as client:
            network.clear_capture()
            seen = await collect(client, f"coap://{GROUP}/hello", timeout=0.5)
            await trio.sleep(11)  # every member answers by now
            stats = client.statistics
    resets = [
        d for d in network.capture if d.source.host == CLIENT and decode(d.data).mtype is Type.RST
    ]
    late = [d for d in network.capture if d.destination.host == CLIENT]
    assert len(seen) + len(resets) == len(MEMBERS) == len(late)
    assert stats.requests_in_flight == 0
    assert all(m.outstanding_requests == 0 for m in stats.messaging)


async def test_group_discovery_lists_each_members_resources(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=4)
    with trio.fail_after(100):
        async with group(network), open_context(network=network) as client:
            seen = await collect(client, f"coap://{GROUP}/.well-known/core", timeout=LEISURE + 1)
    assert sorted(r.host for r, _, _ in seen) == sorted(MEMBERS)
    for _, response, _ in seen:
        assert [link.target for link in parse(response.payload.decode())] == ["/hello"]


async def test_a_group_server_counts_what_it_did_not_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=5)
    with trio.fail_after(100):
        async with (
            open_context(
                network=network,
                bind=(MEMBERS[0], 5683),
                site=Site(),
                multicast_groups=[(GROUP, 5683)],
                multicast_leisure=0.5,
            ) as server,
            open_context(network=network) as client,
        ):
            assert await collect(client, f"coap://{GROUP}/none", timeout=1) == []
            con = Message(code=Code.GET, uri=f"coap://{GROUP}/none", mtype=Type.CON)
            with pytest.raises(LocalProtocolError):
                async with client.multicast(con):
                    pass
            with pytest.raises(UnsupportedTransportError):
                async with client.multicast(f"coap+tcp://{GROUP}/none"):
                    pass
            stats = server.statistics
    assert stats.multicast_unanswered == 1
    [machine] = stats.group_messaging
    assert machine.resets_sent == 0
    assert machine.datagrams_received == 1


async def test_a_full_buffer_drops_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=6)
    with trio.fail_after(100):
        async with (
            group(network, leisure=0.1),
            open_context(network=network) as client,
            client.multicast(f"coap://{GROUP}/hello", timeout=1.0, max_responses=1) as responses,
        ):
            await trio.sleep(0.5)  # all three arrive; one fits
            read = [pair async for pair in responses]
    assert len(read) == 1
    assert responses.dropped == 2
    assert responses.received == 3


async def test_an_ipv6_group_is_served_the_same_way(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=7, default_host="fd00::1")
    members = ("fd00::2", "fd00::3")
    with trio.fail_after(100):
        async with AsyncExitStack() as stack:
            for number, host in enumerate(members):
                site = Site()
                site.add(("hello",), Hello(host))
                await stack.enter_async_context(
                    open_context(
                        network=network,
                        bind=(host, 5683),
                        site=site,
                        multicast_groups=["ff02::fd"],
                        multicast_leisure=0.5,
                        rng=random.Random(number),
                    )
                )
            client = await stack.enter_async_context(open_context(network=network))
            seen = await collect(client, "coap://[ff02::fd]/hello", timeout=1.0)
    assert sorted((r.host, m.payload) for r, m, _ in seen) == [
        (host, host.encode()) for host in members
    ]
