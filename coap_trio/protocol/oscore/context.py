"""The OSCORE security context (RFC 8613 §3): derivation, nonces, sequence numbers.

Owns the three parts of a security context: the Common Context (AEAD
algorithm, HKDF-SHA256, Master Secret, Master Salt, ID Context, Common IV),
the Sender Context (Sender ID, Sender Key, Sender Sequence Number) and the
Recipient Context (Recipient ID, Recipient Key, replay window); the
derivation of keys and Common IV (§3.2.1) and the AEAD nonce (§5.2).

Must not know about messages or options (that is
:mod:`~coap_trio.protocol.oscore.protect`), files or time. Key material never
appears in a repr.
"""

from __future__ import annotations

import secrets

import cbor2
from cryptography.exceptions import InvalidTag

from .algorithms import AES_CCM_16_64_128, Aead, AeadCipher, hkdf_sha256
from .replay import (
    DEFAULT_PERSIST_STEP,
    DEFAULT_WINDOW_SIZE,
    ReplayWindow,
    SenderSequence,
    SequenceStore,
)

__all__ = ["ECHO_LENGTH", "SecurityContext", "derivation_info", "derive_parameter", "partial_iv"]

#: Bytes of an Echo value the server asks a client to repeat (RFC 9175 §2.2).
ECHO_LENGTH = 8


def derivation_info(
    identifier: bytes, id_context: bytes | None, algorithm: Aead, kind: str, length: int
) -> bytes:
    """The HKDF ``info`` of §3.2.1: CBOR ``[id, id_context / nil, alg_aead, type, L]``."""
    return cbor2.dumps([identifier, id_context, algorithm.cose_id, kind, length])


def derive_parameter(
    master_secret: bytes,
    master_salt: bytes,
    identifier: bytes,
    id_context: bytes | None,
    algorithm: Aead,
    kind: str,
) -> bytes:
    """A Sender Key, Recipient Key (``kind`` "Key") or the Common IV ("IV", empty id) (§3.2.1)."""
    if kind == "Key":
        length = algorithm.key_length
    elif kind == "IV":
        length = algorithm.nonce_length
    else:
        raise ValueError(f"derivation type {kind!r} is neither 'Key' nor 'IV'")
    info = derivation_info(identifier, id_context, algorithm, kind, length)
    return hkdf_sha256(master_salt, master_secret, info, length)


def partial_iv(number: int) -> bytes:
    """The Partial IV for sequence number ``number``: big-endian, no leading zero bytes (§5)."""
    return number.to_bytes(max(1, (number.bit_length() + 7) >> 3), "big")


class SecurityContext:
    """One OSCORE security context between this endpoint and one peer (§3.1).

    Build it with :meth:`derive`. The same context serves both roles (§3.1):
    requests and responses it sends are protected with the Sender Context,
    those it receives verified with the Recipient Context. Everything but
    the Sender Sequence Number and the replay window is immutable.
    """

    __slots__ = (
        "_common_iv",
        "_recipient_aead",
        "_recipient_key",
        "_recipient_nonce_base",
        "_sender_aead",
        "_sender_key",
        "_sender_nonce_base",
        "algorithm",
        "echo_value",
        "id_context",
        "recipient_id",
        "replay_window",
        "sender_id",
        "sequence",
    )

    #: The AEAD algorithm of the Common Context.
    algorithm: Aead
    #: The ID Context, or None when there is none (§3.1, §5.1).
    id_context: bytes | None
    #: This endpoint's Sender ID (the 'kid' of what it sends).
    sender_id: bytes
    #: The peer's Sender ID, our Recipient ID.
    recipient_id: bytes
    #: The Sender Sequence Number, with its persistence.
    sequence: SenderSequence
    #: The replay window of the Recipient Context (§7.4).
    replay_window: ReplayWindow
    #: The Echo value requests must repeat while the replay window is unknown
    #: (Appendix B.1.2); random, drawn when the context is made.
    echo_value: bytes

    def __init__(
        self,
        *,
        algorithm: Aead,
        id_context: bytes | None,
        sender_id: bytes,
        recipient_id: bytes,
        sender_key: bytes,
        recipient_key: bytes,
        common_iv: bytes,
        sequence: SenderSequence,
        replay_window: ReplayWindow,
        echo_value: bytes | None = None,
    ) -> None:
        for name, identifier in (("Sender", sender_id), ("Recipient", recipient_id)):
            if len(identifier) > algorithm.max_id_length:
                raise ValueError(
                    f"{name} ID of {len(identifier)} bytes is longer than {algorithm.name}"
                    f" allows ({algorithm.max_id_length}, RFC 8613 §3.3)"
                )
        if len(common_iv) != algorithm.nonce_length:
            raise ValueError(f"Common IV of {len(common_iv)} bytes for {algorithm.name}")
        self.algorithm = algorithm
        self.id_context = None if id_context is None else bytes(id_context)
        self.sender_id = bytes(sender_id)
        self.recipient_id = bytes(recipient_id)
        self._sender_key = bytes(sender_key)
        self._recipient_key = bytes(recipient_key)
        self._common_iv = bytes(common_iv)
        # (the cryptography AEAD objects themselves: seal() and open() below)
        self._sender_aead = algorithm.cipher(self._sender_key).aead
        self._recipient_aead = algorithm.cipher(self._recipient_key).aead
        self.sequence = sequence
        self.replay_window = replay_window
        self.echo_value = secrets.token_bytes(ECHO_LENGTH) if echo_value is None else echo_value
        # The nonces of our Sender ID and of our Recipient ID differ only in the
        # Partial IV XORed into their last 5 bytes: each one's nonce for Partial IV
        # 0 is kept as a number, and the Partial IV XORed into it (see nonce()).
        self._sender_nonce_base = int.from_bytes(self._nonce_block(self.sender_id, b"\0"), "big")
        self._recipient_nonce_base = int.from_bytes(
            self._nonce_block(self.recipient_id, b"\0"), "big"
        )

    @classmethod
    def derive(
        cls,
        *,
        master_secret: bytes,
        sender_id: bytes,
        recipient_id: bytes,
        master_salt: bytes = b"",
        id_context: bytes | None = None,
        algorithm: Aead = AES_CCM_16_64_128,
        replay_window_size: int = DEFAULT_WINDOW_SIZE,
        sequence_store: SequenceStore | None = None,
        persist_step: int = DEFAULT_PERSIST_STEP,
        sender_sequence_number: int = 0,
    ) -> SecurityContext:
        """Derive a context from its input parameters (§3.2).

        Sender Key, Recipient Key and Common IV come from HKDF-SHA256 over
        the Master Secret and Salt (§3.2.1). With a ``sequence_store`` the
        Sender Sequence Number resumes from it (Appendix B.1.1); a context
        resumed that way starts with its replay window unknown, so requests
        are answered with Echo until one is verified fresh (Appendix B.1.2).
        ``sender_sequence_number`` sets the first number (test vectors).
        """
        if not master_secret:
            raise ValueError("the Master Secret is empty")
        sequence = SenderSequence(sequence_store, step=persist_step, start=sender_sequence_number)
        return cls(
            algorithm=algorithm,
            id_context=id_context,
            sender_id=sender_id,
            recipient_id=recipient_id,
            sender_key=derive_parameter(
                master_secret, master_salt, sender_id, id_context, algorithm, "Key"
            ),
            recipient_key=derive_parameter(
                master_secret, master_salt, recipient_id, id_context, algorithm, "Key"
            ),
            common_iv=derive_parameter(
                master_secret, master_salt, b"", id_context, algorithm, "IV"
            ),
            sequence=sequence,
            replay_window=ReplayWindow(replay_window_size, known=not sequence.restarted),
        )

    # -- the parameters, for tests and diagnostics (never in a repr) ------------

    @property
    def sender_key(self) -> bytes:
        """The Sender Key."""
        return self._sender_key

    @property
    def recipient_key(self) -> bytes:
        """The Recipient Key."""
        return self._recipient_key

    @property
    def common_iv(self) -> bytes:
        """The Common IV."""
        return self._common_iv

    @property
    def sender_cipher(self) -> AeadCipher:
        """The AEAD keyed with the Sender Key."""
        return AeadCipher(self._sender_aead)

    @property
    def recipient_cipher(self) -> AeadCipher:
        """The AEAD keyed with the Recipient Key."""
        return AeadCipher(self._recipient_aead)

    # -- the AEAD (one call each: no wrapper object per context) ----------------

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """``plaintext`` encrypted with the Sender Key, its tag appended."""
        return self._sender_aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
        """The plaintext of ``ciphertext`` under the Recipient Key; None when the tag
        does not verify (nothing else is said)."""
        try:
            return self._recipient_aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            return None

    # -- nonces ------------------------------------------------------------------

    def nonce(self, id_piv: bytes, piv: bytes) -> bytes:
        """The AEAD nonce for Partial IV ``piv`` generated by the endpoint ``id_piv`` (§5.2).

        The size of ``id_piv``, ``id_piv`` left-padded to nonce length - 6
        bytes and ``piv`` left-padded to 5 bytes, XORed with the Common IV.
        """
        if not 0 < len(piv) <= 5:
            raise ValueError("Partial IV too long for the nonce")
        if id_piv == self.sender_id:
            base = self._sender_nonce_base
        elif id_piv == self.recipient_id:
            base = self._recipient_nonce_base
        else:
            return self._nonce_block(id_piv, piv)
        return (base ^ int.from_bytes(piv, "big")).to_bytes(self.algorithm.nonce_length, "big")

    def _nonce_block(self, id_piv: bytes, piv: bytes) -> bytes:
        length = self.algorithm.nonce_length
        width = length - 6
        if len(id_piv) > width or not 0 < len(piv) <= 5:
            raise ValueError("ID_PIV or Partial IV too long for the nonce")
        block = bytes((len(id_piv),)) + id_piv.rjust(width, b"\0") + piv.rjust(5, b"\0")
        mixed = int.from_bytes(block, "big") ^ int.from_bytes(self._common_iv, "big")
        return mixed.to_bytes(length, "big")

    def new_partial_iv(self) -> bytes:
        """Take the next Sender Sequence Number and return it as a Partial IV (§8.1 step 3).

        Raises :class:`~coap_trio.errors.SequenceNumberExhaustedError` or
        :class:`~coap_trio.errors.SequenceStoreError` (see :class:`SenderSequence`).
        """
        return partial_iv(self.sequence.take())

    def __repr__(self) -> str:
        context = "-" if self.id_context is None else self.id_context.hex()
        return (
            f"<SecurityContext {self.algorithm.name} sender={self.sender_id.hex() or '-'}"
            f" recipient={self.recipient_id.hex() or '-'} id_context={context}"
            f" next={self.sequence.next}>"
        )
