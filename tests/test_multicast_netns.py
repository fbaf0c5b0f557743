"""Multicast on a real (virtual) network, against libcoap: tests/multicast_lab.py runs
in a network namespace this test makes (``unshare -n``), with a bridge and one
namespace per group member; the host's interfaces are never used.

Checked: our ``ctx.multicast`` GET of ``/.well-known/core`` to 224.0.1.187 is
answered by two libcoap ``coap-server-notls -g`` processes and two coap_trio
servers, each responder seen once, from its own address; libcoap's
``coap-client-notls`` multicast discovery is answered by our servers; and
``coap-trio discover --multicast`` prints every member.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).with_name("multicast_lab.py")


@pytest.fixture(scope="module")
def lab() -> dict[str, object]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (unshare -n)")
    for tool in ("unshare", "nsenter", "ip", "coap-server-notls", "coap-client-notls"):
        assert shutil.which(tool), f"{tool} is missing"
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(LAB)],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=LAB.parent.parent,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_our_group_request_is_answered_by_libcoap_and_coap_trio_members(
    lab: dict[str, object],
) -> None:
    seen = lab["ours"]
    assert isinstance(seen, list)
    hosts = sorted(host for host, _, _ in seen)
    assert hosts == ["10.9.0.11", "10.9.0.12", "10.9.0.13", "10.9.0.14"]  # each once
    for host, code, payload in seen:
        assert code == "2.05 Content"
        if host in ("10.9.0.13", "10.9.0.14"):
            assert payload == "</hello>"
        else:
            assert "</time>" in payload  # libcoap's example server


def test_libcoap_multicast_discovery_is_answered_by_our_servers(lab: dict[str, object]) -> None:
    output = lab["libcoap_client"]
    assert isinstance(output, str)
    # coap-client -v 6 shows each message as "v:1 t:NON c:2.05 i:MID {token} [ options ] ::
    # 'payload'" (the payload printed again after it, without a line break).
    answers = re.findall(r"v:1 t:(\w+) c:2\.05 i:(\w+) \{01\} \[[^\]]*\] :: '([^']*)'", output)
    payloads = [payload for _, _, payload in answers]
    assert payloads.count("</hello>") == 2
    assert sum("General Info" in payload for payload in payloads) == 2
    assert len(answers) == 4
    assert {kind for kind, _, _ in answers} == {"NON"}


def test_coap_trio_discover_multicast_prints_each_member(lab: dict[str, object]) -> None:
    result = lab["our_cli"]
    assert isinstance(result, list)
    status, output = result
    assert status == 0
    headers = sorted(line for line in output.splitlines() if line.startswith("# "))
    assert headers == [f"# coap://10.9.0.{n} 2.05 Content" for n in (11, 12, 13, 14)]
    assert output.count("</hello>") == 2


def test_an_ipv6_link_local_group_is_answered_by_each_of_our_members_once(
    lab: dict[str, object],
) -> None:
    """ff02::fd on the bridge: our two members (one bound to the wildcard, whose
    unicast socket must not take the group's datagrams too) answer once each."""
    seen = lab["ours_ipv6"]
    assert isinstance(seen, list)
    assert sorted(payload for _, _, payload in seen) == ["10.9.0.13", "10.9.0.14"]
    assert len({host for host, _, _ in seen}) == 2
    assert all(host.startswith("fe80::") for host, _, _ in seen)
