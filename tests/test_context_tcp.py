"""The Context over CoAP over TCP, TLS and WebSockets (RFC 8323), loopback only, real clock.

A coap_trio client against a coap_trio server: the same Site, handlers,
observations and block-wise transfers as over UDP; connections dropped
under a request or an observation; oversized frames; TLS with a trustme
certificate; leaving a Context closes its connections.
"""

from __future__ import annotations

import gc
import re
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import trio
import trustme

from coap_trio import (
    CHANGED,
    CONTENT,
    Code,
    Message,
    ObservableResource,
    Request,
    UnsupportedTransportError,
    open_context,
)
from coap_trio.errors import (
    CoapError,
    ConnectError,
    ConnectionLostError,
    NetworkError,
    RequestTimeoutError,
)
from coap_trio.protocol.config import MessagingConfig
from coap_trio.protocol.exchanges import ClientExchange
from coap_trio.protocol.framing import StreamDecoder, decode_frame, encode_stream
from coap_trio.resource import Resource, Site
from coap_trio.transports.stream import StreamLimits

TIMEOUT = 15


class Text(Resource):
    """GET: the stored payload; PUT: store it."""

    def __init__(self, payload: bytes = b"hello over tcp") -> None:
        super().__init__()
        self.payload = payload
        self.puts = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=self.payload)

    async def render_put(self, request: Message) -> Message:
        self.payload = request.payload
        self.puts += 1
        return Message(code=CHANGED)


class Slow(Resource):
    """GET: answers after a long time (the connection is dropped before)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = trio.Event()

    async def render_get(self, request: Message) -> Message:
        self.started.set()
        await trio.sleep(60)
        return Message(code=CONTENT, payload=b"too late")


class Counter(ObservableResource):
    """An observable counter bumped by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"%d" % self.value)

    def bump(self) -> None:
        self.value += 1
        self.updated_state()


def make_site() -> tuple[Site, Text, Counter, Slow]:
    site = Site()
    text, counter, slow = Text(), Counter(), Slow()
    site.add(("text",), text)
    site.add(("big",), Text(bytes(range(256)) * 40))  # 10,240 bytes: block-wise
    site.add(("counter",), counter)
    site.add(("slow",), slow)
    return site, text, counter, slow


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("::1", "127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize(
    ("scheme", "host"),
    [
        ("coap+tcp", "::1"),
        ("coap+tcp", "127.0.0.1"),
        ("coap+ws", "::1"),
        ("coaps+tcp", "::1"),
        ("coaps+ws", "127.0.0.1"),
        ("coaps+tcp", "localhost"),
    ],
)
async def test_get_put_and_blockwise_over_each_scheme(scheme: str, host: str) -> None:
    site, text, _, _ = make_site()
    server_ssl, client_ssl = tls_contexts()
    bind = {
        "coap+tcp": "tcp_bind",
        "coaps+tcp": "tls_bind",
        "coap+ws": "ws_bind",
        "coaps+ws": "wss_bind",
    }[scheme]
    listen = "127.0.0.1" if host == "127.0.0.1" else "::1"
    if host == "localhost":
        listen = "::"
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, ssl_context=server_ssl, **{bind: (listen, 0)}) as server:
            (address,) = server.stream_addresses
            assert address.scheme == scheme
            base = f"{scheme}://{'[::1]' if host == '::1' else host}:{address.port}"
            async with open_context(client_ssl_context=client_ssl) as client:
                first = await client.get(base + "/text")
                changed = await client.put(base + "/text", b"new value")
                second = await client.get(base + "/text")
                upload = bytes(range(251)) * 20  # 5,020 bytes: Block1
                stored = await client.put(base + "/text", upload)
                back = await client.get(base + "/text")
                big = await client.get(base + "/big")
                stats = client.stream_statistics
            assert stats is not None
            assert stats.connections_opened == 1  # every request on one connection
            await wait_until(lambda: server.stream_statistics.connections == 0)  # type: ignore[union-attr]
    assert first.code == CONTENT
    assert first.payload == b"hello over tcp"
    assert changed.code == CHANGED
    assert second.payload == b"new value"
    assert stored.code == CHANGED
    assert back.payload == upload
    assert text.puts == 2
    assert big.payload == bytes(range(256)) * 40
    assert first.remote.scheme == scheme


async def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    with trio.move_on_after(timeout):
        for _ in range(10_000):
            if predicate():
                return
            await trio.sleep(0.005)
    raise AssertionError("condition not reached in time")


async def test_many_concurrent_requests_share_one_connection() -> None:
    site, _, _, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0)) as server:
            port = server.stream_addresses[0].port
            async with open_context() as client:
                uri = f"coap+tcp://[::1]:{port}/text"
                requests = [client.request(Message(code=Code.GET, uri=uri)) for _ in range(200)]
                responses = [await request.response for request in requests]
                assert client.stream_statistics.connections_opened == 1  # type: ignore[union-attr]
    assert {r.payload for r in responses} == {b"hello over tcp"}


def live(kind: type) -> int:
    """How many objects of ``kind`` exist (those freed by refcount are gone at once)."""
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def test_finished_requests_over_tcp_are_freed_without_the_cyclic_gc() -> None:
    # A cycle per request (Request <-> exchange) left every finished request to
    # the cyclic GC; it must be freed by reference counting as soon as it is dropped.
    site, _, _, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0)) as server:
            port = server.stream_addresses[0].port
            async with open_context() as client:
                uri = f"coap+tcp://[::1]:{port}/text"
                await client.request(Message(code=Code.GET, uri=uri)).response  # connected
                gc.collect()
                gc.disable()
                try:
                    requests = [client.request(Message(code=Code.GET, uri=uri)) for _ in range(20)]
                    for request in requests:
                        assert (await request.response).payload == b"hello over tcp"
                    assert live(Request) == live(ClientExchange) == 20
                    del requests, request
                    assert live(Request) == live(ClientExchange) == 0
                finally:
                    gc.enable()


async def test_unanswered_requests_over_tcp_time_out_each() -> None:
    # Requests after the first skip the timer update (their deadline is not the
    # earliest); every one must still fail at its own response deadline.
    site, _, _, slow = make_site()
    config = MessagingConfig(separate_response_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0)) as server:
            port = server.stream_addresses[0].port
            async with open_context(config=config) as client:
                uri = f"coap+tcp://[::1]:{port}/slow"
                await client.ping(f"coap+tcp://[::1]:{port}")
                started = trio.current_time()
                requests = []
                for _ in range(3):
                    requests.append(client.request(Message(code=Code.GET, uri=uri)))
                    await trio.sleep(0.1)
                ended = []
                for request in requests:
                    with pytest.raises(RequestTimeoutError):
                        await request.response
                    ended.append(trio.current_time() - started)
    assert slow.started.is_set()
    # Each at its own deadline (0.5 s after it was sent, 0.1 s apart), not at a
    # later timer wake-up (the next one due is the Ping's, 30 s away): real time
    # on a machine that may be busy, so the bound above is generous.
    for index, elapsed in enumerate(ended):
        assert 0.5 + 0.1 * index - 0.05 <= elapsed < 0.5 + 0.1 * index + 2.0


async def test_request_waiting_for_the_peers_csm_times_out() -> None:
    # A request over the default 1152 bytes waits for the peer's CSM (which may
    # allow it) and sends nothing yet; the timer must still be armed for its
    # response deadline, so it fails in time when no CSM ever comes.
    config = MessagingConfig(separate_response_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="::1")
        port = listeners[0].socket.getsockname()[1]
        received = bytearray()

        async def silent_server() -> None:
            stream = await listeners[0].accept()
            async with stream:
                for _ in range(1000):
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    received.extend(data)

        async with trio.open_nursery() as nursery, open_context(config=config) as client:
            nursery.start_soon(silent_server)
            # A small request (sent at once) abandoned: the timer task wakes at its
            # deadline, finds nothing live, and sleeps with no deadline at all.
            client.request(Message(code=Code.GET, uri=f"coap+tcp://[::1]:{port}/small")).cancel()
            await trio.sleep(0.8)
            message = Message(code=Code.GET, uri=f"coap+tcp://[::1]:{port}/big")
            message.opt.uri_query = [f"{i}=" + "x" * 200 for i in range(6)]
            started = trio.current_time()
            with pytest.raises(RequestTimeoutError):
                await client.request(message).response
            waited = trio.current_time() - started
            nursery.cancel_scope.cancel()
        await listeners[0].aclose()
    assert waited == pytest.approx(0.5, abs=0.25)
    # Our CSM and the small request went out; the large one was never sent.
    decoder = StreamDecoder(1 << 16)
    sent = [decode_frame(frame) for frame in decoder.feed(bytes(received))]
    assert [m.code for m in sent] == [Code.CSM, Code.GET]
    assert sent[1].opt.uri_path == ("small",)


async def test_observe_over_tcp_and_end_when_the_server_goes() -> None:
    site, _, counter, _ = make_site()
    stop = trio.CancelScope()

    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with stop:
            async with open_context(site=site, tcp_bind=("::1", 0)) as server:
                task_status.started(server.stream_addresses[0].port)
                await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with open_context() as client, trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            uri = f"coap+tcp://[::1]:{port}/counter"
            seen: list[bytes] = []
            async with client.observe(uri) as notifications:
                async for message in notifications:
                    seen.append(message.payload)
                    if len(seen) == 4:
                        break
                    counter.bump()
            assert seen == [b"0", b"1", b"2", b"3"]
            # Deregistered on leaving (GET Observe=1 on the same connection).
            await wait_until(lambda: counter.observation_count == 0)
            async with client.observe(uri) as notifications:
                first = await notifications.__anext__()
                assert first.payload == b"3"
                assert counter.observation_count == 1
                stop.cancel()  # the server's Context ends: its connections close
                error = await ending(notifications)
    assert isinstance(error, ConnectionLostError)


async def test_ended_observations_leave_nothing_in_the_servers_machine() -> None:
    """Registering and leaving again and again on one connection keeps nothing behind."""
    site, _, counter, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with (
            open_context(site=site, tcp_bind=("::1", 0)) as server,
            open_context() as client,
        ):
            uri = f"coap+tcp://[::1]:{server.stream_addresses[0].port}/counter"

            def served() -> int:
                stream = server.statistics.stream_messaging
                assert stream is not None
                return stream.served_observations

            for _ in range(5):
                async with client.observe(uri) as notifications:
                    await notifications.__anext__()
                    assert served() == 1
                await wait_until(lambda: counter.observation_count == 0)
                await wait_until(lambda: served() == 0)
            assert client.statistics.observations == 0


async def ending(notifications: AsyncIterator[Message]) -> BaseException | None:
    """The error an observation ends with (None: it ended without one)."""
    for _ in range(10):
        try:
            await notifications.__anext__()
        except StopAsyncIteration:
            return None
        except CoapError as error:
            return error
    raise AssertionError("the observation did not end")


async def test_connection_dropped_mid_request_fails_it_with_a_typed_error() -> None:
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="::1")
        port = listeners[0].socket.getsockname()[1]

        async def drop_after_first_frame() -> None:
            stream = await listeners[0].accept()
            received = b""
            for _ in range(100):
                received += await stream.receive_some(4096)
                if len(received) >= 2:
                    break
            await stream.aclose()

        async with trio.open_nursery() as nursery, open_context() as client:
            nursery.start_soon(drop_after_first_frame)
            with pytest.raises(ConnectionLostError):
                await client.get(f"coap+tcp://[::1]:{port}/anything")
            await listeners[0].aclose()


class Forwarder:
    """A TCP forwarder between a client and a server that can drop every connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.scopes: list[trio.CancelScope] = []
        self.accepted = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="::1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, downstream: trio.SocketStream) -> None:
        self.accepted += 1
        with trio.CancelScope() as scope:
            self.scopes.append(scope)
            async with (
                downstream,
                await trio.open_tcp_stream("::1", self.port) as upstream,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(self._pump, downstream, upstream)
                nursery.start_soon(self._pump, upstream, downstream)

    @staticmethod
    async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        for _ in range(100_000):
            data = await source.receive_some(65536)
            if not data:
                return
            await sink.send_all(data)

    def drop(self) -> None:
        """Close every connection it carries (a new one carries on)."""
        for scope in self.scopes:
            scope.cancel()
        self.scopes.clear()


async def test_server_drops_a_connection_under_a_slow_handler() -> None:
    site, _, _, slow = make_site()
    with trio.fail_after(TIMEOUT):
        async with (
            open_context(site=site, tcp_bind=("::1", 0)) as server,
            open_context() as client,
            trio.open_nursery() as nursery,
        ):
            forwarder = Forwarder(server.stream_addresses[0].port)
            port = await nursery.start(forwarder.serve)
            request = client.request(Message(code=Code.GET, uri=f"coap+tcp://[::1]:{port}/slow"))
            await slow.started.wait()
            forwarder.drop()
            with pytest.raises(ConnectionLostError):
                await request.response
            # A new request opens a new connection and works.
            fine = await client.get(f"coap+tcp://[::1]:{port}/text")
            assert fine.payload == b"hello over tcp"
            assert client.stream_statistics.connections_opened == 2  # type: ignore[union-attr]
            assert forwarder.accepted == 2
            # The server saw its first connection go: one is open, the second.
            await wait_until(lambda: server.stream_statistics.connections == 1)  # type: ignore[union-attr]
            assert server.stream_statistics.connections_accepted == 2  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_oversized_frame_aborts_that_connection_only() -> None:
    site, _, _, _ = make_site()
    limits = StreamLimits(max_message_size=2048)
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0), stream_limits=limits) as server:
            port = server.stream_addresses[0].port
            stream = await trio.open_tcp_stream("::1", port)
            big = encode_stream(Message(code=Code.PUT, token=b"\x01", payload=b"z" * 5000))
            await stream.send_all(big[:100])
            received = b""
            for _ in range(100):
                data = await stream.receive_some(4096)
                if not data:
                    break
                received += data
            # The server's CSM, then an Abort, then the close.
            csm_length = 2 + (received[0] >> 4)
            assert decode_frame(received[:csm_length]).code == Code.CSM
            assert decode_frame(received[csm_length:]).code == Code.ABORT
            await wait_until(lambda: server.stream_statistics.closed_oversized == 1)  # type: ignore[union-attr]
            async with open_context() as client:
                fine = await client.get(f"coap+tcp://[::1]:{port}/text")
            assert fine.payload == b"hello over tcp"
            await stream.aclose()


async def test_leaving_the_context_closes_its_connections() -> None:
    site, _, _, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0)) as server:
            port = server.stream_addresses[0].port
            async with open_context() as client:
                await client.get(f"coap+tcp://[::1]:{port}/text")
                assert server.stream_statistics.connections == 1  # type: ignore[union-attr]
            await wait_until(lambda: server.stream_statistics.connections == 0)  # type: ignore[union-attr]


async def test_dtls_and_unknown_schemes_are_still_unsupported() -> None:
    async with open_context() as client:
        for uri in ("coaps://[::1]/x", "coaps://127.0.0.1:5684/y"):
            with pytest.raises(UnsupportedTransportError):
                client.request(Message(code=Code.GET, uri=uri))


def closed_tcp_port() -> int:
    """A loopback TCP port nobody listens on (bound, then closed at once)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("scheme", ["coap+tcp", "coap+ws"])
async def test_a_refused_connection_says_it_was_refused(scheme: str) -> None:
    port = closed_tcp_port()
    uri = f"{scheme}://[::1]:{port}"
    with trio.fail_after(TIMEOUT):
        async with open_context() as client:
            with pytest.raises(ConnectError) as raised:
                await client.get(f"{uri}/anything")
            with pytest.raises(
                ConnectError, match=re.escape(f"could not connect to {uri}: refused")
            ):
                await client.ping(f"{uri}/")
            with pytest.raises(ConnectError, match="refused"):
                async with client.observe(f"{uri}/observed") as notifications:
                    await notifications.__anext__()
    error = raised.value
    assert str(error).startswith(f"could not connect to {uri}: refused (")
    assert "broke" not in str(error)
    assert isinstance(error, NetworkError)
    assert isinstance(error.os_error, ConnectionRefusedError)


async def test_a_connection_that_is_never_accepted_says_it_timed_out() -> None:
    """The kernel completes the TCP handshake, but nobody answers TLS: connect_timeout."""
    _, client_ssl = tls_contexts()
    limits = StreamLimits(connect_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="::1")  # never accepts
        port = listeners[0].socket.getsockname()[1]
        async with open_context(client_ssl_context=client_ssl, stream_limits=limits) as client:
            uri = f"coaps+tcp://[::1]:{port}"
            with pytest.raises(
                ConnectError, match=re.escape(f"could not connect to {uri}: timed out")
            ):
                await client.get(f"{uri}/anything")
        await listeners[0].aclose()


async def test_tls_refuses_an_unverified_server() -> None:
    site, _, _, _ = make_site()
    server_ssl, _ = tls_contexts()
    with trio.fail_after(TIMEOUT):
        async with (
            open_context(site=site, tls_bind=("::1", 0), ssl_context=server_ssl) as server,
            open_context() as client,  # the system's trust store: trustme's CA is not in it
        ):
            port = server.stream_addresses[0].port
            with pytest.raises(
                ConnectError, match=r"TLS handshake failed.*CERTIFICATE_VERIFY_FAILED"
            ):
                await client.get(f"coaps+tcp://[::1]:{port}/text")


async def test_ping_over_tcp() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_context(tcp_bind=("::1", 0)) as server, open_context() as client:
            port = server.stream_addresses[0].port
            rtt = await client.ping(f"coap+tcp://[::1]:{port}/")
    assert 0 < rtt < 5


async def test_websockets_without_wsproto_are_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "wsproto", None)  # as if not installed
    async with open_context() as client:
        with pytest.raises(UnsupportedTransportError, match=r"coap-trio\[ws\]"):
            client.request(Message(code=Code.GET, uri="coap+ws://[::1]:8080/x"))
    with pytest.raises(ImportError, match=r"coap-trio\[ws\]"):
        async with open_context(ws_bind=("::1", 0)):
            pass


async def test_notifications_over_tcp_are_never_stale_whatever_their_observe_values() -> None:
    """RFC 8323 §7: a stream delivers in order and the Observe value carries no
    ordering, so a notification with a lower (or equal) Observe is still fresh; over
    UDP the same values would be dropped as stale (RFC 7641 §3.4)."""
    observe_values = [0, 5, 3, 3, 1]  # as a server over a reliable transport may send them
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="::1")
        port = listeners[0].socket.getsockname()[1]

        async def server() -> None:
            stream = await listeners[0].accept()
            async with stream:
                decoder = StreamDecoder(1 << 16)
                frames: list[bytes] = []
                registration = None
                for _ in range(100):
                    frames += decoder.feed(await stream.receive_some(4096))
                    for frame in frames:
                        message = decode_frame(frame)
                        if message.code == Code.GET:
                            registration = message
                    frames.clear()
                    if registration is not None:
                        break
                assert registration is not None
                assert registration.opt.observe == 0
                await stream.send_all(encode_stream(Message(code=Code.CSM)))
                for index, value in enumerate(observe_values):
                    note = Message(code=CONTENT, token=registration.token, payload=b"%d" % index)
                    note.opt.observe = value
                    await stream.send_all(encode_stream(note))
                    await trio.sleep(0.01)
                await trio.sleep_forever()

        seen: list[bytes] = []
        async with trio.open_nursery() as nursery, open_context() as client:
            nursery.start_soon(server)
            async with client.observe(f"coap+tcp://[::1]:{port}/obs", keep=8) as notifications:
                async for response in notifications:
                    seen.append(response.payload)
                    if len(seen) == len(observe_values):
                        break
                dropped = notifications.dropped_stale
            nursery.cancel_scope.cancel()
        await listeners[0].aclose()
    assert seen == [b"0", b"1", b"2", b"3", b"4"]
    assert dropped == 0


async def test_a_listener_bound_by_host_name_listens_on_its_addresses() -> None:
    import socket

    expected = []
    for *_, sockaddr in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM):
        if sockaddr[0] not in expected:
            expected.append(sockaddr[0])
    site, _, _, _ = make_site()
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("localhost", 0)) as server:
            addresses = server.stream_addresses
            assert [a.host for a in addresses] == expected
            assert len({a.port for a in addresses}) == 1
            port = addresses[0].port
            async with open_context() as client:
                response = await client.get(f"coap+tcp://localhost:{port}/text")
        with pytest.raises(socket.gaierror, match=r"no-such-host\.invalid"):
            async with open_context(tcp_bind=("no-such-host.invalid", 0)):
                pass  # pragma: no cover - never entered
    assert response.payload == b"hello over tcp"
