"""DTLS handshake messages: round trips, strict bounds, fragmentation and reassembly."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import DtlsDecodeError
from coap_trio.protocol.dtls import messages as m
from coap_trio.protocol.dtls.messages import HandshakeType


def _hello(**changes: object) -> m.ClientHello:
    fields: dict[str, object] = {
        "client_version": 0xFEFD,
        "random": bytes(range(32)),
        "session_id": b"",
        "cookie": b"c" * 16,
        "cipher_suites": (m.TLS_PSK_WITH_AES_128_CCM_8, m.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
        "compression_methods": b"\x00",
        "extensions": (
            (m.ExtensionType.SUPPORTED_GROUPS, m.encode_u16_list([m.SECP256R1])),
            (m.ExtensionType.EC_POINT_FORMATS, m.encode_u8_list([0])),
            (m.ExtensionType.SIGNATURE_ALGORITHMS, m.encode_u16_list([m.ECDSA_SECP256R1_SHA256])),
            (m.ExtensionType.EXTENDED_MASTER_SECRET, b""),
            (m.ExtensionType.CLIENT_CERTIFICATE_TYPE, m.encode_u8_list([2, 0])),
            (m.ExtensionType.SERVER_CERTIFICATE_TYPE, m.encode_u8_list([2, 0])),
            (m.ExtensionType.RENEGOTIATION_INFO, b"\x00"),
        ),
    }
    fields.update(changes)
    return m.ClientHello(**fields)  # type: ignore[arg-type]


def test_client_hello_round_trip_and_layout() -> None:
    hello = _hello()
    body = hello.encode()
    assert m.ClientHello.decode(body) == hello
    assert body[:2] == b"\xfe\xfd"
    assert body[34:36] == b"\x00\x10"  # empty session ID, then the cookie's length
    assert hello.extension(m.ExtensionType.EXTENDED_MASTER_SECRET) == b""
    assert hello.extension(m.ExtensionType.SERVER_NAME) is None
    assert m.decode_u16_list(hello.extension(m.ExtensionType.SUPPORTED_GROUPS) or b"") == (23,)
    # The cookie is not part of what it is computed over.
    assert hello.parameters() == _hello(cookie=b"").parameters()
    no_ext = _hello(extensions=())
    assert m.ClientHello.decode(no_ext.encode()) == no_ext


def test_client_hello_bounds() -> None:
    body = _hello().encode()
    with pytest.raises(DtlsDecodeError):
        m.ClientHello.decode(body[:-1])
    with pytest.raises(DtlsDecodeError):
        m.ClientHello.decode(body + b"\x00")
    with pytest.raises(DtlsDecodeError):  # session ID over 32 bytes
        m.ClientHello.decode(_hello(session_id=b"s" * 33).encode())
    with pytest.raises(DtlsDecodeError):  # no cipher suite
        m.ClientHello.decode(_hello(cipher_suites=()).encode())
    with pytest.raises(DtlsDecodeError):  # no compression method
        m.ClientHello.decode(_hello(compression_methods=b"").encode())
    twice = ((23, b""), (23, b""))
    with pytest.raises(DtlsDecodeError):
        m.ClientHello.decode(_hello(extensions=twice).encode())


def test_server_hello_and_hello_verify_request() -> None:
    hello = m.ServerHello(0xFEFD, b"r" * 32, b"id", 0xC0A8, 0, ((23, b""), (0xFF01, b"\x00")))
    assert m.ServerHello.decode(hello.encode()) == hello
    bare = m.ServerHello(0xFEFD, b"r" * 32, b"", 0xC0A8, 0)
    assert m.ServerHello.decode(bare.encode()) == bare
    assert len(bare.encode()) == 38
    hvr = m.HelloVerifyRequest(0xFEFF, b"k" * 32)
    assert m.HelloVerifyRequest.decode(hvr.encode()) == hvr
    assert hvr.encode()[:3] == b"\xfe\xff\x20"


def test_certificates() -> None:
    chain = (b"leaf-der", b"ca-der")
    body = m.encode_certificate_list(chain)
    assert body == b"\x00\x00\x14\x00\x00\x08leaf-der\x00\x00\x06ca-der"
    assert m.decode_certificate_list(body) == chain
    assert m.decode_certificate_list(m.encode_certificate_list(())) == ()
    assert m.decode_raw_public_key(m.encode_raw_public_key(b"spki")) == b"spki"
    with pytest.raises(DtlsDecodeError):  # an empty certificate inside the list
        m.decode_certificate_list(b"\x00\x00\x03\x00\x00\x00")
    request = m.CertificateRequest(authorities=(b"dn1", b"dn2"))
    assert m.CertificateRequest.decode(request.encode()) == request
    assert m.CertificateRequest().encode() == b"\x01\x40\x00\x02\x04\x03\x00\x00"


def test_key_exchanges_finished_alerts() -> None:
    assert m.decode_psk_server_key_exchange(m.encode_psk_server_key_exchange(b"CoAP")) == b"CoAP"
    assert m.encode_psk_client_key_exchange(b"id") == b"\x00\x02id"
    assert m.decode_psk_client_key_exchange(b"\x00\x02id") == b"id"
    point = b"\x04" + bytes(64)
    assert m.decode_ecdhe_client_key_exchange(m.encode_ecdhe_client_key_exchange(point)) == point
    signed = m.encode_digitally_signed(m.ECDSA_SECP256R1_SHA256, b"sig")
    assert m.decode_digitally_signed(signed) == (0x0403, b"sig")
    assert m.decode_finished(bytes(12)) == bytes(12)
    with pytest.raises(DtlsDecodeError):
        m.decode_finished(bytes(11))
    m.decode_server_hello_done(b"")
    with pytest.raises(DtlsDecodeError):
        m.decode_server_hello_done(b"\x00")
    m.decode_change_cipher_spec(b"\x01")
    with pytest.raises(DtlsDecodeError):
        m.decode_change_cipher_spec(b"\x02")
    assert m.decode_alert(m.encode_alert(2, 51)) == (2, 51)
    with pytest.raises(DtlsDecodeError):
        m.decode_alert(b"\x03\x00")


def test_handshake_header() -> None:
    raw = m.encode_handshake(HandshakeType.FINISHED, 5, bytes(12))
    assert raw[:12] == bytes.fromhex("14 00000c 0005 000000 00000c")
    (fragment,) = m.parse_handshake_fragments(raw)
    assert fragment == m.HandshakeFragment(20, 12, 5, 0, bytes(12))
    with pytest.raises(DtlsDecodeError):  # fragment beyond the message's length
        m.parse_handshake_fragments(bytes.fromhex("14 00000c 0005 000008 000008") + bytes(8))


def _reassemble(fragments: list[bytes], **kwargs: int) -> list[m.HandshakeMessage]:
    reassembler = m.Reassembler(**kwargs)
    out = []
    for data in fragments:
        for fragment in m.parse_handshake_fragments(data):
            reassembler.add(fragment)
        while (message := reassembler.pop()) is not None:
            out.append(message)
    return out


def test_fragmentation_and_reassembly_in_any_order() -> None:
    body = bytes(random.Random(1).randbytes(3000))
    fragments = m.fragment_handshake(HandshakeType.CERTIFICATE, 0, body, 500)
    assert len(fragments) == 6
    assert all(len(f) <= 512 for f in fragments)
    fragments += m.fragment_handshake(HandshakeType.SERVER_HELLO_DONE, 1, b"", 500)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = fragments + rng.sample(fragments, 3)  # with duplicates
        rng.shuffle(shuffled)
        messages = _reassemble(shuffled)
        assert [(x.msg_type, x.message_seq, x.body) for x in messages] == [
            (HandshakeType.CERTIFICATE, 0, body),
            (HandshakeType.SERVER_HELLO_DONE, 1, b""),
        ]
    # Overlapping fragments cut differently are fine too.
    overlapping = m.fragment_handshake(HandshakeType.CERTIFICATE, 0, body, 700)
    overlapping += m.fragment_handshake(HandshakeType.CERTIFICATE, 0, body, 300)
    rng.shuffle(overlapping)
    assert _reassemble(overlapping)[0].body == body


def test_reassembly_bounds() -> None:
    big = m.fragment_handshake(HandshakeType.CERTIFICATE, 0, bytes(20000), 1000)
    with pytest.raises(DtlsDecodeError):
        _reassemble(big[:1])
    assert _reassemble(big, max_message_size=20000)[0].body == bytes(20000)
    # Far ahead: dropped, not buffered.
    reassembler = m.Reassembler(window=4)
    (ahead,) = m.parse_handshake_fragments(m.encode_handshake(HandshakeType.FINISHED, 9, bytes(12)))
    assert reassembler.add(ahead) is False
    assert reassembler.pending() == 0
    # Old: reported as a retransmission.
    reassembler = m.Reassembler(next_seq=3)
    (old,) = m.parse_handshake_fragments(m.encode_handshake(HandshakeType.FINISHED, 2, bytes(12)))
    assert reassembler.add(old) is True
    # Disagreeing fragments are refused.
    a, b = m.fragment_handshake(HandshakeType.CERTIFICATE, 0, bytes(10), 5)
    b = bytes((HandshakeType.FINISHED,)) + b[1:]
    with pytest.raises(DtlsDecodeError):
        _reassemble([a, b])


PARSERS: list[Callable[[bytes], object]] = [
    m.ClientHello.decode,
    m.ServerHello.decode,
    m.HelloVerifyRequest.decode,
    m.CertificateRequest.decode,
    m.decode_certificate_list,
    m.decode_raw_public_key,
    m.decode_psk_server_key_exchange,
    m.decode_psk_client_key_exchange,
    m.decode_ecdhe_client_key_exchange,
    m.decode_digitally_signed,
    m.decode_server_hello_done,
    m.decode_finished,
    m.decode_change_cipher_spec,
    m.decode_alert,
    m.decode_u8_list,
    m.decode_u16_list,
    m.parse_handshake_fragments,
    lambda data: _reassemble([data]),
]


@settings(max_examples=300)
@given(st.sampled_from(PARSERS), st.binary(max_size=300))
def test_parsers_raise_only_decode_errors(parser: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(DtlsDecodeError):
        parser(data)


@given(st.binary(max_size=40), st.integers(0, 300))
def test_parsers_on_mutated_client_hellos(noise: bytes, at: int) -> None:
    body = bytearray(_hello().encode())
    at %= len(body)
    body[at : at + len(noise)] = noise
    with contextlib.suppress(DtlsDecodeError):
        m.ClientHello.decode(bytes(body))
