"""CoAP over TCP, TLS and WebSockets (RFC 8323) against libcoap 4.3 and aiocoap 0.4.

Loopback only, real clock, every test under ``trio.fail_after``. Peers:
libcoap's ``coap-server-notls`` (it listens on TCP on its UDP port) and
``coap-client-notls`` with ``coap+tcp://`` URIs; aiocoap's client
(``tcpclient``, ``ws``) and server (``tcpserver``, ``ws``, ``tlsserver``
with a trustme certificate), each in a worker thread with its own asyncio
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiocoap
import aiocoap.resource
import trio
import trustme
from interop_helpers import free_port, libcoap_server

from coap_trio import CHANGED, CONTENT, Code, Message, ObservableResource, open_context
from coap_trio.resource import Resource, Site

TIMEOUT = 30
HELLO = b"hello from coap_trio over a stream"
BIG = bytes(range(256)) * 20  # 5,120 bytes: block-wise


class Text(Resource):
    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=self.payload)

    async def render_put(self, request: Message) -> Message:
        self.payload = request.payload
        return Message(code=CHANGED)


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"%d" % self.value)


def make_site() -> tuple[Site, Counter]:
    site = Site()
    counter = Counter()
    site.add(("text",), Text(HELLO))
    site.add(("big",), Text(BIG))
    site.add(("counter",), counter)
    return site, counter


# -- coap_trio's client against libcoap's server -------------------------------------------


async def test_client_against_libcoap_server_over_tcp() -> None:
    with trio.fail_after(TIMEOUT):
        async with libcoap_server("::1") as server, open_context() as client:
            base = f"coap+tcp://[::1]:{server.port}"
            # libcoap 4.3.1 answers with an empty-token Pong: matched to our one Ping.
            rtt = await client.ping(base)
            index = await client.get(base + "/")
            core = await client.get(base + "/.well-known/core")
            put = await client.put(base + "/example_data", b"stored over tcp")
            back = await client.get(base + "/example_data")
            ticks: list[Message] = []
            async with client.observe(base + "/time") as notifications:
                async for notification in notifications:
                    ticks.append(notification)
                    if len(ticks) == 2:
                        break
    assert 0 <= rtt < TIMEOUT
    assert index.code == CONTENT
    assert index.payload.startswith(b"This is a test server made with libcoap")
    assert b"</time>" in core.payload
    assert put.code in (CHANGED, Code.CREATED)
    assert back.payload == b"stored over tcp"
    assert [tick.code for tick in ticks] == [CONTENT, CONTENT]
    assert ticks[1].opt.observe is not None


LARGE = bytes(range(256)) * 800  # 204,800 bytes


async def test_bert_put_and_get_against_libcoap_server_over_tcp() -> None:
    # Both CSMs announce Block-Wise-Transfer; libcoap allows 8 MiB messages, we
    # 64 KiB + 256 by default: BERT blocks of 64 KiB both ways (RFC 8323 §6).
    with trio.fail_after(TIMEOUT):
        async with libcoap_server("::1") as server, open_context() as client:
            base = f"coap+tcp://[::1]:{server.port}"
            await client.ping(base)  # both CSMs first
            up: list[int] = []
            put = await client.request(
                Message(code=Code.PUT, uri=base + "/example_data", payload=LARGE),
                progress=lambda done, total: up.append(done),
            ).response
            down: list[int] = []
            back = await client.request(
                Message(code=Code.GET, uri=base + "/example_data"),
                progress=lambda done, total: down.append(done),
            ).response
    assert put.code in (CHANGED, Code.CREATED)
    assert up == [65536, 131072, 196608, len(LARGE)]  # 4 BERT blocks, not 200 of 1 KiB
    assert back.code == CONTENT
    assert back.payload == LARGE
    assert len(down) <= 5  # 64 KiB BERT blocks (the first may be the server's own size)
    assert down[-1] == len(LARGE)


# -- libcoap's client against coap_trio's server -------------------------------------------


async def libcoap_client(*args: str) -> tuple[int, bytes, bytes]:
    result = await trio.run_process(
        ["coap-client-notls", "-B", "5", *args],
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


async def test_libcoap_client_against_our_server_over_tcp() -> None:
    site, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0)) as server:
            base = f"coap+tcp://[::1]:{server.stream_addresses[0].port}"
            status, text, errors = await libcoap_client(base + "/text")
            assert (status, text.strip()) == (0, HELLO), errors
            status, _, errors = await libcoap_client(
                "-m", "put", "-e", "written by libcoap", base + "/text"
            )
            assert status == 0, errors
            _, text, _ = await libcoap_client(base + "/text")
            assert text.strip() == b"written by libcoap"
            _, big, errors = await libcoap_client("-b", "1024", base + "/big")
            assert big.rstrip(b"\n") == BIG, errors
            stats = server.stream_statistics
            assert stats is not None
            assert stats.connections_accepted == 4


async def test_libcoap_openssl_client_against_our_tls_server(tmp_path: Any) -> None:
    """libcoap's coap-client-openssl over coaps+tcp with a trustme certificate: it
    verifies ours against the CA it is given (-R), and gets nothing with another CA."""
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("::1", "localhost").configure_cert(server_ssl)
    trusted = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(trusted))
    untrusted = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(untrusted))
    site, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tls_bind=("::1", 0), ssl_context=server_ssl) as server:
            uri = f"coaps+tcp://[::1]:{server.stream_addresses[0].port}/text"
            results = []
            for ca_file in (trusted, untrusted):
                result = await trio.run_process(
                    ["coap-client-openssl", "-B", "5", "-R", str(ca_file), uri],
                    stdin=subprocess.DEVNULL,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                results.append(result.stdout.strip())
            stats = server.stream_statistics
    assert results[0] == HELLO
    # The handshake failed: libcoap logs an error (it still exits 0) and no payload.
    assert HELLO not in results[1]
    assert b"ERR" in results[1]
    assert stats is not None
    assert stats.connections_accepted == 2


# -- aiocoap's client against coap_trio's server ---------------------------------------------


def aiocoap_session(uris: list[tuple[str, str, bytes]]) -> list[tuple[int, bytes]]:
    async def session() -> list[tuple[int, bytes]]:
        context = await aiocoap.Context.create_client_context()
        try:
            results = []
            for method, uri, payload in uris:
                code = aiocoap.GET if method == "GET" else aiocoap.PUT
                request = aiocoap.Message(code=code, uri=uri, payload=payload)
                response = await asyncio.wait_for(context.request(request).response, 10)
                results.append((int(response.code), response.payload))
            return results
        finally:
            await context.shutdown()  # sends Release and leaves the closing to the server
            await asyncio.sleep(0.3)  # so aiocoap sees the close and frees its transport

    return asyncio.run(session())


async def test_aiocoap_client_against_our_server_over_tcp_and_websockets() -> None:
    site, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0), ws_bind=("::1", 0)) as server:
            tcp, ws = server.stream_addresses
            for address in (tcp, ws):
                base = f"{address.scheme}://[::1]:{address.port}"
                results = await trio.to_thread.run_sync(
                    aiocoap_session,
                    [
                        ("GET", base + "/text", b""),
                        ("PUT", base + "/text", b"from aiocoap " + address.scheme.encode()),
                        ("GET", base + "/text", b""),
                        ("GET", base + "/big", b""),
                    ],
                )
                assert results == [
                    (int(CONTENT), HELLO if address is tcp else b"from aiocoap coap+tcp"),
                    (int(CHANGED), b""),
                    (int(CONTENT), b"from aiocoap " + address.scheme.encode()),
                    (int(CONTENT), BIG),
                ]


# -- coap_trio's client against aiocoap's server ---------------------------------------------


class AiocoapText(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.payload = b"hello from aiocoap"

    async def render_get(self, request: Any) -> Any:
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)

    async def render_put(self, request: Any) -> Any:
        self.payload = request.payload
        return aiocoap.Message(code=aiocoap.CHANGED)


class AiocoapStreamServer:
    """aiocoap servers over TCP, WebSockets and TLS in one thread and loop."""

    def __init__(self, tcp_port: int, ssl_context: ssl.SSLContext) -> None:
        self.tcp_port = tcp_port
        self.tls_port = tcp_port + 1  # aiocoap binds TLS one above the given port
        self.ws_port = 0
        self.ssl_context = ssl_context
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None

    def main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as error:
            self.error = error
        finally:
            self.started.set()

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        site = aiocoap.resource.Site()
        site.add_resource(["text"], AiocoapText())
        site.add_resource(["big"], AiocoapBig())
        contexts = [
            await aiocoap.Context.create_server_context(
                site,
                bind=("::1", self.tcp_port),
                transports=["tcpserver", "tlsserver"],
                _ssl_context=self.ssl_context,
            ),
            await aiocoap.Context.create_server_context(site, bind=("::1", 0), transports=["ws"]),
        ]
        try:
            pool = contexts[1].request_interfaces[0].token_interface
            self.ws_port = pool._servers[0].sockets[0].getsockname()[1]
            self.started.set()
            await self.stop.wait()
        finally:
            for context in contexts:
                await context.shutdown()


class AiocoapBig(aiocoap.resource.Resource):  # type: ignore[misc]
    async def render_get(self, request: Any) -> Any:
        return aiocoap.Message(code=aiocoap.CONTENT, payload=BIG)


@contextlib.asynccontextmanager
async def aiocoap_stream_server(ssl_context: ssl.SSLContext) -> AsyncIterator[AiocoapStreamServer]:
    for _ in range(20):  # the TLS port (one above) must be free too
        port = free_port("::1", tcp_too=True)
        try:
            with contextlib.closing(__import__("socket").socket(10, 1)) as probe:
                probe.bind(("::1", port + 1))
            break
        except OSError:
            continue
    server = AiocoapStreamServer(port, ssl_context)
    thread = threading.Thread(target=server.main, name="aiocoap-stream-server", daemon=True)
    thread.start()
    try:
        with trio.move_on_after(10):
            while not server.started.is_set():
                await trio.sleep(0.01)
        assert server.error is None, repr(server.error)
        assert server.ws_port, "the aiocoap server did not start"
        yield server
    finally:
        loop, stop = server.loop, server.stop
        # The loop runs until stop is set (it closes earlier only after an error).
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            while thread.is_alive():
                await trio.sleep(0.01)
    assert not thread.is_alive()


async def test_large_transfers_against_aiocoap_server_over_tcp() -> None:
    # aiocoap announces Block-Wise-Transfer and 1 MiB messages: our uploads go
    # in BERT blocks and our downloads ask for BERT from their second block.
    server_ssl, _ = tls_contexts()
    with trio.fail_after(TIMEOUT):
        async with aiocoap_stream_server(server_ssl) as server, open_context() as client:
            base = f"coap+tcp://[::1]:{server.tcp_port}"
            up: list[int] = []
            changed = await client.request(
                Message(code=Code.PUT, uri=base + "/text", payload=LARGE),
                progress=lambda done, total: up.append(done),
            ).response
            down: list[int] = []
            back = await client.request(
                Message(code=Code.GET, uri=base + "/text"),
                progress=lambda done, total: down.append(done),
            ).response
    assert changed.code == CHANGED
    assert back.code == CONTENT
    assert back.payload == LARGE
    assert up[-1] == down[-1] == len(LARGE)
    # The PUT opened the connection: its first block went out before aiocoap's
    # CSM arrived (1024 bytes), the rest in BERT blocks (late negotiation).
    assert up[:2] == [1024, 1024 + 65536]
    assert len(up) == 5
    assert len(down) <= 5


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("::1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_client_against_aiocoap_server_over_tcp_websockets_and_tls() -> None:
    server_ssl, client_ssl = tls_contexts()
    with trio.fail_after(TIMEOUT):
        async with (
            aiocoap_stream_server(server_ssl) as server,
            open_context(client_ssl_context=client_ssl) as client,
        ):
            expected = b"hello from aiocoap"  # one resource behind the three transports
            for base in (
                f"coap+tcp://[::1]:{server.tcp_port}",
                f"coap+ws://[::1]:{server.ws_port}",
                f"coaps+tcp://[::1]:{server.tls_port}",
            ):
                first = await client.get(base + "/text")
                assert (first.code, first.payload) == (CONTENT, expected), base
                expected = b"set via " + base.encode()
                changed = await client.put(base + "/text", b"set via " + base.encode())
                assert changed.code == CHANGED
                back = await client.get(base + "/text")
                assert back.payload == b"set via " + base.encode()
                big = await client.get(base + "/big")
                assert big.payload == BIG, base
            stats = client.stream_statistics
            assert stats is not None
            assert stats.connections_opened == 3
