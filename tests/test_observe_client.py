"""ctx.observe(): the client side of RFC 7641, against a scripted server on a MemoryNetwork
(autojump clock) and against libcoap's coap-server-notls /time (real clock, loopback)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from interop_helpers import libcoap_server

from coap_trio import (
    ACK,
    CON,
    CONTENT,
    GET,
    NON,
    RST,
    Code,
    Message,
    ObservationError,
    Site,
    open_context,
)
from coap_trio.codec import decode, encode
from coap_trio.observable import ObservableResource
from coap_trio.remote import DatagramRemote
from coap_trio.testing import MemoryNetwork

URI = "coap://10.0.0.2/clock"


class _ScriptedServer:
    """A raw endpoint at 10.0.0.2:5683 that answers registrations and sends what tests say."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.endpoint = network.open_endpoint("10.0.0.2", 5683)
        self.received: list[Message] = []
        self.client: DatagramRemote | None = None
        self.token = b""
        self.mid = 0x1000

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, remote in batch:
            message = decode(data)
            self.received.append(message)
            if message.code is GET:
                self.client = remote
                if message.opt.observe == 0:
                    self.token = message.token
                    self.reply(message, observe=1, payload=b"first")
                else:  # deregistration
                    self.reply(message, observe=None, payload=b"bye")
            elif message.mtype is CON:
                self.endpoint.send(
                    encode(Message(code=Code.EMPTY, mtype=ACK, mid=message.mid)), remote
                )

    def reply(self, request: Message, observe: int | None, payload: bytes) -> None:
        response = Message(
            code=CONTENT, mtype=ACK, mid=request.mid, token=request.token, payload=payload
        )
        if observe is not None:
            response.opt.observe = observe
        assert self.client is not None
        self.endpoint.send(encode(response), self.client)

    def notify(self, observe: int | None, payload: bytes, code: Code = CONTENT, mtype=NON) -> None:
        self.mid += 1
        message = Message(code=code, mtype=mtype, mid=self.mid, token=self.token, payload=payload)
        if observe is not None:
            message.opt.observe = observe
        assert self.client is not None
        self.endpoint.send(encode(message), self.client)


@asynccontextmanager
async def _setup() -> AsyncIterator[tuple[MemoryNetwork, _ScriptedServer, object]]:
    network = MemoryNetwork(seed=0)
    server = _ScriptedServer(network)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.endpoint.run, server.on_datagrams, lambda r, e: None)
        async with open_context(network=network, rng=random.Random(1)) as client:
            yield network, server, client
        nursery.cancel_scope.cancel()


async def test_first_response_then_notifications_in_order(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with (
            _setup() as (_, server, client),
            client.observe(URI) as notifications,  # type: ignore[attr-defined]
        ):
            first = await notifications.__anext__()
            server.notify(2, b"two")
            second = await notifications.__anext__()
            server.notify(3, b"three", mtype=CON)
            third = await notifications.__anext__()
    assert [m.payload for m in (first, second, third)] == [b"first", b"two", b"three"]


async def test_stale_notifications_are_dropped(autojump_clock: object) -> None:
    with trio.fail_after(1000):
        async with (
            _setup() as (_, server, client),
            client.observe(URI) as notifications,  # type: ignore[attr-defined]
        ):
            await notifications.__anext__()
            server.notify(5, b"five")
            assert (await notifications.__anext__()).payload == b"five"
            server.notify(4, b"older")  # reordered: §3.4 says drop it
            server.notify(6, b"six")
            assert (await notifications.__anext__()).payload == b"six"
            assert notifications.dropped_stale == 1
            # After 128 s any value counts as newer again.
            await trio.sleep(129)
            server.notify(1, b"after a long silence")
            assert (await notifications.__anext__()).payload == b"after a long silence"


async def test_slow_consumer_gets_the_latest(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with (
            _setup() as (_, server, client),
            client.observe(URI) as notifications,  # type: ignore[attr-defined]
        ):
            await notifications.__anext__()
            for value in range(2, 12):
                server.notify(value, b"%d" % value)
            await trio.sleep(1)  # the consumer was busy meanwhile
            latest = await notifications.__anext__()
            assert latest.payload == b"11"
            assert notifications.dropped_slow == 9


async def test_final_response_ends_iteration(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with _setup() as (_, server, client):
            payloads = []
            async with client.observe(URI) as notifications:  # type: ignore[attr-defined]
                async for response in notifications:
                    payloads.append(response.payload)
                    if response.payload == b"first":
                        server.notify(2, b"two")
                    elif response.payload == b"two":
                        server.notify(None, b"last")  # no Observe: the server ended it
    assert payloads == [b"first", b"two", b"last"]


async def test_error_notification_raises(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with (
            _setup() as (_, server, client),
            client.observe(URI) as notifications,  # type: ignore[attr-defined]
        ):
            await notifications.__anext__()
            server.notify(None, b"gone", code=Code.NOT_FOUND, mtype=CON)
            with pytest.raises(ObservationError) as raised:
                await notifications.__anext__()
    assert raised.value.response.code == Code.NOT_FOUND


async def test_leaving_deregisters_on_the_wire_and_resets_late_notifications(
    autojump_clock: object,
) -> None:
    with trio.fail_after(100):
        async with _setup() as (_, server, client):
            observation = client.observe(URI)  # type: ignore[attr-defined]
            async with observation as notifications:
                await notifications.__anext__()
            await trio.sleep(1)  # the deregistration runs in the Context's nursery
            deregistrations = [m for m in server.received if m.code is GET and m.opt.observe == 1]
            assert len(deregistrations) == 1
            assert deregistrations[0].token == server.token
            server.notify(7, b"too late")
            await trio.sleep(1)
            assert server.received[-1].mtype is RST
            assert client.statistics.messaging[0].outstanding_requests == 0  # type: ignore[attr-defined]


async def test_cancelling_the_consumer_deregisters(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with _setup() as (_, server, client):
            with trio.move_on_after(5):
                async with client.observe(URI) as notifications:  # type: ignore[attr-defined]
                    async for _ in notifications:
                        pass  # waits forever: cancelled by move_on_after
            await trio.sleep(1)
            assert any(m.code is GET and m.opt.observe == 1 for m in server.received)


async def test_server_without_observe_support_gives_one_response(autojump_clock: object) -> None:
    network = MemoryNetwork(seed=0)

    class Plain:
        async def render(self, request: Message) -> Message:
            return Message(code=CONTENT, payload=b"plain")

        async def needs_blockwise_assembly(self, request: Message) -> bool:
            return True

    with trio.fail_after(100):
        async with (
            open_context(network=network, bind=("10.0.0.2", 5683), site=Plain()),
            open_context(network=network) as client,
            client.observe(URI) as notifications,
        ):
            payloads = [response.payload async for response in notifications]
    assert payloads == [b"plain"]


async def test_observing_libcoap_time() -> None:
    """coap_trio observing libcoap's coap-server-notls /time (one notification a second)."""
    with trio.fail_after(30):
        async with libcoap_server() as server, open_context() as client:
            seen = []
            async with client.observe(server.uri("/time")) as notifications:
                async for response in notifications:
                    assert response.code == Code.CONTENT
                    seen.append(response.opt.observe)
                    if len(seen) == 3:
                        break
    assert all(value is not None for value in seen)
    assert seen == sorted(seen)


class _ShortLived(ObservableResource):
    """Max-Age 2: an observer that hears nothing for 2 s (+ margin) re-registers."""

    def __init__(self, label: bytes) -> None:
        super().__init__()
        self.label = label

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=self.label, max_age=2)


async def _run_server(
    network: MemoryNetwork, site: Site, *, task_status: trio.TaskStatus[trio.CancelScope]
) -> None:
    with trio.CancelScope() as scope:
        async with open_context(network=network, bind=("10.0.0.2", 5683), site=site):
            task_status.started(scope)
            await trio.sleep_forever()


async def test_reregistration_after_max_age_survives_a_server_restart(
    autojump_clock: object,
) -> None:
    """RFC 7641 §3.3.1: with reregister=True the client registers again when Max-Age
    passes without a notification; a restarted server then serves it again."""
    network = MemoryNetwork(seed=0)
    old_site, new_site = Site(), Site()
    old_site.add(["clock"], _ShortLived(b"old server"))
    restarted = _ShortLived(b"new server")
    new_site.add(["clock"], restarted)
    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            old_server = await nursery.start(_run_server, network, old_site)
            async with (
                open_context(network=network, rng=random.Random(1)) as client,
                client.observe(URI, reregister=True) as notifications,
            ):
                assert (await notifications.__anext__()).payload == b"old server"
                old_server.cancel()  # the server goes away...
                await trio.sleep(0.5)
                await nursery.start(_run_server, network, new_site)  # ...and comes back
                started = trio.current_time()
                second = await notifications.__anext__()
                waited = trio.current_time() - started
                assert second.payload == b"new server"
                assert notifications.reregistrations == 1
                assert restarted.observation_count == 1
            nursery.cancel_scope.cancel()
    # Max-Age 2 s + a 5 s margin after the first response, minus the 0.5 s pause.
    assert 6.0 <= waited <= 7.0


async def test_no_reregistration_by_default(autojump_clock: object) -> None:
    network = MemoryNetwork(seed=0)
    site = Site()
    site.add(["clock"], _ShortLived(b"only"))
    with trio.fail_after(200):
        async with (
            open_context(network=network, bind=("10.0.0.2", 5683), site=site),
            open_context(network=network) as client,
            client.observe(URI) as notifications,
        ):
            await notifications.__anext__()
            with trio.move_on_after(60):
                await notifications.__anext__()
            assert notifications.reregistrations == 0
