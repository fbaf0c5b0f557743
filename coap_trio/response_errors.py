"""The errors that carry a response message.

Owns :class:`ObservationError` (raised to a client when the server ended an
observation with an error response: it carries that response) and the
exceptions a resource handler raises to answer with an error response: one
exception class per 4.xx/5.xx response code (names follow
aiocoap.error where one exists, easing migration): raising
``NotFound("no such sensor")`` from ``render`` answers 4.04 with the
diagnostic payload (RFC 7252 §5.5.2). Any *other* exception escaping a
handler becomes 5.00 with no details on the wire (the server logs it).
Must not know about messaging or transports.
"""

from __future__ import annotations

from typing import ClassVar

from .errors import CoapError, RequestError
from .message import Message
from .numbers.codes import Code
from .numbers.contentformat import ContentFormat

__all__ = [
    "BadGateway",
    "BadOption",
    "BadRequest",
    "Conflict",
    "EchoRequired",
    "Forbidden",
    "GatewayTimeout",
    "HopLimitReached",
    "InternalServerError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "ObservationError",
    "PreconditionFailed",
    "ProxyingNotSupported",
    "RenderableError",
    "RequestEntityIncomplete",
    "RequestEntityTooLarge",
    "ServerNotImplemented",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedContentFormat",
]


class ObservationError(RequestError):
    """The server ended the observation with an error response (4.xx/5.xx)."""

    #: The error response.
    response: Message

    def __init__(self, response: Message) -> None:
        super().__init__(f"the observation ended with {response.code}")
        self.response = response


class RenderableError(CoapError):
    """Base class: raised by a handler, turned into an error response by the server."""

    #: The response code this error answers with.
    code: ClassVar[Code] = Code.INTERNAL_SERVER_ERROR

    def __init__(
        self, diagnostic: str = "", *, max_age: int | None = None, size1: int | None = None
    ) -> None:
        super().__init__(diagnostic or self.code.name_printable)
        #: Human-readable text sent as the payload (UTF-8, §5.5.2).
        self.diagnostic = diagnostic
        #: Max-Age of the error response (e.g. when to retry after a 5.03).
        self.max_age = max_age
        #: Size1 of a 4.13 response: the largest body the server accepts.
        self.size1 = size1

    def to_message(self) -> Message:
        """The error response: code, diagnostic payload (text/plain) and options."""
        response = Message(code=self.code, payload=self.diagnostic.encode("utf-8"))
        if self.diagnostic:
            response.opt.content_format = ContentFormat.TEXT
        if self.max_age is not None:
            response.opt.max_age = self.max_age
        if self.size1 is not None:
            response.opt.size1 = self.size1
        return response


class BadRequest(RenderableError):
    """4.00 Bad Request."""

    code = Code.BAD_REQUEST


class Unauthorized(RenderableError):
    """4.01 Unauthorized."""

    code = Code.UNAUTHORIZED


class EchoRequired(Unauthorized):
    """4.01 Unauthorized with an Echo option (RFC 9175 §2.4): repeat the request with
    this Echo value to prove it is fresh (a coap_trio client does so by itself)."""

    def __init__(self, echo: bytes, diagnostic: str = "") -> None:
        super().__init__(diagnostic, max_age=0)
        #: The Echo value the client is to send back.
        self.echo = echo

    def to_message(self) -> Message:
        """The 4.01 response, with its Echo option."""
        response = super().to_message()
        response.opt.echo = self.echo
        return response


class BadOption(RenderableError):
    """4.02 Bad Option: an unrecognized or malformed critical option (§5.4.1)."""

    code = Code.BAD_OPTION


class Forbidden(RenderableError):
    """4.03 Forbidden."""

    code = Code.FORBIDDEN


class NotFound(RenderableError):
    """4.04 Not Found."""

    code = Code.NOT_FOUND


class MethodNotAllowed(RenderableError):
    """4.05 Method Not Allowed."""

    code = Code.METHOD_NOT_ALLOWED


class NotAcceptable(RenderableError):
    """4.06 Not Acceptable: no representation in the requested Accept format."""

    code = Code.NOT_ACCEPTABLE


class RequestEntityIncomplete(RenderableError):
    """4.08 Request Entity Incomplete (RFC 7959)."""

    code = Code.REQUEST_ENTITY_INCOMPLETE


class Conflict(RenderableError):
    """4.09 Conflict (RFC 8132)."""

    code = Code.CONFLICT


class PreconditionFailed(RenderableError):
    """4.12 Precondition Failed (If-Match / If-None-Match)."""

    code = Code.PRECONDITION_FAILED


class RequestEntityTooLarge(RenderableError):
    """4.13 Request Entity Too Large; pass ``size1=`` the largest accepted size."""

    code = Code.REQUEST_ENTITY_TOO_LARGE


class UnsupportedContentFormat(RenderableError):
    """4.15 Unsupported Content-Format."""

    code = Code.UNSUPPORTED_CONTENT_FORMAT


class UnprocessableEntity(RenderableError):
    """4.22 Unprocessable Entity (RFC 8132)."""

    code = Code.UNPROCESSABLE_ENTITY


class TooManyRequests(RenderableError):
    """4.29 Too Many Requests (RFC 8516); pass ``max_age=`` the retry delay."""

    code = Code.TOO_MANY_REQUESTS


class InternalServerError(RenderableError):
    """5.00 Internal Server Error."""

    code = Code.INTERNAL_SERVER_ERROR


class ServerNotImplemented(RenderableError):
    """5.01 Not Implemented (aiocoap's ``NotImplemented``, renamed: that is a builtin)."""

    code = Code.NOT_IMPLEMENTED


class BadGateway(RenderableError):
    """5.02 Bad Gateway."""

    code = Code.BAD_GATEWAY


class ServiceUnavailable(RenderableError):
    """5.03 Service Unavailable; pass ``max_age=`` the retry delay."""

    code = Code.SERVICE_UNAVAILABLE


class GatewayTimeout(RenderableError):
    """5.04 Gateway Timeout."""

    code = Code.GATEWAY_TIMEOUT


class ProxyingNotSupported(RenderableError):
    """5.05 Proxying Not Supported."""

    code = Code.PROXYING_NOT_SUPPORTED


class HopLimitReached(RenderableError):
    """5.08 Hop Limit Reached (RFC 8768)."""

    code = Code.HOP_LIMIT_REACHED
