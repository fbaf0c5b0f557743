"""A DTLS peer's certificate chain or raw public key, checked (RFC 5280, RFC 7250).

:func:`validate_chain` validates the DER certificates a peer sent in its
Certificate message against trust anchors, with ``cryptography``'s path
validation (``cryptography.x509.verification``) at a given time; a client
checks the server's name (a DNS name or an IP address in subjectAltName), a
server checks a client's certificate without a name. :func:`peer_public_key_from_rpk`
accepts a raw public key (RFC 7250) only when it is one of the configured
ones. Whatever the peer sent, a refusal is a :class:`DtlsPkiError` whose
``alert`` is the fatal alert to send (RFC 5246 §7.2.2): the ``ALERT_*``
numbers below.

The RFC 7925 profile fixes the key: the peer's (leaf) key must be an ECDSA
key on P-256 (secp256r1), the only curve of TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
here.

The path validation follows the Web PKI profile of ``cryptography``, with two
relaxations that RFC 5280 allows and that common test and device
certificates need: the end entity's subjectAltName and extendedKeyUsage may
be marked critical. When extendedKeyUsage is present it must still allow the
purpose (serverAuth for a server's certificate, clientAuth for a client's)
or be anyExtendedKeyUsage. When keyUsage is present on the leaf it must
allow digitalSignature (RFC 8422 §5.6: the key signs the handshake).

Bounds, checked before anything is parsed: at most :data:`MAX_CHAIN_LENGTH`
certificates of at most :data:`MAX_CERTIFICATE_SIZE` bytes each, and raw
public keys of at most :data:`MAX_SPKI_SIZE` bytes.

No I/O, no clock: the validation time is an argument.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ...errors import DtlsPkiError

__all__ = [
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_DECODE_ERROR",
    "ALERT_HANDSHAKE_FAILURE",
    "ALERT_ILLEGAL_PARAMETER",
    "ALERT_UNKNOWN_CA",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "MAX_CERTIFICATE_SIZE",
    "MAX_CHAIN_LENGTH",
    "MAX_SPKI_SIZE",
    "DtlsPkiError",
    "leaf_certificate",
    "peer_public_key_from_rpk",
    "public_key_from_spki",
    "rpk_fingerprint",
    "spki_der",
    "subject_of",
    "validate_chain",
]

#: handshake_failure: the peer sent no certificate at all.
ALERT_HANDSHAKE_FAILURE = 40
#: bad_certificate: unparsable, wrong name, wrong usage, untrusted raw key.
ALERT_BAD_CERTIFICATE = 42
#: unsupported_certificate: a key that is not ECDSA P-256.
ALERT_UNSUPPORTED_CERTIFICATE = 43
#: certificate_expired: outside its validity period ("or is not currently valid").
ALERT_CERTIFICATE_EXPIRED = 45
#: illegal_parameter: an ECDHE point or curve that is not P-256's.
ALERT_ILLEGAL_PARAMETER = 47
#: unknown_ca: no path to a trusted certificate.
ALERT_UNKNOWN_CA = 48
#: decode_error: a structure cut short.
ALERT_DECODE_ERROR = 50

#: Most certificates accepted in one chain (leaf first).
MAX_CHAIN_LENGTH = 8
#: Largest DER certificate accepted, in bytes.
MAX_CERTIFICATE_SIZE = 8192
#: Largest DER SubjectPublicKeyInfo accepted as a raw public key, in bytes
#: (a P-256 one is 91).
MAX_SPKI_SIZE = 1024


def spki_der(public_key: PublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of ``public_key`` (uncompressed point for EC keys).

    This canonical encoding is what :func:`peer_public_key_from_rpk` compares.
    """
    return _encode_spki(public_key)


def _encode_spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rpk_fingerprint(spki_der: bytes) -> str:
    """``"sha256:"`` and the lowercase hex SHA-256 of a DER SubjectPublicKeyInfo.

    For logs and messages that name a raw public key.
    """
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki_der)
    return "sha256:" + digest.finalize().hex()


def subject_of(certificate: x509.Certificate) -> str:
    """The certificate's subject as an RFC 4514 string (``CN=coap.example,O=...``)."""
    return certificate.subject.rfc4514_string()


def _require_p256(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise DtlsPkiError(f"{what} is not an ECDSA key", ALERT_UNSUPPORTED_CERTIFICATE)
    if not isinstance(key.curve, ec.SECP256R1):
        raise DtlsPkiError(
            f"{what} is on {key.curve.name}, not secp256r1", ALERT_UNSUPPORTED_CERTIFICATE
        )
    return key


def public_key_from_spki(spki: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key in a DER SubjectPublicKeyInfo, whoever's it is.

    Raises :class:`DtlsPkiError` when ``spki`` is too large, does not parse
    or is not a P-256 key. No trust decision: see
    :func:`peer_public_key_from_rpk`.
    """
    if len(spki) > MAX_SPKI_SIZE:
        raise DtlsPkiError(
            f"raw public key of {len(spki)} bytes (at most {MAX_SPKI_SIZE})",
            ALERT_BAD_CERTIFICATE,
        )
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise DtlsPkiError(
            f"raw public key does not parse: {error}", ALERT_BAD_CERTIFICATE
        ) from None
    return _require_p256(key, "the raw public key")


def peer_public_key_from_rpk(
    spki_der: bytes, trusted: frozenset[bytes]
) -> ec.EllipticCurvePublicKey:
    """The peer's raw public key (RFC 7250), if it is one of ``trusted``.

    ``spki_der`` is the SubjectPublicKeyInfo the peer sent; it must parse and
    be a P-256 key. It is trusted when its canonical re-encoding
    (:func:`spki_der`, uncompressed point) is in ``trusted``, by exact set
    membership: public keys are not secrets, so the comparison needs no
    constant time. ``trusted`` therefore holds canonical encodings, as
    :class:`~coap_trio.protocol.dtls.credentials.DtlsCredentials` stores them;
    any other entry matches nothing.

    Raises :class:`DtlsPkiError` (bad_certificate, or unsupported_certificate
    for another kind of key) otherwise.
    """
    key = public_key_from_spki(spki_der)
    canonical = _encode_spki(key)
    if canonical not in trusted:
        raise DtlsPkiError(
            f"raw public key {rpk_fingerprint(canonical)} is not trusted", ALERT_BAD_CERTIFICATE
        )
    return key


#: What cryptography raises for a certificate it cannot (or will not) read.
CERTIFICATE_PARSE_ERRORS = (
    ValueError,
    TypeError,  # an attribute value of a type its OID does not allow
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UserWarning,  # CryptographyDeprecationWarning and cryptography's other warnings
)


def _parse_certificate(der: bytes, position: int) -> x509.Certificate:
    try:
        with warnings.catch_warnings():
            # What cryptography still loads but deprecates (a serial number
            # that is not positive, against RFC 5280) or warns about (a
            # country name that is not two letters) is refused too.
            warnings.simplefilter("error", UserWarning)
            certificate = x509.load_der_x509_certificate(der)
            # Parsed lazily by cryptography: read them now, so that a malformed
            # name, extension or key is refused here rather than deep in validation.
            subject_of(certificate)
            certificate.issuer.rfc4514_string()
            _ = certificate.extensions
            certificate.public_key()
    except CERTIFICATE_PARSE_ERRORS as error:
        raise DtlsPkiError(
            f"certificate {position} does not parse: {error}", ALERT_BAD_CERTIFICATE
        ) from None
    return certificate


def _parse_chain(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    if not chain_der:
        raise DtlsPkiError("the peer sent no certificate", ALERT_HANDSHAKE_FAILURE)
    if len(chain_der) > MAX_CHAIN_LENGTH:
        raise DtlsPkiError(
            f"chain of {len(chain_der)} certificates (at most {MAX_CHAIN_LENGTH})",
            ALERT_BAD_CERTIFICATE,
        )
    for position, der in enumerate(chain_der):
        if len(der) > MAX_CERTIFICATE_SIZE:
            raise DtlsPkiError(
                f"certificate {position} is {len(der)} bytes (at most {MAX_CERTIFICATE_SIZE})",
                ALERT_BAD_CERTIFICATE,
            )
    return [_parse_certificate(der, position) for position, der in enumerate(chain_der)]


def _check_leaf(leaf: x509.Certificate) -> None:
    _require_p256(leaf.public_key(), "the certificate's key")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.digital_signature:
        raise DtlsPkiError(
            "the certificate's keyUsage does not allow digitalSignature", ALERT_BAD_CERTIFICATE
        )


def leaf_certificate(chain_der: Sequence[bytes]) -> x509.Certificate:
    """The peer's certificate (the first of ``chain_der``), parsed but not validated.

    The same bounds and leaf checks as :func:`validate_chain` (size, a P-256
    key, keyUsage), without a path to a trust anchor, a name or a time: for
    a peer whose certificate is deliberately not verified. Raises
    :class:`DtlsPkiError`.
    """
    chain = _parse_chain(chain_der)
    _check_leaf(chain[0])
    return chain[0]


def _valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _subject(server_name: str) -> x509.DNSName | x509.IPAddress:
    text = server_name
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return x509.DNSName(text.removesuffix("."))
    return x509.IPAddress(address)


def _check_extended_key_usage(
    policy: Policy, certificate: x509.Certificate, usage: x509.ExtendedKeyUsage | None
) -> None:
    # Called by cryptography for the end entity; raising refuses it.
    del certificate
    if usage is None:
        return
    wanted = policy.extended_key_usage
    if wanted not in usage and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage:
        raise ValueError(f"extendedKeyUsage does not allow {wanted.dotted_string}")


def _end_entity_policy(*, server: bool) -> ExtensionPolicy:
    policy = ExtensionPolicy.webpki_defaults_ee()
    if server:
        policy = policy.require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    else:
        policy = policy.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    return policy.may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _check_extended_key_usage
    )


def _alert_for(
    error: VerificationError, intermediates: Sequence[x509.Certificate], now: datetime
) -> int:
    text = str(error)
    if "not valid at validation time" in text or not all(
        _valid_at(certificate, now) for certificate in intermediates
    ):
        return ALERT_CERTIFICATE_EXPIRED
    if "candidates exhausted" in text:
        return ALERT_UNKNOWN_CA
    return ALERT_BAD_CERTIFICATE


def validate_chain(
    chain_der: Sequence[bytes],
    trusted: Sequence[x509.Certificate],
    *,
    server_name: str | None,
    now: datetime,
) -> x509.Certificate:
    """Validate a peer's certificate chain (DER, leaf first); return the leaf.

    With ``server_name`` (the host the client asked for: a DNS name, or an
    IP literal, bracketed or not), the leaf must name it in subjectAltName
    and allow serverAuth: a client checking a server. Without it, the
    certificate is checked as a client's (clientAuth, any name). The path
    must end at one of ``trusted`` and every certificate on it must be
    valid at ``now`` (a timezone-aware datetime); the leaf's key must be
    ECDSA P-256.

    Raises :class:`DtlsPkiError` for every refusal, with ``alert``
    handshake_failure (no certificate), bad_certificate (too many or too
    large certificates, garbage, wrong name or usage, a name that cannot be
    matched), unsupported_certificate (not P-256), certificate_expired
    (expired or not yet valid) or unknown_ca (no path to a trusted
    certificate, including an empty ``trusted``). ``ValueError`` only for a
    naive ``now``.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    chain = _parse_chain(chain_der)
    leaf, intermediates = chain[0], chain[1:]
    _check_leaf(leaf)
    if not _valid_at(leaf, now):
        raise DtlsPkiError(
            f"certificate {subject_of(leaf)} is valid from {leaf.not_valid_before_utc}"
            f" to {leaf.not_valid_after_utc}, not at {now}",
            ALERT_CERTIFICATE_EXPIRED,
        )
    if not trusted:
        raise DtlsPkiError("no trusted certificate to validate against", ALERT_UNKNOWN_CA)
    builder = (
        PolicyBuilder()
        .store(Store(list(trusted)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_LENGTH)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=_end_entity_policy(server=server_name is not None),
        )
    )
    try:
        if server_name is None:
            builder.build_client_verifier().verify(leaf, intermediates)
        else:
            builder.build_server_verifier(_subject(server_name)).verify(leaf, intermediates)
    except VerificationError as error:
        raise DtlsPkiError(
            f"certificate {subject_of(leaf)} refused: {error}",
            _alert_for(error, intermediates, now),
        ) from None
    except ValueError as error:
        # The server name cannot be matched against a certificate (not a
        # valid DNS name), or a certificate cryptography cannot process.
        raise DtlsPkiError(
            f"certificate {subject_of(leaf)} refused: {error}", ALERT_BAD_CERTIFICATE
        ) from None
    return leaf
