"""DTLS 1.2 handshake messages, alerts and handshake fragments (RFC 6347 §4.2, RFC 5246 §7).

Owns the wire form of every message the RFC 7925 profile exchanges:
ClientHello (with the cookie and its extensions), HelloVerifyRequest,
ServerHello, Certificate (an X.509 list, or a raw public key, RFC 7250),
ServerKeyExchange (a PSK identity hint, RFC 4279; signed ECDHE parameters,
RFC 8422), CertificateRequest, ServerHelloDone, ClientKeyExchange (a PSK
identity; an ECDHE point), CertificateVerify, Finished, ChangeCipherSpec
and alerts; the 12-byte DTLS handshake header; cutting an outgoing message
into fragments that fit a datagram; and the bounded reassembly of incoming
fragments (overlaps and duplicates are fine, a message above
``max_message_size`` or too far ahead is refused).

Every parser is strict about bounds and raises only
:class:`~coap_trio.errors.DtlsDecodeError`, which the session turns into a
dropped record or a ``decode_error`` alert. Must not know about records,
keys or the state machine.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import attrs

from ...errors import DtlsDecodeError

__all__ = [
    "CHANGE_CIPHER_SPEC",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ECDSA_SECP256R1_SHA256",
    "ECDSA_SIGN",
    "HANDSHAKE_HEADER_SIZE",
    "POINT_FORMAT_UNCOMPRESSED",
    "SECP256R1",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    "TLS_PSK_WITH_AES_128_CCM_8",
    "AlertDescription",
    "AlertLevel",
    "CertificateRequest",
    "CertificateType",
    "ClientHello",
    "ExtensionType",
    "HandshakeFragment",
    "HandshakeMessage",
    "HandshakeType",
    "HelloVerifyRequest",
    "Reassembler",
    "ServerHello",
    "decode_alert",
    "decode_certificate_list",
    "decode_change_cipher_spec",
    "decode_digitally_signed",
    "decode_ecdhe_client_key_exchange",
    "decode_extensions",
    "decode_finished",
    "decode_psk_client_key_exchange",
    "decode_psk_server_key_exchange",
    "decode_raw_public_key",
    "decode_server_hello_done",
    "decode_u8_list",
    "decode_u16_list",
    "encode_alert",
    "encode_certificate_list",
    "encode_digitally_signed",
    "encode_ecdhe_client_key_exchange",
    "encode_extensions",
    "encode_handshake",
    "encode_psk_client_key_exchange",
    "encode_psk_server_key_exchange",
    "encode_raw_public_key",
    "encode_u8_list",
    "encode_u16_list",
    "fragment_handshake",
    "parse_handshake_fragments",
]

#: TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655), the PSK suite of RFC 7925.
TLS_PSK_WITH_AES_128_CCM_8 = 0xC0A8
#: TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (RFC 7251), the certificate and RPK suite of RFC 7925.
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 = 0xC0AE
#: The signalling suite of RFC 5746 (secure renegotiation, here: none at all).
TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF
#: The named group secp256r1 (P-256, RFC 8422 §5.1.1).
SECP256R1 = 23
#: The uncompressed point format (RFC 8422 §5.1.2).
POINT_FORMAT_UNCOMPRESSED = 0
#: SignatureAndHashAlgorithm ecdsa (3) with sha256 (4) (RFC 5246 §7.4.1.4.1).
ECDSA_SECP256R1_SHA256 = 0x0403
#: ClientCertificateType ecdsa_sign (RFC 8422 §5.5).
ECDSA_SIGN = 64
#: The body of a ChangeCipherSpec record.
CHANGE_CIPHER_SPEC = b"\x01"
#: msg_type (1) + length (3) + message_seq (2) + fragment_offset (3) + fragment_length (3).
HANDSHAKE_HEADER_SIZE = 12
#: The largest handshake message reassembled by default (a certificate chain fits).
DEFAULT_MAX_MESSAGE_SIZE = 16384


class HandshakeType(enum.IntEnum):
    """A handshake message's msg_type (RFC 5246 §7.4, RFC 6347 §4.3.2)."""

    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    HELLO_VERIFY_REQUEST = 3
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20


class AlertLevel(enum.IntEnum):
    """An alert's level (RFC 5246 §7.2)."""

    WARNING = 1
    FATAL = 2


class AlertDescription(enum.IntEnum):
    """An alert's description (RFC 5246 §7.2, RFC 4279 §2, RFC 7250)."""

    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    RECORD_OVERFLOW = 22
    HANDSHAKE_FAILURE = 40
    BAD_CERTIFICATE = 42
    UNSUPPORTED_CERTIFICATE = 43
    CERTIFICATE_REVOKED = 44
    CERTIFICATE_EXPIRED = 45
    CERTIFICATE_UNKNOWN = 46
    ILLEGAL_PARAMETER = 47
    UNKNOWN_CA = 48
    ACCESS_DENIED = 49
    DECODE_ERROR = 50
    DECRYPT_ERROR = 51
    PROTOCOL_VERSION = 70
    INSUFFICIENT_SECURITY = 71
    INTERNAL_ERROR = 80
    USER_CANCELED = 90
    NO_RENEGOTIATION = 100
    UNSUPPORTED_EXTENSION = 110
    UNKNOWN_PSK_IDENTITY = 115


class ExtensionType(enum.IntEnum):
    """The hello extensions this engine reads or writes."""

    SERVER_NAME = 0
    SUPPORTED_GROUPS = 10
    EC_POINT_FORMATS = 11
    SIGNATURE_ALGORITHMS = 13
    CLIENT_CERTIFICATE_TYPE = 19
    SERVER_CERTIFICATE_TYPE = 20
    ENCRYPT_THEN_MAC = 22
    EXTENDED_MASTER_SECRET = 23
    RENEGOTIATION_INFO = 0xFF01


class CertificateType(enum.IntEnum):
    """A certificate type of RFC 7250 (client_/server_certificate_type extensions)."""

    X509 = 0
    RAW_PUBLIC_KEY = 2


class _Reader:
    """Bounded reads over bytes; every overrun is a :class:`DtlsDecodeError`."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _fail(self, why: str) -> DtlsDecodeError:
        return DtlsDecodeError(f"{self.what}: {why}", offset=self.pos)

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self._fail("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, size: int, minimum: int = 0, maximum: int | None = None) -> bytes:
        length = self.uint(size)
        if length < minimum or (maximum is not None and length > maximum):
            raise self._fail(f"vector of {length} bytes out of bounds")
        return self.take(length)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise self._fail(f"{len(self.data) - self.pos} trailing bytes")


def _vector(size: int, data: bytes) -> bytes:
    if len(data) >= 1 << (8 * size):
        raise ValueError(f"{len(data)} bytes do not fit a {size}-byte length")
    return len(data).to_bytes(size, "big") + data


# Lists inside extensions and messages


def encode_u16_list(values: Iterable[int], length_size: int = 2) -> bytes:
    """A vector of uint16 values (supported_groups, signature_algorithms, cipher suites)."""
    return _vector(length_size, b"".join(v.to_bytes(2, "big") for v in values))


def decode_u16_list(data: bytes, what: str = "list") -> tuple[int, ...]:
    """The values of a non-empty vector<2..2^16-2> of uint16 that fills ``data``."""
    reader = _Reader(data, what)
    body = reader.vector(2, 2)
    reader.done()
    if len(body) % 2:
        raise DtlsDecodeError(f"{what}: odd length {len(body)}")
    return tuple(int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2))


def encode_u8_list(values: Iterable[int]) -> bytes:
    """A vector<1..2^8-1> of uint8 values (ec_point_formats, certificate types)."""
    return _vector(1, bytes(values))


def decode_u8_list(data: bytes, what: str = "list") -> tuple[int, ...]:
    """The values of a non-empty vector<1..2^8-1> of uint8 that fills ``data``."""
    reader = _Reader(data, what)
    body = reader.vector(1, 1)
    reader.done()
    return tuple(body)


# Extensions


def encode_extensions(extensions: Sequence[tuple[int, bytes]]) -> bytes:
    """The extensions block of a hello (empty bytes when there are none)."""
    if not extensions:
        return b""
    return _vector(2, b"".join(t.to_bytes(2, "big") + _vector(2, d) for t, d in extensions))


def decode_extensions(reader: _Reader) -> tuple[tuple[int, bytes], ...]:
    """The extensions at the end of a hello; none when the message ends before them."""
    if reader.pos == len(reader.data):
        return ()
    block = _Reader(reader.vector(2), reader.what + " extensions")
    reader.done()
    seen: set[int] = set()
    out = []
    while block.pos < len(block.data):
        ext_type = block.uint(2)
        if ext_type in seen:
            raise DtlsDecodeError(f"{block.what}: extension {ext_type} twice")
        seen.add(ext_type)
        out.append((ext_type, block.vector(2)))
    return tuple(out)


def _find(extensions: Sequence[tuple[int, bytes]], ext_type: int) -> bytes | None:
    for t, data in extensions:
        if t == ext_type:
            return data
    return None


# Hellos


@attrs.frozen
class ClientHello:
    """ClientHello (RFC 6347 §4.2.1: with the cookie after the session ID)."""

    client_version: int
    random: bytes
    session_id: bytes
    cookie: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: tuple[tuple[int, bytes], ...] = ()

    def extension(self, ext_type: int) -> bytes | None:
        """The data of an extension, or None when it was not sent."""
        return _find(self.extensions, ext_type)

    def encode(self) -> bytes:
        """The message body."""
        return (
            self.client_version.to_bytes(2, "big")
            + self.random
            + _vector(1, self.session_id)
            + _vector(1, self.cookie)
            + encode_u16_list(self.cipher_suites)
            + _vector(1, self.compression_methods)
            + encode_extensions(self.extensions)
        )

    def parameters(self) -> bytes:
        """What the cookie is bound to: the fields before the extensions, without the cookie."""
        return (
            self.client_version.to_bytes(2, "big")
            + self.random
            + _vector(1, self.session_id)
            + encode_u16_list(self.cipher_suites)
            + _vector(1, self.compression_methods)
        )

    @classmethod
    def decode(cls, body: bytes) -> ClientHello:
        """Parse a ClientHello body."""
        reader = _Reader(body, "ClientHello")
        version = reader.uint(2)
        random = reader.take(32)
        session_id = reader.vector(1, 0, 32)
        cookie = reader.vector(1, 0, 255)
        suites = reader.vector(2, 2)
        if len(suites) % 2:
            raise DtlsDecodeError("ClientHello: odd cipher_suites length")
        compression = reader.vector(1, 1)
        extensions = decode_extensions(reader)
        return cls(
            version,
            random,
            session_id,
            cookie,
            tuple(int.from_bytes(suites[i : i + 2], "big") for i in range(0, len(suites), 2)),
            compression,
            extensions,
        )


@attrs.frozen
class HelloVerifyRequest:
    """HelloVerifyRequest (RFC 6347 §4.2.1)."""

    server_version: int
    cookie: bytes

    def encode(self) -> bytes:
        """The message body."""
        return self.server_version.to_bytes(2, "big") + _vector(1, self.cookie)

    @classmethod
    def decode(cls, body: bytes) -> HelloVerifyRequest:
        """Parse a HelloVerifyRequest body."""
        reader = _Reader(body, "HelloVerifyRequest")
        version = reader.uint(2)
        cookie = reader.vector(1, 0, 255)
        reader.done()
        return cls(version, cookie)


@attrs.frozen
class ServerHello:
    """ServerHello (RFC 5246 §7.4.1.3)."""

    server_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: tuple[tuple[int, bytes], ...] = ()

    def extension(self, ext_type: int) -> bytes | None:
        """The data of an extension, or None when it was not sent."""
        return _find(self.extensions, ext_type)

    def encode(self) -> bytes:
        """The message body."""
        return (
            self.server_version.to_bytes(2, "big")
            + self.random
            + _vector(1, self.session_id)
            + self.cipher_suite.to_bytes(2, "big")
            + bytes((self.compression_method,))
            + encode_extensions(self.extensions)
        )

    @classmethod
    def decode(cls, body: bytes) -> ServerHello:
        """Parse a ServerHello body."""
        reader = _Reader(body, "ServerHello")
        version = reader.uint(2)
        random = reader.take(32)
        session_id = reader.vector(1, 0, 32)
        suite = reader.uint(2)
        compression = reader.uint(1)
        extensions = decode_extensions(reader)
        return cls(version, random, session_id, suite, compression, extensions)


# Certificates


def encode_certificate_list(certificates: Sequence[bytes]) -> bytes:
    """An X.509 Certificate body: the DER certificates, leaf first (may be empty)."""
    return _vector(3, b"".join(_vector(3, der) for der in certificates))


def decode_certificate_list(body: bytes) -> tuple[bytes, ...]:
    """The DER certificates of an X.509 Certificate body."""
    reader = _Reader(body, "Certificate")
    chain = _Reader(reader.vector(3), "Certificate list")
    reader.done()
    out = []
    while chain.pos < len(chain.data):
        out.append(chain.vector(3, 1))
    return tuple(out)


def encode_raw_public_key(spki_der: bytes) -> bytes:
    """A raw public key Certificate body (RFC 7250 §3): the SubjectPublicKeyInfo."""
    return _vector(3, spki_der)


def decode_raw_public_key(body: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of a raw public key Certificate body."""
    reader = _Reader(body, "Certificate (raw public key)")
    spki = reader.vector(3, 1)
    reader.done()
    return spki


@attrs.frozen
class CertificateRequest:
    """CertificateRequest (RFC 5246 §7.4.4)."""

    certificate_types: tuple[int, ...] = (ECDSA_SIGN,)
    signature_algorithms: tuple[int, ...] = (ECDSA_SECP256R1_SHA256,)
    authorities: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        """The message body."""
        return (
            encode_u8_list(self.certificate_types)
            + encode_u16_list(self.signature_algorithms)
            + _vector(2, b"".join(_vector(2, name) for name in self.authorities))
        )

    @classmethod
    def decode(cls, body: bytes) -> CertificateRequest:
        """Parse a CertificateRequest body."""
        reader = _Reader(body, "CertificateRequest")
        types = tuple(reader.vector(1, 1))
        algorithms = reader.vector(2, 2)
        if len(algorithms) % 2:
            raise DtlsDecodeError("CertificateRequest: odd signature_algorithms length")
        names = _Reader(reader.vector(2), "CertificateRequest authorities")
        reader.done()
        authorities = []
        while names.pos < len(names.data):
            authorities.append(names.vector(2, 1))
        return cls(
            types,
            tuple(
                int.from_bytes(algorithms[i : i + 2], "big") for i in range(0, len(algorithms), 2)
            ),
            tuple(authorities),
        )


# Key exchange


def encode_psk_server_key_exchange(hint: bytes) -> bytes:
    """A PSK ServerKeyExchange body: the psk_identity_hint (RFC 4279 §2)."""
    return _vector(2, hint)


def decode_psk_server_key_exchange(body: bytes) -> bytes:
    """The psk_identity_hint of a PSK ServerKeyExchange body."""
    reader = _Reader(body, "ServerKeyExchange (PSK)")
    hint = reader.vector(2)
    reader.done()
    return hint


def encode_psk_client_key_exchange(identity: bytes) -> bytes:
    """A PSK ClientKeyExchange body: the psk_identity (RFC 4279 §2)."""
    return _vector(2, identity)


def decode_psk_client_key_exchange(body: bytes) -> bytes:
    """The psk_identity of a PSK ClientKeyExchange body."""
    reader = _Reader(body, "ClientKeyExchange (PSK)")
    identity = reader.vector(2)
    reader.done()
    return identity


def encode_ecdhe_client_key_exchange(point: bytes) -> bytes:
    """An ECDHE ClientKeyExchange body: the client's ECPoint (RFC 8422 §5.7)."""
    return _vector(1, point)


def decode_ecdhe_client_key_exchange(body: bytes) -> bytes:
    """The ECPoint of an ECDHE ClientKeyExchange body."""
    reader = _Reader(body, "ClientKeyExchange (ECDHE)")
    point = reader.vector(1, 1)
    reader.done()
    return point


def encode_digitally_signed(scheme: int, signature: bytes) -> bytes:
    """A digitally-signed element: SignatureAndHashAlgorithm, then the signature<0..2^16-1>."""
    return scheme.to_bytes(2, "big") + _vector(2, signature)


def decode_digitally_signed(data: bytes, what: str = "signature") -> tuple[int, bytes]:
    """The (SignatureAndHashAlgorithm, signature) of a digitally-signed element filling ``data``.

    Used for CertificateVerify bodies and the end of an ECDHE ServerKeyExchange.
    """
    reader = _Reader(data, what)
    scheme = reader.uint(2)
    signature = reader.vector(2, 1)
    reader.done()
    return scheme, signature


def decode_server_hello_done(body: bytes) -> None:
    """Check that a ServerHelloDone body is empty."""
    if body:
        raise DtlsDecodeError(f"ServerHelloDone: {len(body)} unexpected bytes")


def decode_finished(body: bytes) -> bytes:
    """The verify_data of a Finished body (12 bytes for TLS 1.2 suites)."""
    if len(body) != 12:
        raise DtlsDecodeError(f"Finished: verify_data of {len(body)} bytes")
    return body


def decode_change_cipher_spec(payload: bytes) -> None:
    """Check a ChangeCipherSpec record's payload (the single byte 1)."""
    if payload != CHANGE_CIPHER_SPEC:
        raise DtlsDecodeError("ChangeCipherSpec: payload is not 0x01")


def encode_alert(level: int, description: int) -> bytes:
    """An alert record's payload."""
    return bytes((level, description))


def decode_alert(payload: bytes) -> tuple[int, int]:
    """The (level, description) of an alert record's payload."""
    if len(payload) != 2:
        raise DtlsDecodeError(f"alert of {len(payload)} bytes")
    if payload[0] not in (1, 2):
        raise DtlsDecodeError(f"alert level {payload[0]}")
    return payload[0], payload[1]


# The handshake header, fragmentation and reassembly


@attrs.frozen
class HandshakeFragment:
    """One fragment of a handshake message as it appears in a record."""

    msg_type: int
    #: The length of the whole message.
    length: int
    message_seq: int
    fragment_offset: int
    fragment: bytes


@attrs.frozen
class HandshakeMessage:
    """A complete handshake message."""

    msg_type: int
    message_seq: int
    body: bytes
    #: The epoch of the records that carried it (0, or 1 for Finished).
    epoch: int = 0

    @property
    def raw(self) -> bytes:
        """The message as one unfragmented piece: what the handshake hash covers (§4.2.6)."""
        return encode_handshake(self.msg_type, self.message_seq, self.body)


def encode_handshake(msg_type: int, message_seq: int, body: bytes) -> bytes:
    """A whole handshake message in one fragment (offset 0, fragment length = length)."""
    length = len(body).to_bytes(3, "big")
    return (
        bytes((msg_type,)) + length + message_seq.to_bytes(2, "big") + b"\x00\x00\x00" + length
    ) + body


def fragment_handshake(
    msg_type: int, message_seq: int, body: bytes, max_fragment: int
) -> list[bytes]:
    """The message cut into fragments of at most ``max_fragment`` body bytes, headers included."""
    if max_fragment < 1:
        raise ValueError("max_fragment must be positive")
    if len(body) <= max_fragment:
        return [encode_handshake(msg_type, message_seq, body)]
    head = bytes((msg_type,)) + len(body).to_bytes(3, "big") + message_seq.to_bytes(2, "big")
    return [
        head
        + offset.to_bytes(3, "big")
        + len(body[offset : offset + max_fragment]).to_bytes(3, "big")
        + body[offset : offset + max_fragment]
        for offset in range(0, len(body), max_fragment)
    ]


def parse_handshake_fragments(payload: bytes) -> list[HandshakeFragment]:
    """The handshake fragments in one record's payload (a record may carry several)."""
    reader = _Reader(payload, "handshake record")
    out = []
    while reader.pos < len(payload):
        msg_type = reader.uint(1)
        length = reader.uint(3)
        message_seq = reader.uint(2)
        offset = reader.uint(3)
        fragment_length = reader.uint(3)
        if offset + fragment_length > length:
            raise DtlsDecodeError(
                f"handshake fragment {offset}+{fragment_length} beyond length {length}",
                offset=reader.pos,
            )
        out.append(
            HandshakeFragment(msg_type, length, message_seq, offset, reader.take(fragment_length))
        )
    return out


class _Partial:
    __slots__ = ("body", "epoch", "have", "length", "missing", "msg_type")

    def __init__(self, msg_type: int, length: int, epoch: int) -> None:
        self.msg_type = msg_type
        self.length = length
        self.epoch = epoch
        self.body = bytearray(length)
        self.have = bytearray(length)  # 1 where a byte arrived
        self.missing = length


class Reassembler:
    """Incoming handshake messages put back together, delivered in message_seq order.

    Bounded: a message announcing more than ``max_message_size`` bytes is
    refused (:class:`~coap_trio.errors.DtlsDecodeError`), and fragments
    more than ``window`` messages ahead of the next expected one are dropped
    (the peer retransmits them). Overlapping and duplicate fragments are
    fine; a fragment that disagrees with the others about the message's type
    or length is refused.
    """

    def __init__(
        self,
        next_seq: int = 0,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        window: int = 8,
    ) -> None:
        self.next_seq = next_seq
        self.max_message_size = max_message_size
        self.window = window
        self._partial: dict[int, _Partial] = {}

    def add(self, fragment: HandshakeFragment, epoch: int = 0) -> bool:
        """Take a fragment; True when it belongs to a message already delivered (a retransmission).

        Raises :class:`~coap_trio.errors.DtlsDecodeError` for a message that
        is too large or inconsistent with its earlier fragments.
        """
        seq = fragment.message_seq
        if seq < self.next_seq:
            return True
        if seq >= self.next_seq + self.window:
            return False
        if fragment.length > self.max_message_size:
            raise DtlsDecodeError(
                f"handshake message of {fragment.length} bytes exceeds {self.max_message_size}"
            )
        partial = self._partial.get(seq)
        if partial is None:
            partial = self._partial[seq] = _Partial(fragment.msg_type, fragment.length, epoch)
        elif partial.msg_type != fragment.msg_type or partial.length != fragment.length:
            raise DtlsDecodeError(f"fragments of handshake message {seq} disagree")
        elif partial.epoch != epoch:
            return False
        start, data = fragment.fragment_offset, fragment.fragment
        end = start + len(data)
        if partial.missing and data:
            new = partial.have[start:end].count(0)
            if new:
                partial.body[start:end] = data
                partial.have[start:end] = b"\x01" * len(data)
                partial.missing -= new
        return False

    def pop(self) -> HandshakeMessage | None:
        """The next message in order when it is complete, else None."""
        partial = self._partial.get(self.next_seq)
        if partial is None or partial.missing:
            return None
        del self._partial[self.next_seq]
        message = HandshakeMessage(
            partial.msg_type, self.next_seq, bytes(partial.body), partial.epoch
        )
        self.next_seq += 1
        return message

    def pending(self) -> int:
        """Messages partly or wholly received and not yet delivered."""
        return len(self._partial)
