"""coaps:// against Mbed TLS (python-mbedtls 2.10.1, Mbed TLS 2.28), PSK, both ways, on loopback.

The peer is written here: Mbed TLS's DTLS through python-mbedtls's buffer API
(``DTLSConfiguration``, ``ServerContext`` / ``ClientContext``,
``wrap_buffers()``: ``receive_from_network``, ``do_handshake``,
``peek_outgoing`` / ``consume_outgoing``, ``read``, ``write``) over a plain
UDP socket on ``::1`` (port 0), in a thread; the CoAP messages it carries are
encoded and decoded with our codec, since the DTLS layer is what is under
test. TLS_PSK_WITH_AES_128_CCM_8 only, the suite both sides share.

* our client (``open_context(dtls=...)``) against the Mbed TLS server: GET,
  PUT, and a block-wise GET of 5,000 bytes (Block2, served by the peer);
* the Mbed TLS client against our server (``dtls_bind``): GET, PUT, a
  block-wise GET (Block2) and a block-wise PUT (Block1);
* a wrong key both ways: a typed error on our side and nothing served.

Mbed TLS's server uses its cookie support (``setcookieparam`` with the
client's address: a HelloVerifyRequest, then a new context for the
ClientHello that echoes it). python-mbedtls ships wheels up to CPython 3.12
(the ``test`` extra installs it there); on a newer Python the module is
skipped as a whole, saying why (on 3.11 and 3.12 a missing install fails).
Every loop is bounded in time and count.
"""

from __future__ import annotations

import random
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
from dtls_helpers import IDENTITY, KEY
from dtls_interop import EngineServer

from coap_trio import (
    BlockValue,
    Code,
    DtlsAlertError,
    DtlsCredentials,
    DtlsLimits,
    HandshakeError,
    Message,
    Resource,
    Site,
    Type,
    codec,
    open_context,
)
from coap_trio.protocol.dtls.messages import AlertDescription
from coap_trio.protocol.dtls.session import Failed

if sys.version_info >= (3, 13):
    pytest.skip("python-mbedtls has wheels for CPython up to 3.12 only", allow_module_level=True)

import mbedtls.tls as mbedtls_tls
from mbedtls.exceptions import TLSError

HOST = "::1"
SUITE = "TLS-PSK-WITH-AES-128-CCM-8"
TEST_TIMEOUT = 60.0
#: A peer thread gives up after this long, whatever happens.
PEER_LIFETIME = 30.0
HELLO = b"hello from Mbed TLS"
LARGE = random.Random(5).randbytes(5000)
#: MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY, as python-mbedtls reports it.
_PEER_CLOSE_NOTIFY = 0x7880


def _configuration(**kwargs: object) -> Any:
    return mbedtls_tls.DTLSConfiguration(
        ciphers=[SUITE],
        validate_certificates=False,
        lowest_supported_version=mbedtls_tls.DTLSVersion.DTLSv1_2,
        **kwargs,
    )


def _flush(buffer: Any, sock: socket.socket, address: object) -> None:
    """Send what Mbed TLS wrote (its records of one flight, as one datagram)."""
    for _ in range(64):
        data = buffer.peek_outgoing(65536)
        if not data:
            return
        sock.sendto(data, address)
        buffer.consume_outgoing(len(data))


def _handshake(buffer: Any, sock: socket.socket, address: object) -> bool:
    """Move Mbed TLS's handshake as far as it goes; True once it is over."""
    over = mbedtls_tls.HandshakeStep.HANDSHAKE_OVER
    for _ in range(64):
        if buffer._handshake_state is over:
            return True
        try:
            buffer.do_handshake()
        except mbedtls_tls.WantWriteError:
            _flush(buffer, sock, address)
        except mbedtls_tls.WantReadError:
            _flush(buffer, sock, address)
            return False
    raise AssertionError("Mbed TLS's handshake did not settle")


def _read(buffer: Any) -> bytes | None:
    try:
        data: bytes = buffer.read(65536)
    except mbedtls_tls.WantReadError:
        return None
    return data or None


# -- the Mbed TLS server ---------------------------------------------------------------------------


class MbedtlsServer:
    """A coaps:// server made of Mbed TLS (PSK), our codec and a socket, in a thread.

    Serves ``GET /hello``, ``GET``/``PUT /store`` and ``GET /large`` (5,000
    bytes, in Block2 blocks of the size asked for, 1,024 by default).
    """

    def __init__(self, psk_store: dict[str, bytes]) -> None:
        self.context = mbedtls_tls.ServerContext(_configuration(pre_shared_key_store=psk_store))
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port: int = self.sock.getsockname()[1]
        self.store = b""
        #: (method, path) of every request served.
        self.served: list[tuple[str, str]] = []
        #: Handshakes completed, HelloVerifyRequests sent, Mbed TLS's errors.
        self.handshakes = 0
        self.hello_verify_requests = 0
        #: Sessions the peer closed with close_notify.
        self.close_notify = 0
        self.errors: list[str] = []
        self._buffers: dict[object, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MbedtlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _run(self) -> None:
        end = time.monotonic() + PEER_LIFETIME
        while not self._stop.is_set() and time.monotonic() < end:
            readable, _, _ = select.select([self.sock], [], [], 0.05)
            if not readable:
                for address, buffer in list(self._buffers.items()):
                    with_timer = buffer._handshake_state
                    if with_timer is not mbedtls_tls.HandshakeStep.HANDSHAKE_OVER:
                        self._step(address, buffer)  # its retransmission timer
                continue
            data, address = self.sock.recvfrom(65536)
            buffer = self._buffers.get(address)
            if buffer is None:
                buffer = self._buffers[address] = self.context.wrap_buffers()
                buffer.setcookieparam(repr(address).encode())
            buffer.receive_from_network(data)
            self._step(address, buffer)

    def _step(self, address: object, buffer: Any) -> None:
        try:
            done_before = buffer._handshake_state
            if not _handshake(buffer, self.sock, address):
                return
            if done_before is not mbedtls_tls.HandshakeStep.HANDSHAKE_OVER:
                self.handshakes += 1
            for _ in range(16):
                data = _read(buffer)
                if data is None:
                    return
                response = self._answer(codec.decode(data))
                buffer.write(codec.encode(response))
                _flush(buffer, self.sock, address)
        except mbedtls_tls.HelloVerifyRequest:
            # The cookie exchange: the HelloVerifyRequest out, nothing kept.
            _flush(buffer, self.sock, address)
            self.hello_verify_requests += 1
            del self._buffers[address]
        except TLSError as error:
            _flush(buffer, self.sock, address)  # its alert, if it has one
            if error.err == _PEER_CLOSE_NOTIFY:
                self.close_notify += 1
            else:
                self.errors.append(f"{error.err}: {error}")
            del self._buffers[address]

    def _answer(self, request: Message) -> Message:
        path = "/".join(request.opt.uri_path)
        self.served.append((request.code.name, path))
        reply: dict[str, object] = {}
        if request.code == Code.GET and path == "hello":
            code, payload = Code.CONTENT, HELLO
        elif request.code == Code.GET and path == "store":
            code, payload = Code.CONTENT, self.store
        elif request.code == Code.PUT and path == "store":
            self.store = request.payload
            code, payload = Code.CHANGED, b""
        elif request.code == Code.GET and path == "large":
            asked = request.opt.block2
            szx = min(asked.szx, 6) if asked is not None else 6
            block = BlockValue(asked.num if asked is not None else 0, False, szx)
            chunk = LARGE[block.start : block.start + block.size]
            more = block.start + block.size < len(LARGE)
            reply["block2"] = BlockValue(block.num, more, szx)
            code, payload = Code.CONTENT, chunk
        else:
            code, payload = Code.NOT_FOUND, b""
        return Message(
            code=code,
            mtype=Type.ACK,
            mid=request.mid,
            token=request.token,
            payload=payload,
            **reply,
        )


# -- the Mbed TLS client ---------------------------------------------------------------------------


@attrs.define
class ClientRun:
    """What the Mbed TLS client saw."""

    responses: list[Message] = attrs.field(factory=list)
    error: str | None = None
    handshake_done: bool = False


class MbedtlsClient:
    """A coaps:// client made of Mbed TLS (PSK), our codec and a socket (blocking, bounded)."""

    def __init__(self, port: int, key: bytes = KEY) -> None:
        configuration = _configuration(pre_shared_key=(IDENTITY.decode(), key))
        self.buffer = mbedtls_tls.ClientContext(configuration).wrap_buffers(None)
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.address = (HOST, port)
        self.sock.connect(self.address)
        self.mid = random.Random(port).randrange(0x10000)
        self.run = ClientRun()

    def close(self) -> None:
        self.sock.close()

    def _receive(self, deadline: float) -> bool:
        """Wait for one datagram (or the next timer tick) and feed it to Mbed TLS."""
        wait = max(0.0, min(0.1, deadline - time.monotonic()))
        readable, _, _ = select.select([self.sock], [], [], wait)
        if not readable:
            return False
        self.buffer.receive_from_network(self.sock.recv(65536))
        return True

    def handshake(self, budget: float = 10.0) -> bool:
        deadline = time.monotonic() + budget
        try:
            while time.monotonic() < deadline:
                if _handshake(self.buffer, self.sock, self.address):
                    self.run.handshake_done = True
                    return True
                self._receive(deadline)
        except TLSError as error:
            _flush(self.buffer, self.sock, self.address)
            self.run.error = f"{error.err:#x}: {error}"
            return False
        self.run.error = "handshake timed out"
        return False

    def request(self, message: Message, budget: float = 5.0) -> Message:
        """Send a CON request, return the piggybacked response (one try: loopback)."""
        self.mid = (self.mid + 1) & 0xFFFF
        token = self.mid.to_bytes(2, "big")
        sent = message.copy(mtype=Type.CON, mid=self.mid, token=token)
        self.buffer.write(codec.encode(sent))
        _flush(self.buffer, self.sock, self.address)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if not self._receive(deadline):
                continue
            data = _read(self.buffer)
            if data is None:
                continue
            response = codec.decode(data)
            if response.token == token and response.code != Code.EMPTY:
                self.run.responses.append(response)
                return response
        raise AssertionError(f"no response to {message.code.name} within {budget} s")

    def get_blockwise(self, uri: str, szx: int = 6) -> bytes:
        body = b""
        for num in range(64):
            response = self.request(
                Message(code=Code.GET, uri=uri, block2=BlockValue(num, False, szx))
            )
            assert response.code == Code.CONTENT, response
            block = response.opt.block2
            assert block is not None
            assert block.num == num
            body += response.payload
            if not block.more:
                return body
        raise AssertionError("more than 64 blocks")

    def put_blockwise(self, uri: str, body: bytes, szx: int = 6) -> Message:
        size = 1 << (szx + 4)
        count = -(-len(body) // size)
        for num in range(count):
            more = num + 1 < count
            chunk = body[num * size : (num + 1) * size]
            response = self.request(
                Message(code=Code.PUT, uri=uri, payload=chunk, block1=BlockValue(num, more, szx))
            )
            if more:
                assert response.code == Code.CONTINUE, response
        return response


def run_client(port: int, work: Callable[[MbedtlsClient], None], key: bytes = KEY) -> ClientRun:
    client = MbedtlsClient(port, key)
    try:
        if client.handshake():
            work(client)
    finally:
        client.close()
    return client.run


# -- our client against the Mbed TLS server -------------------------------------------------------


async def test_our_client_against_mbedtls_server() -> None:
    body = random.Random(9).randbytes(600)
    with (
        trio.fail_after(TEST_TIMEOUT),
        MbedtlsServer({IDENTITY.decode(): KEY}) as server,
    ):
        credentials = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)
        async with open_context(dtls=credentials) as ctx:
            base = f"coaps://[{HOST}]:{server.port}"
            assert (await ctx.get(f"{base}/hello")).payload == HELLO
            assert (await ctx.put(f"{base}/store", body)).code is Code.CHANGED
            assert (await ctx.get(f"{base}/store")).payload == body
            large = await ctx.get(f"{base}/large")
            assert large.payload == LARGE  # Block2: five blocks of 1,024 bytes
            (statistics,) = ctx.statistics.dtls
            assert statistics.handshakes_completed == 1
            assert statistics.records_rejected == 0
    assert server.hello_verify_requests >= 1  # Mbed TLS's cookie exchange
    assert server.handshakes == 1
    assert server.errors == []
    assert server.close_notify == 1  # leaving the Context closed the session
    assert server.served[:3] == [("GET", "hello"), ("PUT", "store"), ("GET", "store")]
    assert server.served[3:] == [("GET", "large")] * 5


async def test_our_client_with_a_wrong_key_fails_typed_and_nothing_is_served() -> None:
    with (
        trio.fail_after(TEST_TIMEOUT),
        MbedtlsServer({IDENTITY.decode(): KEY}) as server,
    ):
        wrong = DtlsCredentials(psk_identity=IDENTITY, psk=b"not the key")
        async with open_context(dtls=wrong, dtls_limits=DtlsLimits(handshake_timeout=5.0)) as ctx:
            with pytest.raises((DtlsAlertError, HandshakeError)) as failed:
                await ctx.get(f"coaps://[{HOST}]:{server.port}/hello")
    # Mbed TLS refuses a Finished that does not authenticate with bad_record_mac.
    error = failed.value
    assert isinstance(error, DtlsAlertError), error
    assert error.description == AlertDescription.BAD_RECORD_MAC
    assert server.served == []
    assert server.handshakes == 0


# -- the Mbed TLS client against our server -------------------------------------------------------


class Store(Resource):
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.served = 0

    async def render_get(self, request: Message) -> Message:
        self.served += 1
        return Message(code=Code.CONTENT, payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.served += 1
        self.body = request.payload
        return Message(code=Code.CHANGED)


async def test_mbedtls_client_against_our_server() -> None:
    hello, large = Store(HELLO), Store(LARGE)
    site = Site()
    site.add(["hello"], hello)
    site.add(["large"], large)
    upload = random.Random(13).randbytes(3000)
    with trio.fail_after(TEST_TIMEOUT):
        async with open_context(
            site=site,
            dtls_bind=(HOST, 0),
            dtls=DtlsCredentials(psk_table={IDENTITY: KEY}, psk_hint=b"CoAP"),
        ) as ctx:
            (address,) = ctx.dtls_addresses
            seen: dict[str, object] = {}

            def work(client: MbedtlsClient) -> None:
                base = f"coap://[{HOST}]:{address.port}"
                seen["get"] = client.request(Message(code=Code.GET, uri=f"{base}/hello"))
                seen["put"] = client.request(
                    Message(code=Code.PUT, uri=f"{base}/hello", payload=b"changed")
                )
                seen["again"] = client.request(Message(code=Code.GET, uri=f"{base}/hello"))
                seen["large"] = client.get_blockwise(f"{base}/large")
                seen["upload"] = client.put_blockwise(f"{base}/large", upload)
                seen["back"] = client.get_blockwise(f"{base}/large", szx=4)

            run = await trio.to_thread.run_sync(run_client, address.port, work)
            assert run.error is None, run.error
            (statistics,) = ctx.statistics.dtls
    assert seen["get"].payload == HELLO
    assert seen["put"].code is Code.CHANGED
    assert seen["again"].payload == b"changed"
    assert seen["large"] == LARGE  # Block2, 1,024-byte blocks
    assert seen["upload"].code is Code.CHANGED
    assert large.body == upload  # Block1, assembled by our server
    assert seen["back"] == upload  # Block2, 256-byte blocks
    assert statistics.handshakes_completed == 1
    assert statistics.hello_verify_requests == 1  # our cookie exchange, Mbed TLS followed it
    assert statistics.handshakes_failed == 0


async def test_mbedtls_client_with_a_wrong_key_is_refused_and_nothing_is_served() -> None:
    hello = Store(HELLO)
    site = Site()
    site.add(["hello"], hello)
    with trio.fail_after(TEST_TIMEOUT):
        async with open_context(
            site=site,
            dtls_bind=(HOST, 0),
            dtls=DtlsCredentials(psk_table={IDENTITY: KEY}),
            dtls_limits=DtlsLimits(handshake_timeout=10.0),
        ) as ctx:
            (address,) = ctx.dtls_addresses

            def work(client: MbedtlsClient) -> None:
                client.request(Message(code=Code.GET, uri=f"coap://[{HOST}]:{address.port}/hello"))

            run = await trio.to_thread.run_sync(run_client, address.port, work, b"not the key")
            (statistics,) = ctx.statistics.dtls
    # Our server dropped Mbed TLS's Finished, then refused it when it came again
    # (its flight retransmitted): decrypt_error, which Mbed TLS reports.
    assert not run.handshake_done
    assert run.error is not None
    assert run.error.startswith("0x7780"), run.error  # "a fatal alert ... from our peer"
    assert statistics.handshakes_failed == 1
    assert statistics.records_rejected >= 2
    assert statistics.handshakes_completed == 0
    assert hello.served == 0


def test_mbedtls_client_with_a_wrong_key_gets_a_typed_refusal_from_the_engine() -> None:
    """The same refusal seen by the engine's own test server: a typed HandshakeError
    carrying the decrypt_error alert it sent."""
    credentials = DtlsCredentials(psk_table={IDENTITY: KEY})
    with EngineServer(credentials) as server:

        def work(client: MbedtlsClient) -> None:
            raise AssertionError("the handshake completed with a wrong key")

        run = run_client(server.port, work, b"not the key")
    assert not run.handshake_done
    assert run.error is not None
    assert run.error.startswith("0x7780"), run.error
    failures = [event.error for event in server.events if isinstance(event, Failed)]
    assert len(failures) == 1
    (failure,) = failures
    assert isinstance(failure, HandshakeError)
    assert failure.alert == AlertDescription.DECRYPT_ERROR
    assert server.requests == []
