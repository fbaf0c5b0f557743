"""Server-side groundwork for block-wise transfers (RFC 7959), sans I/O.

Owns two things:

* :func:`slice_block2` -- which slice of a representation answers a request
  and with which Block2 value (RFC 7959 §2.4, late size negotiation §2.2);
* :class:`Block1Assembler` -- reassembly of request bodies uploaded with
  Block1 (RFC 7959 §2.3), answering each block with 2.31 Continue, the
  complete body, or an error code (§2.9).

Knows nothing of messages, sockets or clocks: the caller decodes the options
(``opt.block1``, ``opt.block2``, ``opt.size1``), builds the key identifying a
body, and passes ``now``. Memory is bounded: assemblies are limited per
remote, in number and in buffered bytes, and expire ``lifetime`` seconds
after their last block; when a bound is reached the least recently active
assembly is evicted and counted.

Decisions where RFC 7959 leaves room:

* A Block2 request for a block at or past the end of the representation: the
  RFC does not say which code to send. The server should answer 4.02 Bad
  Option (the Block2 value is the unacceptable part of the request; 4.08 is
  defined for incomplete request bodies, not for responses). Block 0 is
  always valid, including for an empty representation.
* SZX 7 is reserved outside BERT (§2.2: "MUST lead to a 4.00 Bad Request
  response code upon reception in a request"). BERT (RFC 8323 §6) needs a
  reliable transport on which both sides announced Block-Wise-Transfer; the
  caller says so per request by giving ``bert_size`` (the largest BERT block
  payload, a multiple of 1024, see :func:`bert_block_size`). Without it
  :func:`slice_block2` raises :class:`BertNotAllowed` (answer 4.00) and the
  assembler answers 4.00 itself. With it, a BERT Block2 request is answered
  with a block of ``bert_size`` bytes (numbers count 1024-byte units), and a
  BERT Block1 block must carry a non-zero multiple of 1024 bytes unless it is
  the last. A BERT request is only answered with BERT blocks (early
  negotiation by the client); without SZX 7 in the request nothing changes.
* The Block1 size may shrink between blocks (§2.3: the server may ask for a
  smaller size in 2.31 Continue, block numbers then scale): a block is
  accepted when its byte offset ``num * size`` is exactly the assembled
  length. A *larger* size than the previous block's is refused with 4.08.
* A gap, an out-of-order block or a refused size change answers 4.08 and
  leaves the assembly as it was, so a late or retransmitted block can still
  continue it; a too-large body (4.13) drops it.
* A repeat of the last accepted block replaces it (so a duplicate is not
  appended twice, and is answered 2.31 Continue again). A repeat of the
  final block after :class:`Complete` finds no assembly and gets 4.08; the
  messaging layer's duplicate detection should answer such a retransmission
  from its cache before it gets here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import attrs

from coap_trio.block import BlockValue
from coap_trio.errors import BertNotAllowed, BlockOutOfRange
from coap_trio.numbers.codes import Code
from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.protocol.framing import DEFAULT_MAX_MESSAGE_SIZE

__all__ = [
    "EXCHANGE_LIFETIME",
    "BertNotAllowed",
    "Block1Assembler",
    "Block1Result",
    "BlockOutOfRange",
    "Complete",
    "Continue",
    "Failure",
    "bert_block_size",
    "slice_block2",
]

#: RFC 7252 §4.8.2 EXCHANGE_LIFETIME with the default parameters (247 s).
EXCHANGE_LIFETIME: float = TransmissionParameters().EXCHANGE_LIFETIME

_MAX_SZX = 6
#: The BERT unit (RFC 8323 §6): block numbers count it, blocks are multiples of it.
BERT_UNIT = 1024
#: Bytes of a BERT message's Max-Message-Size left for its header, token and options.
BERT_HEADROOM = 256
#: Why SZX 7 is refused (over UDP, or over a stream without BERT agreed).
BERT_REFUSED = "SZX 7 (BERT) needs a reliable transport on which both sides announced BERT"


def bert_block_size(max_message_size: int, headroom: int = BERT_HEADROOM) -> int | None:
    """The largest BERT block payload for a peer accepting ``max_message_size``-byte
    messages: the most 1024-byte units that fit besides ``headroom`` bytes of header
    and options, and one unit for a peer accepting at least RFC 8323's default of
    1152 bytes (sized for a 1024-byte block and its header: the size of every
    SZX 6 block anyway). None below that."""
    units = (max_message_size - headroom) // BERT_UNIT
    if units >= 1:
        return units * BERT_UNIT
    return BERT_UNIT if max_message_size >= DEFAULT_MAX_MESSAGE_SIZE else None


def slice_block2(
    representation: bytes,
    requested: BlockValue | None,
    preferred_szx: int = _MAX_SZX,
    *,
    bert_size: int | None = None,
) -> tuple[bytes, BlockValue]:
    """The payload and Block2 value answering a request for ``requested``.

    ``requested`` is the request's Block2 option (None: no option, i.e. block
    0 at ``preferred_szx``). The response uses the smaller of the requested
    and preferred sizes -- a server never answers with a larger block than
    asked -- and, when it is smaller, the block starting at the requested
    block's offset (its number scaled, RFC 7959 §2.4). Any block may be asked
    for (random access).

    A requested SZX 7 is answered with a BERT block of ``bert_size`` bytes
    starting at ``num * 1024`` when ``bert_size`` is given (BERT agreed; a
    ``preferred_szx`` below 6 answers a normal block there instead), else
    raises :class:`BertNotAllowed`. Raises :class:`BlockOutOfRange` for a
    block at or past the end of the representation (block 0 is always
    valid). ``preferred_szx`` must be 0..6.
    """
    if not 0 <= preferred_szx <= _MAX_SZX:
        raise ValueError(f"preferred SZX {preferred_szx} is not in 0..6")
    if bert_size is not None and (bert_size < BERT_UNIT or bert_size % BERT_UNIT):
        raise ValueError(f"BERT size {bert_size} is not a positive multiple of 1024")
    if requested is None:
        block = BlockValue(0, False, preferred_szx)
    elif requested.is_bert:
        if bert_size is None:
            raise BertNotAllowed(BERT_REFUSED)
        block = BlockValue(requested.num, requested.more, _MAX_SZX)
        if preferred_szx == _MAX_SZX:
            start = block.start
            if block.num and start >= len(representation):
                raise BlockOutOfRange(
                    f"BERT block {block.num} starts at {start},"
                    f" past the {len(representation)}-byte representation"
                )
            end = start + bert_size
            more = end < len(representation)
            return representation[start:end], BlockValue(block.num, more, requested.szx)
        block = block.reduced_to(preferred_szx)
    elif requested.szx > preferred_szx:
        block = requested.reduced_to(preferred_szx)
    else:
        block = requested
    start = block.start
    if block.num and start >= len(representation):
        raise BlockOutOfRange(
            f"block {block.num} of size {block.size} starts at {start},"
            f" past the {len(representation)}-byte representation"
        )
    end = start + block.size
    return representation[start:end], BlockValue(block.num, end < len(representation), block.szx)


@attrs.frozen(slots=True)
class Continue:
    """Answer 2.31 Continue with this Block1 value: send the next block."""

    block: BlockValue


@attrs.frozen(slots=True)
class Complete:
    """The body is complete; ``block`` is the Block1 value for the final response."""

    body: bytes
    block: BlockValue


@attrs.frozen(slots=True)
class Failure:
    """Answer with ``code``; with Size1 set to ``size1`` when it is not None (4.13)."""

    code: Code
    size1: int | None
    reason: str


Block1Result = Continue | Complete | Failure

_Slot = tuple[Hashable, Hashable]


class _Assembly:
    """One body being uploaded: the bytes so far and the last accepted block."""

    __slots__ = ("buffer", "expires", "last_num", "last_szx", "remote")

    def __init__(self, remote: Hashable, expires: float) -> None:
        self.remote = remote
        self.buffer = bytearray()
        self.expires = expires
        self.last_num = -1
        self.last_szx = -1


class Block1Assembler:
    """Reassembles Block1 uploads, bounded per remote, in total and in bytes.

    ``key`` (per remote) identifies the body: the caller builds it from the
    request's method, path and query and Request-Tag values (RFC 9175 §3),
    so that concurrent uploads with distinct Request-Tags never mix.
    ``preferred_szx`` is the largest block size the server wants; 2.31
    Continue asks for it when the client's is larger (RFC 7959 §2.3).
    """

    def __init__(
        self,
        max_size: int = 1 << 20,
        max_per_remote: int = 8,
        max_total: int = 1024,
        lifetime: float = EXCHANGE_LIFETIME,
        *,
        max_bytes: int = 16 << 20,
        preferred_szx: int = _MAX_SZX,
    ) -> None:
        if min(max_size, max_per_remote, max_total) < 1 or not lifetime > 0:
            raise ValueError("limits and lifetime must be positive")
        if max_bytes < max_size:
            raise ValueError("max_bytes must be at least max_size")
        if not 0 <= preferred_szx <= _MAX_SZX:
            raise ValueError(f"preferred SZX {preferred_szx} is not in 0..6")
        self._max_size = max_size
        self._max_per_remote = max_per_remote
        self._max_total = max_total
        self._max_bytes = max_bytes
        self._lifetime = lifetime
        self._preferred_szx = preferred_szx
        #: All assemblies, least recently active (= soonest to expire) first.
        self._all: OrderedDict[_Slot, _Assembly] = OrderedDict()
        self._by_remote: dict[Hashable, OrderedDict[_Slot, None]] = {}
        self._bytes = 0
        #: Assemblies dropped before their lifetime because a bound was reached.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._all)

    @property
    def buffered(self) -> int:
        """Bytes held by all assemblies."""
        return self._bytes

    @property
    def remotes(self) -> int:
        """How many remotes have assemblies."""
        return len(self._by_remote)

    def has(self, remote: Hashable, key: Hashable) -> bool:
        """Whether an assembly of the body ``key`` from ``remote`` is in progress."""
        return (remote, key) in self._all

    def feed(
        self,
        remote: Hashable,
        key: Hashable,
        block: BlockValue,
        payload: bytes,
        size1: int | None,
        now: float,
        *,
        bert_size: int | None = None,
    ) -> Block1Result:
        """Take one block of the body ``key`` from ``remote``; say how to answer.

        ``bert_size`` (the largest BERT block, see :func:`bert_block_size`) says
        that BERT is agreed for this request; without it SZX 7 is answered 4.00.
        A BERT block (SZX 7) is answered 2.31 Continue with SZX 7 again.
        """
        slot = (remote, key)
        if block.is_bert and bert_size is None:
            return Failure(Code.BAD_REQUEST, None, BERT_REFUSED)
        if size1 is not None and size1 > self._max_size:
            self._drop(slot)
            return self._too_large()
        assembly = self._all.get(slot)
        if assembly is not None and assembly.expires <= now:
            self._drop(slot)
            assembly = None
        if block.num == 0:
            self._drop(slot)
            assembly = self._start(slot, remote, now)
        elif assembly is None:
            return Failure(
                Code.REQUEST_ENTITY_INCOMPLETE, None, f"block {block.num} without block 0"
            )
        elif block.szx > assembly.last_szx and not (
            block.is_bert and assembly.last_szx == _MAX_SZX
        ):  # 1024-byte blocks, then BERT blocks: late BERT negotiation (RFC 8323 §6)
            return Failure(
                Code.REQUEST_ENTITY_INCOMPLETE, None, "block size grew during the transfer"
            )
        length = len(assembly.buffer)
        start = block.start
        if block.num == assembly.last_num and block.szx == assembly.last_szx:
            length = start  # a repeat of the last block replaces it
        if start != length:
            return Failure(
                Code.REQUEST_ENTITY_INCOMPLETE,
                None,
                f"block {block} starts at {start}, expected offset {length}",
            )
        if block.is_bert:
            bad = block.more and (not payload or len(payload) % BERT_UNIT)
        else:
            bad = len(payload) > block.size or (block.more and len(payload) != block.size)
        if bad:
            return Failure(
                Code.BAD_REQUEST,
                None,
                f"block {block} carries {len(payload)} bytes",
            )
        if start + len(payload) > self._max_size:
            self._drop(slot)
            return self._too_large()
        self._bytes += start + len(payload) - len(assembly.buffer)
        del assembly.buffer[start:]
        assembly.buffer += payload
        if not block.more:
            body = bytes(assembly.buffer)
            self._drop(slot)
            return Complete(body, BlockValue(block.num, False, block.szx))
        assembly.last_num = block.num
        assembly.last_szx = block.szx
        assembly.expires = now + self._lifetime
        self._all.move_to_end(slot)
        self._by_remote[remote].move_to_end(slot)
        while self._bytes > self._max_bytes:
            oldest = next(iter(self._all))
            if oldest == slot:  # pragma: no cover -- max_bytes >= max_size
                break
            self._drop(oldest)
            self.evicted += 1
        szx = block.szx if block.is_bert else min(block.szx, self._preferred_szx)
        return Continue(BlockValue(block.num, True, szx))

    def sweep(self, now: float) -> float | None:
        """Drop expired assemblies; returns when the next one expires (or None)."""
        while self._all:
            slot, assembly = next(iter(self._all.items()))
            if assembly.expires > now:
                return assembly.expires
            self._drop(slot)
        return None

    def _too_large(self) -> Failure:
        return Failure(
            Code.REQUEST_ENTITY_TOO_LARGE,
            self._max_size,
            f"bodies are limited to {self._max_size} bytes",
        )

    def _start(self, slot: _Slot, remote: Hashable, now: float) -> _Assembly:
        """A new, empty assembly at the end of the order, evicting to stay in bounds."""
        mine = self._by_remote.get(remote)
        if mine is None:
            mine = self._by_remote[remote] = OrderedDict()
        while len(mine) >= self._max_per_remote:
            self._drop(next(iter(mine)))
            self.evicted += 1
        while len(self._all) >= self._max_total:
            self._drop(next(iter(self._all)))
            self.evicted += 1
        assembly = _Assembly(remote, now + self._lifetime)
        self._all[slot] = assembly
        # Re-fetch: the evictions above may have removed this remote's (now empty) record.
        self._by_remote.setdefault(remote, mine)[slot] = None
        return assembly

    def _drop(self, slot: _Slot) -> None:
        assembly = self._all.pop(slot, None)
        if assembly is None:
            return
        self._bytes -= len(assembly.buffer)
        mine = self._by_remote[assembly.remote]
        del mine[slot]
        if not mine:
            del self._by_remote[assembly.remote]
