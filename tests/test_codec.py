"""Tests for coap_trio.codec: the RFC 7252 §3 UDP message format.

Covers the RFC 7252 Appendix A examples as exact byte vectors, the option
header's extended forms at every boundary, one named test per malformation
(with the Reset decision of §4.2/§4.3), option values that break their
registered format (kept raw, read as absent, listed by ``malformed()``),
encode errors, and Hypothesis round trips in both directions.

A note on the bytes-level property. The §3.1 option header has exactly one
form for each (delta, length): a nibble 0..12 is the value itself, nibble 13
plus one byte covers 13..268 and nibble 14 plus two bytes covers 269..65804;
the ranges are disjoint, so no "non-minimal" extended form exists. The decoder
accepts a payload marker only before a non-empty payload, an Empty message
only as exactly four bytes, keeps options in wire order and keeps every value
raw (uint values with leading zeros are not normalized). The codec is hence a
bijection between decodable datagrams and encodable messages, and the exact
property ``encode(decode(b)) == b`` holds for every ``b`` that decodes, which
is stronger than (and implies) the one-round normalization property
``encode(decode(encode(decode(b)))) == encode(decode(b))``.
"""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from coap_trio import (
    ACK,
    CON,
    CONTENT,
    GET,
    NON,
    RST,
    BlockValue,
    Code,
    ContentFormat,
    FormatErrorKind,
    LocalProtocolError,
    Message,
    MessageEncodeError,
    MessageFormatError,
    OptionNumber,
    Options,
    RemoteProtocolError,
    Type,
)
from coap_trio.codec import decode, encode, reset_for
from coap_trio.numbers.optionnumbers import registered_options

ALL_TYPES = (CON, NON, ACK, RST)


def h(text: str) -> bytes:
    """Bytes from spaced hex, e.g. ``h("40 01 7d 34")``."""
    return bytes.fromhex(text.replace(" ", ""))


def header(mtype: Type = CON, tkl: int = 0, code: int = GET, mid: int = 0x1234) -> bytes:
    return bytes((0x40 | (mtype << 4) | tkl, code, mid >> 8, mid & 0xFF))


TEMPERATURE = b"temperature".hex()
PAYLOAD_223 = b"22.3 C".hex()


# --- RFC 7252 Appendix A -----------------------------------------------------------


def _get_temperature(mtype: Type, mid: int, token: bytes) -> Message:
    return Message(code=GET, mtype=mtype, mid=mid, token=token, uri_path=("temperature",))


def _content(mtype: Type, mid: int, token: bytes, payload: bytes = b"22.3 C") -> Message:
    return Message(code=CONTENT, mtype=mtype, mid=mid, token=token, payload=payload)


def _empty(mtype: Type, mid: int) -> Message:
    return Message(code=Code.EMPTY, mtype=mtype, mid=mid)


# (figure / role, wire bytes, the message the API builds)
APPENDIX_A = [
    # Figure 16: CON GET without token; piggybacked 2.05 in the ACK (16 and 11 bytes).
    ("fig16-request", h(f"40 01 7d 34 bb {TEMPERATURE}"), _get_temperature(CON, 0x7D34, b"")),
    ("fig16-response", h(f"60 45 7d 34 ff {PAYLOAD_223}"), _content(ACK, 0x7D34, b"")),
    # Figure 17: the same with Token 0x20 (17 and 12 bytes).
    ("fig17-request", h(f"41 01 7d 35 20 bb {TEMPERATURE}"), _get_temperature(CON, 0x7D35, b" ")),
    ("fig17-response", h(f"61 45 7d 35 20 ff {PAYLOAD_223}"), _content(ACK, 0x7D35, b" ")),
    # Figure 18: retransmitted request, Token 0x31.
    ("fig18-request", h(f"41 01 7d 36 31 bb {TEMPERATURE}"), _get_temperature(CON, 0x7D36, b"1")),
    ("fig18-response", h(f"61 45 7d 36 31 ff {PAYLOAD_223}"), _content(ACK, 0x7D36, b"1")),
    # Figure 19: retransmitted response, Token 0x42.
    ("fig19-request", h(f"41 01 7d 37 42 bb {TEMPERATURE}"), _get_temperature(CON, 0x7D37, b"B")),
    ("fig19-response", h(f"61 45 7d 37 42 ff {PAYLOAD_223}"), _content(ACK, 0x7D37, b"B")),
    # Figure 20: separate response, Token 0x53.
    ("fig20-request", h(f"41 01 7d 38 53 bb {TEMPERATURE}"), _get_temperature(CON, 0x7D38, b"S")),
    ("fig20-empty-ack", h("60 00 7d 38"), _empty(ACK, 0x7D38)),
    ("fig20-response", h(f"41 45 ad 7b 53 ff {PAYLOAD_223}"), _content(CON, 0xAD7B, b"S")),
    ("fig20-ack", h("60 00 ad 7b"), _empty(ACK, 0xAD7B)),
    # Figure 21: unexpected separate response rejected with a Reset, Token 0x64.
    ("fig21-request", h(f"41 01 7d 39 64 bb {TEMPERATURE}"), _get_temperature(CON, 0x7D39, b"d")),
    ("fig21-empty-ack", h("60 00 7d 39"), _empty(ACK, 0x7D39)),
    ("fig21-response", h(f"41 45 ad 7c 64 ff {PAYLOAD_223}"), _content(CON, 0xAD7C, b"d")),
    ("fig21-reset", h("70 00 ad 7c"), _empty(RST, 0xAD7C)),
    # Figure 22: NON request, NON response, Token 0x75.
    ("fig22-request", h(f"51 01 7d 40 75 bb {TEMPERATURE}"), _get_temperature(NON, 0x7D40, b"u")),
    ("fig22-response", h(f"51 45 ad 7d 75 ff {PAYLOAD_223}"), _content(NON, 0xAD7D, b"u")),
    # Figure 23: multicast NON request, Token 0x86, three responses.
    (
        "fig23-request",
        h(f"51 01 7d 41 86 bb {TEMPERATURE}"),
        _get_temperature(NON, 0x7D41, b"\x86"),
    ),
    ("fig23-response-a", h(f"51 45 60 b1 86 ff {PAYLOAD_223}"), _content(NON, 0x60B1, b"\x86")),
    (
        "fig23-response-b",
        h(f"51 45 01 a0 86 ff {b'20.9 C'.hex()}"),
        _content(NON, 0x01A0, b"\x86", b"20.9 C"),
    ),
    (
        "fig23-response-c",
        h("51 84 95 2a 86"),
        Message(code=Code.NOT_FOUND, mtype=NON, mid=0x952A, token=b"\x86"),
    ),
]


@pytest.mark.parametrize(
    ("wire", "message"), [pytest.param(w, m, id=name) for name, w, m in APPENDIX_A]
)
def test_appendix_a_decode(wire: bytes, message: Message) -> None:
    decoded = decode(wire)
    assert decoded.code is message.code
    assert decoded.mtype is message.mtype
    assert decoded.mid == message.mid
    assert decoded.token == message.token
    assert list(decoded.opt) == list(message.opt)
    assert decoded.opt.uri_path == message.opt.uri_path
    assert decoded.payload == message.payload
    assert decoded.remote is None
    assert decoded == message


@pytest.mark.parametrize(
    ("wire", "message"), [pytest.param(w, m, id=name) for name, w, m in APPENDIX_A]
)
def test_appendix_a_encode(wire: bytes, message: Message) -> None:
    assert encode(message) == wire


def test_appendix_a_sizes_and_fields_as_the_rfc_states() -> None:
    request, response = (wire for name, wire, _ in APPENDIX_A[:2])
    assert len(request) == 16
    assert len(response) == 11
    first = decode(request)
    assert first.code == GET
    assert first.code.dotted == "0.01"
    assert first.mtype is CON
    assert first.mid == 0x7D34
    assert first.token == b""
    assert first.opt.get_all(OptionNumber.URI_PATH) == (b"temperature",)
    assert first.opt.uri_path == ("temperature",)
    assert first.payload == b""
    second = decode(response)
    assert second.code.dotted == "2.05"
    assert second.mtype is ACK
    assert second.mid == 0x7D34
    assert len(second.opt) == 0
    assert second.payload == b"22.3 C"
    assert len(APPENDIX_A[2][1]) == 17
    assert len(APPENDIX_A[3][1]) == 12


def test_appendix_a_request_built_from_a_uri() -> None:
    # An IP-literal host that is the destination: only Uri-Path goes on the wire (§6.4).
    request = Message(
        code=GET, mtype=CON, mid=0x7D35, token=b"\x20", uri="coap://[2001:db8::1]/temperature"
    )
    assert encode(request) == APPENDIX_A[2][1]
    decoded = decode(APPENDIX_A[2][1], remote=request.remote)
    assert decoded.remote is request.remote
    assert decoded == request


def test_decode_accepts_bytearray_and_memoryview() -> None:
    wire = APPENDIX_A[0][1]
    assert decode(bytearray(wire)) == decode(wire)
    assert decode(memoryview(wire)) == decode(wire)


# --- option header edge cases ---------------------------------------------------------

CON_GET = "40 01 00 01"  # CON GET MID 1, no token


def _one_option(number: int, value: bytes) -> Message:
    return Message(code=GET, mtype=CON, mid=1, opt=Options([(number, value)]))


@pytest.mark.parametrize(
    ("number", "length", "option_header"),
    [
        pytest.param(0, 0, "00", id="delta0-len0"),
        pytest.param(12, 12, "cc", id="delta12-len12"),
        pytest.param(13, 13, "dd 00 00", id="delta13-len13"),
        pytest.param(268, 268, "dd ff ff", id="delta268-len268"),
        pytest.param(269, 269, "ee 00 00 00 00", id="delta269-len269"),
        pytest.param(270, 12, "ec 00 01", id="delta270-len12"),
        pytest.param(12, 269, "ce 00 00", id="delta12-len269"),
        pytest.param(13, 0, "d0 00", id="delta13-len0"),
        pytest.param(3, 268, "3d ff", id="delta3-len268"),
        pytest.param(2000, 5, "e5 06 c3", id="delta2000-len5"),
        pytest.param(65535, 0, "e0 fe f2", id="delta65535-len0"),
        pytest.param(65535, 13, "ed fe f2 00", id="delta65535-len13"),
    ],
)
def test_option_header_forms(number: int, length: int, option_header: str) -> None:
    value = bytes(i & 0xFF for i in range(length))
    wire = h(CON_GET + option_header) + value
    message = _one_option(number, value)
    assert encode(message) == wire
    decoded = decode(wire)
    assert decoded.opt.raw_items == [(number, value)]
    assert decoded == message


def test_option_length_65804_is_the_longest_value() -> None:
    value = b"\xa5" * 65804
    wire = h(CON_GET + "2e ff ff") + value
    message = _one_option(2, value)
    assert encode(message) == wire
    assert decode(wire) == message


def test_deltas_accumulate_across_options() -> None:
    items = [(11, b"a"), (11, b""), (60, b"\x01"), (2053, b"\x00\x01"), (65535, b"z")]
    wire = h(CON_GET + "b1 61" + "00" + "d1 24 01" + "e2 06 bc 00 01" + "e1 f6 ed 7a")
    message = Message(code=GET, mtype=CON, mid=1, opt=Options(items))
    assert encode(message) == wire
    assert decode(wire).opt.raw_items == items


def test_extended_forms_are_offsets_not_raw_values() -> None:
    # Nibble 13 with an extension byte of 0 is delta 13, never 0; nibble 14 with 0 is 269.
    assert decode(h(CON_GET + "d0 00")).opt.raw_items == [(13, b"")]
    assert decode(h(CON_GET + "e0 00 00")).opt.raw_items == [(269, b"")]
    assert decode(h(CON_GET + "0d 00") + b"x" * 13).opt.raw_items == [(0, b"x" * 13)]


def test_zero_length_uint_observe_zero() -> None:
    message = Message(code=CONTENT, mtype=ACK, mid=1, observe=0)
    assert message.opt.get_all(OptionNumber.OBSERVE) == (b"",)
    wire = h("60 45 00 01 60")
    assert encode(message) == wire
    decoded = decode(wire)
    assert decoded.opt.observe == 0
    assert decoded.opt.malformed() == ()
    assert decoded == message


def test_zero_length_content_format_is_text_plain() -> None:
    message = Message(code=CONTENT, mtype=ACK, mid=1, content_format=ContentFormat.TEXT)
    wire = h("60 45 00 01 c0")
    assert encode(message) == wire
    assert decode(wire).opt.content_format is ContentFormat.TEXT


def test_uint_with_leading_zeros_is_accepted_and_kept_raw() -> None:
    wire = h("60 45 00 01 62 00 07")
    decoded = decode(wire)
    assert decoded.opt.observe == 7
    assert decoded.opt.get_all(OptionNumber.OBSERVE) == (b"\x00\x07",)
    assert decoded.opt.malformed() == ()
    assert encode(decoded) == wire


def test_repeated_options_keep_their_order() -> None:
    message = Message(code=GET, mtype=CON, mid=1, uri_path=("b", "a", "c"), uri_query=("z", "y"))
    wire = h(CON_GET + "b1 62 01 61 01 63 41 7a 01 79")
    assert encode(message) == wire
    decoded = decode(wire)
    assert decoded.opt.uri_path == ("b", "a", "c")
    assert decoded.opt.uri_query == ("z", "y")
    assert decoded == message


def test_options_added_out_of_order_are_sorted_stably() -> None:
    opt = Options()
    opt.add(15, b"q1")
    opt.add(11, b"p1")
    opt.add(4, b"e1")
    opt.add(11, b"p2")
    opt.add(15, b"q2")
    opt.add(11, b"p3")
    message = Message(code=GET, mtype=CON, mid=1, opt=opt)
    decoded = decode(encode(message))
    assert decoded.opt.raw_items == [
        (4, b"e1"),
        (11, b"p1"),
        (11, b"p2"),
        (11, b"p3"),
        (15, b"q1"),
        (15, b"q2"),
    ]


@pytest.mark.parametrize(
    ("number", "critical"),
    [
        pytest.param(2, False, id="2-elective"),
        pytest.param(13, True, id="13-critical"),
        pytest.param(1000, False, id="1000-elective"),
        pytest.param(2047, True, id="2047-critical"),
        pytest.param(65000, False, id="65000-elective"),
        pytest.param(65001, True, id="65001-critical"),
        pytest.param(65535, True, id="65535-critical"),
    ],
)
def test_unknown_options_are_kept_and_reencoded_unchanged(number: int, critical: bool) -> None:
    option = OptionNumber(number)
    assert not option.is_known()
    assert option.is_critical() is critical
    value = b"\x00\xffunknown\x80"
    wire = encode(
        Message(
            code=GET,
            mtype=CON,
            mid=7,
            token=b"tk",
            opt=Options([(11, b"x"), (number, value), (number, b""), (65535, b"end")]),
        )
    )
    decoded = decode(wire)
    assert decoded.opt.get_all(number) == (
        (value, b"") if number != 65535 else (value, b"", b"end")
    )
    assert number in decoded.opt
    assert decoded.opt.malformed() == ()  # unregistered numbers are never "malformed"
    assert encode(decoded) == wire


def test_unknown_option_fixed_bytes() -> None:
    # Elective 65000 and critical 65001 after Uri-Path: deltas 11, 64989, 1.
    wire = h(CON_GET + "b1 78" + "e2 fc d0 ab cd" + "10")
    decoded = decode(wire)
    assert decoded.opt.raw_items == [(11, b"x"), (65000, b"\xab\xcd"), (65001, b"")]
    assert [n.is_critical() for n, _ in decoded.opt] == [True, False, True]
    assert encode(decoded) == wire


def test_token_of_eight_bytes() -> None:
    message = Message(code=GET, mtype=NON, mid=0xFFFF, token=bytes(range(1, 9)))
    wire = h("58 01 ff ff 01 02 03 04 05 06 07 08")
    assert encode(message) == wire
    assert decode(wire) == message


def test_every_code_value_encodes_in_the_code_byte() -> None:
    for value in range(1, 256):
        message = Message(code=value, mtype=NON, mid=value, token=b"t")
        wire = encode(message)
        assert wire[1] == value
        decoded = decode(wire)
        assert decoded.code == value
        assert decoded.code is Code(value)


# --- malformations ----------------------------------------------------------------------


def _error(data: bytes) -> MessageFormatError:
    with pytest.raises(MessageFormatError) as info:
        decode(data)
    error = info.value
    _check_error_invariants(error, data)
    return error


def _check_error_invariants(error: MessageFormatError, data: bytes) -> None:
    """What every MessageFormatError must say about the datagram it came from."""
    assert isinstance(error.kind, FormatErrorKind)
    assert 0 <= error.offset <= len(data)
    if len(data) >= 4 and data[0] >> 6 == 1:
        assert error.version == 1
        assert error.mtype is Type((data[0] >> 4) & 3)
        assert error.mid == (data[2] << 8) | data[3]
    else:
        assert error.version == (data[0] >> 6 if data else None)
        assert error.mtype is None
        assert error.mid is None
    assert error.should_reset is (error.version == 1 and error.mtype is CON)
    rst = reset_for(error)
    if error.should_reset:
        assert rst == Message(code=Code.EMPTY, mtype=RST, mid=error.mid)
        assert encode(rst) == bytes((0x70, 0, data[2], data[3]))
    else:
        assert rst is None
    assert str(error)


def _check_reset(error: MessageFormatError, mtype: Type, mid: int) -> None:
    assert error.mtype is mtype
    assert error.mid == mid
    assert error.version == 1
    assert error.should_reset is (mtype is CON)
    remote = object()
    rst = reset_for(error, remote)
    if mtype is CON:
        assert rst is not None
        assert rst.mtype is RST
        assert rst.code is Code.EMPTY
        assert rst.mid == mid
        assert rst.token == b""
        assert len(rst.opt) == 0
        assert rst.payload == b""
        assert rst.remote is remote
    else:
        assert rst is None


@pytest.mark.parametrize("version", [0, 2, 3])
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_unknown_version_is_silently_ignored(version: int, mtype: Type) -> None:
    data = bytes(((version << 6) | (mtype << 4), GET, 0x12, 0x34)) + h(f"bb {TEMPERATURE}")
    error = _error(data)
    assert error.kind is FormatErrorKind.UNKNOWN_VERSION
    assert error.version == version
    assert error.should_reset is False  # even for a CON (§3: silently ignore)
    assert reset_for(error) is None
    assert error.mtype is None
    assert error.mid is None


@pytest.mark.parametrize("tkl", range(9, 16))
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_token_length_9_to_15_is_reserved(tkl: int, mtype: Type) -> None:
    data = header(mtype, tkl=tkl) + bytes(range(tkl)) + h(f"bb {TEMPERATURE}")
    error = _error(data)
    assert error.kind is FormatErrorKind.BAD_TOKEN_LENGTH
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize("byte", range(0xF0, 0xFF))
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_delta_nibble_15_that_is_not_the_payload_marker(byte: int, mtype: Type) -> None:
    data = header(mtype, tkl=1) + b"t" + h("b1 61") + bytes((byte,)) + b"\x00" * 16
    error = _error(data)
    assert error.kind is FormatErrorKind.RESERVED_DELTA
    assert error.offset == 7
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize("delta_nibble", range(15))
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_length_nibble_15(delta_nibble: int, mtype: Type) -> None:
    data = header(mtype) + bytes(((delta_nibble << 4) | 0x0F,)) + b"\x00" * 16
    error = _error(data)
    assert error.kind is FormatErrorKind.RESERVED_LENGTH
    assert error.offset == 4
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize(
    "tail", [pytest.param("ff", id="no-options"), pytest.param("b1 61 ff", id="after-option")]
)
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_payload_marker_with_nothing_after_it(tail: str, mtype: Type) -> None:
    data = header(mtype, code=CONTENT) + h(tail)
    error = _error(data)
    assert error.kind is FormatErrorKind.EMPTY_PAYLOAD
    assert error.offset == len(data)
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("01 aa", id="token"),
        pytest.param("01", id="token-length-only"),
        pytest.param("00 b1 61", id="option"),
        pytest.param("00 ff 70", id="payload"),
        pytest.param("00 ff", id="payload-marker"),
        pytest.param("08 0102030405060708 b1 61 ff 70", id="everything"),
    ],
)
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_empty_message_with_content(content: str, mtype: Type) -> None:
    raw = h(content)
    tkl, rest = raw[0], raw[1:]
    data = header(mtype, tkl=tkl, code=Code.EMPTY, mid=0xBEEF) + rest
    error = _error(data)
    assert error.kind is FormatErrorKind.NONEMPTY_EMPTY_MESSAGE
    _check_reset(error, mtype, 0xBEEF)


@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_empty_message_with_a_reserved_token_length_reports_the_token_length(
    mtype: Type,
) -> None:
    error = _error(header(mtype, tkl=9, code=Code.EMPTY))
    assert error.kind is FormatErrorKind.BAD_TOKEN_LENGTH
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize(("tkl", "present"), [(1, 0), (4, 3), (8, 0), (8, 7)])
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_truncated_inside_the_token(tkl: int, present: int, mtype: Type) -> None:
    data = header(mtype, tkl=tkl) + b"\x11" * present
    error = _error(data)
    assert error.kind is FormatErrorKind.TRUNCATED
    assert error.offset == len(data)
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("d0", id="13-form-no-byte"),
        pytest.param("e0", id="14-form-no-byte"),
        pytest.param("e0 01", id="14-form-one-byte"),
        pytest.param("b1 61 d5", id="after-an-option"),
    ],
)
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_truncated_inside_an_extended_delta(tail: str, mtype: Type) -> None:
    data = header(mtype) + h(tail)
    error = _error(data)
    assert error.kind is FormatErrorKind.TRUNCATED
    assert error.offset == len(data)
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("0d", id="13-form-no-byte"),
        pytest.param("0e", id="14-form-no-byte"),
        pytest.param("0e 00", id="14-form-one-byte"),
        pytest.param("dd 05", id="after-extended-delta"),
        pytest.param("ee 00 05 00", id="after-14-form-delta"),
    ],
)
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_truncated_inside_an_extended_length(tail: str, mtype: Type) -> None:
    data = header(mtype) + h(tail)
    error = _error(data)
    assert error.kind is FormatErrorKind.TRUNCATED
    assert error.offset == len(data)
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("03 aa", id="short-value"),
        pytest.param("01", id="no-value"),
        pytest.param("0d 00" + "aa" * 12, id="13-byte-value"),
        pytest.param("0e 00 00" + "aa" * 268, id="269-byte-value"),
        pytest.param("b1 61 32 61", id="second-option"),
    ],
)
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_truncated_inside_an_option_value(tail: str, mtype: Type) -> None:
    data = header(mtype) + h(tail)
    error = _error(data)
    assert error.kind is FormatErrorKind.TRUNCATED
    assert error.offset == len(data)
    _check_reset(error, mtype, 0x1234)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("e0 ff ff", id="one-delta-65804"),
        pytest.param("e0 fe f3", id="one-delta-65536"),
        pytest.param("e0 fe f2 10", id="65535-then-delta-1"),
        pytest.param("b0 e0 fe e8", id="11-then-delta-65525"),
        pytest.param("e0 fe f2 e1 ff ff 61 ff 70", id="65535-then-big-delta-with-payload"),
    ],
)
@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_option_number_beyond_65535(tail: str, mtype: Type) -> None:
    data = header(mtype) + h(tail)
    error = _error(data)
    assert error.kind is FormatErrorKind.OPTION_NUMBER_TOO_LARGE
    _check_reset(error, mtype, 0x1234)


def test_option_number_65535_is_still_fine() -> None:
    assert decode(header(CON) + h("e0 fe f2 00")).opt.raw_items == [(65535, b""), (65535, b"")]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="0-bytes"),
        pytest.param(h("40"), id="1-byte"),
        pytest.param(h("40 01"), id="2-bytes"),
        pytest.param(h("40 01 7d"), id="3-bytes"),
        pytest.param(h("60 00 7d"), id="3-bytes-ack"),
        pytest.param(h("c0 01 7d"), id="3-bytes-version-3"),
    ],
)
def test_fewer_than_four_bytes(data: bytes) -> None:
    error = _error(data)
    assert error.kind is FormatErrorKind.TOO_SHORT
    assert error.offset == len(data)
    assert error.mtype is None
    assert error.mid is None
    assert error.should_reset is False  # no MID to reset
    assert reset_for(error) is None


def test_format_error_is_a_remote_protocol_error_with_a_readable_message() -> None:
    error = _error(header(CON, tkl=9, mid=0x7D34))
    assert "CON" in str(error)
    assert str(0x7D34) in str(error)
    assert "token length" in str(error)
    assert isinstance(error, RemoteProtocolError)
    assert not isinstance(error, LocalProtocolError)


def test_reset_for_a_con_encodes_to_a_four_byte_rst() -> None:
    error = _error(header(CON, tkl=15, mid=0xAD7C))
    rst = reset_for(error)
    assert rst is not None
    assert encode(rst) == APPENDIX_A[15][1] == h("70 00 ad 7c")


# --- option values that break their registered length or format ------------------------


def _decode_kept(items: list[tuple[int, bytes]]) -> Message:
    wire = encode(Message(code=CONTENT, mtype=ACK, mid=9, token=b"\x01", opt=Options(items)))
    decoded = decode(wire)
    assert decoded.opt.raw_items == items
    assert encode(decoded) == wire
    return decoded


def test_three_byte_content_format() -> None:
    decoded = _decode_kept([(12, b"\x00\x00\x32")])
    assert decoded.opt.content_format is None
    assert decoded.opt.malformed() == (OptionNumber.CONTENT_FORMAT,)


def test_five_byte_max_age() -> None:
    decoded = _decode_kept([(14, b"\x00\x00\x00\x00\x3c")])
    assert decoded.opt.max_age is None
    assert decoded.opt.malformed() == (OptionNumber.MAX_AGE,)


def test_non_utf8_uri_path() -> None:
    decoded = _decode_kept([(11, b"ok"), (11, b"\xff\xfe"), (11, b"\xc3\xa9")])
    assert decoded.opt.uri_path == ("ok", "é")  # the bad segment reads as absent
    assert decoded.opt.malformed() == (OptionNumber.URI_PATH,)


def test_non_utf8_uri_host() -> None:
    decoded = _decode_kept([(3, b"\x80host")])
    assert decoded.opt.uri_host is None
    assert decoded.opt.malformed() == (OptionNumber.URI_HOST,)


def test_nine_byte_etag() -> None:
    decoded = _decode_kept([(4, b"123456789")])
    assert decoded.opt.etag == ()
    assert decoded.opt.malformed() == (OptionNumber.ETAG,)


def test_zero_length_etag_and_uri_host() -> None:
    decoded = _decode_kept([(3, b""), (4, b"")])
    assert decoded.opt.uri_host is None
    assert decoded.opt.etag == ()
    assert decoded.opt.malformed() == (OptionNumber.URI_HOST, OptionNumber.ETAG)


def test_second_content_format() -> None:
    # §5.4.5: the supernumerary (second) occurrence is treated as unrecognized;
    # the first one keeps its meaning.
    decoded = _decode_kept([(12, b""), (12, b"\x32")])
    assert decoded.opt.content_format is ContentFormat.TEXT
    assert decoded.opt.malformed() == (OptionNumber.CONTENT_FORMAT,)


def test_second_content_format_after_a_bad_first_one() -> None:
    decoded = _decode_kept([(12, b"\x00\x00\x32"), (12, b"\x32")])
    assert decoded.opt.content_format is None
    assert decoded.opt.malformed() == (OptionNumber.CONTENT_FORMAT,)


def test_if_none_match_with_a_value() -> None:
    decoded = _decode_kept([(5, b"\x01")])
    assert decoded.opt.if_none_match is False
    assert decoded.opt.malformed() == (OptionNumber.IF_NONE_MATCH,)


def test_four_byte_block2_and_block1() -> None:
    decoded = _decode_kept([(23, b"\x00\x00\x00\x16"), (27, b"\x01\x02\x03\x04")])
    assert decoded.opt.block2 is None
    assert decoded.opt.block1 is None
    assert decoded.opt.malformed() == (OptionNumber.BLOCK2, OptionNumber.BLOCK1)


def test_three_byte_uri_port_and_four_byte_observe() -> None:
    decoded = _decode_kept([(6, b"\x00\x00\x00\x01"), (7, b"\x00\x16\x33")])
    assert decoded.opt.observe is None
    assert decoded.opt.uri_port is None
    assert decoded.opt.malformed() == (OptionNumber.OBSERVE, OptionNumber.URI_PORT)


def test_well_formed_values_alongside_malformed_ones_still_read() -> None:
    decoded = _decode_kept(
        [(4, b"\x01\x02"), (4, b"0123456789"), (11, b"a"), (14, b"\x3c"), (23, b"\x16")]
    )
    assert decoded.opt.etag == (b"\x01\x02",)
    assert decoded.opt.uri_path == ("a",)
    assert decoded.opt.max_age == 60
    assert decoded.opt.block2 == BlockValue(1, False, 6)
    assert decoded.opt.malformed() == (OptionNumber.ETAG,)


# --- encode errors ---------------------------------------------------------------------------


def test_encode_requires_a_message_type() -> None:
    with pytest.raises(MessageEncodeError, match="mtype"):
        encode(Message(code=GET, mid=1))


def test_encode_requires_a_message_id() -> None:
    with pytest.raises(MessageEncodeError, match="message ID"):
        encode(Message(code=GET, mtype=CON))


@pytest.mark.parametrize("mid", [-1, 0x10000, 1 << 40])
def test_encode_rejects_a_message_id_out_of_range(mid: int) -> None:
    with pytest.raises(ValueError, match="message ID"):
        Message(code=GET, mtype=CON, mid=mid)
    message = Message(code=GET, mtype=CON, mid=1)
    message.mid = mid
    with pytest.raises(MessageEncodeError, match="message ID"):
        encode(message)


def test_encode_rejects_a_token_over_8_bytes() -> None:
    with pytest.raises(ValueError, match="token"):
        Message(code=GET, mtype=CON, mid=1, token=b"123456789")
    message = Message(code=GET, mtype=CON, mid=1)
    message.token = b"123456789"
    with pytest.raises(MessageEncodeError, match="token"):
        encode(message)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"token": b"t"}, id="token"),
        pytest.param({"payload": b"p"}, id="payload"),
        pytest.param({"opt": Options([(2, b"")])}, id="option"),
        pytest.param({"observe": 0}, id="typed-option"),
    ],
)
def test_encode_rejects_an_empty_message_with_content(content: dict[str, object]) -> None:
    message = Message(code=Code.EMPTY, mtype=CON, mid=1, **content)
    with pytest.raises(MessageEncodeError, match="Empty"):
        encode(message)


def test_encode_rejects_an_option_value_too_long() -> None:
    message = _one_option(2, b"\x00" * 65805)
    with pytest.raises(MessageEncodeError, match="too long"):
        encode(message)
    # ...also after other options and with a large delta.
    message = Message(code=GET, mtype=CON, mid=1, opt=Options([(1, b""), (60000, b"\x00" * 65805)]))
    with pytest.raises(MessageEncodeError, match="too long"):
        encode(message)


def test_encode_errors_are_local_protocol_errors() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Message(code=GET, mid=1))


def test_option_numbers_beyond_65535_cannot_be_added() -> None:
    with pytest.raises(ValueError, match="option number"):
        Options([(65536, b"")])
    with pytest.raises(ValueError, match="option number"):
        Options().add(-1, b"")


# --- Hypothesis round trips ---------------------------------------------------------------------

REGISTERED = sorted(spec.number for spec in registered_options())
BOUNDARY_NUMBERS = [0, 1, 12, 13, 14, 268, 269, 270, 281, 2048, 2049, 65000, 65001, 65534, 65535]

option_numbers = st.one_of(
    st.sampled_from(REGISTERED),
    st.sampled_from(BOUNDARY_NUMBERS),
    st.integers(0, 300),
    st.integers(0, 0xFFFF),
)
option_values = st.one_of(
    st.binary(max_size=16),
    st.binary(min_size=11, max_size=15),  # around the 12/13 nibble boundary
    st.binary(min_size=260, max_size=300),  # around the 268/269 boundary
)
payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=64),
    st.binary(min_size=1000, max_size=1100),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    code = draw(st.one_of(st.integers(0, 255), st.sampled_from([0, GET, CONTENT])))
    mtype = draw(st.sampled_from(ALL_TYPES))
    mid = draw(st.integers(0, 0xFFFF))
    if code == 0:
        return Message(code=code, mtype=mtype, mid=mid)
    token = draw(st.binary(max_size=8))
    items = draw(st.lists(st.tuples(option_numbers, option_values), max_size=8))
    payload = draw(payloads)
    return Message(
        code=code, mtype=mtype, mid=mid, token=token, payload=payload, opt=Options(items)
    )


@settings(deadline=None, max_examples=300)
@given(messages())
def test_message_round_trip(message: Message) -> None:
    wire = encode(message)
    decoded = decode(wire)
    assert decoded == message
    assert decoded.code is message.code
    assert decoded.mtype is message.mtype
    assert encode(decoded) == wire


@settings(deadline=None, max_examples=150)
@given(st.lists(st.tuples(option_numbers, option_values), max_size=10))
def test_option_order_round_trip(items: list[tuple[int, bytes]]) -> None:
    wire = encode(Message(code=GET, mtype=CON, mid=1, opt=Options(items)))
    decoded = decode(wire).opt
    assert [n for n, _ in decoded] == sorted(n for n, _ in items)
    for number in {n for n, _ in items}:
        assert decoded.get_all(number) == tuple(v for n, v in items if n == number)


def _mutate(wire: bytes, position: int, value: int, how: int) -> bytes:
    if not wire:
        return bytes((value,))
    position %= len(wire) + 1
    if how == 0:  # truncate
        return wire[:position]
    if how == 1:  # overwrite one byte
        index = position % len(wire)
        return wire[:index] + bytes((value,)) + wire[index + 1 :]
    if how == 2:  # insert one byte
        return wire[:position] + bytes((value,)) + wire[position:]
    index = position % len(wire)  # delete one byte
    return wire[:index] + wire[index + 1 :]


headers = st.builds(
    lambda mtype, tkl, code, mid: bytes((0x40 | (mtype << 4) | tkl, code, mid >> 8, mid & 0xFF)),
    st.integers(0, 3),
    st.integers(0, 8),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
)
datagrams = st.one_of(
    st.binary(max_size=48),
    st.builds(bytes.__add__, headers, st.binary(max_size=48)),
    messages().map(encode),
    st.builds(
        _mutate,
        messages().map(encode),
        st.integers(0, 1 << 16),
        st.integers(0, 255),
        st.integers(0, 3),
    ),
)


@settings(deadline=None, max_examples=400)
@given(datagrams)
def test_bytes_round_trip(data: bytes) -> None:
    try:
        message = decode(data)
    except MessageFormatError as error:
        event(f"error: {error.kind.name}")
        _check_error_invariants(error, data)
        return
    event("decoded")
    wire = encode(message)
    # Exact: the codec has no non-minimal forms to normalize (see the module docstring).
    assert wire == data
    assert encode(decode(wire)) == wire
    assert decode(wire) == message


# --- input types, the remote of Empty messages, exact error offsets -----------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_decoded_fields_are_bytes_whatever_the_input(kind: type) -> None:
    wire = bytes.fromhex("44 45 12 34 aa bb cc dd b1 78 ff 68 69")  # token, Uri-Path, payload
    message = decode(kind(wire), remote="r")
    assert message == decode(wire, remote="r")
    assert type(message.token) is bytes
    assert type(message.payload) is bytes
    assert all(type(value) is bytes for _, value in message.opt.raw_items)
    assert (message.token, message.payload, message.opt.uri_path) == (
        b"\xaa\xbb\xcc\xdd",
        b"hi",
        ("x",),
    )
    hash(message.token + message.payload)  # usable as keys, as bytes are


@pytest.mark.parametrize("first", [0x40, 0x50, 0x60, 0x70])  # CON (ping), NON, ACK, RST
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_a_decoded_empty_message_keeps_its_remote(first: int, kind: type) -> None:
    remote = ("192.0.2.7", 61616)
    message = decode(kind(bytes((first, 0, 0x12, 0x34))), remote)
    assert message.code is Code.EMPTY
    assert message.mid == 0x1234
    assert message.remote is remote


#: (datagram, kind, offset): where decoding stops, for every way a datagram can fail.
FAILURES = [
    ("", FormatErrorKind.TOO_SHORT, 0),
    ("40", FormatErrorKind.TOO_SHORT, 1),
    ("40 01 12", FormatErrorKind.TOO_SHORT, 3),
    ("80 01 12 34", FormatErrorKind.UNKNOWN_VERSION, 0),
    ("49 01 12 34", FormatErrorKind.BAD_TOKEN_LENGTH, 0),
    ("40 00 12 34 ff", FormatErrorKind.NONEMPTY_EMPTY_MESSAGE, 4),
    ("41 00 12 34 aa", FormatErrorKind.NONEMPTY_EMPTY_MESSAGE, 4),
    ("44 01 12 34 aa bb", FormatErrorKind.TRUNCATED, 6),  # token cut short
    ("41 01 12 34 aa ff", FormatErrorKind.EMPTY_PAYLOAD, 6),
    ("41 01 12 34 aa b3 61 62", FormatErrorKind.TRUNCATED, 8),  # value cut short
    ("41 01 12 34 aa b1 78 f0", FormatErrorKind.RESERVED_DELTA, 7),  # the second option
    ("41 01 12 34 aa b1 78 0f", FormatErrorKind.RESERVED_LENGTH, 7),
    ("41 01 12 34 aa b1 78 d0", FormatErrorKind.TRUNCATED, 8),  # 1-byte delta missing
    ("41 01 12 34 aa b1 78 1e 00", FormatErrorKind.TRUNCATED, 9),  # 2-byte length cut
    ("41 01 12 34 aa b1 78 e0 ff", FormatErrorKind.TRUNCATED, 9),  # 2-byte delta cut
    ("41 01 12 34 aa b0 e0 ff 00", FormatErrorKind.OPTION_NUMBER_TOO_LARGE, 6),
]


@pytest.mark.parametrize(("datagram", "kind", "offset"), FAILURES)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_format_errors_report_the_exact_offset(
    datagram: str, kind: FormatErrorKind, offset: int, wrap: type
) -> None:
    data = bytes.fromhex(datagram)
    with pytest.raises(MessageFormatError) as caught:
        decode(wrap(data))
    assert (caught.value.kind, caught.value.offset) == (kind, offset)
    if len(data) >= 4 and data[0] >> 6 == 1:  # the header was read: type and MID known
        assert caught.value.mid == 0x1234
        assert caught.value.mtype is Type((data[0] >> 4) & 3)
