"""The DTLS 1.2 record layer (RFC 6347 §4.1) with AES-128-CCM-8 protection (RFC 6655).

Owns the 13-byte record header (content type, version, epoch, 48-bit
sequence number, length), cutting a datagram into its records, the write
sequence numbers of each epoch, record protection for epoch 1 (AES-128-CCM
with an 8-byte tag: nonce = 4-byte write IV || 8-byte explicit nonce, the
explicit nonce being epoch || sequence number and sent before the
ciphertext; additional data = epoch || sequence number || type || version ||
plaintext length, RFC 5246 §6.2.3.3) and the sliding anti-replay window
(§4.1.2.6, 64 records per protected epoch; epoch 0 has none, since
anyone can forge its records).

A record that cannot be read, belongs to no epoch we can read, replays one
already accepted or fails authentication is dropped and counted in
:class:`RecordStatistics`, never raised (§4.1.2.7: invalid records are
silently discarded). Must not know about handshake messages or sessions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from ...errors import DtlsDecodeError, LocalProtocolError

__all__ = [
    "CCM8_OVERHEAD",
    "DTLS_1_0",
    "DTLS_1_2",
    "MAX_PLAINTEXT",
    "MAX_SEQUENCE",
    "RECORD_HEADER_SIZE",
    "REPLAY_WINDOW_SIZE",
    "Ccm8Cipher",
    "ContentType",
    "Record",
    "RecordLayer",
    "RecordStatistics",
    "ReplayWindow",
    "encode_record",
    "iter_records",
    "parse_records",
]

#: The record version of DTLS 1.2 (RFC 6347 §4.1: the one's complement of 1.2).
DTLS_1_2 = 0xFEFD
#: The record version of DTLS 1.0 (RFC 4347); accepted in epoch 0 records only.
DTLS_1_0 = 0xFEFF
#: type (1) + version (2) + epoch (2) + sequence number (6) + length (2).
RECORD_HEADER_SIZE = 13
#: The largest plaintext a record may carry (RFC 5246 §6.2.1).
MAX_PLAINTEXT = 2**14
#: The largest 48-bit sequence number.
MAX_SEQUENCE = 2**48 - 1
#: Records the anti-replay window remembers behind the highest one (RFC 6347 §4.1.2.6).
REPLAY_WINDOW_SIZE = 64
#: Bytes AES-128-CCM-8 adds to a record: the 8-byte explicit nonce and the 8-byte tag.
CCM8_OVERHEAD = 16
#: A protected record may carry up to 2^14 + 2048 bytes (RFC 5246 §6.2.3).
_MAX_CIPHERTEXT = MAX_PLAINTEXT + 2048


class ContentType(enum.IntEnum):
    """The record's content type (RFC 5246 §6.2.1)."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


_TYPES = frozenset(int(t) for t in ContentType)
_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)


@attrs.frozen
class Record:
    """One record as read from a datagram; ``fragment`` is still protected in epochs above 0."""

    #: The content type (20-23).
    content_type: int
    #: The record version (0xFEFD, or 0xFEFF in epoch 0).
    version: int
    #: The epoch: 0 until ChangeCipherSpec, then 1.
    epoch: int
    #: The 48-bit sequence number within the epoch.
    sequence: int
    #: The record's payload as sent.
    fragment: bytes

    @property
    def seq_num(self) -> bytes:
        """The 8-byte epoch || sequence number (the explicit nonce and first bytes of the AAD)."""
        return ((self.epoch << 48) | self.sequence).to_bytes(8, "big")


def encode_record(
    content_type: int, epoch: int, sequence: int, fragment: bytes, version: int = DTLS_1_2
) -> bytes:
    """The bytes of one record (header and fragment as given)."""
    return (
        bytes((content_type,))
        + version.to_bytes(2, "big")
        + ((epoch << 48) | sequence).to_bytes(8, "big")
        + len(fragment).to_bytes(2, "big")
        + fragment
    )


def iter_records(datagram: bytes) -> Iterator[Record]:
    """The records of a datagram, in order; stops at the first one that cannot be read.

    Raises :class:`~coap_trio.errors.DtlsDecodeError` at that point (after the
    records before it were yielded): an unknown content type, a version that is
    not DTLS, a length past the end of the datagram or above 2^14 + 2048.
    """
    view = memoryview(datagram)
    pos = 0
    end = len(datagram)
    while pos < end:
        if end - pos < RECORD_HEADER_SIZE:
            raise DtlsDecodeError("truncated record header", offset=pos)
        content_type = view[pos]
        if content_type not in _TYPES:
            raise DtlsDecodeError(f"unknown content type {content_type}", offset=pos)
        version = (view[pos + 1] << 8) | view[pos + 2]
        if version >> 8 != 0xFE:
            raise DtlsDecodeError(f"record version {version:#06x} is not DTLS", offset=pos)
        epoch = (view[pos + 3] << 8) | view[pos + 4]
        sequence = int.from_bytes(view[pos + 5 : pos + 11], "big")
        length = (view[pos + 11] << 8) | view[pos + 12]
        if length > _MAX_CIPHERTEXT:
            raise DtlsDecodeError(f"record of {length} bytes is too long", offset=pos)
        start = pos + RECORD_HEADER_SIZE
        if start + length > end:
            raise DtlsDecodeError("record runs past the end of the datagram", offset=pos)
        yield Record(content_type, version, epoch, sequence, bytes(view[start : start + length]))
        pos = start + length


def parse_records(datagram: bytes) -> tuple[list[Record], bool]:
    """Every readable record of a datagram, and whether the rest (if any) was unreadable."""
    records: list[Record] = []
    try:
        for record in iter_records(datagram):
            records.append(record)
    except DtlsDecodeError:
        return records, True
    return records, False


class ReplayWindow:
    """The sliding window of RFC 6347 §4.1.2.6 over one epoch's sequence numbers.

    ``check`` before authenticating a record, ``update`` once it authenticated,
    so that forged records cannot move the window.
    """

    __slots__ = ("_bits", "_top")

    def __init__(self) -> None:
        self._top = -1  # the highest sequence number accepted so far
        self._bits = 0  # bit i set: record _top - i was accepted

    def check(self, sequence: int) -> bool:
        """True when a record with this number is new and inside (or ahead of) the window."""
        if sequence > self._top:
            return True
        offset = self._top - sequence
        if offset >= REPLAY_WINDOW_SIZE:
            return False
        return not (self._bits >> offset) & 1

    def update(self, sequence: int) -> None:
        """Mark a record that authenticated as received."""
        if sequence > self._top:
            shift = sequence - self._top
            if shift >= REPLAY_WINDOW_SIZE:
                self._bits = 1  # a jump past the window forgets it (no 2^48-bit shifts)
            else:
                self._bits = ((self._bits << shift) | 1) & ((1 << REPLAY_WINDOW_SIZE) - 1)
            self._top = sequence
        else:
            self._bits |= 1 << (self._top - sequence)


class Ccm8Cipher:
    """AES-128-CCM with an 8-byte tag for one direction of one epoch (RFC 6655 §3)."""

    __slots__ = ("_aead", "_salt")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != 16 or len(iv) != 4:
            raise ValueError("AES-128-CCM-8 takes a 16-byte key and a 4-byte IV")
        self._aead = AESCCM(key, tag_length=8)
        self._salt = iv

    def seal(self, content_type: int, version: int, seq_num: bytes, plaintext: bytes) -> bytes:
        """The protected fragment: explicit nonce (``seq_num``) || ciphertext || tag."""
        aad = seq_num + bytes((content_type,)) + version.to_bytes(2, "big")
        aad += len(plaintext).to_bytes(2, "big")
        return seq_num + self._aead.encrypt(self._salt + seq_num, plaintext, aad)

    def open(
        self, content_type: int, version: int, seq_num: bytes, fragment: bytes
    ) -> bytes | None:
        """The plaintext of a protected fragment, or None when it does not authenticate."""
        if len(fragment) < CCM8_OVERHEAD:
            return None
        explicit = fragment[:8]
        length = len(fragment) - CCM8_OVERHEAD
        aad = seq_num + bytes((content_type,)) + version.to_bytes(2, "big")
        aad += length.to_bytes(2, "big")
        try:
            return self._aead.decrypt(self._salt + explicit, fragment[8:], aad)
        except InvalidTag:
            return None


@attrs.define
class RecordStatistics:
    """Records dropped by the record layer, by reason."""

    #: Datagrams whose tail (or whole) could not be cut into records.
    malformed: int = 0
    #: Records of an epoch we cannot read (not yet, or no longer).
    wrong_epoch: int = 0
    #: Records already accepted, or older than the window.
    replayed: int = 0
    #: Records that failed authentication (CCM tag).
    bad_record_mac: int = 0
    #: Records with a version other than DTLS 1.2 (1.0 allowed in epoch 0).
    bad_version: int = 0


class RecordLayer:
    """One peer's record protection state: write and read epochs with their keys.

    Epoch 0 is plaintext. Epoch 1's ciphers are installed with
    :meth:`set_write_cipher` / :meth:`set_read_cipher` when the key
    exchange is done, and switched to by :meth:`start_writing` /
    :meth:`start_reading` at ChangeCipherSpec. Records may still be written
    in epoch 0 after that (a retransmitted flight keeps its epochs).
    """

    def __init__(self) -> None:
        self.write_epoch = 0
        self.read_epoch = 0
        self.statistics = RecordStatistics()
        self._write_seq: dict[int, int] = {0: 0}
        self._write_ciphers: dict[int, Ccm8Cipher | None] = {0: None}
        self._read_ciphers: dict[int, Ccm8Cipher | None] = {0: None}
        self._windows: dict[int, ReplayWindow] = {0: ReplayWindow()}

    # Writing

    def set_write_cipher(self, epoch: int, cipher: Ccm8Cipher) -> None:
        """Install the cipher of a later epoch for writing (it starts at sequence 0)."""
        self._write_ciphers[epoch] = cipher
        self._write_seq[epoch] = 0

    def start_writing(self, epoch: int) -> None:
        """Make ``epoch`` the current write epoch (after sending ChangeCipherSpec)."""
        if epoch not in self._write_ciphers:
            raise LocalProtocolError(f"no write keys for epoch {epoch}")
        self.write_epoch = epoch

    def set_next_write_sequence(self, epoch: int, sequence: int) -> None:
        """Continue ``epoch``'s numbering at ``sequence`` (a server after a stateless cookie)."""
        self._write_seq[epoch] = sequence

    def protect(self, content_type: int, payload: bytes, epoch: int | None = None) -> bytes:
        """One record carrying ``payload`` in ``epoch`` (the current write epoch by default)."""
        if epoch is None:
            epoch = self.write_epoch
        if len(payload) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"record payload of {len(payload)} bytes exceeds 2^14")
        sequence = self._write_seq[epoch]
        if sequence > MAX_SEQUENCE:
            raise LocalProtocolError(f"epoch {epoch} has used up its sequence numbers")
        self._write_seq[epoch] = sequence + 1
        cipher = self._write_ciphers[epoch]
        if cipher is not None:
            seq_num = ((epoch << 48) | sequence).to_bytes(8, "big")
            payload = cipher.seal(content_type, DTLS_1_2, seq_num, payload)
        return encode_record(content_type, epoch, sequence, payload)

    # Reading

    def set_read_cipher(self, epoch: int, cipher: Ccm8Cipher) -> None:
        """Install the cipher of a later epoch for reading (used once reading starts)."""
        self._read_ciphers[epoch] = cipher

    def can_read(self, epoch: int) -> bool:
        """True when keys for ``epoch`` are installed (reading it may not have started)."""
        return epoch in self._read_ciphers

    def start_reading(self, epoch: int) -> None:
        """Make ``epoch`` the current read epoch (after receiving ChangeCipherSpec)."""
        if epoch not in self._read_ciphers:
            raise LocalProtocolError(f"no read keys for epoch {epoch}")
        self.read_epoch = epoch
        self._windows.setdefault(epoch, ReplayWindow())

    def open_application_data(self, datagram: bytes) -> bytes | None:
        """The plaintext of a datagram that is exactly one application-data record of
        the current read epoch (above 0), new to the replay window and authentic.

        The fast path of established sessions: no :class:`Record` is made. None
        for anything else, counting nothing: the caller then gives the datagram
        to the full path (:func:`parse_records`, :meth:`unprotect`), which drops
        and counts what is wrong with it.
        """
        epoch = self.read_epoch
        if (
            not epoch
            or len(datagram) < RECORD_HEADER_SIZE + CCM8_OVERHEAD
            or datagram[0] != ContentType.APPLICATION_DATA
            or datagram[1] != 0xFE
            or datagram[2] != 0xFD
            or (datagram[3] << 8) | datagram[4] != epoch
            or (datagram[11] << 8) | datagram[12] != len(datagram) - RECORD_HEADER_SIZE
        ):
            return None
        cipher = self._read_ciphers[epoch]
        window = self._windows[epoch]
        sequence = int.from_bytes(datagram[5:11], "big")
        if cipher is None or not window.check(sequence):
            return None
        plaintext = cipher.open(
            _APPLICATION_DATA, DTLS_1_2, datagram[3:11], datagram[RECORD_HEADER_SIZE:]
        )
        if plaintext is None or len(plaintext) > MAX_PLAINTEXT:
            return None
        window.update(sequence)
        return plaintext

    def unprotect(self, record: Record, *, allow_previous: bool = True) -> bytes | None:
        """The plaintext of a record of the current read epoch (or epoch 0), or None: dropped.

        Records of epoch 0 are still read after the switch to epoch 1 when
        ``allow_previous`` (the peer's retransmitted flight); the caller
        decides what they may carry.
        """
        epoch = record.epoch
        if epoch != self.read_epoch and not (allow_previous and epoch == 0):
            self.statistics.wrong_epoch += 1
            return None
        if record.version != DTLS_1_2 and not (epoch == 0 and record.version == DTLS_1_0):
            self.statistics.bad_version += 1
            return None
        cipher = self._read_ciphers[epoch]
        if cipher is None:
            # Epoch 0 is unauthenticated: a window there would let one forged record
            # with a high number lock out the real ones. The handshake layer drops
            # repeated messages by message_seq.
            return record.fragment
        window = self._windows[epoch]
        if not window.check(record.sequence):
            self.statistics.replayed += 1
            return None
        plaintext = cipher.open(
            record.content_type, record.version, record.seq_num, record.fragment
        )
        if plaintext is None or len(plaintext) > MAX_PLAINTEXT:
            self.statistics.bad_record_mac += 1
            return None
        window.update(record.sequence)
        return plaintext
