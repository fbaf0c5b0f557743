"""The DTLS record layer: headers, several records per datagram, epochs, replay window."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coap_trio.errors import DtlsDecodeError, LocalProtocolError
from coap_trio.protocol.dtls.record import (
    DTLS_1_0,
    REPLAY_WINDOW_SIZE,
    Ccm8Cipher,
    ContentType,
    RecordLayer,
    ReplayWindow,
    encode_record,
    iter_records,
    parse_records,
)

KEY, IV = bytes(range(16)), b"\x00\x01\x02\x03"


def test_header_layout() -> None:
    data = encode_record(22, 0, 0x010203040506, b"abc")
    assert data == bytes.fromhex("16fefd00000102030405060003") + b"abc"


def test_several_records_in_one_datagram() -> None:
    datagram = encode_record(22, 0, 1, b"one") + encode_record(20, 0, 2, b"\x01")
    datagram += encode_record(23, 1, 0, b"x" * 20)
    records, bad = parse_records(datagram)
    assert not bad
    assert [(r.content_type, r.epoch, r.sequence) for r in records] == [
        (22, 0, 1),
        (20, 0, 2),
        (23, 1, 0),
    ]
    assert records[0].fragment == b"one"


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x16\xfe\xfd",  # truncated header
        encode_record(22, 0, 0, b"abc")[:-1],  # length past the end
        encode_record(99, 0, 0, b""),  # unknown content type
        encode_record(22, 0, 0, b"", version=0x0303),  # TLS, not DTLS
    ],
)
def test_unreadable_records_are_reported(datagram: bytes) -> None:
    records, bad = parse_records(encode_record(22, 0, 0, b"ok") + datagram)
    assert bad
    assert len(records) == 1
    with pytest.raises(DtlsDecodeError):
        list(iter_records(datagram))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DtlsDecodeError):
        list(iter_records(data))
    parse_records(data)


def test_replay_window() -> None:
    window = ReplayWindow()
    for seq in (0, 1, 5, 3):
        assert window.check(seq)
        window.update(seq)
    assert not window.check(5)
    assert not window.check(3)
    assert window.check(4)
    window.update(100)
    assert not window.check(100 - REPLAY_WINDOW_SIZE)  # fell out of the window
    assert window.check(100 - REPLAY_WINDOW_SIZE + 1)
    assert window.check(99)
    assert not window.check(100)
    window.update(100 + 1000)  # a big jump clears the window
    assert window.check(1099)
    assert not window.check(1100)


@given(st.lists(st.integers(0, 300), max_size=60))
def test_replay_window_against_a_set(seqs: list[int]) -> None:
    window, seen = ReplayWindow(), set()
    for seq in seqs:
        top = max(seen, default=-1)
        expected = seq not in seen and seq > top - REPLAY_WINDOW_SIZE
        assert window.check(seq) is expected
        if expected:
            window.update(seq)
            seen.add(seq)


def _pair() -> tuple[RecordLayer, RecordLayer]:
    sender, receiver = RecordLayer(), RecordLayer()
    sender.set_write_cipher(1, Ccm8Cipher(KEY, IV))
    receiver.set_read_cipher(1, Ccm8Cipher(KEY, IV))
    return sender, receiver


def test_epochs_and_sequence_numbers() -> None:
    sender, receiver = _pair()
    plain = sender.protect(ContentType.HANDSHAKE, b"hello")
    sender.start_writing(1)
    protected = sender.protect(ContentType.HANDSHAKE, b"finished")
    again_plain = sender.protect(ContentType.HANDSHAKE, b"retransmitted", epoch=0)
    (r0,), _ = parse_records(plain)
    (r1,), _ = parse_records(protected)
    (r2,), _ = parse_records(again_plain)
    assert (r0.epoch, r0.sequence, r1.epoch, r1.sequence, r2.sequence) == (0, 0, 1, 0, 1)
    assert r1.fragment != b"finished"
    assert receiver.unprotect(r0) == b"hello"
    assert receiver.unprotect(r1) is None  # epoch 1 before its ChangeCipherSpec
    assert receiver.statistics.wrong_epoch == 1
    receiver.start_reading(1)
    assert receiver.unprotect(r1) == b"finished"
    assert receiver.unprotect(r1) is None  # replayed
    assert receiver.statistics.replayed == 1
    assert receiver.unprotect(r2) == b"retransmitted"
    assert receiver.unprotect(r2, allow_previous=False) is None


def test_forged_and_truncated_records_are_dropped_and_counted() -> None:
    sender, receiver = _pair()
    sender.start_writing(1)
    receiver.start_reading(1)
    (record,), _ = parse_records(sender.protect(ContentType.APPLICATION_DATA, b"data"))
    tampered = bytearray(record.fragment)
    tampered[-1] ^= 1
    forged = encode_record(23, 1, record.sequence, bytes(tampered))
    (bad,), _ = parse_records(forged)
    assert receiver.unprotect(bad) is None
    (short,), _ = parse_records(encode_record(23, 1, 7, b"tiny"))
    assert receiver.unprotect(short) is None
    assert receiver.statistics.bad_record_mac == 2
    # A forged record did not move the window: the real one still gets through.
    assert receiver.unprotect(record) == b"data"


def test_record_versions() -> None:
    receiver = RecordLayer()
    (old,), _ = parse_records(encode_record(22, 0, 0, b"ch", version=DTLS_1_0))
    assert receiver.unprotect(old) == b"ch"  # a ClientHello may come as DTLS 1.0
    _, receiver = _pair()
    receiver.start_reading(1)
    (old1,), _ = parse_records(encode_record(23, 1, 0, bytes(30), version=DTLS_1_0))
    assert receiver.unprotect(old1) is None
    assert receiver.statistics.bad_version == 1


def test_limits() -> None:
    layer = RecordLayer()
    with pytest.raises(LocalProtocolError):
        layer.protect(ContentType.APPLICATION_DATA, bytes(2**14 + 1))
    with pytest.raises(LocalProtocolError):
        layer.start_writing(1)
    with pytest.raises(LocalProtocolError):
        layer.start_reading(1)
    layer.set_next_write_sequence(0, 2**48)
    with pytest.raises(LocalProtocolError):
        layer.protect(ContentType.HANDSHAKE, b"")
    with pytest.raises(ValueError):
        Ccm8Cipher(bytes(15), IV)


def test_replay_window_survives_the_largest_jump() -> None:
    window = ReplayWindow()
    window.update(0)
    window.update(2**48 - 1)
    assert not window.check(2**48 - 1)
    assert window.check(2**48 - 2)
    assert not window.check(0)
