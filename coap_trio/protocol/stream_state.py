"""Configuration and per-connection state of the RFC 8323 messaging machine.

Owns :class:`StreamMessagingConfig` (the tunables), :class:`PeerSettings`
(what a peer announced in its CSM) and the record kept per connection (the
peer's limits, Pings in flight, requests being served, observations served,
requests waiting for the peer's CSM), for
:mod:`~coap_trio.protocol.stream_messaging`; holds no behaviour.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

from ..errors import ConnectionReleasedError
from ..numbers.constants import TransmissionParameters
from .config import MessagingConfig
from .exchanges import ClientExchange, ServerExchange
from .framing import DEFAULT_MAX_MESSAGE_SIZE
from .matcher import RECOGNIZED_RESPONSE_OPTIONS

__all__ = ["ConnectionState", "PeerSettings", "StreamMessagingConfig"]


@attrs.frozen
class StreamMessagingConfig:
    """Tunables of a :class:`StreamMessaging` (times in seconds)."""

    #: Token length for new requests, 0..8.
    token_length: int = 8
    #: The Max-Message-Size we announce in our CSM: the largest frame we
    #: accept (give the same to the connection's ``StreamDecoder``).
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Announce Block-Wise-Transfer (BERT, RFC 8323 §6) in our CSM; BERT is
    #: used with a peer only when both sides announced it.
    block_wise_transfer: bool = True
    #: How long a request waits for its response (EXCHANGE_LIFETIME by default).
    response_timeout: float = attrs.field(
        factory=lambda: TransmissionParameters().EXCHANGE_LIFETIME
    )
    #: How long a Ping waits for its Pong before the connection counts as dead.
    ping_timeout: float = 30.0
    #: Received requests being handled at once, over all connections, before
    #: new ones are answered 5.03 and counted (``overloaded``).
    max_pending_requests: int = 10_000
    #: Options a response may carry (critical ones outside this set reject it).
    recognized_response_options: frozenset[int] = RECOGNIZED_RESPONSE_OPTIONS

    @classmethod
    def from_messaging_config(cls, config: MessagingConfig) -> StreamMessagingConfig:
        """The settings of a UDP :class:`~coap_trio.protocol.config.MessagingConfig` that
        apply here: token length, pending-request bound, recognized response options;
        the response timeout is its ``separate_response_timeout`` or EXCHANGE_LIFETIME."""
        return cls(
            token_length=config.token_length,
            response_timeout=config.separate_response_timeout or config.params.EXCHANGE_LIFETIME,
            max_pending_requests=config.max_pending_requests,
            recognized_response_options=config.recognized_response_options,
        )


@attrs.frozen
class PeerSettings:
    """What a peer announced in its CSM(s) (RFC 8323 §5.3), or the defaults before."""

    #: The largest message the peer accepts (1152 until its CSM says otherwise).
    max_message_size: int
    #: The peer announced Block-Wise-Transfer (it supports RFC 7959).
    block_wise_transfer: bool
    #: Whether the peer's CSM has arrived.
    csm_received: bool

    @property
    def bert(self) -> bool:
        """Whether the peer accepts BERT blocks (RFC 8323 §5.3.2, §6): Block-Wise-Transfer
        with a Max-Message-Size above 1152."""
        return self.block_wise_transfer and self.max_message_size > DEFAULT_MAX_MESSAGE_SIZE


class ConnectionState:
    """Everything the machine keeps about one connection."""

    __slots__ = (
        "bert",
        "csm_received",
        "max_message_size",
        "observations",
        "pings",
        "released",
        "remote",
        "serving",
        "waiting",
    )

    def __init__(self, remote: Hashable) -> None:
        self.remote = remote
        self.csm_received = False
        self.max_message_size = DEFAULT_MAX_MESSAGE_SIZE
        self.bert = False
        #: The error new requests fail with after a Release, else None.
        self.released: ConnectionReleasedError | None = None
        #: Requests larger than the default limit, waiting for the peer's CSM.
        self.waiting: list[tuple[ClientExchange, bytes]] = []
        #: Pings awaiting their Pong, by token.
        self.pings: dict[bytes, ClientExchange] = {}
        #: Received requests not answered yet.
        self.serving: set[ServerExchange] = set()
        #: Answered registrations whose notifications we send.
        self.observations: set[ServerExchange] = set()
