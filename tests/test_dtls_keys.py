"""The TLS 1.2 key schedule of the DTLS engine: known answers and a record across sides."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from coap_trio.protocol.dtls import keys
from coap_trio.protocol.dtls.record import (
    Ccm8Cipher,
    ContentType,
    RecordLayer,
    parse_records,
)

# The TLS 1.2 PRF (SHA-256) vector posted to the IETF TLS list (msg03416).
PRF_SECRET = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
PRF_SEED = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
PRF_OUTPUT = bytes.fromhex(
    "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a"
    "6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab"
    "4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701"
    "87347b66"
)


def test_prf_sha256_known_answer() -> None:
    assert keys.prf(PRF_SECRET, b"test label", PRF_SEED, 100) == PRF_OUTPUT


def test_prf_output_is_a_prefix_of_a_longer_one() -> None:
    assert keys.prf(PRF_SECRET, b"test label", PRF_SEED, 7) == PRF_OUTPUT[:7]
    assert keys.prf(PRF_SECRET, b"test label", PRF_SEED, 32) == PRF_OUTPUT[:32]


def test_psk_premaster_secret_layout() -> None:
    # RFC 4279 §2: uint16 N, N zeros, uint16 N, psk.
    assert keys.psk_premaster_secret(b"abc") == b"\x00\x03\x00\x00\x00\x00\x03abc"
    assert len(keys.psk_premaster_secret(bytes(16))) == 2 + 16 + 2 + 16


def test_master_secrets_are_48_bytes_and_differ() -> None:
    pms = keys.psk_premaster_secret(b"secretPSK")
    cr, sr = bytes(range(32)), bytes(range(32, 64))
    plain = keys.master_secret(pms, cr, sr)
    extended = keys.extended_master_secret(pms, keys.sha256(b"handshake"))
    assert len(plain) == len(extended) == 48
    assert plain != extended
    assert plain == keys.prf(pms, b"master secret", cr + sr, 48)
    assert extended == keys.prf(pms, b"extended master secret", keys.sha256(b"handshake"), 48)


def test_key_block_layout_for_ccm8() -> None:
    master, cr, sr = bytes(48), b"c" * 32, b"s" * 32
    raw = keys.prf(master, b"key expansion", sr + cr, 40)
    block = keys.key_block(master, cr, sr)
    assert block.client_write_key == raw[:16]
    assert block.server_write_key == raw[16:32]
    assert block.client_write_iv == raw[32:36]
    assert block.server_write_iv == raw[36:40]


def test_verify_data_labels() -> None:
    master, digest = bytes(48), keys.sha256(b"messages")
    client = keys.verify_data(master, True, digest)
    server = keys.verify_data(master, False, digest)
    assert len(client) == len(server) == 12
    assert client == keys.prf(master, b"client finished", digest, 12)
    assert server == keys.prf(master, b"server finished", digest, 12)


# RFC 3610 §8, packet vectors #1 and #2 (M = 8: an 8-byte tag; 13-byte nonce).
RFC3610_KEY = bytes(range(0xC0, 0xD0))


def test_aes_ccm8_rfc3610_packet_vector_1() -> None:
    nonce = bytes.fromhex("00000003020100A0A1A2A3A4A5")
    aad, plaintext = bytes(range(8)), bytes(range(8, 0x1F))
    expected = bytes.fromhex("588C979A61C663D2F066D0C2C0F989806D5F6B61DAC38417E8D12CFDF926E0")
    assert AESCCM(RFC3610_KEY, tag_length=8).encrypt(nonce, plaintext, aad) == expected


def test_aes_ccm8_rfc3610_packet_vector_2() -> None:
    nonce = bytes.fromhex("00000004030201A0A1A2A3A4A5")
    aad, plaintext = bytes(range(8)), bytes(range(8, 0x20))
    expected = bytes.fromhex("72C91A36E135F8CF291CA894085C87E3CC15C439C9E43A3BA091D56E10400916")
    assert AESCCM(RFC3610_KEY, tag_length=8).encrypt(nonce, plaintext, aad) == expected


def test_ccm8_record_nonce_and_aad_follow_rfc6655() -> None:
    """The nonce is IV || epoch || seq and the AAD seq || type || version || length."""
    key, iv = bytes(range(16)), b"\x01\x02\x03\x04"
    seq_num = (1 << 48 | 5).to_bytes(8, "big")
    sealed = Ccm8Cipher(key, iv).seal(23, 0xFEFD, seq_num, b"hello")
    aad = seq_num + b"\x17\xfe\xfd\x00\x05"
    assert sealed == seq_num + AESCCM(key, tag_length=8).encrypt(iv + seq_num, b"hello", aad)


def test_a_record_protected_by_one_side_is_read_by_the_other() -> None:
    pms = keys.psk_premaster_secret(b"secretPSK")
    cr, sr = b"\x11" * 32, b"\x22" * 32
    block = keys.key_block(keys.master_secret(pms, cr, sr), cr, sr)
    client, server = RecordLayer(), RecordLayer()
    client.set_write_cipher(1, Ccm8Cipher(block.client_write_key, block.client_write_iv))
    client.start_writing(1)
    server.set_read_cipher(1, Ccm8Cipher(block.client_write_key, block.client_write_iv))
    server.start_reading(1)
    datagram = client.protect(ContentType.APPLICATION_DATA, b"GET /time")
    assert len(datagram) == 13 + 8 + len(b"GET /time") + 8
    (record,), bad = parse_records(datagram)
    assert not bad
    assert record.epoch == 1
    assert record.sequence == 0
    assert server.unprotect(record) == b"GET /time"
    # The server's own write direction uses the other key: the client cannot read its
    # records with the client key.
    wrong = RecordLayer()
    wrong.set_read_cipher(1, Ccm8Cipher(block.server_write_key, block.server_write_iv))
    wrong.start_reading(1)
    assert wrong.unprotect(record) is None
    assert wrong.statistics.bad_record_mac == 1
