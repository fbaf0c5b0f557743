"""The README's main job: `python -m coap_trio demo` serves and queries CoAP on loopback."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_shows_real_exchanges() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coap_trio", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "server listening on coap://[::1]:" in out
    assert "payload: hello, CoAP" in out
    assert '</sensors/temp>;rt="temperature-c";ct=50' in out
    assert "CON 2.05 Content" in out  # the separate response
    assert "4.04 Not Found" in out
    assert "answered (RST)" in out
    # the block-wise transfer: six 1024-byte blocks, each reported, the body intact
    assert out.count("  block received: ") == 6
    assert "block received: 6144/6144 bytes" in out
    assert "6144 bytes, intact" in out
    # four responses of the observation: the registration, then three notifications
    values = [int(line.rsplit("=", 1)[1]) for line in out.splitlines() if " value=" in line]
    assert len(values) == 4
    assert values == sorted(values)
    assert len(set(values)) == 4
    assert "left the observation (deregistered)" in out


def test_codec_demo_round_trips() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coap_trio", "codec-demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ROUND TRIP MISMATCH" not in result.stderr
