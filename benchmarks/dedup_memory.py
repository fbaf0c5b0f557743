"""Memory per entry and speed of the deduplication store (``DedupStore``).

Run by hand (not collected by pytest)::

    python benchmarks/dedup_memory.py            # 200,000 entries, 1,000,000 operations
    python benchmarks/dedup_memory.py --quick    # 50,000 entries, 200,000 operations

What it does, each part in a fresh child process (this script again, hidden
option ``--part``) so that one part's freed memory does not hide the next
one's growth:

* ``tracemalloc``: fills a store to its bound (``--entries``, default the
  messaging layer's 200,000, with a per-remote bound of 20,000) and prints
  the bytes that tracemalloc saw allocated per entry, first after the fill,
  then after as many records again (the *plateau*: each record evicts the
  oldest entry, as on a server under overload);
* ``rss``: the same without tracemalloc, reading the process's resident
  set size from ``/proc/self/statm`` before and after (growth per entry);
* ``speed``: ``--operations`` pairs of ``lookup`` (of a new message ID,
  as the server's receive path does first) and ``record`` into a store with
  the default bounds, best of three, in nanoseconds of the process's CPU
  time per pair (CPU time, not wall-clock time: other processes' load
  moves it less).

The entries are what a server records: the remotes are ``DatagramRemote``
objects (``--remotes`` of them, default 5,000, made once, as the UDP
transport interns them), each sending consecutive message IDs; 90% are CON
with a reply to replay (a third of them empty ACKs of 4 bytes, the rest
piggybacked responses of 20 to 60 bytes, each a new bytes object as the
encoder makes them), 10% NON (no reply). Time advances by 50 microseconds
per record, so nothing expires during a run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

from coap_trio.codec import encode_empty
from coap_trio.numbers.types import Type
from coap_trio.protocol.dedup import DedupStore
from coap_trio.remote import DatagramRemote

EXCHANGE_LIFETIME = 247.0
NON_LIFETIME = 145.0
STEP = 0.00005  # seconds between two records


def make_remotes(count: int) -> list[DatagramRemote]:
    return [
        DatagramRemote((f"2001:db8::{i >> 8:x}:{i & 0xFF:x}", 1024 + (i * 7919) % 60000, 0, 0))
        for i in range(count)
    ]


def make_work(
    remotes: list[DatagramRemote], next_mid: list[int], count: int, seed: int
) -> Callable[[DedupStore, float], float]:
    """A function recording ``count`` realistic entries into a store, from time ``now``.

    ``next_mid`` holds each remote's next message ID (advanced by the function).
    """
    rng = random.Random(seed)
    picks = [rng.randrange(len(remotes)) for _ in range(count)]
    kinds = [rng.random() for _ in range(count)]
    sizes = [rng.randrange(20, 61) for _ in range(count)]
    payload = bytes(rng.randrange(256) for _ in range(64))
    ack = Type.ACK

    def work(store: DedupStore, now: float) -> float:
        for pick, kind, size in zip(picks, kinds, sizes, strict=True):
            remote = remotes[pick]
            mid = next_mid[pick]
            next_mid[pick] = (mid + 1) & 0xFFFF
            now += STEP
            if kind < 0.1:
                store.record(remote, mid, None, NON_LIFETIME, now)
                continue
            if kind < 0.4:
                reply = encode_empty(ack, mid)
            else:  # a piggybacked 2.05: header, token, a few bytes of payload
                reply = b"\x68\x45" + mid.to_bytes(2, "big") + payload[: size - 4]
            store.record(remote, mid, reply, EXCHANGE_LIFETIME, now)
        return now

    return work


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def part_memory(args: argparse.Namespace, traced: bool) -> dict[str, float]:
    remotes = make_remotes(args.remotes)
    next_mid = [random.Random(i).randrange(65536) for i in range(len(remotes))]
    fill = make_work(remotes, next_mid, args.entries, 1)
    churn = make_work(remotes, next_mid, args.entries, 2)
    gc.collect()
    if traced:
        tracemalloc.start()
        measure: Callable[[], int] = lambda: tracemalloc.get_traced_memory()[0]  # noqa: E731
    else:
        measure = rss_bytes
    before = measure()
    store = DedupStore(max_total=args.entries, max_per_remote=20_000)
    now = fill(store, 0.0)
    gc.collect()
    filled = measure()
    assert len(store) == args.entries, len(store)
    churn(store, now)
    gc.collect()
    plateau = measure()
    assert len(store) == args.entries
    assert store.evicted == args.entries, store.evicted
    return {
        "fill": (filled - before) / args.entries,
        "plateau": (plateau - before) / args.entries,
    }


def part_speed(args: argparse.Namespace) -> dict[str, float]:
    remotes = make_remotes(args.remotes)
    rng = random.Random(3)
    picks = [remotes[rng.randrange(len(remotes))] for _ in range(args.operations)]
    replies = [encode_empty(Type.ACK, i & 0xFFFF) for i in range(256)]
    best = float("inf")
    for _ in range(3):
        store = DedupStore()
        lookup = store.lookup
        record = store.record
        now = 0.0
        gc.collect()
        start = time.process_time()
        for i, remote in enumerate(picks):
            mid = i & 0xFFFF
            now += STEP
            if lookup(remote, mid, now) is None:
                record(remote, mid, replies[i & 0xFF], EXCHANGE_LIFETIME, now)
        best = min(best, time.process_time() - start)
        assert len(store) == min(200_000, args.operations)
    return {"ns_per_pair": best / args.operations * 1e9}


def run_part(part: str, args: argparse.Namespace) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--entries",
        str(args.entries),
        "--remotes",
        str(args.remotes),
        "--operations",
        str(args.operations),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--remotes", type=int, default=5_000)
    parser.add_argument("--operations", type=int, default=1_000_000)
    parser.add_argument("--part", choices=["tracemalloc", "rss", "speed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.entries, args.operations = 50_000, 200_000
    if args.part == "speed":
        print(json.dumps(part_speed(args)))
        return
    if args.part is not None:
        print(json.dumps(part_memory(args, traced=args.part == "tracemalloc")))
        return
    print(
        f"Python {sys.version.split()[0]}; {args.entries:,} entries, {args.remotes:,} remotes, "
        f"{args.operations:,} lookup+record pairs"
    )
    traced = run_part("tracemalloc", args)
    rss = run_part("rss", args)
    speed = run_part("speed", args)
    print("bytes per entry      after the fill   at the plateau (as many records again)")
    print(f"  tracemalloc        {traced['fill']:14.1f}   {traced['plateau']:14.1f}")
    print(f"  RSS growth         {rss['fill']:14.1f}   {rss['plateau']:14.1f}")
    print(f"lookup + record: {speed['ns_per_pair']:.0f} ns per pair (best of 3)")


if __name__ == "__main__":
    main()
