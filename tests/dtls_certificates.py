"""Certificates built with ``cryptography`` for the DTLS certificate tests.

:class:`Issuer` is a CA (a root, or an intermediate of another issuer) that
issues end-entity certificates with the extensions a Web PKI path validator
expects, each of which a test can change: validity, names, key type,
extendedKeyUsage, keyUsage. Times are fixed (:data:`NOW` is inside every
default validity period) so that no test reads the clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime(2030, 6, 1, tzinfo=UTC)
NOT_BEFORE = datetime(2030, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2031, 1, 1, tzinfo=UTC)

SERVER_AUTH = (ExtendedKeyUsageOID.SERVER_AUTH,)
CLIENT_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH,)
BOTH_AUTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
SIGNING = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
AGREEMENT_ONLY = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coap_trio tests"),
        ]
    )


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey, *, traditional: bool = False) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for entry in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            entries.append(x509.DNSName(entry))
    return x509.SubjectAlternativeName(entries)


@attrs.define
class Issuer:
    """A CA: its certificate and key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def root(
        cls,
        common_name: str = "Test Root",
        *,
        not_before: datetime = NOT_BEFORE - timedelta(days=365),
        not_after: datetime = NOT_AFTER + timedelta(days=365),
    ) -> Issuer:
        key = p256_key()
        subject = name(common_name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_USAGE, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        return cls(builder.sign(key, hashes.SHA256()), key)

    def _builder(
        self,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )

    def intermediate(
        self,
        common_name: str = "Test Intermediate",
        *,
        not_before: datetime = NOT_BEFORE - timedelta(days=30),
        not_after: datetime = NOT_AFTER + timedelta(days=30),
    ) -> Issuer:
        key = p256_key()
        builder = (
            self._builder(name(common_name), key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_USAGE, critical=True)
        )
        return Issuer(builder.sign(self.key, hashes.SHA256()), key)

    def issue(
        self,
        *names: str,
        key: CertificateIssuerPrivateKeyTypes | None = None,
        common_name: str = "coap.example",
        not_before: datetime = NOT_BEFORE,
        not_after: datetime = NOT_AFTER,
        usages: Sequence[x509.ObjectIdentifier] | None = BOTH_AUTH,
        key_usage: x509.KeyUsage | None = SIGNING,
    ) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
        """An end-entity certificate with subjectAltName ``names`` (none: no SAN) and its key."""
        leaf_key = key if key is not None else p256_key()
        builder = self._builder(
            name(common_name), leaf_key.public_key(), not_before, not_after
        ).add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if names:
            builder = builder.add_extension(san(names), critical=False)
        if usages is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        if key_usage is not None:
            builder = builder.add_extension(key_usage, critical=True)
        return builder.sign(self.key, hashes.SHA256()), leaf_key


def self_signed(*names: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed end-entity certificate (not a CA)."""
    key = p256_key()
    subject = name(names[0] if names else "self")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256()), key


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
