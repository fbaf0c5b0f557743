"""RFC 8323 §5 signaling messages (coap_trio.protocol.signaling): build, parse, unknown options."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.options import Options
from coap_trio.protocol.framing import decode_frame, encode_stream
from coap_trio.protocol.signaling import (
    ALTERNATIVE_ADDRESS,
    BAD_CSM_OPTION,
    BLOCK_WISE_TRANSFER,
    CUSTODY,
    DEFAULT_MAX_MESSAGE_SIZE,
    HOLD_OFF,
    MAX_MESSAGE_SIZE,
    Abort,
    Csm,
    Ping,
    Pong,
    Release,
    SignalingError,
    build_abort,
    build_csm,
    build_ping,
    build_pong,
    build_release,
    parse_signal,
)


def over_the_wire(message: Message) -> Message:
    return decode_frame(encode_stream(message))


def signal(code: Code, items: list[tuple[int, bytes]], payload: bytes = b"") -> Message:
    return Message.from_fields(code, None, None, b"", Options(items), payload, None)


def test_option_numbers_per_code() -> None:
    assert (MAX_MESSAGE_SIZE, BLOCK_WISE_TRANSFER) == (2, 4)
    assert CUSTODY == 2
    assert (ALTERNATIVE_ADDRESS, HOLD_OFF) == (2, 4)
    assert BAD_CSM_OPTION == 2
    assert DEFAULT_MAX_MESSAGE_SIZE == 1152


def test_csm_bytes() -> None:
    csm = build_csm(1152, block_wise_transfer=True)
    assert csm.code is Code.CSM
    # Len 4: option 2 (length 2, 0x0480), option 4 (delta 2, empty); code 7.01 = 0xE1.
    assert encode_stream(csm) == bytes.fromhex("40e1220480 20".replace(" ", ""))
    assert parse_signal(over_the_wire(csm)) == Csm(1152, True)
    assert encode_stream(build_csm()) == b"\x00\xe1"
    assert parse_signal(build_csm()) == Csm(None, False)
    assert parse_signal(build_csm(0)) == Csm(0, False)  # uint 0 is zero bytes


def test_csm_typed_view_is_not_used() -> None:
    # Max-Message-Size is number 2, like no request option; Block-Wise-Transfer 4 is
    # ETag's number: the raw view must be used, and the typed one sees other things.
    csm = over_the_wire(build_csm(4096, block_wise_transfer=True))
    assert csm.opt.get_all(MAX_MESSAGE_SIZE) == ((4096).to_bytes(2, "big"),)
    assert csm.opt.get_all(BLOCK_WISE_TRANSFER) == (b"",)


@settings(deadline=None)
@given(st.none() | st.integers(0, 0xFFFFFFFF), st.booleans())
def test_csm_round_trip(size: int | None, bert: bool) -> None:
    assert parse_signal(over_the_wire(build_csm(size, block_wise_transfer=bert))) == Csm(size, bert)


@settings(deadline=None)
@given(st.binary(max_size=8), st.booleans())
def test_ping_pong_round_trip(token: bytes, custody: bool) -> None:
    ping = over_the_wire(build_ping(token, custody=custody))
    assert ping.code is Code.PING
    assert parse_signal(ping) == Ping(token, custody)
    pong = over_the_wire(build_pong(token, custody=custody))
    assert pong.code is Code.PONG
    assert parse_signal(pong) == Pong(token, custody)


@settings(deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=60), max_size=3).map(tuple),
    st.none() | st.integers(0, 0xFFFFFF),
    st.text(max_size=50),
)
def test_release_round_trip(addresses: tuple[str, ...], hold_off: int | None, text: str) -> None:
    release = over_the_wire(build_release(addresses, hold_off, text))
    assert release.code is Code.RELEASE
    assert parse_signal(release) == Release(addresses, hold_off, text)


@settings(deadline=None)
@given(st.none() | st.integers(0, 0xFFFF), st.text(max_size=50))
def test_abort_round_trip(option: int | None, text: str) -> None:
    abort = over_the_wire(build_abort(option, text))
    assert abort.code is Code.ABORT
    assert parse_signal(abort) == Abort(option, text)


def test_builders_refuse_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        build_csm(1 << 32)
    with pytest.raises(ValueError):
        build_csm(-1)
    with pytest.raises(ValueError):
        build_release(("",))
    with pytest.raises(ValueError):
        build_release(("x" * 256,))
    with pytest.raises(ValueError):
        build_release(hold_off=1 << 24)
    with pytest.raises(ValueError):
        build_abort(1 << 16)


@pytest.mark.parametrize(
    "code", [Code.CSM, Code.PING, Code.PONG, Code.RELEASE, Code.ABORT], ids=lambda c: c.name
)
@pytest.mark.parametrize("number", [1, 3, 5, 7, 9, 65535])
def test_unknown_critical_option_is_refused(code: Code, number: int) -> None:
    with pytest.raises(SignalingError) as info:
        parse_signal(over_the_wire(signal(code, [(number, b"x")])))
    assert info.value.option == number
    assert info.value.code is code
    assert str(number) in str(info.value)


@pytest.mark.parametrize(
    "code", [Code.CSM, Code.PING, Code.PONG, Code.RELEASE, Code.ABORT], ids=lambda c: c.name
)
def test_unknown_elective_options_are_ignored(code: Code) -> None:
    plain = parse_signal(signal(code, []))
    # 6 (Extended-Token-Length in a CSM, RFC 8974) and others: elective, ignored.
    with_extra = parse_signal(signal(code, [(6, b"\x01"), (8, b""), (1000, b"zz")]))
    assert with_extra == plain
    assert plain is not None


def test_malformed_known_options_are_treated_as_unrecognized() -> None:
    # Every defined signaling option is elective, so a bad value is ignored.
    too_long = signal(Code.CSM, [(MAX_MESSAGE_SIZE, b"\x01\x02\x03\x04\x05")])
    assert parse_signal(too_long) == Csm(None, False)
    repeated = signal(Code.CSM, [(MAX_MESSAGE_SIZE, b"\x10"), (MAX_MESSAGE_SIZE, b"\x20")])
    assert parse_signal(repeated) == Csm(16, False)  # the second occurrence is the bad one
    not_empty = signal(Code.CSM, [(BLOCK_WISE_TRANSFER, b"\x01")])
    assert parse_signal(not_empty) == Csm(None, False)
    custody = signal(Code.PING, [(CUSTODY, b"\x00")])
    assert parse_signal(custody) == Ping(b"", False)
    bad_address = signal(Code.RELEASE, [(ALTERNATIVE_ADDRESS, b"\xff\xfe"), (HOLD_OFF, bytes(4))])
    assert parse_signal(bad_address) == Release((), None, "")
    empty_address = signal(Code.RELEASE, [(ALTERNATIVE_ADDRESS, b"")])
    assert parse_signal(empty_address) == Release((), None, "")
    bad_option = signal(Code.ABORT, [(BAD_CSM_OPTION, b"\x01\x02\x03")], b"\xffbye")
    assert parse_signal(bad_option) == Abort(None, "\ufffdbye")


def test_repeatable_alternative_address_keeps_order() -> None:
    release = signal(
        Code.RELEASE,
        [
            (ALTERNATIVE_ADDRESS, b"b.example"),
            (ALTERNATIVE_ADDRESS, b"a.example"),
            (HOLD_OFF, b"\x3c"),
        ],
    )
    assert parse_signal(release) == Release(("b.example", "a.example"), 60, "")


@pytest.mark.parametrize("code", [(7 << 5), (7 << 5) | 6, (7 << 5) | 31])
def test_undefined_signaling_codes_parse_to_none(code: int) -> None:
    assert parse_signal(signal(Code(code), [(1, b"")])) is None
