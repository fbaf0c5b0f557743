"""The client side of block-wise transfers (RFC 7959) in the trio shell.

Owns what turns one :class:`~coap_trio._client.request.Request` into several block
exchanges and back into one response: cutting a large request body into
Block1 blocks (with a Request-Tag, RFC 9175, when another upload to the same
resource is in flight from this Context), fetching the remaining Block2
blocks of a response, retrying a request refused with 4.13 block-wise, the
and the blocks of multi-block notifications (RFC 7959 §2.6, latest wins).
:mod:`coap_trio._client.stream` builds ``Context.stream`` on the same pieces.

The protocol decisions (which block next, the consistency checks) live in
:mod:`coap_trio.protocol.blockwise_client`; this module sends and awaits.

Tasks: the first exchange of a request is sent and answered like any other
(no task). A download of the remaining Block2 blocks needs no task either:
each block's response, handled in the endpoint's receive path, sends the
request for the next one at once (no task switch per block). Uploads and
4.13 retries, which have more steps, run in one task per transfer started
in the Context's nursery when a second exchange is needed. Either way,
cancelling (``Request.cancel()``, the last waiter cancelled, leaving the
Context) abandons the block exchange in flight and sends nothing more. A
stream needs no task: the consumer's task drives it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import trio

from ..block import BERT_SZX, BlockValue
from ..errors import (
    CoapError,
    RepresentationChangedError,
    RequestCancelledError,
    RequestError,
)
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..protocol.blockwise_client import (
    Block1Upload,
    Block2Download,
    DownloadComplete,
    FetchBlock,
    SendBlock,
    szx_for,
)
from ..protocol.observe import is_newer
from .block_messages import (
    Block2FollowUps,
    block1_request,
    has_block_option,
    plain_response,
    upload_key,
    wants_blocks,
)
from .request import ExchangeOwner, Request

if TYPE_CHECKING:
    from .._runner import EndpointRunner
    from .observation import Observation
    from .services import ClientServices

__all__ = [
    "BlockSender",
    "Progress",
    "prepare_request",
    "take_notification",
    "take_response",
]

logger = logging.getLogger(__name__)

#: ``progress(done_bytes, total)``: called after each block of a transfer.
Progress = Callable[[int, "int | None"], None]

_N = OptionNumber
_MAX_BLOCK_SIZE = 1024


# -- one block exchange ------------------------------------------------------------------------


class BlockSender:
    """Sends block requests one at a time on the first exchange's endpoint and remote."""

    __slots__ = ("core", "current", "remote", "runner")

    def __init__(self, core: ClientServices, runner: EndpointRunner, remote: Hashable) -> None:
        self.core = core
        self.runner = runner
        self.remote = remote
        #: The block request in flight (cancelled with the transfer).
        self.current: Request | None = None

    async def exchange(self, message: Message) -> Message:
        """Send ``message`` (never handled block-wise itself) and await its response."""
        sub = self.core.new_request(message)
        sub.as_is = True
        self.current = sub
        try:
            self.core.send(sub, self.runner, self.remote)
            return await sub.response
        finally:
            self.current = None

    def stop(self) -> None:
        """Abandon the block request in flight, at once (nothing more on the wire)."""
        current = self.current
        if current is not None:
            current.cancel()

    async def download(
        self,
        follow_ups: Block2FollowUps,
        first: Message,
        requested: BlockValue | None,
        report: Callable[[int, int | None], None],
        *,
        max_body_size: int | None,
    ) -> Message:
        """Fetch the remaining blocks of ``first`` (the response to
        ``follow_ups.original``) and return the assembled response."""
        bert = self.runner.machine.bert_size(self.remote) is not None
        download = Block2Download(max_body_size=max_body_size, bert=bert)
        step = download.start(first, requested)
        while isinstance(step, FetchBlock):
            if not step.restart:
                report(download.received, download.size)
            request = follow_ups.request(step.block)
            step = download.feed(await self.exchange(request))
        report(download.received, download.size)
        assert step.response is not None
        return step.response


class _InlineDownload(ExchangeOwner):
    """A Block2 download driven from the endpoint's receive path (no task).

    It owns each block exchange itself (the endpoint runner calls its
    ``_succeed``/``_fail`` like a Request's): the response to one block sends
    the request for the next at once, in the same receive step, so a block
    costs no task switch. Used for whole-response downloads of a Request;
    streams (driven by their consumer) and notification fetches keep
    :class:`BlockSender`.
    """

    __slots__ = (
        "core",
        "download",
        "follow_ups",
        "original",
        "remote",
        "report",
        "request",
        "runner",
    )

    def __init__(
        self,
        core: ClientServices,
        runner: EndpointRunner,
        remote: Hashable,
        request: Request,
        report: Callable[[int, int | None], None] | None,
    ) -> None:
        super().__init__(request.request)
        self.as_is = True  # never block-wise itself
        self.core = core
        self.runner = runner
        self.remote = remote
        self.request = request
        #: Told of each block (None: no progress callback was given).
        self.report = report
        self.original = request.request
        #: Nothing was uploaded (else a task drives the transfer).
        self.follow_ups = Block2FollowUps(self.original, uploaded=False)
        self.download = Block2Download(
            max_body_size=core.blockwise.max_body_size,
            bert=runner.machine.bert_size(remote) is not None,
        )

    def start(self, first: Message, requested: BlockValue | None) -> None:
        """Take the first block; ask for the next."""
        try:
            self._next(self.download.start(first, requested))
        except CoapError as error:
            self._fail(error)

    def _next(self, step: FetchBlock | DownloadComplete) -> None:
        download = self.download
        report = self.report
        if isinstance(step, FetchBlock):
            if report is not None and not step.restart:
                report(download.received, download.size)
            self.wire = self.follow_ups.request(step.block)
            self.core.send(self, self.runner, self.remote)
            return
        if report is not None:
            report(download.received, download.size)
        assert step.response is not None
        request = self.request
        self.core.untrack(request)
        request._succeed(step.response)

    # -- called by the endpoint runner, as for a Request

    def _succeed(self, response: Message) -> None:
        self.exchange = None
        if self.request._done:
            return
        try:
            self._next(self.download.feed(response))
        except CoapError as error:
            self._fail(error)

    def _fail(self, error: CoapError) -> None:
        self.exchange = None
        request = self.request
        self.core.untrack(request)
        request._fail(error)

    def stop(self) -> None:
        """Abandon the block exchange in flight, at once (nothing more on the wire)."""
        if self.exchange is not None:
            self.core.abandon(self)
            self.exchange = None


# -- the transfer behind one Request ----------------------------------------------------------


class _Transfer:
    """The block-wise state of one Request (upload, download, 4.13 retry).

    It keeps the request's message, not the Request, and lets go of its block
    exchanges when the Request ends: the Request holds it (``request.transfer``),
    and a reference back would make every block-wise request a reference cycle,
    left to the cyclic GC.
    """

    def __init__(
        self, core: ClientServices, request: Request, progress: Progress | None, assemble: bool
    ) -> None:
        self.core = core
        #: The request as it was given (its body is what an upload sends).
        self.original = request.request
        self.progress = progress
        #: False for a stream: the first response of a download is returned as is.
        self.assemble = assemble
        self.upload: Block1Upload | None = None
        self.tag_key: Hashable = None
        self.tag: bytes | None = None
        self.tagged = False
        self.retried = False
        #: Whether the request was repeated with a server's Echo value (once at most).
        self.echoed = False
        self.scope = trio.CancelScope()
        self.blocks: BlockSender | _InlineDownload | None = None

    # -- uploads

    def start_upload(self, szx: int, bert_size: int | None = None) -> Message:
        """Cut the body into blocks of ``szx`` (BERT blocks of ``bert_size`` bytes
        when given); the message for block 0."""
        original = self.original
        self.upload = Block1Upload(original.payload, szx, bert_size=bert_size)
        if not self.tagged:
            self.tag_key = upload_key(original)
            self.tag = self.core.upload_tags.acquire(self.tag_key)
            self.tagged = True
        return self._block1(self.upload.first(), keep_token=True)

    def _block1(self, step: SendBlock, keep_token: bool = False) -> Message:
        assert self.upload is not None
        return block1_request(self.original, step, self.upload.total, self.tag, keep_token)

    # -- the first response, synchronously in the endpoint's receive task

    def needs_task(self, response: Message) -> bool:
        """Whether ``response`` (to the first exchange) calls for more exchanges."""
        if self.upload is not None or self._echo(response) is not None:
            return True
        if self._retry_size(response) is not None:
            return True
        return self.assemble and wants_blocks(response)

    def _echo(self, response: Message) -> bytes | None:
        """The Echo value to repeat the request with: a 4.01 carrying Echo (RFC 9175 §2.3;
        a server's freshness or amplification check), answered once."""
        if response.code is not Code.UNAUTHORIZED or self.echoed:
            return None
        return response.opt.echo

    def _retry_size(self, response: Message) -> int | None:
        """The SZX to retry a plain request refused with 4.13 at (RFC 7959 §2.9.3)."""
        if (
            response.code is not Code.REQUEST_ENTITY_TOO_LARGE
            or self.retried
            or not self.original.payload
        ):
            return None
        block1 = response.opt.block1
        size1 = response.opt.size1
        limit = self.core.blockwise.block_size
        if block1 is not None and not block1.is_bert:
            return min(block1.szx, szx_for(limit))
        if size1 is not None:
            return szx_for(min(size1, limit))
        return None

    # -- the task

    async def run(
        self, request: Request, runner: EndpointRunner, remote: Hashable, response: Message
    ) -> None:
        """Drive the transfer of ``request`` from the first response to the end (one task)."""
        try:
            with self.scope:
                try:
                    result = await self._complete(request.wire, runner, remote, response)
                except CoapError as error:
                    request._fail(error)
                else:
                    request._succeed(result)
        finally:
            request._fail(RequestCancelledError("the transfer was stopped"))
            self.core.untrack(request)

    async def _complete(
        self, wire: Message, runner: EndpointRunner, remote: Hashable, response: Message
    ) -> Message:
        """The response the request ends with, from the first one (``wire``: the message
        the first exchange sent)."""
        blocks = self.blocks = BlockSender(self.core, runner, remote)
        original = self.original
        requested = wire.opt.block2
        echo = self._echo(response)
        if echo is not None:  # the same request again, with the Echo value (new token)
            self.echoed = True
            repeated = wire.copy(token=b"", mid=None)
            repeated.opt.echo = echo
            response = await blocks.exchange(repeated)
        if self.upload is None:
            szx = self._retry_size(response)
            if szx is not None:
                self.retried = True
                response = await blocks.exchange(self.start_upload(szx))
        if self.upload is not None:
            response = await self._upload(blocks, response)
            requested = original.opt.block2  # None, or block 0 (sent with the last block)
        if not self.assemble:
            return response
        if wants_blocks(response):
            follow_ups = Block2FollowUps(original, self.upload is not None, self.tag)
            return await blocks.download(
                follow_ups,
                response,
                requested,
                self._report,
                max_body_size=self.core.blockwise.max_body_size,
            )
        return plain_response(response)

    async def _upload(self, blocks: BlockSender, response: Message) -> Message:
        upload = self.upload
        assert upload is not None
        while True:
            step = upload.feed(response, bert_size=blocks.runner.machine.bert_size(blocks.remote))
            if isinstance(step, SendBlock):
                self._report(upload.acknowledged, upload.total)
                response = await blocks.exchange(self._block1(step))
                continue
            response = step.response
            smaller = self._smaller_upload(upload, response)
            if smaller is not None:
                # The server asks for smaller blocks (§2.9.3): start over once.
                self.retried = True
                upload = self.upload = smaller
                response = await blocks.exchange(self._block1(upload.first()))
                continue
            if upload.acknowledged == upload.total:
                self._report(upload.total, upload.total)
            return response

    def _smaller_upload(self, upload: Block1Upload, response: Message) -> Block1Upload | None:
        """The upload to start over with after a 4.13 asking for smaller blocks (once):
        its Block1 gives the size (RFC 7959 §2.9.3), or, for BERT blocks, its Size1
        when below the block size (a server whose request payload limit is below its
        Max-Message-Size)."""
        if response.code is not Code.REQUEST_ENTITY_TOO_LARGE or self.retried:
            return None
        body = self.original.payload
        block1 = response.opt.block1
        if block1 is not None and not block1.is_bert and block1.szx < upload.szx:
            return Block1Upload(body, block1.szx)
        size1 = response.opt.size1
        if upload.szx == BERT_SZX and size1 is not None and size1 < upload.block_size:
            if size1 >= 2048:
                return Block1Upload(body, 6, bert_size=size1 // 1024 * 1024)
            return Block1Upload(body, szx_for(size1))
        return None

    def _report(self, done: int, total: int | None) -> None:
        progress = self.progress
        if progress is not None:
            try:
                progress(done, total)
            except Exception as error:
                raise RequestError(f"the progress callback raised {error!r}") from error

    # -- the end

    @property
    def uploaded(self) -> bool:
        """Whether the body went up in Block1 blocks."""
        return self.upload is not None

    @property
    def upload_tag(self) -> bytes | None:
        """The Request-Tag this transfer gave its Block1 blocks (None: none of its own)."""
        return self.tag

    def on_done(self) -> None:
        """The Request ended (answered, failed, cancelled): stop and release everything."""
        if self.tagged:
            self.tagged = False
            self.core.upload_tags.release(self.tag_key, self.tag)
        self.scope.cancel()
        blocks = self.blocks
        if blocks is not None:
            self.blocks = None  # (an inline download holds the Request: no cycle is left)
            blocks.stop()


# -- hooks for the Context and the endpoint runner ----------------------------------------------


def prepare_request(
    core: ClientServices,
    request: Request,
    progress: Progress | None,
    assemble: bool = True,
    bert_size: int | None = None,
) -> None:
    """Decide how ``request`` goes out: as is, or block-wise (before it is sent).

    With ``assemble`` False (a stream) a block-wise response is not fetched:
    the request ends with its first block. ``bert_size`` (a connection on which
    BERT is agreed, RFC 8323 §6) makes a large body go up in BERT blocks of that
    size. A GET or FETCH does not ask for SZX 7 up front (every small response
    would then carry a Block2 option): a response that comes in blocks is
    fetched in BERT blocks from its second block on (late negotiation).
    """
    message = request._request
    opt = message.opt
    has_block = has_block_option(message)
    if has_block:
        block2 = opt.block2
        if _N.BLOCK1 in opt or block2 is None or block2.num != 0:
            request.as_is = True  # the user drives the blocks: sent and returned as is
            return
    config = core.blockwise
    if len(message.payload) > config.block_size:
        transfer = _Transfer(core, request, progress, assemble)
        request.transfer = transfer
        request.wire = transfer.start_upload(config.szx, bert_size if config.szx == 6 else None)
        return
    if progress is not None or not assemble:
        request.transfer = _Transfer(core, request, progress, assemble)
    if (
        config.block_size < _MAX_BLOCK_SIZE
        and not has_block  # a Block2 0 of the caller's wins
        and message.code in (Code.GET, Code.FETCH)
    ):
        request.wire = message.copy(block2=BlockValue(0, False, config.szx))


def take_response(
    core: ClientServices, runner: EndpointRunner, request: Request, response: Message
) -> Message | None:
    """The response the Request ends with, or None when the transfer goes on (from the
    receive path, or in a task)."""
    if request.as_is:
        return response
    transfer = request.transfer
    if transfer is None:
        code = response.code
        if code is Code.REQUEST_ENTITY_TOO_LARGE:
            if not request.request.payload:
                return response
        elif code is Code.UNAUTHORIZED:
            if _N.ECHO not in response.opt:
                return response
        elif not has_block_option(response):  # the common case: nothing to do
            return response
        elif not wants_blocks(response):
            return plain_response(response) if code.is_successful() else response
        transfer = request.transfer = _Transfer(core, request, None, assemble=True)
    assert isinstance(transfer, _Transfer)
    if not transfer.needs_task(response):
        return plain_response(response) if transfer.assemble else response
    route = request.exchange
    if core.closed or route is None:
        return response
    _, exchange = route
    remote = exchange.remote
    if (
        transfer.upload is None
        and transfer._retry_size(response) is None
        and transfer._echo(response) is None
    ):
        # Only blocks to fetch (nothing was uploaded): driven from the receive path, no task.
        inline = _InlineDownload(
            core,
            runner,
            remote,
            request,
            transfer._report if transfer.progress is not None else None,
        )
        transfer.blocks = inline
        inline.start(response, request.wire.opt.block2)
        return None
    core.spawn(transfer.run, request, runner, remote, response)
    return None


def take_notification(
    core: ClientServices, runner: EndpointRunner, request: Request, response: Message, final: bool
) -> bool:
    """Whether a response of an observation is taken here: the first block of a
    multi-block notification (its other blocks are fetched, RFC 7959 §2.6) or one
    older than the notification being fetched. A newer one cancels that fetch."""
    observation = request.observation
    assert observation is not None
    observe = response.opt.observe
    fetching = observation._fetch
    if fetching is not None:
        scope, value = fetching
        if (
            final
            or observe is None
            or value is None
            or observation.in_order  # RFC 8323 §7: a later one is newer
            or is_newer(value, 0.0, observe, 0.0)
        ):
            scope.cancel()  # latest wins
            observation._fetch = None
        elif wants_blocks(response):
            observation.dropped_stale += 1
            return True
    if not wants_blocks(response):
        return False
    route = request.exchange
    if core.closed or route is None:
        return True
    _, exchange = route
    scope = trio.CancelScope()
    observation._fetch = (scope, observe)
    core.spawn(
        _fetch_notification,
        BlockSender(core, runner, exchange.remote),
        request.wire,  # (the exchange's request may be its OSCORE form)
        response,
        final,
        observation,
        scope,
    )
    return True


async def _fetch_notification(
    blocks: BlockSender,
    registration: Message,
    first: Message,
    final: bool,
    observation: Observation,
    scope: trio.CancelScope,
) -> None:
    """Fetch the remaining blocks of one notification, then hand it to the observation."""
    config = blocks.core.blockwise
    observe = first.opt.observe
    try:
        with scope:
            try:
                assembled = await blocks.download(
                    Block2FollowUps(registration, _N.BLOCK1 in registration.opt),
                    first,
                    None,
                    lambda done, total: None,
                    max_body_size=config.max_body_size,
                )
            except RepresentationChangedError:
                # Changing while we fetched it: a newer notification is on its way.
                logger.debug("notification dropped: its representation kept changing")
                observation.dropped_stale += 1
                return
            except CoapError as error:
                observation._fail(error)
                return
            if observe is not None and assembled.opt.observe is None:
                assembled.opt.observe = observe  # restarted from a block without Observe
            if observation._fetch is not None and observation._fetch[0] is scope:
                observation._fetch = None
            observation._push(assembled, final)
    finally:
        if observation._fetch is not None and observation._fetch[0] is scope:
            observation._fetch = None
        blocks.stop()
