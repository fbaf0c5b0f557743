"""Configuration and statistics of the messaging layer.

Owns the tunables (:class:`MessagingConfig`) and the counters snapshot
(:class:`MessagingStatistics`) of :class:`~coap_trio.protocol.messaging.Messaging`.
"""

from __future__ import annotations

import attrs

from ..numbers.constants import TransmissionParameters
from .matcher import RECOGNIZED_RESPONSE_OPTIONS

__all__ = ["MessagingConfig", "MessagingStatistics"]


@attrs.frozen
class MessagingConfig:
    """Tunables of one messaging endpoint (all times in seconds)."""

    params: TransmissionParameters = attrs.field(factory=TransmissionParameters)
    #: Token length for new requests, 0..8.
    token_length: int = 8
    #: How long a received CON may be handled before an empty ACK goes out and
    #: the response becomes a separate one.
    ack_delay: float = 0.1
    #: How long a NON request waits for its response (None: MAX_TRANSMIT_WAIT).
    non_response_timeout: float | None = None
    #: How long to wait for a separate response after an empty ACK (None: EXCHANGE_LIFETIME).
    separate_response_timeout: float | None = None
    #: Deduplication bounds.
    dedup_max_total: int = 200_000
    dedup_max_per_remote: int = 20_000
    #: Requests being handled at once (received, not yet answered) before new
    #: ones are answered with RST (CON) or dropped (NON) and counted.
    max_pending_requests: int = 10_000
    #: Remotes whose message-ID state is kept.
    max_remotes: int = 100_000
    #: Options a response may carry (critical ones outside this set reject it).
    recognized_response_options: frozenset[int] = RECOGNIZED_RESPONSE_OPTIONS


@attrs.frozen
class MessagingStatistics:
    """Counters of one messaging endpoint."""

    datagrams_received: int
    malformed: int
    duplicates: int
    pings: int
    resets_sent: int
    retransmissions: int
    requests_timed_out: int
    unmatched: int
    rejected_responses: int
    overloaded: int
    dedup_entries: int
    dedup_evicted: int
    mid_remotes: int
    mid_remotes_evicted: int
    outstanding_requests: int
    queued_requests: int
    pending_server_requests: int
