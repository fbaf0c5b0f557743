"""coap_trio: a CoAP (RFC 7252) stack for Python built natively on Trio.

The public API is re-exported here; submodules whose names start with an
underscore are private. See ``docs/architecture.md`` for the layers.
``DtlsCredentials``, ``DtlsLimits`` and ``DtlsEndpointStatistics`` (DTLS,
``coaps://``) need the ``dtls`` extra (``cryptography``): they are imported
on first use.
"""

from typing import TYPE_CHECKING, Any

from . import codec, linkformat, response_errors
from ._client.multicast import GroupResponses
from ._client.observation import Observation
from ._client.request import Request
from ._client.stream import ResponseStream
from .block import BlockValue
from .context import Context, ContextStatistics, open_context
from .errors import (
    BadResponseError,
    CoapError,
    ConnectError,
    ConnectionAbortedByPeerError,
    ConnectionLostError,
    ConnectionReleasedError,
    DtlsAlertError,
    FormatErrorKind,
    FrameErrorKind,
    FrameTooLarge,
    HandshakeError,
    HandshakeTimeoutError,
    InvalidURIError,
    LocalProtocolError,
    MessageEncodeError,
    MessageFormatError,
    MessageTooLargeError,
    NetworkError,
    RemoteProtocolError,
    RepresentationChangedError,
    RequestCancelledError,
    RequestError,
    RequestTimeoutError,
    ResetByPeerError,
    ResponseTooLargeError,
    UnresolvableHostError,
    UnsupportedTransportError,
)
from .hosting import serve
from .message import Message
from .numbers import (
    ACK,
    CHANGED,
    CON,
    CONTENT,
    CREATED,
    DELETE,
    DELETED,
    FETCH,
    GET,
    NON,
    PATCH,
    POST,
    PUT,
    RST,
    VALID,
    Code,
    ContentFormat,
    OptionNumber,
    TransmissionParameters,
    Type,
    iPATCH,
)
from .observable import ObservableResource
from .options import Options
from .protocol.config import BlockwiseConfig, MessagingConfig
from .remote import DatagramRemote, DtlsPeer, DtlsRemote, MulticastRemote, OscoreRemote
from .resource import Resource, Site
from .response_errors import ObservationError
from .transports.stream import StreamLimits, StreamStatistics
from .uri import Origin

if TYPE_CHECKING:
    from .protocol.dtls.credentials import DtlsCredentials
    from .transports.dtls import DtlsEndpointStatistics, DtlsLimits

__version__ = "0.1.0.dev0"

#: Public names imported on first use: their modules need the ``dtls`` extra.
_DTLS_EXPORTS = {
    "DtlsCredentials": "protocol.dtls.credentials",
    "DtlsEndpointStatistics": "transports.dtls",
    "DtlsLimits": "transports.dtls",
}


def __getattr__(name: str) -> Any:
    """``DtlsCredentials`` and the other DTLS names, imported when first asked for."""
    module = _DTLS_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coap_trio' has no attribute {name!r}")
    from importlib import import_module

    try:
        imported = import_module(f".{module}", __name__)
    except ImportError as error:
        raise ImportError(
            f"coap_trio.{name} needs the 'dtls' extra: pip install 'coap-trio[dtls]' ({error})"
        ) from error
    value = getattr(imported, name)
    globals()[name] = value
    return value


__all__ = [
    "ACK",
    "CHANGED",
    "CON",
    "CONTENT",
    "CREATED",
    "DELETE",
    "DELETED",
    "FETCH",
    "GET",
    "NON",
    "PATCH",
    "POST",
    "PUT",
    "RST",
    "VALID",
    "BadResponseError",
    "BlockValue",
    "BlockwiseConfig",
    "CoapError",
    "Code",
    "ConnectError",
    "ConnectionAbortedByPeerError",
    "ConnectionLostError",
    "ConnectionReleasedError",
    "ContentFormat",
    "Context",
    "ContextStatistics",
    "DatagramRemote",
    "DtlsAlertError",
    "DtlsCredentials",
    "DtlsEndpointStatistics",
    "DtlsLimits",
    "DtlsPeer",
    "DtlsRemote",
    "FormatErrorKind",
    "FrameErrorKind",
    "FrameTooLarge",
    "GroupResponses",
    "HandshakeError",
    "HandshakeTimeoutError",
    "InvalidURIError",
    "LocalProtocolError",
    "Message",
    "MessageEncodeError",
    "MessageFormatError",
    "MessageTooLargeError",
    "MessagingConfig",
    "MulticastRemote",
    "NetworkError",
    "ObservableResource",
    "Observation",
    "ObservationError",
    "OptionNumber",
    "Options",
    "Origin",
    "OscoreRemote",
    "RemoteProtocolError",
    "RepresentationChangedError",
    "Request",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "ResetByPeerError",
    "Resource",
    "ResponseStream",
    "ResponseTooLargeError",
    "Site",
    "StreamLimits",
    "StreamStatistics",
    "TransmissionParameters",
    "Type",
    "UnresolvableHostError",
    "UnsupportedTransportError",
    "__version__",
    "codec",
    "iPATCH",
    "linkformat",
    "open_context",
    "response_errors",
    "serve",
]
