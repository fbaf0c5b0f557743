"""ECDHE on P-256 and ECDSA with SHA-256, as TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 uses them.

The key exchange of RFC 8422 restricted to what RFC 7925 requires: the named
curve secp256r1 (NamedCurve 23) only, points in uncompressed form only
(``0x04 || X || Y``, 65 bytes), and ServerKeyExchange signatures made with
ECDSA and SHA-256 (SignatureAndHashAlgorithm ``(4, 3)``, RFC 5246 §7.4.1.4.1).

Every primitive is ``cryptography``'s. A point or a ServerECDHParams that is
not exactly that is refused with :class:`DtlsPkiError` (alert
illegal_parameter, or decode_error when cut short); :func:`verify` answers
``False`` for a signature that does not verify, whatever its bytes.

No I/O, no clock.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .pki import ALERT_DECODE_ERROR, ALERT_ILLEGAL_PARAMETER, DtlsPkiError

__all__ = [
    "CURVE_TYPE_NAMED_CURVE",
    "NAMED_CURVE_SECP256R1",
    "POINT_SIZE",
    "SIGNATURE_ALGORITHM",
    "ecdhe_params",
    "ecdhe_shared_secret",
    "generate_ecdhe",
    "parse_ecdhe_params",
    "server_key_exchange_signed_data",
    "sign",
    "verify",
]

#: ECCurveType named_curve (RFC 8422 §5.4).
CURVE_TYPE_NAMED_CURVE = 3
#: NamedCurve secp256r1 (RFC 8422 §5.1.1).
NAMED_CURVE_SECP256R1 = 23
#: Bytes of an uncompressed P-256 point: 0x04, then X and Y of 32 bytes each.
POINT_SIZE = 65
#: The TLS 1.2 SignatureAndHashAlgorithm of the suite: (sha256 = 4, ecdsa = 3).
SIGNATURE_ALGORITHM = (4, 3)

_UNCOMPRESSED = 0x04
_PARAMS_HEADER = bytes([CURVE_TYPE_NAMED_CURVE]) + NAMED_CURVE_SECP256R1.to_bytes(2, "big")


def generate_ecdhe() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh ephemeral P-256 key pair: the private key and our point (65 bytes)."""
    private = ec.generate_private_key(ec.SECP256R1())
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return private, point


def _load_point(point: bytes) -> ec.EllipticCurvePublicKey:
    if len(point) != POINT_SIZE or point[0] != _UNCOMPRESSED:
        raise DtlsPkiError(
            f"ECDHE point of {len(point)} bytes is not an uncompressed P-256 point",
            ALERT_ILLEGAL_PARAMETER,
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise DtlsPkiError("ECDHE point is not on P-256", ALERT_ILLEGAL_PARAMETER) from None


def ecdhe_shared_secret(private: ec.EllipticCurvePrivateKey, peer_point: bytes) -> bytes:
    """The ECDH shared secret with the peer's point: the 32-byte X coordinate.

    That X coordinate is the premaster secret (RFC 8422 §5.10). ``peer_point``
    must be an uncompressed P-256 point on the curve; anything else (the
    point at infinity, another length, the compressed form, a point off the
    curve) raises :class:`DtlsPkiError`.
    """
    if not isinstance(private.curve, ec.SECP256R1):
        raise ValueError(f"an ECDHE key on {private.curve.name}, not secp256r1")
    peer = _load_point(peer_point)
    try:
        return private.exchange(ec.ECDH(), peer)
    except ValueError:
        raise DtlsPkiError("ECDHE with this point fails", ALERT_ILLEGAL_PARAMETER) from None


def ecdhe_params(point: bytes) -> bytes:
    """ServerECDHParams (RFC 8422 §5.4) for our point: named_curve, secp256r1, the point.

    ``point`` is one from :func:`generate_ecdhe` (65 bytes); another length
    raises ``ValueError``.
    """
    if len(point) != POINT_SIZE or point[0] != _UNCOMPRESSED:
        raise ValueError(f"a point of {len(point)} bytes is not an uncompressed P-256 point")
    return _PARAMS_HEADER + bytes([len(point)]) + point


def parse_ecdhe_params(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Split ServerECDHParams off the front of ``data``: (params, point, rest).

    ``params`` is the bytes as they were (the ServerKeyExchange signature
    covers them), ``point`` the server's uncompressed P-256 point (checked
    to be on the curve), ``rest`` what follows (the signature). Raises
    :class:`DtlsPkiError` for another curve type (explicit curves), another
    named curve, another point format or length, and a truncated structure.
    """
    if len(data) < len(_PARAMS_HEADER) + 1:
        raise DtlsPkiError("ServerECDHParams cut short", ALERT_DECODE_ERROR)
    if data[0] != CURVE_TYPE_NAMED_CURVE:
        raise DtlsPkiError(
            f"ECCurveType {data[0]}: only named_curve is accepted", ALERT_ILLEGAL_PARAMETER
        )
    curve = int.from_bytes(data[1:3], "big")
    if curve != NAMED_CURVE_SECP256R1:
        raise DtlsPkiError(
            f"NamedCurve {curve}: only secp256r1 (23) is accepted", ALERT_ILLEGAL_PARAMETER
        )
    length = data[3]
    end = 4 + length
    if len(data) < end:
        raise DtlsPkiError("ServerECDHParams point cut short", ALERT_DECODE_ERROR)
    point = data[4:end]
    _load_point(point)
    return data[:end], point, data[end:]


def server_key_exchange_signed_data(
    client_random: bytes, server_random: bytes, params: bytes
) -> bytes:
    """What a ServerKeyExchange signature covers (RFC 8422 §5.4).

    ``ClientHello.random + ServerHello.random + ServerKeyExchange.params``.
    """
    return client_random + server_random + params


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """An ECDSA signature of ``data`` with SHA-256, DER-encoded (RFC 8422 §5.4)."""
    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify(public_key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid ECDSA-SHA256 DER signature of ``data``.

    Never raises for a bad, malformed or truncated signature: it is ``False``.
    """
    try:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
