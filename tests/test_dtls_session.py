"""The DTLS session state machine, two sessions joined in memory (no sockets, time passed in)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from dtls_helpers import IDENTITY, KEY, Link, Pki, psk_client, psk_server, rpk_credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import (
    DtlsAlertError,
    HandshakeError,
    HandshakeTimeoutError,
    LocalProtocolError,
)
from coap_trio.protocol.dtls import messages as m
from coap_trio.protocol.dtls.credentials import DtlsCredentials
from coap_trio.protocol.dtls.messages import AlertDescription
from coap_trio.protocol.dtls.pki import rpk_fingerprint, spki_der
from coap_trio.protocol.dtls.record import ContentType, RecordLayer, encode_record, parse_records
from coap_trio.protocol.dtls.session import (
    TRANSITIONS,
    AlertReceived,
    Closed,
    DtlsConfig,
    DtlsInput,
    DtlsSession,
    DtlsState,
    Failed,
    HandshakeComplete,
    Received,
    Role,
)


def _failure(events: list[object]) -> HandshakeError | DtlsAlertError:
    failures = [e for e in events if isinstance(e, Failed)]
    assert len(failures) == 1, events
    return failures[0].error


def test_psk_handshake_with_cookie_and_application_data() -> None:
    link = Link(psk_client(), psk_server())
    link.handshake()
    assert link.client.state is link.server.state is DtlsState.ESTABLISHED
    (done,) = link.server_events
    assert done == HandshakeComplete(m.TLS_PSK_WITH_AES_128_CCM_8, True, psk_identity=IDENTITY)
    assert link.client_events == [done]
    # Flights: CH, HVR, CH+cookie, SH..SHD, CKE+CCS+Finished, CCS+Finished.
    assert [d for d, _ in link.wire] == ["c2s", "s2c", "c2s", "s2c", "c2s", "s2c"]
    assert all(len(datagram) <= 1152 for _, datagram in link.wire)
    assert link.to_server([link.client.send(b"GET")]) == []
    assert link.server_data == [b"GET"]
    assert link.to_client([link.server.send(b"2.05")]) == []
    assert link.client_data == [b"2.05"]
    assert link.client.next_deadline() is None
    assert link.server.next_deadline() is None


def test_the_application_data_fast_path_takes_only_new_authentic_single_records() -> None:
    client, server = psk_client(), psk_server()
    assert client.receive_application_data(b"\x17\xfe\xfd") is None  # not established
    link = Link(client, server)
    link.handshake()
    first, second = client.send(b"one"), client.send(b"two")
    assert server.receive_application_data(second) == b"two"
    assert server.receive_application_data(first) == b"one"  # late, inside the window
    for refused in (
        first,  # a replay
        first[:-1] + bytes([first[-1] ^ 1]),  # tampered
        client.send(b"x") + client.send(b"y"),  # two records in one datagram
        client.send(b"z")[:-1],  # cut short
        link.client.close()[0],  # an alert, not application data
    ):
        assert server.receive_application_data(refused) is None
    # Nothing was counted there: the full path does that, for what it is given.
    assert server.record_statistics.replayed == 0
    server.receive(first, 1.0)
    assert server.record_statistics.replayed == 1


@pytest.mark.parametrize("side", ["client", "server"])
def test_peers_without_extended_master_secret(side: str) -> None:
    off = DtlsConfig(extended_master_secret=False)
    client = psk_client(config=off) if side == "client" else psk_client()
    server = psk_server(config=off) if side == "server" else psk_server()
    link = Link(client, server)
    link.handshake()
    assert link.client.is_established
    assert link.server.is_established
    assert link.server.peer is not None
    assert link.server.peer.extended_master_secret is False
    link.to_server([link.client.send(b"x")])
    assert link.server_data == [b"x"]


def test_handshake_without_cookie_exchange() -> None:
    link = Link(psk_client(), psk_server(), cookies=False)
    link.handshake()
    assert link.server.is_established
    assert len(link.wire) == 4


def test_wrong_psk_fails_the_finished_check() -> None:
    link = Link(psk_client(), psk_server({IDENTITY: b"other key"}))
    link.handshake()
    error = _failure(link.server_events)
    assert isinstance(error, HandshakeError)
    assert error.alert == AlertDescription.DECRYPT_ERROR
    peer = _failure(link.client_events)
    assert isinstance(peer, DtlsAlertError)
    assert peer.description == AlertDescription.DECRYPT_ERROR
    assert link.client.state is link.server.state is DtlsState.FAILED
    with pytest.raises(LocalProtocolError):
        link.client.send(b"x")


def _forgeries(datagram: bytes, how: str) -> list[bytes]:
    """Forged copies of the epoch-1 records of ``datagram`` (the Finished): same header
    (epoch, sequence number), garbage or a flipped bit in place of the ciphertext."""
    forged = []
    for record in parse_records(datagram)[0]:
        if record.epoch != 1:
            continue
        if how == "garbage":
            fragment = bytes(len(record.fragment))
        else:
            fragment = record.fragment[:-1] + bytes([record.fragment[-1] ^ 1])
        forged.append(encode_record(record.content_type, record.epoch, record.sequence, fragment))
    return forged


class _Forging(Link):
    """A Link where an attacker injects forged copies of the first datagram that carries
    epoch-1 records in one direction: as a datagram of their own before it ("before"),
    or spliced into it right after its ChangeCipherSpec ("inside")."""

    def __init__(self, direction: str, how: str, where: str) -> None:
        super().__init__(psk_client(), psk_server())
        self.direction, self.how, self.where = direction, how, where
        self.injected = 0

    def _inject(self, datagrams: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for datagram in datagrams:
            forged = _forgeries(datagram, self.how) if not self.injected else []
            if not forged:
                out.append(datagram)
                continue
            self.injected += len(forged)
            if self.where == "before":
                out += [*forged, datagram]
                continue
            records = parse_records(datagram)[0]
            spliced = b""
            for record in records:
                if record.epoch == 1 and forged:
                    spliced += b"".join(forged)
                    forged = []
                spliced += encode_record(
                    record.content_type, record.epoch, record.sequence, record.fragment
                )
            out.append(spliced)
        return out

    def to_server(self, datagrams: list[bytes]) -> list[bytes]:
        if self.direction == "c2s":
            datagrams = self._inject(datagrams)
        return super().to_server(datagrams)

    def to_client(self, datagrams: list[bytes]) -> list[bytes]:
        if self.direction == "s2c":
            datagrams = self._inject(datagrams)
        return super().to_client(datagrams)


@pytest.mark.parametrize("where", ["before", "inside"])
@pytest.mark.parametrize("how", ["garbage", "flipped"])
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_a_forged_finished_is_dropped_and_counted_and_the_handshake_goes_on(
    direction: str, how: str, where: str
) -> None:
    """RFC 6347 §4.1.2.7: a record that fails authentication is silently discarded."""
    link = _Forging(direction, how, where)
    link.handshake()
    assert link.injected == 1
    assert link.client.is_established, link.client_events
    assert link.server.is_established, link.server_events
    assert not [e for e in link.client_events + link.server_events if isinstance(e, Failed)]
    victim = link.server if direction == "c2s" else link.client
    other = link.client if direction == "c2s" else link.server
    assert victim.record_statistics.bad_record_mac == 1
    assert other.record_statistics.bad_record_mac == 0
    # No flight was sent again: the genuine Finished came right after the forged one.
    assert victim.statistics.retransmissions == other.statistics.retransmissions == 0
    assert _alerts([d for _, d in link.wire]) == []
    link.to_server([link.client.send(b"after")])
    assert link.server_data == [b"after"]


def test_a_forged_record_on_an_established_session_is_dropped_and_counted() -> None:
    link = Link(psk_client(), psk_server())
    link.handshake()
    genuine = link.client.send(b"data")
    header = genuine[:13]
    for forged in (header + bytes(len(genuine) - 13), b"\x15" + genuine[1:]):
        assert link.server.receive(forged, 5.0) == Received()
    assert link.server.record_statistics.bad_record_mac == 2
    assert link.server.is_established
    assert link.to_server([genuine]) == []
    assert link.server_data == [b"data"]


def test_the_wrong_key_is_told_from_a_forgery_by_the_repeated_flight() -> None:
    """A wrong key: the client's Finished fails, and fails again in its retransmitted
    flight 5 (a second later); the server refuses then, not at the first failure."""
    link = Link(psk_client(), psk_server({IDENTITY: b"other key"}))
    first = link.client.start(0.0)
    replies = link.to_server(first)  # a HelloVerifyRequest
    replies = link.to_server(link.to_client(replies))  # the server's flight 4
    flight5 = link.to_client(replies)
    assert link.to_server(flight5) == []  # dropped and counted, nothing said
    assert link.server.record_statistics.bad_record_mac == 1
    assert link.server.state is DtlsState.WAIT_CLIENT_FINISHED
    link.now = link.client.next_deadline() or 0.0
    again = link.client.timeout(link.now).datagrams
    assert again == flight5 or len(again) == len(flight5)
    answer = link.to_server(again)
    assert _alerts(answer) == [(2, AlertDescription.DECRYPT_ERROR)]
    assert link.server.record_statistics.bad_record_mac == 2
    error = _failure(link.server_events)
    assert isinstance(error, HandshakeError)
    assert "wrong pre-shared key" in str(error)


def test_unknown_psk_identity() -> None:
    link = Link(psk_client(), psk_server({b"someone else": KEY}))
    link.handshake()
    assert _failure(link.server_events).alert == AlertDescription.UNKNOWN_PSK_IDENTITY  # type: ignore[union-attr]
    client_error = _failure(link.client_events)
    assert isinstance(client_error, DtlsAlertError)
    assert "unknown_psk_identity" in str(client_error)


def _client_hello(
    version: int = 0xFEFD, suites: tuple[int, ...] = (0xC0A8,), **kw: object
) -> bytes:
    hello = m.ClientHello(version, b"r" * 32, b"", b"", suites, b"\x00", **kw)  # type: ignore[arg-type]
    message = m.encode_handshake(m.HandshakeType.CLIENT_HELLO, 0, hello.encode())
    return encode_record(ContentType.HANDSHAKE, 0, 0, message)


def _alerts(datagrams: list[bytes]) -> list[tuple[int, int]]:
    """The plaintext (epoch 0) alerts in the datagrams; (epoch, 0) for each protected one."""
    out = []
    for datagram in datagrams:
        records, _ = parse_records(datagram)
        for r in records:
            if r.content_type == ContentType.ALERT:
                out.append(m.decode_alert(r.fragment) if r.epoch == 0 else (r.epoch, 0))
    return out


@pytest.mark.parametrize(
    ("datagram", "alert"),
    [
        (_client_hello(version=0xFEFF), AlertDescription.PROTOCOL_VERSION),
        (_client_hello(suites=(0xC02B, 0x00FF)), AlertDescription.HANDSHAKE_FAILURE),
        (
            _client_hello(extensions=((0xFF01, b"\x0cprevious-data"),)),
            AlertDescription.HANDSHAKE_FAILURE,
        ),
        (encode_record(22, 0, 0, m.encode_handshake(1, 0, b"\x00")), AlertDescription.DECODE_ERROR),
    ],
)
def test_server_refuses_hellos(datagram: bytes, alert: int) -> None:
    server = psk_server()
    received = server.receive(datagram, 0.0)
    assert _alerts(received.datagrams) == [(2, alert)]
    error = _failure(received.events)  # type: ignore[arg-type]
    assert isinstance(error, HandshakeError)
    assert error.alert == alert
    assert server.state is DtlsState.FAILED
    assert server.receive(datagram, 0.0).datagrams == []


def test_client_refuses_a_dtls_1_0_server_hello() -> None:
    client = psk_client()
    client.start(0.0)
    hello = m.ServerHello(0xFEFF, b"s" * 32, b"", 0xC0A8, 0)
    message = m.encode_handshake(m.HandshakeType.SERVER_HELLO, 0, hello.encode())
    received = client.receive(encode_record(22, 0, 0, message), 0.1)
    assert _alerts(received.datagrams) == [(2, AlertDescription.PROTOCOL_VERSION)]
    assert client.state is DtlsState.FAILED


def test_client_refuses_a_suite_it_did_not_offer() -> None:
    client = psk_client()
    client.start(0.0)
    hello = m.ServerHello(0xFEFD, b"s" * 32, b"", 0xC02B, 0)
    message = m.encode_handshake(m.HandshakeType.SERVER_HELLO, 0, hello.encode())
    received = client.receive(encode_record(22, 0, 0, message), 0.1)
    assert _alerts(received.datagrams) == [(2, AlertDescription.HANDSHAKE_FAILURE)]


def test_lost_flights_are_retransmitted_whole() -> None:
    # Lose the server's hello flight once and its last flight once.
    lost = {("s2c", 1), ("s2c", 3)}
    link = Link(psk_client(), psk_server(), drop=lambda d, i, _: (d, i) in lost)
    link.handshake()
    assert link.client.is_established
    assert link.server.is_established
    assert link.client.statistics.retransmissions >= 1
    assert link.server.statistics.retransmissions >= 2  # flights 4 and 6, each once
    assert link.now <= 2.0  # within the first timers
    assert link.client_events == link.server_events


def test_retransmission_timer_doubles_then_the_handshake_times_out() -> None:
    client = psk_client()
    first = client.start(0.0)
    times = []
    while (deadline := client.next_deadline()) is not None:
        received = client.timeout(deadline)
        times.append(deadline)
        if received.datagrams:
            (again,) = received.datagrams  # the same flight with a new record number
            assert again[11:] == first[0][11:]
            assert again[:5] == first[0][:5]
            assert again[5:11] == len(times).to_bytes(6, "big")
    assert times == [1.0, 3.0, 7.0, 15.0, 31.0, 60.0]
    assert client.state is DtlsState.FAILED
    assert client.statistics.retransmissions == 5


@pytest.mark.parametrize("started", [58.85011655066052, 496.2498567986102, 0.0, 10.0])
def test_the_handshake_ends_at_its_deadline_whatever_the_rounding(started: float) -> None:
    """At the deadline the flight timer was capped at (started + 60 s), the handshake
    fails, also where ``deadline - started`` rounds below 60 s (the first two)."""
    client = psk_client()
    client.start(started)
    events = []
    deadlines = []
    while (deadline := client.next_deadline()) is not None and len(deadlines) < 20:
        deadlines.append(deadline)
        events += client.timeout(deadline).events
    assert len(deadlines) == 6, deadlines  # five retransmissions, then the end
    assert deadlines[-1] == started + 60.0
    (failed,) = events
    assert isinstance(failed.error, HandshakeTimeoutError)
    assert client.state is DtlsState.FAILED


def test_timeout_event_is_typed() -> None:
    client = psk_client(config=DtlsConfig(handshake_timeout=5.0))
    client.start(10.0)
    events = []
    while (deadline := client.next_deadline()) is not None:
        events += client.timeout(deadline).events
    (failed,) = events
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, HandshakeTimeoutError)
    assert failed.error.elapsed == pytest.approx(5.0)


def test_renegotiation_is_refused_and_the_session_goes_on() -> None:
    link = Link(psk_client(), psk_server())
    link.handshake()
    # A ClientHello inside the session (epoch 1), as a client renegotiating would send.
    hello = m.ClientHello(0xFEFD, b"r" * 32, b"", b"", (0xC0A8,), b"\x00")
    message = m.encode_handshake(m.HandshakeType.CLIENT_HELLO, 4, hello.encode())
    layer = link.client._records
    replies = link.to_server([layer.protect(ContentType.HANDSHAKE, message)])
    assert len(replies) == 1
    link.to_client(replies)
    assert link.client_events[-1] == AlertReceived(1, AlertDescription.NO_RENEGOTIATION)
    assert link.server.is_established
    link.to_server([link.client.send(b"still here")])
    assert link.server_data == [b"still here"]


def test_close_notify() -> None:
    link = Link(psk_client(), psk_server())
    link.handshake()
    goodbye = link.client.close()
    assert link.client.state is DtlsState.CLOSED
    answer = link.to_server(goodbye)
    assert link.server_events[-1] == Closed()
    assert link.server.state is DtlsState.CLOSED
    assert _alerts(answer) == [(1, 0)]  # one protected alert: the server's close_notify
    assert link.client.close() == []
    with pytest.raises(LocalProtocolError):
        link.server.send(b"x")


def test_plaintext_alerts_are_ignored_once_established() -> None:
    link = Link(psk_client(), psk_server())
    link.handshake()
    forged = encode_record(ContentType.ALERT, 0, 99, m.encode_alert(2, 40))
    assert link.client.receive(forged, 5.0).events == []
    assert link.client.is_established


def test_fatal_alert_ends_an_established_session() -> None:
    link = Link(psk_client(), psk_server())
    link.handshake()
    alert = link.server._records.protect(ContentType.ALERT, m.encode_alert(2, 80))
    error = _failure(link.client.receive(alert, 5.0).events)  # type: ignore[arg-type]
    assert isinstance(error, DtlsAlertError)
    assert error.description == 80
    assert link.client.state is DtlsState.FAILED


def test_replayed_and_forged_application_data_is_dropped() -> None:
    link = Link(psk_client(), psk_server())
    link.handshake()
    record = link.client.send(b"once")
    link.to_server([record, record])
    assert link.server_data == [b"once"]
    assert link.server.record_statistics.replayed == 1
    later = link.client.send(b"twice")
    forged = later[:-1] + bytes([later[-1] ^ 1])
    link.to_server([forged])
    assert link.server.record_statistics.bad_record_mac == 1


def test_small_mtu_fragments_certificate_flights() -> None:
    pki = Pki()
    config = DtlsConfig(mtu=200)
    client = DtlsSession(
        Role.CLIENT,
        DtlsCredentials(trusted_cas=(pki.ca_cert,)),
        server_name="localhost",
        config=config,
    )
    server = DtlsSession(Role.SERVER, pki.credentials(pki.server), config=config)
    link = Link(client, server)
    link.handshake()
    assert link.client.is_established
    assert all(len(datagram) <= 200 for _, datagram in link.wire)
    assert len(link.wire) > 8


# TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8


def test_ecdhe_with_a_server_certificate() -> None:
    pki = Pki()
    client = DtlsSession(
        Role.CLIENT, DtlsCredentials(trusted_cas=(pki.ca_cert,)), server_name="::1"
    )
    server = DtlsSession(Role.SERVER, pki.credentials(pki.server))
    link = Link(client, server)
    link.handshake()
    (done,) = link.client_events
    assert isinstance(done, HandshakeComplete)
    assert done.cipher_suite == m.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
    assert done.certificate_subject is not None
    assert link.server.peer == HandshakeComplete(m.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, True)
    link.to_server([link.client.send(b"hello")])
    assert link.server_data == [b"hello"]


def test_ecdhe_with_client_certificates() -> None:
    pki = Pki()
    client = DtlsSession(Role.CLIENT, pki.credentials(pki.client), server_name="localhost")
    server = DtlsSession(Role.SERVER, pki.credentials(pki.server, require_client_auth=True))
    link = Link(client, server)
    link.handshake()
    assert link.server.peer is not None
    assert "client.example" in (link.server.peer.certificate_subject or "") or (
        link.server.peer.certificate_subject is not None
    )
    assert link.client.is_established


@pytest.mark.parametrize("judge", ["client", "server"])
@pytest.mark.parametrize(("earlier", "valid"), [(timedelta(days=1), True), (timedelta(0), False)])
def test_a_certificate_is_judged_at_the_wall_time_given(
    judge: str, earlier: timedelta, valid: bool
) -> None:
    """T = 12 h after the certificate's notAfter: expired at T, valid at T - 1 day. The
    client judges the server's certificate, or the server the client's (only one judges)."""
    pki = Pki()
    leaf = Pki.chain(pki.server if judge == "client" else pki.client)[0]
    t = leaf.not_valid_after_utc + timedelta(hours=12)
    client = DtlsSession(
        Role.CLIENT,
        pki.credentials(pki.client, verify_peer=judge == "client"),
        server_name="localhost",
    )
    server = DtlsSession(Role.SERVER, pki.credentials(pki.server, require_client_auth=True))
    assert (client if judge == "client" else server).needs_wall_time
    link = Link(client, server)
    link.wall_time = t - earlier
    link.handshake()
    if valid:
        assert link.client.is_established
        assert link.server.is_established
        assert not link.server.needs_wall_time  # established: no certificate left to check
        return
    error = _failure(link.client_events if judge == "client" else link.server_events)
    assert isinstance(error, HandshakeError)
    assert error.alert == AlertDescription.CERTIFICATE_EXPIRED


def test_a_session_that_may_check_certificates_needs_the_wall_time() -> None:
    pki = Pki()
    client = DtlsSession(
        Role.CLIENT, DtlsCredentials(trusted_cas=(pki.ca_cert,)), server_name="localhost"
    )
    server = DtlsSession(Role.SERVER, pki.credentials(pki.server))
    assert not server.needs_wall_time  # it asks for no client certificate
    hello = client.start(0.0)
    flight = server.receive(hello[0], 0.0).datagrams  # no wall_time: none needed
    assert flight
    with pytest.raises(LocalProtocolError, match="wall_time"):
        client.receive(flight[0], 0.1)
    assert client.state is DtlsState.WAIT_SERVER_HELLO  # nothing was read
    assert client.record_statistics == RecordLayer().statistics
    # PSK sessions check no certificate: no wall time.
    assert not psk_client().needs_wall_time
    assert not psk_server().needs_wall_time


def test_ecdhe_refuses_a_server_certificate_for_another_name() -> None:
    pki = Pki()
    client = DtlsSession(
        Role.CLIENT, DtlsCredentials(trusted_cas=(pki.ca_cert,)), server_name="example.org"
    )
    link = Link(client, DtlsSession(Role.SERVER, pki.credentials(pki.server)))
    link.handshake()
    error = _failure(link.client_events)
    assert isinstance(error, HandshakeError)
    assert error.alert == AlertDescription.BAD_CERTIFICATE
    assert isinstance(_failure(link.server_events), DtlsAlertError)


def test_ecdhe_refuses_a_certificate_of_an_unknown_ca() -> None:
    pki, other = Pki(), Pki()
    client = DtlsSession(
        Role.CLIENT, DtlsCredentials(trusted_cas=(other.ca_cert,)), server_name="localhost"
    )
    link = Link(client, DtlsSession(Role.SERVER, pki.credentials(pki.server)))
    link.handshake()
    assert _failure(link.client_events).alert == AlertDescription.UNKNOWN_CA  # type: ignore[union-attr]


def test_ecdhe_client_without_certificate_is_refused_when_required() -> None:
    pki = Pki()
    client = DtlsSession(
        Role.CLIENT, DtlsCredentials(trusted_cas=(pki.ca_cert,)), server_name="localhost"
    )
    server = DtlsSession(Role.SERVER, pki.credentials(pki.server, require_client_auth=True))
    link = Link(client, server)
    link.handshake()
    assert _failure(link.server_events).alert == AlertDescription.HANDSHAKE_FAILURE  # type: ignore[union-attr]


def test_raw_public_keys_both_ways() -> None:
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = DtlsSession(Role.CLIENT, rpk_credentials(client_key, server_key))
    server = DtlsSession(
        Role.SERVER, rpk_credentials(server_key, client_key, require_client_auth=True)
    )
    link = Link(client, server)
    link.handshake()
    assert link.client.peer is not None
    assert link.server.peer is not None
    assert link.client.peer.rpk_fingerprint == rpk_fingerprint(spki_der(server_key.public_key()))
    assert link.server.peer.rpk_fingerprint == rpk_fingerprint(spki_der(client_key.public_key()))


def test_untrusted_raw_public_key_is_refused() -> None:
    server_key = ec.generate_private_key(ec.SECP256R1())
    stranger = ec.generate_private_key(ec.SECP256R1())
    client = DtlsSession(Role.CLIENT, rpk_credentials(stranger, stranger))
    link = Link(client, DtlsSession(Role.SERVER, rpk_credentials(server_key, stranger)))
    link.handshake()
    assert _failure(link.client_events).alert == AlertDescription.BAD_CERTIFICATE  # type: ignore[union-attr]


def test_psk_is_chosen_when_both_suites_are_possible() -> None:
    pki = Pki()
    both = DtlsCredentials(psk_identity=IDENTITY, psk=KEY, trusted_cas=(pki.ca_cert,))
    server_creds = DtlsCredentials(
        psk_table={IDENTITY: KEY},
        certificate_chain=pki.chain(pki.server),
        private_key=pki.key(pki.server),
    )
    link = Link(
        DtlsSession(Role.CLIENT, both, server_name="localhost"),
        DtlsSession(Role.SERVER, server_creds),
    )
    link.handshake()
    assert link.server.peer is not None
    assert link.server.peer.cipher_suite == m.TLS_PSK_WITH_AES_128_CCM_8


# The transition table


def _closed_mid_handshake(state: DtlsState) -> None:
    """Run a handshake one datagram at a time until a side is in ``state``, then close it."""
    config = DtlsConfig(mtu=110)  # the server's hello flight takes two datagrams
    link = Link(psk_client(config=config), psk_server(config=config))
    queue = [("c2s", d) for d in link.client.start(0.0)]
    sides = (link.client, link.server)
    while queue and all(side.state is not state for side in sides):
        direction, datagram = queue.pop(0)
        if direction == "c2s":
            queue += [("s2c", d) for d in link.to_server([datagram])]
        else:
            queue += [("c2s", d) for d in link.to_client([datagram])]
    (side,) = [side for side in sides if side.state is state]
    assert side.close()
    assert side.state is DtlsState.CLOSED


def test_the_transition_table_is_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[tuple[DtlsState, DtlsInput]] = set()
    original = DtlsSession._move

    def recording(self: DtlsSession, event: DtlsInput) -> None:
        before = self.state
        original(self, event)
        assert TRANSITIONS[before, event] is self.state
        seen.add((before, event))

    monkeypatch.setattr(DtlsSession, "_move", recording)
    test_psk_handshake_with_cookie_and_application_data()
    test_wrong_psk_fails_the_finished_check()  # FAIL in WAIT_CLIENT_FINISHED, and after
    test_close_notify()
    test_fatal_alert_ends_an_established_session()
    test_ecdhe_refuses_a_certificate_of_an_unknown_ca()  # FAIL in WAIT_SERVER_HELLO_DONE
    test_server_refuses_hellos(_client_hello(version=0xFEFF), 70)  # FAIL in IDLE
    test_client_refuses_a_dtls_1_0_server_hello()  # FAIL in WAIT_SERVER_HELLO
    for state in (
        DtlsState.WAIT_SERVER_HELLO,
        DtlsState.WAIT_SERVER_HELLO_DONE,
        DtlsState.WAIT_CLIENT_FINISHED,
        DtlsState.WAIT_SERVER_FINISHED,
    ):
        _closed_mid_handshake(state)
    # FAIL in WAIT_SERVER_FINISHED: the server's answer is a fatal alert.
    link = Link(psk_client(), psk_server({b"nobody": KEY}))
    link.handshake()
    # CLOSE in IDLE.
    assert psk_server().close() == []
    assert seen == set(TRANSITIONS), set(TRANSITIONS) - seen


def test_illegal_moves_are_local_errors() -> None:
    server = psk_server()
    with pytest.raises(LocalProtocolError):
        server.start(0.0)
    client = psk_client()
    client.start(0.0)
    with pytest.raises(LocalProtocolError):
        client.start(0.0)
    assert RecordLayer  # the record layer is the session's own


# Whatever arrives, receive() raises nothing


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["server", "client", "established"]))
def test_arbitrary_datagrams_never_raise(data: bytes, who: str) -> None:
    if who == "server":
        session = psk_server()
    elif who == "client":
        session = psk_client()
        session.start(0.0)
    else:
        link = Link(psk_client(), psk_server())
        link.handshake()
        session = link.client
    received = session.receive(data, 1.0)
    assert all(isinstance(d, bytes) for d in received.datagrams)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 7), st.integers(0, 2000), st.binary(min_size=1, max_size=8))
def test_mutated_handshakes_never_raise(index: int, at: int, noise: bytes) -> None:
    """A live handshake whose ``index``-th datagram is corrupted on the way, then timers run."""
    link = Link(psk_client(), psk_server())
    queue = [("c2s", d) for d in link.client.start(0.0)]
    count = 0
    while queue and count < 20:
        direction, datagram = queue.pop(0)
        if count == index:
            corrupted = bytearray(datagram)
            at %= len(corrupted)
            corrupted[at : at + len(noise)] = noise
            datagram = bytes(corrupted)
        count += 1
        if direction == "c2s":
            queue += [("s2c", d) for d in link.to_server([datagram])]
        else:
            queue += [("c2s", d) for d in link.to_client([datagram])]
    link.run([], until=120.0)  # retransmissions finish or fail the handshake, typed
    for session in (link.client, link.server):
        assert session.state in (DtlsState.ESTABLISHED, DtlsState.FAILED, DtlsState.IDLE)
