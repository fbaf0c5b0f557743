"""Client requests per second of coap_trio against aiocoap's client, same server, same run.

Run by hand (not collected by pytest; needs libcoap3-bin and aiocoap)::

    python benchmarks/client.py                 # 5 s per run, 3 runs per figure (~1.5 min)
    python benchmarks/client.py --quick         # 1 s per run
    python benchmarks/client.py --duration 10

One ``coap-server-notls`` (libcoap, started on ``::1`` on a free port, stopped
at the end) serves every measurement. Each measurement is a fresh worker
process (this script with a hidden ``--worker`` option) that opens its client,
warms up, then counts the ``GET /`` requests answered 2.05 Content during
``--duration`` seconds (other responses and errors are counted apart and
shown, never as successes). Modes:

* sequential: one request at a time (coap_trio with its default NSTART 1);
* 64 in flight: 64 worker tasks, each sending its next request when its
  previous one is answered (coap_trio: ``ctx.set_nstart(64)``).

coap_trio runs under trio (``open_context``), aiocoap under asyncio with
``aiocoap.Context.create_client_context()`` and its defaults. Runs are
interleaved (run 1 of every mode, then run 2...) so drift affects all
equally; each figure is the median of ``--runs`` runs (default 3). The target
is for coap_trio to reach at least 10x aiocoap's client in every mode. With
two CPUs or more, the server is pinned to one and the clients to another.

The message-ID rule (RFC 7252 §4.4) allows one local endpoint 65,536 MIDs per
remote per EXCHANGE_LIFETIME (247 s). coap_trio enforces it, so a run that
sends more than that from one endpoint would stall; coap_trio is therefore
opened with ``client_endpoints=N`` (default: enough for 40,000 req/s for the
run's duration, warm-up included) and the table reports N and the most
requests any one endpoint sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from _peers import cpu_plan, describe_machine, pin_self, start_libcoap_server

#: The issue's target: coap_trio's client >= 10x aiocoap's in every mode.
TARGET_RATIO = 10.0
#: MIDs per remote per EXCHANGE_LIFETIME for one local endpoint.
MID_LIMIT = 65_536
#: The request rate the default endpoint count is sized for.
SIZED_FOR_RATE = 40_000
PATH = "/"
#: Seconds a worker waits for its requests in flight after the measurement.
_DRAIN = 10.0

MODES = (("sequential", 1), ("64 in flight", 64))
LIBRARIES = ("coap_trio", "aiocoap")


@dataclass
class Result:
    ok: int
    other: int
    errors: int
    elapsed: float
    per_endpoint: list[int]

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


# -- workers (run in their own process) ------------------------------------------------


async def _trio_worker(
    uri: str, concurrency: int, duration: float, warmup: float, endpoints: int
) -> dict[str, Any]:
    from coap_trio.context import open_context
    from coap_trio.errors import CoapError
    from coap_trio.numbers.codes import Code

    counts = {"ok": 0, "other": 0, "errors": 0}
    measuring = False
    stopping = False

    async with open_context(client_endpoints=endpoints) as ctx:
        if concurrency > 1:
            ctx.set_nstart(concurrency)

        async def loop() -> None:
            get = ctx.get
            content = Code.CONTENT
            while not stopping:
                try:
                    response = await get(uri)
                except CoapError:
                    if measuring:
                        counts["errors"] += 1
                    continue
                if measuring:
                    if response.code is content:
                        counts["ok"] += 1
                    else:
                        counts["other"] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(loop)
            await trio.sleep(warmup)
            measuring = True
            started = time.perf_counter()
            await trio.sleep(duration)
            measuring = False
            elapsed = time.perf_counter() - started
            stopping = True  # let every loop finish its request in flight...
            nursery.cancel_scope.deadline = trio.current_time() + _DRAIN  # ...within bounds
        per_endpoint = [e.datagrams_sent for e in ctx.statistics.endpoints]
    return {**counts, "elapsed": elapsed, "per_endpoint": per_endpoint}


async def _aiocoap_worker(
    uri: str, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    import logging

    import aiocoap
    import aiocoap.error

    logging.basicConfig(level=logging.ERROR)
    counts = {"ok": 0, "other": 0, "errors": 0}
    measuring = False
    stopping = False
    ctx = await aiocoap.Context.create_client_context()

    async def loop() -> None:
        while not stopping:
            try:
                response = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            except aiocoap.error.Error:
                if measuring:
                    counts["errors"] += 1
                continue
            if measuring:
                if response.code == aiocoap.CONTENT:
                    counts["ok"] += 1
                else:
                    counts["other"] += 1

    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    measuring = False
    elapsed = time.perf_counter() - started
    stopping = True  # let every loop finish its request in flight (cancelling
    # aiocoap's requests mid-way makes it log InvalidStateError tracebacks)
    await asyncio.wait(tasks, timeout=_DRAIN)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await ctx.shutdown()
    return {**counts, "elapsed": elapsed, "per_endpoint": []}


def run_worker(args: argparse.Namespace) -> None:
    pin_self(args.cpu)
    if args.worker == "coap_trio":
        result = trio.run(
            _trio_worker, args.uri, args.concurrency, args.duration, args.warmup, args.endpoints
        )
    else:
        result = asyncio.run(
            _aiocoap_worker(args.uri, args.concurrency, args.duration, args.warmup)
        )
    print(json.dumps(result))


# -- the orchestrator ---------------------------------------------------------------


async def measure(
    library: str, uri: str, concurrency: int, args: argparse.Namespace, endpoints: int
) -> Result:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        library,
        "--uri",
        uri,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--endpoints",
        str(endpoints),
    ]
    if args.client_cpu is not None:
        command += ["--cpu", str(args.client_cpu)]
    with trio.fail_after(args.duration + args.warmup + 60):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    if done.returncode != 0:
        raise SystemExit(
            f"{library} worker failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}"
        )
    stderr = done.stderr.decode(errors="replace").strip()
    if stderr:
        lines = stderr.splitlines()
        print(f"  [{library} worker wrote {len(lines)} line(s) to stderr: {lines[0][:120]}]")
    data = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return Result(data["ok"], data["other"], data["errors"], data["elapsed"], data["per_endpoint"])


def endpoints_for(args: argparse.Namespace) -> int:
    """coap_trio's client_endpoints: enough MIDs for 40,000 req/s over a run (or --endpoints)."""
    return int(
        args.endpoints
        or max(1, math.ceil(SIZED_FOR_RATE * (args.duration + args.warmup) / (MID_LIMIT * 0.9)))
    )


async def collect(
    args: argparse.Namespace, uri: str, log: Callable[[str], None] = print
) -> dict[tuple[str, str], list[Result]]:
    """Every (mode, library) measured ``args.runs`` times, interleaved, against ``uri``."""
    endpoints = endpoints_for(args)
    results: dict[tuple[str, str], list[Result]] = {}
    for run in range(1, args.runs + 1):
        for mode, concurrency in MODES:
            for library in LIBRARIES:
                result = await measure(library, uri, concurrency, args, endpoints)
                results.setdefault((mode, library), []).append(result)
                extra = ""
                if result.other or result.errors:
                    extra += f"  (not 2.05: {result.other}, errors: {result.errors})"
                if result.per_endpoint:
                    used = sum(1 for n in result.per_endpoint if n)
                    extra += (
                        f"  [endpoints used: {used}/{len(result.per_endpoint)}, "
                        f"max sent on one: {max(result.per_endpoint)}]"
                    )
                log(f"  run {run}  {mode:<13} {library:<10} {result.rate:>10,.0f} req/s{extra}")
    return results


def measure_clients(
    args: argparse.Namespace, log: Callable[[str], None] = print
) -> dict[tuple[str, str], list[Result]]:
    """Start one ``coap-server-notls`` (pinned), measure every mode and library, stop it."""
    args.server_cpu, args.client_cpu = cpu_plan()
    server = start_libcoap_server(None if args.server_cpu is None else [args.server_cpu])
    try:
        return trio.run(collect, args, server.uri(PATH))
    finally:
        server.stop()


def orchestrate(args: argparse.Namespace) -> None:
    print(describe_machine())
    print(
        f"server: coap-server-notls, GET {PATH}; {args.duration:g} s per run after "
        f"{args.warmup:g} s warm-up, median of {args.runs} runs; "
        f"coap_trio client_endpoints={endpoints_for(args)}"
    )
    print()
    results = measure_clients(args)
    print()
    report(results, endpoints_for(args))


def report(results: dict[tuple[str, str], list[Result]], endpoints: int) -> None:
    header = (
        f"{'mode':<14} {'coap_trio req/s':>16} {'aiocoap req/s':>14} "
        f"{'coap_trio/aiocoap':>18}  target >= {TARGET_RATIO:g}x"
    )
    print(header)
    print("-" * len(header))
    all_met = True
    most_per_endpoint = 0
    for mode, _ in MODES:
        ours = statistics.median(r.rate for r in results[(mode, "coap_trio")])
        theirs = statistics.median(r.rate for r in results[(mode, "aiocoap")])
        ratio = ours / theirs if theirs else math.inf
        met = ratio >= TARGET_RATIO
        all_met &= met
        print(
            f"{mode:<14} {ours:>16,.0f} {theirs:>14,.0f} {ratio:>17.2f}x  "
            f"{'met' if met else 'NOT met'}"
        )
        for r in results[(mode, "coap_trio")]:
            most_per_endpoint = max(most_per_endpoint, max(r.per_endpoint, default=0))
    print()
    print(f"target (coap_trio >= {TARGET_RATIO:g}x aiocoap in every mode): ", end="")
    print("met" if all_met else "NOT met")
    within = "within" if most_per_endpoint < MID_LIMIT else "EXCEEDING"
    print(
        f"MID rule: client_endpoints={endpoints}; the most datagrams one endpoint sent in a run: "
        f"{most_per_endpoint:,} ({within} {MID_LIMIT:,} per EXCHANGE_LIFETIME)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 0.2 s warm-up")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before counting")
    parser.add_argument(
        "--endpoints",
        type=int,
        default=0,
        help="coap_trio client_endpoints (default: sized for 40,000 req/s)",
    )
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.quick:
        args.duration = 1.0
        args.warmup = 0.2
    orchestrate(args)


if __name__ == "__main__":
    main()
