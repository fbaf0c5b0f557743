"""Drive the DTLS engine over plain stdlib UDP sockets on loopback, against libcoap's tools.

No trio: a non-blocking socket, ``select`` with short waits, ``time.monotonic()``
passed to the session as ``now``. Every loop is bounded in time, every child
process is killed on the way out, and only loopback addresses are used.

* :func:`coaps_get` runs a client :class:`DtlsSession` against a server
  address and sends one CoAP GET as application data.
* :class:`EngineServer` is a tiny coaps:// server made of the engine, a
  :class:`CookieVerifier` and a socket, in a thread; it answers every CON
  GET with a piggybacked 2.05 carrying :data:`ENGINE_PAYLOAD`.
* :func:`libcoap_server` starts ``coap-server-openssl`` / ``-gnutls`` with the
  given arguments and waits until its plain CoAP port answers a ping (its
  DTLS port is that port + 1).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from coap_trio import codec
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.protocol.dtls.cookie import Accept, CookieVerifier, SendHelloVerifyRequest
from coap_trio.protocol.dtls.credentials import DtlsCredentials
from coap_trio.protocol.dtls.session import (
    DtlsEvent,
    DtlsSession,
    Failed,
    HandshakeComplete,
    Received,
    Role,
)

HOST = "::1"
#: What the engine's test server answers to every GET.
ENGINE_PAYLOAD = b"hello from the coap_trio DTLS engine"


def free_port_pair() -> int:
    """A port such that it and the next one were just free for UDP on ::1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as first:
            first.bind((HOST, 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as second:
                    second.bind((HOST, port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of UDP ports")


def _ping(port: int) -> bool:
    """A CoAP ping (empty CON) to the plain port: an RST back means the server is up."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(b"\x40\x00\x12\x34", (HOST, port))
        try:
            data, _ = sock.recvfrom(64)
        except OSError:
            return False
        return data[:1] == b"\x70"


@attrs.define
class LibcoapProcess:
    process: subprocess.Popen[bytes]
    #: The DTLS port (coaps://).
    port: int


@contextlib.contextmanager
def libcoap_server(
    program: str, args: Sequence[str], *, log: Path | None = None
) -> Iterator[LibcoapProcess]:
    """Start a libcoap server on ::1 (plain port P, DTLS port P + 1); always killed after.

    With ``log``, its most verbose log (``-v 7``: DTLS events, alerts) goes to that file.
    """
    for _attempt in range(5):
        port = free_port_pair()
        output = log.open("wb") if log is not None else subprocess.DEVNULL
        verbosity = "7" if log is not None else "0"
        process = subprocess.Popen(
            [program, "-A", HOST, "-p", str(port), "-v", verbosity, *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        if log is not None:
            output.close()  # type: ignore[union-attr]
        try:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    break
            else:
                continue  # it exited (port taken?) or never answered: try another port
            yield LibcoapProcess(process, port + 1)
            return
        finally:
            process.kill()
            process.wait(timeout=5)
    raise RuntimeError(f"{program} did not start")


@attrs.define
class Exchange:
    """What a client run over a socket saw."""

    response: Message | None = None
    events: list[DtlsEvent] = attrs.field(factory=list)
    datagrams_sent: int = 0

    @property
    def failure(self) -> BaseException | None:
        for event in self.events:
            if isinstance(event, Failed):
                return event.error
        return None

    @property
    def handshake(self) -> HandshakeComplete | None:
        for event in self.events:
            if isinstance(event, HandshakeComplete):
                return event
        return None


def get_request(path: str = "", mid: int = 0x1234, token: bytes = b"dt") -> bytes:
    """A CON GET for ``path``, encoded."""
    return codec.encode(
        Message(code=Code.GET, mtype=Type.CON, mid=mid, token=token, uri=f"coap://[::1]/{path}")
    )


def coaps_get(session: DtlsSession, port: int, path: str = "", *, budget: float = 15.0) -> Exchange:
    """Handshake with the server at [::1]:port, GET ``path``, return the response (bounded)."""
    result = Exchange()
    request = get_request(path)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        peer = (HOST, port)

        def send(datagrams: list[bytes]) -> None:
            for datagram in datagrams:
                sock.sendto(datagram, peer)
                result.datagrams_sent += 1

        def take(received: Received) -> bool:
            send(received.datagrams)
            result.events += received.events
            for event in received.events:
                if isinstance(event, HandshakeComplete):
                    send([session.send(request)])
                if isinstance(event, Failed):
                    return True
            for data in received.data:
                message = codec.decode(data)
                if message.token == b"dt" and message.code != Code.EMPTY:
                    result.response = message
                    return True
            return False

        end = time.monotonic() + budget
        send(session.start(time.monotonic()))
        while time.monotonic() < end:
            deadline = session.next_deadline()
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            readable, _, _ = select.select([sock], [], [], wait)
            if readable:
                try:
                    data, _ = sock.recvfrom(65536)
                except OSError:
                    continue  # ICMP port unreachable and the like
                if take(session.receive(data, time.monotonic(), datetime.now(UTC))):
                    break
            if take(session.timeout(time.monotonic())):
                break
        if session.is_established:
            send(session.close())
    return result


class EngineServer:
    """A coaps:// test server: the engine, stateless cookies, one socket, a thread."""

    def __init__(self, credentials: DtlsCredentials) -> None:
        self.credentials = credentials
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.sessions: dict[object, DtlsSession] = {}
        self.events: list[DtlsEvent] = []
        self.requests: list[Message] = []
        self.verifier = CookieVerifier()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EngineServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _send(self, address: object, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            with contextlib.suppress(OSError):
                self.sock.sendto(datagram, address)  # type: ignore[arg-type]

    def _handle(self, session: DtlsSession, address: object, received: Received) -> None:
        self._send(address, received.datagrams)
        self.events += received.events
        for data in received.data:
            try:
                request = codec.decode(data)
            except Exception:
                continue
            self.requests.append(request)
            if request.mtype is Type.CON and request.code == Code.GET:
                response = Message(
                    code=Code.CONTENT,
                    mtype=Type.ACK,
                    mid=request.mid,
                    token=request.token,
                    payload=ENGINE_PAYLOAD,
                )
                self._send(address, [session.send(codec.encode(response))])
        if any(isinstance(e, Failed) for e in received.events) or session.state.value == "closed":
            self.sessions.pop(address, None)

    def _run(self) -> None:
        end = time.monotonic() + 120.0  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < end:
            readable, _, _ = select.select([self.sock], [], [], 0.05)
            now = time.monotonic()
            if readable:
                try:
                    data, address = self.sock.recvfrom(65536)
                except OSError:
                    continue
                session = self.sessions.get(address)
                if session is None:
                    decision = self.verifier.check(data, address, now)
                    if isinstance(decision, SendHelloVerifyRequest):
                        self._send(address, [decision.datagram])
                        continue
                    if not isinstance(decision, Accept):
                        continue
                    session = self.sessions[address] = DtlsSession(Role.SERVER, self.credentials)
                self._handle(session, address, session.receive(data, now, datetime.now(UTC)))
            for address, session in list(self.sessions.items()):
                self._handle(session, address, session.timeout(now))


def run_libcoap_client(
    program: str, args: Sequence[str], uri: str
) -> subprocess.CompletedProcess[bytes]:
    """Run a libcoap client once (bounded by -B and a process timeout)."""
    return subprocess.run(
        [program, "-B", "10", "-v", "0", *args, uri],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
