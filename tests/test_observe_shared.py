"""One render per change for observers registered alike (RFC 7641 fan-out).

Observers whose registrations have the same method, options (but Observe) and
payload share one render of the resource and one encoding of it; everything
the options can change (Accept, ETag, Block2, Uri-Query) renders apart. Each
observer's datagram is exactly what rendering its own registration and
encoding it would give, but for its token, message ID, type and Observe.
Raw endpoints on a MemoryNetwork under the autojump clock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from coap_trio import CON, GET, NON, Message, ObservableResource, open_context
from coap_trio.block import BlockValue
from coap_trio.codec import decode, encode
from coap_trio.context import Context
from coap_trio.numbers.contentformat import ContentFormat
from coap_trio.remote import DatagramRemote
from coap_trio.resource import Site
from coap_trio.testing import MemoryNetwork

SERVER = ("10.0.0.2", 5683)


class Sensor(ObservableResource):
    """Renders its value as text or JSON (Accept), with an ETag and Max-Age; counts renders."""

    representations = (ContentFormat.TEXT, ContentFormat.JSON)
    max_age = 30

    def __init__(self) -> None:
        super().__init__()
        self.value = 0
        self.renders = 0

    async def current_etag(self, request: Message) -> bytes | None:
        return b"v%d" % self.value

    async def render_get(self, request: Message) -> Message:
        self.renders += 1
        if request.opt.accept == ContentFormat.JSON:
            return Message(payload=b'{"v": %d}' % self.value)
        query = "&".join(request.opt.uri_query)
        return Message(payload=(b"value %d " % self.value) + query.encode() + b"x" * 40)

    def bump(self) -> None:
        self.value += 1
        self.updated_state()


class Observer:
    """A raw endpoint on its own host: registers by hand, keeps every datagram it gets."""

    def __init__(self, network: MemoryNetwork, host: str) -> None:
        self.endpoint = network.open_endpoint(host, 40000)
        self.server = network.remote_for(*SERVER)
        self.datagrams: list[bytes] = []
        self.registration: Message | None = None

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, _ in batch:
            self.datagrams.append(data)

    def register(self, token: bytes, mid: int, **options: object) -> None:
        message = Message(
            code=GET, mtype=CON, mid=mid, token=token, uri_path=("sensor",), observe=0, **options
        )
        self.registration = message
        self.endpoint.send(encode(message), self.server)

    def notifications(self) -> list[Message]:
        """Every message after the registration's answer (its ACK)."""
        return [decode(d) for d in self.datagrams[1:]]


@asynccontextmanager
async def _setup(
    count: int, sensor: Sensor | None = None
) -> AsyncIterator[tuple[MemoryNetwork, Sensor, Context, list[Observer]]]:
    network = MemoryNetwork(seed=1)
    sensor = sensor if sensor is not None else Sensor()
    site = Site()
    site.add(("sensor",), sensor)
    async with open_context(network=network, bind=SERVER, site=site, rng=random.Random(2)) as ctx:
        observers = [Observer(network, f"10.0.{1 + i // 200}.{i % 200 + 1}") for i in range(count)]
        async with trio.open_nursery() as nursery:
            for observer in observers:
                await nursery.start(observer.endpoint.run, observer.on_datagrams, lambda r, e: None)
            yield network, sensor, ctx, observers
            nursery.cancel_scope.cancel()


def _expected_bytes(sensor: Sensor, site_request: Message, received: Message) -> bytes:
    """What rendering ``site_request`` alone gives, encoded with the received message's
    type, MID, token and Observe."""

    async def render() -> Message:
        return await sensor.render(site_request)

    coro = render()
    try:
        coro.send(None)
    except StopIteration as done:
        response: Message = done.value
    else:  # pragma: no cover - the sensor never suspends
        raise AssertionError("render suspended")
    response.opt.observe = received.opt.observe
    return encode(
        Message(
            code=response.code,
            mtype=received.mtype,
            mid=received.mid,
            token=received.token,
            opt=response.opt,
            payload=response.payload,
        )
    )


async def test_alike_registrations_share_one_render(autojump_clock: object) -> None:
    async with _setup(6) as (_, sensor, _, observers):
        for i, observer in enumerate(observers):
            observer.register(b"t%d" % i, 0x100 + i)
        await trio.sleep(0.5)
        assert sensor.renders == 6  # the registrations themselves
        sensor.bump()
        await trio.sleep(0.5)
        assert sensor.renders == 7  # one render for the six
        sensor.bump()
        await trio.sleep(0.5)
        assert sensor.renders == 8
        for i, observer in enumerate(observers):
            notes = observer.notifications()
            assert [n.payload[:7] for n in notes] == [b"value 1", b"value 2"]
            assert all(n.token == b"t%d" % i and n.mtype is NON for n in notes)
            assert [n.opt.observe for n in notes] == [1, 2]


async def test_options_that_matter_render_apart(autojump_clock: object) -> None:
    async with _setup(8) as (_, sensor, _, observers):
        plain, plain2, json, json2, etag, query, block, block2 = observers
        plain.register(b"a", 1)
        plain2.register(b"bb", 2)  # a longer token: still the same render
        json.register(b"c", 3, accept=ContentFormat.JSON)
        json2.register(b"d", 4, accept=ContentFormat.JSON)
        etag.register(b"e", 5, etag=(b"v0",))
        query.register(b"f", 6, uri_query=("unit=C",))
        block.register(b"g", 7, block2=BlockValue(0, False, 2))  # 64-byte blocks
        block2.register(b"h", 8, block2=BlockValue(0, False, 2))
        await trio.sleep(0.5)
        before = sensor.renders
        sensor.bump()
        await trio.sleep(0.5)
        # plain (2), json (2), etag, query, block (2): five renders for eight observers.
        assert sensor.renders - before == 5
        for observer in observers:
            assert len(observer.notifications()) == 1


async def test_each_observer_gets_the_bytes_of_its_own_render(autojump_clock: object) -> None:
    async with _setup(8) as (_, sensor, _, observers):
        options: list[dict[str, object]] = [
            {},
            {},
            {"accept": ContentFormat.JSON},
            {"accept": ContentFormat.JSON},
            {"etag": (b"zz",)},
            {"uri_query": ("unit=C",)},
            {"accept": ContentFormat.TEXT},
            {"accept": ContentFormat.TEXT},
        ]
        for i, (observer, extra) in enumerate(zip(observers, options, strict=True)):
            observer.register(bytes(range(i + 1)), 0x200 + i, **extra)
        await trio.sleep(0.5)
        for change in (1, 2):
            sensor.bump()
            await trio.sleep(0.5)
            for observer in observers:  # the newest against a render of the state now
                assert observer.registration is not None
                notes = observer.notifications()
                assert len(notes) == change
                assert notes[-1].opt.observe == change
                expected = _expected_bytes(sensor, observer.registration, notes[-1])
                assert observer.datagrams[-1] == expected


async def test_sharing_can_be_turned_off(autojump_clock: object) -> None:
    sensor = Sensor()
    sensor.share_renders = False
    async with _setup(4, sensor) as (_, sensor, _, observers):
        for i, observer in enumerate(observers):
            observer.register(b"t%d" % i, 0x100 + i)
        await trio.sleep(0.5)
        before = sensor.renders
        sensor.bump()
        await trio.sleep(0.5)
        assert sensor.renders - before == 4
        assert all(len(o.notifications()) == 1 for o in observers)


async def test_confirmable_every_time_and_a_final_error_reach_every_follower(
    autojump_clock: object,
) -> None:
    class Failing(Sensor):
        con_interval = 0.0  # every notification CON
        fail = False

        async def render_get(self, request: Message) -> Message:
            if self.fail:
                self.renders += 1
                raise RuntimeError("the sensor broke")
            return await super().render_get(request)

    sensor = Failing()
    async with _setup(3, sensor) as (_, sensor, ctx, observers):
        for i, observer in enumerate(observers):
            observer.register(b"t%d" % i, 0x300 + i)
        await trio.sleep(0.5)
        sensor.bump()
        await trio.sleep(0.2)
        for observer in observers:
            (note,) = observer.notifications()
            assert note.mtype is CON
            # acknowledge it, as a client does
            observer.endpoint.send(encode(Message(code=0, mtype=2, mid=note.mid)), observer.server)
        await trio.sleep(0.5)
        sensor.fail = True
        before = sensor.renders
        sensor.bump()
        await trio.sleep(0.5)
        assert sensor.renders - before == 1
        for observer in observers:
            final = observer.notifications()[-1]
            assert final.code == 0xA0  # 5.00, the observation's last notification
            assert final.opt.observe is None
        assert sensor.observation_count == 0
        assert ctx.statistics.observations == 0


async def test_a_change_during_a_long_fan_out_leaves_everyone_at_the_latest(
    autojump_clock: object,
) -> None:
    # A fan-out lets other tasks run every 128 observers; a second change then
    # groups the observers not served yet anew. The first render must not reach
    # them after the second one did: each one's last notification is the latest.
    async with _setup(300) as (_, sensor, _, observers):
        for i, observer in enumerate(observers):
            observer.register(b"t", 0x400 + i)
        await trio.sleep(1.0)
        assert sensor.observation_count == 300
        sensor.bump()
        for _ in range(10_000):  # bounded: the fan-out yields within a few passes
            await trio.lowlevel.checkpoint()
            done = sum(1 for o in observers if len(o.datagrams) >= 2)
            if 0 < done < 300:
                break
        else:
            raise AssertionError("the fan-out never yielded half-way")
        sensor.bump()  # while the first render is still being sent
        await trio.sleep(1.0)
        for observer in observers:
            notes = observer.notifications()
            assert notes, "an observer got nothing"
            assert notes[-1].payload.startswith(b"value 2"), notes[-1].payload
            observes = [n.opt.observe for n in notes]
            assert observes == sorted(observes)
        # The registrations, one render for the first change, and two for the
        # second: the first render's task was busy sending, so it rendered by
        # itself, and the rest shared one.
        assert sensor.renders == 300 + 3


async def test_a_second_change_before_the_render_takes_the_followers_over(
    autojump_clock: object,
) -> None:
    # Two changes in a row: the first render's task has not run yet when the
    # second groups the (still idle) followers anew under another one. The first
    # render then serves only its own task: nobody gets the same change twice.
    async with _setup(5) as (_, sensor, _, observers):
        for i, observer in enumerate(observers):
            observer.register(b"t", 0x500 + i)
        await trio.sleep(0.5)
        before = sensor.renders
        sensor.value += 1
        sensor.updated_state()
        sensor.value += 1
        sensor.updated_state()
        await trio.sleep(0.5)
        assert sensor.renders - before == 2
        for observer in observers:
            (note,) = observer.notifications()
            assert note.payload.startswith(b"value 2")
