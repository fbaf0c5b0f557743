"""The proxies against real peers on loopback: libcoap's client and proxy, curl, the command.

* libcoap's ``coap-client-notls -P`` through our forward proxy to
  ``coap-server-notls``, and our client through ``coap-server-notls -P``;
* three libcoap observers through our proxy, one registration at the
  origin (read from the origin's datagrams as they arrived);
* ``curl`` through the HTTP-CoAP cross-proxy to libcoap's server and to a
  coap_trio server: GET, PUT, errors, a 1 MiB body both ways;
* CoAP to an HTTP server (Proxy-Uri ``http://``), and ``coap-trio serve
  proxy`` with ``coap-trio get --proxy``.

Every peer binds port 0 (libcoap: a free port, retried) and is stopped on
exit; every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from interop_helpers import LIBCOAP_INDEX_PREFIX, libcoap_server

from coap_trio import CONTENT, GET, PUT, Code, Message, ObservableResource, Resource, Site
from coap_trio.cli.trace import TracingNetwork
from coap_trio.context import open_context
from coap_trio.proxy import ProxyServer, open_proxy
from coap_trio.transports.udp import UDPNetwork

TEST_TIMEOUT = 30.0
LIBCOAP_CLIENT = "coap-client-notls"
ALLOW = ["*://[::1]", "*://127.0.0.1"]
MIB = bytes(range(256)) * 4096


class Store(Resource):
    def __init__(self) -> None:
        self.body = b"initial"

    async def render_get(self, request: Message) -> Message:
        return Message(payload=self.body, max_age=0)

    async def render_put(self, request: Message) -> Message:
        self.body = request.payload
        return Message(code=Code.CHANGED)


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"%d" % self.value)


@contextlib.asynccontextmanager
async def origin(lines: list[str] | None = None) -> AsyncIterator[tuple[str, Store, Counter]]:
    """A coap_trio server on [::1]; ``lines`` collects its datagrams, decoded."""
    site = Site()
    store, counter = Store(), Counter()
    site.add(["store"], store)
    site.add(["counter"], counter)
    network = TracingNetwork(UDPNetwork(), lines.append) if lines is not None else None
    async with open_context(bind=("::1", 0), site=site, network=network) as ctx:
        yield f"coap://[::1]:{ctx.addresses[0].port}", store, counter


@contextlib.asynccontextmanager
async def our_proxy(**options: Any) -> AsyncIterator[tuple[ProxyServer, str, str]]:
    """Our proxy on [::1] (CoAP and HTTP); yields it, its CoAP URI and its HTTP base."""
    async with open_proxy(("::1", 0), allow=ALLOW, http_bind=("::1", 0), **options) as proxy:
        http_host, http_port = proxy.http_addresses[0]
        yield (
            proxy,
            f"coap://[::1]:{proxy.context.addresses[0].port}",
            f"http://[{http_host}]:{http_port}",
        )


async def run(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which(argv[0])
    assert binary is not None, f"{argv[0]} is not installed (scripts/test installs it)"
    return await trio.run_process(
        [binary, *argv[1:]], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )


async def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl; (status, headers, body)."""
    result = await run("curl", "-sS", "-i", "--max-time", "20", *args)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


# -- libcoap ---------------------------------------------------------------------------------


async def test_libcoap_client_through_our_proxy_to_libcoap_server() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_server("::1") as server, our_proxy() as (proxy, coap, _):
            got = await run(LIBCOAP_CLIENT, "-P", coap, server.uri("/"))
            put = await run(
                LIBCOAP_CLIENT,
                "-P",
                coap,
                "-m",
                "put",
                "-e",
                "via proxy",
                server.uri("/example_data"),
            )
            back = await run(LIBCOAP_CLIENT, "-P", coap, server.uri("/example_data"))
            forwarded = proxy.upstream.statistics.forwarded
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(LIBCOAP_INDEX_PREFIX)
    assert put.returncode == 0, put.stderr
    assert back.stdout.strip() == b"via proxy"
    assert forwarded == 3


async def test_our_client_through_libcoap_proxy() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            libcoap_server("::1") as server,
            # With no name of its own, coap-server-notls -P answers as the final endpoint.
            libcoap_server("::1", extra_args=["-P", ",proxy.invalid"]) as libcoap_proxy,
            open_context() as ctx,
        ):
            message = Message(code=GET)
            message.set_request_uri(server.uri("/"), proxy=libcoap_proxy.uri())
            got = await ctx.request(message).response
            put = Message(code=PUT, payload=b"through libcoap")
            put.set_request_uri(server.uri("/example_data"), proxy=libcoap_proxy.uri())
            stored = await ctx.request(put).response
            check = await ctx.get(server.uri("/example_data"))  # at the origin itself
    assert got.code is CONTENT
    assert got.payload.startswith(LIBCOAP_INDEX_PREFIX)
    assert stored.code in (Code.CREATED, Code.CHANGED)
    assert check.payload == b"through libcoap"


async def test_three_libcoap_observers_through_our_proxy_one_registration() -> None:
    lines: list[str] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with origin(lines) as (base, _, counter), our_proxy() as (proxy, coap, _):
            outputs: list[bytes] = []

            async def observer() -> None:
                result = await run(LIBCOAP_CLIENT, "-s", "3", "-P", coap, f"{base}/counter")
                outputs.append(result.stdout)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(observer)
                for _ in range(10):
                    await trio.sleep(0.25)
                    counter.value += 1
                    counter.updated_state()
            forwarded = proxy.upstream.statistics.forwarded
    registrations = [line for line in lines if line.startswith("<-") and "observe=0" in line]
    assert len(registrations) == 1, lines
    assert len(outputs) == 3
    for output in outputs:
        assert len(output) >= 4, outputs  # the first value and several notifications
    assert forwarded == 0  # every request went into the shared observation


# -- curl through the HTTP-CoAP cross-proxy ------------------------------------------------------


async def test_curl_to_libcoap_through_the_cross_proxy(tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(MIB)
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_server("::1") as server, our_proxy() as (_, _, web):
            index = await curl(f"{web}/hc/{server.uri('/')}")
            put = await curl(
                "-X",
                "PUT",
                "-H",
                "Content-Type: text/plain",
                "--data-binary",
                "from curl",
                f"{web}/hc/{server.uri('/example_data')}",
            )
            back = await curl(f"{web}/hc/{server.uri('/example_data')}")
            missing = await curl(f"{web}/hc/{server.uri('/no/such/thing')}")
            large_put = await curl(
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                f"@{upload}",
                f"{web}/hc/{server.uri('/example_data')}",
            )
            large_get = await curl(f"{web}/hc/{server.uri('/example_data')}")
    assert index[0] == 200
    assert index[2].startswith(LIBCOAP_INDEX_PREFIX)
    assert index[1]["cache-control"] == "max-age=196607"
    assert put[0] in (201, 204)
    assert back[0] == 200
    assert back[2] == b"from curl"
    assert missing[0] == 404
    assert large_put[0] in (201, 204)  # 1 MiB up in Block1 blocks to libcoap
    assert large_get[0] == 200
    assert hashlib.sha256(large_get[2]).digest() == hashlib.sha256(MIB).digest()


async def test_curl_to_coap_trio_through_the_cross_proxy(tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(MIB)
    with trio.fail_after(TEST_TIMEOUT):
        async with origin() as (base, store, _), our_proxy() as (_, _, web):
            put = await curl(
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                f"@{upload}",
                f"{web}/hc/{base}/store",
            )
            got = await curl(f"{web}/hc/{base}/store")
            head = await curl("-I", f"{web}/hc/{base}/store")
            encoded = await curl(
                f"{web}/hc/coap%3A%2F%2F%5B%3A%3A1%5D%3A{base.rsplit(':', 1)[1]}%2Fstore"
            )
            refused = await curl(f"{web}/hc/coap://[2001:db8::1]/store")
            no_scheme = await curl(f"{web}/hc/coaps://[::1]/store")
            not_mapped = await curl(f"{web}/elsewhere")
            bad_type = await curl(
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/x-unknown",
                "--data",
                "x",
                f"{web}/hc/{base}/store",
            )
            options = await curl("-X", "OPTIONS", f"{web}/hc/{base}/store")
    assert put[0] == 204
    assert store.body == MIB  # went up in Block1 blocks from the proxy
    assert got[0] == 200
    assert hashlib.sha256(got[2]).digest() == hashlib.sha256(MIB).digest()
    assert got[1]["content-length"] == str(len(MIB))
    assert head[0] == 200
    assert len(encoded[2]) == len(MIB)
    assert refused[0] == 403
    assert no_scheme[0] == 502  # 5.05 Proxying Not Supported maps to 502
    assert not_mapped[0] == 404
    assert bad_type[0] == 415
    assert options[0] == 501


async def test_curl_validation_gets_304() -> None:
    class Tagged(Resource):
        async def current_etag(self, request: Message) -> bytes | None:
            return b"\x01\x02"

        async def render_get(self, request: Message) -> Message:
            return Message(payload=b"tagged")

    site = Site()
    site.add(["t"], Tagged())
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_context(bind=("::1", 0), site=site) as ctx,
            our_proxy() as (_, _, web),
        ):
            uri = f"{web}/hc/coap://[::1]:{ctx.addresses[0].port}/t"
            first = await curl(uri)
            second = await curl("-H", f"If-None-Match: {first[1]['etag']}", uri)
    assert first[1]["etag"] == '"0102"'
    assert second[0] == 304
    assert second[2] == b""


# -- other transports upstream ----------------------------------------------------------------


async def test_forwarding_to_coap_over_tcp_and_websockets() -> None:
    site = Site()
    store = Store()
    site.add(["store"], store)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_context(site=site, tcp_bind=("::1", 0), ws_bind=("::1", 0)) as origin_ctx,
            our_proxy() as (_, coap, _),
            open_context() as ctx,
        ):
            answers = []
            for address in origin_ctx.stream_addresses:
                message = Message(code=GET)
                message.set_request_uri(f"{address.uri_base}/store", proxy=coap)
                answers.append((address.scheme, await ctx.request(message).response))
    assert sorted(scheme for scheme, _ in answers) == ["coap+tcp", "coap+ws"]
    for _, response in answers:
        assert response.code is CONTENT
        assert response.payload == b"initial"


# -- CoAP to HTTP ---------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"hello": "http"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "max-age=7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_a_coap_client_reaches_an_http_resource() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with trio.fail_after(TEST_TIMEOUT):
            async with our_proxy(http_to_http=True) as (_, coap, _), open_context() as ctx:
                message = Message(code=GET)
                message.set_request_uri(f"http://127.0.0.1:{server.server_port}/x", proxy=coap)
                response = await ctx.request(message).response
                by_scheme = Message(code=GET, uri=coap, proxy_scheme="http")
                by_scheme.opt.uri_host = "127.0.0.1"
                by_scheme.opt.uri_port = server.server_port
                by_scheme.opt.uri_path = ("y",)
                via_scheme = await ctx.request(by_scheme).response
                missing = Message(code=GET)
                missing.set_request_uri(f"http://127.0.0.1:{server.server_port}/x", proxy=coap)
                missing.code = Code.DELETE
                unsupported = await ctx.request(missing).response
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert response.code is CONTENT
    assert response.payload == b'{"hello": "http"}'
    assert int(response.opt.content_format or 0) == 50
    assert response.opt.max_age == 7
    assert via_scheme.code is CONTENT  # Proxy-Scheme http with Uri-Host and Uri-Port
    assert unsupported.code is Code.NOT_IMPLEMENTED  # the stdlib server has no DELETE: 501


# -- the command ----------------------------------------------------------------------------


async def test_serve_proxy_and_get_through_it() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with origin() as (base, store, _), trio.open_nursery() as nursery:
            store.body = b"from the command"
            process = await nursery.start(
                _serve_proxy, ["--bind", "[::1]:0", "--allow", "coap://[::1]"]
            )
            try:
                line = await _first_line(process)
                proxy_uri = line.removeprefix("listening on ").strip()
                result = await trio.run_process(
                    [
                        sys.executable,
                        "-m",
                        "coap_trio",
                        "get",
                        "--proxy",
                        proxy_uri,
                        f"{base}/store",
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                refused = await trio.run_process(
                    [
                        sys.executable,
                        "-m",
                        "coap_trio",
                        "get",
                        "--proxy",
                        proxy_uri,
                        "coap://127.0.0.1:9/x",
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            finally:
                process.terminate()
            assert await process.wait() == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"from the command"
    assert refused.returncode != 0
    assert b"4.03 Forbidden" in refused.stderr


async def _serve_proxy(args: list[str], *, task_status: Any) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "coap_trio", "serve", "proxy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        task_status.started(process)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def _first_line(process: trio.Process) -> str:
    assert process.stdout is not None
    data = b""
    for _ in range(100):
        if b"\n" in data:
            break
        chunk = await process.stdout.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.decode().splitlines()[0]
