"""OSCORE on the server side of a Context (RFC 8613 §8.2, §8.3).

Owns :class:`OscoreDispatcher`, the request dispatcher of a Context opened
with OSCORE credentials. In the receive path, before the prechecks and the
handler queue, a request carrying an OSCORE option is verified: a request
that fails gets the answer the engine gives (4.02, 4.01, 4.00 unprotected;
the freshness 4.01 protected; or nothing) and reaches no handler; a
verified one goes on decrypted, its ``remote`` an
:class:`~coap_trio.remote.OscoreRemote` naming the security context it
proved, and its binding kept with the exchange, which protects the response
and every notification on the way out. A request without OSCORE to a
resource that requires it (``requires_oscore``) is answered 4.01 there too.

A Context without credentials uses the plain :class:`RequestDispatcher`:
nothing here costs it anything. Must not know about sockets or the wire
format.
"""

from __future__ import annotations

import logging
import random

import trio

from .._runner import EndpointRunner
from ..errors import OscoreProtectError
from ..interfaces import Resource
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..protocol.exchanges import ServerExchange
from ..protocol.oscore.binding import ServerBinding
from ..protocol.oscore.engine import OscoreEngine, RequestRejected
from ..remote import DatagramRemote, OscoreRemote
from ..response_errors import RenderableError
from .blockwise import BlockwiseServer
from .dispatch import RequestDispatcher
from .observations import ServerObservations
from .responder import Responder

__all__ = ["OscoreDispatcher", "requires_oscore"]

logger = logging.getLogger("coap_trio.server")

_OSCORE = int(OptionNumber.OSCORE)
#: How deep nested sites are followed to find whether a resource requires OSCORE.
_MAX_NESTING = 8


def requires_oscore(site: Resource, request: Message) -> bool:
    """Whether the resource ``request`` routes to requires OSCORE.

    True when the resource, or a site on its way (nested sites are
    followed), has a true ``requires_oscore`` attribute. A request that
    routes nowhere requires nothing (it gets its 4.04).
    """
    target: object = site
    routed = request
    for _ in range(_MAX_NESTING):
        if getattr(target, "requires_oscore", False):
            return True
        route = getattr(target, "route", None)
        if route is None:
            return False
        try:
            found, routed = route(routed)
        except RenderableError:
            return False
        if found is target:
            return False
        target = found
    return bool(getattr(target, "requires_oscore", False))


class OscoreDispatcher(RequestDispatcher):
    """A :class:`RequestDispatcher` that verifies OSCORE requests first (see the module)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        site: Resource | None,
        responder: Responder | None,
        observations: ServerObservations,
        blockwise: BlockwiseServer,
        engine: OscoreEngine,
        *,
        leisure: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            nursery, site, responder, observations, blockwise, leisure=leisure, rng=rng
        )
        #: Verifies requests and protects responses (shared with the client side).
        self.engine = engine
        #: Requests refused before any handler (failed verification, or no
        #: OSCORE for a resource that requires it); the engine counts them by kind.
        self.oscore_refused = 0
        #: Responses that could not be protected (no sequence number left,
        #: the store failing): answered 5.00 in the clear instead.
        self.protect_failures = 0

    def request_received(self, runner: EndpointRunner, exchange: ServerExchange) -> None:
        """Verify an OSCORE request (or refuse a plain one to a protected resource), then
        go on as usual with the request the handlers may see."""
        request = exchange.request
        if _OSCORE in request.opt:
            result = self.engine.verify_request(request)
            if isinstance(result, RequestRejected):
                self._refuse(runner, exchange, result)
                return
            binding = result.binding
            verified = result.request
            context = binding.context
            remote = exchange.remote
            if isinstance(remote, DatagramRemote):
                verified.remote = OscoreRemote(
                    remote.sockaddr, remote.scheme, context.recipient_id, context.id_context
                )
            exchange.request = verified
            exchange.security = binding
        elif self.site is not None and requires_oscore(self.site, request):
            self._refuse(runner, exchange, self.engine.refuse_unprotected(request))
            return
        super().request_received(runner, exchange)

    def _refuse(
        self, runner: EndpointRunner, exchange: ServerExchange, result: RequestRejected
    ) -> None:
        self.oscore_refused += 1
        logger.debug("OSCORE: refused a request from %s: %s", exchange.remote, result.error)
        super().answer(runner, exchange, result.response)

    def answer(
        self, runner: EndpointRunner, exchange: ServerExchange, response: Message | None
    ) -> None:
        """Send ``response``, protected when the request was (§8.3)."""
        binding = exchange.security
        if response is not None and isinstance(binding, ServerBinding):
            response = self._protect(response, binding)
        super().answer(runner, exchange, response)

    def _notify(
        self,
        runner: EndpointRunner,
        exchange: ServerExchange,
        blockwise: bool,
        notification: Message,
        confirmable: bool,
    ) -> None:
        if blockwise:  # larger than a block: the first one, the rest kept for follow-up GETs
            notification = self.blockwise.notification(exchange.request, notification)
        binding = exchange.security
        if isinstance(binding, ServerBinding):
            notification = self._protect(notification, binding)
        runner.notify(exchange, notification, confirmable)

    def _protect(self, response: Message, binding: ServerBinding) -> Message:
        try:
            return self.engine.protect_response(response, binding)
        except OscoreProtectError as error:
            self.protect_failures += 1
            logger.warning("OSCORE: a response could not be protected: %s", error)
            return Message(code=Code.INTERNAL_SERVER_ERROR)
