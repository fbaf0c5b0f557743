"""CBOR extended diagnostic notation (EDN, RFC 8949 §8, RFC 8610 Appendix G), read.

Owns :func:`loads`, which reads the EDN text of one data item into Python
values: integers (decimal, ``0x``, ``0o``, ``0b``; negative too), floats,
text strings (``"..."`` with JSON's escapes), byte strings (``h'...'``,
``b64'...'`` with either base64 alphabet, and ``'...'`` for UTF-8 text),
``true``, ``false``, ``null``, arrays and maps (keys of any of these
kinds but arrays and maps), with ``/ comments /`` and ``# line comments``
anywhere whitespace may be. Tags, indefinite lengths, ``undefined`` and
simple values are refused: credentials files (aiocoap's ``.diag`` files,
which this reads for :mod:`coap_trio.oscore_credentials`) do not use them.

Errors are :class:`~coap_trio.errors.EdnError` with the line and column.
Must not know about messages, files or credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from .errors import EdnError

__all__ = ["EdnError", "loads"]

#: How deep arrays and maps may nest (a guard against runaway input).
MAX_DEPTH = 64

_SPACE = re.compile(r"(?:\s+|/[^/]*/|#[^\n]*)*")
_NUMBER = re.compile(
    r"-?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+"
    r"|(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TEXT = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"', re.DOTALL)
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'", re.DOTALL)


def loads(text: str) -> object:
    """The data item that the diagnostic notation ``text`` spells (see the module).

    Raises :class:`EdnError`.
    """
    reader = _Reader(text)
    reader.space()
    value = reader.item(0)
    reader.space()
    if reader.position != len(text):
        reader.fail("more than one data item")
    return value


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, what: str) -> None:
        line = self.text.count("\n", 0, self.position) + 1
        column = self.position - (self.text.rfind("\n", 0, self.position) + 1) + 1
        raise EdnError(f"line {line}, column {column}: {what}")

    def space(self) -> None:
        match = _SPACE.match(self.text, self.position)
        assert match is not None  # the pattern matches the empty string
        self.position = match.end()
        if self.text.startswith("/", self.position):
            self.fail("a comment that is not closed")

    def expect(self, character: str) -> None:
        self.space()
        if not self.text.startswith(character, self.position):
            self.fail(f"expected {character!r}")
        self.position += 1

    def item(self, depth: int) -> object:
        if depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} deep")
        text, start = self.text, self.position
        if start >= len(text):
            self.fail("a data item is missing")
        first = text[start]
        if first == "{":
            return self.mapping(depth)
        if first == "[":
            return self.array(depth)
        if first == '"':
            match = _TEXT.match(text, start)
            if match is None:
                self.fail("a text string that is not closed")
                raise AssertionError  # (fail raises)
            self.position = match.end()
            try:
                value: str = json.loads(match.group())
            except ValueError:
                self.fail("a text string with a bad escape")
                raise AssertionError from None
            return value
        if first == "'":
            return self.quoted(start, "").encode("utf-8")
        if first == "-" or first.isdigit():
            number = self.number()
            if self.text.startswith("(", self.position):
                self.position = start
                self.fail("tags are not supported")
            return number
        word = _WORD.match(text, start)
        if word is None:
            self.fail(f"unexpected {first!r}")
            raise AssertionError
        name = word.group()
        if text.startswith("'", word.end()):
            return self.prefixed(name, word.end())
        self.position = word.end()
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "null":
            return None
        if name in ("Infinity", "NaN"):
            return float("inf") if name == "Infinity" else float("nan")
        self.position = start
        self.fail(f"{name!r} is not supported here")
        raise AssertionError

    def quoted(self, start: int, prefix: str) -> str:
        match = _QUOTED.match(self.text, start)
        if match is None:
            self.fail(f"a {prefix}'' string that is not closed")
            raise AssertionError
        self.position = match.end()
        return re.sub(r"\\(.)", r"\1", match.group(1), flags=re.DOTALL)

    def prefixed(self, prefix: str, start: int) -> bytes:
        body = self.quoted(start, prefix)
        if prefix == "h":
            cleaned = re.sub(r"(?:\s+|/[^/]*/|#[^\n]*)", "", body)
            try:
                return bytes.fromhex(cleaned)
            except ValueError:
                self.position = start
                self.fail("h'' holds something that is not hexadecimal")
        elif prefix == "b64":
            cleaned = re.sub(r"\s+", "", body).replace("-", "+").replace("_", "/")
            try:
                return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
            except (binascii.Error, ValueError):
                self.position = start
                self.fail("b64'' holds something that is not base64")
        else:
            self.position = start
            self.fail(f"the string prefix {prefix!r} is not supported")
        raise AssertionError

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.position)
        if match is None:
            self.fail("a number that is not one")
            raise AssertionError
        self.position = match.end()
        spelled = match.group()
        negative = spelled.startswith("-")
        digits = spelled[1:] if negative else spelled
        if digits[:2].lower() in ("0x", "0o", "0b"):
            value = int(digits, 0)
            return -value if negative else value
        if any(c in digits for c in ".eE"):
            return float(spelled)
        return int(spelled)

    def array(self, depth: int) -> list[object]:
        self.position += 1
        values: list[object] = []
        self.space()
        if self.text.startswith("_", self.position):
            self.fail("indefinite lengths are not supported")
        while not self.text.startswith("]", self.position):
            if values:
                self.expect(",")
                self.space()
            values.append(self.item(depth + 1))
            self.space()
        self.position += 1
        return values

    def mapping(self, depth: int) -> dict[object, object]:
        self.position += 1
        values: dict[object, object] = {}
        self.space()
        if self.text.startswith("_", self.position):
            self.fail("indefinite lengths are not supported")
        while not self.text.startswith("}", self.position):
            if values:
                self.expect(",")
                self.space()
            where = self.position
            key = self.item(depth + 1)
            if isinstance(key, list | dict):
                self.position = where
                self.fail("a map key that is an array or a map is not supported")
            self.expect(":")
            self.space()
            value = self.item(depth + 1)
            if key in values:
                self.position = where
                self.fail(f"the map key {key!r} is given twice")
            values[key] = value
            self.space()
        self.position += 1
        return values
