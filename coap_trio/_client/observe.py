"""How a Context observes a resource: registration, re-registration, deregistration.

Owns the lifecycle of one client observation (RFC 7641 §3): sending the
registration, feeding the :class:`~coap_trio._client.observation.Observation`
(through the endpoint runner), re-registering when Max-Age passes without a
notification (§3.3.1, optional), and on leaving abandoning the exchange and
sending GET Observe=1 from the Context's nursery (§3.6). Must not know about
sockets or the wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ..errors import CoapError, RequestCancelledError
from ..message import Message
from ..numbers.codes import Code
from ..protocol.exchanges import ClientExchange
from ..protocol.observe import NotificationOrder
from .observation import Observation
from .request import Request

if TYPE_CHECKING:
    from .._runner import EndpointRunner
    from .core import ClientCore

__all__ = ["REREGISTER_MARGIN", "observe_resource"]

#: Extra seconds past Max-Age before re-registering (RFC 7641 §3.3.1 asks for
#: "some additional time" for a notification in transit).
REREGISTER_MARGIN = 5.0


class _Registration:
    """The request currently feeding one observation (replaced on re-registration)."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request


@asynccontextmanager
async def observe_resource(
    core: ClientCore,
    target: str | Message,
    *,
    keep: int,
    deregister_timeout: float,
    reregister: bool,
) -> AsyncIterator[Observation]:
    """The implementation of :meth:`coap_trio.context.Context.observe`."""
    if isinstance(target, str):
        message = Message(code=Code.GET, uri=target, observe=0)
    else:
        message = target.copy(observe=0)
    observation = Observation(keep)
    registration = _Registration(core.request(message))
    registration.request.observation = observation
    watcher = trio.CancelScope()
    if reregister:
        core.spawn(_keep_registered, core, registration, watcher)
    try:
        yield observation
    finally:
        watcher.cancel()
        request = registration.request
        route = request.exchange
        request.cancel()  # before any response: stops it (and fails .response)
        observation._fail(RequestCancelledError("the observation was left"))
        if route is not None:
            runner, exchange = route
            registered = exchange.observing
            # After a response the Request is done but the exchange may still
            # be matched for notifications: end it (later ones get RST).
            runner.abandon(exchange)
            if registered:
                core.spawn(_deregister, core, runner, exchange, request.wire, deregister_timeout)


async def _keep_registered(
    core: ClientCore, registration: _Registration, scope: trio.CancelScope
) -> None:
    """Re-register whenever Max-Age passes without a notification (RFC 7641 §3.3.1)."""
    observation = registration.request.observation
    assert observation is not None
    with scope:
        while not observation.ended:
            deadline = observation.last_received + observation.max_age + REREGISTER_MARGIN
            now = trio.current_time()
            if now < deadline:
                # Look again at least every second: a response may shorten Max-Age.
                await trio.sleep_until(min(deadline, now + 1.0))
                continue
            old = registration.request
            route = old.exchange
            message = old.request.copy(observe=0)
            if route is not None:
                runner, exchange = route
                message.token = exchange.token  # the server replaces its observation
                runner.abandon(exchange)
            observation._order = NotificationOrder()  # a new sequence may start lower
            observation.last_received = trio.current_time()
            observation.reregistrations += 1
            try:
                registration.request = core.request(message)
            except CoapError as error:
                observation._fail(error)
                return
            registration.request.observation = observation


async def _deregister(
    core: ClientCore,
    runner: EndpointRunner,
    exchange: ClientExchange,
    registration: Message,
    timeout: float,
) -> None:
    """GET with Observe=1 and the registration's token (RFC 7641 §3.6).

    ``registration`` is the request as the client made it (the exchange's
    may be its OSCORE form, which is protected anew).
    """
    message = registration.copy(observe=1, token=exchange.token, mtype=None)
    remote = exchange.remote
    message.remote = remote
    with trio.move_on_after(timeout):
        request = core.new_request(message)
        request.as_is = True  # its response is not worth fetching block-wise
        core.track(request)
        try:
            core.send(request, runner, remote)
            await request.response
        except CoapError:  # best effort: the RST to the next notification also ends it
            core.untrack(request)
