"""Group requests (RFC 7252 §8): one request to a multicast group, every member's answer.

Owns :class:`GroupResponses`, what ``Context.multicast`` yields: the
responses of one multicast request, as ``(remote, response)`` pairs in
arrival order, until its window ends; and :func:`group_request`, which
routes the request to a UDP endpoint, sends it as NON with a fresh token
(the machine's ``send_group_request``: responses from any member match it by
token) and abandons the exchange when the window ends or the block is left,
so later responses get RST. Responses are buffered up to a bound (beyond it
they are dropped and counted), so a large group cannot grow memory without
limit. Must not know about sockets; the client core delivers the responses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ..errors import LocalProtocolError, UnsupportedTransportError
from ..message import Message
from ..numbers.types import Type
from ..remote import DatagramRemote
from ..uri import Origin

if TYPE_CHECKING:
    from .._runner import EndpointRunner
    from ..protocol.exchanges import ClientExchange
    from .routing import RequestRouter

__all__ = ["GroupResponses", "group_request"]


class GroupResponses:
    """The responses to one multicast request (see :meth:`coap_trio.Context.multicast`).

    ``async for remote, response in responses:`` yields each member's
    response as it arrives, with the member's address (a
    :class:`~coap_trio.remote.DatagramRemote`: members answer from their
    unicast addresses), and ends when the window (``timeout``) is over.
    A member that answers twice (a retransmitted NON, say) is deduplicated by
    the messaging layer, not here: a member may legitimately send several
    responses (e.g. block-wise), so each is yielded.
    """

    def __init__(self, deadline: float, limit: int) -> None:
        self._deadline = deadline
        self._limit = limit
        self._buffer: deque[tuple[DatagramRemote, Message]] = deque()
        self._wakeup: trio.Event | None = None
        self._ended = False
        self._route: tuple[EndpointRunner, ClientExchange] | None = None
        #: Responses dropped because ``max_responses`` were waiting to be read.
        self.dropped = 0
        #: Responses received in all (read, waiting or dropped).
        self.received = 0

    @property
    def deadline(self) -> float:
        """When the window ends (trio's clock): no response is taken after it."""
        return self._deadline

    def push(self, response: Message) -> None:
        """A member's response arrived (from the endpoint's receive path)."""
        if self._ended:
            return
        self.received += 1
        if len(self._buffer) >= self._limit:
            self.dropped += 1
            return
        remote = response.remote
        assert isinstance(remote, DatagramRemote)
        self._buffer.append((remote, response))
        if self._wakeup is not None:
            self._wakeup.set()

    def end(self) -> None:
        """End the window: abandon the exchange (later answers get RST); iteration stops
        once what was received is read. Idempotent."""
        if self._route is not None:
            runner, exchange = self._route
            self._route = None
            exchange.owner = None
            runner.abandon(exchange)
        self._ended = True
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[tuple[DatagramRemote, Message]]:
        return self

    async def __anext__(self) -> tuple[DatagramRemote, Message]:
        await trio.lowlevel.checkpoint()
        for _ in range(self._limit + 2):
            if self._buffer:
                return self._buffer.popleft()
            if self._ended or trio.current_time() >= self._deadline:
                self.end()
                raise StopAsyncIteration
            self._wakeup = trio.Event()
            with trio.move_on_at(self._deadline):
                await self._wakeup.wait()
            self._wakeup = None
        raise AssertionError("unreachable: every pass returns, ends or waits")  # pragma: no cover

    def _start(self, runner: EndpointRunner, exchange: ClientExchange) -> None:
        self._route = (runner, exchange)
        exchange.owner = self


@asynccontextmanager
async def group_request(
    router: RequestRouter, message: Message, timeout: float, max_responses: int
) -> AsyncIterator[GroupResponses]:
    """Send ``message`` to the multicast group its URI names; yield the responses
    (:class:`GroupResponses`) until ``timeout`` seconds pass or the block is left."""
    if timeout < 0 or max_responses < 1:
        raise ValueError("timeout must be >= 0 and max_responses >= 1")
    if message.mtype not in (None, Type.NON):
        raise LocalProtocolError("a multicast request is sent as NON (RFC 7252 §8.1)")
    if not 1 <= message.code <= 31:
        raise LocalProtocolError(f"{message.code} is not a request code")
    origin = message.remote
    if isinstance(origin, Origin) and origin.scheme != "coap":
        raise UnsupportedTransportError("multicast requests go over UDP: use a coap:// URI")
    route = router.route_now(message)
    if route is None:
        assert isinstance(origin, Origin)
        route = await router.route_resolved(origin)
    runner, group = route
    responses = GroupResponses(trio.current_time() + timeout, max_responses)
    request = message.copy(mtype=Type.NON) if message.mtype is None else message
    exchange = runner.send_group_request(request, group)
    responses._start(runner, exchange)
    try:
        yield responses
    finally:
        responses.end()
