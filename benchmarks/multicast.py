"""Multicast fan-in: one group request, 50 responders, coap_trio's client against libcoap's.

Run by hand as root (not collected by pytest; needs libcoap3-bin, ``unshare``
and ``ip``; Linux)::

    python benchmarks/multicast.py              # 50 responders, 20 rounds
    python benchmarks/multicast.py --quick      # 10 responders, 3 rounds

Everything happens in a network namespace the script makes (``unshare -n``;
the host's interfaces are never touched), on its loopback with a route for
224.0.0.0/4. The responders are 50 coap_trio Contexts in one process, each
bound to its own address (127.0.1.1 to 127.0.1.50, port 5683) and joined to
224.0.1.187 (a coap_trio server receives the group on a socket bound to the
group address and answers from its own unicast socket, so members can share
a host), answering ``GET /hello`` within a Leisure of ``--leisure`` seconds
(0.2 by default: nearly a burst, the hard case for a client).

Each round, a client sends one NON ``GET coap://224.0.1.187/hello`` and
collects answers for ``--leisure`` + 0.5 s:

* coap_trio: ``ctx.multicast(...)`` from one Context in this process, its
  CPU time read around each round (``time.process_time``; the waiting costs
  nothing, no start-up included);
* libcoap: ``coap-client-notls -N -B <window>``, one process per round, its
  CPU time read from ``getrusage(RUSAGE_CHILDREN)`` (its start-up, ~1-2 ms,
  included).

Reported: the answers each client took per round (all 50 is the target:
none lost in the socket buffer) and CPU milliseconds per round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GROUP = "224.0.1.187"


def _responders(count: int, leisure: float) -> None:
    """The responder process: ``count`` Contexts joined to the group, until killed."""
    import trio

    from coap_trio import Code, Message, Resource, Site, open_context

    class Hello(Resource):
        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, payload=b"hello")

    async def main() -> None:
        site = Site()
        site.add(("hello",), Hello())
        async with trio.open_nursery() as nursery:
            for n in range(1, count + 1):
                nursery.start_soon(_member, n, site)
            await trio.sleep(0.5)
            print("ready", flush=True)

    async def _member(n: int, site: Site) -> None:
        async with open_context(
            bind=(f"127.0.1.{n}", 5683),
            site=site,
            multicast_groups=[GROUP],
            multicast_leisure=leisure,
        ):
            await trio.sleep_forever()

    trio.run(main)


async def _our_rounds(rounds: int, window: float) -> list[tuple[int, float]]:
    """``rounds`` group requests from one Context: answers and CPU seconds of each."""
    from coap_trio import open_context

    measured = []
    async with open_context() as ctx:
        for _ in range(rounds):
            started = time.process_time()
            answers = 0
            async with ctx.multicast(f"coap://{GROUP}/hello", timeout=window) as responses:
                async for _ in responses:
                    answers += 1
            measured.append((answers, time.process_time() - started))
    return measured


def _libcoap_round(window: float) -> tuple[int, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [
            "coap-client-notls",
            "-N",
            "-m",
            "get",
            "-B",
            str(max(1, round(window))),
            "-v",
            "6",
            f"coap://{GROUP}/hello",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    answers = sum("c:2.05" in line for line in done.stdout.decode(errors="replace").splitlines())
    return answers, cpu


def _inside(args: argparse.Namespace) -> None:
    """In the namespace: loopback up with a multicast route, the responders, the rounds."""
    import trio

    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "set", "lo", "multicast", "on"],
        ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"],
    ):
        subprocess.run(command, check=True, timeout=10)
    responders = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--responders",
            str(args.responders),
            "--leisure",
            str(args.leisure),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert responders.stdout is not None
        if b"ready" not in responders.stdout.readline():
            raise RuntimeError("the responders did not start")
        window = args.leisure + 0.5
        ours = trio.run(_our_rounds, args.rounds, window)
        theirs = [_libcoap_round(window) for _ in range(args.rounds)]
        print(json.dumps({"coap_trio": ours, "libcoap": theirs}))
    finally:
        responders.kill()
        responders.wait(timeout=10)


def measure(responders: int, rounds: int, leisure: float) -> dict[str, list[list[float]]]:
    """Run the benchmark in a namespace of its own; per client, [answers, cpu s] per round."""
    done = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            __file__,
            "--inside",
            "--responders",
            str(responders),
            "--rounds",
            str(rounds),
            "--leisure",
            str(leisure),
        ],
        capture_output=True,
        timeout=600,
        check=True,
    )
    result: dict[str, list[list[float]]] = json.loads(done.stdout)
    return result


def summary(result: dict[str, list[list[float]]]) -> dict[str, tuple[float, float]]:
    """Per client: the median answers per round and the median CPU ms per round."""
    return {
        name: (
            statistics.median(answers for answers, _ in rounds),
            statistics.median(cpu for _, cpu in rounds) * 1000,
        )
        for name, rounds in result.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responders", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--leisure", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _responders(args.responders, args.leisure)
        return
    if args.inside:
        _inside(args)
        return
    if args.quick:
        args.responders, args.rounds = 10, 3
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark makes a network namespace (unshare -n)")
    result = measure(args.responders, args.rounds, args.leisure)
    for name, (answers, cpu) in summary(result).items():
        print(
            f"{name:10} {answers:5.0f} of {args.responders} answers per round, "
            f"{cpu:7.2f} ms CPU per round"
        )


if __name__ == "__main__":
    main()
