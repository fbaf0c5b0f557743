"""The AEAD algorithms and the key derivation function of OSCORE (RFC 8613 §3.2, §5).

Owns the table of supported COSE AEAD algorithms (identifier, name, key,
nonce and tag lengths), the AEAD operations on them and HKDF-SHA256 (the
mandatory HKDF of §3.2.1), all through ``cryptography``: nothing here
implements a primitive. Must not know about messages, options or security
contexts.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "A128GCM",
    "AES_CCM_16_64_128",
    "ALGORITHMS",
    "CHACHA20_POLY1305",
    "Aead",
    "AeadCipher",
    "algorithm_by_name",
    "hkdf_sha256",
]


class AeadCipher:
    """One AEAD key, ready to seal and open (a ``cryptography`` AEAD object inside)."""

    __slots__ = ("_aead",)

    def __init__(self, aead: AESCCM | AESGCM | ChaCha20Poly1305) -> None:
        self._aead = aead

    @property
    def aead(self) -> AESCCM | AESGCM | ChaCha20Poly1305:
        """The ``cryptography`` AEAD object (a security context keeps it alone)."""
        return self._aead

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """The ciphertext with its authentication tag appended."""
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None when the tag does not verify (nothing else is said)."""
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            return None

    def __repr__(self) -> str:
        return f"<AeadCipher {type(self._aead).__name__}>"  # never the key


def _ccm_16_64(key: bytes) -> AESCCM:
    return AESCCM(key, tag_length=8)


@attrs.frozen
class Aead:
    """A COSE AEAD algorithm usable with OSCORE (RFC 8152 §10, RFC 8613 §5.2).

    OSCORE needs a nonce of at least 7 bytes; the Sender and Recipient IDs
    are at most ``nonce_length - 6`` bytes long (§3.3).
    """

    #: The COSE algorithm identifier (the ``alg_aead`` of the HKDF info and AAD).
    cose_id: int
    #: The name in the COSE registry, as credentials files spell it.
    name: str
    #: Key length in bytes.
    key_length: int
    #: Nonce (and Common IV) length in bytes.
    nonce_length: int
    #: Authentication tag length in bytes.
    tag_length: int
    _factory: Callable[[bytes], AESCCM | AESGCM | ChaCha20Poly1305] = attrs.field(
        repr=False, eq=False, alias="factory"
    )

    @property
    def max_id_length(self) -> int:
        """The longest Sender or Recipient ID this algorithm allows (§3.3, §5.2)."""
        return self.nonce_length - 6

    def cipher(self, key: bytes) -> AeadCipher:
        """An :class:`AeadCipher` for ``key`` (which must be :attr:`key_length` bytes)."""
        if len(key) != self.key_length:
            raise ValueError(f"{self.name} takes {self.key_length}-byte keys, not {len(key)}")
        return AeadCipher(self._factory(key))


#: AES-CCM with a 16-bit length field, 64-bit tag, 128-bit key: the default (§3.2).
AES_CCM_16_64_128 = Aead(10, "AES-CCM-16-64-128", 16, 13, 8, factory=_ccm_16_64)
#: AES-GCM with a 128-bit key (RFC 8152 §10.1).
A128GCM = Aead(1, "A128GCM", 16, 12, 16, factory=AESGCM)
#: ChaCha20/Poly1305 (RFC 8152 §10.3).
CHACHA20_POLY1305 = Aead(24, "ChaCha20/Poly1305", 32, 12, 16, factory=ChaCha20Poly1305)

#: The supported algorithms by COSE identifier.
ALGORITHMS: dict[int, Aead] = {
    alg.cose_id: alg for alg in (AES_CCM_16_64_128, A128GCM, CHACHA20_POLY1305)
}


def algorithm_by_name(name: str | int) -> Aead:
    """The algorithm named ``name`` (its COSE name or identifier); ``ValueError`` if unknown."""
    if isinstance(name, int) and not isinstance(name, bool):
        found = ALGORITHMS.get(name)
    else:
        found = next((alg for alg in ALGORITHMS.values() if alg.name == name), None)
    if found is None:
        known = ", ".join(alg.name for alg in ALGORITHMS.values())
        raise ValueError(f"unsupported AEAD algorithm {name!r} (supported: {known})")
    return found


def hkdf_sha256(salt: bytes, secret: bytes, info: bytes, length: int) -> bytes:
    """HKDF with SHA-256 (RFC 5869): extract with ``salt``, expand ``info`` to ``length`` bytes.

    An empty salt is a string of zeros (RFC 5869 §2.2), as RFC 8613 §3.2.1 notes.
    """
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)
