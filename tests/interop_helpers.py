"""Peers for the interoperability tests: libcoap's server and an in-process aiocoap server.

Both run on loopback only, on a port the operating system picked for us, and
both are always stopped when their ``async with`` block is left (also on
error or cancellation):

* :func:`libcoap_server` starts ``coap-server-notls`` (Debian's libcoap3-bin)
  as a child process inside a trio nursery, waits until it answers a CoAP
  ping, and on exit terminates it (SIGTERM, then SIGKILL after a grace
  period). A missing binary is an error, not a skip: ``scripts/test``
  installs it.
* :func:`aiocoap_server` runs an aiocoap server (asyncio) in a thread with
  its own event loop, with the resources of :func:`aiocoap_site`.

The readiness probe speaks raw CoAP over a plain socket (a 4-byte ping, an
RST expected back) so that setting up a peer never depends on the client
under test. Importable without pytest (``benchmarks/client.py`` uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import trio

__all__ = [
    "AIOCOAP_FIXED_PAYLOAD",
    "AIOCOAP_SLOW_DELAY",
    "LIBCOAP_INDEX_PREFIX",
    "AiocoapServer",
    "LibcoapServer",
    "PeerError",
    "aiocoap_server",
    "aiocoap_site",
    "coap_ping",
    "free_port",
    "libcoap_server",
    "uri_host",
]

LIBCOAP_SERVER = "coap-server-notls"
#: How ``GET /`` of coap-server-notls 4.3.x starts.
LIBCOAP_INDEX_PREFIX = b"This is a test server made with libcoap"
#: What the aiocoap server's ``/text`` returns.
AIOCOAP_FIXED_PAYLOAD = b"fixed payload from aiocoap"
#: How long the aiocoap server's ``/slow`` takes to answer (well above its
#: 0.1 s EMPTY_ACK_DELAY, so a CON request gets an empty ACK, then a separate response).
AIOCOAP_SLOW_DELAY = 0.6

_LOOPBACK = frozenset({"::1", "127.0.0.1"})


class PeerError(RuntimeError):
    """A peer could not be started, did not answer, or did not stop."""


def uri_host(host: str) -> str:
    """``host`` as it appears in a URI (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def _check_loopback(host: str) -> None:
    if host not in _LOOPBACK:
        raise ValueError(f"interop peers bind loopback only (::1 or 127.0.0.1), not {host!r}")


def free_port(host: str = "::1", *, tcp_too: bool = True) -> int:
    """A port on ``host`` that was just free for UDP (and TCP, with ``tcp_too``).

    The port is picked by the OS (bind to port 0) and the sockets are closed
    again, so another process could take it before the caller binds it; the
    callers retry on a failed start.
    """
    _check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            if not tcp_too:
                return port
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise PeerError(f"found no port free for both UDP and TCP on {host}")


async def coap_ping(host: str, port: int, *, timeout: float = 0.2) -> bool:
    """Send one CoAP ping (an empty CON) to ``host``:``port``; True when the RST comes back.

    Plain socket, hand-made datagram: independent of the client under test.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ping = bytes([0x40, 0x00]) + os.urandom(2)  # ver 1, CON, TKL 0, code 0.00, random MID
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind((host, 0))
        try:
            await sock.connect((host, port))  # connected: ICMP unreachable raises at once
            await sock.send(ping)
        except OSError:
            return False
        with trio.move_on_after(timeout):
            for _ in range(16):  # bounded: ignore up to 16 unrelated datagrams
                try:
                    data = await sock.recv(2048)
                except OSError:  # ICMP port unreachable: nobody listens (yet)
                    return False
                # ver 1, type RST (0x70 in the first byte), same message ID
                if len(data) >= 4 and data[0] & 0xF0 == 0x70 and data[2:4] == ping[2:4]:
                    return True
    return False


# -- libcoap -------------------------------------------------------------------------


@dataclass
class LibcoapServer:
    """A running ``coap-server-notls``."""

    host: str
    port: int
    process: trio.Process
    args: list[str]
    log: IO[bytes] = field(repr=False)

    def uri(self, path: str = "/") -> str:
        """``coap://host:port`` followed by ``path`` (which starts with ``/``)."""
        return f"coap://{uri_host(self.host)}:{self.port}{path}"

    def output(self) -> str:
        """What the server wrote to stdout and stderr so far (while it runs)."""
        if self.log.closed:
            return "(the log is gone: the server was stopped)"
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace")
        self.log.seek(0, os.SEEK_END)
        return text


async def _terminate_then_kill(process: trio.Process, grace: float) -> None:
    """``deliver_cancel`` for run_process: SIGTERM, then SIGKILL if still alive after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with trio.move_on_after(grace):
        await process.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        process.kill()


@contextlib.asynccontextmanager
async def libcoap_server(
    host: str = "::1",
    *,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 10.0,
    stop_grace: float = 2.0,
    attempts: int = 3,
) -> AsyncIterator[LibcoapServer]:
    """Run ``coap-server-notls -p PORT -A host`` on a free loopback port while the block runs.

    Waits (at most ``ready_timeout`` seconds per attempt) until it answers a
    CoAP ping; if it exits or stays silent (e.g. the port was taken in
    between), tries again with another port, ``attempts`` times in all.
    Raises :class:`PeerError` when the binary is missing or it never answers.
    """
    _check_loopback(host)
    binary = shutil.which(LIBCOAP_SERVER)
    if binary is None:
        raise PeerError(
            f"{LIBCOAP_SERVER} is not installed: the interop tests need libcoap's "
            "command-line tools (Debian package libcoap3-bin; scripts/test installs it)"
        )
    failures: list[str] = []
    for _ in range(attempts):
        port = free_port(host)
        args = [binary, "-p", str(port), "-A", host, *extra_args]
        served = False
        body_error: BaseException | None = None
        with tempfile.TemporaryFile() as log:
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        args,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        check=False,
                        deliver_cancel=partial(_terminate_then_kill, grace=stop_grace),
                    )
                )
                server = LibcoapServer(host, port, process, args, log)
                try:
                    if await _wait_until_answering(server, ready_timeout):
                        served = True
                        yield server
                    else:
                        failures.append(
                            f"{' '.join(args)}: exit status {process.returncode}, "
                            f"output: {server.output()!r}"
                        )
                except BaseException as error:  # re-raised below, outside the nursery
                    body_error = error
                finally:
                    died = process.returncode
                    nursery.cancel_scope.cancel()
            if body_error is not None:
                raise body_error
            if served:
                if died is not None:
                    raise PeerError(
                        f"{' '.join(args)} exited during the test with status {died}, "
                        f"output: {server.output()!r}"
                    )
                return
    raise PeerError(f"{LIBCOAP_SERVER} did not start: " + "; ".join(failures))


async def _wait_until_answering(server: LibcoapServer, timeout: float) -> bool:
    with trio.move_on_after(timeout):
        for _ in range(1000):  # bounded; the deadline normally ends it first
            if server.process.returncode is not None:
                return False
            if await coap_ping(server.host, server.port):
                return True
            await trio.sleep(0.02)
    return False


# -- aiocoap ---------------------------------------------------------------------------


def aiocoap_site(slow_delay: float = AIOCOAP_SLOW_DELAY) -> Any:
    """An aiocoap ``Site`` with ``/text`` (fixed payload), ``/store`` (PUT stores,
    GET returns the last payload stored) and ``/slow`` (answers after ``slow_delay`` s)."""
    import aiocoap
    import aiocoap.resource

    class Text(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(
                code=aiocoap.CONTENT, payload=AIOCOAP_FIXED_PAYLOAD, content_format=0
            )

    class Store(aiocoap.resource.Resource):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.payload = b""
            self.puts = 0

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)

        async def render_put(self, request: Any) -> Any:
            self.payload = request.payload
            self.puts += 1
            return aiocoap.Message(code=aiocoap.CHANGED)

    class Slow(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: Any) -> Any:
            await asyncio.sleep(slow_delay)
            return aiocoap.Message(code=aiocoap.CONTENT, payload=b"slow but here")

    site = aiocoap.resource.Site()
    site.add_resource(["text"], Text())
    site.add_resource(["store"], Store())
    site.add_resource(["slow"], Slow())
    return site


@dataclass
class AiocoapServer:
    """An aiocoap server running in its own thread and asyncio loop."""

    host: str
    port: int = 0
    site: Any = None
    #: aiocoap's ``server_credentials`` (with an ``OscoreSiteWrapper`` site: OSCORE).
    server_credentials: Any = None
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    started: threading.Event = field(default_factory=threading.Event, repr=False)
    error: BaseException | None = None
    _stop: asyncio.Event | None = field(default=None, repr=False)
    _context: Any = field(default=None, repr=False)

    def uri(self, path: str = "/") -> str:
        """``coap://host:port`` followed by ``path`` (which starts with ``/``)."""
        return f"coap://{uri_host(self.host)}:{self.port}{path}"

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:
            self.error = error
        finally:
            self.started.set()  # never leave the starter waiting

    async def _serve(self) -> None:
        import aiocoap

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        context = await aiocoap.Context.create_server_context(
            self.site,
            bind=(self.host, 0),
            transports=["udp6"],
            server_credentials=self.server_credentials,
        )
        self._context = context
        try:
            # udp6 binds one socket; port 0 made the OS pick a free one.
            message_interface = context.request_interfaces[0].token_interface.message_interface
            self.port = message_interface.transport.get_extra_info("socket").getsockname()[1]
            self.started.set()
            await self._stop.wait()
        finally:
            await context.shutdown()

    def unacknowledged(self) -> int:
        """How many CON messages the server sent that are not acknowledged yet.

        Reads aiocoap 0.4's MessageManager state (``_active_exchanges``), a
        private attribute: pinned by the ``aiocoap>=0.4.17,<0.5`` test extra.
        A plain ``len()`` of a dict is safe to read from another thread.
        """
        manager = self._context.request_interfaces[0].token_interface
        return len(manager._active_exchanges or ())

    async def wait_until_all_acknowledged(self, timeout: float) -> int:
        """Poll :meth:`unacknowledged` until it is 0 or ``timeout`` passed; the last count."""
        with trio.move_on_after(timeout):
            for _ in range(10_000):
                if not self.unacknowledged():
                    return 0
                await trio.sleep(0.005)
        return self.unacknowledged()

    def request_stop(self) -> None:
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)


@contextlib.asynccontextmanager
async def aiocoap_server(
    host: str = "::1", *, site: Any = None, timeout: float = 10.0, server_credentials: Any = None
) -> AsyncIterator[AiocoapServer]:
    """Run an aiocoap server on ``host`` (a port the OS picks) in a thread while the block runs.

    ``site`` defaults to :func:`aiocoap_site`. The thread, its loop and its
    socket are gone when the block is left; :class:`PeerError` if starting or
    stopping takes more than ``timeout`` seconds.
    """
    _check_loopback(host)
    server = AiocoapServer(
        host,
        site=aiocoap_site() if site is None else site,
        server_credentials=server_credentials,
    )
    thread = threading.Thread(target=server._thread_main, name="aiocoap-server", daemon=True)
    thread.start()
    try:
        with trio.move_on_after(timeout):
            for _ in range(10_000):  # bounded; the deadline normally ends it first
                if server.started.is_set():
                    break
                await trio.sleep(0.005)
        if server.error is not None:
            raise PeerError(f"the aiocoap server failed to start: {server.error!r}")
        if not server.started.is_set() or not server.port:
            raise PeerError("the aiocoap server did not start in time")
        if not await _answers_ping(server.host, server.port, timeout):
            raise PeerError("the aiocoap server does not answer a CoAP ping")
        yield server
    finally:
        server.request_stop()
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            for _ in range(10_000):
                if not thread.is_alive():
                    break
                await trio.sleep(0.005)
    if thread.is_alive():
        raise PeerError("the aiocoap server thread did not stop in time")
    if server.error is not None:
        raise PeerError(f"the aiocoap server failed: {server.error!r}")


async def _answers_ping(host: str, port: int, timeout: float) -> bool:
    with trio.move_on_after(timeout):
        for _ in range(1000):
            if await coap_ping(host, port):
                return True
            await trio.sleep(0.02)
    return False


# -- aiocoap: an observable resource ------------------------------------------------------


def aiocoap_observable_site(period: float = 0.2) -> tuple[Any, Any]:
    """An aiocoap ``Site`` with ``/counter``: an ``aiocoap.resource.ObservableResource``
    whose payload ``b"%d" % value`` grows by one every ``period`` seconds (a timer in the
    server's loop calling ``updated_state()``, started with the first observer).

    Returns ``(site, counter)``; ``counter.observers`` is how many observations aiocoap
    currently holds for it (counted through ``update_observation_count``, readable from
    any thread), ``counter.max_observers`` the most seen at once.
    """
    import aiocoap
    import aiocoap.resource

    class Counter(aiocoap.resource.ObservableResource):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.value = 0
            self.observers = 0
            self.max_observers = 0
            self._timer: asyncio.TimerHandle | None = None

        def update_observation_count(self, count: int) -> None:
            self.observers = count
            self.max_observers = max(self.max_observers, count)
            if count and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(period, self._tick)
            elif not count and self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _tick(self) -> None:
            self.value += 1
            self.updated_state()
            self._timer = asyncio.get_running_loop().call_later(period, self._tick)

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=b"%d" % self.value)

    site = aiocoap.resource.Site()
    counter = Counter()
    site.add_resource(["counter"], counter)
    return site, counter
