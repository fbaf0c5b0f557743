"""A time-ordered heap of deadlines with lazy cancellation.

Owns "what is due next": one heap for every timer of a messaging endpoint
(retransmissions, piggyback windows, response deadlines, expiries) instead of
one timer per message. Knows nothing of what the timers mean.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

__all__ = ["TimerHeap"]

T = TypeVar("T")


class TimerHeap(Generic[T]):
    """Deadlines carrying a payload; cancelled entries are skipped when they surface.

    :meth:`schedule` returns a ticket; an entry fires only if
    :meth:`is_current` still holds for its ticket, which the owner checks
    (typically by storing the ticket on the object the timer is for).
    """

    __slots__ = ("_heap", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._sequence = 0

    def schedule(self, deadline: float, payload: T) -> int:
        """Add a deadline; returns its ticket (unique, increasing)."""
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, payload))
        return self._sequence

    def next_deadline(self) -> float | None:
        """The earliest pending deadline (possibly of a cancelled entry), or None."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[int, T]]:
        """Remove and return ``(ticket, payload)`` of every entry due at ``now``, in order."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            _, ticket, payload = heapq.heappop(heap)
            due.append((ticket, payload))
        return due

    def __len__(self) -> int:
        return len(self._heap)
