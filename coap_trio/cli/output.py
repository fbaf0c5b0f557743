"""How ``coap-trio`` shows payloads and progress: one rendering per content format.

Owns the choice of rendering for a response payload (:func:`render_payload`):
JSON pretty-printed, CBOR as diagnostic notation (RFC 8949 §8, through the
optional ``cbor2``; hex with a note without it), link-format one link per
line, text as is, and other bytes as a hex dump on a terminal or unchanged
when piped. Also the block-wise progress bar (:class:`ProgressBar`) and the
one-line description of a response (:func:`describe_response`). Pure
functions of their inputs, except :class:`ProgressBar`, which writes to the
stream it is given.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from typing import Any, TextIO

import attrs

from .. import linkformat
from ..message import Message
from ..numbers.contentformat import ContentFormat

__all__ = [
    "ProgressBar",
    "Rendered",
    "cbor_diagnostic",
    "describe_response",
    "format_links",
    "hexdump",
    "payload_kind",
    "render_payload",
]


@attrs.frozen
class Rendered:
    """A payload ready for output: the bytes to write and an optional note for stderr."""

    #: What goes to standard output.
    data: bytes
    #: A remark for standard error (e.g. that cbor2 is missing), or None.
    note: str | None = None


def hexdump(data: bytes, width: int = 16) -> str:
    """``data`` as lines of offset, hex bytes and printable ASCII (like ``xxd``)."""
    lines = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk)
        text = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hex_part:<{width * 3 - 1}}  |{text}|")
    return "\n".join(lines) + ("\n" if lines else "")


def format_links(text: str) -> str:
    """RFC 6690 link-format text as one link per line: the target, then its attributes.

    Raises :class:`~coap_trio.linkformat.LinkFormatError` when ``text`` is not
    link-format.
    """
    lines = []
    for link in linkformat.parse(text):
        parts = [f"<{link.target}>"]
        for name, value in link.attributes:
            parts.append(name if value is None else f"{name}={json.dumps(value)}")
        lines.append(" ".join(parts))
    return "\n".join(lines) + ("\n" if lines else "")


def _diag_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text if any(c in text for c in ".en") else text + ".0"


def _diag(value: Any) -> str:
    import cbor2

    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is cbor2.undefined:
        return "undefined"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _diag_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes | bytearray):
        return f"h'{bytes(value).hex()}'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_diag(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_diag(k)}: {_diag(v)}" for k, v in value.items()) + "}"
    if isinstance(value, cbor2.CBORTag):
        return f"{value.tag}({_diag(value.value)})"
    if isinstance(value, cbor2.CBORSimpleValue):
        return f"simple({value.value})"
    return json.dumps(str(value))  # decoded semantic types (datetime, Decimal...)


def cbor_diagnostic(data: bytes) -> str | None:
    """CBOR ``data`` in diagnostic notation (RFC 8949 §8), or None without ``cbor2``.

    Unknown tags are shown as tags (``1234(h'00')``); values cbor2 decodes
    into Python types of their own (dates, decimals...) as quoted text.
    Raises ValueError when ``data`` is not one well-formed CBOR item.
    """
    try:
        import cbor2
    except ImportError:
        return None
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError) as error:
        raise ValueError(f"not CBOR: {error}") from None
    if stream.tell() != len(data):
        raise ValueError(f"not one CBOR item: {len(data) - stream.tell()} bytes follow it")
    return _diag(value)


def payload_kind(content_format: int | None) -> str:
    """How a payload of ``content_format`` is shown: ``json``, ``cbor``, ``links``,
    ``text``, ``binary``, or ``unknown`` (no Content-Format: decided by looking)."""
    if content_format is None:
        return "unknown"
    known = ContentFormat(content_format)
    media = (known.media_type or "").split(";")[0].strip().lower()
    if known.encoding != "identity":
        return "binary"
    if media == "application/link-format":
        return "links"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media == "application/cbor" or media.endswith("+cbor"):
        return "cbor"
    if media.startswith("text/") or media in ("application/xml", "application/javascript"):
        return "text"
    if media.endswith("+xml"):
        return "text"
    return "binary"


def _looks_like_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _text(text: str) -> bytes:
    return text.encode("utf-8")


def render_payload(
    payload: bytes, content_format: int | None, *, terminal: bool, raw: bool = False
) -> Rendered:
    """What to write for a response ``payload`` of ``content_format``.

    ``terminal`` says whether standard output is a terminal (binary data is
    then shown as a hex dump, else written unchanged); ``raw`` writes the
    bytes unchanged whatever they are. A payload that does not parse as its
    content format says so in the note and is shown as text or bytes.
    """
    if raw or not payload:
        return Rendered(payload)
    kind = payload_kind(content_format)
    if kind == "unknown":
        kind = "text" if _looks_like_text(payload) else "binary"
    note: str | None = None
    if kind == "json":
        try:
            value = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            note = "the payload is not valid JSON; shown as it is"
            kind = "text" if _looks_like_text(payload) else "binary"
        else:
            return Rendered(_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n"))
    elif kind == "cbor":
        try:
            diagnostic = cbor_diagnostic(payload)
        except ValueError:
            note = "the payload is not valid CBOR; shown as bytes"
            kind = "binary"
        else:
            if diagnostic is not None:
                return Rendered(_text(diagnostic + "\n"))
            note = (
                "CBOR shown as hex: install cbor2 (pip install 'coap-trio[cbor]') for diagnostics"
            )
            return Rendered(_text(hexdump(payload)), note)
    elif kind == "links":
        try:
            return Rendered(_text(format_links(payload.decode("utf-8"))))
        except (UnicodeDecodeError, linkformat.LinkFormatError):
            note = "the payload is not valid link-format; shown as it is"
            kind = "text" if _looks_like_text(payload) else "binary"
    if kind == "text":
        return Rendered(payload, note)
    if terminal:
        return Rendered(_text(hexdump(payload)), note)
    return Rendered(payload, note)


def describe_response(response: Message) -> str:
    """One line about a response: code, name, content format, size, Location."""
    code = response.code
    parts = [f"{code.dotted} {code.name_printable}"]
    opt = response.opt
    if opt.content_format is not None:
        parts.append(f"ct={ContentFormat(int(opt.content_format))}")
    location = opt.location_path
    if location:
        query = opt.location_query
        parts.append("location=/" + "/".join(location) + ("?" + "&".join(query) if query else ""))
    if response.payload:
        parts.append(f"{len(response.payload)} bytes")
    return " ".join(parts)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024 or unit == "MiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover - the loop returns first


class ProgressBar:
    """A one-line progress bar for block-wise transfers, redrawn in place.

    Call it as ``progress(done_bytes, total_or_None)`` (the signature
    ``Context.request(..., progress=)`` uses); :meth:`close` ends the line
    once the transfer is done, :meth:`clear` erases it when it is not (an
    error, standard output closed), so no half-drawn bar is left behind.
    Draws at most every ``interval`` seconds, plus the final state.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        width: int = 30,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._width = width
        self._interval = interval
        self._clock = clock
        self._last_draw = -math.inf
        self._drawn = False
        self._state: tuple[int, int | None] = (0, None)

    def __call__(self, done: int, total: int | None) -> None:
        self._state = (done, total)
        now = self._clock()
        if now - self._last_draw >= self._interval or (total is not None and done >= total):
            self._last_draw = now
            self._draw()

    def line(self) -> str:
        """The bar as it would be drawn now."""
        done, total = self._state
        if total:
            fraction = min(done / total, 1.0)
            filled = round(fraction * self._width)
            bar = "#" * filled + "-" * (self._width - filled)
            return f"[{bar}] {fraction * 100:5.1f}% {_size(done)} / {_size(total)}"
        return f"[{'?' * 3}] {_size(done)}"

    def _draw(self) -> None:
        self._stream.write("\r" + self.line() + "\x1b[K")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state and end the line (nothing when nothing was drawn)."""
        if self._drawn:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def clear(self) -> None:
        """Erase the bar's line, if one is drawn and not ended; later calls draw anew."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False
