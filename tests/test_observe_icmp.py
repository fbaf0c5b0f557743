"""An observer that vanishes (its port closes) is detected through ICMP, not after a day."""

from __future__ import annotations

import trio

from coap_trio import CON, CONTENT, GET, Message, Site, open_context
from coap_trio.codec import encode
from coap_trio.observable import ObservableResource
from coap_trio.remote import DatagramRemote
from coap_trio.testing import MemoryNetwork


class _Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=str(self.value).encode())


async def test_unreachable_observer_is_forgotten(autojump_clock: object) -> None:
    network = MemoryNetwork(seed=0, icmp_unreachable=True)
    counter = _Counter()
    site = Site()
    site.add(["counter"], counter)
    with trio.fail_after(100):
        async with open_context(network=network, bind=("10.0.0.2", 5683), site=site):
            client = network.open_endpoint("10.0.0.9", 40000)
            received: list[bytes] = []

            def on_datagrams(batch: list[tuple[bytes, DatagramRemote]]) -> None:
                received.extend(data for data, _ in batch)

            async with trio.open_nursery() as nursery:
                await nursery.start(client.run, on_datagrams, lambda remote, error: None)
                registration = Message(
                    code=GET, mtype=CON, mid=1, token=b"obs1", uri_path=("counter",), observe=0
                )
                client.send(encode(registration), client.remote_for("10.0.0.2", 5683))
                await trio.sleep(1)
                assert received  # the registration was answered
                assert counter.observation_count == 1
                nursery.cancel_scope.cancel()
            client.close()  # the observer vanishes without deregistering
            counter.value += 1
            counter.updated_state()  # a NON notification: port unreachable comes back
            await trio.sleep(1)
            assert counter.observation_count == 0
