"""Tests for coap_trio.numbers: types, codes, the option registry, content formats, constants.

The expected values are tables written from the RFCs (7252, 7641, 7959, 7967,
8132, 8323, 8516, 8613, 8768, 9175, 9177, 9668) and the IANA registries, not
read back from the library.
"""

from __future__ import annotations

import math

import aiocoap.numbers.codes as aiocoap_codes
import aiocoap.numbers.optionnumbers as aiocoap_options
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coap_trio
from coap_trio.numbers import (
    ACK,
    COAP_PORT,
    COAPS_PORT,
    CON,
    DEFAULT_PORTS,
    NON,
    RST,
    Code,
    ContentFormat,
    OptionFormat,
    OptionNumber,
    TransmissionParameters,
    Type,
    option_spec,
    register_content_format,
    registered_options,
)
from coap_trio.numbers.codes import CODE_TABLE
from coap_trio.numbers.optionnumbers import MAX_OPTION_LENGTH, RESERVED_OPTION_NUMBERS

# --- Types (RFC 7252 §3) -------------------------------------------------------


def test_message_types_are_the_two_bit_field_values() -> None:
    assert [int(t) for t in (CON, NON, ACK, RST)] == [0, 1, 2, 3]
    assert [str(t) for t in Type] == ["CON", "NON", "ACK", "RST"]
    assert Type(2) is ACK
    with pytest.raises(ValueError):
        Type(4)


# --- Codes -------------------------------------------------------------------

# (dotted, aiocoap-compatible member name, registered name, defining document)
RFC_CODES: list[tuple[str, str, str, str]] = [
    # RFC 7252 §12.1.1 methods, RFC 8132 §2, §3
    ("0.01", "GET", "GET", "RFC 7252"),
    ("0.02", "POST", "POST", "RFC 7252"),
    ("0.03", "PUT", "PUT", "RFC 7252"),
    ("0.04", "DELETE", "DELETE", "RFC 7252"),
    ("0.05", "FETCH", "FETCH", "RFC 8132"),
    ("0.06", "PATCH", "PATCH", "RFC 8132"),
    ("0.07", "iPATCH", "iPATCH", "RFC 8132"),
    # RFC 7252 §12.1.2 response codes
    ("2.01", "CREATED", "Created", "RFC 7252"),
    ("2.02", "DELETED", "Deleted", "RFC 7252"),
    ("2.03", "VALID", "Valid", "RFC 7252"),
    ("2.04", "CHANGED", "Changed", "RFC 7252"),
    ("2.05", "CONTENT", "Content", "RFC 7252"),
    ("2.31", "CONTINUE", "Continue", "RFC 7959"),
    ("4.00", "BAD_REQUEST", "Bad Request", "RFC 7252"),
    ("4.01", "UNAUTHORIZED", "Unauthorized", "RFC 7252"),
    ("4.02", "BAD_OPTION", "Bad Option", "RFC 7252"),
    ("4.03", "FORBIDDEN", "Forbidden", "RFC 7252"),
    ("4.04", "NOT_FOUND", "Not Found", "RFC 7252"),
    ("4.05", "METHOD_NOT_ALLOWED", "Method Not Allowed", "RFC 7252"),
    ("4.06", "NOT_ACCEPTABLE", "Not Acceptable", "RFC 7252"),
    ("4.08", "REQUEST_ENTITY_INCOMPLETE", "Request Entity Incomplete", "RFC 7959"),
    ("4.09", "CONFLICT", "Conflict", "RFC 8132"),
    ("4.12", "PRECONDITION_FAILED", "Precondition Failed", "RFC 7252"),
    ("4.13", "REQUEST_ENTITY_TOO_LARGE", "Request Entity Too Large", "RFC 7252"),
    ("4.15", "UNSUPPORTED_CONTENT_FORMAT", "Unsupported Content-Format", "RFC 7252"),
    ("4.22", "UNPROCESSABLE_ENTITY", "Unprocessable Entity", "RFC 8132"),
    ("4.29", "TOO_MANY_REQUESTS", "Too Many Requests", "RFC 8516"),
    ("5.00", "INTERNAL_SERVER_ERROR", "Internal Server Error", "RFC 7252"),
    ("5.01", "NOT_IMPLEMENTED", "Not Implemented", "RFC 7252"),
    ("5.02", "BAD_GATEWAY", "Bad Gateway", "RFC 7252"),
    ("5.03", "SERVICE_UNAVAILABLE", "Service Unavailable", "RFC 7252"),
    ("5.04", "GATEWAY_TIMEOUT", "Gateway Timeout", "RFC 7252"),
    ("5.05", "PROXYING_NOT_SUPPORTED", "Proxying Not Supported", "RFC 7252"),
    ("5.08", "HOP_LIMIT_REACHED", "Hop Limit Reached", "RFC 8768"),
    # RFC 8323 §11.1 signaling codes
    ("7.01", "CSM", "CSM", "RFC 8323"),
    ("7.02", "PING", "Ping", "RFC 8323"),
    ("7.03", "PONG", "Pong", "RFC 8323"),
    ("7.04", "RELEASE", "Release", "RFC 8323"),
    ("7.05", "ABORT", "Abort", "RFC 8323"),
]


def _value(dotted: str) -> int:
    class_, detail = dotted.split(".")
    return int(class_) << 5 | int(detail)


@pytest.mark.parametrize(("dotted", "member", "name", "reference"), RFC_CODES)
def test_every_rfc_code_is_registered(dotted: str, member: str, name: str, reference: str) -> None:
    code = Code(_value(dotted))
    assert code is Code[member]
    assert code.is_known()
    assert code.dotted == dotted
    assert code.name_printable == name
    assert str(code) == f"{dotted} {name}"
    assert repr(code) == f"<Code {dotted} {name}>"
    assert Code.from_dotted(dotted) is code
    assert Code.from_dotted(member) is code
    assert CODE_TABLE[int(code)] is code


def test_the_registry_holds_exactly_the_rfc_codes_and_empty() -> None:
    registered = {int(c) for c in Code if c.is_known()}
    assert registered == {0} | {_value(row[0]) for row in RFC_CODES}


def test_empty_code() -> None:
    assert Code.EMPTY == 0
    assert Code.EMPTY.dotted == "0.00"
    assert Code.EMPTY.is_empty()
    assert not Code.EMPTY.is_request()
    assert not Code.EMPTY.is_response()
    assert not Code.EMPTY.is_signaling()


def test_aiocoap_compatible_names() -> None:
    assert (Code.GET, Code.POST, Code.PUT, Code.DELETE) == (1, 2, 3, 4)
    assert (Code.CONTENT, Code.CHANGED, Code.NOT_FOUND) == (69, 68, 132)
    # The package-level shortcuts aiocoap users import.
    assert coap_trio.GET is Code.GET
    assert coap_trio.CONTENT is Code.CONTENT
    assert coap_trio.CHANGED is Code.CHANGED
    assert coap_trio.iPATCH is Code.iPATCH


def test_every_aiocoap_code_name_means_the_same_here() -> None:
    for member in aiocoap_codes.Code:
        assert Code[member.name] == int(member), member.name


@pytest.mark.parametrize("value", range(256))
def test_every_value_constructs_a_code(value: int) -> None:
    code = Code(value)
    assert int(code) == value
    assert Code(value) is code  # created once, then reused
    assert CODE_TABLE[value] is code
    assert code.class_ == value >> 5
    assert code.detail == value & 31
    assert code.dotted == f"{value >> 5}.{value & 31:02d}"
    assert Code.from_dotted(code.dotted) is code
    if not code.is_known():
        assert code.name_printable == "Unknown"
        assert str(code) == f"{value >> 5}.{value & 31:02d} Unknown"
    # The class predicates follow the code class alone.
    assert code.is_empty() == (value == 0)
    assert code.is_request() == (code.class_ == 0 and value != 0)
    assert code.is_successful() == (code.class_ == 2)
    assert code.is_error() == (code.class_ in (4, 5))
    assert code.is_signaling() == (code.class_ == 7)
    assert code.is_response() == (2 <= code.class_ <= 5)


def test_unknown_codes_print_as_unknown() -> None:
    assert str(Code(1 << 5 | 9)) == "1.09 Unknown"
    assert str(Code(0x1F)) == "0.31 Unknown"
    assert str(Code(4 << 5 | 7)) == "4.07 Unknown"
    assert repr(Code(6 << 5 | 8)) == "<Code 6.08 Unknown>"
    assert not Code(4 << 5 | 7).is_known()
    assert Code(4 << 5 | 7).is_error()


@pytest.mark.parametrize("value", [-1, 256, 1000])
def test_out_of_range_codes_are_rejected(value: int) -> None:
    with pytest.raises(ValueError):
        Code(value)


def test_class_and_detail_predicates() -> None:
    assert Code.GET.is_request()
    assert not Code.GET.is_response()
    assert Code.CONTENT.is_response()
    assert Code.CONTENT.is_successful()
    assert not Code.CONTENT.is_error()
    assert Code.NOT_FOUND.is_error()
    assert not Code.NOT_FOUND.is_successful()
    assert Code.INTERNAL_SERVER_ERROR.is_error()
    assert Code.PING.is_signaling()
    assert not Code.PING.is_response()
    assert (Code.NOT_FOUND.class_, Code.NOT_FOUND.detail) == (4, 4)
    assert (Code.CONTINUE.class_, Code.CONTINUE.detail) == (2, 31)
    assert (Code.ABORT.class_, Code.ABORT.detail) == (7, 5)


def test_from_dotted() -> None:
    assert Code.from_dotted("2.05") is Code.CONTENT
    assert Code.from_dotted("0.00") is Code.EMPTY
    assert Code.from_dotted("7.31") == 255
    assert Code.from_dotted("content") is Code.CONTENT
    assert Code.from_dotted("not_found") is Code.NOT_FOUND
    assert Code.from_dotted("iPATCH") is Code.iPATCH


@pytest.mark.parametrize("text", ["8.00", "2.32", "-1.00", "a.b", "2."])
def test_from_dotted_rejects_bad_codes(text: str) -> None:
    with pytest.raises(ValueError):
        Code.from_dotted(text)


def test_from_dotted_rejects_unknown_names() -> None:
    with pytest.raises(KeyError):
        Code.from_dotted("NO_SUCH_CODE")


# --- The option registry -------------------------------------------------------

_E, _O, _U, _S = OptionFormat.EMPTY, OptionFormat.OPAQUE, OptionFormat.UINT, OptionFormat.STRING

# number: (name, format, min length, max length, repeatable, document,
#          (critical, unsafe, no-cache-key) as the document's table marks them)
RFC_OPTIONS: dict[int, tuple[str, OptionFormat, int, int, bool, str, tuple[bool, bool, bool]]] = {
    # RFC 7252 §5.10 Table 4
    1: ("If-Match", _O, 0, 8, True, "RFC 7252", (True, False, False)),
    3: ("Uri-Host", _S, 1, 255, False, "RFC 7252", (True, True, False)),
    4: ("ETag", _O, 1, 8, True, "RFC 7252", (False, False, False)),
    5: ("If-None-Match", _E, 0, 0, False, "RFC 7252", (True, False, False)),
    7: ("Uri-Port", _U, 0, 2, False, "RFC 7252", (True, True, False)),
    8: ("Location-Path", _S, 0, 255, True, "RFC 7252", (False, False, False)),
    11: ("Uri-Path", _S, 0, 255, True, "RFC 7252", (True, True, False)),
    12: ("Content-Format", _U, 0, 2, False, "RFC 7252", (False, False, False)),
    14: ("Max-Age", _U, 0, 4, False, "RFC 7252", (False, True, False)),
    15: ("Uri-Query", _S, 0, 255, True, "RFC 7252", (True, True, False)),
    17: ("Accept", _U, 0, 2, False, "RFC 7252", (True, False, False)),
    20: ("Location-Query", _S, 0, 255, True, "RFC 7252", (False, False, False)),
    35: ("Proxy-Uri", _S, 1, 1034, False, "RFC 7252", (True, True, False)),
    39: ("Proxy-Scheme", _S, 1, 255, False, "RFC 7252", (True, True, False)),
    60: ("Size1", _U, 0, 4, False, "RFC 7252", (False, False, True)),
    # RFC 7641 §2
    6: ("Observe", _U, 0, 3, False, "RFC 7641", (False, True, False)),
    # RFC 8613 §2
    9: ("OSCORE", _O, 0, 255, False, "RFC 8613", (True, False, False)),
    # RFC 8768 §3
    16: ("Hop-Limit", _U, 1, 1, False, "RFC 8768", (False, False, False)),
    # RFC 9177 §4.1 Table 1: Q-Block2 is repeatable (several missing blocks in one request)
    19: ("Q-Block1", _U, 0, 3, False, "RFC 9177", (True, True, False)),
    31: ("Q-Block2", _U, 0, 3, True, "RFC 9177", (True, True, False)),
    # RFC 9668 §3.1
    21: ("EDHOC", _E, 0, 0, False, "RFC 9668", (True, False, False)),
    # RFC 7959 §2.1, §4
    23: ("Block2", _U, 0, 3, False, "RFC 7959", (True, True, False)),
    27: ("Block1", _U, 0, 3, False, "RFC 7959", (True, True, False)),
    28: ("Size2", _U, 0, 4, False, "RFC 7959", (False, False, True)),
    # RFC 9175 §2.2.1, §3.2.1
    252: ("Echo", _O, 1, 40, False, "RFC 9175", (False, False, True)),
    292: ("Request-Tag", _O, 0, 8, True, "RFC 9175", (False, False, False)),
    # RFC 7967 §2
    258: ("No-Response", _U, 0, 1, False, "RFC 7967", (False, True, False)),
}

IANA_NUMBERS = [1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15, 16, 17, 19, 20, 21, 23, 27, 28, 31, 35]
IANA_NUMBERS += [39, 60, 252, 258, 292]


def test_the_table_covers_the_iana_list() -> None:
    assert sorted(RFC_OPTIONS) == IANA_NUMBERS


@pytest.mark.parametrize("number", IANA_NUMBERS)
def test_registered_option_matches_its_rfc(number: int) -> None:
    name, fmt, min_length, max_length, repeatable, reference, flags = RFC_OPTIONS[number]
    spec = option_spec(number)
    assert spec.number == number
    assert spec.name == name
    assert spec.format is fmt
    assert (spec.min_length, spec.max_length) == (min_length, max_length)
    assert spec.repeatable is repeatable
    assert spec.reference == reference
    option = OptionNumber(number)
    assert option.is_known()
    assert option.spec == spec
    assert option.name_printable == name
    assert str(option) == name
    assert repr(option) == f"<OptionNumber {number} {name}>"
    critical, unsafe, no_cache_key = flags
    assert option.is_critical() is critical
    assert option.is_elective() is not critical
    assert option.is_unsafe() is unsafe
    assert option.is_safe_to_forward() is not unsafe
    assert option.is_no_cache_key() is no_cache_key
    assert option.is_cache_key() is not no_cache_key


def test_q_block2_is_repeatable_per_rfc9177() -> None:
    assert option_spec(OptionNumber.Q_BLOCK2).repeatable


def test_rfc7252_table4_examples() -> None:
    assert OptionNumber.SIZE1.is_no_cache_key()
    assert OptionNumber.SIZE1.is_elective()
    assert OptionNumber.SIZE1.is_safe_to_forward()
    assert OptionNumber.URI_HOST.is_critical()
    assert OptionNumber.URI_HOST.is_unsafe()
    assert OptionNumber.ETAG.is_elective()
    assert OptionNumber.ETAG.is_safe_to_forward()
    assert OptionNumber.ETAG.is_cache_key()
    assert OptionNumber.MAX_AGE.is_elective()
    assert OptionNumber.MAX_AGE.is_unsafe()
    assert OptionNumber.ACCEPT.is_critical()
    assert OptionNumber.ACCEPT.is_safe_to_forward()


def test_registry_is_in_number_order_and_has_no_surprises() -> None:
    specs = registered_options()
    numbers = [spec.number for spec in specs]
    assert numbers == sorted(numbers)
    # The IANA list of the RFCs above, plus the two OCF entries of the IANA registry.
    assert set(numbers) == set(IANA_NUMBERS) | {2049, 2053}
    for spec in specs:
        assert spec.min_length <= spec.max_length
        if spec.format is OptionFormat.EMPTY:
            assert spec.max_length == 0
        if spec.format is OptionFormat.UINT:
            assert spec.max_length <= 4


def test_option_numbers_have_their_iana_values() -> None:
    assert OptionNumber.URI_PATH == 11
    assert OptionNumber.CONTENT_FORMAT == 12
    assert OptionNumber.BLOCK2 == 23
    assert OptionNumber.ECHO == 252
    assert OptionNumber.REQUEST_TAG == 292


def test_every_aiocoap_option_name_means_the_same_here() -> None:
    for member in aiocoap_options.OptionNumber:
        if int(member) in RFC_OPTIONS:
            assert OptionNumber[member.name] == int(member), member.name


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFF))
def test_option_properties_follow_the_number_bits(number: int) -> None:
    # RFC 7252 §5.4.6: Critical = (onum & 1); UnSafe = (onum & 2);
    # NoCacheKey = ((onum & 0x1e) == 0x1c).
    option = OptionNumber(number)
    assert int(option) == number
    assert option.is_critical() == bool(number & 1)
    assert option.is_elective() == (not number & 1)
    assert option.is_unsafe() == bool(number & 2)
    assert option.is_safe_to_forward() == (not number & 2)
    assert option.is_no_cache_key() == ((number & 0x1E) == 0x1C)
    assert option.is_cache_key() == ((number & 0x1E) != 0x1C)
    if option.is_no_cache_key():
        assert option.is_safe_to_forward()


@pytest.mark.parametrize("number", [2, 13, 548, 2000, 65000, 0xFFFF])
def test_unregistered_option_numbers_work(number: int) -> None:
    option = OptionNumber(number)
    assert int(option) == number
    assert OptionNumber(number) is option
    assert not option.is_known()
    assert option.name_printable == f"Unknown-{number}"
    assert repr(option) == f"<OptionNumber {number} Unknown-{number}>"
    spec = option.spec
    assert spec.format is OptionFormat.OPAQUE
    assert spec.repeatable
    assert (spec.min_length, spec.max_length) == (0, MAX_OPTION_LENGTH)
    assert option.is_critical() == bool(number & 1)


@pytest.mark.parametrize("number", [-1, 0x10000])
def test_out_of_range_option_numbers_are_rejected(number: int) -> None:
    with pytest.raises(ValueError):
        OptionNumber(number)


def test_reserved_option_numbers() -> None:
    # RFC 7252 §12.2: 0 and the former 128, 132, 136, 140.
    assert frozenset({0, 128, 132, 136, 140}) == RESERVED_OPTION_NUMBERS
    assert not any(OptionNumber(n).is_known() for n in RESERVED_OPTION_NUMBERS)


def test_spec_length_bounds_and_attribute() -> None:
    spec = option_spec(OptionNumber.ETAG)
    assert not spec.length_ok(0)
    assert spec.length_ok(1)
    assert spec.length_ok(8)
    assert not spec.length_ok(9)
    assert option_spec(OptionNumber.IF_NONE_MATCH).attribute == "if_none_match"
    assert option_spec(OptionNumber.OSCORE).attribute == "oscore"


# --- Content-Formats -------------------------------------------------------------

# The IANA "CoAP Content-Formats" registry rows named by RFC 7252 §12.3,
# RFC 7049/8949, RFC 6902, RFC 7396, RFC 8392, RFC 8428 and RFC 8790.
RFC_CONTENT_FORMATS = [
    (0, "text/plain; charset=utf-8"),
    (40, "application/link-format"),
    (41, "application/xml"),
    (42, "application/octet-stream"),
    (47, "application/exi"),
    (50, "application/json"),
    (51, "application/json-patch+json"),
    (52, "application/merge-patch+json"),
    (60, "application/cbor"),
    (61, "application/cwt"),
    (110, "application/senml+json"),
    (111, "application/sensml+json"),
    (112, "application/senml+cbor"),
    (113, "application/sensml+cbor"),
    (114, "application/senml-exi"),
    (115, "application/sensml-exi"),
    (310, "application/senml+xml"),
    (311, "application/sensml+xml"),
    (320, "application/senml-etch+json"),
    (322, "application/senml-etch+cbor"),
]


@pytest.mark.parametrize(("number", "media_type"), RFC_CONTENT_FORMATS)
def test_registered_content_format_lookup_both_ways(number: int, media_type: str) -> None:
    fmt = ContentFormat(number)
    assert fmt == number
    assert fmt.is_known()
    assert fmt.media_type == media_type
    assert fmt.encoding == "identity"
    assert str(fmt) == media_type
    assert repr(fmt) == f"<ContentFormat {number} {media_type}>"
    assert ContentFormat(number) is fmt
    assert ContentFormat.by_media_type(media_type) is fmt
    assert fmt in ContentFormat.registered()


def test_media_type_lookup_normalizes_case_and_spaces() -> None:
    text = ContentFormat(0)
    assert ContentFormat.by_media_type("text/plain;charset=utf-8") is text
    assert ContentFormat.by_media_type("TEXT/Plain ;  Charset = utf-8") is text
    assert ContentFormat.by_media_type("Application/JSON") is ContentFormat(50)
    assert ContentFormat.by_media_type(" application/cbor ") is ContentFormat(60)


def test_media_type_lookup_by_content_coding() -> None:
    deflated = ContentFormat.by_media_type("application/json", "deflate")
    assert deflated == 11050
    assert deflated.encoding == "deflate"
    assert str(deflated) == "application/json@deflate"
    assert repr(deflated) == "<ContentFormat 11050 application/json@deflate>"
    assert ContentFormat.by_media_type("application/json") == 50


def test_unregistered_media_type_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        ContentFormat.by_media_type("application/x-not-registered")
    with pytest.raises(KeyError):
        ContentFormat.by_media_type("application/json", "gzip")


def test_aiocoap_compatible_content_format_names() -> None:
    assert ContentFormat.TEXT == 0
    assert ContentFormat.LINKFORMAT == 40
    assert ContentFormat.XML == 41
    assert ContentFormat.OCTETSTREAM == 42
    assert ContentFormat.EXI == 47
    assert ContentFormat.JSON == 50
    assert ContentFormat.JSON_PATCH == 51
    assert ContentFormat.MERGE_PATCH == 52
    assert ContentFormat.CBOR == 60
    assert ContentFormat.CWT == 61
    assert ContentFormat.SENML_JSON == 110
    assert ContentFormat.SENML_CBOR == 112
    assert ContentFormat.SENML == 112  # aiocoap's SENML is SenML-CBOR


@pytest.mark.parametrize("number", [1, 9999, 65000, 0xFFFF])
def test_unknown_content_formats(number: int) -> None:
    fmt = ContentFormat(number)
    assert fmt == number
    assert not fmt.is_known()
    assert fmt.media_type is None
    assert str(fmt) == str(number)
    assert repr(fmt) == f"<ContentFormat {number}>"
    assert fmt not in ContentFormat.registered()


@pytest.mark.parametrize("number", [-1, 0x10000])
def test_out_of_range_content_formats_are_rejected(number: int) -> None:
    with pytest.raises(ValueError):
        ContentFormat(number)


def test_registered_is_in_number_order() -> None:
    numbers = [int(f) for f in ContentFormat.registered()]
    assert numbers == sorted(numbers)
    assert {n for n, _ in RFC_CONTENT_FORMATS} <= set(numbers)


@pytest.fixture
def isolated_content_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register formats without leaking them into the rest of the run."""
    monkeypatch.setattr(ContentFormat, "_by_number", dict(ContentFormat._by_number))
    monkeypatch.setattr(ContentFormat, "_by_media_type", dict(ContentFormat._by_media_type))


@pytest.mark.usefixtures("isolated_content_formats")
def test_run_time_registration() -> None:
    assert not ContentFormat(65000).is_known()
    fmt = register_content_format(65000, "Application/X-Test+CBOR; Version=2")
    assert fmt == 65000
    assert ContentFormat(65000) is fmt
    assert fmt.is_known()
    assert fmt.media_type == "Application/X-Test+CBOR; Version=2"
    assert ContentFormat.by_media_type("application/x-test+cbor;version=2") is fmt
    assert fmt in ContentFormat.registered()


@pytest.mark.usefixtures("isolated_content_formats")
def test_run_time_re_registration_replaces_the_media_type() -> None:
    register_content_format(65001, "application/x-old")
    new = register_content_format(65001, "application/x-new", "deflate")
    assert ContentFormat(65001) is new
    assert ContentFormat.by_media_type("application/x-new", "deflate") is new
    with pytest.raises(KeyError):
        ContentFormat.by_media_type("application/x-old")


def test_run_time_registration_is_isolated_by_the_fixture() -> None:
    assert not ContentFormat(65000).is_known()
    assert not ContentFormat(65001).is_known()


def test_run_time_registration_rejects_bad_numbers() -> None:
    with pytest.raises(ValueError):
        register_content_format(0x10000, "application/x-too-big")


def test_content_format_pickles_to_the_registered_instance() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(ContentFormat.JSON)) is ContentFormat.JSON


# --- Transmission parameters and ports (RFC 7252 §4.8, §6) ---------------------------


def test_default_transmission_parameters() -> None:
    params = TransmissionParameters()
    assert params.ACK_TIMEOUT == 2
    assert params.ACK_RANDOM_FACTOR == 1.5
    assert params.MAX_RETRANSMIT == 4
    assert params.NSTART == 1
    assert params.DEFAULT_LEISURE == 5
    assert params.PROBING_RATE == 1
    assert params.MAX_LATENCY == 100


def test_rfc7252_derived_values_for_the_defaults() -> None:
    # RFC 7252 §4.8.2
    params = TransmissionParameters()
    assert params.MAX_TRANSMIT_SPAN == 45
    assert params.MAX_TRANSMIT_WAIT == 93
    assert params.PROCESSING_DELAY == 2
    assert params.MAX_RTT == 202
    assert params.EXCHANGE_LIFETIME == 247
    assert params.NON_LIFETIME == 145


def test_derived_values_follow_non_default_parameters() -> None:
    params = TransmissionParameters(
        ACK_TIMEOUT=1.0, ACK_RANDOM_FACTOR=2.0, MAX_RETRANSMIT=2, MAX_LATENCY=50.0
    )
    assert params.MAX_TRANSMIT_SPAN == 1 * (2**2 - 1) * 2  # 6
    assert params.MAX_TRANSMIT_WAIT == 1 * (2**3 - 1) * 2  # 14
    assert params.PROCESSING_DELAY == 1
    assert params.MAX_RTT == 2 * 50 + 1
    assert params.EXCHANGE_LIFETIME == 6 + 2 * 50 + 1
    assert params.NON_LIFETIME == 6 + 50


@settings(deadline=None)
@given(
    ack_timeout=st.floats(min_value=0.01, max_value=60),
    factor=st.floats(min_value=1, max_value=4),
    retransmit=st.integers(min_value=0, max_value=10),
    latency=st.floats(min_value=0.01, max_value=1000),
)
def test_derived_values_formulas(
    ack_timeout: float, factor: float, retransmit: int, latency: float
) -> None:
    params = TransmissionParameters(
        ACK_TIMEOUT=ack_timeout,
        ACK_RANDOM_FACTOR=factor,
        MAX_RETRANSMIT=retransmit,
        MAX_LATENCY=latency,
    )
    span = ack_timeout * (2**retransmit - 1) * factor
    wait = ack_timeout * (2 ** (retransmit + 1) - 1) * factor
    assert math.isclose(params.MAX_TRANSMIT_SPAN, span)
    assert math.isclose(params.MAX_TRANSMIT_WAIT, wait)
    assert math.isclose(params.PROCESSING_DELAY, ack_timeout)
    assert math.isclose(params.MAX_RTT, 2 * latency + ack_timeout)
    assert math.isclose(params.EXCHANGE_LIFETIME, span + 2 * latency + ack_timeout)
    assert math.isclose(params.NON_LIFETIME, span + latency)


@pytest.mark.parametrize(
    "changes",
    [
        {"ACK_TIMEOUT": 0},
        {"ACK_TIMEOUT": -1.0},
        {"ACK_TIMEOUT": math.nan},
        {"ACK_RANDOM_FACTOR": 0.5},
        {"ACK_RANDOM_FACTOR": math.nan},
        {"MAX_RETRANSMIT": -1},
        {"MAX_RETRANSMIT": 1.5},
        {"NSTART": 0},
        {"NSTART": 1.5},
        {"DEFAULT_LEISURE": 0},
        {"PROBING_RATE": 0},
        {"PROBING_RATE": -1.0},
        {"MAX_LATENCY": 0},
        {"MAX_LATENCY": math.nan},
    ],
)
def test_bad_transmission_parameters_are_rejected(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TransmissionParameters(**changes)  # type: ignore[arg-type]


def test_boundary_transmission_parameters_are_accepted() -> None:
    params = TransmissionParameters(ACK_RANDOM_FACTOR=1.0, MAX_RETRANSMIT=0, NSTART=3)
    assert params.MAX_TRANSMIT_SPAN == 0
    assert params.MAX_TRANSMIT_WAIT == params.ACK_TIMEOUT


def test_transmission_parameters_are_frozen() -> None:
    params = TransmissionParameters()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        params.ACK_TIMEOUT = 3.0  # type: ignore[misc]
    changed = attrs.evolve(params, ACK_TIMEOUT=3.0)
    assert changed.ACK_TIMEOUT == 3.0
    assert params.ACK_TIMEOUT == 2.0
    assert TransmissionParameters() == params
    assert hash(TransmissionParameters()) == hash(params)


def test_default_ports() -> None:
    assert COAP_PORT == 5683
    assert COAPS_PORT == 5684
    assert DEFAULT_PORTS == {
        "coap": 5683,
        "coaps": 5684,
        "coap+tcp": 5683,
        "coaps+tcp": 5684,
        "coap+ws": 80,
        "coaps+ws": 443,
    }
