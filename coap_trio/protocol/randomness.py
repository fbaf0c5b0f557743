"""Random bytes for tokens and message-ID starts, with few system calls.

``random.SystemRandom`` asks the operating system on every call (one
``getrandom()`` per token, per new remote's first MID). :class:`RandomBytes`
draws the OS's randomness a block at a time and hands it out in slices; a
seeded ``random.Random`` (tests) is asked per call instead, so its sequence
stays reproducible. Must not know about messages or sockets.
"""

from __future__ import annotations

import random

__all__ = ["RandomBytes"]

#: Bytes of operating-system randomness drawn at once.
POOL_SIZE = 4096


class RandomBytes:
    """Random bytes from ``rng``: pooled when it is a ``SystemRandom``."""

    __slots__ = ("_at", "_pool", "_pooled", "_rng")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        # Pooled when the bytes come from the OS (``rng`` is a SystemRandom).
        self._pooled = isinstance(rng, random.SystemRandom)
        self._pool = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        """``count`` random bytes (0 to :data:`POOL_SIZE`)."""
        if not self._pooled:
            return self._rng.randbytes(count) if count else b""
        at = self._at
        end = at + count
        if end > len(self._pool):
            self._pool = self._rng.randbytes(POOL_SIZE)
            at, end = 0, count
        self._at = end
        return self._pool[at:end]

    def below(self, limit: int) -> int:
        """A random integer in ``0 .. limit - 1`` (``limit`` at most 2**16, unbiased)."""
        if not self._pooled:
            return self._rng.randrange(limit)
        while True:  # rejection sampling: a power of two accepts every draw
            value = int.from_bytes(self.take(2), "big")
            if value < 0x10000 - 0x10000 % limit:
                return value % limit
