"""The client core: what every client feature of a Context shares.

Owns the lifecycle of the requests a Context sends: the set of requests in
flight, starting a request (routing it, deciding whether it goes block-wise,
resolving a host name first in a task), sending an exchange on an endpoint
runner, abandoning it, spawning the tasks of longer transfers and
observations into the Context's nursery while it is open, the Request-Tags
of uploads in flight and the block-wise tunables. It is also the runner's
:class:`~coap_trio._runner.ClientSink`: responses, notifications and
failures of our exchanges arrive here (synchronously, in the endpoint's
receive task) and end their Request, feed their Observation, or go on
block-wise.

The client features (:mod:`.blockwise`, :mod:`.stream`, :mod:`.observe`)
are built on this object's public methods; the Context delegates to it.
Must not know about resources, the server side or the wire format.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, cast

import trio

from .._runner import EndpointRunner
from ..errors import CoapError, ConnectFailure, RequestCancelledError, UnresolvableHostError
from ..message import Message
from ..numbers.codes import Code
from ..protocol.config import BlockwiseConfig
from ..protocol.exchanges import ClientExchange, ClientState
from .block_messages import UploadTags, has_block_option
from .blockwise import Progress, prepare_request, take_notification, take_response
from .multicast import GroupResponses
from .request import ExchangeOwner, Request
from .routing import RequestRouter

__all__ = ["ClientCore"]

# Module constants for the response path (an Enum class attribute is slow on 3.11).
_TOO_LARGE = Code.REQUEST_ENTITY_TOO_LARGE
_UNAUTHORIZED = Code.UNAUTHORIZED
_QUEUED = ClientState.QUEUED


class ClientCore:
    """The shared state and request lifecycle of one Context's client side (see the module)."""

    def __init__(
        self, nursery: trio.Nursery, router: RequestRouter, blockwise: BlockwiseConfig
    ) -> None:
        self._nursery = nursery
        #: Where each request goes (endpoint runner and remote), with the DNS cache.
        self.router = router
        #: Block-wise transfer tunables.
        self.blockwise = blockwise
        #: Requests started and not yet ended.
        self.inflight: set[ExchangeOwner] = set()
        #: Request-Tags of the block-wise uploads in flight (RFC 9175).
        self.upload_tags = UploadTags()
        self._closed = False
        #: The bound method every Request gets (made once, not per request).
        self._abandon_request = self.abandon
        #: trio.current_time without its two wrapper calls (the run's clock does not change).
        self._now = trio.lowlevel.current_clock().current_time

    @property
    def closed(self) -> bool:
        """Whether the Context was left: nothing new is sent or spawned."""
        return self._closed

    # -- starting requests ---------------------------------------------------------------

    def request(
        self, message: Message, progress: Progress | None = None, assemble: bool = True
    ) -> Request:
        """A new Request for ``message``, started (see :meth:`start`)."""
        request = Request(message, self._abandon_request)
        self.start(request, progress, assemble)
        return request

    def new_request(self, message: Message) -> Request:
        """A Request for ``message`` that is not started yet (see :meth:`start`, :meth:`send`)."""
        return Request(message, self._abandon_request)

    def start(self, request: Request, progress: Progress | None, assemble: bool = True) -> None:
        """Route ``request``, prepare any block-wise transfer, and send it.

        With ``assemble`` False (a stream) a block-wise response is not
        fetched: the request ends with its first block. A host name that is
        not cached is resolved in a task first. Raises what routing raises
        (:class:`~coap_trio.errors.LocalProtocolError`,
        :class:`~coap_trio.errors.UnsupportedTransportError`).
        """
        message = request.wire
        route = self.router.route_now(message)
        if self._closed:  # nothing would ever answer it
            request._fail(RequestCancelledError("the context was closed"))
            return
        if (
            not request.as_is
            and request.transfer is None
            and (
                # prepare_request has nothing to do for a plain request (the usual case):
                # no payload, no progress hook, whole responses, 1024-byte blocks, no Block option.
                message.payload
                or progress is not None
                or not assemble
                or self.blockwise.block_size < 1024
                or (message.opt.raw_items and has_block_option(message))
            )
        ):
            bert_size = None  # only an upload needs it (not looked up for every request)
            large = len(message.payload) > self.blockwise.block_size
            if route is not None and large:
                bert_size = route[0].machine.bert_size(route[1])
            prepare_request(self, request, progress, assemble, bert_size)
        self.inflight.add(request)
        if route is None:
            self._nursery.start_soon(self._resolve_then_send, request)
        else:
            try:
                self.send(request, *route)
            except BaseException:
                self.inflight.discard(request)
                if request.transfer:
                    request.transfer.on_done()
                raise

    async def _resolve_then_send(self, request: Request) -> None:
        try:
            route = await self.router.route_resolved(request.request.remote)
        except UnresolvableHostError as error:
            self.inflight.discard(request)
            request._fail(error)
            return
        if request.done:
            return
        try:
            self.send(request, *route)
        except CoapError as error:  # e.g. its token is in use: the request's error
            self.inflight.discard(request)
            request._fail(error)

    def send(self, owner: ExchangeOwner, runner: EndpointRunner, remote: Hashable) -> None:
        """Send ``owner.wire`` on ``runner`` to ``remote``; its responses come back to ``owner``."""
        exchange = runner.send_request(owner.wire, remote)
        exchange.owner = owner
        owner.exchange = (runner, exchange)

    def track(self, request: Request) -> None:
        """Count ``request`` as in flight (failed when the Context closes)."""
        self.inflight.add(request)

    def untrack(self, request: Request) -> None:
        """``request`` ended: no longer in flight."""
        self.inflight.discard(request)

    async def ping(self, message: Message) -> float:
        """Ping the destination of ``message`` (see ``Context.ping``); the round-trip time."""
        router = self.router
        route = router.route_now(message)
        if route is None:
            route = await router.route_resolved(message.remote)
        runner, remote = route
        if self._closed:
            raise RequestCancelledError("the context was closed")
        request = Request(message, self._abandon_request)
        started = self._now()
        exchange = runner.send_ping(remote)
        exchange.owner = request
        request.exchange = (runner, exchange)
        self.inflight.add(request)
        await request.response
        return self._now() - started

    # -- stopping ------------------------------------------------------------------------

    def abandon(self, owner: ExchangeOwner) -> None:
        """Stop the exchange of ``owner`` (a Request or a block exchange), at once."""
        self.inflight.discard(owner)
        route = owner.exchange
        if route is None:
            return
        runner, exchange = route
        runner.abandon(exchange)
        if exchange.done:
            exchange.owner = None  # no reference cycle left to the cyclic GC

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start ``function(*args)`` in the Context's nursery; False once the Context is closed."""
        if self._closed:
            return False
        self._nursery.start_soon(function, *args)
        return True

    def close(self) -> None:
        """The Context is being left: fail every unfinished request."""
        self._closed = True
        for request in list(self.inflight):
            request._fail(RequestCancelledError("the context was closed"))
        self.inflight.clear()

    # -- the runner's ClientSink -------------------------------------------------------------

    def response_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """The response to one of our exchanges arrived (the receive path, per response)."""
        owner = cast("ExchangeOwner | None", exchange.owner)  # only the client sets it
        if owner is None:
            return
        observation = owner.observation
        if observation is not None:
            assert isinstance(owner, Request)
            owner._succeed(response)
            self.inflight.discard(owner)
            observation.in_order = runner.in_order
            final = not exchange.observing
            if not take_notification(self, runner, owner, response, final):
                observation._push(response, final)
            return
        if not owner.as_is and (  # block-wise may go on (RFC 7959), or an Echo retry
            owner.transfer is not None  # (the usual case, a plain response, inline)
            or response.code is _TOO_LARGE
            or response.code is _UNAUTHORIZED
            or has_block_option(response)
        ):
            assert isinstance(owner, Request)
            taken = take_response(self, runner, owner, response)
            if taken is not None:
                owner._succeed(taken)
                self.inflight.discard(owner)
        else:
            owner._succeed(response)
            self.inflight.discard(owner)
        if exchange.done:
            # Request -> exchange -> owner -> Request is a reference cycle:
            # broken here, finished exchanges are freed at once (not by the
            # cyclic GC, whose runs were ~20% of a busy client's CPU).
            exchange.owner = None
        elif exchange.observing:
            # A plain request that happened to register an observation
            # (Observe=0): nobody will read notifications, so end it;
            # later notifications then get RST (RFC 7641 §3.6).
            runner.abandon(exchange)

    def notification_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """A notification (RFC 7641) of one of our observations arrived."""
        owner = cast("ExchangeOwner | None", exchange.owner)  # only the client sets it
        if owner is None:
            return
        observation = owner.observation
        if observation is not None:
            assert isinstance(owner, Request)
            final = not exchange.observing
            if not take_notification(self, runner, owner, response, final):
                observation._push(response, final)

    def group_response_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """One member's response to a multicast request of ours (RFC 7252 §8.2)."""
        owner = exchange.owner
        if isinstance(owner, GroupResponses):
            owner.push(response)

    def message_ids_exhausted(
        self, runner: EndpointRunner, queued: tuple[ClientExchange, ...]
    ) -> None:
        """``runner`` has no message ID left for the requests ``queued`` on it (RFC 7252
        §4.4: 65,536 per remote within EXCHANGE_LIFETIME): each one that another
        endpoint can send now moves there, instead of waiting up to EXCHANGE_LIFETIME.

        None of them went out yet (a request keeps the endpoint of its first
        datagram: its MID, retransmissions and the server's deduplication are
        that endpoint's). Only a Request's own exchange moves: not a block of a
        transfer under way (the server may know the transfer by our endpoint),
        nor a ping.
        """
        if self._closed:
            return
        route_now = self.router.route_now
        now = self._now()
        for exchange in queued:
            owner = exchange.owner
            if (
                not isinstance(owner, Request)
                or owner.transfer is not None
                or exchange.ping
                or exchange.state is not _QUEUED
            ):
                continue
            try:
                route = route_now(owner.wire)
            except CoapError:
                continue
            if route is None:  # (a host name to resolve again: it stays)
                continue
            target, remote = route
            if target is runner or not target.machine.mid_available(remote, now):
                return  # no endpoint has an ID to spare: they wait here
            try:
                moved = target.send_request(exchange.request, remote)
            except CoapError:
                continue
            moved.owner = owner
            owner.exchange = (target, moved)
            exchange.owner = None
            runner.abandon(exchange)

    def request_failed(
        self, runner: EndpointRunner, exchange: ClientExchange, error: CoapError
    ) -> None:
        """One of our exchanges ended without a response.

        A connection that could not be opened fails its requests with
        :class:`~coap_trio.errors.ConnectError` (the transport's
        :class:`~coap_trio.errors.ConnectFailure` says how).
        """
        owner = cast("ExchangeOwner | None", exchange.owner)  # only the client sets it
        if owner is None:
            return
        failure = getattr(error, "os_error", None)
        if type(failure) is ConnectFailure:
            error = failure.request_error()
        if exchange.done:
            exchange.owner = None
        owner._fail(error)
        self.inflight.discard(owner)
        if owner.observation is not None:
            owner.observation._fail(error)
