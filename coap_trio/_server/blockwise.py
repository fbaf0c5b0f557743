"""Block-wise transfers on the server (RFC 7959), between the Context and the site.

Owns :class:`BlockwiseServer`: given a received request, the site's render
and its ``needs_blockwise_assembly``, it produces the response to send:
Block1 uploads are reassembled before the resource sees them (2.31 Continue
for each block but the last), responses larger than one block are sliced
with Block2, and the representation being transferred is kept so that the
later blocks come from it. Notifications (RFC 7641) are sliced the same way
(:meth:`BlockwiseServer.notification`). It holds the bounded state this
takes, a :class:`~coap_trio.protocol.blockwise.Block1Assembler` and a
:class:`~coap_trio.protocol.block2cache.Block2Cache`, sweeping both lazily
whenever a request passes. Does not import trio: the Context gives it its
clock and the callables to render.

Only requests whose routed resource answers True to
``needs_blockwise_assembly`` (the default) are handled here; for the others
the resource sees Block1/Block2 itself and its response is sent as returned.

Decisions where the RFCs leave room:

* **Keys.** A body being uploaded is identified by the remote, the method,
  the request's cache-key options (RFC 7252 §5.4.6) other than Block1,
  Block2, Size1, Size2, Observe and No-Response, and Request-Tag (a
  cache-key option, so distinct Request-Tags never mix: RFC 9175 §3.3). A
  representation being transferred is identified the same way, plus the
  payload for FETCH (RFC 8132 §2.3.2: the payload selects the
  representation); so a follow-up GET (Block2 num > 0, without Observe) finds
  the representation a registration or notification started.
* **FETCH follow-ups without the body.** A later-block FETCH (Block2 num > 0)
  that carries the body again is served from the representation kept under
  that body. One without payload either asks for the representation of an
  empty body or left the body out: after a Block1 upload it must leave it
  out (RFC 7959 §2.7: the Block2 requests are "similar to the requests in the
  Block1 phase" without Block1), and aiocoap's and libcoap's clients leave it
  out after a body sent in one request too. It is served from the
  representation kept under an empty body if there is one, else from the most
  recently used FETCH representation of that remote with the same options
  (whatever its body); its ETag lets the client check that it continues the
  same representation.
* **Consistency.** Block 0 (or a request without Block2) always renders
  afresh and replaces the kept representation; blocks after it come from
  the kept one, even if the resource changed in between, until it expires
  (``lifetime`` after its last use) or is evicted. Every sliced 2.05
  Content carries an ETag: the resource's, or, when it set none, the first
  8 bytes of a BLAKE2b hash of the representation, so that a client can
  tell whether blocks fetched at different times (e.g. after the
  representation was evicted and rendered again) belong together.
* **A later block that is no longer kept.** For the safe methods (GET,
  FETCH) the request is rendered again and sliced (the ETag tells the
  client whether it changed). For the unsafe ones (e.g. the Block2
  follow-ups of a POST whose large response was evicted) rendering again
  would repeat the action, so they are answered 4.08 Request Entity
  Incomplete: the client has to start over.
* **Size2** is sent with every block 0 and with any block whose request
  carried Size2. A response that fits in one block carries Block2 (0, M=0)
  only when the request carried Block2. Error responses are sliced only
  when they do not fit in one block.
* **BERT** (RFC 8323 §6): the Context passes ``bert_size`` (the largest BERT
  block for the request's peer) when the request came over a connection on
  which both sides announced Block-Wise-Transfer. Then a Block2 with SZX 7
  is answered with BERT blocks of that size and Block1 BERT blocks are
  assembled; otherwise (UDP, no agreement) SZX 7 in either option is
  answered 4.00 Bad Request. Responses are only sliced into BERT blocks when
  the request asked for SZX 7 (early negotiation).
* Block2 past the end is 4.02 Bad Option; a Size1 above ``max_body_size`` is answered 4.13 with
  Size1 at once, before any block is kept.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable

from ..block import BlockValue
from ..message import Message
from ..numbers.codes import Code
from ..numbers.contentformat import ContentFormat
from ..numbers.optionnumbers import OptionNumber
from ..protocol.block2cache import Block2Cache
from ..protocol.blockwise import (
    BERT_REFUSED,
    BertNotAllowed,
    Block1Assembler,
    BlockOutOfRange,
    Continue,
    Failure,
    slice_block2,
)
from ..protocol.config import BlockwiseConfig

__all__ = [
    "BlockwiseServer",
    "NeedsAssembly",
    "Render",
    "representation_key",
    "upload_key",
]

logger = logging.getLogger("coap_trio.server")

#: Renders a request into a response, never raising (``Responder.render``).
Render = Callable[[Message], Awaitable[Message]]
#: The site's ``needs_blockwise_assembly``.
NeedsAssembly = Callable[[Message], Awaitable[bool]]

_N = OptionNumber
_BLOCK1, _BLOCK2, _SIZE1 = int(_N.BLOCK1), int(_N.BLOCK2), int(_N.SIZE1)
#: Options that are part of the cache key but not of a transfer's identity.
_NOT_IN_KEY = frozenset({_N.BLOCK1, _N.BLOCK2, _N.SIZE1, _N.SIZE2, _N.OBSERVE, _N.NO_RESPONSE})
#: The safe methods (RFC 7252 §5.1, RFC 8132 §2): rendering them again changes nothing.
_SAFE = frozenset({Code.GET, Code.FETCH})
#: Length of the ETag given to sliced representations that have none.
ETAG_LENGTH = 8

_key_numbers: dict[int, bool] = {}


def _in_key(number: int) -> bool:
    """Whether option ``number`` identifies a transfer (memoized: called per option)."""
    found = _key_numbers.get(number)
    if found is None:
        found = number not in _NOT_IN_KEY and not _N(number).is_no_cache_key()
        if len(_key_numbers) < 4096:
            _key_numbers[number] = found
    return found


def upload_key(request: Message) -> Hashable:
    """What identifies the body a Block1 request belongs to (per remote).

    The method and the cache-key options other than Block1, Block2, Size1,
    Size2, Observe and No-Response, in wire order; Request-Tag is one of
    them, so uploads with distinct Request-Tags never mix (RFC 9175 §3).
    """
    return (int(request.code), tuple(item for item in request.opt.raw_items if _in_key(item[0])))


def representation_key(request: Message) -> Hashable:
    """What identifies the representation a Block2 request asks for (per remote).

    :func:`upload_key`'s parts, plus the payload for FETCH (whose payload
    selects what is returned, RFC 8132 §2).
    """
    key = upload_key(request)
    return (key, request.payload) if request.code == Code.FETCH else key


def _etag_of(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=ETAG_LENGTH).digest()


def _nbytes(message: Message) -> int:
    """What keeping ``message`` costs, roughly: payload and option values."""
    return len(message.payload) + sum(len(value) + 4 for _, value in message.opt)


def _error(code: Code, diagnostic: str, size1: int | None = None) -> Message:
    response = Message(code=code, payload=diagnostic.encode("utf-8"))
    response.opt.content_format = ContentFormat.TEXT
    if size1 is not None:
        response.opt.size1 = size1
    return response


class BlockwiseServer:
    """The server side of block-wise transfers for one Context (see the module docstring).

    ``clock`` returns the current time in seconds (the Context gives
    ``trio.current_time``). All state is bounded by ``config``: Block1
    assemblies by ``max_assemblies_per_remote``, ``max_assemblies``,
    ``max_assembly_bytes`` and ``max_body_size``; kept representations by
    ``max_cached_per_remote``, ``max_cached`` and ``max_cached_bytes``; both
    expire ``lifetime`` seconds after their last use. (The assembly byte
    bound is raised to ``max_body_size`` if set lower: one body must fit.)
    """

    def __init__(self, config: BlockwiseConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._block_size = config.block_size
        self._szx = config.szx
        #: The Block1 uploads in progress.
        self.assembler = Block1Assembler(
            max_size=config.max_body_size,
            max_per_remote=config.max_assemblies_per_remote,
            max_total=config.max_assemblies,
            lifetime=config.lifetime,
            max_bytes=max(config.max_assembly_bytes, config.max_body_size),
            preferred_szx=config.szx,
        )
        #: The representations of Block2 transfers in progress.
        self.cache: Block2Cache[Message] = Block2Cache(
            max_per_remote=config.max_cached_per_remote,
            max_total=config.max_cached,
            max_bytes=config.max_cached_bytes,
            lifetime=config.lifetime,
        )
        #: Block1 uploads completed and handed to their resource.
        self.uploads_completed = 0
        #: Requests answered 4.13 because the body is (or is announced to be) too large.
        self.oversized = 0
        #: Later blocks asked for when their representation was no longer kept.
        self.cache_misses = 0

    async def assembles(self, request: Message, needs: NeedsAssembly) -> bool:
        """Whether this layer handles ``request`` (the site's ``needs_blockwise_assembly``).

        An exception from it is logged and taken as True, the contract's default.
        """
        try:
            return bool(await needs(request))
        except Exception:
            logger.exception("needs_blockwise_assembly failed for %r", request)
            return True

    async def respond(
        self,
        request: Message,
        render: Render,
        needs: NeedsAssembly,
        *,
        assemble: bool | None = None,
        bert_size: int | None = None,
    ) -> Message:
        """The response to send for ``request`` (which must have its ``remote`` set).

        ``render`` produces the resource's response and must not raise;
        ``needs`` is asked (at most once, and only when a block option or a
        large response makes it matter) unless ``assemble`` already says.
        ``bert_size`` (None: BERT not agreed) is the largest BERT block payload
        for the request's peer.
        """
        opt = request.opt
        block1 = block2 = size1 = None
        for number, _ in opt.raw_items:  # one pass: most requests carry none of them
            if number in (_BLOCK2, _BLOCK1, _SIZE1):
                block1, block2, size1 = opt.block1, opt.block2, opt.size1
                break
        if block1 is None and block2 is None and size1 is None:
            response = await render(request)  # the common case: no block option
            if len(response.payload) <= self._block_size:
                return response
            return await self.unblocked(request, response, needs, assemble)
        if assemble is None:
            assemble = await self.assembles(request, needs)
        if not assemble:
            return await render(request)
        now = self._clock()
        self._sweep(now)
        if block2 is not None and block2.is_bert and bert_size is None:
            return _error(Code.BAD_REQUEST, BERT_REFUSED)
        final_block1: BlockValue | None = None
        remote = request.remote
        if block1 is not None:
            result = self.assembler.feed(
                remote,
                upload_key(request),
                block1,
                request.payload,
                size1,
                now,
                bert_size=bert_size,
            )
            if isinstance(result, Continue):
                return Message(code=Code.CONTINUE, block1=result.block)
            if isinstance(result, Failure):
                if result.code == Code.REQUEST_ENTITY_TOO_LARGE:
                    self.oversized += 1
                return _error(result.code, result.reason, result.size1)
            self.uploads_completed += 1
            final_block1 = result.block
            request = request.copy(payload=result.body)
            request.opt.block1 = None
            request.opt.size1 = None
        elif size1 is not None and size1 > self.config.max_body_size:
            self.oversized += 1
            limit = self.config.max_body_size
            return _error(
                Code.REQUEST_ENTITY_TOO_LARGE, f"bodies are limited to {limit} bytes", limit
            )
        elif block2 is not None and block2.num > 0:
            kept = self.cache.get(remote, representation_key(request), now)
            if kept is None:
                kept = self._without_body(request, now)
            if kept is not None:
                return self._block(request, kept, block2, bert_size)
            self.cache_misses += 1
            if request.code not in _SAFE:
                return _error(
                    Code.REQUEST_ENTITY_INCOMPLETE,
                    "the representation of this transfer is no longer kept: start again",
                )
        response = await render(request)
        if response.opt.block2 is None:
            response = self._sliced(request, response, block2, bert_size)
        if final_block1 is not None:
            response.opt.block1 = final_block1
        return response

    async def unblocked(
        self, request: Message, response: Message, needs: NeedsAssembly, assemble: bool | None
    ) -> Message:
        """``response`` as sent to ``request``, which carried no Block1, Block2 or Size1:
        sliced when it is larger than a block (and the resource asked for assembly).

        The dispatcher renders such requests itself and calls this only when the
        payload is over :attr:`block_size`; ``assemble`` as for :meth:`respond`.
        """
        if len(response.payload) <= self._block_size or response.opt.block2 is not None:
            return response
        if assemble is None:
            assemble = await self.assembles(request, needs)
        return self._sliced(request, response, None) if assemble else response

    @property
    def block_size(self) -> int:
        """The block size responses are sliced at (bytes; BERT aside)."""
        return self._block_size

    def respond_now(self, request: Message, *, bert_size: int | None = None) -> Message | None:
        """The response to ``request`` when no resource needs to run, else None.

        Called in the receive path, before a request is queued for a handler:
        a later block (Block2 number > 0, no Observe) of a representation
        being kept, and an intermediate block (Block1 with M=1) of an upload
        being assembled, are answered from this layer's state at once. Both
        exist only because an earlier request of the same transfer was
        handled here (its resource asked for assembly), so the resource is
        not asked again. Everything else (block 0, the last Block1 block,
        a miss) returns None and goes the normal way. ``bert_size`` is as
        for :meth:`respond`.
        """
        opt = request.opt
        block1 = opt.block1
        if block1 is not None:
            if not block1.more or (block1.is_bert and bert_size is None) or opt.block2 is not None:
                return None
            remote = request.remote
            key = upload_key(request)
            if not self.assembler.has(remote, key):
                return None
            now = self._clock()
            self._sweep(now)
            result = self.assembler.feed(
                remote, key, block1, request.payload, opt.size1, now, bert_size=bert_size
            )
            if isinstance(result, Continue):
                return Message(code=Code.CONTINUE, block1=result.block)
            if isinstance(result, Failure):
                if result.code == Code.REQUEST_ENTITY_TOO_LARGE:
                    self.oversized += 1
                return _error(result.code, result.reason, result.size1)
            raise AssertionError("a block with M=1 cannot complete an upload")
        block2 = opt.block2
        if block2 is None or block2.num == 0 or _N.OBSERVE in opt:
            return None
        if block2.is_bert and bert_size is None:
            return None
        now = self._clock()
        kept = self.cache.get(request.remote, representation_key(request), now)
        if kept is None:
            kept = self._without_body(request, now)
            if kept is None:
                return None
        return self._block(request, kept, block2, bert_size)

    def notification_fits(self, registration: Message, notification: Message) -> bool:
        """Whether :meth:`notification` sends ``notification`` as it is: it fits in a
        block at the registration's Block2 size (or carries Block2 already)."""
        if len(notification.payload) <= 16:  # the smallest block (SZX 0)
            return True
        requested = registration.opt.block2
        szx = self._szx if requested is None or requested.is_bert else min(requested.szx, self._szx)
        return len(notification.payload) <= 1 << (szx + 4) or notification.opt.block2 is not None

    def notification(self, registration: Message, notification: Message) -> Message:
        """``notification`` as sent to the observer registered by ``registration``.

        One that fits in a block (at the registration's Block2 size, if it
        negotiated one) is returned unchanged. A larger one is kept whole
        under the key a follow-up GET of the registration will use (replacing
        the previous notification's), and its first block is returned: Block2
        0 with M=1, its Observe, an ETag and Size2 (RFC 7959 §2.6).
        """
        if self.notification_fits(registration, notification):
            return notification
        requested = registration.opt.block2
        szx = self._szx if requested is None or requested.is_bert else min(requested.szx, self._szx)
        observe = notification.opt.observe
        representation = self._keep(registration, notification, self._clock())
        first = self._block(registration, representation, BlockValue(0, False, szx))
        first.opt.observe = observe
        return first

    # -- internals -------------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        self.assembler.sweep(now)
        self.cache.sweep(now)

    def _without_body(self, request: Message, now: float) -> Message | None:
        """For a later-block FETCH without payload that found no representation kept
        under an empty body: the most recently used FETCH representation of its
        remote with its options, or None (see "FETCH follow-ups without the body"
        in the module docstring). Called only after a miss."""
        if request.code != Code.FETCH or request.payload:
            return None
        options = upload_key(request)

        def same_options(key: Hashable) -> bool:  # FETCH keys: (upload key, payload)
            return isinstance(key, tuple) and key[0] == options

        return self.cache.newest(request.remote, same_options, now)

    def _keep(self, request: Message, response: Message, now: float) -> Message:
        """The whole representation as kept (ETag added to a 2.05 without one, no Observe)."""
        representation = response.copy()
        opt = representation.opt
        opt.observe = None
        opt.block1 = None
        if representation.code == Code.CONTENT and not opt.etag:
            opt.etag = (_etag_of(representation.payload),)
        self.cache.put(
            request.remote,
            representation_key(request),
            representation,
            _nbytes(representation),
            now,
        )
        return representation

    def _sliced(
        self,
        request: Message,
        response: Message,
        requested: BlockValue | None,
        bert_size: int | None = None,
    ) -> Message:
        """``response`` (freshly rendered) as the answer to a request for block ``requested``."""
        if requested is None:
            size = self._block_size
        elif requested.is_bert and bert_size is not None and self._szx == 6:
            size = bert_size
        else:
            size = min(self._block_size, requested.size)
        if len(response.payload) > size:
            kept = self._keep(request, response, self._clock())
            return self._block(request, kept, requested, bert_size)
        if requested is None or not response.code.is_successful():
            return response
        return self._block(request, response, requested, bert_size)

    def _block(
        self,
        request: Message,
        representation: Message,
        requested: BlockValue | None,
        bert_size: int | None = None,
    ) -> Message:
        """The block ``requested`` of ``representation``: payload, Block2, Size2."""
        try:
            payload, block = slice_block2(
                representation.payload, requested, self._szx, bert_size=bert_size
            )
        except (BlockOutOfRange, BertNotAllowed) as error:
            return _error(error.code, str(error))
        response = Message.from_fields(  # a copy with the block's payload, without re-validation
            representation.code,
            representation.mtype,
            representation.mid,
            representation.token,
            representation.opt.copy(),
            payload,
            representation.remote,
        )
        response.opt.block2 = block
        if block.num == 0 or request.opt.size2 is not None:
            response.opt.size2 = len(representation.payload)
        return response
