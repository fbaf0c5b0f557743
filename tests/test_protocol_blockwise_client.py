"""The sans-I/O client side of block-wise transfers: Block2Download and Block1Upload."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio import BlockValue, Code, Message
from coap_trio.errors import (
    BadResponseError,
    LocalProtocolError,
    RepresentationChangedError,
    ResponseTooLargeError,
)
from coap_trio.protocol.blockwise import Block1Assembler, Complete, Continue, slice_block2
from coap_trio.protocol.blockwise_client import (
    MAX_BLOCK_NUM,
    Block1Upload,
    Block2Download,
    DownloadComplete,
    FetchBlock,
    SendBlock,
    UploadComplete,
    szx_for,
    without_block_options,
)

BODY = bytes(range(256)) * 20  # 5120 bytes


def block2_response(
    body: bytes,
    requested: BlockValue | None,
    preferred_szx: int = 6,
    *,
    etag: bytes | None = b"e1",
    size2: bool = True,
    code: Code = Code.CONTENT,
) -> Message:
    payload, block = slice_block2(body, requested, preferred_szx)
    response = Message(code=code, payload=payload, block2=block)
    if etag is not None:
        response.opt.etag = (etag,)
    if size2 and block.num == 0:
        response.opt.size2 = len(body)
    response.opt.content_format = 42
    return response


def run_download(
    body: bytes, preferred_szx: int = 6, requested: BlockValue | None = None
) -> tuple[Message, list[BlockValue]]:
    download = Block2Download()
    asked: list[BlockValue] = []
    step = download.start(block2_response(body, requested, preferred_szx), requested)
    while isinstance(step, FetchBlock):
        asked.append(step.block)
        step = download.feed(block2_response(body, step.block, preferred_szx))
    assert step.response is not None
    return step.response, asked


# -- downloads ---------------------------------------------------------------------------------


def test_download_assembles_and_keeps_the_first_blocks_options() -> None:
    response, asked = run_download(BODY)
    assert response.payload == BODY
    assert response.opt.block2 is None
    assert response.opt.etag == (b"e1",)
    assert response.opt.size2 == len(BODY)
    assert response.opt.content_format == 42
    assert [b.num for b in asked] == [1, 2, 3, 4]
    assert all(b.szx == 6 for b in asked)


def test_download_follows_the_servers_smaller_size() -> None:
    response, asked = run_download(BODY, preferred_szx=2)  # 64-byte blocks
    assert response.payload == BODY
    assert len(asked) == len(BODY) // 64 - 1
    assert {b.szx for b in asked} == {2}


def test_early_negotiation_asks_that_size_throughout() -> None:
    response, asked = run_download(BODY, requested=BlockValue(0, False, 3))
    assert response.payload == BODY
    assert {b.szx for b in asked} == {3}
    assert asked[-1].num == len(BODY) // 128 - 1


def test_late_negotiation_mid_transfer_rescales() -> None:
    download = Block2Download()
    step = download.start(block2_response(BODY, None, 6))
    assert isinstance(step, FetchBlock)
    assert step.block == BlockValue(1, False, 6)
    # The server answers block 1 with a 256-byte block at the same offset (num 4).
    step = download.feed(block2_response(BODY, step.block, 4))
    assert isinstance(step, FetchBlock)
    assert step.block == BlockValue(5, False, 4)
    while isinstance(step, FetchBlock):
        step = download.feed(block2_response(BODY, step.block, 4))
    assert step.response is not None
    assert step.response.payload == BODY


def test_chunks_and_counters() -> None:
    download = Block2Download(keep_body=False)
    chunks = []
    step = download.start(block2_response(BODY, None, 6))
    chunks.append(step.chunk)
    assert download.size == len(BODY)
    while isinstance(step, FetchBlock):
        step = download.feed(block2_response(BODY, step.block, 6))
        chunks.append(step.chunk)
    assert isinstance(step, DownloadComplete)
    assert step.response is None
    assert b"".join(chunks) == BODY
    assert download.received == len(BODY)
    assert download.expected is None


def test_etag_change_restarts_then_raises() -> None:
    download = Block2Download()
    step = download.start(block2_response(BODY, None, 6, etag=b"a"))
    assert isinstance(step, FetchBlock)
    for restart in (1, 2):
        step = download.feed(block2_response(BODY, step.block, 6, etag=b"other%d" % restart))
        assert isinstance(step, FetchBlock)
        assert step.restart
        assert step.block == BlockValue(0, False, 6)
        assert download.restarts == restart
        assert download.received == 0
        # block 0 again, with the new ETag, then the next block with yet another one
        step = download.feed(block2_response(BODY, step.block, 6, etag=b"other%d" % restart))
        assert isinstance(step, FetchBlock)
        assert step.block.num == 1
    with pytest.raises(RepresentationChangedError):
        download.feed(block2_response(BODY, step.block, 6, etag=b"third"))


@pytest.mark.parametrize(
    ("first", "later"), [(b"a", None), (None, b"a"), (b"a", b"b")], ids=["gone", "new", "differs"]
)
def test_etag_appearing_or_disappearing_counts_as_a_change(
    first: bytes | None, later: bytes | None
) -> None:
    download = Block2Download()
    step = download.start(block2_response(BODY, None, 6, etag=first))
    assert isinstance(step, FetchBlock)
    step = download.feed(block2_response(BODY, step.block, 6, etag=later))
    assert isinstance(step, FetchBlock)
    assert step.restart


def test_a_stream_raises_at_once_on_a_change() -> None:
    download = Block2Download(keep_body=False)
    step = download.start(block2_response(BODY, None, 6, etag=b"a"))
    assert isinstance(step, FetchBlock)
    with pytest.raises(RepresentationChangedError):
        download.feed(block2_response(BODY, step.block, 6, etag=b"b"))


def test_size2_above_the_limit_refuses_at_once() -> None:
    download = Block2Download(max_body_size=4096)
    with pytest.raises(ResponseTooLargeError) as raised:
        download.start(block2_response(BODY, None, 6))
    assert raised.value.size == len(BODY)
    assert raised.value.limit == 4096
    assert "Context.stream" in str(raised.value)


def test_bytes_beyond_the_limit_refuse_without_size2() -> None:
    download = Block2Download(max_body_size=2500)
    step = download.start(block2_response(BODY, None, 6, size2=False))
    assert isinstance(step, FetchBlock)
    step = download.feed(block2_response(BODY, step.block, 6, size2=False))
    assert isinstance(step, FetchBlock)
    with pytest.raises(ResponseTooLargeError):
        download.feed(block2_response(BODY, step.block, 6, size2=False))


def test_block_past_the_announced_size2_is_a_violation() -> None:
    download = Block2Download()
    first = block2_response(BODY, None, 6)
    first.opt.size2 = 1500
    step = download.start(first)
    assert isinstance(step, FetchBlock)
    with pytest.raises(BadResponseError, match="Size2"):
        download.feed(block2_response(BODY, step.block, 6))


def test_size2_above_what_came_gives_the_bytes_that_came() -> None:
    # The buffer is made at Size2 and filled in place; a server that announced
    # more than it sent gives a body of what it sent, and a restart starts over.
    download = Block2Download()
    first = block2_response(BODY, None, 6)
    first.opt.size2 = len(BODY) + 3000
    step = download.start(first)
    while isinstance(step, FetchBlock):
        step = download.feed(block2_response(BODY, step.block, 6))
    assert step.response is not None
    assert step.response.payload == BODY
    assert type(step.response.payload) is bytes


def test_later_blocks_read_etag_and_block2_as_the_accessors_do() -> None:
    # feed() reads ETag and Block2 of later blocks in one pass of its own: a
    # malformed ETag (9 bytes) is skipped as opt.etag skips it, and a Block2
    # of 4 bytes is no Block2, as opt.block2 says.
    download = Block2Download()
    step = download.start(block2_response(BODY, None, 6, etag=None))
    assert isinstance(step, FetchBlock)
    second = block2_response(BODY, step.block, 6, etag=None)
    second.opt.add(4, bytes(9))
    assert second.opt.etag == ()
    step = download.feed(second)
    assert isinstance(step, FetchBlock)
    assert not step.restart
    third = block2_response(BODY, step.block, 6, etag=None)
    third.opt.replace(23, [bytes(4)])
    assert third.opt.block2 is None
    with pytest.raises(BadResponseError, match="carries no Block2"):
        download.feed(third)


def test_restart_after_a_change_refills_a_fresh_buffer() -> None:
    download = Block2Download()
    step = download.start(block2_response(BODY, None, 6))
    assert isinstance(step, FetchBlock)
    changed = bytes(reversed(BODY))
    step = download.feed(block2_response(changed, step.block, 6, etag=b"e2"))
    assert isinstance(step, FetchBlock)
    assert step.restart
    while isinstance(step, FetchBlock):
        step = download.feed(block2_response(changed, step.block, 6, etag=b"e2"))
    assert step.response is not None
    assert step.response.payload == changed


def _violations() -> list[tuple[str, Message]]:
    wrong_number = block2_response(BODY, BlockValue(2, False, 6), 6)
    grown = Message(code=Code.CONTENT, payload=BODY[512:1024], block2=BlockValue(1, True, 5))
    grown.opt.etag = (b"e1",)
    bigger = Message(code=Code.CONTENT, payload=BODY[1024:3072], block2=BlockValue(1, True, 6))
    bigger.opt.etag = (b"e1",)
    short = Message(code=Code.CONTENT, payload=BODY[1024:1500], block2=BlockValue(1, True, 6))
    short.opt.etag = (b"e1",)
    missing = Message(code=Code.CONTENT, payload=BODY[1024:2048])
    missing.opt.etag = (b"e1",)
    error = Message(code=Code.NOT_FOUND, block2=BlockValue(1, False, 6))
    error.opt.etag = (b"e1",)
    bert = Message(code=Code.CONTENT, payload=BODY[1024:2048], block2=BlockValue(1, True, 7))
    bert.opt.etag = (b"e1",)
    return [
        ("wrong block number", wrong_number),
        ("larger block size", bigger),
        ("payload shorter than its size with M=1", short),
        ("no Block2", missing),
        ("another response code", error),
        ("BERT", bert),
        ("offset mismatch", grown),
    ]


@pytest.mark.parametrize(("why", "response"), _violations(), ids=lambda v: str(v)[:20])
def test_protocol_violations(why: str, response: Message) -> None:
    download = Block2Download()
    step = download.start(block2_response(BODY, BlockValue(0, False, 5), 5))
    assert isinstance(step, FetchBlock)
    assert step.block == BlockValue(1, False, 5)
    if why in ("wrong block number", "offset mismatch"):
        response = block2_response(BODY, BlockValue(3, False, 5), 5)
    with pytest.raises(BadResponseError):
        download.feed(response)


def test_growing_size_is_a_violation() -> None:
    download = Block2Download()
    step = download.start(block2_response(BODY, BlockValue(0, False, 4), 4))
    assert isinstance(step, FetchBlock)
    grown = block2_response(BODY, BlockValue(0, False, 5), 5)
    grown.opt.block2 = BlockValue(1, True, 5)  # 512-byte block 1: offset 512, asked 256
    with pytest.raises(BadResponseError):
        download.feed(grown)


def test_first_response_must_be_block_zero_and_not_larger_than_asked() -> None:
    with pytest.raises(BadResponseError):
        Block2Download().start(block2_response(BODY, BlockValue(1, False, 6), 6))
    with pytest.raises(BadResponseError):
        Block2Download().start(block2_response(BODY, None, 6), BlockValue(0, False, 4))
    with pytest.raises(BadResponseError):
        Block2Download().start(Message(code=Code.CONTENT, payload=b"x"))
    with pytest.raises(ValueError, match="random access"):
        Block2Download().start(block2_response(BODY, None, 6), BlockValue(2, False, 6))


def test_block_numbers_run_out() -> None:
    download = Block2Download()
    step = download.start(block2_response(b"x" * 32, BlockValue(0, False, 0), 0, size2=False))
    assert isinstance(step, FetchBlock)
    last = Message(code=Code.CONTENT, payload=b"y" * 16, block2=BlockValue(MAX_BLOCK_NUM, True, 0))
    last.opt.etag = (b"e1",)
    download._expected = BlockValue(MAX_BLOCK_NUM, False, 0)
    with pytest.raises(BadResponseError, match="block number"):
        download.feed(last)


def test_feed_before_start_is_a_usage_error() -> None:
    with pytest.raises(LocalProtocolError, match="before start"):
        Block2Download().feed(Message(code=Code.CONTENT))


def test_empty_final_block_and_empty_first_block() -> None:
    response, asked = run_download(b"z" * 2048)
    assert response.payload == b"z" * 2048
    assert len(asked) == 1
    response, asked = run_download(b"")
    assert response.payload == b""
    assert asked == []


@settings(deadline=None, max_examples=200)
@given(
    body=st.binary(max_size=6000),
    server_szx=st.integers(0, 6),
    client_szx=st.one_of(st.none(), st.integers(0, 6)),
    shrink_at=st.integers(0, 40),
    shrink_to=st.integers(0, 6),
)
def test_download_any_body_any_sizes(
    body: bytes, server_szx: int, client_szx: int | None, shrink_at: int, shrink_to: int
) -> None:
    requested = None if client_szx is None else BlockValue(0, False, client_szx)
    download = Block2Download(max_body_size=10_000)
    step = download.start(block2_response(body, requested, server_szx), requested)
    received = [step.chunk]
    count = 0
    while isinstance(step, FetchBlock):
        count += 1
        szx = min(server_szx, shrink_to) if count >= shrink_at else server_szx
        step = download.feed(block2_response(body, step.block, szx))
        received.append(step.chunk)
    assert step.response is not None
    assert step.response.payload == body == b"".join(received)
    assert download.received == len(body)


# -- uploads ---------------------------------------------------------------------------------


def serve_upload(body: bytes, client_szx: int, server_szx: int) -> tuple[bytes, list[BlockValue]]:
    assembler = Block1Assembler(max_size=1 << 20, preferred_szx=server_szx)
    upload = Block1Upload(body, client_szx)
    step: SendBlock | UploadComplete = upload.first()
    sent = []
    result = None
    while isinstance(step, SendBlock):
        sent.append(step.block)
        size1 = len(body) if step.block.num == 0 else None
        result = assembler.feed("remote", "key", step.block, step.payload, size1, 0.0)
        if isinstance(result, Continue):
            response = Message(code=Code.CONTINUE, block1=result.block)
        else:
            assert isinstance(result, Complete)
            response = Message(code=Code.CHANGED, block1=result.block)
        step = upload.feed(response)
    assert isinstance(result, Complete)
    assert step.response.code is Code.CHANGED
    assert upload.acknowledged == len(body)
    return result.body, sent


def test_upload_in_blocks() -> None:
    body, sent = serve_upload(BODY, 6, 6)
    assert body == BODY
    assert [b.num for b in sent] == [0, 1, 2, 3, 4]
    assert [b.more for b in sent] == [True] * 4 + [False]


def test_upload_follows_the_servers_smaller_size_with_rescaled_numbers() -> None:
    body, sent = serve_upload(BODY, 6, 3)
    assert body == BODY
    assert sent[0] == BlockValue(0, True, 6)
    assert sent[1] == BlockValue(8, True, 3)  # offset 1024 in 128-byte blocks
    assert {b.szx for b in sent[1:]} == {3}


def test_upload_accepts_a_continue_numbered_in_the_new_size() -> None:
    upload = Block1Upload(BODY, 6)
    upload.first()
    step = upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(0, True, 4)))
    assert isinstance(step, SendBlock)
    assert step.block == BlockValue(4, True, 4)
    step = upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(4, True, 4)))
    assert isinstance(step, SendBlock)
    assert step.block == BlockValue(5, True, 4)
    assert step.payload == BODY[1280:1536]
    assert upload.acknowledged == 1280


def test_upload_keeps_its_size_when_the_server_asks_for_larger() -> None:
    upload = Block1Upload(BODY, 4)
    upload.first()
    step = upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(0, True, 6)))
    assert isinstance(step, SendBlock)
    assert step.block == BlockValue(1, True, 4)


def test_upload_ends_early_on_any_final_response() -> None:
    upload = Block1Upload(BODY, 6)
    upload.first()
    step = upload.feed(Message(code=Code.UNAUTHORIZED))
    assert isinstance(step, UploadComplete)
    assert step.response.code is Code.UNAUTHORIZED
    assert upload.acknowledged == 0


@pytest.mark.parametrize(
    "response",
    [
        Message(code=Code.CONTINUE),
        Message(code=Code.CONTINUE, block1=BlockValue(3, True, 6)),
        Message(code=Code.CONTINUE, block1=BlockValue(0, True, 7)),
    ],
    ids=["no Block1", "wrong number", "BERT"],
)
def test_upload_violations(response: Message) -> None:
    upload = Block1Upload(BODY, 6)
    upload.first()
    with pytest.raises(BadResponseError):
        upload.feed(response)


def test_continue_to_the_last_block_is_a_violation() -> None:
    upload = Block1Upload(b"x" * 100, 6)
    assert upload.first().block == BlockValue(0, False, 6)
    with pytest.raises(BadResponseError):
        upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(0, False, 6)))


def test_upload_usage_errors() -> None:
    with pytest.raises(ValueError, match="SZX"):
        Block1Upload(b"x", 7)
    with pytest.raises(LocalProtocolError, match="before first"):
        Block1Upload(b"x", 6).feed(Message(code=Code.CHANGED))
    upload = Block1Upload(b"x" * ((MAX_BLOCK_NUM + 2) * 16), 0)
    upload.first()
    upload._sent = SendBlock(BlockValue(MAX_BLOCK_NUM, True, 0), b"y" * 16)
    with pytest.raises(BadResponseError, match="blocks"):
        upload.feed(Message(code=Code.CONTINUE, block1=BlockValue(MAX_BLOCK_NUM, True, 0)))


@settings(deadline=None, max_examples=200)
@given(
    body=st.binary(min_size=1, max_size=5000), client=st.integers(0, 6), server=st.integers(0, 6)
)
def test_upload_any_body_any_sizes(body: bytes, client: int, server: int) -> None:
    assembled, sent = serve_upload(body, client, server)
    assert hashlib.sha256(assembled).digest() == hashlib.sha256(body).digest()
    assert sent[-1].more is False
    assert all(b.more for b in sent[:-1])


# -- helpers ------------------------------------------------------------------------------------


def test_szx_for() -> None:
    assert [szx_for(n) for n in (0, 15, 16, 31, 32, 100, 1024, 5000)] == [0, 0, 0, 0, 1, 2, 6, 6]


def test_without_block_options_copies() -> None:
    message = Message(
        code=Code.CONTENT, block1=BlockValue(0, False, 6), block2=BlockValue(0, False, 6)
    )
    message.opt.etag = (b"x",)
    stripped = without_block_options(message)
    assert stripped.opt.block1 is None
    assert stripped.opt.block2 is None
    assert stripped.opt.etag == (b"x",)
    assert message.opt.block2 is not None
