"""CoAP over WebSockets (RFC 8323 §4) with the sans-I/O ``wsproto`` library.

Owns :class:`WebSocketFramer`: the opening handshake (client: GET
``/.well-known/coap`` asking for the ``coap`` subprotocol; server: accepts
exactly that, answers anything else 404 or 400), one CoAP message per
binary WebSocket message, and the conversion between the WebSocket message
format (§4.4: Len 0, no extended length) and the stream frames the
messaging machine speaks (§3.2). Pings are answered, a close is answered
and ends the connection. Needs the ``ws`` extra (``pip install
coap-trio[ws]``). Must not know about exchanges or signaling.
"""

from __future__ import annotations

import errno

import trio

from .stream import FrameTooLargeError

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
    one CoAP message (a longer WebSocket message ends the connection).
    """

    def __init__(self, client: bool, host: str, max_message_size: int) -> None:
        from wsproto import ConnectionType, WSConnection

        self._ws = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._client = client
        self._host = host
        self._max = max_message_size
        self._partial = bytearray()
        self._frames: list[bytes] = []
        self._reply = b""
        #: True once the peer closed the WebSocket session.
        self.closed = False

    def set_max_message_size(self, size: int) -> None:
        """Change the largest CoAP message accepted."""
        self._max = size

    async def handshake(self, stream: trio.abc.Stream) -> None:
        """The HTTP upgrade; OSError when refused or malformed."""
        from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
        from wsproto.utilities import LocalProtocolError, RemoteProtocolError

        ws = self._ws
        if self._client:
            await stream.send_all(
                ws.send(Request(host=self._host, target=WELL_KNOWN_COAP, subprotocols=["coap"]))
            )
        for _ in range(64):  # bounded: the handshake is a few reads
            data = bytes(await stream.receive_some(16384))
            if not data:
                raise ConnectionResetError(
                    errno.ECONNRESET, "closed during the WebSocket handshake"
                )
            try:
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        if event.target != WELL_KNOWN_COAP:
                            await self._reject(stream, 404)
                        if _SUBPROTOCOL not in event.subprotocols:
                            await self._reject(stream, 400)
                        await stream.send_all(ws.send(AcceptConnection(subprotocol=_SUBPROTOCOL)))
                        self._reply += self._collect(ws.events())
                        return
                    if isinstance(event, AcceptConnection):
                        if event.subprotocol != _SUBPROTOCOL:
                            raise ConnectionRefusedError(
                                errno.EPROTO, "the server did not accept the coap subprotocol"
                            )
                        self._reply += self._collect(ws.events())
                        return
                    if isinstance(event, (RejectConnection, RejectData)):
                        status = getattr(event, "status_code", "")
                        raise ConnectionRefusedError(
                            errno.ECONNREFUSED, f"WebSocket upgrade refused {status}"
                        )
            except (LocalProtocolError, RemoteProtocolError) as exc:
                raise ConnectionAbortedError(errno.EPROTO, f"WebSocket handshake: {exc}") from exc
        raise ConnectionAbortedError(errno.EPROTO, "WebSocket handshake too long")

    async def _reject(self, stream: trio.abc.Stream, status: int) -> None:
        from wsproto.events import RejectConnection

        await stream.send_all(self._ws.send(RejectConnection(status_code=status)))
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"WebSocket upgrade refused: {status}")

    def _collect(self, events: object) -> bytes:
        from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

        ws = self._ws
        reply = b""
        for event in events:  # type: ignore[attr-defined]
            if isinstance(event, BytesMessage):
                self._partial += event.data
                if len(self._partial) > self._max + 4:
                    raise FrameTooLargeError(
                        f"WebSocket message over the maximum message size {self._max}"
                    )
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

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Received bytes in; the stream frames of complete messages and any reply out."""
        from wsproto.utilities import LocalProtocolError, RemoteProtocolError

        try:
            if data:
                self._ws.receive_data(data)
            reply = self._collect(self._ws.events())
            if self._reply:
                reply, self._reply = self._reply + reply, b""
        except (LocalProtocolError, RemoteProtocolError) as exc:
            raise ConnectionAbortedError(errno.EPROTO, f"WebSocket: {exc}") from exc
        frames, self._frames = self._frames, []
        return frames, reply

    def wrap(self, frame: bytes) -> bytes:
        """A stream frame as the bytes of one binary WebSocket message."""
        from wsproto.events import BytesMessage

        return self._ws.send(BytesMessage(data=stream_to_websocket(frame)))
