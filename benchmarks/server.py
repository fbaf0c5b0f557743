"""Server requests per second of coap_trio, aiocoap and libcoap under one raw UDP load generator.

Run by hand (not collected by pytest; needs libcoap3-bin and aiocoap)::

    python benchmarks/server.py               # 5 s per run, 3 runs per server (~1 min)
    python benchmarks/server.py --quick       # 1 s per run
    python benchmarks/server.py --duration 10

The servers, each a child process on ``::1`` (a free port), all serving the
same 5-byte payload ``hello`` at ``/example_data`` so that every server gets
byte-identical requests:

* coap_trio: ``open_context(bind=("::1", port), site=site)``, a :class:`Site`
  with one :class:`Resource` whose ``render_get`` answers ``hello``; defaults
  otherwise (64 handler tasks, 1024 queued requests);
* aiocoap: ``aiocoap.Context.create_server_context`` with an
  ``aiocoap.resource.Site`` and the same resource;
* libcoap (reference, C): ``coap-server-notls``'s own ``/example_data``,
  after one PUT of ``hello`` to it (it then answers 2.05 ``hello``, no options,
  like the other two; its initial 1500-byte content would be block-wise).

The load generator is this script again, in its own process (hidden option
``--generate``), with plain non-blocking sockets and ``selectors``: ``--sockets``
source sockets (default 8) with ``--per-socket`` requests in flight each
(default 8: 64 in flight in all). Every request is a pre-encoded CON GET with
its own message ID and its own 4-byte token (2 bytes naming the socket, 2 the
MID); each response that comes back frees its slot, refilled at once from the
same socket, for a fixed ``--duration``. Nothing is ever resent: a request
unanswered after ``--timeout`` seconds is counted as a timeout and its slot
refilled. Only 2.05 responses that match an outstanding request count; other
codes, empty ACKs (a separate response follows, which the generator ACKs),
RSTs, late and unmatched responses are counted apart and shown. A socket that
used all 65,536 MIDs is replaced by a fresh one (new port), so no MID is ever
reused towards a server: source ports used by earlier runs are avoided too.
With ``--report SECONDS`` (used by ``soak.py``) the generator also prints a
JSON line of its counts so far every SECONDS, before its final result.

Runs are interleaved (run 1 of every server, then run 2...) after one short
warm-up run per server; each figure is the median of ``--runs`` runs (default
3). The servers stay up for all runs, so coap_trio's and aiocoap's
deduplication stores (EXCHANGE_LIFETIME, 247 s) keep growing as a long-running
server's would. Shown per server: 2.05 per second, the generator's CPU time
during the measurement (user+system, in seconds and as a share of the
duration: near 100% means the generator, not the server, was the limit), the
server's (read from /proc: Linux only), 2.05 per CPU second of the server, and
the latency (median, 99th percentile, maximum) of the run nearest the median.
The targets: coap_trio >= 15x aiocoap and >= 50% of libcoap.

With two CPUs or more, the servers are pinned to one CPU and the generator to
another (``--no-pin`` to leave it to the scheduler, which tends to run a
server and the generator on one CPU, taking turns: then each gets about half).
The figures also depend on other load on the machine: compare the per
CPU-second column when the server's CPU share is well below 100%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _peers import (
    HOST,
    LIBCOAP_SERVER,
    Peer,
    cpu_plan,
    describe_machine,
    pin_self,
)
from _peers import start_libcoap_server as start_libcoap
from _peers import start_python_server as start_peer_server

#: The issue's targets: coap_trio >= 15x aiocoap, and >= 50% of libcoap.
TARGET_RATIO = 15.0
TARGET_OF_LIBCOAP = 0.5
#: The path every server serves the payload at (libcoap's own resource name).
PATH = "example_data"
PAYLOAD = b"hello"
SERVERS = ("coap_trio", "aiocoap", "libcoap")

# -- the servers (child processes) -------------------------------------------------------


def serve_coap_trio() -> None:
    import trio

    from coap_trio import Code, Message, open_context
    from coap_trio.resource import Resource, Site

    class Hello(Resource):
        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, payload=PAYLOAD)

    async def main() -> None:
        site = Site()
        site.add([PATH], Hello())
        async with open_context(bind=(HOST, 0), site=site) as ctx:
            print(f"PORT {ctx.addresses[0].port}", flush=True)
            await trio.sleep_forever()

    trio.run(main)


def serve_aiocoap() -> None:
    import aiocoap
    import aiocoap.resource

    class Hello(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=PAYLOAD)

    async def main() -> None:
        site = aiocoap.resource.Site()
        site.add_resource([PATH], Hello())
        context = await aiocoap.Context.create_server_context(
            site, bind=(HOST, 0), transports=["udp6"]
        )
        interface = context.request_interfaces[0].token_interface.message_interface
        port = interface.transport.get_extra_info("socket").getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_python_server(name: str, cpu: int | None) -> Peer:
    """The coap_trio or aiocoap server of this script, in a child process."""
    argv = [__file__, "--serve", name]
    return start_peer_server(argv, name, None if cpu is None else [cpu], f"{name}: GET /{PATH}")


def start_libcoap_server(cpu: int | None) -> Peer:
    """libcoap's ``coap-server-notls`` (its ``/example_data``: PUT the payload first)."""
    return start_libcoap(
        None if cpu is None else [cpu],
        note=f"libcoap {LIBCOAP_SERVER}: GET /{PATH} (its own, after a PUT of {PAYLOAD!r})",
    )


# -- hand-made CoAP (no library involved on the load side) -------------------------------


def _option(delta: int, value: bytes) -> bytes:
    """One option header + value, for deltas and lengths below 269."""

    def nibble(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        return 13, bytes([n - 13])

    d, dx = nibble(delta)
    n, nx = nibble(len(value))
    return bytes([d << 4 | n]) + dx + nx + value


def _encode(code: int, mid: int, token: bytes, payload: bytes, path: str = PATH) -> bytes:
    """A CON request to ``/path``."""
    header = bytes([0x40 | len(token), code]) + mid.to_bytes(2, "big") + token
    data = header + _option(11, path.encode())  # Uri-Path
    return data + (b"\xff" + payload if payload else b"")


def _exchange(port: int, request: bytes, timeout: float = 0.5) -> bytes | None:
    """Send ``request``; the reply with the same MID, or None."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        try:
            sock.send(request)
            for _ in range(16):
                reply = sock.recv(2048)
                if reply[2:4] == request[2:4]:
                    return reply
        except OSError:  # timeout, or ICMP port unreachable
            return None
    return None


def _describe(reply: bytes | None) -> str:
    if reply is None:
        return "no reply"
    code = reply[1]
    tkl = reply[0] & 0x0F
    rest = reply[4 + tkl :]
    payload = rest.split(b"\xff", 1)[1] if b"\xff" in rest else b""
    options = "no options" if rest.startswith(b"\xff") or not rest else "options"
    return (
        f"{code >> 5}.{code & 31:02d}, {len(reply)}-byte datagram, {options}, payload {payload!r}"
    )


def check_server(server: Peer, path: str = PATH) -> str:
    """Prepare (libcoap: PUT the payload) and check that GET answers 2.05 (``hello`` at PATH)."""
    if server.name == "libcoap":
        reply = _exchange(server.port, _encode(0x03, 0x0202, b"\x01", PAYLOAD))
        if reply is None or reply[1] not in (0x41, 0x44):  # 2.01 / 2.04
            raise RuntimeError(f"PUT to libcoap failed: {_describe(reply)}")
    reply = _exchange(server.port, _encode(0x01, 0x0303, b"\x02", b"", path))
    wrong_payload = path == PATH and reply is not None and not reply.endswith(b"\xff" + PAYLOAD)
    if reply is None or reply[1] != 0x45 or wrong_payload:
        raise RuntimeError(f"{server.name} answers GET /{path} with {_describe(reply)}")
    return _describe(reply)


# -- the load generator (child process) --------------------------------------------------


@dataclass
class _Source:
    """One source socket: its pre-encoded requests, in-flight table and successor."""

    sock: socket.socket
    serial: bytes
    table: list[bytes]
    next_index: int = 0
    inflight: dict[int, float] = field(default_factory=dict)  # MID -> sent at
    successor: _Source | None = None
    deficit: int = 0  # slots whose send failed (refilled at the next check)

    @property
    def exhausted(self) -> bool:
        return self.next_index >= len(self.table)


def _open_source(
    serial: int, avoid: set[int], held: list[socket.socket], path_text: str
) -> _Source:
    for _ in range(1000):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        if sock.getsockname()[1] not in avoid:
            break
        held.append(sock)  # keep it bound so the OS does not hand it out again
    else:
        raise RuntimeError("no unused source port")
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    serial_bytes = serial.to_bytes(2, "big")
    start = random.randrange(65536)
    path = _option(11, path_text.encode())
    table = []
    for i in range(65536):
        mid = ((start + i) & 0xFFFF).to_bytes(2, "big")
        table.append(b"\x44\x01" + mid + serial_bytes + mid + path)  # CON GET, TKL 4
    return _Source(sock, serial_bytes, table)


def generate(args: argparse.Namespace) -> dict[str, Any]:
    port, duration, timeout = args.port, args.duration, args.timeout
    avoid = {int(p) for p in args.avoid.split(",") if p} if args.avoid else set()
    held: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    serials = iter(range(1, 65536))
    sources: list[_Source] = []
    used_ports: list[int] = []
    counts: Counter[str] = Counter()
    other_codes: Counter[str] = Counter()
    latencies: list[float] = []

    def new_source() -> _Source:
        source = _open_source(next(serials), avoid, held, args.path)
        source.sock.connect((HOST, port))
        used_ports.append(source.sock.getsockname()[1])
        selector.register(source.sock, selectors.EVENT_READ, source)
        sources.append(source)
        return source

    def send_one(source: _Source) -> None:
        """Send the next request of ``source``'s chain (moving to a fresh socket when spent)."""
        while source.exhausted:
            if source.successor is None:
                source.successor = new_source()
            source = source.successor
        data = source.table[source.next_index]
        source.next_index += 1
        try:
            source.sock.send(data)
        except BlockingIOError:
            source.deficit += 1
            counts["send_failed"] += 1
            return
        except OSError:
            source.deficit += 1
            counts["send_errors"] += 1
            return
        counts["sent"] += 1
        source.inflight[int.from_bytes(data[2:4], "big")] = time.monotonic()

    first = [new_source() for _ in range(args.sockets)]
    clock = time.monotonic
    times_before = os.times()
    started = clock()
    end = started + duration
    for source in first:
        for _ in range(args.per_socket):
            send_one(source)
    next_check = started + 0.05
    report = getattr(args, "report", 0.0)
    next_report = started + report if report else float("inf")
    select = selector.select
    while True:
        now = clock()
        if now >= end:
            break
        for key, _ in select(min(end, next_check) - now):
            source = key.data
            sock = source.sock
            inflight = source.inflight
            for _ in range(64):
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                except OSError:  # ICMP: nobody listens
                    counts["icmp_errors"] += 1
                    break
                if len(data) < 4:
                    counts["junk"] += 1
                    continue
                first_byte, code = data[0], data[1]
                mtype = (first_byte >> 4) & 3
                if code == 0:
                    if mtype == 2:  # empty ACK: the separate response will follow
                        counts["empty_acks"] += 1
                    elif mtype == 3 and inflight.pop(int.from_bytes(data[2:4], "big"), None):
                        counts["resets"] += 1
                        send_one(source)
                    else:
                        counts["junk"] += 1
                    continue
                if mtype == 0:  # a separate response: acknowledge it
                    with contextlib.suppress(OSError):
                        sock.send(b"\x60\x00" + data[2:4])
                    counts["separate"] += 1
                if first_byte & 0x0F != 4 or data[4:6] != source.serial:
                    counts["unmatched"] += 1
                    continue
                sent_at = inflight.pop(int.from_bytes(data[6:8], "big"), None)
                if sent_at is None:
                    counts["late_or_duplicate"] += 1
                    continue
                if code == 0x45:
                    counts["ok"] += 1
                    latencies.append(clock() - sent_at)
                else:
                    other_codes[f"{code >> 5}.{code & 31:02d}"] += 1
                send_one(source)
        now = clock()
        if now >= next_check:
            next_check = now + 0.05
            cutoff = now - timeout
            for source in sources:
                for mid, sent_at in list(source.inflight.items()):
                    if sent_at < cutoff:
                        del source.inflight[mid]
                        counts["timeouts"] += 1
                        send_one(source)
                while source.deficit:
                    source.deficit -= 1
                    send_one(source)
            if now >= next_report:
                next_report += report
                progress = {"t": now - started, "ok": counts["ok"], "counts": dict(counts)}
                progress["other_codes"] = dict(other_codes)
                print(json.dumps(progress), flush=True)
    elapsed = clock() - started
    times_after = os.times()
    cpu = (times_after.user - times_before.user) + (times_after.system - times_before.system)
    in_flight = sum(len(s.inflight) for s in sources)
    for source in sources:
        source.sock.close()
    for sock in held:
        sock.close()
    latencies.sort()
    return {
        "ok": counts["ok"],
        "elapsed": elapsed,
        "cpu": cpu,
        "counts": dict(counts),
        "other_codes": dict(other_codes),
        "in_flight_at_end": in_flight,
        "sockets": len(sources),
        "ports": used_ports,
        "latency_median": latencies[len(latencies) // 2] if latencies else None,
        "latency_p99": latencies[int(len(latencies) * 0.99)] if latencies else None,
        "latency_max": latencies[-1] if latencies else None,
    }


# -- orchestration -------------------------------------------------------------------------


@dataclass
class Run:
    """One measurement of one server: 2.05/s, the generator's result, the server's CPU."""

    rate: float
    result: dict[str, Any]
    server_cpu: float
    duration: float

    @property
    def per_cpu_second(self) -> float:
        """2.05 responses per CPU second of the server."""
        return self.result["ok"] / self.server_cpu if self.server_cpu > 0 else 0.0

    @property
    def generator_bound(self) -> bool:
        """The generator used (nearly) a whole CPU: it, not the server, may have set the pace."""
        return bool(self.result["cpu"] >= 0.9 * self.duration)

    def discard_reason(self) -> str | None:
        """Why this run does not count (None: it counts)."""
        counts = self.result["counts"]
        failed = counts.get("send_failed", 0) + counts.get("send_errors", 0)
        if failed:
            return f"the generator could not keep every request in flight ({failed} sends failed)"
        if not self.result["ok"]:
            return "no 2.05 response"
        return None


def run_generator(
    server: Peer, duration: float, args: argparse.Namespace, avoid: set[int], path: str = PATH
) -> Run:
    """One run of the generator (a child process) against ``server``."""
    argv = [sys.executable, __file__, "--generate", "--port", str(server.port)]
    if args.generator_cpu is not None:
        argv += ["--cpu", str(args.generator_cpu)]
    argv += ["--duration", str(duration), "--path", path]
    argv += ["--sockets", str(args.sockets), "--per-socket", str(args.per_socket)]
    argv += ["--timeout", str(args.timeout), "--avoid", ",".join(map(str, sorted(avoid)))]
    cpu_before = server.cpu_seconds()
    done = subprocess.run(argv, capture_output=True, check=False, timeout=duration + 60)
    server_cpu = server.cpu_seconds() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"the generator failed: {done.stderr.decode(errors='replace')}")
    result = json.loads(done.stdout)
    avoid.update(result["ports"])
    if not server.alive():
        raise RuntimeError(f"the {server.name} server died during the run")
    return Run(result["ok"] / result["elapsed"], result, server_cpu, duration)


def measure_servers(
    servers: list[Peer],
    args: argparse.Namespace,
    path: str = PATH,
    log: Callable[[str], None] = print,
) -> dict[str, list[Run]]:
    """A warm-up run per server, then ``args.runs`` interleaved runs: the runs per server."""
    avoid: set[int] = set()
    for server in servers:
        run_generator(server, args.warmup, args, avoid, path)
    runs: dict[str, list[Run]] = {s.name: [] for s in servers}
    for i in range(args.runs):
        for server in servers:
            run = run_generator(server, args.duration, args, avoid, path)
            runs[server.name].append(run)
            counts = run.result["counts"]
            reason = run.discard_reason()
            log(
                f"  run {i + 1} {server.name:12} {run.rate:9.0f} 2.05/s  (generator CPU "
                f"{run.result['cpu']:.2f} s, server CPU {run.server_cpu:.2f} s, timeouts "
                f"{counts.get('timeouts', 0)}){'  DISCARDED: ' + reason if reason else ''}"
            )
    return runs


@dataclass
class Summary:
    """The median figures of one server's runs, and what was left out."""

    name: str
    rate: float
    per_cpu_second: float
    server_cpu: float
    generator_cpu: float
    generator_bound: bool
    rates: list[float]
    discarded: list[str]
    timeouts: int
    other: dict[str, int]
    latency: str


def summarize(name: str, runs: list[Run]) -> Summary:
    """Medians over the runs that count (all runs, flagged, when none counts)."""
    kept = [r for r in runs if r.discard_reason() is None]
    discarded = [f"run {i + 1}: {r.discard_reason()}" for i, r in enumerate(runs) if r not in kept]
    if not kept:
        kept = runs
        discarded.append("every run was discarded: the medians use them all anyway")
    median = statistics.median(r.rate for r in kept)
    mid = min(kept, key=lambda r: abs(r.rate - median))
    other: Counter[str] = Counter()
    for r in kept:
        other.update(r.result["other_codes"])
        for key in ("empty_acks", "resets", "unmatched", "late_or_duplicate"):
            if r.result["counts"].get(key):
                other[key] += r.result["counts"][key]
    return Summary(
        name=name,
        rate=median,
        per_cpu_second=statistics.median(r.per_cpu_second for r in kept),
        server_cpu=statistics.median(r.server_cpu for r in kept),
        generator_cpu=statistics.median(r.result["cpu"] for r in kept),
        generator_bound=sum(r.generator_bound for r in kept) * 2 > len(kept),
        rates=[r.rate for r in runs],
        discarded=discarded,
        timeouts=sum(r.result["counts"].get("timeouts", 0) for r in kept),
        other=dict(other),
        latency=(
            f"{_ms(mid.result['latency_median'])}/{_ms(mid.result['latency_p99'])}/"
            f"{_ms(mid.result['latency_max'])}"
        ),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.2f}"


def orchestrate(args: argparse.Namespace) -> None:
    duration = args.duration
    print(describe_machine())
    print(
        f"{duration:g} s per run, {args.runs} runs per server (median shown), {args.warmup:g} s "
        f"warm-up; {args.sockets} sockets x {args.per_socket} = "
        f"{args.sockets * args.per_socket} CON GETs in flight; timeout {args.timeout:g} s"
    )
    if args.server_cpu is None:
        print("not pinned to CPUs")
    else:
        print(f"servers pinned to CPU {args.server_cpu}, the generator to CPU {args.generator_cpu}")
    servers: list[Peer] = []
    try:
        servers.append(start_python_server("coap_trio", args.server_cpu))
        servers.append(start_python_server("aiocoap", args.server_cpu))
        servers.append(start_libcoap_server(args.server_cpu))
        for server in servers:
            print(f"  {server.note} on port {server.port}: {check_server(server)}")
        runs = measure_servers(servers, args)
    finally:
        for server in servers:
            server.stop()

    print()
    header = (
        f"{'server':10} {'2.05/s':>9} {'runs (2.05/s)':>26} {'gen CPU':>13} "
        f"{'server CPU':>13} {'per srv CPU-s':>13} {'latency ms p50/p99/max':>23} "
        f"{'timeouts':>8} other"
    )
    print(header)
    print("-" * len(header))
    summaries = {name: summarize(name, server_runs) for name, server_runs in runs.items()}
    for name, row in summaries.items():
        print(
            f"{name:10} {row.rate:9.0f} {' / '.join(f'{x:.0f}' for x in row.rates):>26} "
            f"{row.generator_cpu:5.2f} s {row.generator_cpu / duration:4.0%} "
            f"{row.server_cpu:5.2f} s {row.server_cpu / duration:4.0%} "
            f"{row.per_cpu_second:13.0f} {row.latency:>23} {row.timeouts:8} {row.other or '-'}"
        )
        for note in row.discarded:
            print(f"  {name}: {note}")
    print()

    def ratio(field: str, other: str) -> float:
        ours = getattr(summaries["coap_trio"], field)
        theirs = getattr(summaries[other], field)
        return float(ours / theirs) if theirs else float("inf")

    by_rate = ratio("rate", "aiocoap")
    verdict = "met" if by_rate >= TARGET_RATIO else "NOT met"
    print(f"coap_trio / aiocoap: {by_rate:.2f}x (target >= {TARGET_RATIO:g}x: {verdict})")
    of_libcoap = ratio("rate", "libcoap")
    verdict = "met" if of_libcoap >= TARGET_OF_LIBCOAP else "NOT met"
    print(f"coap_trio / libcoap: {of_libcoap:.2f}x (target >= {TARGET_OF_LIBCOAP:g}x: {verdict})")
    print(
        f"per server CPU second: coap_trio / aiocoap {ratio('per_cpu_second', 'aiocoap'):.2f}x, "
        f"coap_trio / libcoap {ratio('per_cpu_second', 'libcoap'):.2f}x"
    )
    print(
        "gen CPU / server CPU: CPU seconds used during one measurement (median) and as a share\n"
        "of its duration (the generator near 100%: it, not the server, set the pace; the server\n"
        "well below 100%: it was not given a whole CPU). per srv CPU-s: 2.05 responses per CPU\n"
        "second of the server (median), less sensitive to other load on the machine. Latency:\n"
        "of the run nearest the median."
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    """The generator's options (shared with run.py)."""
    parser.add_argument("--sockets", type=int, default=8, help="source sockets (default 8)")
    parser.add_argument(
        "--per-socket", type=int, default=8, help="requests in flight per socket (default 8)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="seconds before a request counts as lost"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 0.2 s warm-up")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up run seconds")
    add_options(parser)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the servers to CPU 0 and the generator to CPU 1 (done by default "
        "with 2+ CPUs: otherwise the scheduler tends to run both on one CPU, taking turns)",
    )
    parser.add_argument("--serve", choices=("coap_trio", "aiocoap"), help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=PATH, help=argparse.SUPPRESS)
    parser.add_argument("--avoid", default="", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1.0, 0.2
    pin_self(args.cpu)  # a child: pin this process before it starts any thread
    args.server_cpu, args.generator_cpu = (None, None) if args.no_pin else cpu_plan()
    if args.serve == "coap_trio":
        serve_coap_trio()
    elif args.serve == "aiocoap":
        serve_aiocoap()
    elif args.generate:
        json.dump(generate(args), sys.stdout)
    else:
        orchestrate(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
