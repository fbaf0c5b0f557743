"""Server memory per observation and notification fan-out: coap_trio vs aiocoap (vs libcoap).

Run by hand (not collected by pytest; Linux only: it reads /proc)::

    python benchmarks/observe.py              # 10,000 observations per server
    python benchmarks/observe.py --quick      # 1,000
    python benchmarks/observe.py --observers 20000 --no-libcoap

Each server is a child process on ``::1`` (a port the OS picked):

* coap_trio: ``open_context(bind=("::1", 0), site=site)`` with
  ``max_observations`` and ``max_observations_per_remote`` raised to allow
  the run, serving ``/obs`` (an :class:`~coap_trio.observable.ObservableResource`
  answering its state as ASCII digits) and ``/trigger`` (a POST there
  increments the state and calls ``updated_state()``);
* aiocoap: ``aiocoap.resource.ObservableResource`` and the same ``/trigger``;
* libcoap (optional, memory only): ``coap-server-notls``'s ``/time``, which
  changes once a second by itself, so there is no fan-out figure for it.

The client is this process: plain non-blocking sockets and ``selectors``,
``--sockets`` source sockets (default 32), each with a large receive buffer.
Every registration is a pre-encoded CON GET Observe=0 with its own message
ID and its own 4-byte token (the observation's index); ``--inflight``
registrations (default 64) are outstanding at once, a reply frees a slot.
Unanswered registrations are resent with the same MID after 2 s (at most 4
times). A registration counts when a 2.05 with its token and an Observe option
arrives; a response without Observe (the server declined) counts as failed. CON
notifications are answered with an empty ACK.

Per server: VmRSS from ``/proc/<pid>/status`` after a warm-up (one observation
registered and cancelled is not done: the warm-up is a plain GET) and again
after all N registrations plus a 1 s settle: the difference over N is the
memory per observation (it includes everything the server keeps for it:
the observation, its task, the deduplication entry of the registration's
MID...). Then one CON POST ``/trigger`` is sent and the clock runs until every
token got a notification carrying the new state: the fan-out time (or the
count received when ``--fanout-timeout`` ran out: notifications are NON for
both servers mostly, so a datagram dropped by a full socket buffer is lost).

Targets: coap_trio <= 4 KB per observation; coap_trio's fan-out faster than
aiocoap's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

HOST = "::1"
LIBCOAP_SERVER = "coap-server-notls"

# CoAP bits used by the hand-made datagrams.
_CON, _NON, _ACK, _RST = 0, 1, 2, 3
_CONTENT = 0x45  # 2.05
_CHANGED = 0x44  # 2.04
_OBSERVE = 6
_URI_PATH = 11


# -- the servers (child processes) -------------------------------------------------------


def serve_coap_trio(capacity: int) -> None:
    import trio

    from coap_trio import Code, Message, open_context
    from coap_trio.observable import ObservableResource
    from coap_trio.resource import Resource, Site

    class Obs(ObservableResource):
        def __init__(self) -> None:
            super().__init__()
            self.state = 0

        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, payload=b"%d" % self.state)

    class Trigger(Resource):
        def __init__(self, obs: Obs) -> None:
            self.obs = obs

        async def render_post(self, request: Message) -> Message:
            self.obs.state += 1
            self.obs.updated_state()
            return Message(code=Code.CHANGED)

    async def main() -> None:
        obs = Obs()
        site = Site()
        site.add(["obs"], obs)
        site.add(["trigger"], Trigger(obs))
        async with open_context(
            bind=(HOST, 0),
            site=site,
            max_observations=max(capacity, 100_000),
            max_observations_per_remote=max(capacity, 1_000),
        ) as ctx:
            print(f"PORT {ctx.addresses[0].port}", flush=True)
            await trio.sleep_forever()

    trio.run(main)


def serve_aiocoap() -> None:
    import aiocoap
    import aiocoap.resource

    class Obs(aiocoap.resource.ObservableResource):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.state = 0

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=b"%d" % self.state)

    class Trigger(aiocoap.resource.Resource):  # type: ignore[misc]
        def __init__(self, obs: Obs) -> None:
            super().__init__()
            self.obs = obs

        async def render_post(self, request: Any) -> Any:
            self.obs.state += 1
            self.obs.updated_state()
            return aiocoap.Message(code=aiocoap.CHANGED)

    async def main() -> None:
        obs = Obs()
        site = aiocoap.resource.Site()
        site.add_resource(["obs"], obs)
        site.add_resource(["trigger"], Trigger(obs))
        context = await aiocoap.Context.create_server_context(
            site, bind=(HOST, 0), transports=["udp6"]
        )
        interface = context.request_interfaces[0].token_interface.message_interface
        port = interface.transport.get_extra_info("socket").getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    path: str
    trigger: bool

    def rss(self) -> int:
        """The server's resident set size in bytes (VmRSS)."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_python_server(name: str, capacity: int) -> Server:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, "--observers", str(capacity)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,
    )
    assert process.stdout is not None
    readable, _, _ = selectors.select.select([process.stdout], [], [], 30.0)
    line = process.stdout.readline().decode().strip() if readable else "(nothing in 30 s)"
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the {name} server did not start (said {line!r})")
    return Server(name, process, int(line.split()[1]), "obs", True)


def start_libcoap_server() -> Server:
    binary = shutil.which(LIBCOAP_SERVER)
    if binary is None:
        raise RuntimeError(f"{LIBCOAP_SERVER} is not installed")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "-A", HOST, "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Server("libcoap", process, port, "time", False)


# -- the raw client ----------------------------------------------------------------------


def _option(delta: int, value: bytes) -> bytes:
    assert delta < 13
    assert len(value) < 13
    return bytes([(delta << 4) | len(value)]) + value


def encode_register(mid: int, token: bytes, path: str) -> bytes:
    header = bytes([0x40 | len(token), 0x01]) + struct.pack(">H", mid) + token
    return header + _option(_OBSERVE, b"") + _option(_URI_PATH - _OBSERVE, path.encode())


def encode_trigger(mid: int) -> bytes:
    token = b"tr"
    header = bytes([0x40 | len(token), 0x02]) + struct.pack(">H", mid) + token
    return header + _option(_URI_PATH, b"trigger")


def empty_ack(mid: int) -> bytes:
    return bytes([0x60, 0x00]) + struct.pack(">H", mid)


def parse(data: bytes) -> tuple[int, int, int, bytes, bytes, bool] | None:
    """(type, code, mid, token, payload, has Observe) of a datagram, or None if malformed."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    mtype = (data[0] >> 4) & 3
    tkl = data[0] & 0x0F
    token = data[4 : 4 + tkl]
    position, number, observe = 4 + tkl, 0, False
    while position < len(data) and data[position] != 0xFF:
        delta, length = data[position] >> 4, data[position] & 0x0F
        position += 1
        if delta == 13:
            delta, position = data[position] + 13, position + 1
        elif delta == 14:
            delta, position = (
                int.from_bytes(data[position : position + 2], "big") + 269,
                position + 2,
            )
        if length == 13:
            length, position = data[position] + 13, position + 1
        elif length == 14:
            length = int.from_bytes(data[position : position + 2], "big") + 269
            position += 2
        number += delta
        observe = observe or number == _OBSERVE
        position += length
    payload = data[position + 1 :]
    return mtype, data[1], struct.unpack(">H", data[2:4])[0], token, payload, observe


class Client:
    def __init__(self, port: int, sockets: int) -> None:
        self.server = (HOST, port)
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        for index in range(sockets):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                    break
                except OSError:
                    continue
            sock.bind((HOST, 0))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, index)
            self.socks.append(sock)
        self.mids = [int.from_bytes(os.urandom(2), "big") for _ in range(sockets)]

    def close(self) -> None:
        for sock in self.socks:
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()

    def next_mid(self, index: int) -> int:
        self.mids[index] = (self.mids[index] + 1) & 0xFFFF
        return self.mids[index]

    def drain(self, timeout: float) -> list[tuple[int, bytes]]:
        """Every datagram waiting (waiting at most ``timeout`` for the first)."""
        out: list[tuple[int, bytes]] = []
        for key, _ in self.selector.select(timeout):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            for _ in range(4096):
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                except OSError:  # ICMP errors on a dying server
                    break
                out.append((key.data, data))
        return out

    def register(self, count: int, path: str, inflight: int, deadline: float) -> tuple[int, int]:
        """Register ``count`` observations; (registered, given up)."""
        sockets = len(self.socks)
        # token -> (socket, mid, datagram, sent_at, tries)
        pending: dict[bytes, tuple[int, int, bytes, float, int]] = {}
        by_mid: dict[tuple[int, int], bytes] = {}
        acked: set[bytes] = set()  # empty ACK seen: the response comes separately
        registered: set[bytes] = set()
        failed = 0
        next_index = 0
        last_check = time.monotonic()
        while len(registered) + failed < count:
            now = time.monotonic()
            if now > deadline:
                break
            while len(pending) < inflight and next_index < count:
                index = next_index % sockets
                token = struct.pack(">I", next_index)
                mid = self.next_mid(index)
                data = encode_register(mid, token, path)
                self.socks[index].sendto(data, self.server)
                pending[token] = (index, mid, data, now, 1)
                by_mid[(index, mid)] = token
                next_index += 1
            for index, data in self.drain(0.05):
                parsed = parse(data)
                if parsed is None:
                    continue
                mtype, code, mid, token, _, observe = parsed
                if mtype == _CON:
                    self.socks[index].sendto(empty_ack(mid), self.server)
                if mtype == _ACK and code == 0:
                    token = by_mid.get((index, mid), b"")
                    if token in pending:
                        acked.add(token)
                    continue
                if token in pending and code >= 0x40:  # any response ends the attempt
                    entry = pending.pop(token)
                    by_mid.pop((entry[0], entry[1]), None)
                    if code == _CONTENT and observe:
                        registered.add(token)
                    else:  # answered without Observe: the server refused to register it
                        failed += 1
            if now - last_check > 0.5:
                last_check = now
                for token, (index, mid, data, sent_at, tries) in list(pending.items()):
                    if token in acked or now - sent_at < 2.0:
                        continue
                    if tries >= 5:
                        del pending[token]
                        by_mid.pop((index, mid), None)
                        failed += 1
                    else:
                        self.socks[index].sendto(data, self.server)
                        pending[token] = (index, mid, data, now, tries + 1)
        return len(registered), failed

    def settle(self, seconds: float) -> None:
        """Keep answering CON notifications for ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            for index, data in self.drain(min(left, 0.05)):
                parsed = parse(data)
                if parsed is not None and parsed[0] == _CON:
                    self.socks[index].sendto(empty_ack(parsed[2]), self.server)

    def fan_out(self, expected: int, payload: bytes, timeout: float) -> tuple[float, int]:
        """POST /trigger, then time until ``expected`` tokens got ``payload``."""
        seen: set[bytes] = set()
        mid = self.next_mid(0)
        started = time.perf_counter()
        self.socks[0].sendto(encode_trigger(mid), self.server)
        finished = started
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            for index, data in self.drain(0.05):
                parsed = parse(data)
                if parsed is None:
                    continue
                mtype, code, mid, token, body, _ = parsed
                if mtype == _CON:
                    self.socks[index].sendto(empty_ack(mid), self.server)
                fresh = code == _CONTENT and mtype in (_CON, _NON) and body == payload
                if fresh and token not in seen:
                    seen.add(token)
                    finished = time.perf_counter()
        return finished - started, len(seen)


# -- one server, measured ----------------------------------------------------------------


@dataclass
class Result:
    name: str
    observers: int
    registered: int
    failed: int
    rss_before: int
    rss_after: int
    register_seconds: float
    fanout_seconds: float | None
    notified: int

    @property
    def per_observation(self) -> float:
        return (self.rss_after - self.rss_before) / max(self.registered, 1)


def measure(server: Server, args: argparse.Namespace) -> Result:
    client = Client(server.port, args.sockets)
    try:
        # Warm-up: one plain GET answered (the server's code paths loaded).
        client.socks[0].sendto(
            bytes([0x40, 0x01])
            + struct.pack(">H", client.next_mid(0))
            + _option(_URI_PATH, server.path.encode()),
            client.server,
        )
        client.settle(1.0)
        rss_before = server.rss()
        started = time.perf_counter()
        registered, failed = client.register(
            args.observers, server.path, args.inflight, time.monotonic() + args.register_timeout
        )
        register_seconds = time.perf_counter() - started
        client.settle(1.0)
        rss_after = server.rss()
        fanout: float | None = None
        notified = 0
        if server.trigger:
            fanout, notified = client.fan_out(registered, b"1", args.fanout_timeout)
            client.settle(0.5)
        return Result(
            server.name,
            args.observers,
            registered,
            failed,
            rss_before,
            rss_after,
            register_seconds,
            fanout,
            notified,
        )
    finally:
        client.close()


def _kb(value: float) -> str:
    return f"{value / 1024:,.2f}"


def report(results: list[Result]) -> None:
    header = (
        f"{'server':<10} {'registered':>11} {'failed':>6} {'reg s':>7} {'RSS before MB':>14} "
        f"{'RSS after MB':>13} {'KB/obs':>8} {'fan-out s':>10} {'notified':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        fan = "n/a" if r.fanout_seconds is None else f"{r.fanout_seconds:.3f}"
        notified = "n/a" if r.fanout_seconds is None else f"{r.notified}"
        print(
            f"{r.name:<10} {r.registered:>6}/{r.observers:<4} {r.failed:>6} "
            f"{r.register_seconds:>7.2f} "
            f"{r.rss_before / 2**20:>14.1f} {r.rss_after / 2**20:>13.1f} "
            f"{_kb(r.per_observation):>8} {fan:>10} {notified:>9}"
        )
    named = {r.name: r for r in results}
    trio_r, aio_r = named.get("coap_trio"), named.get("aiocoap")
    print()
    if trio_r is not None and aio_r is not None:
        if trio_r.per_observation > 0:
            ratio = aio_r.per_observation / trio_r.per_observation
            print(f"memory per observation: aiocoap / coap_trio = {ratio:.2f}x")
        if trio_r.fanout_seconds and aio_r.fanout_seconds:
            ratio = aio_r.fanout_seconds / trio_r.fanout_seconds
            print(f"fan-out time:           aiocoap / coap_trio = {ratio:.2f}x")
    if trio_r is not None:
        ok = trio_r.per_observation <= 4096 and trio_r.registered == trio_r.observers
        print(
            f"target coap_trio <= 4 KB per observation: "
            f"{'HOLDS' if ok else 'MISSED'} ({_kb(trio_r.per_observation)} KB)"
        )
        if aio_r is not None:
            complete = trio_r.notified == trio_r.registered and aio_r.notified == aio_r.registered
            faster = (
                trio_r.fanout_seconds is not None
                and aio_r.fanout_seconds is not None
                and trio_r.fanout_seconds < aio_r.fanout_seconds
            )
            verdict = "HOLDS" if faster and complete else "MISSED"
            if faster and not complete:
                verdict += " (a fan-out was incomplete)"
            print(f"target coap_trio fan-out faster than aiocoap: {verdict}")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", type=int, default=10_000, help="observations per server")
    parser.add_argument("--quick", action="store_true", help="1,000 observations")
    parser.add_argument("--sockets", type=int, default=32, help="client source sockets")
    parser.add_argument("--inflight", type=int, default=64, help="registrations in flight")
    parser.add_argument("--register-timeout", type=float, default=300.0)
    parser.add_argument("--fanout-timeout", type=float, default=60.0)
    parser.add_argument("--no-libcoap", action="store_true", help="skip coap-server-notls")
    parser.add_argument("--serve", choices=("coap_trio", "aiocoap"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.observers = 1_000
    if args.serve == "coap_trio":
        serve_coap_trio(args.observers)
        return
    if args.serve == "aiocoap":
        serve_aiocoap()
        return

    print(
        f"observers={args.observers} sockets={args.sockets} inflight={args.inflight} "
        f"python={sys.version.split()[0]} coap_trio={_version('coap_trio')} "
        f"aiocoap={_version('aiocoap')}"
    )
    results: list[Result] = []
    starters: list[tuple[str, Any]] = [
        ("coap_trio", lambda: start_python_server("coap_trio", args.observers)),
        ("aiocoap", lambda: start_python_server("aiocoap", args.observers)),
    ]
    if not args.no_libcoap and shutil.which(LIBCOAP_SERVER):
        starters.append(("libcoap", start_libcoap_server))
    for name, start in starters:
        server = start()
        try:
            if name == "libcoap":
                time.sleep(0.5)
            print(f"measuring {name} (pid {server.process.pid}, port {server.port})...", flush=True)
            results.append(measure(server, args))
        finally:
            server.stop()
    print()
    report(results)


if __name__ == "__main__":
    main()
