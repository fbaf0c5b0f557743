"""aiocoap's DTLS client (tinydtls, through DTLSSocket) against our coaps:// server.

``aiocoap-client --credentials FILE`` (a process, aiocoap 0.4.17 with its
``tinydtls`` client transport) against a Context opened with ``dtls_bind``
on ``::1`` (port 0), PSK: the credentials file in aiocoap's format
(``{"coaps://[::1]:PORT/*": {"dtls": {"psk": {"ascii": ...},
"client-identity": {"ascii": ...}}}}``). GET, PUT, a block-wise GET
(Block2, 5,000 bytes) and a block-wise PUT (Block1, 3,000 bytes); the
close_notify tinydtls sends when the client exits; a wrong key refused,
nothing served.

DTLSSocket has no wheel: ``scripts/test`` installs autoconf, automake and
libtool and pip builds it with the ``test`` extra (about 100 s on a fresh
machine; docs/testing.md). A missing DTLSSocket is an error here, not a
skip. Every process is bounded in time.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiocoap.defaults
import trio
from dtls_helpers import IDENTITY, KEY

from coap_trio import (
    Code,
    Context,
    DtlsCredentials,
    DtlsLimits,
    DtlsPeer,
    Message,
    Resource,
    Site,
    open_context,
)

AIOCOAP_CLIENT = str(Path(sys.executable).parent / "aiocoap-client")
TIMEOUT = 60.0
LARGE = random.Random(21).randbytes(5000)
UPLOAD = random.Random(22).randbytes(3000)


class Store(Resource):
    def __init__(self, body: bytes) -> None:
        self.body = body
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


@asynccontextmanager
async def our_server(**options: object) -> AsyncIterator[tuple[Context, Store, Store]]:
    hello, large = Store(b"hello over DTLS"), Store(LARGE)
    site = Site()
    site.add(["hello"], hello)
    site.add(["large"], large)
    async with open_context(
        site=site,
        dtls_bind=("::1", 0),
        dtls=DtlsCredentials(psk_table={IDENTITY: KEY}, psk_hint=b"CoAP"),
        **options,  # type: ignore[arg-type]
    ) as ctx:
        yield ctx, hello, large


def credentials_file(directory: Path, port: int, key: bytes = KEY) -> Path:
    path = directory / "credentials.json"
    entry = {"psk": {"ascii": key.decode()}, "client-identity": {"ascii": IDENTITY.decode()}}
    path.write_text(json.dumps({f"coaps://[::1]:{port}/*": {"dtls": entry}}))
    return path


async def aiocoap_client(credentials: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30.0):
        return await trio.run_process(
            [AIOCOAP_CLIENT, "--credentials", str(credentials), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def test_aiocoap_has_its_dtls_client_transport() -> None:
    assert aiocoap.defaults.dtls_missing_modules() == []
    assert "tinydtls" in list(aiocoap.defaults.get_default_clienttransports())


async def test_aiocoap_client_against_our_server(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with our_server() as (ctx, hello, large):
            port = ctx.dtls_addresses[0].port
            base = f"coaps://[::1]:{port}"
            credentials = credentials_file(tmp_path, port)
            got = await aiocoap_client(credentials, f"{base}/hello")
            assert got.returncode == 0, got.stderr.decode()
            assert got.stdout.strip() == b"hello over DTLS"
            put = await aiocoap_client(
                credentials, "-m", "PUT", "--payload", "changed", f"{base}/hello"
            )
            assert put.returncode == 0, put.stderr.decode()
            assert hello.body == b"changed"
            block2 = await aiocoap_client(credentials, f"{base}/large")
            assert block2.returncode == 0, block2.stderr.decode()
            assert block2.stdout == LARGE  # Block2 (raw bytes: stdout is no terminal)
            (tmp_path / "upload.bin").write_bytes(UPLOAD)
            block1 = await aiocoap_client(
                credentials,
                "-m",
                "PUT",
                "--payload",
                f"@{tmp_path / 'upload.bin'}",
                f"{base}/large",
            )
            assert block1.returncode == 0, block1.stderr.decode()
            assert large.body == UPLOAD  # Block1
            assert ctx.statistics.blockwise_uploads_completed == 1
            (statistics,) = ctx.statistics.dtls
            peers = hello.peers + large.peers
    assert statistics.handshakes_completed == 4  # one aiocoap-client process each
    assert statistics.handshakes_failed == 0
    assert statistics.records_rejected == 0
    assert peers
    assert all(peer is not None and peer.psk_identity == IDENTITY for peer in peers)


async def test_aiocoap_client_with_a_wrong_key_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with our_server(dtls_limits=DtlsLimits(handshake_timeout=10.0)) as (ctx, hello, _):
            port = ctx.dtls_addresses[0].port
            credentials = credentials_file(tmp_path, port, b"not the key")
            got = await aiocoap_client(credentials, f"coaps://[::1]:{port}/hello")
            assert got.returncode != 0
            assert b"hello over DTLS" not in got.stdout
            (statistics,) = ctx.statistics.dtls
    assert statistics.handshakes_completed == 0
    assert statistics.handshakes_failed == 1
    assert hello.served == 0
