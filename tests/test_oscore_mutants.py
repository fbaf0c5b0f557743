"""Gaps in the OSCORE tests that mutation testing found (docs/testing.md,
"Mutation testing").

Each test pins a behaviour that a surviving mutant of
``coap_trio/protocol/oscore/{protect,replay,option,context}.py`` changed
without any other test noticing. (A file of its own: the OSCORE tests
proper are being worked on elsewhere.)
"""

from __future__ import annotations

import cbor2
import pytest

from coap_trio.errors import (
    OscoreFailure,
    OscoreProtectError,
    OscoreVerificationError,
    SequenceNumberExhaustedError,
)
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.optionnumbers import OptionNumber
from coap_trio.numbers.types import Type
from coap_trio.protocol.oscore import SecurityContext
from coap_trio.protocol.oscore.option import (
    CompressedHeader,
    decode_oscore_option,
    encode_oscore_option,
)
from coap_trio.protocol.oscore.protect import (
    _cbor_head,
    _cbor_int,
    aad,
    decrypted_message,
    open_ciphertext,
    parse_plaintext,
    plaintext,
    protect_request,
)
from coap_trio.protocol.oscore.replay import (
    MAX_SEQUENCE_NUMBER,
    MAX_WINDOW_SIZE,
    MemorySequenceStore,
    ReplayWindow,
    SenderSequence,
)
from coap_trio.remote import DatagramRemote

h = bytes.fromhex
MASTER_SECRET = h("0102030405060708090a0b0c0d0e0f10")
MASTER_SALT = h("9e7ca92223786340")
REMOTE = DatagramRemote(("192.0.2.7", 5683), "coap")


def _client(sequence: int = 20, id_context: bytes | None = None) -> SecurityContext:
    return SecurityContext.derive(
        master_secret=MASTER_SECRET,
        master_salt=MASTER_SALT,
        sender_id=b"",
        recipient_id=b"\x01",
        id_context=id_context,
        sender_sequence_number=sequence,
    )


def _server() -> SecurityContext:
    return SecurityContext.derive(
        master_secret=MASTER_SECRET,
        master_salt=MASTER_SALT,
        sender_id=b"\x01",
        recipient_id=b"",
    )


# -- the replay window (§7.4) ------------------------------------------------------------------


def test_an_older_partial_iv_accepted_within_the_window_is_not_fresh_again() -> None:
    """RFC 8613 §7.4: a Partial IV below the highest, accepted once, is a replay."""
    window = ReplayWindow(32)
    window.accept(10)
    for number in (8, 3, 9):
        assert window.is_fresh(number)
        window.accept(number)
        assert not window.is_fresh(number)
    assert [n for n in range(12) if window.is_fresh(n)] == [0, 1, 2, 4, 5, 6, 7, 11]
    with pytest.raises(ValueError, match="Partial IV 8 is not fresh"):
        window.accept(8)


# -- the sender sequence (§7.2.1) ----------------------------------------------------------------


def test_an_exhausted_sequence_says_a_new_context_is_needed() -> None:
    context = _client(sequence=MAX_SEQUENCE_NUMBER + 1)
    with pytest.raises(SequenceNumberExhaustedError) as caught:
        context.new_partial_iv()
    assert str(caught.value) == (
        f"the Sender Sequence Number passed {MAX_SEQUENCE_NUMBER}: a new security"
        " context is needed (RFC 8613 §7.2.1)"
    )


# -- plaintext and ciphertext (§5.3, §8.2, §8.4) ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "empty plaintext"),
        (b"\x01\xf0", "plaintext: option delta nibble 15 is reserved"),
    ],
)
def test_plaintexts_that_do_not_decode_say_why(data: bytes, detail: str) -> None:
    """A plaintext that is no CoAP message body is a DECODE failure (4.02, §8.2
    step 6), with a detail for the logs."""
    with pytest.raises(OscoreVerificationError) as caught:
        parse_plaintext(data)
    assert (caught.value.failure, caught.value.detail) == (OscoreFailure.DECODE, detail)


def test_an_inner_oscore_option_is_refused_with_its_detail() -> None:
    body = plaintext(Code.GET, [(OptionNumber.OSCORE, b"")], b"")
    with pytest.raises(OscoreVerificationError) as caught:
        parse_plaintext(body)
    assert (caught.value.failure, caught.value.detail) == (
        OscoreFailure.DECODE,
        "an Inner OSCORE option",
    )


def test_a_ciphertext_of_only_a_tag_does_not_open() -> None:
    """Every plaintext has at least its Code byte (§5.3): a ciphertext that is only
    the tag, even a valid one, is not opened (the request fails as undecryptable,
    §8.2 step 6, not as an undecodable plaintext)."""
    client, server = _client(), _server()
    piv = b"\x14"
    nonce = client.nonce(client.sender_id, piv)
    associated = aad(client.algorithm.cose_id, client.sender_id, piv)
    tag_only = client.sender_cipher.seal(nonce, b"", associated)
    assert len(tag_only) == client.algorithm.tag_length
    assert server.recipient_cipher.open(nonce, tag_only, associated) == b""
    assert open_ciphertext(server, tag_only, nonce, client.sender_id, piv) is None
    one_byte = client.sender_cipher.seal(nonce, b"\x01", associated)
    assert open_ciphertext(server, one_byte, nonce, client.sender_id, piv) == b"\x01"


# -- the messages keep their header fields and remote (§8.1, §8.2) --------------------------------


def test_protect_and_decrypt_keep_the_remote() -> None:
    request = Message(
        code=Code.GET, mtype=Type.CON, mid=7, token=b"\x0a", uri_path=("a",), remote=REMOTE
    )
    protected, _ = protect_request(_client(), request)
    assert (protected.mtype, protected.mid, protected.token) == (Type.CON, 7, b"\x0a")
    assert protected.remote is REMOTE
    original = decrypted_message(protected, plaintext(Code.GET, [(11, b"a")], b""))
    assert original.remote is REMOTE
    assert (original.code, original.opt.uri_path) == (Code.GET, ("a",))


# -- the context's repr (for logs: never key material) -------------------------------------------


def test_the_repr_of_a_context_names_its_ids() -> None:
    assert repr(_client()) == (
        "<SecurityContext AES-CCM-16-64-128 sender=- recipient=01 id_context=- next=20>"
    )
    assert repr(_client(sequence=5, id_context=b"\x37\xcb")) == (
        "<SecurityContext AES-CCM-16-64-128 sender=- recipient=01 id_context=37cb next=5>"
    )
    assert repr(_server()) == (
        "<SecurityContext AES-CCM-16-64-128 sender=01 recipient=- id_context=- next=0>"
    )


# -- the AAD's CBOR (§5.4): every head length -----------------------------------------------------

_EDGES = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1]


@pytest.mark.parametrize("value", _EDGES)
def test_cbor_heads_and_integers_are_cbor2s(value: int) -> None:
    """The external_aad is built without cbor2 (speed); its heads and integers,
    at every width of RFC 8949 §3 (1, 2, 3, 5 and 9 bytes), are what cbor2 writes."""
    assert _cbor_head(0x00, value) == cbor2.dumps(value)
    assert _cbor_int(value) == cbor2.dumps(value)
    assert _cbor_int(-1 - value) == cbor2.dumps(-1 - value)
    if value <= 65_536:
        assert _cbor_head(0x40, value) == cbor2.dumps(bytes(value))[: -value or None]


# -- the OSCORE option (§6.1): bounds and the reasons of refusals ---------------------------------


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (bytes(256), "OSCORE option of 256 bytes"),
        (b"\xe0", "reserved flag bits set in 0xe0"),
        (b"\x06", "reserved Partial IV length 6"),
        (b"\x03\x01\x02", "the Partial IV is cut short"),
        (b"\x11\x01", "the 'kid context' length is missing"),
        (b"\x11\x01\x03\xaa\xbb", "the 'kid context' is cut short"),
        (b"\x01\x01\x02", "bytes after the last field"),
    ],
)
def test_malformed_oscore_options_say_why(value: bytes, detail: str) -> None:
    with pytest.raises(OscoreVerificationError) as caught:
        decode_oscore_option(value)
    assert (caught.value.failure, caught.value.detail) == (OscoreFailure.DECODE, detail)


def test_oscore_option_length_bounds() -> None:
    """A 'kid context' has one length byte (§6.1): 255 bytes at most, though one
    that long no longer fits the option's 255 bytes; the option value may be 255
    bytes long (RFC 8613 §2) and no longer; a Partial IV is 1 to 5 bytes."""
    with pytest.raises(ValueError, match=r"^an OSCORE option value of 257 bytes \(at most 255\)$"):
        encode_oscore_option(CompressedHeader(kid_context=bytes(255)))
    with pytest.raises(ValueError, match=r"^a 'kid context' of 256 bytes \(at most 255\)$"):
        encode_oscore_option(CompressedHeader(kid_context=bytes(256)))
    with pytest.raises(ValueError, match=r"^a Partial IV of 6 bytes \(1 to 5\)$"):
        encode_oscore_option(CompressedHeader(partial_iv=bytes(6)))
    full = CompressedHeader(kid_context=bytes(200), kid=bytes(255 - 1 - 1 - 200))
    value = encode_oscore_option(full)
    assert len(value) == 255
    assert decode_oscore_option(value) == full
    with pytest.raises(ValueError, match=r"^an OSCORE option value of 256 bytes \(at most 255\)$"):
        encode_oscore_option(CompressedHeader(kid_context=bytes(200), kid=bytes(54)))


# -- windows and sequences: their bounds ----------------------------------------------------------


def test_the_largest_replay_window_is_allowed() -> None:
    assert ReplayWindow(MAX_WINDOW_SIZE).size == MAX_WINDOW_SIZE
    with pytest.raises(
        ValueError, match=f"^replay window size 4097 is not in 1..{MAX_WINDOW_SIZE}$"
    ):
        ReplayWindow(MAX_WINDOW_SIZE + 1)


def test_sender_sequence_bounds() -> None:
    """A persistence step of 1 is allowed; the first number and a stored limit
    may be anything from 0 to MAX_SEQUENCE_NUMBER + 1 (the latter: exhausted)."""
    assert SenderSequence(MemorySequenceStore(), step=1).take() == 0
    exhausted = SenderSequence(start=MAX_SEQUENCE_NUMBER + 1)
    with pytest.raises(SequenceNumberExhaustedError):
        exhausted.take()
    assert SenderSequence(MemorySequenceStore(0)).take() == 0
    stored_last = SenderSequence(MemorySequenceStore(MAX_SEQUENCE_NUMBER + 1))
    with pytest.raises(SequenceNumberExhaustedError):
        stored_last.take()
    with pytest.raises(ValueError, match=r"^stored sequence number limit -1 is out of range$"):
        SenderSequence(MemorySequenceStore(-1))


# -- the context's own checks --------------------------------------------------------------------


def test_context_refusals_say_which_id_or_value() -> None:
    too_long = bytes(8)  # AES-CCM-16-64-128: IDs of at most 7 bytes (§3.3)
    with pytest.raises(ValueError, match=r"^Sender ID of 8 bytes is longer than AES-CCM-16-64-128"):
        SecurityContext.derive(master_secret=MASTER_SECRET, sender_id=too_long, recipient_id=b"")
    with pytest.raises(ValueError, match=r"^Recipient ID of 8 bytes is longer than"):
        SecurityContext.derive(master_secret=MASTER_SECRET, sender_id=b"", recipient_id=too_long)
    with pytest.raises(ValueError, match=r"^the Master Secret is empty$"):
        SecurityContext.derive(master_secret=b"", sender_id=b"", recipient_id=b"\x01")
    with pytest.raises(ValueError, match=r"^ID_PIV or Partial IV too long for the nonce$"):
        _client().nonce(bytes(8), b"\x01")


def test_a_given_echo_value_is_kept_and_a_drawn_one_is_8_bytes() -> None:
    client = _client()
    assert len(client.echo_value) == 8
    assert client.echo_value != _client().echo_value
    given = SecurityContext(
        algorithm=client.algorithm,
        id_context=None,
        sender_id=b"",
        recipient_id=b"\x01",
        sender_key=bytes(16),
        recipient_key=bytes(16),
        common_iv=bytes(13),
        sequence=SenderSequence(),
        replay_window=ReplayWindow(),
        echo_value=b"echo",
    )
    assert given.echo_value == b"echo"
    with pytest.raises(ValueError, match=r"^Common IV of 12 bytes for AES-CCM-16-64-128$"):
        SecurityContext(
            algorithm=client.algorithm,
            id_context=None,
            sender_id=b"",
            recipient_id=b"\x01",
            sender_key=bytes(16),
            recipient_key=bytes(16),
            common_iv=bytes(12),
            sequence=SenderSequence(),
            replay_window=ReplayWindow(),
        )


def test_an_unencodable_plaintext_is_a_protect_error_saying_why() -> None:
    with pytest.raises(
        OscoreProtectError, match=r"^option value of 65805 bytes is too long to encode$"
    ):
        plaintext(Code.GET, [(OptionNumber.ETAG, bytes(65_805))], b"")
