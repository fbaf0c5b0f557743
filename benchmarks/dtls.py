"""coaps:// (DTLS 1.2, PSK): memory per session, handshakes per second, requests/s over one session.

Run by hand (not collected by pytest; needs libcoap3-bin's OpenSSL tools; Linux)::

    python benchmarks/dtls.py               # 2,000 sessions, 5 s runs, 3 runs per figure
    python benchmarks/dtls.py --quick       # 300 sessions, 1 s runs, 1 run

Three measurements, every server in a child process on ``::1`` (ports the
OS picked), pinned to one CPU and the load side to another when there are
two; the load average is printed before and after:

* **memory per session**: a coap_trio server (``open_context(dtls_bind=...,
  dtls=...)``, this script again with ``--serve``) and ``coap-server-openssl
  -k KEY``; this process establishes ``--sessions`` PSK sessions with each
  (the engine's client session, one UDP socket per session, kept open, a
  cookie exchange each) after 50 to warm up, and reads the server's RSS
  before and after: bytes per established session. Then the coap_trio
  server is told to leave its ``open_context`` (SIGUSR1) with those
  sessions established: the time that took (close_notify to every peer)
  and how many of this process's sockets received a close_notify.
* **handshakes per second**: the same two servers under the same
  generator: this process keeps 16 PSK handshakes in flight, each from a
  new socket, closed once it completed (nothing else is sent), for
  ``--duration`` seconds; completed handshakes per second, and the
  generator's own CPU (it is Python: against libcoap it may be the limit,
  and is then listed under the figures).
* **requests per second over one session**: coap_trio's client (a worker
  process: ``open_context(dtls=...)``, NSTART 64, 64 tasks each sending
  ``GET /`` when its previous one was answered) over ``coaps://`` and over
  plain ``coap://`` to the same ``coap-server-openssl`` (its DTLS port is its
  UDP port + 1), the two back to back in each run; and coap_trio's server
  (one Context serving a 5-byte resource over UDP and DTLS) under the same
  client, likewise. The ratio of each pair is the figure (target >= 50%);
  the median over runs is reported. Runs are kept under 65,536 requests
  (the message IDs one endpoint may use towards one peer in 247 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _peers

#: The target of requests/s over one DTLS session, relative to plain UDP in the same run.
TARGET_SHARE = 0.5
#: The target of bytes per established session (python-mbedtls: ~46 KB, the issue's figure).
TARGET_SESSION_BYTES = 8 * 1024
IDENTITY, KEY = b"Client_identity", b"secretPSK"
WARM_SESSIONS = 50
HANDSHAKES_IN_FLIGHT = 16
#: Seconds after which a handshake of the generator is given up (and counted as failed).
HANDSHAKE_TIMEOUT = 3.0
LIBCOAP_DTLS_SERVER = "coap-server-openssl"
PARTS = ("memory", "handshakes", "requests")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the servers -------------------------------------------------------------------------------


def serve() -> None:
    """``--serve``: a coap_trio server over UDP and DTLS (PSK); prints ``PORT udp dtls``."""
    import trio

    from coap_trio import Code, DtlsCredentials, DtlsLimits, Message, Resource, Site, open_context

    class Hello(Resource):
        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, payload=b"hello")

    async def main() -> None:
        site = Site()
        site.add([], Hello())
        limits = DtlsLimits(
            max_sessions=200_000, max_sessions_per_address=200_000, max_handshakes=4096
        )
        async with open_context(
            bind=(_peers.HOST, 0),
            dtls_bind=(_peers.HOST, 0),
            site=site,
            dtls=DtlsCredentials(psk_table={IDENTITY: KEY}),
            dtls_limits=limits,
        ) as ctx:
            print(f"PORT {ctx.addresses[0].port} {ctx.dtls_addresses[0].port}", flush=True)
            with trio.open_signal_receiver(signal.SIGUSR1) as signals:
                async for _ in signals:
                    break
            started = time.perf_counter()
        elapsed = time.perf_counter() - started
        (dtls_statistics,) = ctx.statistics.dtls
        print(f"CLOSED {elapsed:.6f} {dtls_statistics.close_notify_sent}", flush=True)

    trio.run(main)


@dataclass
class Server:
    """A server under test: its process (CPU, RSS), plain and DTLS ports."""

    peer: _peers.Peer
    dtls_port: int

    @property
    def name(self) -> str:
        return self.peer.name


def _start_coap_trio(cpu: int | None) -> Server:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()
    if len(line) != 3 or line[0] != "PORT":
        process.kill()
        process.wait(timeout=5)
        raise RuntimeError(f"the coap_trio server did not start (said {line!r})")
    peer = _peers.Peer("coap_trio", process, int(line[1]), "open_context(dtls_bind=...)")
    return Server(peer, int(line[2]))


def _start_libcoap(cpu: int | None) -> Server:
    binary = shutil.which(LIBCOAP_DTLS_SERVER)
    if binary is None:
        raise RuntimeError(f"{LIBCOAP_DTLS_SERVER} is not installed (libcoap3-bin)")
    for _ in range(5):
        port = _peers.free_port()
        process = subprocess.Popen(
            [binary, "-A", _peers.HOST, "-p", str(port), "-k", KEY.decode(), "-v", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
        peer = _peers.Peer("libcoap", process, port, f"{LIBCOAP_DTLS_SERVER} -k KEY")
        for _ in range(100):
            if process.poll() is not None:
                break
            if _peers.ping(port):
                return Server(peer, port + 1)
            time.sleep(0.02)
        peer.stop()
    raise RuntimeError(f"{LIBCOAP_DTLS_SERVER} did not start")


STARTERS: dict[str, Callable[[int | None], Server]] = {
    "coap_trio": _start_coap_trio,
    "libcoap": _start_libcoap,
}


# -- the generator: PSK handshakes from the engine, over plain sockets --------------------------


@dataclass
class _Handshake:
    sock: socket.socket
    session: Any
    started: float


@dataclass
class Handshakes:
    """What a generator run did."""

    completed: int = 0
    failed: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    sockets: list[socket.socket] = field(default_factory=list)


def _new_handshake(port: int, now: float) -> _Handshake:
    from coap_trio.protocol.dtls.credentials import DtlsCredentials
    from coap_trio.protocol.dtls.session import DtlsSession, Role

    credentials = _CLIENT_CREDENTIALS.get("psk")
    if credentials is None:
        credentials = _CLIENT_CREDENTIALS["psk"] = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)
    sock = _fresh_socket()
    sock.setblocking(False)
    sock.connect((_peers.HOST, port))
    session = DtlsSession(Role.CLIENT, credentials)
    for datagram in session.start(now):
        sock.send(datagram)
    return _Handshake(sock, session, now)


_CLIENT_CREDENTIALS: dict[str, Any] = {}
#: The generator's source ports, in turn: a new handshake never comes from the address of
#: one the server may still hold (libcoap ignores a new ClientHello there: it would time out).
_SOURCE_PORTS = itertools.cycle(range(20000, 60000))


def _fresh_socket() -> socket.socket:
    for _ in range(1000):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.bind((_peers.HOST, next(_SOURCE_PORTS)))
        except OSError:  # taken by another process
            sock.close()
            continue
        return sock
    raise RuntimeError("no free source port for the generator")


def handshakes(
    port: int, *, count: int | None = None, duration: float | None = None, keep: bool = False
) -> Handshakes:
    """PSK handshakes with the DTLS server at ``[::1]:port``, 16 in flight: ``count`` of
    them (``keep``: their sockets stay open, in the result), or as many as fit in
    ``duration`` seconds. Each ends once established (or failed, or timed out)."""
    result = Handshakes()
    selector = selectors.DefaultSelector()
    in_flight = HANDSHAKES_IN_FLIGHT if count is None else min(HANDSHAKES_IN_FLIGHT, count)
    started = time.monotonic()
    cpu_before = time.process_time()
    end = None if duration is None else started + duration
    launched = 0

    def launch() -> None:
        nonlocal launched
        launched += 1
        handshake = _new_handshake(port, time.monotonic())
        selector.register(handshake.sock, selectors.EVENT_READ, handshake)

    def finish(handshake: _Handshake, ok: bool) -> None:
        selector.unregister(handshake.sock)
        if ok:
            result.completed += 1
        else:
            result.failed += 1
        if keep and ok:
            result.sockets.append(handshake.sock)
        else:
            handshake.sock.close()
        more = (count is None or launched < count) and (end is None or time.monotonic() < end)
        if more:
            launch()

    for _ in range(in_flight):
        launch()
    while selector.get_map():
        now = time.monotonic()
        for key, _ in selector.select(timeout=0.05):
            handshake: _Handshake = key.data
            try:
                data = handshake.sock.recv(65536)
            except OSError:
                continue
            received = handshake.session.receive(data, now)
            for datagram in received.datagrams:
                handshake.sock.send(datagram)
            if handshake.session.is_established:
                finish(handshake, True)
            elif received.events:  # failed
                finish(handshake, False)
        now = time.monotonic()
        for key in list(selector.get_map().values()):
            handshake = key.data
            if now - handshake.started > HANDSHAKE_TIMEOUT:
                finish(handshake, False)
                continue
            for datagram in handshake.session.timeout(now).datagrams:
                handshake.sock.send(datagram)
    result.elapsed = time.monotonic() - started
    result.cpu = time.process_time() - cpu_before
    selector.close()
    return result


# -- memory per session, handshakes/s ----------------------------------------------------------


@dataclass
class Closing:
    """The coap_trio server leaving its Context with its sessions established."""

    #: Seconds ``open_context``'s exit took, as the server measured it.
    seconds: float
    #: close_notify records the server says it sent.
    sent: int
    #: Sockets of the generator that received a close_notify (an alert record).
    received: int
    #: Sessions established then (the generator's sockets).
    sessions: int


def _close_coap_trio(server: Server, kept: list[socket.socket]) -> Closing:
    """SIGUSR1 to the coap_trio server: it leaves open_context and reports; the
    generator's sockets are read for the alerts (bounded: 10 s, then 2 s of quiet)."""
    process = server.peer.process
    assert process.stdout is not None
    process.send_signal(signal.SIGUSR1)
    ready, _, _ = select.select([process.stdout], [], [], 10.0)
    words = process.stdout.readline().decode().split() if ready else []
    if len(words) != 3 or words[0] != "CLOSED":
        raise RuntimeError(f"the coap_trio server did not report its close (said {words!r})")
    seconds, sent = float(words[1]), int(words[2])
    alerted = 0
    with selectors.DefaultSelector() as selector:  # (epoll: thousands of sockets)
        for sock in kept:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 2.0
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                selector.unregister(sock)
                try:
                    data = sock.recv(65536)
                except OSError:
                    continue
                alerted += data[:1] == b"\x15"
    return Closing(seconds, sent, alerted, len(kept))


def session_memory(
    name: str, sessions: int, server_cpu: int | None
) -> tuple[float, str, Closing | None]:
    """Bytes per established session of one server, a note if something failed, and
    (coap_trio) how its Context closed with them established."""
    server = STARTERS[name](server_cpu)
    kept: list[socket.socket] = []
    try:
        warm = handshakes(server.dtls_port, count=WARM_SESSIONS, keep=True)
        kept += warm.sockets
        time.sleep(0.5)
        before = server.peer.rss()
        run = handshakes(server.dtls_port, count=sessions, keep=True)
        kept += run.sockets
        time.sleep(0.5)
        after = server.peer.rss()
        note = f"{run.failed} of {sessions} handshakes failed" if run.failed else ""
        closing = _close_coap_trio(server, kept) if name == "coap_trio" else None
        return (after - before) / max(run.completed, 1), note, closing
    finally:
        for sock in kept:
            sock.close()
        server.peer.stop()


def handshake_rate(name: str, duration: float, server_cpu: int | None) -> tuple[float, float, int]:
    """(handshakes/s, generator CPU share, failed) for one server, one run."""
    server = STARTERS[name](server_cpu)
    try:
        handshakes(server.dtls_port, count=WARM_SESSIONS)
        run = handshakes(server.dtls_port, duration=duration)
    finally:
        server.peer.stop()
    return run.completed / run.elapsed, run.cpu / run.elapsed, run.failed


# -- requests/s over one session: the worker ---------------------------------------------------


def run_worker(args: argparse.Namespace) -> None:
    """``--worker``: coap_trio's client, GET ``--uri`` with 64 in flight; prints its counts."""
    import trio

    from coap_trio import CoapError, Code, DtlsCredentials, open_context

    _peers.pin_self(args.cpu)

    async def main() -> dict[str, Any]:
        counts = {"ok": 0, "other": 0, "errors": 0}
        measuring = stopping = False
        credentials = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)
        async with open_context(dtls=credentials) as ctx:
            ctx.set_nstart(args.in_flight)

            async def loop() -> None:
                get, content = ctx.get, Code.CONTENT
                while not stopping:
                    try:
                        response = await get(args.uri)
                    except CoapError:
                        if measuring:
                            counts["errors"] += 1
                        continue
                    if measuring:
                        counts["ok" if response.code is content else "other"] += 1

            async with trio.open_nursery() as nursery:
                for _ in range(args.in_flight):
                    nursery.start_soon(loop)
                await trio.sleep(args.warmup)
                measuring = True
                started = time.perf_counter()
                await trio.sleep(args.duration)
                measuring = False
                elapsed = time.perf_counter() - started
                stopping = True
                nursery.cancel_scope.deadline = trio.current_time() + 10.0
            sessions = sum(s.handshakes_completed for s in ctx.statistics.dtls)
        return {**counts, "elapsed": elapsed, "handshakes": sessions}

    print(json.dumps(trio.run(main)))


def measure_requests(uri: str, args: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    """One run of the worker against ``uri``."""
    command = [sys.executable, __file__, "--worker", "--uri", uri]
    command += ["--in-flight", "64", "--duration", str(args.duration)]
    command += ["--warmup", str(args.warmup)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    output = subprocess.run(
        command, check=True, capture_output=True, timeout=args.duration + 60
    ).stdout
    result: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    result["rate"] = result["ok"] / result["elapsed"]
    return result


# -- the suite ------------------------------------------------------------------------------------


@dataclass
class Figures:
    """Everything one invocation measured."""

    session_bytes: dict[str, float] = field(default_factory=dict)
    #: The coap_trio server's Context closing with its sessions, one per run.
    closings: list[Closing] = field(default_factory=list)
    handshake_rates: dict[str, float] = field(default_factory=dict)
    generator_share: dict[str, float] = field(default_factory=dict)
    #: (server, scheme) -> requests/s, medians; and the median of the per-run shares.
    request_rates: dict[tuple[str, str], float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def measure_all(args: argparse.Namespace, log: Callable[[str], None] = print) -> Figures:
    """Every measurement, as the module docstring says; ``args``: ``sessions``,
    ``duration``, ``warmup``, ``runs``."""
    figures = Figures()
    parts = args.parts
    server_cpu, load_cpu = _peers.cpu_plan()
    _peers.pin_self(load_cpu)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.sessions + WARM_SESSIONS + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    for name in STARTERS if "memory" in parts else ():
        values = []
        for run in range(args.runs):
            per_session, note, closing = session_memory(name, args.sessions, server_cpu)
            values.append(per_session)
            log(f"  memory run {run + 1} {name:<10} {per_session:>10,.0f} bytes per session")
            if closing is not None:
                figures.closings.append(closing)
                log(
                    f"  closing run {run + 1} {name:<10} {closing.seconds * 1000:>8,.1f} ms, "
                    f"close_notify sent {closing.sent}, received by {closing.received} "
                    f"of {closing.sessions} sockets"
                )
            if note:
                figures.notes.append(f"dtls memory, {name}: run {run + 1}: {note}")
        figures.session_bytes[name] = statistics.median(values)
    for name in STARTERS if "handshakes" in parts else ():
        rates, shares = [], []
        for run in range(args.runs):
            rate, share, failed = handshake_rate(name, args.duration, server_cpu)
            rates.append(rate)
            shares.append(share)
            log(
                f"  handshakes run {run + 1} {name:<10} {rate:>8,.0f}/s "
                f"(generator CPU {share:.0%}, {failed} failed)"
            )
            if failed:
                figures.notes.append(f"dtls handshakes, {name}: run {run + 1}: {failed} failed")
        figures.handshake_rates[name] = statistics.median(rates)
        figures.generator_share[name] = statistics.median(shares)
        if figures.generator_share[name] > 0.9:
            figures.notes.append(
                f"dtls handshakes, {name}: the generator used ~a whole CPU: "
                "it may have been the limit"
            )
    for name in STARTERS if "requests" in parts else ():
        server = STARTERS[name](server_cpu)
        try:
            per_run: dict[str, list[float]] = {"coap": [], "coaps": []}
            shares_of_runs = []
            for run in range(args.runs):
                got = {}
                for scheme, port in (("coap", server.peer.port), ("coaps", server.dtls_port)):
                    result = measure_requests(f"{scheme}://[{_peers.HOST}]:{port}/", args, load_cpu)
                    got[scheme] = result["rate"]
                    per_run[scheme].append(result["rate"])
                    log(
                        f"  requests run {run + 1} {name:<10} {scheme:<6} "
                        f"{result['rate']:>10,.0f}/s ({result['other']} other, "
                        f"{result['errors']} errors, {result['handshakes']} handshake(s))"
                    )
                    if result["other"] or result["errors"]:
                        figures.notes.append(
                            f"dtls requests, {name} {scheme}: run {run + 1}: "
                            f"{result['other']} other answers, {result['errors']} errors"
                        )
                shares_of_runs.append(got["coaps"] / got["coap"] if got["coap"] else 0.0)
            for scheme, rates in per_run.items():
                figures.request_rates[(name, scheme)] = statistics.median(rates)
            figures.shares[name] = statistics.median(shares_of_runs)
        finally:
            server.peer.stop()
    return figures


def report(figures: Figures, sessions: int) -> list[str]:
    """The figures as text lines."""
    lines = []
    if figures.session_bytes:
        ours = figures.session_bytes["coap_trio"]
        verdict = "met" if ours <= TARGET_SESSION_BYTES else "NOT met"
        lines.append(f"bytes per established PSK session ({sessions:,} sessions, server RSS):")
        lines.append(f"  coap_trio {ours:>10,.0f}   (target <= 8 KB: {verdict})")
        lines.append(f"  libcoap   {figures.session_bytes['libcoap']:>10,.0f}")
    if figures.closings:
        seconds = statistics.median(c.seconds for c in figures.closings)
        last = figures.closings[-1]
        lines.append(
            f"coap_trio Context closing with {last.sessions:,} sessions: {seconds * 1000:,.1f} ms "
            f"(close_notify received by {last.received:,} of {last.sessions:,} peers)"
        )
    if figures.handshake_rates:
        lines.append("PSK handshakes/s (16 in flight, coap_trio's engine as the client):")
        for name, rate in figures.handshake_rates.items():
            share = figures.generator_share[name]
            lines.append(f"  {name:<9} {rate:>10,.0f}   (generator CPU {share:.0%})")
    if figures.shares:
        lines.append("GET / over one session vs plain UDP, 64 in flight, coap_trio's client:")
        for name, share in figures.shares.items():
            udp = figures.request_rates[(name, "coap")]
            dtls = figures.request_rates[(name, "coaps")]
            verdict = "met" if share >= TARGET_SHARE else "NOT met"
            lines.append(
                f"  {name} server: coap {udp:>8,.0f}/s, coaps {dtls:>8,.0f}/s: {share:.0%} "
                f"(target >= 50%: {verdict})"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 sessions, 1 s runs, 1 run")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only", dest="parts", nargs="+", choices=PARTS, default=list(PARTS), help="measure these"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return
    if args.worker:
        run_worker(args)
        return
    if args.quick:
        args.sessions, args.duration, args.runs = 300, 1.0, 1
    print(_peers.describe_machine())
    print(f"load average before: {_load()}")
    figures = measure_all(args)
    print(f"load average after:  {_load()}")
    for line in report(figures, args.sessions):
        print(line)
    for note in figures.notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
