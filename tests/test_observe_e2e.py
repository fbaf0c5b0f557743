"""RFC 7641 end to end: a coap_trio server (ObservableResource) and a coap_trio client
(or a raw endpoint) on a MemoryNetwork under the autojump clock, every path checked on the wire."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest
import trio

from coap_trio import (
    ACK,
    CON,
    CONTENT,
    GET,
    NON,
    RST,
    Code,
    Context,
    Message,
    ObservableResource,
    ObservationError,
    open_context,
)
from coap_trio.codec import decode, encode
from coap_trio.observable import DEFAULT_CON_INTERVAL
from coap_trio.remote import DatagramRemote
from coap_trio.resource import Site
from coap_trio.testing import LinkConditions, MemoryNetwork

SERVER_HOST = "10.0.0.2"
SERVER = (SERVER_HOST, 5683)
CLIENT_HOST = "10.0.0.1"  # MemoryNetwork's default_host: where the wildcard client sends from
RAW_HOST = "10.0.0.3"
URI = "coap://10.0.0.2/counter"


class Counter(ObservableResource):
    """An observable counter: GET answers its current value."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"%d" % self.value)

    def bump(self) -> None:
        self.value += 1
        self.updated_state()


@dataclass
class Env:
    network: MemoryNetwork
    counter: Counter
    site: Site
    server: Context
    client: Context


def _site(counter: Counter) -> Site:
    site = Site()
    site.add(("counter",), counter)
    return site


@asynccontextmanager
async def _setup(seed: int = 0, **server_options: int) -> AsyncIterator[Env]:
    network = MemoryNetwork(seed=seed)
    counter = Counter()
    site = _site(counter)
    async with (
        open_context(
            network=network, bind=SERVER, site=site, rng=random.Random(seed + 1), **server_options
        ) as server,
        open_context(network=network, rng=random.Random(seed + 2)) as client,
    ):
        yield Env(network, counter, site, server, client)


def _wire(
    network: MemoryNetwork, *, source: str | None = None, since: float = -1.0
) -> list[tuple[float, str, Message]]:
    """(time, fate, decoded message) of captured copies, optionally from one host / after a time."""
    return [
        (record.time, record.fate, decode(record.data))
        for record in network.capture
        if record.time >= since and (source is None or record.source.host == source)
    ]


def _notifications(
    network: MemoryNetwork, destination: str, since: float = -1.0
) -> list[tuple[float, str, Message]]:
    """Responses sent by the server to ``destination`` as CON/NON (notifications, not ACKs)."""
    return [
        (time, fate, message)
        for record in network.capture
        if record.source.host == SERVER_HOST
        and record.destination.host == destination
        and record.time >= since
        for time, fate, message in [(record.time, record.fate, decode(record.data))]
        if message.mtype in (CON, NON) and message.code.is_response()
    ]


async def _settle() -> None:
    await trio.sleep(0.5)


class _RawClient:
    """A raw endpoint at 10.0.0.3 that sends hand-made registrations and ACKs/RSTs what comes."""

    def __init__(self, network: MemoryNetwork, *, reset_non: bool = False) -> None:
        self.endpoint = network.open_endpoint(RAW_HOST, 40000)
        self.server = network.remote_for(*SERVER)
        self.received: list[Message] = []
        self.reset_non = reset_non
        self.mid = 0x100

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, remote in batch:
            message = decode(data)
            self.received.append(message)
            if message.mtype is NON and self.reset_non:
                self.endpoint.send(
                    encode(Message(code=Code.EMPTY, mtype=RST, mid=message.mid)), remote
                )
            elif message.mtype is CON:
                self.endpoint.send(
                    encode(Message(code=Code.EMPTY, mtype=ACK, mid=message.mid)), remote
                )

    def get(self, token: bytes, observe: int) -> None:
        self.mid += 1
        message = Message(
            code=GET, mtype=CON, mid=self.mid, token=token, uri_path=("counter",), observe=observe
        )
        self.endpoint.send(encode(message), self.server)


@asynccontextmanager
async def _raw_client(network: MemoryNetwork, **options: bool) -> AsyncIterator[_RawClient]:
    raw = _RawClient(network, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(raw.endpoint.run, raw.on_datagrams, lambda r, e: None)
        yield raw
        nursery.cancel_scope.cancel()


# -- basic -----------------------------------------------------------------------------------


async def test_client_sees_every_update_in_order(autojump_clock: object) -> None:
    updates = 10
    with trio.fail_after(100):
        async with _setup() as env:
            seen: list[Message] = []
            async with env.client.observe(URI) as notifications:
                seen.append(await notifications.__anext__())
                assert env.counter.observation_count == 1
                for _ in range(updates):
                    env.counter.bump()
                    await trio.sleep(0.1)
                    seen.append(await notifications.__anext__())
    assert [m.payload for m in seen] == [b"%d" % i for i in range(updates + 1)]
    observes = [m.opt.observe for m in seen]
    assert all(v is not None for v in observes)
    assert observes == sorted(observes)
    assert len(set(observes)) == len(observes)
    assert notifications.dropped_stale == 0
    assert notifications.dropped_slow == 0


# -- lossy / reordering links ---------------------------------------------------------------


async def _collect(notifications: AsyncIterator[Message], into: list[Message]) -> None:
    async for message in notifications:
        into.append(message)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
async def test_lossy_link_converges_to_the_latest_state(autojump_clock: object, seed: int) -> None:
    final = 20
    with trio.fail_after(DEFAULT_CON_INTERVAL + 1000):
        async with _setup(seed) as env:
            env.network.set_conditions(
                LinkConditions(loss=0.3), source=SERVER_HOST, destination=CLIENT_HOST
            )
            seen: list[Message] = []
            async with (
                env.client.observe(URI) as notifications,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_collect, notifications, seen)
                for _ in range(100):  # the registration's ACK may be lost: CON retries
                    if seen:
                        break
                    await trio.sleep(1)
                for _ in range(final):
                    env.counter.bump()
                    await trio.sleep(0.2)
                lost = [
                    m
                    for _, fate, m in _notifications(env.network, CLIENT_HOST)
                    if fate == "dropped"
                ]
                assert lost  # with 30 % loss some NON notifications were lost
                # Until con_interval has passed everything is NON: after it the
                # next notification is CON and retransmitted until it arrives.
                await trio.sleep(DEFAULT_CON_INTERVAL)
                env.counter.updated_state()  # the same (final) state once more
                await trio.sleep(100)  # longer than MAX_TRANSMIT_WAIT
                nursery.cancel_scope.cancel()
            assert seen[-1].payload == b"%d" % final
            values = [int(m.payload) for m in seen]
            assert values == sorted(values)
            cons = [m for _, _, m in _notifications(env.network, CLIENT_HOST) if m.mtype is CON]
            assert cons
            assert all(m.payload == b"%d" % final for m in cons)
            assert env.counter.observation_count == 1  # the CON was acknowledged: still on


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_reordered_notifications_are_never_yielded_out_of_order(
    autojump_clock: object, seed: int
) -> None:
    final = 30
    with trio.fail_after(200):
        async with _setup(seed) as env:
            env.network.set_conditions(
                LinkConditions(reorder=0.5, reorder_delay=2.0),
                source=SERVER_HOST,
                destination=CLIENT_HOST,
            )
            seen: list[Message] = []
            async with (
                env.client.observe(URI) as notifications,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_collect, notifications, seen)
                for _ in range(final):
                    env.counter.bump()
                    await trio.sleep(0.25)
                await trio.sleep(5)  # everything delayed has arrived
                nursery.cancel_scope.cancel()
            values = [int(m.payload) for m in seen]
            assert values == sorted(values)
            assert len(set(values)) == len(values)
            assert values[-1] == final  # the newest one is never stale
            assert notifications.dropped_stale > 0  # some did overtake each other


# -- deregistration paths, each on the wire --------------------------------------------------


async def test_leaving_the_block_deregisters_and_stops_notifications(
    autojump_clock: object,
) -> None:
    with trio.fail_after(100):
        async with _setup() as env:
            async with env.client.observe(URI) as notifications:
                first = await notifications.__anext__()
                env.counter.bump()
                await notifications.__anext__()
                assert env.counter.observation_count == 1
            await _settle()
            assert env.counter.observation_count == 0
            deregistrations = [
                m
                for _, _, m in _wire(env.network, source=CLIENT_HOST)
                if m.code is GET and m.opt.observe == 1
            ]
            assert len(deregistrations) == 1
            registration = next(
                m
                for _, _, m in _wire(env.network, source=CLIENT_HOST)
                if m.code is GET and m.opt.observe == 0
            )
            assert deregistrations[0].token == registration.token
            assert deregistrations[0].opt.uri_path == ("counter",)
            # The deregistration is answered with a plain response (no Observe).
            answer = [
                m
                for _, _, m in _wire(env.network, source=SERVER_HOST)
                if m.mtype is ACK and m.mid == deregistrations[0].mid
            ]
            assert len(answer) == 1
            assert answer[0].opt.observe is None
            mark = trio.current_time()
            for _ in range(3):
                env.counter.bump()
                await trio.sleep(0.1)
            await _settle()
            assert _notifications(env.network, CLIENT_HOST, since=mark) == []
    assert first.payload == b"0"


async def test_rst_to_a_non_notification_ends_the_observation(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with _setup() as env, _raw_client(env.network, reset_non=True) as raw:
            raw.get(b"\x01\x02", observe=0)
            await _settle()
            assert raw.received[0].mtype is ACK
            assert raw.received[0].opt.observe is not None
            assert env.counter.observation_count == 1
            env.counter.bump()
            await _settle()
            assert env.counter.observation_count == 0
            notes = _notifications(env.network, RAW_HOST)
            assert len(notes) == 1
            assert notes[0][2].mtype is NON
            resets = [m for _, _, m in _wire(env.network, source=RAW_HOST) if m.mtype is RST]
            assert [m.mid for m in resets] == [notes[0][2].mid]
            mark = trio.current_time()
            env.counter.bump()
            await _settle()
            assert _notifications(env.network, RAW_HOST, since=mark) == []
            assert env.server.statistics.observations == 0


async def test_unacknowledged_con_notification_ends_the_observation(
    autojump_clock: object,
) -> None:
    with trio.fail_after(DEFAULT_CON_INTERVAL + 1000):
        async with (
            _setup() as env,
            env.client.observe(URI, deregister_timeout=1.0) as notifications,
        ):
            await notifications.__anext__()
            # From now on nothing from the client reaches the server (no ACK, no RST).
            env.network.set_conditions(LinkConditions(loss=1.0), source=CLIENT_HOST)
            # The first notification after con_interval is CON (RFC 7641 §4.5).
            await trio.sleep(DEFAULT_CON_INTERVAL + 1)
            mark = trio.current_time()
            env.counter.bump()
            latest = await notifications.__anext__()
            assert latest.payload == b"1"
            await trio.sleep(30)
            assert env.counter.observation_count == 1  # still retransmitting
            await trio.sleep(100)  # past MAX_TRANSMIT_WAIT (93 s)
            assert env.counter.observation_count == 0
            notes = _notifications(env.network, CLIENT_HOST, since=mark)
            assert [m.mtype for _, _, m in notes] == [CON] * 5  # 1 + MAX_RETRANSMIT
            assert len({m.mid for _, _, m in notes}) == 1
            acks = [
                m
                for _, fate, m in _wire(env.network, source=CLIENT_HOST, since=mark)
                if m.mtype is ACK
            ]
            assert acks
            assert all(
                fate == "dropped"
                for _, fate, m in _wire(env.network, source=CLIENT_HOST, since=mark)
            )
            # Nothing more is sent for later changes.
            mark = trio.current_time()
            env.counter.bump()
            await _settle()
            assert _notifications(env.network, CLIENT_HOST, since=mark) == []
            assert env.server.statistics.observations == 0


async def test_con_superseded_by_a_later_change_still_ends_for_a_gone_client(
    autojump_clock: object,
) -> None:
    """RFC 7641 §4.5.2: a change while a CON notification is outstanding stops its
    retransmission and sends the new state *as CON*, carrying the retransmission counter
    and timeout over, so a client that is gone is still detected.

    FAILS (bug): ServerObservation picks CON only by ``con_interval``, so the superseding
    notification goes out NON; Messaging.notify cancels the outstanding CON; nothing is
    retransmitted any more and the observation of a vanished client lingers (until the next
    ``con_interval``, 24 h by default) instead of ending after MAX_TRANSMIT_WAIT."""
    with trio.fail_after(DEFAULT_CON_INTERVAL + 1000):
        async with (
            _setup() as env,
            env.client.observe(URI, deregister_timeout=1.0) as notifications,
        ):
            await notifications.__anext__()
            env.network.set_conditions(LinkConditions(loss=1.0), source=CLIENT_HOST)
            await trio.sleep(DEFAULT_CON_INTERVAL + 1)
            mark = trio.current_time()
            env.counter.bump()  # CON (con_interval passed); its ACK is lost
            await trio.sleep(1)
            env.counter.bump()  # supersedes the outstanding CON
            await trio.sleep(200)  # well past MAX_TRANSMIT_WAIT (93 s)
            notes = _notifications(env.network, CLIENT_HOST, since=mark)
            kinds = [(m.payload, m.mtype) for _, _, m in notes]
            assert kinds[0] == (b"1", CON)
            assert (b"2", CON) in kinds, kinds  # the new state must be confirmable
            assert env.counter.observation_count == 0  # the gone client was detected


async def test_final_404_notification_raises_and_ends_it(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with _setup() as env:
            async with env.client.observe(URI) as notifications:
                await notifications.__anext__()
                mark = trio.current_time()
                env.counter.updated_state(Message(code=Code.NOT_FOUND, payload=b"gone"))
                with pytest.raises(ObservationError) as raised:
                    await notifications.__anext__()
                assert env.counter.observation_count == 0
            assert raised.value.response.code == Code.NOT_FOUND
            assert raised.value.response.payload == b"gone"
            await _settle()
            notes = _notifications(env.network, CLIENT_HOST, since=mark)
            assert len(notes) == 1
            final = notes[0][2]
            assert final.mtype is CON
            assert final.code == Code.NOT_FOUND
            assert final.opt.observe is None
            acks = [
                m
                for _, _, m in _wire(env.network, source=CLIENT_HOST, since=mark)
                if m.mtype is ACK and m.mid == final.mid
            ]
            assert len(acks) == 1
            # The observation is over on the client side: no deregistration GET is sent.
            assert not [
                m
                for _, _, m in _wire(env.network, source=CLIENT_HOST)
                if m.code is GET and m.opt.observe == 1
            ]
            assert env.server.statistics.observations == 0


async def test_removed_resource_ends_observations_with_4_04(
    autojump_clock: object,
) -> None:
    """RFC 7641 §3.2: when a resource goes away its observers get a final 4.04.
    ``Site.remove`` does that for an ObservableResource (``end_observations``)."""
    with trio.fail_after(100):
        async with _setup() as env:
            async with env.client.observe(URI) as notifications:
                await notifications.__anext__()
                env.site.remove(("counter",))
                with pytest.raises(ObservationError) as raised:
                    await notifications.__anext__()
                await _settle()
                assert env.counter.observation_count == 0
            assert raised.value.response.code == Code.NOT_FOUND
            assert env.server.statistics.observations == 0


async def test_resource_can_end_its_observations_explicitly(autojump_clock: object) -> None:
    """Ending each observation via the resource (``end()``) sends nothing: the client only
    learns of it from its own deregistration / an RST to a later notification."""
    with trio.fail_after(100):
        async with _setup() as env, env.client.observe(URI) as notifications:
            await notifications.__anext__()
            mark = trio.current_time()
            for observation in list(env.counter._observations):
                observation.end("resource removed")
            assert env.counter.observation_count == 0
            assert env.server.statistics.observations == 0
            env.counter.bump()
            await _settle()
            assert _notifications(env.network, CLIENT_HOST, since=mark) == []
            assert not notifications.ended


# -- registry: same token replaces, other tokens coexist -------------------------------------


async def test_same_token_registration_replaces_the_old_one(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with _setup() as env, _raw_client(env.network) as raw:
            raw.get(b"tok", observe=0)
            await _settle()
            raw.get(b"tok", observe=0)
            await _settle()
            assert env.counter.observation_count == 1
            assert env.server.statistics.observations == 1
            mark = trio.current_time()
            env.counter.bump()
            await _settle()
            notes = _notifications(env.network, RAW_HOST, since=mark)
            assert [(m.token, m.payload) for _, _, m in notes] == [(b"tok", b"1")]


async def test_different_tokens_from_one_client_both_live(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with _setup() as env, _raw_client(env.network) as raw:
            raw.get(b"one", observe=0)
            raw.get(b"two", observe=0)
            await _settle()
            assert env.counter.observation_count == 2
            mark = trio.current_time()
            env.counter.bump()
            await _settle()
            notes = _notifications(env.network, RAW_HOST, since=mark)
            assert sorted(m.token for _, _, m in notes) == [b"one", b"two"]
            # Deregistering one leaves the other.
            raw.get(b"one", observe=1)
            await _settle()
            assert env.counter.observation_count == 1
            mark = trio.current_time()
            env.counter.bump()
            await _settle()
            notes = _notifications(env.network, RAW_HOST, since=mark)
            assert [m.token for _, _, m in notes] == [b"two"]


# -- limits ----------------------------------------------------------------------------------


async def test_per_remote_limit_serves_a_second_registration_without_observe(
    autojump_clock: object,
) -> None:
    with trio.fail_after(100):
        async with (
            _setup(max_observations_per_remote=1) as env,
            env.client.observe(URI) as first,
        ):
            assert (await first.__anext__()).opt.observe is not None
            async with env.client.observe(URI) as second:
                responses = [m async for m in second]
            assert len(responses) == 1
            assert responses[0].payload == b"0"
            assert responses[0].opt.observe is None
            assert env.counter.observation_count == 1
            assert env.server.statistics.observations_refused == 1
            env.counter.bump()  # the first one is unaffected
            assert (await first.__anext__()).payload == b"1"


# -- server restart --------------------------------------------------------------------------


async def test_server_restart_leaves_the_old_observation_silent(autojump_clock: object) -> None:
    """After the server restarts (fresh resource, no memory of the registration) the client's
    observation receives nothing more: no error, no end, just silence (there is no client-side
    expiry), until the client leaves the block; its deregistration then reaches the new
    server harmlessly, and a new observation works."""
    network = MemoryNetwork(seed=0)
    with trio.fail_after(1000):
        async with open_context(network=network, rng=random.Random(2)) as client:
            old = Counter()
            async with AsyncExitStack() as stack:
                async with open_context(
                    network=network, bind=SERVER, site=_site(old), rng=random.Random(1)
                ):
                    notifications = await stack.enter_async_context(client.observe(URI))
                    assert (await notifications.__anext__()).payload == b"0"
                    old.bump()
                    assert (await notifications.__anext__()).payload == b"1"
                assert old.observation_count == 0  # the closed context ended it
                new = Counter()
                new.value = 100
                async with open_context(
                    network=network, bind=SERVER, site=_site(new), rng=random.Random(3)
                ):
                    await trio.sleep(1)
                    mark = trio.current_time()
                    for _ in range(3):
                        new.bump()
                        await trio.sleep(1)
                    with trio.move_on_after(300) as waited:
                        await notifications.__anext__()
                    assert waited.cancelled_caught  # silent, not failed
                    assert not notifications.ended
                    assert new.observation_count == 0
                    assert _notifications(network, CLIENT_HOST, since=mark) == []
                    await stack.aclose()  # leave the observe block: Observe=1 goes out
                    await _settle()
                    deregistrations = [
                        m
                        for _, _, m in _wire(network, source=CLIENT_HOST, since=mark)
                        if m.code is GET and m.opt.observe == 1
                    ]
                    assert len(deregistrations) == 1
                    answers = [
                        m
                        for _, _, m in _wire(network, source=SERVER_HOST, since=mark)
                        if m.mtype is ACK and m.mid == deregistrations[0].mid
                    ]
                    assert len(answers) == 1
                    assert answers[0].code == CONTENT
                    assert answers[0].opt.observe is None
                    async with client.observe(URI) as fresh:
                        assert (await fresh.__anext__()).payload == b"103"
                        assert new.observation_count == 1


# -- slow consumer ---------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 3])
async def test_slow_consumer_gets_the_latest_with_a_bounded_buffer(
    autojump_clock: object, keep: int
) -> None:
    with trio.fail_after(100):
        async with _setup() as env:
            async with env.client.observe(URI, keep=keep) as notifications:
                assert (await notifications.__anext__()).payload == b"0"
                for _ in range(50):
                    env.counter.bump()
                    await trio.sleep(0.01)  # lets each one out (no server-side coalescing)
                    assert len(notifications._buffer) <= keep
                await _settle()
                assert len(notifications._buffer) == keep
                got = [await notifications.__anext__() for _ in range(keep)]
                assert [m.payload for m in got] == [b"%d" % v for v in range(51 - keep, 51)]
                assert notifications.dropped_slow == 50 - keep
                assert notifications.received == 51
                env.counter.bump()
                assert (await notifications.__anext__()).payload == b"51"
            sent = _notifications(env.network, CLIENT_HOST)
            assert len(sent) == 51  # the server did send every state
