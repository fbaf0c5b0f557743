"""BERT (RFC 8323 §6): block-wise transfers with 1024-byte multiples over reliable transports.

Sans I/O: BERT slicing (:func:`slice_block2` with ``bert_size``), BERT
assembly (:class:`Block1Assembler`), the client machines against them
(hypothesis round trips), refusals without agreement. End to end: a
coap_trio client and server over coap+tcp with both CSMs announcing
Block-Wise-Transfer move 200 KB both ways in BERT blocks, and UDP still
answers SZX 7 with 4.00.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio import CHANGED, CONTENT, Code, Message, open_context
from coap_trio.block import BlockValue
from coap_trio.errors import BadResponseError
from coap_trio.protocol.blockwise import (
    BERT_REFUSED,
    BertNotAllowed,
    Block1Assembler,
    BlockOutOfRange,
    Complete,
    Continue,
    Failure,
    bert_block_size,
    slice_block2,
)
from coap_trio.protocol.blockwise_client import (
    Block1Upload,
    Block2Download,
    DownloadComplete,
    FetchBlock,
    SendBlock,
    UploadComplete,
)
from coap_trio.resource import Resource, Site
from coap_trio.transports.stream import StreamLimits

TIMEOUT = 20
BERT = 7


def body_of(size: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


# -- sizes ---------------------------------------------------------------------------------------


def test_bert_block_size() -> None:
    # RFC 8323's default Max-Message-Size is sized for one 1024-byte block.
    assert bert_block_size(1152) == 1024
    assert bert_block_size(1151) is None
    assert bert_block_size(600) is None
    assert bert_block_size(1024 + 256) == 1024
    assert bert_block_size(8192 + 256) == 8192
    assert bert_block_size(8192 + 255) == 7168
    assert bert_block_size(5000, headroom=0) == 4096


# -- slicing -------------------------------------------------------------------------------------


def test_slice_bert_blocks() -> None:
    body = body_of(10_000)
    payload, block = slice_block2(body, BlockValue(0, False, BERT), bert_size=4096)
    assert (payload, block) == (body[:4096], BlockValue(0, True, BERT))
    payload, block = slice_block2(body, BlockValue(4, False, BERT), bert_size=4096)
    assert (payload, block) == (body[4096:8192], BlockValue(4, True, BERT))
    payload, block = slice_block2(body, BlockValue(8, False, BERT), bert_size=4096)
    assert (payload, block) == (body[8192:], BlockValue(8, False, BERT))
    with pytest.raises(BlockOutOfRange):
        slice_block2(body, BlockValue(10, False, BERT), bert_size=4096)


def test_slice_bert_for_a_server_with_smaller_blocks() -> None:
    body = body_of(3000)
    payload, block = slice_block2(body, BlockValue(1, False, BERT), 4, bert_size=4096)
    assert block == BlockValue(4, True, 4)  # unit 1 is byte 1024, i.e. 4 blocks of 256
    assert payload == body[1024:1280]


def test_slice_bert_refused_without_agreement() -> None:
    with pytest.raises(BertNotAllowed) as raised:
        slice_block2(b"x" * 3000, BlockValue(0, False, BERT))
    assert raised.value.code == Code.BAD_REQUEST
    assert "UDP" not in str(raised.value)


def test_slice_rejects_a_bad_bert_size() -> None:
    for size in (0, 1000, 1536):
        with pytest.raises(ValueError, match="BERT size"):
            slice_block2(b"", BlockValue(0, False, BERT), bert_size=size)


# -- assembly ------------------------------------------------------------------------------------


def test_assemble_bert_blocks() -> None:
    assembler = Block1Assembler()
    body = body_of(5000)
    first = assembler.feed(
        "r", "k", BlockValue(0, True, BERT), body[:2048], None, 0.0, bert_size=2048
    )
    assert first == Continue(BlockValue(0, True, BERT))
    again = assembler.feed(
        "r", "k", BlockValue(0, True, BERT), body[:2048], None, 0.0, bert_size=2048
    )
    assert again == Continue(BlockValue(0, True, BERT))  # a repeat replaces the block
    middle = assembler.feed(
        "r", "k", BlockValue(2, True, BERT), body[2048:4096], None, 0.0, bert_size=2048
    )
    assert middle == Continue(BlockValue(2, True, BERT))
    last = assembler.feed(
        "r", "k", BlockValue(4, False, BERT), body[4096:], None, 0.0, bert_size=2048
    )
    assert last == Complete(body, BlockValue(4, False, BERT))
    assert len(assembler) == 0


def test_assembler_refuses_bert_without_agreement_and_bad_bert_blocks() -> None:
    assembler = Block1Assembler()
    refused = assembler.feed("r", "k", BlockValue(0, True, BERT), bytes(1024), None, 0.0)
    assert refused == Failure(Code.BAD_REQUEST, None, BERT_REFUSED)
    assert "UDP" not in BERT_REFUSED
    ragged = assembler.feed(
        "r", "k", BlockValue(0, True, BERT), bytes(1500), None, 0.0, bert_size=2048
    )
    assert isinstance(ragged, Failure)
    assert ragged.code == Code.BAD_REQUEST
    empty = assembler.feed("r", "k", BlockValue(0, True, BERT), b"", None, 0.0, bert_size=2048)
    assert isinstance(empty, Failure)
    assert empty.code == Code.BAD_REQUEST
    gap = assembler.feed(
        "r", "k", BlockValue(0, True, BERT), bytes(2048), None, 0.0, bert_size=2048
    )
    assert isinstance(gap, Continue)
    skipped = assembler.feed(
        "r", "k", BlockValue(3, True, BERT), bytes(1024), None, 0.0, bert_size=2048
    )
    assert isinstance(skipped, Failure)
    assert skipped.code == Code.REQUEST_ENTITY_INCOMPLETE


# -- the client machines against the server's ---------------------------------------------


@settings(deadline=None, max_examples=60)
@given(
    size=st.integers(min_value=0, max_value=40_000),
    units=st.integers(min_value=1, max_value=9),
)
def test_bert_download_round_trip(size: int, units: int) -> None:
    body = body_of(size)
    bert_size = units * 1024
    download = Block2Download()
    requested = BlockValue(0, False, BERT)
    exchanges = 0

    def answer(block: BlockValue) -> Message:
        nonlocal exchanges
        exchanges += 1
        payload, value = slice_block2(body, block, bert_size=bert_size)
        return Message(code=CONTENT, payload=payload, block2=value)

    step = download.start(answer(requested), requested)
    while isinstance(step, FetchBlock):
        assert step.block.is_bert
        step = download.feed(answer(step.block))
    assert isinstance(step, DownloadComplete)
    assert step.response is not None
    assert step.response.payload == body
    assert exchanges == max(1, -(-size // bert_size))


@settings(deadline=None, max_examples=60)
@given(
    size=st.integers(min_value=1, max_value=40_000),
    units=st.integers(min_value=1, max_value=9),
)
def test_bert_upload_round_trip(size: int, units: int) -> None:
    body = body_of(size)
    bert_size = units * 1024
    upload = Block1Upload(body, 6, bert_size=bert_size)
    assembler = Block1Assembler(max_size=1 << 20)
    step: SendBlock | UploadComplete = upload.first()
    exchanges = 0
    while isinstance(step, SendBlock):
        exchanges += 1
        assert step.block.is_bert
        assert len(step.payload) <= bert_size
        result = assembler.feed("r", "k", step.block, step.payload, None, 0.0, bert_size=bert_size)
        if isinstance(result, Continue):
            step = upload.feed(Message(code=Code.CONTINUE, block1=result.block))
        else:
            assert isinstance(result, Complete)
            assert result.body == body
            step = upload.feed(Message(code=CHANGED, block1=result.block))
    assert upload.acknowledged == size
    assert exchanges == -(-size // bert_size)


def test_bert_upload_shrinks_to_what_the_server_asks() -> None:
    body = body_of(6000)
    upload = Block1Upload(body, 6, bert_size=4096)
    first = upload.first()
    assert first.block == BlockValue(0, True, BERT)
    assert len(first.payload) == 4096
    # The server takes the block but asks for 512-byte blocks from now on.
    step = upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(0, True, 5)))
    assert isinstance(step, SendBlock)
    assert step.block == BlockValue(8, True, 5)  # byte 4096 in 512-byte blocks
    assert step.payload == body[4096:4608]


def test_upload_turns_to_bert_once_it_is_agreed() -> None:
    body = body_of(20_000)
    upload = Block1Upload(body, 6)  # started before the peer's CSM: 1024-byte blocks
    first = upload.first()
    assert first.block == BlockValue(0, True, 6)
    step = upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(0, True, 6)), bert_size=8192)
    assert isinstance(step, SendBlock)
    assert step.block == BlockValue(1, True, BERT)  # unit 1 = byte 1024
    assert step.payload == body[1024 : 1024 + 8192]
    step = upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(1, True, BERT)))
    assert isinstance(step, SendBlock)
    assert step.block == BlockValue(9, True, BERT)
    assert step.payload == body[9216 : 9216 + 8192]
    # A server that asked for smaller blocks keeps them, BERT or not.
    small = Block1Upload(body, 6)
    small.first()
    step = small.feed(Message(code=Code.CONTINUE, block1=BlockValue(0, True, 4)), bert_size=8192)
    assert isinstance(step, SendBlock)
    assert step.block == BlockValue(4, True, 4)
    assert step.payload == body[1024:1280]


def test_download_refuses_unasked_bert() -> None:
    download = Block2Download()
    bert = Message(code=CONTENT, payload=bytes(1024), block2=BlockValue(0, True, BERT))
    with pytest.raises(BadResponseError, match="BERT"):
        download.start(bert, BlockValue(0, False, 6))
    agreed = Block2Download(bert=True)  # BERT agreed: SZX 6 asked, BERT answered is fine
    step = agreed.start(bert, BlockValue(0, False, 6))
    assert step == FetchBlock(BlockValue(1, False, BERT), bytes(1024))


@settings(deadline=None, max_examples=60)
@given(
    size=st.integers(min_value=1025, max_value=40_000),
    units=st.integers(min_value=1, max_value=9),
)
def test_bert_download_negotiated_late(size: int, units: int) -> None:
    # The first request carries no Block2 (no option on every small GET): the
    # server answers a first 1024-byte block, and with BERT agreed the rest is
    # asked for with SZX 7, block numbers still counting 1024-byte units.
    body = body_of(size)
    bert_size = units * 1024
    download = Block2Download(bert=True)
    payload, value = slice_block2(body, None)
    assert value is not None
    assert value.szx == 6
    assert value.more
    step = download.start(Message(code=CONTENT, payload=payload, block2=value), None)
    exchanges = 1
    while isinstance(step, FetchBlock):
        assert step.block.is_bert
        payload, value = slice_block2(body, step.block, bert_size=bert_size)
        step = download.feed(Message(code=CONTENT, payload=payload, block2=value))
        exchanges += 1
    assert isinstance(step, DownloadComplete)
    assert step.response is not None
    assert step.response.payload == body
    assert exchanges == 1 + max(1, -(-(size - 1024) // bert_size))
    # Without agreement the blocks stay SZX 6.
    plain = Block2Download()
    payload, value = slice_block2(body, None)
    following = plain.start(Message(code=CONTENT, payload=payload, block2=value), None)
    assert following == FetchBlock(BlockValue(1, False, 6), body[:1024])


# -- end to end ----------------------------------------------------------------------------------


class Store(Resource):
    """GET: the stored payload; PUT: store it (counting the renders)."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload
        self.gets = 0

    async def render_get(self, request: Message) -> Message:
        self.gets += 1
        return Message(code=CONTENT, payload=self.payload)

    async def render_put(self, request: Message) -> Message:
        self.payload = request.payload
        return Message(code=CHANGED)


LIMITS = StreamLimits(max_message_size=8192 + 256)
BIG = body_of(200_000)


async def test_bert_get_and_put_over_tcp() -> None:
    site = Site()
    store = Store(BIG)
    site.add(("big",), store)
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0), stream_limits=LIMITS) as server:
            (address,) = server.stream_addresses
            base = f"coap+tcp://[::1]:{address.port}"
            async with open_context(stream_limits=LIMITS) as client:
                await client.ping(base)  # the connection and both CSMs first
                steps: list[tuple[int, int | None]] = []
                got = await client.request(
                    Message(code=Code.GET, uri=base + "/big"),
                    progress=lambda done, total: steps.append((done, total)),
                ).response
                assert got.code == CONTENT
                assert got.payload == BIG
                # A first block of 1024 bytes (the GET asked for no block size: no
                # Block2 on every small GET), then 8 KiB BERT blocks: 26 exchanges
                # instead of 196 of 1024 bytes.
                assert len(steps) == 26  # after each block but the last, then at the end
                assert steps[0] == (1024, len(BIG))
                assert steps[1] == (1024 + 8192, len(BIG))
                upload = body_of(200_001)[::-1]
                put_steps: list[tuple[int, int | None]] = []
                changed = await client.request(
                    Message(code=Code.PUT, uri=base + "/big", payload=upload),
                    progress=lambda done, total: put_steps.append((done, total)),
                ).response
                assert changed.code == CHANGED
                assert store.payload == upload
                # 25 BERT blocks: a report after each 2.31 Continue, then at the end.
                assert len(put_steps) == 25
                assert put_steps[0] == (8192, len(upload))
                assert server.statistics.blockwise_uploads_completed == 1


async def test_no_bert_without_agreement_over_tcp() -> None:
    site = Site()
    site.add(("big",), Store(BIG[:20_000]))
    quiet = StreamLimits(max_message_size=8192 + 256, block_wise_transfer=False)
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0), stream_limits=quiet) as server:
            (address,) = server.stream_addresses
            base = f"coap+tcp://[::1]:{address.port}"
            async with open_context(stream_limits=LIMITS) as client:
                await client.ping(base)
                steps: list[tuple[int, int | None]] = []
                got = await client.request(
                    Message(code=Code.GET, uri=base + "/big"),
                    progress=lambda done, total: steps.append((done, total)),
                ).response
                assert got.payload == BIG[:20_000]
                assert steps[0] == (1024, 20_000)  # normal blocks
                refused = await client.request(
                    Message(code=Code.GET, uri=base + "/big", block2=BlockValue(0, False, BERT))
                ).response
                upload = Message(
                    code=Code.PUT,
                    uri=base + "/big",
                    payload=bytes(2048),
                    block1=BlockValue(0, True, BERT),
                )
                refused_upload = await client.request(upload).response
    assert refused.code == Code.BAD_REQUEST
    assert b"UDP" not in refused.payload
    assert refused_upload.code == Code.BAD_REQUEST
    assert b"UDP" not in refused_upload.payload


async def test_udp_still_refuses_bert() -> None:
    site = Site()
    site.add(("big",), Store(BIG[:5000]))
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, bind=("::1", 0)) as server:
            port = server.addresses[0].port
            async with open_context() as client:
                for option in ("block2", "block1"):
                    refused = await client.request(
                        Message(
                            code=Code.PUT if option == "block1" else Code.GET,
                            uri=f"coap://[::1]:{port}/big",
                            payload=bytes(1024) if option == "block1" else b"",
                            **{option: BlockValue(0, True, BERT)},
                        )
                    ).response
                    assert refused.code == Code.BAD_REQUEST, option


async def test_uploads_on_a_fresh_connection_turn_to_bert_after_the_first_block() -> None:
    # No ping first: the PUT opens the connection, so its first block leaves
    # before the server's CSM arrives; the rest go as BERT blocks.
    site = Site()
    store = Store(b"")
    site.add(("big",), store)
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0)) as server:
            (address,) = server.stream_addresses
            base = f"coap+tcp://[::1]:{address.port}"
            async with open_context() as client:
                steps: list[int] = []
                changed = await client.request(
                    Message(code=Code.PUT, uri=base + "/big", payload=BIG),
                    progress=lambda done, total: steps.append(done),
                ).response
                got = await client.get(base + "/big")
    assert changed.code == CHANGED
    assert store.payload == BIG
    # Default limits (64 KiB + 256 both sides): 1024, then 64 KiB BERT blocks.
    assert steps == [1024, 1024 + 65536, 1024 + 2 * 65536, 1024 + 3 * 65536, len(BIG)]
    assert got.payload == BIG


async def test_bert_blocks_are_bounded_by_the_connection_not_max_request_payload() -> None:
    # max_request_payload bounds a request taken in one piece; a BERT block is
    # bounded by what our CSM allowed (its Max-Message-Size), and the assembled
    # body by max_body_size. A server that announced 16 KiB messages and refused
    # 16 KiB blocks would break peers that trust its CSM (libcoap does).
    site = Site()
    store = Store(b"")
    site.add(("big",), store)
    large = StreamLimits(max_message_size=16384 + 256)
    with trio.fail_after(TIMEOUT):
        async with open_context(
            site=site, tcp_bind=("::1", 0), stream_limits=large, max_request_payload=4096
        ) as server:
            (address,) = server.stream_addresses
            base = f"coap+tcp://[::1]:{address.port}"
            async with open_context(stream_limits=large) as client:
                await client.ping(base)
                upload = body_of(50_000)
                steps: list[tuple[int, int | None]] = []
                changed = await client.request(
                    Message(code=Code.PUT, uri=base + "/big", payload=upload),
                    progress=lambda done, total: steps.append((done, total)),
                ).response
            assert server.statistics.oversized_requests == 0
    assert changed.code == CHANGED
    assert store.payload == upload
    assert [done for done, _ in steps] == [16384, 32768, 49152, 50_000]


def test_assembler_takes_bert_blocks_after_1024_byte_blocks_only() -> None:
    # Late BERT negotiation: SZX 6 blocks, then SZX 7 (same 1024-byte numbering).
    assembler = Block1Assembler()
    body = body_of(5000)
    first = assembler.feed("r", "k", BlockValue(0, True, 6), body[:1024], None, 0.0, bert_size=2048)
    assert first == Continue(BlockValue(0, True, 6))
    bert = assembler.feed(
        "r", "k", BlockValue(1, True, BERT), body[1024:3072], None, 0.0, bert_size=2048
    )
    assert bert == Continue(BlockValue(1, True, BERT))
    last = assembler.feed(
        "r", "k", BlockValue(3, False, BERT), body[3072:], None, 0.0, bert_size=2048
    )
    assert last == Complete(body, BlockValue(3, False, BERT))
    # From smaller blocks the size may not grow, BERT or not.
    small = Block1Assembler()
    small.feed("r", "k", BlockValue(0, True, 5), body[:512], None, 0.0, bert_size=2048)
    grown = small.feed(
        "r", "k", BlockValue(1, True, BERT), body[1024:3072], None, 0.0, bert_size=2048
    )
    assert isinstance(grown, Failure)
    assert grown.code == Code.REQUEST_ENTITY_INCOMPLETE


async def test_bert_streamed_download_over_tcp() -> None:
    site = Site()
    site.add(("big",), Store(BIG))
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0), stream_limits=LIMITS) as server:
            (address,) = server.stream_addresses
            base = f"coap+tcp://[::1]:{address.port}"
            async with open_context(stream_limits=LIMITS) as client:
                await client.ping(base)
                chunks: list[bytes] = []
                async with client.stream(base + "/big") as body:
                    first = body.response.opt.block2
                    async for chunk in body:
                        chunks.append(chunk)
    # The first block as the server cut it (no Block2 asked for), then BERT blocks.
    assert first == BlockValue(0, True, 6)
    assert b"".join(chunks) == BIG
    assert [len(chunk) for chunk in chunks[:-1]] == [1024] + [8192] * 24


async def test_a_stream_asks_for_no_bert_when_the_peer_takes_too_small_messages() -> None:
    # Both sides announce Block-Wise-Transfer, but the server takes 1100-byte
    # messages: below RFC 8323's default of 1152 no BERT block fits (bert_size is
    # None), and a request for SZX 7 would be answered 4.00. A stream, like a whole
    # download, then asks for its later blocks with SZX 6.
    site = Site()
    site.add(("big",), Store(BIG[:5000]))
    small = StreamLimits(max_message_size=1100)
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0), stream_limits=small) as server:
            (address,) = server.stream_addresses
            base = f"coap+tcp://[::1]:{address.port}"
            async with open_context() as client:
                await client.ping(base)
                chunks: list[bytes] = []
                async with client.stream(base + "/big") as body:
                    async for chunk in body:
                        chunks.append(chunk)
                whole = await client.get(base + "/big")
    assert b"".join(chunks) == BIG[:5000]
    assert [len(chunk) for chunk in chunks] == [1024] * 4 + [904]
    assert whole.payload == BIG[:5000]


class Echo(Resource):
    """FETCH: the body twice (6 KiB for a 3072-byte body); counts its renders."""

    def __init__(self) -> None:
        super().__init__()
        self.renders = 0

    async def render_fetch(self, request: Message) -> Message:
        self.renders += 1
        return Message(code=CONTENT, payload=request.payload * 2)


async def test_bert_fetch_with_an_uploaded_body_and_a_block_wise_response_over_tcp() -> None:
    # The body goes up in one BERT Block1 block; the response comes in a 1024-byte
    # block, then the rest is asked for with SZX 7 and without payload (RFC 7959
    # §2.7), served from the representation the server kept.
    site = Site()
    echo = Echo()
    site.add(("echo",), echo)
    body = body_of(3072)
    with trio.fail_after(TIMEOUT):
        async with open_context(site=site, tcp_bind=("::1", 0), stream_limits=LIMITS) as server:
            (address,) = server.stream_addresses
            uri = f"coap+tcp://[::1]:{address.port}/echo"
            async with open_context(stream_limits=LIMITS) as client:
                await client.ping(uri)
                whole = await client.request(
                    Message(code=Code.FETCH, uri=uri, payload=body)
                ).response
                chunks: list[bytes] = []
                async with client.stream(Message(code=Code.FETCH, uri=uri, payload=body)) as stream:
                    async for chunk in stream:
                        chunks.append(chunk)
            uploads = server.statistics.blockwise_uploads_completed
    assert whole.code == CONTENT
    assert whole.payload == body * 2
    assert b"".join(chunks) == body * 2
    assert [len(chunk) for chunk in chunks] == [1024, 5120]
    assert uploads == 2
    assert echo.renders == 2  # once per FETCH: the later blocks came from what was kept
