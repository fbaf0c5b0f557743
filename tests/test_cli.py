"""The ``coap-trio`` command end to end: run as a subprocess against real servers on loopback.

Servers: an in-process coap_trio server (started in each test with
``open_context(bind=("::1", 0), site=...)``, the resources below) and
libcoap's ``coap-server-notls`` (see :mod:`interop_helpers`). The command
runs as ``python -m coap_trio`` with pipes (so standard output is not a
terminal) unless a test gives it a pseudo-terminal. Every test runs under
``trio.fail_after``; every subprocess has its own bound.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import pty
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import cbor2
import trio
import trustme
from interop_helpers import LIBCOAP_INDEX_PREFIX, libcoap_server

from coap_trio import Code, ContentFormat, Message, ObservableResource, Resource, Site
from coap_trio.cli.exitcodes import ExitStatus
from coap_trio.context import open_context
from coap_trio.plugtest import LARGE_SIZE, large_text
from coap_trio.response_errors import NotFound

TEST_TIMEOUT = 60.0
#: One command: python start-up (~0.3 s) plus the exchange, with margin.
PROCESS_TIMEOUT = 30.0

JSON_BODY = {"temperature": 21.5, "unit": "C", "history": [20, 21]}
CBOR_BODY = {"n": 1, "v": [1.5, b"\x01\x02"], "ok": True}
BINARY_BODY = bytes(range(40))


class _Text(Resource):
    rt = "greeting"
    representations = (ContentFormat.TEXT,)

    async def render_get(self, request: Message) -> Message:
        return Message(payload=b"hello, world")


class _Json(Resource):
    rt = "sensor"
    if_ = "core.s"
    representations = (ContentFormat.JSON,)

    async def render_get(self, request: Message) -> Message:
        return Message(payload=json.dumps(JSON_BODY, separators=(",", ":")).encode())


class _Cbor(Resource):
    rt = "sensor"
    representations = (ContentFormat.CBOR,)

    async def render_get(self, request: Message) -> Message:
        return Message(payload=cbor2.dumps(CBOR_BODY))


class _Binary(Resource):
    representations = (ContentFormat.OCTETSTREAM,)

    async def render_get(self, request: Message) -> Message:
        return Message(payload=BINARY_BODY)


#: More than a pipe holds (64 KiB on Linux): a reader that stops early leaves the writer blocked.
BIG_BODY = bytes(range(256)) * 2048


class _Big(Resource):
    representations = (ContentFormat.OCTETSTREAM,)

    async def render_get(self, request: Message) -> Message:
        return Message(payload=BIG_BODY)


class _Boom(Resource):
    async def render_get(self, request: Message) -> Message:
        raise NotFound("nothing here") if request.opt.uri_query else RuntimeError("boom")


class _Echo(Resource):
    """Answers every method with a JSON description of the request it got."""

    async def _echo(self, request: Message) -> Message:
        description = {
            "method": request.code.name_printable,
            "type": request.mtype.name if request.mtype is not None else None,
            "ct": None if request.opt.content_format is None else int(request.opt.content_format),
            "accept": None if request.opt.accept is None else int(request.opt.accept),
            "payload": request.payload.decode("utf-8", "replace"),
            "options": [[int(n), v.hex()] for n, v in request.opt if int(n) > 1000],
            "query": list(request.opt.uri_query),
        }
        return Message(
            code=Code.CONTENT if request.code in (Code.GET, Code.FETCH) else Code.CHANGED,
            payload=json.dumps(description).encode(),
            content_format=ContentFormat.JSON,
        )

    render_get = render_post = render_put = render_delete = _echo
    render_fetch = render_patch = render_ipatch = _echo


class _Counter(ObservableResource):
    representations = (ContentFormat.TEXT,)

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(payload=b"%d" % self.value, max_age=5)

    async def tick(self, period: float) -> None:
        while True:
            await trio.sleep(period)
            self.value += 1
            self.updated_state()


@contextlib.asynccontextmanager
async def coap_trio_servers(**listeners: Any) -> AsyncIterator[dict[str, str]]:
    """Serve the resources above on ``[::1]`` (any port) over UDP, and over the
    ``listeners`` given to ``open_context`` (``tcp_bind=``, ``ssl_context=``...);
    yields the base URI of each scheme (``{"coap": "coap://[::1]:PORT", ...}``)."""
    site = Site()
    site.add(["text"], _Text())
    site.add(["json"], _Json())
    site.add(["cbor"], _Cbor())
    site.add(["binary"], _Binary())
    site.add(["big"], _Big())
    site.add(["boom"], _Boom())
    site.add(["echo"], _Echo())
    counter = _Counter()
    site.add(["counter"], counter)
    async with (
        open_context(bind=("::1", 0), site=site, **listeners) as ctx,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(counter.tick, 0.05)
        bases = {a.scheme: f"{a.scheme}://[::1]:{a.port}" for a in ctx.stream_addresses}
        yield {"coap": f"coap://[::1]:{ctx.addresses[0].port}", **bases}
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def coap_trio_server() -> AsyncIterator[str]:
    """Serve the resources above on ``[::1]`` (any port); yields ``coap://[::1]:PORT``."""
    async with coap_trio_servers() as bases:
        yield bases["coap"]


async def coap_trio(
    *args: str, stdin: bytes = b"", timeout: float = PROCESS_TIMEOUT, **options: Any
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m coap_trio ARGS`` with pipes (``options`` go to the process,
    e.g. ``env``); its completed process."""
    with trio.fail_after(timeout):
        return await trio.run_process(
            [sys.executable, "-m", "coap_trio", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            **options,
        )


async def coap_trio_all(
    *commands: Sequence[str], **options: Any
) -> list[subprocess.CompletedProcess[bytes]]:
    """Run several commands at once (each as :func:`coap_trio` does, with ``options``);
    results in order."""
    results: list[subprocess.CompletedProcess[bytes] | None] = [None] * len(commands)

    async def run(index: int, args: Sequence[str]) -> None:
        results[index] = await coap_trio(*args, **options)

    async with trio.open_nursery() as nursery:
        for index, args in enumerate(commands):
            nursery.start_soon(run, index, args)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def silent_port() -> socket.socket:
    """A bound UDP socket on ``::1`` that never answers (the caller closes it)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    return sock


def closed_port() -> int:
    """A ``::1`` port nobody listens on (ICMP port unreachable)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port: int = sock.getsockname()[1]
    return port


def one_line(stderr: bytes) -> str:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


# -- exit statuses ------------------------------------------------------------------------


async def test_exit_statuses_of_responses() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            ok, missing, not_allowed, diagnostic, crash = await coap_trio_all(
                ("get", f"{base}/text"),
                ("get", f"{base}/nowhere"),
                ("delete", f"{base}/text"),
                ("get", f"{base}/boom?why"),
                ("get", f"{base}/boom"),
            )
            assert ok.returncode == ExitStatus.OK == 0, ok.stderr
            assert ok.stdout == b"hello, world"
            assert ok.stderr == b""

            assert missing.returncode == ExitStatus.CLIENT_ERROR
            assert one_line(missing.stderr).startswith("coap-trio: 4.04 Not Found")
            assert missing.stdout == b""

            assert not_allowed.returncode == ExitStatus.CLIENT_ERROR
            assert "4.05 Method Not Allowed" in one_line(not_allowed.stderr)

            assert diagnostic.returncode == ExitStatus.CLIENT_ERROR
            assert one_line(diagnostic.stderr) == "coap-trio: 4.04 Not Found: nothing here"

            assert crash.returncode == ExitStatus.SERVER_ERROR
            assert "5.00 Internal Server Error" in one_line(crash.stderr)


async def test_timeout_network_error_and_unsupported_schemes() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        silent = silent_port()
        try:
            port = silent.getsockname()[1]
            started = trio.current_time()
            timed_out, ping, observe = await coap_trio_all(
                ("get", f"coap://[::1]:{port}/x", "--timeout", "0.3"),
                ("ping", f"coap://[::1]:{port}", "--timeout", "0.3"),
                ("observe", f"coap://[::1]:{port}/x", "--timeout", "0.3"),
            )
            assert trio.current_time() - started < 25
            assert timed_out.returncode == ExitStatus.TIMEOUT
            assert "no response within --timeout 0.3 s" in one_line(timed_out.stderr)
            assert ping.returncode == ExitStatus.TIMEOUT
            assert observe.returncode == ExitStatus.TIMEOUT
            assert "no response within --timeout 0.3 s" in one_line(observe.stderr)
        finally:
            silent.close()

        refused, refused_tcp, unresolvable, no_credentials, unknown = await coap_trio_all(
            ("get", f"coap://[::1]:{closed_port()}/x", "--timeout", "5"),
            ("get", f"coap+tcp://[::1]:{closed_port()}/x", "--timeout", "5"),
            ("get", "coap://no-such-host.invalid/x", "--timeout", "5"),
            ("get", "coaps://[::1]/x"),
            ("get", "coap+sms://[::1]/x"),
        )
        assert refused.returncode == ExitStatus.NETWORK_ERROR
        assert "network error" in one_line(refused.stderr)
        assert refused_tcp.returncode == ExitStatus.NETWORK_ERROR
        assert "Connection refused" in one_line(refused_tcp.stderr)
        assert unresolvable.returncode == ExitStatus.NETWORK_ERROR
        assert "no-such-host.invalid" in one_line(unresolvable.stderr)
        assert no_credentials.returncode == ExitStatus.USAGE  # coaps:// without credentials
        assert "coaps:// needs DTLS credentials" in one_line(no_credentials.stderr)
        assert unknown.returncode == ExitStatus.USAGE
        assert "'coap+sms' is not a CoAP URI scheme" in one_line(unknown.stderr)


async def test_every_supported_scheme_works(tmp_path: Path) -> None:
    """coap+tcp, coaps+tcp, coap+ws and coaps+ws (RFC 8323) as well as coap://;
    the TLS ones verify the server's certificate against the trust store that
    OpenSSL's SSL_CERT_FILE names."""
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("::1", "localhost").configure_cert(server_ssl)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "ca.pem")}
    untrusted = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "nothing.pem")}
    listeners = {"tcp_bind": ("::1", 0), "tls_bind": ("::1", 0)}
    listeners |= {"ws_bind": ("::1", 0), "wss_bind": ("::1", 0)}
    schemes = ("coap", "coap+tcp", "coaps+tcp", "coap+ws", "coaps+ws")
    commands = [(scheme, "get", "/text") for scheme in schemes]
    commands += [
        ("coap+tcp", "observe", "/counter", "--count", "2"),
        ("coaps+ws", "observe", "/counter", "--count", "2"),
        ("coap+ws", "put", "/echo", "--payload", "x", "--raw"),
        ("coaps+tcp", "discover", "", "--rt", "greeting"),
        ("coap+tcp", "ping", ""),
        ("coaps+ws", "ping", ""),
    ]
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_servers(ssl_context=server_ssl, **listeners) as bases:
            assert set(bases) == set(schemes)
            results = await coap_trio_all(
                *[(verb, bases[scheme] + path, *rest) for scheme, verb, path, *rest in commands],
                env=env,
            )
            refused = await coap_trio("get", bases["coaps+tcp"] + "/text", env=untrusted)
    done = {(c[0], c[1]): result for c, result in zip(commands, results, strict=True)}
    for (scheme, verb), result in done.items():
        assert result.returncode == 0, (scheme, verb, result.stderr)
        assert result.stderr == b"", (scheme, verb, result.stderr)
    for scheme in schemes:
        assert done[scheme, "get"].stdout == b"hello, world", scheme
    assert len(done["coap+tcp", "observe"].stdout.splitlines()) == 2
    assert len(done["coaps+ws", "observe"].stdout.splitlines()) == 2
    assert json.loads(done["coap+ws", "put"].stdout)["payload"] == "x"
    assert done["coaps+tcp", "discover"].stdout.startswith(b'</text> rt="greeting"')
    for scheme in ("coap+tcp", "coaps+ws"):
        assert done[scheme, "ping"].stdout.startswith(f"pong from {bases[scheme]}".encode())
    assert refused.returncode == ExitStatus.NETWORK_ERROR  # the certificate is not trusted
    assert "certificate" in one_line(refused.stderr).lower()


async def test_usage_errors() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        bad = (
            ("get",),
            ("get", "coap://[::1]/", "--no-such-flag"),
            ("get", "coap://[::1]/", "--content-format", "yaml"),
            ("get", "coap://[::1]/", "--option", "14=notanumber"),
            ("frobnicate",),
        )
        *results, bad_uri, no_file, helped = await coap_trio_all(
            *bad,
            ("get", "http://[::1]/"),
            ("put", "coap://[::1]/x", "--payload-file", "/no/such/file"),
            ("get", "--help"),
        )
        for args, result in zip(bad, results, strict=True):
            assert result.returncode == ExitStatus.USAGE == 2, args
            assert b"usage: coap-trio" in result.stderr
        assert bad_uri.returncode == ExitStatus.USAGE
        assert "not a CoAP URI scheme" in one_line(bad_uri.stderr)
        assert no_file.returncode == ExitStatus.USAGE
        assert "/no/such/file" in one_line(no_file.stderr)
        assert helped.returncode == 0
        assert b"exit status:" in helped.stdout


async def test_version_comes_from_the_package_metadata() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        version, helped = await coap_trio_all(("--version",), ("--help",))
    assert version.returncode == 0, version.stderr
    assert version.stdout.decode() == f"coap-trio {importlib.metadata.version('coap-trio')}\n"
    assert version.stderr == b""
    assert b"--version" in helped.stdout


# -- output formats --------------------------------------------------------------------------


async def test_output_fits_the_content_format() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            pretty, diagnostic, raw, piped = await coap_trio_all(
                ("get", f"{base}/json"),
                ("get", f"{base}/cbor"),
                ("get", f"{base}/cbor", "--raw"),
                ("get", f"{base}/binary"),
            )
            assert pretty.returncode == 0, pretty.stderr
            assert pretty.stdout.decode() == json.dumps(JSON_BODY, indent=2) + "\n"

            assert diagnostic.returncode == 0, diagnostic.stderr
            assert diagnostic.stdout == b'{"n": 1, "v": [1.5, h\'0102\'], "ok": true}\n'

            assert raw.stdout == cbor2.dumps(CBOR_BODY)

            assert piped.returncode == 0
            assert piped.stdout == BINARY_BODY  # piped: the bytes as they are


async def coap_trio_on_terminal(
    *args: str, stream: str = "stdout"
) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """Run ``python -m coap_trio ARGS`` with ``stream`` (stdout or stderr) on a
    pseudo-terminal, the other one piped; the process and what the terminal showed."""
    controller, terminal = pty.openpty()
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            result = await trio.run_process(
                [sys.executable, "-m", "coap_trio", *args],
                stdin=subprocess.DEVNULL,
                capture_stdout=stream != "stdout",
                capture_stderr=stream != "stderr",
                check=False,
                **{stream: terminal},
            )
        os.close(terminal)
        terminal = -1
        shown = b""
        for _ in range(1000):  # bounded: the output is a few kilobytes at most
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: everything has been read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    return result, shown.decode().replace("\r\n", "\n")


async def test_binary_is_a_hex_dump_on_a_terminal() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            result, shown = await coap_trio_on_terminal("get", f"{base}/binary")
            assert result.returncode == 0, result.stderr
            lines = shown.splitlines()
            assert lines[0] == (
                "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|"
            )
            assert len(lines) == 3
            assert lines[2].startswith("00000020  20 21 22 23 24 25 26 27 ")
            assert lines[2].endswith("| !\"#$%&'|")


async def test_text_ends_with_a_newline_on_a_terminal_only() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            (shown_result, shown), (raw_result, raw), piped = (
                await coap_trio_on_terminal("get", f"{base}/text"),
                await coap_trio_on_terminal("get", f"{base}/text", "--raw"),
                await coap_trio("get", f"{base}/text"),
            )
    assert shown_result.returncode == raw_result.returncode == piped.returncode == 0
    assert shown == "hello, world\n"  # the prompt that follows gets a line of its own
    assert raw == "hello, world"  # --raw: the bytes as they are
    assert piped.stdout == b"hello, world"  # a pipe gets the exact bytes


async def test_output_file_gets_the_bytes(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            target = tmp_path / "out.json"
            result = await coap_trio("get", f"{base}/json", "--output", str(target))
            assert result.returncode == 0, result.stderr
            assert result.stdout == b""
            assert json.loads(target.read_bytes()) == JSON_BODY
            assert b"\n" not in target.read_bytes()  # as sent, not pretty-printed
            unwritable = await coap_trio("get", f"{base}/text", "-o", "/no/such/dir/file")
            assert unwritable.returncode == ExitStatus.FAILURE
            assert "/no/such/dir/file" in one_line(unwritable.stderr)


# -- standard output closed by its reader ------------------------------------------------


async def closed_early(
    *args: str, lines: int = 0, size: int = 0, stderr_terminal: bool = False
) -> tuple[int, bytes, str]:
    """Run ``python -m coap_trio ARGS`` and close its standard output (a pipe) once
    ``lines`` lines or ``size`` bytes have been read, as ``| head`` does. Returns the
    exit status, what was read, and what standard error got (a pseudo-terminal's
    screen with ``stderr_terminal``)."""
    controller, terminal = pty.openpty() if stderr_terminal else (-1, -1)
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "coap_trio", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal if stderr_terminal else subprocess.PIPE,
        )
        if stderr_terminal:
            os.close(terminal)
            terminal = -1
        try:
            assert process.stdout is not None
            read = b""
            with trio.fail_after(PROCESS_TIMEOUT):
                while read.count(b"\n") < lines or len(read) < size:
                    chunk = await process.stdout.receive_some(4096)
                    assert chunk, f"the command ended first: {read[-200:]!r}"
                    read += chunk
                await process.stdout.aclose()
            errors = b""
            with trio.fail_after(PROCESS_TIMEOUT):
                if stderr_terminal:
                    for _ in range(10_000):  # bounded: a progress bar, a few kilobytes
                        try:
                            chunk = await trio.to_thread.run_sync(os.read, controller, 4096)
                        except OSError:  # EIO: the command has ended, all was read
                            break
                        if not chunk:
                            break
                        errors += chunk
                else:
                    assert process.stderr is not None
                    while chunk := await process.stderr.receive_some(4096):
                        errors += chunk
                status = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        for fd in (terminal, controller):
            if fd >= 0:
                os.close(fd)
    return status, read, errors.decode(errors="replace")


async def test_a_closed_standard_output_stops_the_command_quietly() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            # observe URI | head -2; get URI | head -c 100 (streamed block by block)
            observed, (got_status, got, got_errors) = (
                await closed_early("observe", f"{base}/counter", lines=2),
                await closed_early("get", f"{base}/big", size=100),
            )
    status, read, errors = observed
    assert status == ExitStatus.OUTPUT_CLOSED == 141
    assert len(read.splitlines()) >= 2
    assert errors == ""  # no traceback, no "network error"
    assert got_status == ExitStatus.OUTPUT_CLOSED
    assert BIG_BODY.startswith(got)
    assert got_errors == ""


async def test_a_closed_standard_output_leaves_no_progress_bar_behind() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            status, read, screen = await closed_early(
                "get", f"{base}/big", size=100, stderr_terminal=True
            )
    assert status == ExitStatus.OUTPUT_CLOSED
    assert BIG_BODY.startswith(read)
    assert screen.startswith("\r[")  # the bar was drawn...
    assert screen.endswith("\r\x1b[K")  # ...and erased: the line is clean
    assert "coap-trio" not in screen
    assert "\n" not in screen


# -- request building ----------------------------------------------------------------------


async def test_methods_payloads_and_options() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            uri = f"{base}/echo"
            verbs = ("post", "put", "fetch", "patch", "ipatch", "delete")
            results = await coap_trio_all(*[(verb, uri, "--raw") for verb in verbs])
            for verb, result in zip(verbs, results, strict=True):
                assert result.returncode == 0, (verb, result.stderr)
                assert json.loads(result.stdout)["method"] == verb.upper().replace("IP", "iP")

            result = await coap_trio(
                "post",
                uri,
                "--payload",
                '{"x": 1}',
                "--content-format",
                "json",
                "--accept",
                "cbor",
                "--option",
                "65000=0xcafe",
                "--option",
                "65004=text",
                "--non",
                "--raw",
            )
            assert result.returncode == 0, result.stderr
            echoed = json.loads(result.stdout)
            assert echoed["type"] == "NON"
            assert echoed["ct"] == 50
            assert echoed["accept"] == 60
            assert echoed["payload"] == '{"x": 1}'
            assert echoed["options"] == [[65000, "cafe"], [65004, "74657874"]]

            text = await coap_trio("put", uri, "--payload", "plain words", "--raw")
            assert json.loads(text.stdout)["ct"] == 0  # --payload defaults to text/plain

            stdin = await coap_trio(
                "put", uri, "--payload-file", "-", "--ct", "60", "--raw", stdin=b"\xa1\x01\x02"
            )
            assert stdin.returncode == 0, stdin.stderr
            assert json.loads(stdin.stdout)["payload"] == "\ufffd\x01\x02"
            assert json.loads(stdin.stdout)["ct"] == 60


async def test_payload_file(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            source = tmp_path / "body.txt"
            source.write_bytes(b"from a file")
            result = await coap_trio("post", f"{base}/echo", "--payload-file", str(source), "--raw")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["payload"] == "from a file"
            assert json.loads(result.stdout)["ct"] is None  # a file's format is not guessed


async def test_verbose_shows_the_messages_exchanged() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            result = await coap_trio("get", f"{base}/text", "-v")
            assert result.returncode == 0
            assert result.stdout == b"hello, world"
            lines = result.stderr.decode().splitlines()
            assert re.match(
                r"-> coap://\[::1\]:\d+  <Message CON 0.01 GET mid=\d+ .*/text", lines[0]
            )
            assert re.match(r"<- coap://\[::1\]:\d+  <Message ACK 2.05 Content .*ct=0", lines[1])
            assert lines[1].endswith("payload=b'hello, world'")
            assert lines[2] == "2.05 Content ct=text/plain; charset=utf-8 12 bytes"


# -- observe, discover, ping ----------------------------------------------------------------


async def test_observe_prints_each_notification() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            result = await coap_trio("observe", f"{base}/counter", "--count", "4")
            assert result.returncode == 0, result.stderr
            values = [int(line) for line in result.stdout.decode().splitlines()]
            assert len(values) == 4
            assert values == sorted(set(values))

            timed = await coap_trio("observe", f"{base}/counter", "--duration", "1.0")
            assert timed.returncode == 0, timed.stderr
            assert len(timed.stdout.splitlines()) >= 2

            final = await coap_trio("observe", f"{base}/text", "--count", "5")
            assert final.returncode == 0  # not observable: the first response is final
            assert final.stdout == b"hello, world\n"
            assert one_line(final.stderr) == (
                "coap-trio: not observable: the response has no Observe option"
            )

            error = await coap_trio("observe", f"{base}/nowhere")
            assert error.returncode == ExitStatus.CLIENT_ERROR
            assert "4.04 Not Found" in one_line(error.stderr)


async def test_observe_ends_cleanly_on_sigint() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "coap_trio", "observe", f"{base}/counter"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None
                received = b""
                with trio.fail_after(PROCESS_TIMEOUT):
                    while received.count(b"\n") < 2:
                        received += await process.stdout.receive_some(1024)
                process.send_signal(signal.SIGINT)
                with trio.fail_after(PROCESS_TIMEOUT):
                    status = await process.wait()
                assert process.stderr is not None
                errors = await process.stderr.receive_some(1024)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert status == 0
            assert errors == b""  # ended as asked: nothing to say


async def test_observe_says_so_when_interrupted_before_any_response() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        silent = silent_port()
        port = silent.getsockname()[1]
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "coap_trio", "observe", f"coap://[::1]:{port}/x", "-v"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            errors = b""
            with trio.fail_after(PROCESS_TIMEOUT):
                while b"-> " not in errors:  # -v: the request went out, signals are handled
                    chunk = await process.stderr.receive_some(1024)
                    assert chunk, errors
                    errors += chunk
            process.send_signal(signal.SIGINT)
            with trio.fail_after(PROCESS_TIMEOUT):
                while chunk := await process.stderr.receive_some(1024):
                    errors += chunk
                status = await process.wait()
        finally:
            silent.close()
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert status == ExitStatus.INTERRUPTED == 130
    lines = errors.decode().splitlines()
    assert lines[-1] == "coap-trio: interrupted before any response"
    assert all(line.startswith("-> ") for line in lines[:-1]), lines  # the CON, resent


async def test_discover_with_filters() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            everything, sensors, both, query = await coap_trio_all(
                ("discover", base),
                ("discover", base, "--rt", "sensor"),
                ("discover", base, "--rt", "sensor", "--if", "core.s"),
                ("discover", f"{base}/?rt=greet*"),
            )
            assert everything.returncode == 0, everything.stderr
            targets = [line.split()[0] for line in everything.stdout.decode().splitlines()]
            assert set(targets) >= {"</text>", "</json>", "</cbor>", "</counter>"}
            assert '</json> rt="sensor" if="core.s" ct="50"' in everything.stdout.decode()

            lines = sensors.stdout.decode().splitlines()
            assert sorted(line.split()[0] for line in lines) == ["</cbor>", "</json>"]

            assert [line.split()[0] for line in both.stdout.decode().splitlines()] == ["</json>"]

            assert [line.split()[0] for line in query.stdout.decode().splitlines()] == ["</text>"]


async def test_ping() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with coap_trio_server() as base:
            result = await coap_trio("ping", base)
            assert result.returncode == 0, result.stderr
            assert re.fullmatch(rb"pong from coap://\[::1\]:\d+: \d+\.\d\d ms\n", result.stdout)


# -- against libcoap -----------------------------------------------------------------------


async def test_against_libcoap_server() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_server("::1") as server:
            index = await coap_trio("get", server.uri("/"))
            assert index.returncode == 0, index.stderr
            assert index.stdout.startswith(LIBCOAP_INDEX_PREFIX)

            missing = await coap_trio("get", server.uri("/nothing-here"))
            assert missing.returncode == ExitStatus.CLIENT_ERROR

            not_allowed = await coap_trio("post", server.uri("/time"), "--payload", "x")
            assert not_allowed.returncode == ExitStatus.CLIENT_ERROR
            assert "4.05" in one_line(not_allowed.stderr)

            stored = await coap_trio("put", server.uri("/example_data"), "--payload", "stored")
            assert stored.returncode == 0, stored.stderr
            back = await coap_trio("get", server.uri("/example_data"))
            assert back.stdout == b"stored"

            links = await coap_trio("discover", server.uri(), "--rt", "ticks")
            assert links.returncode == 0
            lines = links.stdout.decode().splitlines()
            assert len(lines) == 1
            assert lines[0].startswith('</time> if="clock" rt="ticks"')
            assert lines[0].endswith(" obs")

            ticks = await coap_trio("observe", server.uri("/time"), "--count", "2")
            assert ticks.returncode == 0, ticks.stderr
            assert len(ticks.stdout.splitlines()) == 2

            pong = await coap_trio("ping", server.uri())
            assert pong.returncode == 0


# -- serve -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(args: Sequence[str], **options: Any) -> AsyncIterator[tuple[str, list[int]]]:
    """Run ``coap-trio serve ARGS`` (``options`` go to the process, e.g. ``umask``);
    yields the base URI it printed and, after the block, stops it with SIGTERM and
    appends its exit status to the yielded list."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "coap_trio", "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )
    statuses: list[int] = []
    try:
        assert process.stdout is not None
        printed = b""
        with trio.fail_after(PROCESS_TIMEOUT):
            while b"\n" not in printed:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, "serve exited before printing its address"
                printed += chunk
        line = printed.split(b"\n")[0].decode()
        match = re.fullmatch(r"listening on (coap://\[::1\]:(\d+))", line)
        assert match is not None, line
        assert int(match.group(2)) != 0
        yield match.group(1), statuses
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(PROCESS_TIMEOUT):
            statuses.append(await process.wait())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_plugtest(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(["plugtest", "--bind", "[::1]:0", "--obs-period", "0.1"]) as (
            base,
            statuses,
        ):
            test = await coap_trio("get", f"{base}/test")
            assert test.returncode == 0, test.stderr
            assert test.stdout

            links, observable = await coap_trio_all(
                ("discover", base, "--rt", "Type1"), ("discover", base, "--rt", "observe")
            )
            targets = [line.split()[0] for line in links.stdout.decode().splitlines()]
            assert targets == ["</link1>", "</link3>"]
            titles = re.findall(r'title="([^"]*)"', observable.stdout.decode())
            assert len(titles) == 3, observable.stdout  # /obs, /obs-non, /obs-large
            assert all("changes every period (0.1 s)," in title for title in titles), titles

            notifications = await coap_trio("observe", f"{base}/obs", "--count", "3")
            assert notifications.returncode == 0, notifications.stderr
            assert len(notifications.stdout.splitlines()) == 3

            # Block-wise: whole bodies, streamed to a pipe or a file, uploads in blocks.
            target = tmp_path / "large.txt"
            upload = tmp_path / "upload.bin"
            upload.write_bytes(bytes(range(256)) * 12)
            piped, to_file, small_blocks, echoed = await coap_trio_all(
                ("get", f"{base}/large"),
                ("get", f"{base}/large", "--output", str(target)),
                ("get", f"{base}/large", "--block-size", "256", "-v"),
                ("post", f"{base}/large-post", "--payload-file", str(upload), "--ct", "42"),
            )
            assert piped.returncode == 0, piped.stderr
            assert piped.stdout == large_text()
            assert target.read_bytes() == large_text()
            assert to_file.stdout == b""
            assert small_blocks.stdout == large_text()
            sent = [line for line in small_blocks.stderr.decode().splitlines() if "-> " in line]
            assert len(sent) == math.ceil(LARGE_SIZE / 256)  # one GET per block
            assert all("block2=" in line for line in sent[1:])
            assert echoed.returncode == 0, echoed.stderr
            assert echoed.stdout == upload.read_bytes()

            # A progress bar on standard error when it is a terminal (and only then).
            result, shown = await coap_trio_on_terminal(
                "get", f"{base}/large", "--block-size", "512", stream="stderr"
            )
            assert result.returncode == 0
            assert result.stdout == large_text()
            frames = shown.split("\r")[1:]
            assert frames, shown
            assert frames[-1].startswith("[" + "#" * 30 + "] 100.0%")
            assert shown.endswith("\n")
            assert "[" not in piped.stderr.decode()  # piped: no bar
        assert statuses == [0]


async def test_serve_fileserver(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello from a file\n")
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(["fileserver", str(tmp_path), "--bind", "[::1]:0", "--write"]) as (
            base,
            statuses,
        ):
            read = await coap_trio("get", f"{base}/hello.txt", "--raw")
            assert read.returncode == 0, read.stderr
            assert read.stdout == b"hello from a file\n"

            written = await coap_trio("put", f"{base}/new.txt", "--payload", "new content")
            assert written.returncode == 0, written.stderr
            assert (tmp_path / "new.txt").read_bytes() == b"new content"

            missing = await coap_trio("get", f"{base}/absent.txt")
            assert missing.returncode == ExitStatus.CLIENT_ERROR
        assert statuses == [0]


async def test_serve_fileserver_creates_files_as_other_programs_do(tmp_path: Path) -> None:
    private = tmp_path / "private.txt"
    private.write_bytes(b"old")
    private.chmod(0o600)
    script = tmp_path / "script.sh"
    script.write_bytes(b"old")
    script.chmod(0o755)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(
            ["fileserver", str(tmp_path), "--bind", "[::1]:0", "--write"], umask=0o027
        ) as (base, statuses):
            results = await coap_trio_all(
                *[
                    ("put", f"{base}/{name}", "--payload", "new")
                    for name in ("new.txt", "private.txt", "script.sh")
                ]
            )
            assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
        assert statuses == [0]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {
        "new.txt": 0o644 & ~0o027,  # created: 0644 less the server's umask
        "private.txt": 0o600,  # replaced: its permission bits are kept
        "script.sh": 0o755,
    }
    assert {p.read_bytes() for p in tmp_path.iterdir()} == {b"new"}


async def test_serve_reports_a_bad_directory_or_address() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        taken = silent_port()
        try:
            port = taken.getsockname()[1]
            no_dir, in_use = await coap_trio_all(
                ("serve", "fileserver", "/no/such/dir", "--bind", "[::1]:0"),
                ("serve", "plugtest", "--bind", f"[::1]:{port}"),
            )
        finally:
            taken.close()
        assert no_dir.returncode == ExitStatus.FAILURE
        assert "/no/such/dir" in one_line(no_dir.stderr)
        assert no_dir.stdout == b""
        assert in_use.returncode == ExitStatus.FAILURE
        assert "cannot serve" in one_line(in_use.stderr)


def resolved(name: str) -> list[str]:
    """The addresses the system resolver gives for ``name``, each once, in its order."""
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(name, 0, type=socket.SOCK_DGRAM):
        if sockaddr[0] not in found:
            found.append(str(sockaddr[0]))
    return found


async def serve_by_name(*args: str) -> tuple[list[str], int, int]:
    """Run ``coap-trio serve plugtest --bind localhost:0 ARGS``, GET /test through
    ``coap://localhost:PORT``, stop it with SIGTERM; the hosts it printed, the GET's
    exit status and the server's."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "coap_trio", "serve", "plugtest", "--bind", "localhost:0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        printed = b""
        expected_lines = len(resolved("localhost")) + (1 if "--workers" in args else 0)
        with trio.fail_after(PROCESS_TIMEOUT):
            while printed.count(b"\n") < expected_lines:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, f"serve exited early: {printed!r}"
                printed += chunk
        found = re.findall(r"listening on coap://\[?([^\]\s]+?)\]?:(\d+)\n", printed.decode())
        hosts = [host for host, _ in found]
        (port,) = {int(port) for _, port in found}  # one port for every address
        got = await coap_trio("get", f"coap://localhost:{port}/test")
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(PROCESS_TIMEOUT):
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert got.stdout.startswith(b"Type: CON"), got
    return hosts, got.returncode, status


async def test_serve_binds_a_host_name_on_each_of_its_addresses() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        alone = await serve_by_name()
        workers = await serve_by_name("--workers", "2")
    expected = resolved("localhost")  # 127.0.0.1, and ::1 where the hosts file has it
    assert alone == (expected, 0, 0)
    assert workers == (expected, 0, 0)


async def test_serve_reports_a_bad_bind_name_in_one_line() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        unresolvable, by_workers, refused, idna = await coap_trio_all(
            ("serve", "plugtest", "--bind", "no-such-host.invalid:0"),
            ("serve", "plugtest", "--bind", "no-such-host.invalid:0", "--workers", "2"),
            ("serve", "fileserver", ".", "--bind", "127.0.0.1%lo:0"),
            ("serve", "plugtest", "--bind", "bad..name:0"),
        )
    for result in (unresolvable, by_workers):
        assert result.returncode == ExitStatus.USAGE == 2
        assert one_line(result.stderr).startswith(
            "coap-trio: cannot serve: cannot resolve 'no-such-host.invalid': "
        )
        assert result.stdout == b""
    assert refused.returncode == ExitStatus.USAGE
    assert "127.0.0.1%lo" in one_line(refused.stderr)
    assert idna.returncode == ExitStatus.USAGE
    assert "bad..name" in one_line(idna.stderr)
