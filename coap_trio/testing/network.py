"""An in-memory, lossy, deterministic datagram network for testing CoAP applications.

Owns :class:`MemoryNetwork` and its :class:`MemoryEndpoint` objects (one
simulation: the network schedules arrivals on endpoints, an endpoint hands
what it sends to its network). The network: binding fake IP addresses (specific or
wildcard, with deterministic ephemeral ports), the fake resolver, routing,
the per-direction link conditions, the reproducible decisions about every
datagram (drop, duplicate, delay, reorder), the capture and the network-wide
counters. It implements :class:`~coap_trio.transports.base.DatagramNetwork`
and must not know CoAP: it moves bytes between endpoints. An endpoint:
the receive heap ordered by (delivery time, canonical tie-break), the single
``run()`` task that sleeps until the earliest delivery (or a new arrival)
and hands every due datagram over as one batch, and its counters.

Determinism: every decision about a datagram is drawn from a
``random.Random`` seeded by a BLAKE2b hash of (seed, source address,
destination address, bytes, copy number), where the copy number counts
earlier sends of the same bytes between the same two addresses. Nothing
depends on the order trio runs tasks in or on ``PYTHONHASHSEED``, so the
same seed and the same traffic give the same capture, in every process.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import ipaddress
import itertools
import math
import os
import random
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..remote import DatagramRemote, MulticastRemote
from ..transports.base import DatagramEndpoint, DatagramHandler, EndpointStatistics, ErrorHandler
from ._addresses import IPV4_WILDCARD, IPV6_WILDCARD, canonical_host, check_port, is_wildcard
from .capture import CaptureBuffer, CapturedDatagram, Fate, NetworkStatistics
from .conditions import ConditionTable, LinkConditions, judge
from .resolver import HostTable

if TYPE_CHECKING:
    from ..transports.base import DatagramEndpoint, DatagramNetwork

__all__ = ["EPHEMERAL_PORTS", "MemoryEndpoint", "MemoryNetwork"]


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


class MemoryGroupEndpoint(MemoryEndpoint):
    """A member of a multicast group on a :class:`MemoryNetwork` (RFC 7252 §8).

    Made by :meth:`MemoryNetwork.open_group_endpoint`: it receives a copy of
    every datagram sent to the group and port (each copy meets the link
    conditions on its own, as on a real network), reports the senders as
    :class:`~coap_trio.remote.MulticastRemote`, and sends through its
    ``reply`` endpoint, so that answers come from a unicast address.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        local: DatagramRemote,
        reply: DatagramEndpoint,
    ) -> None:
        super().__init__(network, local, local)
        self._reply = reply
        #: The group address joined.
        self.group: str = local.host

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        """Send through the reply endpoint (a unicast address)."""
        self._reply.send(data, remote)

    def _schedule_arrival(
        self, when: float, order: OrderKey, data: bytes, source: DatagramRemote
    ) -> None:
        marked = MulticastRemote(source.sockaddr, source.scheme, self.group)
        super()._schedule_arrival(when, order, data, marked)


#: The ports handed out, in order, for binds to port 0.
EPHEMERAL_PORTS = range(49152, 65536)

_PERFECT = LinkConditions()
_DESTINATION_CACHE_LIMIT = 65536


class MemoryNetwork:
    """A simulated datagram network between fake IP addresses (a ``DatagramNetwork``).

    Made for tests under ``trio.testing.MockClock(autojump_threshold=0)``
    (pytest-trio's ``autojump_clock`` fixture), where delays cost no real
    time; it works with trio's real clock too. Typical use::

        network = MemoryNetwork(seed=1, conditions=LinkConditions(loss=0.2))
        server = network.open_endpoint("10.0.0.2", 5683)
        client = network.open_endpoint("::", 0)  # sends from default_host
        ...
        assert [d.fate for d in network.capture] == [...]

    Arguments:
        seed: Selects one reproducible set of decisions.
        conditions: The default :class:`LinkConditions` of every direction;
            see :meth:`set_conditions` for overrides.
        capture: Whether to record every copy in :attr:`capture`.
        max_capture: At most this many records are kept (the oldest go first,
            counted in ``statistics.capture_evicted``).
        default_host: The source address of endpoints bound to a wildcard.
        icmp_unreachable: Report copies sent to an address nobody has bound to
            the sender's ``on_error`` as ``ConnectionRefusedError``, at the time
            they would have arrived (like ICMP port unreachable).

    Addresses are any IP literals, with no interfaces or families enforced:
    binding ``"10.0.0.1"`` needs no setup, and any endpoint can send to any
    address. ``"::"`` receives datagrams for its port sent to any address not
    bound specifically, ``"0.0.0.0"`` likewise but IPv4 destinations only
    (and before ``"::"``). The route is chosen at send time: copies in flight
    to an endpoint that closes are discarded, not rerouted to a new binding.

    Datagrams sent at one instant by different tasks with zero delay reach
    a receiver in batches that depend on how trio scheduled those tasks; with
    a positive minimum delay (``LinkConditions(delay=(0.001, ...))``) under
    ``MockClock`` the batches are reproducible too, as everything sent at one
    instant is queued before the clock moves on. The network remembers one
    small entry per distinct (source, destination, bytes) sent, for the copy
    numbers.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        conditions: LinkConditions = _PERFECT,
        capture: bool = True,
        max_capture: int = 100_000,
        default_host: str = "10.0.0.1",
        icmp_unreachable: bool = False,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, not {type(seed).__name__}")
        default = canonical_host(default_host)
        if is_wildcard(default):
            raise ValueError(f"default_host must be a specific address, not {default_host!r}")
        self._seed = seed
        self._default_host = default
        self._conditions = ConditionTable(conditions)
        self._capture = CaptureBuffer(enabled=capture, limit=max_capture)
        #: Whether unreachable destinations are reported to senders (see the class docs).
        self.icmp_unreachable = icmp_unreachable
        self._bindings: dict[tuple[str, int], MemoryEndpoint] = {}
        #: Group members by (group, port).
        self._groups: dict[tuple[str, int], list[MemoryGroupEndpoint]] = {}
        self._ports_in_use: dict[int, int] = {}
        self._next_port = EPHEMERAL_PORTS.start
        self._hosts = HostTable()
        self._copies: dict[bytes, int] = {}
        self._destinations: dict[tuple[Any, ...], DatagramRemote] = {}
        self._source_sends: dict[tuple[str, int], int] = {}
        self._sent = self._duplicated = self._dropped = self._delivered = 0
        self._undeliverable = self._in_flight = self._discarded = 0

    @property
    def seed(self) -> int:
        """The seed that selects this network's decisions."""
        return self._seed

    @property
    def default_host(self) -> str:
        """The source address (canonical) of endpoints bound to a wildcard."""
        return self._default_host

    @property
    def conditions(self) -> LinkConditions:
        """The default conditions of every direction without an override."""
        return self._conditions.default

    @property
    def capture(self) -> list[CapturedDatagram]:
        """A snapshot of the capture, one record per copy, oldest first.

        Records are ordered by send time, then source address, then the order
        in which that source sent: so records of one instant are in the same
        order in every run, whatever order trio ran the sending tasks in.
        """
        return self._capture.records()

    @property
    def statistics(self) -> NetworkStatistics:
        """A snapshot of the network-wide counters."""
        return NetworkStatistics(
            sent=self._sent,
            duplicated=self._duplicated,
            dropped=self._dropped,
            delivered=self._delivered,
            undeliverable=self._undeliverable,
            in_flight=self._in_flight,
            discarded=self._discarded,
            capture_evicted=self._capture.evicted,
        )

    def clear_capture(self) -> None:
        """Forget the records captured so far (counters are kept)."""
        self._capture.clear()

    def set_conditions(
        self,
        conditions: LinkConditions | None,
        *,
        source: str | None = None,
        destination: str | None = None,
    ) -> None:
        """Set the conditions of datagrams from ``source`` to ``destination`` hosts.

        A host of None means any. With neither, this replaces the default. A
        datagram takes the most specific match: (source, destination), then
        (source, any), then (any, destination), then the default. Hosts are
        the addresses on the wire (a wildcard endpoint sends from
        :attr:`default_host`). ``conditions=None`` removes an override.
        Applies to datagrams sent from now on.
        """
        self._conditions.set(conditions, source, destination)

    def conditions_for(self, source: str, destination: str) -> LinkConditions:
        """The conditions a datagram from ``source`` to ``destination`` host would meet."""
        return self._conditions.lookup(canonical_host(source), canonical_host(destination))

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        """``DatagramRemote((canonical host, port), "coap")``: what a datagram from there carries.

        ValueError unless ``host`` is an IP literal and ``port`` in range.
        """
        check_port(port)
        return DatagramRemote((canonical_host(host), port), "coap")

    def open_endpoint(self, host: str, port: int) -> MemoryEndpoint:
        """Bind a new endpoint to an IP literal (or wildcard) and port; port 0 picks one.

        Port 0 takes the next port from 49152 up (``EPHEMERAL_PORTS``) not bound on any
        address, so ports are reproducible. ``OSError(EADDRINUSE)`` when the
        address and port are bound already; ValueError for a host that is not
        an IP literal or a port out of range.
        """
        canonical = canonical_host(host)
        check_port(port)
        if port == 0:
            port = self._allocate_port()
        elif (canonical, port) in self._bindings:
            raise OSError(errno.EADDRINUSE, f"address already in use: {canonical} port {port}")
        local = DatagramRemote((canonical, port), "coap")
        source = local
        if is_wildcard(canonical):
            source = DatagramRemote((self._default_host, port), "coap")
        endpoint = MemoryEndpoint(self, local, source)
        self._bindings[canonical, port] = endpoint
        self._ports_in_use[port] = self._ports_in_use.get(port, 0) + 1
        return endpoint

    def open_group_endpoint(
        self, group: str, port: int, reply: DatagramEndpoint, interface: str | None = None
    ) -> MemoryGroupEndpoint:
        """Join the multicast ``group`` on ``port``: the new member receives a copy of
        everything sent there (see :class:`MemoryGroupEndpoint`); it answers through
        ``reply``. Any number of members may join one group and port; ``interface``
        is accepted and ignored (the network has one link). ValueError unless
        ``group`` is a multicast literal."""
        canonical = canonical_host(group)
        check_port(port)
        if not ipaddress.ip_address(canonical).is_multicast:
            raise ValueError(f"not a multicast address: {group!r}")
        member = MemoryGroupEndpoint(self, DatagramRemote((canonical, port), "coap"), reply)
        self._groups.setdefault((canonical, port), []).append(member)
        return member

    def replay(self, record: CapturedDatagram) -> None:
        """Send a captured datagram again, from its source to its destination, now.

        What a duplicating router or an attacker replaying the wire does: the
        bytes go out again as if the endpoint bound at ``record.source`` had
        sent them (the link conditions apply). ValueError when no open
        endpoint sends from that address any more.
        """
        for endpoint in self._bindings.values():
            if endpoint.source_address == record.source and not endpoint.closed:
                self._transmit(endpoint, record.data, record.destination)
                return
        raise ValueError(f"no open endpoint sends from {record.source}")

    def add_host(self, name: str, *addresses: str) -> None:
        """Make ``name`` resolve to these IP literals, preferred first (replaces earlier ones).

        Names are matched case-insensitively, ignoring a trailing dot.
        """
        self._hosts.add(name, addresses)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of a host added with :meth:`add_host` (an IP literal: itself).

        A checkpoint that never uses threads (real lookups would, and threads
        stall ``MockClock``'s autojump). Unknown names raise
        ``socket.gaierror(EAI_NONAME)``, an OSError.
        """
        await trio.lowlevel.checkpoint()
        check_port(port)
        return self._hosts.lookup(host)

    # -- used by endpoints -----------------------------------------------------

    def _transmit(self, sender: MemoryEndpoint, data: bytes, remote: DatagramRemote) -> None:
        """Decide the fate of every copy of one datagram, schedule and record them."""
        now = trio.current_time()
        source = sender.source_address
        src_host, src_port = source.sockaddr[:2]
        destination = self._destinations.get(remote.sockaddr)
        if destination is None:
            destination = self._canonical_destination(remote)
        dst_host, dst_port = destination.sockaddr

        triple = hashlib.blake2b(
            repr((src_host, src_port, dst_host, dst_port)).encode() + b"\0" + data,
            digest_size=16,
        ).digest()
        copy = self._copies.get(triple, 0)
        self._copies[triple] = copy + 1
        sends = self._source_sends.get((src_host, src_port), 0)
        self._source_sends[src_host, src_port] = sends + 1

        conditions = self._conditions.lookup(src_host, dst_host)
        members = self._groups.get((dst_host, dst_port)) if self._groups else None
        if members:
            self._sent += 1
            for number, member in enumerate(members):
                self._deliver_copies(
                    sender, member, data, destination, conditions, triple, copy, sends, number
                )
            return
        delays: list[float | None] = [0.0]
        if not conditions.is_perfect:
            seed = hashlib.blake2b(triple + repr((self._seed, copy)).encode(), digest_size=16)
            delays = judge(conditions, random.Random(int.from_bytes(seed.digest())).random)

        receiver = self._route(dst_host, dst_port)
        self._sent += 1
        if len(delays) > 1:
            self._duplicated += 1
        for index, delay in enumerate(delays):
            order = (src_host, src_port, sends, index)
            fate: Fate
            deliver_at = None
            if delay is None:
                fate = "dropped"
                self._dropped += 1
            elif receiver is None:
                fate = "undeliverable"
                self._undeliverable += 1
                if self.icmp_unreachable:
                    refused = ConnectionRefusedError(
                        errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED)
                    )
                    sender._schedule_error(now + delay, order, destination, refused)
            else:
                fate = "delivered"
                deliver_at = now + delay
                self._in_flight += 1
                receiver._schedule_arrival(deliver_at, order, data, source)
            record = CapturedDatagram(
                time=now,
                source=source,
                destination=destination,
                data=data,
                copy=copy,
                fate=fate,
                deliver_at=deliver_at,
                duplicate=index > 0,
            )
            self._capture.add((now, *order), record)

    def _deliver_copies(
        self,
        sender: MemoryEndpoint,
        member: MemoryGroupEndpoint,
        data: bytes,
        destination: DatagramRemote,
        conditions: LinkConditions,
        triple: bytes,
        copy: int,
        sends: int,
        number: int,
    ) -> None:
        """The copies of one datagram sent to a group that reach one ``member``."""
        now = trio.current_time()
        source = sender.source_address
        src_host, src_port = source.sockaddr[:2]
        delays: list[float | None] = [0.0]
        if not conditions.is_perfect:
            salt = repr((self._seed, copy, "member", number)).encode()
            seed = hashlib.blake2b(triple + salt, digest_size=16)
            delays = judge(conditions, random.Random(int.from_bytes(seed.digest())).random)
        if len(delays) > 1:
            self._duplicated += 1
        for index, delay in enumerate(delays):
            order = (src_host, src_port, sends, number * 16 + index)
            fate: Fate = "dropped"
            deliver_at = None
            if delay is None:
                self._dropped += 1
            else:
                fate = "delivered"
                deliver_at = now + delay
                self._in_flight += 1
                member._schedule_arrival(deliver_at, order, data, source)
            record = CapturedDatagram(
                time=now,
                source=source,
                destination=destination,
                data=data,
                copy=copy,
                fate=fate,
                deliver_at=deliver_at,
                duplicate=index > 0,
            )
            self._capture.add((now, *order), record)

    def _release(self, endpoint: MemoryEndpoint, *, discarded: int) -> None:
        """Unbind a closing endpoint and account for the copies it never delivered."""
        if isinstance(endpoint, MemoryGroupEndpoint):
            key = endpoint.local_address.sockaddr[:2]
            members = self._groups.get(key)
            if members is not None and endpoint in members:
                members.remove(endpoint)
                if not members:
                    del self._groups[key]
            self._in_flight -= discarded
            self._discarded += discarded
            return
        host, port = endpoint.local_address.sockaddr[:2]
        if self._bindings.get((host, port)) is endpoint:
            del self._bindings[host, port]
            remaining = self._ports_in_use[port] - 1
            if remaining:
                self._ports_in_use[port] = remaining
            else:
                del self._ports_in_use[port]
        self._in_flight -= discarded
        self._discarded += discarded

    def _account_delivered(self, count: int) -> None:
        self._in_flight -= count
        self._delivered += count

    # -- internals -------------------------------------------------------------

    def _canonical_destination(self, remote: DatagramRemote) -> DatagramRemote:
        """The canonical remote for a destination's sockaddr (remembered, up to a limit)."""
        host, port = remote.sockaddr[:2]
        check_port(port)
        destination = DatagramRemote((canonical_host(host), port), "coap")
        if len(self._destinations) >= _DESTINATION_CACHE_LIMIT:
            self._destinations.clear()
        self._destinations[remote.sockaddr] = destination
        return destination

    def _route(self, host: str, port: int) -> MemoryEndpoint | None:
        """The endpoint that receives datagrams for ``host``: specific, then wildcards."""
        bindings = self._bindings
        endpoint = bindings.get((host, port))
        if endpoint is None and ":" not in host:
            endpoint = bindings.get((IPV4_WILDCARD, port))
        if endpoint is None:
            endpoint = bindings.get((IPV6_WILDCARD, port))
        return endpoint

    def _allocate_port(self) -> int:
        for _ in EPHEMERAL_PORTS:
            port = self._next_port
            self._next_port = port + 1 if port + 1 in EPHEMERAL_PORTS else EPHEMERAL_PORTS.start
            if port not in self._ports_in_use:
                return port
        raise OSError(errno.EADDRINUSE, "no free ephemeral port")


if TYPE_CHECKING:  # mypy checks that the classes fulfil the transport contract

    def _conforms(network: MemoryNetwork) -> tuple[DatagramNetwork, DatagramEndpoint]:
        return network, network.open_endpoint("10.0.0.1", 0)
