"""What each side keeps between a request and its responses (RFC 8613 §7.1, §8).

Owns the two request-response bindings: the client's (its request's 'kid'
and Partial IV, the original request for an Echo repetition, the
Notification Number of an observation, whether the request's nonce was
already used by a response) and the server's (the verified request's 'kid'
and Partial IV, whether its nonce may still protect a response). The
client binding's states and legal transitions are ``CLIENT_TRANSITIONS``.

A binding is kept by whoever keeps the exchange (the shell, with the
token): the engine holds none, so no table here grows with what peers send.
Must not know about keys, nonces or how messages are built.
"""

from __future__ import annotations

import enum

from ...message import Message
from .context import SecurityContext

__all__ = ["CLIENT_TRANSITIONS", "ClientBinding", "ClientInput", "ClientState", "ServerBinding"]


class ClientState(enum.Enum):
    """Where a protected request stands, as far as OSCORE is concerned."""

    # Members are singletons compared by identity: hash them as objects (in C,
    # where Enum's own __hash__ hashes the name in Python, per state transition).
    __hash__ = object.__hash__

    #: Sent; no response verified yet.
    SENT = "sent"
    #: An Observe registration whose notifications are being verified (§7.4.1).
    OBSERVING = "observing"
    #: A final response verified: no further response is accepted (§7.4).
    DONE = "done"
    #: Answered 4.01 with an Echo value: repeated as a new request, which has
    #: its own binding (RFC 9175 §2.4); nothing more is accepted here.
    REPEATED = "repeated"


class ClientInput(enum.Enum):
    """What a verified response does to its binding."""

    # Members are singletons compared by identity: hash them as objects (in C,
    # where Enum's own __hash__ hashes the name in Python, per state transition).
    __hash__ = object.__hash__

    #: A response that ends the request (any response without Inner Observe).
    FINAL = "final"
    #: A notification (a response with Inner Observe to a registration).
    NOTIFICATION = "notification"
    #: A 4.01 with Echo, answered by repeating the request once.
    REPEAT = "repeat"


#: (state, input) -> next state. A response arriving in a state without an
#: entry for it is refused as a replay (only one response, §7.4).
CLIENT_TRANSITIONS: dict[tuple[ClientState, ClientInput], ClientState] = {
    (ClientState.SENT, ClientInput.FINAL): ClientState.DONE,
    (ClientState.SENT, ClientInput.NOTIFICATION): ClientState.OBSERVING,
    (ClientState.SENT, ClientInput.REPEAT): ClientState.REPEATED,
    (ClientState.OBSERVING, ClientInput.NOTIFICATION): ClientState.OBSERVING,
    (ClientState.OBSERVING, ClientInput.FINAL): ClientState.DONE,
}


class ClientBinding:
    """A protected request as its client keeps it until its last response (§8).

    Made by the engine's ``protect_request``; handed back to
    ``verify_response`` with every response to that request.
    """

    __slots__ = (
        "context",
        "may_repeat",
        "notification_number",
        "observe",
        "request",
        "request_kid",
        "request_nonce_used",
        "request_piv",
        "state",
    )

    #: The security context that protected the request.
    context: SecurityContext
    #: The request's 'kid' (our Sender ID) and Partial IV: the response's AAD (§5.4).
    request_kid: bytes
    request_piv: bytes
    #: The request as it was before protection (for an Echo repetition).
    request: Message
    #: Whether the request registered an observation (Inner Observe 0).
    observe: bool
    #: The largest Partial IV of the verified notifications (§4.1.3.5.2), or None.
    notification_number: int | None
    #: Whether a response without Partial IV (using the request's nonce) was verified.
    request_nonce_used: bool
    #: Whether a 4.01 with Echo may still be answered by repeating the request.
    may_repeat: bool
    #: See :class:`ClientState`.
    state: ClientState

    def __init__(
        self,
        context: SecurityContext,
        request_piv: bytes,
        request: Message,
        *,
        observe: bool,
        may_repeat: bool = True,
    ) -> None:
        self.context = context
        self.request_kid = context.sender_id
        self.request_piv = request_piv
        self.request = request
        self.observe = observe
        self.notification_number = None
        self.request_nonce_used = False
        self.may_repeat = may_repeat
        self.state = ClientState.SENT

    def move(self, event: ClientInput) -> bool:
        """Take the transition for ``event``; False (and no change) when it is not legal."""
        following = CLIENT_TRANSITIONS.get((self.state, event))
        if following is None:
            return False
        self.state = following
        return True

    def accepts(self, event: ClientInput) -> bool:
        """Whether ``event`` is legal now."""
        return (self.state, event) in CLIENT_TRANSITIONS

    def __repr__(self) -> str:
        return f"<ClientBinding piv={self.request_piv.hex()} {self.state.value}>"


class ServerBinding:
    """A verified request as its server keeps it until its last response (§7.1, §8.3)."""

    __slots__ = ("context", "nonce_reusable", "observe", "request_kid", "request_piv")

    #: The security context that verified the request (and protects the responses).
    context: SecurityContext
    #: The request's 'kid' (the client's Sender ID) and Partial IV (§5.4).
    request_kid: bytes
    request_piv: bytes
    #: Whether the request registered an observation (Inner Observe 0).
    observe: bool
    #: Whether one response may still reuse the request's nonce (no Partial IV,
    #: §8.3 step 3): true once, and only for a request checked against the
    #: replay window (not one answered for freshness, Appendix B.1.2).
    nonce_reusable: bool

    def __init__(
        self,
        context: SecurityContext,
        request_kid: bytes,
        request_piv: bytes,
        *,
        observe: bool,
        nonce_reusable: bool,
    ) -> None:
        self.context = context
        self.request_kid = request_kid
        self.request_piv = request_piv
        self.observe = observe
        self.nonce_reusable = nonce_reusable

    def __repr__(self) -> str:
        return f"<ServerBinding kid={self.request_kid.hex() or '-'} piv={self.request_piv.hex()}>"
