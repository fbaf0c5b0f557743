"""aiocoap 0.4's client against coap_trio's server over TLS: ``coaps+tcp`` and ``coaps+ws``
(RFC 8323), with a trustme certificate.

Loopback only (``::1``, ports picked by the OS), real clock, every test under
``trio.fail_after``. The aiocoap client runs in a trio worker thread with its own
asyncio loop; each aiocoap session is bounded by ``asyncio.wait_for`` as well.

How aiocoap is told to trust the test CA: its client credentials map
(``Context.client_credentials``, the map ``aiocoap-client --credentials`` fills),
with a ``tlscert`` entry under the key ``"<scheme>://<hostinfo>/*"``. Both
transports read it: ``TLSClient._ssl_context_factory`` (coaps+tcp) and
``WSPool._connect_task`` (coaps+ws) call ``CredentialsMap.ssl_client_context(scheme,
hostinfo)``, which builds ``ssl.create_default_context(cafile=certfile)`` -- only that
CA, certificate and host name verified. Without an entry both fall back to
``ssl.create_default_context()``, the system store. Two aiocoap 0.4.17 details shape
the keys: the lookup is an exact dict get of ``"<scheme>://<hostinfo>/*"`` (the
``"coaps+tcp://*"`` fallback in ``ssl_client_context`` is unreachable, it returns
before it), and ``hostinfo`` is aiocoap's normalized one (``[::1]:port``), which is
what our ``stream_addresses[...].uri_base`` gives. ``SSL_CERT_FILE`` would only act
through the system-store fallback and is process-wide (the client runs in-process),
so it is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiocoap
import aiocoap.error
import aiocoap.transports.tcp
import pytest
import trio
import trustme

from coap_trio import (
    CHANGED,
    CONTENT,
    Context,
    Message,
    ObservableResource,
    StreamStatistics,
    open_context,
)
from coap_trio.resource import Resource, Site

TIMEOUT = 30
#: Bound of one aiocoap session (all its requests), inside the thread's asyncio loop.
AIOCOAP_TIMEOUT = 10
HELLO = b"hello over TLS from coap_trio"
#: 5,000 bytes, no two 1024-byte blocks alike: a block lost, repeated or swapped shows.
BIG = b"".join(b"%04d " % i for i in range(1000))
#: OpenSSL's X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: the issuer is not trusted
#: (a host name mismatch would be 62, an expired certificate 10).
UNKNOWN_ISSUER = 20
SCHEMES = ["coaps+tcp", "coaps+ws"]

T = TypeVar("T")


class Text(Resource):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def render_get(self, request: Message) -> Message:
        self.requests += 1
        return Message(code=CONTENT, payload=HELLO)

    async def render_post(self, request: Message) -> Message:
        self.requests += 1
        return Message(code=CHANGED, payload=b"echo: " + request.payload)


class Big(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=BIG)


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"%d" % self.value)

    def tick(self) -> None:
        self.value += 1
        self.updated_state()


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[ssl.SSLContext, Path, Path]:
    """Our server's TLS context (a certificate for ``::1`` from a fresh trustme CA),
    that CA's certificate file, and the file of another CA that did not issue it."""
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("::1", "localhost").configure_cert(server_ssl)
    trusted = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(trusted))
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    return server_ssl, trusted, other


class Served(NamedTuple):
    server: Context
    #: ``scheme://[::1]:port`` of the one listener.
    base: str
    text: Text
    counter: Counter


@contextlib.asynccontextmanager
async def tls_server(scheme: str, server_ssl: ssl.SSLContext) -> AsyncIterator[Served]:
    """Our server with one ``scheme`` listener on ``::1`` (port 0) serving ``/text``,
    ``/big`` and ``/counter``."""
    text, counter = Text(), Counter()
    site = Site()
    site.add(("text",), text)
    site.add(("big",), Big())
    site.add(("counter",), counter)
    bind = {"tls_bind": ("::1", 0)} if scheme == "coaps+tcp" else {"wss_bind": ("::1", 0)}
    async with open_context(site=site, ssl_context=server_ssl, **bind) as server:
        (address,) = server.stream_addresses
        assert address.scheme == scheme
        assert address.host == "::1"
        assert address.port != 0
        yield Served(server, address.uri_base, text, counter)


def trust(base: str, ca_file: Path) -> dict[str, Any]:
    """aiocoap client credentials: trust ``ca_file`` (only it) for the origin ``base``."""
    return {f"{base}/*": {"tlscert": {"certfile": str(ca_file)}}}


async def _closed_by_us(context: Any, timeout: float = 5.0) -> bool:
    """Wait (at most ``timeout`` s) until our server closed every coaps+tcp connection
    of aiocoap's ``context``; whether it did.

    aiocoap's shutdown only sends Release (RFC 8323 §5.5: the peer is to close) and
    returns; its TLS transport is closed when it sees our close, and a loop ended
    before that leaks it (a ResourceWarning: an error in a later test). aiocoap drops
    a connection from ``TCPClient._pool`` when it is lost: aiocoap 0.4 internals,
    pinned by the ``aiocoap>=0.4.17,<0.5`` test extra. (Its WebSocket release waits
    for the close itself.)
    """
    pools = [
        interface.token_interface._pool
        for interface in context.request_interfaces
        if isinstance(interface.token_interface, aiocoap.transports.tcp.TCPClient)
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(10_000):  # bounded; the deadline normally ends it first
        if not any(pools) or loop.time() > deadline:
            break
        await asyncio.sleep(0.01)
    return not any(pools)


def _run_aiocoap(session: Callable[[Any], Awaitable[T]], credentials: dict[str, Any] | None) -> T:
    async def main() -> T:
        context = await aiocoap.Context.create_client_context(transports=["tlsclient", "ws"])
        if credentials is not None:
            context.client_credentials.load_from_dict(credentials)
        try:
            result = await asyncio.wait_for(session(context), AIOCOAP_TIMEOUT)
        finally:  # also after a failure, so that no transport leaks into the next test
            await context.shutdown()  # sends Release on every connection
            closed = await _closed_by_us(context)
        assert closed, "our server did not close the connections aiocoap released"
        return result

    return asyncio.run(main())


async def aiocoap_client(
    session: Callable[[Any], Awaitable[T]], credentials: dict[str, Any] | None
) -> T:
    """Run ``session(context)`` with a fresh aiocoap client context (transports
    ``tlsclient`` and ``ws``, ``credentials`` loaded) in a worker thread; abandoned
    (the test fails) if the caller's ``fail_after`` expires first."""
    return await trio.to_thread.run_sync(_run_aiocoap, session, credentials, abandon_on_cancel=True)


async def request(context: Any, code: Any, uri: str, payload: bytes = b"") -> Any:
    return await context.request(aiocoap.Message(code=code, uri=uri, payload=payload)).response


def stream_stats(server: Context) -> StreamStatistics:
    """A fresh snapshot of ``server``'s connection counters."""
    stats = server.stream_statistics
    assert stats is not None
    return stats


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` every 10 ms for at most ``timeout`` seconds; its last value."""
    with trio.move_on_after(timeout):
        for _ in range(10_000):
            if condition():
                return True
            await trio.sleep(0.01)
    return condition()


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_aiocoap_get_post_and_blockwise_get(
    scheme: str, certificates: tuple[ssl.SSLContext, Path, Path]
) -> None:
    server_ssl, trusted, _ = certificates

    with trio.fail_after(TIMEOUT):
        async with tls_server(scheme, server_ssl) as (server, base, _, _):

            async def session(context: Any) -> list[Any]:
                return [
                    await request(context, aiocoap.GET, base + "/text"),
                    await request(context, aiocoap.POST, base + "/text", b"from aiocoap"),
                    await request(context, aiocoap.GET, base + "/big"),
                ]

            text, echo, big = await aiocoap_client(session, trust(base, trusted))
            # One TLS connection carried the three exchanges (and the block-wise ones).
            assert await wait_until(lambda: stream_stats(server).connections_accepted == 1)
            assert stream_stats(server).failed == 0

    assert (text.code, text.payload) == (aiocoap.CONTENT, HELLO)
    assert (echo.code, echo.payload) == (aiocoap.CHANGED, b"echo: from aiocoap")
    assert big.code == aiocoap.CONTENT
    assert big.payload == BIG
    # aiocoap reassembled it from our Block2 blocks: the last one (number 4, no more)
    # of five 1024-byte blocks (SZX 6), with the total size announced in Size2.
    assert big.opt.block2 == (4, False, 6)
    assert big.opt.size2 == len(BIG)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_aiocoap_observes_over_tls(
    scheme: str, certificates: tuple[ssl.SSLContext, Path, Path]
) -> None:
    server_ssl, trusted, _ = certificates

    with trio.fail_after(TIMEOUT):
        async with tls_server(scheme, server_ssl) as (_, base, _, counter):

            async def session(context: Any) -> tuple[list[Any], int]:
                message = aiocoap.Message(code=aiocoap.GET, uri=base + "/counter", observe=0)
                observed = context.request(message)
                received = [await observed.response]
                notifications = aiter(observed.observation)
                for _ in range(3):  # lock step: one change, then wait for its notification
                    trio.from_thread.run_sync(counter.tick)
                    received.append(await anext(notifications))
                observers = trio.from_thread.run_sync(lambda: counter.observation_count)
                observed.observation.cancel()
                return received, observers

            received, observers = await aiocoap_client(session, trust(base, trusted))
            # aiocoap's cancel() sends nothing over a stream; its shutdown (Release, then
            # the close) must end the observation on our side.
            assert await wait_until(lambda: counter.observation_count == 0)

    assert observers == 1
    assert [(m.code, m.payload) for m in received] == [
        (aiocoap.CONTENT, b"0"),
        (aiocoap.CONTENT, b"1"),
        (aiocoap.CONTENT, b"2"),
        (aiocoap.CONTENT, b"3"),
    ]
    sequence = [m.opt.observe for m in received]
    assert None not in sequence
    assert sequence == sorted(set(sequence))  # strictly increasing


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_aiocoap_refuses_a_server_whose_ca_it_does_not_trust(
    scheme: str, certificates: tuple[ssl.SSLContext, Path, Path]
) -> None:
    """The same server, URI and certificate: refused with another CA's file as the
    trust anchor and with aiocoap's default (the system store), accepted with the
    issuing CA's -- so it is the CA that decides, nothing else."""
    server_ssl, trusted, other = certificates

    with trio.fail_after(TIMEOUT):
        async with tls_server(scheme, server_ssl) as (server, base, text, _):

            async def refused(context: Any) -> BaseException:
                # aiocoap raises NetworkError from the SSL error for coaps+tcp and lets
                # the SSL error through for coaps+ws; a timeout would fail the test.
                with pytest.raises((aiocoap.error.NetworkError, ssl.SSLError)) as caught:
                    await request(context, aiocoap.GET, base + "/text")
                return caught.value

            errors = []
            for credentials in (trust(base, other), None):
                errors.append(await aiocoap_client(refused, credentials))
                # Our side saw the handshake fail (the alert aiocoap sends), nothing else.
                assert await wait_until(lambda: stream_stats(server).failed == len(errors))

            async def accepted(context: Any) -> Any:
                return await request(context, aiocoap.GET, base + "/text")

            control = await aiocoap_client(accepted, trust(base, trusted))
            assert await wait_until(lambda: stream_stats(server).connections_accepted == 3)
            assert stream_stats(server).failed == 2
            assert text.requests == 1  # only the trusting client's request got through

    for error in errors:
        verification = error if isinstance(error, ssl.SSLError) else error.__cause__
        assert isinstance(verification, ssl.SSLCertVerificationError), repr(error)
        assert verification.verify_code == UNKNOWN_ISSUER, verification.verify_message
    assert (control.code, control.payload) == (aiocoap.CONTENT, HELLO)
