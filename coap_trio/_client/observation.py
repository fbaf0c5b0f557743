"""The client side of an RFC 7641 observation: an async iterator of responses.

Owns what a consumer sees of one observation: the first response and each
notification, stale ones dropped by the §3.4 freshness rule, a bounded
buffer where the latest state wins when the consumer is slower than the
server, and the end of the observation (the server's final response, an
error, or leaving the ``async with`` block, which deregisters on the wire).
Created by :meth:`coap_trio.context.Context.observe`. Must not know about
sockets or the messaging machine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

import trio

from ..errors import CoapError
from ..message import Message
from ..protocol.observe import NotificationOrder
from ..response_errors import ObservationError

__all__ = ["DEFAULT_MAX_AGE", "Observation", "ObservationError"]

#: Max-Age of a response that carries none (RFC 7252 §5.10.5).
DEFAULT_MAX_AGE = 60


class Observation:
    """Responses of one observation: ``async for response in observation: ...``.

    The first item is the registration's response; then each fresh
    notification. Iteration ends after a final response (one without Observe,
    which also covers a server that does not support observation), and raises
    :class:`ObservationError` for an error response or the request's
    :class:`~coap_trio.errors.RequestError` when it failed. At most ``keep``
    undelivered notifications are buffered: older ones are dropped (counted in
    :attr:`dropped_slow`) so a slow consumer gets the latest state. A
    response sent in Block2 blocks (RFC 7959 §2.6) is delivered once all its
    blocks are fetched, as one message keeping the first block's Observe; a
    newer notification arriving meanwhile cancels that fetch (latest wins).
    """

    __slots__ = (
        "_buffer",
        "_ended",
        "_error",
        "_fetch",
        "_order",
        "_wakeup",
        "dropped_slow",
        "dropped_stale",
        "in_order",
        "last_received",
        "max_age",
        "received",
        "reregistrations",
    )

    def __init__(self, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._buffer: deque[Message] = deque(maxlen=keep)
        self._order = NotificationOrder()
        self._wakeup = trio.Event()
        self._ended = False
        self._error: CoapError | None = None
        #: The block-wise fetch of a notification in progress (RFC 7959 §2.6):
        #: its cancel scope and Observe value (see coap_trio._client.blockwise).
        self._fetch: tuple[trio.CancelScope, int | None] | None = None
        #: Responses received (fresh ones, including the first).
        self.received = 0
        #: Notifications dropped as older than one already seen (§3.4).
        self.dropped_stale = 0
        #: Notifications dropped because the consumer had not taken them yet.
        self.dropped_slow = 0
        #: True over a reliable transport (RFC 8323 §7): notifications arrive in
        #: order and the Observe value carries no ordering, so none is stale.
        self.in_order = False
        #: trio time of the latest fresh response (for re-registration, §3.3.1).
        self.last_received = trio.current_time()
        #: Max-Age of the latest response (DEFAULT_MAX_AGE when it had none).
        self.max_age = DEFAULT_MAX_AGE
        #: How many times the registration was sent again (``reregister=True``).
        self.reregistrations = 0

    @property
    def ended(self) -> bool:
        """Whether no more responses will come (buffered ones may remain)."""
        return self._ended

    def _push(self, message: Message, final: bool) -> None:
        if self._ended:
            return
        observe = message.opt.observe
        fresh = (
            final
            or observe is None
            or self.in_order
            or self._order.accept(observe, trio.current_time())
        )
        if not fresh:
            self.dropped_stale += 1
            return
        self.last_received = trio.current_time()
        max_age = message.opt.max_age
        self.max_age = DEFAULT_MAX_AGE if max_age is None else max_age
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped_slow += 1
        self._buffer.append(message)
        self.received += 1
        if final:
            self._ended = True
        self._wakeup.set()

    def _fail(self, error: CoapError) -> None:
        if self._fetch is not None:
            self._fetch[0].cancel()
            self._fetch = None
        if not self._ended:
            self._ended = True
            self._error = error
            self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._buffer:
            await trio.lowlevel.checkpoint()
        while not self._buffer:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        message = self._buffer.popleft()
        if message.code.is_error():
            self._ended = True
            self._buffer.clear()
            raise ObservationError(message)
        return message
