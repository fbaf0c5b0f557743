"""What the in-memory network saw: the capture of datagrams and the network-wide counters.

Owns :class:`CapturedDatagram` (one copy of one datagram on the simulated
wire, with its fate), :class:`NetworkStatistics` and the bounded capture
buffer that keeps records in a canonical order. Must not know how fates are
decided or how endpoints deliver; the network hands finished records in.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import attrs

from ..remote import DatagramRemote

__all__ = ["CapturedDatagram", "Fate", "NetworkStatistics"]

#: What became of one copy of a datagram.
#:
#: ``"delivered"``: queued for its destination endpoint, to be handed over at
#: ``deliver_at`` (unless that endpoint closes first); ``"dropped"``: lost by
#: the link; ``"undeliverable"``: nobody had bound the destination address.
Fate = Literal["delivered", "dropped", "undeliverable"]

#: Sort key of a record: (time, source host, source port, sends from that
#: source so far, duplicate index). Records of one instant from different
#: tasks thus have one order, whatever order trio ran the tasks in.
CaptureKey = tuple[float, str, int, int, int]


@attrs.frozen
class CapturedDatagram:
    """One copy of one datagram as the simulated wire saw it.

    A duplicated datagram gives two records (the second with
    ``duplicate=True``), each with its own fate and delivery time.
    """

    #: When it was sent (trio's clock).
    time: float
    #: The sender's address, exactly the remote the receiver sees.
    source: DatagramRemote
    #: The destination address (canonical), as sent to.
    destination: DatagramRemote
    #: The datagram's bytes.
    data: bytes
    #: How many times these exact bytes had been sent from this source to this
    #: destination before (0 for the first transmission, 1 for a retransmission...).
    copy: int
    #: What became of this copy.
    fate: Fate
    #: When it is (or was) handed to the receiver; None unless ``fate == "delivered"``.
    deliver_at: float | None
    #: True for the extra copy made by link duplication.
    duplicate: bool = False


@attrs.frozen
class NetworkStatistics:
    """Network-wide counters, a snapshot.

    Every copy is accounted for exactly once: ``sent + duplicated == dropped +
    undeliverable + delivered + in_flight + discarded``.
    """

    #: Datagrams handed to the network by endpoints' ``send``.
    sent: int
    #: Datagrams the link duplicated (each adds one copy).
    duplicated: int
    #: Copies lost by the link.
    dropped: int
    #: Copies handed to a receiving endpoint's handler.
    delivered: int
    #: Copies sent to an address nobody had bound.
    undeliverable: int
    #: Copies queued for an endpoint, waiting for their delivery time.
    in_flight: int
    #: Copies that were queued for an endpoint that closed before delivering them.
    discarded: int
    #: Capture records removed to keep the capture within ``max_capture``.
    capture_evicted: int


class CaptureBuffer:
    """The bounded capture: records sorted by :data:`CaptureKey`, oldest evicted first."""

    def __init__(self, *, enabled: bool, limit: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"max_capture must be an int >= 0, not {limit!r}")
        self.enabled = enabled
        self.limit = limit
        self.evicted = 0
        self._entries: deque[tuple[CaptureKey, CapturedDatagram]] = deque()

    def add(self, key: CaptureKey, record: CapturedDatagram) -> None:
        """Insert a record at its place (near the end: keys never go back in time)."""
        if not self.enabled:
            return
        entries = self._entries
        position = len(entries)
        while position and entries[position - 1][0] > key:
            position -= 1
        if position == len(entries):
            entries.append((key, record))
        else:
            entries.insert(position, (key, record))
        if len(entries) > self.limit:
            entries.popleft()
            self.evicted += 1

    def records(self) -> list[CapturedDatagram]:
        """A snapshot of the records, oldest first."""
        return [record for _, record in self._entries]

    def clear(self) -> None:
        """Forget every record (the eviction count stays)."""
        self._entries.clear()
