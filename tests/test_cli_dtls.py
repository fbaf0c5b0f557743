"""``coap-trio`` over DTLS: the credentials flags of the client verbs and ``serve --dtls-bind``.

Real processes on ``::1`` (ports the OS picked): ``coap-trio serve plugtest``
and ``serve fileserver`` with ``--dtls-bind``, queried by ``coap-trio`` and
by libcoap's ``coap-client-openssl``; ``coap-trio get`` against libcoap's
``coap-server-gnutls``; a wrong key, an unauthenticated client and bad flags
ending as one line and the exit status that says so.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio
from dtls_helpers import Pki
from dtls_interop import libcoap_server
from test_cli import coap_trio_all, one_line

from coap_trio.cli import main
from coap_trio.cli.exitcodes import ExitStatus
from coap_trio.plugtest import large_text

TEST_TIMEOUT = 60.0
URI = "coaps://[::1]:5684/x"
SERVE = ["serve", "plugtest", "--bind", "[::1]:0"]
PROCESS_TIMEOUT = 20.0
PSK = ["--psk-identity", "Client_identity", "--psk", "secretPSK"]


@contextlib.asynccontextmanager
async def serving(args: Sequence[str]) -> AsyncIterator[tuple[dict[str, str], list[int]]]:
    """Run ``coap-trio serve ARGS`` bound to ``[::1]:0`` over UDP and DTLS; yields the base
    URI of each scheme and, after the block, its exit status (stopped with SIGTERM)."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "coap_trio",
            "serve",
            *args,
            "--bind",
            "[::1]:0",
            "--dtls-bind",
            "[::1]:0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    statuses: list[int] = []
    try:
        assert process.stdout is not None
        printed = b""
        with trio.fail_after(PROCESS_TIMEOUT):
            while printed.count(b"\n") < 2:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, "serve exited before printing its addresses"
                printed += chunk
        bases = {}
        for line in printed.decode().splitlines()[:2]:
            match = re.fullmatch(r"listening on ((coaps?)://\[::1\]:\d+)", line)
            assert match is not None, line
            bases[match.group(2)] = match.group(1)
        yield bases, statuses
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(PROCESS_TIMEOUT):
            statuses.append(await process.wait())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_plugtest_over_dtls_with_a_psk() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(["plugtest", "--obs-period", "0.1", *PSK]) as (bases, statuses):
            coaps = bases["coaps"]
            test, large, observed, wrong, plain = await coap_trio_all(
                ("get", f"{coaps}/test", *PSK),
                ("get", f"{coaps}/large", *PSK),
                ("observe", f"{coaps}/obs", "--count", "3", *PSK),
                ("get", f"{coaps}/test", "--psk-identity", "Client_identity", "--psk", "wrong"),
                ("get", f"{bases['coap']}/test"),
            )
            assert test.returncode == 0, test.stderr
            # The same site over UDP and DTLS: /test describes the request it got.
            assert test.stdout.split(b"\n")[0] == plain.stdout.split(b"\n")[0] == b"Type: CON"
            assert large.stdout == large_text()  # block-wise over DTLS
            assert observed.returncode == 0, observed.stderr
            assert len(observed.stdout.splitlines()) == 3
            assert wrong.returncode == ExitStatus.NETWORK_ERROR
            assert "fatal DTLS alert: decrypt_error" in one_line(wrong.stderr)
            # libcoap's client, with the same key.
            binary = shutil.which("coap-client-openssl")
            assert binary is not None, "coap-client-openssl is not installed (libcoap3-bin)"
            with trio.fail_after(PROCESS_TIMEOUT):
                theirs = await trio.run_process(
                    [
                        binary,
                        "-B",
                        "10",
                        "-u",
                        "Client_identity",
                        "-k",
                        "secretPSK",
                        f"{coaps}/test",
                    ],
                    stdin=subprocess.DEVNULL,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert theirs.returncode == 0, theirs.stderr
            assert theirs.stdout.startswith(b"Type: CON")
    assert statuses == [0]


def write_pki(pki: Pki, directory: Path) -> dict[str, str]:
    files = {
        "server.pem": pki.server.cert_chain_pems[0],
        "server.key": pki.server.private_key_pem,
        "client.pem": pki.client.cert_chain_pems[0],
        "client.key": pki.client.private_key_pem,
        "ca.pem": pki.ca.cert_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(directory / name))
    return {name: str(directory / name) for name in files}


async def test_serve_fileserver_over_dtls_with_certificates(tmp_path: Path) -> None:
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "hello.txt").write_bytes(b"hello over DTLS\n")
    files = write_pki(Pki(), tmp_path)
    server = ["--cert", files["server.pem"], "--key", files["server.key"]]
    server += ["--cacert", files["ca.pem"]]  # clients must present a certificate of the CA
    client = ["--cert", files["client.pem"], "--key", files["client.key"]]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(["fileserver", str(tmp_path / "served"), *server]) as (bases, statuses):
            uri = f"{bases['coaps']}/hello.txt"
            authenticated, anonymous, insecure = await coap_trio_all(
                ("get", uri, *client, "--cacert", files["ca.pem"]),
                ("get", uri, "--cacert", files["ca.pem"]),  # no client certificate
                ("get", uri, *client, "--insecure"),  # the server's certificate unchecked
            )
            assert authenticated.returncode == 0, authenticated.stderr
            assert authenticated.stdout == b"hello over DTLS\n"
            assert anonymous.returncode == ExitStatus.NETWORK_ERROR
            assert "fatal DTLS alert: handshake_failure" in one_line(anonymous.stderr)
            assert insecure.returncode == 0, insecure.stderr
            assert insecure.stdout == b"hello over DTLS\n"
    assert statuses == [0]


async def test_get_from_libcoap_with_a_raw_public_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    for name in ("server.pem", "client.pem"):
        key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / name).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    rpk = ["--rpk", str(tmp_path / "client.pem"), "--trust-rpk", str(tmp_path / "server.pem")]
    stranger = ["--rpk", str(tmp_path / "client.pem"), "--trust-rpk", str(tmp_path / "client.pem")]
    arguments = ["-M", str(tmp_path / "server.pem")]
    with trio.fail_after(TEST_TIMEOUT), libcoap_server("coap-server-gnutls", arguments) as peer:
        uri = f"coaps://[::1]:{peer.port}/"
        trusted, untrusted = await coap_trio_all(("get", uri, *rpk), ("get", uri, *stranger))
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith(b"This is a test server made with libcoap")
    assert untrusted.returncode == ExitStatus.NETWORK_ERROR
    assert "raw public key" in one_line(untrusted.stderr)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["get", URI, "--psk", "secret"], "--psk and --psk-file need --psk-identity"),
        (["get", URI, "--cert", "{garbage}"], "CERTIFICATE block does not load"),
        (["get", URI, "--cacert", "{missing}"], "missing.pem"),
        (["get", URI, "--psk", "a", "--psk-file", "{garbage}"], "not allowed with argument"),
        ([*SERVE, "--dtls-bind", "[::1]:0"], "--dtls-bind needs server credentials"),
        ([*SERVE, *PSK], "the DTLS options serve coaps:// on --dtls-bind"),
        ([*SERVE, "--dtls-bind", "[::1]:0", "--rpk", "{garbage}"], "block does not load"),
        ([*SERVE, "--dtls-bind", "[::1]:0", *PSK, "--workers", "2"], "from one process"),
    ],
)
def test_dtls_usage_errors(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    argv = [arg.format(garbage=garbage, missing=tmp_path / "missing.pem") for arg in args]
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own usage errors
        status = int(exit.code or 0)
    assert status == ExitStatus.USAGE
    assert expected in capsys.readouterr().err
