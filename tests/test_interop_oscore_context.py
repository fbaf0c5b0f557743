"""OSCORE end to end against aiocoap 0.4.17, on loopback, both ways.

- our Context (``open_context(oscore=...)``) against aiocoap's server with
  ``server_credentials`` and its ``OscoreSiteWrapper``, in a thread: GET,
  POST, PUT, an observation, Block2 and Block1 transfers;
- ``aiocoap-client --credentials`` (a process) against our server (a
  Context in the test, its resources requiring OSCORE): the same;
- the command line: ``coap-trio get --credentials`` against aiocoap's
  server and ``aiocoap-client`` against ``coap-trio serve plugtest
  --credentials``.

Both sides read credentials files in aiocoap's format, each with its own
security context directory (one Master Secret, Sender and Recipient IDs
swapped). Every process is stopped in a ``finally``; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from interop_helpers import aiocoap_observable_site, aiocoap_server

from coap_trio.context import Context, open_context
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.observable import ObservableResource
from coap_trio.oscore_credentials import load_credentials
from coap_trio.remote import OscoreRemote
from coap_trio.resource import Resource, Site

SECRET = "0102030405060708090a0b0c0d0e0f10"
SALT = "9e7ca92223786340"
CLIENT_ID = "01"
SERVER_ID = ""
LARGE = bytes(range(256)) * 12  # 3 KiB: three Block2 / Block1 blocks
TIMEOUT = 30.0
AIOCOAP_CLIENT = str(Path(sys.executable).parent / "aiocoap-client")


def write_context(directory: Path, sender: str, recipient: str) -> None:
    directory.mkdir()
    settings = {
        "sender-id_hex": sender,
        "recipient-id_hex": recipient,
        "secret_hex": SECRET,
        "salt_hex": SALT,
    }
    (directory / "settings.json").write_text(json.dumps(settings))


@pytest.fixture
def credentials(tmp_path: Path) -> dict[str, Path]:
    """Credentials files: ``client`` (for coap://[::1]...) and ``server`` (any URI)."""
    write_context(tmp_path / "client-context", CLIENT_ID, SERVER_ID)
    write_context(tmp_path / "server-context", SERVER_ID, CLIENT_ID)
    files = {}
    for role in ("client", "server"):
        file = tmp_path / f"{role}.json"
        context = str(tmp_path / f"{role}-context") + "/"
        pattern = "coap://[::1]*" if role == "client" else "coap://*"
        file.write_text(json.dumps({pattern: {"oscore": {"basedir": context}}}))
        files[role] = file
    return files


# -- our client, aiocoap's server ------------------------------------------------------------


def aiocoap_oscore_site(server_file: Path) -> tuple[Any, Any, Any]:
    """aiocoap's OscoreSiteWrapper around /text, /echo (POST), /store (PUT/GET), /counter."""
    import aiocoap
    import aiocoap.credentials
    import aiocoap.resource
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

    class EchoPost(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_post(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload[::-1])

    class Store(aiocoap.resource.Resource):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.payload = LARGE

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)

        async def render_put(self, request: Any) -> Any:
            self.payload = request.payload
            return aiocoap.Message(code=aiocoap.CHANGED)

    site, counter = aiocoap_observable_site(period=0.1)
    site.add_resource(["echo"], EchoPost())
    site.add_resource(["store"], Store())
    server_credentials = aiocoap.credentials.CredentialsMap()
    server_credentials.load_from_dict(json.loads(server_file.read_text()))
    return OscoreSiteWrapper(site, server_credentials), server_credentials, counter


async def test_our_client_against_aiocoaps_oscore_server(credentials: dict[str, Path]) -> None:
    site, server_credentials, counter = aiocoap_oscore_site(credentials["server"])
    with trio.fail_after(TIMEOUT):
        async with (
            aiocoap_server("::1", site=site, server_credentials=server_credentials) as server,
            open_context(oscore=load_credentials(credentials["client"])) as ctx,
        ):
            base = server.uri("")
            response = await ctx.post(f"{base}/echo", b"protected payload")
            assert (response.code, response.payload) == (Code.CHANGED, b"daolyap detcetorp")
            # Block2: aiocoap slices the 3 KiB representation, each block protected.
            response = await ctx.get(f"{base}/store")
            assert (response.code, response.payload) == (Code.CONTENT, LARGE)
            # Block1 up, then Block2 down again.
            body = bytes(reversed(LARGE)) + b"tail"
            response = await ctx.put(f"{base}/store", body)
            assert response.code == Code.CHANGED
            response = await ctx.get(f"{base}/store")
            assert response.payload == body
            values = []
            async with ctx.observe(f"{base}/counter") as notifications:
                async for notification in notifications:
                    assert notification.code == Code.CONTENT
                    values.append(int(notification.payload))
                    if len(values) == 3:
                        break
            assert values == sorted(values)
            assert len(set(values)) == 3
            # The protected deregistration (GET Observe=1) ended it at aiocoap.
            with trio.fail_after(5):
                for _ in range(500):
                    if not counter.observers:
                        break
                    await trio.sleep(0.01)
            assert counter.observers == 0
            statistics = ctx.statistics
            assert statistics.oscore is not None
            assert statistics.oscore.responses_verified >= 10
            assert not any(statistics.oscore.failures.values())


# -- aiocoap's client, our server ------------------------------------------------------------


class Hello(Resource):
    requires_oscore = True

    def __init__(self) -> None:
        self.clients: list[bytes] = []

    async def render_get(self, request: Message) -> Message:
        remote = request.remote
        assert isinstance(remote, OscoreRemote)
        self.clients.append(remote.recipient_id)
        return Message(
            code=Code.CONTENT, payload=b"hello client " + remote.recipient_id.hex().encode()
        )

    async def render_post(self, request: Message) -> Message:
        return Message(code=Code.CHANGED, payload=request.payload[::-1])


class Store(Resource):
    requires_oscore = True

    def __init__(self) -> None:
        self.payload = LARGE

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=self.payload)

    async def render_put(self, request: Message) -> Message:
        self.payload = request.payload
        return Message(code=Code.CHANGED)


class Ticker(ObservableResource):
    requires_oscore = True

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"tick %d" % self.value)


async def tick(ticker: Ticker) -> None:
    for _ in range(10_000):
        await trio.sleep(0.1)
        ticker.value += 1
        ticker.updated_state()


async def aiocoap_client(*args: str, credentials: Path) -> subprocess.CompletedProcess[bytes]:
    result = await trio.run_process(
        [AIOCOAP_CLIENT, "--credentials", str(credentials), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result


#: aiocoap's client library observing ``argv[2]`` with the credentials file
#: ``argv[1]``: prints each payload on a line until ``argv[3]`` notifications
#: came. (aiocoap-client 0.4.17 cancels its observation after the first
#: response, so its command line cannot observe.)
AIOCOAP_OBSERVER = """
import asyncio, json, sys
import aiocoap

async def main():
    context = await aiocoap.Context.create_client_context()
    context.client_credentials.load_from_dict(json.load(open(sys.argv[1])))
    request = context.request(aiocoap.Message(code=aiocoap.GET, uri=sys.argv[2], observe=0))
    print((await request.response).payload.decode(), flush=True)
    count = 0
    async for notification in request.observation:
        print(notification.payload.decode(), flush=True)
        count += 1
        if count == int(sys.argv[3]):
            break
    request.observation.cancel()
    await context.shutdown()

asyncio.run(asyncio.wait_for(main(), 20))
"""


@pytest.fixture
async def our_server(credentials: dict[str, Path]) -> AsyncIterator[tuple[Context, Site, str]]:
    site = Site()
    site.add(["hello"], Hello())
    site.add(["store"], Store())
    ticker = Ticker()
    site.add(["ticker"], ticker)
    async with (
        open_context(
            bind=("::1", 0), site=site, oscore=load_credentials(credentials["server"])
        ) as ctx,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(tick, ticker)
        yield ctx, site, f"coap://[::1]:{ctx.addresses[0].port}"
        nursery.cancel_scope.cancel()


async def test_aiocoap_client_against_our_oscore_server(
    credentials: dict[str, Path], our_server: tuple[Context, Site, str]
) -> None:
    ctx, site, base = our_server
    client_file = credentials["client"]
    with trio.fail_after(TIMEOUT * 2):
        result = await aiocoap_client(f"{base}/hello", credentials=client_file)
        assert result.stdout.strip() == b"hello client 01"
        result = await aiocoap_client(
            "-m", "POST", "--payload", "abc", f"{base}/hello", credentials=client_file
        )
        assert result.stdout.strip() == b"cba"
        result = await aiocoap_client(f"{base}/store", credentials=client_file)
        # Block2: aiocoap fetched the three blocks (it writes binary payloads as they are).
        assert LARGE[:16] in result.stdout
        upload = credentials["client"].parent / "upload.bin"
        upload.write_bytes(b"x" * 3000)
        await aiocoap_client(
            "-m", "PUT", "--payload", f"@{upload}", f"{base}/store", credentials=client_file
        )
        store = site.route(Message(code=Code.GET, uri_path=("store",)))[0]
        assert isinstance(store, Store)
        assert store.payload == b"x" * 3000
        observed = await trio.run_process(
            [sys.executable, "-c", AIOCOAP_OBSERVER, str(client_file), f"{base}/ticker", "3"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert observed.returncode == 0, observed.stderr.decode()
        ticks = [int(line.split()[1]) for line in observed.stdout.splitlines()]
        assert len(ticks) == 4
        assert ticks == sorted(set(ticks))
        statistics = ctx.statistics
        assert statistics.oscore is not None
        assert not any(statistics.oscore.failures.values())
        # 2 + 3 Block2 + 3 Block1 requests + the registration, each verified
        assert statistics.oscore.requests_verified >= 9
        # A plain request is refused before any handler.
        plain = await trio.run_process(
            [AIOCOAP_CLIENT, f"{base}/hello"], capture_stdout=True, capture_stderr=True, check=False
        )
        assert b"4.01" in plain.stdout + plain.stderr
        assert ctx.statistics.oscore_refused == 1


# -- the command line --------------------------------------------------------------------------


async def test_coap_trio_get_with_credentials_against_aiocoap(
    credentials: dict[str, Path],
) -> None:
    site, server_credentials, _ = aiocoap_oscore_site(credentials["server"])
    with trio.fail_after(TIMEOUT):
        async with aiocoap_server(
            "::1", site=site, server_credentials=server_credentials
        ) as server:
            result = await trio.run_process(
                [
                    sys.executable,
                    "-m",
                    "coap_trio",
                    "post",
                    "--credentials",
                    str(credentials["client"]),
                    "--payload",
                    "from the command line",
                    server.uri("/echo"),
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() == b"enil dnammoc eht morf"


async def test_aiocoap_client_against_coap_trio_serve_with_credentials(
    credentials: dict[str, Path],
) -> None:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "coap_trio",
            "serve",
            "plugtest",
            "--bind",
            "[::1]:0",
            "--credentials",
            str(credentials["server"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the server ended before listening"
                line += chunk
            base = line.decode().split("listening on ", 1)[1].strip()
            result = await aiocoap_client(f"{base}/test", credentials=credentials["client"])
            assert result.stdout.strip()
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run_coap_trio(*argv: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "coap_trio", *argv],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_the_command_line_reports_a_response_that_does_not_verify(
    credentials: dict[str, Path], tmp_path: Path
) -> None:
    """Our server knows another key for Sender ID 01: it answers 4.00 in the clear."""
    write_context(tmp_path / "other", CLIENT_ID, SERVER_ID)
    settings = json.loads((tmp_path / "other" / "settings.json").read_text())
    settings["secret_hex"] = "ff" * 16
    (tmp_path / "other" / "settings.json").write_text(json.dumps(settings))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"coap://[::1]*": {"oscore": {"basedir": "other/"}}}))
    site = Site()
    site.add(["hello"], Hello())
    async with open_context(
        bind=("::1", 0), site=site, oscore=load_credentials(credentials["server"])
    ) as ctx:
        base = f"coap://[::1]:{ctx.addresses[0].port}"
        result = await run_coap_trio("get", "--credentials", str(wrong), f"{base}/hello")
        assert result.returncode == 7, result.stderr
        assert result.stderr.decode().strip() == (
            "coap-trio: protocol error: Response not protected: 4.00 Bad Request: Decryption failed"
        )
        result = await run_coap_trio("get", f"{base}/hello")  # no credentials at all
        assert result.returncode == 3, result.stderr
        assert b"4.01 Unauthorized: OSCORE required" in result.stderr
        assert ctx.statistics.oscore_refused == 2


async def test_unusable_credentials_are_usage_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"coap://*": {"oscore": {"basedir": "missing/"}}}')
    result = await run_coap_trio("get", "--credentials", str(broken), "coap://[::1]:9/")
    assert result.returncode == 2
    assert b"--credentials:" in result.stderr
    assert b"missing" in result.stderr
    result = await run_coap_trio(
        "serve", "plugtest", "--workers", "2", "--credentials", str(broken), "--bind", "[::1]:0"
    )
    assert result.returncode == 2
    assert b"--credentials cannot be used with --workers" in result.stderr


# -- EDHOC then OSCORE, with aiocoap ----------------------------------------------------------


def aiocoap_edhoc_entry(
    own: Any = None, *, peer: bytes | None = None, combined: bool | None = None
) -> dict[Any, Any]:
    """An aiocoap ``edhoc-oscore`` credentials entry (as its EDN files would hold it)."""
    import cbor2

    entry: dict[Any, Any] = {"suite": 2, "method": 3}
    if own is not None:
        entry["own_cred_style"] = "by-key-id"
        entry["own_cred"] = {14: cbor2.loads(own.credential)}
        entry["private_key"] = {1: 2, -1: 1, -4: own.private_key}
    if peer is not None:
        entry["peer_cred"] = {14: cbor2.loads(peer)}
    if combined is not None:
        entry["use_combined_edhoc"] = combined
    return {"edhoc-oscore": entry}


@pytest.mark.parametrize("combined", [True, False], ids=["combined", "message-4"])
async def test_our_edhoc_client_against_aiocoaps_server(combined: bool) -> None:
    import aiocoap
    import aiocoap.credentials
    import aiocoap.resource
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

    from coap_trio.protocol.oscore.edhoc import EdhocCredentials

    class Hello(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=b"hello over EDHOC")

    server_edhoc = EdhocCredentials.generate(b"\x0b", "aiocoap server")
    client_edhoc = EdhocCredentials.generate(
        b"\x0a", "coap_trio client", peers=(server_edhoc.credential,), combined=combined
    )
    site = aiocoap.resource.Site()
    site.add_resource(["hello"], Hello())
    server_credentials = aiocoap.credentials.CredentialsMap()
    with trio.fail_after(TIMEOUT):
        async with (
            aiocoap_server(
                "::1",
                site=OscoreSiteWrapper(site, server_credentials),
                server_credentials=server_credentials,
            ) as server,
            open_context(edhoc=client_edhoc) as ctx,
        ):
            origin = server.uri("").rstrip("/")
            server_credentials.load_from_dict(
                {
                    f"{origin}/*": aiocoap_edhoc_entry(server_edhoc),
                    ":client": aiocoap_edhoc_entry(peer=client_edhoc.credential),
                }
            )
            await ctx.edhoc(origin)
            for _ in range(3):
                response = await ctx.get(f"{origin}/hello")
                assert (response.code, response.payload) == (Code.CONTENT, b"hello over EDHOC")
            statistics = ctx.statistics.oscore
            assert statistics is not None
            assert statistics.responses_verified == 3


#: aiocoap's client library with EDHOC credentials (a CBOR file, argv[1]) GETting
#: argv[2] three times; prints each payload.
AIOCOAP_EDHOC_CLIENT = """
import asyncio, sys
import cbor2
import aiocoap

async def main():
    context = await aiocoap.Context.create_client_context()
    with open(sys.argv[1], "rb") as file:
        context.client_credentials.load_from_dict(cbor2.load(file))
    for _ in range(3):
        request = aiocoap.Message(code=aiocoap.GET, uri=sys.argv[2])
        print((await context.request(request).response).payload.decode(), flush=True)
    await context.shutdown()

asyncio.run(asyncio.wait_for(main(), 20))
"""


@pytest.mark.parametrize("combined", [True, False], ids=["combined", "message-4"])
async def test_aiocoaps_edhoc_client_against_our_server(tmp_path: Path, combined: bool) -> None:
    import cbor2

    from coap_trio.protocol.oscore.edhoc import EdhocCredentials

    client_edhoc = EdhocCredentials.generate(b"\x0a", "aiocoap client")
    server_edhoc = EdhocCredentials.generate(
        b"\x0b", "coap_trio server", peers=(client_edhoc.credential,)
    )
    site = Site()
    hello = Hello()
    site.add(["hello"], hello)
    with trio.fail_after(TIMEOUT):
        async with open_context(bind=("::1", 0), site=site, edhoc=server_edhoc) as ctx:
            origin = f"coap://[::1]:{ctx.addresses[0].port}"
            file = tmp_path / "client-credentials.cbor"
            entry = aiocoap_edhoc_entry(client_edhoc, peer=server_edhoc.credential)
            entry["edhoc-oscore"]["use_combined_edhoc"] = combined
            file.write_bytes(cbor2.dumps({f"{origin}/*": entry}))
            result = await trio.run_process(
                [sys.executable, "-c", AIOCOAP_EDHOC_CLIENT, str(file), f"{origin}/hello"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr.decode()[-3000:]
            statistics = ctx.statistics
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("hello client ") for line in lines)
    # aiocoap 0.4.17's client runs EDHOC again for each request (it keeps no
    # established context between requests): three exchanges, each completed.
    assert statistics.edhoc_completed == 3
    assert statistics.edhoc_refused == 0
    assert statistics.oscore is not None
    assert statistics.oscore.requests_verified == 3
    assert len(hello.clients) == 3
