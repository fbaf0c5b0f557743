"""The TLS 1.2 key schedule with SHA-256 (RFC 5246 §5, §8.1, §6.3; RFC 7627; RFC 4279).

Owns the PRF (P_SHA256 over HMAC-SHA256), the PSK premaster secret, the
master secret (and the extended master secret bound to the session hash),
the key block of the AES-128-CCM-8 suites (no MAC keys: two 16-byte write
keys and two 4-byte write IVs) and the Finished verify_data. Pure functions
over bytes; must not know about records or messages.
"""

from __future__ import annotations

import attrs
from cryptography.hazmat.primitives import hashes, hmac

__all__ = [
    "MASTER_SECRET_SIZE",
    "VERIFY_DATA_SIZE",
    "KeyBlock",
    "extended_master_secret",
    "key_block",
    "master_secret",
    "prf",
    "psk_premaster_secret",
    "sha256",
    "verify_data",
]

#: Bytes of a master secret.
MASTER_SECRET_SIZE = 48
#: Bytes of a Finished message's verify_data (RFC 5246 §7.4.9).
VERIFY_DATA_SIZE = 12


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data`` (the handshake hash of the SHA-256 suites)."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """PRF(secret, label, seed) = P_SHA256(secret, label + seed), ``length`` bytes (§5)."""
    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        a = _hmac_sha256(secret, a)
        out += _hmac_sha256(secret, a + seed)
    return bytes(out[:length])


def psk_premaster_secret(psk: bytes) -> bytes:
    """RFC 4279 §2: uint16 N, N zero bytes, uint16 N, the PSK (N = its length)."""
    n = len(psk).to_bytes(2, "big")
    return n + bytes(len(psk)) + n + psk


def master_secret(premaster: bytes, client_random: bytes, server_random: bytes) -> bytes:
    """The master secret of RFC 5246 §8.1."""
    return prf(premaster, b"master secret", client_random + server_random, MASTER_SECRET_SIZE)


def extended_master_secret(premaster: bytes, session_hash: bytes) -> bytes:
    """The master secret of RFC 7627 §4: bound to the hash of the handshake so far."""
    return prf(premaster, b"extended master secret", session_hash, MASTER_SECRET_SIZE)


@attrs.frozen
class KeyBlock:
    """The keys of the AES-128-CCM-8 suites (RFC 6655): no MAC keys, 4-byte implicit IVs."""

    client_write_key: bytes
    server_write_key: bytes
    client_write_iv: bytes
    server_write_iv: bytes


def key_block(master: bytes, client_random: bytes, server_random: bytes) -> KeyBlock:
    """The key block of RFC 5246 §6.3 for AES-128-CCM-8 (40 bytes)."""
    block = prf(master, b"key expansion", server_random + client_random, 40)
    return KeyBlock(block[0:16], block[16:32], block[32:36], block[36:40])


def verify_data(master: bytes, client: bool, handshake_hash: bytes) -> bytes:
    """The Finished verify_data of the client (``client``) or the server (§7.4.9)."""
    label = b"client finished" if client else b"server finished"
    return prf(master, label, handshake_hash, VERIFY_DATA_SIZE)
