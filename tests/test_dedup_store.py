"""DedupStore's compact entries: memory per entry, exact replay, limits, copies.

The store keeps each entry as an ``int`` key and one ``bytes`` value (the
module's notes say why); these tests pin what that form must keep: the
bytes replayed to a duplicate are the bytes recorded, memory stays within
256 bytes per entry at the bound (tracemalloc, the difference between two
fills so that the interpreter's own allocations cancel), entries create no
objects the garbage collector tracks, and the limits are validated.
"""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest

from coap_trio.codec import encode_empty
from coap_trio.numbers.types import Type
from coap_trio.protocol.config import MessagingConfig
from coap_trio.protocol.dedup import DedupStore
from coap_trio.protocol.messaging import Messaging
from coap_trio.remote import DatagramRemote

EXCHANGE_LIFETIME = 247.0
NON_LIFETIME = 145.0


def remotes(count: int) -> list[DatagramRemote]:
    return [DatagramRemote((f"2001:db8::{i:x}", 1024 + i, 0, 0)) for i in range(count)]


def fill(store: DedupStore, peers: list[DatagramRemote], records: int, seed: int) -> None:
    """Record as a server does: 10% NON, the rest CON with an empty ACK or a response."""
    rng = random.Random(seed)
    mids = [rng.randrange(65536) for _ in peers]
    now = 0.0
    for _ in range(records):
        index = rng.randrange(len(peers))
        mid = mids[index]
        mids[index] = (mid + 1) & 0xFFFF
        now += 0.0001
        kind = rng.random()
        if kind < 0.1:
            store.record(peers[index], mid, None, NON_LIFETIME, now)
        elif kind < 0.4:
            store.record(peers[index], mid, encode_empty(Type.ACK, mid), EXCHANGE_LIFETIME, now)
        else:
            size = rng.randrange(20, 61)
            reply = b"\x68\x45" + mid.to_bytes(2, "big") + bytes(size - 4)
            store.record(peers[index], mid, reply, EXCHANGE_LIFETIME, now)


def traced_at_plateau(bound: int, peers: list[DatagramRemote]) -> int:
    """Bytes tracemalloc sees held by a store of ``bound`` entries, filled twice over."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = DedupStore(max_total=bound, max_per_remote=bound)
        fill(store, peers, 2 * bound, seed=bound)
        assert len(store) == bound
        assert store.evicted > 0.9 * bound  # at the bound: each new entry evicted one
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_memory_per_entry_at_the_bound() -> None:
    peers = remotes(1000)
    small = traced_at_plateau(10_000, peers)
    large = traced_at_plateau(60_000, peers)
    per_entry = (large - small) / 50_000
    print(f"DedupStore: {per_entry:.0f} bytes per entry, {large / 60_000:.0f} at 60,000")
    assert per_entry <= 256
    # All included, at a bound where a dictionary that only grows would
    # hold a table of 4.4 times its keys: the copies keep it at 2.2 times.
    assert large / 60_000 <= 210


def test_entries_are_not_tracked_by_the_garbage_collector() -> None:
    peers = remotes(50)
    store = DedupStore()
    gc.collect()
    tracked = len(gc.get_objects())
    fill(store, peers, 20_000, seed=1)
    gc.collect()
    assert len(store) == 20_000
    # At most one deque per remote; no object per entry.
    assert len(gc.get_objects()) - tracked <= len(peers) + 10


def four_byte_replies(mid: int) -> list[bytes]:
    """Empty ACK and RST (stored compactly), and 4-byte replies that are not."""
    high, low = mid >> 8, mid & 0xFF
    return [
        encode_empty(Type.ACK, mid),
        encode_empty(Type.RST, mid),
        encode_empty(Type.ACK, (mid + 1) & 0xFFFF),  # another MID's
        encode_empty(Type.RST, mid ^ 0x100),
        encode_empty(Type.CON, mid),
        encode_empty(Type.NON, mid),
        bytes((0x60, 0x45, high, low)),  # a piggybacked 2.05 without token or payload
        bytes((0x61, 0x00, high, low)),  # an ACK with a token length
        bytes((0x50, 0x00, high, low)),  # version 1 NON... with ACK's bits elsewhere
        bytes((0xE0, 0x00, high, low)),  # version 3
    ]


@pytest.mark.parametrize("mid", [0, 1, 255, 256, 0x1234, 0xFF00, 0xFFFF])
def test_every_reply_is_replayed_as_recorded(mid: int) -> None:
    replies: list[bytes | None] = [
        None,
        b"\x68\x45" + mid.to_bytes(2, "big") + b"token123\xffhello",
        b"x" * 1200,
        *four_byte_replies(mid),
    ]
    store = DedupStore()
    for index, reply in enumerate(replies):
        store.record(("remote", index), mid, reply, EXCHANGE_LIFETIME, 1.0)
    for index, reply in enumerate(replies):
        entry = store.lookup(("remote", index), mid, 2.0)
        assert entry is not None
        assert entry == (1.0 + EXCHANGE_LIFETIME, reply)
        assert entry[1] is None or type(entry[1]) is bytes
    assert len(store) == len(replies)


def test_the_expiry_is_kept_exactly() -> None:
    store = DedupStore()
    now = 0.1 + 0.2  # not a short binary fraction
    store.record("a", 7, encode_empty(Type.ACK, 7), 247.0, now)
    entry = store.lookup("a", 7, now)
    assert entry is not None
    assert entry[0] == now + 247.0
    assert store.lookup("a", 7, now + 247.0) is None
    assert store.sweep(now) == now + 247.0


@pytest.mark.parametrize(
    ("max_total", "max_per_remote", "message"),
    [
        (0, 10, "max_total"),
        (-1, 10, "max_total"),
        (1 << 29, 10, "max_total"),
        (10, 0, "max_per_remote"),
        (10, -5, "max_per_remote"),
    ],
)
def test_limits_are_validated(max_total: int, max_per_remote: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DedupStore(max_total=max_total, max_per_remote=max_per_remote)


def test_messaging_refuses_a_per_remote_dedup_bound_below_one() -> None:
    with pytest.raises(ValueError, match="max_per_remote"):
        Messaging(MessagingConfig(dedup_max_per_remote=0), random.Random(0))


def test_the_smallest_limits_work() -> None:
    store = DedupStore(max_total=1, max_per_remote=1)
    store.record("a", 1, b"one", 10.0, 0.0)
    store.record("a", 2, b"two", 10.0, 1.0)  # the remote's bound: its oldest goes
    store.record("b", 1, b"three", 10.0, 2.0)  # the total bound: the oldest goes
    assert store.evicted == 2
    assert (len(store), store.remotes) == (1, 1)
    assert store.lookup("b", 1, 3.0) == (12.0, b"three")


def test_entries_survive_the_copies_of_the_dictionary() -> None:
    # 30,000 new keys into a store of 5,000: the dictionary is copied every
    # few thousand insertions; every entry must still be found, in order.
    store = DedupStore(max_total=5_000, max_per_remote=5_000)
    for number in range(30_000):
        store.record(number % 700, number // 700, number.to_bytes(3, "big"), 100.0, number / 1000)
    assert len(store) == 5_000
    assert store.evicted == 25_000
    for number in range(30_000):
        entry = store.lookup(number % 700, number // 700, 30.0)
        if number < 25_000:
            assert entry is None
        else:
            assert entry == (100.0 + number / 1000, number.to_bytes(3, "big"))
    assert store.sweep(200.0) is None
    assert (len(store), store.remotes) == (0, 0)


def test_numbers_of_departed_remotes_are_reused_safely() -> None:
    # A remote whose entries all left gives its number back; the next remote
    # gets it while stale queue items with that number are still queued.
    store = DedupStore(max_total=100, max_per_remote=1)
    store.record("a", 5, b"a5", 10.0, 0.0)
    store.record("a", 6, b"a6", 10.0, 1.0)  # evicts a/5 (stale item left in the queue)
    store.record("a", 6, b"a6'", 10.0, 2.0)  # replaced: its first item is stale too
    assert store.sweep(12.0) is None  # a/6 expired: "a" is gone, its number free
    store.record("b", 5, b"b5", 10.0, 13.0)
    store.record("b", 6, b"b6", 10.0, 14.0)
    assert store.lookup("b", 6, 15.0) == (24.0, b"b6")
    assert store.lookup("a", 6, 15.0) is None
    assert (len(store), store.remotes, store.evicted) == (1, 1, 2)


def test_forget_drops_one_remotes_entries_and_frees_its_number() -> None:
    store = DedupStore(max_total=100, max_per_remote=10)
    for mid in range(5):
        store.record("a", mid, b"\x60\x00" + mid.to_bytes(2, "big"), 100.0, 0.0)
        store.record("b", mid, None, 100.0, 0.0)
    store.record("a", 3, b"reply", 100.0, 1.0)  # a replaced entry: a stale value queued
    assert store.forget("a") == 5
    assert store.forget("a") == 0
    assert all(store.lookup("a", mid, 2.0) is None for mid in range(5))
    assert all(store.lookup("b", mid, 2.0) == (100.0, None) for mid in range(5))
    assert len(store) == 5
    store.record("a", 1, b"again", 100.0, 3.0)  # the remote comes back with a new number
    assert store.lookup("a", 1, 4.0) == (103.0, b"again")
    for _ in range(20):  # the stale values of the forgotten remote are skipped by eviction
        store.record("c", _, None, 100.0, 5.0)
    assert len(store) <= 100
