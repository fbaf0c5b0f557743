"""Tests for coap_trio.testing: the in-memory lossy network, its capture and pytest fixtures."""

from __future__ import annotations

import errno
import functools
import importlib.metadata
import socket
import subprocess
import sys
from collections import Counter

import pytest
import trio
import trio.testing

from coap_trio.remote import DatagramRemote
from coap_trio.testing import (
    CapturedDatagram,
    LinkConditions,
    MemoryEndpoint,
    MemoryNetwork,
    NetworkStatistics,
)

SERVER = "10.0.0.2"
PORT = 5683


class Inbox:
    """Records what an endpoint's run task hands over, with trio's clock."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[tuple[bytes, DatagramRemote]]]] = []
        self.errors: list[tuple[float, DatagramRemote, OSError]] = []

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        self.batches.append((trio.current_time(), list(batch)))

    def on_error(self, remote: DatagramRemote, error: OSError) -> None:
        self.errors.append((trio.current_time(), remote, error))

    @property
    def datagrams(self) -> list[tuple[bytes, DatagramRemote]]:
        return [item for _, batch in self.batches for item in batch]

    @property
    def timed(self) -> list[tuple[float, bytes]]:
        return [(when, data) for when, batch in self.batches for data, _ in batch]


async def serve(nursery: trio.Nursery, endpoint: MemoryEndpoint) -> Inbox:
    inbox = Inbox()
    await nursery.start(endpoint.run, inbox.on_datagrams, inbox.on_error)
    return inbox


def accounted(stats: NetworkStatistics) -> bool:
    """Every copy is in exactly one bucket."""
    copies = stats.sent + stats.duplicated
    return copies == (
        stats.dropped + stats.undeliverable + stats.delivered + stats.in_flight + stats.discarded
    )


# --- perfect links, addresses ----------------------------------------------------


async def test_perfect_delivery(
    memory_network: MemoryNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    network = memory_network
    server = network.open_endpoint(SERVER, PORT)
    client = network.open_endpoint("FD00:0::1", 0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inbox = await serve(nursery, server)
            await trio.sleep(1)
            for data in (b"one", b"two", b"three"):
                client.send(data, network.remote_for(SERVER, PORT))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    source = network.remote_for("fd00::1", client.local_address.port)
    assert source == DatagramRemote(("fd00::1", 49152), "coap")
    assert inbox.datagrams == [(b"one", source), (b"two", source), (b"three", source)]
    assert [when for when, _ in inbox.timed] == [1.0, 1.0, 1.0]
    assert [(r.fate, r.deliver_at, r.copy, r.duplicate) for r in network.capture] == [
        ("delivered", 1.0, 0, False)
    ] * 3
    assert network.capture[0] == CapturedDatagram(
        time=1.0,
        source=source,
        destination=DatagramRemote((SERVER, PORT), "coap"),
        data=b"one",
        copy=0,
        fate="delivered",
        deliver_at=1.0,
    )
    assert client.statistics.datagrams_sent == 3
    assert server.statistics.datagrams_received == 3
    assert network.statistics == NetworkStatistics(
        sent=3,
        duplicated=0,
        dropped=0,
        delivered=3,
        undeliverable=0,
        in_flight=0,
        discarded=0,
        capture_evicted=0,
    )


def test_remote_for_is_canonical() -> None:
    network = MemoryNetwork()
    expected = DatagramRemote(("fd00::1", 5683), "coap")
    assert network.remote_for("FD00:0:0::0001", 5683) == expected
    assert network.remote_for("::ffff:10.0.0.1", 7) == DatagramRemote(("10.0.0.1", 7), "coap")
    endpoint = network.open_endpoint("10.0.0.9", 0)
    assert endpoint.remote_for("FD00::1", 5683) == expected
    assert endpoint.network is network
    for host, port in [("coap.example", 5683), ("10.0.0.01", 1), ("10.0.0.1", 70000)]:
        with pytest.raises(ValueError):
            network.remote_for(host, port)


def test_open_endpoint_rejects_bad_addresses() -> None:
    network = MemoryNetwork()
    with pytest.raises(ValueError):
        network.open_endpoint("coap.example", 5683)
    with pytest.raises(ValueError):
        network.open_endpoint("10.0.0.1", -1)
    with pytest.raises(ValueError):
        MemoryNetwork(default_host="::")
    with pytest.raises(ValueError):
        MemoryNetwork(max_capture=-1)


async def test_wildcard_bind(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    any6 = network.open_endpoint("::", PORT)
    specific = network.open_endpoint("10.0.0.7", PORT)
    any4 = network.open_endpoint("0.0.0.0", 6000)
    client = network.open_endpoint("10.0.0.9", 0)
    assert any6.local_address == DatagramRemote(("::", PORT), "coap")
    assert any6.source_address == network.remote_for("10.0.0.1", PORT)
    assert specific.source_address == specific.local_address
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inboxes = [await serve(nursery, e) for e in (any6, specific, any4, client)]
            for host, port in [
                ("10.0.0.7", PORT),
                ("10.0.0.8", PORT),
                ("fd00::5", PORT),
                ("10.0.0.8", 6000),
                ("fd00::5", 6000),
            ]:
                client.send(f"{host} {port}".encode(), network.remote_for(host, port))
            any6.send(b"reply", client.local_address)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    received = [[data for data, _ in inbox.datagrams] for inbox in inboxes]
    assert received == [
        [b"10.0.0.8 5683", b"fd00::5 5683"],
        [b"10.0.0.7 5683"],
        [b"10.0.0.8 6000"],
        [b"reply"],
    ]
    # the wildcard endpoint sends from default_host; what was sent to stays in the capture
    assert inboxes[3].datagrams[0][1] == network.remote_for(network.default_host, PORT)
    sent = [r for r in network.capture if r.source == client.source_address]
    assert [(r.destination.host, r.fate) for r in sent] == [
        ("10.0.0.7", "delivered"),
        ("10.0.0.8", "delivered"),
        ("fd00::5", "delivered"),
        ("10.0.0.8", "delivered"),
        ("fd00::5", "undeliverable"),
    ]

    v6 = MemoryNetwork(default_host="FD00::A")
    assert v6.default_host == "fd00::a"
    assert v6.open_endpoint("::", 0).source_address == v6.remote_for("fd00::a", 49152)


def test_port_zero_allocates_deterministic_ports() -> None:
    network = MemoryNetwork()
    first = network.open_endpoint("10.0.0.1", 0)
    second = network.open_endpoint("fd00::1", 0)
    assert [first.local_address.port, second.local_address.port] == [49152, 49153]
    network.open_endpoint("10.0.0.5", 49154)  # taken on some address: skipped
    assert network.open_endpoint("::", 0).local_address.port == 49155
    first.close()
    assert network.open_endpoint("10.0.0.1", 0).local_address.port == 49156
    assert MemoryNetwork().open_endpoint("10.0.0.1", 0).local_address.port == 49152


def test_address_in_use() -> None:
    network = MemoryNetwork()
    endpoint = network.open_endpoint("fd00::1", PORT)
    with pytest.raises(OSError) as excinfo:
        network.open_endpoint("FD00:0::0001", PORT)
    assert excinfo.value.errno == errno.EADDRINUSE
    network.open_endpoint("fd00::2", PORT)  # another address, same port
    network.open_endpoint("::", PORT)  # the wildcard is a separate binding
    network.open_endpoint("0.0.0.0", PORT)
    with pytest.raises(OSError) as excinfo:
        network.open_endpoint("::", PORT)
    assert excinfo.value.errno == errno.EADDRINUSE
    endpoint.close()
    endpoint.close()  # idempotent
    assert endpoint.closed
    assert network.open_endpoint("fd00::1", PORT).local_address.port == PORT


# --- resolver --------------------------------------------------------------------


async def test_fake_resolver(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    network.add_host("coap.example", "FD00::2", "10.0.0.2", "fd00::2")
    with trio.fail_after(10):  # a thread would let autojump run to this deadline
        start = trio.current_time()
        with trio.testing.assert_checkpoints():
            assert await network.resolve("coap.example", PORT) == ["fd00::2", "10.0.0.2"]
        assert await network.resolve("COAP.Example.", 0) == ["fd00::2", "10.0.0.2"]
        assert await network.resolve("FD00:0::7", PORT) == ["fd00::7"]
        assert await network.resolve("::ffff:10.0.0.3", PORT) == ["10.0.0.3"]
        with trio.testing.assert_checkpoints(), pytest.raises(socket.gaierror) as excinfo:
            await network.resolve("unknown.example", PORT)
        assert isinstance(excinfo.value, OSError)
        assert excinfo.value.errno == socket.EAI_NONAME
        assert trio.current_time() == start
    network.add_host("coap.example", "10.0.0.9")  # replaces
    assert await network.resolve("coap.example", PORT) == ["10.0.0.9"]
    for name, addresses in [("10.0.0.1", ("10.0.0.2",)), ("x.example", ()), ("", ("10.0.0.1",))]:
        with pytest.raises(ValueError):
            network.add_host(name, *addresses)
    with pytest.raises(ValueError):
        network.add_host("y.example", "not-an-address")


# --- link conditions -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": -0.1},
        {"loss": 1.5},
        {"loss": float("nan")},
        {"duplicate": 2},
        {"reorder": True},
        {"delay": (0.2, 0.1)},
        {"delay": (-1.0, 0.1)},
        {"delay": (0.0, float("inf"))},
        {"delay": (1.0,)},
        {"reorder_delay": -1.0},
        {"reorder_delay": float("inf")},
    ],
)
def test_link_conditions_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LinkConditions(**kwargs)  # type: ignore[arg-type]


def test_link_conditions_values() -> None:
    assert LinkConditions().is_perfect
    assert LinkConditions(delay=0.5).delay == (0.5, 0.5)
    assert LinkConditions(delay=(0, 1)).delay == (0.0, 1.0)
    assert not LinkConditions(reorder=0.1).is_perfect
    assert LinkConditions(reorder=0.1, reorder_delay=0).is_perfect
    with pytest.raises(AttributeError):
        LinkConditions().loss = 0.5  # type: ignore[misc]


async def test_set_conditions_most_specific_wins(autojump_clock: trio.testing.MockClock) -> None:
    lossy, slow = LinkConditions(loss=1.0), LinkConditions(delay=2.0)
    network = MemoryNetwork()
    network.set_conditions(lossy, destination=SERVER)
    network.set_conditions(slow, source="10.0.0.1")
    network.set_conditions(LinkConditions(), source="10.0.0.3", destination=SERVER)
    assert network.conditions_for("10.0.0.4", SERVER) is lossy
    assert network.conditions_for("10.0.0.1", SERVER) is slow  # source before destination
    assert network.conditions_for("10.0.0.3", SERVER).is_perfect
    assert network.conditions_for("10.0.0.4", "10.0.0.5") is network.conditions
    server = network.open_endpoint(SERVER, PORT)
    clients = [network.open_endpoint(f"10.0.0.{i}", 0) for i in (1, 3, 4)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inbox = await serve(nursery, server)
            for client in clients:
                client.send(b"hello", server.local_address)
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
    assert [(when, source.host) for when, batch in inbox.batches for _, source in batch] == [
        (0.0, "10.0.0.3"),
        (2.0, "10.0.0.1"),
    ]
    network.set_conditions(None, destination=SERVER)  # removes the override
    assert network.conditions_for("10.0.0.4", SERVER) is network.conditions
    network.set_conditions(slow)  # replaces the default
    assert network.conditions is slow
    with pytest.raises(ValueError):
        network.set_conditions(None)


async def send_and_collect(
    network: MemoryNetwork, count: int, *, spacing: float = 0.0, settle: float = 10.0
) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
    """Send ``count`` numbered datagrams client -> server: (send times, receive times).

    Times are relative to the start, rounded to nanoseconds.
    """
    server = network.open_endpoint(SERVER, PORT)
    client = network.open_endpoint("10.0.0.1", 0)
    start = trio.current_time()
    sent = []
    with trio.fail_after(spacing * count + settle + 10):
        async with trio.open_nursery() as nursery:
            inbox = await serve(nursery, server)
            for number in range(count):
                data = number.to_bytes(2, "big")
                sent.append((round(trio.current_time() - start, 9), data))
                client.send(data, server.local_address)
                if spacing:
                    await trio.sleep(spacing)
            await trio.sleep(settle)
            nursery.cancel_scope.cancel()
    assert accounted(network.statistics)
    assert network.statistics.in_flight == 0
    return sent, [(round(when - start, 9), data) for when, data in inbox.timed]


async def test_loss_rate(
    make_memory_network: type[MemoryNetwork], autojump_clock: trio.testing.MockClock
) -> None:
    counts = []
    for _ in range(2):
        network = make_memory_network(seed=7, conditions=LinkConditions(loss=0.25))
        _, received = await send_and_collect(network, 10_000)
        stats = network.statistics
        assert stats.delivered == len(received) == 10_000 - stats.dropped
        assert [r.fate for r in network.capture].count("dropped") == stats.dropped
        counts.append(stats.dropped)
    # 25% of 10,000: standard deviation ~43; the exact count is fixed by the seed
    assert 2350 < counts[0] < 2650
    assert counts == [2443, 2443]


async def test_duplication(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=1, conditions=LinkConditions(duplicate=0.3))
    _, received = await send_and_collect(network, 2000)
    stats = network.statistics
    assert 500 < stats.duplicated < 700
    assert len(received) == stats.delivered == 2000 + stats.duplicated
    twice = [data for data, n in Counter(data for _, data in received).items() if n == 2]
    assert len(twice) == stats.duplicated
    extra = [r for r in network.capture if r.duplicate]
    assert sorted(r.data for r in extra) == sorted(twice)
    assert all(r.copy == 0 for r in network.capture)

    # the two copies are judged independently: 0, 1 or 2 arrive
    network = MemoryNetwork(seed=1, conditions=LinkConditions(duplicate=1.0, loss=0.5))
    _, received = await send_and_collect(network, 2000)
    arrivals = Counter(data for _, data in received)
    spread = Counter(arrivals.get(number.to_bytes(2, "big"), 0) for number in range(2000))
    assert 400 < spread[0] < 600
    assert 900 < spread[1] < 1100
    assert 400 < spread[2] < 600


async def test_delay_is_uniform_within_bounds(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    network = MemoryNetwork(seed=2, conditions=LinkConditions(delay=(0.1, 0.3)))
    _, received = await send_and_collect(network, 500)
    times = [when for when, _ in received]
    assert all(0.1 <= when <= 0.3 for when in times)
    assert min(times) < 0.11
    assert max(times) > 0.29
    assert times == sorted(times)
    expected = sorted((r.deliver_at, r.data) for r in network.capture if r.deliver_at)
    assert received == [(round(when - start, 9), data) for when, data in expected]

    network = MemoryNetwork(conditions=LinkConditions(delay=0.05))
    _, received = await send_and_collect(network, 3)
    assert received == [(0.05, b"\0\0"), (0.05, b"\0\1"), (0.05, b"\0\2")]


async def test_reorder(autojump_clock: trio.testing.MockClock) -> None:
    in_order = MemoryNetwork(seed=3, conditions=LinkConditions(delay=(0.0, 0.05)))
    _, received = await send_and_collect(in_order, 100, spacing=0.1)
    assert [data for _, data in received] == [n.to_bytes(2, "big") for n in range(100)]

    conditions = LinkConditions(delay=(0.0, 0.05), reorder=0.5, reorder_delay=1.0)
    network = MemoryNetwork(seed=3, conditions=conditions)
    sent, received = await send_and_collect(network, 100, spacing=0.1)
    order = [data for _, data in received]
    assert sorted(order) == [n.to_bytes(2, "big") for n in range(100)]
    assert order != sorted(order)
    delays = {data: when for when, data in received}
    delays = {data: delays[data] - when for when, data in sent}
    assert all(0.0 <= delay <= 1.05 + 1e-9 for delay in delays.values())
    assert 30 < sum(delay > 0.05 for delay in delays.values()) < 70


async def test_batches_deliver_all_due(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.5))
    server = network.open_endpoint(SERVER, PORT)
    client = network.open_endpoint("10.0.0.1", 0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for number in range(5):  # due at one instant: one batch
                client.send(b"a%d" % number, server.local_address)
            await trio.sleep(0.2)
            client.send(b"b", server.local_address)  # due later: its own batch
            await trio.sleep(1)
            # not running yet: three more queue, due at 1.7, 1.8, 1.9
            for number in range(3):
                client.send(b"c%d" % number, server.local_address)
                await trio.sleep(0.1)
            await trio.sleep(2)
            assert network.statistics.in_flight == 9
            inbox = await serve(nursery, server)  # at 3.5: everything is due
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert [(when, [data for data, _ in batch]) for when, batch in inbox.batches] == [
        (3.5, [b"a0", b"a1", b"a2", b"a3", b"a4", b"b", b"c0", b"c1", b"c2"])
    ]

    network = MemoryNetwork(conditions=LinkConditions(delay=0.5))
    server = network.open_endpoint(SERVER, PORT)
    client = network.open_endpoint("10.0.0.1", 0)
    start = trio.current_time()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inbox = await serve(nursery, server)
            for number in range(5):
                client.send(b"a%d" % number, server.local_address)
            await trio.sleep(0.2)
            client.send(b"b", server.local_address)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert [(round(when - start, 9), len(batch)) for when, batch in inbox.batches] == [
        (0.5, 5),
        (0.7, 1),
    ]


# --- determinism -----------------------------------------------------------------

CHAOS = LinkConditions(loss=0.2, duplicate=0.2, delay=(0.01, 0.05), reorder=0.3, reorder_delay=0.3)


async def chatter(
    network: MemoryNetwork, *, reverse: bool
) -> tuple[list[CapturedDatagram], list[list[tuple[float, bytes]]]]:
    """Five clients in their own tasks send to an echo server at the same instants."""
    server = network.open_endpoint("10.0.0.100", PORT)

    def echo(batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, source in batch:
            server.send(b"echo " + data, source)

    clients = [network.open_endpoint(f"10.0.0.{i}", 0) for i in range(1, 6)]

    async def client_task(number: int, client: MemoryEndpoint) -> None:
        for round_ in range(20):
            # repeated bytes: identical retransmissions get fresh decisions
            client.send(b"request %d from %d" % (round_ % 4, number), server.local_address)
            await trio.sleep(0.1)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, echo, lambda remote, error: None)
            inboxes = [await serve(nursery, client) for client in clients]
            order = list(enumerate(clients))
            async with trio.open_nursery() as senders:
                for number, client in reversed(order) if reverse else order:
                    senders.start_soon(client_task, number, client)
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
    assert accounted(network.statistics)
    return network.capture, [inbox.timed for inbox in inboxes]


def run_chatter(seed: int, *, reverse: bool) -> tuple[list[CapturedDatagram], list[object]]:
    """One separate ``trio.run`` (trio shuffles its scheduling differently in each)."""
    network = MemoryNetwork(seed=seed, conditions=CHAOS)
    clock = trio.testing.MockClock(autojump_threshold=0)  # as pytest-trio's autojump_clock
    capture, inboxes = trio.run(functools.partial(chatter, network, reverse=reverse), clock=clock)
    return capture, list(inboxes)


def test_same_seed_same_capture_whatever_the_scheduling() -> None:
    first = run_chatter(11, reverse=False)
    second = run_chatter(11, reverse=True)
    assert first == second
    capture = first[0]
    fates = Counter(r.fate for r in capture)
    assert fates["dropped"] > 0
    assert fates["delivered"] > 0
    assert any(r.duplicate for r in capture)
    # each request's bytes went out 5 times: copies 0..4 got decisions of their own
    assert max(r.copy for r in capture if r.data.startswith(b"request")) == 4
    assert [r.time for r in capture] == sorted(r.time for r in capture)

    other = run_chatter(12, reverse=False)
    assert [(r.fate, r.deliver_at) for r in other[0][:100]] != [
        (r.fate, r.deliver_at) for r in capture[:100]
    ]


# --- unreachable, closed, capture limits ----------------------------------------


@pytest.mark.parametrize("icmp", [False, True])
async def test_unreachable_destination(icmp: bool, autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=0.2), icmp_unreachable=icmp)
    client = network.open_endpoint("10.0.0.1", 0)
    nobody = network.remote_for("10.0.0.50", 9)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inbox = await serve(nursery, client)
            client.send(b"anyone?", nobody)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    [record] = network.capture
    assert (record.fate, record.deliver_at, record.destination) == ("undeliverable", None, nobody)
    assert network.statistics.undeliverable == 1
    if icmp:
        [(when, remote, error)] = inbox.errors
        assert (when, remote) == (0.2, nobody)
        assert isinstance(error, ConnectionRefusedError)
        assert error.errno == errno.ECONNREFUSED
        assert client.statistics.peer_errors == 1
    else:
        assert inbox.errors == []
        assert client.statistics.peer_errors == 0
    assert inbox.datagrams == []


async def test_lost_datagrams_to_nobody_are_not_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(conditions=LinkConditions(loss=1.0), icmp_unreachable=True)
    client = network.open_endpoint("10.0.0.1", 0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inbox = await serve(nursery, client)
            client.send(b"lost", network.remote_for("10.0.0.50", 9))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert [r.fate for r in network.capture] == ["dropped"]
    assert inbox.errors == []


async def test_closed_endpoints(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(conditions=LinkConditions(delay=1.0))
    server = network.open_endpoint(SERVER, PORT)
    client = network.open_endpoint("10.0.0.1", 0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inbox = await serve(nursery, server)
            for number in range(3):
                client.send(b"%d" % number, server.local_address)
            await trio.sleep(0.5)
            server.close()  # the running run() returns; pending datagrams are discarded
            await trio.sleep(0)
            assert server.closed
            replacement = network.open_endpoint(SERVER, PORT)  # the address is free
            new_inbox = await serve(nursery, replacement)
            await trio.sleep(2)
            nursery.cancel_scope.cancel()  # cancelling run closes its endpoint too
    assert inbox.datagrams == new_inbox.datagrams == []
    assert [r.fate for r in network.capture] == ["delivered"] * 3
    stats = network.statistics
    assert (stats.discarded, stats.in_flight, stats.delivered) == (3, 0, 0)
    assert replacement.closed
    assert network.open_endpoint(SERVER, PORT)  # freed by the cancellation

    client.close()
    client.send(b"late", network.remote_for(SERVER, PORT))
    assert client.statistics.send_dropped == 1
    assert len(network.capture) == 3
    with pytest.raises(trio.ClosedResourceError):
        await client.run(inbox.on_datagrams, inbox.on_error)


async def test_run_twice_and_handler_failure(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    server = network.open_endpoint(SERVER, PORT)
    client = network.open_endpoint("10.0.0.1", 0)

    def broken(batch: list[tuple[bytes, DatagramRemote]]) -> None:
        raise RuntimeError("handler bug")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await serve(nursery, server)
            with pytest.raises(trio.BusyResourceError):
                await server.run(broken, lambda remote, error: None)
            nursery.cancel_scope.cancel()
    assert server.closed

    server = network.open_endpoint(SERVER, PORT)

    async def serve_broken() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, broken, lambda remote, error: None)
            client.send(b"boom", server.local_address)
            await trio.sleep(1)

    with trio.fail_after(10), pytest.raises(ExceptionGroup) as excinfo:
        await serve_broken()
    assert excinfo.group_contains(RuntimeError, match="handler bug")
    assert server.closed
    assert "closed" in repr(server)


async def test_capture_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(max_capture=5)
    _, received = await send_and_collect(network, 8)
    assert len(received) == 8
    assert [r.data for r in network.capture] == [n.to_bytes(2, "big") for n in range(3, 8)]
    assert network.statistics.capture_evicted == 3
    network.clear_capture()
    assert network.capture == []
    assert network.statistics.sent == 8

    silent = MemoryNetwork(capture=False)
    await send_and_collect(silent, 4)
    assert silent.capture == []
    assert silent.statistics.delivered == 4


# --- the package and the pytest plugin -------------------------------------------


def test_make_memory_network_fixture(make_memory_network: type[MemoryNetwork]) -> None:
    network = make_memory_network(seed=5, conditions=LinkConditions(loss=0.5))
    assert isinstance(network, MemoryNetwork)
    assert (network.seed, network.conditions.loss) == (5, 0.5)


def test_memory_network_fixture(memory_network: MemoryNetwork) -> None:
    assert memory_network.seed == 0
    assert memory_network.conditions.is_perfect
    assert memory_network.capture == []


def test_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11")
    assert {(e.name, e.value) for e in entry_points} >= {
        ("coap_trio", "coap_trio.testing.pytest_plugin")
    }
    assert pytestconfig.pluginmanager.has_plugin("coap_trio")


def test_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, coap_trio.testing.pytest_plugin, coap_trio.testing as t\n"
        "assert 'coap_trio.testing.network' not in sys.modules\n"
        "assert 'MemoryNetwork' in dir(t)\n"
        "assert t.MemoryNetwork.__name__ == 'MemoryNetwork'\n"
        "assert 'coap_trio.testing.network' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    import coap_trio.testing

    with pytest.raises(AttributeError):
        _ = coap_trio.testing.NoSuchName  # type: ignore[attr-defined]
