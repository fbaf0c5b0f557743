"""RFC 8323 framing (coap_trio.protocol.framing): stream and WebSocket frames, the stream decoder.

Round trips over every length boundary of the Len field (12/13, 268/269,
65804/65805), every malformation by name, the decoder fed byte by byte and
in random splits, the size limit enforced from the header alone, a seeded
fuzz loop, and byte-level agreement with aiocoap's TCP framing both ways.
"""

from __future__ import annotations

import random
import warnings

import aiocoap
import pytest
from aiocoap.transports import tcp as aio_tcp
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import (
    FormatErrorKind,
    FrameErrorKind,
    FrameTooLarge,
    MessageEncodeError,
    MessageFormatError,
)
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.options import Options
from coap_trio.protocol.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    StreamDecoder,
    decode_frame,
    decode_websocket,
    encode_stream,
    encode_websocket,
    frame_size,
)

# -- strategies -------------------------------------------------------------------

codes = st.sampled_from(
    [Code.GET, Code.POST, Code.CONTENT, Code.NOT_FOUND, Code.CSM, Code.PING, Code.ABORT]
) | st.integers(1, 255).map(Code)
option_items = st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=300)), max_size=6).map(
    lambda items: sorted(items, key=lambda item: item[0])
)
messages = st.builds(
    lambda code, token, items, payload: Message.from_fields(
        code, None, None, token, Options(items), payload, None
    ),
    codes,
    st.binary(max_size=8),
    option_items,
    st.binary(max_size=2000),
)


def fields(message: Message) -> tuple[int, bytes, list[tuple[int, bytes]], bytes]:
    return (int(message.code), message.token, list(message.opt.raw_items), message.payload)


def with_body(length: int, token: bytes = b"\x01\x02") -> Message:
    """A 2.05 whose options + payload take exactly ``length`` bytes (payload marker included)."""
    if length == 0:
        return Message.from_fields(Code.CONTENT, None, None, token, Options(), b"", None)
    if length == 1:  # one empty option with delta 1 (If-Match): one header byte
        return Message.from_fields(Code.CONTENT, None, None, token, Options([(1, b"")]), b"", None)
    payload = bytes(i & 0xFF for i in range(length - 1))
    return Message.from_fields(Code.CONTENT, None, None, token, Options(), payload, None)


BOUNDARIES = [0, 1, 2, 12, 13, 14, 268, 269, 270, 65804, 65805, 65806, 200_000]


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("length", BOUNDARIES)
def test_length_boundaries_stream(length: int) -> None:
    message = with_body(length)
    frame = encode_stream(message)
    nibble = frame[0] >> 4
    if length < 13:
        assert nibble == length
        header = 1
    elif length < 269:
        assert (nibble, frame[1]) == (13, length - 13)
        header = 2
    elif length < 65805:
        assert nibble == 14
        assert int.from_bytes(frame[1:3], "big") == length - 269
        header = 3
    else:
        assert nibble == 15
        assert int.from_bytes(frame[1:5], "big") == length - 65805
        header = 5
    assert frame[0] & 0x0F == 2
    assert frame[header] == Code.CONTENT
    assert len(frame) == header + 1 + 2 + length
    assert frame_size(frame[:header]) == len(frame)
    decoded = decode_frame(frame)
    assert fields(decoded) == fields(message)
    assert decoded.mtype is None
    assert decoded.mid is None


@pytest.mark.parametrize("length", BOUNDARIES)
def test_length_boundaries_websocket(length: int) -> None:
    message = with_body(length)
    frame = encode_websocket(message)
    assert frame[0] == 0x02  # Len 0, TKL 2 (§4.4)
    assert frame[1] == Code.CONTENT
    assert len(frame) == 2 + 2 + length
    assert fields(decode_websocket(frame)) == fields(message)


@settings(deadline=None, max_examples=300)
@given(messages)
def test_round_trip_stream(message: Message) -> None:
    frame = encode_stream(message)
    assert frame_size(frame[:5]) == len(frame)
    assert fields(decode_frame(frame)) == fields(message)
    assert decoder_frames([frame, frame], 1 << 20) == [frame, frame]


@settings(deadline=None, max_examples=300)
@given(messages)
def test_round_trip_websocket(message: Message) -> None:
    frame = encode_websocket(message)
    assert fields(decode_websocket(frame)) == fields(message)
    # The WebSocket form is the stream form with the length field taken out.
    stream = encode_stream(message)
    header = {13: 2, 14: 3, 15: 5}.get(stream[0] >> 4, 1)
    assert frame == bytes((stream[0] & 0x0F,)) + stream[header:]


@settings(deadline=None, max_examples=200)
@given(
    st.sampled_from([12, 13, 268, 269, 65804, 65805]),
    st.integers(-3, 3),
    st.binary(max_size=8),
)
def test_round_trip_near_boundaries(boundary: int, delta: int, token: bytes) -> None:
    length = boundary + delta
    message = with_body(length, token)
    frame = encode_stream(message)
    assert fields(decode_frame(frame)) == fields(message)
    assert fields(decode_websocket(encode_websocket(message))) == fields(message)


def test_mtype_and_mid_are_ignored() -> None:
    plain = Message(code=Code.GET, token=b"ab", uri_path=("x",))
    typed = Message(code=Code.GET, token=b"ab", uri_path=("x",), mtype=0, mid=1234)
    assert encode_stream(plain) == encode_stream(typed) == bytes.fromhex("22016162b178")


def test_empty_message_is_two_bytes() -> None:
    empty = Message.from_fields(Code.EMPTY, None, None, b"", Options(), b"", None)
    assert encode_stream(empty) == b"\x00\x00"
    assert decode_frame(b"\x00\x00").code is Code.EMPTY
    assert encode_websocket(empty) == b"\x00\x00"


def test_encode_errors() -> None:
    long_token = Message.from_fields(Code.GET, None, None, b"123456789", Options(), b"", None)
    with pytest.raises(MessageEncodeError):
        encode_stream(long_token)
    with pytest.raises(MessageEncodeError):
        encode_websocket(long_token)
    empty_with_payload = Message.from_fields(Code.EMPTY, None, None, b"", Options(), b"x", None)
    with pytest.raises(MessageEncodeError):
        encode_stream(empty_with_payload)
    huge_option = Message.from_fields(
        Code.GET, None, None, b"", Options([(1, bytes(65805))]), b"", None
    )
    with pytest.raises(MessageEncodeError):
        encode_stream(huge_option)


# -- malformed frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (b"", FormatErrorKind.TOO_SHORT),
        (b"\x00", FormatErrorKind.TOO_SHORT),  # no code byte
        (b"\xd0", FormatErrorKind.TRUNCATED),  # Len 13 without its extended byte
        (b"\xe0\x00", FormatErrorKind.TRUNCATED),  # Len 14 with 1 of 2 bytes
        (b"\xf0\x00\x00\x00", FormatErrorKind.TRUNCATED),  # Len 15 with 3 of 4 bytes
        (b"\xd0\x00", FormatErrorKind.TOO_SHORT),  # extended length, no code
        (b"\x02\x45\x01", FormatErrorKind.TRUNCATED),  # token cut short
        (b"\x30\x45\xb5", FormatErrorKind.TRUNCATED),  # frame shorter than Len
        (b"\x10\x45\xb5", FormatErrorKind.TRUNCATED),  # option value past the frame
        (b"\x10\x45\xd0", FormatErrorKind.TRUNCATED),  # extended delta past the frame
        (b"\x10\x45\xff", FormatErrorKind.EMPTY_PAYLOAD),  # payload marker, no payload
        (b"\x10\x45\xf1", FormatErrorKind.RESERVED_DELTA),
        (b"\x10\x45\x1f", FormatErrorKind.RESERVED_LENGTH),
        (b"\x30\x45\xe0\xff\xff", FormatErrorKind.OPTION_NUMBER_TOO_LARGE),
        (b"\x09\x45" + bytes(9), FormatErrorKind.BAD_TOKEN_LENGTH),
        (b"\x0f\x45" + bytes(15), FormatErrorKind.BAD_TOKEN_LENGTH),
        (b"\x01\x00\x07", FormatErrorKind.NONEMPTY_EMPTY_MESSAGE),
        (b"\x10\x00\x10", FormatErrorKind.NONEMPTY_EMPTY_MESSAGE),
        (b"\x00\x45\x00", FrameErrorKind.TRAILING_DATA),
        (b"\x10\x45\x10\x10", FrameErrorKind.TRAILING_DATA),
    ],
)
def test_malformed_stream_frames(frame: bytes, kind: object) -> None:
    with pytest.raises(MessageFormatError) as info:
        decode_frame(frame)
    assert info.value.kind is kind
    assert info.value.mtype is None
    assert info.value.mid is None
    assert not info.value.should_reset


@pytest.mark.parametrize("tkl", range(9, 16))
def test_token_length_9_to_15(tkl: int) -> None:
    frame = bytes((tkl, Code.GET)) + bytes(tkl)
    with pytest.raises(MessageFormatError) as info:
        decode_frame(frame)
    assert info.value.kind is FormatErrorKind.BAD_TOKEN_LENGTH
    with pytest.raises(MessageFormatError) as info:
        decode_websocket(frame)
    assert info.value.kind is FormatErrorKind.BAD_TOKEN_LENGTH


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (b"", FormatErrorKind.TOO_SHORT),
        (b"\x00", FormatErrorKind.TOO_SHORT),
        (b"\x10\x45\xb1", FrameErrorKind.LENGTH_NOT_ZERO),
        (b"\x02\x45\x01", FormatErrorKind.TRUNCATED),
        (b"\x00\x45\xff", FormatErrorKind.EMPTY_PAYLOAD),
        (b"\x00\x45\xb5ab", FormatErrorKind.TRUNCATED),
        (b"\x00\x00\xff\x01", FormatErrorKind.NONEMPTY_EMPTY_MESSAGE),
    ],
)
def test_malformed_websocket_frames(frame: bytes, kind: object) -> None:
    with pytest.raises(MessageFormatError) as info:
        decode_websocket(frame)
    assert info.value.kind is kind


def test_decode_accepts_bytearray_and_memoryview() -> None:
    frame = encode_stream(Message(code=Code.GET, token=b"t", uri_path=("a", "b")))
    assert decode_frame(bytearray(frame)).opt.uri_path == ("a", "b")
    ws = encode_websocket(Message(code=Code.GET, token=b"t", uri_path=("a",)))
    assert decode_websocket(memoryview(ws)).opt.uri_path == ("a",)  # type: ignore[arg-type]


# -- the stream decoder ---------------------------------------------------------------------


def decoder_frames(chunks: list[bytes], limit: int) -> list[bytes]:
    decoder = StreamDecoder(limit)
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    assert decoder.buffered == 0
    return frames


def sample_frames() -> list[bytes]:
    return [
        encode_stream(with_body(length, token=bytes(length % 9)))
        for length in (0, 1, 12, 13, 268, 269, 1000, 65805)
    ]


def test_decoder_byte_by_byte() -> None:
    frames = sample_frames()
    stream = b"".join(frames)
    decoder = StreamDecoder(1 << 20)
    found: list[bytes] = []
    for index in range(len(stream)):
        found.extend(decoder.feed(stream[index : index + 1]))
        assert decoder.buffered <= max(len(f) for f in frames)
    assert found == frames
    assert decoder.buffered == 0


def test_decoder_keeps_the_partial_rest() -> None:
    frame = encode_stream(with_body(300))
    decoder = StreamDecoder()
    assert decoder.feed(frame + frame[:10]) == [frame]
    assert decoder.buffered == 10
    assert decoder.feed(frame[10:-1]) == []
    assert decoder.buffered == len(frame) - 1
    assert decoder.feed(frame[-1:] + b"") == [frame]
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []


@settings(deadline=None, max_examples=200)
@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_decoder_random_splits(batch: list[Message], data: st.DataObject) -> None:
    frames = [encode_stream(message) for message in batch]
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    found = decoder_frames(chunks, 1 << 20)
    assert found == frames
    assert [fields(decode_frame(f)) for f in found] == [fields(m) for m in batch]


@pytest.mark.parametrize(
    "header",
    [
        b"\xf0\xff\xff\xff\xff",  # announces ~4 GiB
        b"\xe0\xff\xff",  # announces ~64 KiB
        b"\xd0\xff",  # 270 + 2 bytes
    ],
)
def test_too_large_is_refused_from_the_header(header: bytes) -> None:
    decoder = StreamDecoder(200)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header)
    error = info.value
    assert isinstance(error, MessageFormatError)
    assert error.kind is FrameErrorKind.TOO_LARGE
    assert error.limit == 200
    assert error.size > 200
    assert decoder.buffered == 0  # nothing of it was kept
    with pytest.raises(FrameTooLarge):  # the stream cannot continue
        decoder.feed(b"\x00\x45")


def test_too_large_after_good_frames_and_split_header() -> None:
    good = encode_stream(with_body(20))
    decoder = StreamDecoder(100)
    assert decoder.feed(good + b"\xe0") == [good]
    assert decoder.buffered == 1
    assert decoder.feed(b"\x10") == []  # the extended length is still incomplete
    assert decoder.buffered == 2
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\x00")
    assert info.value.size == 2 + 2 + 0x1000 + 269
    assert decoder.buffered == 0


def test_limit_is_the_whole_frame() -> None:
    frame = encode_stream(with_body(50))
    assert decoder_frames([frame], len(frame)) == [frame]
    with pytest.raises(FrameTooLarge):
        StreamDecoder(len(frame) - 1).feed(frame)


def test_set_max_message_size() -> None:
    decoder = StreamDecoder()
    assert decoder.max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 1152
    big = encode_stream(with_body(5000))
    decoder.set_max_message_size(10_000)
    assert decoder.feed(big) == [big]
    decoder.set_max_message_size(100)
    with pytest.raises(FrameTooLarge):
        decoder.feed(big)
    with pytest.raises(ValueError):
        StreamDecoder(1)
    with pytest.raises(ValueError):
        StreamDecoder().set_max_message_size(0)


def test_frame_size_needs_the_extended_length() -> None:
    assert frame_size(b"") is None
    assert frame_size(b"\xd0") is None
    assert frame_size(b"\xe0\x01") is None
    assert frame_size(b"\xf0\x00\x00\x00") is None
    assert frame_size(b"\x35") == 2 + 5 + 3
    assert frame_size(b"\xf8\x00\x00\x00\x01") == 2 + 4 + 8 + 65806


# -- fuzzing ---------------------------------------------------------------------------------

FUZZ_SEED = 8323
FUZZ_COUNT = 30_000


def test_fuzz_decoders_raise_only_format_errors() -> None:
    rng = random.Random(FUZZ_SEED)
    corpus = [encode_stream(m) for m in (with_body(n) for n in (0, 5, 13, 300))]
    corpus.append(encode_stream(Message(code=Code.GET, token=b"tok", uri="coap://h/a/b?c=d")))
    outcomes: set[str] = set()
    for iteration in range(FUZZ_COUNT):
        if iteration % 2:
            data = bytearray(rng.choice(corpus))
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(len(data))
                data[position] = rng.randrange(256)
            if rng.random() < 0.3:
                del data[rng.randrange(len(data)) :]
            frame = bytes(data)
        else:
            frame = rng.randbytes(rng.randint(0, 40))
        for decode in (decode_frame, decode_websocket):
            try:
                message = decode(frame)
            except MessageFormatError as error:
                outcomes.add(error.kind.name)
            else:
                outcomes.add("ok")
                again = encode_stream(message) if decode is decode_frame else None
                if again is not None:
                    assert fields(decode_frame(again)) == fields(message), (iteration, frame)
        decoder = StreamDecoder(512)
        try:
            for chunk in (frame[:3], frame[3:]):
                for piece in decoder.feed(chunk):
                    assert frame_size(piece[:5]) == len(piece) <= 512
        except FrameTooLarge:
            outcomes.add("too large")
        assert decoder.buffered <= 512
    assert {"ok", "too large", "TRUNCATED", "TRAILING_DATA", "LENGTH_NOT_ZERO"} <= outcomes


# -- aiocoap interop --------------------------------------------------------------------------

interop_messages = st.builds(
    lambda code, token, path, query, payload, ct: Message(
        code=code,
        token=token,
        uri_path=path,
        uri_query=query,
        payload=payload,
        content_format=ct,
    ),
    st.sampled_from([Code.GET, Code.PUT, Code.CONTENT, Code.CHANGED, Code.NOT_FOUND]),
    st.binary(max_size=8),
    st.lists(st.text(min_size=1, max_size=60), max_size=3).map(tuple),
    st.lists(st.text(min_size=1, max_size=20), max_size=2).map(tuple),
    st.binary(max_size=70_000),
    st.none() | st.integers(0, 65535),
)


def aio_fields(message: aiocoap.Message) -> tuple[int, bytes, list[tuple[int, bytes]], bytes]:
    items = [(int(option.number), option.encode()) for option in message.opt.option_list()]
    return (int(message.code), bytes(message.token), items, bytes(message.payload))


@settings(deadline=None, max_examples=150)
@given(interop_messages)
def test_aiocoap_decodes_our_frames(message: Message) -> None:
    frame = encode_stream(message)
    assert aio_tcp._extract_message_size(frame) is not None
    decoded = aio_tcp._decode_message(frame)
    assert aio_fields(decoded) == fields(message)


@settings(deadline=None, max_examples=150)
@given(interop_messages)
def test_we_decode_aiocoap_frames(message: Message) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        aio = aiocoap.Message(code=int(message.code), token=message.token, payload=message.payload)
    for number, raw in message.opt.raw_items:
        aio.opt.add_option(
            aiocoap.numbers.optionnumbers.OptionNumber(number).create_option(decode=raw)
        )
    frame = aio_tcp._serialize(aio)
    assert frame == encode_stream(message)  # byte for byte: both write the canonical form
    assert fields(decode_frame(frame)) == aio_fields(aio)
    assert decoder_frames([frame[:1], frame[1:]], 1 << 20) == [frame]
