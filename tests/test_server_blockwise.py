"""End-to-end tests of the server side of block-wise transfers (RFC 7959, RFC 9175 §3).

A server :class:`~coap_trio.context.Context` serves :func:`make_site` on a
:class:`~coap_trio.testing.MemoryNetwork` under ``autojump_clock``; a raw
peer (``RawPeer`` of ``test_server``) sends exact requests and reads every
reply, so what is checked is the wire: Block1/Block2/Size1/Size2/ETag of each
response, what the resources saw (and how often they rendered), and the
server's ``statistics``. Every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server import RawPeer, request, server_and_peer

from coap_trio._server.blockwise import BlockwiseServer, representation_key, upload_key
from coap_trio.block import BlockValue
from coap_trio.codec import decode
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.optionnumbers import OptionNumber
from coap_trio.numbers.types import Type
from coap_trio.observable import ObservableResource
from coap_trio.protocol.config import BlockwiseConfig
from coap_trio.resource import Resource, Site
from coap_trio.testing import MemoryNetwork

#: Generous bound for one test in virtual time (autojump makes it free).
VIRTUAL_LIMIT = 10_000.0
LIFETIME = BlockwiseConfig().lifetime


def body_of(size: int, seed: bytes = b"") -> bytes:
    """``size`` deterministic bytes, distinct for each ``seed``."""
    out = bytearray()
    for counter in itertools.count():
        if len(out) >= size:
            break
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
    return bytes(out[:size])


LARGE = body_of(2500, b"large")


# -- the site --------------------------------------------------------------------------------


class Large(Resource):
    """GET: :attr:`body` (2500 bytes unless changed); counts its renders."""

    def __init__(self, body: bytes = LARGE) -> None:
        self.body = body
        self.renders = 0

    async def render_get(self, request: Message) -> Message:
        self.renders += 1
        return Message(code=Code.CONTENT, payload=self.body)


class Store(Resource):
    """PUT stores the body (2.04); POST stores it and answers a large 2.04 (§2.7).

    Records every request it was given, so tests see what the resource saw.
    """

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def render_put(self, request: Message) -> Message:
        self.seen.append(request)
        return Message(code=Code.CHANGED)

    async def render_post(self, request: Message) -> Message:
        self.seen.append(request)
        return Message(code=Code.CHANGED, payload=request.payload[::-1] * 2)


class Query(Resource):
    """FETCH: a large answer computed from the payload (RFC 8132)."""

    def __init__(self) -> None:
        self.renders = 0

    async def render_fetch(self, request: Message) -> Message:
        self.renders += 1
        return Message(code=Code.CONTENT, payload=body_of(1500, request.payload))


class Feed(ObservableResource):
    """An observable resource whose representation is larger than a block."""

    def __init__(self) -> None:
        super().__init__()
        self.body = body_of(2200, b"feed 0")

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=self.body)


class Raw(Resource):
    """Handles block options itself: ``needs_blockwise_assembly`` is False."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False

    async def render_get(self, request: Message) -> Message:
        self.seen.append(request)
        return Message(code=Code.CONTENT, payload=LARGE)

    async def render_put(self, request: Message) -> Message:
        self.seen.append(request)
        return Message(code=Code.CHANGED)


class Small(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"tiny")


class Served:
    def __init__(self) -> None:
        self.site = Site()
        self.large = Large()
        self.store = Store()
        self.query = Query()
        self.feed = Feed()
        self.raw = Raw()
        self.site.add(["large"], self.large)
        self.site.add(["store"], self.store)
        self.site.add(["query"], self.query)
        self.site.add(["feed"], self.feed)
        self.site.add(["raw"], self.raw)
        self.site.add(["small"], Small())


# -- the peer's side ------------------------------------------------------------------------------


class Client:
    """Sends requests as a RawPeer, each with a fresh MID, and returns the ACK that answers it."""

    def __init__(self, peer: RawPeer, first_mid: int = 0x100) -> None:
        self.peer = peer
        self._mids: Iterator[int] = itertools.count(first_mid)

    async def ask(
        self, path: str | tuple[str, ...] = "large", *, token: bytes = b"\x01", **kwargs: Any
    ) -> Message:
        mid = next(self._mids)
        self.peer.received.clear()  # earlier replies were read already (keeps this O(1))
        self.peer.send(request(path, mid=mid, token=token, **kwargs))
        while True:
            for message in map(decode, self.peer.received):
                if message.mid == mid and message.mtype is Type.ACK:
                    return message
            await self.peer.wait_for(len(self.peer.received) + 1)

    async def get_all(
        self, path: str = "large", szx: int | None = None, **kwargs: Any
    ) -> tuple[bytes, list[Message]]:
        """Fetch every block (the first with Block2 at ``szx``, if given); body and responses."""
        block2 = None if szx is None else BlockValue(0, False, szx)
        responses = [await self.ask(path, block2=block2, **kwargs)]
        for _ in range(1000):
            last = responses[-1].opt.block2
            assert last is not None, responses[-1]
            if not last.more:
                break
            following = BlockValue(last.num + 1, False, last.szx)
            responses.append(await self.ask(path, block2=following, **kwargs))
        return b"".join(r.payload for r in responses), responses

    async def upload(
        self,
        body: bytes,
        path: str = "store",
        code: Code = Code.PUT,
        szx: int = 6,
        **kwargs: Any,
    ) -> list[Message]:
        """Send ``body`` with Block1 at ``szx`` (following the server's size); all responses."""
        responses: list[Message] = []
        offset, num = 0, 0
        size = 1 << (szx + 4)
        for _ in range(10_000):
            chunk = body[offset : offset + size]
            more = offset + size < len(body)
            block = BlockValue(num, more, szx)
            response = await self.ask(path, code=code, payload=chunk, block1=block, **kwargs)
            responses.append(response)
            if response.code != Code.CONTINUE:
                break
            offset += size
            echoed = response.opt.block1
            assert echoed is not None
            assert echoed.more
            szx = echoed.szx
            size = 1 << (szx + 4)
            num = offset // size
        return responses


def assert_etag(response: Message) -> bytes:
    (etag,) = response.opt.etag
    assert len(etag) == 8
    return etag


async def test_block2_get_block_by_block_with_size2_and_one_etag(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (server, peer):
            body, responses = await Client(peer).get_all()
            stats = server.statistics
    assert body == LARGE
    assert [r.opt.block2 for r in responses] == [
        BlockValue(0, True, 6),
        BlockValue(1, True, 6),
        BlockValue(2, False, 6),
    ]
    assert [len(r.payload) for r in responses] == [1024, 1024, 452]
    assert all(r.code is Code.CONTENT for r in responses)
    assert responses[0].opt.size2 == len(LARGE)  # Size2 with block 0
    assert [r.opt.size2 for r in responses[1:]] == [None, None]  # not asked for
    etags = {assert_etag(r) for r in responses}
    assert len(etags) == 1
    assert served.large.renders == 1  # blocks 1 and 2 came from the kept representation
    assert stats.cached_representations == 1
    assert stats.cached_representation_bytes >= len(LARGE)


async def test_a_request_carrying_size2_gets_it_with_every_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            await client.ask()
            second = await client.ask(block2=BlockValue(1, False, 6), size2=0)
    assert second.opt.size2 == len(LARGE)


async def test_random_access_in_any_order(autojump_clock: trio.testing.MockClock) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            parts = {}
            for num in (2, 0, 1, 2, 1):
                response = await client.ask(block2=BlockValue(num, False, 6))
                assert response.code is Code.CONTENT
                parts[num] = response.payload
    assert b"".join(parts[n] for n in range(3)) == LARGE
    # Block 2 first: nothing was kept, GET is safe, so it rendered; block 0 renders
    # afresh (a new transfer); 1, 2 and 1 again came from the kept representation.
    assert served.large.renders == 2


async def test_late_negotiation_smaller_blocks_after_the_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            first = await client.ask()
            # 1024 bytes received; continue with 256-byte blocks: block 4 starts at 1024.
            rest = [await client.ask(block2=BlockValue(n, False, 4)) for n in range(4, 10)]
    assert first.opt.block2 == BlockValue(0, True, 6)
    assert [r.opt.block2 for r in rest][-1] == BlockValue(9, False, 4)
    assert all(
        r.opt.block2 == BlockValue(n, n < 9, 4) for n, r in zip(range(4, 10), rest, strict=True)
    )
    assert first.payload + b"".join(r.payload for r in rest) == LARGE
    assert served.large.renders == 1


async def test_early_negotiation_the_first_request_asks_for_small_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            body, responses = await Client(peer).get_all(szx=2)
    assert body == LARGE
    assert len(responses) == -(-len(LARGE) // 64)
    assert all(r.opt.block2 is not None and r.opt.block2.szx == 2 for r in responses)
    assert responses[0].opt.size2 == len(LARGE)
    assert served.large.renders == 1


async def test_the_server_block_size_caps_what_the_client_asks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    config = BlockwiseConfig(block_size=256)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site, blockwise=config) as (
            _,
            peer,
        ):
            body, responses = await Client(peer).get_all(szx=6)
    assert body == LARGE
    assert responses[0].opt.block2 == BlockValue(0, True, 4)
    assert len(responses) == 10


async def test_later_blocks_stay_consistent_when_the_resource_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    changed = body_of(2500, b"changed")
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            first = await client.ask()
            served.large.body = changed
            second = await client.ask(block2=BlockValue(1, False, 6))
            third = await client.ask(block2=BlockValue(2, False, 6))
            # A new transfer (block 0) sees the new state, with another ETag.
            body, fresh = await client.get_all()
    assert first.payload + second.payload + third.payload == LARGE
    assert assert_etag(first) == assert_etag(second) == assert_etag(third)
    assert body == changed
    assert {assert_etag(r) for r in fresh} == {assert_etag(fresh[0])} != {assert_etag(first)}


async def test_an_expired_representation_is_rendered_again_and_the_etag_shows_the_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (server, peer):
            client = Client(peer)
            first = await client.ask()
            served.large.body = body_of(2500, b"later")
            await trio.sleep(LIFETIME + 1)
            second = await client.ask(block2=BlockValue(1, False, 6))
            stats = server.statistics
    assert served.large.renders == 2
    assert second.payload == served.large.body[1024:2048]
    assert assert_etag(second) != assert_etag(first)
    assert stats.blockwise_cache_misses == 1


async def test_the_resources_own_etag_is_kept(autojump_clock: trio.testing.MockClock) -> None:
    class Tagged(Resource):
        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, payload=LARGE, etag=(b"mine",))

    site = Site()
    site.add(["tagged"], Tagged())
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), site) as (_, peer):
            body, responses = await Client(peer).get_all("tagged")
    assert body == LARGE
    assert all(r.opt.etag == (b"mine",) for r in responses)


async def test_a_block_past_the_end_is_4_02(autojump_clock: trio.testing.MockClock) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            await client.ask()
            kept = await client.ask(block2=BlockValue(3, False, 6))  # 3 x 1024 > 2500
            fresh = await client.ask(block2=BlockValue(3, False, 6), uri_query=("x=1",))
            small = await client.ask("small", block2=BlockValue(1, False, 6))
    assert [r.code for r in (kept, fresh, small)] == [Code.BAD_OPTION] * 3
    assert kept.opt.block2 is None


async def test_szx_7_is_4_00_in_block2_and_in_block1(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            get = await client.ask(block2=BlockValue(0, False, 7))
            put = await client.ask(
                "store", code=Code.PUT, payload=b"x" * 1024, block1=BlockValue(0, True, 7)
            )
    assert (get.code, put.code) == (Code.BAD_REQUEST, Code.BAD_REQUEST)
    assert served.large.renders == 0
    assert served.store.seen == []


async def test_small_responses_are_untouched_or_one_block_when_block2_was_asked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (server, peer):
            client = Client(peer)
            plain = await client.ask("small")
            asked = await client.ask("small", block2=BlockValue(0, False, 6))
            stats = server.statistics
    assert plain.payload == asked.payload == b"tiny"
    assert not {OptionNumber.BLOCK2, OptionNumber.SIZE2, OptionNumber.ETAG} & set(
        plain.opt.numbers()
    )
    assert asked.opt.block2 == BlockValue(0, False, 6)
    assert asked.opt.size2 == 4
    assert asked.opt.etag == ()
    assert stats.cached_representations == 0


# -- Block1 ---------------------------------------------------------------------------------------


async def test_block1_put_continue_then_the_final_block1_echo(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    body = body_of(2100, b"upload")
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (server, peer):
            responses = await Client(peer).upload(body)
            stats = server.statistics
    assert [r.code for r in responses] == [Code.CONTINUE, Code.CONTINUE, Code.CHANGED]
    assert [r.opt.block1 for r in responses] == [
        BlockValue(0, True, 6),
        BlockValue(1, True, 6),
        BlockValue(2, False, 6),
    ]
    (seen,) = served.store.seen
    assert seen.payload == body
    assert seen.opt.block1 is None
    assert seen.opt.size1 is None
    assert (stats.blockwise_uploads_completed, stats.blockwise_assemblies) == (1, 0)
    assert stats.blockwise_assembly_bytes == 0


async def test_block1_the_server_asks_for_smaller_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    body = body_of(3000, b"shrink")
    config = BlockwiseConfig(block_size=256)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site, blockwise=config) as (
            _,
            peer,
        ):
            responses = await Client(peer).upload(body, szx=6)
    # The first block is 1024 bytes; the 2.31 asks for 256, so the next is block 4 of 256.
    assert responses[0].opt.block1 == BlockValue(0, True, 4)
    assert responses[1].opt.block1 == BlockValue(4, True, 4)
    assert responses[-1].code is Code.CHANGED
    assert responses[-1].opt.block1 == BlockValue(11, False, 4)
    assert served.store.seen[0].payload == body


async def test_block1_out_of_order_and_duplicated_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    body = body_of(2100, b"order")
    parts = [body[0:1024], body[1024:2048], body[2048:]]

    def block(num: int) -> dict[str, Any]:
        return {"code": Code.PUT, "payload": parts[num], "block1": BlockValue(num, num < 2, 6)}

    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            codes = [(await client.ask("store", **block(n))).code for n in (0, 2, 1, 1, 0)]
            # Block 0 again restarted the body: send it all in order now.
            codes += [(await client.ask("store", **block(n))).code for n in (1, 2)]
    assert codes == [
        Code.CONTINUE,
        Code.REQUEST_ENTITY_INCOMPLETE,  # block 2 before block 1: a gap
        Code.CONTINUE,
        Code.CONTINUE,  # a repeat of the last block (new MID) replaces it
        Code.CONTINUE,  # block 0: a new body
        Code.CONTINUE,
        Code.CHANGED,
    ]
    (seen,) = served.store.seen
    assert seen.payload == body


async def test_block1_without_block_0_is_4_08(autojump_clock: trio.testing.MockClock) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            response = await Client(peer).ask(
                "store", code=Code.PUT, payload=b"x" * 1024, block1=BlockValue(1, True, 6)
            )
    assert response.code is Code.REQUEST_ENTITY_INCOMPLETE
    assert served.store.seen == []


async def test_block1_too_large_a_body_is_4_13_with_size1(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    config = BlockwiseConfig(max_body_size=2048)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site, blockwise=config) as (
            server,
            peer,
        ):
            client = Client(peer)
            growing = await client.upload(body_of(5000, b"big"))
            announced = await client.ask(
                "store",
                code=Code.PUT,
                payload=b"y" * 1024,
                block1=BlockValue(0, True, 6),
                size1=10_000,
            )
            whole = await client.ask("store", code=Code.PUT, payload=b"z", size1=4096)
            stats = server.statistics
    assert [r.code for r in growing] == [
        Code.CONTINUE,
        Code.CONTINUE,
        Code.REQUEST_ENTITY_TOO_LARGE,
    ]
    for refused in (growing[-1], announced, whole):
        assert refused.code is Code.REQUEST_ENTITY_TOO_LARGE
        assert refused.opt.size1 == 2048
    assert served.store.seen == []
    assert (stats.blockwise_oversized, stats.blockwise_assemblies) == (3, 0)


async def test_a_thousand_abandoned_transfers_stay_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    config = BlockwiseConfig(
        max_assemblies_per_remote=8,
        max_assemblies=20,
        max_cached_per_remote=4,
        max_cached=10,
    )
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with (
            server_and_peer(net, served.site, blockwise=config) as (server, peer),
            trio.open_nursery() as nursery,
        ):
            others = [RawPeer(net, f"10.0.1.{i}") for i in range(4)]
            for other in others:
                await other.start(nursery)
            clients = [Client(peer), *(Client(other) for other in others)]
            for i in range(1000):
                client = clients[i % len(clients)]
                # An upload that never goes past block 0, and a GET never continued.
                started = await client.ask(
                    "store",
                    code=Code.PUT,
                    payload=b"a" * 1024,
                    block1=BlockValue(0, True, 6),
                    request_tag=(i.to_bytes(2, "big"),),
                )
                assert started.code is Code.CONTINUE
                first = await client.ask(uri_query=(f"n={i}",))
                assert first.opt.block2 == BlockValue(0, True, 6)
                stats = server.statistics
                assert stats.blockwise_assemblies <= 20
                assert stats.blockwise_assembly_bytes <= 20 * 1024
                assert stats.cached_representations <= 10
            full = server.statistics
            # After the lifetime, the next request sweeps everything that expired.
            await trio.sleep(LIFETIME + 1)
            await clients[0].ask("small", block2=BlockValue(0, False, 6))
            swept = server.statistics
            nursery.cancel_scope.cancel()
    assert (full.blockwise_assemblies, full.cached_representations) == (20, 10)
    assert full.blockwise_evicted == 1000 - 20
    assert full.cached_representations_evicted == 1000 - 10
    assert (swept.blockwise_assemblies, swept.blockwise_assembly_bytes) == (0, 0)
    assert (swept.cached_representations, swept.cached_representation_bytes) == (0, 0)
    assert served.store.seen == []


async def test_uploads_with_distinct_request_tags_do_not_mix(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    first, second = body_of(2100, b"first"), body_of(2100, b"second")
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            codes = []
            for num in range(3):  # interleaved, block by block
                for tag, body in ((b"A", first), (b"B", second)):
                    response = await client.ask(
                        "store",
                        code=Code.PUT,
                        payload=body[num * 1024 : (num + 1) * 1024],
                        block1=BlockValue(num, num < 2, 6),
                        request_tag=(tag,),
                    )
                    codes.append(response.code)
    assert codes == [Code.CONTINUE] * 4 + [Code.CHANGED] * 2
    assert [s.payload for s in served.store.seen] == [first, second]
    assert [s.opt.request_tag for s in served.store.seen] == [(b"A",), (b"B",)]


async def test_a_large_post_answered_with_a_large_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    body = body_of(1500, b"post")
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (server, peer):
            client = Client(peer)
            first = await client.ask(
                "store", code=Code.POST, payload=body[:1024], block1=BlockValue(0, True, 6)
            )
            last = await client.ask(
                "store",
                code=Code.POST,
                payload=body[1024:],
                block1=BlockValue(1, False, 6),
                block2=BlockValue(0, False, 6),
            )
            rest = [
                await client.ask("store", code=Code.POST, block2=BlockValue(n, False, 6))
                for n in (1, 2)
            ]
            # Once the response is no longer kept, a later block of a POST cannot be
            # rendered again (it would post again): 4.08.
            await trio.sleep(LIFETIME + 1)
            gone = await client.ask("store", code=Code.POST, block2=BlockValue(1, False, 6))
            stats = server.statistics
    assert first.code is Code.CONTINUE
    assert last.code is Code.CHANGED
    assert last.opt.block1 == BlockValue(1, False, 6)
    assert last.opt.block2 == BlockValue(0, True, 6)
    assert last.opt.size2 == 3000
    assert [r.opt.block2 for r in rest] == [BlockValue(1, True, 6), BlockValue(2, False, 6)]
    assert all(r.opt.block1 is None for r in rest)
    assert last.payload + b"".join(r.payload for r in rest) == body[::-1] * 2
    assert len(served.store.seen) == 1  # rendered once, with the whole body
    assert served.store.seen[0].payload == body
    assert gone.code is Code.REQUEST_ENTITY_INCOMPLETE
    assert stats.blockwise_cache_misses == 1


async def test_fetch_representations_are_keyed_by_their_payload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            a0 = await client.ask("query", code=Code.FETCH, payload=b"a")
            b0 = await client.ask("query", code=Code.FETCH, payload=b"b")
            a1 = await client.ask(
                "query", code=Code.FETCH, payload=b"a", block2=BlockValue(1, False, 6)
            )
            b1 = await client.ask(
                "query", code=Code.FETCH, payload=b"b", block2=BlockValue(1, False, 6)
            )
    assert a0.payload + a1.payload == body_of(1500, b"a")
    assert b0.payload + b1.payload == body_of(1500, b"b")
    assert served.query.renders == 2


async def test_a_fetch_uploaded_with_block1_continues_with_block2_requests_without_payload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # RFC 7959 §2.7: after the Block1 phase the client asks for the later blocks
    # with requests like those of the Block1 phase, without Block1: no payload.
    served = Served()
    body = body_of(2500, b"query body")
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            uploaded = await client.upload(body, path="query", code=Code.FETCH)
            second = await client.ask("query", code=Code.FETCH, block2=BlockValue(1, False, 6))
    assert [r.code for r in uploaded] == [Code.CONTINUE] * 2 + [Code.CONTENT]
    assert uploaded[-1].opt.block2 == BlockValue(0, True, 6)
    assert second.code is Code.CONTENT
    assert second.opt.block2 == BlockValue(1, False, 6)
    assert uploaded[-1].payload + second.payload == body_of(1500, body)
    assert served.query.renders == 1  # the later block came from the kept representation


async def test_a_fetch_follow_up_without_payload_continues_that_remotes_last_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # aiocoap's and libcoap's clients leave the body out of the later-block requests
    # even when it went in one request.
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            a0 = await client.ask("query", code=Code.FETCH, payload=b"a")
            a1 = await client.ask("query", code=Code.FETCH, block2=BlockValue(1, False, 6))
            b0 = await client.ask("query", code=Code.FETCH, payload=b"b")
            b1 = await client.ask("query", code=Code.FETCH, block2=BlockValue(1, False, 6))
            assert served.query.renders == 2
            # Other options: another representation (rendered again, for the empty body).
            other = await client.ask(
                "query", code=Code.FETCH, uri_query=("x",), block2=BlockValue(1, False, 6)
            )
            assert served.query.renders == 3
            # A representation kept for the empty body itself is the one asked for.
            empty0 = await client.ask("query", code=Code.FETCH)
            c0 = await client.ask("query", code=Code.FETCH, payload=b"c")
            empty1 = await client.ask("query", code=Code.FETCH, block2=BlockValue(1, False, 6))
    assert a0.payload + a1.payload == body_of(1500, b"a")
    assert b0.payload + b1.payload == body_of(1500, b"b")
    assert a1.opt.etag == a0.opt.etag
    assert b1.opt.etag == b0.opt.etag != a0.opt.etag
    assert other.payload == body_of(1500, b"")[1024:]
    assert empty0.payload + empty1.payload == body_of(1500, b"")
    assert c0.payload == body_of(1500, b"c")[:1024]
    assert served.query.renders == 5


# -- observe --------------------------------------------------------------------------------------


async def test_an_observation_of_a_large_representation_is_sliced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            registration = await client.ask("feed", token=b"obs", observe=0)
            following = [
                await client.ask("feed", token=b"f1", block2=BlockValue(n, False, 6))
                for n in (1, 2)
            ]
            served.feed.body = body_of(2200, b"feed 1")
            seen = len(peer.received)
            served.feed.updated_state()
            await peer.wait_for(seen + 1)
            (notification,) = peer.messages[seen:]
            assert notification.mtype is Type.NON  # CON only once a day
            updated = [
                await client.ask("feed", token=b"f2", block2=BlockValue(n, False, 6))
                for n in (1, 2)
            ]
    # The registration: first block, Observe, ETag, Size2.
    assert registration.code is Code.CONTENT
    assert registration.opt.observe is not None
    assert registration.opt.block2 == BlockValue(0, True, 6)
    assert registration.opt.size2 == 2200
    old_etag = assert_etag(registration)
    assert registration.payload + b"".join(r.payload for r in following) == body_of(2200, b"feed 0")
    assert all(r.opt.observe is None and r.opt.etag == (old_etag,) for r in following)
    # The notification: the new representation's first block, the rest by GET.
    assert notification.token == b"obs"
    assert notification.opt.observe is not None
    assert notification.opt.observe > registration.opt.observe
    assert notification.opt.block2 == BlockValue(0, True, 6)
    assert notification.opt.size2 == 2200
    new_etag = assert_etag(notification)
    assert new_etag != old_etag
    assert notification.payload + b"".join(r.payload for r in updated) == body_of(2200, b"feed 1")
    assert all(r.opt.etag == (new_etag,) for r in updated)


async def test_notifications_use_the_block_size_the_registration_negotiated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            registration = await client.ask(
                "feed", token=b"obs", observe=0, block2=BlockValue(0, False, 5)
            )
            seen = len(peer.received)
            served.feed.updated_state()
            await peer.wait_for(seen + 1)
            (notification,) = peer.messages[seen:]
    assert registration.opt.block2 == BlockValue(0, True, 5)
    assert notification.opt.block2 == BlockValue(0, True, 5)
    assert len(notification.payload) == 512


async def test_a_registration_for_a_later_block_is_served_without_an_observation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # RFC 7959 §2.6: later blocks of an observed resource are fetched by plain
    # GETs. A GET with Observe=0 that asks for block 1 is one of those: the
    # block is served, without Observe, and nothing is registered.
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            first = await client.ask("feed", token=b"f0", block2=BlockValue(0, False, 6))
            later = await client.ask(
                "feed", token=b"obs", observe=0, block2=BlockValue(1, False, 6)
            )
            seen = len(peer.received)
            served.feed.updated_state()
            await trio.sleep(5.0)
            notified = peer.messages[seen:]
            count = served.feed.observation_count
    assert later.code is Code.CONTENT
    assert later.opt.observe is None
    assert later.opt.block2 == BlockValue(1, True, 6)
    assert later.opt.etag == first.opt.etag
    assert later.payload == body_of(2200, b"feed 0")[1024:2048]
    assert count == 0
    assert notified == []


# -- resources that handle blocks themselves ------------------------------------------------


async def test_without_assembly_the_resource_sees_the_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (server, peer):
            client = Client(peer)
            get = await client.ask("raw", block2=BlockValue(1, False, 2))
            plain = await client.ask("raw")
            put = await client.ask(
                "raw", code=Code.PUT, payload=b"p" * 64, block1=BlockValue(0, True, 2)
            )
            stats = server.statistics
    assert get.payload == plain.payload == LARGE  # sent as the resource returned it
    assert get.opt.block2 is None
    assert plain.opt.block2 is None
    assert put.code is Code.CHANGED
    assert put.opt.block1 is None
    assert [s.opt.block2 for s in served.raw.seen] == [BlockValue(1, False, 2), None, None]
    assert served.raw.seen[2].opt.block1 == BlockValue(0, True, 2)
    assert served.raw.seen[2].payload == b"p" * 64
    assert (stats.blockwise_assemblies, stats.cached_representations) == (0, 0)


@pytest.mark.parametrize("path", ["nowhere", "large"])
async def test_block1_to_a_missing_resource_or_a_method_it_lacks(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (server, peer):
            client = Client(peer)
            responses = await client.upload(body_of(1500), path=path)
            stats = server.statistics
    expected = Code.NOT_FOUND if path == "nowhere" else Code.METHOD_NOT_ALLOWED
    # A missing path is not assembled (4.04 at once); an existing one is, then answered.
    assert [r.code for r in responses] == (
        [expected] if path == "nowhere" else [Code.CONTINUE, expected]
    )
    assert stats.blockwise_assemblies == 0


# -- the keys, and the layer on its own ------------------------------------------------------------


def test_the_keys_ignore_block_options_and_keep_request_tag() -> None:
    base = Message(code=Code.PUT, uri_path=("store",), uri_query=("a=1",))
    blocky = base.copy(
        block1=BlockValue(3, True, 6),
        block2=BlockValue(0, False, 2),
        size1=5000,
        size2=0,
        observe=0,
        no_response=0x02,
        payload=b"ignored",
    )
    assert upload_key(blocky) == upload_key(base)
    assert representation_key(blocky) == representation_key(base)
    tagged = base.copy(request_tag=(b"t",))
    assert upload_key(tagged) != upload_key(base)
    assert upload_key(tagged) != upload_key(base.copy(request_tag=(b"u",)))
    assert upload_key(base.copy(uri_query=("a=2",))) != upload_key(base)
    assert upload_key(base.copy(code=Code.POST)) != upload_key(base)


def test_the_representation_key_of_fetch_includes_the_payload() -> None:
    fetch = Message(code=Code.FETCH, uri_path=("q",), payload=b"one")
    assert representation_key(fetch) != representation_key(fetch.copy(payload=b"two"))
    get = Message(code=Code.GET, uri_path=("q",))
    assert representation_key(get) == representation_key(get.copy(payload=b"two"))


async def test_a_failing_needs_blockwise_assembly_counts_as_true(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = BlockwiseServer(BlockwiseConfig(), lambda: 0.0)

    async def needs(request: Message) -> bool:
        raise RuntimeError("bug")

    async def render(request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=LARGE)

    response = await server.respond(Message(code=Code.GET, remote="peer"), render, needs)
    assert response.opt.block2 == BlockValue(0, True, 6)
    assert "needs_blockwise_assembly failed" in caplog.text


@settings(deadline=None, max_examples=100)
@given(
    body=st.binary(max_size=5000),
    server_size=st.sampled_from([16, 32, 64, 128, 256, 512, 1024]),
    client_szx=st.integers(0, 6),
)
async def test_any_body_any_sizes_down_and_up(
    body: bytes, server_size: int, client_szx: int
) -> None:
    """Without a network: every body is fetched whole with Block2, and uploaded with Block1."""
    server = BlockwiseServer(BlockwiseConfig(block_size=server_size), lambda: 0.0)
    received: list[bytes] = []

    async def render(request: Message) -> Message:
        if request.code == Code.PUT:
            received.append(request.payload)
            return Message(code=Code.CHANGED)
        return Message(code=Code.CONTENT, payload=body)

    async def needs(request: Message) -> bool:
        return True

    used = min(server_size, 1 << (client_szx + 4))
    parts = []
    asked = BlockValue(0, False, client_szx)
    for _ in range(len(body) // 16 + 2):
        get = Message(code=Code.GET, remote="peer", block2=asked)
        response = await server.respond(get, render, needs)
        block = response.opt.block2
        assert block is not None
        assert block.size == used
        parts.append(response.payload)
        if not block.more:
            break
        asked = BlockValue(block.num + 1, False, block.szx)
    assert b"".join(parts) == body

    offset, szx, num = 0, client_szx, 0
    for _ in range(len(body) // 16 + 2):
        size = 1 << (szx + 4)
        more = offset + size < len(body)
        put = Message(
            code=Code.PUT,
            remote="peer",
            payload=body[offset : offset + size],
            block1=BlockValue(num, more, szx),
        )
        response = await server.respond(put, render, needs)
        if not more:
            assert response.code is Code.CHANGED
            assert response.opt.block1 == BlockValue(num, False, szx)
            break
        assert response.code is Code.CONTINUE
        echoed = response.opt.block1
        assert echoed is not None
        assert echoed.szx == min(szx, server.config.szx)
        offset += size
        szx = echoed.szx
        num = offset // (1 << (szx + 4))  # numbered in the server's (smaller) size
    assert received == [body]


# -- later blocks need no handler ----------------------------------------------------------------


class Blocker(Resource):
    """GET waits until :attr:`release` is set: it keeps the one handler task busy."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.entered = trio.Event()

    async def render_get(self, request: Message) -> Message:
        self.entered.set()
        await self.release.wait()
        return Message(code=Code.CONTENT, payload=b"released")


async def test_later_blocks_are_answered_while_every_handler_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    blocker = Blocker()
    served.site.add(["blocker"], blocker)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site, server_concurrency=1) as (
            _,
            peer,
        ):
            client = Client(peer)
            first = await client.ask()  # block 0 renders in the handler
            upload_start = await client.ask(
                "store", code=Code.PUT, payload=bytes(1024), block1=BlockValue(0, True, 6)
            )
            peer.send(request("blocker", mid=0x900, token=b"\x09"))
            await blocker.entered.wait()  # the only handler task is now busy
            busy_since = trio.current_time()
            second = await client.ask(block2=BlockValue(1, False, 6))
            third = await client.ask(block2=BlockValue(2, False, 6))
            middle = await client.ask(
                "store", code=Code.PUT, payload=bytes(1024), block1=BlockValue(1, True, 6)
            )
            answered_at = trio.current_time()
            assert not blocker.release.is_set()
            blocker.release.set()
            last = await client.ask(
                "store", code=Code.PUT, payload=b"end", block1=BlockValue(2, False, 6)
            )
    assert answered_at == busy_since  # answered in the receive path, not after the piggyback window
    assert first.payload + second.payload + third.payload == LARGE
    assert (second.code, third.code) == (Code.CONTENT, Code.CONTENT)
    assert second.opt.block2 == BlockValue(1, True, 6)
    assert third.opt.block2 == BlockValue(2, False, 6)
    assert second.opt.etag == first.opt.etag == third.opt.etag
    assert served.large.renders == 1
    assert upload_start.code is Code.CONTINUE
    assert middle.code is Code.CONTINUE
    assert middle.opt.block1 == BlockValue(1, True, 6)
    assert last.code is Code.CHANGED
    assert [m.payload for m in served.store.seen] == [bytes(2048) + b"end"]


async def test_a_block_of_nothing_kept_still_goes_to_a_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = Served()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(MemoryNetwork(seed=0), served.site) as (_, peer):
            client = Client(peer)
            late = await client.ask(block2=BlockValue(1, False, 6))  # no block 0 before
            orphan = await client.ask(
                "store", code=Code.PUT, payload=bytes(1024), block1=BlockValue(1, True, 6)
            )
    assert late.code is Code.CONTENT  # rendered (GET is safe), then sliced
    assert late.payload == LARGE[1024:2048]
    assert served.large.renders == 1
    assert orphan.code is Code.REQUEST_ENTITY_INCOMPLETE  # 4.08: no block 0 was seen
