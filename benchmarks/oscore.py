"""OSCORE-protected requests per second (RFC 8613), coap_trio vs aiocoap, and bytes per context.

Run by hand (not collected by pytest; needs aiocoap[oscore])::

    python benchmarks/oscore.py               # 5 s per run, 3 runs per figure
    python benchmarks/oscore.py --quick       # 1 s per run, 1 run

Three figures, each side in the same run:

* **server**: a server process (coap_trio: ``open_context(site=...,
  oscore=...)``; aiocoap: ``create_server_context`` with an
  ``OscoreSiteWrapper`` and ``server_credentials``, its contexts read from
  directories as its documentation describes), pinned to one CPU, serving
  ``hello`` at ``/example_data`` to a load generator pinned to the other:
  this script (``--generate``), plain non-blocking sockets, ``--sockets``
  (8) sources with 8 requests in flight each, every source with its own
  security context (its own Sender ID), its requests protected with
  coap_trio's engine before the run (so the generator spends no time on
  cryptography), sent in Partial IV order, each response freeing its slot;
  only outer 2.04 responses (the protected 2.05) matching a request count.
  A fresh server per run (fresh replay windows).
* **client**: a client process, coap_trio (``open_context(oscore=...)``) or
  aiocoap (``client_credentials`` from a context directory), 64 tasks each
  GETting ``/example_data`` in a loop, against one coap_trio OSCORE server
  (the faster of the two) pinned to the other CPU; 2.05 responses counted.
  The server's CPU share is shown: near 100% means the server, not the
  client, was the bound.
* the client's time **runnable but waiting for a CPU** during its
  measurement (``/proc/self/schedstat``), beside its CPU time: on a busy
  machine a client that waits there is bounded by the machine, not its work;
* both also **per CPU-second** of the side measured (the server's CPU time
  during the generator's run; the client process's own CPU time during
  its measurement): on a machine shared with other work, a process that
  is runnable but not running makes the rate fall, not this figure.
* **bytes per security context**: ``tracemalloc`` over 10,000 contexts
  derived in one process, coap_trio's ``SecurityContext`` (with its
  ``cryptography`` AEAD objects) and aiocoap's (a minimal in-memory
  subclass of its ``CanProtect``/``CanUnprotect`` contexts, derived with its
  own ``derive_keys``).

The target is coap_trio >= 5x aiocoap, client and server. Runs are
interleaved; each figure is the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import _peers

TARGET_RATIO = 5.0
LIBRARIES = ("coap_trio", "aiocoap")
SECRET = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
SALT = bytes.fromhex("9e7ca92223786340")
SERVER_ID = b""
PATH = "example_data"
#: Requests pre-protected per generator socket (the run stops a socket that used them up).
BUDGET = 12_000
#: Sender IDs of the generator's sockets start here; the clients' at CLIENT_IDS.
GENERATOR_IDS = 0x10
CLIENT_IDS = 0x40
CONTEXTS = 10_000


def _our_context(sender: bytes, recipient: bytes) -> Any:
    from coap_trio.protocol.oscore import SecurityContext

    return SecurityContext.derive(
        master_secret=SECRET, master_salt=SALT, sender_id=sender, recipient_id=recipient
    )


def _write_directory(directory: Path, sender: bytes, recipient: bytes) -> None:
    directory.mkdir(parents=True)
    settings = {
        "sender-id_hex": sender.hex(),
        "recipient-id_hex": recipient.hex(),
        "secret_hex": SECRET.hex(),
        "salt_hex": SALT.hex(),
    }
    (directory / "settings.json").write_text(json.dumps(settings))


def _peer_ids(count: int, first: int) -> list[bytes]:
    return [bytes([first + i]) for i in range(count)]


# -- servers -----------------------------------------------------------------------------------


def serve_coap_trio(port: int, peers: list[bytes]) -> None:
    import trio

    from coap_trio import Code, Message, Resource, Site, open_context
    from coap_trio.oscore_credentials import CredentialsMap

    class Hello(Resource):
        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, payload=b"hello")

    async def main() -> None:
        site = Site()
        site.add([PATH], Hello())
        contexts = {f":peer{i}": _our_context(SERVER_ID, peer) for i, peer in enumerate(peers)}
        credentials = CredentialsMap.from_contexts(contexts)
        async with open_context(bind=("::1", port), site=site, oscore=credentials):
            print("ready", flush=True)
            await trio.sleep_forever()

    trio.run(main)


def serve_aiocoap(port: int, peers: list[bytes], directory: Path) -> None:
    import logging

    import aiocoap
    import aiocoap.credentials
    import aiocoap.resource
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

    logging.basicConfig(level=logging.ERROR)

    class Hello(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=b"hello")

    async def main() -> None:
        site = aiocoap.resource.Site()
        site.add_resource([PATH], Hello())
        entries = {}
        for i, peer in enumerate(peers):
            where = directory / f"server-{i}"
            _write_directory(where, SERVER_ID, peer)
            entries[f":peer{i}"] = {"oscore": {"basedir": str(where) + "/"}}
        credentials = aiocoap.credentials.CredentialsMap()
        credentials.load_from_dict(entries)
        await aiocoap.Context.create_server_context(
            OscoreSiteWrapper(site, credentials),
            bind=("::1", port),
            transports=["udp6"],
            server_credentials=credentials,
        )
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_server(library: str, peers: list[bytes], cpu: int | None, directory: Path) -> _peers.Peer:
    port = _peers.free_port()
    argv = [sys.executable, __file__, "--serve", library, "--port", str(port)]
    argv += ["--peers", ",".join(peer.hex() for peer in peers), "--directory", str(directory)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if b"ready" not in line:
        process.kill()
        raise RuntimeError(f"the {library} server did not start")
    return _peers.Peer(library, process, port)


# -- the generator -----------------------------------------------------------------------------


def _protected_requests(sender: bytes, socket_index: int, budget: int) -> list[bytes]:
    from coap_trio import codec
    from coap_trio.message import Message
    from coap_trio.numbers.codes import Code
    from coap_trio.numbers.types import Type
    from coap_trio.protocol.oscore import OscoreEngine

    engine = OscoreEngine()
    context = _our_context(sender, SERVER_ID)
    datagrams = []
    for number in range(budget):
        token = bytes([socket_index >> 8, socket_index & 0xFF]) + number.to_bytes(2, "big")
        request = Message(code=Code.GET, uri_path=(PATH,), token=token)
        protected, _ = engine.protect_request(request, context)
        protected.mtype = Type.CON
        protected.mid = number & 0xFFFF
        datagrams.append(codec.encode(protected))
    return datagrams


def generate(port: int, sockets: int, per_socket: int, duration: float) -> dict[str, Any]:
    """Send the pre-protected requests for ``duration`` seconds; count the 2.04 answers."""
    queues = [
        _protected_requests(sender, index, BUDGET)
        for index, sender in enumerate(_peer_ids(sockets, GENERATOR_IDS))
    ]
    selector = selectors.DefaultSelector()
    sources = []
    for index in range(sockets):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(("::1", port))
        selector.register(sock, selectors.EVENT_READ, index)
        sources.append(sock)
    next_index = [0] * sockets
    outstanding: list[set[bytes]] = [set() for _ in range(sockets)]
    counts = {"ok": 0, "other": 0, "exhausted": 0}

    def refill(index: int) -> None:
        queue = queues[index]
        while len(outstanding[index]) < per_socket:
            if next_index[index] >= len(queue):
                counts["exhausted"] += 1
                return
            datagram = queue[next_index[index]]
            next_index[index] += 1
            token = datagram[4:8]
            outstanding[index].add(token)
            sources[index].send(datagram)

    cpu_before = time.process_time()
    started = time.perf_counter()
    end = started + duration
    for index in range(sockets):
        refill(index)
    while time.perf_counter() < end:
        for key, _ in selector.select(timeout=0.05):
            index = key.data
            sock = sources[index]
            for _ in range(64):
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                token = data[4 : 4 + (data[0] & 0x0F)]
                if token in outstanding[index]:
                    outstanding[index].discard(token)
                    if data[1] == 0x44:  # 2.04: the protected 2.05 (RFC 8613 §4.2)
                        counts["ok"] += 1
                    else:
                        counts["other"] += 1
            refill(index)
    elapsed = time.perf_counter() - started
    for sock in sources:
        sock.close()
    return {**counts, "rate": counts["ok"] / elapsed, "cpu": time.process_time() - cpu_before}


# -- clients -----------------------------------------------------------------------------------


async def _trio_client(uri: str, sender: bytes, duration: float, warmup: float) -> dict[str, Any]:
    import trio

    from coap_trio.context import open_context
    from coap_trio.errors import CoapError
    from coap_trio.numbers.codes import Code
    from coap_trio.oscore_credentials import CredentialsMap

    counts = {"ok": 0, "other": 0, "errors": 0}
    measuring = False
    credentials = CredentialsMap.from_contexts({uri: _our_context(sender, SERVER_ID)})
    async with open_context(oscore=credentials) as ctx:
        ctx.set_nstart(64)

        async def loop() -> None:
            while True:
                try:
                    response = await ctx.get(uri)
                except CoapError:
                    counts["errors"] += measuring
                    continue
                if measuring:
                    counts["ok" if response.code is Code.CONTENT else "other"] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(loop)
            await trio.sleep(warmup)
            measuring = True
            started, cpu, waited = time.perf_counter(), time.process_time(), _run_queue_wait()
            await trio.sleep(duration)
            measuring = False
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            waited = _run_queue_wait() - waited
            nursery.cancel_scope.cancel()
    return {**counts, "rate": counts["ok"] / elapsed, "cpu": cpu, "waited": waited}


async def _aiocoap_client(
    uri: str, sender: bytes, duration: float, warmup: float, directory: Path
) -> dict[str, Any]:
    import logging

    import aiocoap
    import aiocoap.error

    logging.basicConfig(level=logging.CRITICAL)
    where = directory / f"client-{sender.hex()}"
    _write_directory(where, sender, SERVER_ID)
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials.load_from_dict({uri: {"oscore": {"basedir": str(where) + "/"}}})
    counts = {"ok": 0, "other": 0, "errors": 0}
    measuring = False
    stopping = False

    async def loop() -> None:
        while not stopping:
            try:
                response = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            except aiocoap.error.Error:
                counts["errors"] += measuring
                continue
            if measuring:
                counts["ok" if response.code == aiocoap.CONTENT else "other"] += 1

    tasks = [asyncio.create_task(loop()) for _ in range(64)]
    await asyncio.sleep(warmup)
    measuring = True
    started, cpu, waited = time.perf_counter(), time.process_time(), _run_queue_wait()
    await asyncio.sleep(duration)
    measuring = False
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    waited = _run_queue_wait() - waited
    stopping = True
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await ctx.shutdown()
    return {**counts, "rate": counts["ok"] / elapsed, "cpu": cpu, "waited": waited}


def _run_queue_wait() -> float:
    """Seconds this process was runnable but waiting for a CPU (Linux schedstat; 0 elsewhere).

    The second field of ``/proc/self/schedstat`` (nanoseconds on the run
    queue): a client that waits there is bounded by the machine, not its work.
    """
    try:
        with open("/proc/self/schedstat") as file:
            return int(file.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _run_child(argv: list[str], cpu: int | None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, *argv],
        capture_output=True,
        check=False,
        timeout=300,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode(errors="replace")[-2000:])
    value: dict[str, Any] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return value


# -- bytes per context -------------------------------------------------------------------------


def bytes_per_context(library: str, count: int) -> float:
    """tracemalloc's growth per security context, ``count`` of them alive at once."""
    ids = [i.to_bytes(2, "big") for i in range(count)]
    if library == "coap_trio":
        _our_context(b"\x00", b"\x01")  # imports and caches first

        def make(i: int) -> Any:
            return _our_context(ids[i], b"\xff")

    else:
        import aiocoap.oscore as oscore

        class Context(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):  # type: ignore[misc]
            def __init__(self, sender: bytes) -> None:
                self.sender_id = sender
                self.recipient_id = b"\xff"
                self.id_context = None
                self.alg_aead = oscore.algorithms["AES-CCM-16-64-128"]
                self.hashfun = oscore.hashfunctions["sha256"]
                self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
                self.recipient_replay_window.initialize_empty()
                self.sender_sequence_number = 0
                self.derive_keys(SALT, SECRET)

            def post_seqnoincrease(self) -> None:
                pass

            def _store(self) -> None:
                pass

        Context(b"\x00")

        def make(i: int) -> Any:
            return Context(ids[i])

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [make(i) for i in range(count)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == count
    return (after - before) / count


# -- the protect layer, piece by piece ---------------------------------------------------------


def layers(rounds: int = 20_000, repeat: int = 5) -> dict[str, float]:
    """CPU microseconds per call of each piece of one protected exchange, in one process.

    The client's request protected, the server's verification of it and its
    response protected, the client's verification of that (coap_trio's
    engine, no sockets, no codec), then the parts of the first: the context
    lookup of the client shell (a hit), the nonce, the AAD, the AEAD seal.
    The best of ``repeat`` runs of ``rounds`` each (``time.process_time``: a
    process that waits for a CPU is not charged).
    """
    from coap_trio import Code, Message
    from coap_trio.protocol.oscore import OscoreEngine
    from coap_trio.protocol.oscore.protect import aad

    client_context = _our_context(b"\x40", SERVER_ID)
    server_context = _our_context(SERVER_ID, b"\x40")
    client, server = OscoreEngine(), OscoreEngine([server_context])
    request = Message(code=Code.GET, uri_path=(PATH,), token=b"\x01\x02")
    response = Message(code=Code.CONTENT, payload=b"hello", token=b"\x01\x02")
    pieces: dict[str, list[float]] = {}
    # (SecurityContext.seal since 2026-12-07; the AeadCipher before)
    seal = getattr(client_context, "seal", None) or client_context.sender_cipher.seal

    def timed(name: str, function: Any, *args: Any) -> list[Any]:
        started = time.process_time()
        results = [function(*a) for a in args] if args else [function() for _ in range(rounds)]
        pieces.setdefault(name, []).append((time.process_time() - started) / len(results) * 1e6)
        return results

    for _ in range(repeat):
        protected = timed(
            "client: protect_request", lambda: client.protect_request(request, client_context)
        )
        verified = timed(
            "server: verify_request", server.verify_request, *[(p,) for p, _ in protected]
        )
        answers = timed(
            "server: protect_response",
            server.protect_response,
            *[(response, v.binding) for v in verified],
        )
        timed(
            "client: verify_response",
            client.verify_response,
            *[(a, b) for a, (_, b) in zip(answers, protected, strict=True)],
        )
        timed("  of which: nonce", lambda: client_context.nonce(b"\x40", b"\x05\x06"))
        timed("  of which: AAD", lambda: aad(10, b"\x40", b"\x05\x06"))
        timed(
            "  of which: AEAD seal (AES-CCM)",
            lambda: seal(bytes(13), b"\x01\xb4hello", b"x" * 21),
        )
    return {name: min(values) for name, values in pieces.items()}


# -- orchestration -----------------------------------------------------------------------------


def measure(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    server_cpu, load_cpu = _peers.cpu_plan()
    results: dict[str, Any] = {"server": {}, "client": {}, "client_server_cpu": {}, "bytes": {}}
    for library in LIBRARIES:
        results["server"][library] = []
        results["client"][library] = []
        results["client_server_cpu"][library] = []
    with tempfile.TemporaryDirectory(prefix="coap_trio-oscore-") as temporary:
        directory = Path(temporary)
        for run in range(args.runs):
            for library in LIBRARIES:
                where = directory / f"server-{library}-{run}"
                peers = _peer_ids(args.sockets, GENERATOR_IDS)
                server = start_server(library, peers, server_cpu, where)
                try:
                    before = server.cpu_seconds()
                    figures = _run_child(
                        [
                            "--generate",
                            "--port",
                            str(server.port),
                            "--sockets",
                            str(args.sockets),
                            "--duration",
                            str(args.duration),
                        ],
                        load_cpu,
                    )
                    # (the generator protects its requests first: the server idles then)
                    figures["server_cpu"] = server.cpu_seconds() - before
                finally:
                    server.stop()
                results["server"][library].append(figures)
                rate = figures["rate"]
                log(f"  server {library} run {run + 1}: {rate:,.0f} requests/s {figures}")
            client_ids = _peer_ids(len(LIBRARIES), CLIENT_IDS + 2 * run)
            server = start_server("coap_trio", client_ids, server_cpu, directory / f"c{run}")
            try:
                for library, sender in zip(LIBRARIES, client_ids, strict=True):
                    before = server.cpu_seconds()
                    started = time.perf_counter()
                    figures = _run_child(
                        [
                            "--client",
                            library,
                            "--port",
                            str(server.port),
                            "--sender",
                            sender.hex(),
                            "--duration",
                            str(args.duration),
                            "--directory",
                            str(directory),
                        ],
                        load_cpu,
                    )
                    share = (server.cpu_seconds() - before) / (time.perf_counter() - started)
                    results["client"][library].append(figures)
                    results["client_server_cpu"][library].append(share)
                    log(
                        f"  client {library} run {run + 1}: {figures['rate']:,.0f} requests/s "
                        f"{figures}, server CPU {share:.0%}"
                    )
            finally:
                server.stop()
    for library in LIBRARIES:
        results["bytes"][library] = json.loads(
            subprocess.run(
                [sys.executable, __file__, "--bytes", library, "--count", str(CONTEXTS)],
                capture_output=True,
                check=True,
                timeout=300,
            ).stdout
        )
        log(f"  bytes per security context, {library}: {results['bytes'][library]:,.0f}")
    return results


def medians(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Median rates per side and library, and per CPU-second of the side measured
    (``server_per_cpu``: the server's CPU; ``client_per_cpu``: the client's)."""
    figures = {
        side: {
            library: statistics.median(run["rate"] for run in results[side][library])
            for library in LIBRARIES
        }
        for side in ("server", "client")
    }
    for side, key in (("server", "server_cpu"), ("client", "cpu")):
        figures[f"{side}_per_cpu"] = {
            library: statistics.median(
                run["ok"] / run[key] for run in results[side][library] if run[key] > 0
            )
            for library in LIBRARIES
        }
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--sockets", type=int, default=8)
    parser.add_argument("--serve", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bytes", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=CONTEXTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peers", help=argparse.SUPPRESS)
    parser.add_argument("--sender", help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    parser.add_argument(
        "--layers", action="store_true", help="CPU microseconds per piece of the protect layer"
    )
    args = parser.parse_args(argv)
    if args.layers:
        for name, value in layers().items():
            print(f"{name:<34} {value:6.2f} us")
        return
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    if args.serve:
        peers = [bytes.fromhex(peer) for peer in args.peers.split(",")]
        if args.serve == "coap_trio":
            serve_coap_trio(args.port, peers)
        else:
            serve_aiocoap(args.port, peers, Path(args.directory))
        return
    if args.generate:
        print(json.dumps(generate(args.port, args.sockets, 8, args.duration)))
        return
    if args.client:
        uri = f"coap://[::1]:{args.port}/{PATH}"
        sender = bytes.fromhex(args.sender)
        if args.client == "coap_trio":
            import trio

            figures = trio.run(_trio_client, uri, sender, args.duration, 1.0)
        else:
            figures = asyncio.run(
                _aiocoap_client(uri, sender, args.duration, 1.0, Path(args.directory))
            )
        print(json.dumps(figures))
        return
    if args.bytes:
        print(json.dumps(bytes_per_context(args.bytes, args.count)))
        return
    print(_peers.describe_machine())
    results = measure(args)
    rates = medians(results)
    for side in ("server", "client", "server_per_cpu", "client_per_cpu"):
        ratio = rates[side]["coap_trio"] / rates[side]["aiocoap"]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        ours, theirs = rates[side]["coap_trio"], rates[side]["aiocoap"]
        print(
            f"{side}: coap_trio {ours:,.0f}/s, aiocoap {theirs:,.0f}/s: {ratio:.1f}x "
            f"(target >= {TARGET_RATIO:g}x: {verdict})"
        )
    for library in LIBRARIES:
        print(f"bytes per security context, {library}: {results['bytes'][library]:,.0f}")


if __name__ == "__main__":
    main()
