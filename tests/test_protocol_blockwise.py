"""Tests for coap_trio.protocol.blockwise: Block2 slicing and Block1 reassembly (RFC 7959)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.block import BlockValue
from coap_trio.errors import RemoteProtocolError
from coap_trio.numbers.codes import Code
from coap_trio.protocol.blockwise import (
    EXCHANGE_LIFETIME,
    BertNotAllowed,
    Block1Assembler,
    BlockOutOfRange,
    Complete,
    Continue,
    Failure,
    slice_block2,
)

REMOTE = ("192.0.2.1", 5683)


def blocks_of(body: bytes, szx: int) -> list[tuple[BlockValue, bytes]]:
    """``body`` cut into Block1 blocks of SZX ``szx`` (one empty block for an empty body)."""
    size = 1 << (szx + 4)
    count = max(1, -(-len(body) // size))
    return [
        (BlockValue(n, n < count - 1, szx), body[n * size : (n + 1) * size]) for n in range(count)
    ]


# -- Block2 ---------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    representation=st.binary(max_size=5000),
    szx=st.integers(0, 6),
    preferred=st.integers(0, 6),
)
def test_slicing_every_block_reassembles(representation: bytes, szx: int, preferred: int) -> None:
    parts = []
    requested: BlockValue | None = BlockValue(0, False, szx)
    used = min(szx, preferred)
    while True:
        assert requested is not None
        payload, block = slice_block2(representation, requested, preferred)
        assert block.szx == used
        assert len(payload) <= block.size
        parts.append(payload)
        if not block.more:
            break
        assert len(payload) == block.size
        requested = BlockValue(block.num + 1, False, block.szx)
    assert b"".join(parts) == representation


def test_no_block2_option_gives_block_zero_at_preferred_size() -> None:
    payload, block = slice_block2(bytes(100), None, preferred_szx=2)
    assert (payload, block) == (bytes(64), BlockValue(0, True, 2))
    payload, block = slice_block2(b"short", None)
    assert (payload, block) == (b"short", BlockValue(0, False, 6))


def test_smaller_client_size_is_honoured() -> None:
    rep = bytes(range(256)) * 4
    payload, block = slice_block2(rep, BlockValue(1, False, 1), preferred_szx=6)
    assert (payload, block) == (rep[32:64], BlockValue(1, True, 1))


def test_larger_client_size_is_reduced_and_num_scaled() -> None:
    rep = bytes(range(256)) * 8
    # Block 1 of 1024 bytes starts at 1024, which is block 64 of 16 bytes.
    payload, block = slice_block2(rep, BlockValue(1, False, 6), preferred_szx=0)
    assert (payload, block) == (rep[1024:1040], BlockValue(64, True, 0))


def test_random_access() -> None:
    rep = bytes(range(200))
    payload, block = slice_block2(rep, BlockValue(3, False, 1))
    assert (payload, block) == (rep[96:128], BlockValue(3, True, 1))
    payload, block = slice_block2(rep, BlockValue(6, False, 1))
    assert (payload, block) == (rep[192:], BlockValue(6, False, 1))


def test_out_of_range() -> None:
    with pytest.raises(BlockOutOfRange) as info:
        slice_block2(bytes(64), BlockValue(4, False, 0))
    assert info.value.code is Code.BAD_OPTION
    assert isinstance(info.value, RemoteProtocolError)  # what the peer asked for
    assert not isinstance(info.value, ValueError)
    with pytest.raises(BlockOutOfRange):
        slice_block2(bytes(65), BlockValue(9, False, 0))
    with pytest.raises(BlockOutOfRange):
        slice_block2(b"", BlockValue(1, False, 0))
    # The last block and block 0 of an empty representation are in range.
    assert slice_block2(bytes(65), BlockValue(4, False, 0)) == (bytes(1), BlockValue(4, False, 0))
    assert slice_block2(b"", BlockValue(0, False, 3)) == (b"", BlockValue(0, False, 3))


def test_bert_rejected() -> None:
    with pytest.raises(BertNotAllowed) as info:
        slice_block2(bytes(4000), BlockValue(0, False, 7))
    assert info.value.code is Code.BAD_REQUEST
    assert isinstance(info.value, RemoteProtocolError)
    assert not isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="preferred SZX"):
        slice_block2(b"", None, preferred_szx=7)


# -- Block1 ---------------------------------------------------------------------------------


@settings(deadline=None)
@given(body=st.binary(max_size=3000), szx=st.integers(0, 6))
def test_in_order_upload_reassembles(body: bytes, szx: int) -> None:
    assembler = Block1Assembler()
    blocks = blocks_of(body, szx)
    for block, payload in blocks[:-1]:
        result = assembler.feed(REMOTE, "k", block, payload, None, 0.0)
        assert result == Continue(BlockValue(block.num, True, szx))
    block, payload = blocks[-1]
    assert assembler.feed(REMOTE, "k", block, payload, len(body), 0.0) == Complete(
        body, BlockValue(block.num, False, szx)
    )
    assert len(assembler) == 0
    assert assembler.buffered == 0
    assert assembler.remotes == 0


def test_duplicate_block_is_not_appended_twice() -> None:
    assembler = Block1Assembler()
    body = bytes(range(40))
    (b0, p0), (b1, p1), (b2, p2) = blocks_of(body, 0)
    assert assembler.feed(REMOTE, "k", b0, p0, None, 0) == Continue(BlockValue(0, True, 0))
    assert assembler.feed(REMOTE, "k", b0, p0, None, 1) == Continue(BlockValue(0, True, 0))
    assert assembler.feed(REMOTE, "k", b1, p1, None, 2) == Continue(BlockValue(1, True, 0))
    assert assembler.feed(REMOTE, "k", b1, p1, None, 3) == Continue(BlockValue(1, True, 0))
    assert assembler.buffered == 32
    assert assembler.feed(REMOTE, "k", b2, p2, None, 4) == Complete(body, BlockValue(2, False, 0))


def test_gap_is_request_entity_incomplete() -> None:
    assembler = Block1Assembler()
    (b0, p0), _, (b2, p2) = blocks_of(bytes(40), 0)
    assembler.feed(REMOTE, "k", b0, p0, None, 0)
    result = assembler.feed(REMOTE, "k", b2, p2, None, 0)
    assert isinstance(result, Failure)
    assert result.code is Code.REQUEST_ENTITY_INCOMPLETE
    assert result.size1 is None
    # The assembly is kept: the missing block can still arrive.
    assert len(assembler) == 1


def test_block_without_start_is_request_entity_incomplete() -> None:
    result = Block1Assembler().feed(REMOTE, "k", BlockValue(1, True, 0), bytes(16), None, 0)
    assert isinstance(result, Failure)
    assert result.code is Code.REQUEST_ENTITY_INCOMPLETE


def test_block_zero_restarts() -> None:
    assembler = Block1Assembler()
    assembler.feed(REMOTE, "k", BlockValue(0, True, 0), b"a" * 16, None, 0)
    assembler.feed(REMOTE, "k", BlockValue(1, True, 0), b"b" * 16, None, 0)
    assembler.feed(REMOTE, "k", BlockValue(0, True, 0), b"c" * 16, None, 0)
    result = assembler.feed(REMOTE, "k", BlockValue(1, False, 0), b"d", None, 0)
    assert result == Complete(b"c" * 16 + b"d", BlockValue(1, False, 0))


def test_wrong_payload_length_is_bad_request() -> None:
    assembler = Block1Assembler()
    short = assembler.feed(REMOTE, "k", BlockValue(0, True, 0), bytes(15), None, 0)
    assert isinstance(short, Failure)
    assert short.code is Code.BAD_REQUEST
    long = assembler.feed(REMOTE, "k", BlockValue(0, False, 0), bytes(17), None, 0)
    assert isinstance(long, Failure)
    assert long.code is Code.BAD_REQUEST


def test_bert_block1_is_bad_request() -> None:
    result = Block1Assembler().feed(REMOTE, "k", BlockValue(0, True, 7), bytes(1024), None, 0)
    assert isinstance(result, Failure)
    assert result.code is Code.BAD_REQUEST


def test_oversized_by_size1() -> None:
    assembler = Block1Assembler(max_size=100)
    assembler.feed(REMOTE, "k", BlockValue(0, True, 0), bytes(16), None, 0)
    result = assembler.feed(REMOTE, "k", BlockValue(1, True, 0), bytes(16), 101, 0)
    assert isinstance(result, Failure)
    assert (result.code, result.size1) == (Code.REQUEST_ENTITY_TOO_LARGE, 100)
    assert len(assembler) == 0
    result = assembler.feed(REMOTE, "k", BlockValue(0, True, 0), bytes(16), 5000, 0)
    assert isinstance(result, Failure)
    assert (result.code, result.size1) == (Code.REQUEST_ENTITY_TOO_LARGE, 100)
    assert len(assembler) == 0


def test_oversized_by_running_total() -> None:
    assembler = Block1Assembler(max_size=40)
    for num in range(2):
        result = assembler.feed(REMOTE, "k", BlockValue(num, True, 0), bytes(16), None, 0)
        assert isinstance(result, Continue)
    result = assembler.feed(REMOTE, "k", BlockValue(2, True, 0), bytes(16), None, 0)
    assert isinstance(result, Failure)
    assert (result.code, result.size1) == (Code.REQUEST_ENTITY_TOO_LARGE, 40)
    assert len(assembler) == 0
    assert assembler.buffered == 0
    # Exactly max_size is fine.
    body = bytes(range(40))
    for block, payload in blocks_of(body, 0):
        result = assembler.feed(REMOTE, "k", block, payload, None, 0)
    assert result == Complete(body, BlockValue(2, False, 0))


def test_size_shrinks_at_a_boundary() -> None:
    assembler = Block1Assembler(preferred_szx=1)
    body = bytes(range(200))
    # The client starts with 64-byte blocks; the server asks for 32.
    result = assembler.feed(REMOTE, "k", BlockValue(0, True, 2), body[:64], None, 0)
    assert result == Continue(BlockValue(0, True, 1))
    # Offset 64 is block 2 of 32 bytes.
    result = assembler.feed(REMOTE, "k", BlockValue(2, True, 1), body[64:96], None, 0)
    assert result == Continue(BlockValue(2, True, 1))
    result = assembler.feed(REMOTE, "k", BlockValue(6, True, 0), body[96:112], None, 0)
    assert result == Continue(BlockValue(6, True, 0))
    result = assembler.feed(REMOTE, "k", BlockValue(7, False, 0), body[112:], None, 0)
    assert isinstance(result, Failure)  # a 0-szx final block holds at most 16 bytes
    result = assembler.feed(REMOTE, "k", BlockValue(7, False, 0), body[112:128], None, 0)
    assert result == Complete(body[:128], BlockValue(7, False, 0))


def test_size_may_not_grow() -> None:
    assembler = Block1Assembler()
    assembler.feed(REMOTE, "k", BlockValue(0, True, 0), bytes(16), None, 0)
    assembler.feed(REMOTE, "k", BlockValue(1, True, 0), bytes(16), None, 0)
    # Offset 32 is block 1 of 32 bytes, but the size may not grow.
    result = assembler.feed(REMOTE, "k", BlockValue(1, True, 1), bytes(32), None, 0)
    assert isinstance(result, Failure)
    assert result.code is Code.REQUEST_ENTITY_INCOMPLETE


def test_concurrent_uploads_with_distinct_request_tags_do_not_mix() -> None:
    assembler = Block1Assembler()
    one, two = bytes([1]) * 50, bytes([2]) * 70
    key_one = ("POST", ("upload",), (b"\x01",))
    key_two = ("POST", ("upload",), (b"\x02",))
    blocks_one, blocks_two = blocks_of(one, 0), blocks_of(two, 0)
    results: dict[object, object] = {}
    for i in range(max(len(blocks_one), len(blocks_two))):
        for key, blocks in ((key_one, blocks_one), (key_two, blocks_two)):
            if i < len(blocks):
                block, payload = blocks[i]
                results[key] = assembler.feed(REMOTE, key, block, payload, None, 0)
    assert results[key_one] == Complete(one, BlockValue(3, False, 0))
    assert results[key_two] == Complete(two, BlockValue(4, False, 0))


def test_same_key_from_distinct_remotes_does_not_mix() -> None:
    assembler = Block1Assembler()
    other = ("192.0.2.2", 5683)
    assembler.feed(REMOTE, "k", BlockValue(0, True, 0), b"a" * 16, None, 0)
    assembler.feed(other, "k", BlockValue(0, True, 0), b"b" * 16, None, 0)
    assert assembler.feed(REMOTE, "k", BlockValue(1, False, 0), b"!", None, 0) == Complete(
        b"a" * 16 + b"!", BlockValue(1, False, 0)
    )
    assert assembler.feed(other, "k", BlockValue(1, False, 0), b"?", None, 0) == Complete(
        b"b" * 16 + b"?", BlockValue(1, False, 0)
    )


def test_eviction_per_remote() -> None:
    assembler = Block1Assembler(max_per_remote=2)
    for key in range(3):
        assembler.feed(REMOTE, key, BlockValue(0, True, 0), bytes(16), None, key)
    assert len(assembler) == 2
    assert assembler.evicted == 1
    # The oldest (key 0) went; keys 1 and 2 continue.
    result = assembler.feed(REMOTE, 0, BlockValue(1, True, 0), bytes(16), None, 3)
    assert isinstance(result, Failure)
    for key in (1, 2):
        result = assembler.feed(REMOTE, key, BlockValue(1, True, 0), bytes(16), None, 3)
        assert isinstance(result, Continue)


def test_eviction_total() -> None:
    assembler = Block1Assembler(max_per_remote=8, max_total=3)
    for n in range(5):
        assembler.feed(("192.0.2.1", n), "k", BlockValue(0, True, 0), bytes(16), None, n)
    assert len(assembler) == 3
    assert assembler.remotes == 3
    assert assembler.evicted == 2
    result = assembler.feed(("192.0.2.1", 1), "k", BlockValue(1, True, 0), bytes(16), None, 9)
    assert isinstance(result, Failure)
    result = assembler.feed(("192.0.2.1", 2), "k", BlockValue(1, True, 0), bytes(16), None, 9)
    assert isinstance(result, Continue)


def test_activity_protects_from_eviction() -> None:
    assembler = Block1Assembler(max_total=2)
    assembler.feed(REMOTE, "a", BlockValue(0, True, 0), bytes(16), None, 0)
    assembler.feed(REMOTE, "b", BlockValue(0, True, 0), bytes(16), None, 1)
    assembler.feed(REMOTE, "a", BlockValue(1, True, 0), bytes(16), None, 2)
    assembler.feed(REMOTE, "c", BlockValue(0, True, 0), bytes(16), None, 3)
    # "b" was the least recently active.
    assert isinstance(
        assembler.feed(REMOTE, "a", BlockValue(2, True, 0), bytes(16), None, 4), Continue
    )
    assert isinstance(
        assembler.feed(REMOTE, "b", BlockValue(1, True, 0), bytes(16), None, 4), Failure
    )


def test_eviction_by_buffered_bytes() -> None:
    assembler = Block1Assembler(max_size=64, max_bytes=80)
    for key in range(3):
        for num in range(2):
            assembler.feed(REMOTE, key, BlockValue(num, True, 0), bytes(16), None, 0)
    assert assembler.buffered == 64
    assert assembler.evicted == 1
    assert len(assembler) == 2


def test_expiry_via_sweep() -> None:
    assembler = Block1Assembler(lifetime=10)
    assert assembler.sweep(0) is None
    assembler.feed(REMOTE, "a", BlockValue(0, True, 0), bytes(16), None, 0)
    assembler.feed(REMOTE, "b", BlockValue(0, True, 0), bytes(16), None, 5)
    assert assembler.sweep(1) == 10
    assembler.feed(REMOTE, "a", BlockValue(1, True, 0), bytes(16), None, 6)
    assert assembler.sweep(7) == 15
    assert assembler.sweep(15) == 16
    assert len(assembler) == 1
    assert assembler.sweep(16) is None
    assert len(assembler) == 0
    assert assembler.remotes == 0
    assert assembler.buffered == 0
    assert assembler.evicted == 0


def test_expired_assembly_is_not_continued_before_sweep() -> None:
    assembler = Block1Assembler(lifetime=10)
    assembler.feed(REMOTE, "a", BlockValue(0, True, 0), bytes(16), None, 0)
    result = assembler.feed(REMOTE, "a", BlockValue(1, False, 0), b"x", None, 10)
    assert isinstance(result, Failure)
    assert result.code is Code.REQUEST_ENTITY_INCOMPLETE
    assert len(assembler) == 0


def test_a_thousand_abandoned_uploads_stay_bounded() -> None:
    assembler = Block1Assembler(max_size=4096, max_per_remote=4, max_total=100, max_bytes=8192)
    for n in range(1000):
        remote = (f"198.51.100.{n % 50}", 5683)
        for num in range(3):
            assembler.feed(remote, n, BlockValue(num, True, 6), bytes(1024), None, n * 0.01)
        assert len(assembler) <= 100
        assert assembler.buffered <= 8192
    # 8192 buffered bytes hold two 3072-byte assemblies: the other 998 were evicted.
    assert (len(assembler), assembler.evicted, assembler.buffered) == (2, 998, 6144)
    assert assembler.sweep(10.0) == pytest.approx(998 * 0.01 + EXCHANGE_LIFETIME)
    assert assembler.sweep(10.0 + EXCHANGE_LIFETIME) is None
    assert (len(assembler), assembler.remotes, assembler.buffered) == (0, 0, 0)


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Block1Assembler(max_size=100, max_bytes=10)
    with pytest.raises(ValueError, match="positive"):
        Block1Assembler(max_total=0)
    with pytest.raises(ValueError, match="preferred SZX"):
        Block1Assembler(preferred_szx=7)


# -- boundaries of Block1 reassembly --------------------------------------------------------


def test_a_second_upload_replaces_the_first_with_one_upload_per_remote() -> None:
    # The bound evicts the remote's only assembly, which empties its record;
    # the new upload must still be recorded for the remote.
    assembler = Block1Assembler(max_per_remote=1)
    first = assembler.feed(REMOTE, "a", BlockValue(0, True, 0), bytes(16), None, 0)
    second = assembler.feed(REMOTE, "b", BlockValue(0, True, 0), b"b" * 16, None, 1)
    assert first == second == Continue(BlockValue(0, True, 0))
    assert (len(assembler), assembler.remotes, assembler.evicted) == (1, 1, 1)
    assert not assembler.has(REMOTE, "a")
    assert assembler.has(REMOTE, "b")
    done = assembler.feed(REMOTE, "b", BlockValue(1, False, 0), b"!", None, 2)
    assert done == Complete(b"b" * 16 + b"!", BlockValue(1, False, 0))
    assert (len(assembler), assembler.remotes, assembler.buffered) == (0, 0, 0)
    # And again: a third upload after a completed one is a fresh start.
    again = assembler.feed(REMOTE, "c", BlockValue(0, True, 0), bytes(16), None, 3)
    assert again == Continue(BlockValue(0, True, 0))
    assert (len(assembler), assembler.remotes, assembler.evicted) == (1, 1, 1)


def test_every_eviction_of_one_remote_takes_its_oldest() -> None:
    assembler = Block1Assembler(max_per_remote=2)
    for key in range(6):
        assembler.feed(REMOTE, key, BlockValue(0, True, 0), bytes(16), None, key)
        assert len(assembler) == min(key + 1, 2)
    assert assembler.evicted == 4
    assert [key for key in range(6) if assembler.has(REMOTE, key)] == [4, 5]
    assert assembler.remotes == 1


@pytest.mark.parametrize("szx", range(6))
def test_bert_is_refused_mid_upload_after_blocks_smaller_than_1024(szx: int) -> None:
    # 1024 bytes in blocks of SZX ``szx``; a BERT block starting right there
    # (at 1024, with no gap) is still refused: only 1024-byte blocks may turn BERT.
    assembler = Block1Assembler()
    size = 1 << (szx + 4)
    for num in range(1024 // size):
        result = assembler.feed(
            REMOTE, "k", BlockValue(num, True, szx), bytes(size), None, 0, bert_size=2048
        )
        assert isinstance(result, Continue)
    bert = assembler.feed(REMOTE, "k", BlockValue(1, True, 7), bytes(2048), None, 0, bert_size=2048)
    assert bert == Failure(
        Code.REQUEST_ENTITY_INCOMPLETE, None, "block size grew during the transfer"
    )


def test_bert_is_taken_mid_upload_after_1024_byte_blocks() -> None:
    assembler = Block1Assembler()
    assembler.feed(REMOTE, "k", BlockValue(0, True, 6), bytes(1024), None, 0, bert_size=2048)
    bert = assembler.feed(REMOTE, "k", BlockValue(1, True, 7), bytes(2048), None, 0, bert_size=2048)
    assert bert == Continue(BlockValue(1, True, 7))
    assert assembler.buffered == 3072


def test_a_bert_block_must_start_exactly_at_the_end() -> None:
    def started() -> Block1Assembler:
        assembler = Block1Assembler()
        first = assembler.feed(
            REMOTE, "k", BlockValue(0, True, 7), bytes(2048), None, 0, bert_size=2048
        )
        assert first == Continue(BlockValue(0, True, 7))
        return assembler

    at_end = started().feed(
        REMOTE, "k", BlockValue(2, True, 7), bytes(1024), None, 0, bert_size=2048
    )
    assert at_end == Continue(BlockValue(2, True, 7))
    for num in (1, 3):  # 1024 bytes before the end (not a repeat), 1024 after it
        result = started().feed(
            REMOTE, "k", BlockValue(num, True, 7), bytes(1024), None, 0, bert_size=2048
        )
        assert isinstance(result, Failure)
        assert result.code is Code.REQUEST_ENTITY_INCOMPLETE


@pytest.mark.parametrize(
    ("more", "length", "accepted"),
    [
        (True, 1024, True),
        (True, 2048, True),  # ends exactly at a multiple of 1024
        (True, 3072, True),
        (True, 1536, False),  # whole 512-byte units are not enough
        (True, 2047, False),
        (True, 2049, False),
        (True, 0, False),
        (False, 2048, True),  # the last block may end anywhere
        (False, 2047, True),
        (False, 1, True),
    ],
)
def test_a_bert_block_with_the_m_bit_holds_whole_1024_byte_units(
    more: bool, length: int, accepted: bool
) -> None:
    assembler = Block1Assembler()
    assembler.feed(REMOTE, "k", BlockValue(0, True, 7), bytes(1024), None, 0, bert_size=2048)
    result = assembler.feed(
        REMOTE, "k", BlockValue(1, more, 7), bytes(length), None, 0, bert_size=2048
    )
    if not accepted:
        assert isinstance(result, Failure)
        assert result.code is Code.BAD_REQUEST
    elif more:
        assert result == Continue(BlockValue(1, True, 7))
    else:
        assert result == Complete(bytes(1024 + length), BlockValue(1, False, 7))


def test_size1_exactly_at_the_limit_is_accepted() -> None:
    assembler = Block1Assembler(max_size=100)
    result = assembler.feed(REMOTE, "k", BlockValue(0, True, 0), bytes(16), 100, 0)
    assert result == Continue(BlockValue(0, True, 0))
    result = assembler.feed(REMOTE, "k", BlockValue(1, True, 0), bytes(16), 101, 0)
    assert result == Failure(Code.REQUEST_ENTITY_TOO_LARGE, 100, "bodies are limited to 100 bytes")
    assert len(assembler) == 0


def test_buffered_bytes_exactly_at_the_bound_evict_nothing() -> None:
    assembler = Block1Assembler(max_size=64, max_bytes=64)
    assembler.feed(REMOTE, "a", BlockValue(0, True, 0), bytes(16), None, 0)
    assembler.feed(REMOTE, "b", BlockValue(0, True, 0), bytes(16), None, 1)
    assembler.feed(REMOTE, "c", BlockValue(0, True, 1), bytes(32), None, 2)
    assert (assembler.buffered, assembler.evicted, len(assembler)) == (64, 0, 3)
    # One more block of 32: two assemblies must go to get back within the bound.
    result = assembler.feed(REMOTE, "c", BlockValue(1, True, 1), bytes(32), None, 3)
    assert result == Continue(BlockValue(1, True, 1))
    assert (assembler.buffered, assembler.evicted, len(assembler)) == (64, 2, 1)
    assert assembler.has(REMOTE, "c")
