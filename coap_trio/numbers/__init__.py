"""The registries every other module reads: types, codes, options, content formats, constants.

Nothing here imports trio or knows about messages or transports.
"""

from .codes import Code
from .constants import (
    COAP_PORT,
    COAPS_PORT,
    DEFAULT_PORTS,
    TransmissionParameters,
)
from .contentformat import ContentFormat, register_content_format
from .optionnumbers import (
    OptionFormat,
    OptionNumber,
    OptionSpec,
    option_spec,
    registered_options,
)
from .types import ACK, CON, NON, RST, Type

EMPTY = Code.EMPTY
GET = Code.GET
POST = Code.POST
PUT = Code.PUT
DELETE = Code.DELETE
FETCH = Code.FETCH
PATCH = Code.PATCH
iPATCH = Code.iPATCH  # noqa: N816 -- the method's registered name
CREATED = Code.CREATED
DELETED = Code.DELETED
VALID = Code.VALID
CHANGED = Code.CHANGED
CONTENT = Code.CONTENT
CONTINUE = Code.CONTINUE
BAD_REQUEST = Code.BAD_REQUEST
NOT_FOUND = Code.NOT_FOUND

__all__ = [
    "ACK",
    "BAD_REQUEST",
    "CHANGED",
    "COAPS_PORT",
    "COAP_PORT",
    "CON",
    "CONTENT",
    "CONTINUE",
    "CREATED",
    "DEFAULT_PORTS",
    "DELETE",
    "DELETED",
    "EMPTY",
    "FETCH",
    "GET",
    "NON",
    "NOT_FOUND",
    "PATCH",
    "POST",
    "PUT",
    "RST",
    "VALID",
    "Code",
    "ContentFormat",
    "OptionFormat",
    "OptionNumber",
    "OptionSpec",
    "TransmissionParameters",
    "Type",
    "iPATCH",
    "option_spec",
    "register_content_format",
    "registered_options",
]
