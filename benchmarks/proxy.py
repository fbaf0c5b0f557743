"""Proxied requests per second: coap_trio's forward proxy against libcoap's, same origin, same run.

Run by hand (not collected by pytest; needs libcoap3-bin; Linux)::

    python benchmarks/proxy.py              # 5 s per run, 3 runs per figure
    python benchmarks/proxy.py --quick      # 1 s per run, 1 run

One ``coap-server-notls`` is the origin. The proxies, each in its own
process pinned to one CPU (the origin shares it; the load generator gets
the other when there are two):

* coap_trio: ``python -m coap_trio serve proxy --bind [::1]:0 --allow
  coap://[::1] --upstream-endpoints 16`` (its cache on, default bounds; 16
  ports upstream, since RFC 7252 §4.4 lets one port send 65,536 messages to
  one destination per 247 s and a run sends more);
* libcoap: ``coap-server-notls -P ,proxy.invalid`` (a forward proxy
  connecting to the target itself; it keeps no cache).

The load generator (this script with ``--worker``, in its own process) sends
pre-encoded CON GETs carrying Proxy-Uri from 8 sockets, 8 in flight on each
(64 in all), each socket sending its next request when one is answered,
and counts the 2.05 responses during ``--duration`` seconds after a 1 s
warm-up. Modes:

* cache miss: every request names another URI (``coap://[::1]:PORT/?n=N``,
  N counting up), so each one goes to the origin;
* cache hit: every request names ``coap://[::1]:PORT/`` (Max-Age 0x2FFFF at
  libcoap), which coap_trio answers from its cache after the first one;
  libcoap's proxy forwards each one.

Runs are interleaved; each figure is the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import _peers

MODES = ("cache miss", "cache hit")
PROXIES = ("coap_trio", "libcoap")
WARMUP = 1.0
SOCKETS = 8
PER_SOCKET = 8
#: libcoap's forward proxy: with no next hop before the comma it connects to the
#: target itself; a name it is known by is needed, else it answers every request
#: as the final endpoint instead of forwarding.
LIBCOAP_PROXY = ["-P", ",proxy.invalid"]
#: coap_trio's proxy sends upstream from this many ports: RFC 7252 §4.4 allows one
#: port 65,536 message IDs per destination per 247 s, fewer than a run sends.
UPSTREAM_ENDPOINTS = 16
#: Seconds after which a request counts as lost and another is sent in its place.
LOST_AFTER = 2.0


def _option_header(delta: int, length: int) -> bytes:
    def nibble(value: int) -> tuple[int, bytes]:
        if value < 13:
            return value, b""
        if value < 269:
            return 13, bytes([value - 13])
        return 14, (value - 269).to_bytes(2, "big")

    d, dext = nibble(delta)
    n, lext = nibble(length)
    return bytes([(d << 4) | n]) + dext + lext


def encode_get(mid: int, token: bytes, proxy_uri: str) -> bytes:
    """A CON GET with a 4-byte token and one option, Proxy-Uri (35)."""
    uri = proxy_uri.encode()
    header = bytes([0x40 | len(token), 0x01]) + mid.to_bytes(2, "big") + token
    return header + _option_header(35, len(uri)) + uri


def run_generator(port: int, origin: int, mode: str, duration: float) -> dict[str, Any]:
    """The load (see the module docstring): counts of 2.05 and other answers."""
    sockets = []
    for _ in range(SOCKETS):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.connect((_peers.HOST, port))
        sock.setblocking(False)
        sockets.append(sock)
    counter = 0
    mids = [0] * SOCKETS
    pending: list[dict[bytes, float]] = [{} for _ in range(SOCKETS)]
    counts = {"ok": 0, "other": 0, "lost": 0}

    def send(index: int) -> None:
        nonlocal counter
        counter += 1
        mids[index] = (mids[index] + 1) & 0xFFFF
        token = counter.to_bytes(4, "big")
        if mode == "cache hit":
            uri = f"coap://[{_peers.HOST}]:{origin}/"
        else:
            uri = f"coap://[{_peers.HOST}]:{origin}/?n={counter}"
        sockets[index].send(encode_get(mids[index], token, uri))
        pending[index][token] = time.monotonic()

    for index in range(SOCKETS):
        for _ in range(PER_SOCKET):
            send(index)
    start = time.monotonic()
    counting_from = start + WARMUP
    end = counting_from + duration
    by_fd = {sock.fileno(): i for i, sock in enumerate(sockets)}
    poller = select.epoll()
    for sock in sockets:
        poller.register(sock.fileno(), select.EPOLLIN)
    last_sweep = start
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for fd, _ in poller.poll(0.05):
            index = by_fd[fd]
            sock = sockets[index]
            for _ in range(64):
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                if len(data) < 4:
                    continue
                mtype = (data[0] >> 4) & 3
                tkl = data[0] & 0x0F
                code = data[1]
                if mtype == 0:  # a separate CON response: acknowledge it
                    sock.send(bytes([0x60, 0x00]) + data[2:4])
                if code == 0:
                    continue  # an empty ACK: the response comes separately
                token = data[4 : 4 + tkl]
                if pending[index].pop(token, None) is None:
                    continue
                if time.monotonic() >= counting_from:
                    counts["ok" if code == 0x45 else "other"] += 1
                send(index)
        if now - last_sweep > 0.5:
            last_sweep = now
            for index in range(SOCKETS):
                for token, sent in list(pending[index].items()):
                    if now - sent > LOST_AFTER:
                        del pending[index][token]
                        counts["lost"] += 1
                        send(index)
    for sock in sockets:
        sock.close()
    return {**counts, "elapsed": duration}


def start_coap_trio_proxy(cpus: list[int] | None) -> _peers.Peer:
    """``coap-trio serve proxy`` on a free port of [::1], pinned to ``cpus``."""
    argv = [sys.executable, "-m", "coap_trio", "serve", "proxy", "--bind", f"[{_peers.HOST}]:0"]
    argv += ["--allow", f"coap://[{_peers.HOST}]", "--upstream-endpoints", str(UPSTREAM_ENDPOINTS)]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, set(cpus))) if cpus else None,
    )
    lines = _peers._read_lines(process, lambda lines: bool(lines))
    port = int(lines[0].rsplit(":", 1)[1])
    return _peers.Peer("coap_trio", process, port, "coap-trio serve proxy")


def measure_once(
    proxy: _peers.Peer, origin: int, mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One run in a fresh generator process (pinned to the load CPU)."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--port",
        str(proxy.port),
        "--origin",
        str(origin),
        "--mode",
        mode,
        "--duration",
        str(args.duration),
    ]
    if args.load_cpu is not None:
        command += ["--cpu", str(args.load_cpu)]
    cpu_before = proxy.cpu_seconds()
    output = subprocess.run(
        command, check=True, capture_output=True, timeout=args.duration + 60
    ).stdout
    result: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    result["rate"] = result["ok"] / result["elapsed"]
    result["proxy_cpu"] = proxy.cpu_seconds() - cpu_before
    return result


def measure_proxies(
    args: argparse.Namespace, log: Callable[[str], None] = print
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Start the origin and both proxies, run every (proxy, mode) ``args.runs`` times."""
    server_cpu, load_cpu = _peers.cpu_plan()
    args.load_cpu = load_cpu
    cpus = None if server_cpu is None else [server_cpu]
    peers: list[_peers.Peer] = []
    results: dict[tuple[str, str], list[dict[str, Any]]] = {
        (p, m): [] for p in PROXIES for m in MODES
    }
    try:
        origin = _peers.start_libcoap_server(cpus)
        peers.append(origin)
        proxies = {
            "coap_trio": start_coap_trio_proxy(cpus),
            "libcoap": _peers.start_libcoap_server(cpus, extra=LIBCOAP_PROXY, note="proxy"),
        }
        peers.extend(proxies.values())
        for run in range(args.runs):
            for mode in MODES:
                for name, proxy in proxies.items():
                    result = measure_once(proxy, origin.port, mode, args)
                    results[(name, mode)].append(result)
                    log(
                        f"  run {run + 1} {mode:<10} {name:<10} {result['rate']:>9,.0f} req/s "
                        f"({result['other']} other, {result['lost']} lost, "
                        f"proxy CPU {result['proxy_cpu']:.2f} s)"
                    )
    finally:
        for peer in peers:
            peer.stop()
    return results


def medians(results: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[tuple[str, str], float]:
    """The median rate of each (proxy, mode)."""
    return {key: statistics.median(r["rate"] for r in runs) for key, runs in results.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 s per run, 1 run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--origin", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _peers.pin_self(args.cpu)
        print(json.dumps(run_generator(args.port, args.origin, args.mode, args.duration)))
        return
    if args.quick:
        args.duration, args.runs = 1.0, 1
    print(_peers.describe_machine())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = measure_proxies(args)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rates = medians(results)
    for mode in MODES:
        ours, theirs = rates[("coap_trio", mode)], rates[("libcoap", mode)]
        ratio = ours / theirs if theirs else float("inf")
        print(
            f"{mode:<10} coap_trio {ours:>9,.0f} req/s   libcoap {theirs:>9,.0f} req/s   "
            f"{ratio:.2f}x libcoap's proxy (median of {args.runs})"
        )


if __name__ == "__main__":
    main()
