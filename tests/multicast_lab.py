"""A multicast lab in network namespaces of its own, for tests/test_multicast_netns.py.

Run as root inside a fresh network namespace (``unshare -n python
tests/multicast_lab.py``): it makes a bridge ``br0`` (10.9.0.1, the client's
side), and for each member a namespace of its own (``unshare -n``), joined to
the bridge by a veth pair, with one address 10.9.0.1N and a multicast route.
Members: two libcoap ``coap-server-notls -g 224.0.1.187`` servers and two
coap_trio servers (``open_context(multicast_groups=...)``). Each member needs
a namespace of its own: a server that joins a group must listen on the
wildcard address, and two on one host would answer from the same address.
Nothing here touches the host's interfaces. Then, from the bridge side:

* a coap_trio ``ctx.multicast`` GET of ``/.well-known/core`` to the group;
* libcoap's ``coap-client-notls`` multicast discovery of the same;
* ``coap-trio discover --multicast`` of the group;

and it prints one JSON object with what each saw. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

GROUP = "224.0.1.187"
PORT = 5683
LIBCOAP_MEMBERS = ("10.9.0.11", "10.9.0.12")
OUR_MEMBERS = ("10.9.0.13", "10.9.0.14")
#: libcoap 4.3.1 waits up to 5 s (its Leisure) before answering a group request.
WINDOW = 6.5

SERVER = """
import sys, trio
from coap_trio import Message, Code, Resource, Site, open_context

class Hello(Resource):
    async def render_get(self, request):
        return Message(code=Code.CONTENT, payload=sys.argv[1].encode())

async def main():
    site = Site()
    site.add(("hello",), Hello())
    # The first member binds the wildcard: groups must not reach its unicast socket.
    host = "::" if sys.argv[2] == "wildcard" else sys.argv[1]
    async with open_context(
        bind=(host, 5683), site=site,
        multicast_groups=["224.0.1.187", ("ff02::fd", 5683, "eth0")], multicast_leisure=1.0,
    ):
        print("ready", flush=True)
        await trio.sleep(60)

trio.run(main)
"""


def run(*command: str) -> None:
    subprocess.run(command, check=True, timeout=10)


def add_member(number: int, address: str, children: list[subprocess.Popen[bytes]]) -> int:
    """A namespace joined to br0 with ``address``; returns the pid that holds it."""
    holder = subprocess.Popen(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            "sysctl -qw net.ipv6.conf.default.accept_dad=0; exec sleep 120",
        ],
        stdout=subprocess.DEVNULL,
    )
    children.append(holder)
    pid = holder.pid
    for _ in range(100):  # until the holder runs in its own namespace, DAD off
        if os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"):
            inside_dad = [
                "nsenter",
                "-t",
                str(pid),
                "-n",
                "sysctl",
                "-n",
                "net.ipv6.conf.default.accept_dad",
            ]
            if subprocess.run(inside_dad, capture_output=True, check=False).stdout.strip() == b"0":
                break
        time.sleep(0.01)
    run(
        "ip",
        "link",
        "add",
        f"vh{number}",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        str(pid),
    )
    run("ip", "link", "set", f"vh{number}", "master", "br0", "up")
    inside = ("nsenter", "-t", str(pid), "-n")
    run(*inside, "ip", "link", "set", "lo", "up")
    run(*inside, "ip", "link", "set", "eth0", "up")
    run(*inside, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    run(*inside, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")
    return pid


async def our_client(uri: str, window: float) -> list[list[str]]:
    from coap_trio import open_context

    seen = []
    async with (
        open_context() as ctx,
        ctx.multicast(uri, timeout=window) as responses,
    ):
        async for remote, response in responses:
            seen.append([remote.host, str(response.code), response.payload.decode()])
    return seen


def main() -> None:
    import trio

    run("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
    run("ip", "link", "set", "lo", "up")
    run("ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
    run("ip", "link", "set", "br0", "up")
    run("ip", "addr", "add", "10.9.0.1/24", "dev", "br0")
    run("ip", "route", "add", "224.0.0.0/4", "dev", "br0")
    children: list[subprocess.Popen[bytes]] = []
    try:
        members = [*LIBCOAP_MEMBERS, *OUR_MEMBERS]
        pids = [add_member(n, address, children) for n, address in enumerate(members)]
        for pid in pids[:2]:
            children.append(
                subprocess.Popen(
                    [
                        "nsenter",
                        "-t",
                        str(pid),
                        "-n",
                        "coap-server-notls",
                        "-A",
                        "0.0.0.0",
                        "-g",
                        GROUP,
                        "-v",
                        "0",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        ours = []
        for pid, address, kind in zip(pids[2:], OUR_MEMBERS, ("wildcard", "specific"), strict=True):
            server = subprocess.Popen(
                ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", SERVER, address, kind],
                stdout=subprocess.PIPE,
            )
            children.append(server)
            ours.append(server)
        for server in ours:  # each prints "ready" once it listens
            assert server.stdout is not None
            line = server.stdout.readline()
            if b"ready" not in line:
                raise RuntimeError("a coap_trio member did not start")
        time.sleep(0.3)  # libcoap's servers are up by now
        seen_by_ours = trio.run(our_client, f"coap://{GROUP}/.well-known/core", WINDOW)
        seen_over_ipv6 = trio.run(our_client, "coap://[ff02::fd%br0]/hello", 2.0)
        discovery = subprocess.run(
            [
                "coap-client-notls",
                "-N",
                "-m",
                "get",
                "-B",
                str(int(WINDOW)),
                "-v",
                "6",
                f"coap://{GROUP}/.well-known/core",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "coap_trio",
                "discover",
                "--multicast",
                "--wait",
                str(WINDOW),
                "--timeout",
                "30",
                f"coap://{GROUP}",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        print(
            json.dumps(
                {
                    "our_cli": [cli.returncode, cli.stdout.decode(errors="replace")],
                    "ours": seen_by_ours,
                    "ours_ipv6": seen_over_ipv6,
                    "libcoap_client": discovery.stdout.decode(errors="replace")
                    + discovery.stderr.decode(errors="replace"),
                }
            )
        )
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait(timeout=10)


if __name__ == "__main__":
    main()
