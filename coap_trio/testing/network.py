"""An in-memory, lossy, deterministic datagram network for testing CoAP applications.

Owns :class:`MemoryNetwork`: binding fake IP addresses (specific or
wildcard, with deterministic ephemeral ports), the fake resolver, routing,
the per-direction link conditions, the reproducible decisions about every
datagram (drop, duplicate, delay, reorder), the capture and the network-wide
counters. It implements :class:`~coap_trio.transports.base.DatagramNetwork`
and must not know CoAP: it moves bytes between
:class:`~coap_trio.testing.MemoryEndpoint` objects, and knows nothing of
sockets or of how endpoints hand datagrams to their handlers.

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
import os
import random
from typing import TYPE_CHECKING, Any

import trio

from ..remote import DatagramRemote
from ._addresses import IPV4_WILDCARD, IPV6_WILDCARD, canonical_host, check_port, is_wildcard
from .capture import CaptureBuffer, CapturedDatagram, Fate, NetworkStatistics
from .conditions import ConditionTable, LinkConditions, judge
from .endpoint import MemoryEndpoint
from .resolver import HostTable

if TYPE_CHECKING:
    from ..transports.base import DatagramEndpoint, DatagramNetwork

__all__ = ["EPHEMERAL_PORTS", "MemoryNetwork"]

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

        Port 0 takes the next port of :data:`EPHEMERAL_PORTS` not bound on any
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

    def _release(self, endpoint: MemoryEndpoint, *, discarded: int) -> None:
        """Unbind a closing endpoint and account for the copies it never delivered."""
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
