"""The nginx ``stream`` configuration of ``docs/deploy.md``, in front of two coap_trio servers.

Everything runs on loopback, started by the tests themselves: two coap_trio
servers in this process (``open_context(bind=("127.0.0.1", 0), site=...)``),
each with a counting resource and an observable one whose representation
names the server, and nginx as a child process (``nginx -c CONF -p PREFIX
-e ERROR_LOG -g 'daemon off;'``) with a configuration made of the page's
``stream`` block, its listen address and upstream servers replaced by the
test's. The stream module is loaded from where Debian's
``libnginx-mod-stream`` puts it. nginx listens on a free loopback port
(picked by binding port 0 and closing; another one if nginx cannot bind
it) and is stopped (SIGTERM, then SIGKILL) when the test ends.

The loss is on the clients' side: their Contexts use a network that drops
10% of the datagrams they send and 10% of those they receive (seeded), so
requests, their retransmissions, ACKs and responses are lost between the
client and nginx, and nginx sees what a lossy link would hand it. The
clients use ACK_TIMEOUT 0.25 s to keep the tests short (and MAX_RETRANSMIT 6).

Checked:

* 200 CON POSTs with distinct bodies from eight clients (eight source
  ports, spread over the two servers by the hash): every one answered with
  its own body, and the servers' resources together saw each body exactly
  once, so the retransmissions that reached a server through nginx were
  deduplicated there;
* an observation's notifications reach the client through nginx;
* clients observing with ``reregister=True``: once the server that served
  one of them is stopped, every client that observed it observes the other
  one (its notifications name it) after re-registering, and the others go on
  undisturbed.

nginx must be installed with its stream module (Debian: ``nginx`` and
``libnginx-mod-stream``; ``scripts/test`` installs them). Missing on a
machine with apt-get, the tests fail; elsewhere they are skipped.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from coap_trio import (
    Code,
    Context,
    Message,
    MessagingConfig,
    ObservableResource,
    Resource,
    Site,
    TransmissionParameters,
    open_context,
)
from coap_trio.remote import DatagramRemote
from coap_trio.transports.base import (
    DatagramEndpoint,
    DatagramHandler,
    EndpointStatistics,
    ErrorHandler,
)
from coap_trio.transports.udp import UDPNetwork

DEPLOY_PAGE = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
#: Where Debian's libnginx-mod-stream installs the module.
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
HOST = "127.0.0.1"
LOSS = 0.10
#: Seconds a whole test may take (each one stays well below).
TEST_LIMIT = 25.0
#: The clients' transmission parameters: RFC 7252's, but a shorter ACK_TIMEOUT and two
#: more retransmissions (a request fails when 7 round trips in a row lose a datagram:
#: about 0.19**7, 1e-5, against 2.5e-4 with 5), so that 10% loss each way fails none.
CLIENT_CONFIG = MessagingConfig(params=TransmissionParameters(ACK_TIMEOUT=0.25, MAX_RETRANSMIT=6))
#: Seconds between two changes of each server's observable resource; its Max-Age.
TICK = 0.2
MAX_AGE = 1


def nginx_binary() -> str:
    """The nginx executable; fails (apt-get exists here) or skips when nginx is missing."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is not None and STREAM_MODULE.is_file():
        return binary
    missing = "nginx" if binary is None else f"the stream module ({STREAM_MODULE})"
    message = f"{missing} is not installed (Debian: nginx, libnginx-mod-stream)"
    if shutil.which("apt-get"):
        pytest.fail(f"{message}; scripts/test installs it")
    pytest.skip(f"{message}, and this machine has no apt-get to install it")


def documented_stream_block() -> str:
    """The ``stream { ... }`` block of the page's nginx configuration."""
    text = DEPLOY_PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"```nginx\n(.*?)```", text, flags=re.DOTALL)
    streams = [block for block in blocks if block.lstrip().startswith("stream {")]
    assert len(streams) == 1, "docs/deploy.md shows one nginx stream block"
    return streams[0]


def nginx_config(listen_port: int, backends: list[int], prefix: Path) -> str:
    """The page's stream block on ``HOST:listen_port`` before ``backends``; a whole nginx.conf."""
    block = documented_stream_block()
    block, listens = re.subn(r"listen \d+ udp", f"listen {HOST}:{listen_port} udp", block)
    assert listens == 1, block
    servers = re.findall(r"^( *)server [\d.]+:\d+(.*);$", block, flags=re.MULTILINE)
    assert len(servers) == 2, block
    indent, parameters = servers[0]
    lines = "".join(f"{indent}server {HOST}:{port}{parameters};\n" for port in backends)
    block = re.sub(r"(^ *server [\d.]+:\d+.*;\n)+", lines, block, flags=re.MULTILINE)
    return (
        f"load_module {STREAM_MODULE};\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "worker_processes 2;\n"
        "events { worker_connections 1024; }\n"
        f"{block}"
    )


def free_udp_port() -> int:
    """A loopback UDP port free right now (it may be taken before nginx binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Nginx:
    """nginx running as a child of the test, in front of the backends."""

    process: subprocess.Popen[bytes]
    port: int
    prefix: Path

    def log(self) -> str:
        """Its error log and standard error so far (info level: sessions, upstream errors)."""
        paths = [self.prefix / "error.log", self.prefix / "stderr"]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())


@asynccontextmanager
async def running_nginx(backends: list[int], prefix: Path) -> AsyncIterator[Nginx]:
    """Start nginx on a free port before ``backends``; stop it when the block is left."""
    binary = nginx_binary()
    failures = []
    for attempt in range(5):
        port = free_udp_port()
        home = prefix / f"nginx-{attempt}"
        home.mkdir()
        conf = home / "nginx.conf"
        conf.write_text(nginx_config(port, backends, home), encoding="ascii")
        argv = [binary, "-c", str(conf), "-p", str(home), "-e", str(home / "error.log")]
        with (home / "stderr").open("wb") as stderr:
            process = subprocess.Popen(
                [*argv, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            nginx = Nginx(process, port, home)
            with trio.move_on_after(5):
                while process.poll() is None and not (home / "nginx.pid").exists():
                    await trio.sleep(0.02)
            if process.poll() is None and (home / "nginx.pid").exists():
                yield nginx
                return
            failures.append(nginx.log())
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
    raise AssertionError(f"nginx did not start: {failures}")


# -- the servers -----------------------------------------------------------------------------


class Counting(Resource):
    """POST: counts the body and answers 2.04 with it."""

    def __init__(self) -> None:
        self.bodies: Counter[bytes] = Counter()

    async def render_post(self, request: Message) -> Message:
        self.bodies[request.payload] += 1
        return Message(code=Code.CHANGED, payload=request.payload)


class Ticking(ObservableResource):
    """Observable: ``NAME tick N``, changing every TICK seconds."""

    max_age = MAX_AGE

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.ticks = 0

    def payload(self) -> bytes:
        return f"{self.name} tick {self.ticks}".encode()

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=self.payload())


@dataclass
class Backend:
    """One coap_trio server, stoppable on its own."""

    name: str
    context: Context
    counting: Counting
    scope: trio.CancelScope
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def port(self) -> int:
        """The port it serves on."""
        return self.context.addresses[0].port

    @property
    def duplicates(self) -> int:
        """Duplicate requests it recognised (and answered from its deduplication store)."""
        return sum(m.duplicates for m in self.context.statistics.messaging)

    async def stop(self) -> None:
        """Close its Context (its socket is gone: nginx's datagrams to it meet ICMP)."""
        self.scope.cancel()
        await self.stopped.wait()


async def run_backend(name: str, *, task_status: trio.TaskStatus[Backend]) -> None:
    """Serve ``/count`` and ``/ticks`` on ``HOST`` until cancelled."""
    counting, ticking = Counting(), Ticking(name)
    site = Site()
    site.add(["count"], counting)
    site.add(["ticks"], ticking)
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with open_context(bind=(HOST, 0), site=site) as ctx:
                task_status.started(Backend(name, ctx, counting, scope, stopped))
                while True:
                    await trio.sleep(TICK)
                    ticking.ticks += 1
                    ticking.updated_state()
    finally:
        stopped.set()


# -- the clients' lossy network ---------------------------------------------------------------


class _LossyEndpoint:
    def __init__(self, inner: DatagramEndpoint, drop: Callable[[], bool]) -> None:
        self._inner = inner
        self._drop = drop

    @property
    def local_address(self) -> DatagramRemote:
        return self._inner.local_address

    @property
    def statistics(self) -> EndpointStatistics:
        return self._inner.statistics

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        return self._inner.remote_for(host, port)

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        if not self._drop():
            self._inner.send(data, remote)

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        def received(batch: list[tuple[bytes, DatagramRemote]]) -> None:
            kept = [item for item in batch if not self._drop()]
            if kept:
                on_datagrams(kept)

        await self._inner.run(received, on_error, task_status=task_status)

    def close(self) -> None:
        self._inner.close()


class LossyNetwork:
    """Real UDP, with ``loss`` of the datagrams dropped each way (seeded)."""

    def __init__(self, loss: float, seed: int) -> None:
        self._inner = UDPNetwork()
        rng = random.Random(seed)
        self.dropped = 0

        def drop() -> bool:
            if rng.random() < loss:
                self.dropped += 1
                return True
            return False

        self._drop = drop

    def open_endpoint(self, host: str, port: int) -> DatagramEndpoint:
        return _LossyEndpoint(self._inner.open_endpoint(host, port), self._drop)

    def open_group_endpoint(
        self, group: str, port: int, reply: DatagramEndpoint, interface: str | None = None
    ) -> DatagramEndpoint:
        raise NotImplementedError("no multicast here")

    async def resolve(self, host: str, port: int) -> list[str]:
        return await self._inner.resolve(host, port)


@asynccontextmanager
async def lossy_client(seed: int) -> AsyncIterator[tuple[Context, LossyNetwork]]:
    """A client Context on its own loopback port, behind a lossy network."""
    network = LossyNetwork(LOSS, seed)
    async with open_context(bind=(HOST, 0), network=network, config=CLIENT_CONFIG) as ctx:
        yield ctx, network


# -- the setup: two backends behind nginx ---------------------------------------------------


@dataclass
class Deployment:
    """Two backends behind nginx."""

    backends: dict[str, Backend]
    nginx: Nginx

    def uri(self, path: str) -> str:
        return f"coap://{HOST}:{self.nginx.port}/{path}"


@asynccontextmanager
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    async with trio.open_nursery() as nursery:
        backends = {}
        for name in ("A", "B"):
            backends[name] = await nursery.start(run_backend, name)
        ports = [b.port for b in backends.values()]
        async with running_nginx(ports, tmp_path) as nginx:
            yield Deployment(backends, nginx)
        nursery.cancel_scope.cancel()


# -- the tests --------------------------------------------------------------------------------


POSTS = 200
CLIENTS = 8


async def test_posts_through_nginx_at_10_percent_loss_are_counted_once(tmp_path: Path) -> None:
    answers: dict[bytes, bytes] = {}
    dropped = retransmissions = 0
    with trio.fail_after(TEST_LIMIT):
        async with deployment(tmp_path) as setup:

            async def client(index: int) -> None:
                nonlocal dropped, retransmissions
                async with lossy_client(seed=index) as (ctx, network):
                    for i in range(index, POSTS, CLIENTS):
                        body = f"post {i}".encode()
                        response = await ctx.post(setup.uri("count"), body)
                        assert response.code == Code.CHANGED
                        answers[body] = response.payload
                    dropped += network.dropped
                    retransmissions += sum(m.retransmissions for m in ctx.statistics.messaging)

            async with trio.open_nursery() as nursery:
                for index in range(CLIENTS):
                    nursery.start_soon(client, index)
            seen = Counter[bytes]()
            for backend in setup.backends.values():
                seen.update(backend.counting.bodies)
            duplicates = sum(backend.duplicates for backend in setup.backends.values())
            log = setup.nginx.log()
    bodies = {f"post {i}".encode() for i in range(POSTS)}
    assert answers == {body: body for body in bodies}
    # Each body rendered once, by one server or the other, however often it was sent.
    assert seen == dict.fromkeys(bodies, 1), log
    # The loss did strike, and retransmissions reached a server as the duplicates they were.
    assert dropped > 0
    assert retransmissions > 0
    assert duplicates > 0


async def test_notifications_reach_the_client_through_nginx(tmp_path: Path) -> None:
    payloads: list[bytes] = []
    with trio.fail_after(TEST_LIMIT):
        async with deployment(tmp_path) as setup, lossy_client(seed=7) as (ctx, _):
            uri = setup.uri("ticks")
            async with ctx.observe(uri) as notifications:
                async for response in notifications:
                    payloads.append(response.payload)
                    if len(payloads) == 5:
                        break
    names = {p.split()[0] for p in payloads}
    ticks = [int(p.split()[2]) for p in payloads]
    assert len(names) == 1, payloads  # one server throughout
    assert names <= {b"A", b"B"}
    assert ticks == sorted(ticks), payloads
    assert ticks[-1] > ticks[0], payloads


OBSERVERS = 6
#: Seconds the observers of a stopped server may take to observe the other one: their
#: Max-Age plus the re-registration margin (5 s), plus retransmissions.
MOVE_LIMIT = 15.0


def server_name(payload: bytes) -> str:
    """Which server sent a notification (``A tick 3`` -> ``A``)."""
    return payload.split()[0].decode()


async def test_observers_move_to_the_other_server_when_theirs_stops(tmp_path: Path) -> None:
    first: dict[int, str] = {}
    latest: dict[int, str] = {}
    reregistrations: dict[int, int] = {}
    with trio.fail_after(TEST_LIMIT):
        async with deployment(tmp_path) as setup:
            everyone_observes = trio.Event()

            async def observer(index: int) -> None:
                async with lossy_client(seed=100 + index) as (ctx, _):
                    observation = ctx.observe(setup.uri("ticks"), reregister=True)
                    async with observation as notifications:
                        async for response in notifications:
                            latest[index] = server_name(response.payload)
                            first.setdefault(index, latest[index])
                            reregistrations[index] = notifications.reregistrations
                            if len(first) == OBSERVERS:
                                everyone_observes.set()

            async with trio.open_nursery() as nursery:
                for index in range(OBSERVERS):
                    nursery.start_soon(observer, index)
                await everyone_observes.wait()
                stopped = first[0]
                await setup.backends[stopped].stop()
                with trio.move_on_after(MOVE_LIMIT):
                    while stopped in latest.values():
                        await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
            log = setup.nginx.log()
    other = "B" if stopped == "A" else "A"
    assert latest == dict.fromkeys(first, other), log
    # The stopped server's observers re-registered; the other server's went on as they were.
    for index, name in first.items():
        assert (reregistrations[index] > 0) == (name == stopped), (first, reregistrations)
