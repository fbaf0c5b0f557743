"""Gaps in the block-wise tests that mutation testing found (docs/testing.md,
"Mutation testing").

Each test pins a behaviour that a surviving mutant of
``coap_trio/protocol/blockwise.py`` changed without any other test noticing.
The refusals' texts are behaviour: the server sends them as the diagnostic
payload of its 4.xx answer (RFC 7252 §5.5.2).
"""

from __future__ import annotations

import pytest

from coap_trio.block import BlockValue
from coap_trio.numbers.codes import Code
from coap_trio.protocol.blockwise import (
    BERT_REFUSED,
    EXCHANGE_LIFETIME,
    BertNotAllowed,
    Block1Assembler,
    BlockOutOfRange,
    Continue,
    Failure,
    slice_block2,
)

BERT = 7


# -- Block2 ---------------------------------------------------------------------------------


def test_the_last_bert_block_ends_the_transfer_exactly() -> None:
    """RFC 8323 §6 / RFC 7959 §2.2: a BERT block that ends exactly at the end of the
    representation has M=0; one that ends before it has M=1."""
    body = bytes(range(256)) * 16  # 4096 bytes: four BERT units
    payload, block = slice_block2(body, BlockValue(2, False, BERT), bert_size=2048)
    assert (payload, block) == (body[2048:], BlockValue(2, False, BERT))
    payload, block = slice_block2(body, BlockValue(1, False, BERT), bert_size=2048)
    assert (payload, block) == (body[1024:3072], BlockValue(1, True, BERT))


def test_a_bert_block_starting_at_the_end_is_out_of_range() -> None:
    """A BERT block whose first byte would be the end of the representation is
    refused (4.02), like any other block past the end; the text says where."""
    body = bytes(4096)
    with pytest.raises(BlockOutOfRange) as caught:
        slice_block2(body, BlockValue(4, False, BERT), bert_size=1024)
    assert str(caught.value) == "BERT block 4 starts at 4096, past the 4096-byte representation"
    assert caught.value.code is Code.BAD_OPTION


def test_a_block_past_the_end_says_where() -> None:
    with pytest.raises(BlockOutOfRange) as caught:
        slice_block2(bytes(100), BlockValue(2, False, 2))  # 64-byte blocks: starts at 128
    assert str(caught.value) == "block 2 of size 64 starts at 128, past the 100-byte representation"


def test_bert_refused_says_why() -> None:
    with pytest.raises(BertNotAllowed) as caught:
        slice_block2(bytes(10), BlockValue(0, False, BERT))
    assert str(caught.value) == BERT_REFUSED


# -- Block1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_size": 0}, "limits and lifetime must be positive"),
        ({"max_per_remote": 0}, "limits and lifetime must be positive"),
        ({"max_total": 0}, "limits and lifetime must be positive"),
        ({"lifetime": 0.0}, "limits and lifetime must be positive"),
        ({"max_size": 2048, "max_bytes": 2047}, "max_bytes must be at least max_size"),
    ],
)
def test_assembler_limits_are_validated(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Block1Assembler(**options)  # type: ignore[arg-type]


def test_a_lifetime_under_a_second_is_allowed() -> None:
    assembler = Block1Assembler(lifetime=0.5)
    assert isinstance(
        assembler.feed("r", "k", BlockValue(0, True, 0), bytes(16), None, 0.0), Continue
    )
    assert assembler.sweep(0.25) == 0.5
    assert assembler.sweep(0.5) is None


def test_default_bounds_are_8_per_remote_and_1024_in_all() -> None:
    """The defaults of Block1Assembler (BlockwiseConfig's too)."""
    assembler = Block1Assembler()
    for key in range(9):
        assembler.feed("one", key, BlockValue(0, True, 0), bytes(16), None, 0.0)
    assert (len(assembler), assembler.evicted) == (8, 1)
    assert not assembler.has("one", 0)
    for remote in range(1024):
        assembler.feed(remote, "k", BlockValue(0, True, 0), bytes(16), None, 1.0)
    assert len(assembler) == 1024
    assert assembler.evicted == 1 + 8
    assert assembler.has(1023, "k")


def test_a_block_of_the_wrong_size_says_how_many_bytes_it_carried() -> None:
    assembler = Block1Assembler()
    result = assembler.feed("r", "k", BlockValue(0, True, 1), bytes(20), None, 0.0)
    assert result == Failure(Code.BAD_REQUEST, None, "block 0/1/32 carries 20 bytes")


def test_an_assembly_lives_a_lifetime_from_its_first_block() -> None:
    """An assembly started by a block 0 that is then refused is kept for the
    lifetime (the client may send block 0 again), not expired at once."""
    assembler = Block1Assembler()
    refused = assembler.feed("r", "k", BlockValue(0, True, 1), bytes(20), None, 10.0)
    assert isinstance(refused, Failure)
    assert assembler.has("r", "k")
    assert assembler.sweep(11.0) == 10.0 + EXCHANGE_LIFETIME
    assert assembler.has("r", "k")
