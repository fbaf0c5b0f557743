"""Received requests on their way from an endpoint's receive path to the resources.

Owns what happens to a request the messaging layer handed over: the
Responder's prechecks in the receive path (4.02, 5.05, 4.13 before any
handler), later blocks of a block-wise transfer answered at once
(:meth:`~coap_trio._server.blockwise.BlockwiseServer.respond_now`), the
bounded hand-off to the pool of handler tasks (full: 5.03 for a CON, a NON
dropped, both counted), and in a handler task the observation registration
(RFC 7641), block-wise assembly and slicing (RFC 7959), No-Response, and the
answer. Notifications of the observations it starts go out through it.
Must not know about sockets or the wire format; the Context owns the tasks'
nursery and gives it the pieces.
"""

from __future__ import annotations

import random

import trio

from .._runner import EndpointRunner
from ..errors import CoapError
from ..interfaces import Resource
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..observable import ServerObservation
from ..options import is_malformed
from ..protocol.exchanges import ServerExchange
from ..protocol.observe import SharedNotification
from ..remote import DatagramRemote
from .blockwise import BlockwiseServer
from .echo import AmplificationGuard
from .handler_queue import HandlerQueue
from .observations import ServerObservations
from .responder import Responder, suppressed_by_no_response

__all__ = ["RequestDispatcher", "with_observe"]

_BLOCK1 = int(OptionNumber.BLOCK1)
_BLOCK2 = int(OptionNumber.BLOCK2)
#: Options that take a request off the handler's plain path: Observe, the block
#: options and Size1 (the block-wise layer), No-Response.
_SPECIAL = frozenset(
    int(n)
    for n in (
        OptionNumber.OBSERVE,
        OptionNumber.BLOCK1,
        OptionNumber.BLOCK2,
        OptionNumber.SIZE1,
        OptionNumber.NO_RESPONSE,
    )
)
#: Options that need the prechecks' and the block-wise layer's attention in the
#: receive path: the block options, Proxy-Uri and Proxy-Scheme.
_OFF_THE_PLAIN_PATH = frozenset(
    int(n)
    for n in (
        OptionNumber.BLOCK1,
        OptionNumber.BLOCK2,
        OptionNumber.PROXY_URI,
        OptionNumber.PROXY_SCHEME,
    )
)
#: Requests a handler task takes from the queue in a row before it yields to others.
_HANDLER_STREAK = 32


class RequestDispatcher:
    """The server side of a Context (see the module docstring)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        site: Resource | None,
        responder: Responder | None,
        observations: ServerObservations,
        blockwise: BlockwiseServer,
        *,
        leisure: float = 5.0,
        rng: random.Random | None = None,
        amplification: AmplificationGuard | None = None,
    ) -> None:
        self._nursery = nursery
        #: The longest wait before answering a request received through a
        #: multicast group (RFC 7252 §8.2.1: Leisure; DEFAULT_LEISURE is 5 s).
        self.leisure = leisure
        self._rng = rng if rng is not None else random.Random()
        #: Requests through a group not answered: the answer would have been an
        #: error response, or nothing (RFC 7252 §8.2).
        self.multicast_unanswered = 0
        #: The 3x rule for unverified UDP clients (RFC 9175 §2.4); None: off.
        self.amplification = amplification
        self.site = site
        #: The prechecks and the error mapping around ``site`` (None: not serving).
        self.responder = responder
        self.observations = observations
        #: Block1 assembly, Block2 slicing and kept representations.
        self.blockwise = blockwise
        #: Received requests waiting for a handler task (see handler_queue.py).
        self.queue: HandlerQueue[tuple[EndpointRunner, ServerExchange]] = HandlerQueue(0)
        #: CON requests answered 5.03 because the queue was full.
        self.overloaded = 0
        #: NON requests dropped because the queue was full.
        self.dropped = 0

    # -- the runner's ServerSink ------------------------------------------------------------

    def request_received(self, runner: EndpointRunner, exchange: ServerExchange) -> None:
        """A request arrived (in ``runner``'s receive path): answer it now or queue it."""
        responder = self.responder
        if responder is None:
            self.answer(runner, exchange, Message(code=Code.NOT_FOUND))
            return
        request = exchange.request
        # One pass for the common request: options all recognized and well-formed,
        # no block or proxy option, a payload within bounds: straight to the queue.
        recognized = responder.recognized_options
        previous = -1
        for number, value in request.opt.raw_items:
            if number in _OFF_THE_PLAIN_PATH or (
                number & 1
                and (number not in recognized or is_malformed(number, value, number == previous))
            ):
                break
            previous = number
        else:
            if len(request.payload) <= responder.max_payload:
                self._queue_or_refuse(runner, exchange)
                return
        limit = None
        if len(request.payload) > responder.max_payload and _BLOCK1 in request.opt:
            # A BERT block (RFC 8323 §6) may be as large as the connection allows:
            # the block-wise assembly bounds the body (max_body_size).
            block1 = request.opt.block1
            if block1 is not None and block1.is_bert:
                limit = runner.machine.bert_size(exchange.remote)
        early = responder.precheck(request, exchange.con, limit)
        if early is not None:
            if early is False:  # a NON we must ignore (§5.4.1): seen, not answered
                self.answer(runner, exchange, None)
            else:
                assert isinstance(early, Message)
                suppressed = suppressed_by_no_response(exchange.request, early.code)
                self.answer(runner, exchange, None if suppressed else early)
            return
        opt = request.opt
        if _BLOCK2 in opt or _BLOCK1 in opt:  # a later block of a transfer needs no handler
            bert_size = runner.machine.bert_size(exchange.remote)
            at_once = self.blockwise.respond_now(request, bert_size=bert_size)
            if at_once is not None:
                suppressed = suppressed_by_no_response(request, at_once.code)
                self.answer(runner, exchange, None if suppressed else at_once)
                return
        self._queue_or_refuse(runner, exchange)

    def _queue_or_refuse(self, runner: EndpointRunner, exchange: ServerExchange) -> None:
        """Queue ``exchange`` for a handler; a full queue answers a CON 5.03 and drops a NON."""
        if not self.queue.put_nowait((runner, exchange)):
            if exchange.con:
                self.overloaded += 1
                self.answer(runner, exchange, Message(code=Code.SERVICE_UNAVAILABLE, max_age=2))
            else:
                self.dropped += 1
                runner.machine.forget(exchange)

    def response_failed(self, exchange: ServerExchange, error: CoapError) -> None:
        """A notification was reset or never acknowledged: its observation ends (RFC 7641 §3.6,
        §4.5)."""
        owner = exchange.owner
        if isinstance(owner, ServerObservation):
            owner.end(str(error))

    def remote_lost(self, remote: DatagramRemote, reason: str) -> None:
        """``remote`` went away: the observations it registered end."""
        self.observations.end_remote(remote, reason)

    def answer(
        self, runner: EndpointRunner, exchange: ServerExchange, response: Message | None
    ) -> None:
        """Send ``response`` (None: nothing, the request is done) for ``exchange``.

        A request received through a multicast group (RFC 7252 §8.2) gets no
        error response (nor nothing at all: None ends it), and a successful
        one only after a random wait within the Leisure (§8.2.1).
        """
        if not runner.multicast:
            guard = self.amplification
            if guard is not None and response is not None and not runner.in_order:
                remote = exchange.remote
                if isinstance(remote, DatagramRemote) and remote.scheme == "coap":  # not coaps://
                    response = guard.check(remote.host, exchange.request, response)
            runner.respond(exchange, response)
            return
        if response is None or not response.code.is_successful():
            self.multicast_unanswered += 1
            runner.respond(exchange, None)
            return
        delay = self._rng.uniform(0.0, self.leisure) if self.leisure > 0 else 0.0
        self._nursery.start_soon(self._answer_later, runner, exchange, response, delay)

    @staticmethod
    async def _answer_later(
        runner: EndpointRunner, exchange: ServerExchange, response: Message, delay: float
    ) -> None:
        await trio.sleep(delay)
        runner.respond(exchange, response)

    def start_handlers(self, concurrency: int, queue: int) -> None:
        """Start ``concurrency`` handler tasks fed by a queue of ``queue`` entries."""
        self.queue = HandlerQueue(queue)
        for _ in range(concurrency):
            self._nursery.start_soon(self._handle_requests, self.queue)

    async def _handle_requests(
        self, queue: HandlerQueue[tuple[EndpointRunner, ServerExchange]]
    ) -> None:
        responder = self.responder
        observations = self.observations
        assert responder is not None
        assert self.site is not None
        blockwise = self.blockwise
        needs = self.site.needs_blockwise_assembly
        site_render = self.site.render
        checked, failed = responder.checked, responder.failed
        block_size = blockwise.block_size
        answer = self.answer
        take = queue.take
        streak = 0
        while True:
            # Queued requests are taken without a task switch, with a checkpoint
            # at least every _HANDLER_STREAK requests (fairness, cancellation).
            item = take() if streak < _HANDLER_STREAK else None
            if item is None:
                item = await queue.get()
                streak = 0
            streak += 1
            runner, exchange = item
            request = exchange.request
            for number, _ in request.opt.raw_items:
                if number in _SPECIAL:
                    break
            else:
                # No Observe, block option or No-Response (most requests): the
                # response as rendered (Responder.render, inline), sliced only
                # when larger than a block.
                try:
                    rendered = checked(request, await site_render(request))
                except Exception as error:
                    rendered = failed(request, error)
                if len(rendered.payload) > block_size:
                    rendered = await blockwise.unblocked(request, rendered, needs, None)
                answer(runner, exchange, rendered)
                continue
            observe = request.opt.observe
            observation = None
            assemble: bool | None = None
            if observe is not None:
                key = (exchange.remote, exchange.token)
                if (
                    observe == 0
                    and request.code in (Code.GET, Code.FETCH)
                    and _first_block(request)
                ):
                    # Asked once: its notifications are sliced like its response.
                    assemble = await blockwise.assembles(request, needs)
                    notifier = _Notifier(self, runner, exchange, assemble)
                    observation = await observations.prepare(
                        self.site, request, key, notifier, send_shared=notifier
                    )
                elif observe == 1:
                    observations.end(key, "deregistered (Observe=1)")
            rendered = await blockwise.respond(
                request,
                responder.render,
                needs,
                assemble=assemble,
                bert_size=runner.machine.bert_size(exchange.remote),
            )
            suppressed = suppressed_by_no_response(request, rendered.code)
            response = None if suppressed else rendered
            if observation is not None:
                if response is not None and response.code.is_successful():
                    exchange.owner = observation
                    response = observations.start(observation, key, response, notifier.release)
                else:
                    observation.end("the registration was not answered with success")
            self.answer(runner, exchange, response)

    def _notify(
        self,
        runner: EndpointRunner,
        exchange: ServerExchange,
        blockwise: bool,
        notification: Message | SharedNotification,
        confirmable: bool,
        observe: int = 0,
    ) -> None:
        """Send a notification of the observation ``exchange`` registered: a message
        (Observe set), or a render shared with other observers and this one's
        ``observe`` (encoded once for all, unless it must be sliced or protected)."""
        if isinstance(notification, SharedNotification):
            message = notification.message
            if exchange.security is None and (
                not blockwise or self.blockwise.notification_fits(exchange.request, message)
            ):
                runner.notify_shared(exchange, notification, observe, confirmable)
                return
            notification = with_observe(notification, observe)
        if blockwise:  # larger than a block: the first one, the rest kept for follow-up GETs
            notification = self.blockwise.notification(exchange.request, notification)
        runner.notify(exchange, notification, confirmable)


class _Notifier:
    """How the notifications of one served observation go out (its ``send`` and
    ``send_shared``): one small object per observation, where partials were three
    times its size (10,000 observations and more are kept)."""

    __slots__ = ("assemble", "dispatcher", "exchange", "runner")

    def __init__(
        self,
        dispatcher: RequestDispatcher,
        runner: EndpointRunner,
        exchange: ServerExchange,
        assemble: bool,
    ) -> None:
        self.dispatcher = dispatcher
        self.runner = runner
        self.exchange = exchange
        self.assemble = assemble

    def __call__(
        self, notification: Message | SharedNotification, confirmable: bool, observe: int = 0
    ) -> None:
        self.dispatcher._notify(
            self.runner, self.exchange, self.assemble, notification, confirmable, observe
        )

    def release(self) -> None:
        """The observation ended: its messaging machine forgets it."""
        self.runner.end_observation(self.exchange)


def with_observe(shared: SharedNotification, observe: int) -> Message:
    """A copy of ``shared.message`` carrying Observe ``observe``: what an observer
    gets when its notification cannot be the shared encoding."""
    message = shared.message.copy()
    message.opt.observe = observe
    return message


def _first_block(request: Message) -> bool:
    """Whether a registration asks for the start of the representation.

    Later blocks of an observed resource are fetched by plain GETs (RFC 7959
    §2.6); one that still carries Observe=0 gets its block and registers
    nothing (the response then has no Observe, RFC 7641 §3.1).
    """
    block = request.opt.block2
    return block is None or block.num == 0
