"""Tests for coap_trio.protocol.block2cache: the bounded, expiring Block2 representation cache."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.protocol.block2cache import Block2Cache
from coap_trio.protocol.blockwise import EXCHANGE_LIFETIME

A = ("192.0.2.1", 5683)
B = ("192.0.2.2", 5683)


def test_a_stored_value_is_returned_for_its_remote_and_key_only() -> None:
    cache: Block2Cache[bytes] = Block2Cache()
    assert cache.put(A, "k", b"one", 3, now=0.0)
    assert cache.get(A, "k", now=1.0) == b"one"
    assert cache.get(A, "other", now=1.0) is None
    assert cache.get(B, "k", now=1.0) is None
    assert (len(cache), cache.nbytes, cache.remotes) == (1, 3, 1)


def test_putting_the_same_key_replaces_the_value_and_its_size() -> None:
    cache: Block2Cache[bytes] = Block2Cache()
    cache.put(A, "k", b"old", 300, now=0.0)
    cache.put(A, "k", b"new", 7, now=1.0)
    assert cache.get(A, "k", now=2.0) == b"new"
    assert (len(cache), cache.nbytes, cache.evicted) == (1, 7, 0)


def test_the_default_lifetime_is_exchange_lifetime() -> None:
    cache: Block2Cache[str] = Block2Cache()
    cache.put(A, "k", "v", 1, now=0.0)
    assert cache.get(A, "k", now=EXCHANGE_LIFETIME - 0.001) == "v"
    assert cache.get(A, "k", now=2 * EXCHANGE_LIFETIME - 0.002) == "v"  # the read renewed it
    assert cache.get(A, "k", now=3 * EXCHANGE_LIFETIME) is None
    assert cache.expired == 1


def test_an_entry_expires_lifetime_after_its_last_use() -> None:
    cache: Block2Cache[str] = Block2Cache(lifetime=10.0)
    cache.put(A, "k", "v", 1, now=0.0)
    assert cache.get(A, "k", now=9.0) == "v"  # used at 9: now lives until 19
    assert cache.get(A, "k", now=18.9) == "v"  # until 28.9
    assert cache.get(A, "k", now=28.9) is None  # exactly at expiry: gone
    assert (len(cache), cache.nbytes, cache.remotes, cache.expired, cache.evicted) == (
        0,
        0,
        0,
        1,
        0,
    )


def test_sweep_drops_expired_entries_and_says_when_the_next_expires() -> None:
    cache: Block2Cache[str] = Block2Cache(lifetime=10.0)
    assert cache.sweep(0.0) is None
    cache.put(A, "a", "1", 1, now=0.0)
    cache.put(B, "b", "2", 1, now=3.0)
    cache.put(A, "c", "3", 1, now=5.0)
    assert cache.sweep(9.0) == 10.0
    assert cache.sweep(12.0) == 13.0  # "a" went
    assert len(cache) == 2
    assert cache.sweep(100.0) is None
    assert (len(cache), cache.nbytes, cache.remotes, cache.expired) == (0, 0, 0, 3)


def test_every_use_sweeps_lazily() -> None:
    cache: Block2Cache[str] = Block2Cache(max_per_remote=100, lifetime=1.0)
    for i in range(100):
        cache.put(A, i, "v", 10, now=0.0)
    assert cache.nbytes == 1000
    cache.put(B, "late", "v", 10, now=5.0)  # the put itself drops the 100 expired ones
    assert (len(cache), cache.nbytes, cache.expired) == (1, 10, 100)
    cache.get(B, "missing", now=7.0)
    assert (len(cache), cache.nbytes, cache.remotes) == (0, 0, 0)


def test_the_per_remote_bound_evicts_that_remotes_least_recently_used() -> None:
    cache: Block2Cache[str] = Block2Cache(max_per_remote=2)
    cache.put(A, "a1", "v", 1, now=0.0)
    cache.put(B, "b1", "v", 1, now=0.5)
    cache.put(A, "a2", "v", 1, now=1.0)
    cache.get(A, "a1", now=2.0)  # a2 is now A's least recently used
    cache.put(A, "a3", "v", 1, now=3.0)
    assert cache.get(A, "a2", now=4.0) is None
    assert cache.get(A, "a1", now=4.0) == "v"
    assert cache.get(A, "a3", now=4.0) == "v"
    assert cache.get(B, "b1", now=4.0) == "v"  # another remote's entry is untouched
    assert cache.evicted == 1


def test_the_total_bound_evicts_the_least_recently_used_of_any_remote() -> None:
    cache: Block2Cache[str] = Block2Cache(max_total=3)
    for i, remote in enumerate((A, B, A)):
        cache.put(remote, i, "v", 1, now=float(i))
    cache.get(A, 0, now=5.0)
    cache.put(B, "new", "v", 1, now=6.0)
    assert cache.get(B, 1, now=7.0) is None
    assert [cache.get(A, 0, now=7.0), cache.get(A, 2, now=7.0), cache.get(B, "new", now=7.0)] == [
        "v",
        "v",
        "v",
    ]
    assert (len(cache), cache.evicted) == (3, 1)


def test_the_byte_bound_evicts_until_the_new_value_fits() -> None:
    cache: Block2Cache[str] = Block2Cache(max_bytes=100)
    cache.put(A, "a", "v", 40, now=0.0)
    cache.put(B, "b", "v", 40, now=1.0)
    cache.put(A, "c", "v", 10, now=2.0)
    cache.put(B, "d", "v", 90, now=3.0)  # a and b must go; then 10 + 90 fits exactly
    assert (len(cache), cache.nbytes, cache.evicted) == (2, 100, 2)
    assert cache.get(B, "d", now=4.0) == "v"
    assert cache.get(A, "c", now=4.0) == "v"
    assert cache.get(A, "a", now=4.0) is None


def test_a_value_larger_than_the_byte_bound_is_not_kept_and_drops_the_older_one() -> None:
    cache: Block2Cache[str] = Block2Cache(max_bytes=100)
    cache.put(A, "k", "small", 10, now=0.0)
    cache.put(B, "other", "v", 10, now=0.0)
    assert not cache.put(A, "k", "huge", 101, now=1.0)
    assert cache.get(A, "k", now=2.0) is None  # never a stale representation for that key
    assert cache.get(B, "other", now=2.0) == "v"
    assert (cache.too_large, cache.evicted, cache.nbytes) == (1, 0, 10)


def test_newest_is_the_most_recently_used_match_of_that_remote() -> None:
    cache: Block2Cache[str] = Block2Cache(lifetime=10.0)
    cache.put(A, ("q", b"1"), "one", 1, now=0.0)
    cache.put(A, ("q", b"2"), "two", 1, now=1.0)
    cache.put(A, ("other", b"3"), "three", 1, now=2.0)
    cache.put(B, ("q", b"4"), "four", 1, now=3.0)

    def query(key: object) -> bool:
        return isinstance(key, tuple) and key[0] == "q"

    assert cache.newest(A, query, now=4.0) == "two"
    assert cache.get(A, ("q", b"1"), now=5.0) == "one"  # a use: now the newest
    assert cache.newest(A, query, now=6.0) == "one"
    assert cache.newest(A, lambda key: False, now=6.0) is None
    assert cache.newest(("192.0.2.9", 5683), query, now=6.0) is None
    # A hit counts as a use (renews the entry); expired entries are swept first.
    assert cache.newest(A, query, now=14.0) == "one"
    assert cache.newest(A, query, now=23.0) == "one"
    assert cache.get(A, ("q", b"2"), now=23.0) is None
    assert cache.newest(A, query, now=40.0) is None


def test_discard() -> None:
    cache: Block2Cache[str] = Block2Cache()
    cache.put(A, "k", "v", 5, now=0.0)
    assert cache.discard(A, "k")
    assert not cache.discard(A, "k")
    assert (len(cache), cache.nbytes, cache.remotes) == (0, 0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_per_remote": 0},
        {"max_total": 0},
        {"max_bytes": 0},
        {"lifetime": 0.0},
        {"lifetime": float("nan")},
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Block2Cache(**kwargs)  # type: ignore[arg-type]


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError):
        Block2Cache[str]().put(A, "k", "v", -1, now=0.0)


def test_a_hundred_thousand_distinct_keys_stay_within_the_bounds() -> None:
    cache: Block2Cache[int] = Block2Cache(max_per_remote=16, max_total=1024, max_bytes=50_000)
    for i in range(100_000):
        remote = (f"192.0.2.{i % 300}", 5683)
        cache.put(remote, i, i, 100, now=i * 0.001)
        assert len(cache) <= 1024
    assert cache.nbytes <= 50_000
    assert len(cache) == 500  # the byte bound binds first: 500 x 100 bytes
    assert cache.evicted == 100_000 - 500


# -- a reference model, and Hypothesis ---------------------------------------------------------


@dataclass
class _ModelEntry:
    slot: tuple[object, object]
    value: int
    nbytes: int
    expires: float


class _Model:
    """The specification, written plainly: a list in least-recently-used order."""

    def __init__(self, per_remote: int, total: int, max_bytes: int, lifetime: float) -> None:
        self.per_remote, self.total, self.max_bytes, self.lifetime = (
            per_remote,
            total,
            max_bytes,
            lifetime,
        )
        self.entries: list[_ModelEntry] = []
        self.evicted = self.expired = self.too_large = 0

    def _sweep(self, now: float) -> None:
        kept = [e for e in self.entries if e.expires > now]
        self.expired += len(self.entries) - len(kept)
        self.entries = kept

    def _find(self, slot: tuple[object, object]) -> _ModelEntry | None:
        return next((e for e in self.entries if e.slot == slot), None)

    def get(self, slot: tuple[object, object], now: float) -> int | None:
        self._sweep(now)
        entry = self._find(slot)
        if entry is None:
            return None
        self.entries.remove(entry)
        entry.expires = now + self.lifetime
        self.entries.append(entry)
        return entry.value

    def put(self, slot: tuple[object, object], value: int, nbytes: int, now: float) -> bool:
        self._sweep(now)
        old = self._find(slot)
        if old is not None:
            self.entries.remove(old)
        if nbytes > self.max_bytes:
            self.too_large += 1
            return False
        while sum(e.slot[0] == slot[0] for e in self.entries) >= self.per_remote:
            self.entries.remove(next(e for e in self.entries if e.slot[0] == slot[0]))
            self.evicted += 1
        while (
            len(self.entries) >= self.total
            or sum(e.nbytes for e in self.entries) + nbytes > self.max_bytes
        ):
            self.entries.pop(0)
            self.evicted += 1
        self.entries.append(_ModelEntry(slot, value, nbytes, now + self.lifetime))
        return True


_operation = st.tuples(
    st.sampled_from(["put", "get", "discard", "sweep"]),
    st.sampled_from([A, B, ("192.0.2.3", 1)]),
    st.integers(0, 5),  # key
    st.integers(0, 120),  # size
    st.floats(0.0, 4.0),  # time passing before the operation
)


@settings(deadline=None, max_examples=300)
@given(
    per_remote=st.integers(1, 4),
    total=st.integers(1, 8),
    max_bytes=st.integers(1, 300),
    lifetime=st.floats(0.5, 10.0),
    operations=st.lists(_operation, max_size=60),
)
def test_the_cache_behaves_like_its_reference_model(
    per_remote: int,
    total: int,
    max_bytes: int,
    lifetime: float,
    operations: list[tuple[str, tuple[str, int], int, int, float]],
) -> None:
    cache: Block2Cache[int] = Block2Cache(per_remote, total, max_bytes, lifetime)
    model = _Model(per_remote, total, max_bytes, lifetime)
    now = 0.0
    for serial, (kind, remote, key, size, wait) in enumerate(operations):
        now += wait
        slot = (remote, key)
        if kind == "put":
            assert cache.put(remote, key, serial, size, now) == model.put(slot, serial, size, now)
        elif kind == "get":
            assert cache.get(remote, key, now) == model.get(slot, now)
        elif kind == "discard":
            model._sweep(now)
            cache.sweep(now)
            found = model._find(slot)
            if found is not None:
                model.entries.remove(found)
            assert cache.discard(remote, key) == (found is not None)
        else:
            model._sweep(now)
            following = cache.sweep(now)
            assert following == (model.entries[0].expires if model.entries else None)
        # The bounds always hold, and the counters agree with the model.
        assert len(cache) == len(model.entries) <= total
        assert cache.nbytes == sum(e.nbytes for e in model.entries) <= max_bytes
        per = {}
        for entry in model.entries:
            per[entry.slot[0]] = per.get(entry.slot[0], 0) + 1
        assert all(count <= per_remote for count in per.values())
        assert cache.remotes == len(per)
        assert (cache.evicted, cache.expired, cache.too_large) == (
            model.evicted,
            model.expired,
            model.too_large,
        )
