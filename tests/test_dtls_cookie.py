"""The stateless HelloVerifyRequest exchange of a DTLS server (RFC 6347 §4.2.1)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from coap_trio.protocol.dtls import messages as m
from coap_trio.protocol.dtls.cookie import Accept, CookieVerifier, Drop, SendHelloVerifyRequest
from coap_trio.protocol.dtls.record import ContentType, encode_record, parse_records

ADDRESS = ("::1", 5684)


def _counter_bytes() -> object:
    counter = itertools.count()
    return lambda n: bytes([next(counter) % 256]) * n


def _hello(cookie: bytes = b"", random: bytes = b"r" * 32) -> m.ClientHello:
    return m.ClientHello(0xFEFD, random, b"", cookie, (m.TLS_PSK_WITH_AES_128_CCM_8,), b"\x00")


def _datagram(hello: m.ClientHello, message_seq: int = 0, record_seq: int = 0) -> bytes:
    message = m.encode_handshake(m.HandshakeType.CLIENT_HELLO, message_seq, hello.encode())
    return encode_record(ContentType.HANDSHAKE, 0, record_seq, message)


def _cookie_of(decision: object) -> bytes:
    assert isinstance(decision, SendHelloVerifyRequest)
    (record,), _ = parse_records(decision.datagram)
    (fragment,) = m.parse_handshake_fragments(record.fragment)
    assert fragment.msg_type == m.HandshakeType.HELLO_VERIFY_REQUEST
    return m.HelloVerifyRequest.decode(fragment.fragment).cookie


def test_hello_verify_request_then_accept() -> None:
    verifier = CookieVerifier()
    decision = verifier.check(_datagram(_hello(), record_seq=7), ADDRESS, 0.0)
    assert isinstance(decision, SendHelloVerifyRequest)
    (record,), _ = parse_records(decision.datagram)
    assert (record.epoch, record.sequence) == (0, 7)  # the ClientHello's record number
    cookie = _cookie_of(decision)
    assert len(cookie) == 16
    accepted = verifier.check(_datagram(_hello(cookie), 1, 8), ADDRESS, 1.0)
    assert accepted == Accept(_hello(cookie))


def test_cookie_is_bound_to_address_and_parameters() -> None:
    verifier = CookieVerifier()
    cookie = _cookie_of(verifier.check(_datagram(_hello()), ADDRESS, 0.0))
    other_address = verifier.check(_datagram(_hello(cookie), 1), ("::1", 5685), 0.0)
    assert isinstance(other_address, SendHelloVerifyRequest)
    other_random = verifier.check(_datagram(_hello(cookie, b"x" * 32), 1), ADDRESS, 0.0)
    assert isinstance(other_random, SendHelloVerifyRequest)
    forged = verifier.check(_datagram(_hello(bytes(16)), 1), ADDRESS, 0.0)
    assert isinstance(forged, SendHelloVerifyRequest)


def test_secret_rotation_accepts_current_and_previous() -> None:
    verifier = CookieVerifier(secret_lifetime=10.0, random_bytes=_counter_bytes())  # type: ignore[arg-type]
    old = _cookie_of(verifier.check(_datagram(_hello()), ADDRESS, 0.0))
    assert isinstance(verifier.check(_datagram(_hello(old), 1), ADDRESS, 11.0), Accept)
    new = _cookie_of(verifier.check(_datagram(_hello()), ADDRESS, 11.5))
    assert new != old
    # Two rotations later the first cookie is refused, the second still works once more.
    assert isinstance(verifier.check(_datagram(_hello(new), 1), ADDRESS, 21.0), Accept)
    assert isinstance(
        verifier.check(_datagram(_hello(old), 1), ADDRESS, 21.0), SendHelloVerifyRequest
    )
    assert isinstance(
        verifier.check(_datagram(_hello(new), 1), ADDRESS, 45.0), SendHelloVerifyRequest
    )


def test_what_is_dropped() -> None:
    verifier = CookieVerifier()
    assert isinstance(verifier.check(b"", ADDRESS, 0.0), Drop)
    assert isinstance(verifier.check(b"\x16\xfe", ADDRESS, 0.0), Drop)
    app = encode_record(ContentType.APPLICATION_DATA, 0, 0, b"x")
    assert verifier.check(app, ADDRESS, 0.0) == Drop("not an epoch-0 handshake record")
    epoch1 = encode_record(ContentType.HANDSHAKE, 1, 0, b"x" * 30)
    assert isinstance(verifier.check(epoch1, ADDRESS, 0.0), Drop)
    finished = m.encode_handshake(m.HandshakeType.FINISHED, 0, bytes(12))
    assert verifier.check(encode_record(22, 0, 0, finished), ADDRESS, 0.0) == Drop(
        "not a ClientHello"
    )
    body = _hello().encode()
    first = m.fragment_handshake(m.HandshakeType.CLIENT_HELLO, 0, body, 20)[0]
    assert verifier.check(encode_record(22, 0, 0, first), ADDRESS, 0.0) == Drop(
        "fragmented ClientHello"
    )


@given(st.binary(max_size=120))
def test_arbitrary_datagrams_never_raise(data: bytes) -> None:
    decision = CookieVerifier().check(data, ADDRESS, 0.0)
    assert isinstance(decision, Drop | SendHelloVerifyRequest | Accept)
