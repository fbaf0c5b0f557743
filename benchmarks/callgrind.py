"""Instructions per request of coap_trio's UDP and TCP clients and UDP server, under callgrind.

Run by hand (not collected by pytest; needs valgrind and libcoap3-bin)::

    python benchmarks/callgrind.py                     # every workload, twice (~15 min)
    python benchmarks/callgrind.py --repeat 3 --workload server
    python benchmarks/callgrind.py --workload udp-sequential --workload blockwise --repeat 1
    python benchmarks/callgrind.py --counts 2000 12000 --keep

Wall-clock rates move with the machine's load and speed; the number of
instructions the CPU executes does not. Each measurement runs one coap_trio
process under ``valgrind --tool=callgrind``, which counts every instruction
the process executes (its ``Ir`` total, read from the ``summary:`` line of
the output file), once with ``N1`` and once with ``N2`` answered requests
(``--counts``, default 1,000 and 6,000). Start-up, imports and shutdown cost
the same in both runs, so ``(Ir(N2) - Ir(N1)) / (N2 - N1)`` is the cost of
one request, interpreter included. Workloads:

* ``udp-client``: ``open_context()`` with NSTART 64 and 64 tasks, each
  awaiting ``ctx.get("coap://[::1]:PORT/")`` in a loop until N requests were
  answered in all, against libcoap's ``coap-server-notls`` (not measured);
* ``udp-sequential``: the same with one task and NSTART 1: one request at a
  time, each one waiting for its response (``--in-flight`` does not apply);
* ``tcp-client``: the same over one ``coap+tcp://`` connection to the same
  libcoap server (which listens on TCP on the same port);
* ``oscore-client``: the ``udp-client`` workload with
  ``open_context(oscore=...)``, every request OSCORE-protected (RFC 8613,
  AES-CCM-16-64-128), against a coap_trio OSCORE server (``oscore.py``'s,
  not measured; a fresh one per run, as the client's sequence numbers
  start at 0 each time) at ``/example_data``;
* ``oscore-engine``: the OSCORE engine alone, no sockets, no trio, no
  codec: N rounds of a client ``OscoreEngine`` protecting a GET
  ``/example_data``, a server one verifying it and protecting its 2.05
  ``hello``, and the client verifying that (``N`` is the rounds; the
  instructions per round are the protect layer of both sides);
* ``blockwise``: ``ctx.get`` of a 1 MiB resource in 1024-byte blocks
  (``BlockwiseConfig(block_size=1024)``), one download after the other, from
  libcoap's server (given the body by a block-wise PUT of ``coap-client-notls``,
  as ``blockwise.py`` does); N1 and N2 count downloads (default 1 and 3,
  ``--blockwise-counts``), and the figure is per block (the difference divided
  by 1024 blocks per download);
* ``server``: ``open_context(bind=("::1", 0), site=site)`` serving the
  5-byte ``hello`` at ``/example_data`` (as ``server.py`` does; its piggyback
  window widened from 0.1 s to 60 s, as valgrind's pace would otherwise turn
  some responses into separate ones, depending on timing), driven by a
  load generator in this script's own process (plain non-blocking sockets,
  not measured): N pre-encoded CON GETs from 8 source sockets with 8 in
  flight each (``--in-flight 64``), every answered one replaced at once,
  nothing resent. Then one GET ``/stop`` makes the server leave its context.

Every worker is this script again (hidden option ``--worker``) and exits
after exactly its N requests. ``PYTHONHASHSEED=0`` fixes hash randomization
and ``PYTHONDONTWRITEBYTECODE=1`` keeps the bytecode caches as they were,
so repeated runs execute the same code: each workload is measured
``--repeat`` times (default 2) and the spread between repetitions is shown
(it should stay within ~0.5%). The wall-clock time of a run under valgrind
is ~50x the native one; every child process has a timeout (``--timeout``).
A run whose worker saw anything but N 2.05 responses (errors, other codes,
retransmissions, empty ACKs) is reported as failed rather than counted.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import selectors
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _peers

WORKLOADS = (
    "udp-client",
    "udp-sequential",
    "tcp-client",
    "server",
    "blockwise",
    "oscore-client",
    "oscore-engine",
)
#: The Sender ID of the oscore-client workload's security context.
OSCORE_CLIENT_ID = b"\x40"
#: The counts of a workload that does not take ``--counts`` (one download is 1024 blocks).
DEFAULT_COUNTS = {"blockwise": (1, 3)}
#: Blocks of one 1 MiB download, in 1024-byte blocks.
BLOCKS_PER_DOWNLOAD = 1024
#: The resource the server workload serves (the path and payload of server.py).
PATH = "example_data"
PAYLOAD = b"hello"
STOP_PATH = "stop"
#: The most requests a udp-client worker may send from its one endpoint (MIDs, RFC 7252 §4.4).
UDP_CLIENT_MAX = 60_000
#: Seconds the server worker may take, under valgrind, to print its port.
START_TIMEOUT = 300.0
#: The server's piggyback window (``MessagingConfig.ack_delay``, 0.1 s by default): under
#: valgrind, answering a burst of 64 requests can take longer than 0.1 s, and the empty
#: ACKs that would then go out depend on the wall clock.
PIGGYBACK_WINDOW = 60.0
#: Seconds without any response before the load generator gives up.
STALL_TIMEOUT = 60.0


# -- the workers (run under valgrind) -------------------------------------------------------


async def _client_worker(
    uri: str, count: int, in_flight: int, oscore: bool = False
) -> dict[str, Any]:
    import trio

    from coap_trio import Code, open_context

    credentials = None
    if oscore:
        import oscore as oscore_benchmark

        from coap_trio.oscore_credentials import CredentialsMap

        context = oscore_benchmark._our_context(OSCORE_CLIENT_ID, oscore_benchmark.SERVER_ID)
        credentials = CredentialsMap.from_contexts({uri: context})
    counts: Counter[str] = Counter()
    started = 0
    async with open_context(oscore=credentials) as ctx:
        ctx.set_nstart(in_flight)

        async def loop() -> None:
            nonlocal started
            get = ctx.get
            content = Code.CONTENT
            while started < count:
                started += 1
                try:
                    response = await get(uri)
                except Exception as error:  # counted: the run is then reported as failed
                    counts[f"error {type(error).__name__}"] += 1
                    continue
                counts["ok" if response.code is content else f"code {response.code}"] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(loop)
        result: dict[str, Any] = {"counts": dict(counts), **_statistics(ctx)}
    return result


async def _blockwise_worker(uri: str, count: int) -> dict[str, Any]:
    import blockwise

    from coap_trio import Code, open_context
    from coap_trio.protocol.config import BlockwiseConfig

    expected = blockwise.body()  # (compared whole: a SHA-256 would cost more than a block)
    counts: Counter[str] = Counter()
    async with open_context(blockwise=BlockwiseConfig(block_size=1024)) as ctx:
        for _ in range(count):
            response = await ctx.get(uri)
            same = response.payload == expected
            counts["ok" if response.code is Code.CONTENT and same else "bad"] += 1
        result: dict[str, Any] = {"counts": dict(counts), **_statistics(ctx)}
    return result


def _statistics(ctx: Any) -> dict[str, Any]:
    """The context's counters that tell a clean run (read defensively: only if present)."""
    found: dict[str, Any] = {}
    statistics = getattr(ctx, "statistics", None)
    for name in ("retransmissions", "duplicates", "requests_timed_out", "overloaded"):
        values = [getattr(m, name, 0) for m in getattr(statistics, "messaging", ())]
        found[name] = sum(values)
    for name in ("handler_errors", "overloaded_responses"):
        found[name] = getattr(statistics, name, 0)
    stream = getattr(ctx, "stream_statistics", None)
    if stream is not None:
        found["connections_opened"] = getattr(stream, "connections_opened", None)
    return found


def _server_worker() -> dict[str, Any]:
    import trio

    from coap_trio import Code, Message, MessagingConfig, Resource, Site, open_context

    rendered = 0
    stop = trio.Event()

    class Hello(Resource):
        async def render_get(self, request: Message) -> Message:
            nonlocal rendered
            rendered += 1
            return Message(code=Code.CONTENT, payload=PAYLOAD)

    class Stop(Resource):
        async def render_get(self, request: Message) -> Message:
            stop.set()
            return Message(code=Code.CONTENT)

    async def main() -> dict[str, Any]:
        site = Site()
        site.add([PATH], Hello())
        site.add([STOP_PATH], Stop())
        config = MessagingConfig(ack_delay=PIGGYBACK_WINDOW)
        async with open_context(bind=(_peers.HOST, 0), site=site, config=config) as ctx:
            print(f"PORT {ctx.addresses[0].port}", flush=True)
            await stop.wait()
            found = _statistics(ctx)
        return {"counts": {"rendered": rendered}, **found}

    result: dict[str, Any] = trio.run(main)
    return result


def _oscore_engine_worker(count: int) -> dict[str, Any]:
    import oscore as oscore_benchmark

    from coap_trio import Code, Message
    from coap_trio.protocol.oscore import OscoreEngine, RequestVerified, ResponseVerified

    client_context = oscore_benchmark._our_context(OSCORE_CLIENT_ID, oscore_benchmark.SERVER_ID)
    server_context = oscore_benchmark._our_context(oscore_benchmark.SERVER_ID, OSCORE_CLIENT_ID)
    client, server = OscoreEngine(), OscoreEngine([server_context])
    path = (oscore_benchmark.PATH,)
    ok = 0
    for number in range(count):
        request = Message(code=Code.GET, uri_path=path, token=number.to_bytes(4, "big"))
        protected, binding = client.protect_request(request, client_context)
        verified = server.verify_request(protected)
        assert isinstance(verified, RequestVerified)
        response = Message(code=Code.CONTENT, payload=b"hello", token=protected.token)
        answer = server.protect_response(response, verified.binding)
        result = client.verify_response(answer, binding)
        ok += isinstance(result, ResponseVerified) and result.response.payload == b"hello"
    return {"counts": {"ok": ok}}


def run_worker(args: argparse.Namespace) -> None:
    if args.worker == "oscore-engine":
        result = _oscore_engine_worker(args.count)
    elif args.worker == "server":
        result = _server_worker()
    else:
        import trio

        if args.worker == "blockwise":
            result = trio.run(_blockwise_worker, args.uri, args.count)
        else:
            in_flight = 1 if args.worker == "udp-sequential" else args.in_flight
            oscore = args.worker == "oscore-client"
            result = trio.run(_client_worker, args.uri, args.count, in_flight, oscore)
    print(json.dumps(result), flush=True)


# -- the load generator of the server workload (not measured) -------------------------------


@dataclass
class _Source:
    """One source socket of the generator and its requests in flight (MID -> token prefix)."""

    sock: socket.socket
    serial: bytes
    next_mid: int
    inflight: set[int] = field(default_factory=set)


def _uri_path(path: str) -> bytes:
    """The Uri-Path option (number 11) as the first option, for a path of 1 to 12 bytes."""
    value = path.encode()
    assert 0 < len(value) < 13
    return bytes([11 << 4 | len(value)]) + value


def generate(port: int, count: int, sockets: int, per_socket: int) -> dict[str, Any]:
    """Send ``count`` CON GETs /example_data to ``[::1]:port``, ``sockets * per_socket`` in flight.

    Every request has its own MID and its 4-byte token (2 bytes naming the
    socket, 2 the MID); each matching response frees its slot, refilled from
    the same socket. Nothing is resent: a response missing for
    ``STALL_TIMEOUT`` seconds is an error. Then one CON GET /stop.
    """
    path = _uri_path(PATH)
    selector = selectors.DefaultSelector()
    sources: list[_Source] = []
    for serial in range(1, sockets + 1):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind((_peers.HOST, 0))
        sock.connect((_peers.HOST, port))
        sock.setblocking(False)
        source = _Source(sock, serial.to_bytes(2, "big"), (serial << 12) & 0xFFFF)
        selector.register(sock, selectors.EVENT_READ, source)
        sources.append(source)
    counts: Counter[str] = Counter()
    sent = answered = 0

    def send_one(source: _Source) -> None:
        nonlocal sent
        if sent >= count:
            return
        mid = source.next_mid
        source.next_mid = (mid + 1) & 0xFFFF
        mid_bytes = mid.to_bytes(2, "big")
        source.sock.send(b"\x44\x01" + mid_bytes + source.serial + mid_bytes + path)
        source.inflight.add(mid)
        sent += 1

    for _ in range(per_socket):
        for source in sources:
            send_one(source)
    last_progress = time.monotonic()
    while answered < count:
        if time.monotonic() - last_progress > STALL_TIMEOUT:
            raise RuntimeError(f"the server stopped answering ({answered} of {count} answered)")
        for key, _ in selector.select(1.0):
            source = key.data
            while True:
                try:
                    data = source.sock.recv(2048)
                except BlockingIOError:
                    break
                last_progress = time.monotonic()
                kind, code = (data[0] >> 4) & 3, data[1]
                if code == 0:
                    counts["empty ACK" if kind == 2 else "RST" if kind == 3 else "junk"] += 1
                    continue
                if kind == 0:  # a separate response: acknowledge it
                    source.sock.send(b"\x60\x00" + data[2:4])
                    counts["separate response"] += 1
                if data[0] & 0x0F != 4 or data[4:6] != source.serial:
                    counts["unmatched"] += 1
                    continue
                mid = int.from_bytes(data[6:8], "big")
                if mid not in source.inflight:
                    counts["duplicate"] += 1
                    continue
                source.inflight.discard(mid)
                answered += 1
                counts["ok" if code == 0x45 and data.endswith(b"\xff" + PAYLOAD) else "other"] += 1
                send_one(source)
    stop = sources[0]
    mid_bytes = stop.next_mid.to_bytes(2, "big")
    stop.sock.send(b"\x44\x01" + mid_bytes + b"\xff\xff" + mid_bytes + _uri_path(STOP_PATH))
    for source in sources:
        selector.unregister(source.sock)
        source.sock.close()
    selector.close()
    return {"counts": dict(counts), "sent": sent}


# -- the orchestrator ---------------------------------------------------------------------


@dataclass
class Measurement:
    """One run of one worker under callgrind."""

    count: int
    instructions: int
    seconds: float
    command: list[str]
    result: dict[str, Any]


def _valgrind_command(out_file: Path, worker: list[str]) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        str(Path(__file__).resolve()),
        *worker,
    ]


#: The environment of every worker (on top of this process's).
WORKER_ENV = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


def _worker_env() -> dict[str, str]:
    return {**os.environ, **WORKER_ENV}


def _shown(command: list[str]) -> str:
    """The command line as a shell would take it, with the workers' environment."""
    return " ".join(f"{k}={v}" for k, v in WORKER_ENV.items()) + " " + shlex.join(command)


def _total_instructions(out_file: Path) -> int:
    """The ``summary:`` (or ``totals:``) Ir of a callgrind output file."""
    totals = None
    with out_file.open(encoding="ascii", errors="replace") as lines:
        for line in lines:
            if line.startswith("summary:"):
                return int(line.split()[1])
            if line.startswith("totals:"):
                totals = int(line.split()[1])
    if totals is None:
        raise RuntimeError(f"no summary or totals line in {out_file}")
    return totals


def _check(workload: str, count: int, result: dict[str, Any], generated: dict[str, Any]) -> None:
    """Raise unless the run was clean: exactly ``count`` 2.05 responses and nothing else."""
    problems = []
    expected = {"rendered": count} if workload == "server" else {"ok": count}
    if result["counts"] != expected:
        problems.append(f"worker counts {result['counts']} (expected {expected})")
    if generated and generated["counts"] != {"ok": count}:
        problems.append(f"generator counts {generated['counts']} (expected ok: {count})")
    for name in ("retransmissions", "duplicates", "requests_timed_out", "handler_errors"):
        if result.get(name):
            problems.append(f"{name}: {result[name]}")
    if workload == "tcp-client" and result.get("connections_opened") not in (1, None):
        problems.append(f"connections opened: {result['connections_opened']} (expected 1)")
    if problems:
        raise RuntimeError(f"{workload} with {count} requests: " + "; ".join(problems))


def _last_json(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def measure_client(
    workload: str, uri: str, count: int, args: argparse.Namespace, out_file: Path
) -> Measurement:
    worker = ["--worker", workload, "--count", str(count), "--uri", uri]
    command = _valgrind_command(out_file, [*worker, "--in-flight", str(args.in_flight)])
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, env=_worker_env(), timeout=args.timeout
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr}")
    result = _last_json(done.stdout)
    _check(workload, count, result, {})
    return Measurement(count, _total_instructions(out_file), seconds, command, result)


def measure_oscore_client(
    count: int, args: argparse.Namespace, out_file: Path, directory: Path
) -> Measurement:
    """The oscore-client workload against a fresh coap_trio OSCORE server (not measured)."""
    import oscore as oscore_benchmark

    server = oscore_benchmark.start_server(
        "coap_trio", [OSCORE_CLIENT_ID], None, directory / f"oscore-server-{count}"
    )
    try:
        uri = f"coap://[{_peers.HOST}]:{server.port}/{oscore_benchmark.PATH}"
        return measure_client("oscore-client", uri, count, args, out_file)
    finally:
        server.stop()


def _read_port(process: subprocess.Popen[str]) -> int:
    """The ``PORT n`` line of the server worker (read from the raw descriptor, bounded)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    pending = b""
    deadline = time.monotonic() + START_TIMEOUT
    while b"\n" not in pending:
        readable, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(fd, 4096) if readable else b""
        if not chunk:
            raise RuntimeError(f"the server worker did not start (said {pending!r})")
        pending += chunk
    line, rest = pending.split(b"\n", 1)
    if not line.startswith(b"PORT ") or rest:
        raise RuntimeError(f"the server worker said {pending!r}")
    return int(line.split()[1])


def measure_server(count: int, args: argparse.Namespace, out_file: Path) -> Measurement:
    command = _valgrind_command(out_file, ["--worker", "server"])
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_worker_env(),
            text=True,
        )
        try:
            port = _read_port(process)
            generated = generate(port, count, args.sockets, args.in_flight // args.sockets)
            stdout, _ = process.communicate(timeout=args.timeout)
        except BaseException:
            process.kill()
            process.wait(timeout=30)
            stderr.seek(0)
            print(stderr.read()[-3000:], file=sys.stderr)
            raise
        if process.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{shlex.join(command)} failed:\n{stderr.read()}")
    seconds = time.monotonic() - started
    result = _last_json(stdout)
    _check("server", count, result, generated)
    return Measurement(count, _total_instructions(out_file), seconds, command, result)


def measure_workload(
    workload: str, args: argparse.Namespace, directory: Path, log: Callable[[str], None] = print
) -> list[tuple[Measurement, Measurement]]:
    """``args.repeat`` pairs of runs (N1, N2) of one workload."""
    if workload in ("server", "oscore-client"):
        peer = None
    elif workload == "blockwise":
        import blockwise

        payload_file = directory / "body"
        payload_file.write_bytes(blockwise.body())
        peer = blockwise.start_server("libcoap", payload_file)
    else:
        peer = _peers.start_libcoap_server_with_tcp()
    pairs = []
    counts = DEFAULT_COUNTS.get(workload) if workload == "blockwise" else args.counts
    if workload == "blockwise" and args.blockwise_counts:
        counts = args.blockwise_counts
    assert counts is not None
    try:
        for repetition in range(1, args.repeat + 1):
            pair = []
            for count in counts:
                out_file = directory / f"callgrind.{workload}.{count}.{repetition}.out"
                if workload == "oscore-client":
                    run = measure_oscore_client(count, args, out_file, directory)
                elif workload == "oscore-engine":
                    run = measure_client("oscore-engine", "-", count, args, out_file)
                elif peer is None:
                    run = measure_server(count, args, out_file)
                else:
                    scheme = "coap+tcp" if workload == "tcp-client" else "coap"
                    path = "example_data" if workload == "blockwise" else ""
                    uri = f"{scheme}://[{_peers.HOST}]:{peer.port}/{path}"
                    run = measure_client(workload, uri, count, args, out_file)
                log(
                    f"  {workload:<10} #{repetition} N={count:<6} Ir {run.instructions:>15,} "
                    f"({run.seconds:5.1f} s): {_shown(run.command)}"
                )
                pair.append(run)
            pairs.append((pair[0], pair[1]))
    finally:
        if peer is not None:
            peer.stop()
    return pairs


def per_request(pair: tuple[Measurement, Measurement], workload: str = "") -> float:
    """Instructions per request (per block for the blockwise workload)."""
    small, large = pair
    units = large.count - small.count
    if workload == "blockwise":
        units *= BLOCKS_PER_DOWNLOAD
    return (large.instructions - small.instructions) / units


def _valgrind_version() -> str:
    done = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def orchestrate(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    import coap_trio

    print(_peers.describe_machine())
    print(
        f"{sys.executable}; {_valgrind_version()}; coap_trio from {Path(coap_trio.__file__).parent}"
    )
    n1, n2 = args.counts
    print(
        f"instructions per request = (Ir(N={n2}) - Ir(N={n1})) / {n2 - n1}, "
        f"{args.in_flight} in flight, {args.repeat} repetitions; PYTHONHASHSEED=0"
        " (blockwise: per block, N counting 1 MiB downloads of 1024 blocks)"
    )
    directory = Path(tempfile.mkdtemp(prefix="coap_trio-callgrind-"))
    results: dict[str, list[float]] = {}
    try:
        for workload in args.workload:
            pairs = measure_workload(workload, args, directory)
            results[workload] = [per_request(pair, workload) for pair in pairs]
    finally:
        if args.keep:
            print(f"callgrind output files kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"{'workload':<14} {'instructions/request':>21}  repetitions (spread)")
    for workload, values in results.items():
        mean = sum(values) / len(values)
        spread = (max(values) - min(values)) / mean if mean else 0.0
        shown = " / ".join(f"{v:,.0f}" for v in values)
        unit = " (per block)" if workload == "blockwise" else ""
        print(f"{workload:<14} {mean:>21,.0f}  {shown} ({spread:.2%}){unit}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="measure only this workload (repeatable; default: all)",
    )
    parser.add_argument(
        "--counts",
        type=int,
        nargs=2,
        default=[1_000, 6_000],
        metavar=("N1", "N2"),
        help="answered requests of the two runs (default 1000 6000)",
    )
    parser.add_argument(
        "--blockwise-counts",
        type=int,
        nargs=2,
        metavar=("N1", "N2"),
        help="1 MiB downloads of the two runs of the blockwise workload (default 1 3)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="pairs of runs per workload")
    parser.add_argument("--in-flight", type=int, default=64, help="requests in flight (64)")
    parser.add_argument("--sockets", type=int, default=8, help="the generator's source sockets")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed per run (default 600)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the callgrind output files")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    n1, n2 = args.counts
    if not 0 < n1 < n2:
        parser.error("--counts: 0 < N1 < N2")
    if n2 > UDP_CLIENT_MAX:
        parser.error(f"--counts: N2 at most {UDP_CLIENT_MAX} (the UDP client's message IDs)")
    if args.in_flight % args.sockets or args.in_flight < args.sockets:
        parser.error("--in-flight must be a multiple of --sockets")
    args.workload = args.workload or list(WORKLOADS)
    orchestrate(args)


if __name__ == "__main__":
    main()
