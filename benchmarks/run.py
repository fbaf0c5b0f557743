"""The benchmark suite: every scenario, coap_trio and its peers in the same run, one table.

Run by hand (not part of CI's pass/fail; needs libcoap3-bin and aiocoap; Linux)::

    python benchmarks/run.py               # the full suite (~12 min on 2 CPUs)
    python benchmarks/run.py --quick       # short runs (~3 min): to check the suite works
    python benchmarks/run.py --only server workers

Scenarios (each uses the measurement functions of its own script, which
also runs alone and says more about its method):

* ``codec`` (codec.py): encode and decode of three messages, coap_trio vs
  aiocoap (timeit, medians);
* ``server`` (server.py): requests/s of coap_trio, aiocoap and libcoap's
  ``coap-server-notls`` under a raw UDP load generator (pre-encoded CON GETs
  of a 5-byte resource, distinct MIDs and tokens over 8 sockets, 64 in
  flight, fixed duration; only 2.05 responses count), each server's CPU
  seconds and 2.05 per server CPU-second, and the generator's own CPU;
* ``workers`` (server.py's generator, 32 sockets x 2 in flight, since the
  kernel spreads source addresses over the workers): ``coap-trio serve
  plugtest --workers 2`` against ``--workers 1`` (GET /test), the
  CPU-seconds summed over the workers;
* ``client`` (client.py): client requests/s against one
  ``coap-server-notls``, sequential and 64 in flight, coap_trio vs aiocoap;
* ``observe`` (observe.py): RSS per observation with 10,000 observations
  (one client socket each) and the time for one change to reach them all,
  coap_trio vs aiocoap vs libcoap;
* ``blockwise`` (blockwise.py): a 1 MiB GET in 1024-byte blocks, every
  client (coap_trio, aiocoap, ``coap-client-notls -b 1024``) against every
  server;
* ``tcp`` (tcp.py): client requests/s over ONE ``coap+tcp`` connection to
  ``coap-server-notls`` with 64 in flight, coap_trio vs aiocoap (RFC 8323);
* ``proxy`` (proxy.py): proxied requests/s (64 in flight, Proxy-Uri) through
  ``coap-trio serve proxy`` and libcoap's ``coap-server-notls -P`` to one
  ``coap-server-notls``, every request a cache miss, then all cache hits;
* ``multicast`` (multicast.py, as root: it makes a network namespace): one
  group GET answered by 50 coap_trio responders, coap_trio's client against
  ``coap-client-notls``: answers taken per round and CPU ms per round;
* ``oscore`` (oscore.py): OSCORE-protected requests/s (RFC 8613), server
  (pre-protected requests from a raw generator) and client (64 in flight
  against a coap_trio OSCORE server), coap_trio vs aiocoap, and the bytes
  one security context takes;
* ``dtls`` (dtls.py): coaps:// with a pre-shared key: bytes per established
  session (server RSS, coap_trio and ``coap-server-openssl``), PSK
  handshakes per second against each (coap_trio's engine as the client),
  and coap_trio's client's requests/s over one DTLS session relative to
  plain UDP in the same run, against each server;
* ``soak`` (soak.py, short form): ``coap-trio serve plugtest`` under the
  overload of soak.py for 1 minute (``--quick``: 30 s), RSS and descriptors
  sampled every 10 s, and 20,000 client operations (``--quick``: 5,000)
  from one Context with cancellations, timeouts and abandoned observations,
  tasks, descriptors, requests in flight and the Context's tables compared
  before and after (memory is shown, and judged only by soak.py itself,
  which waits for the deduplication entries to expire); each with its
  verdict.

Each figure is the median of ``--runs`` runs (observe and block-wise:
``--slow-runs``); runs that do not count are listed under the table with the
reason (the generator could not keep 64 requests in flight, a failed
transfer, an incomplete registration...). Servers are pinned to one CPU and
the load side to another when there are two or more (``workers``: with four
or more, the two workers get two CPUs and the generator a third; with fewer,
nothing is pinned). The load average is printed before and after every
scenario: figures taken on a loaded machine are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import _peers
import blockwise
import client
import codec
import dtls
import multicast
import observe
import oscore
import proxy
import server
import soak
import tcp

SCENARIOS = (
    "codec",
    "server",
    "workers",
    "client",
    "observe",
    "blockwise",
    "tcp",
    "proxy",
    "multicast",
    "oscore",
    "dtls",
    "soak",
)


@dataclass
class Row:
    """One line of the table: a figure for each implementation and the target's verdict."""

    scenario: str
    figure: str
    values: dict[str, str]
    ratio: str = ""
    target: str = ""


@dataclass
class Table:
    """The suite's table and its notes (discarded runs, limits)."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: str, **values: str) -> None:
        """A row: scenario, figure, ratio, target, and the values by implementation."""
        scenario, figure, ratio, target = args
        self.rows.append(Row(scenario, figure, values, ratio, target))


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("inf")


def _log(line: str) -> None:
    print(line, flush=True)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the scenarios -----------------------------------------------------------------------


def run_codec(args: argparse.Namespace, table: Table) -> None:
    repeat, seconds = (9, 0.02) if args.quick else (25, 0.1)
    for case, op, size, trio_t, aio_t in codec.measure_cases(repeat, seconds):
        ratio = aio_t.median_us / trio_t.median_us
        table.add(
            "codec",
            f"{op} {case.name.split(' (')[0]} ({size} B), µs",
            f"{ratio:.1f}x faster",
            f">= {codec.TARGET_RATIO:g}x: {_verdict(ratio >= codec.TARGET_RATIO)}",
            coap_trio=f"{trio_t.median_us:.2f}",
            aiocoap=f"{aio_t.median_us:.2f}",
        )


def _server_args(
    args: argparse.Namespace, server_cpu: int | None, load_cpu: int | None
) -> argparse.Namespace:
    return argparse.Namespace(
        duration=args.duration,
        warmup=args.warmup,
        runs=args.runs,
        sockets=8,
        per_socket=8,
        timeout=1.0,
        server_cpu=server_cpu,
        generator_cpu=load_cpu,
    )


def _server_notes(table: Table, scenario: str, summaries: list[server.Summary]) -> None:
    for row in summaries:
        for note in row.discarded:
            table.notes.append(f"{scenario}, {row.name}: {note}")
        if row.generator_bound:
            table.notes.append(
                f"{scenario}, {row.name}: the generator used ~a whole CPU: "
                "it may have been the limit"
            )


def run_server(args: argparse.Namespace, table: Table) -> None:
    server_cpu, load_cpu = _peers.cpu_plan()
    sargs = _server_args(args, server_cpu, load_cpu)
    peers = []
    try:
        peers.append(server.start_python_server("coap_trio", server_cpu))
        peers.append(server.start_python_server("aiocoap", server_cpu))
        peers.append(server.start_libcoap_server(server_cpu))
        for peer in peers:
            server.check_server(peer)
        runs = server.measure_servers(peers, sargs, log=_log)
    finally:
        for peer in peers:
            peer.stop()
    rows = {name: server.summarize(name, r) for name, r in runs.items()}
    trio_r, aio_r, lib_r = rows["coap_trio"], rows["aiocoap"], rows["libcoap"]
    vs_aio, vs_lib = _ratio(trio_r.rate, aio_r.rate), _ratio(trio_r.rate, lib_r.rate)
    table.add(
        "server",
        "2.05 responses/s (64 in flight)",
        f"{vs_aio:.1f}x aiocoap, {vs_lib:.0%} of libcoap",
        f">= 15x aiocoap: {_verdict(vs_aio >= 15)}; >= 50% of libcoap: {_verdict(vs_lib >= 0.5)}",
        **{name: f"{r.rate:,.0f}" for name, r in rows.items()},
    )
    table.add(
        "server",
        "server CPU s per run",
        "",
        "",
        **{name: f"{r.server_cpu:.2f}" for name, r in rows.items()},
    )
    eff_aio = _ratio(trio_r.per_cpu_second, aio_r.per_cpu_second)
    eff_lib = _ratio(trio_r.per_cpu_second, lib_r.per_cpu_second)
    table.add(
        "server",
        "2.05 per server CPU-second",
        f"{eff_aio:.1f}x aiocoap, {eff_lib:.0%} of libcoap",
        "",
        **{name: f"{r.per_cpu_second:,.0f}" for name, r in rows.items()},
    )
    table.add(
        "server",
        "generator CPU s per run",
        "",
        "",
        **{name: f"{r.generator_cpu:.2f}" for name, r in rows.items()},
    )
    _server_notes(table, "server", list(rows.values()))


def run_workers(args: argparse.Namespace, table: Table) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 4:
        server_cpus: list[int] | None = cpus[:2]
        load_cpu: int | None = cpus[2]
        pinning = f"workers on CPUs {cpus[0]},{cpus[1]}, generator on CPU {cpus[2]}"
    else:
        server_cpus, load_cpu = None, None
        pinning = f"not pinned: {len(cpus)} CPUs shared by the workers and the generator"
    sargs = _server_args(args, None, load_cpu)
    # 64 in flight again, from 32 source ports: the kernel spreads source addresses, not
    # requests, over the workers, and 8 addresses could split unevenly.
    sargs.sockets, sargs.per_socket = 32, 2
    peers = []
    try:
        for workers in (1, 2):
            peers.append(_peers.start_coap_trio_serve(["plugtest"], workers, server_cpus))
        for peer in peers:
            server.check_server(peer, "test")
        runs = server.measure_servers(peers, sargs, "test", log=_log)
    finally:
        for peer in peers:
            peer.stop()
    rows = {name: server.summarize(name, r) for name, r in runs.items()}
    one, two = rows["coap_trio x1"], rows["coap_trio x2"]
    gain = _ratio(two.rate, one.rate)
    table.add(
        "workers",
        "serve plugtest GET /test, 2.05/s",
        f"{gain:.2f}x with 2 workers",
        f">= 1.3x: {_verdict(gain >= 1.3)}",
        **{"1 worker": f"{one.rate:,.0f}", "2 workers": f"{two.rate:,.0f}"},
    )
    table.add(
        "workers",
        "2.05 per server CPU-second (summed over workers)",
        f"{_ratio(two.per_cpu_second, one.per_cpu_second):.2f}x",
        "",
        **{"1 worker": f"{one.per_cpu_second:,.0f}", "2 workers": f"{two.per_cpu_second:,.0f}"},
    )
    table.add(
        "workers",
        "server CPU s / generator CPU s per run",
        "",
        "",
        **{
            "1 worker": f"{one.server_cpu:.2f} / {one.generator_cpu:.2f}",
            "2 workers": f"{two.server_cpu:.2f} / {two.generator_cpu:.2f}",
        },
    )
    table.notes.append(f"workers: {pinning}")
    _server_notes(table, "workers", [one, two])


def run_client(args: argparse.Namespace, table: Table) -> None:
    cargs = argparse.Namespace(
        duration=args.duration, warmup=args.warmup, runs=args.runs, endpoints=0
    )
    results = client.measure_clients(cargs, log=_log)
    for mode, _ in client.MODES:
        medians = {}
        for library in client.LIBRARIES:
            runs = results[(mode, library)]
            kept = [r for r in runs if r.ok and (r.other + r.errors) <= 0.01 * r.ok]
            for i, r in enumerate(runs):
                if r not in kept:
                    table.notes.append(
                        f"client {mode}, {library}: run {i + 1} discarded "
                        f"({r.ok} answered 2.05, {r.other} other, {r.errors} errors)"
                    )
            medians[library] = statistics.median(r.rate for r in (kept or runs))
        ratio = _ratio(medians["coap_trio"], medians["aiocoap"])
        table.add(
            "client",
            f"requests/s to coap-server-notls, {mode}",
            f"{ratio:.1f}x aiocoap",
            f">= {client.TARGET_RATIO:g}x: {_verdict(ratio >= client.TARGET_RATIO)}",
            **{name: f"{value:,.0f}" for name, value in medians.items()},
        )


def run_tcp(args: argparse.Namespace, table: Table) -> None:
    targs = argparse.Namespace(duration=args.duration, runs=args.runs, in_flight=64)
    results = tcp.measure_tcp(targs, log=_log)
    medians = {}
    for library, runs in results.items():
        for i, r in enumerate(runs):
            if r["other"] > 0.01 * r["ok"] or r["connections"] != 1:
                table.notes.append(
                    f"tcp, {library}: run {i + 1} had {r['other']} other answers and "
                    f"{r['connections']} connection(s)"
                )
        medians[library] = statistics.median(r["rate"] for r in runs)
    ratio = tcp.pair_ratio(results)  # the median of back-to-back pairs (see tcp.py)
    table.add(
        "tcp",
        "requests/s over one coap+tcp connection to coap-server-notls, 64 in flight",
        f"{ratio:.1f}x aiocoap",
        f">= {tcp.TARGET_RATIO:g}x: {_verdict(ratio >= tcp.TARGET_RATIO)}",
        **{name: f"{value:,.0f}" for name, value in medians.items()},
    )


def run_observe(args: argparse.Namespace, table: Table) -> None:
    oargs = argparse.Namespace(
        observers=args.observers,
        sockets=0,
        inflight=64,
        register_timeout=300.0,
        fanout_timeout=60.0,
    )
    names = ["coap_trio", "aiocoap", "libcoap"]
    by_name: dict[str, list[observe.Result]] = {name: [] for name in names}
    for run in range(args.slow_runs):
        _log(f"  observe run {run + 1}")
        for result in observe.measure_servers(names, oargs, log=_log):
            by_name[result.name].append(result)
    kb: dict[str, float] = {}
    fanout: dict[str, float] = {}
    for name, results in by_name.items():
        kept = [r for r in results if r.complete]
        for i, r in enumerate(results):
            if not r.complete:
                table.notes.append(
                    f"observe, {name}: run {i + 1} discarded ({r.registered}/{r.observers} "
                    f"registered, {r.notified} notified)"
                )
        chosen = kept or results
        kb[name] = statistics.median(r.per_observation for r in chosen) / 1024
        fanout[name] = statistics.median(r.fanout_seconds for r in chosen)
    table.add(
        "observe",
        f"RSS per observation, KB ({args.observers:,} observations)",
        f"{_ratio(kb['aiocoap'], kb['coap_trio']):.1f}x less than aiocoap",
        f"<= 4 KB: {_verdict(kb['coap_trio'] <= 4)}",
        **{name: f"{value:.2f}" for name, value in kb.items()},
    )
    table.add(
        "observe",
        f"one change to all {args.observers:,} observers, ms",
        f"{_ratio(fanout['libcoap'], fanout['coap_trio']):.2f}x libcoap's speed",
        f"faster than libcoap: {_verdict(fanout['coap_trio'] < fanout['libcoap'])}",
        **{name: f"{value * 1e3:.0f}" for name, value in fanout.items()},
    )
    table.notes.append(
        "observe: fan-out is from the request that changes the resource (POST /trigger; "
        "libcoap: PUT /example_data) to the last observer's notification"
    )


def run_blockwise(args: argparse.Namespace, table: Table) -> None:
    bargs = argparse.Namespace(
        repeat=2 if args.quick else 5,
        runs=args.slow_runs,
        timeout=120.0,
        servers=list(blockwise.SERVERS),
        clients=list(blockwise.CLIENTS),
    )
    per_run, failures = blockwise.collect(bargs, log=_log)
    for key, messages in failures.items():
        for message in messages:
            table.notes.append(f"block-wise, {key[0]} client -> {key[1]} server: {message}")
    rates = {key: statistics.median(values) for key, values in per_run.items()}
    for server_name in blockwise.SERVERS:
        values = {
            name: f"{rates[(name, server_name)]:.2f}" if (name, server_name) in rates else "-"
            for name in blockwise.CLIENTS
        }
        ours, theirs = rates.get(("coap_trio", server_name)), rates.get(("libcoap", server_name))
        ratio = _ratio(ours, theirs) if ours and theirs else 0.0
        table.add(
            "blockwise",
            f"1 MiB GET from the {server_name} server, MB/s by client",
            f"{ratio:.2f}x coap-client-notls",
            f">= coap-client-notls: {_verdict(ratio >= 1.0)}",
            **values,
        )


def run_proxy(args: argparse.Namespace, table: Table) -> None:
    pargs = argparse.Namespace(duration=args.duration, runs=args.runs)
    results = proxy.measure_proxies(pargs, log=_log)
    rates = proxy.medians(results)
    for (name, mode), runs in results.items():
        for i, r in enumerate(runs):
            if r["other"] or r["lost"]:
                table.notes.append(
                    f"proxy {mode}, {name}: run {i + 1} had {r['other']} other answers "
                    f"and {r['lost']} lost requests"
                )
    for mode in proxy.MODES:
        ours, theirs = rates[("coap_trio", mode)], rates[("libcoap", mode)]
        table.add(
            "proxy",
            f"proxied GETs/s, {mode}, 64 in flight",
            f"{_ratio(ours, theirs):.2f}x libcoap's proxy",
            "",
            coap_trio=f"{ours:,.0f}",
            libcoap=f"{theirs:,.0f}",
        )


def run_multicast(args: argparse.Namespace, table: Table) -> None:
    if os.geteuid() != 0:
        table.notes.append("multicast: not run (it needs root to make a network namespace)")
        return
    responders, rounds = (10, 3) if args.quick else (50, 20)
    figures = multicast.summary(multicast.measure(responders, rounds, 0.2))
    ours, theirs = figures["coap_trio"], figures["libcoap"]
    table.add(
        "multicast",
        f"answers taken of {responders}, per group GET",
        "",
        "all" if ours[0] == responders else "NOT all",
        coap_trio=f"{ours[0]:.0f}",
        libcoap=f"{theirs[0]:.0f}",
    )
    table.add(
        "multicast",
        f"client CPU ms per group GET ({responders} answers)",
        f"{_ratio(theirs[1], ours[1]):.2f}x libcoap's speed",
        "",
        coap_trio=f"{ours[1]:.2f}",
        libcoap=f"{theirs[1]:.2f}",
    )


def run_oscore(args: argparse.Namespace, table: Table) -> None:
    oargs = argparse.Namespace(runs=args.runs, duration=args.duration, sockets=8)
    results = oscore.measure(oargs, log=_log)
    rates = oscore.medians(results)
    for side, figure in (
        ("server", "OSCORE requests/s served, 64 in flight from a raw generator"),
        ("server_per_cpu", "OSCORE requests served per server CPU-second"),
        ("client", "OSCORE requests/s of a client, 64 in flight, to a coap_trio server"),
        ("client_per_cpu", "OSCORE requests per client CPU-second"),
    ):
        ratio = _ratio(rates[side]["coap_trio"], rates[side]["aiocoap"])
        table.add(
            "oscore",
            figure,
            f"{ratio:.1f}x aiocoap",
            f">= {oscore.TARGET_RATIO:g}x: {_verdict(ratio >= oscore.TARGET_RATIO)}",
            **{name: f"{value:,.0f}" for name, value in rates[side].items()},
        )
    table.add(
        "oscore",
        "bytes per security context (tracemalloc, 10,000 contexts)",
        "",
        "",
        **{name: f"{value:,.0f}" for name, value in results["bytes"].items()},
    )
    for library, shares in results["client_server_cpu"].items():
        table.notes.append(
            f"oscore client, {library}: the server's CPU share over each client process: "
            + ", ".join(f"{share:.0%}" for share in shares)
        )
    for library, runs in results["client"].items():
        table.notes.append(
            f"oscore client, {library}: CPU / runnable but waiting for a CPU, in each "
            f"{oargs.duration:g} s measurement: "
            + ", ".join(f"{run['cpu']:.2f} s / {run.get('waited', 0.0):.2f} s" for run in runs)
        )


def run_dtls(args: argparse.Namespace, table: Table) -> None:
    dargs = argparse.Namespace(
        sessions=300 if args.quick else 2000,
        duration=args.duration,
        warmup=args.warmup,
        runs=args.runs,
        parts=list(dtls.PARTS),
    )
    figures = dtls.measure_all(dargs, log=_log)
    table.notes.extend(figures.notes)
    ours = figures.session_bytes["coap_trio"]
    table.add(
        "dtls",
        f"bytes per established PSK session (server RSS, {dargs.sessions:,} sessions)",
        "python-mbedtls: ~46 KB (not run here: a test-only peer)",
        f"<= 8 KB: {_verdict(ours <= dtls.TARGET_SESSION_BYTES)}",
        coap_trio=f"{ours:,.0f}",
        libcoap=f"{figures.session_bytes['libcoap']:,.0f}",
    )
    if figures.closings:
        seconds = statistics.median(c.seconds for c in figures.closings)
        last = figures.closings[-1]
        table.add(
            "dtls",
            f"leaving open_context with {last.sessions:,} established sessions, ms",
            f"close_notify received by {last.received:,} of {last.sessions:,} peers",
            "",
            coap_trio=f"{seconds * 1000:,.1f}",
        )
    rates = figures.handshake_rates
    table.add(
        "dtls",
        "PSK handshakes/s, 16 in flight (coap_trio's engine as the client)",
        f"{_ratio(rates['coap_trio'], rates['libcoap']):.2f}x coap-server-openssl",
        "",
        coap_trio=f"{rates['coap_trio']:,.0f}",
        libcoap=f"{rates['libcoap']:,.0f}",
    )
    for name, share in figures.shares.items():
        udp = figures.request_rates[(name, "coap")]
        over_dtls = figures.request_rates[(name, "coaps")]
        table.add(
            "dtls",
            f"coap_trio client, GET/s over one DTLS session to the {name} server, 64 in flight",
            f"{share:.0%} of plain UDP ({udp:,.0f}/s) in the same run",
            f">= 50%: {_verdict(share >= dtls.TARGET_SHARE)}",
            coap_trio=f"{over_dtls:,.0f}",
        )


def run_soak(args: argparse.Namespace, table: Table) -> None:
    parser = argparse.ArgumentParser()
    soak.add_server_options(parser)
    soak.add_client_options(parser)
    sargs = parser.parse_args([])
    sargs.seed = 1
    sargs.minutes = 0.5 if args.quick else 1.0
    sargs.requests = 5_000 if args.quick else 20_000
    sargs.expire_wait = 0.0  # memory is judged by soak.py alone (it waits 247 s for it)
    served = soak.run_server_soak(sargs, _log)
    soak.report_server_soak(served, _log)
    tail = served.last_third()
    mean_ok = statistics.mean(s.ok for s in served.samples) if served.samples else 0.0
    mean_busy = statistics.mean(s.busy for s in served.samples) if served.samples else 0.0
    table.add(
        "soak",
        f"serve plugtest, {sargs.minutes:g} min of overload: RSS idle -> last third, MiB",
        "",
        "plateau: " + ("met" if served.plateau else "NOT met: " + "; ".join(served.problems)),
        coap_trio=(
            f"{served.idle_rss / soak.MIB:.1f} -> "
            f"{min(s.rss for s in tail) / soak.MIB:.1f}..{max(s.rss for s in tail) / soak.MIB:.1f}"
            if tail
            else "-"
        ),
    )
    table.add(
        "soak",
        "serve plugtest under overload: 2.05/s, 5.03/s, descriptors",
        "",
        "",
        coap_trio=(
            f"{mean_ok:,.0f}, {mean_busy:,.0f}, {sorted({s.fds for s in served.samples}) or '-'}"
        ),
    )
    for line in served.targets:
        what, _, verdict = line.rpartition(": ")
        table.add("soak", what, "", verdict, coap_trio="")
    client_soak = soak.run_client_soak(sargs, _log)
    soak.report_client_soak(client_soak, _log)
    before, after = client_soak.before, client_soak.settled
    table.add(
        "soak",
        f"client, {sargs.requests:,} operations: tasks, fds, in flight, traced KiB "
        "(not judged here) before -> after",
        "",
        "back to the start: "
        + ("met" if not client_soak.problems else "NOT met: " + "; ".join(client_soak.problems))
        + f"; operations over {soak.STALL:g} s: {sum(client_soak.timing.stalled.values())}",
        coap_trio=(
            f"{before.tasks} -> {after.tasks}, {before.fds} -> {after.fds}, "
            f"{before.in_flight} -> {after.in_flight}, "
            f"{before.traced / 1024:,.0f} -> {after.traced / 1024:,.0f}"
        ),
    )


RUNNERS: dict[str, Callable[[argparse.Namespace, Table], None]] = {
    "codec": run_codec,
    "server": run_server,
    "workers": run_workers,
    "client": run_client,
    "observe": run_observe,
    "blockwise": run_blockwise,
    "tcp": run_tcp,
    "proxy": run_proxy,
    "multicast": run_multicast,
    "oscore": run_oscore,
    "dtls": run_dtls,
    "soak": run_soak,
}


# -- the table ------------------------------------------------------------------------------


def render(table: Table) -> str:
    """The table as Markdown (readable as text), then the notes."""
    columns = ["scenario", "figure", "coap_trio", "peers", "ratio", "target"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.rows:
        values = dict(row.values)
        ours = values.pop("coap_trio", "")
        if not ours and "2 workers" in values:
            ours = f"2 workers: {values.pop('2 workers')}"
        peers = ", ".join(f"{name}: {value}" for name, value in values.items())
        cells = [row.scenario, row.figure, ours, peers, row.ratio, row.target]
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in table.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs: checks the suite")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3)")
    parser.add_argument("--slow-runs", type=int, help="observe and block-wise runs (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 5; quick: 1)")
    parser.add_argument("--observers", type=int, help="observations (default 10,000)")
    args = parser.parse_args(argv)
    args.runs = args.runs or 3
    args.slow_runs = args.slow_runs or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = 0.2 if args.quick else 1.0
    args.observers = args.observers or (1_000 if args.quick else 10_000)
    _log(_peers.describe_machine())
    _log(
        f"{'QUICK run (short, not for publishing); ' if args.quick else ''}"
        f"{args.duration:g} s per run, {args.runs} runs per figure (observe, block-wise: "
        f"{args.slow_runs}), {args.observers:,} observations"
    )
    table = Table()
    started = time.monotonic()
    for name in args.only or SCENARIOS:
        _log(f"\n== {name} (load average {_load()})")
        before = time.monotonic()
        try:
            RUNNERS[name](args, table)
        except (RuntimeError, OSError, SystemExit, subprocess.SubprocessError) as error:
            table.notes.append(f"{name}: FAILED: {error}")
            _log(f"  {name} failed: {error}")
        table.notes.append(
            f"{name}: {time.monotonic() - before:.0f} s, load average after: {_load()}"
        )
    _log(f"\n{render(table)}")
    _log(f"\n{time.monotonic() - started:.0f} s in all; load average {_load()}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
