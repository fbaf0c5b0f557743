"""Serving makes no reference cycles: what a request or a notification leaves behind is
freed by reference counting alone, so the cyclic GC has nothing to find (and a busy
server pays nothing for collections that scan garbage; docs/performance.md).

Each test serves on the MemoryNetwork under the autojump clock with the collector
disabled, then counts what ``gc.collect()`` finds: a bound that does not grow with
the number of requests.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator

import pytest
import trio

from coap_trio import CON, GET, Code, Message, ObservableResource, open_context
from coap_trio.codec import encode
from coap_trio.remote import DatagramRemote
from coap_trio.resource import Resource, Site
from coap_trio.testing import MemoryNetwork

SERVER = ("10.0.0.2", 5683)
#: What gc.collect() may find after the measured part, whatever its size: a few
#: objects of the harness (none were seen; the bound leaves room for trio's own).
BOUND = 20


class Hello(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"hello")


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"%d" % self.value)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _site() -> tuple[Site, Counter]:
    site = Site()
    site.add(("hello",), Hello())
    counter = Counter()
    site.add(("counter",), counter)
    return site, counter


@pytest.mark.parametrize("count", [200, 2000])
async def test_requests_leave_no_cycles(
    autojump_clock: object, collector_off: None, count: int
) -> None:
    network = MemoryNetwork(seed=1)
    site, _ = _site()
    received: list[bytes] = []

    def on_datagrams(batch: list[tuple[bytes, DatagramRemote]]) -> None:
        received.extend(data for data, _ in batch)

    async with open_context(network=network, bind=SERVER, site=site, rng=random.Random(1)):
        client = network.open_endpoint("10.0.0.3", 40000)
        server = network.remote_for(*SERVER)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run, on_datagrams, lambda r, e: None)

            async def burst(first: int, n: int) -> None:
                for i in range(first, first + n):
                    request = Message(
                        code=GET, mtype=CON, mid=i, token=b"%d" % i, uri_path=("hello",)
                    )
                    client.send(encode(request), server)
                    if i % 32 == 31:
                        await trio.sleep(0.001)
                await trio.sleep(0.5)

            await burst(0, 100)  # warm up: first-use tables and caches
            gc.collect()
            await burst(1000, count)
            assert len(received) == 100 + count
            assert all(d[1] == 0x45 for d in received)  # 2.05, piggybacked
            found = gc.collect()
            nursery.cancel_scope.cancel()
    assert found <= BOUND, f"{found} objects in cycles after {count} requests"


@pytest.mark.parametrize("changes", [20, 200])
async def test_notifications_leave_no_cycles(
    autojump_clock: object, collector_off: None, changes: int
) -> None:
    network = MemoryNetwork(seed=1)
    site, counter = _site()
    received: list[int] = []
    async with open_context(network=network, bind=SERVER, site=site, rng=random.Random(1)):
        server = network.remote_for(*SERVER)
        clients = [network.open_endpoint(f"10.0.1.{i + 1}", 40000) for i in range(10)]
        async with trio.open_nursery() as nursery:
            for client in clients:
                await nursery.start(
                    client.run, lambda b: received.append(len(b)), lambda r, e: None
                )
            for i, client in enumerate(clients):  # ten alike: one shared render each change
                registration = Message(
                    code=GET, mtype=CON, mid=i, token=b"o", uri_path=("counter",), observe=0
                )
                client.send(encode(registration), server)
            await trio.sleep(0.5)
            counter.value += 1
            counter.updated_state()
            await trio.sleep(0.5)
            gc.collect()
            before = sum(received)
            for _ in range(changes):
                counter.value += 1
                counter.updated_state()
                await trio.sleep(0.05)
            assert sum(received) - before == 10 * changes
            found = gc.collect()
            nursery.cancel_scope.cancel()
    assert found <= BOUND, f"{found} objects in cycles after {changes} changes"
