"""Requests per second over ONE CoAP-over-TCP connection (RFC 8323), coap_trio vs aiocoap.

Run by hand (not collected by pytest; needs libcoap3-bin and aiocoap)::

    python benchmarks/tcp.py                 # 5 s per run, 3 runs per library
    python benchmarks/tcp.py --quick         # 1 s per run, 1 run
    python benchmarks/tcp.py --in-flight 64 --duration 10

One ``coap-server-notls`` (libcoap, listening on TCP on ``::1``, a free port;
stopped at the end; pinned to one CPU and the workers to another when there
are two) serves both clients. Each measurement is a fresh worker
process (this script with ``--worker LIBRARY``) that opens its client, sends
``GET coap+tcp://[::1]:PORT/`` from ``--in-flight`` tasks (each sending its
next request when its previous one is answered; both build each request's
message from the URI, the way each library's documentation does), warms up for 1 s, then
counts the 2.05 responses during ``--duration`` seconds. Both clients keep
one connection to the server (coap_trio reports how many it opened). Runs
are interleaved; each figure is the median. The target is coap_trio >= 5x
aiocoap. The load average is printed, as the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import _peers

TARGET_RATIO = 5.0
LIBRARIES = ("coap_trio", "aiocoap")
WARMUP = 1.0


def _start_server(server_cpu: int | None) -> _peers.Peer:
    """libcoap's server (pinned to ``server_cpu``), once it accepts TCP on its port too."""
    return _peers.start_libcoap_server_with_tcp(None if server_cpu is None else [server_cpu])


async def _trio_worker(uri: str, in_flight: int, duration: float) -> dict[str, Any]:
    import trio

    from coap_trio import Code, Message, open_context

    counts = {"ok": 0, "other": 0}
    counting = False
    async with open_context() as ctx:

        async def loop() -> None:
            while True:
                try:
                    # A new message from the URI per request, as the aiocoap worker does.
                    response = await ctx.request(Message(code=Code.GET, uri=uri)).response
                except Exception:
                    if counting:
                        counts["other"] += 1
                    continue
                if counting:
                    counts["ok" if response.code == Code.CONTENT else "other"] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(loop)
            await trio.sleep(WARMUP)
            counting = True
            started = time.perf_counter()
            await trio.sleep(duration)
            counting = False
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        stats = ctx.stream_statistics
        connections = stats.connections_opened if stats is not None else -1
    return {**counts, "elapsed": elapsed, "connections": connections}


async def _aiocoap_worker(uri: str, in_flight: int, duration: float) -> dict[str, Any]:
    import aiocoap

    counts = {"ok": 0, "other": 0}
    counting = False
    ctx = await aiocoap.Context.create_client_context()

    async def loop() -> None:
        while True:
            try:
                request = aiocoap.Message(code=aiocoap.GET, uri=uri)
                response = await ctx.request(request).response
            except aiocoap.error.Error:
                if counting:
                    counts["other"] += 1
                continue
            if counting:
                counts["ok" if response.code == aiocoap.CONTENT else "other"] += 1

    tasks = [asyncio.create_task(loop()) for _ in range(in_flight)]
    await asyncio.sleep(WARMUP)
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    counting = False
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await ctx.shutdown()
    return {**counts, "elapsed": elapsed, "connections": 1}


def run_worker(args: argparse.Namespace) -> None:
    _peers.pin_self(args.cpu)
    if args.worker == "coap_trio":
        import trio

        result = trio.run(_trio_worker, args.uri, args.in_flight, args.duration)
    else:
        result = asyncio.run(_aiocoap_worker(args.uri, args.in_flight, args.duration))
    print(json.dumps(result))


def measure(library: str, uri: str, args: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    """One run of one library in a fresh worker process (pinned to ``cpu``)."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        library,
        "--uri",
        uri,
        "--in-flight",
        str(args.in_flight),
        "--duration",
        str(args.duration),
    ]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    output = subprocess.run(
        command, check=True, capture_output=True, timeout=args.duration + 60
    ).stdout
    result: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    result["rate"] = result["ok"] / result["elapsed"]
    return result


def measure_tcp(
    args: argparse.Namespace, log: Callable[[str], None] = print
) -> dict[str, list[dict[str, Any]]]:
    """Start the server (pinned), run both libraries ``args.runs`` times interleaved, stop it.

    ``args``: ``duration``, ``runs``, ``in_flight``. Returns each library's runs.
    """
    server_cpu, client_cpu = _peers.cpu_plan()
    server = _start_server(server_cpu)
    uri = f"coap+tcp://[{_peers.HOST}]:{server.port}/"
    results: dict[str, list[dict[str, Any]]] = {library: [] for library in LIBRARIES}
    try:
        for run in range(args.runs):
            for library in LIBRARIES:
                result = measure(library, uri, args, client_cpu)
                results[library].append(result)
                log(
                    f"  run {run + 1} {library:<10} {result['rate']:>10,.0f} req/s "
                    f"({result['other']} other, {result['connections']} connection(s))"
                )
    finally:
        server.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="1 s per run, 1 run")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.quick:
        args.duration, args.runs = 1.0, 1
    print(_peers.describe_machine())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = measure_tcp(args)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ours = statistics.median(r["rate"] for r in results["coap_trio"])
    theirs = statistics.median(r["rate"] for r in results["aiocoap"])
    ratio = pair_ratio(results)
    print(
        f"GET over one coap+tcp connection, {args.in_flight} in flight, libcoap server "
        f"(median of {args.runs}):"
    )
    print(f"  coap_trio {ours:>10,.0f} req/s")
    print(f"  aiocoap   {theirs:>10,.0f} req/s")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(
        f"  ratio     {ratio:>10.1f}x   (median of the {args.runs} back-to-back pairs' "
        f"ratios; target >= {TARGET_RATIO:g}x: {verdict})"
    )


def pair_ratio(results: dict[str, list[dict[str, Any]]]) -> float:
    """The median over runs of coap_trio's rate / aiocoap's rate in the same run.

    Each run measures both libraries back to back, so a ratio compares them on
    the machine as it was then; on a shared VM whose speed drifts by half
    within minutes, this is steadier than the ratio of the two medians.
    """
    ratios = [
        ours["rate"] / theirs["rate"] if theirs["rate"] else float("inf")
        for ours, theirs in zip(results["coap_trio"], results["aiocoap"], strict=True)
    ]
    return statistics.median(ratios)


if __name__ == "__main__":
    main()
