"""CoAP over TCP and TLS (RFC 8323 §3): the stream framer, and the framer for each scheme.

Owns :class:`TCPFramer` (cutting a TCP or TLS byte stream into frames with
:class:`~coap_trio.protocol.framing.StreamDecoder`; frames go out as they
are, RFC 8323 §3.2 being the format the messaging machine speaks) and
:func:`framer_for`, the :data:`~coap_trio.transports.stream.FramerFactory`
the Context hands its :class:`~coap_trio.transports.stream.StreamEndpoint`:
``coap+tcp``/``coaps+tcp`` get a :class:`TCPFramer`, ``coap+ws``/``coaps+ws``
a :class:`~coap_trio.transports.websocket.WebSocketFramer`. TLS itself is the
standard library's ``ssl`` on memory buffers
(:class:`~coap_trio.transports.tls.TLSSession`, ALPN ``coap``), under the
framer, run by each connection's task. Must not know about exchanges or
signaling.
"""

from __future__ import annotations

from ..protocol.framing import StreamDecoder
from .stream import Framer

__all__ = ["TCPFramer", "framer_for"]


class TCPFramer:
    """The framer of a ``coap+tcp`` or ``coaps+tcp`` connection (no handshake of its own:
    CoAP's CSM is the messaging machine's, TLS the connection's)."""

    __slots__ = ("_decoder",)

    #: Frames flow at once, and only the connection ends the session.
    established = True
    closed = False
    #: Frames go out as they are (see :meth:`wrap`).
    wraps = False

    def __init__(self, max_message_size: int) -> None:
        self._decoder = StreamDecoder(max_message_size)

    def start(self) -> bytes:
        """Nothing opens a TCP session but the CSM."""
        return b""

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """The complete frames in ``data`` (and what came before); FrameTooLarge."""
        return self._decoder.feed(data), b""

    def wrap(self, frame: bytes) -> bytes:
        """A stream frame goes on the wire as it is."""
        return frame

    def close(self) -> bytes:
        """Nothing ends a TCP session but the connection's close."""
        return b""

    def set_max_message_size(self, size: int) -> None:
        """Change the largest frame accepted."""
        self._decoder.set_max_message_size(size)


def framer_for(scheme: str, client: bool, host: str, max_message_size: int) -> Framer:
    """The framer of a new connection of ``scheme`` (``host``: the WebSocket Host header)."""
    if scheme in ("coap+tcp", "coaps+tcp"):
        return TCPFramer(max_message_size)
    from .websocket import WebSocketFramer

    return WebSocketFramer(client, host, max_message_size)
