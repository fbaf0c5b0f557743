"""The stateless cookie exchange of a DTLS server (RFC 6347 §4.2.1).

Owns deciding, for a datagram from an address that has no session yet,
whether to drop it, to answer it with a HelloVerifyRequest, or to start a
session: nothing is allocated for a peer before it has echoed a cookie,
which proves it receives datagrams at the address it claims.

cookie = HMAC-SHA256(secret, client address || ClientHello parameters),
truncated to ``cookie_size`` bytes, where the parameters are the hello's
fields before its extensions, without the cookie (``ClientHello.parameters``).
The secret is replaced every ``secret_lifetime`` seconds (time passed in);
cookies made with the current and the previous secret are accepted.

Must not know about sessions or sockets: addresses are opaque (bytes, or
anything with a stable ``repr``, such as ``(host, port)``).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from ...errors import DtlsDecodeError
from .messages import (
    ClientHello,
    HandshakeType,
    HelloVerifyRequest,
    encode_handshake,
    parse_handshake_fragments,
)
from .record import DTLS_1_0, ContentType, encode_record, iter_records

__all__ = [
    "Accept",
    "CookieDecision",
    "CookieVerifier",
    "Drop",
    "SendHelloVerifyRequest",
]


@attrs.frozen
class Drop:
    """Ignore the datagram: not a ClientHello that can start a session."""

    #: Why, for counters and logs.
    reason: str


@attrs.frozen
class SendHelloVerifyRequest:
    """Send ``datagram`` (a HelloVerifyRequest) back to the sender; keep nothing."""

    datagram: bytes


@attrs.frozen
class Accept:
    """The ClientHello carries a valid cookie: start a server session and give it the datagram."""

    hello: ClientHello


#: What :meth:`CookieVerifier.check` decides.
CookieDecision = Drop | SendHelloVerifyRequest | Accept


def _address_bytes(address: object) -> bytes:
    if isinstance(address, bytes):
        return address
    return repr(address).encode()


class CookieVerifier:
    """A server's cookie secret and the stateless check of incoming ClientHellos."""

    def __init__(
        self,
        *,
        secret_lifetime: float = 300.0,
        cookie_size: int = 16,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not 8 <= cookie_size <= 32:
            raise ValueError("cookie_size must be 8 to 32 bytes")
        self.secret_lifetime = secret_lifetime
        self.cookie_size = cookie_size
        self._random = random_bytes
        self._current = random_bytes(32)
        self._previous: bytes | None = None
        self._rotated_at: float | None = None

    def _rotate(self, now: float) -> None:
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self.secret_lifetime:
            # Two lifetimes without traffic: the previous secret is too old as well.
            stale = now - self._rotated_at >= 2 * self.secret_lifetime
            self._previous = None if stale else self._current
            self._current = self._random(32)
            self._rotated_at = now

    def _cookie(self, secret: bytes, address: object, hello: ClientHello) -> bytes:
        mac = crypto_hmac.HMAC(secret, hashes.SHA256())
        mac.update(_address_bytes(address))
        mac.update(hello.parameters())
        return mac.finalize()[: self.cookie_size]

    def cookie_for(self, address: object, hello: ClientHello, now: float) -> bytes:
        """The cookie a HelloVerifyRequest to ``address`` carries for ``hello``."""
        self._rotate(now)
        return self._cookie(self._current, address, hello)

    def is_valid(self, address: object, hello: ClientHello, now: float) -> bool:
        """True when ``hello`` echoes a cookie made for ``address`` with a live secret."""
        self._rotate(now)
        if len(hello.cookie) != self.cookie_size:
            return False
        for secret in (self._current, self._previous):
            if secret is not None and hmac.compare_digest(
                hello.cookie, self._cookie(secret, address, hello)
            ):
                return True
        return False

    def check(self, datagram: bytes, address: object, now: float) -> CookieDecision:
        """Decide about a datagram from an address without a session.

        Only a datagram whose first record is an epoch-0 handshake record
        holding a whole ClientHello can get an answer; anything else is
        dropped. The HelloVerifyRequest reuses the ClientHello's record
        sequence number and message_seq (RFC 6347 §4.2.1, §4.2.2).
        """
        try:
            record = next(iter_records(datagram), None)
            if record is None:
                return Drop("empty datagram")
            if record.content_type != ContentType.HANDSHAKE or record.epoch != 0:
                return Drop("not an epoch-0 handshake record")
            fragment = parse_handshake_fragments(record.fragment)[0]
            if fragment.msg_type != HandshakeType.CLIENT_HELLO:
                return Drop("not a ClientHello")
            if fragment.fragment_offset or len(fragment.fragment) != fragment.length:
                return Drop("fragmented ClientHello")
            hello = ClientHello.decode(fragment.fragment)
        except (DtlsDecodeError, IndexError):
            return Drop("malformed ClientHello")
        if self.is_valid(address, hello, now):
            return Accept(hello)
        verify = HelloVerifyRequest(DTLS_1_0, self.cookie_for(address, hello, now))
        message = encode_handshake(
            HandshakeType.HELLO_VERIFY_REQUEST, fragment.message_seq, verify.encode()
        )
        return SendHelloVerifyRequest(
            encode_record(ContentType.HANDSHAKE, 0, record.sequence, message, version=DTLS_1_0)
        )
