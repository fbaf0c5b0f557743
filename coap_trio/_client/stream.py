"""``Context.stream``: a response handed out chunk by chunk (RFC 7959 Block2).

Owns :class:`ResponseStream` and :func:`open_stream`: the first response
arrives as for any request, then each further Block2 block is requested
only when the consumer asks for the next chunk, so memory stays about one
block whatever the size. The consumer's task drives it (no task of its
own); the consistency checks are :class:`~coap_trio.protocol.blockwise_client.Block2Download`'s
and the block exchanges :mod:`coap_trio._client.blockwise`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ..block import BlockValue
from ..errors import BadResponseError
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..protocol.blockwise_client import Block2Download, DownloadComplete, FetchBlock
from .block_messages import Block2FollowUps, wants_blocks
from .blockwise import BlockSender, Progress

if TYPE_CHECKING:
    from .core import ClientCore

__all__ = ["ResponseStream", "open_stream"]

_N = OptionNumber


class ResponseStream:
    """A response received chunk by chunk: ``async for chunk in body:``.

    Returned by ``async with ctx.stream(uri) as body:``. :attr:`response` is
    the first response (with the first block's payload and options); for a
    block-wise response each further block is requested only when the
    consumer asks for the next chunk, so memory stays about one block
    whatever the size. Iterating yields the first block's payload first.
    An ETag change between blocks raises
    :class:`~coap_trio.errors.RepresentationChangedError` at once (the chunks
    already handed out cannot be taken back); protocol violations raise
    :class:`~coap_trio.errors.BadResponseError`.
    """

    __slots__ = (
        "_blocks",
        "_download",
        "_follow_ups",
        "_pending",
        "_progress",
        "_step",
        "response",
    )

    def __init__(
        self,
        response: Message,
        follow_ups: Block2FollowUps,
        requested: BlockValue | None,
        blocks: BlockSender | None,
        progress: Progress | None,
    ) -> None:
        #: The first response (for a block-wise one: block 0 with its options).
        self.response = response
        #: How the requests for later blocks are made.
        self._follow_ups = follow_ups
        self._blocks = blocks
        self._progress = progress
        self._download: Block2Download | None = None
        self._step: FetchBlock | DownloadComplete
        if blocks is not None and wants_blocks(response):
            bert = blocks.runner.machine.bert_size(blocks.remote) is not None
            self._download = Block2Download(keep_body=False, bert=bert)
            self._step = self._download.start(response, requested)
        else:
            self._step = DownloadComplete(None, response.payload)
        self._pending: bytes | None = self._step.chunk or None

    @property
    def size(self) -> int | None:
        """The representation's size: Size2 of a block-wise response (None when
        not announced), the payload's length for a response in one piece."""
        if self._download is None:
            return len(self.response.payload)
        return self._download.size

    @property
    def received(self) -> int:
        """Bytes received so far (including chunks not yet iterated)."""
        if self._download is None:
            return len(self.response.payload)
        return self._download.received

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        pending = self._pending
        if pending is not None:
            self._pending = None
            await trio.lowlevel.checkpoint()
            self._report()
            return pending
        step = self._step
        if not isinstance(step, FetchBlock):
            raise StopAsyncIteration
        assert self._download is not None
        assert self._blocks is not None
        request = self._follow_ups.request(step.block)
        response = await self._blocks.exchange(request)
        self._step = self._download.feed(response)
        self._report()
        return self._step.chunk

    def _report(self) -> None:
        if self._progress is not None:
            self._progress(self.received, self.size)

    def _close(self) -> None:
        if self._blocks is not None:
            self._blocks.stop()
        self._step = DownloadComplete(None, b"")
        self._pending = None


@asynccontextmanager
async def open_stream(
    core: ClientCore, target: str | Message, progress: Progress | None
) -> AsyncIterator[ResponseStream]:
    """The implementation of :meth:`coap_trio.context.Context.stream`."""
    message = Message(code=Code.GET, uri=target) if isinstance(target, str) else target
    request = core.new_request(message)
    if _N.BLOCK1 in message.opt or (message.opt.block2 is not None and message.opt.block2.num != 0):
        request.as_is = True
        blockwise = False
    else:
        blockwise = True
    core.start(request, progress, assemble=False)
    try:
        response = await request.response
    except BaseException:
        request.cancel()
        raise
    blocks = None
    if blockwise and request.exchange is not None:
        runner, exchange = request.exchange
        blocks = BlockSender(core, runner, exchange.remote)
    if blockwise and response.code.is_successful() and _N.BLOCK2 in response.opt:
        block = response.opt.block2
        if block is not None and block.num != 0:
            raise BadResponseError(f"the first response is block {block}, not block 0")
    transfer = request.transfer
    if transfer is not None:
        follow_ups = Block2FollowUps(message, transfer.uploaded, transfer.upload_tag)
    else:
        follow_ups = Block2FollowUps(message, uploaded=False)
    stream = ResponseStream(response, follow_ups, request.wire.opt.block2, blocks, progress)
    try:
        yield stream
    finally:
        stream._close()
