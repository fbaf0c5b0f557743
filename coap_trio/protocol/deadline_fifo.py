"""Response deadlines that arrive in order: a FIFO instead of a heap.

Owns :class:`DeadlineFifo`, the response deadlines of the requests of a
reliable-transport machine (:mod:`coap_trio.protocol.stream_messaging`):
every request there gets the same response timeout, so deadlines are added
in non-decreasing order and the oldest is always the earliest. Adding is an
append; cancelling marks the exchange (its ``deadline_ticket`` set back to
0 by the caller) and the entry is skipped when it reaches the front. When
cancelled entries outnumber live ones (beyond a small slack) the FIFO is
rebuilt without them, so finished requests are not kept alive until their
deadline. Knows nothing of time sources or of what a deadline means.
"""

from __future__ import annotations

from collections import deque

from .exchanges import ClientExchange

__all__ = ["IN_FIFO", "DeadlineFifo"]

#: ``deadline_ticket`` of an exchange whose deadline is in a :class:`DeadlineFifo`.
IN_FIFO = -1
#: Cancelled entries tolerated beyond twice the live ones before a rebuild.
_SLACK = 64


class DeadlineFifo:
    """Deadlines of exchanges, added in non-decreasing order (see the module)."""

    __slots__ = ("_entries", "live")

    def __init__(self) -> None:
        self._entries: deque[tuple[float, ClientExchange]] = deque()
        #: Entries whose exchange still waits (not cancelled, not popped).
        self.live = 0

    def add(self, deadline: float, exchange: ClientExchange) -> None:
        """Add ``exchange``'s deadline (not earlier than any added before)."""
        self._entries.append((deadline, exchange))
        exchange.deadline_ticket = IN_FIFO
        self.live += 1

    def cancel(self, exchange: ClientExchange) -> None:
        """Forget ``exchange``'s deadline; the caller then sets its ticket to 0.

        Amortised O(1): the entry stays until it reaches the front, or until a
        rebuild drops every cancelled entry at once.
        """
        self.live -= 1
        entries = self._entries
        if len(entries) > 2 * self.live + _SLACK:
            self._entries = deque(
                e for e in entries if e[1].deadline_ticket == IN_FIFO and e[1] is not exchange
            )

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None (cancelled entries at the front go)."""
        entries = self._entries
        while entries and entries[0][1].deadline_ticket != IN_FIFO:
            entries.popleft()
        return entries[0][0] if entries else None

    def pop_due(self, now: float) -> list[ClientExchange]:
        """Remove and return the exchanges whose deadline is at or before ``now``, in order.

        Their tickets are set back to 0 (their deadline has passed).
        """
        entries = self._entries
        due = []
        while entries and (entries[0][0] <= now or entries[0][1].deadline_ticket != IN_FIFO):
            _, exchange = entries.popleft()
            if exchange.deadline_ticket == IN_FIFO:
                exchange.deadline_ticket = 0
                self.live -= 1
                due.append(exchange)
        return due

    def __len__(self) -> int:
        """Entries held, cancelled ones included (bounded by 2 x live + a slack)."""
        return len(self._entries)
