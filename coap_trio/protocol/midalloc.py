"""Message-ID allocation per remote, honouring RFC 7252 §4.4.

Owns which MIDs are in use towards each remote. MIDs start at a random value
per remote, increment and wrap; a MID is not reused towards the same remote
within EXCHANGE_LIFETIME of its allocation. When all 65,536 are in use the
allocator says so (and when the next one frees) instead of reusing one: one
local endpoint can thus send at most 65,536 messages per remote per
EXCHANGE_LIFETIME (~265/s sustained); a client that needs more uses several
local endpoints (the Context spreads requests over them).

The log is run-length encoded per second of expiry, so a busy remote costs
at most ~EXCHANGE_LIFETIME entries, not one per message. The number of
remotes tracked is bounded; beyond it the least recently used remote's state
is dropped and counted (it only matters if that remote is sent to again
within EXCHANGE_LIFETIME, when its new random start makes a collision
unlikely but possible).

Must not know about messages or sockets.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Hashable

from .randomness import RandomBytes

__all__ = ["MessageIdAllocator"]

_MID_SPACE = 0x10000


class _PeerMids:
    __slots__ = ("in_use", "log", "next_mid")

    def __init__(self, start: int) -> None:
        self.next_mid = start
        self.in_use = 0
        #: (expiry rounded up to a whole second, how many MIDs expire then), oldest
        #: first. A list, not a deque: one per remote (an empty deque costs ~600
        #: bytes), and at most one entry per second of EXCHANGE_LIFETIME.
        self.log: list[list[float]] = []


class MessageIdAllocator:
    """Allocates MIDs per remote; see the module docstring for the rules."""

    def __init__(
        self,
        lifetime: float,
        rng: random.Random,
        max_remotes: int = 100_000,
        space: int = _MID_SPACE,
    ) -> None:
        if not 1 <= space <= _MID_SPACE:
            raise ValueError(f"the message-ID space is 1..{_MID_SPACE} IDs, not {space}")
        self._lifetime = lifetime
        #: How many MIDs there are: 65,536 (RFC 7252); fewer only in tests.
        self._space = space
        # A new remote's first MID: pooled OS randomness (no getrandom() per
        # remote), or the seeded rng's own sequence.
        self._random = RandomBytes(rng)
        self._max_remotes = max_remotes
        self._peers: OrderedDict[Hashable, _PeerMids] = OrderedDict()
        #: Remotes whose state was dropped because max_remotes was reached.
        self.evicted = 0

    def _peer(self, remote: Hashable, now: float) -> _PeerMids:
        peer = self._peers.get(remote)
        if peer is None:
            if len(self._peers) >= self._max_remotes:
                self._sweep(now)
                if len(self._peers) >= self._max_remotes:
                    self._peers.popitem(last=False)
                    self.evicted += 1
            peer = _PeerMids(self._random.below(self._space))
            self._peers[remote] = peer
        else:
            self._peers.move_to_end(remote)
        return peer

    @staticmethod
    def _expire(peer: _PeerMids, now: float) -> None:
        log = peer.log
        expired = 0
        for expiry, count in log:
            if expiry > now:
                break
            peer.in_use -= int(count)
            expired += 1
        if expired:
            del log[:expired]

    def available(self, remote: Hashable, now: float) -> bool:
        """Whether a MID can be allocated towards ``remote`` now."""
        peer = self._peers.get(remote)
        if peer is None:
            return True
        self._expire(peer, now)
        return peer.in_use < self._space

    def next_free_time(self, remote: Hashable) -> float | None:
        """When the next MID towards ``remote`` frees up (None if one is free now)."""
        peer = self._peers.get(remote)
        if peer is None or peer.in_use < self._space:
            return None
        return peer.log[0][0]

    def allocate(self, remote: Hashable, now: float) -> int | None:
        """A fresh MID towards ``remote``, or None when all are in use."""
        peer = self._peer(remote, now)
        self._expire(peer, now)
        if peer.in_use >= self._space:
            return None
        mid = peer.next_mid
        peer.next_mid = (mid + 1) % self._space
        peer.in_use += 1
        expiry = math.ceil(now + self._lifetime)
        log = peer.log
        if log and log[-1][0] == expiry:
            log[-1][1] += 1
        else:
            log.append([expiry, 1])
        return mid

    def _sweep(self, now: float) -> None:
        for remote in list(self._peers):
            peer = self._peers[remote]
            self._expire(peer, now)
            if not peer.in_use:
                del self._peers[remote]

    def sweep(self, now: float) -> None:
        """Forget remotes with no MID in use (memory housekeeping)."""
        self._sweep(now)

    def __len__(self) -> int:
        return len(self._peers)
