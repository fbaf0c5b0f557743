"""The DTLS engine against libcoap 4.3.1's OpenSSL and GnuTLS builds, over loopback UDP.

Engine level: a :class:`DtlsSession` drives a plain socket (``tests/dtls_interop.py``),
sending a CoAP GET as application data; no trio. Both directions: our client
against ``coap-server-openssl`` / ``coap-server-gnutls``, and
``coap-client-openssl`` / ``coap-client-gnutls`` against a test server made
of the engine. PSK (TLS_PSK_WITH_AES_128_CCM_8), X.509 certificates and raw
public keys (GnuTLS only: libcoap's OpenSSL build has no RPK) with
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8; refusals both ways (a wrong key, a
certificate of another CA), typed on our side. The tools come with Debian's libcoap3-bin,
which ``scripts/test`` installs: a missing one is an error, not a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dtls_helpers import IDENTITY, KEY, Pki, psk_client, rpk_credentials
from dtls_interop import (
    ENGINE_PAYLOAD,
    EngineServer,
    coaps_get,
    libcoap_server,
    run_libcoap_client,
)

from coap_trio.errors import DtlsAlertError, HandshakeError
from coap_trio.protocol.dtls import messages as m
from coap_trio.protocol.dtls.credentials import DtlsCredentials
from coap_trio.protocol.dtls.pki import rpk_fingerprint, spki_der
from coap_trio.protocol.dtls.session import (
    DtlsConfig,
    DtlsSession,
    Failed,
    HandshakeComplete,
    Role,
)

LIBCOAP_INDEX_PREFIX = b"This is a test server made with libcoap"
SERVERS = ["coap-server-openssl", "coap-server-gnutls"]
CLIENTS = ["coap-client-openssl", "coap-client-gnutls"]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def pem_files(pki: Pki, tmp_path: Path) -> Path:
    pki.server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    pki.server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    pki.client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    pki.client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    pki.ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


def _key_file(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return key


# PSK


@pytest.mark.parametrize("program", SERVERS)
def test_psk_client_against_libcoap_server(program: str) -> None:
    with libcoap_server(program, ["-k", KEY.decode(), "-h", "CoAP"]) as server:
        exchange = coaps_get(psk_client(), server.port)
    assert exchange.failure is None
    assert exchange.response is not None
    assert exchange.response.payload.startswith(LIBCOAP_INDEX_PREFIX)
    handshake = exchange.handshake
    assert handshake is not None
    assert handshake.cipher_suite == m.TLS_PSK_WITH_AES_128_CCM_8
    assert handshake.extended_master_secret  # both builds offer RFC 7627


@pytest.mark.parametrize("program", CLIENTS)
def test_libcoap_psk_client_against_engine_server(program: str) -> None:
    creds = DtlsCredentials(psk_table={IDENTITY: KEY}, psk_hint=b"CoAP")
    with EngineServer(creds) as server:
        result = run_libcoap_client(
            program,
            ["-u", IDENTITY.decode(), "-k", KEY.decode()],
            f"coaps://[::1]:{server.port}/hello",
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ENGINE_PAYLOAD
    done = [e for e in server.events if isinstance(e, HandshakeComplete)]
    assert [d.psk_identity for d in done] == [IDENTITY]
    assert [r.opt.uri_path for r in server.requests] == [("hello",)]


@pytest.mark.parametrize("program", CLIENTS)
def test_libcoap_client_with_a_wrong_psk_is_refused(program: str) -> None:
    creds = DtlsCredentials(psk_table={IDENTITY: KEY})
    with EngineServer(creds) as server:
        result = run_libcoap_client(
            program,
            ["-u", IDENTITY.decode(), "-k", "not the key"],
            f"coaps://[::1]:{server.port}/hello",
        )
    assert ENGINE_PAYLOAD not in result.stdout
    failures = [e.error for e in server.events if hasattr(e, "error")]
    assert failures
    assert all(isinstance(f, HandshakeError) and f.alert == 51 for f in failures)
    assert server.requests == []


def test_wrong_psk_against_libcoap_server_fails_typed() -> None:
    client = psk_client(config=DtlsConfig(handshake_timeout=4.0))
    with libcoap_server("coap-server-openssl", ["-k", "another key"]) as server:
        exchange = coaps_get(client, server.port, budget=8.0)
    assert exchange.response is None
    assert isinstance(exchange.failure, HandshakeError | DtlsAlertError)


# X.509 certificates


@pytest.mark.parametrize("program", SERVERS)
def test_certificate_client_against_libcoap_server(program: str, pki: Pki, pem_files: Path) -> None:
    args = ["-c", str(pem_files / "server.pem"), "-j", str(pem_files / "server.key")]
    args += ["-C", str(pem_files / "ca.pem")]
    client = DtlsSession(Role.CLIENT, pki.credentials(pki.client), server_name="::1")
    with libcoap_server(program, args) as server:
        exchange = coaps_get(client, server.port)
    assert exchange.failure is None
    assert exchange.response is not None
    assert exchange.response.payload.startswith(LIBCOAP_INDEX_PREFIX)
    handshake = exchange.handshake
    assert handshake is not None
    assert handshake.cipher_suite == m.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
    assert handshake.certificate_subject is not None


@pytest.mark.parametrize("program", SERVERS)
def test_client_refuses_libcoap_server_certificate_of_another_ca(
    program: str, pem_files: Path
) -> None:
    stranger = Pki()
    args = ["-c", str(pem_files / "server.pem"), "-j", str(pem_files / "server.key")]
    client = DtlsSession(
        Role.CLIENT, DtlsCredentials(trusted_cas=(stranger.ca_cert,)), server_name="::1"
    )
    with libcoap_server(program, args) as server:
        exchange = coaps_get(client, server.port)
    assert exchange.response is None
    assert isinstance(exchange.failure, HandshakeError)
    assert exchange.failure.alert == m.AlertDescription.UNKNOWN_CA


@pytest.mark.parametrize("program", CLIENTS)
def test_libcoap_certificate_client_against_engine_server(
    program: str, pki: Pki, pem_files: Path
) -> None:
    creds = pki.credentials(pki.server, require_client_auth=True)
    args = ["-c", str(pem_files / "client.pem"), "-j", str(pem_files / "client.key")]
    args += ["-C", str(pem_files / "ca.pem")]
    with EngineServer(creds) as server:
        result = run_libcoap_client(program, args, f"coaps://[::1]:{server.port}/hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ENGINE_PAYLOAD
    (done,) = [e for e in server.events if isinstance(e, HandshakeComplete)]
    assert done.cipher_suite == m.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
    assert done.certificate_subject is not None  # the client's certificate was checked


@pytest.mark.parametrize("program", CLIENTS)
def test_engine_server_refuses_a_libcoap_client_certificate_of_another_ca(
    program: str, pki: Pki, pem_files: Path
) -> None:
    stranger = Pki()
    stranger.client.cert_chain_pems[0].write_to_path(str(pem_files / "stranger.pem"))
    stranger.client.private_key_pem.write_to_path(str(pem_files / "stranger.key"))
    creds = pki.credentials(pki.server, require_client_auth=True)
    args = ["-c", str(pem_files / "stranger.pem"), "-j", str(pem_files / "stranger.key")]
    args += ["-C", str(pem_files / "ca.pem")]
    with EngineServer(creds) as server:
        result = run_libcoap_client(program, args, f"coaps://[::1]:{server.port}/hello")
    assert ENGINE_PAYLOAD not in result.stdout
    failures = [e.error for e in server.events if isinstance(e, Failed)]
    assert failures
    assert all(isinstance(f, HandshakeError) for f in failures)
    assert {f.alert for f in failures} == {m.AlertDescription.UNKNOWN_CA}  # type: ignore[union-attr]
    assert server.requests == []


@pytest.mark.parametrize("program", CLIENTS)
def test_a_libcoap_client_refuses_an_engine_certificate_of_another_ca(
    program: str, pki: Pki, pem_files: Path
) -> None:
    stranger = Pki()
    stranger.ca.cert_pem.write_to_path(str(pem_files / "stranger-ca.pem"))
    args = ["-c", str(pem_files / "client.pem"), "-j", str(pem_files / "client.key")]
    args += ["-C", str(pem_files / "stranger-ca.pem")]
    with EngineServer(pki.credentials(pki.server)) as server:
        result = run_libcoap_client(program, args, f"coaps://[::1]:{server.port}/hello")
    assert ENGINE_PAYLOAD not in result.stdout
    assert server.requests == []
    assert not [e for e in server.events if isinstance(e, HandshakeComplete)]
    # libcoap's fatal alert reaches the engine as a typed error.
    failures = [e.error for e in server.events if isinstance(e, Failed)]
    assert failures
    assert all(isinstance(f, DtlsAlertError) for f in failures)


# Raw public keys (RFC 7250): libcoap's GnuTLS build


def test_rpk_client_against_libcoap_gnutls_server(tmp_path: Path) -> None:
    server_key = _key_file(tmp_path / "server.pem")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = DtlsSession(Role.CLIENT, rpk_credentials(client_key, server_key))
    with libcoap_server("coap-server-gnutls", ["-M", str(tmp_path / "server.pem")]) as server:
        exchange = coaps_get(client, server.port)
    assert exchange.failure is None
    assert exchange.response is not None
    assert exchange.response.payload.startswith(LIBCOAP_INDEX_PREFIX)
    handshake = exchange.handshake
    assert handshake is not None
    assert handshake.rpk_fingerprint == rpk_fingerprint(spki_der(server_key.public_key()))


def test_rpk_client_refuses_an_untrusted_libcoap_key(tmp_path: Path) -> None:
    _key_file(tmp_path / "server.pem")
    mine = ec.generate_private_key(ec.SECP256R1())
    client = DtlsSession(Role.CLIENT, rpk_credentials(mine, mine))
    with libcoap_server("coap-server-gnutls", ["-M", str(tmp_path / "server.pem")]) as server:
        exchange = coaps_get(client, server.port)
    assert isinstance(exchange.failure, HandshakeError)
    assert exchange.failure.alert == m.AlertDescription.BAD_CERTIFICATE


def test_libcoap_gnutls_rpk_client_against_engine_server(tmp_path: Path) -> None:
    client_key = _key_file(tmp_path / "client.pem")
    server_key = ec.generate_private_key(ec.SECP256R1())
    creds = rpk_credentials(server_key, client_key, require_client_auth=True)
    with EngineServer(creds) as server:
        result = run_libcoap_client(
            "coap-client-gnutls",
            ["-M", str(tmp_path / "client.pem")],
            f"coaps://[::1]:{server.port}/hello",
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ENGINE_PAYLOAD
    (done,) = [e for e in server.events if isinstance(e, HandshakeComplete)]
    assert done.rpk_fingerprint == rpk_fingerprint(spki_der(client_key.public_key()))
