"""The Context on real UDP sockets (loopback only, real clock)."""

from __future__ import annotations

import socket

import pytest
import trio

from coap_trio import CONTENT, Message, NetworkError, open_context


class _Echo:
    async def render(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"/".join(p.encode() for p in request.opt.uri_path))

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return True


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_client_and_server_on_loopback_both_families() -> None:
    with trio.fail_after(10):
        async with open_context(bind=("::", 0), site=_Echo()) as server:
            port = server.addresses[0].port
            async with open_context() as client:
                six = await client.get(f"coap://[::1]:{port}/a/b")
                four = await client.get(f"coap://127.0.0.1:{port}/c")
    assert six.payload == b"a/b"
    assert four.payload == b"c"


async def test_icmp_port_unreachable_fails_the_request_quickly() -> None:
    port = _closed_udp_port()
    with trio.fail_after(5):  # far less than the 93 s a timeout would take
        async with open_context() as client:
            with pytest.raises(NetworkError) as raised:
                await client.get(f"coap://[::1]:{port}/nobody")
    assert isinstance(raised.value.os_error, ConnectionRefusedError)


async def test_requests_spread_to_an_endpoint_with_free_message_ids() -> None:
    """With client_endpoints=2, when the first endpoint has no free MID towards a
    peer (RFC 7252 §4.4 would be broken by reusing one), the request goes out
    from the second endpoint instead of waiting."""
    with trio.fail_after(10):
        async with open_context(bind=("::1", 0), site=_Echo()) as server:
            port = server.addresses[0].port
            async with open_context(client_endpoints=2) as client:
                first, second = client._runners
                first.machine.mid_available = lambda remote, now: False  # type: ignore[method-assign]
                response = await client.get(f"coap://[::1]:{port}/x")
                assert response.payload == b"x"
                sent = [r.endpoint.statistics.datagrams_sent for r in (first, second)]
    assert sent == [0, 1]


async def test_several_binds_report_their_real_ports() -> None:
    with trio.fail_after(10):
        async with open_context(bind=[("::1", 0), ("127.0.0.1", 0)], site=_Echo()) as server:
            six, four = server.addresses
            assert six.port != 0
            assert four.port != 0
            assert four.host == "127.0.0.1"
            async with open_context() as client:
                a = await client.get(f"coap://[::1]:{six.port}/six")
                b = await client.get(f"coap://127.0.0.1:{four.port}/four")
    assert (a.payload, b.payload) == (b"six", b"four")


def _addresses_of(name: str) -> list[str]:
    """What the system resolver gives for ``name``, each address once, in its order."""
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(name, 0, type=socket.SOCK_DGRAM):
        if sockaddr[0] not in found:
            found.append(str(sockaddr[0]))
    return found


async def test_a_bound_host_name_is_resolved_and_bound_on_every_address() -> None:
    expected = _addresses_of("localhost")  # 127.0.0.1, and ::1 where the hosts file says so
    with trio.fail_after(10):
        async with open_context(bind=("localhost", 0), site=_Echo()) as server:
            hosts = [address.host for address in server.addresses]
            ports = {address.port for address in server.addresses}
            assert hosts == expected
            assert len(ports) == 1  # one port for all: coap://localhost:PORT, either family
            (port,) = ports
            assert port != 0
            async with open_context() as client:
                by_name = await client.get(f"coap://localhost:{port}/name")
                by_address = [
                    await client.get(f"coap://{f'[{h}]' if ':' in h else h}:{port}/{i}")
                    for i, h in enumerate(hosts)
                ]
    assert by_name.payload == b"name"
    assert [r.payload for r in by_address] == [str(i).encode() for i in range(len(hosts))]


async def test_an_unresolvable_bound_name_raises_gaierror() -> None:
    with trio.fail_after(10):
        with pytest.raises(socket.gaierror, match=r"no-such-host\.invalid"):
            async with open_context(bind=("no-such-host.invalid", 0), site=_Echo()):
                pass  # pragma: no cover - never entered
