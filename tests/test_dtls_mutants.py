"""Gaps in the DTLS tests that mutation testing found (docs/testing.md,
"Mutation testing").

Each test pins a behaviour that a surviving mutant of
``coap_trio/protocol/dtls/{record,cookie,keys,messages}.py`` changed without
any other test noticing. (A file of its own: the DTLS tests proper are being
worked on elsewhere.)
"""

from __future__ import annotations

import pytest

from coap_trio.errors import DtlsDecodeError, LocalProtocolError
from coap_trio.protocol.dtls import messages as m
from coap_trio.protocol.dtls.cookie import CookieVerifier, Drop, SendHelloVerifyRequest
from coap_trio.protocol.dtls.record import (
    DTLS_1_0,
    MAX_PLAINTEXT,
    MAX_SEQUENCE,
    RECORD_HEADER_SIZE,
    REPLAY_WINDOW_SIZE,
    Ccm8Cipher,
    ContentType,
    RecordLayer,
    ReplayWindow,
    encode_record,
    iter_records,
    parse_records,
)

KEY = bytes(range(16))
IV = bytes(range(100, 104))


def _pair(epoch: int = 1) -> tuple[RecordLayer, RecordLayer]:
    sender, receiver = RecordLayer(), RecordLayer()
    sender.set_write_cipher(epoch, Ccm8Cipher(KEY, IV))
    receiver.set_read_cipher(epoch, Ccm8Cipher(KEY, IV))
    sender.start_writing(epoch)
    receiver.start_reading(epoch)
    return sender, receiver


# -- the fast path of established sessions: exactly one application-data record --------------------


def test_the_fast_path_opens_records_of_every_size_and_epoch() -> None:
    """Empty, over 255 bytes (a two-byte length) and the largest plaintext (2^14),
    in an epoch above 255 (a two-byte epoch): all open; a replay does not."""
    sender, receiver = _pair(epoch=300)
    for payload in (b"", bytes(range(256)) + b"more", bytes(MAX_PLAINTEXT)):
        datagram = sender.protect(ContentType.APPLICATION_DATA, payload)
        assert receiver.open_application_data(datagram) == payload
        assert receiver.open_application_data(datagram) is None  # replayed


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, ContentType.HANDSHAKE),  # not application data
        (1, 0xFF),  # not DTLS 1.2 (0xFEFD)
        (2, 0xFF),
        (12, 0xFF),  # a length that is not the record's
    ],
)
def test_the_fast_path_leaves_a_header_it_does_not_expect_to_the_full_path(
    index: int, value: int
) -> None:
    """The type and version are not in the datagram's part of the AEAD's
    additional data, nor is the length field: the fast path checks them itself,
    and hands anything else to the full path (None), whatever the ciphertext."""
    sender, receiver = _pair()
    datagram = bytearray(sender.protect(ContentType.APPLICATION_DATA, b"payload"))
    datagram[index] = value
    assert receiver.open_application_data(bytes(datagram)) is None


@pytest.mark.parametrize("size", [0, 1, 5, 12, RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + 7])
def test_the_fast_path_refuses_datagrams_too_short_for_a_record(size: int) -> None:
    sender, receiver = _pair()
    datagram = sender.protect(ContentType.APPLICATION_DATA, b"payload")
    assert receiver.open_application_data(datagram[:size]) is None


def test_the_fast_path_drops_a_forged_record() -> None:
    sender, receiver = _pair()
    datagram = bytearray(sender.protect(ContentType.APPLICATION_DATA, b"payload"))
    datagram[-1] ^= 1
    assert receiver.open_application_data(bytes(datagram)) is None


def test_the_fast_path_reads_all_48_bits_of_the_sequence_number() -> None:
    """RFC 6347 §4.1: the sequence number is 48 bits; after 2^40 + 5, number 6 is
    far outside the replay window."""
    sender, receiver = _pair()
    sender.set_next_write_sequence(1, 2**40 + 5)
    assert (
        receiver.open_application_data(sender.protect(ContentType.APPLICATION_DATA, b"a")) == b"a"
    )
    sender.set_next_write_sequence(1, 6)
    assert (
        receiver.open_application_data(sender.protect(ContentType.APPLICATION_DATA, b"b")) is None
    )


# -- the record layer's refusals and counters ------------------------------------------------------


def test_ccm8_takes_a_16_byte_key_and_a_4_byte_iv() -> None:
    for key, iv in ((bytes(15), IV), (KEY, bytes(3)), (bytes(17), bytes(5))):
        with pytest.raises(
            ValueError, match=r"^AES-128-CCM-8 takes a 16-byte key and a 4-byte IV$"
        ):
            Ccm8Cipher(key, iv)


def test_starting_an_epoch_without_keys_says_which() -> None:
    layer = RecordLayer()
    with pytest.raises(LocalProtocolError, match=r"^no write keys for epoch 2$"):
        layer.start_writing(2)
    with pytest.raises(LocalProtocolError, match=r"^no read keys for epoch 2$"):
        layer.start_reading(2)


def test_every_record_of_a_wrong_epoch_is_counted() -> None:
    sender, receiver = _pair()
    receiver_of_epoch_0 = RecordLayer()
    for payload in (b"one", b"two", b"three"):
        (record,), _ = parse_records(sender.protect(ContentType.APPLICATION_DATA, payload))
        assert receiver_of_epoch_0.unprotect(record) is None
    assert receiver_of_epoch_0.statistics.wrong_epoch == 3
    assert receiver.statistics.wrong_epoch == 0


# -- handshake fragments (RFC 6347 §4.2.3) ---------------------------------------------------------


def test_fragments_of_one_byte_are_allowed_and_zero_refused() -> None:
    fragments = m.fragment_handshake(1, 0, b"abc", 1)
    parsed = [m.parse_handshake_fragments(fragment)[0] for fragment in fragments]
    assert [(f.fragment_offset, f.fragment) for f in parsed] == [(0, b"a"), (1, b"b"), (2, b"c")]
    with pytest.raises(ValueError, match=r"^max_fragment must be positive$"):
        m.fragment_handshake(1, 0, b"abc", 0)


# -- the cookie secret (RFC 6347 §4.2.1) -----------------------------------------------------------


def _hello(cookie: bytes = b"") -> m.ClientHello:
    return m.ClientHello(0xFEFD, b"r" * 32, b"", cookie, (m.TLS_PSK_WITH_AES_128_CCM_8,), b"\x00")


class _Secrets:
    """Distinct 32-byte secrets, and the sizes asked for."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.sizes.append(size)
        return len(self.sizes).to_bytes(1, "big") * size


def test_the_cookie_secret_rotates_each_lifetime_and_the_previous_one_is_honoured() -> None:
    secrets = _Secrets()
    verifier = CookieVerifier(secret_lifetime=10.0, random_bytes=secrets)
    address = ("192.0.2.1", 5684)
    first = verifier.cookie_for(address, _hello(), 100.0)
    assert verifier.cookie_for(address, _hello(), 109.9) == first  # the same secret
    assert verifier.is_valid(address, _hello(first), 109.9)
    second = verifier.cookie_for(address, _hello(), 110.0)  # rotated
    assert second != first
    assert verifier.is_valid(address, _hello(first), 119.9)  # the previous secret
    assert verifier.is_valid(address, _hello(second), 119.9)
    assert not verifier.is_valid(address, _hello(first), 120.0)  # rotated again: gone
    assert verifier.is_valid(address, _hello(second), 120.0)
    assert secrets.sizes == [32, 32, 32]


def test_after_two_lifetimes_without_traffic_no_old_cookie_is_honoured() -> None:
    verifier = CookieVerifier(secret_lifetime=10.0, random_bytes=_Secrets())
    address = ("192.0.2.1", 5684)
    old = verifier.cookie_for(address, _hello(), 0.0)
    assert not verifier.is_valid(address, _hello(old), 20.0)
    verifier = CookieVerifier(secret_lifetime=10.0, random_bytes=_Secrets())
    old = verifier.cookie_for(address, _hello(), 0.0)
    assert verifier.is_valid(address, _hello(old), 19.9)  # one rotation: the previous


# -- reading records (RFC 6347 §4.1) ---------------------------------------------------------------


def test_record_headers_carry_16_bit_epochs_and_48_bit_sequence_numbers() -> None:
    records = list(iter_records(encode_record(23, 300, 2**40 + 5, b"x")))
    assert [(r.epoch, r.sequence, r.fragment) for r in records] == [(300, 2**40 + 5, b"x")]
    (empty,) = iter_records(encode_record(23, 1, 0, b""))  # a header and nothing else
    assert empty.fragment == b""


_FIRST = encode_record(23, 1, 7, b"first")


@pytest.mark.parametrize(
    ("rest", "message"),
    [
        (b"\x17\xfe\xfd\x00", "truncated record header"),
        (encode_record(99, 1, 8, b"x"), "unknown content type 99"),
        (encode_record(23, 1, 8, b"x", version=0x0303), "record version 0x0303 is not DTLS"),
        (encode_record(23, 1, 8, b"x")[:-1], "record runs past the end of the datagram"),
        (encode_record(23, 1, 8, bytes(2**14 + 2049)), "record of 18433 bytes is too long"),
    ],
)
def test_unreadable_records_say_what_and_where(rest: bytes, message: str) -> None:
    with pytest.raises(DtlsDecodeError) as caught:
        list(iter_records(_FIRST + rest))
    assert (str(caught.value), caught.value.offset) == (message, len(_FIRST))


def test_the_largest_ciphertext_is_readable() -> None:
    (record,) = iter_records(encode_record(23, 1, 8, bytes(2**14 + 2048)))
    assert len(record.fragment) == 2**14 + 2048


def test_the_full_path_counts_every_drop_and_opens_the_largest_plaintext() -> None:
    sender, receiver = _pair()
    datagram = sender.protect(ContentType.APPLICATION_DATA, bytes(MAX_PLAINTEXT))
    (record,), _ = parse_records(datagram)
    assert receiver.unprotect(record) == bytes(MAX_PLAINTEXT)
    for _ in range(2):
        assert receiver.unprotect(record) is None
    assert receiver.statistics.replayed == 2
    (bad,), _ = parse_records(encode_record(23, 1, 99, bytes(20), version=0xFEFE))
    for _ in range(2):
        assert receiver.unprotect(bad) is None
    assert receiver.statistics.bad_version == 2


def test_protect_bounds_and_their_reasons() -> None:
    sender, _ = _pair()
    with pytest.raises(LocalProtocolError, match=r"^record payload of 16385 bytes exceeds 2\^14$"):
        sender.protect(ContentType.APPLICATION_DATA, bytes(MAX_PLAINTEXT + 1))
    sender.set_next_write_sequence(1, MAX_SEQUENCE)
    (last,), _ = parse_records(sender.protect(ContentType.APPLICATION_DATA, b"last"))
    assert last.sequence == MAX_SEQUENCE
    with pytest.raises(LocalProtocolError, match=r"^epoch 1 has used up its sequence numbers$"):
        sender.protect(ContentType.APPLICATION_DATA, b"one more")


# -- the stateless cookie exchange (RFC 6347 §4.2.1) -----------------------------------------------


def test_cookie_sizes_8_to_32_bytes() -> None:
    for size in (8, 32):
        assert CookieVerifier(cookie_size=size).cookie_size == size
    for size in (7, 33):
        with pytest.raises(ValueError, match=r"^cookie_size must be 8 to 32 bytes$"):
            CookieVerifier(cookie_size=size)


def test_the_default_secret_lives_300_seconds() -> None:
    verifier = CookieVerifier(random_bytes=_Secrets())
    address = ("192.0.2.1", 5684)
    first = verifier.cookie_for(address, _hello(), 0.0)
    assert verifier.cookie_for(address, _hello(), 299.9) == first
    assert verifier.cookie_for(address, _hello(), 300.0) != first


def test_what_cannot_start_a_session_is_dropped_with_a_reason() -> None:
    verifier = CookieVerifier()
    address = ("192.0.2.1", 5684)
    assert verifier.check(b"", address, 0.0) == Drop("empty datagram")
    truncated_hello = encode_record(
        ContentType.HANDSHAKE, 0, 0, m.encode_handshake(m.HandshakeType.CLIENT_HELLO, 0, b"\xfe")
    )
    assert verifier.check(truncated_hello, address, 0.0) == Drop("malformed ClientHello")


def test_the_hello_verify_request_goes_in_a_dtls_1_0_record() -> None:
    """RFC 6347 §4.2.1: the HelloVerifyRequest's record version is DTLS 1.0 (0xFEFF)
    whatever the ClientHello's, for clients that do not know 1.2 yet; it reuses
    the ClientHello's record sequence number."""
    verifier = CookieVerifier()
    message = m.encode_handshake(m.HandshakeType.CLIENT_HELLO, 0, _hello().encode())
    decision = verifier.check(
        encode_record(ContentType.HANDSHAKE, 0, 5, message), ("192.0.2.1", 5684), 0.0
    )
    assert isinstance(decision, SendHelloVerifyRequest)
    (record,), _ = parse_records(decision.datagram)
    assert (record.version, record.sequence) == (DTLS_1_0, 5)


def test_the_replay_window_keeps_64_bits_however_far_the_numbers_jump() -> None:
    """RFC 6347 §4.1.2.6: the window is a bitmap of REPLAY_WINDOW_SIZE (64) records;
    its memory stays that, whatever a peer's sequence numbers do."""
    window = ReplayWindow()
    for sequence in (0, 1, 63, 64, 100, 101, 2**20, 2**40, 2**40 + 3):
        assert window.check(sequence)
        window.update(sequence)
        assert window._bits.bit_length() <= REPLAY_WINDOW_SIZE
    assert not window.check(2**40 + 3)
    assert window.check(2**40 + 2)
    assert not window.check(2**40 + 3 - REPLAY_WINDOW_SIZE)


# -- the lengths of TLS vectors (RFC 5246 §4.3, §7.4) ----------------------------------------------


def _u8(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def _u16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _u24(data: bytes) -> bytes:
    return len(data).to_bytes(3, "big") + data


def test_lists_need_an_element_and_read_whole_values() -> None:
    assert m.decode_u16_list(_u16(b"\x00\x01\x00\x02\xff\xfe")) == (1, 2, 0xFFFE)
    assert m.decode_u8_list(_u8(b"\x07")) == (7,)
    for empty in (lambda: m.decode_u16_list(_u16(b"")), lambda: m.decode_u8_list(_u8(b""))):
        with pytest.raises(DtlsDecodeError, match="vector of 0 bytes out of bounds"):
            empty()
    with pytest.raises(DtlsDecodeError, match=r"^list: truncated$"):
        m.decode_u16_list(b"\x00\x04\x00\x01")  # says 4 bytes, has 2
    with pytest.raises(ValueError, match="256 bytes do not fit a 1-byte length"):
        m.HelloVerifyRequest(DTLS_1_0, bytes(256)).encode()


def test_hello_vectors_bounds() -> None:
    """A HelloVerifyRequest's cookie may be empty; a ServerHello's session_id is at
    most 32 bytes."""
    assert m.HelloVerifyRequest.decode(b"\xfe\xff" + _u8(b"")).cookie == b""
    hello = m.ServerHello(0xFEFD, bytes(32), bytes(32), 0xC0A8, 0)
    assert m.ServerHello.decode(hello.encode()).session_id == bytes(32)
    too_long = b"\xfe\xfd" + bytes(32) + _u8(bytes(33)) + b"\xc0\xa8\x00"
    with pytest.raises(DtlsDecodeError, match="vector of 33 bytes out of bounds"):
        m.ServerHello.decode(too_long)


def test_certificate_request_vectors_bounds() -> None:
    """certificate_types <1..2^8-1>, supported_signature_algorithms <2..2^16-2>,
    each DistinguishedName <1..2^16-1> (RFC 5246 §7.4.4)."""
    request = m.CertificateRequest((64,), (0x0403, 0x0804), (b"N",))
    assert m.CertificateRequest.decode(request.encode()) == request
    for body in (
        _u8(b"") + _u16(b"\x04\x03") + _u16(b""),
        _u8(b"\x40") + _u16(b"") + _u16(b""),
        _u8(b"\x40") + _u16(b"\x04\x03") + _u16(_u16(b"")),
    ):
        with pytest.raises(DtlsDecodeError, match="vector of 0 bytes out of bounds"):
            m.CertificateRequest.decode(body)


def test_one_byte_is_enough_for_certificates_keys_points_and_signatures() -> None:
    assert m.decode_certificate_list(_u24(_u24(b"C"))) == (b"C",)
    assert m.decode_raw_public_key(_u24(b"K")) == b"K"
    assert m.decode_ecdhe_client_key_exchange(_u8(b"P")) == b"P"
    assert m.decode_digitally_signed(b"\x04\x03" + _u16(b"S")) == (0x0403, b"S")
    for empty in (
        lambda: m.decode_certificate_list(_u24(_u24(b""))),
        lambda: m.decode_raw_public_key(_u24(b"")),
        lambda: m.decode_ecdhe_client_key_exchange(_u8(b"")),
        lambda: m.decode_digitally_signed(b"\x04\x03" + _u16(b"")),
    ):
        with pytest.raises(DtlsDecodeError, match="vector of 0 bytes out of bounds"):
            empty()
