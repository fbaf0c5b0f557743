"""CoRE Link Format (RFC 6690): parsing, serialisation and query filtering.

This module owns the ``application/link-format`` payload: turning its text
into :class:`Link` values (:func:`parse`), turning links back into text
(:func:`serialize`) and the RFC 6690 §4.1 query filter that a
``/.well-known/core`` resource applies to its links (:func:`matches`,
:func:`filter_links`).

It is pure and sans-I/O: it knows nothing about CoAP messages, options,
transports or resources.  Callers hand it strings (payload text, already
percent-decoded Uri-Query values) and get strings or :class:`Link` values
back.  Encoding the payload to bytes (UTF-8) is the caller's business.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

import attrs

from .errors import LinkFormatError

__all__ = ["Link", "LinkFormatError", "filter_links", "matches", "parse", "serialize"]

# RFC 6690 §2: ptokenchar.  Note that "<", "=", ">" and "*" are allowed.
_PTOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'()*+-./:<=>?@[]^_`{|}~")
# RFC 5987 §3.2.1: attr-char, the characters of a parmname.
_ATTR_CHARS = frozenset(string.ascii_letters + string.digits + "!#$&+-.^_`|~")
# Optional whitespace tolerated around "," ";" and "=" (and at both ends).
_OWS = frozenset(" \t\r\n")
# Values written quoted even when they would be a valid ptoken (customary).
_ALWAYS_QUOTED = frozenset({"rt", "if", "title", "anchor", "rel", "rev"})
# Attributes holding a space-separated list of values (filter: any may match).
_MULTI_VALUED = frozenset({"rt", "if", "rel", "rev", "ct"})

_Attribute = tuple[str, str | None]


def _is_target_char(char: str) -> bool:
    # Lenient URI-Reference: anything printable except the delimiters, so
    # IRIs pass; whitespace and control characters are rejected.
    return char not in "<>" and char > " " and char != "\x7f"


def _is_param_name(name: str) -> bool:
    # parmname, optionally followed by "*" (RFC 5987 ext-name-star, e.g. title*).
    base = name.removesuffix("*")
    return bool(base) and all(c in _ATTR_CHARS for c in base)


def _is_ptoken(value: str) -> bool:
    return bool(value) and all(c in _PTOKEN_CHARS for c in value)


def _normalize_attributes(attributes: Iterable[_Attribute]) -> tuple[_Attribute, ...]:
    return tuple((name.lower(), value) for name, value in attributes)


def _split_values(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(part for value in values if value is not None for part in value.split())


def _as_cardinal(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() else None


def _words(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else " ".join(value)


def _check_target(_link: object, _field: object, target: str) -> None:
    if not all(_is_target_char(c) for c in target):
        raise LinkFormatError(f"invalid character in link target {target!r}")


def _check_names(_link: object, _field: object, attributes: tuple[_Attribute, ...]) -> None:
    for name, _value in attributes:
        if not _is_param_name(name):
            raise LinkFormatError(f"invalid link-param name {name!r}")


@attrs.frozen
class Link:
    """One link-value: a target URI-reference plus its link-params, in order.

    ``target`` is stored exactly as written between ``<`` and ``>`` (not
    resolved).  ``attributes`` holds ``(name, value)`` pairs; names are
    lowercased on construction and a value of ``None`` means the parameter
    was given bare (``;obs``).  Construction rejects a target or a name that
    could not be serialised.
    """

    target: str = attrs.field(validator=_check_target)
    attributes: tuple[_Attribute, ...] = attrs.field(
        default=(),
        converter=_normalize_attributes,
        validator=_check_names,
    )

    @classmethod
    def build(
        cls,
        target: str,
        *,
        rt: str | Sequence[str] = (),
        if_: str | Sequence[str] = (),
        ct: int | Sequence[int] = (),
        sz: int | None = None,
        obs: bool = False,
        title: str | None = None,
        anchor: str | None = None,
        rel: str | Sequence[str] = (),
        extra: Sequence[_Attribute] = (),
    ) -> Link:
        """Build a link from common attributes.

        Order: anchor, rel, rt, if, title, ct, sz, obs, then ``extra`` as
        given.  Sequences become one space-separated value; empty ones and
        ``None`` are omitted.
        """
        formats = (ct,) if isinstance(ct, int) else tuple(ct)
        if any(not 0 <= number <= 0xFFFF for number in formats):
            raise ValueError(f"ct values must be in 0..65535, got {formats!r}")
        if sz is not None and sz < 0:
            raise ValueError(f"sz must not be negative, got {sz}")
        candidates: list[_Attribute | None] = [
            ("anchor", anchor) if anchor is not None else None,
            ("rel", _words(rel)) if rel else None,
            ("rt", _words(rt)) if rt else None,
            ("if", _words(if_)) if if_ else None,
            ("title", title) if title is not None else None,
            ("ct", " ".join(map(str, formats))) if formats else None,
            ("sz", str(sz)) if sz is not None else None,
            ("obs", None) if obs else None,
        ]
        attributes = [item for item in candidates if item is not None]
        return cls(target, (*attributes, *extra))

    def get(self, name: str) -> str | None:
        """Value of the first parameter called ``name`` (None if absent or bare)."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> tuple[str | None, ...]:
        """Values of every parameter called ``name``, in order."""
        name = name.lower()
        return tuple(value for key, value in self.attributes if key == name)

    @property
    def rt(self) -> tuple[str, ...]:
        """Resource types: the space-separated words of all ``rt`` params."""
        return _split_values(self.get_all("rt"))

    @property
    def if_(self) -> tuple[str, ...]:
        """Interface descriptions: the space-separated words of all ``if`` params."""
        return _split_values(self.get_all("if"))

    @property
    def rel(self) -> tuple[str, ...]:
        """Relation types: the space-separated words of all ``rel`` params."""
        return _split_values(self.get_all("rel"))

    @property
    def ct(self) -> tuple[int, ...]:
        """Content-Format numbers (RFC 7252 §7.2.1); non-numeric words are ignored."""
        numbers = (_as_cardinal(word) for word in _split_values(self.get_all("ct")))
        return tuple(number for number in numbers if number is not None)

    @property
    def sz(self) -> int | None:
        """Maximum size estimate (``sz``), or None if absent or not a number."""
        value = self.get("sz")
        return None if value is None else _as_cardinal(value.strip())

    @property
    def obs(self) -> bool:
        """Whether the resource is marked observable (``obs``, RFC 7641)."""
        return bool(self.get_all("obs"))

    @property
    def title(self) -> str | None:
        """The human-readable ``title``, if any."""
        return self.get("title")

    @property
    def anchor(self) -> str | None:
        """The ``anchor`` (context URI-reference), if any."""
        return self.get("anchor")


class _Parser:
    """Recursive-descent parser over one link-format string."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def _error(self, message: str, pos: int | None = None) -> LinkFormatError:
        return LinkFormatError(f"{message} at offset {self._pos if pos is None else pos}")

    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _describe(self) -> str:
        char = self._peek()
        return repr(char) if char else "end of input"

    def _skip_ows(self) -> None:
        while self._pos < len(self._text) and self._text[self._pos] in _OWS:
            self._pos += 1

    def parse(self) -> list[Link]:
        """Parse the whole text (link-value-list)."""
        self._skip_ows()
        if not self._peek():
            return []
        links = [self._link()]
        while True:
            self._skip_ows()
            char = self._peek()
            if not char:
                return links
            if char != ",":
                raise self._error(f"expected ',' or ';' but found {char!r}")
            comma = self._pos
            self._pos += 1
            self._skip_ows()
            if not self._peek():
                raise self._error("trailing ',' with no link after it", comma)
            links.append(self._link())

    def _link(self) -> Link:
        if self._peek() != "<":
            raise self._error(f"expected '<' to start a link but found {self._describe()}")
        opening = self._pos
        self._pos += 1
        start = self._pos
        while (char := self._peek()) != ">":
            if not char:
                raise self._error("unterminated '<' (no matching '>')", opening)
            if not _is_target_char(char):
                raise self._error(f"invalid character {char!r} in link target")
            self._pos += 1
        target = self._text[start : self._pos]
        self._pos += 1
        attributes: list[_Attribute] = []
        while True:
            self._skip_ows()
            if self._peek() != ";":
                return Link(target, attributes)
            self._pos += 1
            self._skip_ows()
            attributes.append(self._param())

    def _param(self) -> _Attribute:
        start = self._pos
        while self._peek() in _ATTR_CHARS:
            self._pos += 1
        if self._pos == start:
            raise self._error(f"empty link-param name (found {self._describe()})")
        if self._peek() == "*":
            self._pos += 1
        name = self._text[start : self._pos].lower()
        before_ows = self._pos
        self._skip_ows()
        if self._peek() != "=":
            self._pos = before_ows
            return name, None
        self._pos += 1
        self._skip_ows()
        return name, self._value(name)

    def _value(self, name: str) -> str:
        char = self._peek()
        if char == '"':
            return self._quoted_string()
        start = self._pos
        while (char := self._peek()) and char in _PTOKEN_CHARS:
            self._pos += 1
        if self._pos == start:
            raise self._error(f"missing value for link-param {name!r} (found {self._describe()})")
        return self._text[start : self._pos]

    def _quoted_string(self) -> str:
        opening = self._pos
        self._pos += 1
        chunks: list[str] = []
        while True:
            char = self._peek()
            if not char:
                raise self._error("unterminated quoted-string", opening)
            if char == '"':
                self._pos += 1
                return "".join(chunks)
            if char == "\\":
                self._pos += 1
                char = self._peek()
                if not char:
                    raise self._error("unterminated quoted-string", opening)
            chunks.append(char)
            self._pos += 1


def parse(text: str) -> list[Link]:
    """Parse link-format text into links, in document order.

    Empty (or whitespace-only) text gives ``[]``.  Optional whitespace is
    tolerated around ``,``, ``;`` and ``=``.  Any other deviation from the
    RFC 6690 §2 grammar raises :class:`LinkFormatError` (and nothing else).
    """
    return _Parser(text).parse()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_link(link: Link) -> str:
    parts = [f"<{link.target}>"]
    for name, value in link.attributes:
        if value is None:
            parts.append(name)
        elif name in _ALWAYS_QUOTED or not _is_ptoken(value):
            parts.append(f"{name}={_quote(value)}")
        else:
            parts.append(f"{name}={value}")
    return ";".join(parts)


def serialize(links: Iterable[Link]) -> str:
    """Write links as compact link-format text (``parse`` inverts it exactly).

    Values are quoted when they are not a valid ptoken, and always for
    rt, if, title, anchor, rel and rev; bare parameters are written as ``;name``.
    """
    return ",".join(_serialize_link(link) for link in links)


def _value_matches(value: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def matches(link: Link, query: str) -> bool:
    """Whether ``link`` passes one RFC 6690 §4.1 query item (``name=value``).

    ``href`` matches the target; other names match the link-param of that
    name (case-insensitively).  A trailing ``*`` makes a prefix match; for
    rt, if, rel, rev and ct any one space-separated word may match.  An item
    without ``=`` matches links having that parameter at all; bare
    parameters (``;obs``) never match an item with ``=``.  An empty item
    matches every link.
    """
    name, has_value, pattern = query.partition("=")
    name = name.lower()
    if not has_value:
        return not name or name == "href" or any(key == name for key, _ in link.attributes)
    if name == "href":
        candidates: Iterable[str] = (link.target,)
    else:
        values = [value for value in link.get_all(name) if value is not None]
        candidates = _split_values(values) if name in _MULTI_VALUED else values
    return any(_value_matches(candidate, pattern) for candidate in candidates)


def filter_links(links: Iterable[Link], queries: Sequence[str]) -> list[Link]:
    """Keep the links matching every query item (AND); no items keeps all."""
    if isinstance(queries, str):
        raise TypeError("queries must be a sequence of query items, not a single str")
    return [link for link in links if all(matches(link, query) for query in queries)]
