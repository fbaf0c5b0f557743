"""EDHOC then OSCORE driven by credentials files, against aiocoap 0.4.17, both ways.

The same ``edhoc-oscore`` entries (aiocoap's format, in diagnostic notation:
``.diag`` files, the private keys in ``.cosekey`` files readable by their
owner only) are read by both stacks:

- ``aiocoap-client --credentials client.diag`` (a process) against
  ``coap-trio serve plugtest --credentials server.diag`` (a process): GET
  and POST, authenticated both ways, and with a client that is
  unauthenticated (``{"unauthenticated": true}``, its file plain JSON);
- ``coap-trio get/post --credentials client.diag`` against
  ``aiocoap-fileserver --credentials server.diag`` (GET) and against
  aiocoap's server library with the server file loaded as aiocoap's tools
  load it (GET and POST, with and without the combined request);
- a server file whose peer is unknown: EDHOC is refused.

Every process is stopped in a ``finally``; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from interop_helpers import aiocoap_server, free_port

from coap_trio.protocol.oscore.edhoc import EdhocCredentials

TIMEOUT = 30.0
BIN = Path(sys.executable).parent
HOST = "::1"


def edn(value: Any) -> str:
    """``value`` in diagnostic notation, as aiocoap-keygen prints credentials."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{edn(k)}: {edn(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


class Party:
    """One side's key (in its own key file) and credential."""

    def __init__(self, directory: Path, name: str, kid: bytes) -> None:
        self.edhoc = EdhocCredentials.generate(kid, name)
        self.key_file = directory / f"{name}.cosekey"
        descriptor = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "wb") as file:
            file.write(cbor2.dumps({1: 2, -1: 1, -4: self.edhoc.private_key}))

    @property
    def ccs(self) -> dict[Any, Any]:
        claims: dict[Any, Any] = cbor2.loads(self.edhoc.credential)
        return {14: claims}

    def own(self, style: str = "by-key-id") -> dict[str, Any]:
        return {
            "suite": 2,
            "method": 3,
            "own_cred_style": style,
            "own_cred": self.ccs,
            "private_key_file": self.key_file.name,
        }


def write(path: Path, entries: dict[str, dict[str, Any]]) -> Path:
    path.write_text(
        "{\n"
        + ",\n".join(f"  {edn(k)}: {{{edn('edhoc-oscore')}: {edn(v)}}}" for k, v in entries.items())
        + "\n}\n"
    )
    return path


@pytest.fixture
def parties(tmp_path: Path) -> tuple[Party, Party]:
    return Party(tmp_path, "client", b"\x0a"), Party(tmp_path, "server", b"\x0b")


async def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, cwd=cwd
        )


@asynccontextmanager
async def process(
    argv: list[str], cwd: Path, ready: bytes | None, stderr: Any = subprocess.DEVNULL
) -> AsyncIterator[Any]:
    """A server process; waits for ``ready`` on its stdout (None: for a CoAP ping)."""
    child = await trio.lowlevel.open_process(
        argv,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        with trio.fail_after(TIMEOUT):
            seen = b""
            while ready is not None and ready not in seen:
                chunk = await child.stdout.receive_some(4096)
                assert chunk, f"the server ended before it was ready: {seen.decode()}"
                seen += chunk
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await child.wait()
        if child.returncode is None:
            child.kill()
            await child.wait()


async def wait_for_ping(port: int) -> None:
    from coap_trio.context import open_context

    async with open_context() as ctx:
        with trio.fail_after(TIMEOUT):
            for _ in range(200):
                with trio.move_on_after(0.5):
                    await ctx.ping(f"coap://[{HOST}]:{port}")
                    return
                await trio.sleep(0.05)


# -- aiocoap-client against coap-trio serve ------------------------------------------------------


@asynccontextmanager
async def coap_trio_serve(tmp_path: Path, credentials: Path, port: int) -> AsyncIterator[Path]:
    """``coap-trio serve plugtest -v``; yields the file its trace goes to."""
    argv = [sys.executable, "-m", "coap_trio", "serve", "plugtest", "-v"]
    argv += ["--bind", f"[{HOST}]:{port}", "--credentials", str(credentials)]
    trace = tmp_path / "trace.txt"
    with trace.open("wb") as file:
        async with process(argv, tmp_path, b"listening on ", stderr=file):
            yield trace


def exchanges(trace: Path) -> tuple[int, int, int]:
    """Requests to /.well-known/edhoc, requests with two options and no Uri-Path in the
    clear (the EDHOC + OSCORE request: its OSCORE and EDHOC options), and plain ones
    to /test."""
    lines = [line for line in trace.read_text().splitlines() if line.startswith("<- ")]
    edhoc = sum("/.well-known/edhoc" in line for line in lines)
    combined = sum("0.02 POST" in line and "+2 opt" in line and " /" not in line for line in lines)
    plain = sum(" /test" in line for line in lines)
    return edhoc, combined, plain


async def test_aiocoap_client_files_against_coap_trio_serve_files(
    tmp_path: Path, parties: tuple[Party, Party]
) -> None:
    client, server = parties
    port = free_port(HOST, tcp_too=False)
    origin = f"coap://[{HOST}]:{port}"
    server_file = write(
        tmp_path / "server.diag",
        {
            f"{origin}/*": server.own(),
            ":client": {"suite": 2, "method": 3, "peer_cred": client.ccs},
        },
    )
    client_file = write(
        tmp_path / "client.diag", {f"{origin}/*": {**client.own(), "peer_cred": server.ccs}}
    )
    async with coap_trio_serve(tmp_path, server_file, port) as trace:
        aiocoap_client = [str(BIN / "aiocoap-client"), "--credentials", str(client_file)]
        got = await run([*aiocoap_client, f"{origin}/test"], tmp_path)
        assert got.returncode == 0, got.stderr.decode()[-2000:]
        assert got.stdout.strip(), got.stderr.decode()[-2000:]
        posted = await run(
            [*aiocoap_client, "-m", "POST", "--payload", "over EDHOC", f"{origin}/test"],
            tmp_path,
        )
        assert posted.returncode == 0, posted.stderr.decode()[-2000:]
        assert b"new resource: /location1/location2/location3" in posted.stderr
        await trio.sleep(0.2)  # (the trace of the last exchange written)
    # Each aiocoap-client process ran EDHOC (message_1 to /.well-known/edhoc), then sent
    # its request protected, message_3 in front (RFC 9668): nothing went to /test in the clear.
    assert exchanges(trace) == (2, 2, 0)


async def test_unauthenticated_aiocoap_client_json_file_against_coap_trio_serve(
    tmp_path: Path, parties: tuple[Party, Party]
) -> None:
    """Trust on first use both ways: the client's file has no integer keys (plain JSON)."""
    _, server = parties
    port = free_port(HOST, tcp_too=False)
    origin = f"coap://[{HOST}]:{port}"
    anyone = {"unauthenticated": True}
    server_file = write(
        tmp_path / "server.diag",
        {
            f"{origin}/*": server.own("by-value"),
            ":anyone": {"suite": 2, "method": 3, "peer_cred": anyone},
        },
    )
    client_file = tmp_path / "client.json"
    client_file.write_text(
        f'{{"{origin}/*": {{"edhoc-oscore": {{"suite": 2, "method": 3, '
        '"own_cred": {"unauthenticated": true}, "peer_cred": {"unauthenticated": true}}}}'
    )
    async with coap_trio_serve(tmp_path, server_file, port):
        got = await run(
            [str(BIN / "aiocoap-client"), "--credentials", str(client_file), f"{origin}/test"],
            tmp_path,
        )
        assert got.returncode == 0, got.stderr.decode()[-2000:]
        assert got.stdout.strip()
        # And ours with the same JSON file.
        ours = await run(
            [
                sys.executable,
                "-m",
                "coap_trio",
                "get",
                "--credentials",
                str(client_file),
                f"{origin}/test",
            ],
            tmp_path,
        )
        assert ours.returncode == 0, ours.stderr.decode()
        assert ours.stdout.strip()


# -- coap-trio get/post against aiocoap's servers -----------------------------------------------


async def test_coap_trio_client_files_against_aiocoap_fileserver_files(
    tmp_path: Path, parties: tuple[Party, Party]
) -> None:
    client, server = parties
    port = free_port(HOST, tcp_too=False)
    origin = f"coap://[{HOST}]:{port}"
    served = tmp_path / "served"
    served.mkdir()
    (served / "greeting.txt").write_text("hello over EDHOC from aiocoap's file server\n")
    server_file = write(
        tmp_path / "server.diag",
        {
            f"{origin}/*": server.own(),
            ":client": {"suite": 2, "method": 3, "peer_cred": client.ccs},
        },
    )
    client_file = write(
        tmp_path / "client.diag", {f"{origin}/*": {**client.own(), "peer_cred": server.ccs}}
    )
    argv = [str(BIN / "aiocoap-fileserver"), "--bind", f"[{HOST}]:{port}"]
    argv += ["--credentials", str(server_file), str(served)]
    async with process(argv, tmp_path, None):
        await wait_for_ping(port)
        got = await run(
            [
                sys.executable,
                "-m",
                "coap_trio",
                "get",
                "--credentials",
                str(client_file),
                f"{origin}/greeting.txt",
            ],
            tmp_path,
        )
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout.strip() == b"hello over EDHOC from aiocoap's file server"


def aiocoap_site() -> Any:
    import aiocoap
    import aiocoap.resource

    class Echo(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            claims = ",".join(request.remote.authenticated_claims)
            return aiocoap.Message(code=aiocoap.CONTENT, payload=f"hello {claims}".encode())

        async def render_post(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload[::-1])

    site = aiocoap.resource.Site()
    site.add_resource(["echo"], Echo())
    return site


def load_like_aiocoap(credentials: Any, file: Path) -> None:
    """Load ``file`` into aiocoap's map as aiocoap's server tools do (aiocoap.cli.common)."""
    import cbor_diag

    credentials.load_from_dict(cbor2.loads(cbor_diag.diag2cbor(file.read_text())))


@pytest.mark.parametrize("combined", [True, False], ids=["combined", "message-4"])
async def test_coap_trio_client_files_against_aiocoap_server_files(
    tmp_path: Path,
    parties: tuple[Party, Party],
    combined: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiocoap.credentials
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

    client, server = parties
    monkeypatch.chdir(tmp_path)  # aiocoap reads private_key_file from the working directory
    credentials = aiocoap.credentials.CredentialsMap()
    site = OscoreSiteWrapper(aiocoap_site(), credentials)
    coap_trio = [sys.executable, "-m", "coap_trio"]
    async with aiocoap_server(HOST, site=site, server_credentials=credentials) as peer:
        origin = f"coap://[{HOST}]:{peer.port}"
        server_file = write(
            tmp_path / "server.diag",
            {
                f"{origin}/*": server.own(),
                ":client": {"suite": 2, "method": 3, "peer_cred": client.ccs},
            },
        )
        load_like_aiocoap(credentials, server_file)
        entry = {**client.own(), "peer_cred": server.ccs, "use_combined_edhoc": combined}
        client_file = write(tmp_path / "client.diag", {f"{origin}/*": entry})
        uri = f"{origin}/echo"
        got = await run([*coap_trio, "get", "--credentials", str(client_file), uri], tmp_path)
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout.strip() == b"hello :client"
        posted = await run(
            [*coap_trio, "post", "--credentials", str(client_file), "--payload", "EDHOC", uri],
            tmp_path,
        )
        assert posted.returncode == 0, posted.stderr.decode()
        assert posted.stdout.strip() == b"COHDE"


async def test_a_server_file_without_the_client_refuses_its_edhoc(
    tmp_path: Path, parties: tuple[Party, Party]
) -> None:
    client, server = parties
    stranger = Party(tmp_path, "stranger", b"\x0c")
    port = free_port(HOST, tcp_too=False)
    origin = f"coap://[{HOST}]:{port}"
    server_file = write(
        tmp_path / "server.diag",
        {
            f"{origin}/*": server.own(),
            ":client": {"suite": 2, "method": 3, "peer_cred": stranger.ccs},
        },
    )
    client_file = write(
        tmp_path / "client.diag", {f"{origin}/*": {**client.own(), "peer_cred": server.ccs}}
    )
    async with coap_trio_serve(tmp_path, server_file, port):
        got = await run(
            [str(BIN / "aiocoap-client"), "--credentials", str(client_file), f"{origin}/test"],
            tmp_path,
        )
        assert b"4.00" in got.stdout + got.stderr or got.returncode != 0
        ours = await run(
            [
                sys.executable,
                "-m",
                "coap_trio",
                "get",
                "--credentials",
                str(client_file),
                f"{origin}/test",
            ],
            tmp_path,
        )
        assert ours.returncode != 0
        assert b"EDHOC" in ours.stderr or b"4.00" in ours.stderr
