"""Where one served request's cost goes: a per-layer budget of the UDP server.

Run by hand (not collected by pytest; the instruction counts need valgrind)::

    python benchmarks/server_budget.py                 # layers (µs, instructions), live server
    python benchmarks/server_budget.py --no-callgrind  # µs only
    python benchmarks/server_budget.py --strace        # also syscalls (strace -c -f)

Three parts:

* **Layers.** Each layer of the path a CON GET takes through the server is
  run alone, on the real objects, over ``--count`` requests (each with its
  own message ID, from 8 remotes, as ``callgrind.py``'s load generator sends
  them): receiving (``recvfrom_into``, the copy, the interned remote),
  decoding, the messaging machine's receive (decode and deduplication lookup
  included), the dispatcher (prechecks and the handler queue, put and take,
  without the task switch), the handler's work (the block-wise layer, the
  responder, the Site's routing and the resource's ``render``, driven as a
  coroutine that never suspends), the machine's respond (encode and the
  deduplication record included), the send (``sendto``), and the runner's
  glue around respond. Timed natively (µs per request, best of
  ``--repeat``), and under ``valgrind --tool=callgrind`` with collection
  switched on only inside the loop (``--toggle-collect=functools_reduce``,
  one profile part per layer): instructions per request.
* **The live server.** ``callgrind.py``'s server worker (``open_context``
  serving ``/example_data``) driven by its load generator (64 in flight from
  8 sockets), with a trio instrument counting the scheduler's passes (I/O
  waits), task steps and task wake-ups per request.
* **Syscalls** (``--strace``): the same live server under ``strace -c -f``.

The whole process's instructions per request come from ``callgrind.py
--workload server``; what the layers leave of it is the trio shell: the
receive task's loop, the event lists, the handler task's switches and the
timer kicks.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
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
import callgrind

#: The layers in path order: (name, what it covers).
LAYERS = (
    ("loop", "the measuring loop itself, with a step that does nothing (subtracted below)"),
    ("receive", "recvfrom_into, the copy, the interned remote (UDPEndpoint's loop body)"),
    ("decode", "codec.decode of the 19-byte CON GET"),
    ("dedup", "DedupStore.lookup + record (fresh MIDs)"),
    ("machine-receive", "Messaging.receive: decode, dedup lookup, exchange, piggyback window"),
    ("dispatch", "the dispatcher's prechecks, handler queue put + take"),
    ("handler", "responder, Site routing, Resource.render, the handler's coroutine"),
    ("encode", "codec.encode of the 2.05 response"),
    ("machine-respond", "Messaging.respond: encode, dedup record, Transmit event"),
    ("send", "UDPEndpoint.send: sendto"),
    ("runner-respond", "EndpointRunner.respond around the machine and the send (kick)"),
)


def _requests(count: int) -> list[bytes]:
    """``count`` pre-encoded CON GETs of /example_data, as callgrind.py's generator sends them."""
    path = callgrind._uri_path(callgrind.PATH)
    out = []
    for i in range(count):
        serial = (i % 8 + 1).to_bytes(2, "big")
        mid = ((i % 8 + 1) << 12 | i // 8) & 0xFFFF
        mid_bytes = mid.to_bytes(2, "big")
        out.append(b"\x44\x01" + mid_bytes + serial + mid_bytes + path)
    return out


class _Setup:
    """The real objects of the server path, wired as open_context wires them."""

    def __init__(self, count: int) -> None:
        import trio

        from coap_trio import Code, Message, MessagingConfig, Resource, Site
        from coap_trio._runner import EndpointRunner
        from coap_trio._server.blockwise import BlockwiseServer
        from coap_trio._server.dispatch import RequestDispatcher
        from coap_trio._server.handler_queue import HandlerQueue
        from coap_trio._server.observations import ServerObservations
        from coap_trio._server.responder import Responder
        from coap_trio.protocol.config import BlockwiseConfig
        from coap_trio.protocol.messaging import Messaging
        from coap_trio.transports.udp import UDPEndpoint

        class Hello(Resource):
            async def render_get(self, request: Message) -> Message:
                return Message(code=Code.CONTENT, payload=callgrind.PAYLOAD)

        self.count = count
        self.data = _requests(count)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((_peers.HOST, 0))
        self.endpoint = UDPEndpoint(sock)
        self.clients = []
        for _ in range(8):
            client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            client.bind((_peers.HOST, 0))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self.clients.append(client)
        self.remotes = [
            self.endpoint.remote_for(_peers.HOST, c.getsockname()[1]) for c in self.clients
        ]
        self.site = Site()
        self.site.add([callgrind.PATH], Hello())
        self.config = MessagingConfig(ack_delay=callgrind.PIGGYBACK_WINDOW)
        self.Messaging = Messaging
        self.machine = Messaging(self.config)
        responder = Responder(self.site)
        self.blockwise = BlockwiseServer(BlockwiseConfig(), time.monotonic)
        self.dispatcher = RequestDispatcher(
            None,  # type: ignore[arg-type]  # (no task is started here)
            self.site,
            responder,
            ServerObservations(None),  # type: ignore[arg-type]
            self.blockwise,
        )
        self.dispatcher.queue = HandlerQueue(1 << 30)
        self.trio = trio

        class _NoClient:
            response_received = notification_received = request_failed = None
            group_response_received = None

        self.runner = EndpointRunner(self.endpoint, self.machine, _NoClient(), self.dispatcher)  # type: ignore[arg-type]
        self.now = trio.current_time()

    def fresh_machine(self) -> None:
        self.machine = self.Messaging(self.config)
        self.runner.machine = self.machine
        self.runner._respond_piggybacked = self.machine.respond_piggybacked

    def drain(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.setblocking(False)
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break


def _layer_steps(setup: _Setup, name: str) -> tuple[Callable[[], None], Callable[[int], None]]:
    """(prepare, step): ``prepare()`` runs outside the measured loop, ``step(i)`` is the layer."""
    from coap_trio import codec
    from coap_trio.protocol.dedup import DedupStore

    data = setup.data
    remotes = setup.remotes
    now = setup.now
    state: dict[str, Any] = {}

    def decoded() -> list[Any]:
        return [codec.decode(d, remotes[i % 8]) for i, d in enumerate(data)]

    def received_exchanges() -> list[Any]:
        setup.fresh_machine()
        exchanges = []
        for i, d in enumerate(data):
            (event,) = setup.machine.receive(d, remotes[i % 8], now)
            exchanges.append(event.exchange)
        return exchanges

    def rendered(exchanges: list[Any]) -> list[Any]:
        responses = []
        for exchange in exchanges:
            coro = setup.blockwise.respond(
                exchange.request,
                setup.dispatcher.responder.render,
                setup.site.needs_blockwise_assembly,
            )
            try:
                coro.send(None)
            except StopIteration as done:
                responses.append(done.value)
        return responses

    if name == "loop":
        return (lambda: None), (lambda i: None)
    if name == "receive":
        sock = setup.endpoint.socket
        buffer = bytearray(65535)
        view = memoryview(buffer)
        interned: dict[Any, Any] = {}

        def prepare() -> None:
            setup.drain([sock])
            for i, d in enumerate(data):
                setup.clients[i % 8].sendto(d, sock.getsockname())
            sock.setblocking(False)

        def step(i: int) -> None:
            size, address = sock.recvfrom_into(buffer)
            remote = interned.get(address)
            if remote is None:
                remote = interned[address] = setup.endpoint.remote_for(address[0], address[1])
            state["last"] = (bytes(view[:size]), remote)

        return prepare, step
    if name == "decode":
        return (lambda: None), (lambda i: codec.decode(data[i], remotes[i % 8]) and None)
    if name == "dedup":
        store = DedupStore()
        reply = codec.encode(
            __import__("coap_trio").Message(
                code=0x45, mtype=2, mid=1, token=b"\x00\x01\x00\x01", payload=callgrind.PAYLOAD
            )
        )
        mids = [int.from_bytes(d[2:4], "big") for d in data]

        def step(i: int) -> None:
            remote = remotes[i % 8]
            mid = mids[i]
            store.lookup(remote, mid, now)
            store.record(remote, mid, reply, 247.0, now)

        return (lambda: None), step
    if name == "machine-receive":

        def step(i: int) -> None:
            setup.machine.receive(data[i], remotes[i % 8], now)

        return setup.fresh_machine, step
    if name == "dispatch":
        queue = setup.dispatcher.queue
        request_received = setup.dispatcher.request_received
        runner = setup.runner

        def prepare() -> None:
            setup.fresh_machine()
            state["events"] = [
                setup.machine.receive(d, remotes[i % 8], now) for i, d in enumerate(data)
            ]

        def step(i: int) -> None:  # (what EndpointRunner.on_datagrams does with the event)
            request_received(runner, state["events"][i][0].exchange)
            queue.take()

        return prepare, step
    if name == "handler":
        responder = setup.dispatcher.responder
        assert responder is not None
        render = responder.render
        block_size = setup.blockwise.block_size
        special = frozenset((6, 23, 27, 60, 258))  # Observe, Block2, Block1, Size1, No-Response

        def prepare() -> None:
            state["exchanges"] = received_exchanges()

        def step(i: int) -> None:  # (the plain path of RequestDispatcher._handle_requests)
            request = state["exchanges"][i].request
            for number, _ in request.opt.raw_items:
                if number in special:
                    raise AssertionError("not a plain request")
            coro = render(request)
            try:
                coro.send(None)
            except StopIteration as done:
                if len(done.value.payload) > block_size:
                    raise AssertionError("a response to slice") from None

        return prepare, step
    if name == "encode":
        from coap_trio.protocol.messaging import Messaging

        def prepare() -> None:
            exchanges = received_exchanges()
            state["pairs"] = list(zip(exchanges, rendered(exchanges), strict=True))

        def step(i: int) -> None:
            exchange, response = state["pairs"][i]
            Messaging._encode_response(response, 2, exchange.mid, exchange.token)  # type: ignore[arg-type]

        return prepare, step
    if name in ("machine-respond", "runner-respond"):

        def prepare() -> None:
            exchanges = received_exchanges()
            state["pairs"] = list(zip(exchanges, rendered(exchanges), strict=True))
            setup.drain(setup.clients)

        if name == "machine-respond":

            def step(i: int) -> None:
                exchange, response = state["pairs"][i]
                setup.machine.respond(exchange, response, now)

        else:
            runner_respond = setup.runner.respond

            def step(i: int) -> None:
                exchange, response = state["pairs"][i]
                runner_respond(exchange, response)

        return prepare, step
    if name == "send":
        send = setup.endpoint.send

        def prepare() -> None:
            setup.drain(setup.clients)

        def step(i: int) -> None:
            send(data[i], remotes[i % 8])

        return prepare, step
    raise ValueError(name)


def run_layers(count: int, repeat: int, names: list[str]) -> dict[str, float]:
    """µs per request of each layer (best of ``repeat``), measured in this process."""
    import trio

    return trio.run(_run_layers, count, repeat, names)


async def _run_layers(count: int, repeat: int, names: list[str]) -> dict[str, float]:
    setup = _Setup(count)
    found: dict[str, float] = {}
    for name in names:
        best = float("inf")
        for _ in range(repeat):
            prepare, step = _layer_steps(setup, name)
            prepare()
            started = time.perf_counter()
            functools.reduce(lambda _, i: step(i), range(count), None)
            best = min(best, time.perf_counter() - started)
        found[name] = best / count * 1e6
    return found


def callgrind_layers(count: int, names: list[str]) -> dict[str, float]:
    """Instructions per request of each layer: one valgrind run, one profile part per layer."""
    directory = Path(tempfile.mkdtemp(prefix="coap_trio-budget-"))
    out = directory / "callgrind.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--collect-atstart=no",
        "--toggle-collect=functools_reduce",
        "--dump-after=functools_reduce",
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker-layers",
        "--count",
        str(count),
        "--layers",
        *names,
    ]
    try:
        subprocess.run(
            command, check=True, capture_output=True, env=callgrind._worker_env(), timeout=900
        )
        parts = sorted(
            directory.glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
        )
        totals = [callgrind._total_instructions(p) for p in parts]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    # One warm-up reduce (not kept) then one per layer, in order.
    if len(totals) != len(names) + 1:
        raise RuntimeError(f"expected {len(names) + 1} profile parts, found {len(totals)}")
    return {name: total / count for name, total in zip(names, totals[1:], strict=True)}


def worker_layers(count: int, names: list[str]) -> None:
    import trio

    trio.run(_worker_layers, count, names)


async def _worker_layers(count: int, names: list[str]) -> None:
    setup = _Setup(count)
    functools.reduce(lambda _, i: None, range(10), None)  # the warm-up part
    for name in names:
        # Warm each layer's code and caches outside the loop that is counted.
        prepare, step = _layer_steps(setup, name)
        prepare()
        for i in range(min(200, count)):
            step(i)
        prepare, step = _layer_steps(setup, name)
        prepare()
        functools.reduce(lambda _, i: step(i), range(count), None)


# -- the live server ----------------------------------------------------------------


INSTRUMENTED_WORKER = r"""
import gc, json, resource, sys, time, trio
sys.path.insert(0, {benchmarks!r})
import callgrind

cpu = [0.0, 0.0]  # user, system seconds at the start of trio.run

collections = [[0, 0.0, 0], [0, 0.0, 0], [0, 0.0, 0]]  # per generation: count, seconds, collected
started = [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = time.thread_time()
    else:
        entry = collections[info["generation"]]
        entry[0] += 1
        entry[1] += time.thread_time() - started[0]
        entry[2] += info["collected"]
gc.callbacks.append(on_gc)

class Counter(trio.abc.Instrument):
    def __init__(self):
        self.io_waits = self.steps = self.scheduled = 0
    def before_run(self):  # imports done: count the collections of serving only
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu[:] = [usage.ru_utime, usage.ru_stime]
        if {freeze!r}:
            gc.collect()
            gc.freeze()  # what start-up made (imports) is never scanned again
        for entry in collections:
            entry[:] = [0, 0.0, 0]
    def before_io_wait(self, timeout):
        self.io_waits += 1
    def before_task_step(self, task):
        self.steps += 1
    def task_scheduled(self, task):
        self.scheduled += 1

counter = Counter()
run = trio.run
def instrumented(*args, **kwargs):
    return run(*args, instruments=[counter], **kwargs)
trio.run = instrumented
result = callgrind._server_worker()
usage = resource.getrusage(resource.RUSAGE_SELF)
result["cpu"] = [usage.ru_utime - cpu[0], usage.ru_stime - cpu[1]]
result["gc"] = collections
result["gc_frozen"] = gc.get_freeze_count()
result["trio"] = {{
    "io_waits": counter.io_waits, "steps": counter.steps, "scheduled": counter.scheduled
}}
print(json.dumps(result), flush=True)
"""


def live_server(count: int, prefix: list[str], freeze: bool = False) -> dict[str, Any]:
    """Serve ``count`` requests from callgrind.py's generator; the worker's JSON and the rate.

    With ``freeze`` the worker calls ``gc.freeze()`` after its imports."""
    here = str(Path(__file__).resolve().parent)
    script = INSTRUMENTED_WORKER.format(benchmarks=here, freeze=freeze)
    command = [*prefix, sys.executable, "-c", script]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=callgrind._worker_env(),
    )
    try:
        port = callgrind._read_port(process)
        started = time.perf_counter()
        generated = callgrind.generate(port, count, 8, 8)
        elapsed = time.perf_counter() - started
        stdout, _ = process.communicate(timeout=120)
    except BaseException:
        process.kill()
        process.wait(timeout=30)
        raise
    result = callgrind._last_json(stdout)
    callgrind._check("server", count, result, generated)
    result["rate"] = count / elapsed
    return result


def _show_gc(live: dict[str, Any], count: int) -> None:
    """The cyclic GC's collections during a live run, per 100,000 requests."""
    scale = 100_000 / count
    shown = "; ".join(
        f"gen {generation}: {n * scale:,.0f} collections, {seconds * scale * 1000:,.1f} ms, "
        f"{collected * scale:,.0f} objects freed"
        for generation, (n, seconds, collected) in enumerate(live["gc"])
    )
    print(f"cyclic GC per 100,000 requests: {shown}")


def strace_counts(path: Path, count: int) -> dict[str, int]:
    """Calls per syscall from ``strace -c`` output."""
    calls: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1].isidentifier():
            calls[fields[-1]] = int(fields[3])
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="requests per layer loop (2000)")
    parser.add_argument("--repeat", type=int, default=5, help="native timings per layer (best of)")
    parser.add_argument("--live", type=int, default=20000, help="requests served live (20000)")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--strace", action="store_true", help="count the live server's syscalls")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="also serve live with gc.freeze() after start-up"
    )
    parser.add_argument("--layers", nargs="+", default=[n for n, _ in LAYERS])
    parser.add_argument("--worker-layers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_layers:
        worker_layers(args.count, args.layers)
        return
    print(_peers.describe_machine())
    micro = run_layers(args.count, args.repeat, args.layers)
    instructions = {} if args.no_callgrind else callgrind_layers(args.count, args.layers)
    print(
        f"\nlayers ({args.count} requests each; µs best of {args.repeat}; "
        "instructions under callgrind)"
    )
    print("(less the measuring loop's own cost, the 'loop' row, when it was measured)")
    print(f"{'layer':<16} {'µs':>7} {'instructions':>13}  covers")
    described = dict(LAYERS)
    for name in args.layers:
        us, ir = micro[name], instructions.get(name)
        if name != "loop" and "loop" in micro:
            us -= micro["loop"]
            if ir is not None and "loop" in instructions:
                ir -= instructions["loop"]
        shown = f"{ir:13,.0f}" if ir is not None else f"{'':>13}"
        print(f"{name:<16} {us:7.2f} {shown}  {described[name]}")
    live = live_server(args.live, [])
    trio_counts = live["trio"]
    n = args.live
    print(f"\nlive server, {n} requests (64 in flight): {live['rate']:,.0f} req/s (wall clock)")
    print(
        f"per request: {trio_counts['io_waits'] / n:.4f} scheduler passes (I/O waits), "
        f"{trio_counts['steps'] / n:.4f} task steps, "
        f"{trio_counts['scheduled'] / n:.4f} task wake-ups"
    )
    user, system = live["cpu"]
    print(
        f"server CPU per request: {user / n * 1e6:.1f} µs user, {system / n * 1e6:.1f} µs system "
        "(getrusage, from the start of trio.run to the end: start-up and the stop included)"
    )
    _show_gc(live, n)
    if args.gc_freeze:
        frozen = live_server(n, [], freeze=True)
        print(f"with gc.freeze() after start-up ({frozen['gc_frozen']:,} objects frozen):")
        _show_gc(frozen, n)
    if args.strace:
        if shutil.which("strace") is None:
            raise SystemExit("strace is not installed")
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory) / "strace.txt"
            live_server(n, ["strace", "-c", "-f", "-o", str(out)])
            calls = strace_counts(out, n)
        shown = ", ".join(
            f"{name} {calls[name] / n:.3f}"
            for name in ("sendto", "recvfrom", "epoll_wait", "epoll_ctl")
            if name in calls
        )
        print(f"syscalls per request (strace -c -f): {shown}")
    print(json.dumps({"layers_us": micro, "layers_ir": instructions, "live": live}))


if __name__ == "__main__":
    main()
