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

#: Below this many cancelled entries the heap is never rebuilt (lazy removal suffices).
_COMPACT_MIN = 64


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
        a driver sleeping until :meth:`next_deadline` is not woken for it. When
        cancelled entries make up more than half of a heap of over
        ``_COMPACT_MIN`` entries, the heap is rebuilt without them (amortised
        O(1) per cancel): long deadlines that are nearly always cancelled, such
        as a response deadline per request, would otherwise keep every
        finished exchange alive until its deadline passed.
        """
        if ticket:
            cancelled = self._cancelled
            cancelled.add(ticket)
            if len(cancelled) > _COMPACT_MIN and 2 * len(cancelled) > len(self._heap):
                self._compact()

    def _compact(self) -> None:
        """Drop every cancelled entry and restore the heap order."""
        cancelled = self._cancelled
        self._heap = [entry for entry in self._heap if entry[1] not in cancelled]
        heapq.heapify(self._heap)
        cancelled.clear()

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
