"""The exception hierarchy of coap_trio: every exception class it defines.

Every error this library raises on purpose derives from :class:`CoapError`.
Following h11, errors caused by what a peer sent (:class:`RemoteProtocolError`)
are kept apart from errors caused by how this process used the library
(:class:`LocalProtocolError`); a request that ends without a response raises a
:class:`RequestError`. Handlers answer with an error response by raising a
:class:`~coap_trio.response_errors.RenderableError` (``NotFound``...), the
other branch of :class:`CoapError`, defined in :mod:`coap_trio.response_errors`.

::

    CoapError
    ├── LocalProtocolError (also ValueError)
    │   ├── MessageEncodeError
    │   ├── InvalidURIError
    │   ├── UnsupportedTransportError
    │   ├── MessageTooLargeError (also RequestError)
    │   ├── OscoreProtectError (OSCORE: a message this context cannot protect)
    │   │   ├── SequenceNumberExhaustedError
    │   │   └── SequenceStoreError
    │   ├── EdnError (text that is not CBOR diagnostic notation)
    │   └── CredentialsError (OSCORE credentials that cannot be loaded)
    ├── RemoteProtocolError
    │   ├── MessageFormatError
    │   │   └── FrameTooLarge
    │   ├── SignalingError
    │   ├── BlockOutOfRange
    │   ├── DtlsDecodeError
    │   ├── BertNotAllowed
    │   ├── DtlsPkiError (a DTLS peer's certificate or key refused)
    │   ├── BadResponseError (also RequestError)
    │   ├── OscoreVerificationError (also RequestError)
    │   └── EdhocError (also RequestError: an EDHOC exchange that failed)
    ├── RequestError
    │   ├── RequestTimeoutError
    │   ├── ResetByPeerError
    │   ├── NetworkError
    │   │   ├── ConnectionLostError
    │   │   │   ├── ConnectError
    │   │   │   ├── ConnectionAbortedByPeerError
    │   │   │   └── ConnectionReleasedError
    │   │   ├── HandshakeError
    │   │   │   └── HandshakeTimeoutError
    │   │   └── DtlsAlertError
    │   ├── UnresolvableHostError
    │   ├── RequestCancelledError
    │   ├── RepresentationChangedError
    │   ├── ResponseTooLargeError
    │   └── response_errors.ObservationError (it carries a Message)
    ├── IdleTimeoutError (also TimeoutError)
    ├── ConnectFailure (also OSError)
    ├── LinkFormatError (also ValueError)
    ├── UsageError (the coap-trio command)
    ├── OutputError (the coap-trio command)
    └── response_errors.RenderableError: NotFound, BadRequest, ... (raised by handlers)

The second bases say what kind of standard error each one is, for code that
catches those: a :class:`LocalProtocolError` is an invalid argument (a
message that cannot be encoded, a URI that names no CoAP resource), a
:class:`LinkFormatError` malformed text (as :class:`json.JSONDecodeError`
is), and an :class:`IdleTimeoutError` or a :class:`ConnectFailure` one of the
``OSError`` values a stream transport reports the end of a connection with
(:attr:`NetworkError.os_error`).

Outside this hierarchy, only standard errors: ``ValueError`` and
``TypeError`` for invalid arguments, ``OSError`` from sockets (a bind that
fails, and in :attr:`NetworkError.os_error` why a peer is unreachable),
``ImportError`` naming the extra to install, and trio's own
(``trio.ClosedResourceError``...) from objects that behave like trio's.

Must not import anything above the sans-I/O core (no trio, no sockets): the classes
carry what their raisers give them.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from .numbers.codes import Code
from .numbers.types import Type

__all__ = [
    "BadResponseError",
    "BertNotAllowed",
    "BlockOutOfRange",
    "CoapError",
    "ConnectError",
    "ConnectFailure",
    "ConnectionAbortedByPeerError",
    "ConnectionLostError",
    "ConnectionReleasedError",
    "CredentialsError",
    "DtlsAlertError",
    "DtlsDecodeError",
    "DtlsPkiError",
    "EdhocError",
    "EdnError",
    "FormatErrorKind",
    "FrameErrorKind",
    "FrameTooLarge",
    "HandshakeError",
    "HandshakeTimeoutError",
    "IdleTimeoutError",
    "InvalidURIError",
    "LinkFormatError",
    "LocalProtocolError",
    "MessageEncodeError",
    "MessageFormatError",
    "MessageTooLargeError",
    "NetworkError",
    "OscoreFailure",
    "OscoreProtectError",
    "OscoreVerificationError",
    "OutputError",
    "RemoteProtocolError",
    "RepresentationChangedError",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "ResetByPeerError",
    "ResponseTooLargeError",
    "SequenceNumberExhaustedError",
    "SequenceStoreError",
    "SignalingError",
    "UnresolvableHostError",
    "UnsupportedTransportError",
    "UsageError",
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


class FrameErrorKind(enum.Enum):
    """What is wrong with a frame of CoAP over TCP, TLS or WebSockets (RFC 8323 §3.2, §4.4).

    Problems the UDP format cannot have; the others use :class:`FormatErrorKind`.
    """

    #: More bytes than the frame's Len field (and token length) announce.
    TRAILING_DATA = "bytes after the end the length field announces"
    #: A WebSocket frame whose Len nibble is not 0 (§4.4).
    LENGTH_NOT_ZERO = "WebSocket frame with a non-zero Len field"
    #: A frame header announces more than the receiver's Max-Message-Size.
    TOO_LARGE = "frame larger than the maximum message size"


class MessageFormatError(RemoteProtocolError):
    """A datagram that is not a well-formed CoAP message.

    Carries what a receiver needs to react as RFC 7252 §4.2/§4.3 ask: the
    message type and message ID when the header could be read. Use
    :attr:`should_reset` to decide, and :meth:`coap_trio.codec.reset_for`
    to build the Reset.
    """

    #: What is wrong; a :class:`FrameErrorKind` for problems only the
    #: reliable-transport framing (RFC 8323) has.
    kind: FormatErrorKind | FrameErrorKind
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
        kind: FormatErrorKind | FrameErrorKind,
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
    """The URI's scheme needs a transport this context does not have: ``coaps://`` in a
    context opened without DTLS credentials, ``coap+ws://`` without the ``ws`` extra."""


class InvalidURIError(LocalProtocolError):
    """A URI that cannot be turned into a CoAP request (RFC 7252 §6.4 returns "failure")."""


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


class FrameTooLarge(MessageFormatError):  # noqa: N818 -- a public name
    """A stream frame is larger than the receiver accepts (RFC 8323 §5.3.1).

    Raised by the stream decoder (``coap_trio.protocol.framing``) as soon as
    a frame header announcing more is read, before the body is buffered, and
    by the WebSocket framer when a message grows past the limit. The
    connection cannot continue (the stream cannot be resynchronized), so it
    should be aborted.
    """

    #: The size of the whole frame the header announced, in bytes (for a
    #: WebSocket message: the bytes received when it passed the limit).
    size: int
    #: The receiver's maximum message size.
    limit: int

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(FrameErrorKind.TOO_LARGE, offset=0)
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"frame of {self.size} bytes is larger than the maximum message size {self.limit}"


class ConnectionLostError(NetworkError):
    """The reliable connection (TCP, TLS, WebSocket) to the peer closed or broke.

    Every request sent over it and not yet answered fails with this
    (RFC 8323: responses come back over the same connection only); with its
    subclass :class:`ConnectError` when the connection could not be opened.
    """


class ConnectError(ConnectionLostError):
    """The reliable connection (TCP, TLS, WebSocket) to the peer could not be opened.

    The peer refused it, was unreachable, did not accept it within
    ``StreamLimits.connect_timeout``, or the TLS or WebSocket handshake
    failed: the message says which, e.g. ``could not connect to
    coap+tcp://[::1]:5683: refused (...)``, and :attr:`~NetworkError.os_error`
    is the error the operating system (or :mod:`ssl`) gave. Every request
    that waited for the connection fails with this.
    """


class ConnectFailure(CoapError, OSError):  # noqa: N818 -- an OSError, as reported
    """The ``OSError`` a stream transport reports for a connection it could not open.

    Made with the errno of the error behind it (its ``__cause__``) and a
    message saying what happened; ``str()`` is that message alone. The
    client turns it into the :class:`ConnectError` of the requests that
    waited for the connection (:meth:`request_error`).
    """

    def __str__(self) -> str:
        return str(self.strerror)

    def request_error(self) -> ConnectError:
        """The error of a request that waited for this connection."""
        cause = self.__cause__
        return ConnectError(str(self), cause if isinstance(cause, OSError) else self)


class ConnectionAbortedByPeerError(ConnectionLostError):
    """The peer aborted the connection with an Abort signaling message (RFC 8323 §5.6)."""

    #: The option of our CSM the peer rejected (Bad-CSM-Option), if it said.
    bad_csm_option: int | None

    def __init__(self, message: str, bad_csm_option: int | None = None) -> None:
        super().__init__(message)
        self.bad_csm_option = bad_csm_option


class ConnectionReleasedError(ConnectionLostError):
    """The peer released the connection (Release, RFC 8323 §5.5): no new requests there.

    ``alternative_addresses`` and ``hold_off`` repeat what the peer proposed.
    """

    #: Where the peer suggests to reconnect (Alternative-Address options).
    alternative_addresses: tuple[str, ...]
    #: Seconds the peer asks to wait before reconnecting (Hold-Off), if given.
    hold_off: int | None

    def __init__(
        self,
        message: str,
        alternative_addresses: tuple[str, ...] = (),
        hold_off: int | None = None,
    ) -> None:
        super().__init__(message)
        self.alternative_addresses = alternative_addresses
        self.hold_off = hold_off


class MessageTooLargeError(LocalProtocolError, RequestError):
    """A message is larger than the peer's Max-Message-Size (RFC 8323 §5.3.1); not sent.

    A request fails with it; use block-wise transfers (smaller blocks) instead.
    """

    #: The encoded size of the message, in bytes.
    size: int
    #: The peer's limit.
    limit: int

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the peer's Max-Message-Size {limit}")
        self.size = size
        self.limit = limit


class SignalingError(RemoteProtocolError):
    """A signaling message this stack cannot accept: it has an unknown critical option.

    RFC 8323 §5.3/§5.6: the connection is aborted; for a CSM the Abort names
    the option (Bad-CSM-Option, :attr:`option`).
    """

    #: The signaling code of the offending message.
    code: Code
    #: The unrecognized critical option number.
    option: int

    def __init__(self, code: Code, option: int) -> None:
        super().__init__(
            f"{code.dotted} {code.name_printable} with unknown critical option {option}"
        )
        self.code = code
        self.option = option


class BlockOutOfRange(RemoteProtocolError):  # noqa: N818 -- a public name
    """A Block2 request asked for a block past the end; answer 4.02 Bad Option."""

    #: The response code a server should send.
    code: ClassVar[Code] = Code.BAD_OPTION


class BertNotAllowed(RemoteProtocolError):  # noqa: N818 -- a public name
    """SZX 7 (BERT) in a request where BERT is not agreed (UDP, or a stream whose
    peers did not both announce it); RFC 7959 §2.2 requires 4.00 Bad Request."""

    #: The response code a server should send.
    code: ClassVar[Code] = Code.BAD_REQUEST


class DtlsPkiError(RemoteProtocolError):
    """A DTLS peer's credentials were refused: its certificate chain, raw
    public key, ECDHE parameters or signature.

    The handshake ends with a fatal alert; :attr:`alert` is its
    AlertDescription number (RFC 5246 §7.2.2), for instance 42
    bad_certificate or 48 unknown_ca. Importable from
    ``coap_trio.protocol.dtls.pki``, which names the numbers it uses.
    """

    #: The TLS AlertDescription to send (RFC 5246 §7.2.2).
    alert: int

    def __init__(self, message: str, alert: int) -> None:
        super().__init__(message)
        self.alert = alert


class IdleTimeoutError(CoapError, TimeoutError):
    """A stream connection closed after ``idle_timeout`` seconds without traffic.

    Also a ``TimeoutError``: the stream transports report why a connection
    ended as an ``OSError`` (see :attr:`NetworkError.os_error`).
    """


class LinkFormatError(CoapError, ValueError):
    """Raised for malformed link-format text (message names the problem and offset)."""


class UsageError(CoapError):
    """A command-line value the coap-trio command cannot use (exit status 2)."""


class OutputError(CoapError):
    """The coap-trio command could not write a payload (``--output`` FILE cannot be created...)."""


class DtlsDecodeError(RemoteProtocolError):
    """A DTLS record or handshake message that cannot be read (RFC 6347).

    Raised only by the parsers of ``coap_trio.protocol.dtls``; the DTLS
    engine turns it into a dropped record or a ``decode_error`` alert, so it
    does not reach the user.
    """

    #: Byte offset where reading failed, within what was being read.
    offset: int

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


class HandshakeError(NetworkError):
    """The DTLS handshake with the peer failed on our side.

    Its parameters were refused, a message broke the protocol, the peer's
    Finished did not check out (a wrong pre-shared key), or its certificate or
    key was not trusted. :attr:`alert` is the fatal alert we sent the peer.
    """

    #: The alert description sent to the peer (RFC 5246 §7.2), if one was.
    alert: int | None

    def __init__(self, message: str, alert: int | None = None) -> None:
        super().__init__(message)
        self.alert = alert


class HandshakeTimeoutError(HandshakeError):
    """The DTLS handshake did not finish in time: the peer stopped answering our flights.

    RFC 6347 §4.2.4: each flight is retransmitted with a doubling timer
    until the handshake's time is up.
    """

    #: Seconds the handshake lasted before it was given up.
    elapsed: float

    def __init__(self, elapsed: float) -> None:
        super().__init__(f"no answer to the DTLS handshake within {elapsed:.0f} s")
        self.elapsed = elapsed


class DtlsAlertError(NetworkError):
    """The peer ended the DTLS session with a fatal alert (RFC 5246 §7.2).

    During the handshake the alert may say why it refused us
    (``handshake_failure`` 40, ``decrypt_error`` 51 for a wrong pre-shared
    key, ``unknown_psk_identity`` 115...); a ``close_notify`` is not an error.
    """

    #: The alert level: 1 (warning) or 2 (fatal).
    level: int
    #: The alert description (RFC 5246 §7.2, RFC 4279, RFC 5746).
    description: int

    def __init__(self, level: int, description: int, name: str | None = None) -> None:
        label = name or f"alert {description}"
        super().__init__(f"the peer sent a fatal DTLS alert: {label} ({description})")
        self.level = level
        self.description = description


class OscoreFailure(enum.Enum):
    """Why an OSCORE-protected message failed to verify (RFC 8613 §7.4, §8.2, §8.4).

    The value is the diagnostic text RFC 8613 suggests where it suggests one.
    The OSCORE engine (``coap_trio.protocol.oscore``) says which response,
    if any, each one gets.
    """

    #: The OSCORE option or the COSE object did not decode (§8.2 step 2):
    #: reserved flag bits, a truncated value, no payload, a request without
    #: 'kid' or Partial IV, a plaintext that is not a CoAP message.
    DECODE = "Failed to decode COSE"
    #: No security context for the 'kid' (and 'kid context') (§8.2 step 2).
    CONTEXT_NOT_FOUND = "Security context not found"
    #: The AEAD did not verify: wrong key, altered message or AAD (§8.2 step 6).
    DECRYPTION = "Decryption failed"
    #: The Partial IV was seen before or is below the replay window (§7.4);
    #: for a response: a second response, or a notification older than the
    #: latest (§7.4.1).
    REPLAY = "Replay detected"
    #: The replay window is not known (after a restart): the request is
    #: answered with a protected 4.01 and an Echo value (Appendix B.1.2).
    FRESHNESS = "Freshness not verified"
    #: An unprotected request to a resource that requires OSCORE.
    UNPROTECTED = "OSCORE required"
    #: An unprotected response to a protected request (typically the peer's
    #: own OSCORE error, which RFC 8613 §8.2 sends unprotected).
    UNPROTECTED_RESPONSE = "Response not protected"
    #: A response with an Inner Observe option to a request without one (§4.1.3.5.2).
    UNEXPECTED_OBSERVE = "Observe in a response to a request without it"
    #: An OSCORE message larger than the configured maximum unfragmented size
    #: (§4.1.3.4.2): discarded.
    TOO_LARGE = "Message too large"


class OscoreVerificationError(RemoteProtocolError, RequestError):
    """An OSCORE message that did not verify (RFC 8613 §8.2, §8.4).

    The OSCORE engine never raises it: its verification results carry it
    (with the response to send, if any), and a client request whose response
    cannot be verified may end with it.
    """

    #: What went wrong.
    failure: OscoreFailure
    #: More about it, for logs (never key material).
    detail: str

    def __init__(self, failure: OscoreFailure, detail: str = "") -> None:
        super().__init__(failure, detail)
        self.failure = failure
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.failure.value}: {self.detail}" if self.detail else self.failure.value


class OscoreProtectError(LocalProtocolError):
    """A message cannot be protected with OSCORE (RFC 8613 §8.1, §8.3).

    Raised for a message that already carries an OSCORE option (nested OSCORE
    is not supported, §4.1.3.7), a Proxy-Uri that cannot be decomposed
    (§4.1.3.3), and by its subclasses.
    """


class SequenceNumberExhaustedError(OscoreProtectError):
    """The Sender Sequence Number passed its maximum, 2**40 - 1 (RFC 8613 §7.2.1).

    The security context protects nothing more; a new one must be
    established.
    """


class SequenceStoreError(OscoreProtectError):
    """The Sender Sequence Number could not be persisted (RFC 8613 Appendix B.1.1).

    The sequence number was not used: protecting again retries the write.
    The cause (an ``OSError``...) is chained.
    """


class EdnError(LocalProtocolError):
    """Text that is not CBOR diagnostic notation :func:`coap_trio.edn.loads` reads
    (a credentials ``.diag`` file, a key file); the message says the line and column."""


class CredentialsError(LocalProtocolError):
    """An OSCORE credentials file or security context directory that cannot be used.

    The message names the file and the entry.
    """


class EdhocError(RemoteProtocolError, RequestError):
    """An EDHOC exchange (RFC 9528) that failed: a message that did not verify or
    decode, a credential that is not trusted, a critical EAD item, a peer's error.

    Raised by ``Context.edhoc``; a server answers the message at fault with
    an error response (RFC 9528 §6, RFC 9668 §3.3.1) instead.
    """
