"""The server half of the RFC 8323 messaging machine: answering requests we received.

Owns, per connection, the received requests being handled (bounded by
``max_pending_requests``: beyond it 5.03), their responses (the request's
token; a response larger than the peer's Max-Message-Size becomes 5.00) and
the notifications of the observations we serve (RFC 8323 §7; one larger
than the peer accepts ends the observation with ``ResponseFailed``). Mixed
into :class:`~coap_trio.protocol.stream_messaging.StreamMessaging`, whose
state it shares; must not know about tasks, sockets or resources.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from ..errors import ConnectionLostError, LocalProtocolError, MessageTooLargeError
from ..message import Message
from ..numbers.codes import Code
from ..options import Options
from .exchanges import Event, RequestReceived, ResponseFailed, ServerExchange, ServerState, Transmit

if TYPE_CHECKING:
    from .stream_state import ConnectionState, StreamMessagingConfig

__all__ = ["StreamServerSide"]

_OBSERVABLE_METHODS = (Code.GET, Code.FETCH)


class StreamServerSide:
    """Request handling steps of :class:`StreamMessaging` (see the module docstring)."""

    config: StreamMessagingConfig
    _connections: dict[Hashable, ConnectionState]
    _counts: dict[str, int]
    #: Received requests not answered yet, over every connection.
    _serving: int
    #: Stream or WebSocket framing (set by StreamMessaging).
    _encode: Callable[[Message], bytes]

    def _on_request(self, conn: ConnectionState, message: Message, events: list[Event]) -> None:
        if self._serving >= self.config.max_pending_requests:
            self._counts["overloaded"] += 1
            busy = Message.from_fields(
                Code.SERVICE_UNAVAILABLE, None, None, message.token, Options(), b"", None
            )
            busy.opt.max_age = 2
            events.append(Transmit(conn.remote, self._encode(busy)))
            return
        exchange = ServerExchange(message, conn.remote)
        exchange.con = True  # every request over a reliable transport expects its response
        conn.serving.add(exchange)
        self._serving += 1
        events.append(RequestReceived(exchange))

    def _take(self, exchange: ServerExchange) -> ConnectionState | None:
        """Stop tracking a request being handled; its connection if still open."""
        conn = self._connections.get(exchange.remote)
        if conn is None or exchange not in conn.serving:
            return None
        conn.serving.discard(exchange)
        self._serving -= 1
        return conn

    def respond(
        self, exchange: ServerExchange, response: Message | None, now: float
    ) -> list[Event]:
        """Answer a received request (``None``: no response, e.g. RFC 7967 No-Response).

        The response gets the request's token; its code, options and payload are
        used as given. A 2.xx with Observe to a GET/FETCH with Observe=0 makes
        ``exchange`` a served observation: :meth:`notify` sends its notifications
        until a final one, or until the connection ends (``ResponseFailed``).
        Answering after the connection ended sends nothing.
        """
        if exchange.state is not ServerState.PENDING:
            raise LocalProtocolError(f"{exchange!r} was already answered")
        exchange.state = ServerState.DONE
        conn = self._take(exchange)
        if conn is None or response is None:
            return []
        data = self._encode_response(exchange, response)
        if len(data) > conn.max_message_size:
            self._counts["overloaded"] += 1
            failure = Message.from_fields(
                Code.INTERNAL_SERVER_ERROR,
                None,
                None,
                exchange.token,
                Options(),
                b"response larger than Max-Message-Size",
                None,
            )
            data = self._encode(failure)
        elif (
            exchange.request.opt.observe == 0
            and exchange.request.code in _OBSERVABLE_METHODS
            and response.code.is_successful()
            and response.opt.observe is not None
        ):
            conn.observations.add(exchange)
        return [Transmit(conn.remote, data)]

    def _encode_response(self, exchange: ServerExchange, response: Message) -> bytes:
        return self._encode(
            Message.from_fields(
                response.code, None, None, exchange.token, response.opt, response.payload, None
            )
        )

    def notify(
        self,
        exchange: ServerExchange,
        notification: Message,
        now: float,
        *,
        confirmable: bool = False,
    ) -> list[Event]:
        """Send a notification (RFC 7641 over RFC 8323 §7) for a served observation.

        ``confirmable`` is ignored (the transport is reliable). A notification
        that is not 2.xx or has no Observe is the last one. When the connection
        is gone, or the notification is larger than the peer accepts, nothing
        is sent and ``ResponseFailed`` ends the observation.
        """
        if exchange.state is ServerState.PENDING:
            raise LocalProtocolError("answer the registration with respond() first")
        conn = self._connections.get(exchange.remote)
        if conn is None or exchange not in conn.observations:
            return [ResponseFailed(exchange, ConnectionLostError("the connection is closed"))]
        data = self._encode_response(exchange, notification)
        if len(data) > conn.max_message_size:
            conn.observations.discard(exchange)
            return [
                ResponseFailed(exchange, MessageTooLargeError(len(data), conn.max_message_size))
            ]
        if not notification.code.is_successful() or notification.opt.observe is None:
            conn.observations.discard(exchange)
        return [Transmit(conn.remote, data)]

    def forget(self, exchange: ServerExchange) -> None:
        """Drop a received request that will not be handled (nothing is sent)."""
        self._take(exchange)
        exchange.state = ServerState.DONE

    def end_observation(self, exchange: ServerExchange) -> None:
        """Stop treating ``exchange`` as a served observation (it ended in the shell)."""
        conn = self._connections.get(exchange.remote)
        if conn is not None:
            conn.observations.discard(exchange)
