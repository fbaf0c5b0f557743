"""One transport endpoint of a Context, its messaging machine, and the glue between them.

Owns turning the sans-I/O machine's events into actions (send a datagram,
resolve a request, hand a received request to the Context, end a server
observation whose notification was rejected) and the endpoint's timer task
(one cancel scope whose deadline follows the machine's next live timer).
Must not know about resources or routing (the Context's), or the wire format.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING

import trio

from ._client.block_messages import has_block_option
from ._client.blockwise import take_notification, take_response
from ._client.request import Request
from .message import Message
from .numbers.codes import Code
from .observable import ServerObservation
from .protocol.exchanges import (
    ClientExchange,
    ClientState,
    CloseConnection,
    Event,
    NotificationReceived,
    RequestFailed,
    RequestReceived,
    ResponseFailed,
    ResponseReceived,
    Transmit,
)
from .protocol.messaging import Messaging
from .protocol.stream_messaging import StreamMessaging
from .remote import DatagramRemote
from .transports.base import DatagramEndpoint

if TYPE_CHECKING:
    from .context import Context

__all__ = ["EndpointRunner"]

# Module constants for the response path (an Enum class attribute is slow on 3.11).
_DONE = ClientState.DONE
_TOO_LARGE = Code.REQUEST_ENTITY_TOO_LARGE


class EndpointRunner:
    """One endpoint, its messaging machine, and the glue between them (see the module)."""

    def __init__(
        self, context: Context, endpoint: DatagramEndpoint, machine: Messaging | StreamMessaging
    ) -> None:
        self.context = context
        self.endpoint = endpoint
        self.machine = machine
        self.timer_scope: trio.CancelScope | None = None
        #: trio.current_time without its two wrapper calls (the run's clock does not change).
        self._now = trio.lowlevel.current_clock().current_time
        #: The deadline ``timer_scope`` was given (read per request: not the property).
        self._armed = math.inf
        self.remotes: dict[tuple[str, int], DatagramRemote] = {}
        #: A reliable, ordered transport (RFC 8323): notifications are never stale.
        self.in_order = isinstance(machine, StreamMessaging)
        self._stream_machine = machine if isinstance(machine, StreamMessaging) else None

    def on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        """The endpoint's receive callback: feed each datagram to the machine, act on the events."""
        now = self._now()
        receive = self.machine.receive
        carry_out = self._carry_out
        for data, remote in batch:
            events = receive(data, remote, now)
            if events:
                carry_out(events)
        self.kick()  # once per batch

    def on_error(self, remote: DatagramRemote, error: OSError) -> None:
        """The endpoint's error callback: the OS reported ``error`` about ``remote`` (ICMP).

        Requests to it fail with NetworkError, and observations it registered
        end: a vanished observer must not be notified for up to a day (only a
        CON notification, sent at least daily, would otherwise detect it).
        """
        self.perform(self.machine.peer_error(remote, error, trio.current_time()))
        self.context._observations.end_remote(remote, f"network error: {error}")

    def connection_made(self, remote: DatagramRemote) -> None:
        """A stream endpoint's hook: a connection to ``remote`` is up (our CSM goes first)."""
        machine = self.machine
        assert isinstance(machine, StreamMessaging)
        self.perform(machine.connection_made(remote, trio.current_time()))

    def connection_lost(self, remote: DatagramRemote, error: OSError | None) -> None:
        """A stream endpoint's hook: the connection to ``remote`` ended (``error``: why).

        Requests in flight on it fail, and observations it registered end.
        """
        machine = self.machine
        assert isinstance(machine, StreamMessaging)
        self.perform(machine.connection_lost(remote, error, trio.current_time()))
        reason = f"connection lost: {error}" if error is not None else "connection closed"
        self.context._observations.end_remote(remote, reason)

    def perform_send(self, events: list[Event]) -> None:
        """:meth:`perform` for the events of ``send_request`` (the request path).

        Over a stream the timer is not looked at when the new request's
        response deadline cannot be the earliest (another one is live).
        """
        if len(events) == 1 and type(events[0]) is Transmit:
            event = events[0]
            self.endpoint.send(event.data, event.remote)  # type: ignore[arg-type]
            stream = self._stream_machine
            if stream is None or not stream.kept_next_deadline:
                self.kick()
        else:  # (also with no event: a request waiting for the peer's CSM has a deadline)
            self._carry_out(events)
            self.kick()

    def perform(self, events: list[Event]) -> None:
        """Carry out the machine's events (send, resolve requests, dispatch, end observations)."""
        if events:
            if len(events) == 1 and type(events[0]) is Transmit:  # a request going out
                event = events[0]
                self.endpoint.send(event.data, event.remote)  # type: ignore[arg-type]
            else:
                self._carry_out(events)
            self.kick()

    def _carry_out(self, events: list[Event]) -> None:
        """:meth:`perform` without the timer task's update (the caller kicks)."""
        send = self.endpoint.send
        later: list[ClientExchange] = []
        for event in events:
            kind = type(event)
            if kind is ResponseReceived:
                exchange = event.exchange  # type: ignore[attr-defined]
                request: Request | None = exchange.owner
                if request is None:
                    continue
                response: Message | None = event.response  # type: ignore[attr-defined]
                observation = request.observation
                if observation is not None:
                    assert response is not None
                    request._succeed(response)
                    self.context._inflight.discard(request)
                    observation.in_order = self.in_order
                    final = exchange.state is not ClientState.OBSERVING
                    if not take_notification(self, request, response, final):
                        observation._push(response, final)
                    continue
                transfer = request.transfer
                if transfer is not False and (  # block-wise may go on (RFC 7959)
                    transfer is not None  # (the usual case, a plain response, inline)
                    or response.code is _TOO_LARGE  # type: ignore[union-attr]
                    or has_block_option(response)  # type: ignore[arg-type]
                ):
                    response = take_response(self, request, response)  # type: ignore[arg-type]
                if response is not None:
                    request._succeed(response)
                    self.context._inflight.discard(request)
                state = exchange.state
                if state is _DONE:
                    # Request -> exchange -> owner -> Request is a reference cycle:
                    # broken here, finished exchanges are freed at once (not by the
                    # cyclic GC, whose runs were ~20% of a busy client's CPU).
                    exchange.owner = None
                elif state is ClientState.OBSERVING:
                    # A plain request that happened to register an observation
                    # (Observe=0): nobody will read notifications, so end it;
                    # later notifications then get RST (RFC 7641 §3.6).
                    later.append(exchange)
            elif kind is Transmit:
                send(event.data, event.remote)  # type: ignore[attr-defined]
            elif kind is NotificationReceived:
                exchange = event.exchange  # type: ignore[attr-defined]
                request = exchange.owner
                observation = None if request is None else request.observation
                if observation is not None:
                    final = exchange.state is not ClientState.OBSERVING
                    response = event.response  # type: ignore[attr-defined]
                    assert response is not None
                    if not take_notification(self, request, response, final):
                        observation._push(response, final)
            elif kind is RequestFailed:
                exchange = event.exchange  # type: ignore[attr-defined]
                request = exchange.owner
                if request is None:
                    continue
                if exchange.state is ClientState.DONE:
                    exchange.owner = None
                request._fail(event.error)  # type: ignore[attr-defined]
                self.context._inflight.discard(request)
                if request.observation is not None:
                    request.observation._fail(event.error)  # type: ignore[attr-defined]
            elif kind is RequestReceived:
                self.context._server.dispatch(self, event.exchange)  # type: ignore[attr-defined]
            elif kind is ResponseFailed:
                owner = event.exchange.owner  # type: ignore[attr-defined]
                if isinstance(owner, ServerObservation):  # RST, or a CON notification lost
                    owner.end(str(event.error))  # type: ignore[attr-defined]
            elif kind is CloseConnection:  # RFC 8323: Abort, Release, a dead ping
                remote = event.remote  # type: ignore[attr-defined]
                self.endpoint.close_connection(remote, event.reason)  # type: ignore[attr-defined]
                self.context._observations.end_remote(remote, event.reason)  # type: ignore[attr-defined]
        for exchange in later:
            self._carry_out(self.machine.abandon(exchange, trio.current_time()))

    def bert_size(self, remote: Hashable) -> int | None:
        """The largest BERT block for ``remote`` (RFC 8323 §6): None unless it is
        reached over a connection on which both sides announced Block-Wise-Transfer."""
        machine = self.machine
        return machine.bert_size(remote) if isinstance(machine, StreamMessaging) else None

    def bert_agreed(self, remote: Hashable) -> bool:
        """Whether BERT blocks may be exchanged with ``remote`` (both sides announced
        Block-Wise-Transfer on its connection)."""
        machine = self.machine
        return isinstance(machine, StreamMessaging) and machine.bert_agreed(remote)

    def kick(self) -> None:
        """Bring the timer task's deadline forward if the machine now needs it sooner."""
        scope = self.timer_scope
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
                self.timer_scope = scope
                await trio.sleep_forever()
            self.timer_scope = None
            self.perform(machine.timeout(trio.current_time()))

    def remote_for(self, host: str, port: int) -> DatagramRemote:
        """The endpoint's canonical remote for an IP literal (cached)."""
        key = (host, port)
        remote = self.remotes.get(key)
        if remote is None:
            if len(self.remotes) > 4096:
                self.remotes.clear()
            remote = self.remotes[key] = self.endpoint.remote_for(host, port)
        return remote
