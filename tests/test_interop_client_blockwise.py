"""coap_trio's block-wise client (RFC 7959) against real peers over loopback UDP.

Peers (see :mod:`interop_helpers`): libcoap's ``coap-server-notls`` (its
``/example_data`` holds 1500 bytes before any PUT and answers them in Block2
blocks with Size2; a PUT in Block1 blocks replaces it) and an in-process
aiocoap server with a large resource and a store that aiocoap feeds from
Block1 uploads it assembles itself. Real clock, ``::1``, ports the OS
picked, every test under ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import trio
from interop_helpers import aiocoap_server, libcoap_server

from coap_trio import BlockValue, BlockwiseConfig, Code, Message, open_context

TEST_TIMEOUT = 30.0


def body_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- libcoap ----------------------------------------------------------------------------------


async def test_libcoap_initial_example_data_in_blocks() -> None:
    progress: list[tuple[int, int | None]] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_server("::1") as server, open_context() as ctx:
            uri = server.uri("/example_data")
            response = await ctx.request(
                Message(code=Code.GET, uri=uri), progress=lambda d, t: progress.append((d, t))
            ).response
            # The same, asked for in 64-byte blocks (early negotiation).
            small = await ctx.get(uri, block2=BlockValue(0, False, 2))
            # One block in the middle (random access).
            third = await ctx.get(uri, block2=BlockValue(2, False, 4))
    assert response.code is Code.CONTENT
    assert len(response.payload) == 1500
    assert response.opt.block2 is None
    assert progress[-1] == (1500, 1500)  # Size2 announced
    assert len(progress) >= 2
    assert small.payload == response.payload
    assert third.payload == response.payload[512:768]
    assert third.opt.block2 is not None
    assert third.opt.block2.num == 2


async def test_libcoap_put_large_then_get_it_back() -> None:
    body = body_of(20_000, 1)
    progress: list[tuple[int, int | None]] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_server("::1") as server, open_context() as ctx:
            uri = server.uri("/example_data")
            put = await ctx.request(
                Message(code=Code.PUT, uri=uri, payload=body),
                progress=lambda d, t: progress.append((d, t)),
            ).response
            got = await ctx.get(uri)
            stream_digest = hashlib.sha256()
            async with ctx.stream(uri) as stream:
                async for chunk in stream:
                    stream_digest.update(chunk)
    assert put.code in (Code.CREATED, Code.CHANGED)
    assert put.opt.block1 is None
    assert progress[-1] == (20_000, 20_000)
    assert got.code is Code.CONTENT
    assert sha(got.payload) == sha(body)
    assert stream_digest.hexdigest() == sha(body)


async def test_libcoap_small_blocks_both_ways() -> None:
    body = body_of(3000, 2)
    config = BlockwiseConfig(block_size=64)
    with trio.fail_after(TEST_TIMEOUT):
        async with libcoap_server("::1") as server, open_context(blockwise=config) as ctx:
            uri = server.uri("/example_data")
            put = await ctx.put(uri, payload=body)
            got = await ctx.get(uri)
    assert put.code in (Code.CREATED, Code.CHANGED)
    assert got.payload == body


# -- aiocoap ----------------------------------------------------------------------------------

LARGE = body_of(100_000, 3)


def large_site() -> tuple[Any, Any]:
    import aiocoap
    import aiocoap.resource

    class Large(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=LARGE, etag=b"large")

    class Store(aiocoap.resource.Resource):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.payload = b""
            self.puts = 0

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)

        async def render_put(self, request: Any) -> Any:
            self.payload = request.payload
            self.puts += 1
            return aiocoap.Message(code=aiocoap.CHANGED)

    site = aiocoap.resource.Site()
    store = Store()
    site.add_resource(["large"], Large())
    site.add_resource(["store"], store)
    return site, store


async def test_aiocoap_large_get() -> None:
    site, _ = large_site()
    with trio.fail_after(TEST_TIMEOUT):
        async with aiocoap_server("::1", site=site) as server, open_context() as ctx:
            response = await ctx.get(server.uri("/large"))
            small = await ctx.get(server.uri("/large"), block2=BlockValue(0, False, 3))
    assert response.code is Code.CONTENT
    assert sha(response.payload) == sha(LARGE)
    assert response.opt.etag == (b"large",)
    assert small.payload == LARGE


async def test_aiocoap_large_put_is_assembled_by_aiocoap() -> None:
    site, store = large_site()
    body = body_of(60_000, 4)
    with trio.fail_after(TEST_TIMEOUT):
        async with aiocoap_server("::1", site=site) as server, open_context() as ctx:
            put = await ctx.put(server.uri("/store"), payload=body)
            got = await ctx.get(server.uri("/store"))
    assert put.code is Code.CHANGED
    assert store.puts == 1
    assert sha(store.payload) == sha(body)
    assert sha(got.payload) == sha(body)
