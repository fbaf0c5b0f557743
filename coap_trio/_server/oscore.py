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

import contextlib
import logging
import random
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio

from .._runner import EndpointRunner
from ..errors import CoapError, EdhocError, OscoreProtectError, OscoreVerificationError
from ..interfaces import Resource
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..protocol.exchanges import ServerExchange
from ..protocol.observe import SharedNotification
from ..protocol.oscore.binding import ServerBinding
from ..protocol.oscore.context import SecurityContext
from ..protocol.oscore.engine import OscoreEngine, RequestRejected
from ..remote import DatagramRemote, OscoreRemote
from ..response_errors import RenderableError
from .blockwise import BlockwiseServer
from .dispatch import RequestDispatcher, with_observe
from .echo import AmplificationGuard
from .observations import ServerObservations
from .responder import Responder

if TYPE_CHECKING:
    from ..protocol.oscore.edhoc import EdhocResponders

__all__ = ["OscoreDispatcher", "requires_oscore"]

logger = logging.getLogger("coap_trio.server")

_OSCORE = int(OptionNumber.OSCORE)
_EDHOC = int(OptionNumber.EDHOC)
_WELL_KNOWN_EDHOC = (".well-known", "edhoc")
#: Security contexts established with EDHOC kept at most (the oldest are dropped).
DEFAULT_MAX_EDHOC_CONTEXTS = 1024
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
        edhoc: EdhocResponders | None = None,
        max_edhoc_contexts: int = DEFAULT_MAX_EDHOC_CONTEXTS,
        amplification: AmplificationGuard | None = None,
    ) -> None:
        super().__init__(
            nursery,
            site,
            responder,
            observations,
            blockwise,
            leisure=leisure,
            rng=rng,
            amplification=amplification,
        )
        #: Verifies requests and protects responses (shared with the client side).
        self.engine = engine
        #: The EDHOC responder (RFC 9528) at /.well-known/edhoc, or None.
        self.edhoc = edhoc
        self.max_edhoc_contexts = max_edhoc_contexts
        #: Contexts established with EDHOC, oldest first, with the peer's credential.
        self._established: OrderedDict[SecurityContext, bytes] = OrderedDict()
        #: EDHOC messages refused (answered 4.00).
        self.edhoc_refused = 0
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
        opt = request.opt
        if self.edhoc is not None:
            if _EDHOC in opt and _OSCORE in opt:
                combined = self._take_message_3(runner, exchange, request)
                if combined is None:
                    return
                request = combined
            elif opt.uri_path == _WELL_KNOWN_EDHOC and _OSCORE not in opt:
                self._answer_edhoc(runner, exchange, request)
                return
        if _OSCORE in opt:
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
                    remote.sockaddr,
                    remote.scheme,
                    context.recipient_id,
                    context.id_context,
                    self._established.get(context) if self._established else None,
                )
            exchange.request = verified
            exchange.security = binding
        elif self.site is not None and requires_oscore(self.site, request):
            self._refuse(runner, exchange, self.engine.refuse_unprotected(request))
            return
        super().request_received(runner, exchange)

    # -- EDHOC (RFC 9528, RFC 9668) ------------------------------------------------------

    def _answer_edhoc(
        self, runner: EndpointRunner, exchange: ServerExchange, request: Message
    ) -> None:
        """A POST to /.well-known/edhoc: message_1 (answered with message_2) or
        C_R and message_3 (answered with message_4); in the receive path."""
        assert self.edhoc is not None
        if request.code != Code.POST:
            super().answer(runner, exchange, Message(code=Code.METHOD_NOT_ALLOWED))
            return
        payload = request.payload
        now = trio.current_time()
        try:
            if payload[:1] == b"\xf5":  # CBOR true: message_1 (RFC 9528 Appendix A.2)
                in_use = {context.recipient_id for context in self.engine.contexts}
                ours = self.edhoc.identity_for(_request_uri(request))
                if ours is None:
                    raise EdhocError("no EDHOC identity for this origin")
                answer = self.edhoc.message_1(payload[1:], now, in_use, ours)
            else:
                c_r, message_3 = _split_connection_id(payload)
                established = self.edhoc.message_3(c_r, message_3, now)
                self._establish(established.context, established.peer)
                answer = established.message_4
        except EdhocError as error:
            self._edhoc_refused(runner, exchange, error)
            return
        super().answer(runner, exchange, Message(code=Code.CHANGED, payload=answer))

    def _take_message_3(
        self, runner: EndpointRunner, exchange: ServerExchange, request: Message
    ) -> Message | None:
        """The EDHOC + OSCORE request (RFC 9668 §3.3): complete EDHOC with the
        message_3 in front of the ciphertext; the OSCORE request that is left, or
        None when it was answered."""
        from ..protocol.oscore.edhoc import split_message_3
        from ..protocol.oscore.option import decode_oscore_option

        assert self.edhoc is not None
        try:
            values = request.opt.get_all(_OSCORE)
            kid = decode_oscore_option(values[0]).kid if len(values) == 1 else None
        except OscoreVerificationError:  # a malformed option: the engine answers it (4.02)
            kid = None
        if kid is None or not self.edhoc.is_pending(kid):
            # Not an exchange of ours (a retransmission after completion, say):
            # verified as a plain OSCORE request would be, without message_3.
            stripped = request.copy()
            stripped.opt.remove(_EDHOC)
            with contextlib.suppress(EdhocError):  # (then it fails to verify: 4.00)
                _, stripped.payload = split_message_3(request.payload)
            return stripped
        try:
            message_3, ciphertext = split_message_3(request.payload)
            established = self.edhoc.message_3(kid, message_3, trio.current_time())
        except EdhocError as error:
            self._edhoc_refused(runner, exchange, error)
            return None
        self._establish(established.context, established.peer)
        stripped = request.copy(payload=ciphertext)
        stripped.opt.remove(_EDHOC)
        return stripped

    def _establish(self, context: SecurityContext, peer: bytes) -> None:
        self.engine.add_context(context)
        established = self._established
        established[context] = peer
        while len(established) > self.max_edhoc_contexts:
            oldest, _ = established.popitem(last=False)
            self.engine.remove_context(oldest)

    def _edhoc_refused(
        self, runner: EndpointRunner, exchange: ServerExchange, error: EdhocError
    ) -> None:
        self.edhoc_refused += 1
        logger.debug("EDHOC: refused a message from %s: %s", exchange.remote, error)
        answer = Message(code=Code.BAD_REQUEST, payload=b"EDHOC failed")
        super().answer(runner, exchange, answer)

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
        notification: Message | SharedNotification,
        confirmable: bool,
        observe: int = 0,
    ) -> None:
        if isinstance(notification, SharedNotification):  # protected one by one
            notification = with_observe(notification, observe)
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


def _request_uri(request: Message) -> str | None:
    """The URI a request addresses (None when it cannot be told)."""
    try:
        return request.get_request_uri()
    except CoapError:
        return None


def _split_connection_id(payload: bytes) -> tuple[bytes, bytes]:
    """C_R and message_3 of a request carrying message_3 alone (RFC 9528 Appendix
    A.2): C_R is a one-byte CBOR integer or a CBOR byte string."""
    if not payload:
        raise EdhocError("an empty EDHOC message")
    first = payload[0]
    if first < 0x18 or 0x20 <= first < 0x38:
        return payload[:1], payload[1:]
    if 0x40 <= first < 0x58:
        length = first - 0x40
        return payload[1 : 1 + length], payload[1 + length :]
    raise EdhocError("a C_R that is neither a small integer nor a short byte string")
