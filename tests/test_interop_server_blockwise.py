"""coap_trio's server-side block-wise transfers (RFC 7959) against real clients on loopback.

Clients: libcoap's ``coap-client-notls`` (``-b`` sets its block size, ``-f``
uploads a file with Block1) and aiocoap's client, which fetches Block2
responses and sends large request payloads with Block1 on its own. The
helpers that run them (and parse libcoap's ``-v 7`` log into datagrams) come
from ``test_interop_server``. The server binds ``::1`` on a port the OS picks;
every test runs under ``trio.fail_after`` with the real clock and checks the
bytes that arrived (a SHA-256 of the whole body) and what the wire showed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from interop_helpers import uri_host
from test_interop_server import AioRequest, ClientRun, aiocoap_client, coap_client

from coap_trio.context import Context, open_context
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.observable import ObservableResource
from coap_trio.resource import Resource, Site

TEST_TIMEOUT = 30.0
#: Eleven 1024-byte blocks and a short twelfth one. Printable and without
#: newlines, so that libcoap's log prints each datagram on one line.
BODY = b"".join(b"item %05d; " % n for n in range(1000)) + b"the end."


def sha(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


class Big(Resource):
    """GET returns :attr:`body`; PUT replaces it; POST answers the body reversed, twice."""

    def __init__(self) -> None:
        self.body = BODY
        self.renders = 0
        self.puts: list[bytes] = []

    async def render_get(self, request: Message) -> Message:
        self.renders += 1
        return Message(code=Code.CONTENT, payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.puts.append(request.payload)
        self.body = request.payload
        return Message(code=Code.CHANGED)

    async def render_post(self, request: Message) -> Message:
        return Message(code=Code.CHANGED, payload=request.payload[::-1] * 2)


@asynccontextmanager
async def serve() -> AsyncIterator[tuple[Context, Big, str]]:
    site = Site()
    big = Big()
    site.add(["big"], big)
    async with open_context(bind=("::1", 0), site=site) as ctx:
        yield ctx, big, f"coap://{uri_host('::1')}:{ctx.addresses[0].port}/big"


def options_of(run: ClientRun, direction: str) -> list[list[str]]:
    """The options of the non-empty datagrams libcoap sent or received, in order."""
    wires = run.sent if direction == "sent" else run.received
    return [w.options for w in wires if not w.empty]


def option(options: list[str], name: str) -> str | None:
    found = [o.split(":", 1)[1] for o in options if o.startswith(name + ":")]
    return found[0] if found else None


async def test_libcoap_gets_a_large_resource_block_by_block() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as (ctx, big, uri):
            run = await coap_client(uri, "-b", "1024")
            stats = ctx.statistics
    assert sha(run.payload) == sha(BODY)
    received = options_of(run, "received")
    blocks = [option(o, "Block2") for o in received]
    last = (len(BODY) - 1) // 1024
    assert blocks[: last + 1] == [f"{n}/M/1024" for n in range(last)] + [f"{last}/_/1024"]
    assert option(received[0], "Size2") == str(len(BODY))
    assert len({option(o, "ETag") for o in received}) == 1  # one representation
    assert big.renders == 1
    assert stats.cached_representations == 1


async def test_libcoap_with_small_blocks_early_negotiation() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as (_, big, uri):
            run = await coap_client(uri, "-b", "64")
    assert sha(run.payload) == sha(BODY)
    sent = [option(o, "Block2") for o in options_of(run, "sent")]
    assert sent[0] == "0/_/64"
    assert len(sent) == -(-len(BODY) // 64)
    assert big.renders == 1


async def test_libcoap_puts_a_file_with_block1() -> None:
    data = os.urandom(5000)
    with trio.fail_after(TEST_TIMEOUT), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        async with serve() as (ctx, big, uri):
            run = await coap_client(uri, "-b", "1024", "-m", "put", "-f", str(path))
            back = await coap_client(uri, "-b", "1024")
            stats = ctx.statistics
    assert [sha(p) for p in big.puts] == [sha(data)]
    responses = [w for w in run.received if not w.empty]
    assert [w.code for w in responses] == ["2.31"] * 4 + ["2.04"]
    assert [option(w.options, "Block1") for w in responses] == [
        "0/M/1024",
        "1/M/1024",
        "2/M/1024",
        "3/M/1024",
        "4/_/1024",
    ]
    assert sha(back.payload) == sha(data)
    assert (stats.blockwise_uploads_completed, stats.blockwise_assemblies) == (1, 0)


async def test_aiocoap_gets_and_puts_large_bodies() -> None:
    data = os.urandom(7000)
    with trio.fail_after(TEST_TIMEOUT):
        async with serve() as (ctx, big, uri):
            got, put, got_back, posted = await aiocoap_client(
                [
                    AioRequest("GET", uri),
                    AioRequest("PUT", uri, payload=data),
                    AioRequest("GET", uri),
                    AioRequest("POST", uri, payload=data[:3000]),
                ]
            )
            stats = ctx.statistics
    assert got.error is None, got.error
    assert got.code == int(Code.CONTENT)
    assert sha(got.payload) == sha(BODY)
    assert put.code == int(Code.CHANGED), put
    assert [sha(p) for p in big.puts] == [sha(data)]
    assert sha(got_back.payload) == sha(data)
    # RFC 7959 §2.7: a Block1 POST whose response needs Block2 too.
    assert posted.code == int(Code.CHANGED), posted
    assert sha(posted.payload) == sha(data[:3000][::-1] * 2)
    assert stats.blockwise_uploads_completed == 2
    assert stats.handler_errors == 0


class Echo(Resource):
    """FETCH: the body twice, then its length (a representation selected by the body)."""

    def __init__(self) -> None:
        self.renders = 0

    async def render_fetch(self, request: Message) -> Message:
        self.renders += 1
        return Message(code=Code.CONTENT, payload=Echo.answer(request.payload))

    @staticmethod
    def answer(body: bytes) -> bytes:
        return body * 2 + b"|%d" % len(body)


#: A FETCH body that fits in one request, and one that goes up in Block1 blocks
#: (printable, without newlines: libcoap's log prints each datagram on one line).
FETCH_BODIES = (BODY[:1000], BODY[:3000])


@asynccontextmanager
async def serve_echo() -> AsyncIterator[tuple[Echo, str]]:
    site = Site()
    echo = Echo()
    site.add(["echo"], echo)
    async with open_context(bind=("::1", 0), site=site) as ctx:
        yield echo, f"coap://{uri_host('::1')}:{ctx.addresses[0].port}/echo"


async def test_aiocoap_fetches_with_block2_requests_without_the_body() -> None:
    # aiocoap asks for the later blocks without payload, whether the body went in
    # one request or in Block1 blocks: served from the representation kept.
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_echo() as (echo, uri):
            results = await aiocoap_client(
                [AioRequest("FETCH", uri, payload=b) for b in FETCH_BODIES]
            )
    for body, result in zip(FETCH_BODIES, results, strict=True):
        assert result.error is None, result.error
        assert result.code == int(Code.CONTENT), result
        assert sha(result.payload) == sha(Echo.answer(body))
    assert echo.renders == 2


async def test_libcoap_fetches_with_block2_requests_without_the_body() -> None:
    with trio.fail_after(TEST_TIMEOUT), tempfile.TemporaryDirectory() as tmp:
        async with serve_echo() as (echo, uri):
            runs = []
            for n, body in enumerate(FETCH_BODIES):
                path = Path(tmp) / f"body{n}"
                path.write_bytes(body)
                runs.append(await coap_client(uri, "-b", "1024", "-m", "fetch", "-f", str(path)))
    for body, run in zip(FETCH_BODIES, runs, strict=True):
        assert sha(run.payload) == sha(Echo.answer(body))
        sent = [w for w in run.sent if not w.empty]
        later = [w for w in sent if option(w.options, "Block2") not in (None, "0/_/1024")]
        assert later, str(run)
        assert all(w.payload is None and option(w.options, "Block1") is None for w in later)
    assert echo.renders == 2


class Feed(ObservableResource):
    """An observable representation of 3300 bytes (4 blocks) that changes on :meth:`tick`."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    @staticmethod
    def body(version: int) -> bytes:
        return b"".join(b"v%03d-%05d;" % (version, i) for i in range(300))

    def tick(self) -> None:
        self.version += 1
        self.updated_state()

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=self.body(self.version))


async def test_libcoap_observes_a_large_resource_fetching_the_rest_of_each_notification() -> None:
    site = Site()
    feed = Feed()
    site.add(["feed"], feed)
    size = len(Feed.body(0))
    with trio.fail_after(TEST_TIMEOUT):
        async with open_context(bind=("::1", 0), site=site) as ctx, trio.open_nursery() as nursery:
            uri = f"coap://{uri_host('::1')}:{ctx.addresses[0].port}/feed"

            async def change() -> None:
                for _ in range(3):
                    await trio.sleep(0.5)
                    feed.tick()

            nursery.start_soon(change)
            # -s 3: observe for three seconds, printing each whole representation to -o.
            run = await coap_client(uri, "-b", "1024", "-s", "3", wait=3)
    assert run.payload is not None
    assert len(run.payload) % size == 0
    versions = []
    for start in range(0, len(run.payload), size):
        chunk = run.payload[start : start + size]
        version = int(chunk[1:4])
        assert chunk == Feed.body(version)  # each one whole, from one representation
        versions.append(version)
    assert versions[0] == 0
    assert len(versions) >= 3
    assert versions == sorted(set(versions))
    notifications = [
        w for w in run.received if not w.empty and option(w.options, "Observe") is not None
    ]
    assert all(option(w.options, "Block2") == "0/M/1024" for w in notifications)
    assert all(option(w.options, "Size2") == str(size) for w in notifications)
