"""EDHOC (RFC 9528) to establish OSCORE security contexts, on lakers (RFC 9668).

Owns the EDHOC credentials of one side (:class:`EdhocCredentials`: a P-256
private key, its CWT Claims Set credential, the peers' credentials
trusted), the initiator's run (:class:`EdhocInitiator`: message_1 for
``/.well-known/edhoc``, message_2 checked, message_3 alone or for the EDHOC
+ OSCORE request), the responder's exchanges in progress
(:class:`EdhocResponders`: bounded in number and expiring, since message_1
allocates state before its sender proved anything), and the OSCORE context
both derive (RFC 9528 Appendix A.1: Master Secret and Salt from the
EDHOC_Exporter, the Sender ID the peer's connection identifier).

The cryptography and the EDHOC state machines are lakers' (lakers-python,
the ``oscore`` extra): cipher suite 2 (AES-CCM-16-64-128, SHA-256, P-256,
ES256), method 3 (static Diffie-Hellman keys on both sides), credentials
as CWT Claims Sets (CCS), sent by reference (their 'kid') or by value.
Failures raise :class:`~coap_trio.errors.EdhocError` (the caller answers
or ends the exchange). Must not know about transports, tasks or files;
time is passed in.
"""

from __future__ import annotations

import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import attrs
import cbor2
import lakers
from cryptography.hazmat.primitives.asymmetric import ec

from ...errors import EdhocError
from .algorithms import AES_CCM_16_64_128
from .context import SecurityContext

__all__ = [
    "CBOR_TRUE",
    "EdhocCredentials",
    "EdhocInitiator",
    "EdhocResponders",
    "ccs_credential",
    "oscore_context",
    "split_message_3",
]

#: The prefix of a message_1 in a request to ``/.well-known/edhoc`` (RFC 9528 §A.2).
CBOR_TRUE = b"\xf5"
#: The cipher suite and method supported (lakers' own).
SUITE = 2
METHOD = 3
#: The Master Salt length (RFC 9528 Appendix A.1: 8 bytes unless agreed otherwise).
SALT_LENGTH = 8
#: The EAD label asking the peer for its credential by value
#: (draft-ietf-ace-edhoc-oscore-profile; aiocoap sends it, non-critical, in message_1).
EAD_CRED_BY_VALUE = 15


def ccs_credential(private_key: bytes, kid: bytes, subject: str = "") -> bytes:
    """The CCS (CWT Claims Set, RFC 8392) of the P-256 key ``private_key``, CBOR-encoded.

    ``{2: subject, 8: {1: COSE_Key}}`` with the COSE_Key ``{1: 2 (EC2), 2:
    kid, -1: 1 (P-256), -2: x, -3: y}``, in deterministic encoding, as
    RFC 9529 and aiocoap write them.
    """
    key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    cose_key = {
        1: 2,
        2: kid,
        -1: 1,
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }
    return cbor2.dumps({2: subject, 8: {1: cose_key}}, canonical=True)


def _kid_of(credential: bytes) -> bytes | None:
    try:
        claims = cbor2.loads(credential)
        kid = claims[8][1].get(2)
    except (ValueError, KeyError, TypeError, AttributeError, cbor2.CBORDecodeError):
        return None
    return kid if isinstance(kid, bytes) else None


@attrs.frozen(repr=False)
class EdhocCredentials:
    """What one side uses in EDHOC: its key and credential, and whom it trusts."""

    #: Our P-256 private key (32 bytes).
    private_key: bytes
    #: Our credential: a CCS with the key's public part (see :func:`ccs_credential`).
    credential: bytes
    #: The peers' credentials accepted (CCSs).
    peers: tuple[bytes, ...] = ()
    #: Whether our credential is sent by value (else by reference: its 'kid').
    by_value: bool = False
    #: Client: whether message_3 travels in the first OSCORE request (the
    #: EDHOC + OSCORE request, RFC 9668 §3) rather than in its own exchange.
    combined: bool = True
    #: Whether a peer that sends a credential by value that is not among
    #: :attr:`peers` is accepted all the same (no authentication: trust on
    #: first use). None: when :attr:`peers` is empty.
    trust_on_first_use: bool | None = None

    @property
    def accepts_any(self) -> bool:
        """Whether any credential sent by value is accepted (see :attr:`trust_on_first_use`)."""
        if self.trust_on_first_use is None:
            return not self.peers
        return self.trust_on_first_use

    @classmethod
    def generate(
        cls, kid: bytes, subject: str = "", *, peers: tuple[bytes, ...] = (), **options: Any
    ) -> EdhocCredentials:
        """A new P-256 key and its CCS with ``kid`` (``options``: the other fields)."""
        key = ec.generate_private_key(ec.SECP256R1())
        private = key.private_numbers().private_value.to_bytes(32, "big")
        return cls(private, ccs_credential(private, kid, subject), peers, **options)

    @property
    def transfer(self) -> Any:
        """lakers' CredentialTransfer for our credential."""
        kinds = lakers.CredentialTransfer
        return kinds.ByValue if self.by_value else kinds.ByReference

    def peer_credential(self, id_cred: bytes) -> bytes:
        """The trusted credential the peer's ID_CRED names (by value or by 'kid').

        Raises :class:`~coap_trio.errors.EdhocError` when none is trusted.
        """
        try:
            identified = cbor2.loads(id_cred)
        except (ValueError, cbor2.CBORDecodeError):
            raise EdhocError("ID_CRED that is not CBOR") from None
        if not isinstance(identified, dict):
            raise EdhocError("ID_CRED that is not a map")
        sent = identified.get(14)  # kccs: the credential by value
        if sent is not None:
            value = cbor2.dumps(sent, canonical=True)
            for peer in self.peers:
                if hmac.compare_digest(peer, value):
                    return peer
            if self.accepts_any:
                return value  # trust on first use
            raise EdhocError("the peer's credential is not trusted")
        kid = identified.get(4)
        if isinstance(kid, int) and not isinstance(kid, bool):
            kid = cbor2.dumps(kid)  # a 'kid' of one byte may be sent as an integer
        if isinstance(kid, bytes):
            for peer in self.peers:
                if _kid_of(peer) == kid:
                    return peer
        raise EdhocError("no trusted credential for the peer's ID_CRED")

    def __repr__(self) -> str:
        return f"<EdhocCredentials kid={(_kid_of(self.credential) or b'').hex()}>"


def _ead_checked(items: Any) -> None:
    if items and any(item.is_critical() for item in items):
        raise EdhocError("a critical EAD item that is not supported")


def oscore_context(edhoc: Any, c_ours: bytes, c_theirs: bytes) -> SecurityContext:
    """The OSCORE security context of a completed EDHOC exchange (RFC 9528 Appendix A.1).

    Master Secret = EDHOC_Exporter(0, h'', 16), Master Salt =
    EDHOC_Exporter(1, h'', 8); our Sender ID is the peer's connection
    identifier, our Recipient ID our own; AES-CCM-16-64-128 (the application
    AEAD of suite 2); no ID Context.
    """
    if c_ours == c_theirs:
        raise EdhocError("both connection identifiers are the same")
    algorithm = AES_CCM_16_64_128
    secret = bytes(edhoc.edhoc_exporter(0, [], algorithm.key_length))
    salt = bytes(edhoc.edhoc_exporter(1, [], SALT_LENGTH))
    return SecurityContext.derive(
        master_secret=secret,
        master_salt=salt,
        sender_id=c_theirs,
        recipient_id=c_ours,
        algorithm=algorithm,
    )


def _lakers_call(what: str, function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except EdhocError:
        raise
    except Exception as error:  # lakers raises ValueError / its own errors
        raise EdhocError(f"{what}: {error}") from None


def encode_connection_id(c: bytes) -> bytes:
    """A connection identifier as a CBOR data item (RFC 9528 §3.3.2): a one-byte
    integer encoding stays as it is, anything else is a byte string."""
    if len(c) == 1 and (c[0] < 0x18 or 0x20 <= c[0] < 0x38):
        return c
    return cbor2.dumps(c)


class EdhocInitiator:
    """One EDHOC exchange started by a client (RFC 9528 §5, RFC 9668).

    ``message_1()`` gives the payload of the POST to ``/.well-known/edhoc``;
    its 2.04's payload goes to ``take_message_2``; then either
    ``message_3_request()`` (its own POST, answered with message_4 for
    ``take_message_4``) or ``message_3()`` for the EDHOC + OSCORE request;
    :attr:`context` is the OSCORE context.
    """

    def __init__(self, credentials: EdhocCredentials, c_i: bytes) -> None:
        self.credentials = credentials
        #: Our connection identifier (the OSCORE Recipient ID).
        self.c_i = c_i
        #: The responder's (the OSCORE Sender ID), once message_2 arrived.
        self.c_r: bytes | None = None
        #: The OSCORE security context, once message_2 verified.
        self.context: SecurityContext | None = None
        #: The peer's credential that message_2 was verified with.
        self.peer: bytes | None = None
        self._message_3: bytes | None = None
        self._lakers = lakers.EdhocInitiator()

    def message_1(self) -> bytes:
        """The payload of the request to ``/.well-known/edhoc``: ``true`` and message_1."""
        # Ready to take an unknown credential by value: ask for it (non-critical).
        ead = [lakers.EADItem(EAD_CRED_BY_VALUE, False)] if self.credentials.accepts_any else []
        message = _lakers_call("message_1", self._lakers.prepare_message_1, self.c_i, ead)
        return CBOR_TRUE + bytes(message)

    def take_message_2(self, payload: bytes) -> None:
        """Verify message_2 and prepare message_3; the OSCORE context is then known."""
        c_r, id_cred_r, ead_2 = _lakers_call("message_2", self._lakers.parse_message_2, payload)
        _ead_checked(ead_2)
        peer = self.credentials.peer_credential(bytes(id_cred_r))
        expected = _lakers_call(
            "credential", lakers.credential_check_or_fetch, id_cred_r, lakers.Credential(peer)
        )
        own = lakers.Credential(self.credentials.credential)
        _lakers_call(
            "message_2",
            self._lakers.verify_message_2,
            self.credentials.private_key,
            own,
            expected,
        )
        message_3, _ = _lakers_call(
            "message_3", self._lakers.prepare_message_3, self.credentials.transfer, None
        )
        self.c_r = bytes(c_r)
        self.peer = peer
        self._message_3 = bytes(message_3)

    def message_3(self) -> bytes:
        """message_3 for the EDHOC + OSCORE request (RFC 9668 §3.2), the exchange
        ending without message_4; the OSCORE context is ready."""
        assert self._message_3 is not None, "message_2 first"
        assert self.c_r is not None
        _lakers_call("completion", self._lakers.completed_without_message_4)
        self.context = oscore_context(self._lakers, self.c_i, self.c_r)
        return self._message_3

    def message_3_request(self) -> bytes:
        """The payload of message_3's own request: C_R, then message_3 (RFC 9528 §A.2)."""
        assert self._message_3 is not None, "message_2 first"
        assert self.c_r is not None
        return encode_connection_id(self.c_r) + self._message_3

    def take_message_4(self, payload: bytes) -> None:
        """Verify message_4; the OSCORE context is ready."""
        assert self.c_r is not None, "message_2 first"
        ead_4 = _lakers_call("message_4", self._lakers.process_message_4, payload)
        _ead_checked(ead_4)
        self.context = oscore_context(self._lakers, self.c_i, self.c_r)


class _Pending:
    __slots__ = ("c_i", "credentials", "deadline", "responder")

    def __init__(
        self, responder: Any, c_i: bytes, deadline: float, credentials: EdhocCredentials
    ) -> None:
        self.responder = responder
        self.c_i = c_i
        self.deadline = deadline
        self.credentials = credentials


@attrs.frozen
class EdhocEstablished:
    """An EDHOC exchange a responder completed."""

    #: The OSCORE security context derived.
    context: SecurityContext
    #: The peer's credential (CCS) that message_3 was verified with.
    peer: bytes
    #: message_4, for a message_3 received in its own request.
    message_4: bytes


class EdhocResponders:
    """The responder side of a server: its exchanges between message_1 and message_3.

    A message_1 costs state before its sender proved anything, so that
    state is bounded: at most ``max_pending`` exchanges wait for their
    message_3, each at most ``lifetime`` seconds; when all are taken, the
    oldest is dropped (counted in :attr:`evicted`). Connection identifiers
    are one-byte CBOR integers (-24..23) not in use by the caller's contexts
    nor by a pending exchange.

    ``identities``: our credentials by URI pattern (``*`` any text), when
    the server has more than ``credentials`` (see :meth:`identity_for`).
    """

    def __init__(
        self,
        credentials: EdhocCredentials,
        *,
        max_pending: int = 64,
        lifetime: float = 60.0,
        identities: Mapping[str, EdhocCredentials] | None = None,
    ) -> None:
        self.credentials = credentials
        self.identities = dict(identities or {})
        self.max_pending = max_pending
        self.lifetime = lifetime
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()
        #: Exchanges dropped before their message_3 (expired or evicted).
        self.evicted = 0
        #: Exchanges completed, and refused (any EDHOC failure).
        self.completed = 0
        self.failed = 0

    def __len__(self) -> int:
        return len(self._pending)

    def identity_for(self, uri: str | None) -> EdhocCredentials | None:
        """Our credentials for a message_1 sent to ``uri`` (``.../.well-known/edhoc``).

        Without :attr:`identities`, :attr:`credentials`. Else the identity of
        the longest pattern matching the URI's origin followed by ``/*`` or the
        URI itself (aiocoap's files name a server's identity ``coap://host/*``);
        none matching: the only identity there is, or None.
        """
        identities = self.identities
        if not identities:
            return self.credentials
        if uri is not None:
            matching = [
                pattern
                for pattern in identities
                if re.fullmatch(re.escape(pattern).replace("\\*", ".*"), uri)
            ]
            if matching:
                return identities[max(matching, key=len)]
        if len(identities) == 1:
            return next(iter(identities.values()))
        return None

    def _sweep(self, now: float) -> None:
        pending = self._pending
        while pending:
            first = next(iter(pending.values()))
            if first.deadline > now:
                break
            pending.popitem(last=False)
            self.evicted += 1

    def message_1(
        self,
        message_1: bytes,
        now: float,
        in_use: set[bytes],
        credentials: EdhocCredentials | None = None,
    ) -> bytes:
        """message_2 for ``message_1`` (without the ``true`` prefix).

        ``in_use``: the Recipient IDs of the caller's security contexts, which
        our C_R must not take; ``credentials``: ours for this exchange (default:
        :attr:`credentials`). Our credential goes by value when message_1 asks
        for it (EAD item 15). Raises :class:`~coap_trio.errors.EdhocError`.
        """
        self._sweep(now)
        ours = credentials if credentials is not None else self.credentials
        try:
            responder = lakers.EdhocResponder(ours.private_key, ours.credential)
            c_i, ead_1 = _lakers_call("message_1", responder.process_message_1, message_1)
            _ead_checked(ead_1)
            transfer = ours.transfer
            if ead_1 and any(item.label() == EAD_CRED_BY_VALUE for item in ead_1):
                transfer = lakers.CredentialTransfer.ByValue
            c_i = bytes(c_i)
            taken = in_use | set(self._pending) | {c_i}
            c_r = next((c for c in _CANDIDATES if c not in taken), None)
            if c_r is None:
                raise EdhocError("no connection identifier left")
            message_2 = _lakers_call("message_2", responder.prepare_message_2, transfer, c_r, None)
        except EdhocError:
            self.failed += 1
            raise
        if len(self._pending) >= self.max_pending:
            self._pending.popitem(last=False)
            self.evicted += 1
        self._pending[c_r] = _Pending(responder, c_i, now + self.lifetime, ours)
        return bytes(message_2)

    def message_3(self, c_r: bytes, message_3: bytes, now: float) -> EdhocEstablished:
        """Complete the exchange whose C_R is ``c_r`` with ``message_3``.

        Raises :class:`~coap_trio.errors.EdhocError` (the exchange is then
        forgotten: a message_3 is not tried twice).
        """
        self._sweep(now)
        pending = self._pending.pop(c_r, None)
        if pending is None:
            self.failed += 1
            raise EdhocError("no EDHOC exchange in progress for this C_R")
        responder = pending.responder
        try:
            id_cred_i, ead_3 = _lakers_call("message_3", responder.parse_message_3, message_3)
            _ead_checked(ead_3)
            peer = pending.credentials.peer_credential(bytes(id_cred_i))
            expected = _lakers_call(
                "credential",
                lakers.credential_check_or_fetch,
                id_cred_i,
                lakers.Credential(peer),
            )
            _lakers_call("message_3", responder.verify_message_3, expected)
            message_4 = _lakers_call("message_4", responder.prepare_message_4, None)
            context = oscore_context(responder, c_r, pending.c_i)
        except EdhocError:
            self.failed += 1
            raise
        self.completed += 1
        return EdhocEstablished(context, peer, bytes(message_4))

    def is_pending(self, c_r: bytes) -> bool:
        """Whether an exchange with this C_R waits for its message_3."""
        return c_r in self._pending


#: C_R candidates: the one-byte CBOR integers 0..23, then -1..-24.
_CANDIDATES = [bytes([n]) for n in range(24)] + [bytes([0x20 + n]) for n in range(24)]


def split_message_3(payload: bytes) -> tuple[bytes, bytes]:
    """The EDHOC + OSCORE request's payload cut into message_3 (a CBOR byte
    string) and the OSCORE ciphertext (RFC 9668 §3.2.1).

    Raises :class:`~coap_trio.errors.EdhocError` when it does not start
    with a complete byte string, or nothing follows it.
    """
    if not payload or payload[0] >> 5 != 2:
        raise EdhocError("the EDHOC + OSCORE request does not start with message_3")
    info = payload[0] & 0x1F
    if info < 24:
        start, length = 1, info
    elif info in (24, 25, 26):
        size = 1 << (info - 24)
        start = 1 + size
        if len(payload) < start:
            raise EdhocError("a truncated message_3")
        length = int.from_bytes(payload[1:start], "big")
    else:
        raise EdhocError("message_3 of an unsupported length")
    end = start + length
    if end >= len(payload):
        raise EdhocError("no OSCORE ciphertext after message_3")
    return payload[:end], payload[end:]
