"""CoAP codes: methods, response codes and signaling codes.

Owns the eight-bit Code field (RFC 7252 §3, §12.1) and its registry: every
RFC 7252 method and response code, FETCH/PATCH/iPATCH with 4.09 and 4.22
(RFC 8132), 2.31 Continue and 4.08 (RFC 7959), 4.29 (RFC 8516), 5.08
(RFC 8768) and the 7.xx signaling codes (RFC 8323).

Any value 0..255 is a valid :class:`Code`: unregistered ones are created on
demand, report ``is_known() == False`` and print as e.g. ``"1.09 Unknown"``.
"""

from __future__ import annotations

import enum

from ._pseudo import pseudo_member

__all__ = ["Code"]


class Code(enum.IntEnum):
    """A CoAP code, ``class.detail`` packed as ``class << 5 | detail``.

    Member names follow aiocoap's where one exists (``Code.GET``,
    ``Code.CONTENT``, ``Code.NOT_FOUND``...), which eases migration.
    """

    EMPTY = 0

    # Methods (RFC 7252 §12.1.1, RFC 8132)
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5
    PATCH = 6
    iPATCH = 7  # noqa: N815 -- the method's registered name

    # 2.xx Success
    CREATED = (2 << 5) | 1
    DELETED = (2 << 5) | 2
    VALID = (2 << 5) | 3
    CHANGED = (2 << 5) | 4
    CONTENT = (2 << 5) | 5
    CONTINUE = (2 << 5) | 31

    # 4.xx Client Error
    BAD_REQUEST = (4 << 5) | 0
    UNAUTHORIZED = (4 << 5) | 1
    BAD_OPTION = (4 << 5) | 2
    FORBIDDEN = (4 << 5) | 3
    NOT_FOUND = (4 << 5) | 4
    METHOD_NOT_ALLOWED = (4 << 5) | 5
    NOT_ACCEPTABLE = (4 << 5) | 6
    REQUEST_ENTITY_INCOMPLETE = (4 << 5) | 8
    CONFLICT = (4 << 5) | 9
    PRECONDITION_FAILED = (4 << 5) | 12
    REQUEST_ENTITY_TOO_LARGE = (4 << 5) | 13
    UNSUPPORTED_CONTENT_FORMAT = (4 << 5) | 15
    UNPROCESSABLE_ENTITY = (4 << 5) | 22
    TOO_MANY_REQUESTS = (4 << 5) | 29

    # 5.xx Server Error
    INTERNAL_SERVER_ERROR = (5 << 5) | 0
    NOT_IMPLEMENTED = (5 << 5) | 1
    BAD_GATEWAY = (5 << 5) | 2
    SERVICE_UNAVAILABLE = (5 << 5) | 3
    GATEWAY_TIMEOUT = (5 << 5) | 4
    PROXYING_NOT_SUPPORTED = (5 << 5) | 5
    HOP_LIMIT_REACHED = (5 << 5) | 8

    # 7.xx Signaling (RFC 8323 §11.1)
    CSM = (7 << 5) | 1
    PING = (7 << 5) | 2
    PONG = (7 << 5) | 3
    RELEASE = (7 << 5) | 4
    ABORT = (7 << 5) | 5

    @classmethod
    def _missing_(cls, value: object) -> Code | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
            return pseudo_member(cls, value, f"UNKNOWN_{value >> 5}_{value & 31:02d}")
        return None

    @classmethod
    def from_dotted(cls, text: str) -> Code:
        """Parse ``"2.05"`` (or a member name such as ``"CONTENT"``) into a Code."""
        if "." in text:
            class_, _, detail = text.partition(".")
            c, d = int(class_), int(detail)
            if not (0 <= c <= 7 and 0 <= d <= 31):
                raise ValueError(f"code {text!r} out of range")
            return cls((c << 5) | d)
        return cls[text.upper() if text != "iPATCH" else text]

    @property
    def class_(self) -> int:
        """The code class (0 request, 2 success, 4 client error, 5 server error, 7 signaling)."""
        return int(self) >> 5

    @property
    def detail(self) -> int:
        """The code detail, 0..31."""
        return int(self) & 31

    @property
    def dotted(self) -> str:
        """The ``c.dd`` form, e.g. ``"2.05"``."""
        return f"{int(self) >> 5}.{int(self) & 31:02d}"

    def is_known(self) -> bool:
        """True for a registered code, False for one created on demand."""
        return not self._name_.startswith("UNKNOWN_")

    @property
    def name_printable(self) -> str:
        """A human name: ``"Not Found"``, ``"iPATCH"``, ``"Unknown"``."""
        if not self.is_known():
            return "Unknown"
        spelled = _REGISTERED_SPELLINGS.get(int(self))
        if spelled is not None:
            return spelled
        if self.class_ == 0:
            return self._name_
        return " ".join(word.capitalize() for word in self._name_.split("_"))

    def is_empty(self) -> bool:
        """0.00, the code of an Empty message (§4.1)."""
        return self == 0

    def is_request(self) -> bool:
        """0.01..0.31: a method."""
        return 1 <= self <= 31

    def is_response(self) -> bool:
        """2.00..5.31: a response code."""
        return 64 <= self < 192

    def is_successful(self) -> bool:
        """2.xx."""
        return 64 <= self < 96

    def is_error(self) -> bool:
        """4.xx or 5.xx."""
        return 128 <= self < 192

    def is_signaling(self) -> bool:
        """7.xx (RFC 8323 §5)."""
        return self >= 224

    def __str__(self) -> str:
        return f"{self.dotted} {self.name_printable}"

    def __repr__(self) -> str:
        return f"<Code {self.dotted} {self.name_printable}>"


#: Registered names that the member name cannot spell (RFC 7252 §12.1.2, RFC 8323 §11.1).
_REGISTERED_SPELLINGS: dict[int, str] = {
    Code.UNSUPPORTED_CONTENT_FORMAT: "Unsupported Content-Format",
    Code.CSM: "CSM",
}

#: Every possible code by value, so that decoding is one tuple index.
CODE_TABLE: tuple[Code, ...] = tuple(Code(value) for value in range(256))
