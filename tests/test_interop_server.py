"""coap_trio's server against real clients over loopback UDP.

Clients: libcoap's ``coap-client-notls`` 4.3.x (a child process per request,
required, never skipped) and aiocoap 0.4's client (in a worker thread with its
own asyncio loop). Every test serves :func:`make_site` (a :class:`Site` of
:class:`Resource` subclasses) with ``open_context(bind=("::1", 0))`` on a port
the OS picked, runs under ``trio.fail_after`` with the real clock, and ends by
checking that the server still answers a plain GET.

Reading libcoap: it exits 0 whatever the response code (and also when it gave
up waiting), so the tests read its ``-v 7`` debug log instead, where every
datagram it sent or received is printed as one line
(``v:1 t:ACK c:2.05 i:1bc9 {01} [ Content-Format:text/plain ] :: 'hello'``)
after a line that says ``sent N bytes`` or ``received N bytes``; a 4.xx/5.xx is
also printed on stderr, and ``-o FILE`` receives the payload of a 2.xx only.
``-B N`` bounds its wait to N whole seconds (``INFO timeout`` in the log).

What coap-client-notls 4.3.1 does and the tests rely on: ``-T abcdefgh`` sends
the 8-byte token ``abcdefgi`` (it increments the initial token before use), a
request without ``-T`` carries the 1-byte token ``01``, and ``-T ""`` still
sends ``01``: it cannot send an empty token, so the empty-token tests use a
plain socket (requests encoded and responses decoded by aiocoap's codec).
``-O 2001,x`` adds option 2001 (odd: critical; unassigned in the IANA CoAP
option registry) with the value ``x``; ``-N`` sends NON.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.optiontypes
import aiocoap.util.linkformat
import pytest
import trio
from interop_helpers import uri_host

from coap_trio import Code, ContentFormat, Message, MessagingConfig, TransmissionParameters
from coap_trio.context import Context, open_context
from coap_trio.resource import Resource, Site, created
from coap_trio.response_errors import NotFound

#: Per-test bound: several client processes (a few ms each) plus the waits, with ample margin.
TEST_TIMEOUT = 30.0
#: ``-B`` for requests that are answered (whole seconds; they take milliseconds).
CLIENT_WAIT = 5
#: ``-B`` for requests the server must not answer (how long silence is watched for).
SILENCE_WAIT = 1
#: How long the slow resource takes: well above the server's 0.1 s ack_delay.
SLOW_DELAY = 0.5
#: The server's default ack_delay (MessagingConfig).
ACK_DELAY = 0.1
#: Unassigned in the IANA CoAP option registry; odd, so critical (RFC 7252 §5.4.1).
UNKNOWN_CRITICAL = 2001
#: Unassigned and even: elective, so ignored by the server.
UNKNOWN_ELECTIVE = 2002

HELLO = b"hello from coap_trio"
STORE_INITIAL = b"initial"
DEEP_PATH = tuple(f"seg{i}" for i in range(10))
QUERY_ITEMS = tuple(f"q{i}=v{i}" for i in range(10))

LIBCOAP_CLIENT = "coap-client-notls"


# -- the site served ---------------------------------------------------------------------


class Hello(Resource):
    rt = "test.hello"
    title = "Hello"
    representations = (ContentFormat.TEXT,)

    async def render_get(self, request: Message) -> Message:
        return Message(payload=HELLO)


class Store(Resource):
    """Every method: GET reads, PUT replaces, POST creates, DELETE empties (then GET: 4.04)."""

    rt = "test.store"

    def __init__(self) -> None:
        self.value: bytes | None = STORE_INITIAL
        self.posts = 0

    async def render_get(self, request: Message) -> Message:
        if self.value is None:
            raise NotFound("the store is empty")
        return Message(code=Code.CONTENT, payload=self.value)

    async def render_put(self, request: Message) -> Message:
        self.value = request.payload
        return Message(code=Code.CHANGED)

    async def render_post(self, request: Message) -> Message:
        self.posts += 1
        self.value = request.payload
        return created(("store", str(self.posts)))

    async def render_delete(self, request: Message) -> Message:
        self.value = None
        return Message(code=Code.DELETED)


class Slow(Resource):
    async def render_get(self, request: Message) -> Message:
        await trio.sleep(SLOW_DELAY)
        return Message(payload=b"slow but here")


class Gone(Resource):
    async def render_get(self, request: Message) -> Message:
        raise NotFound("deliberately missing")


class Boom(Resource):
    hidden = True

    async def render_get(self, request: Message) -> Message:
        raise RuntimeError("a bug in a handler")


class Echo(Resource):
    """Answers the request's Uri-Path, Uri-Query and token, so the client can check them."""

    hidden = True

    async def render_get(self, request: Message) -> Message:
        text = "path=" + "/".join(request.opt.uri_path)
        text += " query=" + "&".join(request.opt.uri_query)
        text += " token=" + request.token.hex()
        return Message(payload=text.encode())


class Temperature(Resource):
    rt = "temperature-c"
    if_ = "sensor"
    title = "Temperature"
    obs = True

    async def render_get(self, request: Message) -> Message:
        return Message(payload=b"22.5")


class Humidity(Resource):
    rt = "humidity"
    if_ = "sensor"
    representations = (ContentFormat.TEXT,)

    async def render_get(self, request: Message) -> Message:
        return Message(payload=b"40")


class Secret(Resource):
    hidden = True

    async def render_get(self, request: Message) -> Message:
        return Message(payload=b"not listed")


def make_site() -> tuple[Site, Store]:
    site = Site()
    store = Store()
    site.add(["hello"], Hello())
    site.add(["store"], store)
    site.add(["slow"], Slow())
    site.add(["gone"], Gone())
    site.add(["boom"], Boom())
    site.add(["echo"], Echo())
    site.add(DEEP_PATH, Echo())
    site.add(["sensors", "temp"], Temperature())
    site.add(["sensors", "hum"], Humidity())
    site.add(["secret"], Secret())
    return site, store


#: The links a plain GET /.well-known/core must list, in the order they were added.
LISTED = ["/hello", "/store", "/slow", "/gone", "/sensors/temp", "/sensors/hum"]


@dataclass
class Served:
    ctx: Context
    host: str
    port: int
    store: Store

    def uri(self, path: str) -> str:
        return f"coap://{uri_host(self.host)}:{self.port}{path}"

    @property
    def retransmissions(self) -> int:
        return sum(m.retransmissions for m in self.ctx.statistics.messaging)

    @property
    def handler_errors(self) -> int:
        return self.ctx.statistics.handler_errors


@contextlib.asynccontextmanager
async def serve(host: str = "::1", config: MessagingConfig | None = None) -> AsyncIterator[Served]:
    site, store = make_site()
    async with open_context(bind=(host, 0), site=site, config=config) as ctx:
        yield Served(ctx, host, ctx.addresses[0].port, store)


# -- libcoap's client --------------------------------------------------------------------

_WIRE = re.compile(
    r"^v:1 t:(?P<mtype>CON|NON|ACK|RST) c:(?P<code>\S+) i:(?P<mid>[0-9a-f]{4}) "
    r"\{(?P<token>[0-9a-f]*)\} \[(?P<options>.*?)\](?: :: '(?P<payload>.*)')?$"
)
_STAMP = re.compile(r"^\w{3} +\d+ (\d\d):(\d\d):(\d\d)\.(\d{3}) ")


@dataclass
class Wire:
    """One datagram coap-client printed as sent or received."""

    direction: str  # "sent" or "received"
    mtype: str
    code: str  # "GET", "2.05", "0.00"...
    mid: int
    token: str  # hex
    options: list[str]
    payload: str | None
    at: float | None  # seconds of the day, from the log line before it

    @property
    def empty(self) -> bool:
        return self.code == "0.00"


@dataclass
class ClientRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    payload: bytes | None  # what -o wrote (2.xx payloads only)
    wires: list[Wire] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{' '.join(self.argv)}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"

    @property
    def sent(self) -> list[Wire]:
        return [w for w in self.wires if w.direction == "sent"]

    @property
    def received(self) -> list[Wire]:
        return [w for w in self.wires if w.direction == "received"]

    @property
    def timed_out(self) -> bool:
        return any(line.endswith(" INFO timeout") for line in self.stdout.splitlines())

    @property
    def response(self) -> Wire:
        """The one response (non-empty message) received; fails the test otherwise."""
        responses = [w for w in self.received if not w.empty]
        assert len(responses) == 1, str(self)
        return responses[0]

    @property
    def request(self) -> Wire:
        """The one request sent (libcoap does not retransmit in these tests)."""
        requests = [w for w in self.sent if not w.empty]
        assert len(requests) == 1, str(self)
        return requests[0]


def _parse_wires(log: str) -> list[Wire]:
    wires: list[Wire] = []
    direction: str | None = None
    at: float | None = None
    for line in log.splitlines():
        match = _WIRE.match(line)
        if match is None:
            stamp = _STAMP.match(line)
            at = (
                None
                if stamp is None
                else int(stamp[1]) * 3600 + int(stamp[2]) * 60 + int(stamp[3]) + int(stamp[4]) / 1e3
            )
            direction = (
                "sent" if " : sent " in line else "received" if " : received " in line else None
            )
            continue
        if direction is not None:
            options = match["options"].strip()
            wires.append(
                Wire(
                    direction=direction,
                    mtype=match["mtype"],
                    code=match["code"],
                    mid=int(match["mid"], 16),
                    token=match["token"],
                    options=options.split(", ") if options else [],
                    payload=match["payload"],
                    at=at,
                )
            )
        direction = None
    return wires


async def coap_client(uri: str, *args: str, wait: int = CLIENT_WAIT) -> ClientRun:
    """Run ``coap-client-notls -v 7 -B wait -o FILE *args uri``; bounded by ``wait`` + 10 s."""
    binary = shutil.which(LIBCOAP_CLIENT)
    assert binary is not None, f"{LIBCOAP_CLIENT} is not installed (Debian libcoap3-bin)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "payload"
        argv = [binary, "-v", "7", "-B", str(wait), "-o", str(out), *args, uri]
        with trio.fail_after(wait + 10):
            process = await trio.run_process(
                argv,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        payload = out.read_bytes() if out.exists() else None
    stdout = process.stdout.decode("utf-8", "replace")
    stderr = process.stderr.decode("utf-8", "replace")
    run = ClientRun(argv, process.returncode, stdout, stderr, payload, _parse_wires(stdout))
    assert run.returncode == 0, str(run)
    return run


def assert_piggybacked(run: ClientRun, code: str) -> Wire:
    """One CON request, answered by one ACK with ``code`` and the request's MID and token."""
    request, response = run.request, run.response
    assert request.mtype == "CON", str(run)
    assert response.mtype == "ACK", str(run)
    assert response.code == code, str(run)
    assert response.mid == request.mid, str(run)
    assert response.token == request.token, str(run)
    assert not run.timed_out, str(run)
    return response


def assert_non_answer(run: ClientRun, code: str) -> Wire:
    """One NON request, answered by one NON with ``code`` and the request's token."""
    request, response = run.request, run.response
    assert request.mtype == "NON", str(run)
    assert response.mtype == "NON", str(run)
    assert response.code == code, str(run)
    assert response.token == request.token, str(run)
    assert not [w for w in run.received if w.empty], str(run)
    assert not run.timed_out, str(run)
    return response


def assert_answered(run: ClientRun, code: str, non: bool) -> Wire:
    return assert_non_answer(run, code) if non else assert_piggybacked(run, code)


async def assert_still_serving(server: Served) -> None:
    """The final check of every test: a plain GET, CON, is answered as usual."""
    run = await coap_client(server.uri("/hello"))
    response = assert_piggybacked(run, "2.05")
    assert run.payload == HELLO, str(run)
    assert response.options == ["Content-Format:text/plain"], str(run)


# -- aiocoap's client (in a thread, its own asyncio loop) -------------------------------


@dataclass
class AioRequest:
    method: str
    uri: str
    payload: bytes = b""
    non: bool = False
    #: Options added by number (not through aiocoap's typed accessors).
    raw_options: Sequence[tuple[int, bytes]] = ()
    timeout: float = 5.0


@dataclass
class AioResult:
    code: int = 0
    mtype: int = -1
    payload: bytes = b""
    token: bytes = b""
    location_path: tuple[str, ...] = ()
    content_format: int | None = None
    error: str | None = None


async def _aiocoap_session(requests: Sequence[AioRequest], concurrently: bool) -> list[AioResult]:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:

        async def one(spec: AioRequest) -> AioResult:
            message = aiocoap.Message(
                code=getattr(aiocoap, spec.method),
                uri=spec.uri,
                payload=spec.payload,
                transport_tuning=aiocoap.Unreliable() if spec.non else aiocoap.Reliable(),
            )
            for number, value in spec.raw_options:
                message.opt.add_option(aiocoap.optiontypes.OpaqueOption(number, value))
            try:
                response = await asyncio.wait_for(
                    context.request(message).response, timeout=spec.timeout
                )
            except (TimeoutError, aiocoap.error.Error) as error:
                return AioResult(error=repr(error))
            content_format = response.opt.content_format
            return AioResult(
                code=int(response.code),
                mtype=int(response.mtype),
                payload=response.payload,
                token=response.token,
                location_path=tuple(response.opt.location_path),
                content_format=None if content_format is None else int(content_format),
            )

        if concurrently:
            return list(await asyncio.gather(*(one(spec) for spec in requests)))
        return [await one(spec) for spec in requests]
    finally:
        await asyncio.wait_for(context.shutdown(), timeout=5.0)


async def aiocoap_client(
    requests: Sequence[AioRequest], *, concurrently: bool = False
) -> list[AioResult]:
    """Send ``requests`` with one aiocoap client context (in order, or all at once).

    Runs in a worker thread with its own asyncio loop; every request is bounded
    by its ``timeout``, so the thread always ends.
    """

    def run() -> list[AioResult]:
        return asyncio.run(_aiocoap_session(requests, concurrently))

    return await trio.to_thread.run_sync(run)


# -- a plain socket ----------------------------------------------------------------------


async def raw_exchange(
    host: str,
    port: int,
    datagrams: Sequence[bytes],
    *,
    expect: int,
    timeout: float = 2.0,
    gap: float = 0.0,
    until: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Send ``datagrams`` from one socket (``gap`` s apart); collect the replies
    (decoded by aiocoap). Stops after ``expect`` replies, after a reply for which
    ``until`` is true, or after ``timeout`` (then returns what came).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    replies: list[Any] = []
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind((host, 0))
        await sock.connect((host, port))
        for i, datagram in enumerate(datagrams):
            if i and gap:
                await trio.sleep(gap)
            await sock.send(datagram)
        with trio.move_on_after(timeout):
            for _ in range(64):  # bounded; the deadline normally ends it first
                if len(replies) >= expect:
                    break
                replies.append(aiocoap.Message.decode(await sock.recv(4096)))
                if until is not None and until(replies[-1]):
                    break
    return replies


def _fields(message: Any) -> tuple[Any, ...]:
    """Everything a decoded aiocoap message carries, comparable."""
    options = tuple((int(o.number), o.encode()) for o in message.opt.option_list())
    return (
        int(message.mtype),
        message.mid,
        message.token,
        int(message.code),
        options,
        message.payload,
    )


def aio_request(
    mtype: Any,
    mid: int,
    token: bytes,
    path: Sequence[str],
    *,
    code: Any = aiocoap.GET,
    payload: bytes = b"",
) -> bytes:
    """A request encoded by aiocoap, with the header fields given."""
    message = aiocoap.Message(code=code, payload=payload)
    # (aiocoap deprecates passing these to the constructor: they are the library's)
    message.mtype, message.mid, message.token = mtype, mid, token
    message.opt.uri_path = tuple(path)
    return bytes(message.encode())


# -- libcoap: methods, CON and NON -------------------------------------------------------

TYPES = pytest.mark.parametrize("non", [False, True], ids=["CON", "NON"])


def _type_args(non: bool) -> list[str]:
    return ["-N"] if non else []


async def test_libcoap_get() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri("/hello"))
            response = assert_piggybacked(run, "2.05")
            assert run.payload == HELLO
            assert response.options == ["Content-Format:text/plain"]
            assert response.token == "01"  # libcoap's default token
            assert run.stderr == ""
            await assert_still_serving(server)
            assert server.retransmissions == 0


@TYPES
async def test_libcoap_get_put_post_delete(non: bool) -> None:
    kind = _type_args(non)
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            uri = server.uri("/store")
            got = await coap_client(uri, *kind)
            assert_answered(got, "2.05", non)
            assert got.payload == STORE_INITIAL

            put = await coap_client(uri, *kind, "-m", "put", "-e", "put-value")
            assert_answered(put, "2.04", non)
            assert server.store.value == b"put-value"
            got = await coap_client(uri, *kind)
            assert_answered(got, "2.05", non)
            assert got.payload == b"put-value"

            post = await coap_client(uri, *kind, "-m", "post", "-e", "posted")
            response = assert_answered(post, "2.01", non)
            assert response.options == ["Location-Path:store", "Location-Path:1"], str(post)
            assert server.store.value == b"posted"

            delete = await coap_client(uri, *kind, "-m", "delete")
            assert_answered(delete, "2.02", non)
            assert server.store.value is None
            got = await coap_client(uri, *kind)
            response = assert_answered(got, "4.04", non)
            assert response.payload == "the store is empty", str(got)
            assert "4.04 the store is empty" in got.stderr
            assert got.payload is None  # -o only gets the payload of a success

            await assert_still_serving(server)
            assert server.handler_errors == 0


async def test_libcoap_separate_response_con() -> None:
    """A CON to a resource slower than ack_delay: an empty ACK first, then a CON response,
    which libcoap acknowledges (so the server never retransmits it)."""
    # A short ACK_TIMEOUT: had libcoap's ACK of the response been missed, the server
    # would retransmit it within 0.3 s, inside the 1 s watched below.
    config = MessagingConfig(params=TransmissionParameters(ACK_TIMEOUT=0.2))
    with trio.fail_after(TEST_TIMEOUT):
        async with serve(config=config) as server:
            run = await coap_client(server.uri("/slow"))
            request = run.request
            assert request.mtype == "CON"
            empty_ack, response = run.received
            assert (empty_ack.mtype, empty_ack.code, empty_ack.mid) == ("ACK", "0.00", request.mid)
            assert empty_ack.token == ""
            assert (response.mtype, response.code) == ("CON", "2.05"), str(run)
            assert response.token == request.token
            assert response.mid != request.mid
            assert run.payload == b"slow but here"
            # libcoap acknowledged the separate response.
            acks = [w for w in run.sent if w.mtype == "ACK"]
            assert [(w.code, w.mid) for w in acks] == [("0.00", response.mid)], str(run)
            # Timing, from libcoap's millisecond timestamps.
            assert request.at is not None
            assert empty_ack.at is not None
            assert response.at is not None
            assert empty_ack.at - request.at < ACK_DELAY + 0.3, str(run)
            assert response.at - request.at >= SLOW_DELAY - 0.05, str(run)
            await trio.sleep(1.0)
            assert server.retransmissions == 0
            await assert_still_serving(server)


async def test_libcoap_slow_non_gets_one_non_response() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri("/slow"), "-N")
            response = assert_non_answer(run, "2.05")  # no empty ACK to a NON
            assert run.payload == b"slow but here"
            assert response.mid != run.request.mid
            await assert_still_serving(server)


# -- libcoap: error responses ------------------------------------------------------------


@TYPES
async def test_libcoap_not_found(non: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            missing = await coap_client(server.uri("/no/such/thing"), *_type_args(non))
            response = assert_answered(missing, "4.04", non)
            assert response.payload is None  # the Site's 4.04 carries no diagnostic

            raised = await coap_client(server.uri("/gone"), *_type_args(non))
            response = assert_answered(raised, "4.04", non)
            assert response.payload == "deliberately missing"
            assert response.options == ["Content-Format:text/plain"]

            # A prefix of a registered path is no resource either.
            prefix = await coap_client(server.uri("/sensors"), *_type_args(non))
            assert_answered(prefix, "4.04", non)
            await assert_still_serving(server)


@TYPES
async def test_libcoap_method_not_allowed(non: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            for method in ("put", "post", "delete"):
                run = await coap_client(server.uri("/hello"), *_type_args(non), "-m", method)
                response = assert_answered(run, "4.05", non)
                assert response.payload == f"{method.upper()} is not allowed here", str(run)
                assert run.payload is None
            await assert_still_serving(server)


async def test_libcoap_accept() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            text = await coap_client(server.uri("/hello"), "-A", "0")
            assert "Accept:text/plain" in text.request.options, str(text)
            response = assert_piggybacked(text, "2.05")
            assert response.options == ["Content-Format:text/plain"]
            assert text.payload == HELLO
            json = await coap_client(server.uri("/hello"), "-A", "50")
            response = assert_piggybacked(json, "4.06")
            assert response.payload == "no representation in Content-Format 50", str(json)
            await assert_still_serving(server)


async def test_libcoap_unknown_critical_option_con_gets_bad_option() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri("/hello"), "-O", f"{UNKNOWN_CRITICAL},x")
            assert f"{UNKNOWN_CRITICAL}:" in run.request.options[-1], str(run)
            assert_piggybacked(run, "4.02")
            assert "4.02" in run.stderr
            # Also on a path that does not exist: the option is checked first.
            run = await coap_client(server.uri("/nowhere"), "-O", f"{UNKNOWN_CRITICAL},x")
            assert_piggybacked(run, "4.02")
            # An unknown *elective* option is ignored.
            run = await coap_client(server.uri("/hello"), "-O", f"{UNKNOWN_ELECTIVE},x")
            assert_piggybacked(run, "2.05")
            assert run.payload == HELLO
            await assert_still_serving(server)
            assert server.handler_errors == 0


async def test_libcoap_unknown_critical_option_non_is_ignored() -> None:
    """RFC 7252 §5.4.1: a NON with an unrecognized critical option is rejected silently
    (no 4.02; an RST would be allowed but is not sent)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(
                server.uri("/hello"), "-N", "-O", f"{UNKNOWN_CRITICAL},x", wait=SILENCE_WAIT
            )
            assert run.request.mtype == "NON"
            assert not [w for w in run.received if w.code != "0.00" or w.mtype != "RST"], str(run)
            assert run.timed_out, str(run)
            await assert_still_serving(server)


async def test_libcoap_no_response_option() -> None:
    """RFC 7967 No-Response (258): the suppressed classes get no response; a CON gets
    its empty ACK only."""
    runs: dict[str, ClientRun] = {}
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:

            async def client(name: str, path: str, *args: str) -> None:
                runs[name] = await coap_client(server.uri(path), *args, wait=SILENCE_WAIT)

            async with trio.open_nursery() as nursery:  # the silent ones wait in parallel
                nursery.start_soon(client, "non 2.xx", "/hello", "-N", "-O", "258,0x02")
                nursery.start_soon(client, "non 5.xx", "/boom", "-N", "-O", "258,0x10")
                nursery.start_soon(client, "con 2.xx", "/hello", "-O", "258,0x02")
                nursery.start_soon(client, "non 5.xx ok", "/hello", "-N", "-O", "258,0x10")
                nursery.start_soon(client, "non 2.xx err", "/gone", "-N", "-O", "258,0x02")
            for name in ("non 2.xx", "non 5.xx"):
                assert runs[name].received == [], str(runs[name])
                assert runs[name].timed_out, str(runs[name])
            con = runs["con 2.xx"]
            assert [(w.mtype, w.code, w.mid) for w in con.received] == [
                ("ACK", "0.00", con.request.mid)
            ], str(con)
            assert_non_answer(runs["non 5.xx ok"], "2.05")
            assert_non_answer(runs["non 2.xx err"], "4.04")
            assert server.handler_errors == 1
            await assert_still_serving(server)


async def test_libcoap_observe_on_resource_without_observation() -> None:
    """Observe is elective: a resource that does not support it answers a plain 2.05
    (without Observe), which ends libcoap's observation at once."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri("/sensors/temp"), "-s", "2")
            assert "Observe:0" in run.request.options, str(run)
            response = assert_piggybacked(run, "2.05")
            assert not [o for o in response.options if o.startswith("Observe")], str(run)
            assert run.payload == b"22.5"
            await assert_still_serving(server)


async def test_libcoap_handler_exception_is_internal_server_error() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri("/boom"))
            response = assert_piggybacked(run, "5.00")
            assert response.payload is None  # no details on the wire
            assert server.handler_errors == 1
            await assert_still_serving(server)


# -- libcoap: discovery ------------------------------------------------------------------


def _links(text: str | None) -> dict[str, list[list[Any]]]:
    """href -> attribute pairs, parsed by aiocoap (not by the code under test)."""
    if not text:
        return {}
    return {link.href: link.attr_pairs for link in aiocoap.util.linkformat.parse(text).links}


async def _discover(server: Served, query: str = "") -> dict[str, list[list[Any]]]:
    run = await coap_client(server.uri("/.well-known/core" + query))
    response = assert_piggybacked(run, "2.05")
    assert response.options == ["Content-Format:application/link-format"], str(run)
    text = run.payload.decode() if run.payload else None
    assert text == response.payload, str(run)
    return _links(text)


async def test_libcoap_discovery() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            links = await _discover(server)
            assert list(links) == LISTED  # no hidden ones, not /.well-known/core itself
            assert links["/hello"] == [["rt", "test.hello"], ["title", "Hello"], ["ct", "0"]]
            assert links["/sensors/temp"] == [
                ["rt", "temperature-c"],
                ["if", "sensor"],
                ["title", "Temperature"],
                ["obs", None],
            ]
            assert links["/sensors/hum"] == [["rt", "humidity"], ["if", "sensor"], ["ct", "0"]]
            assert links["/slow"] == []

            assert list(await _discover(server, "?rt=temperature-c")) == ["/sensors/temp"]
            assert list(await _discover(server, "?rt=temp*")) == ["/sensors/temp"]
            assert list(await _discover(server, "?if=sensor")) == ["/sensors/temp", "/sensors/hum"]
            assert list(await _discover(server, "?href=/slow")) == ["/slow"]
            assert list(await _discover(server, "?href=/sensors/*")) == [
                "/sensors/temp",
                "/sensors/hum",
            ]
            assert list(await _discover(server, "?ct=0")) == ["/hello", "/sensors/hum"]
            assert list(await _discover(server, "?title=Hello")) == ["/hello"]
            assert await _discover(server, "?rt=no-such-type") == {}
            assert await _discover(server, "?href=/secret") == {}  # hidden stays hidden
            await assert_still_serving(server)


# -- libcoap: URI options and tokens -----------------------------------------------------


@TYPES
async def test_libcoap_ten_path_segments_and_ten_query_items(non: bool) -> None:
    path = "/" + "/".join(DEEP_PATH)
    query = "?" + "&".join(QUERY_ITEMS)
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri(path + query), *_type_args(non))
            request = run.request
            assert [o for o in request.options if o.startswith("Uri-Path:")] == [
                f"Uri-Path:{s}" for s in DEEP_PATH
            ], str(run)
            assert [o for o in request.options if o.startswith("Uri-Query:")] == [
                f"Uri-Query:{q}" for q in QUERY_ITEMS
            ], str(run)
            assert_answered(run, "2.05", non)
            assert (
                run.payload
                == (f"path={'/'.join(DEEP_PATH)} query={'&'.join(QUERY_ITEMS)} token=01").encode()
            )

            query_only = await coap_client(server.uri("/echo" + query), *_type_args(non))
            assert_answered(query_only, "2.05", non)
            assert (
                query_only.payload == f"path=echo query={'&'.join(QUERY_ITEMS)} token=01".encode()
            )

            # Nine of the ten segments name nothing.
            shorter = await coap_client(server.uri("/" + "/".join(DEEP_PATH[:-1])))
            assert_piggybacked(shorter, "4.04")
            await assert_still_serving(server)


async def test_libcoap_percent_encoded_uri() -> None:
    """libcoap percent-decodes before sending; the server sees the decoded segments."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri("/ech%6F?a%26b=c%3Dd&%C3%A9=1"))
            assert_piggybacked(run, "2.05")
            assert run.payload == "path=echo query=a&b=c=d&\u00e9=1 token=01".encode()
            await assert_still_serving(server)


@TYPES
async def test_libcoap_eight_byte_token(non: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            run = await coap_client(server.uri("/echo"), *_type_args(non), "-T", "abcdefgh")
            request = run.request
            assert len(bytes.fromhex(request.token)) == 8, str(run)
            response = assert_answered(run, "2.05", non)
            assert response.token == request.token
            assert run.payload == f"path=echo query= token={request.token}".encode()
            await assert_still_serving(server)


async def test_libcoap_over_ipv4() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve("127.0.0.1") as server:
            assert server.uri("/hello").startswith("coap://127.0.0.1:")
            con = await coap_client(server.uri("/hello"))
            assert_piggybacked(con, "2.05")
            assert con.payload == HELLO
            non = await coap_client(server.uri("/hello"), "-N")
            assert_non_answer(non, "2.05")
            # Uri-Host (critical) naming the server some other way: accepted (no
            # virtual hosting), as libcoap sends it for any URI with a host name.
            named = await coap_client(server.uri("/hello"), "-O", "3,coap.example")
            assert "Uri-Host:coap.example" in named.request.options, str(named)
            assert_piggybacked(named, "2.05")
            assert named.payload == HELLO
            await assert_still_serving(server)


# -- a plain socket: the empty token -----------------------------------------------------


async def test_empty_token_con_and_non() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            con, non = 0x1234, 0x1235
            replies = await raw_exchange(
                server.host,
                server.port,
                [
                    aio_request(aiocoap.CON, con, b"", ["echo"]),
                    aio_request(aiocoap.NON, non, b"", ["echo"]),
                ],
                expect=2,
            )
            assert len(replies) == 2, replies
            by_type = {int(r.mtype): r for r in replies}
            ack, non_reply = by_type[int(aiocoap.ACK)], by_type[int(aiocoap.NON)]
            assert ack.mid == con
            assert ack.code == aiocoap.CONTENT
            assert ack.token == b""
            assert ack.payload == b"path=echo query= token="
            assert non_reply.code == aiocoap.CONTENT
            assert non_reply.token == b""
            assert non_reply.payload == b"path=echo query= token="
            # An empty token on a slow resource: empty ACK, then a separate CON response.
            replies = await raw_exchange(
                server.host,
                server.port,
                [aio_request(aiocoap.CON, 0x2000, b"", ["slow"])],
                expect=2,
            )
            assert [(int(r.mtype), r.code, r.token) for r in replies] == [
                (int(aiocoap.ACK), aiocoap.EMPTY, b""),
                (int(aiocoap.CON), aiocoap.CONTENT, b""),
            ], replies
            await assert_still_serving(server)


async def test_duplicates_are_processed_once() -> None:
    """RFC 7252 §4.5: a retransmitted CON gets the same ACK again without running the
    handler again; a duplicate of a slow CON gets at most an empty ACK (one response)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            post = aio_request(
                aiocoap.CON, 0x3000, b"dup", ["store"], code=aiocoap.POST, payload=b"once"
            )
            replies = await raw_exchange(server.host, server.port, [post, post], expect=2, gap=0.05)
            assert len(replies) == 2, replies
            assert _fields(replies[0]) == _fields(replies[1])
            assert (int(replies[0].mtype), replies[0].code, replies[0].mid) == (
                int(aiocoap.ACK),
                aiocoap.CREATED,
                0x3000,
            )
            assert server.store.posts == 1

            non = aio_request(
                aiocoap.NON, 0x3001, b"dupn", ["store"], code=aiocoap.POST, payload=b"non"
            )
            replies = await raw_exchange(
                server.host, server.port, [non, non], expect=2, gap=0.05, timeout=0.5
            )
            assert replies, "the NON POST was not answered"
            assert {r.code for r in replies} == {aiocoap.CREATED}, replies
            assert server.store.posts == 2  # handled once

            # A retransmission while the slow handler runs, and one after its empty ACK.
            slow = aio_request(aiocoap.CON, 0x3002, b"dups", ["slow"])
            replies = await raw_exchange(
                server.host,
                server.port,
                [slow, slow, slow],
                expect=8,
                gap=0.08,
                timeout=2.0,
                until=lambda reply: reply.code != aiocoap.EMPTY,
            )
            responses = [r for r in replies if r.code != aiocoap.EMPTY]
            assert [(int(r.mtype), r.token, r.payload) for r in responses] == [
                (int(aiocoap.CON), b"dups", b"slow but here")
            ], replies
            empties = [r for r in replies if r.code == aiocoap.EMPTY]
            assert empties, replies
            assert {(int(r.mtype), r.mid) for r in empties} == {(int(aiocoap.ACK), 0x3002)}
            await assert_still_serving(server)


# -- aiocoap's client --------------------------------------------------------------------


@TYPES
async def test_aiocoap_get_put_post_delete(non: bool) -> None:
    expected_type = int(aiocoap.NON if non else aiocoap.ACK)
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            uri = server.uri("/store")
            results = await aiocoap_client(
                [
                    AioRequest("GET", uri, non=non),
                    AioRequest("PUT", uri, b"put by aiocoap", non=non),
                    AioRequest("GET", uri, non=non),
                    AioRequest("POST", uri, b"posted by aiocoap", non=non),
                    AioRequest("GET", uri, non=non),
                    AioRequest("DELETE", uri, non=non),
                    AioRequest("GET", uri, non=non),
                    AioRequest("GET", server.uri("/hello"), non=non),
                ]
            )
            assert [r.error for r in results] == [None] * len(results), results
            assert [r.mtype for r in results] == [expected_type] * len(results), results
            assert [(r.code, r.payload) for r in results] == [
                (int(aiocoap.CONTENT), STORE_INITIAL),
                (int(aiocoap.CHANGED), b""),
                (int(aiocoap.CONTENT), b"put by aiocoap"),
                (int(aiocoap.CREATED), b""),
                (int(aiocoap.CONTENT), b"posted by aiocoap"),
                (int(aiocoap.DELETED), b""),
                (int(aiocoap.NOT_FOUND), b"the store is empty"),
                (int(aiocoap.CONTENT), HELLO),
            ]
            assert results[3].location_path == ("store", "1")
            assert results[6].content_format == 0
            assert results[7].content_format == 0
            await assert_still_serving(server)


@TYPES
async def test_aiocoap_slow_resource(non: bool) -> None:
    """CON: aiocoap gets the empty ACK, then the separate CON response; NON: a NON."""
    config = MessagingConfig(params=TransmissionParameters(ACK_TIMEOUT=0.2))
    with trio.fail_after(TEST_TIMEOUT):
        async with serve(config=config) as server:
            started = trio.current_time()
            (result,) = await aiocoap_client([AioRequest("GET", server.uri("/slow"), non=non)])
            elapsed = trio.current_time() - started
            assert result.error is None, result
            assert result.code == int(aiocoap.CONTENT)
            assert result.payload == b"slow but here"
            assert result.mtype == int(aiocoap.NON if non else aiocoap.CON)
            assert elapsed >= SLOW_DELAY
            await trio.sleep(1.0)  # a separate response aiocoap did not ACK would be resent
            assert server.retransmissions == 0
            await assert_still_serving(server)


async def test_aiocoap_error_responses() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            results = await aiocoap_client(
                [
                    AioRequest("GET", server.uri("/no/such/thing")),
                    AioRequest("GET", server.uri("/gone")),
                    AioRequest("PUT", server.uri("/hello"), b"x"),
                    AioRequest("POST", server.uri("/hello"), b"x", non=True),
                    AioRequest("DELETE", server.uri("/hello")),
                    AioRequest("GET", server.uri("/hello"), raw_options=[(UNKNOWN_CRITICAL, b"x")]),
                    AioRequest("GET", server.uri("/hello"), raw_options=[(UNKNOWN_ELECTIVE, b"x")]),
                    AioRequest("GET", server.uri("/boom")),
                    # RFC 7252 §5.4.3: a length outside the option's range (Uri-Query:
                    # 0-255) makes it unrecognized, and Uri-Query is critical: 4.02.
                    AioRequest("GET", server.uri("/echo?x=" + "a" * 254)),
                    # Proxy-Uri (1-1034 bytes; two extended-length bytes here): 5.05.
                    AioRequest(
                        "GET",
                        server.uri("/hello"),
                        raw_options=[(35, b"coap://example.com/" + b"p" * 300)],
                    ),
                ]
            )
            assert [r.error for r in results] == [None] * len(results), results
            assert [(r.code, r.payload) for r in results] == [
                (int(aiocoap.NOT_FOUND), b""),
                (int(aiocoap.NOT_FOUND), b"deliberately missing"),
                (int(aiocoap.METHOD_NOT_ALLOWED), b"PUT is not allowed here"),
                (int(aiocoap.METHOD_NOT_ALLOWED), b"POST is not allowed here"),
                (int(aiocoap.METHOD_NOT_ALLOWED), b"DELETE is not allowed here"),
                (int(aiocoap.BAD_OPTION), b"unrecognized critical option"),
                (int(aiocoap.CONTENT), HELLO),
                (int(aiocoap.INTERNAL_SERVER_ERROR), b""),
                (int(aiocoap.BAD_OPTION), b"unrecognized critical option"),
                (int(aiocoap.PROXYING_NOT_SUPPORTED), b""),
            ]
            assert results[3].mtype == int(aiocoap.NON)
            assert server.handler_errors == 1
            await assert_still_serving(server)


async def test_aiocoap_discovery() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            wkc = server.uri("/.well-known/core")
            queries = ["", "?rt=humidity", "?href=/hello", "?href=/sensors/*", "?if=nothing"]
            results = await aiocoap_client([AioRequest("GET", wkc + q) for q in queries])
            assert [r.error for r in results] == [None] * len(results), results
            assert {r.code for r in results} == {int(aiocoap.CONTENT)}, results
            assert {r.content_format for r in results} == {40}, results
            hrefs = [list(_links(r.payload.decode())) for r in results]
            assert hrefs == [
                LISTED,
                ["/sensors/hum"],
                ["/hello"],
                ["/sensors/temp", "/sensors/hum"],
                [],
            ]
            await assert_still_serving(server)


async def test_aiocoap_uri_options_and_concurrent_requests() -> None:
    path = "/" + "/".join(DEEP_PATH)
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            requests = [
                AioRequest("GET", server.uri(f"{path}?n={i}&" + "&".join(QUERY_ITEMS)))
                for i in range(20)
            ]
            requests += [AioRequest("GET", server.uri("/slow"), non=True) for _ in range(4)]
            # A Uri-Query of 255 bytes: the longest RFC 7252 allows.
            requests.append(AioRequest("GET", server.uri("/echo?x=" + "a" * 253)))
            results = await aiocoap_client(requests, concurrently=True)
            assert [r.error for r in results] == [None] * len(results), results
            for i, result in enumerate(results[:20]):
                assert result.code == int(aiocoap.CONTENT)
                query = "&".join((f"n={i}", *QUERY_ITEMS))
                expected = f"path={'/'.join(DEEP_PATH)} query={query} token={result.token.hex()}"
                assert result.payload == expected.encode()
            assert [r.payload for r in results[20:24]] == [b"slow but here"] * 4
            long_query = results[24]
            assert long_query.code == int(aiocoap.CONTENT)
            assert long_query.payload == (
                f"path=echo query=x={'a' * 253} token={long_query.token.hex()}".encode()
            )
            await assert_still_serving(server)


# -- survival --------------------------------------------------------------------------

GARBAGE: list[bytes] = [
    b"",  # empty datagram
    b"\x40",  # shorter than a header
    b"\x80\x01\x00\x01",  # version 2
    b"\x49\x01\x00\x02",  # TKL 9 (reserved)
    b"\x48\x01\x00\x03abc",  # token longer than the datagram
    b"\x40\x01\x00\x04\xff",  # payload marker without payload
    b"\x40\x01\x00\x05\xf0",  # option delta 15 (reserved)
    b"\x40\x01\x00\x06\xbd",  # option length 13: the extended length byte is missing
    b"\x40\x01\x00\x07\x0d\x05abc",  # option length past the end
    b"\x60\x00\x00\x08",  # unsolicited empty ACK
    b"\x70\x00\x00\x09",  # unsolicited RST
    b"\x60\x45\x00\x0a\x01",  # ACK with a code that is no request and a token
    b"\x40\x45\x00\x0b",  # a CON "request" carrying a response code
    b"\x50\x45\x00\x0c",  # a NON response nobody asked for
    b"\x40\xe0\x00\x0d",  # a CON with a signaling code (7.00)
    bytes(range(256)) * 4,  # noise
]


async def test_server_survives_everything() -> None:
    """Garbage, silence-worthy requests, handler errors, a burst from both clients:
    after all of it the server still answers every client normally."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as server:
            # Garbage from a plain socket; whatever it answers (RSTs) is not checked here.
            await raw_exchange(server.host, server.port, GARBAGE, expect=len(GARBAGE), timeout=0.5)
            # A CoAP ping (empty CON) is answered with an RST.
            (pong,) = await raw_exchange(server.host, server.port, [b"\x40\x00\xbe\xef"], expect=1)
            assert (int(pong.mtype), pong.code, pong.mid) == (
                int(aiocoap.RST),
                aiocoap.EMPTY,
                0xBEEF,
            )

            await coap_client(server.uri("/boom"))
            await coap_client(server.uri("/hello"), "-O", f"{UNKNOWN_CRITICAL},x")
            await coap_client(
                server.uri("/hello"), "-N", "-O", f"{UNKNOWN_CRITICAL},x", wait=SILENCE_WAIT
            )
            await coap_client(server.uri("/" + "/".join(DEEP_PATH) + "?" + "&".join(QUERY_ITEMS)))

            # Both clients at once: 4 libcoap processes and 20 aiocoap requests.
            outcomes: dict[str, Any] = {}

            async def libcoap(i: int) -> None:
                outcomes[f"libcoap{i}"] = await coap_client(server.uri("/hello"))

            async def aiocoap_burst() -> None:
                requests = [AioRequest("GET", server.uri("/hello")) for _ in range(20)]
                outcomes["aiocoap"] = await aiocoap_client(requests, concurrently=True)

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(libcoap, i)
                nursery.start_soon(aiocoap_burst)
            for i in range(4):
                run = outcomes[f"libcoap{i}"]
                assert_piggybacked(run, "2.05")
                assert run.payload == HELLO
            assert [(r.code, r.payload) for r in outcomes["aiocoap"]] == [
                (int(aiocoap.CONTENT), HELLO)
            ] * 20

            # The final checks: both clients, CON and NON.
            await assert_still_serving(server)
            non = await coap_client(server.uri("/hello"), "-N")
            assert_non_answer(non, "2.05")
            final = await aiocoap_client(
                [
                    AioRequest("GET", server.uri("/hello")),
                    AioRequest("GET", server.uri("/hello"), non=True),
                ]
            )
            assert [(r.code, r.payload) for r in final] == [(int(aiocoap.CONTENT), HELLO)] * 2
            stats = server.ctx.statistics
            assert stats.handler_errors == 1  # /boom
            assert stats.overloaded_responses == 0
            assert stats.dropped_requests == 0
            assert sum(m.malformed for m in stats.messaging) > 0
