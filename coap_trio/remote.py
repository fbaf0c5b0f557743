"""Addresses of datagram peers, as the messaging layer sees them.

Owns :class:`DatagramRemote`: a hashable, canonical peer address (the socket
address exactly as a receive call reports it, plus the URI scheme), its
marked forms for handlers (:class:`MulticastRemote`, :class:`OscoreRemote`,
:class:`DtlsRemote` with the :class:`DtlsPeer` a ``coaps://`` peer proved
to be), which
the sans-I/O state machines use as a dictionary key and which
:meth:`coap_trio.message.Message.get_request_uri` reads scheme, host and
port from. Must not know about sockets or trio; transports create these.
"""

from __future__ import annotations

from typing import Any, cast

import attrs

from .uri import format_hostinfo

__all__ = ["DatagramRemote", "DtlsPeer", "DtlsRemote", "MulticastRemote", "OscoreRemote"]

_MAPPED_PREFIX = "::ffff:"


class DatagramRemote(tuple[tuple[Any, ...], str]):
    """A datagram peer: ``sockaddr`` as the transport reports it, and the URI scheme.

    Two remotes are equal exactly when their socket addresses and schemes
    are, so a transport must build the one for an outgoing destination in the
    same canonical form its receive calls produce (see the transport's
    ``remote_for``). IPv4 peers of a dual-stack IPv6 socket appear as
    IPv4-mapped addresses in ``sockaddr`` but as plain IPv4 in :attr:`host`.

    It is a tuple ``(sockaddr, scheme)`` underneath so that hashing and
    comparison, done several times per datagram by the messaging layer's
    dictionaries, run in C.
    """

    __slots__ = ()

    def __new__(cls, sockaddr: tuple[Any, ...], scheme: str = "coap") -> DatagramRemote:
        return tuple.__new__(cls, (tuple(sockaddr), scheme))

    @property
    def sockaddr(self) -> tuple[Any, ...]:
        """The socket address: ``(host, port)`` or ``(host, port, flowinfo, scope_id)``."""
        return self[0]

    @property
    def scheme(self) -> str:
        """The URI scheme this peer is reached with, e.g. ``"coap"``."""
        return self[1]

    def __repr__(self) -> str:
        return f"DatagramRemote(sockaddr={self[0]!r}, scheme={self[1]!r})"

    @property
    def host(self) -> str:
        """The IP address as text: IPv4-mapped IPv6 is shown as IPv4."""
        host: str = self.sockaddr[0]
        if host.startswith(_MAPPED_PREFIX) and "." in host:
            return host[len(_MAPPED_PREFIX) :]
        return host

    @property
    def port(self) -> int:
        """The port number."""
        port: int = self.sockaddr[1]
        return port

    @property
    def hostinfo(self) -> str:
        """``host:port`` as in a URI authority (IPv6 in brackets, default port omitted)."""
        return format_hostinfo(self[1], self.host, self.port)

    @property
    def uri_base(self) -> str:
        """``scheme://hostinfo``."""
        return f"{self.scheme}://{self.hostinfo}"

    def __str__(self) -> str:
        return self.uri_base

    @property
    def peer(self) -> DtlsPeer | None:
        """Who the peer proved to be in its DTLS handshake (None: not a ``coaps://`` peer,
        or one whose handshake is not done)."""
        return None

    @property
    def group(self) -> str | None:
        """The multicast group a request from this peer was sent to (None: unicast)."""
        return None


class MulticastRemote(DatagramRemote):
    """A peer whose request reached us through a multicast group (RFC 7252 §8.2).

    Its address is the peer's own, as for any :class:`DatagramRemote`;
    :attr:`group` is the group address the request was sent to. Handlers
    see it on ``request.remote`` (a resource can decline such requests: see
    :attr:`coap_trio.resource.Resource.multicast`), and the answer goes to
    the peer by unicast, from the server's unicast address.
    """

    __slots__ = ()

    def __new__(
        cls, sockaddr: tuple[Any, ...], scheme: str = "coap", group: str = ""
    ) -> MulticastRemote:
        return tuple.__new__(cls, (tuple(sockaddr), scheme, group))

    @property
    def group(self) -> str:
        """The group address the request was sent to."""
        return self[-1]  # (the third item: (sockaddr, scheme, group))

    def __repr__(self) -> str:
        return f"MulticastRemote(sockaddr={self[0]!r}, scheme={self[1]!r}, group={self.group!r})"


class OscoreRemote(DatagramRemote):
    """A peer whose request verified with an OSCORE security context (RFC 8613).

    Handlers see it on ``request.remote`` of every request that was
    protected: its address and scheme are the peer's, as for any
    :class:`DatagramRemote`, and :attr:`recipient_id` and :attr:`id_context`
    name the security context that verified it, the identity a handler
    authorizes (the Recipient ID is the peer's Sender ID, its 'kid'; for a
    context established with EDHOC, :attr:`credential` is the peer's). Two
    are equal when address, scheme and context are, so a peer's protected
    and plain requests never share server state (a block-wise upload, a
    kept representation). A plain request's remote is a
    :class:`DatagramRemote`: ``isinstance(request.remote, OscoreRemote)``
    tells whether a request was protected.
    """

    __slots__ = ()

    def __new__(
        cls,
        sockaddr: tuple[Any, ...],
        scheme: str = "coap",
        recipient_id: bytes = b"",
        id_context: bytes | None = None,
        credential: bytes | None = None,
    ) -> OscoreRemote:
        return tuple.__new__(cls, (tuple(sockaddr), scheme, recipient_id, id_context, credential))

    @property
    def recipient_id(self) -> bytes:
        """The Recipient ID of the security context: the peer's Sender ID ('kid')."""
        value: bytes = _items(self)[2]
        return value

    @property
    def id_context(self) -> bytes | None:
        """The ID Context of the security context (None: it has none)."""
        value: bytes | None = _items(self)[3]
        return value

    @property
    def credential(self) -> bytes | None:
        """The peer's credential (a CBOR-encoded CCS) that EDHOC authenticated when
        the security context was established with it (RFC 9528); None for a
        context from configuration, whose keys are the authentication."""
        value: bytes | None = _items(self)[4]
        return value

    def __repr__(self) -> str:
        context = "" if self.id_context is None else f", id_context={self.id_context.hex()!r}"
        return (
            f"OscoreRemote(sockaddr={self[0]!r}, scheme={self[1]!r}, "
            f"recipient_id={self.recipient_id.hex()!r}{context})"
        )


def _items(remote: DatagramRemote) -> tuple[Any, ...]:
    """``remote`` as the plain tuple it is (a subclass may have more items)."""
    return cast(tuple[Any, ...], remote)


@attrs.frozen
class DtlsPeer:
    """Who a ``coaps://`` peer proved to be in its DTLS handshake.

    One field is set, by the cipher suite: :attr:`psk_identity` (a pre-shared
    key), :attr:`certificate_subject` (an X.509 certificate, checked against
    the trusted CAs unless the credentials turn checking off) or
    :attr:`rpk_fingerprint` (an RFC 7250 raw public key); none when the peer
    did not authenticate (a client a server did not ask for a certificate).
    A resource authorizes on it: ``request.remote.peer``.
    """

    #: The identity a client used with its pre-shared key (on a server); the
    #: identity we used (on a client).
    psk_identity: bytes | None = None
    #: The subject of the peer's certificate, RFC 4514 text (``CN=client.example``).
    certificate_subject: str | None = None
    #: The SHA-256 fingerprint of the peer's raw public key (its DER
    #: SubjectPublicKeyInfo), as hex.
    rpk_fingerprint: str | None = None

    @property
    def authenticated(self) -> bool:
        """Whether the peer proved an identity at all."""
        return (
            self.psk_identity is not None
            or self.certificate_subject is not None
            or self.rpk_fingerprint is not None
        )


class DtlsRemote(DatagramRemote):
    """A ``coaps://`` peer (CoAP over DTLS, RFC 7252 §9): its address, and who it is.

    Equal to, and hashed as, the plain ``(sockaddr, "coaps")`` remote: the
    destination a client named before any handshake and the remote its
    responses arrive from once the session is up are one key of the
    messaging tables. :attr:`peer` is who the peer proved to be in the
    session a message came through (see :class:`DtlsPeer`); a response sent
    to a remote whose :attr:`peer` is not the current session's peer (the
    session was replaced by a new handshake meanwhile) is dropped, not sent
    to the new peer. :attr:`server_name` is the host a client asked for (a
    URI's host name), which the server's certificate is checked against.
    """

    # No __slots__: a tuple subclass keeps extra attributes in a __dict__,
    # outside the tuple, so equality and hashing stay the tuple's (in C).
    _peer: DtlsPeer | None
    _server_name: str | None

    def __new__(
        cls,
        sockaddr: tuple[Any, ...],
        scheme: str = "coaps",
        *,
        peer: DtlsPeer | None = None,
        server_name: str | None = None,
    ) -> DtlsRemote:
        remote = tuple.__new__(cls, (tuple(sockaddr), scheme))
        remote._peer = peer
        remote._server_name = server_name
        return remote

    @property
    def peer(self) -> DtlsPeer | None:
        """Who the peer proved to be (None until its handshake completed)."""
        return self._peer

    @property
    def server_name(self) -> str | None:
        """The host name a client asked for (None: the address itself)."""
        return self._server_name

    def with_peer(self, peer: DtlsPeer) -> DtlsRemote:
        """The same remote, with ``peer`` (and the same :attr:`server_name`)."""
        return DtlsRemote(self[0], self[1], peer=peer, server_name=self._server_name)

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self[0], self[1])

    def __repr__(self) -> str:
        return f"DtlsRemote(sockaddr={self[0]!r}, scheme={self[1]!r}, peer={self._peer!r})"
