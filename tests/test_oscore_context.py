"""The OSCORE security context (RFC 8613 §3, §5.2): derivation, nonces, sequence numbers.

Known answers are RFC 8613 Appendix C.1 to C.3, byte for byte: the HKDF
``info`` of each derivation, Sender Key, Recipient Key, Common IV and the
nonces for Partial IV 0. Every key, nonce and sequence-number rule of the
RFC has a test here or in tests/test_oscore_replay.py.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import SequenceNumberExhaustedError
from coap_trio.protocol.oscore.algorithms import (
    A128GCM,
    AES_CCM_16_64_128,
    ALGORITHMS,
    CHACHA20_POLY1305,
    Aead,
    algorithm_by_name,
)
from coap_trio.protocol.oscore.context import (
    SecurityContext,
    derivation_info,
    derive_parameter,
    partial_iv,
)
from coap_trio.protocol.oscore.replay import MAX_SEQUENCE_NUMBER, SenderState

h = bytes.fromhex

MASTER_SECRET = h("0102030405060708090a0b0c0d0e0f10")
MASTER_SALT = h("9e7ca92223786340")
ID_CONTEXT = h("37cbf3210017a2d3")


class Vector(NamedTuple):
    """One key derivation test vector of RFC 8613 Appendix C.1 to C.3."""

    name: str
    salt: bytes
    id_context: bytes | None
    sender_id: bytes
    recipient_id: bytes
    info_sender: str
    info_recipient: str
    info_iv: str
    sender_key: str
    recipient_key: str
    common_iv: str
    sender_nonce: str
    recipient_nonce: str


VECTORS = [
    Vector(
        "C.1.1 client",
        MASTER_SALT,
        None,
        b"",
        h("01"),
        "8540f60a634b657910",
        "854101f60a634b657910",
        "8540f60a6249560d",
        "f0910ed7295e6ad4b54fc793154302ff",
        "ffb14e093c94c9cac9471648b4f98710",
        "4622d4dd6d944168eefb54987c",
        "4622d4dd6d944168eefb54987c",
        "4722d4dd6d944169eefb54987c",
    ),
    Vector(
        "C.1.2 server",
        MASTER_SALT,
        None,
        h("01"),
        b"",
        "854101f60a634b657910",
        "8540f60a634b657910",
        "8540f60a6249560d",
        "ffb14e093c94c9cac9471648b4f98710",
        "f0910ed7295e6ad4b54fc793154302ff",
        "4622d4dd6d944168eefb54987c",
        "4722d4dd6d944169eefb54987c",
        "4622d4dd6d944168eefb54987c",
    ),
    Vector(
        "C.2.1 client",
        b"",
        None,
        h("00"),
        h("01"),
        "854100f60a634b657910",
        "854101f60a634b657910",
        "8540f60a6249560d",
        "321b26943253c7ffb6003b0b64d74041",
        "e57b5635815177cd679ab4bcec9d7dda",
        "be35ae297d2dace910c52e99f9",
        "bf35ae297d2dace910c52e99f9",
        "bf35ae297d2dace810c52e99f9",
    ),
    Vector(
        "C.2.2 server",
        b"",
        None,
        h("01"),
        h("00"),
        "854101f60a634b657910",
        "854100f60a634b657910",
        "8540f60a6249560d",
        "e57b5635815177cd679ab4bcec9d7dda",
        "321b26943253c7ffb6003b0b64d74041",
        "be35ae297d2dace910c52e99f9",
        "bf35ae297d2dace810c52e99f9",
        "bf35ae297d2dace910c52e99f9",
    ),
    Vector(
        "C.3.1 client",
        MASTER_SALT,
        ID_CONTEXT,
        b"",
        h("01"),
        "85404837cbf3210017a2d30a634b657910",
        "8541014837cbf3210017a2d30a634b657910",
        "85404837cbf3210017a2d30a6249560d",
        "af2a1300a5e95788b356336eeecd2b92",
        "e39a0c7c77b43f03b4b39ab9a268699f",
        "2ca58fb85ff1b81c0b7181b85e",
        "2ca58fb85ff1b81c0b7181b85e",
        "2da58fb85ff1b81d0b7181b85e",
    ),
    Vector(
        "C.3.2 server",
        MASTER_SALT,
        ID_CONTEXT,
        h("01"),
        b"",
        "8541014837cbf3210017a2d30a634b657910",
        "85404837cbf3210017a2d30a634b657910",
        "85404837cbf3210017a2d30a6249560d",
        "e39a0c7c77b43f03b4b39ab9a268699f",
        "af2a1300a5e95788b356336eeecd2b92",
        "2ca58fb85ff1b81c0b7181b85e",
        "2da58fb85ff1b81d0b7181b85e",
        "2ca58fb85ff1b81c0b7181b85e",
    ),
]


def derive(vector: Vector) -> SecurityContext:
    """The vector's context; C.2 leaves the Master Salt out (the default)."""
    if vector.salt:
        return SecurityContext.derive(
            master_secret=MASTER_SECRET,
            master_salt=vector.salt,
            id_context=vector.id_context,
            sender_id=vector.sender_id,
            recipient_id=vector.recipient_id,
        )
    return SecurityContext.derive(
        master_secret=MASTER_SECRET,
        id_context=vector.id_context,
        sender_id=vector.sender_id,
        recipient_id=vector.recipient_id,
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_rfc8613_key_derivation_vectors(vector: Vector) -> None:
    alg = AES_CCM_16_64_128
    context_id = vector.id_context
    assert derivation_info(vector.sender_id, context_id, alg, "Key", 16) == h(vector.info_sender)
    assert derivation_info(vector.recipient_id, context_id, alg, "Key", 16) == h(
        vector.info_recipient
    )
    assert derivation_info(b"", context_id, alg, "IV", 13) == h(vector.info_iv)
    context = derive(vector)
    assert context.sender_key == h(vector.sender_key)
    assert context.recipient_key == h(vector.recipient_key)
    assert context.common_iv == h(vector.common_iv)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_rfc8613_nonce_vectors_for_partial_iv_zero(vector: Vector) -> None:
    context = derive(vector)
    assert context.nonce(vector.sender_id, b"\x00") == h(vector.sender_nonce)
    assert context.nonce(vector.recipient_id, b"\x00") == h(vector.recipient_nonce)


def test_the_request_nonce_of_c4() -> None:
    """C.4: sender ID empty, Partial IV 0x14 (20)."""
    context = SecurityContext.derive(
        master_secret=MASTER_SECRET, master_salt=MASTER_SALT, sender_id=b"", recipient_id=b"\x01"
    )
    assert context.nonce(b"", b"\x14") == h("4622d4dd6d944168eefb549868")


def test_an_empty_salt_is_the_default_and_equals_zeros() -> None:
    """§3.2.1: an absent salt is the empty string, which HKDF turns into zeros."""
    alg = AES_CCM_16_64_128
    empty = derive_parameter(MASTER_SECRET, b"", b"\x00", None, alg, "Key")
    zeros = derive_parameter(MASTER_SECRET, bytes(32), b"\x00", None, alg, "Key")
    assert empty == zeros == h("321b26943253c7ffb6003b0b64d74041")


def test_derivation_types_and_lengths_follow_the_algorithm() -> None:
    for alg in ALGORITHMS.values():
        key = derive_parameter(MASTER_SECRET, b"", b"", None, alg, "Key")
        iv = derive_parameter(MASTER_SECRET, b"", b"", None, alg, "IV")
        assert (len(key), len(iv)) == (alg.key_length, alg.nonce_length)
    with pytest.raises(ValueError, match="neither"):
        derive_parameter(MASTER_SECRET, b"", b"", None, AES_CCM_16_64_128, "Salt")


def test_the_algorithm_table() -> None:
    """COSE identifiers, key, nonce and tag lengths of the three AEADs."""
    rows = {
        alg.name: (alg.cose_id, alg.key_length, alg.nonce_length, alg.tag_length)
        for alg in ALGORITHMS.values()
    }
    assert rows == {
        "AES-CCM-16-64-128": (10, 16, 13, 8),
        "A128GCM": (1, 16, 12, 16),
        "ChaCha20/Poly1305": (24, 32, 12, 16),
    }
    assert algorithm_by_name("A128GCM") is A128GCM
    assert algorithm_by_name(24) is CHACHA20_POLY1305
    for unknown in ("AES-CCM-16-64-256", 11, "aes-ccm-16-64-128"):
        with pytest.raises(ValueError, match="unsupported"):
            algorithm_by_name(unknown)


@pytest.mark.parametrize("alg", list(ALGORITHMS.values()), ids=lambda a: a.name)
def test_the_nonce_length_follows_the_algorithm(alg: Aead) -> None:
    context = SecurityContext.derive(
        master_secret=MASTER_SECRET, sender_id=b"\x01", recipient_id=b"", algorithm=alg
    )
    nonce = context.nonce(b"\x01", b"\x05")
    assert len(nonce) == context.algorithm.nonce_length == len(context.common_iv)


@pytest.mark.parametrize("alg", list(ALGORITHMS.values()), ids=lambda a: a.name)
def test_sender_and_recipient_ids_are_at_most_nonce_length_minus_six(alg: Aead) -> None:
    """§3.3: the maximum ID length is the nonce length minus 6 (7 for AES-CCM-16-64-128)."""
    longest = alg.max_id_length
    assert longest == alg.nonce_length - 6
    for sender, recipient in ((bytes(longest), b""), (b"", bytes(longest))):
        SecurityContext.derive(
            master_secret=MASTER_SECRET, sender_id=sender, recipient_id=recipient, algorithm=alg
        )
    for sender, recipient in ((bytes(longest + 1), b""), (b"", bytes(longest + 1))):
        with pytest.raises(ValueError, match="longer than"):
            SecurityContext.derive(
                master_secret=MASTER_SECRET, sender_id=sender, recipient_id=recipient, algorithm=alg
            )


def test_an_empty_master_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="Master Secret"):
        SecurityContext.derive(master_secret=b"", sender_id=b"", recipient_id=b"\x01")


@pytest.mark.parametrize(
    ("number", "expected"),
    [(0, "00"), (1, "01"), (20, "14"), (255, "ff"), (256, "0100"), (2**40 - 1, "ffffffffff")],
)
def test_partial_iv_drops_leading_zero_bytes_but_keeps_zero(number: int, expected: str) -> None:
    """§5: all leading zero bytes removed, except that 0 is 0x00."""
    assert partial_iv(number) == h(expected)


@settings(deadline=None, max_examples=300)
@given(
    id_a=st.binary(max_size=7),
    id_b=st.binary(max_size=7),
    seq_a=st.integers(0, 2**40 - 1),
    seq_b=st.integers(0, 2**40 - 1),
)
def test_nonces_are_unique_per_id_and_partial_iv(
    id_a: bytes, id_b: bytes, seq_a: int, seq_b: int
) -> None:
    """§5.2 and Appendix D.4: distinct (ID_PIV, PIV) pairs give distinct nonces.

    The length byte keeps IDs differing only in leading zeros apart.
    """
    context = SecurityContext.derive(master_secret=MASTER_SECRET, sender_id=b"", recipient_id=b"")
    same = id_a == id_b and seq_a == seq_b
    nonce_a = context.nonce(id_a, partial_iv(seq_a))
    nonce_b = context.nonce(id_b, partial_iv(seq_b))
    assert (nonce_a == nonce_b) == same


def test_the_nonce_refuses_fields_too_long() -> None:
    context = SecurityContext.derive(master_secret=MASTER_SECRET, sender_id=b"", recipient_id=b"")
    with pytest.raises(ValueError, match="too long"):
        context.nonce(bytes(8), b"\x00")
    with pytest.raises(ValueError, match="too long"):
        context.nonce(b"", bytes(6))
    with pytest.raises(ValueError, match="too long"):
        context.nonce(b"", b"")


def test_sequence_numbers_count_from_zero_and_never_repeat() -> None:
    """§3.2.2: the Sender Sequence Number starts at 0; §8.1 step 3: one per message."""
    context = SecurityContext.derive(master_secret=MASTER_SECRET, sender_id=b"", recipient_id=b"")
    pivs = [context.new_partial_iv() for _ in range(300)]
    assert pivs[:3] == [b"\x00", b"\x01", b"\x02"]
    assert pivs[256] == b"\x01\x00"
    assert len(set(pivs)) == 300


def test_exhaustion_is_a_typed_error_and_the_context_refuses_to_protect() -> None:
    """§7.2.1: past 2**40 - 1 the Sender Context protects no more messages."""
    context = SecurityContext.derive(
        master_secret=MASTER_SECRET,
        sender_id=b"",
        recipient_id=b"",
        sender_sequence_number=MAX_SEQUENCE_NUMBER,
    )
    assert context.new_partial_iv() == h("ffffffffff")
    for _ in range(3):
        with pytest.raises(SequenceNumberExhaustedError, match=r"7\.2\.1"):
            context.new_partial_iv()
    assert context.sequence.state is SenderState.EXHAUSTED
    with pytest.raises(ValueError, match="out of range"):
        SecurityContext.derive(
            master_secret=MASTER_SECRET,
            sender_id=b"",
            recipient_id=b"",
            sender_sequence_number=MAX_SEQUENCE_NUMBER + 2,
        )


def test_key_material_never_appears_in_a_repr() -> None:
    context = SecurityContext.derive(
        master_secret=MASTER_SECRET, master_salt=MASTER_SALT, sender_id=b"", recipient_id=b"\x01"
    )
    shown = repr(context) + repr(context.sender_cipher) + repr(context.recipient_cipher)
    for secret in (MASTER_SECRET, context.sender_key, context.recipient_key, context.common_iv):
        assert secret.hex() not in shown
    assert "AES-CCM-16-64-128" in shown


def test_aead_keys_must_have_the_algorithm_length() -> None:
    with pytest.raises(ValueError, match="16-byte keys"):
        AES_CCM_16_64_128.cipher(bytes(32))
    cipher = CHACHA20_POLY1305.cipher(bytes(32))
    sealed = cipher.seal(bytes(12), b"data", b"aad")
    assert cipher.open(bytes(12), sealed, b"aad") == b"data"
    assert cipher.open(bytes(12), sealed, b"other aad") is None
    assert len(sealed) == 4 + CHACHA20_POLY1305.tag_length


@settings(deadline=None)
@given(
    sender=st.binary(max_size=7),
    recipient=st.binary(max_size=7),
    other=st.binary(max_size=7),
    piv=st.binary(min_size=1, max_size=5),
)
def test_nonces_of_either_id_match_the_definition(
    sender: bytes, recipient: bytes, other: bytes, piv: bytes
) -> None:
    """§5.2 written out per call, against the nonce heads made with the context."""
    context = SecurityContext.derive(
        master_secret=MASTER_SECRET,
        master_salt=MASTER_SALT,
        sender_id=sender,
        recipient_id=recipient,
    )
    for id_piv in (sender, recipient, other):
        block = bytes((len(id_piv),)) + id_piv.rjust(7, b"\0") + piv.rjust(5, b"\0")
        expected = bytes(a ^ b for a, b in zip(block, context.common_iv, strict=True))
        assert context.nonce(id_piv, piv) == expected
