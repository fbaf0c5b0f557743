"""Peers that reset their connections (RST) at every stage: the endpoint serves on.

A raw peer connects (TCP, TLS, WebSocket, secure WebSocket), gets part of
the way (into the handshake, into a frame, past a request, under a backlog
the server is writing) and then resets the connection (``SO_LINGER`` {1, 0}
then close). No error may escape the endpoint's ``run``: each ends that
connection only, reported once through ``on_connection_lost`` if it was
made, and the endpoint keeps serving well-behaved peers. The same from the
client side (a server resetting us), and through a whole Context.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
from test_transport_tcp import TIMEOUT, Peer, frame, running, tls_contexts, wait_until
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from coap_trio import CONTENT, Code, Message, open_context
from coap_trio.errors import ConnectFailure
from coap_trio.protocol.framing import encode_stream
from coap_trio.remote import DatagramRemote
from coap_trio.resource import Resource, Site
from coap_trio.transports.stream import canonical_host
from coap_trio.transports.websocket import WELL_KNOWN_COAP, stream_to_websocket

#: A CSM with no options (RFC 8323 §5.3), as a peer's first frame.
CSM = bytes([0x00, 0xE1])
RESET_ERRORS = (ConnectionResetError, BrokenPipeError)


def reset(tcp: trio.SocketStream) -> None:
    """Close with SO_LINGER {1, 0}: the kernel sends RST, not FIN."""
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tcp.socket.close()


class RawPeer:
    """A client driven by hand: TCP, then TLS and a WebSocket upgrade as the scheme says."""

    def __init__(self, tcp: trio.SocketStream, scheme: str) -> None:
        self.tcp = tcp
        self.scheme = scheme
        self.stream: trio.abc.Stream = tcp
        self.ws: WSConnection | None = None
        host, port = tcp.socket.getsockname()[:2]
        #: How the server names this peer.
        self.remote = DatagramRemote((canonical_host(host), port), scheme)

    @classmethod
    async def connect(cls, port: int, scheme: str, *, small_buffer: bool = False) -> RawPeer:
        sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        if small_buffer:  # the server's backlog then stays in its queue
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("::1", port))
        return cls(trio.SocketStream(sock), scheme)

    async def start_tls(self, context: ssl.SSLContext) -> None:
        tls = trio.SSLStream(self.tcp, context, server_hostname="::1")
        await tls.do_handshake()
        self.stream = tls

    async def upgrade(self) -> None:
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(host="[::1]", target=WELL_KNOWN_COAP, subprotocols=["coap"])
        await self.stream.send_all(ws.send(request))
        for _ in range(20):
            ws.receive_data(await self.stream.receive_some(4096))
            if any(isinstance(event, AcceptConnection) for event in ws.events()):
                self.ws = ws
                return
        raise AssertionError("no WebSocket upgrade")

    async def open(self, client_ssl: ssl.SSLContext) -> None:
        """TLS and the upgrade, as the scheme asks."""
        if self.scheme.startswith("coaps"):
            await self.start_tls(client_ssl)
        if self.scheme.endswith("+ws"):
            await self.upgrade()

    def encode(self, data: bytes) -> bytes:
        """A stream frame as this connection carries it."""
        if self.ws is None:
            return data
        return self.ws.send(BytesMessage(data=stream_to_websocket(data)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def reset(self) -> None:
        reset(self.tcp)


Stage = Callable[[Peer, int, str, ssl.SSLContext], Awaitable[RawPeer]]


async def reset_in_the_handshake(
    server: Peer, port: int, scheme: str, ctx: ssl.SSLContext
) -> RawPeer:
    """Before anything is established: half a ClientHello, half an upgrade, or nothing."""
    peer = await RawPeer.connect(port, scheme)
    if scheme.startswith("coaps"):
        hello = ssl.MemoryBIO()
        client = ctx.wrap_bio(ssl.MemoryBIO(), hello, server_hostname="::1")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        data = hello.read()
        await peer.send(data[: len(data) // 2])
    elif scheme == "coap+ws":
        await peer.send(b"GET /.well-known/coap HTTP/1.1\r\nHost: [::1]\r\nUpgr")
    else:  # plain TCP is established at once: wait until the server has it
        await wait_until(lambda: peer.remote in server.made)
    await trio.sleep(0.02)
    peer.reset()
    return peer


async def reset_mid_frame(server: Peer, port: int, scheme: str, ctx: ssl.SSLContext) -> RawPeer:
    """Established, a CSM and the first half of a frame, then the reset."""
    peer = await RawPeer.connect(port, scheme)
    await peer.open(ctx)
    wire = peer.encode(frame(b"z" * 200))
    await peer.send(peer.encode(CSM) + wire[: len(wire) // 2])
    await wait_until(lambda: (CSM, peer.remote) in server.frames)
    peer.reset()
    return peer


async def reset_after_a_request(
    server: Peer, port: int, scheme: str, ctx: ssl.SSLContext
) -> RawPeer:
    """A request the server answers with frames the peer never reads, then the reset."""
    peer = await RawPeer.connect(port, scheme)
    await peer.open(ctx)
    await peer.send(peer.encode(CSM) + peer.encode(frame(b"request")))
    await wait_until(lambda: (frame(b"request"), peer.remote) in server.frames)
    for number in range(20):
        server.endpoint.send(frame(b"answer %d" % number), peer.remote)
    peer.reset()
    return peer


async def reset_under_a_backlog(
    server: Peer, port: int, scheme: str, ctx: ssl.SSLContext
) -> RawPeer:
    """The server is writing a backlog the peer does not read when the reset comes."""
    peer = await RawPeer.connect(port, scheme, small_buffer=True)
    await peer.open(ctx)
    await peer.send(peer.encode(CSM))
    await wait_until(lambda: (CSM, peer.remote) in server.frames)
    for _ in range(100):  # 800 KB: more than the kernel takes, under max_send_buffer
        server.endpoint.send(frame(b"b" * 8000), peer.remote)
    await wait_until(lambda: server.endpoint.statistics.outbox_depth > 0)
    await trio.sleep(0.05)  # waiting for room, reading meanwhile
    peer.reset()
    return peer


STAGES: list[Stage] = [
    reset_in_the_handshake,
    reset_mid_frame,
    reset_after_a_request,
    reset_under_a_backlog,
]


async def check_serving(server: Peer, scheme: str, client_ssl: ssl.SSLContext) -> None:
    """A well-behaved client (a new one each time) still gets frames through, both ways."""
    async with running(client_ssl=client_ssl) as client:
        port = server.endpoint.addresses[0].port
        remote = client.endpoint.remote_for("::1", port, scheme)
        question = frame(b"still there? %d" % len(server.made))
        client.endpoint.send(question, remote)
        await wait_until(lambda: any(data == question for data, _ in server.frames))
        from_client = next(r for data, r in server.frames if data == question)
        server.endpoint.send(frame(b"yes"), from_client)
        await wait_until(lambda: client.frames == [(frame(b"yes"), remote)])


@pytest.mark.parametrize("scheme", ["coap+tcp", "coaps+tcp", "coap+ws", "coaps+ws"])
async def test_peers_resetting_at_every_stage_leave_the_server_serving(scheme: str) -> None:
    server_ssl, client_ssl = tls_contexts()
    context = server_ssl if scheme.startswith("coaps") else None
    with trio.fail_after(TIMEOUT):
        async with running([("::1", scheme, context)]) as server:
            port = server.endpoint.addresses[0].port
            peers = []
            for stage in STAGES:
                peer = await stage(server, port, scheme, client_ssl)
                peers.append(peer)
                await wait_until(lambda: server.endpoint.connection_statistics.failed == len(peers))
                await check_serving(server, scheme, client_ssl)
            made = [peer.remote for peer in peers if peer.remote in server.made]
            expected = 4 if scheme == "coap+tcp" else 3  # a handshake cut short makes nothing
            assert len(made) == expected
            await wait_until(lambda: {remote for remote, _ in server.lost} >= set(made))
            for remote in made:
                errors = [error for lost, error in server.lost if lost == remote]
                assert len(errors) == 1, errors  # reported exactly once
                assert isinstance(errors[0], RESET_ERRORS), errors[0]
            assert server.endpoint.connection_statistics.connections == 0


async def serve_raw(
    listener: trio.SocketListener, handle: Callable[[trio.SocketStream], Awaitable[None]]
) -> None:
    stream = await listener.accept()
    await handle(stream)


@pytest.mark.parametrize("scheme", ["coap+tcp", "coaps+tcp", "coaps+ws"])
async def test_a_server_resetting_us_is_reported_and_the_client_goes_on(scheme: str) -> None:
    _, client_ssl = tls_contexts()
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="::1")
        port = listeners[0].socket.getsockname()[1]
        received: list[bytes] = []

        async def read_then_reset(tcp: trio.SocketStream) -> None:
            received.append(await tcp.receive_some(4096))  # a CSM, or the ClientHello
            reset(tcp)

        async def answer(tcp: trio.SocketStream) -> None:
            received.append(await tcp.receive_some(4096))
            await tcp.send_all(frame(b"answer"))
            await tcp.aclose()

        async with running(client_ssl=client_ssl) as client, trio.open_nursery() as nursery:
            remote = client.endpoint.remote_for("::1", port, scheme)
            nursery.start_soon(serve_raw, listeners[0], read_then_reset)
            client.endpoint.send(frame(b"first"), remote)
            await wait_until(lambda: bool(client.lost))
            assert client.lost[0][0] == remote
            error = client.lost[0][1]
            if scheme != "coap+tcp":  # reset in the TLS handshake: never opened
                assert isinstance(error, ConnectFailure)
                assert str(error).startswith(f"could not connect to {remote}: reset by the peer")
                error = error.__cause__
            assert isinstance(error, RESET_ERRORS)
            assert client.endpoint.connection_statistics.failed == 1
            if scheme == "coap+tcp":  # the endpoint still opens a new connection
                nursery.start_soon(serve_raw, listeners[0], answer)
                client.endpoint.send(frame(b"second"), remote)
                await wait_until(lambda: client.frames == [(frame(b"answer"), remote)])
            await listeners[0].aclose()
        assert len(received) == (2 if scheme == "coap+tcp" else 1)


class Text(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"still serving")


async def test_a_context_serves_on_while_peers_reset_their_connections() -> None:
    server_ssl, client_ssl = tls_contexts()
    site = Site()
    site.add(("text",), Text())
    request = encode_stream(Message(code=Code.GET, token=b"\x07", uri_path=("text",)))
    with trio.fail_after(TIMEOUT):
        async with open_context(
            site=site,
            tcp_bind=("::1", 0),
            tls_bind=("::1", 0),
            ws_bind=("::1", 0),
            ssl_context=server_ssl,
        ) as server:
            for address in server.stream_addresses:
                for last in (request[:3], request):  # mid-frame, after a whole request
                    peer = await RawPeer.connect(address.port, address.scheme)
                    await peer.open(client_ssl)
                    await peer.send(peer.encode(CSM) + (last if peer.ws is None else b""))
                    if peer.ws is not None and last == request:
                        await peer.send(peer.encode(request))
                    await trio.sleep(0.02)
                    peer.reset()
            async with open_context(client_ssl_context=client_ssl) as client:
                for address in server.stream_addresses:
                    uri = f"{address.scheme}://[::1]:{address.port}/text"
                    response = await client.get(uri)
                    assert response.payload == b"still serving"
            stats = server.stream_statistics
            assert stats is not None
            assert stats.failed == 6
