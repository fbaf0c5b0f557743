"""Byte-level interoperability of :mod:`coap_trio.codec` with aiocoap's codec.

Every message is checked in both directions: encoded by coap_trio and decoded
by aiocoap, and encoded by aiocoap and decoded by coap_trio. The fields compared
are the version, type and code (as ints), the message ID, the token, the payload
and the complete option list as ``(number, raw value bytes)`` pairs in wire
order (for aiocoap: each option's ``.number`` and ``.encode()``). Both encoders
must produce the canonical form (options sorted by number, repeated options in
insertion order, minimal delta/length fields, no payload marker without a
payload), so the datagrams must be byte-for-byte identical too.

Where aiocoap (0.4.17) normalizes or rejects something, generation is restricted
and the reason is given next to the restriction; where the two codecs disagree on
malformed input, :data:`DIVERGENCES` records it explicitly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.optiontypes
import pytest
from aiocoap.numbers.optionnumbers import OptionNumber as AioOptionNumber
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.block import BlockValue
from coap_trio.codec import decode, encode
from coap_trio.errors import MessageFormatError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type

Fields = tuple[int, int, int, int, bytes, list[tuple[int, bytes]], bytes]
RawOptions = tuple[tuple[int, bytes], ...]

# --- adapters ------------------------------------------------------------------

# aiocoap deprecates passing mid/mtype/token to its Message constructor (it
# wants its message layer to manage them); a codec test has to set them.
_AIO_CONSTRUCTOR_DEPRECATION = r"Initializing messages with (an MID|an mtype|a token) is deprecated"


def aio_message(
    *,
    mtype: int,
    code: int,
    mid: int,
    token: bytes = b"",
    payload: bytes = b"",
    **typed: Any,
) -> Any:
    """An outgoing aiocoap message, silencing only the header-field deprecations."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_AIO_CONSTRUCTOR_DEPRECATION, category=DeprecationWarning
        )
        return aiocoap.Message(
            mtype=mtype, code=code, mid=mid, token=token, payload=payload, **typed
        )


def aio_add_raw(message: Any, options: Iterable[tuple[int, bytes]]) -> None:
    for number, raw in options:
        message.opt.add_option(AioOptionNumber(number).create_option(decode=raw))


def trio_add_raw(message: Message, options: Iterable[tuple[int, bytes]]) -> None:
    for number, raw in options:
        message.opt.add(number, raw)


def aio_fields(message: Any) -> Fields:
    return (
        message.version,
        int(message.mtype),
        int(message.code),
        message.mid,
        message.token,
        [(int(option.number), option.encode()) for option in message.opt.option_list()],
        message.payload,
    )


def trio_fields(message: Message) -> Fields:
    # coap_trio's Message has no version field: decode() refuses anything but
    # version 1 and encode() always writes 1 (checked on the bytes separately).
    assert message.mtype is not None
    assert message.mid is not None
    return (
        1,
        int(message.mtype),
        int(message.code),
        message.mid,
        message.token,
        [(int(number), raw) for number, raw in message.opt],
        message.payload,
    )


def expected_fields(
    mtype: int, code: int, mid: int, token: bytes, options: RawOptions, payload: bytes
) -> Fields:
    return (1, int(mtype), int(code), mid, token, list(options), payload)


def check_both_directions(trio_msg: Message, aio_msg: Any, expected: Fields) -> tuple[Any, Message]:
    """Encode with each library, decode with the other, compare everything.

    Returns (aiocoap's decoding of coap_trio's bytes, coap_trio's decoding of
    aiocoap's bytes) for further checks.
    """
    trio_bytes = encode(trio_msg)
    aio_bytes = aio_msg.encode()
    assert trio_bytes[0] >> 6 == 1
    # both sides built the message we meant
    assert trio_fields(trio_msg) == expected
    assert aio_fields(aio_msg) == expected
    # coap_trio -> aiocoap
    by_aio = aiocoap.Message.decode(trio_bytes)
    assert aio_fields(by_aio) == expected
    # aiocoap -> coap_trio
    by_trio = decode(aio_bytes)
    assert trio_fields(by_trio) == expected
    # canonical form: identical datagrams
    assert trio_bytes == aio_bytes
    return by_aio, by_trio


# --- typed views -----------------------------------------------------------------

# The typed option attributes both libraries have, with the value shape they
# are compared in (block options as (num, more, szx), content formats as int).
_REPEATED = {
    "if_match",
    "etag",
    "location_path",
    "uri_path",
    "uri_query",
    "location_query",
    "request_tag",
}
_FLAGS = {"if_none_match", "edhoc"}
_BLOCKS = {"block1", "block2"}
_FORMATS = {"content_format", "accept"}
TYPED_NAMES = (
    "if_match",
    "uri_host",
    "etag",
    "if_none_match",
    "observe",
    "uri_port",
    "location_path",
    "oscore",
    "uri_path",
    "content_format",
    "max_age",
    "uri_query",
    "hop_limit",
    "accept",
    "location_query",
    "edhoc",
    "block2",
    "block1",
    "size2",
    "proxy_uri",
    "proxy_scheme",
    "size1",
    "echo",
    "no_response",
    "request_tag",
)


def _absent(name: str) -> object:
    if name in _REPEATED:
        return ()
    if name in _FLAGS:
        return False
    return None


def trio_set(message: Message, name: str, value: object) -> None:
    if name in _BLOCKS:
        assert isinstance(value, tuple)
        value = BlockValue(*value)
    setattr(message.opt, name, value)


def aio_set(message: Any, name: str, value: object) -> None:
    # aiocoap's `etag` is the single-ETag view of responses; `etags` is the list.
    setattr(message.opt, "etags" if name == "etag" else name, value)


def trio_view(message: Message, name: str) -> object:
    value = getattr(message.opt, name)
    if value is None:
        return None
    if name in _BLOCKS:
        return (value.num, value.more, value.szx)
    if name in _FORMATS:
        return int(value)
    return value


def aio_view(message: Any, name: str) -> object:
    value = getattr(message.opt, "etags" if name == "etag" else name)
    if value is None:
        return None
    if name in _BLOCKS:
        return (value.block_number, bool(value.more), value.size_exponent)
    if name in _FORMATS:
        return int(value)
    if name in _REPEATED:
        return tuple(value)
    return value


def check_typed_views(by_aio: Any, by_trio: Message, typed: dict[str, object]) -> None:
    """Both decoders read every typed option the same, and as it was set."""
    for name in TYPED_NAMES:
        assert trio_view(by_trio, name) == aio_view(by_aio, name), name
        if name in typed:
            assert trio_view(by_trio, name) == typed[name], name


# --- hand-written typical messages ----------------------------------------------


@dataclass(frozen=True)
class Case:
    mtype: Type
    code: int
    mid: int
    token: bytes = b""
    payload: bytes = b""
    #: typed options, set through each library's attributes (neutral value shapes)
    typed: dict[str, object] = field(default_factory=dict)
    #: raw options, added through each library's raw interface, in this order
    raw: RawOptions = ()
    #: the option list on the wire, worked out by hand
    expected: RawOptions = ()


CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST
TOKEN4 = b"\x01\x02\x03\x04"
LONG_PROXY_URI = "coap://example.com/" + "p" * 281  # 300 bytes: 2-byte length extension

CASES: dict[str, Case] = {
    "get-host-path-query-accept": Case(
        CON,
        Code.GET,
        0x1234,
        TOKEN4,
        typed={
            "uri_host": "example.com",
            "uri_path": ("sensors", "temp"),
            "uri_query": ("unit=C", "precision=2"),
            "accept": 50,
        },
        expected=(
            (3, b"example.com"),
            (11, b"sensors"),
            (11, b"temp"),
            (15, b"unit=C"),
            (15, b"precision=2"),
            (17, b"\x32"),
        ),
    ),
    "get-host-port-well-known-core": Case(
        CON,
        Code.GET,
        1,
        b"\xaa",
        typed={"uri_host": "2001:db8::1", "uri_port": 61616, "uri_path": (".well-known", "core")},
        expected=((3, b"2001:db8::1"), (7, b"\xf0\xb0"), (11, b".well-known"), (11, b"core")),
    ),
    "get-empty-segments-unicode": Case(
        NON,
        Code.GET,
        2,
        b"\x00",
        typed={"uri_path": ("a", "", "b\u00e9\u4e2d"), "uri_query": ("",), "accept": 0},
        expected=(
            (11, b"a"),
            (11, b""),
            (11, "b\u00e9\u4e2d".encode()),
            (15, b""),
            (17, b""),
        ),
    ),
    "observe-register": Case(
        CON,
        Code.GET,
        3,
        b"\x0b\x5e",
        typed={"observe": 0, "uri_path": ("temp",), "accept": 0},
        expected=((6, b""), (11, b"temp"), (17, b"")),
    ),
    "observe-deregister": Case(
        CON,
        Code.GET,
        4,
        b"\x0b\x5e",
        typed={"observe": 1, "uri_path": ("temp",)},
        expected=((6, b"\x01"), (11, b"temp")),
    ),
    "observe-notification": Case(
        NON,
        Code.CONTENT,
        0xFFFE,
        b"\x0b\x5e",
        b"22.5 C",
        typed={"observe": 70000, "content_format": 0, "max_age": 30},
        expected=((6, b"\x01\x11\x70"), (12, b""), (14, b"\x1e")),
    ),
    "observe-max-sequence": Case(
        CON,
        Code.CONTENT,
        0xFFFF,
        b"\x0b\x5e",
        b"x",
        typed={"observe": 0xFFFFFF},
        expected=((6, b"\xff\xff\xff"),),
    ),
    "block2-response": Case(
        ACK,
        Code.CONTENT,
        0x0101,
        bytes(range(1, 9)),
        bytes(range(256)) * 4,
        typed={
            "etag": (TOKEN4,),
            "content_format": 42,
            "block2": (2, True, 6),
            "size2": 4000,
        },
        expected=((4, TOKEN4), (12, b"\x2a"), (23, b"\x2e"), (28, b"\x0f\xa0")),
    ),
    "block2-request-late-negotiation": Case(
        CON,
        Code.GET,
        5,
        TOKEN4,
        typed={"uri_path": ("big",), "block2": (0, False, 2)},
        expected=((11, b"big"), (23, b"\x02")),
    ),
    "block2-zero-is-empty-uint": Case(
        CON,
        Code.GET,
        6,
        TOKEN4,
        typed={"block2": (0, False, 0)},
        expected=((23, b""),),
    ),
    "block2-largest-num": Case(
        CON,
        Code.GET,
        7,
        TOKEN4,
        typed={"block2": (0xFFFFF, False, 6)},
        expected=((23, b"\xff\xff\xf6"),),
    ),
    "block2-bert": Case(
        ACK,
        Code.CONTENT,
        8,
        TOKEN4,
        bytes(2048),
        typed={"block2": (3, True, 7)},
        expected=((23, b"\x3f"),),
    ),
    "block1-request": Case(
        CON,
        Code.PUT,
        9,
        b"\x42",
        b"x" * 512,
        typed={
            "uri_path": ("upload",),
            "content_format": 60,
            "block1": (1000, True, 5),
            "size1": 100000,
            "request_tag": (b"\xaa\xbb",),
        },
        expected=(
            (11, b"upload"),
            (12, b"\x3c"),
            (27, b"\x3e\x8d"),
            (60, b"\x01\x86\xa0"),
            (292, b"\xaa\xbb"),
        ),
    ),
    "block1-continue": Case(
        ACK,
        Code.CONTINUE,
        9,
        b"\x42",
        typed={"block1": (1000, True, 5)},
        expected=((27, b"\x3e\x8d"),),
    ),
    "block1-request-entity-too-large": Case(
        ACK,
        Code.REQUEST_ENTITY_TOO_LARGE,
        10,
        b"\x42",
        typed={"block1": (0, True, 4), "size1": 0xFFFFFFFF},
        expected=((27, b"\x0c"), (60, b"\xff\xff\xff\xff")),
    ),
    "etag-validation-request": Case(
        CON,
        Code.GET,
        11,
        TOKEN4,
        typed={"etag": (b"\x01", bytes(range(1, 9))), "uri_path": ("r",)},
        expected=((4, b"\x01"), (4, bytes(range(1, 9))), (11, b"r")),
    ),
    "valid-response": Case(
        ACK,
        Code.VALID,
        11,
        TOKEN4,
        typed={"etag": (b"\xca\xfe",), "max_age": 0xFFFFFFFF},
        expected=((4, b"\xca\xfe"), (14, b"\xff\xff\xff\xff")),
    ),
    "if-match-put": Case(
        CON,
        Code.PUT,
        12,
        TOKEN4,
        b'{"on":true}',
        typed={"if_match": (b"\x01\x02", b""), "uri_path": ("cfg",), "content_format": 50},
        expected=((1, b"\x01\x02"), (1, b""), (11, b"cfg"), (12, b"\x32")),
    ),
    "if-none-match-put": Case(
        CON,
        Code.PUT,
        13,
        TOKEN4,
        b"new",
        typed={"if_none_match": True, "uri_path": ("new",)},
        expected=((5, b""), (11, b"new")),
    ),
    "precondition-failed": Case(ACK, Code.PRECONDITION_FAILED, 13, TOKEN4),
    "created-location": Case(
        ACK,
        Code.CREATED,
        14,
        TOKEN4,
        typed={"location_path": ("rd", "4521"), "location_query": ("lt=3600", "ep=node1")},
        expected=((8, b"rd"), (8, b"4521"), (20, b"lt=3600"), (20, b"ep=node1")),
    ),
    "proxy-uri": Case(
        CON,
        Code.GET,
        15,
        TOKEN4,
        typed={"proxy_uri": "coap://example.com:5683/a/b?c=d"},
        expected=((35, b"coap://example.com:5683/a/b?c=d"),),
    ),
    "proxy-uri-300-bytes": Case(
        CON,
        Code.GET,
        16,
        TOKEN4,
        typed={"proxy_uri": LONG_PROXY_URI, "hop_limit": 16},
        expected=((16, b"\x10"), (35, LONG_PROXY_URI.encode())),
    ),
    "proxy-scheme": Case(
        CON,
        Code.GET,
        17,
        TOKEN4,
        typed={"uri_host": "example.com", "uri_path": ("x",), "proxy_scheme": "http"},
        expected=((3, b"example.com"), (11, b"x"), (39, b"http")),
    ),
    "no-response": Case(
        NON,
        Code.POST,
        18,
        TOKEN4,
        b"event",
        typed={"uri_path": ("log",), "no_response": 26},
        expected=((11, b"log"), (258, b"\x1a")),
    ),
    "no-response-zero": Case(
        NON,
        Code.POST,
        19,
        TOKEN4,
        typed={"no_response": 0},
        expected=((258, b""),),
    ),
    "echo-challenge": Case(
        ACK,
        Code.UNAUTHORIZED,
        20,
        TOKEN4,
        typed={"echo": b"\x5a" * 8},
        expected=((252, b"\x5a" * 8),),
    ),
    "echo-and-request-tags": Case(
        CON,
        Code.POST,
        21,
        TOKEN4,
        b"payload",
        typed={"uri_path": ("x",), "echo": bytes(range(40)), "request_tag": (b"", b"\x01" * 8)},
        expected=((11, b"x"), (252, bytes(range(40))), (292, b""), (292, b"\x01" * 8)),
    ),
    "oscore-request": Case(
        CON,
        Code.POST,
        22,
        TOKEN4,
        b"\x61\x2f\x10\x92\xf1\x77\x6f\x1c\x16\x68\xb3\x82\x5e",
        typed={"oscore": b"\x09\x14"},
        expected=((9, b"\x09\x14"),),
    ),
    "oscore-response-empty": Case(
        ACK,
        Code.CHANGED,
        22,
        TOKEN4,
        b"\xdb\xaa\xd1\xe9\xa7\xe7\xb6\x56",
        typed={"oscore": b""},
        expected=((9, b""),),
    ),
    "edhoc-flag": Case(
        CON,
        Code.POST,
        23,
        TOKEN4,
        b"\x01",
        typed={"oscore": b"\x09\x00", "edhoc": True},
        expected=((9, b"\x09\x00"), (21, b"")),
    ),
    "fetch-ipatch-methods": Case(
        CON,
        Code.FETCH,
        24,
        TOKEN4,
        b"\xa1\x01\x02",
        typed={"uri_path": ("q",), "content_format": 60, "accept": 60},
        expected=((11, b"q"), (12, b"\x3c"), (17, b"\x3c")),
    ),
    "ipatch": Case(
        CON,
        Code.iPATCH,
        25,
        TOKEN4,
        b"{}",
        typed={"content_format": 52},
        expected=((12, b"\x34"),),
    ),
    "delete": Case(
        CON, Code.DELETE, 26, TOKEN4, typed={"uri_path": ("x",)}, expected=((11, b"x"),)
    ),
    "deleted": Case(ACK, Code.DELETED, 26, TOKEN4),
    "changed-no-payload": Case(ACK, Code.CHANGED, 27, TOKEN4),
    "content-json": Case(
        CON,
        Code.CONTENT,
        28,
        TOKEN4,
        b'{"temp": 22.5, "u":1}',
        typed={"content_format": 50, "max_age": 60, "etag": (bytes(range(8)),)},
        expected=((4, bytes(range(8))), (12, b"\x32"), (14, b"\x3c")),
    ),
    "content-format-two-bytes": Case(
        ACK,
        Code.CONTENT,
        29,
        TOKEN4,
        b"\x00",
        typed={"content_format": 11542},
        expected=((12, b"\x2d\x16"),),
    ),
    "not-found-diagnostic": Case(ACK, Code.NOT_FOUND, 30, TOKEN4, b"Resource not found"),
    "bad-option-diagnostic": Case(ACK, Code.BAD_OPTION, 31, TOKEN4, b"Unrecognized option 65001"),
    "service-unavailable": Case(
        NON,
        Code.SERVICE_UNAVAILABLE,
        32,
        TOKEN4,
        b"busy",
        typed={"max_age": 60},
        expected=((14, b"\x3c"),),
    ),
    "unregistered-response-code": Case(ACK, (4 << 5) | 30, 33, TOKEN4, b"?"),
    "unknown-elective-300-bytes": Case(
        CON,
        Code.GET,
        34,
        TOKEN4,
        typed={"uri_path": ("a",)},
        raw=((1000, b"\xab" * 300),),
        expected=((11, b"a"), (1000, b"\xab" * 300)),
    ),
    "unknown-critical": Case(
        CON,
        Code.GET,
        35,
        TOKEN4,
        raw=((65001, b""), (2051, b"\x01" * 12), (65535, bytes(range(13)))),
        expected=((2051, b"\x01" * 12), (65001, b""), (65535, bytes(range(13)))),
    ),
    "unknown-between-known": Case(
        CON,
        Code.GET,
        36,
        TOKEN4,
        typed={"uri_host": "h", "uri_path": ("p",)},
        raw=((2, b"el"), (10, b"\x00\xff"), (33, b"c" * 300)),
        expected=((2, b"el"), (3, b"h"), (10, b"\x00\xff"), (11, b"p"), (33, b"c" * 300)),
    ),
    # Deltas 13 (1-byte extension, smallest), 12 (largest nibble), 268 (1-byte
    # extension, largest), 269 (2-byte extension, smallest) and a long jump to
    # 65535. Option 13 is Uri-Path-Abbrev (a uint) in aiocoap, so its value is a
    # minimal uint.
    "delta-boundaries": Case(
        CON,
        Code.GET,
        37,
        TOKEN4,
        raw=((13, b"\x07"), (25, b"z"), (293, b"y"), (562, b"x"), (65535, b"w")),
        expected=((13, b"\x07"), (25, b"z"), (293, b"y"), (562, b"x"), (65535, b"w")),
    ),
    # Lengths 12, 13, 268, 269 (the same boundaries for the length field).
    "length-boundaries": Case(
        CON,
        Code.POST,
        38,
        TOKEN4,
        b"p",
        raw=(
            (1002, b"\x00" * 12),
            (1004, b"\x01" * 13),
            (1006, b"\x02" * 268),
            (1008, b"\x03" * 269),
        ),
        expected=(
            (1002, b"\x00" * 12),
            (1004, b"\x01" * 13),
            (1006, b"\x02" * 268),
            (1008, b"\x03" * 269),
        ),
    ),
    "reserved-option-numbers": Case(
        CON,
        Code.GET,
        39,
        TOKEN4,
        raw=((0, b""), (128, b"\x01")),
        expected=((0, b""), (128, b"\x01")),
    ),
    "repeated-non-repeatable": Case(
        ACK,
        Code.CONTENT,
        40,
        TOKEN4,
        b"{}",
        raw=((12, b"\x32"), (6, b"\x01"), (12, b""), (6, b"\x02")),
        expected=((6, b"\x01"), (6, b"\x02"), (12, b"\x32"), (12, b"")),
    ),
    "raw-added-out-of-order": Case(
        CON,
        Code.GET,
        41,
        TOKEN4,
        raw=((60, b"\x10"), (3, b"h"), (11, b"b"), (11, b"a")),
        expected=((3, b"h"), (11, b"b"), (11, b"a"), (60, b"\x10")),
    ),
    "empty-ack": Case(ACK, Code.EMPTY, 0x1234),
    "empty-rst": Case(RST, Code.EMPTY, 0),
    "empty-con-ping": Case(CON, Code.EMPTY, 0xFFFF),
    "empty-non": Case(NON, Code.EMPTY, 42),
}

for _length in range(9):
    CASES[f"token-{_length}-bytes-request"] = Case(
        CON,
        Code.GET,
        100 + _length,
        bytes(range(0xF0, 0xF0 + _length)),
        typed={"uri_path": ("t",)},
        expected=((11, b"t"),),
    )
    CASES[f"token-{_length}-bytes-response"] = Case(
        NON, Code.CONTENT, 200 + _length, b"\xff" * _length, b"body"
    )


def build_pair(case: Case) -> tuple[Message, Any]:
    trio_msg = Message(
        code=case.code, mtype=case.mtype, mid=case.mid, token=case.token, payload=case.payload
    )
    aio_msg = aio_message(
        mtype=case.mtype, code=case.code, mid=case.mid, token=case.token, payload=case.payload
    )
    for name, value in case.typed.items():
        trio_set(trio_msg, name, value)
        aio_set(aio_msg, name, value)
    trio_add_raw(trio_msg, case.raw)
    aio_add_raw(aio_msg, case.raw)
    return trio_msg, aio_msg


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_typical_message(case: Case) -> None:
    trio_msg, aio_msg = build_pair(case)
    expected = expected_fields(
        case.mtype, case.code, case.mid, case.token, case.expected, case.payload
    )
    by_aio, by_trio = check_both_directions(trio_msg, aio_msg, expected)
    check_typed_views(by_aio, by_trio, case.typed)


def test_typical_request_exact_bytes() -> None:
    """One datagram written out by hand, as a fixed point for both encoders."""
    trio_msg, aio_msg = build_pair(CASES["get-host-path-query-accept"])
    datagram = bytes.fromhex(
        "4401 1234 01020304"  # CON GET, TKL 4, MID 0x1234, token
        "3b 6578616d706c652e636f6d"  # Uri-Host (3) "example.com"
        "87 73656e736f7273"  # Uri-Path (11) "sensors"
        "04 74656d70"  # Uri-Path "temp"
        "46 756e69743d43"  # Uri-Query (15) "unit=C"
        "0b 707265636973696f6e3d32"  # Uri-Query "precision=2"
        "21 32"  # Accept (17) 50
    )
    assert encode(trio_msg) == datagram
    assert aio_msg.encode() == datagram


# --- generated messages: raw options --------------------------------------------

_AIO_UINT_FORMATS = (
    aiocoap.optiontypes.UintOption,
    aiocoap.optiontypes.ContentFormatOption,
    aiocoap.optiontypes.BlockOption,
)
# aiocoap parses the value of each option it knows (by *its* registry) and
# re-serializes it from the parsed value. Hence the restrictions:
#  * uint-like options (Uint, Content-Format and Block formats) come back in
#    minimal form, leading zero bytes dropped (RFC 7252 §3.2 allows receivers
#    to accept them, and coap_trio keeps them raw), so we generate minimal
#    uints only. This includes option 13, unregistered for coap_trio but
#    Uri-Path-Abbrev (uint) for aiocoap.
#  * string options are decoded as UTF-8 and aiocoap's decoder *raises*
#    (UnicodeDecodeError) on invalid UTF-8, so we generate valid UTF-8 only.
# Any other number is opaque for aiocoap and is round-tripped unchanged.
AIO_UINT_NUMBERS = frozenset(int(n) for n in AioOptionNumber if n.format in _AIO_UINT_FORMATS)
AIO_STRING_NUMBERS = frozenset(
    int(n) for n in AioOptionNumber if n.format is aiocoap.optiontypes.StringOption
)
KNOWN_NUMBERS = sorted({int(n) for n in AioOptionNumber} | {2049, 2053})

minimal_uints = st.one_of(
    st.just(b""),
    st.integers(1, 2**64 - 1).map(lambda v: v.to_bytes((v.bit_length() + 7) // 8, "big")),
)
utf8_values = st.one_of(
    st.text(max_size=75).map(str.encode),  # at most 300 bytes
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(
        str.encode
    ),
)
opaque_values = st.binary(max_size=300)


def option_value(number: int) -> st.SearchStrategy[bytes]:
    if number in AIO_UINT_NUMBERS:
        return minimal_uints
    if number in AIO_STRING_NUMBERS:
        return utf8_values
    return opaque_values


option_numbers = st.one_of(
    st.sampled_from(KNOWN_NUMBERS),
    st.integers(0, 0xFFFF),
    # around the delta/length extension thresholds
    st.sampled_from([0, 12, 13, 14, 268, 269, 270, 524, 525, 526, 0xFFFE, 0xFFFF]),
)
raw_options = st.lists(
    option_numbers.flatmap(lambda n: option_value(n).map(lambda v: (n, v))), max_size=12
)
tokens = st.binary(max_size=8)
mids = st.integers(0, 0xFFFF)
mtypes = st.sampled_from(list(Type))


@st.composite
def raw_messages(draw: st.DrawFn) -> tuple[Type, int, int, bytes, RawOptions, bytes]:
    """(mtype, code, mid, token, options in insertion order, payload)."""
    mtype = draw(mtypes)
    mid = draw(mids)
    if draw(st.integers(0, 9)) == 0:
        # An Empty message (0.00) carries nothing after the MID (RFC 7252
        # §4.1): coap_trio refuses to encode anything else; aiocoap would.
        return mtype, 0, mid, b"", (), b""
    code = draw(st.integers(1, 255))
    return (
        mtype,
        code,
        mid,
        draw(tokens),
        tuple(draw(raw_options)),
        draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=1100))),
    )


@settings(deadline=None, max_examples=400)
@given(raw_messages())
def test_generated_raw_messages(spec: tuple[Type, int, int, bytes, RawOptions, bytes]) -> None:
    mtype, code, mid, token, options, payload = spec
    trio_msg = Message(code=code, mtype=mtype, mid=mid, token=token, payload=payload)
    trio_add_raw(trio_msg, options)
    aio_msg = aio_message(mtype=mtype, code=code, mid=mid, token=token, payload=payload)
    aio_add_raw(aio_msg, options)
    # Wire order: ascending numbers, same-number values in the order added.
    in_wire_order = tuple(sorted(options, key=lambda item: item[0]))
    expected = expected_fields(mtype, code, mid, token, in_wire_order, payload)
    check_both_directions(trio_msg, aio_msg, expected)


# --- generated messages: typed options --------------------------------------------


def _utf8(max_bytes: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(min_size=min_size, max_size=max_bytes // 4),
        st.text(
            alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
            min_size=min_size,
            max_size=max_bytes,
        ),
    )


def _uint(byte_length: int) -> st.SearchStrategy[int]:
    return st.integers(0, 2 ** (8 * byte_length) - 1)


_blocks = st.tuples(st.integers(0, 2**20 - 1), st.booleans(), st.integers(0, 7))
_segments = st.lists(_utf8(255), max_size=4).map(tuple)

# Within coap_trio's registered length bounds (its typed setters enforce them;
# aiocoap does not check lengths, so nothing else needs restricting).
typed_options = st.fixed_dictionaries(
    {},
    optional={
        "if_match": st.lists(st.binary(max_size=8), max_size=3).map(tuple),
        "uri_host": _utf8(255, min_size=1),
        "etag": st.lists(st.binary(min_size=1, max_size=8), max_size=3).map(tuple),
        "if_none_match": st.booleans(),
        "observe": _uint(3),
        "uri_port": _uint(2),
        "location_path": _segments,
        "oscore": st.binary(max_size=255),
        "uri_path": _segments,
        "content_format": _uint(2),
        "max_age": _uint(4),
        "uri_query": _segments,
        "hop_limit": st.integers(1, 255),
        "accept": _uint(2),
        "location_query": _segments,
        "edhoc": st.booleans(),
        "block2": _blocks,
        "block1": _blocks,
        "size2": _uint(4),
        "proxy_uri": _utf8(1034, min_size=1),
        "proxy_scheme": _utf8(255, min_size=1),
        "size1": _uint(4),
        "echo": st.binary(min_size=1, max_size=40),
        "no_response": _uint(1),
        "request_tag": st.lists(st.binary(max_size=8), max_size=3).map(tuple),
    },
)


@settings(deadline=None, max_examples=200)
@given(mtypes, st.integers(1, 255), mids, tokens, typed_options, st.binary(max_size=64))
def test_generated_typed_messages(
    mtype: Type, code: int, mid: int, token: bytes, typed: dict[str, object], payload: bytes
) -> None:
    trio_msg = Message(code=code, mtype=mtype, mid=mid, token=token, payload=payload)
    aio_msg = aio_message(mtype=mtype, code=code, mid=mid, token=token, payload=payload)
    for name, value in typed.items():
        trio_set(trio_msg, name, value)
        aio_set(aio_msg, name, value)
    # No hand-written oracle here: the typed setters of both libraries must
    # produce the same raw option list, which both decoders then agree on.
    expected = aio_fields(aio_msg)
    by_aio, by_trio = check_both_directions(trio_msg, aio_msg, expected)
    check_typed_views(by_aio, by_trio, typed)
    for name in TYPED_NAMES:
        assert trio_view(by_trio, name) == typed.get(name, _absent(name)), name


# --- malformed datagrams ------------------------------------------------------------

#: Rejected by both decoders.
BOTH_REJECT: dict[str, bytes] = {
    "shorter-than-header": bytes.fromhex("4001 00"),
    "version-0": bytes.fromhex("0001 0001"),
    "version-2": bytes.fromhex("8001 0001"),
    "version-3": bytes.fromhex("c001 0001"),
    "delta-nibble-15": bytes.fromhex("4001 0001 f0"),
    "length-nibble-15": bytes.fromhex("4001 0001 0f"),
    "truncated-1-byte-delta": bytes.fromhex("4001 0001 d0"),
    "truncated-2-byte-delta": bytes.fromhex("4001 0001 e000"),
    "truncated-1-byte-length": bytes.fromhex("4001 0001 0d"),
    "truncated-2-byte-length": bytes.fromhex("4001 0001 0e01"),
    "truncated-value": bytes.fromhex("4001 0001 0301"),
}


@pytest.mark.parametrize("datagram", BOTH_REJECT.values(), ids=BOTH_REJECT.keys())
def test_malformed_rejected_by_both(datagram: bytes) -> None:
    with pytest.raises(MessageFormatError):
        decode(datagram)
    with pytest.raises(aiocoap.error.UnparsableMessage):
        aiocoap.Message.decode(datagram)


#: Real disagreements on malformed input (aiocoap 0.4.17): aiocoap accepts these
#: datagrams, coap_trio rejects them as RFC 7252 requires (the RFC section is given).
DIVERGENCES: dict[str, bytes] = {
    # §3: "payload marker followed by a zero-length payload MUST be processed
    # as a message format error"; aiocoap returns an empty payload.
    "payload-marker-without-payload": bytes.fromhex("4001 0001 ff"),
    # §4.1: an Empty message with any bytes after the MID is a format error;
    # aiocoap returns an Empty message with a token / payload.
    "empty-message-with-token": bytes.fromhex("4100 0001 aa"),
    "empty-message-with-payload": bytes.fromhex("4000 0001 ff01"),
    # §3: token lengths 9..15 are reserved and a format error; aiocoap reads a
    # 9..15-byte token.
    "token-length-9": bytes.fromhex("4901 0001") + bytes(9),
    "token-length-15": bytes.fromhex("4f01 0001") + bytes(15),
    # A token shorter than TKL announces; aiocoap takes what is there.
    "truncated-token": bytes.fromhex("4801 0001 0102"),
    # Option numbers above 65535 cannot exist (RFC 7252 §12.2 registry range);
    # aiocoap keeps adding deltas (here 65804 and 131608).
    "option-number-above-65535": bytes.fromhex("4001 0001 e0ffff e0ffff"),
}


@pytest.mark.parametrize("datagram", DIVERGENCES.values(), ids=DIVERGENCES.keys())
def test_known_divergence_aiocoap_lenient(datagram: bytes) -> None:
    with pytest.raises(MessageFormatError):
        decode(datagram)
    aiocoap.Message.decode(datagram)  # accepted by aiocoap 0.4.17


def test_known_divergence_invalid_utf8_in_string_option() -> None:
    """A Uri-Path that is not UTF-8: coap_trio keeps it raw (the typed view reads
    it as absent and ``opt.malformed()`` lists it, so a server can answer 4.02 per
    §5.4.1), aiocoap's decoder raises UnicodeDecodeError, not UnparsableMessage."""
    datagram = bytes.fromhex("4001 0001 b1c3")
    message = decode(datagram)
    assert list(message.opt) == [(11, b"\xc3")]
    assert message.opt.uri_path == ()
    assert message.opt.malformed() == (11,)
    with pytest.raises(UnicodeDecodeError):
        aiocoap.Message.decode(datagram)
