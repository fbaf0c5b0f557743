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
* libcoap (optional): ``coap-server-notls``'s own ``/example_data``, which
  is observable and changes with a PUT: it is set to ``0`` first (its
  1500-byte initial content would be block-wise), and the change is a PUT
  of ``1`` (answered, like the others' POST, with 2.04).

The client is this process: plain non-blocking sockets and ``selectors``,
``--sockets`` source sockets (default: one per observation, as 10,000
separate clients would have; libcoap keeps only one observation per client
address and resource), each with a large receive buffer.
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

Targets (the issue's): coap_trio <= 4 KB per observation; coap_trio's
fan-out faster than libcoap's. With two CPUs or more the
servers are pinned to one CPU and this process (the client) to another.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import selectors
import shutil
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _peers import (
    HOST,
    LIBCOAP_SERVER,
    Peer,
    cpu_plan,
    describe_machine,
    pin_self,
    start_libcoap_server,
    start_python_server,
)

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
    """A running server (a :class:`_peers.Peer`), the resource to observe and how it changes."""

    peer: Peer
    path: str
    #: False: a POST to /trigger changes it; True: a PUT to libcoap's /example_data does.
    libcoap: bool

    @property
    def name(self) -> str:
        return self.peer.name

    @property
    def port(self) -> int:
        return self.peer.port

    def rss(self) -> int:
        """The server's resident set size in bytes (VmRSS)."""
        return self.peer.rss()

    def stop(self) -> None:
        self.peer.stop()


def start_server(name: str, capacity: int, cpu: int | None) -> Server:
    """The named server (coap_trio, aiocoap or libcoap), pinned to ``cpu``."""
    cpus = None if cpu is None else [cpu]
    if name == "libcoap":
        server = Server(start_libcoap_server(cpus), "example_data", True)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2.0)  # its 1500-byte initial content would be block-wise: replace it
            sock.sendto(encode_trigger(0x0101, True, b"0"), (HOST, server.port))
            if sock.recv(2048)[1] not in (0x41, 0x44):  # 2.01 Created, 2.04 Changed
                raise RuntimeError("libcoap refused the PUT to /example_data")
        return server
    argv = [__file__, "--serve", name, "--observers", str(capacity)]
    return Server(start_python_server(argv, name, cpus), "obs", False)


# -- the raw client ----------------------------------------------------------------------


def _option(delta: int, value: bytes) -> bytes:
    assert delta < 13
    assert len(value) < 13
    return bytes([(delta << 4) | len(value)]) + value


def encode_register(mid: int, token: bytes, path: str) -> bytes:
    header = bytes([0x40 | len(token), 0x01]) + struct.pack(">H", mid) + token
    return header + _option(_OBSERVE, b"") + _option(_URI_PATH - _OBSERVE, path.encode())


def encode_trigger(mid: int, libcoap: bool = False, payload: bytes = b"1") -> bytes:
    """POST /trigger (coap_trio, aiocoap), or libcoap's PUT /example_data of ``payload``."""
    token = b"tr"
    method, path, body = (
        (0x03, b"example_data", b"\xff" + payload) if libcoap else (0x02, b"trigger", b"")
    )
    header = bytes([0x40 | len(token), method]) + struct.pack(">H", mid) + token
    return header + _option(_URI_PATH, path) + body


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
        buffer = 8 << 20 if sockets <= 64 else 256 << 10
        for index in range(sockets):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, buffer)
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

    def fan_out(
        self, expected: int, payload: bytes, timeout: float, libcoap: bool = False
    ) -> tuple[float, float, int]:
        """Trigger the change, then time until ``expected`` tokens got ``payload``.

        (seconds from the POST to the last notification, from the first
        notification to the last, tokens notified)."""
        seen: set[bytes] = set()
        mid = self.next_mid(0)
        started = time.perf_counter()
        self.socks[0].sendto(encode_trigger(mid, libcoap, payload), self.server)
        finished = first = started
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
                    if not seen:
                        first = time.perf_counter()
                    seen.add(token)
                    finished = time.perf_counter()
        return finished - started, finished - first, len(seen)


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
    #: From the change (POST /trigger, libcoap: PUT) to the last notification.
    fanout_seconds: float
    #: From the first notification of the change to the last.
    spread_seconds: float
    notified: int

    @property
    def per_observation(self) -> float:
        return (self.rss_after - self.rss_before) / max(self.registered, 1)

    @property
    def complete(self) -> bool:
        """Every observation registered, and every one notified."""
        return self.registered == self.observers and self.notified == self.registered


def measure(server: Server, args: argparse.Namespace) -> Result:
    """Register ``args.observers`` observations, read the RSS, time one change's fan-out."""
    client = Client(server.port, args.sockets or args.observers)
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
        fanout, spread, notified = client.fan_out(
            registered, b"1", args.fanout_timeout, server.libcoap
        )
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
            spread,
            notified,
        )
    finally:
        client.close()


def _kb(value: float) -> str:
    return f"{value / 1024:,.2f}"


def report(results: list[Result]) -> None:
    header = (
        f"{'server':<10} {'registered':>11} {'failed':>6} {'reg s':>7} {'RSS before MB':>14} "
        f"{'RSS after MB':>13} {'KB/obs':>8} {'fan-out s':>10} {'spread s':>9} {'notified':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<10} {r.registered:>6}/{r.observers:<4} {r.failed:>6} "
            f"{r.register_seconds:>7.2f} "
            f"{r.rss_before / 2**20:>14.1f} {r.rss_after / 2**20:>13.1f} "
            f"{_kb(r.per_observation):>8} {r.fanout_seconds:>10.3f} "
            f"{r.spread_seconds:>9.3f} {r.notified:>9}"
        )
    print(
        "fan-out: from the request that changes the state (POST /trigger; libcoap: PUT\n"
        "/example_data) to the last observer notified; spread: from the first notification\n"
        "to the last."
    )
    named = {r.name: r for r in results}
    trio_r, aio_r, lib_r = named.get("coap_trio"), named.get("aiocoap"), named.get("libcoap")
    print()
    if trio_r is not None:
        ok = trio_r.per_observation <= 4096 and trio_r.registered == trio_r.observers
        print(
            f"target coap_trio <= 4 KB per observation: "
            f"{'met' if ok else 'NOT met'} ({_kb(trio_r.per_observation)} KB)"
        )
        if lib_r is not None:
            faster = trio_r.fanout_seconds < lib_r.fanout_seconds
            verdict = "met" if faster and trio_r.complete and lib_r.complete else "NOT met"
            print(f"target coap_trio fan-out faster than libcoap's: {verdict}")
        if aio_r is not None and trio_r.fanout_seconds and aio_r.fanout_seconds:
            ratio = aio_r.fanout_seconds / trio_r.fanout_seconds
            print(f"fan-out time: aiocoap / coap_trio = {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", type=int, default=10_000, help="observations per server")
    parser.add_argument("--quick", action="store_true", help="1,000 observations")
    add_options(parser)
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
    print(describe_machine())
    print(f"observers={args.observers} sockets={args.sockets} inflight={args.inflight}")
    names = ["coap_trio", "aiocoap"]
    if not args.no_libcoap and shutil.which(LIBCOAP_SERVER):
        names.append("libcoap")
    results = measure_servers(names, args)
    print()
    report(results)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The client's options (shared with run.py)."""
    parser.add_argument(
        "--sockets",
        type=int,
        default=0,
        help="client source sockets (default 0: one per observation, as many clients would: "
        "libcoap keeps one observation per client address and resource)",
    )
    parser.add_argument("--inflight", type=int, default=64, help="registrations in flight")
    parser.add_argument("--register-timeout", type=float, default=300.0)
    parser.add_argument("--fanout-timeout", type=float, default=60.0)


def measure_servers(
    names: list[str], args: argparse.Namespace, log: Callable[[str], None] = print
) -> list[Result]:
    """Each named server started (pinned), measured once, stopped; this process is the client."""
    server_cpu, client_cpu = cpu_plan()
    pin_self(client_cpu)
    wanted = (args.sockets or args.observers) + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    results = []
    for name in names:
        server = start_server(name, args.observers, server_cpu)
        try:
            log(f"  measuring {name} (pid {server.peer.process.pid}, port {server.port})...")
            results.append(measure(server, args))
        finally:
            server.stop()
    return results


if __name__ == "__main__":
    main()
