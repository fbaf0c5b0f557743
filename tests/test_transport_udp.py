"""Tests for coap_trio.transports.udp on real loopback sockets (127.0.0.1 and ::1 only)."""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from coap_trio.remote import DatagramRemote
from coap_trio.transports import udp
from coap_trio.transports.udp import UDPEndpoint, UDPNetwork


class Collector:
    """The handlers given to run(), recording what they are called with."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[bytes, DatagramRemote]]] = []
        self.errors: list[tuple[DatagramRemote, OSError]] = []

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        self.batches.append(batch)

    def on_error(self, remote: DatagramRemote, error: OSError) -> None:
        self.errors.append((remote, error))

    @property
    def datagrams(self) -> list[tuple[bytes, DatagramRemote]]:
        return [item for batch in self.batches for item in batch]


async def wait_until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await trio.sleep(0.005)
    raise AssertionError("condition not reached in time")


@contextlib.asynccontextmanager
async def running(endpoint: UDPEndpoint) -> AsyncIterator[Collector]:
    collector = Collector()
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run, collector.on_datagrams, collector.on_error)
        yield collector
        nursery.cancel_scope.cancel()


def closed_port(host: str) -> int:
    """A loopback port that was just free: nobody listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


class StallingSocket(socket.socket):
    """A UDP socket whose sendto can be made to fail, to drive the outbox and error paths."""

    failure: OSError | None = None

    def sendto(self, *args: Any) -> int:
        if self.failure is not None:
            raise self.failure
        return super().sendto(*args)


def stalling_endpoint(outbox_capacity: int = 1024) -> tuple[StallingSocket, UDPEndpoint]:
    sock = StallingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, UDPEndpoint(sock, outbox_capacity=outbox_capacity)


# --- binding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "family"),
    [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6), ("::", socket.AF_INET6)],
)
async def test_bind_reports_the_real_port(host: str, family: socket.AddressFamily) -> None:
    with trio.fail_after(10):
        endpoint = UDPNetwork().open_endpoint(host, 0)
        local = endpoint.local_address
        assert endpoint.socket.family == family
        assert local.sockaddr[0] == host
        assert len(local.sockaddr) == (2 if family == socket.AF_INET else 4)
        assert local.port == endpoint.socket.getsockname()[1] > 0
        assert local.scheme == "coap"
        endpoint.close()
        endpoint.close()  # idempotent
        assert endpoint.socket.fileno() == -1


async def test_dual_stack_and_buffer_options() -> None:
    with trio.fail_after(10):
        endpoint = UDPNetwork().open_endpoint("::", 0)
        sock = endpoint.socket
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert not sock.getblocking()
        if sys.platform == "linux":  # Linux caps at rmem_max and reports twice the size
            with open("/proc/sys/net/core/rmem_max") as limit:
                expected = min(4 * 1024 * 1024, int(limit.read()))
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= expected
        endpoint.close()


@pytest.mark.parametrize("host", ["localhost", "", "1.2.3", "::1%", "127.0.0.1%lo", "x::1"])
def test_bind_rejects_non_literals(host: str) -> None:
    with pytest.raises((ValueError, OSError)):
        UDPNetwork().open_endpoint(host, 0)


def test_bind_rejects_bad_ports() -> None:
    with pytest.raises(ValueError):
        UDPNetwork().open_endpoint("127.0.0.1", 65536)


# --- remote_for ---------------------------------------------------------------------


def test_remote_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "_REMOTE_CACHE_LIMIT", 2)
    with contextlib.closing(UDPNetwork().open_endpoint("127.0.0.1", 0)) as endpoint:
        first = endpoint.remote_for("127.0.0.1", 1)
        assert endpoint.remote_for("127.0.0.1", 2) is endpoint.remote_for("127.0.0.1", 2)
        assert endpoint.remote_for("127.0.0.1", 1) is first
        endpoint.remote_for("127.0.0.1", 3)  # over the limit: the cache starts afresh
        again = endpoint.remote_for("127.0.0.1", 1)
        assert again == first
        assert again is not first


def test_remote_for_canonical_forms() -> None:
    v6 = UDPNetwork().open_endpoint("::", 0)
    v4 = UDPNetwork().open_endpoint("127.0.0.1", 0)
    try:
        assert v6.remote_for("127.0.0.1", 5683).sockaddr == ("::ffff:127.0.0.1", 5683, 0, 0)
        assert v6.remote_for("0:0::0:1", 1).sockaddr == ("::1", 1, 0, 0)
        lo = socket.if_nametoindex("lo") if sys.platform == "linux" else 1
        name = "lo" if sys.platform == "linux" else "1"
        assert v6.remote_for(f"FE80::1%{name}", 2).sockaddr == ("fe80::1", 2, 0, lo)
        assert v6.remote_for("fe80::1%7", 2).sockaddr == ("fe80::1", 2, 0, 7)
        assert v6.remote_for("fd00::1%7", 2).sockaddr == ("fd00::1", 2, 0, 0)  # global: no scope
        assert v6.remote_for("::1", 9) is v6.remote_for("::1", 9)  # interned
        assert v4.remote_for("127.0.0.1", 7).sockaddr == ("127.0.0.1", 7)
        with pytest.raises(OSError) as info:
            v4.remote_for("::1", 7)
        assert info.value.errno == errno.EAFNOSUPPORT
        for bad in ("localhost", "127.0.0.1%lo", "1.2.3.256"):
            with pytest.raises(ValueError):
                v4.remote_for(bad, 7)
        with pytest.raises(ValueError):
            v4.remote_for("127.0.0.1", -1)
    finally:
        v6.close()
        v4.close()


# --- receiving and sending ----------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_echo_between_endpoints(host: str) -> None:
    with trio.fail_after(10):
        network = UDPNetwork()
        client, server = network.open_endpoint(host, 0), network.open_endpoint(host, 0)
        async with running(server) as at_server, running(client) as at_client:
            to_server = client.remote_for(host, server.local_address.port)
            for i in range(3):
                client.send(b"ping %d" % i, to_server)
            await wait_until(lambda: len(at_server.datagrams) == 3)
            for data, remote in at_server.datagrams:
                assert remote == server.remote_for(host, client.local_address.port)
                server.send(data.replace(b"ping", b"pong"), remote)
            await wait_until(lambda: len(at_client.datagrams) == 3)
        assert [data for data, _ in at_client.datagrams] == [b"pong 0", b"pong 1", b"pong 2"]
        assert all(remote is to_server for _, remote in at_client.datagrams)
        assert server.statistics.datagrams_received == 3
        assert client.statistics.datagrams_sent == 3
        assert at_server.errors == at_client.errors == []


@pytest.mark.parametrize(
    ("client_host", "seen_as"), [("127.0.0.1", "::ffff:127.0.0.1"), ("::1", "::1")]
)
async def test_dual_stack_reports_canonical_peers(client_host: str, seen_as: str) -> None:
    with trio.fail_after(10):
        network = UDPNetwork()
        server, client = network.open_endpoint("::", 0), network.open_endpoint(client_host, 0)
        async with running(server) as at_server, running(client) as at_client:
            client.send(b"hello", client.remote_for(client_host, server.local_address.port))
            await wait_until(lambda: len(at_server.datagrams) == 1)
            [(data, remote)] = at_server.datagrams
            assert data == b"hello"
            port = client.local_address.port
            assert remote.sockaddr == (seen_as, port, 0, 0)
            assert remote == server.remote_for(client_host, port)
            assert remote is server.remote_for(client_host, port)
            assert remote.host == client_host
            server.send(b"back", remote)
            await wait_until(lambda: len(at_client.datagrams) == 1)
        assert at_client.datagrams[0][0] == b"back"


async def test_burst_arrives_in_batches() -> None:
    with trio.fail_after(10):
        network = UDPNetwork()
        sender, receiver = network.open_endpoint("127.0.0.1", 0), network.open_endpoint("::", 0)
        async with running(receiver) as received, running(sender):
            to_receiver = sender.remote_for("127.0.0.1", receiver.local_address.port)
            for chunk in range(20):
                for i in range(chunk * 250, chunk * 250 + 250):
                    sender.send(i.to_bytes(4, "big"), to_receiver)
                await trio.sleep(0)
            await wait_until(lambda: len(received.datagrams) >= 5000)
        numbers = [int.from_bytes(data, "big") for data, _ in received.datagrams]
        assert sorted(numbers) == list(range(5000))
        assert max(len(batch) for batch in received.batches) > 1
        assert len(received.batches) < 5000
        assert len({id(remote) for _, remote in received.datagrams}) == 1
        assert receiver.statistics.datagrams_received == 5000
        assert sender.statistics.datagrams_sent == 5000


async def test_one_at_a_time_then_a_burst_loses_nothing() -> None:
    # After wake-ups that each find one datagram (a request and its response at a
    # time) the receive loop reads one per wake-up and skips the read that would
    # find the socket empty; a burst must still arrive whole, and in batches again.
    with trio.fail_after(10):
        network = UDPNetwork()
        sender, receiver = network.open_endpoint("127.0.0.1", 0), network.open_endpoint("::", 0)
        async with running(receiver) as received, running(sender):
            to_receiver = sender.remote_for("127.0.0.1", receiver.local_address.port)
            for i in range(3 * udp._PROBE_EVERY):
                sender.send(i.to_bytes(4, "big"), to_receiver)
                await wait_until(lambda n=i + 1: len(received.datagrams) == n)
            assert all(len(batch) == 1 for batch in received.batches)
            single = len(received.datagrams)
            for i in range(single, single + 200):
                sender.send(i.to_bytes(4, "big"), to_receiver)
            await wait_until(lambda: len(received.datagrams) >= single + 200)
        numbers = [int.from_bytes(data, "big") for data, _ in received.datagrams]
        assert sorted(numbers) == list(range(single + 200))
        assert max(len(batch) for batch in received.batches) > 1
        assert receiver.statistics.datagrams_received == single + 200


async def test_outbox_keeps_order_and_counts_drops() -> None:
    with trio.fail_after(10):
        receiver = UDPNetwork().open_endpoint("127.0.0.1", 0)
        sock, sender = stalling_endpoint(outbox_capacity=10)
        async with running(receiver) as received, running(sender) as at_sender:
            to_receiver = sender.remote_for("127.0.0.1", receiver.local_address.port)
            sock.failure = BlockingIOError(errno.EAGAIN, "buffer full")
            for i in range(15):
                sender.send(b"%d" % i, to_receiver)
            stats = sender.statistics
            assert (stats.outbox_depth, stats.send_dropped, stats.datagrams_sent) == (10, 5, 0)
            sock.failure = None
            sender.send(b"late", to_receiver)  # the outbox is non-empty: queues behind it
            assert sender.statistics.send_dropped == 6
            await wait_until(lambda: len(received.datagrams) == 10)
            sender.send(b"10", to_receiver)  # drained: goes straight out again
            await wait_until(lambda: len(received.datagrams) == 11)
        assert [data for data, _ in received.datagrams] == [b"%d" % i for i in range(11)]
        assert sender.statistics.outbox_depth == 0
        assert sender.statistics.datagrams_sent == 11
        assert at_sender.errors == []


async def test_outbox_is_fifo_when_the_socket_drains() -> None:
    with trio.fail_after(10):
        receiver = UDPNetwork().open_endpoint("127.0.0.1", 0)
        sock, sender = stalling_endpoint()
        async with running(receiver) as received, running(sender):
            to_receiver = sender.remote_for("127.0.0.1", receiver.local_address.port)
            sock.failure = BlockingIOError(errno.EAGAIN, "buffer full")
            for i in range(3):
                sender.send(b"%d" % i, to_receiver)
            sock.failure = None
            sender.send(b"3", to_receiver)  # must not overtake the queued three
            assert sender.statistics.outbox_depth == 4
            await wait_until(lambda: len(received.datagrams) == 4)
        assert [data for data, _ in received.datagrams] == [b"0", b"1", b"2", b"3"]


async def test_send_errors_are_reported_not_raised() -> None:
    with trio.fail_after(10):
        sock, endpoint = stalling_endpoint()
        remote = endpoint.remote_for("127.0.0.1", 9)
        sock.failure = OSError(errno.ENETUNREACH, "unreachable")
        endpoint.send(b"before run", remote)  # counted, nobody to tell
        async with running(endpoint) as collector:
            endpoint.send(b"x", remote)
            assert collector.errors == []  # never called from inside send()
            await wait_until(lambda: len(collector.errors) == 1)
        [(reported, error)] = collector.errors
        assert reported is remote
        assert error.errno == errno.ENETUNREACH
        assert endpoint.statistics.send_dropped == 2
        assert endpoint.statistics.datagrams_sent == 0


# --- ICMP errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind_host", "peer_host"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("::", "127.0.0.1")]
)
async def test_port_unreachable_reaches_on_error(bind_host: str, peer_host: str) -> None:
    with trio.fail_after(10):
        endpoint = UDPNetwork().open_endpoint(bind_host, 0)
        async with running(endpoint) as collector:
            remote = endpoint.remote_for(peer_host, closed_port(peer_host))
            endpoint.send(b"anyone?", remote)
            await wait_until(lambda: len(collector.errors) >= 1)
            endpoint.send(b"still alive", endpoint.local_address)  # the loop goes on
            await wait_until(lambda: len(collector.datagrams) == 1)
        reported, error = collector.errors[0]
        assert reported == remote
        assert isinstance(error, ConnectionRefusedError)
        assert error.errno == errno.ECONNREFUSED
        assert endpoint.statistics.peer_errors >= 1
        assert collector.datagrams[0][0] == b"still alive"


async def test_pending_icmp_error_does_not_fail_another_send() -> None:
    with trio.fail_after(10):
        network = UDPNetwork()
        sender = network.open_endpoint("127.0.0.1", 0)
        receiver = network.open_endpoint("::", 0)
        poller = select.poll()
        poller.register(sender.socket, 0)  # POLLERR only: a report is pending
        with contextlib.closing(sender):  # not running: nobody reads the report
            async with running(receiver) as received:
                sender.send(b"void", sender.remote_for("127.0.0.1", closed_port("127.0.0.1")))
                await wait_until(lambda: bool(poller.poll(0)))
                sender.send(b"real", sender.remote_for("127.0.0.1", receiver.local_address.port))
                await wait_until(lambda: len(received.datagrams) == 1)
            assert received.datagrams[0][0] == b"real"
            stats = sender.statistics
            assert (stats.datagrams_sent, stats.send_dropped, stats.peer_errors) == (2, 0, 1)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_oversized_datagram_is_dropped_and_reported_once(host: str) -> None:
    with trio.fail_after(10):
        endpoint = UDPNetwork().open_endpoint(host, 0)
        async with running(endpoint) as collector:
            endpoint.send(b"x" * 70000, endpoint.local_address)
            await wait_until(lambda: len(collector.errors) == 1)
            endpoint.send(b"small", endpoint.local_address)
            await wait_until(lambda: len(collector.datagrams) == 1)
        [(remote, error)] = collector.errors
        assert remote == endpoint.local_address
        assert error.errno == errno.EMSGSIZE
        assert endpoint.statistics.send_dropped == 1


# --- lifetime -----------------------------------------------------------------------


async def test_run_exit_closes_the_socket() -> None:
    with trio.fail_after(10):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
        endpoint = UDPEndpoint(sock)
        async with running(endpoint) as collector:
            with pytest.raises(trio.BusyResourceError):
                await endpoint.run(collector.on_datagrams, collector.on_error)
        assert sock.fileno() == -1
        endpoint.send(b"late", endpoint.remote_for("::1", 9))
        assert endpoint.statistics.send_dropped == 1
        with pytest.raises(trio.ClosedResourceError):
            await endpoint.run(collector.on_datagrams, collector.on_error)


async def test_close_makes_run_return() -> None:
    with trio.fail_after(10):
        endpoint = UDPNetwork().open_endpoint("127.0.0.1", 0)
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(endpoint.run, collector.on_datagrams, collector.on_error)
            await trio.sleep(0.01)
            endpoint.close()
        # the nursery exited without being cancelled: run returned by itself


async def test_handler_exception_propagates_as_itself() -> None:
    with trio.fail_after(10):
        endpoint = UDPNetwork().open_endpoint("127.0.0.1", 0)
        endpoint.send(b"boom", endpoint.local_address)  # queued in the kernel before run

        def explode(batch: list[tuple[bytes, DatagramRemote]]) -> None:
            raise ValueError("handler bug")

        with pytest.raises(ValueError, match="handler bug"):
            await endpoint.run(explode, Collector().on_error)
        assert endpoint.statistics.datagrams_received == 1


# --- resolving ----------------------------------------------------------------------


async def test_resolve() -> None:
    with trio.fail_after(10):
        network = UDPNetwork()
        addresses = await network.resolve("localhost", 5683)
        assert addresses
        assert set(addresses) <= {"127.0.0.1", "::1"}
        assert len(addresses) == len(set(addresses))
        assert await network.resolve("::1", 5683) == ["::1"]
        for name in ("nonexistent.invalid", "a..b"):
            with pytest.raises(OSError):
                await network.resolve(name, 5683)
