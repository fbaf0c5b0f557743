"""Client-side block-wise transfers (RFC 7959), sans I/O.

Owns two state machines:

* :class:`Block2Download` -- which block to ask for next when a response
  comes in pieces (RFC 7959 §2.4), the checks each piece must pass (block
  number, size, Size2, ETag consistency) and the assembled response;
* :class:`Block1Upload` -- how a request body is cut into Block1 blocks and
  how the server's 2.31 Continue answers steer the next one (§2.3, size
  renegotiation with block numbers rescaled).

Knows nothing of trio, sockets, tokens or clocks: the caller sends the
requests these machines ask for and feeds them the responses. Errors are
raised as the :class:`~coap_trio.errors.RequestError` the request ends with.

Decisions where RFC 7959 leaves room:

* The size a download continues with is the size of the server's last block
  (never larger: a block larger than asked for is a protocol violation).
* Every block must answer with the first block's response code; a later
  block answered with anything else (an error, say) is a bad response.
* ETag consistency (§2.4): a later block whose ETag differs from the first
  block's, appears or disappears means the representation changed; the
  download restarts from block 0 (``max_restarts`` times, then
  :class:`~coap_trio.errors.RepresentationChangedError`). A stream, which
  cannot take back bytes it handed out, raises at once.
* Size2 is a hint of the total, but a block reaching past it is a protocol
  violation (the server announced less than it sends).
* In 2.31 Continue the acknowledged block number may be given in the old or
  in the new (smaller) size; both are accepted. A larger size than the one
  sent is not followed (the client keeps its size).
* BERT (RFC 8323 §6): a download accepts BERT blocks (SZX 7: a multiple of
  1024 bytes, numbers counting 1024-byte units) when it asked for SZX 7, or
  for SZX 6 on a connection where BERT is agreed (``bert``);
  the next block asked for is the unit after the last one received, with
  SZX 7 once BERT is agreed (a first block of 1024 bytes is followed by a
  request for BERT blocks: late negotiation). An
  upload sends BERT blocks when given a ``bert_size``; a 2.31 Continue with
  a smaller SZX turns it into normal blocks of that size.
"""

from __future__ import annotations

import attrs

from ..block import BERT_SZX, BlockValue
from ..errors import (
    BadResponseError,
    LocalProtocolError,
    RepresentationChangedError,
    ResponseTooLargeError,
)
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber

__all__ = [
    "MAX_BLOCK_NUM",
    "Block1Upload",
    "Block2Download",
    "DownloadComplete",
    "FetchBlock",
    "SendBlock",
    "UploadComplete",
    "szx_for",
    "without_block_options",
]

#: The largest block number the option can carry (20 bits).
MAX_BLOCK_NUM = (1 << 20) - 1

_MAX_SZX = 6
_ETAG = int(OptionNumber.ETAG)
_BLOCK2 = int(OptionNumber.BLOCK2)
#: The longest ETag (RFC 7252 §5.10.6): a longer one is skipped, as ``opt.etag`` skips it.
_MAX_ETAG_LENGTH = 8
#: The largest Size2 a download's buffer is made at from the start (a larger body grows).
_PREALLOCATE_MAX = 16 << 20


def szx_for(size: int) -> int:
    """The SZX of the largest block size (16..1024) not above ``size``."""
    if size < 16:
        return 0
    return min(_MAX_SZX, size.bit_length() - 5)


def without_block_options(message: Message) -> Message:
    """A copy of ``message`` without Block1 and Block2 (the assembled view)."""
    copy = message.copy()
    copy.opt.remove(OptionNumber.BLOCK1)
    copy.opt.remove(OptionNumber.BLOCK2)
    return copy


@attrs.frozen(slots=True)
class FetchBlock:
    """Ask for ``block`` next; ``chunk`` holds the bytes the last response added."""

    block: BlockValue
    chunk: bytes
    #: True when the representation changed and the download starts over (no chunk).
    restart: bool = False


@attrs.frozen(slots=True)
class DownloadComplete:
    """The download is complete.

    ``response`` is the first block's response with the whole payload and no
    Block1/Block2 (None for a stream, which keeps no body); ``chunk`` holds
    the bytes the last response added.
    """

    response: Message | None
    chunk: bytes


DownloadStep = FetchBlock | DownloadComplete


class Block2Download:
    """The client's side of one Block2 transfer (RFC 7959 §2.4).

    Call :meth:`start` with the first response (and the Block2 value the
    request carried, if any), then :meth:`feed` with the response to each
    block asked for, until a :class:`DownloadComplete`. ``max_body_size``
    bounds the assembled body (None: unbounded); with ``keep_body`` False
    (a stream) nothing is kept beyond the current chunk, and a changed ETag
    raises at once instead of restarting. BERT blocks (SZX 7) are accepted
    in answer to a request for SZX 7, and with ``bert`` (BERT agreed on the
    connection, RFC 8323 §6) also in answer to one for SZX 6 (the same
    1024-byte numbering).
    """

    __slots__ = (
        "_bert",
        "_body",
        "_etag",
        "_expected",
        "_first",
        "_keep",
        "_limit",
        "_max_restarts",
        "_sized",
        "received",
        "restarts",
        "size",
    )

    def __init__(
        self,
        *,
        max_body_size: int | None = None,
        keep_body: bool = True,
        max_restarts: int = 2,
        bert: bool = False,
    ) -> None:
        self._limit = max_body_size
        self._keep = keep_body
        self._max_restarts = max_restarts
        self._bert = bert
        self._body = bytearray()
        #: Whether ``_body`` was made at the size Size2 announced (filled in place).
        self._sized = False
        self._first: Message | None = None
        self._etag: tuple[bytes, ...] = ()
        self._expected: BlockValue | None = None
        #: Bytes received so far (of the current attempt).
        self.received = 0
        #: The total announced by Size2 in the first block (None: not announced).
        self.size: int | None = None
        #: How many times the download started over because the ETag changed.
        self.restarts = 0

    @property
    def expected(self) -> BlockValue | None:
        """The block asked for last (None before :meth:`start` and when complete)."""
        return self._expected

    def start(self, response: Message, requested: BlockValue | None = None) -> DownloadStep:
        """Take the response to the original request, which asked for ``requested``."""
        if requested is not None and requested.num != 0:
            raise ValueError("a download starts at block 0 (random access is not a download)")
        self._expected = requested if requested is not None else BlockValue(0, False, _MAX_SZX)
        return self._take_first(response)

    def feed(self, response: Message) -> DownloadStep:
        """Take the response to the block asked for last.

        Raises :class:`~coap_trio.errors.LocalProtocolError` before
        :meth:`start` or after the download completed.
        """
        expected = self._expected
        first = self._first
        if expected is None or first is None:
            raise LocalProtocolError("feed() before start() or after completion")
        if expected.num == 0:  # the first block again, after a restart
            return self._take_first(response)
        if response.code is not first.code:
            raise BadResponseError(
                f"block {expected.num} was answered {response.code}, the first block {first.code}"
            )
        # ETag and Block2 in one pass over the options (this runs per block), by the
        # accessors' rules: ETags of 1 to 8 bytes; the first Block2, if of 0 to 3 bytes.
        etags: list[bytes] = []
        value = -1
        for number, raw in response.opt.raw_items:
            if number == _ETAG:
                if 0 < len(raw) <= _MAX_ETAG_LENGTH:
                    etags.append(raw)
            elif number >= _BLOCK2:
                if number == _BLOCK2 and len(raw) <= 3:
                    value = int.from_bytes(raw, "big")
                break
        if tuple(etags) != self._etag:
            return self._changed()
        if value < 0:
            raise BadResponseError(f"the response to block {expected.num} carries no Block2")
        num, more, szx = value >> 4, bool(value & 8), value & 7
        self._check(response, expected, num, more, szx)
        return self._append(response, num, more, szx)

    # -- internals ------------------------------------------------------------------

    def _take_first(self, response: Message) -> DownloadStep:
        expected = self._expected
        assert expected is not None
        block = response.opt.block2
        if block is None:
            raise BadResponseError("the response to a Block2 request carries no Block2")
        self._check(response, expected, block.num, block.more, block.szx)
        self._first = response
        self._etag = tuple(response.opt.etag)
        self.received = 0
        self.size = size = response.opt.size2
        if self._limit is not None and size is not None and size > self._limit:
            raise ResponseTooLargeError(size, self._limit)
        # The body is one buffer: of the announced size when Size2 came (the blocks are
        # copied into place, it is never reallocated), else one that grows.
        self._sized = self._keep and size is not None and 0 < size <= _PREALLOCATE_MAX
        self._body = bytearray(size) if self._sized and size is not None else bytearray()
        return self._append(response, block.num, block.more, block.szx)

    def _check(
        self, response: Message, expected: BlockValue, num: int, more: bool, szx: int
    ) -> None:
        """Check the block ``num``/``more``/``szx`` that ``response`` carries against the
        one asked for. (Per block: plain integers; a BlockValue only for an error.)"""
        bert = szx == BERT_SZX
        if bert:
            if not (expected.szx == BERT_SZX or (self._bert and expected.szx == _MAX_SZX)):
                raise BadResponseError("SZX 7 (BERT) in a response to a request without it")
        elif szx > expected.szx:
            raise BadResponseError(
                f"asked for blocks of {expected.size} bytes, got block"
                f" {BlockValue(num, more, szx)} (size grew)"
            )
        size = 1 << (min(szx, _MAX_SZX) + 4)
        if num * size != expected.num << (min(expected.szx, _MAX_SZX) + 4):
            block = BlockValue(num, more, szx)
            raise BadResponseError(
                f"asked for block {expected} (offset {expected.start}), got {block}"
                f" (offset {block.start})"
            )
        length = len(response.payload)
        if bert:
            bad = more and (length == 0 or length % size != 0)
        else:
            bad = length > size or (more and length != size)
        if bad:
            raise BadResponseError(f"block {BlockValue(num, more, szx)} carries {length} bytes")

    def _append(self, response: Message, num: int, more: bool, szx: int) -> DownloadStep:
        chunk = response.payload
        end = self.received + len(chunk)
        if self.size is not None and end > self.size:
            raise BadResponseError(
                f"block {BlockValue(num, more, szx)} reaches byte {end}, past the announced"
                f" Size2 {self.size}"
            )
        if self._limit is not None and end > self._limit:
            raise ResponseTooLargeError(end, self._limit)
        if self._sized:
            self._body[self.received : end] = chunk  # (in place: within Size2, checked above)
        elif self._keep:
            self._body += chunk  # (one growing buffer: amortised, no copy of what came before)
        self.received = end
        if not more:
            self._expected = None
            if not self._keep:
                return DownloadComplete(None, chunk)
            assert self._first is not None
            assembled = without_block_options(self._first)
            body = self._body
            # (A Size2 above what came: only the bytes received.)
            assembled.payload = bytes(body) if len(body) == end else bytes(memoryview(body)[:end])
            self._body = bytearray()
            return DownloadComplete(assembled, chunk)
        following = num + (len(chunk) // 1024 if szx == BERT_SZX else 1)
        if following > MAX_BLOCK_NUM:
            raise BadResponseError(
                f"block {BlockValue(num, more, szx)} leaves no block number for the next one"
            )
        if self._bert and szx == _MAX_SZX:
            # Late BERT negotiation (RFC 8323 §6): SZX 7 in a request means SZX 6
            # plus "BERT blocks welcome"; block numbers still count 1024 bytes.
            szx = BERT_SZX
        self._expected = expected = BlockValue(following, False, szx)
        return FetchBlock(expected, chunk)

    def _changed(self) -> DownloadStep:
        if not self._keep or self.restarts >= self._max_restarts:
            raise RepresentationChangedError(
                f"the representation changed during the transfer (ETag differs;"
                f" {self.restarts} restart(s))"
            )
        self.restarts += 1
        assert self._expected is not None
        self._expected = BlockValue(0, False, self._expected.szx)
        self._body.clear()
        self.received = 0
        return FetchBlock(self._expected, b"", restart=True)


@attrs.frozen(slots=True)
class SendBlock:
    """Send ``payload`` as block ``block`` (Block1) next."""

    block: BlockValue
    payload: bytes


@attrs.frozen(slots=True)
class UploadComplete:
    """The upload ended with this (final) response; it may still carry Block2."""

    response: Message


UploadStep = SendBlock | UploadComplete


class Block1Upload:
    """The client's side of one Block1 transfer (RFC 7959 §2.3).

    ``body`` is cut into blocks of ``2**(szx+4)`` bytes; :meth:`first` is
    block 0, and :meth:`feed` takes the response to the block sent last and
    says what to send next. A 2.31 Continue with a smaller SZX makes the
    following blocks that size (numbers rescaled); any other response ends
    the upload (the server may answer early, e.g. with an error).

    With ``bert_size`` (a positive multiple of 1024; BERT agreed on the
    connection, RFC 8323 §6) the blocks are BERT blocks of that many bytes
    (SZX 7, numbers in 1024-byte units) until a 2.31 Continue asks for less;
    an upload started with 1024-byte blocks (BERT not known yet) takes BERT
    blocks from :meth:`feed` on once it is.
    """

    def __init__(self, body: bytes, szx: int, *, bert_size: int | None = None) -> None:
        if not 0 <= szx <= _MAX_SZX:
            raise ValueError(f"SZX {szx} is not in 0..6")
        if bert_size is not None and (bert_size < 1024 or bert_size % 1024):
            raise ValueError(f"BERT size {bert_size} is not a positive multiple of 1024")
        self._body = body
        self._bert_size = bert_size
        self._szx = BERT_SZX if bert_size is not None else szx
        self._sent: SendBlock | None = None
        #: Bytes acknowledged by the server so far (2.31 Continue, or all at the end).
        self.acknowledged = 0

    @property
    def total(self) -> int:
        """The body's length."""
        return len(self._body)

    @property
    def szx(self) -> int:
        """The size exponent of the blocks sent now (it may shrink, never grow; 7: BERT)."""
        return self._szx

    @property
    def block_size(self) -> int:
        """The payload size of the (non-last) blocks sent now."""
        if self._szx == BERT_SZX:
            assert self._bert_size is not None
            return self._bert_size
        return 1 << (self._szx + 4)

    def first(self) -> SendBlock:
        """Block 0 (sent again from the start, e.g. after a restart)."""
        self.acknowledged = 0
        return self._block_at(0)

    def feed(self, response: Message, *, bert_size: int | None = None) -> UploadStep:
        """Take the response to the block sent last.

        ``bert_size`` (BERT agreed by now, e.g. the peer's CSM arrived after the
        first block went out) turns the remaining 1024-byte blocks into BERT blocks
        of that size (late negotiation; numbers keep counting 1024-byte units),
        unless the server asked for smaller blocks. Raises
        :class:`~coap_trio.errors.LocalProtocolError` before :meth:`first` or
        after the upload completed.
        """
        sent = self._sent
        if sent is None:
            raise LocalProtocolError("feed() before first() or after completion")
        if response.code is not Code.CONTINUE:
            if not sent.block.more:
                self.acknowledged = len(self._body)
            self._sent = None
            return UploadComplete(response)
        if not sent.block.more:
            raise BadResponseError("2.31 Continue to the last block of the body")
        answer = response.opt.block1
        if answer is None:
            raise BadResponseError("2.31 Continue without Block1")
        rescaled = answer.szx < sent.block.szx and (
            answer.num == sent.block.num << (sent.block.szx - answer.szx)
        )
        if sent.block.is_bert and not answer.is_bert:  # BERT numbers count 1024-byte units
            rescaled = answer.num == sent.block.num << (_MAX_SZX - answer.szx)
        if answer.num != sent.block.num and not rescaled:
            raise BadResponseError(f"sent block {sent.block}, 2.31 Continue acknowledges {answer}")
        if answer.is_bert and not sent.block.is_bert:
            raise BadResponseError("SZX 7 (BERT) in 2.31 Continue to a block without it")
        self._szx = min(self._szx, answer.szx)
        if (
            bert_size is not None
            and bert_size >= 1024
            and bert_size % 1024 == 0
            and self._szx == _MAX_SZX
            and self._bert_size is None
        ):
            self._bert_size = bert_size
            self._szx = BERT_SZX
        offset = sent.block.start + len(sent.payload)
        self.acknowledged = offset
        return self._block_at(offset)

    def _block_at(self, offset: int) -> SendBlock:
        if self._szx == BERT_SZX:
            assert self._bert_size is not None
            size = self._bert_size
            num = offset // 1024
        else:
            size = 1 << (self._szx + 4)
            num = offset // size
        if num > MAX_BLOCK_NUM:
            raise BadResponseError(f"the body needs more than {MAX_BLOCK_NUM + 1} blocks")
        payload = self._body[offset : offset + size]
        more = offset + size < len(self._body)
        self._sent = SendBlock(BlockValue(num, more, self._szx), payload)
        return self._sent
