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
