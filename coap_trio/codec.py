"""Sans-I/O UDP framing of CoAP messages (RFC 7252 §3).

Owns ``bytes <-> Message`` for the UDP message format: the 4-byte header,
the token, the option delta/length encoding with its 13/14 extended forms
and the payload marker. Decoding is strict about the format and lenient
about option *values*: a value that breaks its registered length or format
is kept for the layers above to treat as unrecognized (§5.4.1, §5.4.3).

Whatever bytes come in, :func:`decode` returns a :class:`Message` or raises
:class:`~coap_trio.errors.MessageFormatError`; nothing else escapes.

Must not know about sockets, time, exchanges, or what options mean.
"""

from __future__ import annotations

import struct

from .errors import FormatErrorKind, MessageEncodeError, MessageFormatError
from .message import Message
from .numbers.codes import CODE_TABLE, Code
from .numbers.types import Type
from .options import Options

__all__ = [
    "decode",
    "decode_options",
    "encode",
    "encode_empty",
    "encode_observed",
    "encode_options",
    "encode_reply",
    "observe_parts",
    "reset_for",
]

_TYPE_TABLE = (Type.CON, Type.NON, Type.ACK, Type.RST)
_EMPTY = Code.EMPTY
_MAX_EXTENDED = 269 + 0xFFFF
_HEADER = struct.Struct("!BBH").pack
_SINGLE_BYTE = tuple(bytes((value,)) for value in range(256))
_new = object.__new__


def encode(message: Message) -> bytes:
    """The UDP datagram for ``message``.

    ``mtype`` and ``mid`` must be set. Options are written in number order
    (repeated options in their order), with minimal delta/length fields.
    Raises :class:`~coap_trio.errors.MessageEncodeError` for a message that
    cannot be represented (token over 8 bytes, MID out of range, an option
    value over 65804 bytes, an Empty message with content).
    """
    mtype = message.mtype
    mid = message.mid
    token = message.token
    if mtype is None:
        raise MessageEncodeError("message type (mtype) is not set")
    if mid is None or not 0 <= mid <= 0xFFFF:
        raise MessageEncodeError(f"message ID {mid!r} is not in 0..65535")
    tkl = len(token)
    if tkl > 8:
        raise MessageEncodeError(f"token of {tkl} bytes is longer than 8")
    code = message.code
    items = message.opt.raw_items
    payload = message.payload
    if code == 0 and (tkl or items or payload):
        raise MessageEncodeError("an Empty message (0.00) carries no token, options or payload")
    return encode_reply(code, mtype, mid, token, items, payload)


def encode_reply(
    code: int, mtype: int, mid: int, token: bytes, items: list[tuple[int, bytes]], payload: bytes
) -> bytes:
    """The UDP datagram of a response or notification, from its fields.

    What :func:`encode` writes once it has checked the message, without
    a :class:`Message` to hold the fields (the server's response path builds
    none). The caller guarantees ``mtype`` and ``mid`` in range and a token of
    at most 8 bytes (the messaging machine's own values); an option value
    over 65804 bytes raises :class:`~coap_trio.errors.MessageEncodeError`.
    """
    # One join at the end: the payload (often the largest part) is copied once.
    parts = [_HEADER(0x40 | (mtype << 4) | len(token), code, mid), token]
    append = parts.append
    previous = 0
    for number, value in items:
        delta = number - previous
        previous = number
        length = len(value)
        if delta < 13 and length < 13:
            append(_SINGLE_BYTE[(delta << 4) | length])
        else:
            append(_option_header(delta, length))
        append(value)
    if payload:
        append(b"\xff")
        append(payload)
    return b"".join(parts)


_OBSERVE = 6  # RFC 7641


def observe_parts(items: list[tuple[int, bytes]], payload: bytes) -> tuple[bytes, bytes, int]:
    """A notification encoded once for many observers, all but its Observe option.

    Returns the options before Observe (numbers below 6), the rest after it
    (the first delta counted from 6), payload included, and the number of the
    last option before Observe (0: none); an Observe option in ``items`` is
    left out. :func:`encode_observed` puts a datagram together
    from them, each observer's header, token and Observe value in between.
    """
    before = [item for item in items if item[0] < _OBSERVE]
    after = [item for item in items if item[0] > _OBSERVE]
    head = encode_options(before, b"")
    last = before[-1][0] if before else 0
    # Encoded as if Observe were option 0, so that the first delta counts from 6.
    rest = encode_options([(number - _OBSERVE, value) for number, value in after], payload)
    return head, rest, last


def encode_observed(
    code: int,
    mtype: int,
    mid: int,
    token: bytes,
    parts: tuple[bytes, bytes, int],
    observe: int,
) -> bytes:
    """The datagram of one observer's notification from :func:`observe_parts`.

    ``observe`` is the Observe value (0 .. 2**24 - 1, written in minimal
    length). The bytes are those :func:`encode`
    gives for the same message with that Observe option.
    """
    value = observe.to_bytes((observe.bit_length() + 7) >> 3, "big")
    head, rest, last_before = parts
    return b"".join(
        (
            _HEADER(0x40 | (mtype << 4) | len(token), code, mid),
            token,
            head,
            _SINGLE_BYTE[((_OBSERVE - last_before) << 4) | len(value)],
            value,
            rest,
        )
    )


def encode_options(items: list[tuple[int, bytes]], payload: bytes) -> bytes:
    """The options (``(number, raw value)`` pairs in wire order) and payload as on the wire.

    The part after the token that RFC 7252 §3 and RFC 8323 §3.2 share:
    minimal delta/length headers, then ``0xFF`` and the payload if there is
    one. Used by the stream framing (``coap_trio.protocol.framing``); :func:`encode` inlines
    the same loop (its hot path). Raises
    :class:`~coap_trio.errors.MessageEncodeError` for an option value over
    65804 bytes.
    """
    parts: list[bytes] = []
    append = parts.append
    previous = 0
    for number, value in items:
        delta = number - previous
        previous = number
        length = len(value)
        if delta < 13 and length < 13:
            append(_SINGLE_BYTE[(delta << 4) | length])
        else:
            append(_option_header(delta, length))
        append(value)
    if payload:
        append(b"\xff")
        append(payload)
    return b"".join(parts)


def _option_header(delta: int, length: int) -> bytes:
    if length > _MAX_EXTENDED:
        raise MessageEncodeError(f"option value of {length} bytes is too long to encode")
    if delta < 13:
        d_nibble, d_ext = delta, b""
    elif delta < 269:
        d_nibble, d_ext = 13, bytes((delta - 13,))
    else:
        d_nibble, d_ext = 14, (delta - 269).to_bytes(2, "big")
    if length < 13:
        l_nibble, l_ext = length, b""
    elif length < 269:
        l_nibble, l_ext = 13, bytes((length - 13,))
    else:
        l_nibble, l_ext = 14, (length - 269).to_bytes(2, "big")
    return bytes(((d_nibble << 4) | l_nibble,)) + d_ext + l_ext


def decode(data: bytes, remote: object = None) -> Message:
    """Parse one UDP datagram into a :class:`Message` (with ``remote`` attached).

    Raises :class:`~coap_trio.errors.MessageFormatError`, and nothing else,
    when the datagram is not a well-formed CoAP message; the error carries
    the type and message ID whenever the header could be read.
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < 4:
        raise MessageFormatError(
            FormatErrorKind.TOO_SHORT, version=data[0] >> 6 if size else None, offset=size
        )
    first = data[0]
    if first >> 6 != 1:
        raise MessageFormatError(FormatErrorKind.UNKNOWN_VERSION, version=first >> 6)
    mtype = _TYPE_TABLE[(first >> 4) & 3]
    mid = (data[2] << 8) | data[3]
    tkl = first & 0x0F
    if tkl > 8:
        raise MessageFormatError(
            FormatErrorKind.BAD_TOKEN_LENGTH, version=1, mtype=mtype, mid=mid, offset=0
        )
    code = CODE_TABLE[data[1]]
    if code is _EMPTY:
        if size != 4 or tkl:
            raise MessageFormatError(
                FormatErrorKind.NONEMPTY_EMPTY_MESSAGE, version=1, mtype=mtype, mid=mid, offset=4
            )
        return Message.from_fields(code, mtype, mid, b"", Options.from_wire([]), b"", remote)
    position = 4 + tkl
    if position > size:
        raise MessageFormatError(
            FormatErrorKind.TRUNCATED, version=1, mtype=mtype, mid=mid, offset=size
        )
    token = data[4:position]
    try:
        items, payload = decode_options(data, position, size)
    except MessageFormatError as error:
        error.mtype, error.mid, error.version = mtype, mid, 1
        raise
    # Message.from_fields and Options.from_wire inlined (every datagram passes here).
    options = _new(Options)
    options.raw_items = items
    message = _new(Message)
    message.code = code
    message.mtype = mtype
    message.mid = mid
    message.token = token
    message.opt = options
    message.payload = payload
    message.remote = remote
    return message


def decode_options(data: bytes, position: int, end: int) -> tuple[list[tuple[int, bytes]], bytes]:
    """Parse the options and payload in ``data[position:end]`` (RFC 7252 §3.1).

    Returns the ``(number, raw value)`` pairs in wire order and the payload.
    Shared by the UDP codec and the reliable-transport framing
    (``coap_trio.protocol.framing``), whose messages end the same way.
    Raises :class:`~coap_trio.errors.MessageFormatError` (without type, MID
    or version: the caller adds what its header knows) for a truncated
    option, a reserved nibble, an empty payload after the marker or an
    option number above 65535.
    """
    items: list[tuple[int, bytes]] = []
    payload = b""
    number = 0
    while position < end:
        start = position
        byte = data[position]
        position += 1
        if byte == 0xFF:
            if position == end:
                raise MessageFormatError(FormatErrorKind.EMPTY_PAYLOAD, offset=end)
            payload = data[position:end]
            break
        delta = byte >> 4
        length = byte & 0x0F
        if delta >= 13 or length >= 13:
            if delta == 13 and length < 13 and position < end:  # the usual extended case
                delta = data[position] + 13
                position += 1
            else:
                try:
                    delta, length, position = _extended(data, delta, length, position, end)
                except MessageFormatError as error:
                    if not error.offset:
                        error.offset = start
                    raise
        number += delta
        stop = position + length
        if stop > end:
            raise MessageFormatError(FormatErrorKind.TRUNCATED, offset=end)
        if number > 0xFFFF:
            raise MessageFormatError(FormatErrorKind.OPTION_NUMBER_TOO_LARGE, offset=start)
        items.append((number, data[position:stop]))
        position = stop
    return items, payload


def _extended(
    data: bytes, delta: int, length: int, position: int, end: int
) -> tuple[int, int, int]:
    if delta == 15:
        raise MessageFormatError(FormatErrorKind.RESERVED_DELTA, offset=position - 1)
    if length == 15:
        raise MessageFormatError(FormatErrorKind.RESERVED_LENGTH, offset=position - 1)
    delta, position = _extended_field(data, delta, position, end)
    length, position = _extended_field(data, length, position, end)
    return delta, length, position


def _extended_field(data: bytes, nibble: int, position: int, end: int) -> tuple[int, int]:
    """Resolve one delta or length nibble: 13 adds one byte (+13), 14 two bytes (+269)."""
    if nibble < 13:
        return nibble, position
    width = nibble - 12
    if position + width > end:
        raise MessageFormatError(FormatErrorKind.TRUNCATED, offset=end)
    if width == 1:
        return data[position] + 13, position + 1
    return ((data[position] << 8) | data[position + 1]) + 269, position + 2


def encode_empty(mtype: Type, mid: int) -> bytes:
    """An Empty message (an empty ACK, an RST, a ping) with ``mid``: the 4-byte header (§4.1)."""
    return bytes((0x40 | (mtype << 4), 0, mid >> 8, mid & 0xFF))


def reset_for(error: MessageFormatError, remote: object = None) -> Message | None:
    """The Reset to send for a datagram that failed to decode, or None to stay silent.

    RFC 7252 §4.2: a CON with a format error is rejected with a matching RST;
    NON, ACK, RST and unknown versions are silently ignored (§3, §4.3).
    """
    if not error.should_reset or error.mid is None:
        return None
    return Message.from_fields(_EMPTY, Type.RST, error.mid, b"", Options.from_wire([]), b"", remote)
