"""A DTLS peer's certificate chain and raw public key, checked (protocol/dtls/pki.py).

Certificates come from trustme (ECDSA P-256 CAs, as a test peer would use)
and from tests/dtls_certificates.py (built with cryptography, every extension and
date chosen). Each refusal is a DtlsPkiError with the alert the engine sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dtls_certificates import (
    AGREEMENT_ONLY,
    CLIENT_AUTH,
    NOT_AFTER,
    NOT_BEFORE,
    NOW,
    SERVER_AUTH,
    Issuer,
    der,
    p256_key,
    rsa_key,
    self_signed,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import DtlsPkiError, RemoteProtocolError
from coap_trio.protocol.dtls import pki

# --- trustme: the certificates a test peer would present ---------------------


@pytest.fixture(scope="module")
def trustme_ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


def trustme_chain(issued: trustme.LeafCert) -> list[bytes]:
    return [der(x509.load_pem_x509_certificate(blob.bytes())) for blob in issued.cert_chain_pems]


def trustme_root(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


def trustme_now() -> datetime:
    # trustme certificates are valid from 2000 to 3000.
    return datetime(2040, 1, 1, tzinfo=UTC)


def test_trustme_chain_is_valid_for_its_names(trustme_ca: trustme.CA) -> None:
    chain = trustme_chain(trustme_ca.issue_cert("coap.example", "192.0.2.7", "2001:db8::7"))
    root = trustme_root(trustme_ca)
    for server_name in ("coap.example", "COAP.example", "coap.example.", "192.0.2.7"):
        leaf = pki.validate_chain(chain, [root], server_name=server_name, now=trustme_now())
        assert der(leaf) == chain[0]
    for server_name in ("2001:db8::7", "[2001:db8::7]", "[2001:db8:0::7]"):
        leaf = pki.validate_chain(chain, [root], server_name=server_name, now=trustme_now())
        assert der(leaf) == chain[0]
    # As a client certificate: no name to check.
    assert der(pki.validate_chain(chain, [root], server_name=None, now=trustme_now())) == chain[0]


def test_trustme_chain_through_an_intermediate(trustme_ca: trustme.CA) -> None:
    intermediate = trustme_ca.create_child_ca()
    chain = trustme_chain(intermediate.issue_cert("coap.example"))
    assert len(chain) == 2
    root = trustme_root(trustme_ca)
    leaf = pki.validate_chain(chain, [root], server_name="coap.example", now=trustme_now())
    assert der(leaf) == chain[0]
    with pytest.raises(DtlsPkiError) as caught:
        pki.validate_chain(chain[:1], [root], server_name="coap.example", now=trustme_now())
    assert caught.value.alert == pki.ALERT_UNKNOWN_CA


@pytest.mark.parametrize(
    "server_name", ["other.example", "sub.coap.example", "192.0.2.8", "[2001:db8::8]", "::1"]
)
def test_trustme_chain_refused_for_another_name(trustme_ca: trustme.CA, server_name: str) -> None:
    chain = trustme_chain(trustme_ca.issue_cert("coap.example", "192.0.2.7", "2001:db8::7"))
    with pytest.raises(DtlsPkiError) as caught:
        pki.validate_chain(
            chain, [trustme_root(trustme_ca)], server_name=server_name, now=trustme_now()
        )
    assert caught.value.alert == pki.ALERT_BAD_CERTIFICATE
    assert "subjectAltName" in str(caught.value)


def test_trustme_chain_refused_by_another_ca(trustme_ca: trustme.CA) -> None:
    chain = trustme_chain(trustme_ca.issue_cert("coap.example"))
    other = trustme_root(trustme.CA(key_type=trustme.KeyType.ECDSA))
    with pytest.raises(DtlsPkiError) as caught:
        pki.validate_chain(chain, [other], server_name="coap.example", now=trustme_now())
    assert caught.value.alert == pki.ALERT_UNKNOWN_CA


def test_trustme_rsa_leaf_is_refused() -> None:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    chain = trustme_chain(ca.issue_cert("coap.example", key_type=trustme.KeyType.RSA))
    with pytest.raises(DtlsPkiError) as caught:
        pki.validate_chain(chain, [trustme_root(ca)], server_name="coap.example", now=trustme_now())
    assert caught.value.alert == pki.ALERT_UNSUPPORTED_CERTIFICATE


# --- certificates built here -------------------------------------------------


@pytest.fixture(scope="module")
def root() -> Issuer:
    return Issuer.root()


def validate(
    chain: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    *,
    server_name: str | None = "coap.example",
    now: datetime = NOW,
) -> x509.Certificate:
    return pki.validate_chain(
        [der(certificate) for certificate in chain], trusted, server_name=server_name, now=now
    )


def refused(
    chain: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    *,
    server_name: str | None = "coap.example",
    now: datetime = NOW,
) -> DtlsPkiError:
    with pytest.raises(DtlsPkiError) as caught:
        validate(chain, trusted, server_name=server_name, now=now)
    return caught.value


def test_valid_chain_returns_the_leaf(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example", "192.0.2.1")
    assert validate([leaf], [root.certificate]) == leaf
    assert validate([leaf], [root.certificate], server_name="192.0.2.1") == leaf
    assert validate([leaf], [root.certificate], server_name=None) == leaf
    # The boundaries of the validity period are inside it.
    assert validate([leaf], [root.certificate], now=NOT_BEFORE) == leaf
    assert validate([leaf], [root.certificate], now=NOT_AFTER) == leaf
    # Any timezone: the same instant.
    later = NOW.astimezone(timezone(timedelta(hours=-7)))
    assert validate([leaf], [root.certificate], now=later) == leaf


def test_wrong_name_and_wrong_ip(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example", "192.0.2.1")
    assert refused([leaf], [root.certificate], server_name="other.example").alert == 42
    assert refused([leaf], [root.certificate], server_name="192.0.2.2").alert == 42
    # An IP literal is matched as an address, not as a DNS name.
    named_like_ip, _ = root.issue("coap.example")
    assert refused([named_like_ip], [root.certificate], server_name="192.0.2.1").alert == 42


@pytest.mark.parametrize("server_name", ["", "exa mple", "bad_name.example", "ä.example", ".."])
def test_a_server_name_that_cannot_be_matched_is_a_refusal(root: Issuer, server_name: str) -> None:
    leaf, _ = root.issue("coap.example")
    assert refused([leaf], [root.certificate], server_name=server_name).alert == 42


def test_expired_and_not_yet_valid(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example")
    after = NOT_AFTER + timedelta(seconds=1)
    error = refused([leaf], [root.certificate], now=after)
    assert error.alert == pki.ALERT_CERTIFICATE_EXPIRED
    before = NOT_BEFORE - timedelta(seconds=1)
    assert refused([leaf], [root.certificate], now=before).alert == pki.ALERT_CERTIFICATE_EXPIRED
    assert refused([leaf], [root.certificate], server_name=None, now=after).alert == 45


def test_expired_intermediate_and_expired_root(root: Issuer) -> None:
    old = root.intermediate(not_before=NOT_BEFORE, not_after=NOW - timedelta(days=1))
    leaf, _ = old.issue("coap.example", not_before=NOT_BEFORE, not_after=NOT_AFTER)
    error = refused([leaf, old.certificate], [root.certificate])
    assert error.alert == pki.ALERT_CERTIFICATE_EXPIRED
    stale_root = Issuer.root(not_before=NOT_BEFORE, not_after=NOW - timedelta(days=1))
    leaf, _ = stale_root.issue("coap.example")
    assert refused([leaf], [stale_root.certificate]).alert == pki.ALERT_CERTIFICATE_EXPIRED


def test_chain_through_intermediates(root: Issuer) -> None:
    first = root.intermediate("First")
    second = first.intermediate("Second")
    leaf, _ = second.issue("coap.example")
    assert validate([leaf, second.certificate, first.certificate], [root.certificate]) == leaf
    # Intermediates in any order; the path is built.
    assert validate([leaf, first.certificate, second.certificate], [root.certificate]) == leaf
    missing = refused([leaf, second.certificate], [root.certificate])
    assert missing.alert == pki.ALERT_UNKNOWN_CA


def test_untrusted_ca(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example")
    assert refused([leaf], [Issuer.root("Other").certificate]).alert == pki.ALERT_UNKNOWN_CA
    assert refused([leaf], [], server_name=None).alert == pki.ALERT_UNKNOWN_CA


def test_same_name_other_key_is_not_the_ca(root: Issuer) -> None:
    impostor = Issuer.root()  # same subject "Test Root", another key
    leaf, _ = impostor.issue("coap.example")
    assert refused([leaf], [root.certificate]).alert == pki.ALERT_UNKNOWN_CA


def test_self_signed_leaf(root: Issuer) -> None:
    leaf, _ = self_signed("coap.example")
    assert refused([leaf], [root.certificate]).alert == pki.ALERT_UNKNOWN_CA


def test_rsa_and_p384_leaves_are_refused(root: Issuer) -> None:
    rsa_leaf, _ = root.issue("coap.example", key=rsa_key())
    error = refused([rsa_leaf], [root.certificate])
    assert error.alert == pki.ALERT_UNSUPPORTED_CERTIFICATE
    p384_leaf, _ = root.issue("coap.example", key=ec.generate_private_key(ec.SECP384R1()))
    error = refused([p384_leaf], [root.certificate])
    assert error.alert == pki.ALERT_UNSUPPORTED_CERTIFICATE
    assert "secp384r1" in str(error)


def test_extended_key_usage_is_checked_for_the_role(root: Issuer) -> None:
    server_only, _ = root.issue("coap.example", usages=SERVER_AUTH)
    client_only, _ = root.issue("coap.example", usages=CLIENT_AUTH)
    any_usage, _ = root.issue(
        "coap.example", usages=(x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)
    )
    no_usage, _ = root.issue("coap.example", usages=None)
    assert validate([server_only], [root.certificate]) == server_only
    assert refused([server_only], [root.certificate], server_name=None).alert == 42
    assert validate([client_only], [root.certificate], server_name=None) == client_only
    assert refused([client_only], [root.certificate]).alert == 42
    for leaf in (any_usage, no_usage):
        assert validate([leaf], [root.certificate]) == leaf
        assert validate([leaf], [root.certificate], server_name=None) == leaf


def test_key_usage_must_allow_signing(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example", key_usage=AGREEMENT_ONLY)
    assert refused([leaf], [root.certificate]).alert == pki.ALERT_BAD_CERTIFICATE
    unrestricted, _ = root.issue("coap.example", key_usage=None)
    assert validate([unrestricted], [root.certificate]) == unrestricted


def test_client_certificate_without_subject_alt_name(root: Issuer) -> None:
    leaf, _ = root.issue(common_name="device-17")
    assert validate([leaf], [root.certificate], server_name=None) == leaf
    assert pki.subject_of(leaf) == "O=coap_trio tests,CN=device-17"
    # A server's must name the host.
    assert refused([leaf], [root.certificate]).alert == pki.ALERT_BAD_CERTIFICATE


def test_bounds_are_checked_before_parsing(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example")
    trusted = [root.certificate]
    too_many = [der(leaf)] + [b"not even DER"] * pki.MAX_CHAIN_LENGTH
    with pytest.raises(DtlsPkiError, match="chain of 9") as caught:
        pki.validate_chain(too_many, trusted, server_name="coap.example", now=NOW)
    assert caught.value.alert == pki.ALERT_BAD_CERTIFICATE
    huge = [der(leaf), b"\x30" * (pki.MAX_CERTIFICATE_SIZE + 1)]
    with pytest.raises(DtlsPkiError, match="8193 bytes") as caught:
        pki.validate_chain(huge, trusted, server_name="coap.example", now=NOW)
    assert caught.value.alert == pki.ALERT_BAD_CERTIFICATE
    with pytest.raises(DtlsPkiError) as caught:
        pki.validate_chain([], trusted, server_name="coap.example", now=NOW)
    assert caught.value.alert == pki.ALERT_HANDSHAKE_FAILURE


def test_a_long_but_bounded_chain_is_accepted(root: Issuer) -> None:
    issuers = [root]
    for depth in range(pki.MAX_CHAIN_LENGTH - 1):
        issuers.append(issuers[-1].intermediate(f"Level {depth}"))
    leaf, _ = issuers[-1].issue("coap.example")
    chain = [leaf, *(issuer.certificate for issuer in reversed(issuers[1:]))]
    assert len(chain) == pki.MAX_CHAIN_LENGTH
    assert validate(chain, [root.certificate]) == leaf


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x30", b"\x30\x03\x02\x01\x01", b"-----BEGIN CERTIFICATE-----", bytes(100)],
)
def test_garbage_der(root: Issuer, garbage: bytes) -> None:
    leaf, _ = root.issue("coap.example")
    for chain in ([garbage], [der(leaf), garbage]):
        with pytest.raises(DtlsPkiError) as caught:
            pki.validate_chain(chain, [root.certificate], server_name="coap.example", now=NOW)
        assert caught.value.alert == pki.ALERT_BAD_CERTIFICATE


def test_a_tampered_certificate_is_refused(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example")
    body = bytearray(der(leaf))
    where = body.index(b"coap.example")
    body[where] ^= 0x20  # "Coap.example": the signature no longer matches
    with pytest.raises(DtlsPkiError) as caught:
        pki.validate_chain([bytes(body)], [root.certificate], server_name=None, now=NOW)
    assert caught.value.alert in (pki.ALERT_BAD_CERTIFICATE, pki.ALERT_UNKNOWN_CA)


@pytest.mark.parametrize("common_name", [b"coap.example", b"Test Root"], ids=["subject", "issuer"])
def test_a_malformed_name_is_refused_when_parsed(root: Issuer, common_name: bytes) -> None:
    # cryptography loads a certificate whose attribute value has a tag no
    # string has, and fails only when the name is read: that must not
    # happen later, unguarded.
    leaf, _ = root.issue("coap.example")
    body = bytearray(der(leaf))
    body[body.index(common_name) - 2] = 0x00  # the CN value's string tag
    for server_name in ("coap.example", None):
        with pytest.raises(DtlsPkiError, match="does not parse") as caught:
            pki.validate_chain([bytes(body)], [root.certificate], server_name=server_name, now=NOW)
        assert caught.value.alert == pki.ALERT_BAD_CERTIFICATE
    with pytest.raises(DtlsPkiError, match="does not parse"):
        pki.leaf_certificate([bytes(body)])


def test_naive_now_is_a_usage_error(root: Issuer) -> None:
    leaf, _ = root.issue("coap.example")
    with pytest.raises(ValueError, match="timezone-aware"):
        validate([leaf], [root.certificate], now=NOW.replace(tzinfo=None))


def test_the_error_is_a_remote_protocol_error() -> None:
    error = DtlsPkiError("refused", pki.ALERT_UNKNOWN_CA)
    assert isinstance(error, RemoteProtocolError)
    assert error.alert == 48
    assert str(error) == "refused"


def test_leaf_certificate_parses_without_trust(root: Issuer) -> None:
    leaf, _ = self_signed("anything")
    assert pki.leaf_certificate([der(leaf)]) == leaf
    rsa_leaf, _ = root.issue("coap.example", key=rsa_key())
    with pytest.raises(DtlsPkiError) as caught:
        pki.leaf_certificate([der(rsa_leaf)])
    assert caught.value.alert == pki.ALERT_UNSUPPORTED_CERTIFICATE
    with pytest.raises(DtlsPkiError):
        pki.leaf_certificate([b"garbage"])


# --- raw public keys (RFC 7250) ----------------------------------------------


def compressed_spki(key: ec.EllipticCurvePublicKey) -> bytes:
    canonical = pki.spki_der(key)
    algorithm = canonical[2:23]  # SEQUENCE { ecPublicKey, prime256v1 }
    point = canonical[-65:]
    y_is_odd = point[-1] & 1
    bit_string = b"\x03\x22\x00" + bytes([2 + y_is_odd]) + point[1:33]
    body = algorithm + bit_string
    return b"\x30" + bytes([len(body)]) + body


def test_spki_and_fingerprint() -> None:
    key = p256_key().public_key()
    spki = pki.spki_der(key)
    assert len(spki) == 91
    assert spki.startswith(bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200"))
    assert pki.rpk_fingerprint(spki) == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert pki.rpk_fingerprint(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_trusted_raw_public_key_is_accepted() -> None:
    key = p256_key().public_key()
    spki = pki.spki_der(key)
    other = pki.spki_der(p256_key().public_key())
    accepted = pki.peer_public_key_from_rpk(spki, frozenset({other, spki}))
    assert pki.spki_der(accepted) == spki
    # The same key in compressed form is the same key.
    compressed = compressed_spki(key)
    assert compressed != spki
    assert pki.spki_der(pki.peer_public_key_from_rpk(compressed, frozenset({spki}))) == spki


def test_untrusted_raw_public_key_is_refused() -> None:
    spki = pki.spki_der(p256_key().public_key())
    for trusted in (frozenset(), frozenset({pki.spki_der(p256_key().public_key())})):
        with pytest.raises(DtlsPkiError, match="sha256:") as caught:
            pki.peer_public_key_from_rpk(spki, trusted)
        assert caught.value.alert == pki.ALERT_BAD_CERTIFICATE


def test_raw_public_keys_of_other_kinds_are_refused() -> None:
    for key in (rsa_key().public_key(), ec.generate_private_key(ec.SECP384R1()).public_key()):
        spki = pki.spki_der(key)
        with pytest.raises(DtlsPkiError) as caught:
            pki.peer_public_key_from_rpk(spki, frozenset({spki}))
        assert caught.value.alert == pki.ALERT_UNSUPPORTED_CERTIFICATE


def test_raw_public_key_garbage_and_size() -> None:
    spki = pki.spki_der(p256_key().public_key())
    for bad in (b"", b"\x30\x00", spki[:-1], spki + b"\x00", b"\x00" * (pki.MAX_SPKI_SIZE + 1)):
        with pytest.raises(DtlsPkiError) as caught:
            pki.peer_public_key_from_rpk(bad, frozenset({spki, bad}))
        assert caught.value.alert == pki.ALERT_BAD_CERTIFICATE


# --- whatever the peer sends, only DtlsPkiError ------------------------------

_ROOT = Issuer.root("Fuzz Root")
_INTERMEDIATE = _ROOT.intermediate("Fuzz Intermediate")
_LEAF_DER = der(_INTERMEDIATE.issue("coap.example")[0])
_INTERMEDIATE_DER = der(_INTERMEDIATE.certificate)
_SPKI = pki.spki_der(p256_key().public_key())


def _mutated(original: bytes) -> st.SearchStrategy[bytes]:
    """``original`` with one to three bytes changed, or cut short, or extended."""
    change = st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255))

    def apply(changes: list[tuple[int, int]]) -> bytes:
        body = bytearray(original)
        for where, value in changes:
            body[where] = value
        return bytes(body)

    return st.one_of(
        st.lists(change, min_size=1, max_size=3).map(apply),
        st.integers(0, len(original)).map(lambda end: original[:end]),
        st.binary(min_size=1, max_size=8).map(lambda tail: original + tail),
    )


@settings(deadline=None, max_examples=1000)
@given(
    st.lists(
        st.one_of(st.binary(max_size=200), _mutated(_LEAF_DER), _mutated(_INTERMEDIATE_DER)),
        max_size=pki.MAX_CHAIN_LENGTH + 1,
    ),
    st.sampled_from(["coap.example", None, "192.0.2.1"]),
)
def test_any_chain_bytes_raise_only_dtls_pki_error(
    chain: list[bytes], server_name: str | None
) -> None:
    try:
        leaf = pki.validate_chain(chain, [_ROOT.certificate], server_name=server_name, now=NOW)
    except DtlsPkiError as error:
        alert = error.alert
    else:
        assert der(leaf) == chain[0]
        return
    assert alert in (40, 42, 43, 45, 48)


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.binary(max_size=200), _mutated(_SPKI)))
def test_any_spki_bytes_raise_only_dtls_pki_error(spki: bytes) -> None:
    try:
        key = pki.peer_public_key_from_rpk(spki, frozenset({_SPKI}))
    except DtlsPkiError as error:
        alert = error.alert
    else:
        assert pki.spki_der(key) == _SPKI
        return
    assert alert in (42, 43)


def test_a_certificate_cryptography_warns_about_is_refused() -> None:
    """A country name of other than two letters: cryptography warns while parsing it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "XX")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    bad = der.replace(b"\x13\x02XX", b"\x13\x03XXX")  # the country name, three letters
    assert bad != der
    with pytest.raises(DtlsPkiError):
        pki.validate_chain([bad], [_ROOT.certificate], server_name=None, now=NOW)
