"""CoAP over WebSockets (RFC 8323 §4) with the sans-I/O ``wsproto`` library.

Owns :class:`WebSocketFramer`: the opening handshake (client: GET
``/.well-known/coap`` asking for the ``coap`` subprotocol; server: accepts
exactly that, answers anything else 404 or 400), one CoAP message per
binary WebSocket message, and the conversion between the WebSocket message
format (§4.4: Len 0, no extended length) and the stream frames the
messaging machine speaks (§3.2). Pings are answered, a close is answered
and ends the connection; closing it ourselves sends a Close (1000). No I/O:
bytes in, bytes out, driven by the connection's one task (see
:class:`~coap_trio.transports.stream.Framer`). Needs the ``ws`` extra
(``pip install coap-trio[ws]``). Must not know about exchanges or signaling.
"""

from __future__ import annotations

import errno

from ..errors import FrameTooLarge

__all__ = [
    "WELL_KNOWN_COAP",
    "WebSocketFramer",
    "require_wsproto",
    "stream_to_websocket",
    "websocket_to_stream",
]

#: The resource CoAP over WebSockets is reached at (RFC 8323 §4.1).
WELL_KNOWN_COAP = "/.well-known/coap"
_SUBPROTOCOL = "coap"
_EXTENDED_WIDTH = {13: 1, 14: 2, 15: 4}
#: Reads the opening handshake may take before it is given up (it is a few).
_MAX_HANDSHAKE_FEEDS = 64


def require_wsproto() -> None:
    """Raise ImportError, saying which extra to install, when wsproto is missing."""
    try:
        import wsproto  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "CoAP over WebSockets needs wsproto: pip install 'coap-trio[ws]'"
        ) from exc


def stream_to_websocket(frame: bytes) -> bytes:
    """A stream frame (§3.2) as a WebSocket message (§4.4): Len 0, extended length dropped."""
    first = frame[0]
    width = _EXTENDED_WIDTH.get(first >> 4, 0)
    return bytes((first & 0x0F,)) + frame[1 + width :]


def websocket_to_stream(message: bytes) -> bytes:
    """A WebSocket message (§4.4) as a stream frame (§3.2); OSError if malformed."""
    if len(message) < 2 or message[0] >> 4:
        raise ConnectionAbortedError(errno.EPROTO, "malformed CoAP-over-WebSocket message")
    tkl = message[0] & 0x0F
    length = len(message) - 2 - tkl
    if length < 0:
        raise ConnectionAbortedError(errno.EPROTO, "CoAP-over-WebSocket message shorter than TKL")
    if length < 13:
        head = bytes(((length << 4) | tkl,))
    elif length < 269:
        head = bytes(((13 << 4) | tkl, length - 13))
    elif length < 65805:
        head = bytes(((14 << 4) | tkl,)) + (length - 269).to_bytes(2, "big")
    else:
        head = bytes(((15 << 4) | tkl,)) + (length - 65805).to_bytes(4, "big")
    return head + message[1:]


class WebSocketFramer:
    """The framer of a ``coap+ws`` or ``coaps+ws`` connection (see the module).

    ``host`` is the Host header a client sends; ``max_message_size`` bounds
    one CoAP message (a longer WebSocket message ends the connection). No
    I/O: the connection's task sends what :meth:`start` and :meth:`feed`
    return, and feeds what it receives.
    """

    def __init__(self, client: bool, host: str, max_message_size: int) -> None:
        from wsproto import ConnectionType, WSConnection

        self._ws = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._client = client
        self._host = host
        self._max = max_message_size
        self._partial = bytearray()
        self._frames: list[bytes] = []
        self._handshake_feeds = 0
        #: A refused upgrade's answer, sent by :meth:`close`.
        self._farewell = b""
        #: True once the upgrade is complete (CoAP messages flow).
        self.established = False
        #: True once the peer closed the WebSocket session.
        self.closed = False
        #: Frames become WebSocket messages (see :meth:`wrap`).
        self.wraps = True

    def set_max_message_size(self, size: int) -> None:
        """Change the largest CoAP message accepted."""
        self._max = size

    def start(self) -> bytes:
        """A client's upgrade request (GET ``/.well-known/coap``, subprotocol ``coap``)."""
        from wsproto.events import Request

        if not self._client:
            return b""
        return self._ws.send(
            Request(host=self._host, target=WELL_KNOWN_COAP, subprotocols=[_SUBPROTOCOL])
        )

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Received bytes in; the stream frames of complete messages and any reply out.

        Until :attr:`established` the bytes are the upgrade's: a server's
        reply is its 101 answer; a refused upgrade raises
        ``ConnectionRefusedError`` (a server's 404 or 400 is then sent by
        :meth:`close`), a malformed one ``ConnectionAbortedError``.
        """
        from wsproto.utilities import ProtocolError

        try:
            if data:
                self._ws.receive_data(data)
            reply = b""
            if not self.established:
                reply = self._handshake()
                if not self.established:
                    return [], reply
            reply += self._collect(self._ws.events())
        except ProtocolError as exc:
            raise ConnectionAbortedError(errno.EPROTO, f"WebSocket: {exc}") from exc
        frames, self._frames = self._frames, []
        return frames, reply

    def _handshake(self) -> bytes:
        """The upgrade's events so far: the reply to send (server), OSError when refused."""
        from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request

        ws = self._ws
        self._handshake_feeds += 1
        for event in ws.events():
            if isinstance(event, Request):
                if event.target != WELL_KNOWN_COAP:
                    self._reject(404)
                if _SUBPROTOCOL not in event.subprotocols:
                    self._reject(400)
                self.established = True
                return ws.send(AcceptConnection(subprotocol=_SUBPROTOCOL))
            if isinstance(event, AcceptConnection):
                if event.subprotocol != _SUBPROTOCOL:
                    raise ConnectionRefusedError(
                        errno.EPROTO, "the server did not accept the coap subprotocol"
                    )
                self.established = True
                return b""
            if isinstance(event, (RejectConnection, RejectData)):
                status = getattr(event, "status_code", "")
                raise ConnectionRefusedError(
                    errno.ECONNREFUSED, f"WebSocket upgrade refused {status}"
                )
        if self._handshake_feeds >= _MAX_HANDSHAKE_FEEDS:
            raise ConnectionAbortedError(errno.EPROTO, "WebSocket handshake too long")
        return b""

    def _reject(self, status: int) -> None:
        from wsproto.events import RejectConnection

        self._farewell = self._ws.send(RejectConnection(status_code=status))
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"WebSocket upgrade refused: {status}")

    def _collect(self, events: object) -> bytes:
        from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

        ws = self._ws
        reply = b""
        for event in events:  # type: ignore[attr-defined]
            if isinstance(event, BytesMessage):
                self._partial += event.data
                if len(self._partial) > self._max + 4:
                    raise FrameTooLarge(len(self._partial), self._max)
                if event.message_finished:
                    message = bytes(self._partial)
                    self._partial.clear()
                    self._frames.append(websocket_to_stream(message))
            elif isinstance(event, Ping):
                reply += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                from wsproto.connection import ConnectionState

                if ws.state is ConnectionState.REMOTE_CLOSING:
                    reply += ws.send(event.response())
                self.closed = True
            elif isinstance(event, TextMessage):
                raise ConnectionAbortedError(
                    errno.EPROTO, "text WebSocket message (CoAP is binary)"
                )
        return reply

    def wrap(self, frame: bytes) -> bytes:
        """A stream frame as the bytes of one binary WebSocket message.

        ``ConnectionAbortedError`` once the session is no longer open.
        """
        from wsproto.events import BytesMessage
        from wsproto.utilities import ProtocolError

        try:
            return self._ws.send(BytesMessage(data=stream_to_websocket(frame)))
        except ProtocolError as exc:
            raise ConnectionAbortedError(errno.EPROTO, f"WebSocket: {exc}") from exc

    def close(self) -> bytes:
        """The last bytes to send: a refused upgrade's answer, or a Close (1000) if open."""
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection
        from wsproto.utilities import ProtocolError

        if self._farewell:
            farewell, self._farewell = self._farewell, b""
            return farewell
        if not self.established or self._ws.state is not ConnectionState.OPEN:
            return b""
        try:
            return self._ws.send(CloseConnection(code=1000))
        except ProtocolError:
            return b""
