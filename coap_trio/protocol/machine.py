"""The interface both messaging machines offer their driver.

Owns :class:`Machine`, the protocol that
:class:`~coap_trio.protocol.messaging.Messaging` (UDP, RFC 7252) and
:class:`~coap_trio.protocol.stream_messaging.StreamMessaging` (TCP, TLS and
WebSockets, RFC 8323) both implement, so that a driver (the endpoint runner)
runs either without knowing which: bytes and calls in, events out, time as
an argument. Where a concept exists on one transport only, the other
machine's method is a documented no-op (UDP has no connections; a stream
has no message IDs). Must not know about trio, sockets or resources.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from ..errors import RequestError
from ..message import Message
from .config import MessagingStatistics
from .exchanges import ClientExchange, Event, ServerExchange
from .observe import SharedNotification

__all__ = ["Machine"]


class Machine(Protocol):
    """A sans-I/O messaging machine for one local endpoint and all its remotes."""

    #: Whether responses arrive in the order they were sent (a reliable,
    #: ordered transport): an observation's notifications are then never stale
    #: (RFC 8323 §7), and no Observe-number reordering check is needed.
    in_order: bool
    #: Whether requests arrive through a multicast group (RFC 7252 §8.2): the
    #: driver then answers after a Leisure and never with an error response.
    multicast: bool
    #: Whether the last :meth:`send_request` or :meth:`respond` left
    #: :meth:`next_deadline` where it was or later (a driver whose timer is
    #: armed for the earliest need not look again).
    kept_next_deadline: bool

    @property
    def statistics(self) -> MessagingStatistics:
        """A snapshot of the counters and table sizes."""
        ...

    # -- client side

    def send_request(
        self, request: Message, remote: Hashable, now: float
    ) -> tuple[ClientExchange, list[Event]]:
        """Start a request towards ``remote``; its exchange and the events to carry out."""
        ...

    def send_group_request(
        self, request: Message, group: Hashable, now: float
    ) -> tuple[ClientExchange, list[Event]]:
        """Start a request to a multicast group (RFC 7252 §8.1): every member's
        response is a ``GroupResponseReceived`` until :meth:`abandon`."""
        ...

    def send_ping(self, remote: Hashable, now: float) -> tuple[ClientExchange, list[Event]]:
        """Send a CoAP ping (RFC 7252 §4.3; RFC 8323 §5.4)."""
        ...

    def abandon(self, exchange: ClientExchange, now: float) -> list[Event]:
        """Give up on ``exchange``: no event for it afterwards. Idempotent."""
        ...

    def set_nstart(self, nstart: int) -> None:
        """Change NSTART (outstanding requests per remote) for future requests."""
        ...

    def mid_available(self, remote: Hashable, now: float) -> bool:
        """Whether a new message towards ``remote`` could go out now (a free message ID)."""
        ...

    def bert_size(self, remote: Hashable) -> int | None:
        """The BERT block payload size agreed with ``remote`` (RFC 8323 §6), or None."""
        ...

    # -- server side

    def respond(
        self, exchange: ServerExchange, response: Message | None, now: float
    ) -> list[Event]:
        """Answer a received request (``None``: no response)."""
        ...

    def notify(
        self,
        exchange: ServerExchange,
        notification: Message,
        now: float,
        *,
        confirmable: bool = False,
    ) -> list[Event]:
        """Send a notification (RFC 7641) of the observation ``exchange`` registered."""
        ...

    def notify_shared(
        self,
        exchange: ServerExchange,
        shared: SharedNotification,
        observe: int,
        now: float,
        *,
        confirmable: bool = False,
    ) -> list[Event]:
        """:meth:`notify` with ``shared.message`` carrying Observe ``observe``: one
        notification rendered for several observers (a machine may encode it once)."""
        ...

    def forget(self, exchange: ServerExchange) -> None:
        """Drop a received request that will not be handled."""
        ...

    def end_observation(self, exchange: ServerExchange) -> None:
        """The driver ended the observation ``exchange`` registered: forget it."""
        ...

    # -- input, connections and time

    def receive(self, data: bytes, remote: Hashable, now: float) -> list[Event]:
        """Process one datagram (or one stream frame, one WebSocket message) from ``remote``."""
        ...

    def peer_error(
        self, remote: Hashable, error: OSError | RequestError, now: float
    ) -> list[Event]:
        """The network reported ``error`` for ``remote``: an ``OSError`` (ICMP), or a
        :class:`~coap_trio.errors.RequestError` the requests towards it fail with as
        it is (its DTLS session failed or ended)."""
        ...

    def connection_made(self, remote: Hashable, now: float) -> list[Event]:
        """A connection to ``remote`` is up."""
        ...

    def connection_lost(self, remote: Hashable, error: Exception | None, now: float) -> list[Event]:
        """The connection to ``remote`` closed (``error`` None) or broke."""
        ...

    def next_deadline(self) -> float | None:
        """When :meth:`timeout` should next be called (None: no timer pending)."""
        ...

    def timeout(self, now: float) -> list[Event]:
        """Process every timer due at ``now``."""
        ...
