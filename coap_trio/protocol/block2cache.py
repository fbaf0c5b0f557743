"""The server's cache of representations being transferred with Block2 (RFC 7959 §2.4), sans I/O.

Owns :class:`Block2Cache`: which rendered representations are kept so that
the later blocks of a Block2 transfer come from the same representation as
its first one (and so that any block can be asked for again), and how that
memory stays bounded. An entry is keyed by ``(remote, key)``: the caller
builds ``key`` from the request (method, cache-key options, Request-Tag;
the payload for FETCH). Entries are bounded per remote, in number and in
bytes; when a bound is reached the least recently used entries are evicted
and counted. An entry expires ``lifetime`` seconds after its last use
(stored or read); expired entries are swept lazily, whenever the cache is
used, so the cache never needs a timer.

Knows nothing of messages, sockets or clocks: values are opaque, their size
is given by the caller, time is passed in as ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .blockwise import EXCHANGE_LIFETIME

__all__ = ["Block2Cache"]

T = TypeVar("T")

_Slot = tuple[Hashable, Hashable]


class _Entry(Generic[T]):
    """One kept representation: the value, its size, its remote, when it expires."""

    __slots__ = ("expires", "nbytes", "remote", "value")

    def __init__(self, value: T, nbytes: int, remote: Hashable, expires: float) -> None:
        self.value = value
        self.nbytes = nbytes
        self.remote = remote
        self.expires = expires


class Block2Cache(Generic[T]):
    """Representations of Block2 transfers in progress, bounded and expiring (LRU).

    ``max_per_remote`` and ``max_total`` bound the number of entries (per
    remote and in all), ``max_bytes`` the sum of their sizes; a single value
    larger than ``max_bytes`` is not kept at all (:meth:`put` returns False).
    ``lifetime`` is how long an entry outlives its last use. Every method
    taking ``now`` first drops the entries that expired by then.
    """

    def __init__(
        self,
        max_per_remote: int = 16,
        max_total: int = 1024,
        max_bytes: int = 64 << 20,
        lifetime: float = EXCHANGE_LIFETIME,
    ) -> None:
        if min(max_per_remote, max_total, max_bytes) < 1 or not lifetime > 0:
            raise ValueError("limits and lifetime must be positive")
        self._max_per_remote = max_per_remote
        self._max_total = max_total
        self._max_bytes = max_bytes
        self._lifetime = lifetime
        #: Every entry, least recently used (= soonest to expire) first.
        self._all: OrderedDict[_Slot, _Entry[T]] = OrderedDict()
        #: Per remote, its slots in the same order.
        self._by_remote: dict[Hashable, OrderedDict[_Slot, None]] = {}
        self._bytes = 0
        #: Entries dropped before their lifetime because a bound was reached.
        self.evicted = 0
        #: Entries dropped because their lifetime passed.
        self.expired = 0
        #: Values not kept because they alone exceed ``max_bytes``.
        self.too_large = 0

    def __len__(self) -> int:
        return len(self._all)

    @property
    def nbytes(self) -> int:
        """The sum of the sizes of all entries."""
        return self._bytes

    @property
    def remotes(self) -> int:
        """How many remotes have entries."""
        return len(self._by_remote)

    def get(self, remote: Hashable, key: Hashable, now: float) -> T | None:
        """The value kept for ``(remote, key)``, or None; a hit counts as a use."""
        self.sweep(now)
        slot = (remote, key)
        entry = self._all.get(slot)
        if entry is None:
            return None
        self._touch(slot, entry, now)
        return entry.value

    def newest(self, remote: Hashable, match: Callable[[Hashable], bool], now: float) -> T | None:
        """The value of ``remote``'s most recently used entry whose key satisfies
        ``match``, or None; a hit counts as a use. Looks at ``remote``'s entries
        only (at most ``max_per_remote``), newest first."""
        self.sweep(now)
        mine = self._by_remote.get(remote)
        if mine is None:
            return None
        for slot in reversed(mine):
            if match(slot[1]):
                entry = self._all[slot]
                self._touch(slot, entry, now)
                return entry.value
        return None

    def put(self, remote: Hashable, key: Hashable, value: T, nbytes: int, now: float) -> bool:
        """Keep ``value`` (``nbytes`` large) for ``(remote, key)``, replacing any older one.

        Evicts least recently used entries (this remote's first, for the
        per-remote bound) to stay within the bounds. Returns False, keeping
        nothing and dropping any older value of that key, when ``nbytes``
        alone exceeds ``max_bytes``.
        """
        if nbytes < 0:
            raise ValueError("a size cannot be negative")
        self.sweep(now)
        slot = (remote, key)
        self._drop(slot)
        if nbytes > self._max_bytes:
            self.too_large += 1
            return False
        mine = self._by_remote.get(remote)
        while mine is not None and len(mine) >= self._max_per_remote:
            self._evict(next(iter(mine)))
            mine = self._by_remote.get(remote)
        while len(self._all) >= self._max_total or self._bytes + nbytes > self._max_bytes:
            self._evict(next(iter(self._all)))
        self._all[slot] = _Entry(value, nbytes, remote, now + self._lifetime)
        self._by_remote.setdefault(remote, OrderedDict())[slot] = None
        self._bytes += nbytes
        return True

    def discard(self, remote: Hashable, key: Hashable) -> bool:
        """Forget ``(remote, key)``; whether there was an entry."""
        return self._drop((remote, key))

    def sweep(self, now: float) -> float | None:
        """Drop the entries expired by ``now``; returns when the next one expires (or None)."""
        entries = self._all
        while entries:
            slot, entry = next(iter(entries.items()))
            if entry.expires > now:
                return entry.expires
            self._drop(slot)
            self.expired += 1
        return None

    def _touch(self, slot: _Slot, entry: _Entry[T], now: float) -> None:
        entry.expires = now + self._lifetime
        self._all.move_to_end(slot)
        self._by_remote[entry.remote].move_to_end(slot)

    def _evict(self, slot: _Slot) -> None:
        self._drop(slot)
        self.evicted += 1

    def _drop(self, slot: _Slot) -> bool:
        entry = self._all.pop(slot, None)
        if entry is None:
            return False
        self._bytes -= entry.nbytes
        mine = self._by_remote[entry.remote]
        del mine[slot]
        if not mine:
            del self._by_remote[entry.remote]
        return True
