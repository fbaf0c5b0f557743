"""Tests for coap_trio.message.Message: construction, copy, equality, repr, names."""

from __future__ import annotations

from typing import Any

import aiocoap
import pytest

from coap_trio import (
    ACK,
    CON,
    CONTENT,
    GET,
    NON,
    POST,
    BlockValue,
    Code,
    ContentFormat,
    Message,
    Origin,
    Type,
)
from coap_trio.options import Options

# --- construction ----------------------------------------------------------------


def test_defaults() -> None:
    message = Message()
    assert message.code is Code.EMPTY
    assert message.mtype is None
    assert message.mid is None
    assert message.token == b""
    assert message.payload == b""
    assert message.opt == Options()
    assert message.remote is None


def test_header_fields() -> None:
    remote = Origin("coap", "192.0.2.1", 5683)
    message = Message(
        code=POST, mtype=CON, mid=0x1234, token=b"\x01\x02", payload=b"data", remote=remote
    )
    assert message.code is Code.POST
    assert message.mtype is Type.CON
    assert message.mid == 0x1234
    assert message.token == b"\x01\x02"
    assert message.payload == b"data"
    assert message.remote is remote


def test_integer_code_and_type_become_enums() -> None:
    message = Message(code=69, mtype=2)
    assert message.code is Code.CONTENT
    assert message.mtype is Type.ACK
    assert Message(code=1 << 5 | 9).code.name_printable == "Unknown"


@pytest.mark.parametrize("code", [-1, 256])
def test_bad_code_is_an_error(code: int) -> None:
    with pytest.raises(ValueError):
        Message(code=code)


def test_bad_type_is_an_error() -> None:
    with pytest.raises(ValueError):
        Message(mtype=4)  # type: ignore[arg-type]


def test_byte_likes_are_copied_to_bytes() -> None:
    token = bytearray(b"tk")
    payload = bytearray(b"payload")
    message = Message(token=token, payload=payload)
    token[0] = payload[0] = 0
    assert message.token == b"tk"
    assert message.payload == b"payload"
    assert type(message.token) is bytes
    assert type(message.payload) is bytes


def test_typed_options_by_keyword() -> None:
    message = Message(
        code=GET,
        uri_path=("sensors", "temp"),
        uri_query=("unit=C",),
        content_format=ContentFormat.JSON,
        accept=ContentFormat.CBOR,
        observe=0,
        block2=BlockValue(0, False, 6),
        etag=(b"\x01",),
        if_none_match=True,
        max_age=30,
    )
    opt = message.opt
    assert opt.uri_path == ("sensors", "temp")
    assert opt.uri_query == ("unit=C",)
    assert opt.content_format is ContentFormat.JSON
    assert opt.accept == 60
    assert opt.observe == 0
    assert opt.block2 == BlockValue(0, False, 6)
    assert opt.etag == (b"\x01",)
    assert opt.if_none_match is True
    assert opt.max_age == 30


def test_keyword_options_apply_after_the_uri() -> None:
    message = Message(code=GET, uri="coap://example.net/a/b?x", uri_path=("c",))
    assert message.opt.uri_host == "example.net"
    assert message.opt.uri_path == ("c",)
    assert message.opt.uri_query == ("x",)
    assert message.remote == Origin("coap", "example.net", 5683)


def test_keyword_option_set_to_none_is_absent() -> None:
    message = Message(code=GET, observe=None, content_format=None)
    assert len(message.opt) == 0


def test_given_options_are_used() -> None:
    opt = Options([(11, b"a")])
    message = Message(code=GET, opt=opt)
    assert message.opt is opt
    both = Message(code=GET, opt=Options([(11, b"a")]), observe=1)
    assert list(both.opt) == [(6, b"\x01"), (11, b"a")]


@pytest.mark.parametrize(
    "name",
    [
        "no_such_option",
        "Uri_Path",
        "uri-path",
        "_items",
        "__class__",
        # Options' methods are not options.
        "copy",
        "add",
        "remove",
        "replace",
        "get_all",
        "malformed",
        "numbers",
    ],
)
def test_unknown_keyword_is_a_type_error(name: str) -> None:
    with pytest.raises(TypeError):
        Message(code=GET, **{name: 1})


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("uri_host", ""), ("etag", (b"",)), ("observe", 2**24), ("uri_path", "not a tuple")],
)
def test_invalid_option_values_are_errors(keyword: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        Message(code=GET, **{keyword: value})


def test_token_length() -> None:
    assert Message(token=b"12345678").token == b"12345678"
    with pytest.raises(ValueError):
        Message(token=b"123456789")


@pytest.mark.parametrize("mid", [0, 1, 0xFFFF])
def test_good_message_ids(mid: int) -> None:
    assert Message(mid=mid).mid == mid


@pytest.mark.parametrize("mid", [-1, 0x10000, 2**32])
def test_bad_message_ids(mid: int) -> None:
    with pytest.raises(ValueError):
        Message(mid=mid)


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        Message(GET)  # type: ignore[misc]


# --- copy --------------------------------------------------------------------------


def _sample() -> Message:
    return Message(
        code=GET,
        mtype=CON,
        mid=7,
        token=b"tok",
        uri="coap://example.net/a?q",
        observe=0,
        payload=b"body",
    )


def test_copy_is_equal_and_independent() -> None:
    original = _sample()
    clone = original.copy()
    assert clone == original
    assert clone is not original
    assert clone.opt is not original.opt
    clone.opt.uri_path = ("changed",)
    clone.opt.add(2000, b"x")
    clone.mid = 8
    assert original.opt.uri_path == ("a",)
    assert 2000 not in original.opt
    assert original.mid == 7
    assert clone != original


def test_copy_with_changes() -> None:
    original = _sample()
    clone = original.copy(
        code=69, mtype=2, mid=9, token=b"t2", payload=b"new", remote=None, observe=None
    )
    assert clone.code is Code.CONTENT
    assert clone.mtype is Type.ACK
    assert clone.mid == 9
    assert clone.token == b"t2"
    assert clone.payload == b"new"
    assert clone.remote is None
    assert clone.opt.observe is None
    assert clone.opt.uri_path == ("a",)
    # The original is untouched.
    assert original == _sample()


def test_copy_with_typed_options() -> None:
    clone = _sample().copy(uri_path=("x", "y"), content_format=ContentFormat.TEXT)
    assert clone.opt.uri_path == ("x", "y")
    assert clone.opt.content_format == 0
    assert clone.opt.uri_host == "example.net"


def test_copy_with_new_options_object() -> None:
    opt = Options([(12, b"")])
    clone = _sample().copy(opt=opt)
    assert clone.opt is opt


def test_copy_can_clear_mtype_and_mid() -> None:
    clone = _sample().copy(mtype=None, mid=None)
    assert clone.mtype is None
    assert clone.mid is None


@pytest.mark.parametrize("name", ["no_such_field", "uri", "copy", "add", "_items"])
def test_copy_refuses_unknown_keywords(name: str) -> None:
    with pytest.raises(TypeError):
        _sample().copy(**{name: 1})


@pytest.mark.parametrize(
    "changes",
    [
        {"token": b"123456789"},
        {"mid": -1},
        {"mid": 0x10000},
        {"code": 256},
        {"mtype": 5},
        {"uri_host": ""},
    ],
)
def test_copy_validates_like_the_constructor(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _sample().copy(**changes)


def test_a_memoryview_payload_is_kept_as_bytes() -> None:
    message = Message(payload=memoryview(b"view"))
    assert message.payload == b"view"
    assert type(message.payload) is bytes


@pytest.mark.parametrize("payload", [5, 0, [104, 105], (1,), None, 1.5, object()])
def test_a_payload_that_is_not_bytes_like_is_a_type_error(payload: object) -> None:
    with pytest.raises(TypeError, match=r"bytes, bytearray or memoryview, not \w+") as caught:
        Message(payload=payload)  # type: ignore[arg-type]
    assert type(payload).__name__ in str(caught.value)
    with pytest.raises(TypeError, match="bytes, bytearray or memoryview"):
        _sample().copy(payload=payload)


def test_a_str_payload_is_a_type_error_that_says_to_encode_it() -> None:
    with pytest.raises(TypeError, match=r"not str: .*\.encode\(\)"):
        Message(payload="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not str: .*\.encode\(\)"):
        _sample().copy(payload="text")


def test_copy_turns_byte_likes_into_bytes() -> None:
    clone = _sample().copy(token=bytearray(b"t"), payload=bytearray(b"p"))
    assert type(clone.token) is bytes
    assert type(clone.payload) is bytes


# --- equality ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"code": POST},
        {"mtype": NON},
        {"mid": 8},
        {"token": b"other"},
        {"payload": b""},
        {"remote": Origin("coap", "example.net", 1)},
        {"observe": 1},
        {"uri_query": ()},
    ],
)
def test_every_field_takes_part_in_equality(changes: dict[str, Any]) -> None:
    assert _sample().copy(**changes) != _sample()


def test_equality_with_other_types() -> None:
    assert (_sample() == "message") is False
    assert _sample() != 5
    with pytest.raises(TypeError):
        hash(_sample())


def test_option_order_matters_only_for_repeated_options() -> None:
    a = Message(code=GET, observe=1, uri_path=("a", "b"))
    b = Message(code=GET, uri_path=("a", "b"), observe=1)
    assert a == b
    assert a != Message(code=GET, observe=1, uri_path=("b", "a"))


# --- repr ----------------------------------------------------------------------------


def test_repr_of_an_empty_message() -> None:
    assert repr(Message()) == "<Message ? 0.00 EMPTY mid=? token=->"
    assert repr(Message(mtype=ACK, mid=5)) == "<Message ACK 0.00 EMPTY mid=5 token=->"


def test_repr_of_a_request() -> None:
    message = Message(
        code=GET,
        mtype=CON,
        mid=1,
        token=b"ab",
        uri="coap://h/a/b?x=1&y",
        accept=ContentFormat.JSON,
        observe=0,
    )
    assert repr(message) == (
        "<Message CON 0.01 GET mid=1 token=6162 /a/b?x=1&y accept=50 observe=0 +1 opt>"
    )


def test_repr_of_a_response() -> None:
    message = Message(
        code=CONTENT,
        mtype=ACK,
        mid=0x1234,
        token=b"\x01",
        content_format=ContentFormat.TEXT,
        block2=BlockValue(1, True, 6),
        etag=(b"\xaa\xbb", b"\x01"),
        payload=b"hello",
    )
    assert repr(message) == (
        "<Message ACK 2.05 Content mid=4660 token=01 ct=0 block2=1/1/1024 etag=aabb,01 5B>"
    )


def test_repr_counts_the_options_it_does_not_show() -> None:
    message = Message(code=POST, uri_host="h", uri_port=1, size1=10, block1=BlockValue(0, True, 0))
    message.opt.add(2000, b"x")
    message.opt.add(2000, b"y")
    assert repr(message) == "<Message ? 0.02 POST mid=? token=- block1=0/1/16 +4 opt>"


def test_repr_is_short_whatever_the_payload() -> None:
    message = Message(code=CONTENT, payload=b"secret" * 10_000)
    text = repr(message)
    assert "secret" not in text
    assert text.endswith(" 60000B>")
    assert len(text) < 80


def test_repr_shows_query_without_path() -> None:
    message = Message(code=GET, uri_query=("a",))
    assert repr(message) == "<Message ? 0.01 GET mid=? token=- /?a>"


# --- the names aiocoap users know ------------------------------------------------------

AIOCOAP_ATTRIBUTES = ("code", "mtype", "mid", "token", "opt", "payload", "remote")


def test_message_attribute_names() -> None:
    message = _sample()
    for name in AIOCOAP_ATTRIBUTES:
        assert hasattr(message, name), name
    assert set(Message.__slots__) == set(AIOCOAP_ATTRIBUTES)


def test_message_attributes_are_assignable_but_not_extensible() -> None:
    message = Message()
    message.code = Code.GET
    message.payload = b"x"
    message.remote = Origin("coap", "h", 5683)
    with pytest.raises(AttributeError):
        message.no_such_attribute = 1  # type: ignore[attr-defined]


def test_same_attribute_names_as_aiocoap() -> None:
    theirs = aiocoap.Message(code=aiocoap.GET, uri="coap://example.net/a")
    ours = Message(code=GET, uri="coap://example.net/a")
    for name in AIOCOAP_ATTRIBUTES:
        assert hasattr(theirs, name), name
        assert hasattr(ours, name), name
    assert int(ours.code) == int(theirs.code)
    assert tuple(ours.opt.uri_path) == tuple(theirs.opt.uri_path)
    assert ours.opt.uri_host == theirs.opt.uri_host


def test_common_aiocoap_option_names() -> None:
    for name in (
        "uri_path",
        "uri_query",
        "uri_host",
        "uri_port",
        "location_path",
        "location_query",
        "content_format",
        "accept",
        "observe",
        "block1",
        "block2",
        "size1",
        "size2",
        "etag",
        "if_match",
        "if_none_match",
        "max_age",
        "proxy_uri",
        "proxy_scheme",
        "oscore",
        "echo",
        "request_tag",
        "no_response",
        "hop_limit",
        "edhoc",
    ):
        assert hasattr(Options, name), name
