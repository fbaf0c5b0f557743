"""coap_trio: a CoAP (RFC 7252) stack for Python built natively on Trio.

The public API is re-exported here; submodules whose names start with an
underscore are private. See ``docs/architecture.md`` for the layers.
"""

from . import codec, linkformat
from .block import BlockValue
from .errors import (
    CoapError,
    FormatErrorKind,
    LocalProtocolError,
    MessageEncodeError,
    MessageFormatError,
    RemoteProtocolError,
)
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
from .options import Options
from .uri import InvalidURIError, Origin

__version__ = "0.1.0.dev0"

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
    "BlockValue",
    "CoapError",
    "Code",
    "ContentFormat",
    "FormatErrorKind",
    "InvalidURIError",
    "LocalProtocolError",
    "Message",
    "MessageEncodeError",
    "MessageFormatError",
    "OptionNumber",
    "Options",
    "Origin",
    "RemoteProtocolError",
    "TransmissionParameters",
    "Type",
    "__version__",
    "codec",
    "iPATCH",
    "linkformat",
]
