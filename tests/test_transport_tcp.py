"""Tests for coap_trio.transports.stream/tcp/websocket on loopback (no messaging machine).

Two :class:`StreamEndpoint`s (or one and a raw socket) exchange RFC 8323
frames; the limits (frame size, send buffer, idle time, connection count)
are checked from the outside: what the peer sees on its socket, and the
endpoint's counters and hooks.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trustme

from coap_trio.errors import ConnectFailure, FrameTooLarge, IdleTimeoutError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.protocol.framing import decode_frame, encode_stream, encode_websocket
from coap_trio.remote import DatagramRemote
from coap_trio.transports.stream import StreamEndpoint, StreamLimits
from coap_trio.transports.tcp import framer_for
from coap_trio.transports.websocket import stream_to_websocket, websocket_to_stream

TIMEOUT = 10


class Peer:
    """A StreamEndpoint with recording hooks."""

    def __init__(self, endpoint: StreamEndpoint) -> None:
        self.endpoint = endpoint
        self.frames: list[tuple[bytes, DatagramRemote]] = []
        self.made: list[DatagramRemote] = []
        self.lost: list[tuple[DatagramRemote, OSError | None]] = []
        #: The task that handed over each batch of frames.
        self.delivering: list[trio.lowlevel.Task] = []
        endpoint.on_connection_made = self.made.append
        endpoint.on_connection_lost = lambda remote, error: self.lost.append((remote, error))

    def on_frames(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        self.frames.extend(batch)
        self.delivering.append(trio.lowlevel.current_task())

    def on_error(self, remote: DatagramRemote, error: OSError) -> None:
        raise AssertionError("a stream endpoint reports through on_connection_lost")


@contextlib.asynccontextmanager
async def running(
    listen: list[tuple[str, str, ssl.SSLContext | None]] = (),  # type: ignore[assignment]
    *,
    limits: StreamLimits | None = None,
    client_ssl: ssl.SSLContext | None = None,
) -> AsyncIterator[Peer]:
    endpoint = StreamEndpoint(framer_for, limits=limits, client_ssl_context=client_ssl)
    for host, scheme, context in listen:
        endpoint.listen(host, 0, scheme, context)
    peer = Peer(endpoint)
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run, peer.on_frames, peer.on_error)
        yield peer
        nursery.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        for _ in range(10_000):
            if predicate():
                return
            await trio.sleep(0.005)
    raise AssertionError("condition not reached in time")


def frame(payload: bytes = b"hello", token: bytes = b"\x01\x02") -> bytes:
    return encode_stream(Message(code=Code.GET, token=token, payload=payload))


async def echo_between(scheme: str, server_ssl=None, client_ssl=None, host="::1") -> None:  # type: ignore[no-untyped-def]
    async with (
        running([(host, scheme, server_ssl)]) as server,
        running(client_ssl=client_ssl) as client,
    ):
        address = server.endpoint.addresses[0]
        assert address.scheme == scheme
        assert address.port > 0
        remote = client.endpoint.remote_for(host, address.port, scheme)
        big = frame(b"x" * 1000)
        client.endpoint.send(frame(b"first"), remote)
        client.endpoint.send(big, remote)
        await wait_until(lambda: len(server.frames) == 2)
        assert [data for data, _ in server.frames] == [frame(b"first"), big]
        assert client.made == [remote]
        from_client = server.frames[0][1]
        assert from_client.scheme == scheme
        assert server.made == [from_client]
        server.endpoint.send(frame(b"back"), from_client)
        await wait_until(lambda: len(client.frames) == 1)
        assert client.frames == [(frame(b"back"), remote)]
        assert client.endpoint.connection_statistics.connections_opened == 1
        assert server.endpoint.connection_statistics.connections_accepted == 1
    assert [remote for remote, _ in client.lost] == [remote]


async def test_tcp_frames_both_ways_ipv6() -> None:
    with trio.fail_after(TIMEOUT):
        await echo_between("coap+tcp")


async def test_tcp_frames_both_ways_ipv4() -> None:
    with trio.fail_after(TIMEOUT):
        await echo_between("coap+tcp", host="127.0.0.1")


async def test_websocket_frames_both_ways() -> None:
    with trio.fail_after(TIMEOUT):
        await echo_between("coap+ws")


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("::1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_tls_and_secure_websocket_frames_both_ways() -> None:
    server_ssl, client_ssl = tls_contexts()
    with trio.fail_after(TIMEOUT):
        await echo_between("coaps+tcp", server_ssl, client_ssl)
        await echo_between("coaps+ws", server_ssl, client_ssl)


async def test_tls_refuses_an_untrusted_certificate() -> None:
    server_ssl, _ = tls_contexts()
    with trio.fail_after(TIMEOUT):
        async with (
            running([("::1", "coaps+tcp", server_ssl)]) as server,
            running() as client,  # the system's trust store: trustme's CA is not in it
        ):
            port = server.endpoint.addresses[0].port
            remote = client.endpoint.remote_for("::1", port, "coaps+tcp")
            client.endpoint.send(frame(), remote)
            await wait_until(lambda: bool(client.lost))
            assert client.lost[0][0] == remote
            assert "CERTIFICATE_VERIFY_FAILED" in str(client.lost[0][1])
            assert client.made == []
            assert server.frames == []


async def test_connection_refused_is_reported() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with trio.fail_after(TIMEOUT):
            async with running() as client:
                remote = client.endpoint.remote_for("::1", port, "coap+tcp")
                client.endpoint.send(frame(), remote)
                await wait_until(lambda: bool(client.lost))
                failure = client.lost[0][1]
                assert isinstance(failure, ConnectFailure)  # never opened: says so, and why
                assert failure.errno == errno.ECONNREFUSED
                assert isinstance(failure.__cause__, ConnectionRefusedError)
                assert str(failure).startswith(f"could not connect to {remote}: refused (")
                assert client.endpoint.statistics.send_dropped == 1


async def raw_connection(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("::1", port)


async def read_until_closed(stream: trio.SocketStream, limit: int = 1 << 20) -> bytes:
    received = b""
    for _ in range(1000):
        data = await stream.receive_some(65536)
        if not data:
            return received
        received += data
        assert len(received) < limit
    raise AssertionError("the server never closed")


async def test_oversized_frame_gets_abort_and_close_and_server_survives() -> None:
    limits = StreamLimits(max_message_size=1200)
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+tcp", None)], limits=limits) as server:
            port = server.endpoint.addresses[0].port
            stream = await raw_connection(port)
            # Len 14: a two-byte extended length announcing 269 + 60000 bytes.
            await stream.send_all(bytes([0xE0, 60000 >> 8, 60000 & 0xFF, 0x01]))
            received = await read_until_closed(stream)
            messages = []
            rest = received
            while rest:
                size = 2 + (rest[0] & 0x0F) + (rest[0] >> 4 if rest[0] >> 4 < 13 else 0)
                if rest[0] >> 4 == 13:
                    size = 3 + (rest[0] & 0x0F) + rest[1] + 13
                messages.append(decode_frame(rest[:size]))
                rest = rest[size:]
            assert messages[-1].code == Code.ABORT
            assert b"1200" in messages[-1].payload
            await wait_until(lambda: bool(server.lost))
            error = server.lost[0][1]
            assert isinstance(error, ConnectionAbortedError)
            assert error.errno == errno.EMSGSIZE
            assert isinstance(error.__cause__, FrameTooLarge)
            assert error.__cause__.size > error.__cause__.limit == 1200
            assert server.endpoint.connection_statistics.closed_oversized == 1
            assert server.frames == []
            # The server still serves a well-behaved peer.
            good = await raw_connection(port)
            await good.send_all(frame(b"fine"))
            await wait_until(lambda: len(server.frames) == 1)
            assert server.frames[0][0] == frame(b"fine")
            await good.aclose()
            await stream.aclose()


async def test_slow_reader_is_disconnected_with_bounded_buffer() -> None:
    limits = StreamLimits(max_send_buffer=64 * 1024)
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+tcp", None)], limits=limits) as server:
            port = server.endpoint.addresses[0].port
            sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("::1", port))
            await sock.send(frame(b"hello"))  # never reads again
            await wait_until(lambda: len(server.frames) == 1)
            remote = server.frames[0][1]
            chunk = frame(b"y" * 16000)
            most_queued = 0
            for _ in range(4000):  # bounded: 64 MB at most
                if server.lost:
                    break
                server.endpoint.send(chunk, remote)
                most_queued = max(most_queued, server.endpoint.statistics.outbox_depth)
                await trio.sleep(0)
            assert server.lost, "the slow peer was never disconnected"
            assert isinstance(server.lost[0][1], BlockingIOError)
            assert most_queued <= limits.max_send_buffer
            assert server.endpoint.connection_statistics.closed_slow == 1
            assert server.endpoint.connection_statistics.connections == 0
            sock.close()


async def test_idle_connection_is_closed() -> None:
    limits = StreamLimits(idle_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+tcp", None)], limits=limits) as server:
            stream = await raw_connection(server.endpoint.addresses[0].port)
            started = trio.current_time()
            await read_until_closed(stream)
            assert 0.25 <= trio.current_time() - started < 3
            await wait_until(lambda: bool(server.lost))
            assert isinstance(server.lost[0][1], IdleTimeoutError)
            assert isinstance(server.lost[0][1], TimeoutError)
            assert server.endpoint.connection_statistics.closed_idle == 1
            await stream.aclose()


async def test_traffic_keeps_a_connection_open_past_the_idle_time() -> None:
    limits = StreamLimits(idle_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+tcp", None)], limits=limits) as server:
            stream = await raw_connection(server.endpoint.addresses[0].port)
            for number in range(8):  # 0.8 s in all, never 0.3 s quiet
                await stream.send_all(frame(b"%d" % number))
                await trio.sleep(0.1)
            await wait_until(lambda: len(server.frames) == 8)
            assert server.lost == []
            await stream.aclose()


async def test_connections_beyond_the_limit_are_refused() -> None:
    limits = StreamLimits(max_connections=2)
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+tcp", None)], limits=limits) as server:
            port = server.endpoint.addresses[0].port
            first, second = await raw_connection(port), await raw_connection(port)
            await first.send_all(frame(b"1"))
            await second.send_all(frame(b"2"))
            await wait_until(lambda: len(server.frames) == 2)
            third = await raw_connection(port)
            assert await read_until_closed(third) == b""
            assert server.endpoint.connection_statistics.connections_refused == 1
            assert server.endpoint.connection_statistics.connections == 2
            await first.aclose()
            await wait_until(lambda: len(server.lost) == 1)
            fourth = await raw_connection(port)  # a slot is free again
            await fourth.send_all(frame(b"4"))
            await wait_until(lambda: len(server.frames) == 3)
            for stream in (second, third, fourth):
                await stream.aclose()


async def test_leaving_closes_every_connection_and_listener() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+tcp", None)]) as server:
            port = server.endpoint.addresses[0].port
            stream = await raw_connection(port)
            await stream.send_all(frame())
            await wait_until(lambda: len(server.frames) == 1)
        assert await read_until_closed(stream) == b""
        await stream.aclose()
        with pytest.raises(OSError):  # the listener is closed: connection refused
            await raw_connection(port)


def test_websocket_message_over_the_limit_raises_frame_too_large() -> None:
    """The WebSocket framer reports an oversized message as the TCP decoder does."""
    client = framer_for("coap+ws", True, "[::1]", 1 << 20)
    server = framer_for("coap+ws", False, "", 1200)
    frames, reply = server.feed(client.start())
    assert (frames, server.established) == ([], True)
    client.feed(reply)
    assert client.established
    small = client.wrap(encode_stream(Message(code=Code.PUT, payload=b"s" * 1000)))
    assert len(server.feed(small)[0]) == 1
    big = client.wrap(encode_stream(Message(code=Code.PUT, payload=b"b" * 5000)))
    with pytest.raises(FrameTooLarge) as raised:
        server.feed(big)
    assert raised.value.size > raised.value.limit == 1200


def test_websocket_and_stream_formats_convert_both_ways() -> None:
    for size in (0, 5, 12, 13, 268, 269, 1000, 65804, 65805, 70000):
        message = Message(code=Code.CONTENT, token=b"\xaa" * (size % 9), payload=b"p" * size)
        stream, ws = encode_stream(message), encode_websocket(message)
        assert stream_to_websocket(stream) == ws
        assert websocket_to_stream(ws) == stream


@pytest.mark.parametrize(
    ("target", "protocol", "status"),
    [("/other", "coap", b"404"), ("/.well-known/coap", "mqtt", b"400")],
)
async def test_websocket_upgrade_refused_with_its_status(
    target: str, protocol: str, status: bytes
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+ws", None)]) as server:
            stream = await raw_connection(server.endpoint.addresses[0].port)
            await stream.send_all(
                f"GET {target} HTTP/1.1\r\nHost: [::1]\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n".encode()
            )
            answer = await read_until_closed(stream)
            assert answer.startswith(b"HTTP/1.1 " + status)
            await wait_until(lambda: server.endpoint.connection_statistics.failed == 1)
            assert server.made == server.lost == server.frames == []
            await stream.aclose()


async def test_leaving_closes_tls_with_close_notify_and_websockets_with_a_close() -> None:
    """A raw TLS server (trio's SSLStream: a missing close_notify is an error there)
    and a raw WebSocket server (wsproto) see our goodbyes when the client leaves."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request

    server_ssl, client_ssl = tls_contexts()
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="::1")
        port = listeners[0].socket.getsockname()[1]
        seen: list[object] = []

        async def tls_server() -> None:
            tls = trio.SSLStream(await listeners[0].accept(), server_ssl, server_side=True)
            received = b""
            for _ in range(100):
                data = await tls.receive_some(4096)  # BrokenResourceError without close_notify
                if not data:
                    break
                received += data
            seen.append(received)
            await tls.aclose()

        async def ws_server() -> None:
            tcp = await listeners[0].accept()
            ws = WSConnection(ConnectionType.SERVER)
            for _ in range(100):
                data = await tcp.receive_some(4096)
                if not data:
                    break
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        await tcp.send_all(ws.send(AcceptConnection(subprotocol="coap")))
                    elif isinstance(event, CloseConnection):
                        seen.append(event.code)
            await tcp.aclose()

        for scheme, serve in (("coaps+tcp", tls_server), ("coap+ws", ws_server)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                async with running(client_ssl=client_ssl) as client:
                    remote = client.endpoint.remote_for("::1", port, scheme)
                    client.endpoint.send(frame(b"bye"), remote)
                    await wait_until(lambda: len(client.made) == 1)
                    assert client.made == [remote]
        assert seen == [frame(b"bye"), 1000]
        await listeners[0].aclose()


async def test_handshakes_are_bounded_by_the_connect_timeout() -> None:
    """A TLS or WebSocket peer that never completes its handshake is dropped after
    ``connect_timeout``, on either side."""
    limits = StreamLimits(connect_timeout=0.3)
    server_ssl, client_ssl = tls_contexts()
    with trio.fail_after(TIMEOUT):
        async with running(
            [("::1", "coaps+tcp", server_ssl), ("::1", "coap+ws", None)], limits=limits
        ) as server:
            for address in server.endpoint.addresses:  # silent peers: the server gives up
                stream = await raw_connection(address.port)
                started = trio.current_time()
                assert await read_until_closed(stream) == b""
                assert 0.25 <= trio.current_time() - started < 3
                await stream.aclose()
            assert server.made == server.lost == []
            assert server.endpoint.connection_statistics.failed == 0

        listeners = await trio.open_tcp_listeners(0, host="::1")
        port = listeners[0].socket.getsockname()[1]
        async with running(limits=limits, client_ssl=client_ssl) as client:

            async def give_up(scheme: str) -> None:  # a silent server: the client gives up
                remote = client.endpoint.remote_for("::1", port, scheme)
                client.endpoint.send(frame(), remote)
                stream = await listeners[0].accept()
                await wait_until(lambda: any(lost == remote for lost, _ in client.lost))
                await stream.aclose()

            await give_up("coaps+tcp")
            await give_up("coap+ws")
            failures = [error for _, error in client.lost]
            assert [type(error) for error in failures] == [ConnectFailure, ConnectFailure]
            assert [type(error.__cause__) for error in failures] == [TimeoutError, TimeoutError]
            assert all(": timed out (" in str(error) for error in failures)
            assert client.made == []
        await listeners[0].aclose()
