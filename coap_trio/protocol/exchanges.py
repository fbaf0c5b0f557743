"""Exchanges and the events the messaging machine hands to its driver.

Owns the small mutable records of one client exchange (a request we sent)
and one server exchange (a request we received), the states each machine
keeps them in (one set per machine: UDP's acknowledgements mean nothing
on a stream), and the event types. Events are small records with
``__slots__``, made by the machine and read by the driver, which must not
change them. Must not know about trio, sockets or resources; the legal
transitions between the states are tables in each machine's module.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable

from ..errors import CoapError
from ..message import Message
from ..numbers.types import Type
from .reliability import Transmission

__all__ = [
    "ClientExchange",
    "ClientState",
    "CloseConnection",
    "Event",
    "GroupResponseReceived",
    "MessageIdsExhausted",
    "NotificationReceived",
    "RequestFailed",
    "RequestReceived",
    "ResponseAcknowledged",
    "ResponseFailed",
    "ResponseReceived",
    "ServerExchange",
    "ServerState",
    "StreamClientState",
    "StreamServerState",
    "Transmit",
]


class ClientState(enum.IntEnum):
    """Where a request we sent over UDP stands (:class:`~coap_trio.protocol.messaging.Messaging`).

    Its legal transitions are ``CLIENT_TRANSITIONS`` in that module.
    """

    #: Waiting for an NSTART slot or a free message ID towards its remote.
    QUEUED = 0
    #: Transmitted; a CON is retransmitted until acknowledged.
    SENT = 1
    #: An empty ACK arrived; waiting for the separate response.
    ACKNOWLEDGED = 2
    #: An observation (RFC 7641): the first response came with Observe;
    #: notifications arrive until it is abandoned or a final response ends it.
    OBSERVING = 3
    #: Answered, failed or abandoned; nothing more will happen.
    DONE = 4


class StreamClientState(enum.IntEnum):
    """Where a request we sent over a reliable transport stands (RFC 8323;
    :class:`~coap_trio.protocol.stream_messaging.StreamMessaging`).

    No ACKNOWLEDGED: nothing is acknowledged on a stream. Its legal
    transitions are ``CLIENT_TRANSITIONS`` in that module.
    """

    #: Larger than the default Max-Message-Size: waiting for the peer's CSM.
    QUEUED = 0
    #: Transmitted; its response is awaited.
    SENT = 1
    #: An observation (RFC 7641, RFC 8323 §7): notifications arrive until it ends.
    OBSERVING = 3
    #: Answered, failed or abandoned; nothing more will happen.
    DONE = 4


class ServerState(enum.IntEnum):
    """Where a request we received over UDP stands.

    Its legal transitions are ``SERVER_TRANSITIONS`` in
    :mod:`~coap_trio.protocol.messaging`.
    """

    #: Being handled; a CON will get a piggybacked response if it is quick.
    PENDING = 0
    #: The piggyback window passed: an empty ACK went out; a separate response follows.
    ACKNOWLEDGED = 1
    #: A separate CON response or notification is being (re)transmitted.
    RESPONDING = 2
    #: The response was sent (and acknowledged, when it was a CON), or given up;
    #: an observation's notifications may still follow (RFC 7641).
    DONE = 3


class StreamServerState(enum.IntEnum):
    """Where a request we received over a reliable transport stands (RFC 8323).

    Its legal transitions are ``SERVER_TRANSITIONS`` in
    :mod:`~coap_trio.protocol.stream_messaging`.
    """

    #: Being handled.
    PENDING = 0
    #: Answered (or dropped); an observation's notifications may still follow.
    DONE = 3


# (module constants: an Enum class attribute is slow on 3.11)
_DONE, _STREAM_DONE = ClientState.DONE, StreamClientState.DONE
_OBSERVING, _STREAM_OBSERVING = ClientState.OBSERVING, StreamClientState.OBSERVING


_OBSERVE = 6  # RFC 7641


class ClientExchange:
    """A request this endpoint sent, from first transmission to its end."""

    __slots__ = (
        "con",
        "counted",
        "deadline_ticket",
        "first_sent",
        "group",
        "mid",
        "observe",
        "owner",
        "ping",
        "remote",
        "request",
        "state",
        "token",
        "transmission",
        "transmissions",
    )

    def __init__(
        self,
        request: Message,
        remote: Hashable,
        token: bytes,
        con: bool,
        state: ClientState | StreamClientState,
    ) -> None:
        self.request = request
        self.remote = remote
        self.token = token
        self.con = con
        #: An empty CON sent to provoke an RST (§4.3), not a request.
        self.ping = False
        #: A request to a multicast group (RFC 7252 §8.1): responses from any
        #: member match it by token, each one a ``GroupResponseReceived``.
        self.group = False
        #: A registration (GET/FETCH with Observe=0): more than one response may come.
        #: (``opt.observe == 0`` without decoding options: the items are in wire
        #: order, so the scan stops at the first number past Observe.)
        observe = False
        for number, value in request.opt.raw_items:
            if number >= _OBSERVE:
                observe = number == _OBSERVE and len(value) <= 3 and not any(value)
                break
        self.observe = observe
        #: Whether it occupies one of its remote's NSTART slots.
        self.counted = False
        self.mid: int | None = None
        #: Its machine's state (the machine moves it, by its transition table).
        self.state = state
        self.first_sent: float | None = None
        #: The retransmission record while a CON awaits its ACK.
        self.transmission: Transmission | None = None
        #: How many times the request has been transmitted so far.
        self.transmissions = 0
        self.deadline_ticket = 0
        #: Free for the driver (the trio shell keeps the object that owns the
        #: exchange here: the machine never reads it).
        self.owner: object = None

    @property
    def done(self) -> bool:
        """Whether nothing more will happen to it (answered, failed or abandoned)."""
        state = self.state
        return state is _DONE or state is _STREAM_DONE

    @property
    def observing(self) -> bool:
        """Whether it is an observation still receiving notifications (RFC 7641)."""
        state = self.state
        return state is _OBSERVING or state is _STREAM_OBSERVING

    def __repr__(self) -> str:
        return f"<ClientExchange {self.state.name} token={self.token.hex()} mid={self.mid}>"


_CON = Type.CON


class ServerExchange:
    """A request this endpoint received, until its response is delivered."""

    __slots__ = (
        "ack_ticket",
        "con",
        "mid",
        "owner",
        "remote",
        "request",
        "security",
        "state",
        "token",
        "transmission",
    )

    def __init__(
        self, request: Message, remote: Hashable, state: ServerState | StreamServerState
    ) -> None:
        self.request = request
        self.remote = remote
        self.mid: int = request.mid if request.mid is not None else 0
        self.token = request.token
        self.con = request.mtype is _CON
        #: Its machine's state (the machine moves it, by its transition table).
        self.state = state
        self.ack_ticket = 0
        #: The CON response or notification being retransmitted, if any.
        self.transmission: Transmission | None = None
        #: Free for the driver (the machine never reads it).
        self.owner: object = None
        #: Free for the driver: what protects its responses (an OSCORE
        #: binding), None for a plain request. The machine never reads it.
        self.security: object = None

    def __repr__(self) -> str:
        return f"<ServerExchange {self.state.name} mid={self.mid} token={self.token.hex()}>"


class Event:
    """Base class of what the machine asks its driver to do or know."""

    __slots__ = ()


class Transmit(Event):
    """Send ``data`` to ``remote``."""

    __slots__ = ("data", "remote")

    def __init__(self, remote: Hashable, data: bytes) -> None:
        self.remote = remote
        self.data = data

    def __repr__(self) -> str:
        return f"<Transmit {len(self.data)}B to {self.remote}>"


class ResponseReceived(Event):
    """The response to ``exchange`` arrived; the exchange is DONE."""

    __slots__ = ("exchange", "response")

    def __init__(self, exchange: ClientExchange, response: Message) -> None:
        self.exchange = exchange
        self.response = response


class RequestFailed(Event):
    """``exchange`` ended without a response; ``error`` says why."""

    __slots__ = ("error", "exchange")

    def __init__(self, exchange: ClientExchange, error: CoapError) -> None:
        self.exchange = exchange
        self.error = error


class NotificationReceived(Event):
    """A further response (RFC 7641 notification) of an observing ``exchange``."""

    __slots__ = ("exchange", "response")

    def __init__(self, exchange: ClientExchange, response: Message) -> None:
        self.exchange = exchange
        self.response = response


class GroupResponseReceived(Event):
    """One member's response to the multicast request ``exchange`` (RFC 7252 §8.2);
    ``response.remote`` is the member. The exchange stays open for more."""

    __slots__ = ("exchange", "response")

    def __init__(self, exchange: ClientExchange, response: Message) -> None:
        self.exchange = exchange
        self.response = response


class MessageIdsExhausted(Event):
    """No message ID is free towards ``remote`` (RFC 7252 §4.4: 65,536 per
    EXCHANGE_LIFETIME), and the requests ``queued`` towards it (none of them
    transmitted yet, in queue order) wait until one frees, at ``free_at``.

    The driver may take them elsewhere: abandon each here (it was never sent)
    and send its request from another endpoint that has IDs to spare. Emitted
    each time a queued request finds no free ID.
    """

    __slots__ = ("free_at", "queued", "remote")

    def __init__(
        self, remote: Hashable, queued: tuple[ClientExchange, ...], free_at: float | None
    ) -> None:
        self.remote = remote
        self.queued = queued
        self.free_at = free_at


class RequestReceived(Event):
    """A new (not duplicate) request arrived; answer it with ``Messaging.respond``."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: ServerExchange) -> None:
        self.exchange = exchange


class ResponseAcknowledged(Event):
    """A separate CON response of ``exchange`` was acknowledged by the client."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: ServerExchange) -> None:
        self.exchange = exchange


class ResponseFailed(Event):
    """A separate response of ``exchange`` was reset or never acknowledged."""

    __slots__ = ("error", "exchange")

    def __init__(self, exchange: ServerExchange, error: CoapError) -> None:
        self.exchange = exchange
        self.error = error


class CloseConnection(Event):
    """Close the reliable connection to ``remote`` (CoAP over TCP/TLS/WebSockets, RFC 8323).

    Emitted by :class:`~coap_trio.protocol.stream_messaging.StreamMessaging`
    after any last ``Transmit`` to the same remote (an Abort, say) in the same
    event list: send those first, then close. The machine has already
    forgotten the connection (its requests failed, its served observations
    ended), so calling ``connection_lost`` afterwards is harmless but not
    needed. ``error`` is what the requests failed with.
    """

    __slots__ = ("error", "reason", "remote")

    def __init__(self, remote: Hashable, reason: str, error: CoapError) -> None:
        self.remote = remote
        self.reason = reason
        self.error = error

    def __repr__(self) -> str:
        return f"<CloseConnection {self.remote}: {self.reason}>"
