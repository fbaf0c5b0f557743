"""The Responder: the rules every request passes before and after its resource.

Owns what RFC 7252 and friends ask of a server regardless of the resource:
unrecognized critical options (§5.4.1: 4.02 Bad Option for a CON, silence for
a NON, before any handler runs; a request for the site's proxy keeps them, as
the proxy forwards those that are safe to forward), Proxy-Uri / Proxy-Scheme on a server that is
no proxy (5.05: the site has no ``proxy``), payloads above a configurable size (4.13 with Size1),
handler errors (a :class:`~coap_trio.response_errors.RenderableError`
becomes its response; any other exception, or a result that is no response
message, 5.00 with no details on the wire, logged), and which response
classes No-Response (RFC 7967) suppresses.
Must not know about tasks, sockets or routing (that is the Site's).
"""

from __future__ import annotations

import logging

from ..interfaces import Resource
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..options import is_malformed
from ..protocol.matcher import RECOGNIZED_RESPONSE_OPTIONS, has_unrecognized_critical
from ..response_errors import (
    BadOption,
    ProxyingNotSupported,
    RenderableError,
    RequestEntityTooLarge,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "RECOGNIZED_REQUEST_OPTIONS",
    "Responder",
    "suppressed_by_no_response",
]

logger = logging.getLogger("coap_trio.server")

_N = OptionNumber
_PROXY_URI = int(_N.PROXY_URI)
_PROXY_SCHEME = int(_N.PROXY_SCHEME)

#: Critical options a request may carry that this server handles today: the
#: same set the client accepts in responses (one definition, in the matcher).
#: Uri-Host/Uri-Port are accepted (no virtual hosting: they are ignored),
#: Proxy-Uri/Proxy-Scheme are recognized and refused with 5.05 unless the site has a
#: proxy (``Site(proxy=...)``); Block1/Block2
#: go to the block-wise layer. OSCORE, EDHOC and Q-Block1/2 are not handled
#: yet: 4.02.
RECOGNIZED_REQUEST_OPTIONS = RECOGNIZED_RESPONSE_OPTIONS

#: The largest request payload handed to a resource by default (without
#: block-wise transfer, a whole request must fit in one datagram anyway).
DEFAULT_MAX_PAYLOAD = 16_384

# RFC 7967 §2.1: the bits of No-Response that suppress a response class.
_NO_RESPONSE_BITS = {2: 0x02, 4: 0x08, 5: 0x10}


def _malformed_known_critical(request: Message, recognized: frozenset[int]) -> bool:
    """Whether a critical option this server knows has a malformed value (§5.4.1)."""
    previous = -1
    for number, value in request.opt.raw_items:
        if number & 1 and number in recognized and is_malformed(number, value, number == previous):
            return True
        previous = number
    return False


def suppressed_by_no_response(request: Message, code: Code) -> bool:
    """Whether the request's No-Response option asks not to answer with ``code``."""
    value = request.opt.no_response
    if not value:
        return False
    return bool(value & _NO_RESPONSE_BITS.get(code.class_, 0))


class Responder:
    """Wraps a site: :meth:`precheck` before queueing, :meth:`render` in a handler task."""

    def __init__(
        self,
        site: Resource,
        recognized_options: frozenset[int] = RECOGNIZED_REQUEST_OPTIONS,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.site = site
        self.recognized_options = recognized_options
        #: Request payloads above this size are answered 4.13 with Size1 (RFC 7252 §5.9.2.9).
        self.max_payload = max_payload
        #: Handlers that raised something other than a RenderableError.
        self.handler_errors = 0
        #: Requests refused with 4.13 because their payload was too large.
        self.oversized = 0

    def precheck(
        self, request: Message, confirmable: bool, max_payload: int | None = None
    ) -> Message | bool | None:
        """Rules that apply before any handler runs.

        Returns an error response to send at once, ``False`` to ignore the
        request silently (a NON with an unrecognized critical option), or
        ``None`` to go on and handle it. ``max_payload`` replaces
        :attr:`max_payload` for this request (a BERT block may be larger).
        """
        if has_unrecognized_critical(request, self.recognized_options) and not (
            self._forwards(request)
            and not _malformed_known_critical(request, self.recognized_options)
        ):
            if not confirmable:
                return False
            return BadOption("unrecognized critical option").to_message()
        # One pass over the options; any Proxy-Uri / Proxy-Scheme left here is
        # well-formed (a malformed critical option was answered 4.02 above). A
        # site with a proxy (Site(proxy=...)) routes such requests to it.
        for number, _ in request.opt.raw_items:
            if number in (_PROXY_URI, _PROXY_SCHEME):
                if getattr(self.site, "proxy", None) is None:
                    return ProxyingNotSupported().to_message()
                break
        limit = self.max_payload if max_payload is None else max_payload
        if len(request.payload) > limit:
            self.oversized += 1
            return RequestEntityTooLarge(f"payloads up to {limit} bytes", size1=limit).to_message()
        return None

    def _forwards(self, request: Message) -> bool:
        """Whether ``request`` goes to the site's proxy, which forwards the critical
        options it does not know when they are safe to forward (RFC 7252 §5.7.1) and
        answers 5.02 for the unsafe ones."""
        return getattr(self.site, "proxy", None) is not None and any(
            number in (_PROXY_URI, _PROXY_SCHEME) for number, _ in request.opt.raw_items
        )

    async def render(self, request: Message) -> Message:
        """Render ``request`` with the site; errors become their response (never raises).

        A :class:`RenderableError` gives its response, any other exception
        (or a result that is no response message) 5.00 with an empty
        payload, logged and counted. No-Response is not applied here: the
        block-wise layer renders through this, and the dispatcher applies
        :func:`suppressed_by_no_response` to what it finally sends.
        """
        try:
            response = await self.site.render(request)
        except Exception as error:
            return self.failed(request, error)
        return self.checked(request, response)

    def checked(self, request: Message, response: object) -> Message:
        """``response``, what the site's ``render`` returned for ``request``, if it is a
        response message; else the 5.00 of :meth:`failed`."""
        if type(response) is Message and 64 <= response.code < 192:  # the usual one
            return response
        if not isinstance(response, Message):
            error = TypeError(f"render returned {type(response).__name__}, not a Message")
        elif not response.code.is_response():
            error = TypeError(f"render returned {response.code}, not a response code")
        else:
            return response
        return self.failed(request, error)

    def failed(self, request: Message, error: Exception) -> Message:
        """The response for the site's ``render`` raising ``error`` for ``request``: a
        :class:`RenderableError`'s own, else 5.00 (logged and counted)."""
        if isinstance(error, RenderableError):
            return error.to_message()
        self.handler_errors += 1
        logger.error("handler failed for %r: %s", request, error, exc_info=error)
        return Message(code=Code.INTERNAL_SERVER_ERROR)
