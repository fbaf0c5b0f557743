"""The exception hierarchy of coap_trio.

Every error this library raises on purpose derives from :class:`CoapError`.
Following h11, errors caused by what a peer sent (:class:`RemoteProtocolError`)
are kept apart from errors caused by how this process used the library
(:class:`LocalProtocolError`).
"""

from __future__ import annotations

import enum

from .numbers.types import Type

__all__ = [
    "BadResponseError",
    "CoapError",
    "FormatErrorKind",
    "LocalProtocolError",
    "MessageEncodeError",
    "MessageFormatError",
    "NetworkError",
    "RemoteProtocolError",
    "RepresentationChangedError",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "ResetByPeerError",
    "ResponseTooLargeError",
    "UnresolvableHostError",
    "UnsupportedTransportError",
]


class CoapError(Exception):
    """Base class of every error coap_trio raises on purpose."""


class RemoteProtocolError(CoapError):
    """A peer sent something that breaks the protocol."""


class LocalProtocolError(CoapError, ValueError):
    """This process asked for something the protocol does not allow."""


class MessageEncodeError(LocalProtocolError):
    """A :class:`~coap_trio.message.Message` cannot be encoded (token too long, no MID...)."""


class FormatErrorKind(enum.Enum):
    """What is wrong with a datagram that failed to decode (RFC 7252 §3)."""

    #: Fewer than the four header bytes.
    TOO_SHORT = "shorter than the 4-byte header"
    #: Version field other than 1: silently ignored (§3).
    UNKNOWN_VERSION = "unknown version"
    #: Token Length 9..15 (§3: reserved, a format error).
    BAD_TOKEN_LENGTH = "token length 9..15 is reserved"
    #: Code 0.00 with a token, options or payload (§4.1).
    NONEMPTY_EMPTY_MESSAGE = "empty message (0.00) carries a token, options or payload"
    #: The datagram ends inside the token, an extended field or an option value.
    TRUNCATED = "truncated"
    #: An option delta nibble of 15 that is not the payload marker (§3.1).
    RESERVED_DELTA = "option delta nibble 15 is reserved"
    #: An option length nibble of 15 (§3.1).
    RESERVED_LENGTH = "option length nibble 15 is reserved"
    #: A payload marker followed by a zero-length payload (§3).
    EMPTY_PAYLOAD = "payload marker with no payload after it"
    #: The option numbers add up to more than 65535.
    OPTION_NUMBER_TOO_LARGE = "option number above 65535"


class MessageFormatError(RemoteProtocolError):
    """A datagram that is not a well-formed CoAP message.

    Carries what a receiver needs to react as RFC 7252 §4.2/§4.3 ask: the
    message type and message ID when the header could be read. Use
    :attr:`should_reset` to decide, and :meth:`coap_trio.codec.reset_for`
    to build the Reset.
    """

    kind: FormatErrorKind
    #: The version field, when at least one byte arrived.
    version: int | None
    #: The message type, when the header could be read.
    mtype: Type | None
    #: The message ID, when the header could be read.
    mid: int | None
    #: Byte offset where decoding failed.
    offset: int

    def __init__(
        self,
        kind: FormatErrorKind,
        *,
        version: int | None = None,
        mtype: Type | None = None,
        mid: int | None = None,
        offset: int = 0,
    ) -> None:
        super().__init__(kind, version, mtype, mid, offset)
        self.kind = kind
        self.version = version
        self.mtype = mtype
        self.mid = mid
        self.offset = offset

    def __str__(self) -> str:
        where = f" at byte {self.offset}"
        if self.mtype is not None and self.mid is not None:
            return f"malformed {self.mtype.name} MID {self.mid}: {self.kind.value}{where}"
        return f"malformed datagram: {self.kind.value}{where}"

    @property
    def should_reset(self) -> bool:
        """True when RFC 7252 asks for a Reset: a version-1 CON with a format error (§4.2).

        A NON with a format error MAY be reset but is silently ignored here (§4.3);
        ACK and RST are always ignored, as is any message of an unknown version (§3).
        """
        return self.version == 1 and self.mtype is Type.CON and self.mid is not None


class RequestError(CoapError):
    """A request ended without a response. Raised from ``Request.response``."""


class RequestTimeoutError(RequestError):
    """No response arrived: a CON was never acknowledged after all retransmissions,
    or a response never followed (NON request, or empty ACK)."""

    #: How many times the request was transmitted (1 + retransmissions).
    transmissions: int

    def __init__(self, transmissions: int, message: str | None = None) -> None:
        super().__init__(message or f"no response after {transmissions} transmission(s)")
        self.transmissions = transmissions


class ResetByPeerError(RequestError):
    """The peer answered the request with a Reset (RST)."""


class NetworkError(RequestError):
    """The network reported an error for the peer (e.g. ICMP port unreachable)."""

    #: The operating system's error, when there is one.
    os_error: OSError | None

    def __init__(self, message: str, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.os_error = os_error


class UnresolvableHostError(RequestError):
    """The host name of the request URI did not resolve."""


class BadResponseError(RequestError, RemoteProtocolError):
    """The response could not be accepted (e.g. an unrecognized critical option, §5.4.1)."""


class RequestCancelledError(RequestError):
    """The request was cancelled with ``Request.cancel()`` before a response arrived."""


class UnsupportedTransportError(LocalProtocolError):
    """The URI's scheme needs a transport this stack does not provide yet (coaps://, ...)."""


class RepresentationChangedError(RequestError):
    """The resource changed while its representation was transferred block by block.

    The ETag of a later block differed from the first block's (RFC 7959
    §2.4). ``Context.request`` restarts from block 0 twice before raising
    this; a stream (``Context.stream``) raises it at once.
    """


class ResponseTooLargeError(RequestError):
    """A block-wise response is larger than ``BlockwiseConfig.max_body_size``.

    Raised when Size2 announces more, or more bytes arrive. Use
    ``Context.stream`` to receive large representations chunk by chunk
    without assembling them in memory.
    """

    #: The size announced (Size2) or reached so far, in bytes.
    size: int
    #: The limit that was exceeded.
    limit: int

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the response has at least {size} bytes, more than max_body_size {limit}:"
            " use Context.stream() for large representations"
        )
        self.size = size
        self.limit = limit
