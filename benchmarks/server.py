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

Runs are interleaved (run 1 of every server, then run 2...) after one short
warm-up run per server; each figure is the median of ``--runs`` runs (default
3). The servers stay up for all runs, so coap_trio's and aiocoap's
deduplication stores (EXCHANGE_LIFETIME, 247 s) keep growing as a long-running
server's would. Shown per server: 2.05 per second, the generator's CPU time
during the measurement (user+system, in seconds and as a share of the
duration: near 100% means the generator, not the server, was the limit), the
server's (read from /proc: Linux only), 2.05 per CPU second of the server, and
the latency (median, 99th percentile, maximum) of the run nearest the median.
The target is coap_trio >= 5x aiocoap.

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
import importlib.metadata
import json
import os
import platform
import random
import re
import select
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

TARGET_RATIO = 5.0
HOST = "::1"
#: The path every server serves the payload at (libcoap's own resource name).
PATH = "example_data"
PAYLOAD = b"hello"
LIBCOAP_SERVER = "coap-server-notls"
SERVERS = ("coap_trio", "aiocoap", "libcoap")

_CLK_TCK = os.sysconf("SC_CLK_TCK")


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


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    note: str

    def cpu_seconds(self) -> float:
        """User+system CPU time the server process used so far (from /proc)."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _pin_args(cpu: int | None) -> list[str]:
    return [] if cpu is None else ["--cpu", str(cpu)]


def start_python_server(name: str, cpu: int | None) -> Server:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, *_pin_args(cpu)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,  # errors show on the terminal
    )
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], 30.0)
    line = process.stdout.readline().decode().strip() if readable else "(nothing in 30 s)"
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the {name} server did not start (said {line!r})")
    return Server(name, process, int(line.split()[1]), f"{name}: GET /{PATH}")


def start_libcoap_server(cpu: int | None) -> Server:
    binary = shutil.which(LIBCOAP_SERVER)
    if binary is None:
        raise RuntimeError(f"{LIBCOAP_SERVER} is not installed (Debian package libcoap3-bin)")
    for _ in range(5):
        port = _free_port()
        process = subprocess.Popen(
            [binary, "-A", HOST, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if cpu is not None:  # single-threaded: pinning its one thread pins it
            os.sched_setaffinity(process.pid, {cpu})
        server = Server(
            "libcoap",
            process,
            port,
            f"libcoap {LIBCOAP_SERVER}: GET /{PATH} (its own resource, after a PUT of {PAYLOAD!r})",
        )
        for _ in range(100):
            if process.poll() is not None:
                break
            if _exchange(port, _encode(0, 0x0101, b"", b"", empty=True)) is not None:
                return server
            time.sleep(0.02)
        server.stop()
    raise RuntimeError(f"{LIBCOAP_SERVER} did not start")


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


def _encode(code: int, mid: int, token: bytes, payload: bytes, *, empty: bool = False) -> bytes:
    """A CON request to ``/PATH`` (or an empty CON: a ping, with ``empty``)."""
    header = bytes([0x40 | len(token), code]) + mid.to_bytes(2, "big") + token
    if empty:
        return header
    data = header + _option(11, PATH.encode())  # Uri-Path
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


def check_server(server: Server) -> str:
    """Prepare (libcoap: PUT the payload) and check that GET answers 2.05 ``hello``."""
    if server.name == "libcoap":
        reply = _exchange(server.port, _encode(0x03, 0x0202, b"\x01", PAYLOAD))
        if reply is None or reply[1] not in (0x41, 0x44):  # 2.01 / 2.04
            raise RuntimeError(f"PUT to libcoap failed: {_describe(reply)}")
    reply = _exchange(server.port, _encode(0x01, 0x0303, b"\x02", b""))
    if reply is None or reply[1] != 0x45 or not reply.endswith(b"\xff" + PAYLOAD):
        raise RuntimeError(f"{server.name} answers GET /{PATH} with {_describe(reply)}")
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


def _open_source(serial: int, avoid: set[int], held: list[socket.socket]) -> _Source:
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
    path = _option(11, PATH.encode())
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
        source = _open_source(next(serials), avoid, held)
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
    rate: float
    result: dict[str, Any]
    server_cpu: float


def run_generator(
    server: Server, duration: float, args: argparse.Namespace, avoid: set[int]
) -> Run:
    argv = [
        sys.executable,
        __file__,
        "--generate",
        *_pin_args(args.generator_cpu),
        "--port",
        str(server.port),
        "--duration",
        str(duration),
        "--sockets",
        str(args.sockets),
        "--per-socket",
        str(args.per_socket),
        "--timeout",
        str(args.timeout),
        "--avoid",
        ",".join(map(str, sorted(avoid))),
    ]
    cpu_before = server.cpu_seconds()
    done = subprocess.run(argv, capture_output=True, check=False, timeout=duration + 60)
    server_cpu = server.cpu_seconds() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"the generator failed: {done.stderr.decode(errors='replace')}")
    result = json.loads(done.stdout)
    avoid.update(result["ports"])
    if server.process.poll() is not None:
        raise RuntimeError(f"the {server.name} server died during the run")
    return Run(result["ok"] / result["elapsed"], result, server_cpu)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _libcoap_version() -> str:
    binary = shutil.which("coap-client-notls")
    if binary is None:
        return "?"
    done = subprocess.run([binary, "-h"], capture_output=True, check=False, timeout=10)
    found = re.search(r" v(\d+\.\d+\.\d+)", (done.stdout + done.stderr).decode(errors="replace"))
    return found[1] if found else "?"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.2f}"


def orchestrate(args: argparse.Namespace) -> None:
    duration = args.duration
    warmup = args.warmup
    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; coap_trio {_version('coap-trio')}, aiocoap "
        f"{_version('aiocoap')}, trio {_version('trio')}, libcoap {_libcoap_version()}"
    )
    print(
        f"{duration:g} s per run, {args.runs} runs per server (median shown), {warmup:g} s "
        f"warm-up; {args.sockets} sockets x {args.per_socket} = "
        f"{args.sockets * args.per_socket} CON GETs in flight; timeout {args.timeout:g} s"
    )
    if args.server_cpu is None:
        print("not pinned to CPUs")
    else:
        print(f"servers pinned to CPU {args.server_cpu}, the generator to CPU {args.generator_cpu}")
    servers: list[Server] = []
    try:
        servers.append(start_python_server("coap_trio", args.server_cpu))
        servers.append(start_python_server("aiocoap", args.server_cpu))
        servers.append(start_libcoap_server(args.server_cpu))
        for server in servers:
            print(f"  {server.note} on port {server.port}: {check_server(server)}")
        avoid: set[int] = set()
        for server in servers:
            run_generator(server, warmup, args, avoid)
        runs: dict[str, list[Run]] = {s.name: [] for s in servers}
        for i in range(args.runs):
            for server in servers:
                run = run_generator(server, duration, args, avoid)
                runs[server.name].append(run)
                counts = run.result["counts"]
                print(
                    f"  run {i + 1} {server.name:9} {run.rate:9.0f} req/s  "
                    f"(generator CPU {run.result['cpu']:.2f} s, server CPU "
                    f"{run.server_cpu:.2f} s, timeouts {counts.get('timeouts', 0)})",
                    flush=True,
                )
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
    medians: dict[str, float] = {}
    efficiency: dict[str, float] = {}
    for name, server_runs in runs.items():
        rates = [r.rate for r in server_runs]
        median = statistics.median(rates)
        medians[name] = median
        efficiency[name] = statistics.median(
            r.result["ok"] / r.server_cpu if r.server_cpu > 0 else 0.0 for r in server_runs
        )
        mid = min(server_runs, key=lambda r: abs(r.rate - median))
        gen_cpu = statistics.median(r.result["cpu"] for r in server_runs)
        srv_cpu = statistics.median(r.server_cpu for r in server_runs)
        timeouts = sum(r.result["counts"].get("timeouts", 0) for r in server_runs)
        other: Counter[str] = Counter()
        for r in server_runs:
            other.update(r.result["other_codes"])
            for key in ("empty_acks", "resets", "unmatched", "late_or_duplicate", "send_failed"):
                if r.result["counts"].get(key):
                    other[key] += r.result["counts"][key]
        print(
            f"{name:10} {median:9.0f} {' / '.join(f'{x:.0f}' for x in rates):>26} "
            f"{gen_cpu:5.2f} s {gen_cpu / duration:4.0%} "
            f"{srv_cpu:5.2f} s {srv_cpu / duration:4.0%} {efficiency[name]:13.0f} "
            f"{_ms(mid.result['latency_median']):>7}/{_ms(mid.result['latency_p99'])}/"
            f"{_ms(mid.result['latency_max']):<7} "
            f"{timeouts:8} {dict(other) or '-'}"
        )
    print()

    def ratio(table: dict[str, float], other: str) -> float:
        return table["coap_trio"] / table[other] if table[other] else float("inf")

    by_rate = ratio(medians, "aiocoap")
    verdict = "meets" if by_rate >= TARGET_RATIO else "MISSES"
    print(f"coap_trio / aiocoap: {by_rate:.2f}x ({verdict} the {TARGET_RATIO:g}x target)")
    print(f"coap_trio / libcoap: {ratio(medians, 'libcoap'):.2f}x")
    print(
        f"per server CPU second: coap_trio / aiocoap {ratio(efficiency, 'aiocoap'):.2f}x, "
        f"coap_trio / libcoap {ratio(efficiency, 'libcoap'):.2f}x"
    )
    print(
        "gen CPU / server CPU: CPU seconds used during one measurement (median) and as a share\n"
        "of its duration (the generator near 100%: it, not the server, set the pace; the server\n"
        "well below 100%: it was not given a whole CPU). per srv CPU-s: 2.05 responses per CPU\n"
        "second of the server (median), less sensitive to other load on the machine. Latency:\n"
        "of the run nearest the median."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 0.2 s warm-up")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up run seconds")
    parser.add_argument("--sockets", type=int, default=8, help="source sockets (default 8)")
    parser.add_argument(
        "--per-socket", type=int, default=8, help="requests in flight per socket (default 8)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="seconds before a request counts as lost"
    )
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
    parser.add_argument("--avoid", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1.0, 0.2
    if args.cpu is not None:  # a child: pin this process before it starts any thread
        os.sched_setaffinity(0, {args.cpu})
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    cpus = sorted(os.sched_getaffinity(0))
    args.server_cpu, args.generator_cpu = (cpus[0], cpus[1]) if pin else (None, None)
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
