"""The response cache of a proxy (RFC 7252 §5.6): freshness, validation, bounds.

Owns :class:`ResponseCache`: responses stored under a cache key
(:func:`cache_key`: the method, the target URI, the request options that
are part of the cache key, and a FETCH body), fresh for their Max-Age
(default 60 s), kept after that while they carry an ETag so that a 2.03
Valid can make them fresh again (§5.6.2), marked not fresh by a 2.01, 2.02
or 2.04 for the same target (§5.9.1), and bounded in entries and in bytes
(least recently used first out; a response too large for the cache is not
stored).

Sans-I/O: no trio, no sockets; every time is a ``now`` argument (seconds,
any monotonic origin), so the tests drive it without a clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

import attrs

from ..message import Message
from ..numbers.codes import Code

__all__ = [
    "DEFAULT_MAX_AGE",
    "NOT_IN_CACHE_KEY",
    "CacheStatistics",
    "Cached",
    "ResponseCache",
    "cache_key",
]

#: Max-Age of a response that carries none (RFC 7252 §5.10.5).
DEFAULT_MAX_AGE = 60

#: Options left out of the cache key although their numbers would put them in:
#: the target URI replaces Uri-Host/Port/Path/Query and Proxy-Uri/Scheme; ETag
#: in a request is a validator (§5.6.2), not a selector; Block1/Block2/Size1/
#: Size2 and Request-Tag belong to one hop's transfer (a proxy assembles);
#: Observe (RFC 7641 §2) and No-Response (RFC 7967) do not select a
#: representation, nor does the Hop-Limit a request arrives with (RFC 8768).
NOT_IN_CACHE_KEY = frozenset({3, 4, 6, 7, 11, 15, 16, 23, 27, 28, 35, 39, 60, 258, 292})

#: Responses to these methods may be stored (a representation of the target).
_SAFE = frozenset({Code.GET, Code.FETCH})
#: Responses that mark the stored responses for their target not fresh (§5.9.1).
_CHANGING = frozenset({Code.CREATED, Code.DELETED, Code.CHANGED})
#: Bytes counted per entry beyond its payload, options and key (bookkeeping).
_ENTRY_OVERHEAD = 200


def _no_cache_key(number: int) -> bool:
    """RFC 7252 §5.4.6: NoCacheKey is bits 2-4 of the number all set (and safe to forward)."""
    return number & 0x1E == 0x1C


def cache_key(method: Code, target: str, request: Message) -> Hashable:
    """The key a response to ``request`` for ``target`` (an absolute URI) is stored under.

    The method, the target, and the request's options that are part of the
    cache key (RFC 7252 §5.4.2: not NoCacheKey, and not in
    :data:`NOT_IN_CACHE_KEY`), in their order; for FETCH also the body,
    which selects the representation (RFC 8132 §2.3.2).
    """
    options = tuple(
        (number, value)
        for number, value in request.opt.raw_items
        if number not in NOT_IN_CACHE_KEY and not _no_cache_key(number)
    )
    body = request.payload if method == Code.FETCH else b""
    return (int(method), target, options, body)


@attrs.define(slots=True)
class _Entry:
    response: Message
    target: str
    etag: bytes | None
    expires: float
    size: int


@attrs.frozen
class Cached:
    """What :meth:`ResponseCache.lookup` found: a stored response and its state."""

    #: The stored response (a copy: the caller may change it).
    response: Message
    #: Whether it is still fresh at the time of the lookup.
    fresh: bool
    #: Seconds of freshness left, rounded down (0 when stale).
    max_age: int
    #: Its ETag, if it has one (stale entries without one are never returned).
    etag: bytes | None


@attrs.frozen
class CacheStatistics:
    """Counters of a :class:`ResponseCache`."""

    #: Entries stored now, and the bytes they are counted for.
    entries: int
    nbytes: int
    #: Lookups that found a fresh response.
    hits: int
    #: Lookups that found nothing usable, or only a stale response to validate.
    misses: int
    #: Stale responses made fresh again by a 2.03 Valid.
    revalidated: int
    #: Entries dropped to stay within the bounds.
    evicted: int
    #: Responses not stored because they alone exceed ``max_entry_bytes``.
    too_large: int


class ResponseCache:
    """A bounded cache of responses for a proxy (see the module docstring).

    At most ``max_entries`` responses and ``max_bytes`` bytes (payload,
    options and key of each, plus a fixed overhead) are kept; the least
    recently used go first. A response larger than ``max_entry_bytes`` is
    not stored. Only 2.05 Content responses to GET and FETCH are stored,
    and only when they may be used: fresh (Max-Age above 0) or validatable
    (an ETag).
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or max_entry_bytes < 1:
            raise ValueError("the cache bounds must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        # The keys stored for each target URI, to mark them all not fresh at once.
        self._by_target: dict[str, set[Hashable]] = {}
        self._nbytes = 0
        self._hits = 0
        self._misses = 0
        self._revalidated = 0
        self._evicted = 0
        self._too_large = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """The bytes the stored entries are counted for."""
        return self._nbytes

    @property
    def statistics(self) -> CacheStatistics:
        """A snapshot of the counters."""
        return CacheStatistics(
            entries=len(self._entries),
            nbytes=self._nbytes,
            hits=self._hits,
            misses=self._misses,
            revalidated=self._revalidated,
            evicted=self._evicted,
            too_large=self._too_large,
        )

    @staticmethod
    def cacheable(method: Code, response: Message) -> bool:
        """Whether a ``response`` to ``method`` may be stored at all."""
        if method not in _SAFE or response.code != Code.CONTENT:
            return False
        max_age = response.opt.max_age
        return bool(response.opt.etag) or max_age is None or max_age > 0

    def lookup(self, key: Hashable, now: float) -> Cached | None:
        """The response stored under ``key``: fresh, or stale with an ETag to validate.

        A stale one without ETag is dropped. Counts a hit or a miss.
        """
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        left = entry.expires - now
        if left <= 0 and entry.etag is None:
            self._remove(key)
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        fresh = left > 0
        if fresh:
            self._hits += 1
        else:
            self._misses += 1
        return Cached(
            response=entry.response.copy(),
            fresh=fresh,
            max_age=max(0, math.floor(left)) if fresh else 0,
            etag=entry.etag,
        )

    def store(
        self, key: Hashable, target: str, method: Code, response: Message, now: float
    ) -> bool:
        """Keep ``response`` (to ``method`` on ``target``) under ``key``; whether it was stored.

        The response is copied, without Observe and block-wise options. Its
        Max-Age (default 60) starts now.
        """
        if not self.cacheable(method, response):
            return False
        kept = response.copy()
        opt = kept.opt
        opt.observe = None
        opt.block1 = None
        opt.block2 = None
        opt.size1 = None
        opt.size2 = None
        max_age = opt.max_age
        etags = opt.etag
        size = (
            _ENTRY_OVERHEAD
            + len(kept.payload)
            + sum(len(value) + 2 for _, value in opt.raw_items)
            + _key_size(key)
        )
        if size > self.max_entry_bytes:
            self._too_large += 1
            self._remove(key)  # an older, smaller version must not be served instead
            return False
        self._remove(key)
        entry = _Entry(
            response=kept,
            target=target,
            etag=etags[0] if etags else None,
            expires=now + (DEFAULT_MAX_AGE if max_age is None else max_age),
            size=size,
        )
        self._entries[key] = entry
        self._by_target.setdefault(target, set()).add(key)
        self._nbytes += size
        self._shrink()
        return True

    def revalidated(self, key: Hashable, valid: Message, now: float) -> Cached | None:
        """A 2.03 Valid answered the validation of the entry under ``key``.

        When its ETag is the stored one, the entry is fresh again for the
        2.03's Max-Age (default 60; §5.9.1.3) and returned; else None.
        """
        entry = self._entries.get(key)
        etags = valid.opt.etag
        if entry is None or entry.etag is None or (etags and etags[0] != entry.etag):
            return None
        max_age = valid.opt.max_age
        seconds = DEFAULT_MAX_AGE if max_age is None else max_age
        entry.expires = now + seconds
        entry.response.opt.max_age = seconds
        self._entries.move_to_end(key)
        self._revalidated += 1
        return Cached(
            response=entry.response.copy(), fresh=seconds > 0, max_age=seconds, etag=entry.etag
        )

    def response_for_unsafe(self, target: str, response: Message) -> None:
        """An unsafe method on ``target`` was answered ``response``: a 2.01, 2.02 or 2.04
        marks every response stored for the target not fresh (RFC 7252 §5.9.1)."""
        if response.code in _CHANGING:
            self.invalidate(target)

    def invalidate(self, target: str) -> int:
        """Mark every response stored for ``target`` not fresh; how many there were.

        Those with an ETag stay, to be validated; the others are dropped.
        """
        keys = list(self._by_target.get(target, ()))
        for key in keys:
            entry = self._entries[key]
            if entry.etag is None:
                self._remove(key)
            else:
                entry.expires = -math.inf
        return len(keys)

    def clear(self) -> None:
        """Forget every stored response."""
        self._entries.clear()
        self._by_target.clear()
        self._nbytes = 0

    def _remove(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._nbytes -= entry.size
        keys = self._by_target.get(entry.target)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_target[entry.target]

    def _shrink(self) -> None:
        entries = self._entries
        while len(entries) > self.max_entries or self._nbytes > self.max_bytes:
            oldest = next(iter(entries))
            self._remove(oldest)
            self._evicted += 1


def _key_size(key: Hashable) -> int:
    if isinstance(key, tuple) and len(key) == 4:
        _, target, options, body = key
        return len(target) + sum(len(v) + 2 for _, v in options) + len(body)
    return 64
