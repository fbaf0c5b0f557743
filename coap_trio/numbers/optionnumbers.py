"""The CoAP option registry: numbers, value formats, length bounds.

This is the one table of options (IANA "CoAP Option Numbers"); the codec,
the typed accessors of :class:`coap_trio.message.Options`, the docs and the
CLI all read it. Critical / unsafe / no-cache-key are derived from the number
as RFC 7252 §5.4.6 defines them, never typed in.

Owns: option numbers and their properties. Must not know about messages,
encoding, or which options this stack currently implements.
"""

from __future__ import annotations

import enum

import attrs

from ._pseudo import pseudo_member

__all__ = [
    "MAX_OPTION_LENGTH",
    "RESERVED_OPTION_NUMBERS",
    "OptionFormat",
    "OptionNumber",
    "OptionSpec",
    "option_spec",
    "registered_options",
]


class OptionFormat(enum.Enum):
    """The value formats of RFC 7252 §3.2."""

    #: A zero-length value (presence is the information).
    EMPTY = "empty"
    #: An opaque sequence of bytes.
    OPAQUE = "opaque"
    #: A non-negative integer in network byte order, minimal length.
    UINT = "uint"
    #: A UTF-8 string in Net-Unicode form.
    STRING = "string"


class OptionNumber(enum.IntEnum):
    """A CoAP option number. Unregistered numbers (0..65535) are created on demand."""

    IF_MATCH = 1
    URI_HOST = 3
    ETAG = 4
    IF_NONE_MATCH = 5
    OBSERVE = 6
    URI_PORT = 7
    LOCATION_PATH = 8
    OSCORE = 9
    URI_PATH = 11
    CONTENT_FORMAT = 12
    MAX_AGE = 14
    URI_QUERY = 15
    HOP_LIMIT = 16
    ACCEPT = 17
    Q_BLOCK1 = 19
    LOCATION_QUERY = 20
    EDHOC = 21
    BLOCK2 = 23
    BLOCK1 = 27
    SIZE2 = 28
    Q_BLOCK2 = 31
    PROXY_URI = 35
    PROXY_SCHEME = 39
    SIZE1 = 60
    ECHO = 252
    NO_RESPONSE = 258
    REQUEST_TAG = 292
    OCF_ACCEPT_CONTENT_FORMAT_VERSION = 2049
    OCF_CONTENT_FORMAT_VERSION = 2053

    @classmethod
    def _missing_(cls, value: object) -> OptionNumber | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF:
            return pseudo_member(cls, value, f"UNKNOWN_{value}")
        return None

    def is_known(self) -> bool:
        """True when the number is in the registry."""
        return int(self) in _SPECS

    def is_critical(self) -> bool:
        """Odd numbers are critical (§5.4.1)."""
        return bool(int(self) & 0x01)

    def is_elective(self) -> bool:
        """Even numbers are elective (§5.4.1)."""
        return not int(self) & 0x01

    def is_unsafe(self) -> bool:
        """Bit 1 set: unsafe to forward for a proxy that does not know it (§5.4.2)."""
        return bool(int(self) & 0x02)

    def is_safe_to_forward(self) -> bool:
        """The complement of :meth:`is_unsafe`."""
        return not int(self) & 0x02

    def is_no_cache_key(self) -> bool:
        """Safe-to-forward with bits 2..4 all set: not part of the cache key (§5.4.6)."""
        return (int(self) & 0x1E) == 0x1C

    def is_cache_key(self) -> bool:
        """The complement of :meth:`is_no_cache_key`."""
        return (int(self) & 0x1E) != 0x1C

    @property
    def spec(self) -> OptionSpec:
        """The registry entry (a generic opaque 0..65535+269 entry when unregistered)."""
        return option_spec(int(self))

    @property
    def name_printable(self) -> str:
        """The registered name, e.g. ``"Uri-Path"``; ``"Unknown-2000"`` otherwise."""
        return self.spec.name

    def __str__(self) -> str:
        return self.name_printable

    def __repr__(self) -> str:
        return f"<OptionNumber {int(self)} {self.name_printable}>"


@attrs.frozen
class OptionSpec:
    """One row of the option registry."""

    number: int
    #: Registered name, e.g. ``"Uri-Path"``.
    name: str
    format: OptionFormat
    min_length: int
    max_length: int
    repeatable: bool
    #: The defining document, e.g. ``"RFC 7252"``.
    reference: str

    @property
    def attribute(self) -> str:
        """The Python attribute name of the typed accessor, e.g. ``"uri_path"``."""
        return self.name.lower().replace("-", "_")

    def length_ok(self, length: int) -> bool:
        """Whether a value of ``length`` bytes respects the registered bounds."""
        return self.min_length <= length <= self.max_length


#: The longest value the option encoding can carry (§3.1: 14 -> 269 + 0xFFFF).
MAX_OPTION_LENGTH = 269 + 0xFFFF

_E, _O, _U, _S = OptionFormat.EMPTY, OptionFormat.OPAQUE, OptionFormat.UINT, OptionFormat.STRING

_ROWS: tuple[tuple[OptionNumber, str, OptionFormat, int, int, bool, str], ...] = (
    (OptionNumber.IF_MATCH, "If-Match", _O, 0, 8, True, "RFC 7252"),
    (OptionNumber.URI_HOST, "Uri-Host", _S, 1, 255, False, "RFC 7252"),
    (OptionNumber.ETAG, "ETag", _O, 1, 8, True, "RFC 7252"),
    (OptionNumber.IF_NONE_MATCH, "If-None-Match", _E, 0, 0, False, "RFC 7252"),
    (OptionNumber.OBSERVE, "Observe", _U, 0, 3, False, "RFC 7641"),
    (OptionNumber.URI_PORT, "Uri-Port", _U, 0, 2, False, "RFC 7252"),
    (OptionNumber.LOCATION_PATH, "Location-Path", _S, 0, 255, True, "RFC 7252"),
    (OptionNumber.OSCORE, "OSCORE", _O, 0, 255, False, "RFC 8613"),
    (OptionNumber.URI_PATH, "Uri-Path", _S, 0, 255, True, "RFC 7252"),
    (OptionNumber.CONTENT_FORMAT, "Content-Format", _U, 0, 2, False, "RFC 7252"),
    (OptionNumber.MAX_AGE, "Max-Age", _U, 0, 4, False, "RFC 7252"),
    (OptionNumber.URI_QUERY, "Uri-Query", _S, 0, 255, True, "RFC 7252"),
    (OptionNumber.HOP_LIMIT, "Hop-Limit", _U, 1, 1, False, "RFC 8768"),
    (OptionNumber.ACCEPT, "Accept", _U, 0, 2, False, "RFC 7252"),
    (OptionNumber.Q_BLOCK1, "Q-Block1", _U, 0, 3, False, "RFC 9177"),
    (OptionNumber.LOCATION_QUERY, "Location-Query", _S, 0, 255, True, "RFC 7252"),
    (OptionNumber.EDHOC, "EDHOC", _E, 0, 0, False, "RFC 9668"),
    (OptionNumber.BLOCK2, "Block2", _U, 0, 3, False, "RFC 7959"),
    (OptionNumber.BLOCK1, "Block1", _U, 0, 3, False, "RFC 7959"),
    (OptionNumber.SIZE2, "Size2", _U, 0, 4, False, "RFC 7959"),
    (OptionNumber.Q_BLOCK2, "Q-Block2", _U, 0, 3, True, "RFC 9177"),
    (OptionNumber.PROXY_URI, "Proxy-Uri", _S, 1, 1034, False, "RFC 7252"),
    (OptionNumber.PROXY_SCHEME, "Proxy-Scheme", _S, 1, 255, False, "RFC 7252"),
    (OptionNumber.SIZE1, "Size1", _U, 0, 4, False, "RFC 7252"),
    (OptionNumber.ECHO, "Echo", _O, 1, 40, False, "RFC 9175"),
    (OptionNumber.NO_RESPONSE, "No-Response", _U, 0, 1, False, "RFC 7967"),
    (OptionNumber.REQUEST_TAG, "Request-Tag", _O, 0, 8, True, "RFC 9175"),
    (
        OptionNumber.OCF_ACCEPT_CONTENT_FORMAT_VERSION,
        "OCF-Accept-Content-Format-Version",
        _U,
        2,
        2,
        False,
        "OCF Core 1.0",
    ),
    (
        OptionNumber.OCF_CONTENT_FORMAT_VERSION,
        "OCF-Content-Format-Version",
        _U,
        2,
        2,
        False,
        "OCF Core 1.0",
    ),
)

_SPECS: dict[int, OptionSpec] = {int(row[0]): OptionSpec(int(row[0]), *row[1:]) for row in _ROWS}

#: Numbers reserved by RFC 7252 §12.2 (former uses; never to be sent).
RESERVED_OPTION_NUMBERS = frozenset({0, 128, 132, 136, 140})


def option_spec(number: int) -> OptionSpec:
    """The registry entry for ``number``; unregistered numbers get an opaque entry."""
    spec = _SPECS.get(number)
    if spec is None:
        spec = OptionSpec(number, f"Unknown-{number}", _O, 0, MAX_OPTION_LENGTH, True, "")
    return spec


def registered_options() -> tuple[OptionSpec, ...]:
    """Every registered option, in number order (for docs and the CLI)."""
    return tuple(_SPECS[n] for n in sorted(_SPECS))
