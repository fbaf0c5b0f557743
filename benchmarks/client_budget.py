"""Where one request of coap_trio's UDP client goes: a per-request budget, by layer.

Run by hand (not collected by pytest; needs libcoap3-bin, and valgrind and
strace for those parts)::

    python benchmarks/client_budget.py                    # every part (~15 min)
    python benchmarks/client_budget.py --part layers      # CPU µs per layer, natively
    python benchmarks/client_budget.py --part callgrind   # instructions per layer
    python benchmarks/client_budget.py --part strace --part trio --part blockwise

Every part runs coap_trio's client against libcoap's ``coap-server-notls``
(``GET coap://[::1]:PORT/``, a 2.05 answer), in two modes: *sequential*
(one task, one request at a time) and *64 in flight* (64 tasks, NSTART 64),
as ``client.py`` does.

* ``layers``: the CPU time (``time.process_time``: user and system) per
  request of the whole client and of each layer on its own, in one process:
  building the request (``Message(code=GET, uri=...)``), encoding it
  (``codec.encode``), the messaging machine's send path
  (``Messaging.send_request``: token, message ID, the exchange and its
  retransmission timer, the encoding), the ``sendto``, the ``recvfrom_into``
  of a waiting datagram and the failed one (EAGAIN) that ends a batch,
  decoding the response (``codec.decode``), the machine's receive path
  (``Messaging.receive``: decoding, deduplication, matching the token, the
  event), a Block2 download's own work per block (``Block2Download.feed``
  of a 1 KiB block and the request for the next), a trio task woken by
  another (``reschedule`` and the scheduler pass that runs it), a
  ``wait_readable`` on a socket that is readable (the ``epoll_ctl`` that
  re-arms it, the ``epoll_wait`` and the wake-up) and one scheduler pass.
  Each layer is timed over ``--count`` operations, best of ``--rounds``;
  the synchronous ones with the cyclic GC off (the machine's phases keep
  ``--count`` exchanges alive, which a client never does).
  Whatever the whole request costs beyond the layers' sum is the client
  core, the endpoint runner and the receive loop (the Python between them).
* ``callgrind``: the same phases in one process under ``valgrind
  --tool=callgrind --dump-before=os_getppid`` (the worker calls
  ``os.getppid()`` between phases, so each phase is one part of the
  output; what a phase needs prepared is prepared in a part of its own):
  instructions per operation, the interpreter included, and for the
  whole request the inclusive cost of the C functions that make the system
  calls, from ``callgrind_annotate --inclusive=yes``. Load-independent.
* ``strace``: system calls per request: the client run under ``strace -f
  -c`` for ``N1`` and ``N2`` requests, the difference divided by ``N2 - N1``.
* ``blockwise``: system calls per block of a 1 MiB download (1024-byte
  blocks) from libcoap's server, coap_trio's client (three downloads minus
  one) beside ``coap-client-notls -b 1024`` (one download, whole process),
  and the CPU time per block of each (``getrusage``, without strace).
* ``trio``: trio scheduler passes (``before_io_wait``), of which blocking
  (a timeout above 0), task steps and task wakes (``task_scheduled``) per
  request, counted by an instrument over ``--count`` requests.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _peers

PARTS = ("layers", "callgrind", "strace", "trio", "blockwise")
MODES = (("sequential", 1), ("64 in flight", 64))
#: Requests before any measurement (the interpreter's specialisation, the caches).
WARMUP = 500


# -- the worker ------------------------------------------------------------------------------


def _mark() -> None:
    """A phase boundary for callgrind (``--dump-before=os_getppid``)."""
    os.getppid()


async def _requests(ctx: Any, uri: str, count: int, in_flight: int) -> int:
    """``count`` GETs of ``uri`` from ``in_flight`` tasks; the number answered 2.05."""
    import trio

    from coap_trio import Code

    started = answered = 0
    content = Code.CONTENT

    async def loop() -> None:
        nonlocal started, answered
        get = ctx.get
        while started < count:
            started += 1
            response = await get(uri)
            answered += response.code is content

    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(loop)
    return answered


def _layer_phases(port: int) -> list[tuple[str, Callable[[int], Any], Callable[[int], Any] | None]]:
    """The synchronous layers: (name, run(n), prepare(n) or None): ``run`` does its
    operation ``n`` times, ``prepare`` (not measured) sets up what it takes."""
    from coap_trio import Code, Message
    from coap_trio._client.block_messages import Block2FollowUps
    from coap_trio.block import BlockValue
    from coap_trio.codec import decode, encode
    from coap_trio.numbers.types import Type
    from coap_trio.protocol.blockwise_client import Block2Download, FetchBlock
    from coap_trio.protocol.messaging import Messaging
    from coap_trio.remote import DatagramRemote

    uri = f"coap://[{_peers.HOST}]:{port}/"
    get = Code.GET
    remote = DatagramRemote((_peers.HOST, port, 0, 0))
    request = Message(code=get, uri=uri)
    wire = Message(code=get, mtype=Type.CON, mid=0x1234, token=bytes(8), uri=uri)
    encoded = encode(wire)
    answer = Message(
        code=Code.CONTENT, mtype=Type.ACK, mid=0x1234, token=bytes(8), payload=b"hello"
    )
    response = encode(answer)

    def build(n: int) -> None:
        for _ in range(n):
            Message(code=get, uri=uri)

    def encode_request(n: int) -> None:
        for _ in range(n):
            encode(wire)

    def decode_response(n: int) -> None:
        for _ in range(n):
            decode(response, remote)

    machine = Messaging()
    machine.set_nstart(1 << 30)
    pending: list[Any] = []
    answered: list[bytes] = []
    now = [1.0]

    def machine_send(n: int) -> None:
        send = machine.send_request
        when = now[0]
        for _ in range(n):
            pending.append(send(request, remote, when)[0])

    def encode_answers(n: int) -> None:
        """(Not timed) the responses to the requests machine_send sent."""
        for exchange in pending[:n]:
            answer.mid, answer.token = exchange.mid, exchange.token
            answered.append(encode(answer))
        del pending[:n]

    def machine_receive(n: int) -> None:
        receive = machine.receive
        when = now[0]
        for data in answered[:n]:
            receive(data, remote, when)
        del answered[:n]
        now[0] += 300.0  # past EXCHANGE_LIFETIME: the next round finds free message IDs

    sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sink.bind((_peers.HOST, 0))
    sink.setblocking(False)
    source = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    source.setblocking(False)
    target = sink.getsockname()
    buffer = bytearray(65535)
    view = memoryview(buffer)

    def send_receive(n: int) -> None:
        sendto = source.sendto
        recvfrom_into = sink.recvfrom_into
        for _ in range(n):
            sendto(encoded, target)
            size, _ = recvfrom_into(buffer)
            bytes(view[:size])

    def receive_nothing(n: int) -> None:
        recvfrom_into = sink.recvfrom_into
        for _ in range(n):
            with contextlib.suppress(BlockingIOError):
                recvfrom_into(buffer)

    # A Block2 download's own work per block: take a 1 KiB block (checks, the copy
    # into the body) and make the request for the next one.
    download_state: list[Any] = []

    def blocks_ahead(n: int) -> None:
        """(Not timed) a download started, and the responses of its next ``n`` blocks."""
        body = bytes(1024) * (n + 1)
        download = Block2Download(max_body_size=None)
        follow_ups = Block2FollowUps(request, uploaded=False)

        def block(num: int) -> Message:
            more = num < n
            return Message(
                code=Code.CONTENT,
                payload=body[num * 1024 : num * 1024 + 1024],
                block2=BlockValue(num, more, 6),
                size2=len(body) if num == 0 else None,
            )

        download.start(block(0))
        download_state[:] = [download, follow_ups, [block(num) for num in range(1, n + 1)]]

    def next_block(n: int) -> None:
        download, follow_ups, responses = download_state
        feed, ask = download.feed, follow_ups.request
        for response in responses[:n]:
            step = feed(response)
            if isinstance(step, FetchBlock):
                ask(step.block)

    return [
        ("build the request: Message(code=GET, uri=...)", build, None),
        ("encode: codec.encode (request)", encode_request, None),
        ("machine send path: Messaging.send_request (encoding included)", machine_send, None),
        ("send + receive: sendto, recvfrom_into + bytes (to itself)", send_receive, None),
        ("failed recvfrom_into (EAGAIN)", receive_nothing, None),
        (
            "a download's block: Block2Download.feed + the next block's request",
            next_block,
            blocks_ahead,
        ),
        ("decode: codec.decode (response)", decode_response, None),
        (
            "machine receive path: Messaging.receive (decode, dedup, match)",
            machine_receive,
            encode_answers,
        ),
    ]


async def _trio_phases() -> list[tuple[str, Callable[[int], Any], None]]:
    """The layers that need trio: a task wake-up, and a wait on a readable socket."""
    import trio

    async def wake(n: int) -> None:
        parked: list[Any] = []

        async def sleeper() -> None:
            for _ in range(n):
                parked.append(trio.lowlevel.current_task())
                await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            for _ in range(n):
                while not parked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                trio.lowlevel.reschedule(parked.pop())
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def readable(n: int) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            a.send(b"x")
            for _ in range(n):
                await trio.lowlevel.wait_readable(b)

    async def checkpoint(n: int) -> None:
        for _ in range(n):
            await trio.lowlevel.cancel_shielded_checkpoint()

    return [
        ("wake a parked task: reschedule + its step, beside the waker's checkpoint", wake, None),
        ("wait_readable, socket ready: epoll_ctl + epoll_wait + wake", readable, None),
        ("one scheduler pass: cancel_shielded_checkpoint", checkpoint, None),
    ]


async def _layers_worker(uri: str, port: int, count: int, rounds: int, marks: bool) -> Any:
    """Every phase, ``rounds`` times; CPU seconds per operation (best round) of each."""
    import inspect

    from coap_trio import open_context

    timer = time.process_time
    results: dict[str, float] = {}

    def record(name: str, seconds: float, n: int) -> None:
        per = seconds / n
        results[name] = min(results.get(name, per), per)

    phases = _layer_phases(port)
    #: What each callgrind part holds: part 1 is the start-up, each mark starts the next.
    labels: list[str] = []

    def mark(label: str) -> None:
        if marks:
            _mark()
            labels.append(label)

    async with open_context() as ctx:
        await _requests(ctx, uri, WARMUP, 1)
        ctx.set_nstart(64)
        await _requests(ctx, uri, WARMUP, 64)
        trio_phases = await _trio_phases()
        for round_ in range(1, rounds + 1):
            for mode, in_flight in MODES:
                ctx.set_nstart(in_flight)
                name = f"whole request, {mode}"
                mark(f"{round_}|{name}")
                started = timer()
                answered = await _requests(ctx, uri, count, in_flight)
                record(name, timer() - started, count)
                if answered != count:
                    raise RuntimeError(f"{mode}: {answered} of {count} answered 2.05")
            for name, run, prepare in [*phases, *trio_phases]:
                if prepare is not None:
                    mark(f"{round_}|(prepare)")  # a part of its own, not counted
                    prepare(count)
                mark(f"{round_}|{name}")
                started = timer()
                if inspect.iscoroutinefunction(run):
                    await run(count)
                else:
                    # Without the cyclic GC: the machine's phases keep up to --count
                    # exchanges alive, over which it would run again and again (the
                    # client keeps at most 64, and its GC costs ~0.4k instructions
                    # per request: callgrind, gc_collect_main, below).
                    gc.disable()
                    try:
                        run(count)
                    finally:
                        gc.enable()
                record(name, timer() - started, count)
        mark("shutdown")
    return {"per_operation": results, "count": count, "rounds": rounds, "labels": labels}


class _Counter:
    """A trio instrument: scheduler passes, blocking ones, task steps and wakes."""

    def __init__(self) -> None:
        self.passes = self.blocking = self.steps = self.wakes = 0
        self.on = False

    def before_io_wait(self, timeout: float) -> None:
        if self.on:
            self.passes += 1
            self.blocking += timeout > 0

    def before_task_step(self, task: Any) -> None:
        if self.on:
            self.steps += 1

    def task_scheduled(self, task: Any) -> None:
        if self.on:
            self.wakes += 1


async def _trio_worker(uri: str, count: int) -> Any:
    import trio

    from coap_trio import open_context

    counter = _Counter()
    trio.lowlevel.add_instrument(counter)
    found: dict[str, Any] = {}
    async with open_context() as ctx:
        for mode, in_flight in MODES:
            ctx.set_nstart(in_flight)
            await _requests(ctx, uri, WARMUP, in_flight)
            counter.passes = counter.blocking = counter.steps = counter.wakes = 0
            counter.on = True
            answered = await _requests(ctx, uri, count, in_flight)
            counter.on = False
            found[mode] = {
                "answered": answered,
                "passes": counter.passes / count,
                "blocking passes": counter.blocking / count,
                "task steps": counter.steps / count,
                "task wakes": counter.wakes / count,
            }
    return found


async def _plain_worker(uri: str, count: int, in_flight: int) -> Any:
    from coap_trio import open_context

    async with open_context() as ctx:
        ctx.set_nstart(in_flight)
        answered = await _requests(ctx, uri, count, in_flight)
    return {"answered": answered}


async def _download_worker(uri: str, count: int) -> Any:
    from coap_trio import open_context
    from coap_trio.protocol.config import BlockwiseConfig

    sizes, cpu = [], []
    async with open_context(blockwise=BlockwiseConfig(block_size=1024)) as ctx:
        for _ in range(count):
            before = resource.getrusage(resource.RUSAGE_SELF)
            sizes.append(len((await ctx.get(uri)).payload))
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
    return {"sizes": sizes, "cpu": cpu}


def run_worker(args: argparse.Namespace) -> None:
    import trio

    if args.worker == "download":
        result = trio.run(_download_worker, args.uri, args.count)
    elif args.worker == "layers":
        result = trio.run(_layers_worker, args.uri, args.port, args.count, args.rounds, args.marks)
    elif args.worker == "trio":
        result = trio.run(_trio_worker, args.uri, args.count)
    else:
        result = trio.run(_plain_worker, args.uri, args.count, args.in_flight)
    print(json.dumps(result), flush=True)


# -- the orchestrator --------------------------------------------------------------------------


def _worker(*extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


def _run(command: list[str], timeout: float) -> Any:
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=timeout)
    if done.returncode != 0:
        failed = f"{' '.join(command)} failed ({done.returncode})"
        raise RuntimeError(f"{failed}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_layers(uri: str, port: int, args: argparse.Namespace) -> None:
    command = _worker(
        "--worker", "layers", "--uri", uri, "--port", str(port),
        "--count", str(args.count), "--rounds", str(args.rounds),
    )  # fmt: skip
    result = _run(command, args.timeout)
    print(f"CPU µs per operation (process_time, best of {args.rounds} x {args.count}):")
    print(f"  $ {' '.join(command)}")
    for name, seconds in result["per_operation"].items():
        print(f"  {seconds * 1e6:9.2f}  {name}")


def _parts(out_file: Path) -> list[int]:
    """The instructions of each part of a callgrind run, in order."""
    found: list[tuple[int, int]] = []
    # (--dump-before writes out_file.1, .2...; the last part, at exit, is out_file itself)
    for path in [out_file, *out_file.parent.glob(out_file.name + ".*")]:
        part = total = None
        with path.open(encoding="ascii", errors="replace") as lines:
            for line in lines:
                if line.startswith("part:"):
                    part = int(line.split()[1])
                elif line.startswith("summary:"):
                    total = int(line.split()[1])
        if part is not None and total is not None:
            found.append((part, total))
    return [total for _, total in sorted(found)]


#: C functions whose inclusive cost callgrind_annotate reports for the whole request:
#: the system calls' wrappers, the OSError a failed read raises, the cyclic GC.
_FUNCTIONS = (
    "sock_sendto",
    "sock_recvfrom_into",
    "select_epoll_poll",
    "select_epoll_modify",
    "PyErr_SetFromErrno",
    "gc_collect_main",
)


def part_callgrind(uri: str, port: int, args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        print("callgrind: valgrind is not installed")
        return
    count = args.callgrind_count
    directory = Path(tempfile.mkdtemp(prefix="coap_trio-budget-"))
    out_file = directory / "callgrind.out"
    command = [
        "valgrind", "--tool=callgrind", "--dump-before=os_getppid",
        f"--callgrind-out-file={out_file}",
        *_worker(
            "--worker", "layers", "--uri", uri, "--port", str(port), "--count", str(count),
            "--rounds", "2", "--marks",
        ),
    ]  # fmt: skip
    try:
        result = _run(command, args.timeout * 4)
        parts = _parts(out_file)
        # Part 1 is the start-up; part k + 1 holds what the k-th label names. Round 2 counts.
        print(f"instructions per operation (callgrind, second of 2 rounds x {count}):")
        print(f"  $ PYTHONHASHSEED=0 {' '.join(command)}")
        numbers: dict[str, int] = {}
        for number, (label, total) in enumerate(
            zip(result["labels"], parts[1:], strict=True), start=2
        ):
            round_, _, name = label.partition("|")
            if round_ == "2" and name != "(prepare)":
                print(f"  {total / count:>10,.0f}  {name}")
                numbers[name] = number
        for mode, _ in MODES:
            part_file = out_file.parent / f"{out_file.name}.{numbers[f'whole request, {mode}']}"
            _annotate(part_file, count, mode)
    finally:
        if args.keep:
            print(f"callgrind output kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def _annotate(part_file: Path, count: int, mode: str) -> None:
    """Inclusive instructions per request of the C functions of the system calls."""
    if not part_file.exists() or shutil.which("callgrind_annotate") is None:
        return
    done = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(part_file)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    found: dict[str, int] = dict.fromkeys(_FUNCTIONS, 0)
    for line in done.stdout.splitlines():
        match = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*:(\w+)('\d+)?\s", line + " ")
        if match and match.group(2) in found and not match.group(3):  # (outermost calls)
            found[match.group(2)] += int(match.group(1).replace(",", ""))
    print(f"  whole request, {mode}: inclusive instructions per request of C functions "
          f"(callgrind_annotate --inclusive=yes {part_file.name}):")  # fmt: skip
    for name, value in found.items():
        print(f"    {value / count:>10,.0f}  {name}")


_STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def _strace_counts(path: Path) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for line in path.read_text().splitlines():
        match = _STRACE_LINE.match(line)
        if match and match.group(3) != "total":
            counts[match.group(3)] = (int(match.group(1)), int(match.group(2) or 0))
    return counts


def part_strace(uri: str, args: argparse.Namespace) -> None:
    if shutil.which("strace") is None:
        print("strace: not installed")
        return
    n1, n2 = args.strace_counts
    directory = Path(tempfile.mkdtemp(prefix="coap_trio-strace-"))
    try:
        for mode, in_flight in MODES:
            found = []
            for n in (n1, n2):
                out = directory / f"strace.{in_flight}.{n}"
                command = [
                    "strace", "-f", "-c", "-o", str(out),
                    *_worker("--worker", "plain", "--uri", uri, "--count", str(n),
                             "--in-flight", str(in_flight)),
                ]  # fmt: skip
                result = _run(command, args.timeout)
                if result["answered"] != n:
                    raise RuntimeError(f"strace run: {result['answered']} of {n} answered")
                found.append(_strace_counts(out))
            print(f"system calls per request, {mode} ((N={n2} - N={n1}) / {n2 - n1}):")
            print(f"  $ strace -f -c -o OUT {' '.join(command[5:-4])} --count N "
                  f"--in-flight {in_flight}")  # fmt: skip
            small, large = found
            for name in sorted(large, key=lambda k: -large[k][0]):
                calls = (large[name][0] - small.get(name, (0, 0))[0]) / (n2 - n1)
                errors = (large[name][1] - small.get(name, (0, 0))[1]) / (n2 - n1)
                if abs(calls) >= 0.005:
                    failed = f" ({errors:.2f} failed)" if errors >= 0.005 else ""
                    print(f"  {calls:8.2f}  {name}{failed}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def part_blockwise(args: argparse.Namespace) -> None:
    """System calls and CPU time per block of a 1 MiB download from libcoap's server:
    coap_trio's client (3 downloads minus 1, in one process, for the system calls)
    beside ``coap-client-notls -b 1024`` (one download, its start-up and exit included)."""
    import statistics

    import blockwise

    if shutil.which("strace") is None:
        print("blockwise: strace is not installed")
        return
    blocks = blockwise.SIZE // 1024
    directory = Path(tempfile.mkdtemp(prefix="coap_trio-strace-"))
    payload_file = directory / "body"
    payload_file.write_bytes(blockwise.body())
    peer = blockwise.start_server("libcoap", payload_file)
    uri = f"coap://[{_peers.HOST}]:{peer.port}/example_data"
    libcoap = [_peers.LIBCOAP_CLIENT, "-b", "1024", "-o", str(directory / "out"), uri]
    try:
        found = []
        for n in (1, 3):
            out = directory / f"strace.download.{n}"
            command = [
                "strace", "-f", "-c", "-o", str(out),
                *_worker("--worker", "download", "--uri", uri, "--count", str(n)),
            ]  # fmt: skip
            result = _run(command, args.timeout)
            if result["sizes"] != [blockwise.SIZE] * n:
                raise RuntimeError(f"download sizes {result['sizes']}")
            found.append(_strace_counts(out))
        out = directory / "strace.libcoap"
        traced = ["strace", "-f", "-c", "-o", str(out), *libcoap]
        subprocess.run(traced, capture_output=True, timeout=args.timeout, check=True)
        if (directory / "out").read_bytes() != blockwise.body():
            raise RuntimeError("coap-client-notls downloaded other bytes")
        theirs = _strace_counts(out)
        # CPU time, without strace: 5 downloads each.
        ours_cpu = _run(_worker("--worker", "download", "--uri", uri, "--count", "6"), 600)["cpu"]
        libcoap_cpu = []
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(libcoap, capture_output=True, timeout=args.timeout, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            libcoap_cpu.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
    finally:
        peer.stop()
        shutil.rmtree(directory, ignore_errors=True)
    small, large = found
    print(f"system calls per block of a 1 MiB download ({blocks} blocks of 1024 bytes):")
    print(f"  $ strace -f -c -o OUT {' '.join(command[5:-2])} --count N  (N=3 minus N=1)")
    print(f"  $ strace -f -c -o OUT {' '.join(libcoap)}")
    names = sorted(set(large) | set(theirs), key=lambda k: -max(large.get(k, (0, 0))[0], 0))
    print(f"  {'coap_trio':>10} {'libcoap':>10}")
    for name in names:
        ours = (large.get(name, (0, 0))[0] - small.get(name, (0, 0))[0]) / (2 * blocks)
        failed = (large.get(name, (0, 0))[1] - small.get(name, (0, 0))[1]) / (2 * blocks)
        their = theirs.get(name, (0, 0))[0] / blocks
        if ours >= 0.005 or their >= 0.05:
            note = f" ({failed:.2f} failed)" if failed >= 0.005 else ""
            print(f"  {ours:10.2f} {their:10.2f}  {name}{note}")
    print("CPU µs per block (getrusage, no strace; median of 5 downloads, coap_trio's first")
    print("download left out; coap-client-notls: the whole process):")
    for name, cpu in (("coap_trio", ours_cpu[1:]), ("coap-client-notls", libcoap_cpu)):
        user = statistics.median(u for u, _ in cpu) / blocks * 1e6
        system = statistics.median(s for _, s in cpu) / blocks * 1e6
        print(f"  {name:<18} user {user:7.1f}  system {system:7.1f}")


def part_trio(uri: str, args: argparse.Namespace) -> None:
    command = _worker("--worker", "trio", "--uri", uri, "--count", str(args.count))
    result = _run(command, args.timeout)
    print(f"trio per request (an instrument, {args.count} requests):")
    print(f"  $ {' '.join(command)}")
    for mode, figures in result.items():
        shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items() if k != "answered")
        print(f"  {mode}: {shown}")


def orchestrate(args: argparse.Namespace) -> None:
    print(_peers.describe_machine())
    server_cpu, client_cpu = _peers.cpu_plan()
    _peers.pin_self(client_cpu)
    peer = _peers.start_libcoap_server([server_cpu] if server_cpu is not None else None)
    uri = f"coap://[{_peers.HOST}]:{peer.port}/"
    try:
        for part in args.part:
            if part == "layers":
                part_layers(uri, peer.port, args)
            elif part == "callgrind":
                part_callgrind(uri, peer.port, args)
            elif part == "strace":
                part_strace(uri, args)
            elif part == "blockwise":
                part_blockwise(args)
            else:
                part_trio(uri, args)
            print(f"  (load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    finally:
        peer.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=PARTS, help="repeatable; default all")
    parser.add_argument("--count", type=int, default=5000, help="operations per phase (5000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the layers part (5)")
    parser.add_argument(
        "--callgrind-count", type=int, default=2000, help="operations per phase under callgrind"
    )
    parser.add_argument(
        "--strace-counts", type=int, nargs=2, default=[2000, 12000], metavar=("N1", "N2")
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the callgrind output")
    parser.add_argument(
        "--worker", choices=("layers", "trio", "plain", "download"), help=argparse.SUPPRESS
    )
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--marks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    args.part = args.part or list(PARTS)
    orchestrate(args)


if __name__ == "__main__":
    main()
