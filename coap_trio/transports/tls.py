"""TLS for the reliable transports (RFC 8323 §3, coaps+tcp and coaps+ws), without I/O.

Owns :class:`TLSSession`: the standard library's ``ssl`` on two memory
buffers (:meth:`ssl.SSLContext.wrap_bio`), so the one task of a connection
drives the handshake itself and ``send()`` encrypts synchronously: bytes
received from the socket go in (:meth:`TLSSession.receive`), plaintext comes
out, and whatever TLS has to say (handshake flights, records, alerts, the
closing ``close_notify``) is taken with :meth:`TLSSession.take_output` and
queued for the socket by the caller. Also :func:`client_context`, the
client side's context (certificate verification on by default, ALPN
``coap`` for ``coaps+tcp``). Knows nothing of sockets, frames or CoAP.
"""

from __future__ import annotations

import ssl

__all__ = ["TLSSession", "client_context"]

#: Plaintext asked for per SSLObject.read (one TLS record is at most 16 KiB).
_READ_SIZE = 65536


def client_context(scheme: str, context: ssl.SSLContext | None) -> ssl.SSLContext:
    """The context securing a connection we open: ``context`` or a verifying default.

    ``coaps+tcp`` connections offer ALPN ``coap`` (RFC 8323 §9.1), set on the
    context itself as the listeners do.
    """
    chosen = context or ssl.create_default_context()
    if scheme == "coaps+tcp":
        chosen.set_alpn_protocols(["coap"])
    return chosen


class TLSSession:
    """One connection's TLS state on memory buffers (see the module).

    ``server_hostname`` (client side) is what the server's certificate is
    verified against, and the SNI sent. Every method raises
    :class:`ssl.SSLError` (an ``OSError``) when TLS fails; the session is
    then unusable and the connection must end.
    """

    __slots__ = ("_incoming", "_object", "_outgoing", "established", "peer_closed")

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        #: True once the handshake completed.
        self.established = False
        #: True once the peer closed its side of TLS (its ``close_notify``).
        self.peer_closed = False

    def handshake(self, data: bytes = b"") -> bool:
        """Feed handshake bytes received; True once the handshake is complete.

        What to send back is in :meth:`take_output` (also after a failure: an alert).
        """
        if data:
            self._incoming.write(data)
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.established = True
        return True

    def receive(self, data: bytes) -> bytes:
        """Bytes from the socket in; the plaintext they complete out (maybe none).

        A ``close_notify`` from the peer sets :attr:`peer_closed`. TLS may
        have something to answer (a key update): see :meth:`take_output`.
        """
        if data:
            self._incoming.write(data)
        read = self._object.read
        chunks: list[bytes] = []
        while True:  # one round per record buffered: ends at SSLWantReadError
            try:
                chunk = read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def encrypt(self, plaintext: bytes) -> bytes:
        """``plaintext`` as TLS records to send (with anything else TLS had pending)."""
        view = memoryview(plaintext)
        write = self._object.write
        while view:
            written = write(view)
            view = view[written:]
        return self._outgoing.read()

    def take_output(self) -> bytes:
        """The bytes TLS has produced for the peer and not yet handed out."""
        return self._outgoing.read()

    def close(self) -> bytes:
        """Our ``close_notify`` (nothing if TLS never came up or already failed)."""
        if not self.established:
            return b""
        try:
            self._object.unwrap()
        except ssl.SSLWantReadError:
            return self._outgoing.read()  # ours is out; the peer's is not awaited
        except ssl.SSLError:
            return b""
        return self._outgoing.read()
