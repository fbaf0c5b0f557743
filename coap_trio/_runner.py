"""One transport endpoint of a Context, its messaging machine, and the glue between them.

Owns turning the sans-I/O machine's events into actions: a ``Transmit`` is
sent on the endpoint, a ``CloseConnection`` closes a stream connection, and
every other event goes to one of two sinks given at construction, one
typed method per event: the client side (:class:`ClientSink`: responses,
notifications and failures of requests we sent) and the server side
(:class:`ServerSink`: requests we received, separate responses that failed,
peers that went away). It also runs the endpoint's timer task (one cancel
scope whose deadline follows the machine's next live timer).

Must not know about the Context, requests, resources or routing (the sinks'),
or the wire format (the machine's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any, Protocol, cast

import trio

from .errors import CoapError, RequestError
from .message import Message
from .protocol.exchanges import (
    ClientExchange,
    CloseConnection,
    Event,
    GroupResponseReceived,
    MessageIdsExhausted,
    NotificationReceived,
    RequestFailed,
    RequestReceived,
    ResponseAcknowledged,
    ResponseFailed,
    ResponseReceived,
    ServerExchange,
    Transmit,
)
from .protocol.machine import Machine
from .protocol.observe import SharedNotification
from .remote import DatagramRemote
from .transports.base import DatagramEndpoint
from .transports.stream import StreamEndpoint

__all__ = ["ClientSink", "EndpointRunner", "ServerSink"]


class ClientSink(Protocol):
    """Where the events of the requests an endpoint sent go (the Context's client side)."""

    def response_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """The response to ``exchange`` arrived (for an observation: its first response)."""

    def notification_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """A further response (RFC 7641 notification) of an observing ``exchange``."""

    def request_failed(
        self, runner: EndpointRunner, exchange: ClientExchange, error: CoapError
    ) -> None:
        """``exchange`` ended without a response (timeout, reset, connection lost...)."""

    def group_response_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """One member's response to the multicast request ``exchange`` (RFC 7252 §8.2)."""

    def message_ids_exhausted(
        self, runner: EndpointRunner, queued: tuple[ClientExchange, ...]
    ) -> None:
        """``runner`` has no message ID free for the ``queued`` requests (none sent yet):
        they wait for one there, unless moved to another endpoint."""


class ServerSink(Protocol):
    """Where the events of the requests an endpoint received go (the Context's server side)."""

    def request_received(self, runner: EndpointRunner, exchange: ServerExchange) -> None:
        """A new request arrived; answer it through ``runner.respond``."""

    def response_failed(self, exchange: ServerExchange, error: CoapError) -> None:
        """A separate response or notification of ``exchange`` was reset or never acknowledged."""

    def remote_lost(self, remote: DatagramRemote, reason: str) -> None:
        """``remote`` went away (an ICMP error, a closed connection): end what it registered."""


class EndpointRunner:
    """One endpoint, its messaging machine, and the glue between them (see the module)."""

    def __init__(
        self,
        endpoint: DatagramEndpoint,
        machine: Machine,
        client: ClientSink,
        server: ServerSink,
    ) -> None:
        self.endpoint = endpoint
        #: ``endpoint.send``: the machine's events carry the remotes this endpoint gave it.
        self._send = cast(Callable[[bytes, Hashable], None], endpoint.send)
        self._connections = endpoint if isinstance(endpoint, StreamEndpoint) else None
        self.machine = machine
        self._client = client
        self._server = server
        #: The sinks' handlers, bound once (looked up per event).
        self._on_response = client.response_received
        self._on_notification = client.notification_received
        self._on_failure = client.request_failed
        self._on_request = server.request_received
        #: What each event type is handed to: one typed method per event.
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            ResponseReceived: self._response_received,
            Transmit: self._transmit,
            NotificationReceived: self._notification_received,
            RequestFailed: self._request_failed,
            RequestReceived: self._request_received,
            ResponseFailed: self._response_failed,
            ResponseAcknowledged: self._response_acknowledged,
            CloseConnection: self._close_connection,
            GroupResponseReceived: self._group_response_received,
            MessageIdsExhausted: self._message_ids_exhausted,
        }
        #: The UDP machine's shortcut for a piggybacked response (None: the machine has none).
        self._respond_piggybacked: (
            Callable[[ServerExchange, Message, float], bytes | None] | None
        ) = getattr(machine, "respond_piggybacked", None)
        self._timer_scope: trio.CancelScope | None = None
        #: trio.current_time without its two wrapper calls (the run's clock does not change).
        self._now = trio.lowlevel.current_clock().current_time
        #: The deadline the timer scope was given (read per request: not the property).
        self._armed = math.inf
        #: True while a batch of datagrams is handled: it ends with one kick, so the
        #: requests sent meanwhile (a download's next block) need none of their own.
        self._in_batch = False
        self._remotes: dict[tuple[str, int], DatagramRemote] = {}
        #: A reliable, ordered transport (RFC 8323): notifications are never stale.
        self.in_order = machine.in_order
        #: The endpoint of a multicast group (RFC 7252 §8.2): answers wait a Leisure.
        self.multicast = machine.multicast

    # -- the endpoint's callbacks ----------------------------------------------------------

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        """The endpoint's receive callback: feed each datagram to the machine, act on the events."""
        now = self._now()
        receive = self.machine.receive
        carry_out = self._carry_out
        on_request = self._on_request
        self._in_batch = True
        try:
            for data, remote in batch:
                events = receive(data, remote, now)
                if events:
                    if len(events) == 1 and type(events[0]) is RequestReceived:  # the usual one
                        on_request(self, events[0].exchange)
                    else:
                        carry_out(events)
        finally:
            self._in_batch = False
        self.kick()  # once per batch

    def on_error(self, remote: DatagramRemote, error: OSError | RequestError) -> None:
        """The endpoint's error callback: the OS reported ``error`` about ``remote``
        (ICMP), or its DTLS session failed or ended (a ``RequestError``).

        Requests to it fail (with NetworkError, or with the RequestError as it
        is), and observations it registered end: a vanished observer must not
        be notified for up to a day (only a CON notification, sent at least
        daily, would otherwise detect it).
        """
        self.perform(self.machine.peer_error(remote, error, self._now()))
        self._server.remote_lost(remote, f"network error: {error}")

    def connection_made(self, remote: DatagramRemote) -> None:
        """A stream endpoint's hook: a connection to ``remote`` is up (our CSM goes first)."""
        self.perform(self.machine.connection_made(remote, self._now()))

    def connection_lost(self, remote: DatagramRemote, error: OSError | None) -> None:
        """A stream endpoint's hook: the connection to ``remote`` ended (``error``: why).

        Requests in flight on it fail, and observations it registered end.
        """
        self.perform(self.machine.connection_lost(remote, error, self._now()))
        reason = f"connection lost: {error}" if error is not None else "connection closed"
        self._server.remote_lost(remote, reason)

    # -- carrying out the machine's events -------------------------------------------------

    def send_request(self, message: Message, remote: Hashable) -> ClientExchange:
        """Send a request with the machine; returns its exchange (the request path).

        Over a stream the timer is not looked at when the new request's
        response deadline cannot be the earliest (another one is live).
        """
        exchange, events = self.machine.send_request(message, remote, self._now())
        if len(events) == 1 and type(events[0]) is Transmit:
            event = events[0]
            self._send(event.data, event.remote)
            if not (self.machine.kept_next_deadline or self._in_batch):
                self.kick()
        else:  # (also with no event: a request waiting for the peer's CSM has a deadline)
            self._carry_out(events)
            if not self._in_batch:
                self.kick()
        return exchange

    def send_group_request(self, message: Message, group: DatagramRemote) -> ClientExchange:
        """Send a request to a multicast group (RFC 7252 §8.1); its exchange, open until
        :meth:`abandon`."""
        exchange, events = self.machine.send_group_request(message, group, self._now())
        self.perform(events)
        return exchange

    def send_ping(self, remote: DatagramRemote) -> ClientExchange:
        """Send a CoAP ping to ``remote`` (RFC 7252 §4.3, RFC 8323 §5.4); its exchange."""
        exchange, events = self.machine.send_ping(remote, self._now())
        self.perform(events)
        return exchange

    def abandon(self, exchange: ClientExchange) -> None:
        """Stop ``exchange``: no retransmission, its token freed, later responses get RST."""
        self.perform(self.machine.abandon(exchange, self._now()))

    def respond(self, exchange: ServerExchange, response: Message | None) -> None:
        """Answer a received request (None: nothing to send, the request is done).

        The timer is not looked at when the machine says its next deadline
        did not come sooner (a piggybacked response only closes a window).
        """
        machine = self.machine
        piggybacked = self._respond_piggybacked
        if piggybacked is not None and response is not None:
            data = piggybacked(exchange, response, self._now())
            if data is not None:  # the usual answer: nothing but the datagram to send
                self._send(data, exchange.remote)
                return
        events = machine.respond(exchange, response, self._now())
        if len(events) == 1 and type(events[0]) is Transmit:
            event = events[0]
            self._send(event.data, event.remote)
            if not machine.kept_next_deadline:
                self.kick()
        elif events:
            self._carry_out(events)
            self.kick()

    def notify(self, exchange: ServerExchange, notification: Message, confirmable: bool) -> None:
        """Send a notification (RFC 7641) of the observation registered by ``exchange``."""
        self.perform(
            self.machine.notify(exchange, notification, self._now(), confirmable=confirmable)
        )

    def notify_shared(
        self, exchange: ServerExchange, shared: SharedNotification, observe: int, confirmable: bool
    ) -> None:
        """:meth:`notify` of a notification rendered once for several observers
        (``shared.message``, with Observe ``observe`` for this one)."""
        machine = self.machine
        events = machine.notify_shared(
            exchange, shared, observe, self._now(), confirmable=confirmable
        )
        if len(events) == 1 and type(events[0]) is Transmit:
            event = events[0]
            self._send(event.data, event.remote)
            if not machine.kept_next_deadline:
                self.kick()
        elif events:
            self._carry_out(events)
            self.kick()

    def end_observation(self, exchange: ServerExchange) -> None:
        """The observation ``exchange`` registered ended: the machine forgets it."""
        self.machine.end_observation(exchange)

    def perform(self, events: list[Event]) -> None:
        """Carry out the machine's events (send, hand over to the sinks, close connections)."""
        if events:
            if len(events) == 1 and type(events[0]) is Transmit:  # a request going out
                event = events[0]
                self._send(event.data, event.remote)
            else:
                self._carry_out(events)
            self.kick()

    def _carry_out(self, events: list[Event]) -> None:
        """:meth:`perform` without the timer task's update (the caller kicks)."""
        handlers = self._handlers
        for event in events:
            handlers[type(event)](event)

    def _response_received(self, event: ResponseReceived) -> None:
        self._on_response(self, event.exchange, event.response)

    def _transmit(self, event: Transmit) -> None:
        self._send(event.data, event.remote)

    def _notification_received(self, event: NotificationReceived) -> None:
        self._on_notification(self, event.exchange, event.response)

    def _request_failed(self, event: RequestFailed) -> None:
        self._on_failure(self, event.exchange, event.error)

    def _request_received(self, event: RequestReceived) -> None:
        self._on_request(self, event.exchange)

    def _group_response_received(self, event: GroupResponseReceived) -> None:
        self._client.group_response_received(self, event.exchange, event.response)

    def _message_ids_exhausted(self, event: MessageIdsExhausted) -> None:
        self._client.message_ids_exhausted(self, event.queued)

    def _response_failed(self, event: ResponseFailed) -> None:
        self._server.response_failed(event.exchange, event.error)

    def _response_acknowledged(self, event: ResponseAcknowledged) -> None:
        """Nothing to do: the response's fate needs no action."""

    def _close_connection(self, event: CloseConnection) -> None:
        """RFC 8323: an Abort, a Release, a dead Ping; close, and end what the remote registered."""
        remote = cast(DatagramRemote, event.remote)
        if self._connections is not None:
            self._connections.close_connection(remote, event.reason)
        self._server.remote_lost(remote, event.reason)

    # -- the timer task ----------------------------------------------------------------------

    def kick(self) -> None:
        """Bring the timer task's deadline forward if the machine now needs it sooner."""
        scope = self._timer_scope
        if scope is not None:
            deadline = self.machine.next_deadline()
            if deadline is not None and deadline < self._armed:
                scope.deadline = self._armed = deadline

    async def run_timers(self) -> None:
        """The timer task: sleep until the machine's next live deadline, then run its timers."""
        machine = self.machine
        while True:
            deadline = machine.next_deadline()
            self._armed = math.inf if deadline is None else deadline
            with trio.CancelScope(deadline=self._armed) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            self.perform(machine.timeout(self._now()))

    # -- addresses ---------------------------------------------------------------------------

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        """The endpoint's canonical remote for an IP literal (cached)."""
        key = (host, port)
        remote = self._remotes.get(key)
        if remote is None:
            if len(self._remotes) > 4096:
                self._remotes.clear()
            remote = self._remotes[key] = self.endpoint.remote_for(host, port)
        return remote
