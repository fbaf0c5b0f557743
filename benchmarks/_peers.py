"""The peers of the benchmarks: servers in child processes, pinned to CPUs, measured from /proc.

Shared by ``server.py``, ``client.py``, ``observe.py``, ``blockwise.py`` and
``run.py`` (not a benchmark itself). Linux only: CPU time and memory are read
from ``/proc``. Every server listens on ``::1`` on a port that is free when
it starts; a Python server is a benchmark script run again with its hidden
``--serve`` option, which prints ``PORT <n>`` once it is listening.
"""

from __future__ import annotations

import importlib.metadata
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HOST = "::1"
LIBCOAP_SERVER = "coap-server-notls"
LIBCOAP_CLIENT = "coap-client-notls"
#: Seconds a server may take to say it is listening.
START_TIMEOUT = 30.0

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_plan() -> tuple[int | None, int | None]:
    """(CPU for the servers, CPU for the load side): the first two usable CPUs, or no pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def pin_self(cpu: int | None) -> None:
    """Pin this process (call before it starts threads) to ``cpu``; None: leave it."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _pinning(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


def free_port(host: str = HOST) -> int:
    """A UDP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a CoAP ping (empty CON) to ``[::1]:port`` gets a Reset."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        try:
            sock.send(b"\x40\x00\x12\x34")
            return sock.recv(64)[2:4] == b"\x12\x34"
        except OSError:  # timeout, or ICMP port unreachable
            return False


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()


@dataclass
class Peer:
    """A server in a child process: its port and the processes that do its work."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    note: str = ""
    #: The processes whose CPU time and memory count (the workers of ``--workers``).
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.pids:
            self.pids = [self.process.pid]

    def uri(self, path: str) -> str:
        """``coap://[::1]:port/path``."""
        return f"coap://[{HOST}]:{self.port}/{path.lstrip('/')}"

    def cpu_seconds(self) -> float:
        """User+system CPU time its processes used so far (from /proc)."""
        total = 0
        for pid in self.pids:
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
        return total / _CLK_TCK

    def rss(self) -> int:
        """Resident set size in bytes (VmRSS), summed over its processes."""
        total = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def alive(self) -> bool:
        """Whether the child process is still running."""
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _read_lines(process: subprocess.Popen[bytes], until: Callable[[list[str]], bool]) -> list[str]:
    """Lines the process prints until ``until`` holds (read from the raw descriptor:
    select() cannot see lines a buffered reader already took in)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    lines: list[str] = []
    pending = b""
    deadline = time.monotonic() + START_TIMEOUT
    while not until(lines):
        left = deadline - time.monotonic()
        readable, _, _ = select.select([fd], [], [], max(left, 0))
        chunk = os.read(fd, 65536) if readable else b""
        if not chunk:
            process.kill()
            process.wait(timeout=5)
            raise RuntimeError(f"{process.args!r} did not start (said {lines!r})")
        pending += chunk
        *complete, pending = pending.split(b"\n")
        lines.extend(line.decode(errors="replace").strip() for line in complete)
    return lines


def start_python_server(
    argv: Sequence[str], name: str, cpus: Sequence[int] | None = None, note: str = ""
) -> Peer:
    """Run ``python argv...`` (a script's ``--serve`` mode) and wait for its ``PORT n`` line."""
    process = subprocess.Popen(
        [sys.executable, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,  # errors show on the terminal
        preexec_fn=_pinning(cpus),  # the benchmarks start no threads
    )
    line = _read_lines(process, lambda lines: bool(lines))[0]
    if not line.startswith("PORT "):
        process.kill()
        process.wait(timeout=5)
        raise RuntimeError(f"the {name} server did not start (said {line!r})")
    return Peer(name, process, int(line.split()[1]), note)


def start_coap_trio_serve(
    site: Sequence[str], workers: int, cpus: Sequence[int] | None = None, name: str = ""
) -> Peer:
    """``python -m coap_trio serve SITE... --bind [::1]:0 --workers N``; its workers counted."""
    argv = [sys.executable, "-m", "coap_trio", "serve", *site, "--bind", f"[{HOST}]:0"]
    argv += ["--workers", str(workers)]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the workers' counters at exit
        preexec_fn=_pinning(cpus),  # the benchmarks start no threads
    )
    if workers > 1:
        lines = _read_lines(process, lambda lines: any(s.startswith("workers:") for s in lines))
        pids = [int(p) for s in lines if s.startswith("workers:") for p in s.split()[1:]]
    else:
        lines = _read_lines(process, lambda lines: bool(lines))
        pids = [process.pid]
    port = int(lines[0].rsplit(":", 1)[1])
    label = name or f"coap_trio x{workers}"
    return Peer(label, process, port, f"coap-trio serve {' '.join(site)} --workers {workers}", pids)


def start_libcoap_server(
    cpus: Sequence[int] | None = None, extra: Sequence[str] = (), note: str = ""
) -> Peer:
    """``coap-server-notls -A ::1 -p PORT`` on a free port, once it answers a ping."""
    binary = shutil.which(LIBCOAP_SERVER)
    if binary is None:
        raise RuntimeError(f"{LIBCOAP_SERVER} is not installed (Debian package libcoap3-bin)")
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [binary, "-A", HOST, "-p", str(port), *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_pinning(cpus),  # the benchmarks start no threads
        )
        peer = Peer("libcoap", process, port, note or LIBCOAP_SERVER)
        for _ in range(100):
            if process.poll() is not None:
                break
            if ping(port):
                return peer
            time.sleep(0.02)
        peer.stop()
    raise RuntimeError(f"{LIBCOAP_SERVER} did not start")


def start_libcoap_server_with_tcp(cpus: Sequence[int] | None = None) -> Peer:
    """:func:`start_libcoap_server`, once it also accepts TCP on its port (it listens
    on UDP and TCP alike; another process may hold that TCP port: then another port)."""
    for _ in range(5):
        peer = start_libcoap_server(cpus)
        for _ in range(100):
            try:
                socket.create_connection((HOST, peer.port), timeout=0.1).close()
                return peer
            except OSError:
                time.sleep(0.02)
        peer.stop()
    raise RuntimeError(f"{LIBCOAP_SERVER} did not listen on TCP")


def version(distribution: str) -> str:
    """The installed version of a Python distribution, or ``?``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def libcoap_version() -> str:
    """The libcoap3-bin package version (dpkg), or ``?``."""
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libcoap3-bin"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except OSError:
        return "?"
    return done.stdout.strip() or "?"


def describe_machine() -> str:
    """One line: Python, the libraries' versions, CPUs and load average."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"Python {sys.version.split()[0]}; coap_trio {version('coap-trio')}, trio "
        f"{version('trio')}, aiocoap {version('aiocoap')}, libcoap {libcoap_version()}; "
        f"{os.cpu_count()} CPUs; load average {load}"
    )
