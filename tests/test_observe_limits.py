"""The total limit on served observations: beyond it a registration is served without Observe."""

from __future__ import annotations

import trio

from coap_trio import CONTENT, Message, Site, open_context
from coap_trio.observable import ObservableResource
from coap_trio.testing import MemoryNetwork


class _Counter(ObservableResource):
    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"0")


async def test_total_limit_serves_extra_registrations_without_observe(
    autojump_clock: object,
) -> None:
    network = MemoryNetwork(seed=0)
    counter = _Counter()
    site = Site()
    site.add(["counter"], counter)
    with trio.fail_after(100):
        async with (
            open_context(network=network, bind=("10.0.0.2", 5683), site=site, max_observations=1),
            open_context(network=network, bind=("10.0.0.3", 0)) as first,
            open_context(network=network, bind=("10.0.0.4", 0)) as second,
            first.observe("coap://10.0.0.2/counter") as accepted,
        ):
            registered = await accepted.__anext__()  # the first takes the only slot
            async with second.observe("coap://10.0.0.2/counter") as refused:
                plain = await refused.__anext__()
                assert [m async for m in refused] == []  # and the iteration ended
            assert registered.opt.observe is not None
            assert plain.opt.observe is None  # served, but not observed
            assert counter.observation_count == 1
