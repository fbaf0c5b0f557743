"""One DTLS 1.2 session with one peer, client or server role (RFC 6347, RFC 7925 profile).

Owns the handshake (TLS_PSK_WITH_AES_128_CCM_8, RFC 6655; and
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, RFC 7251, with X.509 certificates or
raw public keys, RFC 7250), flights and their retransmission (§4.2.4), the
extended master secret (RFC 7627, used whenever both sides offer it), the
switch to epoch 1, application data, alerts and closing. h11-style: the
driver feeds it datagrams and the time, and sends what it returns.

- :meth:`DtlsSession.start` gives a client's first flight.
- :meth:`DtlsSession.receive` takes one datagram and returns a
  :class:`Received`: datagrams to send, application data, and events
  (:class:`HandshakeComplete`, :class:`AlertReceived`, :class:`Closed`,
  :class:`Failed`).
- :meth:`DtlsSession.send` protects application data once established;
  :meth:`DtlsSession.close` sends close_notify.
- :meth:`DtlsSession.next_deadline` / :meth:`DtlsSession.timeout`: the
  flight timer (initial 1 s, doubling, up to 60 s; ``handshake_timeout``
  after the first flight the handshake fails with
  :class:`~coap_trio.errors.HandshakeTimeoutError`).

States and their legal moves are data (:data:`TRANSITIONS`); every state
change is a lookup there. Refused: renegotiation (a ClientHello or
HelloRequest on an established session gets a no_renegotiation warning),
versions older than DTLS 1.2 (protocol_version), suites and parameters
outside the profile (handshake_failure, illegal_parameter). A record that
fails authentication is dropped and counted, and the handshake goes on
(RFC 6347 §4.1.2.7: a forged record must not end it). A peer whose
Finished does not check out gets decrypt_error: its verify_data differs,
or (a wrong pre-shared key) its Finished record fails authentication again
after it sent its flight once more.
Failures are :class:`Failed` events carrying a
:class:`~coap_trio.errors.HandshakeError` (our refusal, with the alert we
sent) or a :class:`~coap_trio.errors.DtlsAlertError` (the peer's fatal
alert); nothing is raised from :meth:`~DtlsSession.receive`.

Bounded: a handshake message (16 KiB), the reassembly window (8 messages),
epoch-1 records held until their ChangeCipherSpec (8), HelloVerifyRequests
followed (4), and the handshake's duration. Must not know about sockets,
addresses, trio or CoAP.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Callable
from datetime import datetime

import attrs
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ...errors import (
    DtlsAlertError,
    DtlsDecodeError,
    DtlsPkiError,
    HandshakeError,
    HandshakeTimeoutError,
    LocalProtocolError,
)
from . import ecc, keys, pki
from . import messages as msg
from .credentials import DtlsCredentials
from .messages import (
    AlertDescription,
    AlertLevel,
    CertificateType,
    ExtensionType,
    HandshakeMessage,
    HandshakeType,
)
from .record import (
    CCM8_OVERHEAD,
    DTLS_1_0,
    DTLS_1_2,
    RECORD_HEADER_SIZE,
    Ccm8Cipher,
    ContentType,
    Record,
    RecordLayer,
    RecordStatistics,
    parse_records,
)

__all__ = [
    "DEFAULT_MTU",
    "TRANSITIONS",
    "AlertReceived",
    "Closed",
    "DtlsConfig",
    "DtlsEvent",
    "DtlsInput",
    "DtlsSession",
    "DtlsState",
    "DtlsStatistics",
    "Failed",
    "HandshakeComplete",
    "Received",
    "Role",
]

#: The default path MTU: bytes of one datagram's payload (RFC 7252 §4.6's 1152).
DEFAULT_MTU = 1152
_PSK = msg.TLS_PSK_WITH_AES_128_CCM_8
_ECDHE = msg.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
_MAX_HELLO_VERIFY = 4
_MAX_EARLY_RECORDS = 8
_EMPTY_RENEGOTIATION_INFO = b"\x00"


class Role(enum.Enum):
    """Which side of the handshake a session plays."""

    CLIENT = "client"
    SERVER = "server"


class DtlsState(enum.Enum):
    """Where a session is (RFC 6347 §4.2.4's flights, per role)."""

    #: Made; a client has not started, a server has had no ClientHello.
    IDLE = "idle"
    #: Client: a ClientHello (flight 1 or 3) is out; a HelloVerifyRequest or ServerHello is due.
    WAIT_SERVER_HELLO = "wait-server-hello"
    #: Client: the ServerHello arrived; the rest of the server's flight up to ServerHelloDone.
    WAIT_SERVER_HELLO_DONE = "wait-server-hello-done"
    #: Client: its key exchange, ChangeCipherSpec and Finished (flight 5) are out.
    WAIT_SERVER_FINISHED = "wait-server-finished"
    #: Server: its hello flight (4) is out; the client's key exchange up to Finished is due.
    WAIT_CLIENT_FINISHED = "wait-client-finished"
    #: Both Finished checked out: application data flows.
    ESTABLISHED = "established"
    #: close_notify sent or received.
    CLOSED = "closed"
    #: Ended by an error: an alert sent or received, or the handshake's time ran out.
    FAILED = "failed"


class DtlsInput(enum.Enum):
    """What moves a session."""

    #: A client sends its first ClientHello (:meth:`DtlsSession.start`).
    START = "start"
    #: A client got a HelloVerifyRequest and sends the ClientHello with the cookie.
    HELLO_VERIFY_REQUEST = "hello-verify-request"
    #: A client got an acceptable ServerHello.
    SERVER_HELLO = "server-hello"
    #: A client got ServerHelloDone and sends flight 5.
    SERVER_HELLO_DONE = "server-hello-done"
    #: A server got an acceptable ClientHello and sends flight 4.
    CLIENT_HELLO = "client-hello"
    #: The peer's Finished checked out.
    FINISHED = "finished"
    #: close_notify sent (:meth:`DtlsSession.close`) or received.
    CLOSE = "close"
    #: A fatal alert sent or received, or the handshake timed out.
    FAIL = "fail"


_S, _I = DtlsState, DtlsInput
_HANDSHAKING = (
    _S.WAIT_SERVER_HELLO,
    _S.WAIT_SERVER_HELLO_DONE,
    _S.WAIT_SERVER_FINISHED,
    _S.WAIT_CLIENT_FINISHED,
)

#: The legal moves of a session: ``(state, input) -> next state``.
TRANSITIONS: dict[tuple[DtlsState, DtlsInput], DtlsState] = {
    (_S.IDLE, _I.START): _S.WAIT_SERVER_HELLO,
    (_S.IDLE, _I.CLIENT_HELLO): _S.WAIT_CLIENT_FINISHED,
    (_S.IDLE, _I.CLOSE): _S.CLOSED,
    (_S.IDLE, _I.FAIL): _S.FAILED,
    (_S.WAIT_SERVER_HELLO, _I.HELLO_VERIFY_REQUEST): _S.WAIT_SERVER_HELLO,
    (_S.WAIT_SERVER_HELLO, _I.SERVER_HELLO): _S.WAIT_SERVER_HELLO_DONE,
    (_S.WAIT_SERVER_HELLO_DONE, _I.SERVER_HELLO_DONE): _S.WAIT_SERVER_FINISHED,
    (_S.WAIT_SERVER_FINISHED, _I.FINISHED): _S.ESTABLISHED,
    (_S.WAIT_CLIENT_FINISHED, _I.FINISHED): _S.ESTABLISHED,
    **{(state, _I.CLOSE): _S.CLOSED for state in _HANDSHAKING},
    **{(state, _I.FAIL): _S.FAILED for state in _HANDSHAKING},
    (_S.ESTABLISHED, _I.CLOSE): _S.CLOSED,
    (_S.ESTABLISHED, _I.FAIL): _S.FAILED,
}


@attrs.frozen
class DtlsConfig:
    """Tunables of a session."""

    #: Largest datagram sent (flights are cut and packed to fit).
    mtu: int = DEFAULT_MTU
    #: First retransmission timeout of a flight, seconds (RFC 6347 §4.2.4.1).
    initial_timeout: float = 1.0
    #: The timeout doubles up to this, seconds.
    max_timeout: float = 60.0
    #: The handshake fails this long after its first flight, seconds.
    handshake_timeout: float = 60.0
    #: Largest handshake message reassembled, bytes.
    max_message_size: int = msg.DEFAULT_MAX_MESSAGE_SIZE
    #: Offer (client) and accept (server) the extended master secret (RFC 7627).
    extended_master_secret: bool = True


@attrs.frozen
class HandshakeComplete:
    """The handshake finished: application data may flow. Says who the peer proved to be."""

    cipher_suite: int
    #: RFC 7627's extended master secret was used.
    extended_master_secret: bool
    #: The PSK identity the client used (PSK suite).
    psk_identity: bytes | None = None
    #: The subject of the peer's certificate (X.509), when it sent one.
    certificate_subject: str | None = None
    #: The fingerprint of the peer's raw public key (RFC 7250), when it sent one.
    rpk_fingerprint: str | None = None


@attrs.frozen
class AlertReceived:
    """The peer sent a warning alert other than close_notify (e.g. no_renegotiation)."""

    level: int
    description: int


@attrs.frozen
class Closed:
    """The peer sent close_notify; nothing more will be read or sent."""


@attrs.frozen
class Failed:
    """The session ended with an error: ours (HandshakeError) or the peer's alert."""

    error: HandshakeError | DtlsAlertError


#: The events :meth:`DtlsSession.receive` and :meth:`DtlsSession.timeout` report.
DtlsEvent = HandshakeComplete | AlertReceived | Closed | Failed


@attrs.frozen
class Received:
    """What a datagram (or a timeout) produced."""

    #: Datagrams to send to the peer, in order.
    datagrams: list[bytes] = attrs.field(factory=list)
    #: Application data received, one item per record.
    data: list[bytes] = attrs.field(factory=list)
    #: What happened.
    events: list[DtlsEvent] = attrs.field(factory=list)


@attrs.define
class DtlsStatistics:
    """Counters of a session."""

    #: Flights sent again (timer, or the peer's retransmission).
    retransmissions: int = 0
    #: Handshake fragments or messages ignored (unexpected, malformed, unauthenticated).
    dropped_messages: int = 0
    #: Records dropped because they arrived in a state that takes none of their kind.
    dropped_records: int = 0


@attrs.frozen
class _Item:
    epoch: int
    content_type: int
    #: For a handshake message: (msg_type, message_seq, body).
    message: tuple[int, int, bytes] | None = None


def _refuse(description: int, message: str) -> HandshakeError:
    """Our refusal: raised inside the session, sent as a fatal alert, reported as Failed."""
    return HandshakeError(message, int(description))


def _alert_name(description: int) -> str:
    try:
        return AlertDescription(description).name.lower()
    except ValueError:
        return f"alert {description}"


class DtlsSession:
    """One peer's DTLS 1.2 session: handshake, then protected application data.

    ``server_name`` is the host a client asked for, checked against the
    server's certificate; ``random_bytes`` gives the hello randoms. No clock
    is read here: :meth:`receive` takes the time of the timers (``now``) and
    the wall-clock time certificates are checked at (``wall_time``).
    """

    # Slots: a server holds one session per peer (a __dict__ would cost ~1.5 KB each).
    __slots__ = (
        "_cert_requested",
        "_client_certificate_seen",
        "_client_random",
        "_deadline",
        "_early",
        "_ecdhe_key",
        "_ems",
        "_epoch1_read",
        "_fingerprint",
        "_flight",
        "_hello_verifies",
        "_interval",
        "_master",
        "_offered",
        "_own_cert_type",
        "_peer_cert_type",
        "_peer_key",
        "_peer_point",
        "_peer_retransmitted",
        "_psk_identity",
        "_random",
        "_reassembler",
        "_record_seq",
        "_records",
        "_repeated_after_unauthentic",
        "_send_seq",
        "_sent_certificate",
        "_server_random",
        "_started",
        "_subject",
        "_suite",
        "_transcript",
        "_unauthentic",
        "_verified_client",
        "_wall_time",
        "config",
        "credentials",
        "peer",
        "role",
        "server_name",
        "state",
        "statistics",
    )

    def __init__(
        self,
        role: Role,
        credentials: DtlsCredentials,
        *,
        config: DtlsConfig | None = None,
        server_name: str | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.role = role
        self.credentials = credentials
        self.config = config or DtlsConfig()
        #: The host name or IP literal the client asked for (checked against the certificate).
        self.server_name = server_name
        self.state = DtlsState.IDLE
        self.statistics = DtlsStatistics()
        #: Set when the handshake completed.
        self.peer: HandshakeComplete | None = None
        self._random = random_bytes
        self._wall_time: datetime | None = None
        self._records = RecordLayer()
        self._reassembler = msg.Reassembler(max_message_size=self.config.max_message_size)
        self._send_seq = 0
        self._transcript = bytearray()
        self._flight: list[_Item] = []
        self._deadline: float | None = None
        self._interval = self.config.initial_timeout
        self._started: float | None = None
        self._early: list[Record] = []
        self._epoch1_read = False
        #: Records of the peer's epoch 1 that failed authentication during the handshake.
        self._unauthentic = 0
        self._repeated_after_unauthentic = False
        self._record_seq = 0
        self._hello_verifies = 0
        # Negotiated.
        self._client_random = b""
        self._server_random = b""
        self._suite = 0
        self._ems = False
        self._master = b""
        self._offered: msg.ClientHello | None = None
        self._peer_cert_type = CertificateType.X509
        self._own_cert_type = CertificateType.X509
        self._cert_requested = False
        self._peer_key: ec.EllipticCurvePublicKey | None = None
        self._peer_point = b""
        self._psk_identity: bytes | None = None
        self._subject: str | None = None
        self._fingerprint: str | None = None
        self._ecdhe_key: ec.EllipticCurvePrivateKey | None = None
        self._sent_certificate = False
        self._client_certificate_seen = False
        self._verified_client = False
        self._peer_retransmitted = False

    # The public face

    @property
    def record_statistics(self) -> RecordStatistics:
        """Records dropped by the record layer (malformed, replayed, failing authentication)."""
        return self._records.statistics

    @property
    def is_established(self) -> bool:
        """True once both Finished messages checked out and until closed or failed."""
        return self.state is DtlsState.ESTABLISHED

    def start(self, now: float) -> list[bytes]:
        """A client's first flight: the ClientHello without a cookie."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client starts a handshake")
        self._move(DtlsInput.START)
        self._client_random = self._random(32)
        self._started = now
        self._new_flight()
        self._send_client_hello(b"")
        return self._transmit_flight(now)

    @property
    def needs_wall_time(self) -> bool:
        """True while :meth:`receive` needs ``wall_time``: a handshake that may have to
        check the peer's X.509 certificate (the client's, or a server's that asks for
        one) against trusted CAs."""
        creds = self.credentials
        if self.state not in _HANDSHAKING and self.state is not DtlsState.IDLE:
            return False
        if not (creds.verify_peer and creds.trusted_cas):
            return False
        return self.role is Role.CLIENT or creds.require_client_auth

    def receive(self, datagram: bytes, now: float, wall_time: datetime | None = None) -> Received:
        """Take one datagram from the peer.

        ``now`` is the time of the flight timers (seconds, any monotonic clock:
        the one :meth:`start`, :meth:`timeout` and :meth:`next_deadline` use).
        ``wall_time`` is the timezone-aware time the peer's certificate is
        checked at (validity period): required while :attr:`needs_wall_time`
        (:class:`~coap_trio.errors.LocalProtocolError` without it, before
        anything is read), ignored otherwise.
        """
        out = Received()
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            self.statistics.dropped_records += 1
            return out
        if wall_time is None and self.needs_wall_time:
            raise LocalProtocolError(
                "this DTLS session may check an X.509 certificate: receive() needs wall_time"
            )
        self._wall_time = wall_time
        records, bad = parse_records(datagram)
        if bad:
            self._records.statistics.malformed += 1
        self._peer_retransmitted = False
        try:
            for record in records:
                if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
                    break
                self._on_record(record, now, out)
            if self._peer_retransmitted and self._flight and self._answers_retransmission():
                self.statistics.retransmissions += 1
                out.datagrams.extend(self._render_flight())
        except HandshakeError as refusal:
            self._fail(refusal, out)
        finally:
            self._wall_time = None
        return out

    def receive_application_data(self, datagram: bytes) -> bytes | None:
        """The fast path of :meth:`receive` for an established session: the plaintext of
        a datagram that is one new, authentic application-data record, or None for
        anything else, which :meth:`receive` must then be given (it drops and counts
        what is wrong; nothing was changed or counted here)."""
        if self.state is not DtlsState.ESTABLISHED:
            return None
        return self._records.open_application_data(datagram)

    def send(self, data: bytes) -> bytes:
        """One application-data record carrying ``data`` (at most 2^14 bytes)."""
        if self.state is not DtlsState.ESTABLISHED:
            raise LocalProtocolError(f"DTLS session is {self.state.value}, not established")
        return self._records.protect(ContentType.APPLICATION_DATA, data)

    def close(self) -> list[bytes]:
        """Send close_notify (when a handshake started) and end the session."""
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            return []
        started = self.state is not DtlsState.IDLE
        self._move(DtlsInput.CLOSE)
        self._deadline = None
        if not started:
            return []
        return [self._alert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY)]

    def next_deadline(self) -> float | None:
        """When :meth:`timeout` should be called next (None: no timer)."""
        return self._deadline

    def timeout(self, now: float) -> Received:
        """Retransmit the flight whose timer expired, or fail when the handshake's time is up."""
        out = Received()
        if self._deadline is None or now < self._deadline:
            return out
        assert self._started is not None
        elapsed = now - self._started
        # Compared with the very sum the last deadline was capped at: ``now -
        # started`` can round below the timeout at that deadline (e.g. started
        # 58.85..., 60 s), and the flight would be due again at once, forever.
        if now >= self._started + self.config.handshake_timeout:
            self._deadline = None
            self._move(DtlsInput.FAIL)
            out.events.append(Failed(HandshakeTimeoutError(elapsed)))
            return out
        self._interval = min(self._interval * 2, self.config.max_timeout)
        self._deadline = min(now + self._interval, self._started + self.config.handshake_timeout)
        self.statistics.retransmissions += 1
        out.datagrams.extend(self._render_flight())
        return out

    # States

    def _move(self, event: DtlsInput) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise LocalProtocolError(f"DTLS session: {event.value} in state {self.state.value}")
        self.state = new

    def _fail(self, refusal: HandshakeError, out: Received) -> None:
        assert refusal.alert is not None
        out.datagrams.append(self._alert(AlertLevel.FATAL, refusal.alert))
        self._deadline = None
        self._move(DtlsInput.FAIL)
        out.events.append(Failed(refusal))

    def _answers_retransmission(self) -> bool:
        # The peer sent its previous flight again: ours (the answer to it) was lost.
        return self.state in (
            DtlsState.WAIT_SERVER_HELLO,
            DtlsState.WAIT_SERVER_FINISHED,
            DtlsState.WAIT_CLIENT_FINISHED,
        ) or (self.state is DtlsState.ESTABLISHED and self.role is Role.SERVER)

    # Flights

    def _new_flight(self) -> None:
        self._flight = []

    def _queue_message(self, msg_type: int, body: bytes, epoch: int = 0) -> None:
        seq = self._send_seq
        self._send_seq += 1
        self._flight.append(_Item(epoch, ContentType.HANDSHAKE, (msg_type, seq, body)))
        self._transcript += msg.encode_handshake(msg_type, seq, body)

    def _queue_change_cipher_spec(self) -> None:
        self._flight.append(_Item(self._records.write_epoch, ContentType.CHANGE_CIPHER_SPEC))

    def _transmit_flight(self, now: float) -> list[bytes]:
        self._interval = self.config.initial_timeout
        self._deadline = now + self._interval
        if self._started is not None:
            self._deadline = min(self._deadline, self._started + self.config.handshake_timeout)
        return self._render_flight()

    def _render_flight(self) -> list[bytes]:
        records: list[bytes] = []
        for item in self._flight:
            if item.message is None:
                records.append(
                    self._records.protect(item.content_type, msg.CHANGE_CIPHER_SPEC, item.epoch)
                )
                continue
            msg_type, seq, body = item.message
            room = self.config.mtu - RECORD_HEADER_SIZE - msg.HANDSHAKE_HEADER_SIZE
            room -= CCM8_OVERHEAD if item.epoch else 0
            for fragment in msg.fragment_handshake(msg_type, seq, body, max(room, 64)):
                records.append(self._records.protect(ContentType.HANDSHAKE, fragment, item.epoch))
        datagrams: list[bytes] = []
        current = b""
        for record in records:
            if current and len(current) + len(record) > self.config.mtu:
                datagrams.append(current)
                current = b""
            current += record
        if current:
            datagrams.append(current)
        return datagrams

    def _alert(self, level: int, description: int) -> bytes:
        return self._records.protect(ContentType.ALERT, msg.encode_alert(level, description))

    # Records

    def _on_record(self, record: Record, now: float, out: Received) -> None:
        records = self._records
        if record.epoch > records.read_epoch:
            # Ahead of its ChangeCipherSpec (reordered, or the CCS was lost): keep a few.
            if record.epoch == records.read_epoch + 1 and len(self._early) < _MAX_EARLY_RECORDS:
                self._early.append(record)
            else:
                records.statistics.wrong_epoch += 1
            return
        failed_before = records.statistics.bad_record_mac
        payload = records.unprotect(record)
        if payload is None:
            if records.statistics.bad_record_mac > failed_before:
                self._on_unauthentic_record()
            return
        if record.epoch:
            self._epoch1_read = True
        self._record_seq = record.sequence
        kind = record.content_type
        if kind == ContentType.HANDSHAKE:
            self._on_handshake_record(payload, record.epoch, now, out)
        elif kind == ContentType.CHANGE_CIPHER_SPEC:
            self._on_change_cipher_spec(payload, record.epoch, now, out)
        elif kind == ContentType.ALERT:
            self._on_alert(payload, record.epoch, out)
        elif record.epoch and self.state is DtlsState.ESTABLISHED:
            out.data.append(payload)
        else:
            self.statistics.dropped_records += 1

    def _on_unauthentic_record(self) -> None:
        """A record of the epoch we read failed authentication (counted in bad_record_mac).

        RFC 6347 §4.1.2.7: dropped, and the handshake goes on, since anyone can
        send a record with a valid header (a forged Finished must not end it). A
        wrong pre-shared key looks the same, record by record: the peer's Finished
        never authenticates. The handshake is refused (decrypt_error) only on
        stronger evidence: no record of the peer's epoch 1 has authenticated yet,
        one failed, the peer then sent its flight again (its messages or its
        ChangeCipherSpec repeated), and a record failed once more after that.
        """
        if self.state not in (DtlsState.WAIT_SERVER_FINISHED, DtlsState.WAIT_CLIENT_FINISHED):
            return
        if self._epoch1_read:
            return  # the keys are proven: this one is a forgery (or damaged)
        if self._unauthentic and self._repeated_after_unauthentic:
            raise _refuse(
                AlertDescription.DECRYPT_ERROR,
                "the peer's Finished does not authenticate, also in its repeated flight:"
                " our keys differ (a wrong pre-shared key?)",
            )
        self._unauthentic += 1
        self._repeated_after_unauthentic = False

    def _peer_repeats(self) -> None:
        """The peer sent part of a flight again (a repeated message or ChangeCipherSpec)."""
        self._peer_retransmitted = True
        if self._unauthentic:
            self._repeated_after_unauthentic = True

    def _on_change_cipher_spec(self, payload: bytes, epoch: int, now: float, out: Received) -> None:
        try:
            msg.decode_change_cipher_spec(payload)
        except DtlsDecodeError:
            self.statistics.dropped_records += 1
            return
        waiting = self.state in (DtlsState.WAIT_SERVER_FINISHED, DtlsState.WAIT_CLIENT_FINISHED)
        if not waiting or epoch != 0 or self._records.read_epoch != 0:
            self.statistics.dropped_records += 1  # a repeated one, or out of place
            if waiting and epoch == 0:
                self._peer_repeats()
            return
        if not self._records.can_read(1):
            # Before the key exchange that gives its keys (it overtook it): the peer repeats it.
            self.statistics.dropped_records += 1
            return
        self._records.start_reading(1)
        early, self._early = self._early, []
        for record in early:
            if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
                break
            self._on_record(record, now, out)

    def _on_alert(self, payload: bytes, epoch: int, out: Received) -> None:
        try:
            level, description = msg.decode_alert(payload)
        except DtlsDecodeError:
            self.statistics.dropped_records += 1
            return
        if self.state is DtlsState.ESTABLISHED and epoch == 0:
            self.statistics.dropped_records += 1  # unauthenticated: anyone could have sent it
            return
        if description == AlertDescription.CLOSE_NOTIFY:
            answer = self.state is DtlsState.ESTABLISHED
            self._move(DtlsInput.CLOSE)
            self._deadline = None
            if answer:
                out.datagrams.append(self._alert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY))
            out.events.append(Closed())
        elif level == AlertLevel.FATAL:
            self._move(DtlsInput.FAIL)
            self._deadline = None
            out.events.append(Failed(DtlsAlertError(level, description, _alert_name(description))))
        else:
            out.events.append(AlertReceived(level, description))

    def _on_handshake_record(self, payload: bytes, epoch: int, now: float, out: Received) -> None:
        try:
            fragments = msg.parse_handshake_fragments(payload)
        except DtlsDecodeError:
            self.statistics.dropped_messages += 1
            return
        if self.state is DtlsState.ESTABLISHED:
            self._on_established_handshake(fragments, epoch, out)
            return
        for fragment in fragments:
            if (
                self.state is DtlsState.IDLE
                and fragment.msg_type == HandshakeType.CLIENT_HELLO
                and not self._reassembler.pending()
            ):
                # A server's first message: 0, or 1 after a stateless cookie exchange.
                self._reassembler.next_seq = fragment.message_seq
            try:
                if self._reassembler.add(fragment, epoch):
                    self._peer_repeats()
            except DtlsDecodeError as error:
                raise _refuse(AlertDescription.DECODE_ERROR, str(error)) from None
        while self.state in _HANDSHAKING or self.state is DtlsState.IDLE:
            message = self._reassembler.pop()
            if message is None:
                break
            try:
                self._on_message(message, now, out)
            except DtlsDecodeError as error:
                raise _refuse(AlertDescription.DECODE_ERROR, str(error)) from None
            except DtlsPkiError as error:
                raise _refuse(error.alert, str(error)) from None

    def _on_established_handshake(
        self, fragments: list[msg.HandshakeFragment], epoch: int, out: Received
    ) -> None:
        for fragment in fragments:
            if fragment.message_seq < self._reassembler.next_seq:
                self._peer_retransmitted = True  # our last flight was lost
            elif epoch and fragment.msg_type in (
                HandshakeType.CLIENT_HELLO,
                HandshakeType.HELLO_REQUEST,
            ):
                # Renegotiation (RFC 5746): refused, the session goes on.
                out.datagrams.append(
                    self._alert(AlertLevel.WARNING, AlertDescription.NO_RENEGOTIATION)
                )
                self._reassembler.next_seq = fragment.message_seq + 1
            else:
                self.statistics.dropped_messages += 1

    # Handshake messages

    def _on_message(self, message: HandshakeMessage, now: float, out: Received) -> None:
        handler = self._client_message if self.role is Role.CLIENT else self._server_message
        handler(message, now, out)

    def _expect(self, message: HandshakeMessage, *types: int) -> None:
        if message.msg_type not in types:
            raise _refuse(
                AlertDescription.UNEXPECTED_MESSAGE,
                f"unexpected handshake message {message.msg_type} in state {self.state.value}",
            )
        want_epoch = 1 if message.msg_type == HandshakeType.FINISHED else 0
        if message.epoch != want_epoch:
            raise _refuse(
                AlertDescription.UNEXPECTED_MESSAGE,
                f"handshake message {message.msg_type} in epoch {message.epoch}",
            )

    def _hash(self) -> bytes:
        return keys.sha256(bytes(self._transcript))

    # Client

    def _offered_suites(self) -> tuple[int, ...]:
        return self.credentials.suites(server=False)

    def _send_client_hello(self, cookie: bytes) -> None:
        suites = self._offered_suites()
        if not suites:
            raise LocalProtocolError("the credentials allow no cipher suite for a client")
        extensions: list[tuple[int, bytes]] = []
        if _ECDHE in suites:
            extensions += [
                (ExtensionType.SUPPORTED_GROUPS, msg.encode_u16_list([msg.SECP256R1])),
                (ExtensionType.EC_POINT_FORMATS, msg.encode_u8_list([0])),
                (
                    ExtensionType.SIGNATURE_ALGORITHMS,
                    msg.encode_u16_list([msg.ECDSA_SECP256R1_SHA256]),
                ),
            ]
            creds = self.credentials
            if creds.raw_public_key:
                extensions.append(
                    (
                        ExtensionType.CLIENT_CERTIFICATE_TYPE,
                        msg.encode_u8_list([CertificateType.RAW_PUBLIC_KEY]),
                    )
                )
            if creds.trusted_raw_public_keys and creds.verify_peer:
                types = [CertificateType.RAW_PUBLIC_KEY]
                if creds.trusted_cas:
                    types.append(CertificateType.X509)
                extensions.append(
                    (ExtensionType.SERVER_CERTIFICATE_TYPE, msg.encode_u8_list(types))
                )
        if self.config.extended_master_secret:
            extensions.append((ExtensionType.EXTENDED_MASTER_SECRET, b""))
        extensions.append((ExtensionType.RENEGOTIATION_INFO, _EMPTY_RENEGOTIATION_INFO))
        hello = msg.ClientHello(
            DTLS_1_2, self._client_random, b"", cookie, suites, b"\x00", tuple(extensions)
        )
        self._offered = hello
        self._queue_message(HandshakeType.CLIENT_HELLO, hello.encode())

    def _client_message(self, message: HandshakeMessage, now: float, out: Received) -> None:
        state = self.state
        if state is DtlsState.WAIT_SERVER_HELLO:
            self._expect(message, HandshakeType.HELLO_VERIFY_REQUEST, HandshakeType.SERVER_HELLO)
            if message.msg_type == HandshakeType.HELLO_VERIFY_REQUEST:
                self._on_hello_verify_request(message, now, out)
            else:
                self._on_server_hello(message)
        elif state is DtlsState.WAIT_SERVER_HELLO_DONE:
            self._on_server_flight_message(message, now, out)
        elif state is DtlsState.WAIT_SERVER_FINISHED:
            self._expect(message, HandshakeType.FINISHED)
            self._check_finished(message, client=False)
            self._deadline = None
            self._flight = []
            self._move(DtlsInput.FINISHED)
            self._complete(out)

    def _on_hello_verify_request(
        self, message: HandshakeMessage, now: float, out: Received
    ) -> None:
        verify = msg.HelloVerifyRequest.decode(message.body)
        if verify.server_version not in (DTLS_1_0, DTLS_1_2):
            raise _refuse(AlertDescription.PROTOCOL_VERSION, "HelloVerifyRequest: not DTLS")
        self._hello_verifies += 1
        if self._hello_verifies > _MAX_HELLO_VERIFY:
            raise _refuse(AlertDescription.HANDSHAKE_FAILURE, "too many HelloVerifyRequests")
        self._move(DtlsInput.HELLO_VERIFY_REQUEST)
        # The first ClientHello and the HelloVerifyRequest are not hashed (§4.2.6).
        self._transcript = bytearray()
        self._new_flight()
        self._send_client_hello(verify.cookie)
        out.datagrams.extend(self._transmit_flight(now))

    def _on_server_hello(self, message: HandshakeMessage) -> None:
        hello = msg.ServerHello.decode(message.body)
        offered = self._offered
        assert offered is not None
        if hello.server_version != DTLS_1_2:
            raise _refuse(
                AlertDescription.PROTOCOL_VERSION,
                f"the server chose version {hello.server_version:#06x}, not DTLS 1.2",
            )
        if hello.cipher_suite not in offered.cipher_suites:
            raise _refuse(
                AlertDescription.HANDSHAKE_FAILURE,
                f"the server chose cipher suite {hello.cipher_suite:#06x}, which we did not offer",
            )
        if hello.compression_method != 0:
            raise _refuse(AlertDescription.ILLEGAL_PARAMETER, "compression is not allowed")
        offered_types = {t for t, _ in offered.extensions}
        for ext_type, _ in hello.extensions:
            if ext_type not in offered_types:
                raise _refuse(
                    AlertDescription.UNSUPPORTED_EXTENSION,
                    f"the ServerHello has extension {ext_type}, which we did not offer",
                )
        renegotiation = hello.extension(ExtensionType.RENEGOTIATION_INFO)
        if renegotiation is not None and renegotiation != _EMPTY_RENEGOTIATION_INFO:
            raise _refuse(AlertDescription.HANDSHAKE_FAILURE, "renegotiation_info is not empty")
        ems = hello.extension(ExtensionType.EXTENDED_MASTER_SECRET)
        if ems not in (None, b""):
            raise _refuse(AlertDescription.DECODE_ERROR, "extended_master_secret carries data")
        self._ems = ems is not None
        self._suite = hello.cipher_suite
        self._server_random = hello.random
        if self._suite == _ECDHE:
            self._peer_cert_type = self._chosen_type(hello, ExtensionType.SERVER_CERTIFICATE_TYPE)
            self._own_cert_type = self._chosen_type(hello, ExtensionType.CLIENT_CERTIFICATE_TYPE)
        self._transcript += message.raw
        self._move(DtlsInput.SERVER_HELLO)

    def _chosen_type(self, hello: msg.ServerHello, ext_type: int) -> CertificateType:
        data = hello.extension(ext_type)
        if data is None:
            return CertificateType.X509
        if len(data) != 1 or data[0] not in (CertificateType.X509, CertificateType.RAW_PUBLIC_KEY):
            raise _refuse(
                AlertDescription.ILLEGAL_PARAMETER, f"certificate type extension {ext_type}"
            )
        return CertificateType(data[0])

    def _on_server_flight_message(
        self, message: HandshakeMessage, now: float, out: Received
    ) -> None:
        kind = message.msg_type
        if self._suite == _PSK:
            self._expect(
                message, HandshakeType.SERVER_KEY_EXCHANGE, HandshakeType.SERVER_HELLO_DONE
            )
            if kind == HandshakeType.SERVER_KEY_EXCHANGE:
                msg.decode_psk_server_key_exchange(message.body)  # the hint: one key here
                self._transcript += message.raw
                return
        else:
            if self._peer_key is None:
                self._expect(message, HandshakeType.CERTIFICATE)
                self._on_peer_certificate(message.body, server=True)
                self._transcript += message.raw
                return
            if not self._peer_point:
                self._expect(message, HandshakeType.SERVER_KEY_EXCHANGE)
                self._on_ecdhe_server_key_exchange(message.body)
                self._transcript += message.raw
                return
            self._expect(
                message, HandshakeType.CERTIFICATE_REQUEST, HandshakeType.SERVER_HELLO_DONE
            )
            if kind == HandshakeType.CERTIFICATE_REQUEST:
                if self._cert_requested:
                    raise _refuse(
                        AlertDescription.UNEXPECTED_MESSAGE, "a second CertificateRequest"
                    )
                request = msg.CertificateRequest.decode(message.body)
                if msg.ECDSA_SECP256R1_SHA256 not in request.signature_algorithms:
                    raise _refuse(
                        AlertDescription.HANDSHAKE_FAILURE,
                        "the server does not take ECDSA-SHA256 client signatures",
                    )
                self._cert_requested = True
                self._transcript += message.raw
                return
        msg.decode_server_hello_done(message.body)
        self._transcript += message.raw
        self._move(DtlsInput.SERVER_HELLO_DONE)
        self._send_client_key_exchange(now, out)

    def _on_ecdhe_server_key_exchange(self, body: bytes) -> None:
        params, point, rest = ecc.parse_ecdhe_params(body)
        scheme, signature = msg.decode_digitally_signed(rest, "ServerKeyExchange signature")
        if scheme != msg.ECDSA_SECP256R1_SHA256:
            raise _refuse(AlertDescription.ILLEGAL_PARAMETER, f"signature algorithm {scheme:#06x}")
        assert self._peer_key is not None
        signed = ecc.server_key_exchange_signed_data(
            self._client_random, self._server_random, params
        )
        if not ecc.verify(self._peer_key, signed, signature):
            raise _refuse(
                AlertDescription.DECRYPT_ERROR, "the ServerKeyExchange signature is wrong"
            )
        self._peer_point = point

    def _send_client_key_exchange(self, now: float, out: Received) -> None:
        creds = self.credentials
        self._new_flight()
        if self._suite == _PSK:
            assert creds.psk is not None
            assert creds.psk_identity is not None
            self._queue_message(
                HandshakeType.CLIENT_KEY_EXCHANGE,
                msg.encode_psk_client_key_exchange(creds.psk_identity),
            )
            premaster = keys.psk_premaster_secret(creds.psk)
        else:
            if self._cert_requested:
                self._queue_message(HandshakeType.CERTIFICATE, self._own_certificate())
            private, point = ecc.generate_ecdhe()
            self._queue_message(
                HandshakeType.CLIENT_KEY_EXCHANGE, msg.encode_ecdhe_client_key_exchange(point)
            )
            premaster = ecc.ecdhe_shared_secret(private, self._peer_point)
        self._derive_keys(premaster)
        if self._cert_requested and self._sent_certificate:
            assert creds.private_key is not None
            signature = ecc.sign(creds.private_key, bytes(self._transcript))
            self._queue_message(
                HandshakeType.CERTIFICATE_VERIFY,
                msg.encode_digitally_signed(msg.ECDSA_SECP256R1_SHA256, signature),
            )
        self._queue_change_cipher_spec()
        self._records.start_writing(1)
        finished = keys.verify_data(self._master, True, self._hash())
        self._queue_message(HandshakeType.FINISHED, finished, epoch=1)
        out.datagrams.extend(self._transmit_flight(now))

    # Server

    def _server_message(self, message: HandshakeMessage, now: float, out: Received) -> None:
        if self.state is DtlsState.IDLE:
            self._expect(message, HandshakeType.CLIENT_HELLO)
            self._on_client_hello(message, now, out)
            return
        kind = message.msg_type
        can_read = self._records.can_read(1)
        if not can_read:
            wanted = [HandshakeType.CLIENT_KEY_EXCHANGE]
            if self._cert_requested and not self._client_certificate_seen:
                wanted = [HandshakeType.CERTIFICATE]
            self._expect(message, *wanted)
            if kind == HandshakeType.CERTIFICATE:
                self._on_client_certificate(message)
                self._transcript += message.raw
                return
            self._on_client_key_exchange(message)
            return
        if self._peer_key is not None and not self._verified_client:
            self._expect(message, HandshakeType.CERTIFICATE_VERIFY)
            scheme, signature = msg.decode_digitally_signed(message.body, "CertificateVerify")
            if scheme != msg.ECDSA_SECP256R1_SHA256:
                raise _refuse(
                    AlertDescription.ILLEGAL_PARAMETER, f"signature algorithm {scheme:#06x}"
                )
            if not ecc.verify(self._peer_key, bytes(self._transcript), signature):
                raise _refuse(AlertDescription.DECRYPT_ERROR, "the CertificateVerify is wrong")
            self._verified_client = True
            self._transcript += message.raw
            return
        self._expect(message, HandshakeType.FINISHED)
        self._check_finished(message, client=True)
        self._new_flight()
        self._queue_change_cipher_spec()
        self._records.start_writing(1)
        self._queue_message(
            HandshakeType.FINISHED, keys.verify_data(self._master, False, self._hash()), epoch=1
        )
        self._deadline = None  # the last flight goes again only when the client repeats its own
        out.datagrams.extend(self._render_flight())
        self._move(DtlsInput.FINISHED)
        self._complete(out)

    def _choose_suite(self, hello: msg.ClientHello) -> int:
        ours = self.credentials.suites(server=True)
        for suite in hello.cipher_suites:
            if suite not in ours:
                continue
            if suite == _ECDHE and not self._ecdhe_acceptable(hello):
                continue
            return suite
        raise _refuse(AlertDescription.HANDSHAKE_FAILURE, "no cipher suite in common")

    def _ecdhe_acceptable(self, hello: msg.ClientHello) -> bool:
        groups = hello.extension(ExtensionType.SUPPORTED_GROUPS)
        if groups is not None and msg.SECP256R1 not in msg.decode_u16_list(groups):
            return False
        formats = hello.extension(ExtensionType.EC_POINT_FORMATS)
        if formats is not None and 0 not in msg.decode_u8_list(formats):
            return False
        algorithms = hello.extension(ExtensionType.SIGNATURE_ALGORITHMS)
        if algorithms is not None and msg.ECDSA_SECP256R1_SHA256 not in msg.decode_u16_list(
            algorithms
        ):
            return False
        server_types = hello.extension(ExtensionType.SERVER_CERTIFICATE_TYPE)
        own = (
            CertificateType.RAW_PUBLIC_KEY
            if self.credentials.raw_public_key
            else CertificateType.X509
        )
        if server_types is None:
            return own is CertificateType.X509
        return own in msg.decode_u8_list(server_types)

    def _on_client_hello(self, message: HandshakeMessage, now: float, out: Received) -> None:
        hello = msg.ClientHello.decode(message.body)
        self._started = now
        if hello.client_version > DTLS_1_2 or hello.client_version >> 8 != 0xFE:
            # A larger number is an older DTLS (1.0 is 0xFEFF).
            raise _refuse(
                AlertDescription.PROTOCOL_VERSION,
                f"the client offers version {hello.client_version:#06x}, older than DTLS 1.2",
            )
        if 0 not in hello.compression_methods:
            raise _refuse(
                AlertDescription.ILLEGAL_PARAMETER, "the client offers no null compression"
            )
        renegotiation = hello.extension(ExtensionType.RENEGOTIATION_INFO)
        if renegotiation is not None and renegotiation != _EMPTY_RENEGOTIATION_INFO:
            raise _refuse(AlertDescription.HANDSHAKE_FAILURE, "renegotiation_info is not empty")
        secure_renegotiation = (
            renegotiation is not None
            or msg.TLS_EMPTY_RENEGOTIATION_INFO_SCSV in hello.cipher_suites
        )
        ems_offered = hello.extension(ExtensionType.EXTENDED_MASTER_SECRET) is not None
        self._suite = self._choose_suite(hello)
        self._ems = ems_offered and self.config.extended_master_secret
        self._client_random = hello.random
        self._server_random = self._random(32)
        # The server's numbers continue the ClientHello's (RFC 6347 §4.2.1, §4.2.2).
        self._send_seq = message.message_seq
        self._records.set_next_write_sequence(0, self._record_seq)
        self._transcript = bytearray(message.raw)
        extensions: list[tuple[int, bytes]] = []
        creds = self.credentials
        if self._suite == _ECDHE:
            extensions.append((ExtensionType.EC_POINT_FORMATS, msg.encode_u8_list([0])))
            if hello.extension(ExtensionType.SERVER_CERTIFICATE_TYPE) is not None:
                own = (
                    CertificateType.RAW_PUBLIC_KEY if creds.raw_public_key else CertificateType.X509
                )
                self._own_cert_type = own
                extensions.append((ExtensionType.SERVER_CERTIFICATE_TYPE, bytes((own,))))
            self._cert_requested = creds.require_client_auth
            client_types = hello.extension(ExtensionType.CLIENT_CERTIFICATE_TYPE)
            if self._cert_requested and client_types is not None:
                offered = msg.decode_u8_list(client_types)
                if CertificateType.RAW_PUBLIC_KEY in offered and (
                    creds.trusted_raw_public_keys or not creds.verify_peer
                ):
                    self._peer_cert_type = CertificateType.RAW_PUBLIC_KEY
                elif CertificateType.X509 not in offered:
                    raise _refuse(
                        AlertDescription.UNSUPPORTED_CERTIFICATE,
                        "no client certificate type in common",
                    )
                extensions.append(
                    (ExtensionType.CLIENT_CERTIFICATE_TYPE, bytes((self._peer_cert_type,)))
                )
        if self._ems:
            extensions.append((ExtensionType.EXTENDED_MASTER_SECRET, b""))
        if secure_renegotiation:
            extensions.append((ExtensionType.RENEGOTIATION_INFO, _EMPTY_RENEGOTIATION_INFO))
        self._move(DtlsInput.CLIENT_HELLO)
        self._new_flight()
        server_hello = msg.ServerHello(
            DTLS_1_2, self._server_random, b"", self._suite, 0, tuple(extensions)
        )
        self._queue_message(HandshakeType.SERVER_HELLO, server_hello.encode())
        if self._suite == _PSK:
            if creds.psk_hint:
                self._queue_message(
                    HandshakeType.SERVER_KEY_EXCHANGE,
                    msg.encode_psk_server_key_exchange(creds.psk_hint),
                )
        else:
            self._queue_message(HandshakeType.CERTIFICATE, self._own_certificate())
            private, point = ecc.generate_ecdhe()
            self._ecdhe_key = private
            params = ecc.ecdhe_params(point)
            assert creds.private_key is not None
            signature = ecc.sign(
                creds.private_key,
                ecc.server_key_exchange_signed_data(
                    self._client_random, self._server_random, params
                ),
            )
            self._queue_message(
                HandshakeType.SERVER_KEY_EXCHANGE,
                params + msg.encode_digitally_signed(msg.ECDSA_SECP256R1_SHA256, signature),
            )
            if self._cert_requested:
                self._queue_message(
                    HandshakeType.CERTIFICATE_REQUEST, msg.CertificateRequest().encode()
                )
        self._queue_message(HandshakeType.SERVER_HELLO_DONE, b"")
        out.datagrams.extend(self._transmit_flight(now))

    def _on_client_certificate(self, message: HandshakeMessage) -> None:
        self._client_certificate_seen = True
        empty = (
            self._peer_cert_type is CertificateType.X509
            and msg.decode_certificate_list(message.body) == ()
        )
        if empty:
            if self.credentials.verify_peer:
                raise _refuse(AlertDescription.HANDSHAKE_FAILURE, "the client sent no certificate")
            return
        self._on_peer_certificate(message.body, server=False)

    def _on_client_key_exchange(self, message: HandshakeMessage) -> None:
        if self._suite == _PSK:
            identity = msg.decode_psk_client_key_exchange(message.body)
            psk = self.credentials.psk_table.get(identity)
            if psk is None:
                raise _refuse(
                    AlertDescription.UNKNOWN_PSK_IDENTITY, f"unknown PSK identity {identity!r}"
                )
            self._psk_identity = identity
            premaster = keys.psk_premaster_secret(psk)
        else:
            point = msg.decode_ecdhe_client_key_exchange(message.body)
            assert self._ecdhe_key is not None
            premaster = ecc.ecdhe_shared_secret(self._ecdhe_key, point)
        self._transcript += message.raw
        self._derive_keys(premaster)

    # Both roles

    def _own_certificate(self) -> bytes:
        creds = self.credentials
        key = creds.private_key
        if key is None:
            self._sent_certificate = False
            return msg.encode_certificate_list(())
        self._sent_certificate = True
        if self._own_cert_type is CertificateType.RAW_PUBLIC_KEY or creds.raw_public_key:
            return msg.encode_raw_public_key(pki.spki_der(key.public_key()))
        return msg.encode_certificate_list(
            [certificate.public_bytes(Encoding.DER) for certificate in creds.certificate_chain]
        )

    def _on_peer_certificate(self, body: bytes, *, server: bool) -> None:
        creds = self.credentials
        if self._peer_cert_type is CertificateType.RAW_PUBLIC_KEY:
            spki = msg.decode_raw_public_key(body)
            if creds.verify_peer:
                key = pki.peer_public_key_from_rpk(spki, creds.trusted_raw_public_keys)
            else:
                key = pki.public_key_from_spki(spki)
            self._fingerprint = pki.rpk_fingerprint(pki.spki_der(key))
        else:
            chain = msg.decode_certificate_list(body)
            if creds.verify_peer:
                if self._wall_time is None:  # (needs_wall_time: no trusted CA)
                    raise _refuse(AlertDescription.UNKNOWN_CA, "no CA is trusted")
                leaf = pki.validate_chain(
                    chain,
                    creds.trusted_cas,
                    server_name=self.server_name if server else None,
                    now=self._wall_time,
                )
            else:
                leaf = pki.leaf_certificate(chain)
            public = leaf.public_key()
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise _refuse(AlertDescription.UNSUPPORTED_CERTIFICATE, "not an ECDSA key")
            key = public
            self._subject = pki.subject_of(leaf)
        self._peer_key = key

    def _derive_keys(self, premaster: bytes) -> None:
        if self._ems:
            self._master = keys.extended_master_secret(premaster, self._hash())
        else:
            self._master = keys.master_secret(premaster, self._client_random, self._server_random)
        block = keys.key_block(self._master, self._client_random, self._server_random)
        client = Ccm8Cipher(block.client_write_key, block.client_write_iv)
        server = Ccm8Cipher(block.server_write_key, block.server_write_iv)
        mine, theirs = (client, server) if self.role is Role.CLIENT else (server, client)
        self._records.set_write_cipher(1, mine)
        self._records.set_read_cipher(1, theirs)

    def _release_handshake(self) -> None:
        """Established: drop what only the handshake needed (a server keeps one session
        per peer). The last flight stays, to answer a peer that repeats its own."""
        self._transcript = bytearray()
        self._reassembler = msg.Reassembler(
            self._reassembler.next_seq, max_message_size=self.config.max_message_size
        )
        self._offered = None
        self._peer_key = None
        self._ecdhe_key = None
        self._peer_point = b""
        self._master = b""
        self._client_random = self._server_random = b""
        self._early = []

    def _check_finished(self, message: HandshakeMessage, *, client: bool) -> None:
        received = msg.decode_finished(message.body)
        expected = keys.verify_data(self._master, client, self._hash())
        if not hmac.compare_digest(received, expected):
            raise _refuse(
                AlertDescription.DECRYPT_ERROR,
                "the peer's Finished does not match: our keys or transcripts differ"
                " (a wrong pre-shared key?)",
            )
        self._transcript += message.raw

    def _complete(self, out: Received) -> None:
        self._release_handshake()
        self.peer = HandshakeComplete(
            cipher_suite=self._suite,
            extended_master_secret=self._ems,
            psk_identity=(
                self._psk_identity
                if self.role is Role.SERVER
                else (self.credentials.psk_identity if self._suite == _PSK else None)
            ),
            certificate_subject=self._subject,
            rpk_fingerprint=self._fingerprint,
        )
        out.events.append(self.peer)
