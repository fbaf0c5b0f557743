"""coap_trio.serve: the trio-style entry point of a server (``await nursery.start(serve, site)``).

On real loopback sockets (real clock) and on a MemoryNetwork (autojump
clock): it reports the bound addresses through ``task_status.started``,
serves a real client, and cancelling it closes what it bound.
"""

from __future__ import annotations

import errno
import functools
import random
import socket

import pytest
import trio
import trio.testing

import coap_trio
from coap_trio import CONTENT, Message, NetworkError, open_context
from coap_trio.remote import DatagramRemote
from coap_trio.testing import MemoryNetwork

#: Real seconds a loopback test may take.
TIMEOUT = 10
#: Virtual seconds a MemoryNetwork test may take (autojump makes them free).
VIRTUAL_LIMIT = 1000.0


class Echo:
    """Answers 2.05 with the request's Uri-Path joined by slashes."""

    async def render(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"/".join(p.encode() for p in request.opt.uri_path))

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return True


def udp_bind_fails(host: str, port: int) -> bool:
    """Whether binding a fresh UDP socket to ``host:port`` fails with EADDRINUSE."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            return True
    return False


async def test_serve_reports_its_addresses_and_serves_a_real_client() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(coap_trio.serve, Echo(), [("::1", 0), ("127.0.0.1", 0)])
            six, four = addresses
            assert all(isinstance(address, DatagramRemote) for address in addresses)
            assert (six.host, four.host) == ("::1", "127.0.0.1")
            assert six.port != 0
            assert four.port != 0
            assert six.scheme == "coap"
            assert str(six) == six.uri_base == f"coap://[::1]:{six.port}"
            assert str(four) == f"coap://127.0.0.1:{four.port}"
            async with open_context() as client:
                a = await client.get(f"{six}/a/b")
                b = await client.get(f"{four}/c")
            assert (a.payload, b.payload) == (b"a/b", b"c")
            assert udp_bind_fails("::1", six.port)
            nursery.cancel_scope.cancel()
    # Cancelled: its sockets are closed, the ports free, and nobody answers there.
    assert not udp_bind_fails("::1", six.port)
    assert not udp_bind_fails("127.0.0.1", four.port)
    with trio.fail_after(5):  # ICMP port unreachable, far sooner than a timeout
        async with open_context() as client:
            with pytest.raises(NetworkError):
                await client.get(f"{six}/gone")


async def test_serve_passes_options_to_open_context_and_reports_stream_listeners() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            serving = functools.partial(coap_trio.serve, Echo(), tcp_bind=("::1", 0))
            udp, tcp = await nursery.start(serving, ("::1", 0))
            assert (udp.scheme, tcp.scheme) == ("coap", "coap+tcp")
            assert str(tcp) == f"coap+tcp://[::1]:{tcp.port}"
            async with open_context() as client:
                response = await client.get(f"{tcp}/over/tcp")
            assert response.payload == b"over/tcp"
            nursery.cancel_scope.cancel()
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock,
        pytest.raises(ConnectionRefusedError),
    ):
        sock.connect(("::1", tcp.port))


async def test_an_address_in_use_fails_before_anything_is_reported() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_context(bind=("::1", 0)) as taken:
            port = taken.addresses[0].port
            async with trio.open_nursery() as nursery:
                with pytest.raises(OSError) as raised:
                    await nursery.start(coap_trio.serve, Echo(), ("::1", port))
    assert raised.value.errno == errno.EADDRINUSE


async def test_serve_on_a_memory_network(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=0, icmp_unreachable=True)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with trio.open_nursery() as nursery:
            serving = functools.partial(coap_trio.serve, Echo(), network=network)
            addresses = await nursery.start(serving, ("10.0.0.2", 5683))
            assert addresses == [DatagramRemote(("10.0.0.2", 5683), "coap")]
            assert str(addresses[0]) == "coap://10.0.0.2"  # the default port is left out
            with pytest.raises(OSError, match="in use"):
                network.open_endpoint("10.0.0.2", 5683)
            async with open_context(network=network, rng=random.Random(1)) as client:
                response = await client.get("coap://10.0.0.2/memory")
                assert response.payload == b"memory"
                nursery.cancel_scope.cancel()
        # Cancelled: its endpoint is closed (the address is free) and nobody answers.
        async with open_context(network=network, rng=random.Random(2)) as client:
            with pytest.raises(NetworkError):
                await client.get("coap://10.0.0.2/gone")
        network.open_endpoint("10.0.0.2", 5683).close()


async def test_serve_runs_until_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=0)
    with trio.move_on_after(3600) as waited:
        await coap_trio.serve(Echo(), ("10.0.0.2", 5683), network=network)
    assert waited.cancelled_caught
    assert trio.current_time() == pytest.approx(3600)
