"""Tests for coap_trio.options (raw storage + typed accessors) and coap_trio.block."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.block import BERT_SZX, BlockValue
from coap_trio.numbers import ContentFormat, OptionNumber, registered_options
from coap_trio.options import Options, decode_uint, encode_uint, typed_option_names

# --- typed accessors round-trip through the RFC's raw encoding --------------------

# attribute: (typed value, raw values on the wire as the defining RFC encodes them)
ROUND_TRIPS: dict[str, tuple[Any, tuple[bytes, ...]]] = {
    "if_match": ((b"\x01\x02", b""), (b"\x01\x02", b"")),
    "uri_host": ("example.net", (b"example.net",)),
    "etag": ((b"\xaa", b"12345678"), (b"\xaa", b"12345678")),
    "if_none_match": (True, (b"",)),
    "observe": (0x123456, (b"\x12\x34\x56",)),
    "uri_port": (5683, (b"\x16\x33",)),
    "location_path": (("a", "\u00fc"), (b"a", b"\xc3\xbc")),
    "oscore": (b"\x09\x00", (b"\x09\x00",)),
    "uri_path": ((".well-known", "core"), (b".well-known", b"core")),
    "content_format": (ContentFormat.JSON, (b"\x32",)),
    "max_age": (60, (b"\x3c",)),
    "uri_query": (("a=1", "", "b"), (b"a=1", b"", b"b")),
    "hop_limit": (16, (b"\x10",)),
    "accept": (ContentFormat.CBOR, (b"\x3c",)),
    "q_block1": (BlockValue(1, True, 6), (b"\x1e",)),
    "location_query": (("x=y",), (b"x=y",)),
    "edhoc": (True, (b"",)),
    "block2": (BlockValue(0xFFFFF, True, 7), (b"\xff\xff\xff",)),
    "block1": (BlockValue(5, True, 2), (b"\x5a",)),
    "size2": (1024, (b"\x04\x00",)),
    "q_block2": ((BlockValue(0, False, 0), BlockValue(3, False, 6)), (b"", b"\x36")),
    "proxy_uri": ("coap://example.net/x", (b"coap://example.net/x",)),
    "proxy_scheme": ("coap", (b"coap",)),
    "size1": (2**32 - 1, (b"\xff\xff\xff\xff",)),
    "echo": (b"\x01" * 40, (b"\x01" * 40,)),
    "no_response": (26, (b"\x1a",)),
    "request_tag": ((b"", b"tag"), (b"", b"tag")),
    "ocf_accept_content_format_version": (2048, (b"\x08\x00",)),
    "ocf_content_format_version": (2048, (b"\x08\x00",)),
}


def _number(attribute: str) -> int:
    names = {name: number for number, name in typed_option_names().items()}
    return names[attribute]


def test_round_trip_table_covers_every_registered_option() -> None:
    assert set(ROUND_TRIPS) == {spec.attribute for spec in registered_options()}


@pytest.mark.parametrize("attribute", sorted(ROUND_TRIPS))
def test_typed_round_trip(attribute: str) -> None:
    value, raw = ROUND_TRIPS[attribute]
    number = _number(attribute)
    opt = Options()
    setattr(opt, attribute, value)
    assert opt.get_all(number) == raw
    assert getattr(opt, attribute) == value
    # Reading the same bytes as a decoder would hand them over.
    received = Options([(number, r) for r in raw])
    assert getattr(received, attribute) == value
    assert received == opt
    assert received.malformed() == ()


@pytest.mark.parametrize("attribute", sorted(ROUND_TRIPS))
def test_absent_options_read_as_absent(attribute: str) -> None:
    spec_value, _ = ROUND_TRIPS[attribute]
    absent = getattr(Options(), attribute)
    if isinstance(spec_value, tuple):
        assert absent == ()
    elif isinstance(spec_value, bool):
        assert absent is False
    else:
        assert absent is None


@pytest.mark.parametrize("attribute", sorted(ROUND_TRIPS))
def test_typed_options_can_be_removed(attribute: str) -> None:
    value, _ = ROUND_TRIPS[attribute]
    opt = Options([(2000, b"keep")])
    setattr(opt, attribute, value)
    delattr(opt, attribute)
    assert list(opt) == [(2000, b"keep")]
    setattr(opt, attribute, value)
    if isinstance(value, tuple):
        setattr(opt, attribute, ())
    elif isinstance(value, bool):
        setattr(opt, attribute, False)
    else:
        setattr(opt, attribute, None)
    assert list(opt) == [(2000, b"keep")]


def test_content_format_reads_as_registered_instance() -> None:
    opt = Options([(OptionNumber.CONTENT_FORMAT, b"\x00\x28")])
    assert opt.content_format is ContentFormat.LINKFORMAT
    assert opt.content_format.media_type == "application/link-format"
    opt.accept = 65000
    assert opt.accept == 65000
    assert isinstance(opt.accept, ContentFormat)
    assert not opt.accept.is_known()


def test_setting_a_single_option_replaces_it() -> None:
    opt = Options()
    opt.observe = 5
    opt.observe = 7
    assert opt.get_all(OptionNumber.OBSERVE) == (b"\x07",)


# --- uint encoding (RFC 7252 §3.2) -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (0, b""),
        (1, b"\x01"),
        (255, b"\xff"),
        (256, b"\x01\x00"),
        (65535, b"\xff\xff"),
        (65536, b"\x01\x00\x00"),
        (2**32 - 1, b"\xff\xff\xff\xff"),
    ],
)
def test_uint_minimal_encoding(value: int, raw: bytes) -> None:
    assert encode_uint(value) == raw
    assert decode_uint(raw) == value
    opt = Options()
    opt.max_age = value
    assert opt.get_all(OptionNumber.MAX_AGE) == (raw,)


def test_uint_leading_zeros_are_accepted_on_read() -> None:
    assert decode_uint(b"\x00") == 0
    assert decode_uint(b"\x00\x00\x01") == 1
    opt = Options([(OptionNumber.MAX_AGE, b"\x00\x00\x3c"), (OptionNumber.OBSERVE, b"\x00")])
    assert opt.max_age == 60
    assert opt.observe == 0
    assert Options([(OptionNumber.CONTENT_FORMAT, b"\x00\x32")]).content_format == 50
    assert Options([(OptionNumber.BLOCK2, b"\x00\x00\x16")]).block2 == BlockValue(1, False, 6)
    assert opt.malformed() == ()


def test_negative_uint_is_rejected() -> None:
    with pytest.raises(ValueError):
        encode_uint(-1)
    with pytest.raises(ValueError):
        Options().max_age = -1


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=2**64))
def test_uint_round_trip(value: int) -> None:
    raw = encode_uint(value)
    assert decode_uint(raw) == value
    assert raw[:1] != b"\x00"  # minimal: never a leading zero byte
    assert decode_uint(b"\x00" + raw) == value


# --- validation on set ------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("uri_host", ""),
        ("uri_host", "h" * 256),
        ("etag", (b"",)),
        ("etag", (b"x" * 9,)),
        ("if_match", (b"x" * 9,)),
        ("uri_port", 65536),
        ("observe", 2**24),
        ("content_format", 65536),
        ("accept", 65536),
        ("max_age", 2**32),
        ("size1", 2**32),
        ("size2", 2**32),
        ("hop_limit", 0),  # RFC 8768: exactly one byte
        ("hop_limit", 256),
        ("no_response", 256),
        ("uri_path", ("ok", "\u00e9" * 128)),  # 256 bytes of UTF-8
        ("uri_query", ("q" * 256,)),
        ("location_path", ("p" * 256,)),
        ("location_query", ("q" * 256,)),
        ("proxy_uri", ""),
        ("proxy_uri", "coap://h/" + "x" * 1026),
        ("proxy_scheme", ""),
        ("oscore", b"x" * 256),
        ("echo", b""),
        ("echo", b"x" * 41),
        ("request_tag", (b"x" * 9,)),
        ("ocf_content_format_version", 1),
    ],
)
def test_length_bound_violations_raise_and_keep_the_old_value(attribute: str, value: Any) -> None:
    old, raw = ROUND_TRIPS[attribute]
    opt = Options()
    setattr(opt, attribute, old)
    with pytest.raises(ValueError):
        setattr(opt, attribute, value)
    assert opt.get_all(_number(attribute)) == raw


def test_length_bounds_are_inclusive() -> None:
    opt = Options()
    opt.uri_host = "h" * 255
    opt.proxy_uri = "coap://h/" + "x" * 1025
    opt.echo = b"x"
    opt.etag = (b"x" * 8,)
    opt.uri_path = ("\u00e9" * 127 + "x",)
    assert len(opt.get_all(OptionNumber.PROXY_URI)[0]) == 1034
    assert opt.malformed() == ()


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("uri_host", b"example.net"),
        ("observe", "1"),
        ("observe", True),
        ("max_age", 1.5),
        ("oscore", "text"),
        ("uri_path", "abc"),
        ("uri_path", b"abc"),
        ("uri_path", ("a", b"b")),
        ("etag", b"\x01"),
        ("etag", ("not bytes",)),
    ],
)
def test_wrong_value_types_are_type_errors(attribute: str, value: Any) -> None:
    opt = Options()
    with pytest.raises(TypeError):
        setattr(opt, attribute, value)
    assert len(opt) == 0


# --- raw storage and wire order ----------------------------------------------------


def test_repeatable_options_keep_their_order() -> None:
    opt = Options()
    opt.uri_path = ("c", "a", "b", "a")
    assert opt.uri_path == ("c", "a", "b", "a")
    opt.etag = [b"\x02", b"\x01"]
    assert opt.etag == (b"\x02", b"\x01")


def test_insertion_keeps_wire_order_whatever_the_add_order() -> None:
    opt = Options()
    opt.add(15, b"q1")
    opt.add(11, b"p1")
    opt.add(3, b"host")
    opt.add(15, b"q2")
    opt.add(11, b"p2")
    opt.add(60, b"")
    opt.add(12, b"\x32")
    opt.add(11, b"p3")
    assert list(opt) == [
        (3, b"host"),
        (11, b"p1"),
        (11, b"p2"),
        (11, b"p3"),
        (12, b"\x32"),
        (15, b"q1"),
        (15, b"q2"),
        (60, b""),
    ]
    assert all(isinstance(number, OptionNumber) for number, _ in opt)
    assert opt.numbers() == (3, 11, 12, 15, 60)


def test_typed_setters_insert_in_wire_order() -> None:
    opt = Options()
    opt.size1 = 10
    opt.uri_query = ("q",)
    opt.uri_host = "h"
    opt.uri_path = ("p",)
    assert [int(n) for n, _ in opt] == [3, 11, 15, 60]


_ITEMS = st.lists(
    st.tuples(
        st.sampled_from([1, 3, 4, 11, 12, 15, 23, 60, 2000, 65535]),
        st.binary(max_size=4),
    ),
    max_size=12,
)


@settings(deadline=None)
@given(_ITEMS)
def test_wire_order_is_a_stable_sort_by_number(items: list[tuple[int, bytes]]) -> None:
    expected = sorted(items, key=lambda item: item[0])  # stable: repeats keep their order
    assert list(Options(items)) == expected
    opt = Options()
    for number, value in items:
        opt.add(number, value)
    assert list(opt) == expected
    assert len(opt) == len(items)
    for number in {n for n, _ in items}:
        assert opt.get_all(number) == tuple(v for n, v in items if n == number)


def test_add_validates_the_number_and_copies_byte_likes() -> None:
    opt = Options()
    with pytest.raises(ValueError):
        opt.add(-1, b"")
    with pytest.raises(ValueError):
        opt.add(0x10000, b"")
    buffer = bytearray(b"ab")
    opt.add(11, buffer)
    buffer[0] = ord("x")
    assert opt.get_all(11) == (b"ab",)
    assert type(opt.get_all(11)[0]) is bytes


def test_remove_and_replace() -> None:
    opt = Options([(11, b"a"), (11, b"b"), (15, b"q"), (3, b"h")])
    opt.remove(11)
    assert list(opt) == [(3, b"h"), (15, b"q")]
    opt.remove(11)  # removing an absent option is fine
    opt.replace(15, [b"x", b"y"])
    assert opt.get_all(15) == (b"x", b"y")
    opt.replace(15, [])
    assert 15 not in opt
    assert 3 in opt
    assert OptionNumber.URI_HOST in opt


def test_copy_is_independent() -> None:
    opt = Options([(11, b"a"), (15, b"q")])
    clone = opt.copy()
    assert clone == opt
    assert clone is not opt
    clone.uri_path = ("b",)
    clone.add(60, b"")
    assert opt.uri_path == ("a",)
    assert 60 not in opt
    assert clone != opt


def test_equality() -> None:
    assert Options() == Options()
    assert Options([(11, b"a"), (3, b"h")]) == Options([(3, b"h"), (11, b"a")])
    assert Options([(11, b"a"), (11, b"b")]) != Options([(11, b"b"), (11, b"a")])
    assert Options([(11, b"a")]) != Options([(15, b"a")])
    assert Options() != Options([(2000, b"")])
    assert Options() != [(11, b"a")]
    assert (Options() == 5) is False
    with pytest.raises(TypeError):
        hash(Options())


def test_repr_names_registered_options_and_shows_unknown_ones_in_hex() -> None:
    opt = Options([(11, b"a"), (12, b"\x32"), (5, b""), (2000, b"\xab")])
    text = repr(opt)
    assert text.startswith("<Options ")
    assert "Uri-Path='a'" in text
    assert "Content-Format=50" in text
    assert "If-None-Match=(empty)" in text
    assert "2000=ab" in text


# --- malformed() (RFC 7252 §5.4.1, §5.4.3, §5.4.5) -------------------------------------


def test_well_formed_options_list_nothing() -> None:
    opt = Options()
    for attribute, (value, _) in ROUND_TRIPS.items():
        setattr(opt, attribute, value)
    assert opt.malformed() == ()


@pytest.mark.parametrize(
    ("items", "attribute", "reads_as"),
    [
        ([(3, b"")], "uri_host", None),  # Uri-Host is 1..255 bytes
        ([(3, b"h" * 256)], "uri_host", None),
        ([(4, b"")], "etag", ()),  # ETag is 1..8 bytes
        ([(5, b"x")], "if_none_match", False),  # empty-format option with a value
        ([(7, b"\x00\x00\x01")], "uri_port", None),  # uint over its 2 bytes
        ([(12, b"\x01\x02\x03")], "content_format", None),
        ([(16, b"")], "hop_limit", None),  # exactly 1 byte
        ([(23, b"\x01\x02\x03\x04")], "block2", None),  # unparseable block value
        ([(27, b"\x00\x00\x00\x10")], "block1", None),
        ([(252, b"")], "echo", None),
        ([(11, b"\xff")], "uri_path", ()),  # not UTF-8
        ([(3, b"\xc3")], "uri_host", None),  # truncated UTF-8
        ([(35, b"coap://\xfe")], "proxy_uri", None),
    ],
)
def test_malformed_values(items: list[tuple[int, bytes]], attribute: str, reads_as: Any) -> None:
    opt = Options(items)
    assert opt.malformed() == (items[0][0],)
    assert getattr(opt, attribute) == reads_as
    # The bad value is kept so that it re-encodes unchanged.
    assert list(opt) == items


def test_second_occurrence_of_a_non_repeatable_option() -> None:
    opt = Options([(12, b""), (12, b"\x32")])
    assert opt.malformed() == (OptionNumber.CONTENT_FORMAT,)
    assert opt.content_format == ContentFormat.TEXT  # only the first one counts
    flag = Options([(5, b""), (5, b"")])
    assert flag.malformed() == (5,)
    assert flag.if_none_match is True


def test_repeatable_options_may_repeat() -> None:
    opt = Options([(11, b"a"), (11, b"b"), (1, b""), (1, b"x"), (292, b"")])
    opt.add(292, b"t")
    assert opt.malformed() == ()


def test_malformed_lists_each_number_once_in_wire_order() -> None:
    opt = Options([(11, b"\xff"), (3, b""), (11, b"\xfe"), (11, b"ok"), (12, b""), (12, b"")])
    assert opt.malformed() == (3, 11, 12)
    assert all(isinstance(number, OptionNumber) for number in opt.malformed())
    # A malformed repeatable value is skipped; the others still read.
    assert opt.uri_path == ("ok",)


def test_unregistered_numbers_are_never_listed() -> None:
    opt = Options([(2000, b"x"), (2000, b"y"), (65000, b""), (9999, b"\xff" * 300), (2, b"")])
    assert opt.malformed() == ()


# --- BlockValue (RFC 7959 §2.2, RFC 8323 §6) ------------------------------------------


@settings(deadline=None)
@given(
    num=st.integers(min_value=0, max_value=2**20 - 1),
    more=st.booleans(),
    szx=st.integers(min_value=0, max_value=7),
)
def test_block_value_round_trip(num: int, more: bool, szx: int) -> None:
    block = BlockValue(num, more, szx)
    value = block.to_int()
    assert value == num << 4 | int(more) << 3 | szx
    assert 0 <= value < 2**24
    assert BlockValue.from_int(value) == block
    opt = Options()
    opt.block2 = block
    assert opt.block2 == block
    assert len(opt.get_all(OptionNumber.BLOCK2)[0]) <= 3


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=2**24 - 1))
def test_block_value_from_any_three_byte_value(value: int) -> None:
    assert BlockValue.from_int(value).to_int() == value


@pytest.mark.parametrize(
    ("szx", "size"), [(0, 16), (1, 32), (2, 64), (3, 128), (4, 256), (5, 512), (6, 1024)]
)
def test_block_size_and_start(szx: int, size: int) -> None:
    block = BlockValue(3, False, szx)
    assert block.size == size
    assert block.start == 3 * size
    assert not block.is_bert
    assert str(block) == f"3/0/{size}"


def test_bert_block() -> None:
    block = BlockValue(2, True, BERT_SZX)
    assert BERT_SZX == 7
    assert block.is_bert
    assert block.size == 1024  # the BERT unit
    assert block.start == 2048
    assert str(block) == "2/1/1024"


def test_rfc7959_examples() -> None:
    # §2.2: a one-byte option value carries NUM 0..15.
    assert BlockValue.from_int(0x0A) == BlockValue(0, True, 2)
    assert BlockValue(0, False, 6).to_int() == 6
    opt = Options()
    opt.block2 = BlockValue(0, False, 0)
    assert opt.get_all(OptionNumber.BLOCK2) == (b"",)  # NUM 0, M 0, SZX 0 is zero bytes


def test_reduced_to() -> None:
    block = BlockValue(1, True, 6)
    smaller = block.reduced_to(4)
    assert smaller == BlockValue(4, True, 4)
    assert smaller.start == block.start
    assert block.reduced_to(6) == block
    assert BlockValue(3, False, 2).reduced_to(0) == BlockValue(12, False, 0)


def test_reduced_to_errors() -> None:
    with pytest.raises(ValueError):
        BlockValue(1, False, 4).reduced_to(5)
    with pytest.raises(ValueError):
        BlockValue(1, False, BERT_SZX).reduced_to(6)
    with pytest.raises(ValueError):  # NUM would overflow 20 bits
        BlockValue(2**20 - 1, False, 6).reduced_to(0)


@pytest.mark.parametrize(("num", "szx"), [(-1, 0), (2**20, 0), (0, -1), (0, 8)])
def test_block_value_validation(num: int, szx: int) -> None:
    with pytest.raises(ValueError):
        BlockValue(num, False, szx)


@pytest.mark.parametrize("value", [-1, 2**24])
def test_block_value_from_int_validation(value: int) -> None:
    with pytest.raises(ValueError):
        BlockValue.from_int(value)


def test_block_value_is_frozen() -> None:
    block = BlockValue(0, False, 0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        block.num = 1  # type: ignore[misc]
    assert hash(block) == hash(BlockValue(0, False, 0))


# --- every registered option has its typed accessor ------------------------------------


def test_every_registered_option_has_a_typed_accessor() -> None:
    names = typed_option_names()
    assert set(names) == {spec.number for spec in registered_options()}
    for spec in registered_options():
        expected = spec.name.lower().replace("-", "_")
        assert names[spec.number] == expected == spec.attribute
        assert hasattr(Options, expected)
        value, _ = ROUND_TRIPS[expected]
        assert isinstance(value, tuple) == spec.repeatable


def test_typed_option_names_is_a_copy() -> None:
    names = typed_option_names()
    names[1] = "changed"
    assert typed_option_names()[1] == "if_match"
