"""One bound address of the in-memory network and the task that delivers to it.

Owns :class:`MemoryEndpoint`: the receive heap ordered by (delivery time,
canonical tie-break), the single ``run()`` task that sleeps until the
earliest delivery (or a new arrival) and hands every due datagram over as
one batch, and the endpoint's counters. Must not know how the network
decides fates or routes datagrams: :meth:`MemoryEndpoint.send` hands the
datagram straight to its network, which schedules arrivals back here.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING

import attrs
import trio

from ..remote import DatagramRemote
from ..transports.base import DatagramHandler, EndpointStatistics, ErrorHandler

if TYPE_CHECKING:
    from .network import MemoryNetwork

__all__ = ["MemoryEndpoint"]

#: Heap tie-break after the delivery time: (source host, source port, sends from
#: that source so far, duplicate index), so that datagrams due at one instant
#: come out in one order however trio scheduled their senders.
OrderKey = tuple[str, int, int, int]


@attrs.frozen
class _Arrival:
    data: bytes
    source: DatagramRemote


@attrs.frozen
class _PeerError:
    remote: DatagramRemote
    error: OSError


class MemoryEndpoint:
    """A bound address of a :class:`~coap_trio.testing.MemoryNetwork` (a ``DatagramEndpoint``).

    Made by :meth:`MemoryNetwork.open_endpoint
    <coap_trio.testing.MemoryNetwork.open_endpoint>`. :meth:`send` passes the
    datagram to the network at once; copies that survive the link wait in
    this endpoint's receive heap until their delivery time, and :meth:`run`
    hands all that are due to ``on_datagrams`` as one batch, in the order
    (delivery time, source address, send order of that source).

    Resource handling:
        :meth:`run` closes the endpoint when it exits for any reason;
        :meth:`close` closes it at once (idempotent), which frees the address
        for rebinding, discards every datagram still waiting for delivery
        (counted as ``discarded`` in the network's statistics) and makes a
        running :meth:`run` return. Datagrams queue while :meth:`run` is not
        running (like a socket's receive buffer) without bound.

    Error handling:
        :meth:`send` never blocks or raises for network trouble; on a closed
        endpoint it drops the datagram and counts it in ``send_dropped``. With
        the network's ``icmp_unreachable`` flag, a copy sent to an address
        nobody has bound comes back, when it would have arrived, as
        ``on_error(destination, ConnectionRefusedError(...))``. Exceptions
        raised by the handlers propagate out of :meth:`run`.
    """

    def __init__(
        self, network: MemoryNetwork, local: DatagramRemote, source: DatagramRemote
    ) -> None:
        self._network = network
        self._local = local
        self._source = source
        self._heap: list[tuple[float, OrderKey, int, _Arrival | _PeerError]] = []
        self._tiebreak = itertools.count()
        self._pending = 0  # arrivals (not errors) in the heap
        self._wakeup = trio.Event()
        # The time the waiting run() wakes at anyway; -inf while it isn't waiting.
        self._wake_at = -math.inf
        self._running = False
        self._closed = False
        self._received = self._sent = self._send_dropped = self._peer_errors = 0

    def __repr__(self) -> str:
        host, port = self._local.sockaddr[:2]
        state = "closed" if self._closed else "open"
        return f"<MemoryEndpoint {host} port {port} ({state})>"

    @property
    def local_address(self) -> DatagramRemote:
        """The bound address, with the real port when port 0 was asked for (wildcards stay)."""
        return self._local

    @property
    def source_address(self) -> DatagramRemote:
        """What receivers see as the source: the bound address, or for a wildcard bind
        the network's ``default_host`` with the bound port."""
        return self._source

    @property
    def network(self) -> MemoryNetwork:
        """The network this endpoint is bound in."""
        return self._network

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def statistics(self) -> EndpointStatistics:
        """A snapshot of the counters (the outbox is always empty: sends never wait)."""
        return EndpointStatistics(
            datagrams_received=self._received,
            datagrams_sent=self._sent,
            outbox_depth=0,
            send_dropped=self._send_dropped,
            peer_errors=self._peer_errors,
        )

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        """The canonical remote for an IP literal, equal to what a datagram from it carries."""
        return self._network.remote_for(host, port)

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        """Put one datagram on the simulated wire now; never blocks.

        Must be called from within ``trio.run`` (it reads trio's clock).
        ValueError if ``remote`` is not an IP literal and port.
        """
        if self._closed:
            self._send_dropped += 1
            return
        self._network._transmit(self, bytes(data), remote)
        self._sent += 1

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver due datagrams in batches until cancelled or closed; then close.

        Calls ``task_status.started()`` at once; raises
        ``trio.ClosedResourceError`` on a closed endpoint and
        ``trio.BusyResourceError`` if already running.
        """
        if self._closed:
            raise trio.ClosedResourceError("the endpoint is closed")
        if self._running:
            raise trio.BusyResourceError("the endpoint is already running")
        self._running = True
        try:
            task_status.started()
            while not self._closed:
                self._deliver_due(on_datagrams, on_error)
                if self._closed:
                    break
                await self._wait_for_arrival()
        finally:
            self._running = False
            self.close()

    def close(self) -> None:
        """Unbind now (idempotent): discard waiting datagrams; a running :meth:`run` returns."""
        if self._closed:
            return
        self._closed = True
        self._network._release(self, discarded=self._pending)
        self._pending = 0
        self._heap.clear()
        self._wakeup.set()

    # -- used by the network ---------------------------------------------------

    def _schedule_arrival(
        self, when: float, order: OrderKey, data: bytes, source: DatagramRemote
    ) -> None:
        self._pending += 1
        self._push(when, order, _Arrival(data, source))

    def _schedule_error(
        self, when: float, order: OrderKey, remote: DatagramRemote, error: OSError
    ) -> None:
        self._push(when, order, _PeerError(remote, error))

    # -- internals -------------------------------------------------------------

    def _push(self, when: float, order: OrderKey, item: _Arrival | _PeerError) -> None:
        heapq.heappush(self._heap, (when, order, next(self._tiebreak), item))
        if when < self._wake_at:
            self._wakeup.set()

    async def _wait_for_arrival(self) -> None:
        """Sleep until the earliest scheduled delivery, or until an earlier one is pushed."""
        deadline = self._heap[0][0] if self._heap else math.inf
        self._wakeup = trio.Event()
        self._wake_at = deadline
        try:
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
        finally:
            self._wake_at = -math.inf

    def _deliver_due(self, on_datagrams: DatagramHandler, on_error: ErrorHandler) -> None:
        """Hand every datagram due by now to ``on_datagrams`` in one batch, then the errors."""
        heap = self._heap
        if not heap:
            return
        now = trio.current_time()
        batch: list[tuple[bytes, DatagramRemote]] = []
        errors: list[_PeerError] = []
        while heap and heap[0][0] <= now:
            item = heapq.heappop(heap)[3]
            if isinstance(item, _Arrival):
                batch.append((item.data, item.source))
            else:
                errors.append(item)
        if batch:
            self._pending -= len(batch)
            self._received += len(batch)
            self._network._account_delivered(len(batch))
            on_datagrams(batch)
        for report in errors:
            if self._closed:
                break
            self._peer_errors += 1
            on_error(report.remote, report.error)
