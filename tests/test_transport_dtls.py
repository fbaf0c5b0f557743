"""The DtlsEndpoint against hand-made peers: cookies first, bad records, refusals, bounds.

The endpoint wraps a fake inner endpoint that records what is sent and
hands over what the test delivers, so every datagram is the test's: a
ClientHello flood from many ports, records tampered with or replayed, a
forged Finished during a handshake (either role), DTLS
1.0 and unknown cipher suites, oversized and overlapping handshake
fragments, what opens a client session, and the queue of a handshake. A
peer is a :class:`DtlsSession` of the engine driven by the test.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
import trio
from dtls_helpers import IDENTITY, KEY, Pki, psk_client

from coap_trio import codec
from coap_trio.errors import HandshakeError, RequestError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.protocol.dtls import messages as m
from coap_trio.protocol.dtls.credentials import DtlsCredentials
from coap_trio.protocol.dtls.record import (
    DTLS_1_0,
    DTLS_1_2,
    ContentType,
    encode_record,
    parse_records,
)
from coap_trio.protocol.dtls.session import DtlsSession, Received, Role
from coap_trio.remote import DatagramRemote, DtlsPeer, DtlsRemote
from coap_trio.transports.base import EndpointStatistics
from coap_trio.transports.dtls import DtlsEndpoint, DtlsLimits

SERVER_ADDRESS = ("::1", 5684, 0, 0)
PEER = ("::1", 40000, 0, 0)
PSK_SERVER = DtlsCredentials(psk_table={IDENTITY: KEY})


class FakeInner:
    """A DatagramEndpoint that records sends and delivers what the test gives it."""

    def __init__(self, sockaddr: tuple[object, ...] = SERVER_ADDRESS) -> None:
        self.local_address = DatagramRemote(sockaddr)
        self.sent: list[tuple[bytes, DatagramRemote]] = []
        self.keep = True
        self.sent_count = 0
        self.handler: Callable[[list[tuple[bytes, DatagramRemote]]], None] | None = None
        self.error_handler: Callable[[DatagramRemote, OSError | RequestError], None] | None = None

    @property
    def statistics(self) -> EndpointStatistics:
        return EndpointStatistics(0, self.sent_count, 0, 0, 0)

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        return DatagramRemote((host, port, 0, 0))

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        self.sent_count += 1
        if self.keep:
            self.sent.append((data, remote))

    async def run(
        self,
        on_datagrams: Callable[[list[tuple[bytes, DatagramRemote]]], None],
        on_error: Callable[[DatagramRemote, OSError | RequestError], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.handler, self.error_handler = on_datagrams, on_error
        task_status.started()
        await trio.sleep_forever()

    def close(self) -> None:
        pass

    def deliver(self, data: bytes, sockaddr: tuple[object, ...] = PEER) -> None:
        assert self.handler is not None
        self.handler([(data, DatagramRemote(sockaddr))])

    def take(self, sockaddr: tuple[object, ...] = PEER) -> list[bytes]:
        """What was sent to ``sockaddr`` since the last take, in order."""
        mine = [data for data, remote in self.sent if remote[0] == sockaddr]
        self.sent = [(data, remote) for data, remote in self.sent if remote[0] != sockaddr]
        return mine


@attrs.define
class Up:
    """A running endpoint, what it handed up and what it reported."""

    endpoint: DtlsEndpoint
    inner: FakeInner
    received: list[tuple[bytes, DatagramRemote]] = attrs.field(factory=list)
    errors: list[tuple[DatagramRemote, OSError | RequestError]] = attrs.field(factory=list)


@asynccontextmanager
async def running(credentials: DtlsCredentials = PSK_SERVER, **options: Any) -> AsyncIterator[Up]:
    inner = FakeInner()
    endpoint = DtlsEndpoint(inner, credentials, **options)
    up = Up(endpoint, inner)
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run, up.received.extend, lambda r, e: up.errors.append((r, e)))
        yield up
        nursery.cancel_scope.cancel()


def exchange(up: Up, session: DtlsSession, datagrams: list[bytes]) -> None:
    """Carry datagrams between a peer session and the endpoint until neither sends more."""
    for _ in range(20):  # bounded: a handshake is a few round trips
        if not datagrams:
            return
        for datagram in datagrams:
            up.inner.deliver(datagram)
        datagrams = []
        for reply in up.inner.take():
            received = session.receive(reply, trio.current_time())
            datagrams += received.datagrams
    raise AssertionError("the exchange did not settle")


def handshake(up: Up, session: DtlsSession | None = None) -> DtlsSession:
    session = session or psk_client()
    exchange(up, session, session.start(trio.current_time()))
    assert session.is_established
    return session


def get_request(mid: int = 0x4242) -> bytes:
    return codec.encode(
        Message(code=Code.GET, mtype=Type.CON, mid=mid, token=b"t", uri_path=("x",))
    )


def alerts(datagrams: list[bytes]) -> list[tuple[int, int]]:
    """(level, description) of every plaintext alert record in ``datagrams``."""
    found = []
    for datagram in datagrams:
        records, _ = parse_records(datagram)
        found += [
            m.decode_alert(r.fragment)
            for r in records
            if r.content_type == ContentType.ALERT and r.epoch == 0
        ]
    return found


def hello_record(hello: m.ClientHello, version: int = DTLS_1_2) -> bytes:
    return encode_record(
        ContentType.HANDSHAKE,
        0,
        0,
        m.encode_handshake(m.HandshakeType.CLIENT_HELLO, 0, hello.encode()),
        version=version,
    )


def with_cookie(up: Up, hello: m.ClientHello, version: int = DTLS_1_2) -> list[bytes]:
    """Send ``hello``, answer the HelloVerifyRequest with its cookie; what came back."""
    up.inner.deliver(hello_record(hello, version))
    (verify,) = up.inner.take()
    (record,), _ = parse_records(verify)
    (fragment,) = m.parse_handshake_fragments(record.fragment)
    cookie = m.HelloVerifyRequest.decode(fragment.fragment).cookie
    up.inner.deliver(hello_record(attrs.evolve(hello, cookie=cookie), version))
    return up.inner.take()


def client_hello(**changes: Any) -> m.ClientHello:
    hello = m.ClientHello(
        DTLS_1_2, bytes(32), b"", b"", (m.TLS_PSK_WITH_AES_128_CCM_8,), b"\x00", ()
    )
    return attrs.evolve(hello, **changes)


# -- cookies first ------------------------------------------------------------------------------


async def test_ten_thousand_hellos_without_cookies_allocate_nothing(
    autojump_clock: object,
) -> None:
    """10,000 ClientHellos from 1,000 ports, none echoing a cookie: HelloVerifyRequests only,
    no session, and memory flat once every port was seen."""
    hellos = [psk_client().start(0.0)[0] for _ in range(1000)]
    async with running() as up:
        up.inner.keep = False  # (the test keeps no copy of the 10,000 answers)

        def flood(rounds: int) -> None:
            for _ in range(rounds):
                for port, hello in enumerate(hellos, 20000):
                    up.inner.deliver(hello, ("::1", port, 0, 0))

        flood(1)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            flood(9)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        statistics = up.endpoint.dtls_statistics
    assert statistics.hello_verify_requests == 10_000
    assert up.inner.sent_count == 10_000
    assert statistics.sessions == 0
    assert statistics.handshakes_in_progress == 0
    assert grown < 16 * 1024, grown
    assert up.received == []
    assert up.errors == []


async def test_anything_else_from_an_unknown_address_is_dropped(autojump_clock: object) -> None:
    async with running() as up:
        other = psk_client()
        handshake(up, other)  # a session elsewhere, to take records from
        record = other.send(get_request())
        for junk in (b"", b"\x17", record, get_request(), bytes(100)):
            up.inner.deliver(junk, ("::1", 40001, 0, 0))
        assert up.inner.take(("::1", 40001, 0, 0)) == []
        assert up.endpoint.dtls_statistics.datagrams_dropped == 5
        assert up.endpoint.dtls_statistics.sessions == 1


async def test_a_client_endpoint_takes_no_hello(autojump_clock: object) -> None:
    async with running(DtlsCredentials(psk_identity=IDENTITY, psk=KEY)) as up:
        assert not up.endpoint.serving
        up.inner.deliver(psk_client().start(0.0)[0])
        assert up.inner.take() == []
        assert up.endpoint.dtls_statistics.datagrams_dropped == 1


@pytest.mark.parametrize(
    "limits",
    [DtlsLimits(max_handshakes=1), DtlsLimits(max_sessions_per_address=1)],
    ids=["handshakes", "per-address"],
)
async def test_a_hello_beyond_a_server_limit_is_refused_and_counted(
    limits: DtlsLimits, autojump_clock: object
) -> None:
    async with running(limits=limits) as up:
        first, second = psk_client(), psk_client()
        up.inner.deliver(first.start(trio.current_time())[0], PEER)
        (verify,) = up.inner.take(PEER)
        up.inner.deliver(first.receive(verify, trio.current_time()).datagrams[0], PEER)
        assert up.inner.take(PEER)  # the server's flight: a session (in its handshake)
        other = ("::1", 40001, 0, 0)
        up.inner.deliver(second.start(trio.current_time())[0], other)
        (verify,) = up.inner.take(other)  # a cookie costs nothing: still answered
        up.inner.deliver(second.receive(verify, trio.current_time()).datagrams[0], other)
        assert up.inner.take(other) == []  # its valid ClientHello: refused, no session
        statistics = up.endpoint.dtls_statistics
        assert statistics.sessions_refused == 1
        assert statistics.sessions == 1


# -- records: tampered, replayed ------------------------------------------------------------------


async def test_a_tampered_record_is_dropped_and_counted_a_replayed_one_too(
    autojump_clock: object,
) -> None:
    async with running() as up:
        client = handshake(up)
        record = client.send(get_request())
        tampered = bytearray(record)
        tampered[-1] ^= 0x01  # the CCM tag
        up.inner.deliver(bytes(tampered))
        assert up.received == []
        assert up.endpoint.dtls_statistics.records_rejected == 1
        up.inner.deliver(record)
        up.inner.deliver(record)  # the same record again
        assert [data for data, _ in up.received] == [get_request()]
        statistics = up.endpoint.dtls_statistics
        assert statistics.records_replayed == 1
        assert statistics.sessions == 1  # neither ended the session
        (_, remote) = up.received[0]
        assert isinstance(remote, DtlsRemote)
        assert remote.peer == DtlsPeer(psk_identity=IDENTITY)
        assert up.inner.take() == []  # no alert for either


def forged_finished(datagram: bytes) -> bytes | None:
    """A forged copy of the epoch-1 records of ``datagram`` (its Finished): the same
    headers, zeros for the ciphertext; None when it has none."""
    records, _ = parse_records(datagram)
    forged = [
        encode_record(r.content_type, r.epoch, r.sequence, bytes(len(r.fragment)))
        for r in records
        if r.epoch == 1
    ]
    return b"".join(forged) or None


async def test_a_forged_finished_does_not_end_a_server_handshake(autojump_clock: object) -> None:
    """RFC 6347 §4.1.2.7: the forgery, ahead of the client's genuine Finished, is
    dropped and counted; the handshake completes."""
    async with running() as up:
        client = psk_client()
        datagrams = client.start(trio.current_time())
        forgeries = 0
        for _ in range(20):  # bounded: a handshake is a few round trips
            for datagram in datagrams:
                forged = forged_finished(datagram)
                if forged is not None and not forgeries:
                    forgeries += 1
                    up.inner.deliver(forged)
                up.inner.deliver(datagram)
            datagrams = []
            for reply in up.inner.take():
                datagrams += client.receive(reply, trio.current_time()).datagrams
            if not datagrams:
                break
        assert forgeries == 1
        assert client.is_established
        statistics = up.endpoint.dtls_statistics
        assert statistics.records_rejected == 1
        assert statistics.handshakes_completed == 1
        assert statistics.handshakes_failed == 0
        assert statistics.retransmissions == 0
        up.inner.deliver(client.send(get_request()))
        assert [data for data, _ in up.received] == [get_request()]


async def test_a_forged_finished_does_not_end_a_client_handshake(autojump_clock: object) -> None:
    client_credentials = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)
    async with running(client_credentials) as up:
        remote = up.endpoint.remote_for("::1", 40000)
        up.endpoint.send(get_request(), remote)
        server = DtlsSession(Role.SERVER, PSK_SERVER)
        replies = up.inner.take()
        forgeries = 0
        data: list[bytes] = []
        for _ in range(10):
            answer = responses_of(server, replies)
            data += answer.data
            if not answer.datagrams:
                break
            for datagram in answer.datagrams:
                forged = forged_finished(datagram)
                if forged is not None and not forgeries:
                    forgeries += 1
                    up.inner.deliver(forged)
                up.inner.deliver(datagram)
            replies = up.inner.take()
        assert forgeries == 1
        assert server.is_established
        statistics = up.endpoint.dtls_statistics
        assert statistics.records_rejected == 1
        assert statistics.handshakes_completed == 1
        assert up.errors == []
        # The request that waited for the handshake went out in the session.
        assert data == [get_request()]


# -- refusals: DTLS 1.0, suites, fragments ---------------------------------------------------------


async def test_dtls_1_0_is_refused(autojump_clock: object) -> None:
    async with running() as up:
        replies = with_cookie(up, client_hello(client_version=DTLS_1_0), DTLS_1_0)
        assert alerts(replies) == [(2, m.AlertDescription.PROTOCOL_VERSION)]
        statistics = up.endpoint.dtls_statistics
        assert statistics.sessions == 0
        assert statistics.handshakes_failed == 1
        assert up.errors == []  # a refused peer had nothing waiting


async def test_an_unknown_cipher_suite_is_refused(autojump_clock: object) -> None:
    async with running() as up:
        replies = with_cookie(up, client_hello(cipher_suites=(0xC02B, 0x002F)))
        assert alerts(replies) == [(2, m.AlertDescription.HANDSHAKE_FAILURE)]
        assert up.endpoint.dtls_statistics.sessions == 0


async def test_an_oversized_handshake_fragment_is_refused_not_buffered(
    autojump_clock: object,
) -> None:
    async with running() as up:
        client = psk_client()
        up.inner.deliver(client.start(trio.current_time())[0])
        flight = client.receive(up.inner.take()[0], trio.current_time()).datagrams
        up.inner.deliver(flight[0])  # the ClientHello with the cookie
        client.receive(up.inner.take()[0], trio.current_time())  # the server's flight
        assert up.endpoint.dtls_statistics.handshakes_in_progress == 1
        # A ClientKeyExchange (message_seq 2, after the two ClientHellos) announcing
        # 16 MiB, 100 bytes of it sent.
        length = ((1 << 24) - 1).to_bytes(3, "big")
        header = bytes((m.HandshakeType.CLIENT_KEY_EXCHANGE,)) + length + (2).to_bytes(2, "big")
        fragment = header + bytes(3) + (100).to_bytes(3, "big")
        up.inner.deliver(encode_record(ContentType.HANDSHAKE, 0, 5, fragment + bytes(100)))
        assert alerts(up.inner.take()) == [(2, m.AlertDescription.DECODE_ERROR)]
        statistics = up.endpoint.dtls_statistics
        assert statistics.sessions == 0
        assert statistics.handshakes_in_progress == 0
        assert statistics.handshakes_failed == 1


def overlapping(datagram: bytes) -> bytes:
    """Each epoch-0 handshake record cut into two overlapping fragments."""
    out = b""
    records, bad = parse_records(datagram)
    assert not bad
    for record in records:
        if record.content_type != ContentType.HANDSHAKE or record.epoch != 0:
            out += encode_record(
                record.content_type, record.epoch, record.sequence, record.fragment
            )
            continue
        for piece in m.parse_handshake_fragments(record.fragment):
            body, length = piece.fragment, piece.length
            head = bytes((piece.msg_type,)) + length.to_bytes(3, "big")
            head += piece.message_seq.to_bytes(2, "big")
            cut = max(1, len(body) * 2 // 3)
            for start, end in ((0, cut), (len(body) // 3, len(body))):
                part = head + start.to_bytes(3, "big") + (end - start).to_bytes(3, "big")
                out += encode_record(
                    ContentType.HANDSHAKE, 0, record.sequence, part + body[start:end]
                )
    return out


async def test_overlapping_fragments_are_put_back_together(autojump_clock: object) -> None:
    async with running() as up:
        client = psk_client()
        up.inner.deliver(client.start(trio.current_time())[0])
        flight = client.receive(up.inner.take()[0], trio.current_time()).datagrams
        up.inner.deliver(flight[0])
        received = client.receive(up.inner.take()[0], trio.current_time())
        exchange(up, client, [overlapping(d) for d in received.datagrams])
        assert client.is_established
        assert up.endpoint.dtls_statistics.handshakes_completed == 1


# -- the client side ---------------------------------------------------------------------------


def responses_of(server: DtlsSession, datagrams: list[bytes]) -> Received:
    received = Received()
    for datagram in datagrams:
        step = server.receive(datagram, trio.current_time())
        received.datagrams.extend(step.datagrams)
        received.data.extend(step.data)
        received.events.extend(step.events)
    return received


async def test_only_a_request_or_a_ping_opens_a_client_session(autojump_clock: object) -> None:
    client_credentials = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)
    async with running(client_credentials) as up:
        remote = up.endpoint.remote_for("::1", 40000)
        ack = codec.encode(Message(code=Code.CONTENT, mtype=Type.ACK, mid=1, token=b"t"))
        up.endpoint.send(ack, remote)
        assert up.inner.take() == []
        assert up.endpoint.dtls_statistics.sends_dropped == 1
        up.endpoint.send(get_request(), remote)
        (hello,) = up.inner.take()
        assert hello[0] == ContentType.HANDSHAKE
        assert up.endpoint.dtls_statistics.handshakes_in_progress == 1


async def test_what_waits_for_a_handshake_is_bounded_then_sent(autojump_clock: object) -> None:
    limits = DtlsLimits(max_queued=4)
    async with running(DtlsCredentials(psk_identity=IDENTITY, psk=KEY), limits=limits) as up:
        remote = up.endpoint.remote_for("::1", 40000)
        requests = [get_request(mid) for mid in range(6)]
        up.endpoint.send(requests[0], remote)
        up.endpoint.send(get_request(99) + bytes(1 << 14), remote)  # more than a record holds
        assert up.endpoint.dtls_statistics.sends_dropped == 1
        for request in requests:  # the first one again: it waits once
            up.endpoint.send(request, remote)
        assert up.endpoint.dtls_statistics.sends_dropped == 3  # and mids 4 and 5
        server = DtlsSession(Role.SERVER, PSK_SERVER)
        # (no cookie exchange: the test's server skips it)
        data: list[bytes] = []
        replies = up.inner.take()
        for _ in range(10):
            received = responses_of(server, replies)
            data += received.data
            if not received.datagrams:
                break
            for datagram in received.datagrams:
                up.inner.deliver(datagram)
            replies = up.inner.take()
        assert server.is_established
        assert data == requests[:4]


async def test_certificates_are_checked_at_the_wall_clock_given(autojump_clock: object) -> None:
    pki = Pki()
    client_credentials = DtlsCredentials(trusted_cas=(pki.ca_cert,))
    earlier = datetime(1999, 1, 1, tzinfo=UTC)  # before any certificate here was valid
    async with running(client_credentials, wall_clock=lambda: earlier) as up:
        remote = up.endpoint.remote_for("::1", 40000)
        up.endpoint.send(get_request(), remote)
        server = DtlsSession(Role.SERVER, pki.credentials(pki.server))
        replies = up.inner.take()
        for _ in range(10):
            answer = responses_of(server, replies).datagrams
            if not answer or up.errors:
                break
            for datagram in answer:
                up.inner.deliver(datagram)
            replies = up.inner.take()
        await trio.sleep(0)  # (nothing pending: errors are reported at once)
        ((where, error),) = up.errors
        assert where == remote
        assert isinstance(error, HandshakeError)
        assert error.alert == m.AlertDescription.CERTIFICATE_EXPIRED
        assert up.endpoint.dtls_statistics.sessions == 0


async def test_an_unreachable_server_ends_the_client_handshake(autojump_clock: object) -> None:
    async with running(DtlsCredentials(psk_identity=IDENTITY, psk=KEY)) as up:
        remote = up.endpoint.remote_for("::1", 40000)
        up.endpoint.send(get_request(), remote)
        assert up.endpoint.dtls_statistics.handshakes_in_progress == 1
        assert up.inner.error_handler is not None
        refused = ConnectionRefusedError(111, "refused")
        up.inner.error_handler(DatagramRemote(PEER), refused)
        assert up.errors == [(remote, refused)]
        statistics = up.endpoint.dtls_statistics
        assert statistics.sessions == 0
        assert statistics.handshakes_failed == 1
        assert statistics.sends_dropped == 1  # the request that waited


async def test_too_many_handshakes_fail_our_request_typed(autojump_clock: object) -> None:
    limits = DtlsLimits(max_handshakes=1)
    async with running(DtlsCredentials(psk_identity=IDENTITY, psk=KEY), limits=limits) as up:
        first, second = (up.endpoint.remote_for("::1", port) for port in (40000, 40001))
        up.endpoint.send(get_request(), first)
        up.endpoint.send(get_request(), second)
        await trio.sleep(0.001)  # reported by the endpoint's task, not from send()
        ((where, error),) = up.errors
        assert where == second
        assert isinstance(error, HandshakeError)
        assert "too many DTLS handshakes" in str(error)


@pytest.mark.parametrize(
    ("data", "opens"),
    [
        (get_request(), True),
        (bytes([0x40, 0, 0, 1]), True),  # a ping: an empty CON
        (bytes([0x50, 1, 0, 1]), True),  # a NON GET
        (bytes([0x60, 0, 0, 1]), False),  # an empty ACK
        (bytes([0x70, 0, 0, 1]), False),  # an RST
        (bytes([0x40, 0x45, 0, 1]), False),  # a CON 2.05 (a separate response)
        (bytes([0x00, 1, 0, 1]), False),  # version 0
        (b"\x40", False),
    ],
)
async def test_what_opens_a_session(data: bytes, opens: bool, autojump_clock: object) -> None:
    async with running(DtlsCredentials(psk_identity=IDENTITY, psk=KEY)) as up:
        up.endpoint.send(data, up.endpoint.remote_for("::1", 40000))
        assert bool(up.inner.take()) is opens
