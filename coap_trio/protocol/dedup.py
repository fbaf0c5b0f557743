"""Deduplication of incoming CON and NON messages by (remote, MID), RFC 7252 §4.5.

Owns the record of recently *finished* incoming messages: for a CON, the
reply that was sent (ACK, piggybacked response or RST) so a duplicate gets
the same bytes again; for a NON, just the fact it was seen. Entries live for
EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON).

Memory is bounded per remote and in total: when a bound is reached the
oldest entry (of that remote, or overall) is evicted and counted. Entries
are kept in insertion order (a deque overall and one per remote, with lazy
deletion), so expiry is a sweep from the front, not one timer per message.

An entry costs about 200 bytes at the bound (``benchmarks/dedup_memory.py``
measures it; a server under overload holds 200,000 of them), so it is made
of two objects and no container of its own:

* its key, an ``int``: the remote's small number (given while the remote has
  entries, then reused) shifted left 16 bits, or'ed with the MID;
* its value, one ``bytes``: the expiry as a C double, the remote's number
  with two bits saying what the reply is, the MID, then the reply itself
  (:data:`_HEAD`). An empty ACK or RST for the MID, and a NON's missing
  reply, are those two bits alone: the 4 bytes are rebuilt from the MID,
  exactly as they were sent. Every value is a distinct object, so a queue
  item is live exactly when the dictionary holds that very object.

Neither ``int`` nor ``bytes`` is tracked by the garbage collector: a store
of 200,000 entries must not make full collections scan its objects
(measured with tuples: pauses grew to 370 ms under load, longer than the
piggyback window). Only the per-remote deques are tracked.

A dictionary from which old keys are deleted as new ones arrive grows its
table to three to six times its live keys at each resize (CPython sizes it
from ``used * 3``), 105 bytes per entry at 200,000. A copy of it is sized
from ``used * 1.5``, and lasts until its free slots are used (a deletion
frees none): copying it then keeps the table at 1.5 to 3 times, 52 bytes
per entry at 200,000. The copy costs what a resize costs, a little more
often. When a copy would leave fewer free slots than a quarter of its
keys (live keys just under two thirds of a power of two), the copies come
every quarter of the keys' number of insertions instead, and the table
also grows in between.

Must not know about messages beyond their bytes, or about sockets and time
sources: ``now`` is always an argument.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Hashable
from typing import cast

__all__ = ["DedupStore"]

#: A value's header: expiry (C double), remote number << 2 | reply kind, MID.
#: 14 bytes: a value without reply bytes is a 47-byte object, in a 48-byte block.
_HEAD = struct.Struct("<dIH")
_HEAD_SIZE = _HEAD.size
_pack = _HEAD.pack
_unpack = _HEAD.unpack_from

#: Reply kinds (the low two bits of the header's second field).
_BYTES = 0  #: the reply's bytes follow the header
_NONE = 1  #: nothing to replay (a NON)
_EMPTY_ACK = 2  #: the empty ACK for the MID
_RST = 3  #: the RST for the MID

#: An empty ACK or RST for MID m, read as a big-endian integer and xor'ed with
#: m: its first byte (version 1, no token) << 24, code 0.00 and the MID gone.
_EMPTY_KINDS = {0x60 << 24: _EMPTY_ACK, 0x70 << 24: _RST}

#: Above the most remotes with entries (``max_total`` + 1): their numbers and
#: the kind's two bits fit the header's 32-bit field.
_MAX_TOTAL = 1 << 29

#: Insertions between two copies of the dictionary, at the least.
_MIN_REBUILD = 4096

_Queue = deque[bytes]


class DedupStore:
    """Finished incoming exchanges, for duplicate detection and reply replay.

    ``max_total`` and ``max_per_remote`` bound the entries kept in all and
    per remote (each at least 1, ``max_total`` below 2**29, or ValueError);
    a new entry beyond either evicts the oldest one (of its remote, or overall).
    """

    def __init__(self, max_total: int = 200_000, max_per_remote: int = 20_000) -> None:
        if not 1 <= max_total < _MAX_TOTAL:
            raise ValueError(f"max_total must be at least 1 and below {_MAX_TOTAL}")
        if max_per_remote < 1:
            raise ValueError("max_per_remote must be at least 1")
        self._max_total = max_total
        self._max_per_remote = max_per_remote
        #: key (remote number << 16 | MID) -> value (header + reply).
        self._entries: dict[int, bytes] = {}
        #: Every value recorded, oldest first (some no longer live).
        self._order: _Queue = deque()
        #: The numbers of the remotes that have entries, and what each number is for.
        self._numbers: dict[Hashable, int] = {}
        self._remote_of: list[Hashable] = []
        #: Per number: its remote's live entries, and its values oldest first:
        #: the one value while there is one, a deque once there were several.
        self._live: list[int] = []
        self._queues: list[bytes | _Queue | None] = []
        self._free: list[int] = []
        self._inserted = 0
        self._rebuild_after = _MIN_REBUILD
        #: Entries evicted before their lifetime because a bound was reached.
        self.evicted = 0

    def lookup(self, remote: Hashable, mid: int, now: float) -> tuple[float, bytes | None] | None:
        """``(expires, reply)`` for (remote, mid), or None (expired count as absent).

        ``reply`` is the one recorded (the same bytes), None when none was.
        """
        number = self._numbers.get(remote)
        if number is None:
            return None
        value = self._entries.get(number << 16 | mid)
        if value is None:
            return None
        expires, field, _ = _unpack(value)
        if expires <= now:
            return None
        kind = field & 3
        if kind == _BYTES:
            return expires, value[_HEAD_SIZE:]
        if kind == _NONE:
            return expires, None
        return expires, bytes((0x60 if kind == _EMPTY_ACK else 0x70, 0, mid >> 8, mid & 0xFF))

    def record(
        self, remote: Hashable, mid: int, reply: bytes | None, lifetime: float, now: float
    ) -> None:
        """Remember (remote, mid) for ``lifetime`` seconds with the reply to replay."""
        number = self._numbers.get(remote)
        if number is None:
            number = self._number_for(remote)
        field = number << 2
        if reply is None:
            value = _pack(now + lifetime, field | _NONE, mid)
        elif len(reply) == 4 and (kind := _EMPTY_KINDS.get(int.from_bytes(reply, "big") ^ mid)):
            value = _pack(now + lifetime, field | kind, mid)
        else:
            value = _pack(now + lifetime, field, mid) + reply
        key = number << 16 | mid
        entries = self._entries
        replaced = key in entries
        entries[key] = value
        self._order.append(value)
        queue = self._queues[number]
        if queue is None:
            self._queues[number] = value
        elif isinstance(queue, bytes):
            self._queues[number] = deque((queue, value))
        else:
            queue.append(value)
        if replaced:
            return
        live = self._live[number] = self._live[number] + 1
        if live > self._max_per_remote:
            self._evict_oldest_of(number)
        if len(entries) > self._max_total:
            self._evict_oldest()
        self._inserted += 1
        if self._inserted >= self._rebuild_after:
            self._rebuild()

    def _number_for(self, remote: Hashable) -> int:
        """Give ``remote`` a number (a free one if any)."""
        if self._free:
            number = self._free.pop()
            self._remote_of[number] = remote
        else:
            number = len(self._remote_of)
            self._remote_of.append(remote)
            self._live.append(0)
            self._queues.append(None)
        self._numbers[remote] = number
        return number

    def _rebuild(self) -> None:
        """Copy the dictionary to a table sized for its live keys (see the module's notes)."""
        self._entries = dict(self._entries)
        self._inserted = 0
        self._rebuild_after = max(_free_slots(len(self._entries)), _MIN_REBUILD)

    def _evict_oldest_of(self, number: int) -> None:
        # Over the bound, the remote has at least two entries: its queue is a deque.
        self._evict_first_live(cast(_Queue, self._queues[number]))

    def _evict_oldest(self) -> None:
        self._evict_first_live(self._order)

    def _evict_first_live(self, queue: _Queue) -> None:
        """Evict the entry of the first live value in ``queue``, dropping the values before it."""
        entries = self._entries
        while True:
            value = queue.popleft()
            _, field, mid = _unpack(value)
            key = (field >> 2) << 16 | mid
            if entries.get(key) is value:
                break
        del entries[key]
        self.evicted += 1
        self._count_out(field >> 2)

    def _count_out(self, number: int) -> None:
        """An entry of remote ``number`` was deleted: count it, drop the stale values in front."""
        left = self._live[number] = self._live[number] - 1
        if not left:  # the remote's queue holds no live value: forget the remote
            self._queues[number] = None
            del self._numbers[self._remote_of[number]]
            self._remote_of[number] = None
            self._free.append(number)
            return
        # More than one value was queued for the remote, so its queue is a deque,
        # and one of its values is live.
        queue = cast(_Queue, self._queues[number])
        entries = self._entries
        while True:
            _, field, mid = _unpack(queue[0])
            if entries.get((field >> 2) << 16 | mid) is queue[0]:
                return
            queue.popleft()

    def forget(self, remote: Hashable) -> int:
        """Drop every entry of ``remote`` (its security session ended); returns how many.

        Their values left in the overall order are stale and skipped, as those
        of replaced entries are.
        """
        number = self._numbers.get(remote)
        if number is None:
            return 0
        queue = self._queues[number]
        values = () if queue is None else (queue,) if isinstance(queue, bytes) else tuple(queue)
        entries = self._entries
        forgotten = 0
        for value in values:
            _, field, mid = _unpack(value)
            key = (field >> 2) << 16 | mid
            if entries.get(key) is value:
                del entries[key]
                forgotten += 1
        # The remote has no live entry left: its number is free again.
        self._live[number] = 0
        self._queues[number] = None
        del self._numbers[remote]
        self._remote_of[number] = None
        self._free.append(number)
        return forgotten

    def sweep(self, now: float) -> float | None:
        """Drop expired entries from the front; returns when to sweep next (or None)."""
        order = self._order
        entries = self._entries
        expires: float
        while order:
            value = order[0]
            expires, field, mid = _unpack(value)
            key = (field >> 2) << 16 | mid
            if entries.get(key) is value:
                if expires > now:
                    return expires
                del entries[key]
                self._count_out(field >> 2)
            order.popleft()
        return None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def remotes(self) -> int:
        """How many remotes have entries."""
        return len(self._numbers)


def _free_slots(keys: int) -> int:
    """Insertions a copied dictionary of ``keys`` keys takes before it would grow.

    At least a quarter of ``keys``. CPython 3.11 sizes the copy of a
    dictionary with deleted entries to the power of two at or above 1.5 times
    its keys, two thirds of which are usable (``tests/test_dedup_store.py``
    measures the effect); where it does otherwise, the copies only come more
    or less often than they need to.
    """
    size = 1 << max(3, ((3 * keys + 1) // 2 - 1).bit_length())
    return max(size * 2 // 3 - keys, keys // 4)
