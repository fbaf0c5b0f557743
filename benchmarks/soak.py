"""Soak runs: a server under overload for minutes, a client through 100,000 requests.

Run by hand (not collected by pytest; Linux: memory and descriptors are read
from ``/proc``)::

    python benchmarks/soak.py server                    # 10 minutes of overload
    python benchmarks/soak.py server --minutes 3
    python benchmarks/soak.py client                    # 100,000 requests from one Context
    python benchmarks/soak.py client --requests 20000 --server libcoap

``benchmarks/run.py --only soak`` runs a short form of both (1 minute, 20,000
requests).

**server**: ``python -m coap_trio serve plugtest --bind [::1]:0`` in a child
process (pinned to one CPU when there are two), driven for ``--minutes`` by

* the raw load generator of ``server.py`` (its own process, pinned to the
  other CPU): pre-encoded CON GETs of ``/test`` with ``--window`` requests in
  flight (default 256: 32 sockets x 8), every answer refilling its slot at
  once; it reports its counts every ``--interval`` seconds (default 10);
* the side loads of this script (``--side-load``, one more process, plain
  sockets): ``--malformed`` datagrams per second (default 1,000: short ones,
  versions 0/2/3, token lengths 9..15, reserved option nibbles, a payload
  marker with nothing after it, options running past the end, empty
  messages with a token, random bytes), ``--observations`` registrations per
  second (default 10) to ``/obs`` and ``/obs-non``, each from a fresh socket
  that is closed as soon as the 2.05 arrives (the server gets ICMP port
  unreachable at its next notification) or left silent for 30 s (CON
  notifications never acknowledged), and ``--uploads`` Block1 uploads per
  second (default 10): the first 1024-byte block of a POST to
  ``/large-create`` announcing 8 KiB, never followed by the second.

At each of the generator's reports the server's RSS (VmRSS), its open
descriptors (``/proc/PID/fd``) and CPU time are sampled: one row per
interval with the 2.05 and 5.03 answers per second, Resets, the generator's
timeouts (no answer within 1 s) and the server's CPU share. The verdict:
*plateau* when, over the last third of the samples, the RSS stays within
``--spread`` (default 10%) of its lowest value and grows by less than
``--growth`` (default 5%) from the first of them to the last, the
descriptors are the same in every sample, every interval answered
requests, and the server is still running at the end. Then, beside the
verdict, the memory targets: the RSS above idle at the plateau (at most
80 MB), and the bytes per deduplication entry at the store's bound
(``--dedup-entries``, default 200,000; at most 256), tracemalloc's and
the RSS growth's, each taken in a fresh process by ``dedup_memory.py``.

**client**: one ``open_context(client_endpoints=N)`` in this process (N
sized so that the operations never wait for a message ID: RFC 7252 allows
one endpoint 65,536 per remote per EXCHANGE_LIFETIME; ``--endpoints``),
with ``ctx.set_nstart(--nstart)`` (default 32: most requests are on the
wire when they are cancelled, some still queued), against a server in a
child process (``--server coap_trio``: ``serve plugtest --obs-period 0.2``;
``libcoap``: ``coap-server-notls``), ``--concurrency`` tasks (default 64)
sharing ``--requests`` operations (default 100,000), each drawn at random
(``--seed``): a plain GET; a GET cancelled after a random delay (a trio
cancel scope; half of them on a slow resource, after its empty ACK and
before its separate response); a block-wise GET of ``/large`` cancelled at a
random point (coap_trio server only); a CON GET to a black hole (a bound
socket that never answers) under a short ``trio.fail_after``; an
observation left after its first response, after its second, or cancelled
before its first. Before (after a warm-up of 2% of the operations, at least
200) and after (once the client has settled, at most ``--settle`` seconds),
the run takes stock, and once more when the deduplication entries are
back to their count at the start (at most ``--expire-wait`` seconds,
default 300): trio tasks (the tree under
``trio.lowlevel.current_root_task()``), open descriptors, the Context's
``requests_in_flight``, ``observations`` and the sizes of its tables
(outstanding, queued and pending requests, upload tags, Block1 assemblies,
cached representations, deduplication entries, remotes with message-ID
state), the memory traced by ``tracemalloc`` (``--no-tracemalloc`` to run
faster without it) and the RSS. The tables that expire by time are the
deduplication entries (a reply kept EXCHANGE_LIFETIME, 247 s, for a CON;
NON_LIFETIME, 145 s, for a NON) and the remotes with message-ID state.
The verdict: *back to the start* when tasks, descriptors, requests in
flight, observations and the request tables are exactly as before at both
moments and, if the deduplication entries (which hold a reply each) came
back in time, traced memory grew by less than ``--memory-bound`` (default
2 MiB) at the end; with them still held, memory is shown and not judged.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import selectors
import socket
import subprocess
import sys
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _peers
import dedup_memory
import server
from _peers import HOST

MIB = 1024 * 1024
#: Bytes per deduplication entry allowed at the store's bound (tracemalloc and RSS).
DEDUP_ENTRY_BOUND = 256
#: The RSS allowed above idle at the plateau under overload, in bytes (80 MB).
ABOVE_IDLE_BOUND = 80_000_000
#: Where the server soak's generator sends its GETs.
SERVER_PATH = "test"


def open_descriptors(pid: int) -> int:
    """How many file descriptors the process ``pid`` has open (from /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class LineReader:
    """Complete lines from a child's standard output, read without blocking past a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.pending = b""
        self.lines: deque[str] = deque()
        self.closed = False

    def next_line(self, timeout: float) -> str | None:
        """The next line; None at end of output or when ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not self.lines:
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable = selectors.DefaultSelector()
            with readable:
                readable.register(self.fd, selectors.EVENT_READ)
                if not readable.select(left):
                    return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                chunk = b"\n" if self.pending else b""
            self.pending += chunk
            *complete, self.pending = self.pending.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in complete if line)
        return self.lines.popleft()


# -- the server soak: side loads (a child process) ----------------------------------------


def malformed_datagram(rng: random.Random) -> bytes:
    """One datagram the UDP codec must reject (or, for random bytes, may happen to accept)."""
    kind = rng.randrange(8)
    mid = rng.randbytes(2)
    if kind == 0:  # shorter than the 4-byte header
        return rng.randbytes(rng.randrange(1, 4))
    if kind == 1:  # version 0, 2 or 3
        return bytes([rng.choice((0x00, 0x80, 0xC0)) | rng.randrange(16), 0x01]) + mid
    if kind == 2:  # token length 9..15 (reserved)
        return bytes([0x40 | rng.randrange(9, 16), 0x01]) + mid + rng.randbytes(8)
    if kind == 3:  # option delta nibble 15 without being a payload marker
        return b"\x40\x01" + mid + b"\xf3abc"
    if kind == 4:  # a payload marker followed by nothing
        return b"\x40\x01" + mid + b"\xff"
    if kind == 5:  # Uri-Path whose extended length runs past the end
        return b"\x40\x01" + mid + b"\xbd\x05abc"
    if kind == 6:  # an empty message with a token
        return b"\x41\x00" + mid + b"\x07"
    return bytes([0x40 | rng.randrange(16)]) + rng.randbytes(rng.randrange(3, 60))


@dataclass
class _Probe:
    """A socket of the side loads waiting for its first answer (or kept silent)."""

    kind: str  # "observe-close", "observe-silent", "upload"
    sock: socket.socket
    token: bytes
    deadline: float
    registered: bool = False


def _request(
    code: int, mid: int, token: bytes, path: tuple[str, ...], payload: bytes = b"", **options: Any
) -> bytes:
    from coap_trio import Message, codec
    from coap_trio.numbers.codes import Code
    from coap_trio.numbers.types import Type

    message = Message(
        code=Code(code),
        mtype=Type.CON,
        mid=mid,
        token=token,
        uri_path=path,
        payload=payload,
        **options,
    )
    return codec.encode(message)


def side_load(args: argparse.Namespace) -> dict[str, int]:
    """Malformed datagrams, abandoned observations and abandoned uploads for ``args.duration``."""
    from coap_trio.block import BlockValue

    rng = random.Random(args.seed)
    selector = selectors.DefaultSelector()
    counts: Counter[str] = Counter()
    target = (HOST, args.port)

    def fresh_socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.connect(target)
        sock.setblocking(False)
        return sock

    junk = [fresh_socket() for _ in range(4)]
    for sock in junk:
        selector.register(sock, selectors.EVENT_READ, None)
    probes: dict[socket.socket, _Probe] = {}
    silent: deque[tuple[float, socket.socket]] = deque()
    upload_body = b"u" * 1024

    def close_probe(probe: _Probe) -> None:
        selector.unregister(probe.sock)
        probe.sock.close()
        del probes[probe.sock]

    def start_probe(kind: str, data: bytes, now: float) -> None:
        sock = fresh_socket()
        try:
            sock.send(data)
        except OSError:
            counts[f"{kind}_send_errors"] += 1
            sock.close()
            return
        probe = _Probe(kind, sock, data[4:8], now + 5.0)  # every token is 4 bytes
        probes[sock] = probe
        selector.register(sock, selectors.EVENT_READ, probe)
        counts[f"{kind}_started"] += 1

    def on_reply(probe: _Probe, data: bytes, now: float) -> None:
        if probe.registered:  # a notification to an observer that keeps quiet
            counts["notifications_ignored"] += 1
            return
        if len(data) >= 4 and data[1] == 0 and (data[0] >> 4) & 3 == 2:
            counts["empty_acks"] += 1  # a separate response follows
            return
        if len(data) < 8 or data[0] & 0x0F != 4 or data[4:8] != probe.token:
            counts["unmatched"] += 1
            return
        code = f"{data[1] >> 5}.{data[1] & 31:02d}"
        if probe.kind == "upload":
            counts["uploads_continued" if code == "2.31" else f"upload_{code}"] += 1
            close_probe(probe)  # abandoned after the first block
        elif code != "2.05":
            counts[f"observe_{code}"] += 1
            close_probe(probe)
        elif probe.kind == "observe-close":
            counts["observations_registered"] += 1
            close_probe(probe)  # the next notification meets a closed port
        else:
            counts["observations_registered"] += 1
            probe.registered = True
            silent.append((now + args.silent_seconds, probe.sock))

    started = time.monotonic()
    end = started + args.duration
    sent = {"malformed": 0, "observe": 0, "upload": 0}
    rates = {"malformed": args.malformed, "observe": args.observations, "upload": args.uploads}
    next_id = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        elapsed = now - started
        for what, rate in rates.items():
            due = min(int(elapsed * rate) - sent[what], 200)  # no burst after a stall
            for _ in range(max(due, 0)):
                sent[what] += 1
                next_id += 1
                mid, token = next_id & 0xFFFF, next_id.to_bytes(4, "big")
                if what == "malformed":
                    try:
                        rng.choice(junk).send(malformed_datagram(rng))
                        counts["malformed_sent"] += 1
                    except OSError:
                        counts["malformed_send_errors"] += 1
                elif what == "observe":
                    path = ("obs",) if next_id % 4 < 2 else ("obs-non",)
                    kind = "observe-close" if next_id % 2 else "observe-silent"
                    start_probe(kind, _request(1, mid, token, path, observe=0), now)
                else:
                    block = BlockValue(0, True, 6)
                    data = _request(
                        2, mid, token, ("large-create",), upload_body, block1=block, size1=8192
                    )
                    start_probe("upload", data, now)
        for key, _ in selector.select(0.005):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            for _ in range(64):
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    counts["icmp_errors"] += 1
                    break
                if key.data is None:
                    reset = bool(data) and (data[0] >> 4) & 3 == 3
                    counts["malformed_answered_rst" if reset else "malformed_answered_other"] += 1
                else:
                    on_reply(key.data, data, now)
                if sock.fileno() < 0:
                    break
        for probe in [p for p in probes.values() if not p.registered and p.deadline < now]:
            counts[f"{probe.kind}_unanswered"] += 1
            close_probe(probe)
        while silent and silent[0][0] < now:
            _, sock = silent.popleft()
            if sock in probes:
                close_probe(probes[sock])
    for probe in list(probes.values()):
        close_probe(probe)
    for sock in junk:
        sock.close()
    return dict(counts)


# -- the server soak: orchestration --------------------------------------------------------


@dataclass
class Sample:
    """One interval of the server soak."""

    t: float
    rss: int
    fds: int
    ok: float  # 2.05 per second over the interval
    busy: float  # 5.03 per second
    resets: float
    timeouts: float
    other: float
    cpu_share: float


@dataclass
class ServerSoak:
    """What the server soak saw, and its verdict."""

    idle_rss: int
    idle_fds: int
    samples: list[Sample] = field(default_factory=list)
    side: dict[str, int] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)
    alive: bool = True
    problems: list[str] = field(default_factory=list)
    #: Bytes per deduplication entry at the store's bound, by method
    #: ("tracemalloc", "rss"), each after the fill and at the plateau.
    dedup: dict[str, dict[str, float]] = field(default_factory=dict)
    #: What the memory targets say (not part of the plateau verdict).
    targets: list[str] = field(default_factory=list)

    @property
    def plateau(self) -> bool:
        """The verdict: no problem found."""
        return not self.problems

    def last_third(self) -> list[Sample]:
        """The samples the plateau is judged on (at least two when there are two)."""
        count = max(2, len(self.samples) // 3)
        return self.samples[-count:]


def judge(soak: ServerSoak, spread: float, growth: float) -> None:
    """Fill ``soak.problems``: RSS spread and growth over the last third, descriptors, stalls."""
    if len(soak.samples) < 2:
        soak.problems.append(f"only {len(soak.samples)} sample(s)")
        return
    tail = [s.rss for s in soak.last_third()]
    seen_spread = max(tail) / min(tail) - 1
    if seen_spread > spread:
        soak.problems.append(f"RSS of the last third spread by {seen_spread:.1%} (> {spread:.0%})")
    seen_growth = tail[-1] / tail[0] - 1
    if seen_growth > growth:
        soak.problems.append(f"RSS grew by {seen_growth:.1%} over the last third (> {growth:.0%})")
    fds = sorted({s.fds for s in soak.samples})
    if len(fds) > 1:
        soak.problems.append(f"open descriptors changed: {fds}")
    stalled = [f"{s.t:.0f} s" for s in soak.samples if s.ok <= 0]
    if stalled:
        soak.problems.append(f"no 2.05 in the intervals ending at {', '.join(stalled)}")
    if not soak.alive:
        soak.problems.append("the server died")


def measure_dedup(entries: int) -> dict[str, dict[str, float]]:
    """Bytes per deduplication entry at a store's bound of ``entries``, each method
    in a fresh process (``dedup_memory.py``: tracemalloc, then RSS growth)."""
    parts = argparse.Namespace(entries=entries, remotes=5_000, operations=0)
    return {part: dedup_memory.run_part(part, parts) for part in ("tracemalloc", "rss")}


def judge_targets(soak: ServerSoak) -> None:
    """Fill ``soak.targets``: the RSS above idle at the plateau, bytes per dedup entry."""
    tail = soak.last_third()
    if tail:
        above = max(s.rss for s in tail) - soak.idle_rss
        verdict = "met" if above <= ABOVE_IDLE_BOUND else "NOT met"
        soak.targets.append(
            f"RSS above idle at the plateau {above / 1e6:.1f} MB (target <= "
            f"{ABOVE_IDLE_BOUND / 1e6:.0f} MB): {verdict}"
        )
    for method, figures in soak.dedup.items():
        worst = max(figures.values())
        verdict = "met" if worst <= DEDUP_ENTRY_BOUND else "NOT met"
        soak.targets.append(
            f"deduplication bytes per entry ({method}): fill {figures['fill']:.0f}, plateau "
            f"{figures['plateau']:.0f} (target <= {DEDUP_ENTRY_BOUND}): {verdict}"
        )


def run_server_soak(args: argparse.Namespace, log: Callable[[str], None] = print) -> ServerSoak:
    """Start the server, the generator and the side loads; sample every interval."""
    duration = args.minutes * 60.0
    server_cpu, load_cpu = _peers.cpu_plan()
    cpus = None if server_cpu is None else [server_cpu]
    site = ["plugtest"]
    peer = _peers.start_coap_trio_serve(site, 1, cpus, name="coap_trio plugtest")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        server.check_server(peer, SERVER_PATH)
        time.sleep(1.0)
        soak = ServerSoak(peer.rss(), open_descriptors(peer.process.pid))
        log(
            f"  server pid {peer.process.pid} on port {peer.port}: idle RSS "
            f"{soak.idle_rss / MIB:.1f} MiB, {soak.idle_fds} descriptors"
        )
        sockets = max(1, args.window // 8)
        argv = [sys.executable, server.__file__, "--generate", "--port", str(peer.port)]
        argv += ["--duration", str(duration), "--path", SERVER_PATH, "--sockets", str(sockets)]
        argv += ["--per-socket", str(args.window // sockets), "--timeout", "1.0"]
        argv += ["--report", str(args.interval)]
        if load_cpu is not None:
            argv += ["--cpu", str(load_cpu)]
        generator = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        processes.append(generator)
        side_argv = [sys.executable, __file__, "--side-load", "--port", str(peer.port)]
        side_argv += ["--duration", str(duration), "--malformed", str(args.malformed)]
        side_argv += ["--observations", str(args.observations), "--uploads", str(args.uploads)]
        side_argv += ["--seed", str(args.seed)]
        side = subprocess.Popen(side_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        processes.append(side)
        log(
            f"  {duration:g} s: window {sockets * (args.window // sockets)} ({sockets} sockets), "
            f"{args.malformed:g} malformed/s, {args.observations:g} abandoned observations/s, "
            f"{args.uploads:g} abandoned uploads/s; a sample every {args.interval:g} s"
        )
        log(f"  {_header()}")
        reader = LineReader(generator)
        previous: dict[str, Any] = {"t": 0.0, "ok": 0, "counts": {}, "other_codes": {}}
        cpu_before = peer.cpu_seconds()
        deadline = time.monotonic() + duration + 60
        while time.monotonic() < deadline:
            line = reader.next_line(max(deadline - time.monotonic(), 0))
            if line is None:
                break
            report = json.loads(line)
            if "elapsed" in report:  # the final result: the last interval, then stop
                soak.generator = report
                if report["elapsed"] - previous["t"] < args.interval / 2:
                    break  # just after the last report: nothing new to sample
                report = {**report, "t": report["elapsed"]}
            if not peer.alive():
                soak.alive = False
                break
            cpu = peer.cpu_seconds()
            sample = _sample(report, previous, peer, cpu - cpu_before)
            cpu_before, previous = cpu, report
            soak.samples.append(sample)
            log(f"  {_row(sample)}")
            if soak.generator:
                break
        side_out = side.communicate(timeout=120)[0]
        soak.side = json.loads(side_out) if side_out.strip() else {}
        soak.alive = soak.alive and peer.alive()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        peer.stop()
    judge(soak, args.spread, args.growth)
    if args.dedup_entries > 0:
        soak.dedup = measure_dedup(args.dedup_entries)
    judge_targets(soak)
    return soak


def _sample(
    report: dict[str, Any], previous: dict[str, Any], peer: _peers.Peer, cpu: float
) -> Sample:
    span = report["t"] - previous["t"]

    def rate(now: int, before: int) -> float:
        return (now - before) / span if span > 0 else 0.0

    counts, before = report["counts"], previous["counts"]
    codes, codes_before = report["other_codes"], previous["other_codes"]
    other_now = sum(v for k, v in codes.items() if k != "5.03")
    other_before = sum(v for k, v in codes_before.items() if k != "5.03")
    return Sample(
        t=report["t"],
        rss=peer.rss(),
        fds=open_descriptors(peer.process.pid),
        ok=rate(report["ok"], previous["ok"]),
        busy=rate(codes.get("5.03", 0), codes_before.get("5.03", 0)),
        resets=rate(counts.get("resets", 0), before.get("resets", 0)),
        timeouts=rate(counts.get("timeouts", 0), before.get("timeouts", 0)),
        other=rate(other_now, other_before),
        cpu_share=cpu / span if span > 0 else 0.0,
    )


def _header() -> str:
    return (
        f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'2.05/s':>8} {'5.03/s':>8} {'RST/s':>7} "
        f"{'timeouts/s':>10} {'other/s':>8} {'srv CPU':>7}"
    )


def _row(s: Sample) -> str:
    return (
        f"{s.t:6.0f} {s.rss / MIB:8.1f} {s.fds:5d} {s.ok:8.0f} {s.busy:8.0f} {s.resets:7.0f} "
        f"{s.timeouts:10.1f} {s.other:8.1f} {s.cpu_share:7.0%}"
    )


def report_server_soak(soak: ServerSoak, log: Callable[[str], None] = print) -> None:
    """The summary and the verdict (after the per-interval rows)."""
    tail = soak.last_third()
    if tail:
        rss = [s.rss / MIB for s in tail]
        ok = sum(s.ok for s in soak.samples) / len(soak.samples)
        busy = sum(s.busy for s in soak.samples) / len(soak.samples)
        log(
            f"  RSS idle {soak.idle_rss / MIB:.1f} MiB, last third {min(rss):.1f}..{max(rss):.1f} "
            f"MiB; descriptors idle {soak.idle_fds}, under load "
            f"{sorted({s.fds for s in soak.samples})}; mean 2.05/s {ok:,.0f}, 5.03/s {busy:,.0f}"
        )
    if soak.generator:
        log(f"  generator: {soak.generator['counts']} other codes {soak.generator['other_codes']}")
    log(f"  side loads: {soak.side}")
    for line in soak.targets:
        log(f"  {line}")
    verdict = "PLATEAU" if soak.plateau else "NO PLATEAU: " + "; ".join(soak.problems)
    log(f"  verdict: {verdict}")


# -- the client soak ----------------------------------------------------------------------------


def count_tasks() -> int:
    """Trio tasks alive now: the tree under the root task, the root included."""
    import trio

    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


@dataclass
class Stock:
    """The client's state at one moment: what must come back, and what expires by time."""

    tasks: int
    fds: int
    in_flight: int
    observations: int
    tables: dict[str, int]
    expiring: dict[str, int]
    traced: int
    rss: int


def take_stock(ctx: Any) -> Stock:
    """Tasks, descriptors, the Context's counters and tables, memory."""
    stats = ctx.statistics
    messaging = stats.messaging

    def total(name: str) -> int:
        return sum(getattr(m, name) for m in messaging)

    gc.collect()
    return Stock(
        tasks=count_tasks(),
        fds=open_descriptors(os.getpid()),
        in_flight=stats.requests_in_flight,
        observations=stats.observations,
        tables={
            "outstanding requests": total("outstanding_requests"),
            "queued requests": total("queued_requests"),
            "pending server requests": total("pending_server_requests"),
            "upload tags": stats.upload_tags_in_use,
            "Block1 assemblies": stats.blockwise_assemblies,
            "cached representations": stats.cached_representations,
        },
        expiring={
            "deduplication entries": total("dedup_entries"),
            "message-ID remotes": total("mid_remotes"),
        },
        traced=tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        rss=_self_rss(),
    )


def _self_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


#: The client soak's operations and their default shares.
OPERATIONS = {
    "get": 0.70,
    "cancelled": 0.10,
    "large-cancelled": 0.05,
    "timeout": 0.05,
    "observe": 0.10,
}


@dataclass
class ClientPaths:
    """Where each operation goes on the chosen server."""

    plain: str
    slow: str
    large: str | None
    observed: str


PATHS = {
    "coap_trio": ClientPaths("test", "separate", "large", "obs-non"),
    "libcoap": ClientPaths("", "async?t=1", None, "time"),
}


#: An operation that takes longer than this is counted as stalled (the slowest
#: normal one, an observation waiting for its notifications, gives up after 5 s).
STALL = 10.0


@dataclass
class Timing:
    """How long the operations took: the longest of each kind, and the stalled ones."""

    longest: dict[str, float] = field(default_factory=dict)
    stalled: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, seconds: float) -> None:
        """Count one operation of ``kind`` that took ``seconds``."""
        self.longest[kind] = max(self.longest.get(kind, 0.0), seconds)
        if seconds > STALL:
            self.stalled[kind] += 1


@dataclass
class ClientSoak:
    """What the client soak saw, and its verdict."""

    before: Stock
    #: Once the client settled after the last operation.
    settled: Stock
    #: Once the deduplication entries were back to ``before`` (or ``--expire-wait`` passed).
    after: Stock
    outcomes: Counter[str]
    seconds: float
    settled_in: float
    expired_in: float
    #: Where the traced memory still held at the end was allocated (the largest first).
    held_by: list[str] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    problems: list[str] = field(default_factory=list)


async def _operation(
    ctx: Any,
    kind: str,
    rng: random.Random,
    base: str,
    black_hole: str,
    paths: ClientPaths,
    outcomes: Counter[str],
) -> None:
    import trio

    from coap_trio.errors import CoapError

    try:
        if kind == "get":
            response = await ctx.get(base + paths.plain)
            outcomes[f"get {response.code.dotted}"] += 1
        elif kind == "cancelled":
            slow = rng.random() < 0.5
            with trio.move_on_after(rng.uniform(0.0, 0.05 if slow else 0.002)) as scope:
                await ctx.get(base + (paths.slow if slow else paths.plain))
            outcomes["cancelled" if scope.cancelled_caught else "cancelled too late"] += 1
        elif kind == "large-cancelled":
            assert paths.large is not None
            with trio.move_on_after(rng.uniform(0.0, 0.01)) as scope:
                await ctx.get(base + paths.large)
            outcomes["large cancelled" if scope.cancelled_caught else "large completed"] += 1
        elif kind == "timeout":
            try:
                with trio.fail_after(rng.uniform(0.01, 0.1)):
                    await ctx.get(black_hole)
                outcomes["black hole answered"] += 1
            except trio.TooSlowError:
                outcomes["timed out"] += 1
        else:
            how = rng.randrange(3)
            seen = 0
            with trio.move_on_after(rng.uniform(0.0, 0.005) if how == 2 else 5.0) as scope:
                async with ctx.observe(base + paths.observed) as notifications:
                    async for response in notifications:
                        seen += 1
                        if seen == 1 and response.opt.observe is None:
                            outcomes["observation refused (no Observe)"] += 1
                        if seen > how:
                            break
            if scope.cancelled_caught and how == 2:
                outcomes["observation cancelled"] += 1
            elif scope.cancelled_caught:  # waited 5 s for a notification
                outcomes[f"observation waiting after {seen} of {how + 1}"] += 1
            else:
                outcomes[f"observation left after {how + 1}"] += 1
    except CoapError as error:
        outcomes[f"{kind}: {type(error).__name__}"] += 1


async def _drive(
    ctx: Any,
    count: int,
    args: argparse.Namespace,
    rng: random.Random,
    base: str,
    black_hole: str,
    paths: ClientPaths,
    outcomes: Counter[str],
    deadline: float,
    timing: Timing | None = None,
) -> None:
    import trio

    kinds = list(OPERATIONS)
    weights = [OPERATIONS[k] if (k != "large-cancelled" or paths.large) else 0.0 for k in kinds]
    left = [count]

    async def worker() -> None:
        while left[0] > 0 and trio.current_time() < deadline:
            left[0] -= 1
            kind = rng.choices(kinds, weights)[0]
            started = trio.current_time()
            await _operation(ctx, kind, rng, base, black_hole, paths, outcomes)
            if timing is not None:
                timing.add(kind, trio.current_time() - started)

    async with trio.open_nursery() as nursery:
        for _ in range(args.concurrency):
            nursery.start_soon(worker)
    if left[0] > 0:
        outcomes["not run (time limit)"] += left[0]


async def _settle(ctx: Any, before: Stock | None, limit: float) -> float:
    """Wait (at most ``limit`` s) until no request is in flight and the task count has
    not changed for a second (and is back to ``before``'s); the seconds it took."""
    import trio

    started = trio.current_time()
    history: deque[int] = deque(maxlen=10)
    while trio.current_time() - started < limit:
        tasks = count_tasks()
        history.append(tasks)
        steady = len(history) == history.maxlen and len(set(history)) == 1
        back = before is None or (
            tasks <= before.tasks and ctx.statistics.requests_in_flight <= before.in_flight
        )
        if steady and back and ctx.statistics.requests_in_flight == 0:
            break
        await trio.sleep(0.1)
    return trio.current_time() - started


async def _expire(ctx: Any, before: Stock, limit: float) -> float:
    """Wait (at most ``limit`` s) until the deduplication entries are back to
    ``before``'s count; the seconds it took."""
    import trio

    started = trio.current_time()
    while trio.current_time() - started < limit:
        if _expired(take_stock(ctx), before):
            break
        await trio.sleep(5.0)
    return trio.current_time() - started


def _expired(stock: Stock, before: Stock) -> bool:
    # The deduplication entries hold the memory (a reply each); a remote's
    # message-ID state is a few counters, dropped lazily.
    name = "deduplication entries"
    return stock.expiring[name] <= before.expiring[name]


def run_client_soak(args: argparse.Namespace, log: Callable[[str], None] = print) -> ClientSoak:
    """Start the server, run the soak in this process, stop the server."""
    import trio

    from coap_trio import open_context

    if args.server == "libcoap":
        peer = _peers.start_libcoap_server()
    else:
        peer = _peers.start_coap_trio_serve(["plugtest", "--obs-period", "0.2"], 1)
    black_hole = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        black_hole.bind((HOST, 0))
        hole = f"coap://[{HOST}]:{black_hole.getsockname()[1]}/nothing"
        base = f"coap://[{HOST}]:{peer.port}/"
        paths = PATHS[args.server]
        rng = random.Random(args.seed)
        outcomes: Counter[str] = Counter()
        warmup = max(200, args.requests // 50)
        # RFC 7252 §4.4: 65,536 MIDs per endpoint and remote per EXCHANGE_LIFETIME;
        # a block-wise GET takes up to three, so a quarter more than the operations.
        endpoints = args.endpoints or math.ceil(1.25 * (args.requests + warmup) / 65_536)
        log(f"  client_endpoints={endpoints}, NSTART {args.nstart}")

        async def main() -> ClientSoak:
            async with open_context(client_endpoints=endpoints) as ctx:
                ctx.set_nstart(args.nstart)
                deadline = trio.current_time() + args.max_minutes * 60
                await _drive(ctx, warmup, args, rng, base, hole, paths, Counter(), deadline)
                await _settle(ctx, None, args.settle)
                if args.tracemalloc:
                    tracemalloc.start()
                before = take_stock(ctx)
                log(f"  warm-up of {warmup:,} operations done; {args.requests:,} to go")
                started = trio.current_time()
                timing = Timing()
                await _drive(
                    ctx, args.requests, args, rng, base, hole, paths, outcomes, deadline, timing
                )
                seconds = trio.current_time() - started
                settled_in = await _settle(ctx, before, args.settle)
                settled = take_stock(ctx)
                expired_in = await _expire(ctx, before, args.expire_wait)
                after = take_stock(ctx)
                held_by = []
                if tracemalloc.is_tracing():
                    snapshot = tracemalloc.take_snapshot()
                    for stat in snapshot.statistics("lineno")[:8]:
                        frame = stat.traceback[0]
                        where = f"{Path(frame.filename).name}:{frame.lineno}"
                        held_by.append(f"{where} {stat.size / 1024:,.0f} KiB in {stat.count:,}")
                tracemalloc.stop()
                return ClientSoak(
                    before,
                    settled,
                    after,
                    outcomes,
                    seconds,
                    settled_in,
                    expired_in,
                    held_by,
                    timing,
                )

        soak = trio.run(main)
    finally:
        black_hole.close()
        peer.stop()
    judge_client(soak, args.memory_bound * MIB)
    return soak


def memory_judged(soak: ClientSoak) -> bool:
    """Whether the deduplication entries were back at the end (else memory is not judged)."""
    return _expired(soak.after, soak.before)


def judge_client(soak: ClientSoak, memory_bound: float) -> None:
    """Fill ``soak.problems``: what is not back where it was (settled, and at the end)."""
    before = soak.before
    for when, stock in (("settled", soak.settled), ("end", soak.after)):
        for name in ("tasks", "fds", "in_flight", "observations"):
            if getattr(stock, name) != getattr(before, name):
                was, now = getattr(before, name), getattr(stock, name)
                soak.problems.append(f"{name} ({when}): {was} -> {now}")
        for name, value in stock.tables.items():
            if value != before.tables[name]:
                soak.problems.append(f"{name} ({when}): {before.tables[name]} -> {value}")
    grown = soak.after.traced - before.traced
    if memory_judged(soak) and grown > memory_bound:
        soak.problems.append(f"traced memory grew by {grown / MIB:.2f} MiB")
    not_run = soak.outcomes.get("not run (time limit)", 0)
    if not_run:
        soak.problems.append(f"{not_run} operations not run before the time limit")


def report_client_soak(soak: ClientSoak, log: Callable[[str], None] = print) -> None:
    """Before/after, the outcomes and the verdict."""
    done = sum(v for k, v in soak.outcomes.items() if k != "not run (time limit)")
    log(
        f"  {done:,} operations in {soak.seconds:.1f} s ({done / soak.seconds:,.0f}/s); "
        f"settled {soak.settled_in:.1f} s after the last; the deduplication entries "
        f"{'were back' if memory_judged(soak) else 'were NOT back'} "
        f"{soak.expired_in:.0f} s later"
    )
    stocks = (soak.before, soak.settled, soak.after)
    log(f"  {'':34} {'before':>10} {'settled':>10} {'end':>10}")
    rows: list[tuple[str, list[str]]] = [
        ("trio tasks", [str(s.tasks) for s in stocks]),
        ("open descriptors", [str(s.fds) for s in stocks]),
        ("requests in flight", [str(s.in_flight) for s in stocks]),
        ("observations", [str(s.observations) for s in stocks]),
    ]
    rows += [(name, [str(s.tables[name]) for s in stocks]) for name in soak.before.tables]
    rows += [
        (f"{name} (expire)", [str(s.expiring[name]) for s in stocks])
        for name in soak.before.expiring
    ]
    if soak.after.traced:
        memory = [f"{s.traced / 1024:,.0f}" for s in stocks]
        rows.append(("traced memory (since the start), KiB", memory))
    rows.append(("RSS, MiB", [f"{s.rss / MIB:.1f}" for s in stocks]))
    for name, values in rows:
        log(f"  {name:34} " + " ".join(f"{v:>10}" for v in values))
    log(f"  outcomes: {dict(sorted(soak.outcomes.items()))}")
    if soak.held_by:
        log(f"  traced memory held at the end, by line: {'; '.join(soak.held_by)}")
    longest = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(soak.timing.longest.items()))
    log(f"  longest operation by kind: {longest}")
    if soak.timing.stalled:
        log(f"  STALLED (over {STALL:g} s): {dict(sorted(soak.timing.stalled.items()))}")
    verdict = "BACK TO THE START" if not soak.problems else "NOT BACK: " + "; ".join(soak.problems)
    log(f"  verdict: {verdict}")


# -- command line -------------------------------------------------------------------------------


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The server soak's options (with their defaults: run.py's short form uses them too)."""
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--window", type=int, default=256, help="GETs in flight (default 256)")
    parser.add_argument("--malformed", type=float, default=1000.0, help="malformed datagrams/s")
    parser.add_argument("--observations", type=float, default=10.0, help="abandoned observations/s")
    parser.add_argument("--uploads", type=float, default=10.0, help="abandoned Block1 uploads/s")
    parser.add_argument("--spread", type=float, default=0.10, help="RSS spread allowed (0.10)")
    parser.add_argument("--growth", type=float, default=0.05, help="RSS growth allowed (0.05)")
    parser.add_argument("--silent-seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--dedup-entries",
        type=int,
        default=200_000,
        help="measure bytes per deduplication entry at this bound afterwards (0: not measured)",
    )


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The client soak's options."""
    parser.add_argument("--requests", type=int, default=100_000, help="operations (100,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="tasks (default 64)")
    parser.add_argument(
        "--endpoints", type=int, default=0, help="client_endpoints (default: enough MIDs)"
    )
    parser.add_argument("--nstart", type=int, default=32, help="NSTART (default 32)")
    parser.add_argument(
        "--expire-wait",
        type=float,
        default=300.0,
        help="seconds to wait for the expiring tables (default 300; 0: memory not judged)",
    )
    parser.add_argument("--server", choices=sorted(PATHS), default="coap_trio")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to settle at most")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="time limit (30)")
    parser.add_argument("--memory-bound", type=float, default=2.0, help="MiB of traced growth")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", choices=("server", "client", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1)
    add_server_options(parser)
    add_client_options(parser)
    parser.add_argument("--side-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side_load:
        json.dump(side_load(args), sys.stdout)
        return 0
    print(_peers.describe_machine(), flush=True)
    ok = True

    def log(line: str) -> None:
        print(line, flush=True)

    if args.which in ("server", "both"):
        log(f"server soak: coap-trio serve plugtest for {args.minutes:g} min")
        soak = run_server_soak(args, log)
        report_server_soak(soak, log)
        ok = ok and soak.plateau
    if args.which in ("client", "both"):
        log(f"client soak: {args.requests:,} operations from one Context ({args.server} server)")
        client_soak = run_client_soak(args, log)
        report_client_soak(client_soak, log)
        ok = ok and not client_soak.problems
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
