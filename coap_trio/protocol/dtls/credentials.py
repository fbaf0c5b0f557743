"""What a DTLS endpoint proves itself with and whom it trusts: :class:`DtlsCredentials`.

One immutable value holds both sides' material; the engine reads the fields
its role needs. A client uses ``psk_identity`` and ``psk``; a server looks
identities up in ``psk_table`` and may send ``psk_hint``. For
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 an endpoint presents ``certificate_chain``
(or, with ``raw_public_key``, the bare key of RFC 7250) signed for with
``private_key``, and checks its peer against ``trusted_cas`` or
``trusted_raw_public_keys`` unless ``verify_peer`` is false.

Bounds: a PSK has 1 to 64 bytes and an identity (and a hint) at most 128,
the lengths RFC 4279 §5.3 requires every implementation to support; keys
are ECDSA P-256, the one curve of RFC 7925's certificate and raw public key
profiles.

:meth:`DtlsCredentials.from_files` reads the PEM files libcoap's commands
take (``-c``, ``-j``, ``-C``, ``-M``); it is the one function here that does
I/O, called by the shell.
"""

from __future__ import annotations

import os
import re
import types
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning

from ...errors import DtlsPkiError
from .pki import CERTIFICATE_PARSE_ERRORS, public_key_from_spki, spki_der

__all__ = [
    "MAX_PSK_IDENTITY_SIZE",
    "MAX_PSK_SIZE",
    "SUITE_ECDHE_ECDSA_AES_128_CCM_8",
    "SUITE_PSK_AES_128_CCM_8",
    "DtlsCredentials",
]

#: TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655).
SUITE_PSK_AES_128_CCM_8 = 0xC0A8
#: TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (RFC 7251).
SUITE_ECDHE_ECDSA_AES_128_CCM_8 = 0xC0AE

#: Longest PSK accepted, in bytes (RFC 4279 §5.3's minimum to support).
MAX_PSK_SIZE = 64
#: Longest PSK identity or identity hint accepted, in bytes (RFC 4279 §5.3).
MAX_PSK_IDENTITY_SIZE = 128

StrPath = str | os.PathLike[str]


def _frozen_table(table: Mapping[bytes, bytes]) -> Mapping[bytes, bytes]:
    return types.MappingProxyType(dict(table))


def _certificates(values: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    certificates = tuple(values)
    for certificate in certificates:
        if not isinstance(certificate, x509.Certificate):
            raise TypeError(f"expected x509.Certificate, got {type(certificate).__name__}")
    return certificates


def _canonical_spkis(values: Iterable[bytes]) -> frozenset[bytes]:
    canonical = set()
    for value in values:
        if not isinstance(value, bytes):
            raise TypeError(f"a trusted raw public key is DER bytes, not {type(value).__name__}")
        try:
            canonical.add(spki_der(public_key_from_spki(value)))
        except DtlsPkiError as error:
            raise ValueError(f"trusted raw public key: {error}") from None
    return frozenset(canonical)


def _table_repr(table: Mapping[bytes, bytes]) -> str:
    return f"<PSKs for {sorted(table)!r}>"


def _check_psk_pair(identity: object, psk: object, what: str) -> None:
    if not isinstance(identity, bytes) or not isinstance(psk, bytes):
        raise TypeError(f"{what}: a PSK and its identity are bytes")
    if not 1 <= len(identity) <= MAX_PSK_IDENTITY_SIZE:
        raise ValueError(
            f"{what}: a PSK identity has 1 to {MAX_PSK_IDENTITY_SIZE} bytes, not {len(identity)}"
        )
    if not 1 <= len(psk) <= MAX_PSK_SIZE:
        raise ValueError(f"{what}: a PSK has 1 to {MAX_PSK_SIZE} bytes, not {len(psk)}")


@attrs.frozen
class DtlsCredentials:
    """Keys and trust for DTLS: PSKs (RFC 4279), certificates, raw public keys (RFC 7250).

    Invalid combinations raise ``ValueError`` (``TypeError`` for a value of
    the wrong type) when the value is made: a PSK without an identity or the
    reverse, lengths out of bounds, a key that is not ECDSA P-256, a
    certificate chain whose leaf is not the private key's, a chain or
    ``raw_public_key`` without a private key, both a chain and
    ``raw_public_key``, a private key with neither, and ``require_client_auth``
    with nothing to check a client against.

    ``psk_table`` is copied into a read-only mapping; ``trusted_raw_public_keys``
    is stored in canonical DER form (see
    ``pki.peer_public_key_from_rpk``). The repr
    shows no key.
    """

    #: The identity a client sends with its PSK.
    psk_identity: bytes | None = None
    #: The client's PSK (1 to 64 bytes).
    psk: bytes | None = attrs.field(default=None, repr=False)
    #: A server's PSKs by identity.
    psk_table: Mapping[bytes, bytes] = attrs.field(
        factory=dict, converter=_frozen_table, repr=_table_repr, hash=False
    )
    #: The identity hint a server sends (empty: none).
    psk_hint: bytes = b""
    #: Our certificate chain, leaf first.
    certificate_chain: tuple[x509.Certificate, ...] = attrs.field(
        default=(), converter=_certificates
    )
    #: The P-256 private key of the leaf or of the raw public key.
    private_key: ec.EllipticCurvePrivateKey | None = attrs.field(default=None, repr=False)
    #: Trust anchors for the peer's certificate chain.
    trusted_cas: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=_certificates)
    #: Present our key as an RFC 7250 raw public key instead of a certificate.
    raw_public_key: bool = False
    #: The peers' raw public keys we accept (DER SubjectPublicKeyInfo).
    trusted_raw_public_keys: frozenset[bytes] = attrs.field(
        default=frozenset(), converter=_canonical_spkis
    )
    #: A server asks for, and requires, a client certificate or raw public key.
    require_client_auth: bool = False
    #: Check the peer's certificate or raw public key (libcoap's ``-n`` turns it off).
    verify_peer: bool = True

    def __attrs_post_init__(self) -> None:
        if self.psk is not None or self.psk_identity is not None:
            if self.psk is None:
                raise ValueError("a PSK identity needs a PSK")
            if self.psk_identity is None:
                raise ValueError("a PSK needs an identity")
            _check_psk_pair(self.psk_identity, self.psk, "psk")
        for identity, psk in self.psk_table.items():
            _check_psk_pair(identity, psk, "psk_table")
        if not isinstance(self.psk_hint, bytes):
            raise TypeError("psk_hint is bytes")
        if len(self.psk_hint) > MAX_PSK_IDENTITY_SIZE:
            raise ValueError(f"psk_hint has at most {MAX_PSK_IDENTITY_SIZE} bytes")
        self._check_keys()
        if (
            self.require_client_auth
            and self.verify_peer
            and not (self.trusted_cas or self.trusted_raw_public_keys)
        ):
            raise ValueError(
                "require_client_auth needs trusted_cas or trusted_raw_public_keys"
                " (or verify_peer=False)"
            )

    def _check_keys(self) -> None:
        key = self.private_key
        if key is not None:
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"the private key is {type(key).__name__}, not ECDSA P-256")
            if not isinstance(key.curve, ec.SECP256R1):
                raise ValueError(f"the private key is on {key.curve.name}, not secp256r1 (P-256)")
        if self.certificate_chain:
            if key is None:
                raise ValueError("a certificate chain needs its private key")
            if self.raw_public_key:
                raise ValueError("raw_public_key presents the key instead of certificate_chain")
            try:
                leaf_key = self.certificate_chain[0].public_key()
            except UnsupportedAlgorithm as error:
                raise ValueError(f"the first certificate's key: {error}") from None
            if spki_der(leaf_key) != spki_der(key.public_key()):
                raise ValueError("the private key is not the key of the first certificate")
        elif self.raw_public_key:
            if key is None:
                raise ValueError("raw_public_key needs a private key")
        elif key is not None:
            raise ValueError("a private key needs certificate_chain or raw_public_key=True")

    @property
    def has_psk(self) -> bool:
        """A client PSK or a server PSK table is configured."""
        return self.psk is not None or bool(self.psk_table)

    @property
    def has_certificate(self) -> bool:
        """We can authenticate with a key: a certificate chain or a raw public key."""
        return bool(self.certificate_chain) or self.raw_public_key

    def suites(self, *, server: bool | None = None) -> tuple[int, ...]:
        """The cipher suite numbers these credentials allow, PSK first.

        TLS_PSK_WITH_AES_128_CCM_8 (0xC0A8) with a PSK: a client's ``psk``, a
        server's ``psk_table``. TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (0xC0AE)
        for a server with a certificate or raw public key; for a client with
        one of those, or with a way to check the server's (trusted CAs or
        raw public keys, or ``verify_peer=False``). ``server=None`` (the
        default) gives what either role allows.
        """
        psk_as = {False: self.psk is not None, True: bool(self.psk_table)}
        can_check_peer = bool(
            self.trusted_cas or self.trusted_raw_public_keys or not self.verify_peer
        )
        ecdhe_as = {False: self.has_certificate or can_check_peer, True: self.has_certificate}
        roles = (False, True) if server is None else (server,)
        allowed: list[int] = []
        if any(psk_as[role] for role in roles):
            allowed.append(SUITE_PSK_AES_128_CCM_8)
        if any(ecdhe_as[role] for role in roles):
            allowed.append(SUITE_ECDHE_ECDSA_AES_128_CCM_8)
        return tuple(allowed)

    @classmethod
    def from_files(
        cls,
        *,
        psk_identity: bytes | str | None = None,
        psk: bytes | str | None = None,
        psk_file: StrPath | None = None,
        cert: StrPath | None = None,
        key: StrPath | None = None,
        cacert: StrPath | None = None,
        rpk: StrPath | None = None,
        trusted_rpk: Iterable[StrPath] = (),
        insecure: bool = False,
    ) -> DtlsCredentials:
        """Credentials from command-line style arguments and files, as libcoap's commands take them.

        - ``psk_identity``, ``psk`` (``-u``, ``-k``): text is encoded as
          UTF-8, bytes are taken as they are; no hex decoding (libcoap 4.3.1
          takes ``-k`` as text; pass ``bytes.fromhex(...)`` for a hex key).
          The pair is also ``psk_table``'s one entry, so the same value
          serves a server.
        - ``psk_file``: a file holding the key, its bytes as they are (a
          trailing newline is part of the key; libcoap has no key file).
        - ``cert`` (``-c``): PEM, the chain leaf first; it may also hold the
          private key. ``key`` (``-j``): the PEM private key when it is not
          in ``cert``.
        - ``cacert`` (``-C``/``-R``): PEM, one or more trusted certificates.
        - ``rpk`` (``-M``): a PEM private key (``EC PRIVATE KEY`` or
          ``PRIVATE KEY``, possibly with its ``PUBLIC KEY``) presented as a
          raw public key.
        - ``trusted_rpk``: PEM files of peers' public keys (``PUBLIC KEY``,
          or a private key, or a certificate, whose public key is taken).
        - ``insecure`` (``-n``): the peer is not checked.

        Unencrypted PEM only. Raises ``OSError`` for a file that cannot be
        read and ``ValueError`` for contents or combinations that do not fit.
        """
        identity = _encode_text(psk_identity)
        if psk is not None and psk_file is not None:
            raise ValueError("give psk or psk_file, not both")
        secret = Path(psk_file).read_bytes() if psk_file is not None else _encode_text(psk)
        table = {identity: secret} if identity is not None and secret is not None else {}
        if key is not None and cert is None:
            raise ValueError("key= is the private key of cert=: give cert= too")
        if cert is not None and rpk is not None:
            raise ValueError("cert= and rpk= exclude each other: a certificate or a raw public key")
        chain: tuple[x509.Certificate, ...] = ()
        private_key: ec.EllipticCurvePrivateKey | None = None
        if cert is not None:
            pem = _Pem.read(cert)
            if not pem.certificates:
                raise ValueError(f"{os.fspath(cert)}: no CERTIFICATE in it")
            chain = tuple(pem.certificates)
            key_pem = _Pem.read(key) if key is not None else pem
            if not key_pem.private_keys:
                raise ValueError(f"{os.fspath(key or cert)}: no private key in it; give key=")
            private_key = key_pem.private_keys[0]
        if rpk is not None:
            pem = _Pem.read(rpk)
            if not pem.private_keys:
                raise ValueError(f"{os.fspath(rpk)}: no private key in it")
            private_key = pem.private_keys[0]
            own = spki_der(private_key.public_key())
            if any(spki_der(public) != own for public in pem.public_keys):
                raise ValueError(f"{os.fspath(rpk)}: its PUBLIC KEY is not its private key's")
        trusted_cas: tuple[x509.Certificate, ...] = ()
        if cacert is not None:
            trusted_cas = tuple(_Pem.read(cacert).certificates)
            if not trusted_cas:
                raise ValueError(f"{os.fspath(cacert)}: no CERTIFICATE in it")
        trusted_keys: set[bytes] = set()
        for path in trusted_rpk:
            pem = _Pem.read(path)
            found = [
                *pem.public_keys,
                *(private.public_key() for private in pem.private_keys),
                *(certificate.public_key() for certificate in pem.certificates),
            ]
            if not found:
                raise ValueError(f"{os.fspath(path)}: no public key in it")
            trusted_keys.update(spki_der(public) for public in found)
        return cls(
            psk_identity=identity,
            psk=secret,
            psk_table=table,
            certificate_chain=chain,
            private_key=private_key,
            trusted_cas=trusted_cas,
            raw_public_key=rpk is not None,
            trusted_raw_public_keys=frozenset(trusted_keys),
            verify_peer=not insecure,
        )


def _encode_text(value: bytes | str | None) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n.*?-----END \1-----", re.DOTALL)
_PRIVATE_KEY_LABELS = frozenset({b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"})


@attrs.frozen
class _Pem:
    """The certificates and keys of one PEM file, in their order; other blocks ignored."""

    certificates: list[x509.Certificate]
    private_keys: list[ec.EllipticCurvePrivateKey]
    public_keys: list[ec.EllipticCurvePublicKey]

    @classmethod
    def read(cls, path: StrPath) -> _Pem:
        return cls.parse(Path(path).read_bytes(), os.fspath(path))

    @classmethod
    def parse(cls, data: bytes, name: str) -> _Pem:
        """Raises ``ValueError`` naming ``name`` for a block that does not load."""
        pem = cls([], [], [])
        for match in _PEM_BLOCK.finditer(data):
            label, block = match.group(1), match.group(0)
            try:
                if label == b"CERTIFICATE":
                    with warnings.catch_warnings():
                        # Refused as a peer's would be (pki.validate_chain).
                        warnings.simplefilter("error", CryptographyDeprecationWarning)
                        certificate = x509.load_pem_x509_certificate(block)
                    certificate.public_key()
                    pem.certificates.append(certificate)
                elif label in _PRIVATE_KEY_LABELS:
                    private = serialization.load_pem_private_key(block, password=None)
                    if not isinstance(private, ec.EllipticCurvePrivateKey):
                        raise ValueError(f"a {type(private).__name__}, not an ECDSA P-256 key")
                    pem.private_keys.append(private)
                elif label == b"PUBLIC KEY":
                    public = serialization.load_pem_public_key(block)
                    if not isinstance(public, ec.EllipticCurvePublicKey):
                        raise ValueError(f"a {type(public).__name__}, not an ECDSA P-256 key")
                    pem.public_keys.append(public)
                elif label == b"ENCRYPTED PRIVATE KEY":
                    raise ValueError("an encrypted private key; give it unencrypted")
            except CERTIFICATE_PARSE_ERRORS as error:
                label_text = label.decode("ascii")
                raise ValueError(f"{name}: {label_text} block does not load: {error}") from None
        return pem
