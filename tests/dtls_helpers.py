"""Shared pieces of the DTLS engine tests: credentials and a loop joining two sessions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coap_trio.protocol.dtls.cookie import Accept, CookieVerifier, SendHelloVerifyRequest
from coap_trio.protocol.dtls.credentials import DtlsCredentials
from coap_trio.protocol.dtls.pki import spki_der
from coap_trio.protocol.dtls.session import DtlsEvent, DtlsSession, Received, Role

IDENTITY, KEY = b"Client_identity", b"secretPSK"


def psk_client(**kwargs: object) -> DtlsSession:
    creds = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)
    return DtlsSession(Role.CLIENT, creds, **kwargs)  # type: ignore[arg-type]


def psk_server(table: dict[bytes, bytes] | None = None, **kwargs: object) -> DtlsSession:
    creds = DtlsCredentials(psk_table=table or {IDENTITY: KEY}, psk_hint=b"CoAP")
    return DtlsSession(Role.SERVER, creds, **kwargs)  # type: ignore[arg-type]


class Pki:
    """A trustme CA (P-256) with a server and a client certificate."""

    def __init__(self) -> None:
        self.ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        self.server = self.ca.issue_cert("localhost", "::1", "127.0.0.1")
        self.client = self.ca.issue_cert("client.example")
        self.ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())

    @staticmethod
    def chain(leaf: trustme.LeafCert) -> tuple[x509.Certificate, ...]:
        return tuple(x509.load_pem_x509_certificate(p.bytes()) for p in leaf.cert_chain_pems)

    @staticmethod
    def key(leaf: trustme.LeafCert) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def credentials(self, leaf: trustme.LeafCert, **kwargs: object) -> DtlsCredentials:
        return DtlsCredentials(
            certificate_chain=self.chain(leaf),
            private_key=self.key(leaf),
            trusted_cas=(self.ca_cert,),
            **kwargs,  # type: ignore[arg-type]
        )


def rpk_credentials(
    key: ec.EllipticCurvePrivateKey, *trusted: ec.EllipticCurvePrivateKey, **kwargs: object
) -> DtlsCredentials:
    return DtlsCredentials(
        private_key=key,
        raw_public_key=True,
        trusted_raw_public_keys=frozenset(spki_der(k.public_key()) for k in trusted),
        **kwargs,  # type: ignore[arg-type]
    )


Filter = Callable[[str, int, bytes], bool]


class Link:
    """A client and a server session joined through a CookieVerifier, with a clock.

    ``drop(direction, index, datagram)`` decides losses ("c2s" / "s2c", counting
    datagrams per direction from 0).
    """

    def __init__(
        self,
        client: DtlsSession,
        server: DtlsSession,
        *,
        drop: Filter | None = None,
        cookies: bool = True,
    ) -> None:
        self.client, self.server = client, server
        self.verifier = CookieVerifier() if cookies else None
        self.accepted = not cookies
        self.now = 0.0
        #: The wall-clock time certificates are checked at.
        self.wall_time = datetime.now(UTC)
        self.drop = drop or (lambda direction, index, datagram: False)
        self.counts = {"c2s": 0, "s2c": 0}
        self.client_events: list[DtlsEvent] = []
        self.server_events: list[DtlsEvent] = []
        self.client_data: list[bytes] = []
        self.server_data: list[bytes] = []
        self.wire: list[tuple[str, bytes]] = []

    def _lost(self, direction: str, datagram: bytes) -> bool:
        index = self.counts[direction]
        self.counts[direction] += 1
        self.wire.append((direction, datagram))
        return self.drop(direction, index, datagram)

    def to_server(self, datagrams: list[bytes]) -> list[bytes]:
        replies: list[bytes] = []
        for datagram in datagrams:
            if self._lost("c2s", datagram):
                continue
            if not self.accepted:
                assert self.verifier is not None
                decision = self.verifier.check(datagram, ("::1", 40000), self.now)
                if isinstance(decision, SendHelloVerifyRequest):
                    replies.append(decision.datagram)
                    continue
                if not isinstance(decision, Accept):
                    continue
                self.accepted = True
            replies.extend(
                self._take(self.server.receive(datagram, self.now, self.wall_time), server=True)
            )
        return replies

    def to_client(self, datagrams: list[bytes]) -> list[bytes]:
        replies: list[bytes] = []
        for datagram in datagrams:
            if self._lost("s2c", datagram):
                continue
            replies.extend(
                self._take(self.client.receive(datagram, self.now, self.wall_time), server=False)
            )
        return replies

    def _take(self, received: Received, *, server: bool) -> list[bytes]:
        (self.server_events if server else self.client_events).extend(received.events)
        (self.server_data if server else self.client_data).extend(received.data)
        return received.datagrams

    def run(self, first: list[bytes], *, until: float = 120.0) -> None:
        """Exchange datagrams (and fire timers) until nothing moves or ``until``."""
        to_server, to_client = first, []
        while self.now <= until:
            while to_server or to_client:
                to_client += self.to_server(to_server)
                to_server = self.to_client(to_client)
                to_client = []
            deadlines = [
                d
                for d in (self.client.next_deadline(), self.server.next_deadline())
                if d is not None
            ]
            if not deadlines:
                return
            self.now = max(self.now, min(deadlines))
            received = self.client.timeout(self.now)
            to_server = self._take(received, server=False)
            to_client = self._take(self.server.timeout(self.now), server=True)

    def handshake(self) -> None:
        self.run(self.client.start(self.now))
