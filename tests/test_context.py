"""Tests for coap_trio.context and its Request: the trio shell around the messaging layer.

Every test runs a client and (mostly) a server :class:`Context` on a
:class:`~coap_trio.testing.MemoryNetwork` under pytest-trio's
``autojump_clock``, so timeouts of minutes cost no real time; every test is
bounded by ``trio.fail_after``. What is checked is what the wire shows (the
network's capture, decoded) and what the public API raises or returns, plus
its statistics (``requests_in_flight``...) and trio's task tree where
"nothing is left behind" must be seen.
"""

from __future__ import annotations

import errno
import gc
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing

from coap_trio import Request
from coap_trio.codec import decode, encode
from coap_trio.context import Context, bind_endpoints, open_context
from coap_trio.errors import (
    LocalProtocolError,
    RequestCancelledError,
    RequestTimeoutError,
    ResetByPeerError,
    UnresolvableHostError,
    UnsupportedTransportError,
)
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.numbers.types import Type
from coap_trio.protocol.exchanges import ClientExchange
from coap_trio.remote import DatagramRemote
from coap_trio.testing import CapturedDatagram, LinkConditions, MemoryNetwork

SERVER = "10.0.0.2"
CLIENT = "10.0.0.1"  # the MemoryNetwork's default_host: where wildcard endpoints send from
PORT = 5683
URI = f"coap://{SERVER}/x"
SERVER_ADDRESS = DatagramRemote((SERVER, PORT), "coap")

PARAMS = TransmissionParameters()
#: Generous bound for one test in virtual time (autojump makes it free).
VIRTUAL_LIMIT = 1000.0
BLACK_HOLE = LinkConditions(loss=1.0)


# -- resources ---------------------------------------------------------------------------


class Echo:
    """Answers 2.05 with ``hello `` and the request's payload, at once; counts renders."""

    def __init__(self) -> None:
        self.rendered: list[Message] = []

    async def render(self, request: Message) -> Message:
        self.rendered.append(request)
        return Message(code=Code.CONTENT, payload=b"hello " + request.payload)

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False


class Slow(Echo):
    """Like :class:`Echo`, but takes ``delay`` seconds (long past the piggyback window)."""

    def __init__(self, delay: float = 1.0) -> None:
        super().__init__()
        self.delay = delay

    async def render(self, request: Message) -> Message:
        await trio.sleep(self.delay)
        return await super().render(request)


class Failing(Echo):
    """Raises from ``render`` with a message that must never reach the wire."""

    async def render(self, request: Message) -> Message:
        raise RuntimeError("SECRET internal detail")


class Blocking(Echo):
    """Blocks every render until :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()
        self.started = 0

    async def render(self, request: Message) -> Message:
        self.started += 1
        await self.release.wait()
        return await super().render(request)


# -- helpers -----------------------------------------------------------------------------


@asynccontextmanager
async def server_and_client(
    net: MemoryNetwork, site: Any = None, **server_options: Any
) -> AsyncIterator[tuple[Context, Context]]:
    """A server bound to SERVER:PORT (with ``site``) and a client on the wildcard."""
    async with (
        open_context(
            network=net,
            bind=(SERVER, PORT),
            site=Echo() if site is None else site,
            rng=random.Random(1),
            **server_options,
        ) as server,
        open_context(network=net, rng=random.Random(2)) as client,
    ):
        yield server, client


def get(uri: str = URI, **fields: Any) -> Message:
    return Message(code=Code.GET, uri=uri, **fields)


def wire(net: MemoryNetwork, *, source: str | None = None, destination: str | None = None) -> list:
    """The captured records (with their decoded message) between two hosts, oldest first."""
    found: list[tuple[CapturedDatagram, Message]] = []
    for record in net.capture:
        if source is not None and record.source.host != source:
            continue
        if destination is not None and record.destination.host != destination:
            continue
        found.append((record, decode(record.data)))
    return found


def to_server(net: MemoryNetwork) -> list[tuple[CapturedDatagram, Message]]:
    return wire(net, source=CLIENT, destination=SERVER)


def from_server(net: MemoryNetwork) -> list[tuple[CapturedDatagram, Message]]:
    return wire(net, source=SERVER, destination=CLIENT)


def tasks_below(task: trio.lowlevel.Task) -> int:
    """How many tasks run in the nurseries of ``task``, at any depth (trio's public task tree)."""
    count = 0
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            count += 1 + tasks_below(child)
    return count


def stats_are_idle(ctx: Context) -> bool:
    """No exchange of ``ctx`` is outstanding, queued or being handled."""
    return (
        ctx.statistics.requests_in_flight == 0
        and all(
            m.outstanding_requests == 0
            and m.queued_requests == 0
            and m.pending_server_requests == 0
            for m in ctx.statistics.messaging
        )
        and ctx.statistics.handler_queue_depth == 0
    )


async def raw_endpoint(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    answer: Callable[[Message], Message | None],
    host: str = SERVER,
    port: int = PORT,
) -> list[Message]:
    """A bare MemoryNetwork endpoint that answers each datagram with ``answer(message)``."""
    endpoint = net.open_endpoint(host, port)
    received: list[Message] = []

    def on_datagrams(batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, remote in batch:
            message = decode(data)
            received.append(message)
            reply = answer(message)
            if reply is not None:
                endpoint.send(encode(reply), remote)

    await nursery.start(endpoint.run, on_datagrams, lambda remote, error: None)
    return received


# -- RFC 7252 §4.2 retransmission, as seen on the wire -------------------------------------


@pytest.mark.parametrize("rng_seed", [2, 7, 12345])
@pytest.mark.parametrize("setup", ["no server", "server behind a black hole"])
async def test_retransmission_schedule_on_the_wire(
    autojump_clock: trio.testing.MockClock, rng_seed: int, setup: str
) -> None:
    net = MemoryNetwork(seed=3)
    with trio.fail_after(VIRTUAL_LIMIT):
        # With "no server" the server listens on another port: nobody at SERVER:PORT.
        port = PORT + 1 if setup == "no server" else PORT
        async with open_context(network=net, bind=(SERVER, port), site=Echo()):
            if setup != "no server":
                net.set_conditions(BLACK_HOLE, destination=SERVER)
            async with open_context(network=net, rng=random.Random(rng_seed)) as client:
                request = client.request(get())
                with pytest.raises(RequestTimeoutError) as caught:
                    await request.response
                failed_at = trio.current_time()
                assert stats_are_idle(client)
                # Nothing more is sent after the give-up.
                await trio.sleep(300)

    records = [record for record, _ in to_server(net)]
    assert len(records) == 5  # the first transmission and MAX_RETRANSMIT = 4 retransmissions
    expected_fate = "undeliverable" if setup == "no server" else "dropped"
    assert all(record.fate == expected_fate for record in records)
    assert {record.data for record in records} == {records[0].data}  # identical bytes
    assert [record.copy for record in records] == [0, 1, 2, 3, 4]
    assert decode(records[0].data).mtype is Type.CON

    first = records[0].time
    gaps = [b.time - a.time for a, b in pairwise(records)]
    timeout = gaps[0]
    assert PARAMS.ACK_TIMEOUT <= timeout <= PARAMS.ACK_TIMEOUT * PARAMS.ACK_RANDOM_FACTOR
    assert gaps == pytest.approx([timeout, 2 * timeout, 4 * timeout, 8 * timeout], rel=1e-9)
    assert type(caught.value) is RequestTimeoutError  # as itself, not in an ExceptionGroup
    assert caught.value.transmissions == 5
    assert failed_at - first == pytest.approx(31 * timeout, rel=1e-9)
    assert failed_at - first <= PARAMS.MAX_TRANSMIT_WAIT


async def test_initial_timeout_is_randomized(autojump_clock: trio.testing.MockClock) -> None:
    """Different RNG seeds give different initial timeouts, all within [2, 3]."""
    timeouts = set()
    for seed in range(5):
        net = MemoryNetwork(seed=0)
        with trio.fail_after(VIRTUAL_LIMIT):
            async with open_context(network=net, rng=random.Random(seed)) as client:
                request = client.request(get())
                with pytest.raises(RequestTimeoutError):
                    await request.response
        records = [record for record, _ in to_server(net)]
        timeouts.add(round(records[1].time - records[0].time, 9))
    assert len(timeouts) == 5
    assert all(2.0 <= t <= 3.0 for t in timeouts)


# -- RST and ping --------------------------------------------------------------------------


async def test_reset_by_peer(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with trio.open_nursery() as nursery:
            received = await raw_endpoint(
                nursery,
                net,
                lambda m: Message(code=Code.EMPTY, mtype=Type.RST, mid=m.mid),
            )
            async with open_context(network=net, rng=random.Random(2)) as client:
                request = client.request(get())
                with pytest.raises(ResetByPeerError) as caught:
                    await request.response
                assert type(caught.value) is ResetByPeerError
                assert trio.current_time() == 0.0  # at once: no retransmission
                assert stats_are_idle(client)
                await trio.sleep(100)
            nursery.cancel_scope.cancel()
    assert len(received) == 1
    assert len(to_server(net)) == 1


async def test_ping_a_coap_trio_server_returns_the_rtt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0, conditions=LinkConditions(delay=0.05))
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (server, client):
            rtt = await client.ping(f"coap://{SERVER}")
            assert stats_are_idle(client)
            assert server.statistics.messaging[0].pings == 1
    assert rtt == pytest.approx(0.1)
    (ping,) = [m for _, m in to_server(net)]
    (reset,) = [m for _, m in from_server(net)]
    assert (ping.code, ping.mtype, ping.token, ping.payload) == (Code.EMPTY, Type.CON, b"", b"")
    assert (reset.code, reset.mtype, reset.mid) == (Code.EMPTY, Type.RST, ping.mid)


async def test_ping_to_nobody_times_out(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_context(network=net, rng=random.Random(2)) as client:
            with pytest.raises(RequestTimeoutError) as caught:
                await client.ping(f"coap://{SERVER}")
            assert stats_are_idle(client)
            assert trio.current_time() <= PARAMS.MAX_TRANSMIT_WAIT
    assert type(caught.value) is RequestTimeoutError
    assert caught.value.transmissions == 5
    assert len(to_server(net)) == 5


async def test_ping_by_host_name(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("sensor.example", SERVER)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            assert await client.ping("coap://sensor.example") == 0.0


# -- cancellation ------------------------------------------------------------------------


async def test_cancelled_waiter_abandons_the_exchange(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    net.set_conditions(BLACK_HOLE, destination=SERVER)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            request = client.request(get())
            with trio.move_on_after(5) as scope:
                await request.response
            assert scope.cancelled_caught
            cancelled_at = trio.current_time()
            assert request.done
            assert client.statistics.requests_in_flight == 0
            assert client.statistics.messaging[0].outstanding_requests == 0
            await trio.sleep(200)
            with pytest.raises(RequestCancelledError):
                await request.response
            sent = to_server(net)
            assert stats_are_idle(client)

    mid = sent[0][1].mid
    times = [record.time for record, message in sent if message.mid == mid]
    assert times[0] == 0.0
    assert 1 < len(times) <= 3  # transmitted at 0, T and maybe 3T (T <= 3) before t=5
    assert all(t < cancelled_at for t in times)


async def test_cancelled_waiter_frees_the_nstart_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            net.set_conditions(BLACK_HOLE, destination=SERVER)
            with trio.move_on_after(5):
                await client.request(get()).response
            net.set_conditions(None, destination=SERVER)
            start = trio.current_time()
            response = await client.get(URI)
            assert trio.current_time() == start  # sent at once, answered at once
    assert response.code is Code.CONTENT


async def test_cancel_after_empty_ack_rejects_the_late_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Abandoned while waiting for a separate response: the response gets an RST."""
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(3.0)) as (server, client):
            request = client.request(get())
            with trio.move_on_after(1):
                await request.response
            await trio.sleep(10)
            with pytest.raises(RequestCancelledError):
                await request.response
            assert stats_are_idle(client)
            assert stats_are_idle(server)
    replies = [m for _, m in to_server(net)][1:]
    assert [(m.mtype, m.code) for m in replies] == [(Type.RST, Code.EMPTY)]
    assert len(from_server(net)) == 2  # the empty ACK, the separate response (reset)


async def test_response_awaited_twice_and_by_two_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    results: list[Message] = []
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(1.0)) as (_, client):
            request = client.request(get(payload=b"x"))

            async def wait() -> None:
                results.append(await request.response)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                nursery.start_soon(wait)
            results.append(await request.response)
            results.append(await request.response)
    assert len(results) == 4
    assert all(r is results[0] for r in results)
    assert results[0].payload == b"hello x"


async def test_error_awaited_twice_gives_the_same_error_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_context(network=net, rng=random.Random(2)) as client:
            request = client.request(get())
            for _ in range(2):
                with pytest.raises(RequestTimeoutError):
                    await request.response


async def test_never_awaited_request_completes_and_leaves_no_state(
    autojump_clock: trio.testing.MockClock, recwarn: pytest.WarningsRecorder
) -> None:
    net = MemoryNetwork(seed=0)
    site = Echo()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=site) as (server, client):
            answered = client.request(get(payload=b"a"))
            _ = answered.response  # looked at, never awaited: no coroutine is created
            del _
            net.set_conditions(BLACK_HOLE, destination="10.0.0.3")
            unanswered = client.request(get(uri="coap://10.0.0.3/x"))
            await trio.sleep(1)
            assert answered.done
            assert not unanswered.done
            assert client.statistics.requests_in_flight == 1  # the unanswered one
            await trio.sleep(PARAMS.MAX_TRANSMIT_WAIT)
            assert unanswered.done
            assert stats_are_idle(client)
            assert stats_are_idle(server)
            gc.collect()
    assert len(site.rendered) == 1
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    # Answers are still there for a late reader.
    assert (await answered.response).payload == b"hello a"
    with pytest.raises(RequestTimeoutError):
        await unanswered.response


def live(kind: type) -> int:
    """How many objects of ``kind`` exist (those freed by refcount are gone at once)."""
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def test_finished_requests_are_freed_without_the_cyclic_gc(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Request -> exchange -> owner -> Request was a reference cycle per request:
    # only the cyclic GC freed them, and its runs were ~20% of a busy client's
    # CPU. Answered and cancelled requests must go by refcount alone. (A failed
    # one keeps a cycle through its error's traceback until the GC runs.)
    net = MemoryNetwork(seed=0)
    net.set_conditions(BLACK_HOLE, destination="10.0.0.3")
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            gc.collect()
            gc.disable()
            try:
                answered = client.request(get(payload=b"a"))
                await answered.response
                cancelled = client.request(get(uri="coap://10.0.0.3/y"))
                await trio.sleep(1)
                cancelled.cancel()
                assert live(Request) == live(ClientExchange) == 2
                del answered, cancelled
                assert live(Request) == 0
                # The cancelled CON's retransmission entry lets go when its timer surfaces.
                await trio.sleep(PARAMS.MAX_TRANSMIT_WAIT)
                assert live(ClientExchange) == 0
            finally:
                gc.enable()


async def test_cancel_stops_retransmissions(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    net.set_conditions(BLACK_HOLE, destination=SERVER)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            request = client.request(get())
            await trio.sleep(1)
            request.cancel()
            assert request.done
            request.cancel()  # idempotent
            await trio.sleep(200)
            with pytest.raises(RequestCancelledError) as caught:
                await request.response
            assert type(caught.value) is RequestCancelledError
            assert stats_are_idle(client)
    assert len(to_server(net)) == 1


async def test_cancel_of_a_queued_request_never_sends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(1.0)) as (_, client):
            first = client.request(get(payload=b"1"))
            second = client.request(get(payload=b"2"))  # waits for NSTART
            assert client.statistics.messaging[0].queued_requests == 1
            second.cancel()
            assert (await first.response).payload == b"hello 1"
            with pytest.raises(RequestCancelledError):
                await second.response
            await trio.sleep(10)
            assert stats_are_idle(client)
    payloads = {m.payload for _, m in to_server(net) if m.code is Code.GET}
    assert payloads == {b"1"}


async def test_cancel_while_resolving(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("sensor.example", SERVER)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            request = client.request(get("coap://sensor.example/x"))
            request.cancel()
            with pytest.raises(RequestCancelledError):
                await request.response
            await trio.sleep(10)
            assert stats_are_idle(client)
    assert to_server(net) == []


async def test_cancelling_one_of_two_waiters_keeps_the_exchange(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    outcome: dict[str, Any] = {}
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(3.0)) as (_, client):
            request = client.request(get(payload=b"k"))

            async def impatient() -> None:
                with trio.move_on_after(1) as scope:
                    await request.response
                outcome["impatient cancelled"] = scope.cancelled_caught

            async def patient() -> None:
                outcome["patient"] = await request.response

            async with trio.open_nursery() as nursery:
                nursery.start_soon(impatient)
                nursery.start_soon(patient)
            assert trio.current_time() == pytest.approx(3.0)
    assert outcome["impatient cancelled"] is True
    assert outcome["patient"].payload == b"hello k"


# -- leaving the context -----------------------------------------------------------------


async def test_leaving_the_context_leaves_nothing(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    outer_error: list[BaseException] = []
    baseline = list(trio.lowlevel.current_task().child_nurseries)  # pytest-trio's own
    with trio.fail_after(VIRTUAL_LIMIT):
        async with trio.open_nursery() as outer:
            async with open_context(
                network=net, bind=(SERVER, PORT), site=Blocking(), rng=random.Random(1)
            ):
                async with open_context(
                    network=net, rng=random.Random(2), client_endpoints=2
                ) as client:
                    net.set_conditions(BLACK_HOLE, destination="10.0.0.3")
                    lost = client.request(get(uri="coap://10.0.0.3/x"))
                    blocked = client.request(get())  # the server's handler never answers

                    async def wait_outside() -> None:
                        try:
                            await blocked.response
                        except RequestCancelledError as error:
                            outer_error.append(error)

                    outer.start_soon(wait_outside)
                    await trio.sleep(1)
                    client_addresses = client.addresses
                    assert tasks_below(trio.lowlevel.current_task()) >= 4 + 2
                    with_client = tasks_below(trio.lowlevel.current_task())
                # The client's tasks are gone, its endpoints closed (addresses free).
                assert tasks_below(trio.lowlevel.current_task()) <= with_client - 4
                for address in client_addresses:
                    net.open_endpoint(address.host, address.port).close()
                with pytest.raises(OSError):
                    net.open_endpoint(SERVER, PORT)  # the server's is still open
            assert tasks_below(trio.lowlevel.current_task()) <= 1  # (wait_outside, ending)
        assert trio.lowlevel.current_task().child_nurseries == baseline
    assert [type(e) for e in outer_error] == [RequestCancelledError]
    for request in (lost, blocked):
        assert request.done
        with pytest.raises(RequestCancelledError):
            await request.response
    # The addresses are free again.
    net.open_endpoint(SERVER, PORT).close()
    assert net.statistics.in_flight == 0


async def test_request_after_the_context_closed_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_context(network=net, rng=random.Random(2)) as client:
            pass
        request = client.request(get())
        with pytest.raises(RequestCancelledError):
            await request.response
        with pytest.raises(RequestCancelledError):
            await client.ping(URI)
        assert client.statistics.requests_in_flight == 0


@pytest.mark.parametrize("with_server", [False, True])
async def test_exception_in_the_body_propagates_as_itself(
    autojump_clock: trio.testing.MockClock, with_server: bool
) -> None:
    net = MemoryNetwork(seed=0)
    started: list[Any] = []

    async def body() -> None:
        async with open_context(
            network=net,
            bind=(SERVER, PORT),
            site=Blocking() if with_server else None,
            rng=random.Random(1),
        ) as ctx:
            # To itself (blocked in the handler) or to nobody (retransmitted).
            started.append(ctx.request(get(uri=URI if with_server else "coap://10.0.0.9/x")))
            await trio.sleep(1)
            raise KeyError("from the body")

    with trio.fail_after(VIRTUAL_LIMIT), pytest.raises(KeyError) as caught:
        await body()
    assert type(caught.value) is KeyError
    assert caught.value.args == ("from the body",)
    with pytest.raises(RequestCancelledError):
        await started[0].response


async def test_cancellation_from_outside_the_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    baseline = list(trio.lowlevel.current_task().child_nurseries)  # pytest-trio's own
    with trio.fail_after(VIRTUAL_LIMIT):
        with trio.move_on_after(2) as scope:
            async with server_and_client(net, site=Blocking()) as (_, client):
                await client.get(URI)
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(2.0)
        assert trio.lowlevel.current_task().child_nurseries == baseline


# -- typed errors ------------------------------------------------------------------------


async def test_typed_errors(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_context(network=net, rng=random.Random(2)) as client:
            unresolvable = client.request(get("coap://nowhere.example/x"))
            with pytest.raises(UnresolvableHostError) as caught:
                await unresolvable.response
            assert type(caught.value) is UnresolvableHostError
            with pytest.raises(UnresolvableHostError):
                await client.ping("coap://nowhere.example")

            with pytest.raises(UnsupportedTransportError):
                client.request(get("coaps://10.0.0.2/x"))
            with pytest.raises(UnsupportedTransportError):
                await client.get("coaps://10.0.0.2/x")
            with pytest.raises(LocalProtocolError):
                client.request(Message(code=Code.CONTENT, uri=URI))
            with pytest.raises(LocalProtocolError):
                client.request(Message(code=Code.GET))  # no destination
            with pytest.raises(LocalProtocolError):
                client.request(get(mtype=Type.ACK))
            assert stats_are_idle(client)
    assert net.capture == []


async def test_token_in_use_is_a_local_error_and_leaves_no_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("sensor.example", SERVER)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(1.0)) as (_, client):
            client.set_nstart(4)
            first = client.request(get(token=b"tok"))
            with pytest.raises(LocalProtocolError):
                client.request(get(token=b"tok"))
            assert client.statistics.requests_in_flight == 1  # the first one
            # Through a host name the same mistake surfaces from .response,
            # and the context keeps working.
            by_name = client.request(get("coap://sensor.example/x", token=b"tok"))
            with pytest.raises(LocalProtocolError):
                await by_name.response
            assert client.statistics.requests_in_flight == 1  # the first one
            assert (await first.response).code is Code.CONTENT
            assert (await client.get("coap://sensor.example/x")).code is Code.CONTENT
            assert stats_are_idle(client)


# -- host names --------------------------------------------------------------------------


class CountingResolver:
    def __init__(self, net: MemoryNetwork) -> None:
        self.calls: list[str] = []
        self._resolve = net.resolve
        net.resolve = self  # type: ignore[method-assign]

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return await self._resolve(host, port)


async def test_host_names_resolve_once(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("sensor.example", SERVER)
    resolver = CountingResolver(net)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            for i in range(10):
                response = await client.get("coap://sensor.example/x", payload=b"%d" % i)
                assert response.payload == b"hello %d" % i
            assert await client.ping("coap://sensor.example") == 0.0
    assert resolver.calls == ["sensor.example"]
    requests = [m for _, m in to_server(net) if m.code is Code.GET]
    assert len(requests) == 10
    assert all(m.opt.uri_host == "sensor.example" for m in requests)


async def test_concurrent_requests_share_one_resolution(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("sensor.example", SERVER)
    resolver = CountingResolver(net)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            client.set_nstart(10)
            requests = [
                client.request(get("coap://sensor.example/x", payload=b"%d" % i)) for i in range(10)
            ]
            unknown = [client.request(get("coap://nowhere.example/x")) for _ in range(5)]
            for i, request in enumerate(requests):
                assert (await request.response).payload == b"hello %d" % i
            for request in unknown:
                with pytest.raises(UnresolvableHostError):
                    await request.response
            assert stats_are_idle(client)
    assert sorted(resolver.calls) == ["nowhere.example", "sensor.example"]


async def test_host_name_cache_expires(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("sensor.example", SERVER)
    resolver = CountingResolver(net)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with (
            open_context(network=net, bind=(SERVER, PORT), site=Echo()),
            open_context(network=net, dns_ttl=10, rng=random.Random(2)) as client,
        ):
            await client.get("coap://sensor.example/x")
            await trio.sleep(5)
            await client.get("coap://sensor.example/x")
            assert resolver.calls == ["sensor.example"]
            await trio.sleep(6)
            await client.get("coap://sensor.example/x")
    assert resolver.calls == ["sensor.example", "sensor.example"]


async def test_ip_literals_never_call_the_resolver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    resolver = CountingResolver(net)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, client):
            for _ in range(3):
                await client.get(URI)
            await client.ping(URI)
            request = client.request(get())
            assert request.exchange is not None  # routed at once, no resolution task
            await request.response
    assert resolver.calls == []


# -- NSTART ------------------------------------------------------------------------------


async def test_nstart_1_serializes_requests_to_one_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(1.0)) as (_, client):
            first = client.request(get(payload=b"1"))
            second = client.request(get(payload=b"2"))
            assert (await first.response).payload == b"hello 1"
            assert trio.current_time() == pytest.approx(1.0)
            assert (await second.response).payload == b"hello 2"
            assert trio.current_time() == pytest.approx(2.0)
    sent = [(record.time, m.payload) for record, m in to_server(net) if m.code is Code.GET]
    assert sent == [(0.0, b"1"), (pytest.approx(1.0), b"2")]


async def test_set_nstart_allows_more_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(1.0)) as (_, client):
            client.set_nstart(4)
            requests = [client.request(get(payload=b"%d" % i)) for i in range(5)]
            assert client.statistics.messaging[0].outstanding_requests == 4
            assert client.statistics.messaging[0].queued_requests == 1
            for request in requests:
                await request.response
            assert trio.current_time() == pytest.approx(2.0)
    sent = sorted((record.time, m.payload) for record, m in to_server(net) if m.code is Code.GET)
    assert [t for t, _ in sent] == [0.0] * 4 + [pytest.approx(1.0)]


async def test_nstart_is_per_server(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with (
            open_context(network=net, bind=[(SERVER, PORT), ("10.0.0.3", PORT)], site=Slow(1.0)),
            open_context(network=net, rng=random.Random(2)) as client,
        ):
            a = client.request(get())
            b = client.request(get("coap://10.0.0.3/x"))
            await a.response
            await b.response
            assert trio.current_time() == pytest.approx(1.0)


# -- server side -------------------------------------------------------------------------


async def test_piggybacked_response(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    site = Echo()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=site) as (server, client):
            response = await client.post(URI, payload=b"there")
            assert stats_are_idle(server)
    assert response.code is Code.CONTENT
    assert response.payload == b"hello there"
    assert response.mtype is Type.ACK
    (request,) = site.rendered
    assert request.code is Code.POST
    assert request.opt.uri_path == ("x",)
    assert request.remote == DatagramRemote((CLIENT, request.remote.port), "coap")
    assert len(to_server(net)) == 1
    (reply,) = [m for _, m in from_server(net)]
    assert reply.mtype is Type.ACK
    assert reply.mid == to_server(net)[0][1].mid


async def test_slow_resource_gives_a_separate_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0, conditions=LinkConditions(delay=0.01))
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(1.0)) as (server, client):
            response = await client.get(URI)
            assert trio.current_time() == pytest.approx(1.02)
            await trio.sleep(30)  # no retransmission of anything: all was acknowledged
            assert stats_are_idle(server)
            assert stats_are_idle(client)
    assert response.mtype is Type.CON
    assert response.code is Code.CONTENT
    conversation = [
        (record.time, record.source.host, m.mtype, m.code, m.mid, m.token)
        for record, m in wire(net)
    ]
    request_mid, token = to_server(net)[0][1].mid, to_server(net)[0][1].token
    separate_mid = from_server(net)[1][1].mid
    assert conversation == [
        (0.0, CLIENT, Type.CON, Code.GET, request_mid, token),
        (pytest.approx(0.11), SERVER, Type.ACK, Code.EMPTY, request_mid, b""),  # ack_delay 0.1
        (pytest.approx(1.01), SERVER, Type.CON, Code.CONTENT, separate_mid, token),
        (pytest.approx(1.02), CLIENT, Type.ACK, Code.EMPTY, separate_mid, b""),
    ]


async def test_handler_exception_is_a_bare_5_00(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT), caplog.at_level(logging.ERROR, logger="coap_trio"):
        async with server_and_client(net, site=Failing()) as (server, client):
            response = await client.get(URI)
            assert server.statistics.handler_errors == 1
            # The server keeps serving.
            assert (await client.get(URI)).code is Code.INTERNAL_SERVER_ERROR
            assert server.statistics.handler_errors == 2
    assert response.code is Code.INTERNAL_SERVER_ERROR
    assert response.payload == b""
    assert len(response.opt) == 0
    for record, _ in from_server(net):
        assert b"SECRET" not in record.data
        assert b"Traceback" not in record.data
    assert any("SECRET" in r.getMessage() or r.exc_info for r in caplog.records)


async def test_no_site_answers_4_04(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with (
            open_context(network=net, bind=(SERVER, PORT), rng=random.Random(1)) as server,
            open_context(network=net, rng=random.Random(2)) as client,
        ):
            response = await client.get(URI)
            non = await client.request(get(mtype=Type.NON)).response
            assert stats_are_idle(server)
    assert (response.code, response.mtype) == (Code.NOT_FOUND, Type.ACK)
    assert (non.code, non.mtype) == (Code.NOT_FOUND, Type.NON)


async def test_non_request_gets_a_non_response(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (server, client):
            response = await client.request(get(mtype=Type.NON, payload=b"n")).response
            assert stats_are_idle(server)
            assert stats_are_idle(client)
    assert (response.mtype, response.code, response.payload) == (Type.NON, Code.CONTENT, b"hello n")
    assert [m.mtype for _, m in wire(net)] == [Type.NON, Type.NON]


async def test_slow_non_request_gets_a_non_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=Slow(1.0)) as (_, client):
            response = await client.request(get(mtype=Type.NON)).response
    assert response.mtype is Type.NON
    assert [m.mtype for _, m in wire(net)] == [Type.NON, Type.NON]  # no ACK of any kind


async def test_full_handler_queue(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    site = Blocking()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=site, server_concurrency=1, request_queue=1) as (
            server,
            client,
        ):
            client.set_nstart(10)
            handled = client.request(get(payload=b"1"))
            await trio.sleep(0.01)
            assert site.started == 1
            queued = client.request(get(payload=b"2"))
            await trio.sleep(0.01)
            assert server.statistics.handler_queue_depth == 1
            rejected = await client.request(get(payload=b"3")).response
            assert (rejected.code, rejected.mtype) == (Code.SERVICE_UNAVAILABLE, Type.ACK)
            assert rejected.opt.max_age is not None
            assert server.statistics.overloaded_responses == 1

            dropped = client.request(get(mtype=Type.NON, payload=b"4"))
            await trio.sleep(0.01)
            assert server.statistics.dropped_requests == 1
            assert not [m for _, m in from_server(net) if m.mtype is Type.NON]

            site.release.set()
            assert (await handled.response).payload == b"hello 1"
            assert (await queued.response).payload == b"hello 2"
            with pytest.raises(RequestTimeoutError):
                await dropped.response
            assert trio.current_time() <= PARAMS.MAX_TRANSMIT_WAIT + 1
            assert stats_are_idle(server)
            stats = server.statistics
    assert [m.payload for m in site.rendered] == [b"1", b"2"]
    assert (stats.overloaded_responses, stats.dropped_requests) == (1, 1)


async def test_dropped_con_retransmission_is_served_once_there_is_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 5.03 is final for that request; a NON dropped is forgotten, so a resend is new."""
    net = MemoryNetwork(seed=0)
    site = Blocking()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net, site=site, server_concurrency=1, request_queue=1) as (
            server,
            client,
        ):
            client.set_nstart(10)
            client.request(get(payload=b"1"))
            client.request(get(payload=b"2"))
            await trio.sleep(0.01)
            dropped = client.request(get(mtype=Type.NON, payload=b"3"))
            await trio.sleep(0.01)
            assert server.statistics.dropped_requests == 1
            site.release.set()
            await trio.sleep(1)
            # The same NON datagram again (same MID): handled as new now.
            (original,) = [r for r, m in to_server(net) if m.payload == b"3"]
            net.replay(original)
            response = await dropped.response
    assert response.payload == b"hello 3"
    assert [m.payload for m in site.rendered] == [b"1", b"2", b"3"]


# -- endpoints ---------------------------------------------------------------------------


async def test_client_endpoints(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_client(net) as (_, default):
            assert len(default.addresses) == 1
            async with open_context(network=net, client_endpoints=3) as client:
                addresses = client.addresses
                assert len(addresses) == 3
                assert len({a.port for a in addresses}) == 3
                assert all(a.host == "::" for a in addresses)
                assert len(client.statistics.endpoints) == 3
                assert len(client.statistics.messaging) == 3
                response = await client.get(URI)
                (sent,) = [r for r, _ in to_server(net)]
            async with open_context(network=net, bind=("10.0.0.5", 0), client_endpoints=2) as mixed:
                assert [a.host for a in mixed.addresses] == ["10.0.0.5", "::", "::"]
                await mixed.get(URI)
    assert response.code is Code.CONTENT
    # Requests go out from the first endpoint with a free MID.
    assert sent.source.port == addresses[0].port


# -- binding host names ----------------------------------------------------------------


class _Refusing:
    """A MemoryNetwork that refuses some binds: ``refusals`` maps (address, port) to an
    errno (port None: every port); ``taken_once`` is an address whose first bind to a
    chosen port fails with EADDRINUSE (another program holds that port there)."""

    def __init__(
        self,
        net: MemoryNetwork,
        refusals: dict[tuple[str, int | None], int] | None = None,
        taken_once: str | None = None,
    ) -> None:
        self.net = net
        self.refusals = refusals or {}
        self.taken_once = taken_once
        self.binds: list[tuple[str, int]] = []

    def open_endpoint(self, host: str, port: int) -> Any:
        self.binds.append((host, port))
        if host == self.taken_once and port != 0:
            self.taken_once = None
            raise OSError(errno.EADDRINUSE, f"address already in use: {host} port {port}")
        code = self.refusals.get((host, port)) or self.refusals.get((host, None))
        if code is not None:
            raise OSError(code, f"refused {host} port {port}")
        return self.net.open_endpoint(host, port)

    async def resolve(self, host: str, port: int) -> list[str]:
        return await self.net.resolve(host, port)


async def test_a_bound_name_gets_one_port_on_every_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("dual.example", "::1", SERVER)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_context(network=net, bind=("dual.example", 0), site=Echo()) as server:
            (six, four) = server.addresses
            assert (six.host, four.host) == ("::1", SERVER)
            assert six.port == four.port != 0
            async with open_context(network=net) as client:
                response = await client.get(f"coap://dual.example:{six.port}/x")
                by_address = await client.get(f"coap://{SERVER}:{six.port}/x")
        with pytest.raises(OSError, match=r"nowhere\.example") as raised:
            async with open_context(network=net, bind=("nowhere.example", 0)):
                pass  # pragma: no cover - never entered
    assert isinstance(raised.value, socket.gaierror)
    assert response.code == by_address.code == Code.CONTENT


async def test_a_bound_name_moves_all_its_addresses_when_the_port_is_taken() -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("dual.example", "::1", SERVER)
    refusing = _Refusing(net, taken_once=SERVER)  # the port ::1 got is taken on SERVER
    endpoints = await bind_endpoints(refusing, "dual.example", 0)  # type: ignore[arg-type]
    assert [e.local_address.host for e in endpoints] == ["::1", SERVER]
    (port,) = {endpoint.local_address.port for endpoint in endpoints}
    assert [host for host, _ in refusing.binds] == ["::1", SERVER, "::1", SERVER]
    assert [port for _, port in refusing.binds[::2]] == [0, 0]  # tried, then all again
    taken = refusing.binds[1][1]
    assert port not in (0, taken)
    assert refusing.binds[3] == (SERVER, port)
    for endpoint in endpoints:
        endpoint.close()


async def test_a_bound_name_leaves_out_addresses_the_machine_lacks() -> None:
    net = MemoryNetwork(seed=0)
    net.add_host("dual.example", "::1", SERVER)
    lacking = _Refusing(net, {("::1", None): errno.EADDRNOTAVAIL})  # IPv6 off
    (endpoint,) = await bind_endpoints(lacking, "dual.example", 0)  # type: ignore[arg-type]
    assert endpoint.local_address.host == SERVER
    endpoint.close()
    nothing = _Refusing(
        net, {("::1", None): errno.EADDRNOTAVAIL, (SERVER, None): errno.EADDRNOTAVAIL}
    )
    with pytest.raises(OSError) as raised:
        await bind_endpoints(nothing, "dual.example", 0)  # type: ignore[arg-type]
    assert raised.value.errno == errno.EADDRNOTAVAIL
    in_use = _Refusing(net, {(SERVER, 7000): errno.EADDRINUSE})  # a fixed port: no retry
    with pytest.raises(OSError) as raised:
        await bind_endpoints(in_use, "dual.example", 7000)  # type: ignore[arg-type]
    assert raised.value.errno == errno.EADDRINUSE
    assert in_use.binds == [("::1", 7000), (SERVER, 7000)]
