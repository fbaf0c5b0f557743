"""Gaps in the DTLS tests that mutation testing found (docs/testing.md,
"Mutation testing").

Each test pins a behaviour that a surviving mutant of
``coap_trio/protocol/dtls/{record,cookie,keys,messages}.py`` changed without
any other test noticing. (A file of its own: the DTLS tests proper are being
worked on elsewhere.)
"""

from __future__ import annotations

import pytest

from coap_trio.errors import LocalProtocolError
from coap_trio.protocol.dtls import messages as m
from coap_trio.protocol.dtls.cookie import CookieVerifier
from coap_trio.protocol.dtls.record import (
    MAX_PLAINTEXT,
    RECORD_HEADER_SIZE,
    Ccm8Cipher,
    ContentType,
    RecordLayer,
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
