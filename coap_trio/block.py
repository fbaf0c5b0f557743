"""The value of the Block1/Block2 (and Q-Block1/Q-Block2) options, RFC 7959 §2.2.

Owns the NUM/M/SZX packing; knows nothing of transfers or messages.
"""

from __future__ import annotations

import attrs

__all__ = ["BERT_SZX", "BlockValue"]

#: SZX 7 marks BERT (RFC 8323 §6): 1024-byte units, only on reliable transports.
BERT_SZX = 7


def _check_num(instance: BlockValue, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value < (1 << 20):
        raise ValueError(f"block number {value} is not in 0..2**20-1")


def _check_szx(instance: BlockValue, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 7:
        raise ValueError(f"SZX {value} is not in 0..7")


@attrs.frozen(slots=True)
class BlockValue:
    """A decoded block option: block number, more flag, size exponent."""

    #: The block number (NUM), 0..2**20-1.
    num: int = attrs.field(validator=_check_num)
    #: The M bit: more blocks follow (Block2) / are to come (Block1).
    more: bool
    #: The size exponent: blocks of 2**(szx + 4) bytes; 7 is BERT.
    szx: int = attrs.field(validator=_check_szx)

    @property
    def is_bert(self) -> bool:
        """True for SZX 7 (BERT, RFC 8323)."""
        return self.szx == BERT_SZX

    @property
    def size(self) -> int:
        """Block size in bytes: 16..1024 (1024 for BERT, where it is the unit)."""
        return 1 << (min(self.szx, 6) + 4)

    @property
    def start(self) -> int:
        """Offset of this block's first byte in the representation."""
        return self.num * self.size

    def to_int(self) -> int:
        """The option's integer value: NUM << 4 | M << 3 | SZX."""
        return (self.num << 4) | (8 if self.more else 0) | self.szx

    @classmethod
    def from_int(cls, value: int) -> BlockValue:
        """Decode the option's integer value (at most 24 bits)."""
        if not 0 <= value < (1 << 24):
            raise ValueError(f"block option value {value} does not fit 3 bytes")
        return cls(value >> 4, bool(value & 8), value & 7)

    def reduced_to(self, szx: int) -> BlockValue:
        """The same position expressed with a smaller size exponent (late negotiation)."""
        if szx > self.szx or self.is_bert:
            raise ValueError("can only reduce a non-BERT block size")
        return BlockValue(self.num << (self.szx - szx), self.more, szx)

    def __str__(self) -> str:
        return f"{self.num}/{int(self.more)}/{self.size}"
