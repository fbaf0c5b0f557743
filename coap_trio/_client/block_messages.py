"""The messages of a client's block-wise transfer (RFC 7959, RFC 9175).

Request-Tag values for concurrent uploads, the request for each Block1 or
Block2 block built from the original request, and what a response says
about blocks. Used by :mod:`coap_trio._client.blockwise` (which sends and
awaits), :mod:`coap_trio._client.stream`, the Context and the endpoint runner.
No I/O.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..block import BlockValue
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..options import Options, encode_uint
from ..protocol.blockwise_client import SendBlock, without_block_options

__all__ = [
    "Block2FollowUps",
    "UploadTags",
    "block1_request",
    "block2_repeats_payload",
    "block2_request",
    "has_block_option",
    "plain_response",
    "upload_key",
    "wants_blocks",
]

_N = OptionNumber
_BLOCK2 = int(_N.BLOCK2)
#: Dropped from the request for a further Block2 block (Block2 is replaced).
_NOT_IN_BLOCK2_REQUESTS = frozenset(
    int(n) for n in (_N.BLOCK1, _N.SIZE1, _N.REQUEST_TAG, _N.OBSERVE, _N.BLOCK2)
)
_BLOCK1 = int(_N.BLOCK1)
_REQUEST_TAG = int(_N.REQUEST_TAG)


# -- Request-Tags (RFC 9175) ---------------------------------------------------------------


class UploadTags:
    """Request-Tag values of the uploads in flight, per resource (RFC 9175 §3).

    The first upload to a resource goes without Request-Tag (absent is a
    value of its own, §3.2); each concurrent one gets a value no upload in
    flight to that resource uses, so the server never mixes their blocks.
    """

    def __init__(self) -> None:
        self._active: dict[Hashable, set[bytes | None]] = {}
        self._counter = 0

    def acquire(self, key: Hashable) -> bytes | None:
        """A Request-Tag for a new upload to ``key`` (None: send none)."""
        active = self._active.setdefault(key, set())
        tag: bytes | None = None
        while tag in active:
            self._counter = (self._counter + 1) & 0xFFFFFFFF
            tag = self._counter.to_bytes(4, "big")
        active.add(tag)
        return tag

    def release(self, key: Hashable, tag: bytes | None) -> None:
        """The upload to ``key`` with ``tag`` ended."""
        active = self._active.get(key)
        if active is not None:
            active.discard(tag)
            if not active:
                del self._active[key]

    def __len__(self) -> int:
        return sum(len(active) for active in self._active.values())


def upload_key(message: Message) -> Hashable:
    """What makes two uploads go to the same resource (the destination and the URI options)."""
    opt = message.opt
    return (message.remote, opt.uri_host, opt.uri_port, opt.uri_path, opt.uri_query)


# -- building block requests -------------------------------------------------------------


def block1_request(
    original: Message, step: SendBlock, total: int, tag: bytes | None, keep_token: bool
) -> Message:
    """The request carrying ``step``'s Block1 block of ``original``'s body.

    Size1 (the body's ``total`` length) goes with block 0 only; Block2 goes
    with the last block only (early negotiation of the response's size,
    RFC 7959 §3.2); ``tag``, when given, becomes the Request-Tag. A new token
    unless ``keep_token``.
    """
    message = original.copy(payload=step.payload, mid=None)
    if not keep_token:
        message.token = b""
    opt = message.opt
    opt.block1 = step.block
    if step.block.more:  # early Block2 negotiation goes with the last block (§3.2)
        opt.remove(_N.BLOCK2)
    opt.size1 = total if step.block.num == 0 else None
    if tag is not None:  # else: none, or the one the caller set
        opt.request_tag = (tag,)
    return message


def block2_repeats_payload(original: Message, uploaded: bool) -> bool:
    """Whether the requests for the later Block2 blocks of the response to
    ``original`` carry ``original``'s payload again (the one rule every
    download follows: whole responses, streams, notifications).

    ``uploaded``: the body went up in Block1 blocks, not in one request.

    * A FETCH whose body went in one request repeats it. Its payload is part of
      what selects the representation (RFC 8132 §2; §2.3.2: the FETCH payload
      is input to the selection and so part of the cache key), and a request
      for a later block is the original request with Block2 (RFC 7959 §2.4:
      "the same options as the initial request"); a server that keeps no state
      can answer it, one that kept the representation finds it by the payload.
    * After a Block1 upload (any method), the requests for the later blocks are
      "similar to the requests in the Block1 phase, but [leave] out the Block1
      Options" (RFC 7959 §2.7): no Block1, so no block of the body either (a
      payload without Block1 would be a whole body of its own). The server
      answers them from the representation it kept (§2.7, §2.4).
    * Any other method sends its later-block requests without a payload: they
      ask for more of a response already produced (repeating a POST body would
      ask for the action again).
    """
    return not uploaded and original.code is Code.FETCH


def block2_request(
    original: Message, block: BlockValue, keep_payload: bool, request_tag: bytes | None = None
) -> Message:
    """The request for ``block`` of the response to ``original`` (a new token).

    Its options are the original's without Block1, Size1, Request-Tag and
    Observe, with ``block`` as Block2 and ``request_tag`` (not None) as
    Request-Tag. Its payload is ``original``'s when ``keep_payload``, else
    empty. Both are decided once per download, by :class:`Block2FollowUps`,
    which also splits the options once (this builds a request from scratch).
    """
    before, after = _around_block2(original, request_tag)
    return _block2_message(original, before, after, block, keep_payload)


def _around_block2(
    original: Message, request_tag: bytes | None
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The options of a request for a further Block2 block that go before Block2 and after
    it (one pass over ``original``'s sorted items; see :func:`block2_request`)."""
    tag = None if request_tag is None else (_REQUEST_TAG, request_tag)
    before: list[tuple[int, bytes]] = []
    after: list[tuple[int, bytes]] = []
    for item in original.opt.raw_items:
        number = item[0]
        if number in _NOT_IN_BLOCK2_REQUESTS:
            continue
        if number < _BLOCK2:
            before.append(item)
            continue
        if tag is not None and number > _REQUEST_TAG:
            after.append(tag)
            tag = None
        after.append(item)
    if tag is not None:
        after.append(tag)
    return before, after


def _block2_message(
    original: Message,
    before: list[tuple[int, bytes]],
    after: list[tuple[int, bytes]],
    block: BlockValue,
    keep_payload: bool,
) -> Message:
    items = [*before, (_BLOCK2, encode_uint(block.to_int())), *after]
    payload = original.payload if keep_payload else b""
    return Message.from_fields(
        original.code, original.mtype, None, b"", Options.from_wire(items), payload, original.remote
    )


class Block2FollowUps:
    """How the requests for the later Block2 blocks of one response are made: the one
    set of rules every download follows (whole responses, streams, notifications).

    ``uploaded``: ``original``'s body went up in Block1 blocks, carrying
    ``upload_tag`` as Request-Tag (None: the blocks carried the caller's
    Request-Tag, if any). Then the follow-ups carry that Request-Tag again:
    it is used in Block1 requests "and in Block2 requests following these"
    (RFC 9175 §3.2), and a server keeps the representation for the requests
    of that one upload; without an upload it is dropped. The payload rule is
    :func:`block2_repeats_payload`.
    """

    __slots__ = ("_after", "_before", "keep_payload", "original", "request_tag")

    def __init__(self, original: Message, uploaded: bool, upload_tag: bytes | None = None) -> None:
        #: The request the response answers.
        self.original = original
        #: Whether each follow-up carries ``original``'s payload again.
        self.keep_payload = block2_repeats_payload(original, uploaded)
        tag = upload_tag
        if uploaded and tag is None:
            tags = original.opt.request_tag
            tag = tags[0] if tags else None
        #: The Request-Tag each follow-up carries (None: none).
        self.request_tag = tag if uploaded else None
        # The options around Block2, the same in every follow-up (split once per download).
        self._before, self._after = _around_block2(original, self.request_tag)

    def request(self, block: BlockValue) -> Message:
        """The request for ``block`` (a new token; the same as :func:`block2_request`)."""
        return _block2_message(self.original, self._before, self._after, block, self.keep_payload)


def has_block_option(message: Message) -> bool:
    """Whether ``message`` carries Block1 or Block2 (one pass over the sorted options)."""
    for number, _ in message.opt.raw_items:
        if number in (_BLOCK2, _BLOCK1):
            return True
        if number > _BLOCK1:
            return False
    return False


def wants_blocks(response: Message) -> bool:
    """A successful response that is the first of several Block2 blocks."""
    if not response.code.is_successful() or _N.BLOCK2 not in response.opt:
        return False
    block = response.opt.block2
    return block is not None and block.more


def plain_response(response: Message) -> Message:
    """A single-block response without its Block1/Block2 (nothing was assembled)."""
    return without_block_options(response) if has_block_option(response) else response
