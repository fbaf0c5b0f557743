"""The contract between the Context and a datagram transport (real UDP or in-memory).

Owns the :class:`DatagramEndpoint` and :class:`DatagramNetwork` protocols and
the endpoint statistics. A transport knows about sockets (or their
simulation) and nothing about CoAP beyond handing bytes in and out.

Sending is synchronous and never blocks: a datagram is written at once when
the socket has room; otherwise it waits in a bounded outbox that the
endpoint's own task flushes when the socket becomes writable (so no two
tasks ever wait on one socket); when the outbox is full too, the datagram is
dropped and counted, as a lossy network would (CON messages are
retransmitted by the messaging layer).

Callbacks: ``on_datagrams`` and ``on_error`` are only ever called from the
endpoint's own ``run`` task, never from inside ``send()`` (so sending from a
callback cannot re-enter it). An exception raised by a callback propagates
out of ``run`` as itself, not wrapped in an ExceptionGroup. ``remote_for``
accepts IP literals only (ValueError otherwise); ``run`` may be called once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from ..errors import RequestError
from ..remote import DatagramRemote

__all__ = [
    "DatagramEndpoint",
    "DatagramHandler",
    "DatagramNetwork",
    "EndpointStatistics",
    "ErrorHandler",
]

#: Called by an endpoint's task with each batch of received datagrams.
DatagramHandler = Callable[[list[tuple[bytes, DatagramRemote]]], None]
#: Called by an endpoint's task when the OS reports an error about a peer
#: (e.g. ICMP port unreachable): the peer and an ``OSError``; or, from an
#: endpoint that secures its datagrams (DTLS), when the peer's session failed
#: or ended: the peer and the :class:`~coap_trio.errors.RequestError` the
#: requests towards it fail with.
ErrorHandler = Callable[[DatagramRemote, OSError | RequestError], None]


@attrs.frozen
class EndpointStatistics:
    """Counters of one endpoint, in the spirit of trio's MemoryChannelStatistics."""

    #: Datagrams handed to the handler.
    datagrams_received: int
    #: Datagrams written to the socket (directly or from the outbox).
    datagrams_sent: int
    #: Datagrams currently waiting in the outbox for the socket to drain.
    outbox_depth: int
    #: Datagrams dropped because the outbox was full, or the send failed for good.
    send_dropped: int
    #: Errors the OS reported about peers (ICMP), handed to the error handler.
    peer_errors: int


class DatagramEndpoint(Protocol):
    """One bound datagram socket."""

    @property
    def local_address(self) -> DatagramRemote:
        """The bound address (with the real port when port 0 was asked for)."""
        ...

    @property
    def statistics(self) -> EndpointStatistics:
        """A snapshot of the counters."""
        ...

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        """The canonical remote for an IP literal, equal to what a datagram from it carries."""
        ...

    def send(self, data: bytes, remote: DatagramRemote) -> None:
        """Send one datagram without blocking (see the module docstring)."""
        ...

    async def run(
        self,
        on_datagrams: DatagramHandler,
        on_error: ErrorHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive (and flush the outbox) until cancelled; then close the socket.

        Calls ``task_status.started()`` once receiving. Each batch of
        datagrams is handed to ``on_datagrams`` synchronously from this task;
        an exception raised by it propagates (it is a bug, not bad input).
        """
        ...

    def close(self) -> None:
        """Close the socket now (idempotent)."""
        ...


class DatagramNetwork(Protocol):
    """Where endpoints come from and how host names resolve: real UDP or a MemoryNetwork."""

    def open_endpoint(self, host: str, port: int) -> DatagramEndpoint:
        """Bind a new endpoint (port 0: any free port)."""
        ...

    def open_group_endpoint(
        self, group: str, port: int, reply: DatagramEndpoint, interface: str | None = None
    ) -> DatagramEndpoint:
        """Join the multicast ``group`` (an IP literal) and receive what is sent to it on
        ``port`` (RFC 7252 §8).

        ``interface`` names the interface to join on (a name or an index; None:
        the system's choice). Datagrams are reported from
        :class:`~coap_trio.remote.MulticastRemote` peers; what the endpoint
        sends goes out through ``reply``, a unicast endpoint of the same
        family, so answers come from a unicast address (§8.2).
        """
        ...

    async def resolve(self, host: str, port: int) -> list[str]:
        """IP addresses for a host name, preferred first. Raises OSError when unresolvable."""
        ...
