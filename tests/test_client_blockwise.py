"""The client side of block-wise transfers (RFC 7959) in the Context, on a MemoryNetwork.

The peer is a scripted server speaking bytes (``BlockPeer``): it slices a
representation with :func:`~coap_trio.protocol.blockwise.slice_block2`,
assembles uploads with a :class:`~coap_trio.protocol.blockwise.Block1Assembler`
keyed by Request-Tag, answers retransmitted CONs from a reply cache, and can
be told to misbehave. The last tests run a coap_trio client against a
coap_trio server. Everything under ``autojump_clock`` and ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio import (
    ACK,
    CON,
    NON,
    BadResponseError,
    BlockValue,
    BlockwiseConfig,
    Code,
    Message,
    RepresentationChangedError,
    RequestCancelledError,
    ResponseTooLargeError,
    Site,
    open_context,
)
from coap_trio._client.block_messages import (
    Block2FollowUps,
    block2_repeats_payload,
    block2_request,
)
from coap_trio.codec import decode, encode
from coap_trio.context import Context
from coap_trio.numbers.optionnumbers import OptionNumber
from coap_trio.protocol.blockwise import (
    Block1Assembler,
    BlockOutOfRange,
    Complete,
    Continue,
    slice_block2,
)
from coap_trio.remote import DatagramRemote
from coap_trio.resource import Resource
from coap_trio.testing import LinkConditions, MemoryNetwork

SERVER = "10.0.0.2"
BIG = f"coap://{SERVER}/big"
UPLOAD = f"coap://{SERVER}/upload"
MIB = 1 << 20


def body_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlockPeer:
    """A raw server at 10.0.0.2:5683 with /big (Block2) and /upload (Block1)."""

    def __init__(self, network: MemoryNetwork, representation: bytes = b"") -> None:
        self.endpoint = network.open_endpoint(SERVER, 5683)
        self.representation = representation
        self.etag: bytes | None = b"v1"
        #: Preferred Block2 / Block1 size exponents.
        self.szx = 6
        self.upload_szx = 6
        self.assembler = Block1Assembler(max_size=4 * MIB, max_bytes=16 * MIB, preferred_szx=6)
        #: Requests in the order they arrived (duplicates answered from the cache excluded).
        self.received: list[Message] = []
        self.replies: dict[tuple[DatagramRemote, int], bytes] = {}
        #: Completed uploads: (body, Request-Tag values).
        self.uploads: list[tuple[bytes, tuple[bytes, ...]]] = []
        #: Request-Tags seen per block of uploads.
        self.tags: list[tuple[bytes, ...]] = []
        #: Called with each /big request before it is answered (tests change state here).
        self.before_get: Callable[[Message], None] = lambda message: None
        #: Plain (no Block1) uploads larger than this get 4.13 (with Block1 or Size1).
        self.too_large: int | None = None
        self.too_large_with_block1: int | None = None
        #: Upload blocks larger than this get 4.13 with Block1 (RFC 7959 §2.9.3).
        self.max_block: int | None = None
        #: The last body POSTed to /echo, served back reversed (Block1 + Block2).
        self.echo = b""
        #: Block requests (Block2 num > 0) are not answered while set.
        self.stall = False
        #: Replace the answer to a block request (misbehaviour).
        self.tamper: Callable[[Message, Message], Message] | None = None
        self.client: DatagramRemote | None = None
        self.observe_token = b""
        self.observe_seq = 1
        self.mid = 0x2000

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, remote in batch:
            message = decode(data)
            if message.mtype not in (CON, NON) or not message.code.is_request():
                continue
            cached = self.replies.get((remote, message.mid))  # type: ignore[arg-type]
            if cached is not None:
                self.endpoint.send(cached, remote)
                continue
            self.client = remote
            self.received.append(message)
            response = self.handle(message, remote)
            if response is None:
                continue
            response.token = message.token
            if message.mtype is CON:
                response.mtype, response.mid = ACK, message.mid
            else:
                self.mid += 1
                response.mtype, response.mid = NON, self.mid
            data = encode(response)
            self.replies[(remote, message.mid)] = data  # type: ignore[index]
            self.endpoint.send(data, remote)

    def handle(self, message: Message, remote: DatagramRemote) -> Message | None:
        path = message.opt.uri_path
        if path == ("big",):
            return self.get_big(message)
        if path == ("upload",):
            return self.upload(message, remote)
        if path == ("echo",):
            return self.echo_back(message, remote)
        return Message(code=Code.NOT_FOUND)

    def get_big(self, message: Message) -> Message | None:
        requested = message.opt.block2
        if requested is not None and requested.num > 0 and self.stall:
            return None
        self.before_get(message)
        try:
            payload, block = slice_block2(self.representation, requested, self.szx)
        except BlockOutOfRange:
            return Message(code=Code.BAD_OPTION)
        response = Message(code=Code.CONTENT, payload=payload)
        if block.more or block.num or requested is not None:
            response.opt.block2 = block
        if self.etag is not None:
            response.opt.etag = (self.etag,)
        if block.num == 0:
            response.opt.size2 = len(self.representation)
        if message.opt.observe == 0:
            self.observe_token = message.token
            response.opt.observe = self.observe_seq
        if self.tamper is not None and requested is not None and requested.num > 0:
            response = self.tamper(message, response)
        return response

    def upload(self, message: Message, remote: DatagramRemote) -> Message | None:
        block = message.opt.block1
        tag = message.opt.request_tag
        if block is None:
            size = len(message.payload)
            if self.too_large_with_block1 is not None and size > self.too_large_with_block1:
                szx = self.too_large_with_block1.bit_length() - 5
                return Message(code=Code.REQUEST_ENTITY_TOO_LARGE, block1=BlockValue(0, False, szx))
            if self.too_large is not None and size > self.too_large:
                return Message(code=Code.REQUEST_ENTITY_TOO_LARGE, size1=self.too_large)
            self.uploads.append((message.payload, tag))
            return Message(code=Code.CHANGED)
        if self.stall and block.num >= 5:
            return None
        if self.max_block is not None and block.size > self.max_block:
            szx = self.max_block.bit_length() - 5
            return Message(code=Code.REQUEST_ENTITY_TOO_LARGE, block1=BlockValue(0, False, szx))
        self.tags.append(tag)
        self.assembler._preferred_szx = self.upload_szx
        result = self.assembler.feed(
            remote, tag, block, message.payload, message.opt.size1, trio.current_time()
        )
        if isinstance(result, Continue):
            return Message(code=Code.CONTINUE, block1=result.block)
        if isinstance(result, Complete):
            self.uploads.append((result.body, tag))
            return Message(code=Code.CHANGED, block1=result.block)
        return Message(code=result.code)

    def echo_back(self, message: Message, remote: DatagramRemote) -> Message | None:
        requested = message.opt.block2
        if requested is None or requested.num == 0:
            response = self.upload(message, remote)
            if response is None or response.code is not Code.CHANGED:
                return response
            self.echo = self.uploads.pop()[0][::-1]
        payload, block = slice_block2(self.echo, requested, self.szx)
        response = Message(code=Code.CHANGED, payload=payload, block2=block, etag=(b"echo",))
        if message.opt.block1 is not None:
            response.opt.block1 = message.opt.block1
        return response

    def notify(self, representation: bytes, etag: bytes) -> None:
        """A new state of /big: send block 0 of it as a NON notification."""
        self.representation = representation
        self.etag = etag
        self.observe_seq += 1
        payload, block = slice_block2(representation, None, self.szx)
        self.mid += 1
        message = Message(
            code=Code.CONTENT,
            mtype=NON,
            mid=self.mid,
            token=self.observe_token,
            payload=payload,
            block2=block,
            etag=(etag,),
            size2=len(representation),
            observe=self.observe_seq,
        )
        assert self.client is not None
        self.endpoint.send(encode(message), self.client)

    def block_requests(self) -> list[BlockValue]:
        return [m.opt.block2 for m in self.received if m.opt.block2 is not None]


@asynccontextmanager
async def peer_and_client(
    representation: bytes = b"",
    *,
    conditions: LinkConditions | None = None,
    blockwise: BlockwiseConfig | None = None,
    seed: int = 0,
) -> AsyncIterator[tuple[MemoryNetwork, BlockPeer, Context]]:
    network = MemoryNetwork(seed=seed, conditions=conditions or LinkConditions())
    peer = BlockPeer(network, representation)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.endpoint.run, peer.on_datagrams, lambda r, e: None)
        async with open_context(
            network=network, rng=random.Random(seed), blockwise=blockwise
        ) as client:
            yield network, peer, client
        nursery.cancel_scope.cancel()


def client_datagrams_after(network: MemoryNetwork, when: float) -> list[Any]:
    return [d for d in network.capture if d.source.host != SERVER and d.time > when]


LOSSY = LinkConditions(loss=0.05, duplicate=0.05)


# -- GET ---------------------------------------------------------------------------------------


async def test_get_one_mebibyte_through_a_lossy_network(autojump_clock: object) -> None:
    body = body_of(MIB)
    progress: list[tuple[int, int | None]] = []
    with trio.fail_after(20_000):
        async with peer_and_client(body, conditions=LOSSY) as (network, peer, client):
            response = await client.request(
                Message(code=Code.GET, uri=BIG), progress=lambda d, t: progress.append((d, t))
            ).response
            retransmissions = sum(m.retransmissions for m in client.statistics.messaging)
    assert response.code is Code.CONTENT
    assert sha(response.payload) == sha(body)
    assert response.opt.block2 is None
    assert response.opt.etag == (b"v1",)
    assert response.opt.size2 == MIB
    assert retransmissions > 0  # the link did lose some
    assert network.statistics.duplicated > 0
    assert progress[0] == (1024, MIB)
    assert progress[-1] == (MIB, MIB)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    nums = [b.num for b in peer.block_requests()]
    assert nums == list(range(1, 1024))  # each block asked once (retransmissions are cached)


async def test_small_response_is_untouched(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with peer_and_client(b"tiny") as (_, peer, client):
            response = await client.get(BIG)
    assert response.payload == b"tiny"
    assert response.opt.block2 is None
    assert len(peer.received) == 1


async def test_single_block_with_block2_option_is_stripped(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with peer_and_client(b"tiny") as (_, _peer, client):
            response = await client.get(BIG, block2=BlockValue(0, False, 6))
    assert response.payload == b"tiny"
    assert response.opt.block2 is None


async def test_early_negotiation_by_the_request(autojump_clock: object) -> None:
    body = body_of(5000)
    with trio.fail_after(100):
        async with peer_and_client(body) as (_, peer, client):
            response = await client.get(BIG, block2=BlockValue(0, False, 2))
    assert response.payload == body
    sizes = {b.szx for b in peer.block_requests()}
    assert sizes == {2}
    assert len(peer.received) == -(-5000 // 64)


async def test_early_negotiation_by_the_config(autojump_clock: object) -> None:
    body = body_of(3000)
    config = BlockwiseConfig(block_size=256)
    with trio.fail_after(100):
        async with peer_and_client(body, blockwise=config) as (_, peer, client):
            response = await client.get(BIG)
    assert response.payload == body
    assert peer.received[0].opt.block2 == BlockValue(0, False, 4)
    assert {b.szx for b in peer.block_requests()} == {4}


async def test_the_requests_block2_wins_over_the_config(autojump_clock: object) -> None:
    body = body_of(1000)
    config = BlockwiseConfig(block_size=256)
    with trio.fail_after(100):
        async with peer_and_client(body, blockwise=config) as (_, peer, client):
            response = await client.get(BIG, block2=BlockValue(0, False, 1))
    assert response.payload == body
    assert {m.opt.block2.szx for m in peer.received if m.opt.block2} == {1}


async def test_random_access_returns_that_block(autojump_clock: object) -> None:
    body = body_of(5000)
    with trio.fail_after(100):
        async with peer_and_client(body) as (_, peer, client):
            response = await client.get(BIG, block2=BlockValue(3, False, 4))
    assert response.payload == body[768:1024]
    assert response.opt.block2 == BlockValue(3, True, 4)
    assert len(peer.received) == 1


async def test_etag_change_restarts_from_block_zero(autojump_clock: object) -> None:
    old, new = body_of(4000, 1), body_of(4500, 2)
    with trio.fail_after(100):
        async with peer_and_client(old) as (_, peer, client):

            def change(message: Message) -> None:
                block = message.opt.block2
                if block is not None and block.num == 2 and peer.etag == b"v1":
                    peer.representation, peer.etag = new, b"v2"

            peer.before_get = change
            response = await client.get(BIG)
    assert response.payload == new
    assert response.opt.etag == (b"v2",)
    nums = [m.opt.block2.num if m.opt.block2 else 0 for m in peer.received]
    assert nums == [0, 1, 2, 0, 1, 2, 3, 4]


async def test_etag_changing_every_time_gives_up(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with peer_and_client(body_of(4000)) as (_, peer, client):
            counter = iter(range(1000))

            def change(message: Message) -> None:
                peer.etag = b"%d" % next(counter)

            peer.before_get = change
            with pytest.raises(RepresentationChangedError):
                await client.get(BIG)
    starts = [m for m in peer.received if not m.opt.block2 or m.opt.block2.num == 0]
    assert len(starts) == 3  # the first request and two restarts


async def test_size2_above_max_body_size(autojump_clock: object) -> None:
    config = BlockwiseConfig(max_body_size=10_000)
    with trio.fail_after(100):
        async with peer_and_client(body_of(20_000), blockwise=config) as (_, peer, client):
            with pytest.raises(ResponseTooLargeError) as raised:
                await client.get(BIG)
    assert raised.value.size == 20_000
    assert len(peer.received) == 1  # refused before asking for block 1


@pytest.mark.parametrize("misbehaviour", ["wrong number", "grown size", "past Size2", "no more"])
async def test_server_violations_are_bad_responses(
    autojump_clock: object, misbehaviour: str
) -> None:
    body = body_of(5000)

    def tamper(request: Message, response: Message) -> Message:
        block = response.opt.block2
        assert block is not None
        if misbehaviour == "wrong number":
            response.opt.block2 = BlockValue(block.num + 1, block.more, block.szx)
        elif misbehaviour == "grown size":
            response.opt.block2 = BlockValue(block.num // 2, True, block.szx + 1)
        elif misbehaviour == "past Size2":
            response.opt.block2 = BlockValue(block.num, True, block.szx)
        else:  # M=1 with a short payload
            response.payload = response.payload[:10]
        return response

    with trio.fail_after(100):
        async with peer_and_client(body) as (_, peer, client):
            peer.szx = 4
            peer.tamper = tamper
            if misbehaviour == "past Size2":
                peer.representation = body_of(20_000)
                original = peer.get_big

                def lying(message: Message) -> Message | None:
                    response = original(message)
                    if response is not None and response.opt.size2 is not None:
                        response.opt.size2 = 300
                    return response

                peer.get_big = lying  # type: ignore[method-assign]
            with pytest.raises(BadResponseError):
                await client.get(BIG)


async def test_error_response_is_returned_as_is(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with peer_and_client() as (_, _peer, client):
            response = await client.get(f"coap://{SERVER}/nothing")
    assert response.code is Code.NOT_FOUND


# -- PUT ---------------------------------------------------------------------------------------


async def test_put_one_mebibyte_through_a_lossy_network(autojump_clock: object) -> None:
    body = body_of(MIB, 3)
    progress: list[tuple[int, int | None]] = []
    with trio.fail_after(20_000):
        async with peer_and_client(conditions=LOSSY, seed=1) as (_, peer, client):
            response = await client.request(
                Message(code=Code.PUT, uri=UPLOAD, payload=body),
                progress=lambda d, t: progress.append((d, t)),
            ).response
    assert response.code is Code.CHANGED
    assert response.opt.block1 is None
    assert len(peer.uploads) == 1
    assert sha(peer.uploads[0][0]) == sha(body)
    assert progress[0] == (1024, MIB)
    assert progress[-1] == (MIB, MIB)
    assert len(progress) == 1024
    first = next(m for m in peer.received if m.opt.block1 is not None)
    assert first.opt.size1 == MIB
    assert first.opt.request_tag == ()


async def test_upload_follows_the_servers_block_size(autojump_clock: object) -> None:
    body = body_of(3000)
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            peer.upload_szx = 2
            response = await client.put(UPLOAD, payload=body)
    assert response.code is Code.CHANGED
    assert peer.uploads[0][0] == body
    blocks = [m.opt.block1 for m in peer.received]
    assert blocks[0] == BlockValue(0, True, 6)
    assert blocks[1] == BlockValue(16, True, 2)  # offset 1024 in 64-byte blocks
    assert {b.szx for b in blocks[1:] if b is not None} == {2}


async def test_upload_refused_413_with_smaller_block1_starts_over(autojump_clock: object) -> None:
    body = body_of(3000)
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            peer.max_block = 256
            response = await client.put(UPLOAD, payload=body)
    assert response.code is Code.CHANGED
    assert peer.uploads == [(body, ())]
    blocks = [m.opt.block1 for m in peer.received]
    assert blocks[0] == BlockValue(0, True, 6)
    assert blocks[1] == BlockValue(0, True, 4)
    assert len(blocks) == 2 + 3000 // 256


async def test_post_upload_with_a_block_wise_response(autojump_clock: object) -> None:
    body = body_of(5000, 51)
    progress: list[tuple[int, int | None]] = []
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            response = await client.request(
                Message(code=Code.POST, uri=f"coap://{SERVER}/echo", payload=body),
                progress=lambda d, t: progress.append((d, t)),
            ).response
    assert response.code is Code.CHANGED
    assert response.payload == body[::-1]
    assert response.opt.block1 is None
    assert response.opt.block2 is None
    follow_ups = [m for m in peer.received if m.opt.block2 is not None]
    assert follow_ups
    assert all(m.code is Code.POST for m in follow_ups)
    assert all(not m.payload and m.opt.block1 is None for m in follow_ups)
    # the upload's progress (total: the body), then the download's (no Size2 announced)
    assert (5000, 5000) in progress
    assert progress[-1] == (5000, None)


async def test_post_upload_with_early_negotiation_of_the_response(
    autojump_clock: object,
) -> None:
    body = body_of(3000, 52)
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            response = await client.post(
                f"coap://{SERVER}/echo", payload=body, block2=BlockValue(0, False, 2)
            )
    assert response.payload == body[::-1]
    uploads = [m for m in peer.received if m.opt.block1 is not None]
    assert [m.opt.block2 for m in uploads[:-1]] == [None] * (len(uploads) - 1)
    assert uploads[-1].opt.block2 == BlockValue(0, False, 2)
    follow_ups = [m for m in peer.received if m.opt.block1 is None]
    assert {m.opt.block2.szx for m in follow_ups if m.opt.block2} == {2}
    assert len(follow_ups) == -(-3000 // 64) - 1


async def test_concurrent_uploads_get_distinct_request_tags(autojump_clock: object) -> None:
    one, two, three = body_of(5000, 11), body_of(6000, 12), body_of(4000, 13)
    with trio.fail_after(200):
        async with peer_and_client() as (_, peer, client):
            client.set_nstart(4)
            requests = [
                client.request(Message(code=Code.PUT, uri=UPLOAD, payload=body))
                for body in (one, two, three)
            ]
            responses = [await request.response for request in requests]
            # Once they are done, the next upload goes without Request-Tag again.
            await client.put(UPLOAD, payload=one)
    assert all(r.code is Code.CHANGED for r in responses)
    tags = [tag for _, tag in peer.uploads]
    assert len(set(tags[:3])) == 3
    assert sorted(sha(b) for b, _ in peer.uploads[:3]) == sorted(sha(b) for b in (one, two, three))
    assert tags[3] == ()
    assert client.statistics.upload_tags_in_use == 0


async def test_plain_request_refused_413_with_block1_is_retried(autojump_clock: object) -> None:
    body = body_of(500)
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            peer.too_large_with_block1 = 64
            response = await client.put(UPLOAD, payload=body)
    assert response.code is Code.CHANGED
    assert peer.uploads == [(body, ())]
    assert peer.received[0].opt.block1 is None
    assert {m.opt.block1.szx for m in peer.received[1:] if m.opt.block1} == {2}


async def test_plain_request_refused_413_with_size1_is_retried(autojump_clock: object) -> None:
    body = body_of(700)
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            peer.too_large = 200
            response = await client.put(UPLOAD, payload=body)
    assert response.code is Code.CHANGED
    assert peer.uploads == [(body, ())]
    assert {m.opt.block1.szx for m in peer.received[1:] if m.opt.block1} == {3}  # 128 <= 200


async def test_413_is_retried_only_once(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            peer.too_large = 10  # and every block is refused too
            original = peer.upload

            def refuse(message: Message, remote: DatagramRemote) -> Message:
                if message.opt.block1 is not None:
                    return Message(code=Code.REQUEST_ENTITY_TOO_LARGE, size1=10)
                return original(message, remote)

            peer.upload = refuse  # type: ignore[method-assign]
            response = await client.put(UPLOAD, payload=b"x" * 100)
    assert response.code is Code.REQUEST_ENTITY_TOO_LARGE
    assert len(peer.received) == 2


async def test_message_with_block1_is_sent_as_is(autojump_clock: object) -> None:
    with trio.fail_after(100):
        async with peer_and_client() as (_, peer, client):
            response = await client.put(UPLOAD, payload=b"a" * 64, block1=BlockValue(0, True, 2))
    assert response.code is Code.CONTINUE
    assert response.opt.block1 == BlockValue(0, True, 2)
    assert len(peer.received) == 1


# -- cancellation ------------------------------------------------------------------------------


def tasks_below(task: trio.lowlevel.Task) -> int:
    """How many tasks run in the nurseries of ``task``, at any depth."""
    return sum(
        1 + tasks_below(child) for nursery in task.child_nurseries for child in nursery.child_tasks
    )


async def test_a_download_runs_in_the_receive_path_without_a_task(autojump_clock: object) -> None:
    tasks_seen: list[int] = []
    with trio.fail_after(1000):
        async with peer_and_client(body_of(20_000)) as (_, _peer, client):
            me = trio.lowlevel.current_task()
            idle = tasks_below(me)
            response = await client.request(
                Message(code=Code.GET, uri=BIG),
                progress=lambda d, t: tasks_seen.append(tasks_below(me)),
            ).response
    assert response.payload == body_of(20_000)
    assert len(tasks_seen) == 20
    assert set(tasks_seen) == {idle}  # no task was started for the transfer


async def test_cancel_mid_download_leaves_nothing_on_the_wire(autojump_clock: object) -> None:
    with trio.fail_after(1000):
        async with peer_and_client(body_of(50_000)) as (network, peer, client):
            request: Any = None

            def progress(done: int, total: int | None) -> None:
                if done >= 5 * 1024:
                    peer.stall = True  # the next block is not answered: retransmissions

            request = client.request(Message(code=Code.GET, uri=BIG), progress=progress)
            await trio.sleep(5)  # a retransmission or two of the stalled block
            stalled = [d for d in client_datagrams_after(network, -1) if d.copy > 0]
            request.cancel()
            cancelled_at = trio.current_time()
            with pytest.raises(RequestCancelledError):
                await request.response
            await trio.sleep(300)
            after = client_datagrams_after(network, cancelled_at)
            outstanding = client.statistics.messaging[0].outstanding_requests
    assert stalled  # the stalled block was retransmitted
    assert after == []
    assert outstanding == 0


async def test_cancelling_the_last_waiter_stops_an_upload(autojump_clock: object) -> None:
    with trio.fail_after(1000):
        async with peer_and_client() as (network, peer, client):
            peer.stall = True  # from block 5 on: retransmissions, then cancelled
            request = client.request(Message(code=Code.PUT, uri=UPLOAD, payload=body_of(50_000)))
            with trio.move_on_after(10):
                await request.response
            cancelled_at = trio.current_time()
            sent = {m.opt.block1.num for m in peer.received if m.opt.block1 is not None}
            await trio.sleep(300)
            after = client_datagrams_after(network, cancelled_at)
    assert sent == set(range(6))  # block 5 was never answered
    assert after == []
    assert request.done
    assert peer.uploads == []


async def test_leaving_the_context_stops_the_transfer(autojump_clock: object) -> None:
    network = MemoryNetwork(seed=0)
    peer = BlockPeer(network, body_of(50_000))
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.endpoint.run, peer.on_datagrams, lambda r, e: None)
            async with open_context(network=network) as client:
                request = client.request(
                    Message(code=Code.GET, uri=BIG),
                    progress=lambda done, total: setattr(peer, "stall", done > 4096),
                )
                await trio.sleep(3)
            left_at = trio.current_time()
            with pytest.raises(RequestCancelledError):
                await request.response
            await trio.sleep(300)
            nursery.cancel_scope.cancel()
    assert [d for d in network.capture if d.source.host != SERVER and d.time > left_at] == []


# -- streams -------------------------------------------------------------------------------------


async def test_stream_asks_for_each_block_only_when_consumed(autojump_clock: object) -> None:
    body = body_of(MIB)
    config = BlockwiseConfig(max_body_size=4096)  # no limit for streams
    digest = hashlib.sha256()
    largest = 0
    with trio.fail_after(10_000):
        async with (
            peer_and_client(body, blockwise=config) as (_, peer, client),
            client.stream(BIG) as stream,
        ):
            assert stream.response.code is Code.CONTENT
            assert stream.size == MIB
            count = 0
            async for chunk in stream:
                count += 1
                largest = max(largest, len(chunk))
                digest.update(chunk)
                # one request per chunk handed out so far, never ahead of the consumer
                assert len(peer.received) == count
                assert stream.received == min(count * 1024, MIB)
                await trio.sleep(1)  # a slow consumer
    assert digest.hexdigest() == sha(body)
    assert largest == 1024
    assert count == 1024


async def test_stream_left_early_asks_for_nothing_more(autojump_clock: object) -> None:
    with trio.fail_after(1000):
        async with peer_and_client(body_of(50_000)) as (network, peer, client):
            async with client.stream(BIG) as stream:
                chunks = []
                async for chunk in stream:
                    chunks.append(chunk)
                    if len(chunks) == 3:
                        break
            left_at = trio.current_time()
            await trio.sleep(100)
            after = client_datagrams_after(network, left_at)
    assert len(chunks) == 3
    assert len(peer.received) == 3
    assert after == []


async def test_stream_raises_at_once_on_etag_change(autojump_clock: object) -> None:
    with trio.fail_after(1000):
        async with peer_and_client(body_of(5000)) as (_, peer, client):

            def change(message: Message) -> None:
                if message.opt.block2 is not None and message.opt.block2.num == 2:
                    peer.etag = b"v2"

            peer.before_get = change
            got = []

            async def consume() -> None:
                async with client.stream(BIG) as stream:
                    async for chunk in stream:
                        got.append(chunk)

            with pytest.raises(RepresentationChangedError):
                await consume()
    assert len(got) == 2
    assert len(peer.received) == 3


async def test_stream_of_error_and_small_responses(autojump_clock: object) -> None:
    progress: list[tuple[int, int | None]] = []
    with trio.fail_after(1000):
        async with peer_and_client(b"small") as (_, _peer, client):
            async with client.stream(f"coap://{SERVER}/none") as missing:
                assert missing.response.code is Code.NOT_FOUND
            async with client.stream(BIG, progress=lambda d, t: progress.append((d, t))) as small:
                chunks = [chunk async for chunk in small]
    assert chunks == [b"small"]
    assert small.size == 5
    assert progress == [(5, 5)]


# -- observations ---------------------------------------------------------------------------------


async def test_observation_with_multi_block_notifications(autojump_clock: object) -> None:
    first, second = body_of(3000, 21), body_of(2500, 22)
    with trio.fail_after(1000):
        async with (
            peer_and_client(first) as (_, peer, client),
            client.observe(BIG) as notifications,
        ):
            registration = await notifications.__anext__()
            peer.notify(second, b"v2")
            notification = await notifications.__anext__()
    assert registration.payload == first
    assert registration.opt.observe == 1
    assert registration.opt.block2 is None
    assert notification.payload == second
    assert notification.opt.observe == 2
    assert notification.opt.etag == (b"v2",)
    follow_ups = [m for m in peer.received if m.opt.block2 is not None and m.opt.block2.num > 0]
    assert follow_ups
    assert all(m.opt.observe is None for m in follow_ups)
    assert all(m.token != peer.observe_token for m in follow_ups)


async def test_a_newer_notification_cancels_the_older_fetch(autojump_clock: object) -> None:
    first, older, newer = body_of(3000, 31), body_of(3000, 32), body_of(2100, 33)
    with trio.fail_after(1000):
        async with (
            peer_and_client(first) as (_, peer, client),
            client.observe(BIG) as notifications,
        ):
            assert (await notifications.__anext__()).payload == first
            peer.stall = True
            peer.notify(older, b"older")
            await trio.sleep(3)  # its block 1 is asked for (and retransmitted), unanswered
            peer.stall = False
            peer.notify(newer, b"newer")
            got = await notifications.__anext__()
            await trio.sleep(100)
            assert notifications.received == 2
    assert got.payload == newer
    assert got.opt.etag == (b"newer",)


async def test_an_older_notification_does_not_cancel_the_newer_fetch(
    autojump_clock: object,
) -> None:
    first, newer, older = body_of(3000, 34), body_of(3000, 35), body_of(3000, 36)
    with trio.fail_after(1000):
        async with (
            peer_and_client(first) as (_, peer, client),
            client.observe(BIG) as notifications,
        ):
            assert (await notifications.__anext__()).payload == first
            peer.stall = True
            peer.observe_seq = 10
            peer.notify(newer, b"newer")  # Observe 11: its block 1 stalls
            await trio.sleep(1)
            peer.observe_seq = 5
            peer.notify(older, b"older")  # Observe 6, reordered: stale, dropped
            peer.representation, peer.etag = newer, b"newer"  # the state stays the newer
            peer.stall = False
            got = await notifications.__anext__()
            dropped = notifications.dropped_stale
    assert got.payload == newer
    assert got.opt.observe == 11
    assert dropped == 1


# -- coap_trio client against coap_trio server ----------------------------------------------------


class Store(Resource):
    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.puts = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.body = request.payload
        self.puts += 1
        return Message(code=Code.CHANGED)


async def test_against_coap_trio_server_through_a_lossy_network(autojump_clock: object) -> None:
    network = MemoryNetwork(seed=5, conditions=LOSSY)
    store = Store(body_of(MIB, 41))
    site = Site()
    site.add(("store",), store)
    upload = body_of(MIB, 42)
    config = BlockwiseConfig(max_body_size=2 * MIB)
    with trio.fail_after(20_000):
        async with (
            open_context(network=network, bind=(SERVER, 5683), site=site, blockwise=config),
            open_context(network=network, rng=random.Random(3), blockwise=config) as client,
        ):
            got = await client.get(f"coap://{SERVER}/store")
            put = await client.put(f"coap://{SERVER}/store", payload=upload)
            again = await client.get(f"coap://{SERVER}/store")
    assert sha(got.payload) == sha(body_of(MIB, 41))
    assert put.code is Code.CHANGED
    assert store.puts == 1
    assert sha(again.payload) == sha(upload)


# -- FETCH: the payload of the requests for later blocks (one rule, every driver) ------------

#: A FETCH body that goes up in three 1024-byte Block1 blocks, and one that fits in a request.
UPLOADED_BODY = body_of(3072, 61)
SINGLE_BODY = body_of(500, 62)
ECHO_SIZE = 6144


def echoed(body: bytes) -> bytes:
    """What /echo answers a FETCH of ``body`` with: 6 KiB made of it (its two copies, for
    3072 bytes); nothing for an empty body, so a lost body shows as missing blocks."""
    return (body * (ECHO_SIZE // len(body) + 1))[:ECHO_SIZE] if body else b""


class Echo(Resource):
    """FETCH: :func:`echoed`; counts its renders."""

    def __init__(self) -> None:
        super().__init__()
        self.renders = 0

    async def render_fetch(self, request: Message) -> Message:
        self.renders += 1
        return Message(code=Code.CONTENT, payload=echoed(request.payload))


async def fetch_from_coap_trio(body: bytes, *, stream: bool) -> tuple[bytes, list[Message], int]:
    """FETCH ``body`` from a coap_trio server's /echo on a MemoryNetwork, through
    ``ctx.stream()`` or ``ctx.request()``: the body received, the client's requests
    on the wire, and how often the resource rendered."""
    network = MemoryNetwork(seed=6)
    echo = Echo()
    site = Site()
    site.add(("echo",), echo)
    message = Message(code=Code.FETCH, uri=f"coap://{SERVER}/echo", payload=body)
    with trio.fail_after(100):
        async with (
            open_context(network=network, bind=(SERVER, 5683), site=site),
            open_context(network=network, rng=random.Random(6)) as client,
        ):
            if stream:
                async with client.stream(message) as chunks:
                    received = b"".join([chunk async for chunk in chunks])
            else:
                received = (await client.request(message).response).payload
    requests = [decode(d.data) for d in network.capture if d.source.host != SERVER]
    return received, [m for m in requests if m.code is Code.FETCH], echo.renders


def later_block_requests(requests: list[Message]) -> list[Message]:
    return [m for m in requests if m.opt.block2 is not None and m.opt.block2.num > 0]


@pytest.mark.parametrize("stream", [False, True], ids=["request", "stream"])
async def test_fetch_later_blocks_repeat_the_body_only_when_it_went_in_one_request(
    autojump_clock: object, stream: bool
) -> None:
    # Uploaded in Block1 blocks: the Block2 requests leave Block1 and so the body
    # out (RFC 7959 §2.7) and the server answers them from what it kept.
    received, requests, renders = await fetch_from_coap_trio(UPLOADED_BODY, stream=stream)
    assert received == UPLOADED_BODY * 2
    assert [m.opt.block1 for m in requests[:3]] == [
        BlockValue(0, True, 6),
        BlockValue(1, True, 6),
        BlockValue(2, False, 6),
    ]
    later = later_block_requests(requests)
    assert [m.opt.block2.num for m in later if m.opt.block2] == [1, 2, 3, 4, 5]
    assert all(m.payload == b"" for m in later)
    assert all(m.opt.block1 is None and m.opt.size1 is None for m in later)
    assert len(requests) == 3 + 5
    assert renders == 1
    # In one request: the body selects the representation (RFC 8132 §2.3.2), each
    # request for a later block carries it again.
    received, requests, renders = await fetch_from_coap_trio(SINGLE_BODY, stream=stream)
    assert received == echoed(SINGLE_BODY)
    assert requests[0].payload == SINGLE_BODY
    assert requests[0].opt.block1 is None
    later = later_block_requests(requests)
    assert [m.opt.block2.num for m in later if m.opt.block2] == [1, 2, 3, 4, 5]
    assert all(m.payload == SINGLE_BODY for m in later)
    assert len(requests) == 1 + 5
    assert renders == 1


@pytest.mark.parametrize("stream", [False, True], ids=["request", "stream"])
async def test_later_block_requests_keep_the_uploads_request_tag(
    autojump_clock: object, stream: bool
) -> None:
    """Two FETCH bodies uploaded at once to one resource: the second upload carries a
    Request-Tag, and so do the requests for the later blocks of its response (RFC 9175
    §3.2), so the server finds the representation it kept for that upload."""
    network = MemoryNetwork(seed=7)
    echo = Echo()
    site = Site()
    site.add(("echo",), echo)
    bodies = [body_of(3072, 71), body_of(3072, 72)]
    received: list[bytes] = []

    async def fetch(client: Context, body: bytes) -> None:
        message = Message(code=Code.FETCH, uri=f"coap://{SERVER}/echo", payload=body)
        if stream:
            async with client.stream(message) as chunks:
                received.append(b"".join([chunk async for chunk in chunks]))
        else:
            received.append((await client.request(message).response).payload)

    with trio.fail_after(100):
        async with (
            open_context(network=network, bind=(SERVER, 5683), site=site),
            open_context(network=network, rng=random.Random(7)) as client,
        ):
            client.set_nstart(4)
            async with trio.open_nursery() as nursery:
                for body in bodies:
                    nursery.start_soon(fetch, client, body)
    assert sorted(received) == sorted(body * 2 for body in bodies)
    assert echo.renders == 2
    requests = [decode(d.data) for d in network.capture if d.source.host != SERVER]
    fetches = [m for m in requests if m.code is Code.FETCH]
    tags = {m.opt.request_tag for m in fetches if m.opt.block1 is not None}
    assert len(tags) == 2
    assert () in tags  # the first upload goes without one
    tagged = next(t for t in tags if t)
    later = later_block_requests(fetches)
    assert len(later) == 2 * 5
    assert sorted(m.opt.request_tag for m in later) == [()] * 5 + [tagged] * 5


def test_block2_follow_ups_keep_the_uploads_request_tag_only() -> None:
    message = Message(code=Code.POST, payload=b"body")
    assert Block2FollowUps(message, uploaded=True, upload_tag=b"t").request_tag == b"t"
    assert Block2FollowUps(message, uploaded=False, upload_tag=b"t").request_tag is None
    assert Block2FollowUps(message, uploaded=True).request_tag is None
    message.opt.request_tag = (b"mine",)  # the caller's own, used by the upload
    assert Block2FollowUps(message, uploaded=True).request_tag == b"mine"
    assert Block2FollowUps(message, uploaded=False).request_tag is None
    later = Block2FollowUps(message, uploaded=True).request(BlockValue(1, False, 6))
    assert later.opt.request_tag == (b"mine",)
    assert later.payload == b""


def test_block2_repeats_payload_only_for_a_fetch_sent_in_one_request() -> None:
    for code in (Code.GET, Code.POST, Code.PUT, Code.FETCH, Code.PATCH, Code.iPATCH):
        message = Message(code=code, payload=b"body")
        assert block2_repeats_payload(message, uploaded=False) is (code is Code.FETCH), code
        assert block2_repeats_payload(message, uploaded=True) is False, code


# -- the request for a further block, built in one pass ------------------------------

_OPTION_NUMBERS = [1, 3, 4, 5, 7, 11, 12, 14, 15, 17, 23, 27, 28, 35, 60, 292, 2049]


@settings(deadline=None, max_examples=300)
@given(
    items=st.lists(st.tuples(st.sampled_from(_OPTION_NUMBERS), st.binary(max_size=3)), max_size=12),
    num=st.integers(0, 2000),
    szx=st.integers(0, 6),
    keep_payload=st.booleans(),
    payload=st.binary(max_size=8),
    tag=st.none() | st.binary(max_size=8),
)
def test_block2_request_matches_the_options_api(
    items: list[tuple[int, bytes]],
    num: int,
    szx: int,
    keep_payload: bool,
    payload: bytes,
    tag: bytes | None,
) -> None:
    # The one-pass builder gives what copy(), remove() and opt.block2 = ... give.
    original = Message(code=Code.FETCH, token=b"\x01\x02", mid=7, payload=payload)
    for number, value in items:
        original.opt.add(number, value)
    original.remote = ("192.0.2.1", 5683)
    before = list(original.opt.raw_items)
    block = BlockValue(num, False, szx)

    built = block2_request(original, block, keep_payload, tag)

    expected = original.copy(token=b"", mid=None)
    if not keep_payload:
        expected.payload = b""
    for number in (OptionNumber.BLOCK1, OptionNumber.SIZE1, OptionNumber.REQUEST_TAG):
        expected.opt.remove(number)
    expected.opt.remove(OptionNumber.OBSERVE)
    expected.opt.block2 = block
    if tag is not None:
        expected.opt.request_tag = (tag,)
    assert built.opt.raw_items == expected.opt.raw_items
    assert (built.code, built.mtype, built.mid, built.token, built.payload, built.remote) == (
        expected.code,
        expected.mtype,
        None,
        b"",
        expected.payload,
        expected.remote,
    )
    assert built.opt.block2 == block
    assert original.opt.raw_items == before  # the original is untouched
    built.opt.add(OptionNumber.URI_PATH, b"x")
    assert original.opt.raw_items == before  # and shares no list with the new one
