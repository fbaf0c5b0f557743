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

    __slots__ = ("_cancelled", "_heap", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._sequence = 0
        self._cancelled: set[int] = set()

    def schedule(self, deadline: float, payload: T) -> int:
        """Add a deadline; returns its ticket (unique, increasing)."""
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, payload))
        return self._sequence

    def cancel(self, ticket: int) -> None:
        """Mark an entry cancelled: it will neither fire nor count as the next deadline.

        Cheap (a set insertion); the entry leaves the heap when it surfaces, so
        a driver sleeping until :meth:`next_deadline` is not woken for it.
        """
        if ticket:
            self._cancelled.add(ticket)

    def next_deadline(self) -> float | None:
        """The earliest deadline of an entry not cancelled, or None."""
        heap = self._heap
        cancelled = self._cancelled
        while heap and heap[0][1] in cancelled:
            cancelled.discard(heapq.heappop(heap)[1])
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[tuple[int, T]]:
        """Remove and return ``(ticket, payload)`` of every live entry due at ``now``, in order."""
        heap = self._heap
        cancelled = self._cancelled
        due = []
        while heap and heap[0][0] <= now:
            _, ticket, payload = heapq.heappop(heap)
            if ticket in cancelled:
                cancelled.discard(ticket)
            else:
                due.append((ticket, payload))
        return due

    def __len__(self) -> int:
        return len(self._heap)
