"""coap_trio's client against real peers over loopback UDP.

Peers (see :mod:`interop_helpers`): libcoap's ``coap-server-notls`` (4.3.x,
Debian libcoap3-bin; required, never skipped) and an in-process aiocoap
server running in its own thread and asyncio loop. Every test starts its own
peer on a port the OS picked, on ``::1`` (one test on ``127.0.0.1``), runs
under ``trio.fail_after`` with the real clock, and stops the peer on exit.

What coap-server-notls 4.3.1 serves and this file relies on: ``/`` (2.05, a
text starting with :data:`LIBCOAP_INDEX_PREFIX`, Max-Age 0x2FFFF), ``/time``
(2.05, the server's clock as text; ``?ticks``: seconds as digits),
``/async?N`` (answers ``done`` after N seconds: a separate response to a CON),
``/example_data`` (PUT stores: 2.01 the first time, 2.04 after; GET returns
what was stored). Before any PUT, ``/example_data`` holds 1500 bytes and
answers block-wise (Block2 with Size2); the tests here PUT small values
first so that each exchange is a single message. Block-wise transfers
against these peers are tested in ``test_interop_client_blockwise.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
from interop_helpers import (
    AIOCOAP_FIXED_PAYLOAD,
    AIOCOAP_SLOW_DELAY,
    LIBCOAP_INDEX_PREFIX,
    AiocoapServer,
    LibcoapServer,
    aiocoap_server,
    libcoap_server,
)

from coap_trio import CON, GET, NON, PUT, Message
from coap_trio.context import Context, open_context
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type

#: Per-test bound: peer start-up (milliseconds) plus the exchanges, with ample margin.
TEST_TIMEOUT = 15.0

#: libcoap sends Max-Age 0x2FFFF with ``/``.
LIBCOAP_INDEX_MAX_AGE = 0x2FFFF


@contextlib.asynccontextmanager
async def libcoap_and_client(host: str = "::1") -> AsyncIterator[tuple[LibcoapServer, Context]]:
    async with libcoap_server(host) as server, open_context() as ctx:
        yield server, ctx


@contextlib.asynccontextmanager
async def aiocoap_and_client() -> AsyncIterator[tuple[AiocoapServer, Context]]:
    async with aiocoap_server("::1") as server, open_context() as ctx:
        yield server, ctx


def retransmissions(ctx: Context) -> int:
    return sum(m.retransmissions for m in ctx.statistics.messaging)


# -- against libcoap's coap-server-notls ---------------------------------------------------


async def test_libcoap_get_root() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            response = await ctx.get(server.uri("/"))
    assert response.code is Code.CONTENT
    assert response.payload.startswith(LIBCOAP_INDEX_PREFIX)
    assert response.opt.max_age == LIBCOAP_INDEX_MAX_AGE
    assert response.mtype is Type.ACK  # piggybacked on the ACK of our CON


async def test_libcoap_put_then_get_example_data() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            uri = server.uri("/example_data")
            first = await ctx.put(uri, payload=b"first value")
            got_first = await ctx.get(uri)
            second = await ctx.put(uri, payload=b"second, longer value \xff\x00")
            got_second = await ctx.get(uri)
    assert first.code in (Code.CREATED, Code.CHANGED)
    assert second.code is Code.CHANGED
    assert got_first.code is Code.CONTENT
    assert got_first.payload == b"first value"
    assert got_second.code is Code.CONTENT
    assert got_second.payload == b"second, longer value \xff\x00"


async def test_libcoap_con_request_gets_piggybacked_response() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            request = ctx.request(Message(code=GET, uri=server.uri("/"), mtype=CON))
            response = await request.response
            retransmitted = retransmissions(ctx)
    assert response.mtype is Type.ACK
    assert response.code is Code.CONTENT
    assert response.payload.startswith(LIBCOAP_INDEX_PREFIX)
    assert retransmitted == 0


async def test_libcoap_non_request_gets_non_response() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            request = ctx.request(Message(code=GET, uri=server.uri("/"), mtype=NON))
            response = await request.response
    assert response.mtype is Type.NON
    assert response.code is Code.CONTENT
    assert response.payload.startswith(LIBCOAP_INDEX_PREFIX)


async def test_libcoap_non_put_then_non_get() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            uri = server.uri("/example_data")
            put = await ctx.request(Message(code=PUT, uri=uri, mtype=NON, payload=b"n1")).response
            got = await ctx.request(Message(code=GET, uri=uri, mtype=NON)).response
    assert put.mtype is Type.NON
    assert put.code in (Code.CREATED, Code.CHANGED)
    assert got.mtype is Type.NON
    assert got.code is Code.CONTENT
    assert got.payload == b"n1"


async def test_libcoap_ping() -> None:
    # coap-server-notls 4.3.1 answers no RST to a ping that arrives within about
    # 0.25 s of the previous one from the same endpoint (seen with a raw socket
    # too); the RST only comes for the retransmission, ~2-3 s later. So the
    # second ping waits a little: each must be answered at once, unretransmitted.
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            rtt = await ctx.ping(server.uri("/"))
            await trio.sleep(0.6)
            again = await ctx.ping(server.uri("/"))
            retransmitted = retransmissions(ctx)
            response = await ctx.get(server.uri("/"))  # pings leave the client usable
    assert 0 < rtt < 1.0
    assert 0 < again < 1.0
    assert retransmitted == 0
    assert response.code is Code.CONTENT


async def test_libcoap_missing_path_is_not_found() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            response = await ctx.get(server.uri("/no/such/resource"))
            still_there = await ctx.get(server.uri("/"))
    assert response.code is Code.NOT_FOUND
    assert response.mtype is Type.ACK
    assert still_there.code is Code.CONTENT


async def test_libcoap_uri_query() -> None:
    # libcoap's /time answers seconds since the epoch with ?ticks, a date without.
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            ticks = await ctx.get(server.uri("/time?ticks"))
            clock = await ctx.get(server.uri("/time"))
    assert ticks.code is Code.CONTENT
    assert ticks.payload.isdigit(), ticks.payload
    assert clock.code is Code.CONTENT
    assert not clock.payload.isdigit(), clock.payload


async def test_libcoap_separate_response() -> None:
    """libcoap's /async?1 answers after 1 s: an empty ACK first, then a CON response."""
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            started = trio.current_time()
            response = await ctx.request(
                Message(code=GET, uri=server.uri("/async?1"), mtype=CON)
            ).response
            elapsed = trio.current_time() - started
            retransmitted = retransmissions(ctx)
            after = await ctx.get(server.uri("/"))
    assert response.mtype is Type.CON
    assert response.code is Code.CONTENT
    assert response.payload == b"done"
    assert elapsed >= 0.9
    assert retransmitted == 0  # the empty ACK stopped our retransmissions
    assert after.code is Code.CONTENT


async def test_libcoap_delayed_non_response() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            response = await ctx.request(
                Message(code=GET, uri=server.uri("/async?1"), mtype=NON)
            ).response
    assert response.mtype is Type.NON
    assert response.code is Code.CONTENT
    assert response.payload == b"done"


async def test_libcoap_twenty_concurrent_requests() -> None:
    """20 requests in flight at once (NSTART raised), to two resources: each
    response must belong to its own request (token matching under concurrency)."""
    count = 20
    results: dict[int, Message] = {}
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client() as (server, ctx):
            ctx.set_nstart(64)
            requests = [
                ctx.request(Message(code=GET, uri=server.uri("/" if i % 2 else "/time")))
                for i in range(count)
            ]
            outstanding = sum(m.outstanding_requests for m in ctx.statistics.messaging)

            async def wait(i: int) -> None:
                results[i] = await requests[i].response

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(wait, i)
            retransmitted = retransmissions(ctx)
    # All 20 went out before any answer could be processed (no queueing behind NSTART).
    assert outstanding == count
    assert sorted(results) == list(range(count))
    for i, response in results.items():
        assert response.code is Code.CONTENT, (i, response)
        if i % 2:
            assert response.payload.startswith(LIBCOAP_INDEX_PREFIX), (i, response.payload)
        else:
            assert response.payload, i
            assert not response.payload.startswith(LIBCOAP_INDEX_PREFIX), (i, response.payload)
    assert retransmitted == 0


async def test_libcoap_over_ipv4() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_and_client("127.0.0.1") as (server, ctx):
            assert server.uri("/").startswith("coap://127.0.0.1:")
            response = await ctx.get(server.uri("/"))
            non = await ctx.request(Message(code=GET, uri=server.uri("/"), mtype=NON)).response
            rtt = await ctx.ping(server.uri("/"))
    assert response.code is Code.CONTENT
    assert response.payload.startswith(LIBCOAP_INDEX_PREFIX)
    assert non.mtype is Type.NON
    assert non.code is Code.CONTENT
    assert rtt > 0


# -- against aiocoap (in-process, in its own thread) ------------------------------------


async def test_aiocoap_get() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with aiocoap_and_client() as (server, ctx):
            response = await ctx.get(server.uri("/text"))
    assert response.code is Code.CONTENT
    assert response.payload == AIOCOAP_FIXED_PAYLOAD
    assert response.opt.content_format == 0  # text/plain
    assert response.mtype is Type.ACK


async def test_aiocoap_put_then_get() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with aiocoap_and_client() as (server, ctx):
            uri = server.uri("/store")
            put = await ctx.put(uri, payload=b"stored \x00\x01 bytes")
            got = await ctx.get(uri)
            missing = await ctx.get(server.uri("/nothing/here"))
    assert put.code is Code.CHANGED
    assert got.code is Code.CONTENT
    assert got.payload == b"stored \x00\x01 bytes"
    assert missing.code is Code.NOT_FOUND


async def test_aiocoap_slow_resource_separate_response() -> None:
    """aiocoap sends an empty ACK after 0.1 s, then the response as a separate CON."""
    with trio.fail_after(TEST_TIMEOUT):
        async with aiocoap_and_client() as (server, ctx):
            started = trio.current_time()
            response = await ctx.request(
                Message(code=GET, uri=server.uri("/slow"), mtype=CON)
            ).response
            elapsed = trio.current_time() - started
            # Our request was acknowledged (empty ACK): no retransmission of it.
            retransmitted = retransmissions(ctx)
            # We acknowledged the separate response: aiocoap stops tracking it.
            unacked = await server.wait_until_all_acknowledged(timeout=2.0)
    assert response.code is Code.CONTENT
    assert response.payload == b"slow but here"
    assert response.mtype is Type.CON  # a separate response, not piggybacked
    assert elapsed >= AIOCOAP_SLOW_DELAY * 0.9
    assert retransmitted == 0
    assert unacked == 0


async def test_aiocoap_non_request_gets_non_response() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with aiocoap_and_client() as (server, ctx):
            response = await ctx.request(
                Message(code=GET, uri=server.uri("/text"), mtype=NON)
            ).response
            slow = await ctx.request(Message(code=GET, uri=server.uri("/slow"), mtype=NON)).response
    assert response.mtype is Type.NON
    assert response.code is Code.CONTENT
    assert response.payload == AIOCOAP_FIXED_PAYLOAD
    assert slow.mtype is Type.NON
    assert slow.payload == b"slow but here"
