"""Gaps in the deduplication store's tests that mutation testing found
(docs/testing.md, "Mutation testing").

Each test pins a behaviour that a surviving mutant of
``coap_trio/protocol/dedup.py`` changed without any other test noticing.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable

import pytest

from coap_trio.protocol.dedup import DedupStore, _free_slots

LIFETIME = 247.0


def test_forget_drops_the_entries_of_a_remote_that_is_not_the_first() -> None:
    """RFC 7252 §4.5 and a secure session that ended (``Messaging.peer_error``): a
    forgotten remote's entries leave the store, whatever number the remote had
    (the first remote's number is 0, where a wrong key still looks right), and a
    remote that later gets its number finds none of them."""
    store = DedupStore(max_total=100, max_per_remote=100)
    store.record("first", 7, b"kept", LIFETIME, 0.0)
    for number, remote in enumerate(("second", "third"), start=1):
        for mid in range(3):
            store.record(remote, mid, b"%d/%d" % (number, mid), LIFETIME, 0.0)
    assert len(store) == 7
    assert store.forget("second") == 3
    assert len(store) == 4
    assert store.remotes == 2
    # The number "second" had is given to the next new remote: none of the
    # forgotten replies may be replayed to it.
    store.record("fourth", 9, b"new", LIFETIME, 1.0)
    assert [store.lookup("fourth", mid, 2.0) for mid in range(3)] == [None, None, None]
    assert store.lookup("fourth", 9, 2.0) == (LIFETIME + 1.0, b"new")
    assert store.lookup("third", 1, 2.0) == (LIFETIME, b"2/1")
    assert store.lookup("first", 7, 2.0) == (LIFETIME, b"kept")
    assert store.forget("third") == 3
    assert len(store) == 2


def test_default_bounds() -> None:
    """200,000 entries in all, 20,000 per remote (MessagingConfig's defaults too)."""
    store = DedupStore()
    for mid in range(20_001):
        store.record("busy", mid & 0xFFFF, None, LIFETIME, 0.0)
    assert (len(store), store.evicted) == (20_000, 1)
    assert store.lookup("busy", 0, 1.0) is None
    for remote in range(10):
        for mid in range(18_000):
            store.record(remote, mid, None, LIFETIME, 0.0)
    assert len(store) == 200_000
    assert store.evicted == 1
    store.record("last", 1, None, LIFETIME, 0.0)
    assert (len(store), store.evicted) == (200_000, 2)


def test_bounds_are_validated_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"^max_per_remote must be at least 1$"):
        DedupStore(max_per_remote=0)
    with pytest.raises(ValueError, match=r"^max_total must be at least 1 and below 536870912$"):
        DedupStore(max_total=0)


def _copy_free_slots(keys: int) -> int:
    """Insertions into CPython's copy of a dictionary of ``keys`` keys (some
    deleted before) until it grows: what _free_slots predicts."""
    table = dict.fromkeys(range(keys + 64))
    for index in range(64):
        del table[index]
    copy = dict(table)
    size = sys.getsizeof(copy)
    added = 0
    while True:
        copy[-1 - added] = None
        if sys.getsizeof(copy) != size:
            return added
        added += 1


# Around 2**14 / 1.5: the copy of 10,922 keys is just full, that of 10,923 has room.
@pytest.mark.parametrize("keys", [4096, 5000, 10_922, 10_923, 60_000, 200_000])
def test_free_slots_are_those_of_the_power_of_two_at_or_above_one_and_a_half_keys(
    keys: int,
) -> None:
    """The dictionary copies come when the copy would grow (and at least a
    quarter of the keys apart): a copy is sized to the power of two at or above
    1.5 times its keys, two thirds of which are usable (CPython 3.11)."""
    size = 8
    while size < 1.5 * keys:
        size *= 2
    assert _free_slots(keys) == max(size * 2 // 3 - keys, keys // 4)
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
        assert _free_slots(keys) == max(_copy_free_slots(keys), keys // 4)


def test_the_dictionary_is_copied_every_4096_insertions_of_new_keys() -> None:
    """The memory strategy of the module's notes: the entries' dictionary is
    copied (a new object, sized for its live keys) after a number of insertions
    of new keys: 4,096 at the least, counted afresh after each copy; a replaced
    entry is no insertion."""
    store = DedupStore(max_total=1_000, max_per_remote=1_000)
    entries = store._entries
    copied_at = []
    for index in range(3 * 4096 + 10):
        store.record(index % 50, index // 50, None, LIFETIME, 0.0)
        if index % 1000 == 0:
            store.record(index % 50, index // 50, b"again", LIFETIME, 0.0)  # replaced
        if store._entries is not entries:
            copied_at.append(index + 1)
            entries = store._entries
    assert copied_at == [4096, 8192, 12288]
    assert len(store) == 1_000


def test_an_empty_ack_or_rst_costs_no_more_than_a_non() -> None:
    """The module's notes: an empty ACK or RST for the entry's own MID is kept as
    two bits (rebuilt from the MID on replay), not as its 4 bytes: it costs what a
    NON's entry costs, where any other 4-byte reply costs more."""

    def cost(reply: Callable[[int], bytes | None]) -> int:
        store = DedupStore(max_total=10_000, max_per_remote=10_000)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for mid in range(5_000):
                store.record("r", mid, reply(mid), LIFETIME, 0.0)
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    non = cost(lambda mid: None)
    for first in (0x60, 0x70):  # empty ACK, RST
        assert cost(lambda mid, first=first: bytes((first, 0, mid >> 8, mid & 0xFF))) <= non
    other = cost(lambda mid: bytes((0x60, 0, (mid >> 8) ^ 1, mid & 0xFF)))  # another MID's
    assert other > non + 5_000 * 2
