"""No reference cycles per client request: what a request leaves is freed by refcount.

A busy client once spent ~20% of its CPU in the cyclic GC, because every
finished request was a cycle (Request -> exchange -> Request). These tests
run a client and a server Context on the :class:`~coap_trio.testing.MemoryNetwork`
(virtual time, seeded), with the cyclic GC disabled, for two numbers of
requests of each kind, and count what ``gc.collect()`` then finds
unreachable: the count must not grow with the number of requests. Both the
server's and the client's side run in this process, so a cycle per request
on either side would show.
"""

from __future__ import annotations

import gc
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from coap_trio import Code, Message, Resource, Site, open_context
from coap_trio.context import Context
from coap_trio.protocol.config import BlockwiseConfig
from coap_trio.testing import MemoryNetwork

SERVER = "10.0.0.2"
PORT = 5683
#: Bound of one test in virtual time (autojump makes it free).
VIRTUAL_LIMIT = 1000.0
#: The numbers of requests compared: cycles per request would grow the count 5-fold.
FEW, MANY = 40, 200
#: Unreachable objects allowed in either run (a trio or interpreter object made
#: once, not per request): a cycle per request would leave at least MANY.
SLACK = 12


class Hello(Resource):
    """``hello``, or 3 KiB when the path is ``large`` (three 1 KiB blocks); takes PUTs."""

    async def render_get(self, request: Message) -> Message:
        large = request.opt.uri_path == ("large",)
        return Message(code=Code.CONTENT, payload=bytes(3072) if large else b"hello")

    async def render_put(self, request: Message) -> Message:
        assert len(request.payload) == 3072
        return Message(code=Code.CHANGED)


async def _sequential(client: Context, count: int) -> None:
    for _ in range(count):
        response = await client.get(f"coap://{SERVER}/hello")
        assert response.payload == b"hello"


async def _concurrent(client: Context, count: int) -> None:
    client.set_nstart(16)
    left = [count]

    async def loop() -> None:
        while left[0] > 0:
            left[0] -= 1
            response = await client.get(f"coap://{SERVER}/hello")
            assert response.payload == b"hello"

    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(loop)


async def _blockwise(client: Context, count: int) -> None:
    for _ in range(count // 8):  # three block exchanges each
        response = await client.get(f"coap://{SERVER}/large")
        assert len(response.payload) == 3072


async def _upload(client: Context, count: int) -> None:
    for _ in range(count // 8):  # three Block1 exchanges each, driven by a task
        response = await client.put(f"coap://{SERVER}/large", bytes(3072))
        assert response.code is Code.CHANGED


async def _stream(client: Context, count: int) -> None:
    for _ in range(count // 8):
        async with client.stream(f"coap://{SERVER}/large") as body:
            assert sum([len(chunk) async for chunk in body]) == 3072


async def _cancelled(client: Context, count: int) -> None:
    for _ in range(count):
        request = client.request(Message(code=Code.GET, uri=f"coap://{SERVER}/hello"))
        request.cancel()
        await trio.sleep(0)


Run = Callable[[Context, int], Awaitable[None]]


async def _garbage_after(run: Run, count: int) -> Counter[str]:
    """The unreachable objects, by type, that ``count`` requests of ``run`` leave behind."""
    net = MemoryNetwork(seed=0)
    site = Site()
    site.add(["hello"], Hello())
    site.add(["large"], Hello())
    blockwise = BlockwiseConfig(block_size=1024)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with (
            open_context(
                network=net,
                bind=(SERVER, PORT),
                site=site,
                rng=random.Random(1),
                blockwise=blockwise,
            ),
            open_context(network=net, rng=random.Random(2), blockwise=blockwise) as client,
        ):
            await run(client, 4)  # warm up: whatever is made once is made now
            await trio.sleep(1)
            gc.collect()
            gc.disable()
            flags = gc.get_debug()
            gc.set_debug(gc.DEBUG_SAVEALL)  # what the collection finds stays in gc.garbage
            try:
                await run(client, count)
                await trio.sleep(1)  # the endpoint tasks settle (timers, late ACKs)
                del gc.garbage[:]
                gc.collect()
                found = Counter(type(o).__qualname__ for o in gc.garbage)
            finally:
                del gc.garbage[:]
                gc.set_debug(flags)
                gc.enable()
    return found


@pytest.mark.parametrize(
    "run",
    [_sequential, _concurrent, _blockwise, _upload, _stream, _cancelled],
    ids=["sequential", "16 in flight", "block-wise", "upload", "stream", "cancelled"],
)
async def test_requests_leave_no_reference_cycles(
    autojump_clock: trio.testing.MockClock, run: Run
) -> None:
    few = await _garbage_after(run, FEW)
    many = await _garbage_after(run, MANY)
    assert sum(many.values()) <= SLACK, f"{MANY} requests left cycles: {many.most_common(8)}"
    assert sum(few.values()) <= SLACK, f"{FEW} requests left cycles: {few.most_common(8)}"
