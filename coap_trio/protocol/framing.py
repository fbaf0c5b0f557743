"""Sans-I/O framing of CoAP over reliable transports (RFC 8323 §3.2, §4.4).

Owns ``bytes <-> Message`` for TCP/TLS streams and WebSocket frames: the
Len/TKL byte, the 0-4 byte extended length, Code, Token, then the options
and payload exactly as in RFC 7252 (shared with :mod:`coap_trio.codec`:
:func:`~coap_trio.codec.decode_options`, :func:`~coap_trio.codec.encode_options`).
There is no version, type or message ID: decoded messages have ``mtype``
and ``mid`` None, and those fields are ignored when encoding.

:class:`StreamDecoder` cuts a byte stream into frames and refuses, from the
header alone, a frame larger than the maximum message size, so a peer can
never make it buffer more than one allowed frame.

Decoding is as strict as :func:`coap_trio.codec.decode`: a malformed frame
raises :class:`~coap_trio.errors.MessageFormatError` (``kind`` a
:class:`~coap_trio.errors.FormatErrorKind` or, for what only frames can get
wrong, a :class:`~coap_trio.errors.FrameErrorKind`), nothing else.

Must not know about sockets, time, exchanges or signaling semantics.
"""

from __future__ import annotations

from ..codec import decode_options, encode_options
from ..errors import (
    FormatErrorKind,
    FrameErrorKind,
    FrameTooLarge,
    MessageEncodeError,
    MessageFormatError,
)
from ..message import Message
from ..numbers.codes import CODE_TABLE, Code
from ..options import Options

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FrameTooLarge",
    "StreamDecoder",
    "decode_frame",
    "decode_websocket",
    "encode_stream",
    "encode_stream_parts",
    "encode_websocket",
    "frame_size",
]

#: The Max-Message-Size a peer is assumed to accept until its CSM says (RFC 8323 §5.3.1).
DEFAULT_MAX_MESSAGE_SIZE = 1152

#: Len nibble -> (bytes of extended length, value added to it).
_EXTENDED = {13: (1, 13), 14: (2, 269), 15: (4, 65805)}
#: The largest options+payload length the 32-bit extended form can carry.
_MAX_LENGTH = 65805 + 0xFFFFFFFF
_EMPTY = Code.EMPTY


def _length_field(length: int) -> tuple[int, bytes]:
    """The Len nibble and extended-length bytes for ``length`` bytes of options+payload."""
    if length < 13:
        return length, b""
    if length < 269:
        return 13, bytes((length - 13,))
    if length < 65805:
        return 14, (length - 269).to_bytes(2, "big")
    if length <= _MAX_LENGTH:
        return 15, (length - 65805).to_bytes(4, "big")
    raise MessageEncodeError(f"{length} bytes of options and payload cannot be framed")


def _body(message: Message) -> tuple[bytes, int]:
    token = message.token
    tkl = len(token)
    if tkl > 8:
        raise MessageEncodeError(f"token of {tkl} bytes is longer than 8")
    body = encode_options(message.opt.raw_items, message.payload)
    if message.code == 0 and (tkl or body):
        raise MessageEncodeError("an Empty message (0.00) carries no token, options or payload")
    return body, tkl


def encode_stream_parts(
    code: int, token: bytes, items: list[tuple[int, bytes]], payload: bytes
) -> bytes:
    """:func:`encode_stream` of a message given by its parts (no Message built:
    the request path's shortcut)."""
    tkl = len(token)
    if tkl > 8:
        raise MessageEncodeError(f"token of {tkl} bytes is longer than 8")
    body = encode_options(items, payload)
    length = len(body)
    if code == 0 and (tkl or body):
        raise MessageEncodeError("an Empty message (0.00) carries no token, options or payload")
    if length < 13:
        return bytes(((length << 4) | tkl, code)) + token + body
    nibble, extended = _length_field(length)
    return b"".join((bytes(((nibble << 4) | tkl,)), extended, bytes((code,)), token, body))


def encode_stream(message: Message) -> bytes:
    """The TCP/TLS frame for ``message`` (RFC 8323 §3.2); ``mtype`` and ``mid`` are ignored.

    Raises :class:`~coap_trio.errors.MessageEncodeError` for what cannot be
    framed (a token over 8 bytes, an option value over 65804 bytes, an Empty
    message with content).
    """
    return encode_stream_parts(message.code, message.token, message.opt.raw_items, message.payload)


def encode_websocket(message: Message) -> bytes:
    """The WebSocket binary frame payload for ``message`` (RFC 8323 §4.4): Len is 0,
    no extended length (the WebSocket frame carries the length)."""
    body, tkl = _body(message)
    return b"".join((bytes((tkl,)), bytes((message.code,)), message.token, body))


def frame_size(header: bytes) -> int | None:
    """The total size of the stream frame starting ``header`` (None: header still incomplete).

    Needs the first byte and the extended length (up to 5 bytes in all).
    """
    if not header:
        return None
    first = header[0]
    nibble = first >> 4
    tkl = first & 0x0F
    if nibble < 13:
        return 2 + tkl + nibble
    width, offset = _EXTENDED[nibble]
    if len(header) < 1 + width:
        return None
    return 2 + width + tkl + int.from_bytes(header[1 : 1 + width], "big") + offset


def _decode_after_length(frame: bytes, position: int, tkl: int, end: int) -> Message:
    """Code, token, options, payload of a frame whose length field ends at ``position``."""
    if tkl > 8:
        raise MessageFormatError(FormatErrorKind.BAD_TOKEN_LENGTH, offset=0)
    if position >= end:
        raise MessageFormatError(FormatErrorKind.TOO_SHORT, offset=end)
    code = CODE_TABLE[frame[position]]
    position += 1
    token_end = position + tkl
    if token_end > end:
        raise MessageFormatError(FormatErrorKind.TRUNCATED, offset=end)
    token = frame[position:token_end]
    if code is _EMPTY and (tkl or token_end != end):
        raise MessageFormatError(FormatErrorKind.NONEMPTY_EMPTY_MESSAGE, offset=position)
    items, payload = decode_options(frame, token_end, end)
    return Message.from_fields(code, None, None, token, Options.from_wire(items), payload, None)


def decode_frame(frame: bytes) -> Message:
    """Parse exactly one complete TCP/TLS frame (RFC 8323 §3.2) into a :class:`Message`.

    ``mtype`` and ``mid`` are None. Raises
    :class:`~coap_trio.errors.MessageFormatError`, and nothing else, when
    ``frame`` is malformed, shorter than its length field says
    (``TRUNCATED`` / ``TOO_SHORT``) or longer (``FrameErrorKind.TRAILING_DATA``).
    """
    if type(frame) is not bytes:
        frame = bytes(frame)
    size = len(frame)
    if not size:
        raise MessageFormatError(FormatErrorKind.TOO_SHORT, offset=0)
    first = frame[0]
    nibble = first >> 4
    tkl = first & 0x0F
    if nibble < 13:
        length, position = nibble, 1
    elif nibble == 13 and size > 1:
        length, position = frame[1] + 13, 2
    else:
        width, offset = _EXTENDED[nibble]
        if size < 1 + width:
            raise MessageFormatError(FormatErrorKind.TRUNCATED, offset=size)
        length = int.from_bytes(frame[1 : 1 + width], "big") + offset
        position = 1 + width
    if tkl > 8:
        raise MessageFormatError(FormatErrorKind.BAD_TOKEN_LENGTH, offset=0)
    total = position + 1 + tkl + length
    if size < total:
        kind = FormatErrorKind.TOO_SHORT if size <= position else FormatErrorKind.TRUNCATED
        raise MessageFormatError(kind, offset=size)
    if size > total:
        raise MessageFormatError(FrameErrorKind.TRAILING_DATA, offset=total)
    return _decode_after_length(frame, position, tkl, size)


def decode_websocket(frame: bytes) -> Message:
    """Parse one WebSocket binary message (RFC 8323 §4.4) into a :class:`Message`.

    The Len nibble must be 0 (``FrameErrorKind.LENGTH_NOT_ZERO`` otherwise);
    the frame's own length delimits the message.
    """
    if type(frame) is not bytes:
        frame = bytes(frame)
    size = len(frame)
    if not size:
        raise MessageFormatError(FormatErrorKind.TOO_SHORT, offset=0)
    first = frame[0]
    if first >> 4:
        raise MessageFormatError(FrameErrorKind.LENGTH_NOT_ZERO, offset=0)
    return _decode_after_length(frame, 1, first & 0x0F, size)


class StreamDecoder:
    """Cuts a TCP/TLS byte stream into complete frames (RFC 8323 §3.2).

    :meth:`feed` returns every complete frame found so far and keeps the
    partial rest. A frame whose header announces more than
    ``max_message_size`` bytes (the whole frame: header, token, options and
    payload) raises :class:`~coap_trio.errors.FrameTooLarge` (a
    :class:`~coap_trio.errors.MessageFormatError`) as soon as that header is
    read, so what stays buffered is never more than one allowed frame. After
    it the stream cannot be resynchronized: abort the connection; the
    decoder raises the same error again if fed further.
    """

    __slots__ = ("_buffer", "_error", "_max")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._check(max_message_size)
        self._max = max_message_size
        self._buffer = bytearray()
        self._error: FrameTooLarge | None = None

    @staticmethod
    def _check(size: int) -> None:
        if size < 2:
            raise ValueError(f"maximum message size {size} is below the 2-byte minimum frame")

    @property
    def max_message_size(self) -> int:
        """The largest frame accepted, in bytes."""
        return self._max

    def set_max_message_size(self, size: int) -> None:
        """Change the largest frame accepted (e.g. after announcing it in our CSM).

        A frame whose header was already read is checked against the new limit
        at the next :meth:`feed`.
        """
        self._check(size)
        self._max = size

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held until more data arrives."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames now available, in order.

        Raises :class:`~coap_trio.errors.FrameTooLarge` when a frame header
        announces more than the maximum message size.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        frames: list[bytes] = []
        limit = self._max
        start = 0
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data
        size = len(view)
        copy = view is not data or type(data) is not bytes  # (slices of bytes are bytes)
        while start < size:
            first = view[start]
            nibble = first >> 4
            if nibble < 13:
                total = 2 + (first & 0x0F) + nibble
            elif nibble == 13 and size - start > 1:  # 13..268 bytes: the usual extended case
                total = 16 + (first & 0x0F) + view[start + 1]
            else:
                width, offset = _EXTENDED[nibble]
                if size - start < 1 + width:
                    break
                length = int.from_bytes(view[start + 1 : start + 1 + width], "big") + offset
                total = 2 + width + (first & 0x0F) + length
            if total > limit:
                self._buffer = bytearray()
                self._error = FrameTooLarge(total, limit)
                raise self._error
            if size - start < total:
                break
            frame = view[start : start + total]
            frames.append(bytes(frame) if copy else frame)  # type: ignore[arg-type]
            start += total
        if view is buffer:
            del buffer[:start]
        else:
            buffer += view[start:]
        return frames
