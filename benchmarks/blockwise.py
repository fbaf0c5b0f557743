"""Block-wise throughput: a 1 MiB GET in 1024-byte blocks, every client against every server.

Run by hand (not collected by pytest; needs libcoap3-bin and aiocoap)::

    python benchmarks/blockwise.py              # 5 transfers per pair, 3 runs (~2 min)
    python benchmarks/blockwise.py --quick      # 2 transfers per pair, 1 run

Servers (child processes on ``::1``, port picked by the OS, pinned to one CPU when
there are two or more):
coap_trio and aiocoap serve ``/large`` (the same 1 MiB, rendered whole, sliced
by the library's block-wise layer); libcoap's ``coap-server-notls`` serves
``/example_data`` after a block-wise PUT of the same 1 MiB.

Clients (child processes pinned to another): coap_trio (``ctx.get``), aiocoap
(``ctx.request(...).response``), and libcoap's ``coap-client-notls -b 1024``
(its output written to a file). Every transfer's SHA-256 is checked against
the served bytes; a transfer that fails or differs is reported and not timed.

Each figure is MB/s (1 MiB / seconds for the whole transfer, client start-up
excluded for the Python clients, included for coap-client-notls since it
is one process per transfer -- its start-up is ~2 ms), the median over the
runs of each run's median. The target: against every server, the
coap_trio client at least as fast as ``coap-client-notls``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _peers import (
    HOST,
    LIBCOAP_CLIENT,
    LIBCOAP_SERVER,
    Peer,
    cpu_plan,
    describe_machine,
    pin_self,
    start_libcoap_server,
    start_python_server,
)

PATH = "large"
SIZE = 1 << 20
BLOCK_SIZE = 1024
SERVERS = ("coap_trio", "aiocoap", "libcoap")
CLIENTS = ("coap_trio", "aiocoap", "libcoap")
SERVER_CPU, CLIENT_CPU = cpu_plan()
#: (client, server) pairs the targets compare, as (ours, theirs, ratio wanted).
#: (ours, theirs, ratio): the coap_trio client at least as fast as coap-client-notls
#: against the same server, for every server.
TARGETS = tuple(((("coap_trio", s), ("libcoap", s), 1.0)) for s in SERVERS)


def body() -> bytes:
    """The 1 MiB representation: not compressible, the same in every process."""
    seed = hashlib.sha256(b"coap_trio block-wise benchmark").digest()
    out = bytearray()
    counter = 0
    while len(out) < SIZE:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:SIZE])


# -- servers (child processes) ------------------------------------------------------------


def serve_coap_trio() -> None:
    import trio

    from coap_trio import Code, Message, open_context
    from coap_trio.protocol.config import BlockwiseConfig
    from coap_trio.resource import Resource, Site

    payload = body()

    class Large(Resource):
        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, payload=payload)

    async def main() -> None:
        site = Site()
        site.add([PATH], Large())
        config = BlockwiseConfig(block_size=BLOCK_SIZE)
        async with open_context(bind=(HOST, 0), site=site, blockwise=config) as ctx:
            print(f"PORT {ctx.addresses[0].port}", flush=True)
            await trio.sleep_forever()

    trio.run(main)


def serve_aiocoap() -> None:
    import aiocoap
    import aiocoap.resource

    payload = body()

    class Large(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=payload)

    async def main() -> None:
        site = aiocoap.resource.Site()
        site.add_resource([PATH], Large())
        context = await aiocoap.Context.create_server_context(
            site, bind=(HOST, 0), transports=["udp6"]
        )
        interface = context.request_interfaces[0].token_interface.message_interface
        port = interface.transport.get_extra_info("socket").getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_server(name: str, payload_file: Path) -> Peer:
    """The named server, pinned to the servers' CPU, serving the 1 MiB body."""
    cpus = None if SERVER_CPU is None else [SERVER_CPU]
    if name != "libcoap":
        return start_python_server([__file__, "--serve", name], name, cpus, f"/{PATH}")
    client = shutil.which(LIBCOAP_CLIENT)
    if client is None:
        raise RuntimeError("libcoap's command-line tools are missing (Debian libcoap3-bin)")
    for _ in range(5):
        server = start_libcoap_server(cpus, note="/example_data")
        put = subprocess.run(
            [client, "-m", "put", "-b", str(BLOCK_SIZE), "-f", str(payload_file), _uri(server)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if put.returncode == 0 and server.alive():
            return server
        server.stop()
    raise RuntimeError(f"{LIBCOAP_SERVER} did not start or refused the 1 MiB PUT")


def _uri(server: Peer) -> str:
    return server.uri("example_data" if server.name == "libcoap" else PATH)


# -- clients ----------------------------------------------------------------------------


async def _coap_trio_fetch(uri: str, repeat: int) -> list[tuple[float, str]]:
    from coap_trio import open_context
    from coap_trio.protocol.config import BlockwiseConfig

    results = []
    async with open_context(blockwise=BlockwiseConfig(block_size=BLOCK_SIZE)) as ctx:
        for _ in range(repeat):
            started = time.perf_counter()
            response = await ctx.get(uri)
            elapsed = time.perf_counter() - started
            results.append((elapsed, hashlib.sha256(response.payload).hexdigest()))
    return results


async def _aiocoap_fetch(uri: str, repeat: int) -> list[tuple[float, str]]:
    import logging

    import aiocoap

    logging.basicConfig(level=logging.ERROR)
    ctx = await aiocoap.Context.create_client_context()
    results = []
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            response = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            elapsed = time.perf_counter() - started
            results.append((elapsed, hashlib.sha256(response.payload).hexdigest()))
    finally:
        await ctx.shutdown()
    return results


def run_fetch_worker(library: str, uri: str, repeat: int) -> None:
    pin_self(CLIENT_CPU)
    if library == "coap_trio":
        import trio

        results = trio.run(_coap_trio_fetch, uri, repeat)
    else:
        results = asyncio.run(_aiocoap_fetch(uri, repeat))
    print(json.dumps(results))


@dataclass
class Outcome:
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def measure(client: str, server: Peer, repeat: int, expected: str, timeout: float) -> Outcome:
    outcome = Outcome()
    if client == "libcoap":
        binary = shutil.which(LIBCOAP_CLIENT)
        assert binary is not None
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "body"
            for _ in range(repeat):
                out.unlink(missing_ok=True)
                started = time.perf_counter()
                command = [binary, "-b", str(BLOCK_SIZE)]
                if CLIENT_CPU is not None:
                    command = ["taskset", "-c", str(CLIENT_CPU), *command]
                done = subprocess.run(
                    [*command, "-o", str(out), _uri(server)],
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                elapsed = time.perf_counter() - started
                digest = hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else "-"
                if done.returncode != 0 or digest != expected:
                    outcome.failures.append(
                        f"exit {done.returncode}, sha256 {digest[:12]}, "
                        f"{done.stderr.decode(errors='replace').strip()[:120]}"
                    )
                else:
                    outcome.seconds.append(elapsed)
        return outcome
    command = [sys.executable, __file__, "--fetch", client, "--uri", _uri(server)]
    command += ["--repeat", str(repeat)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout * repeat, check=False)
    except subprocess.TimeoutExpired:
        outcome.failures.append(f"timed out after {timeout * repeat:g} s")
        return outcome
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        outcome.failures.append(f"worker exit {done.returncode}: {' '.join(tail)[:160]}")
        return outcome
    for elapsed, digest in json.loads(done.stdout.decode().strip().splitlines()[-1]):
        if digest == expected:
            outcome.seconds.append(elapsed)
        else:
            outcome.failures.append(f"sha256 mismatch {digest[:12]}")
    return outcome


def collect(
    args: argparse.Namespace, log: Callable[[str], None] = print
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], list[str]]]:
    """MB/s per (client, server) per run (the median transfer of the run), and the failures."""
    payload = body()
    expected = hashlib.sha256(payload).hexdigest()
    per_run: dict[tuple[str, str], list[float]] = {}
    failures: dict[tuple[str, str], list[str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        payload_file = Path(scratch) / "payload"
        payload_file.write_bytes(payload)
        for run in range(1, args.runs + 1):
            for server_name in args.servers:
                server = start_server(server_name, payload_file)
                try:
                    for client in args.clients:
                        outcome = measure(client, server, args.repeat, expected, args.timeout)
                        key = (client, server_name)
                        failures.setdefault(key, []).extend(
                            f"run {run}: {message}" for message in outcome.failures
                        )
                        if outcome.seconds:
                            median = statistics.median(outcome.seconds)
                            per_run.setdefault(key, []).append(SIZE / median / 1e6)
                            shown = f"{SIZE / median / 1e6:8.2f} MB/s"
                        else:
                            shown = "  failed"
                        note = f"  ({len(outcome.failures)} failed)" if outcome.failures else ""
                        log(f"  run {run}  {client:>9} -> {server_name:<9} {shown}{note}")
                finally:
                    server.stop()
    return per_run, failures


def orchestrate(args: argparse.Namespace) -> int:
    print(describe_machine())
    print(
        f"1 MiB GET in {BLOCK_SIZE}-byte blocks; {args.repeat} transfers per pair per run, "
        f"{args.runs} run(s); servers on CPU {SERVER_CPU}, clients on CPU {CLIENT_CPU}"
    )
    per_run, failures = collect(args)
    print()
    header = "client \\ server " + "".join(f"{s:>12}" for s in args.servers)
    print(header + "   (MB/s, median of runs)")
    print("-" * len(header))
    rates = {key: statistics.median(values) for key, values in per_run.items()}
    for client in args.clients:
        cells = "".join(
            f"{rates[(client, s)]:>12.2f}" if (client, s) in rates else f"{'-':>12}"
            for s in args.servers
        )
        print(f"{client:<16}{cells}")
    print()
    all_met = True
    for ours, theirs, wanted in TARGETS:
        if ours not in rates or theirs not in rates:
            print(f"{ours} vs {theirs}: not measured")
            all_met = False
            continue
        ratio = rates[ours] / rates[theirs]
        met = ratio >= wanted
        all_met &= met
        print(
            f"{ours[0]} client -> {ours[1]} server vs {theirs[0]} -> {theirs[1]}: "
            f"{ratio:.2f}x (target >= {wanted:g}x) {'met' if met else 'NOT met'}"
        )
    for key, messages in failures.items():
        for message in messages[:3]:
            print(f"failure {key[0]} -> {key[1]}: {message}")
    return 0 if all_met else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="transfers per pair per run")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 transfers, 1 run")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per transfer")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--serve", choices=("coap_trio", "aiocoap"), help=argparse.SUPPRESS)
    parser.add_argument("--fetch", choices=("coap_trio", "aiocoap"), help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_coap_trio() if args.serve == "coap_trio" else serve_aiocoap()
        return
    if args.fetch:
        run_fetch_worker(args.fetch, args.uri, args.repeat)
        return
    if args.quick:
        args.repeat, args.runs = 2, 1
    raise SystemExit(orchestrate(args))


if __name__ == "__main__":
    main()
