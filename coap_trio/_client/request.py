"""The client side of the trio shell: :class:`Request`, whose response is awaitable.

Owns the user-facing handle of one request and how waiting on it maps onto
the sans-I/O exchange: the result arrives from the Context's endpoint task
(no task per request), cancelling the waiter abandons the exchange.

Decided behaviours: listed in the docstring of :class:`Request`.

Must not know about sockets or the wire format.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..errors import CoapError, RequestCancelledError
from ..message import Message

if TYPE_CHECKING:
    from .._runner import EndpointRunner
    from ..protocol.exchanges import ClientExchange
    from ..protocol.oscore.binding import ClientBinding
    from .observation import Observation

__all__ = ["ExchangeOwner", "Request", "Transfer"]


class Transfer(Protocol):
    """The block-wise state of a request (RFC 7959; see :mod:`.blockwise`)."""

    @property
    def uploaded(self) -> bool:
        """Whether the request's body went up in Block1 blocks."""

    @property
    def upload_tag(self) -> bytes | None:
        """The Request-Tag its Block1 blocks carried, when it chose one (RFC 9175)."""

    def on_done(self) -> None:
        """The request ended (answered, failed, cancelled): stop and release everything."""


class ExchangeOwner:
    """What the client keeps as the owner of each exchange it sends: a :class:`Request`,
    or one block exchange of a download driven from the receive path.

    The client core reads these fields for every response, and calls
    ``_succeed`` / ``_fail`` to end the owner.
    """

    __slots__ = ("as_is", "exchange", "observation", "oscore", "transfer", "wire")

    def __init__(self, wire: Message) -> None:
        #: The endpoint runner and exchange currently carrying it (None before it is sent).
        self.exchange: tuple[EndpointRunner, ClientExchange] | None = None
        #: The Observation fed by its responses, when it is an observation's request.
        self.observation: Observation | None = None
        #: Block-wise state: None while the request may still turn block-wise.
        self.transfer: Transfer | None = None
        #: True when it is sent and answered as is (no block-wise handling).
        self.as_is = False
        #: The message the exchange sends (the first block of an upload, say).
        self.wire = wire
        #: The OSCORE binding of the exchange in flight, when its request was
        #: protected (RFC 8613): its responses are verified with it.
        self.oscore: ClientBinding | None = None

    def _succeed(self, response: Message) -> None:
        raise NotImplementedError

    def _fail(self, error: CoapError) -> None:
        raise NotImplementedError


class Request(ExchangeOwner):
    """A request in flight (the :class:`coap_trio.interfaces.Request` contract).

    Created by ``Context.request(message)``. Waiting, cancellation and
    cleanup:

    * ``await request.response`` may be done any number of times, by any
      number of tasks: each gets the same response (or the same error type).
    * A request whose response is never awaited still runs to its end
      (response, timeout, reset) and is then cleaned up; nothing leaks.
    * When the *last* task awaiting ``.response`` is cancelled before the
      response arrived, the exchange is abandoned: no more retransmissions, the
      token is freed, and later awaits raise :class:`RequestCancelledError`.
      Awaiting again *before* that cancellation completes keeps it alive.
    * :meth:`Request.cancel` abandons the exchange explicitly; awaiting then
      raises :class:`RequestCancelledError`.
    * Leaving the Context fails every unfinished request with
      :class:`RequestCancelledError`.
    * A block-wise transfer (RFC 7959) is one Request: ``.response`` is the
      assembled response, and cancelling (either way above) stops the transfer
      before its next block goes out.
    """

    __slots__ = (
        "_abandon",
        "_done",
        "_error",
        "_parked",
        "_request",
        "_response",
        "_waiters",
    )

    def __init__(self, message: Message, abandon: Callable[[Request], None]) -> None:
        # (ExchangeOwner.__init__ inline: this runs per request)
        self._request = message
        self._abandon = abandon
        # Not a trio.Event: one is created per request, and its ParkingLot and
        # set()/wait() were ~15% of the client's CPU per request in profiles.
        self._done = False
        #: Tasks parked in ``_wait`` (rescheduled when the request ends).
        self._parked: list[trio.lowlevel.Task] = []
        self._response: Message | None = None
        self._error: CoapError | None = None
        self._waiters = 0
        #: (exchange, observation, transfer, as_is, wire, oscore: see ExchangeOwner; the
        #: exchange is None while the host name resolves.)
        self.exchange = None
        self.observation = None
        self.transfer = None
        self.as_is = False
        self.wire = message
        self.oscore = None

    @property
    def request(self) -> Message:
        """The request message as it was given."""
        return self._request

    @property
    def response(self) -> Awaitable[Message]:
        """Awaitable: the response message, or a :class:`~coap_trio.errors.RequestError`.

        The error is raised as itself (never inside an ExceptionGroup).
        """
        # A generator-based coroutine: nothing runs until it is awaited, and
        # awaiting it creates no coroutine object of its own (once per request).
        return self._await()

    @property
    def done(self) -> bool:
        """Whether the exchange has ended (answered, failed or cancelled)."""
        return self._done

    def cancel(self) -> None:
        """Abandon the exchange now; awaiting the response raises RequestCancelledError."""
        if not self._done:
            self._abandon(self)
            self._fail(RequestCancelledError("the request was cancelled"))

    @types.coroutine
    def _await(self) -> Generator[Any, None, Message]:
        """The body of ``await request.response`` (see :attr:`response`)."""
        if not self._done:
            self._waiters += 1
            # Parked here until _wake (a cancellation point, like Event.wait);
            # inline rather than a helper coroutine: this runs once per request.
            task = trio.lowlevel.current_task()
            parked = self._parked
            parked.append(task)

            def abort(_: object) -> trio.lowlevel.Abort:
                parked.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            try:
                yield from trio.lowlevel.wait_task_rescheduled(abort).__await__()
            finally:
                self._waiters -= 1
                if not self._done and not self._waiters:
                    self._abandon(self)
                    self._fail(RequestCancelledError("the awaiting task was cancelled"))
        else:
            yield from trio.lowlevel.checkpoint().__await__()
        if self._error is not None:
            raise self._error
        assert self._response is not None
        return self._response

    def _wake(self) -> None:
        parked = self._parked
        if parked:  # (after _done is set nobody parks again: the list can be reused)
            for task in parked:
                trio.lowlevel.reschedule(task)
            parked.clear()

    # -- called by the client core ------------------------------------------------------

    def _succeed(self, response: Message) -> None:
        if not self._done:
            self._response = response
            self._done = True
            parked = self._parked  # (_wake, inline: this runs once per response)
            if parked:
                for task in parked:
                    trio.lowlevel.reschedule(task)
                parked.clear()
            if self.transfer:
                self.transfer.on_done()

    def _fail(self, error: CoapError) -> None:
        if not self._done:
            self._error = error
            self._done = True
            self._wake()
            if self.transfer:
                self.transfer.on_done()

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<Request {state} {self._request!r}>"
