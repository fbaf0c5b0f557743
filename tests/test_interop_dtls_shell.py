"""coaps:// through the Context against libcoap 4.3.1's OpenSSL and GnuTLS tools, on loopback.

Both directions, real clock, ``::1``:

* ``coap-client-openssl`` / ``coap-client-gnutls`` against a Context opened
  with ``dtls_bind``: GET, PUT in Block1 blocks, a large GET in Block2
  blocks, and an observation (``-s``), in PSK and certificate modes, and
  with raw public keys (the GnuTLS build, ``-M``); a wrong key is refused
  and nothing is served;
* our client (``open_context(dtls=...)``) against ``coap-server-openssl`` /
  ``coap-server-gnutls``: GET, a 20,000-byte PUT of ``/example_data`` and
  the GET of it back (block-wise both ways), an observation of ``/time``,
  in PSK and certificate modes, raw public keys against the GnuTLS build,
  and a wrong key or an untrusted certificate failing typed;
* close_notify when our Context closes: libcoap's servers log the session
  it ended (``-v 7``), and our own server, over real UDP, counts it.

The tools come with Debian's libcoap3-bin, which ``scripts/test`` installs:
a missing one is an error, not a skip. Every process is bounded in time and
stopped on the way out.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dtls_helpers import IDENTITY, KEY, Pki, rpk_credentials
from dtls_interop import libcoap_server

from coap_trio import (
    Code,
    Context,
    DtlsAlertError,
    DtlsCredentials,
    DtlsLimits,
    DtlsPeer,
    HandshakeError,
    HandshakeTimeoutError,
    Message,
    ObservableResource,
    Resource,
    Site,
    open_context,
)
from coap_trio.protocol.dtls.messages import AlertDescription
from coap_trio.protocol.dtls.pki import rpk_fingerprint, spki_der

CLIENTS = ["coap-client-openssl", "coap-client-gnutls"]
SERVERS = ["coap-server-openssl", "coap-server-gnutls"]
TEST_TIMEOUT = 60.0
LIBCOAP_INDEX_PREFIX = b"This is a test server made with libcoap"
LARGE = random.Random(7).randbytes(6000)


class Store(Resource):
    def __init__(self) -> None:
        self.body = LARGE
        self.served = 0
        self.peers: list[DtlsPeer | None] = []

    async def render_get(self, request: Message) -> Message:
        self.served += 1
        self.peers.append(request.remote.peer)
        return Message(code=Code.CONTENT, payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.served += 1
        self.body = request.payload
        return Message(code=Code.CHANGED)


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"%d" % self.value)


@attrs.define
class Served:
    ctx: Context
    store: Store
    counter: Counter

    def uri(self, path: str) -> str:
        return f"{self.ctx.dtls_addresses[0]}{path}"


@asynccontextmanager
async def serving(credentials: DtlsCredentials) -> AsyncIterator[Served]:
    """Our server on coaps://[::1]:PORT with /store and /counter (ticking every 0.2 s)."""
    store, counter = Store(), Counter()
    site = Site()
    site.add(["store"], store)
    site.add(["counter"], counter)
    async with (
        open_context(site=site, dtls_bind=("::1", 0), dtls=credentials) as ctx,
        trio.open_nursery() as nursery,
    ):

        async def tick() -> None:
            for _ in range(10_000):  # bounded; the test's deadline ends it first
                await trio.sleep(0.2)
                counter.value += 1
                counter.updated_state()

        nursery.start_soon(tick)
        yield Served(ctx, store, counter)
        nursery.cancel_scope.cancel()


async def libcoap_client(
    program: str, args: Sequence[str], uri: str
) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which(program)
    assert binary is not None, f"{program} is not installed (Debian libcoap3-bin)"
    with trio.fail_after(30):
        return await trio.run_process(
            [binary, "-B", "10", "-v", "0", *args, uri],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@attrs.frozen
class Mode:
    """Our credentials and libcoap's arguments for one way of authenticating."""

    ours: DtlsCredentials
    theirs: list[str]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def pem_files(pki: Pki, directory: Path) -> Path:
    pki.server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    pki.server.private_key_pem.write_to_path(str(directory / "server.key"))
    pki.client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    pki.client.private_key_pem.write_to_path(str(directory / "client.key"))
    pki.ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return directory


def key_file(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return key


def client_modes(pki: Pki, directory: Path) -> dict[str, Mode]:
    """Our server's credentials and libcoap's client arguments, per mode."""
    files = pem_files(pki, directory)
    return {
        "psk": Mode(
            DtlsCredentials(psk_table={IDENTITY: KEY}, psk_hint=b"CoAP"),
            ["-u", IDENTITY.decode(), "-k", KEY.decode()],
        ),
        "certificate": Mode(
            pki.credentials(pki.server, require_client_auth=True),
            [
                "-c",
                str(files / "client.pem"),
                "-j",
                str(files / "client.key"),
                "-C",
                str(files / "ca.pem"),
            ],
        ),
    }


# -- libcoap's clients against our server ---------------------------------------------------------


async def exercise_our_server(
    program: str, theirs: list[str], served: Served, tmp_path: Path
) -> None:
    """GET in Block2, PUT in Block1, GET it back, observe: one libcoap process each."""
    upload = random.Random(3).randbytes(3000)
    (tmp_path / "upload.bin").write_bytes(upload)
    output = tmp_path / "output.bin"
    got = await libcoap_client(program, [*theirs, "-o", str(output)], served.uri("/store"))
    assert got.returncode == 0, got.stderr
    assert output.read_bytes() == LARGE  # Block2, 6,000 bytes
    put = await libcoap_client(
        program,
        [*theirs, "-m", "put", "-b", "256", "-f", str(tmp_path / "upload.bin")],
        served.uri("/store"),
    )
    assert put.returncode == 0, put.stderr
    assert served.store.body == upload  # Block1, 256-byte blocks
    again = await libcoap_client(
        program, [*theirs, "-o", str(tmp_path / "again.bin")], served.uri("/store")
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.bin").read_bytes() == upload
    observed = await libcoap_client(program, [*theirs, "-s", "2", "-w"], served.uri("/counter"))
    assert observed.returncode == 0, observed.stderr
    values = [int(line) for line in observed.stdout.split()]
    assert len(set(values)) >= 4, observed.stdout  # one change every 0.2 s
    assert values == sorted(values)
    (statistics,) = served.ctx.statistics.dtls
    assert statistics.handshakes_completed == 4
    assert statistics.handshakes_failed == 0


@pytest.mark.parametrize("mode", ["psk", "certificate"])
@pytest.mark.parametrize("program", CLIENTS)
async def test_libcoap_client_against_our_server(
    program: str, mode: str, pki: Pki, tmp_path: Path
) -> None:
    chosen = client_modes(pki, tmp_path)[mode]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(chosen.ours) as served:
            await exercise_our_server(program, chosen.theirs, served, tmp_path)
    peer = served.store.peers[0]
    assert peer is not None
    if mode == "psk":
        assert peer.psk_identity == IDENTITY
    else:
        assert peer.certificate_subject is not None


async def test_libcoap_gnutls_rpk_client_against_our_server(tmp_path: Path) -> None:
    client_key = key_file(tmp_path / "client.pem")
    server_key = ec.generate_private_key(ec.SECP256R1())
    credentials = rpk_credentials(server_key, client_key, require_client_auth=True)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(credentials) as served:
            arguments = ["-M", str(tmp_path / "client.pem")]
            await exercise_our_server("coap-client-gnutls", arguments, served, tmp_path)
    peer = served.store.peers[0]
    assert peer is not None
    assert peer.rpk_fingerprint == rpk_fingerprint(spki_der(client_key.public_key()))


@pytest.mark.parametrize("program", CLIENTS)
async def test_a_libcoap_client_with_a_wrong_key_is_refused(program: str) -> None:
    credentials = DtlsCredentials(psk_table={IDENTITY: KEY})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(credentials) as served:
            refused = await libcoap_client(
                program, ["-u", IDENTITY.decode(), "-k", "not the key"], served.uri("/store")
            )
            (statistics,) = served.ctx.statistics.dtls
    assert LARGE not in refused.stdout
    assert served.store.served == 0
    assert statistics.handshakes_failed >= 1
    assert statistics.handshakes_completed == 0


# -- our client against libcoap's servers ---------------------------------------------------------


def server_modes(pki: Pki, directory: Path) -> dict[str, tuple[list[str], DtlsCredentials]]:
    files = pem_files(pki, directory)
    return {
        "psk": (
            ["-k", KEY.decode(), "-h", "CoAP"],
            DtlsCredentials(psk_identity=IDENTITY, psk=KEY),
        ),
        "certificate": (
            [
                "-c",
                str(files / "server.pem"),
                "-j",
                str(files / "server.key"),
                "-C",
                str(files / "ca.pem"),
            ],
            pki.credentials(pki.client),
        ),
    }


async def exercise_libcoap_server(ctx: Context, port: int) -> None:
    base = f"coaps://[::1]:{port}"
    index = await ctx.get(f"{base}/")
    assert index.code is Code.CONTENT
    assert index.payload.startswith(LIBCOAP_INDEX_PREFIX)
    body = random.Random(11).randbytes(20_000)
    assert (await ctx.put(f"{base}/example_data", body)).code in (Code.CHANGED, Code.CREATED)
    assert (await ctx.get(f"{base}/example_data")).payload == body
    async with ctx.observe(f"{base}/time") as notifications:
        seen = []
        async for notification in notifications:
            seen.append(notification.payload)
            if len(seen) == 2:
                break
    assert seen[0] != seen[1]  # /time changes every second
    (statistics,) = ctx.statistics.dtls
    assert statistics.handshakes_completed == 1  # one session for everything


@pytest.mark.parametrize("mode", ["psk", "certificate"])
@pytest.mark.parametrize("program", SERVERS)
async def test_our_client_against_libcoap_server(
    program: str, mode: str, pki: Pki, tmp_path: Path
) -> None:
    arguments, credentials = server_modes(pki, tmp_path)[mode]
    with trio.fail_after(TEST_TIMEOUT), libcoap_server(program, arguments) as server:
        async with open_context(dtls=credentials) as ctx:
            await exercise_libcoap_server(ctx, server.port)


async def test_our_rpk_client_against_libcoap_gnutls_server(tmp_path: Path) -> None:
    server_key = key_file(tmp_path / "server.pem")
    credentials = rpk_credentials(ec.generate_private_key(ec.SECP256R1()), server_key)
    arguments = ["-M", str(tmp_path / "server.pem")]
    with trio.fail_after(TEST_TIMEOUT), libcoap_server("coap-server-gnutls", arguments) as server:
        async with open_context(dtls=credentials) as ctx:
            await exercise_libcoap_server(ctx, server.port)
            response = await ctx.get(f"coaps://[::1]:{server.port}/")
    assert response.remote.peer.rpk_fingerprint == rpk_fingerprint(
        spki_der(server_key.public_key())
    )


@pytest.mark.parametrize("program", SERVERS)
async def test_leaving_our_context_closes_the_libcoap_session(program: str, tmp_path: Path) -> None:
    """libcoap's log (``-v 7``) shows the close_notify and the session it ended."""
    log = tmp_path / "server.log"
    credentials = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)
    with (
        trio.fail_after(TEST_TIMEOUT),
        libcoap_server(program, ["-k", KEY.decode()], log=log) as server,
    ):
        async with open_context(dtls=credentials) as ctx:
            assert (await ctx.get(f"coaps://[::1]:{server.port}/")).code is Code.CONTENT
            assert "session disconnected" not in log.read_text()
        (statistics,) = ctx.statistics.dtls
        assert statistics.close_notify_sent == 1
        text = ""
        for _ in range(100):  # up to 5 s for libcoap to log it
            text = log.read_text(errors="replace")
            if "session disconnected" in text:
                break
            await trio.sleep(0.05)
    assert "DTLS: session disconnected" in text
    if program == "coap-server-openssl":
        assert "alert read:warning:close notify" in text


async def test_our_client_closes_our_server_session_over_udp() -> None:
    """Over real loopback UDP: our server's statistics count our client's close_notify."""
    served = Site()
    served.add(["store"], Store())
    with trio.fail_after(TEST_TIMEOUT):
        async with open_context(
            site=served,
            dtls_bind=("::1", 0),
            dtls=DtlsCredentials(psk_table={IDENTITY: KEY}),
        ) as srv:
            (address,) = srv.dtls_addresses
            async with open_context(dtls=DtlsCredentials(psk_identity=IDENTITY, psk=KEY)) as client:
                assert (await client.get(f"{address}/store")).payload == LARGE
            (statistics,) = srv.statistics.dtls
            for _ in range(100):
                if statistics.close_notify_received:
                    break
                await trio.sleep(0.05)
                (statistics,) = srv.statistics.dtls
            assert statistics.close_notify_received == 1
            assert statistics.sessions == 0
            (client_side,) = client.statistics.dtls
            assert client_side.close_notify_sent == 1


@pytest.mark.parametrize("program", SERVERS)
async def test_a_wrong_key_against_libcoap_fails_typed(program: str) -> None:
    wrong = DtlsCredentials(psk_identity=IDENTITY, psk=b"not the key")
    limits = DtlsLimits(handshake_timeout=3.0)
    with trio.fail_after(TEST_TIMEOUT), libcoap_server(program, ["-k", KEY.decode()]) as server:
        async with open_context(dtls=wrong, dtls_limits=limits) as ctx:
            with pytest.raises((HandshakeTimeoutError, DtlsAlertError)) as failed:
                await ctx.get(f"coaps://[::1]:{server.port}/")
    # libcoap drops a Finished it cannot decrypt, or refuses it with decrypt_error.
    error = failed.value
    assert isinstance(error, HandshakeTimeoutError) or (
        isinstance(error, DtlsAlertError) and error.description == AlertDescription.DECRYPT_ERROR
    )


@pytest.mark.parametrize("program", SERVERS)
async def test_an_untrusted_libcoap_certificate_fails_typed(
    program: str, pki: Pki, tmp_path: Path
) -> None:
    arguments, _ = server_modes(pki, tmp_path)["certificate"]
    stranger = Pki()
    with trio.fail_after(TEST_TIMEOUT), libcoap_server(program, arguments) as server:
        async with open_context(dtls=stranger.credentials(stranger.client)) as ctx:
            with pytest.raises(HandshakeError) as refused:
                await ctx.get(f"coaps://[::1]:{server.port}/")
    assert refused.value.alert == AlertDescription.UNKNOWN_CA
