"""DtlsCredentials: what a DTLS endpoint holds, checked when made; read from PEM files.

The files are those libcoap's coap-client and coap-server take (``-c``,
``-j``, ``-C``, ``-M``), written here with cryptography and trustme.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import attrs
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dtls_certificates import NOW, Issuer, der, key_pem, p256_key, pem, rsa_key
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.protocol.dtls import pki
from coap_trio.protocol.dtls.credentials import (
    SUITE_ECDHE_ECDSA_AES_128_CCM_8 as ECDHE,
)
from coap_trio.protocol.dtls.credentials import (
    SUITE_PSK_AES_128_CCM_8 as PSK,
)
from coap_trio.protocol.dtls.credentials import (
    DtlsCredentials,
)

# openssl ecparam -name prime256v1 writes this block before the key.
EC_PARAMETERS = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"


@pytest.fixture(scope="module")
def root() -> Issuer:
    return Issuer.root()


@pytest.fixture(scope="module")
def issued(root: Issuer) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    leaf, key = root.issue("coap.example")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return leaf, key


def test_the_constants() -> None:
    assert (PSK, ECDHE) == (0xC0A8, 0xC0AE)


def test_defaults_allow_nothing_and_are_hashable() -> None:
    credentials = DtlsCredentials()
    assert not credentials.has_psk
    assert not credentials.has_certificate
    assert credentials.suites() == ()
    assert credentials.verify_peer
    assert not credentials.require_client_auth
    assert dict(credentials.psk_table) == {}
    assert credentials.trusted_raw_public_keys == frozenset()
    assert hash(credentials) == hash(DtlsCredentials())
    assert credentials == DtlsCredentials()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        credentials.psk = b"x"


def test_client_psk() -> None:
    credentials = DtlsCredentials(psk_identity=b"client", psk=b"secret")
    assert credentials.has_psk
    assert credentials.suites() == (PSK,)
    assert credentials.suites(server=False) == (PSK,)
    assert credentials.suites(server=True) == ()


def test_psk_and_identity_go_together() -> None:
    with pytest.raises(ValueError, match="needs an identity"):
        DtlsCredentials(psk=b"secret")
    with pytest.raises(ValueError, match="needs a PSK"):
        DtlsCredentials(psk_identity=b"client")


@pytest.mark.parametrize(
    ("identity", "psk", "problem"),
    [
        (b"client", b"", "1 to 64 bytes, not 0"),
        (b"client", b"k" * 65, "1 to 64 bytes, not 65"),
        (b"", b"secret", "1 to 128 bytes, not 0"),
        (b"i" * 129, b"secret", "1 to 128 bytes, not 129"),
    ],
)
def test_psk_bounds(identity: bytes, psk: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DtlsCredentials(psk_identity=identity, psk=psk)
    with pytest.raises(ValueError, match=problem):
        DtlsCredentials(psk_table={identity: psk})


def test_psk_bounds_inclusive() -> None:
    credentials = DtlsCredentials(psk_identity=b"i" * 128, psk=b"k" * 64, psk_hint=b"h" * 128)
    assert credentials.psk == b"k" * 64
    assert DtlsCredentials(psk_identity=b"i", psk=b"k").psk == b"k"
    with pytest.raises(ValueError, match="psk_hint"):
        DtlsCredentials(psk_hint=b"h" * 129)


def test_psks_are_bytes() -> None:
    with pytest.raises(TypeError):
        DtlsCredentials(psk_identity="client", psk=b"secret")
    with pytest.raises(TypeError):
        DtlsCredentials(psk_table={b"client": "secret"})
    with pytest.raises(TypeError):
        DtlsCredentials(psk_hint="hint")


def test_server_psk_table_is_a_read_only_copy() -> None:
    table = {b"alice": b"one", b"bob": b"two"}
    credentials = DtlsCredentials(psk_table=table, psk_hint=b"CoAP")
    table[b"mallory"] = b"three"
    assert dict(credentials.psk_table) == {b"alice": b"one", b"bob": b"two"}
    with pytest.raises(TypeError):
        credentials.psk_table[b"mallory"] = b"three"
    assert credentials.has_psk
    assert credentials.suites(server=True) == (PSK,)
    assert credentials.suites(server=False) == ()
    assert credentials.suites() == (PSK,)
    assert credentials == DtlsCredentials(
        psk_table={b"bob": b"two", b"alice": b"one"}, psk_hint=b"CoAP"
    )


def test_repr_shows_no_secret(issued: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    leaf, key = issued
    credentials = DtlsCredentials(
        psk_identity=b"client",
        psk=b"hunter2-secret",
        psk_table={b"alice": b"table-secret"},
        certificate_chain=(leaf,),
        private_key=key,
    )
    text = repr(credentials)
    assert "client" in text
    assert "alice" in text
    assert "hunter2" not in text
    assert "table-secret" not in text
    assert "PRIVATE" not in text


def test_certificate_and_its_key(
    root: Issuer, issued: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    leaf, key = issued
    credentials = DtlsCredentials(
        certificate_chain=[leaf], private_key=key, trusted_cas=[root.certificate]
    )
    assert credentials.certificate_chain == (leaf,)
    assert credentials.trusted_cas == (root.certificate,)
    assert credentials.has_certificate
    assert not credentials.has_psk
    assert credentials.suites(server=True) == (ECDHE,)
    assert credentials.suites(server=False) == (ECDHE,)
    both = attrs.evolve(credentials, psk_identity=b"id", psk=b"key", psk_table={b"id": b"key"})
    assert both.suites() == (PSK, ECDHE)
    assert both.suites(server=True) == (PSK, ECDHE)
    hash(credentials)


def test_a_client_that_only_checks_the_server_may_use_ecdhe(root: Issuer) -> None:
    checking = DtlsCredentials(trusted_cas=[root.certificate])
    assert checking.suites(server=False) == (ECDHE,)
    assert checking.suites(server=True) == ()
    spki = pki.spki_der(p256_key().public_key())
    assert DtlsCredentials(trusted_raw_public_keys={spki}).suites(server=False) == (ECDHE,)
    assert DtlsCredentials(verify_peer=False).suites(server=False) == (ECDHE,)
    assert DtlsCredentials(verify_peer=False).suites(server=True) == ()


def test_key_mismatches_and_missing_keys(
    root: Issuer, issued: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    leaf, _ = issued
    with pytest.raises(ValueError, match="not the key of the first certificate"):
        DtlsCredentials(certificate_chain=[leaf], private_key=p256_key())
    with pytest.raises(ValueError, match="needs its private key"):
        DtlsCredentials(certificate_chain=[leaf])
    with pytest.raises(ValueError, match="raw_public_key needs a private key"):
        DtlsCredentials(raw_public_key=True)
    with pytest.raises(ValueError, match="certificate_chain or raw_public_key"):
        DtlsCredentials(private_key=p256_key())
    with pytest.raises(ValueError, match="instead of certificate_chain"):
        DtlsCredentials(certificate_chain=[leaf], private_key=issued[1], raw_public_key=True)


def test_keys_must_be_p256(root: Issuer) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="secp384r1"):
        DtlsCredentials(private_key=p384, raw_public_key=True)
    leaf, _ = root.issue("coap.example", key=p384)
    with pytest.raises(ValueError, match="secp384r1"):
        DtlsCredentials(certificate_chain=[leaf], private_key=p384)
    with pytest.raises(ValueError, match="not ECDSA P-256"):
        DtlsCredentials(private_key=rsa_key(), raw_public_key=True)


def test_chain_entries_are_certificates() -> None:
    with pytest.raises(TypeError):
        DtlsCredentials(trusted_cas=[b"DER"])


def test_raw_public_key_credentials() -> None:
    key = p256_key()
    credentials = DtlsCredentials(private_key=key, raw_public_key=True)
    assert credentials.has_certificate
    assert credentials.suites(server=True) == (ECDHE,)


def test_trusted_raw_public_keys_are_stored_canonical() -> None:
    public = p256_key().public_key()
    canonical = pki.spki_der(public)
    point = canonical[-65:]
    compressed_body = canonical[2:23] + b"\x03\x22\x00" + bytes([2 + (point[-1] & 1)]) + point[1:33]
    compressed = b"\x30" + bytes([len(compressed_body)]) + compressed_body
    credentials = DtlsCredentials(trusted_raw_public_keys=[compressed])
    assert credentials.trusted_raw_public_keys == frozenset({canonical})
    assert pki.peer_public_key_from_rpk(compressed, credentials.trusted_raw_public_keys) == public


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage",
        pki.spki_der(ec.generate_private_key(ec.SECP384R1()).public_key()),
    ],
    ids=["garbage", "P-384"],
)
def test_trusted_raw_public_keys_are_p256_spkis(bad: bytes) -> None:
    with pytest.raises(ValueError, match="trusted raw public key"):
        DtlsCredentials(trusted_raw_public_keys=frozenset({bad}))
    with pytest.raises(TypeError):
        DtlsCredentials(trusted_raw_public_keys=frozenset({"text"}))


def test_client_auth_needs_something_to_check_against(root: Issuer) -> None:
    with pytest.raises(ValueError, match="require_client_auth"):
        DtlsCredentials(require_client_auth=True)
    assert DtlsCredentials(require_client_auth=True, trusted_cas=[root.certificate])
    assert DtlsCredentials(require_client_auth=True, verify_peer=False)


# --- from_files ----------------------------------------------------------------


def write(directory: Path, filename: str, *blocks: bytes) -> Path:
    path = directory / filename
    path.write_bytes(b"".join(blocks))
    return path


def test_from_files_psk_text_and_bytes() -> None:
    credentials = DtlsCredentials.from_files(psk_identity="Client_identity", psk="sécret")
    assert credentials.psk_identity == b"Client_identity"
    assert credentials.psk == "sécret".encode()
    assert dict(credentials.psk_table) == {b"Client_identity": "sécret".encode()}
    assert credentials.suites(server=False) == (PSK,)
    assert credentials.suites(server=True) == (PSK,)
    raw = DtlsCredentials.from_files(psk_identity=b"\x00id", psk=b"\xff\x00key")
    assert raw.psk == b"\xff\x00key"
    # No hex decoding: "0x..." is the text.
    assert DtlsCredentials.from_files(psk_identity="id", psk="0x41").psk == b"0x41"


def test_from_files_psk_file_is_taken_as_it_is(tmp_path: Path) -> None:
    path = write(tmp_path, "key", b"secret\n")
    credentials = DtlsCredentials.from_files(psk_identity="id", psk_file=path)
    assert credentials.psk == b"secret\n"
    with pytest.raises(ValueError, match="not both"):
        DtlsCredentials.from_files(psk_identity="id", psk="x", psk_file=path)
    with pytest.raises(ValueError, match="1 to 64"):
        DtlsCredentials.from_files(psk_identity="id", psk_file=write(tmp_path, "empty", b""))
    with pytest.raises(OSError):
        DtlsCredentials.from_files(psk_identity="id", psk_file=tmp_path / "missing")


def test_from_files_certificate_key_and_ca(
    tmp_path: Path, root: Issuer, issued: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    leaf, key = issued
    cert = write(tmp_path, "cert.pem", pem(leaf))
    key_file = write(tmp_path, "key.pem", EC_PARAMETERS, key_pem(key, traditional=True))
    other_root = Issuer.root("Other")
    cacert = write(tmp_path, "ca.pem", pem(root.certificate), pem(other_root.certificate))
    credentials = DtlsCredentials.from_files(cert=cert, key=key_file, cacert=cacert)
    assert credentials.certificate_chain == (leaf,)
    assert pki.spki_der(credentials.private_key.public_key()) == pki.spki_der(key.public_key())
    assert credentials.trusted_cas == (root.certificate, other_root.certificate)
    assert credentials.verify_peer
    assert not credentials.raw_public_key
    # The chain as a peer checks it.
    chain_der = [der(certificate) for certificate in credentials.certificate_chain]
    assert (
        pki.validate_chain(chain_der, credentials.trusted_cas, server_name="coap.example", now=NOW)
        == leaf
    )


def test_from_files_key_inside_the_certificate_file(tmp_path: Path, root: Issuer) -> None:
    intermediate = root.intermediate()
    leaf, key = intermediate.issue("coap.example")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    both = write(tmp_path, "both.pem", key_pem(key), pem(leaf), pem(intermediate.certificate))
    credentials = DtlsCredentials.from_files(cert=both, insecure=True)
    assert credentials.certificate_chain == (leaf, intermediate.certificate)
    assert not credentials.verify_peer


def test_from_files_trustme_files(tmp_path: Path) -> None:
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    server = ca.issue_cert("coap.example")
    server.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    credentials = DtlsCredentials.from_files(
        cert=tmp_path / "server.pem", cacert=str(tmp_path / "ca.pem")
    )
    assert credentials.has_certificate
    assert len(credentials.trusted_cas) == 1


def test_from_files_refusals(
    tmp_path: Path, root: Issuer, issued: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    leaf, key = issued
    cert = write(tmp_path, "cert.pem", pem(leaf))
    key_file = write(tmp_path, "key.pem", key_pem(key))
    with pytest.raises(ValueError, match="give cert= too"):
        DtlsCredentials.from_files(key=key_file)
    with pytest.raises(ValueError, match="no private key"):
        DtlsCredentials.from_files(cert=cert)
    with pytest.raises(ValueError, match="exclude each other"):
        DtlsCredentials.from_files(cert=cert, key=key_file, rpk=key_file)
    with pytest.raises(ValueError, match="no CERTIFICATE"):
        DtlsCredentials.from_files(cert=key_file, key=key_file)
    with pytest.raises(ValueError, match="no CERTIFICATE"):
        DtlsCredentials.from_files(cacert=key_file)
    other_key = write(tmp_path, "other.pem", key_pem(p256_key()))
    with pytest.raises(ValueError, match="not the key of the first certificate"):
        DtlsCredentials.from_files(cert=cert, key=other_key)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"password"),
    )
    with pytest.raises(ValueError, match="encrypted"):
        DtlsCredentials.from_files(cert=cert, key=write(tmp_path, "enc.pem", encrypted))
    rsa_pem = rsa_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match=r"rsa\.pem: RSA PRIVATE KEY block does not load"):
        DtlsCredentials.from_files(cert=cert, key=write(tmp_path, "rsa.pem", rsa_pem))
    broken = pem(leaf).replace(b"MII", b"M!I", 1)
    with pytest.raises(ValueError, match="CERTIFICATE block does not load"):
        DtlsCredentials.from_files(cert=write(tmp_path, "broken.pem", broken), key=key_file)
    with pytest.raises(OSError):
        DtlsCredentials.from_files(cacert=tmp_path / "missing.pem")


def test_from_files_raw_public_key(tmp_path: Path) -> None:
    key = p256_key()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # libcoap's -M: just an EC PRIVATE KEY, or a PUBLIC KEY and a PRIVATE KEY.
    for name, blocks in [
        ("ec.pem", (EC_PARAMETERS, key_pem(key, traditional=True))),
        ("both.pem", (public_pem, key_pem(key))),
    ]:
        credentials = DtlsCredentials.from_files(rpk=write(tmp_path, name, *blocks))
        assert credentials.raw_public_key
        assert credentials.has_certificate
        assert credentials.certificate_chain == ()
        assert credentials.private_key is not None
        assert pki.spki_der(credentials.private_key.public_key()) == pki.spki_der(key.public_key())
    mismatched = write(tmp_path, "mismatch.pem", public_pem, key_pem(p256_key()))
    with pytest.raises(ValueError, match="not its private key's"):
        DtlsCredentials.from_files(rpk=mismatched)
    with pytest.raises(ValueError, match="no private key"):
        DtlsCredentials.from_files(rpk=write(tmp_path, "public.pem", public_pem))


def test_from_files_trusted_raw_public_keys(tmp_path: Path, root: Issuer) -> None:
    by_public = p256_key()
    by_private = p256_key()
    leaf, by_certificate = root.issue("peer.example")
    public_pem = by_public.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    paths = [
        write(tmp_path, "public.pem", public_pem),
        write(tmp_path, "private.pem", key_pem(by_private)),
        write(tmp_path, "cert.pem", pem(leaf)),
    ]
    credentials = DtlsCredentials.from_files(trusted_rpk=paths)
    expected = {pki.spki_der(key.public_key()) for key in (by_public, by_private, by_certificate)}
    assert credentials.trusted_raw_public_keys == expected
    assert credentials.suites() == (ECDHE,)
    with pytest.raises(ValueError, match="no public key"):
        DtlsCredentials.from_files(trusted_rpk=[write(tmp_path, "empty.pem", b"nothing")])
    rsa_public = (
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="PUBLIC KEY block does not load"):
        DtlsCredentials.from_files(trusted_rpk=[write(tmp_path, "rsa.pem", rsa_public)])


_LABELS = [
    "CERTIFICATE",
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "PUBLIC KEY",
    "ENCRYPTED PRIVATE KEY",
    "EC PARAMETERS",
    "X",
]
_KEY = p256_key()
_VALID_DER = [
    _KEY.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ),
    pki.spki_der(_KEY.public_key()),
    der(Issuer.root("Fuzz").certificate),
]


def _pem_block(label: str, body: bytes) -> bytes:
    text = base64.encodebytes(body)
    return b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label.encode(), text, label.encode())


_pem_files = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.builds(
            _pem_block,
            st.sampled_from(_LABELS),
            st.one_of(
                st.binary(max_size=150),
                st.sampled_from(_VALID_DER),
                st.tuples(
                    st.sampled_from(_VALID_DER), st.integers(0, 400), st.integers(0, 255)
                ).map(
                    lambda change: (
                        change[0][: change[1]] + bytes([change[2]]) + change[0][change[1] + 1 :]
                    )
                ),
            ),
        ),
        max_size=3,
    ).map(b"".join),
)


@settings(deadline=None, max_examples=200)
@given(_pem_files, st.sampled_from(["cert", "cacert", "rpk", "trusted_rpk"]))
def test_any_file_contents_raise_only_value_error(contents: bytes, argument: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "file.pem"
        path.write_bytes(contents)
        arguments: dict[str, object] = {argument: [path] if argument == "trusted_rpk" else path}
        try:
            credentials = DtlsCredentials.from_files(**arguments)
        except ValueError:
            return
    assert isinstance(credentials, DtlsCredentials)


def test_a_certificate_whose_key_does_not_load_is_a_value_error(
    tmp_path: Path, root: Issuer
) -> None:
    leaf, _ = root.issue("peer.example")
    p256 = bytes.fromhex("06082a8648ce3d030107")
    unknown_curve = bytes.fromhex("0608008648ce3d030107")
    body = der(leaf).replace(p256, unknown_curve)
    path = write(tmp_path, "odd.pem", _pem_block("CERTIFICATE", body))
    with pytest.raises(ValueError, match="CERTIFICATE block does not load"):
        DtlsCredentials.from_files(trusted_rpk=[path])
    odd = x509.load_der_x509_certificate(body)
    with pytest.raises(ValueError, match="first certificate's key"):
        DtlsCredentials(certificate_chain=[odd], private_key=p256_key())


def test_a_certificate_of_an_unknown_version_is_a_value_error(tmp_path: Path, root: Issuer) -> None:
    """cryptography raises ``InvalidVersion`` (not a ``ValueError``) for a version
    other than v1 and v3: the file is refused with a ``ValueError`` all the same."""
    leaf, _ = root.issue("peer.example")
    version_3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    body = der(leaf)
    assert body.count(version_3) == 1
    path = write(
        tmp_path,
        "v6.pem",
        _pem_block("CERTIFICATE", body.replace(version_3, bytes.fromhex("a003020105"))),
    )
    with pytest.raises(ValueError, match="CERTIFICATE block does not load"):
        DtlsCredentials.from_files(trusted_rpk=[path])
