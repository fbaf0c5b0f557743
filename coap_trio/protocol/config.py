"""Configuration and statistics of the messaging layer.

Owns the tunables (:class:`MessagingConfig`) and the counters snapshot
(:class:`MessagingStatistics`) of :class:`~coap_trio.protocol.messaging.Messaging`.
"""

from __future__ import annotations

import attrs

from ..numbers.constants import TransmissionParameters
from .matcher import RECOGNIZED_RESPONSE_OPTIONS

__all__ = ["BlockwiseConfig", "MessagingConfig", "MessagingStatistics"]


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
    #: How many message IDs there are per remote within EXCHANGE_LIFETIME:
    #: 65,536 (RFC 7252's 16 bits). A test lowers it to run out of IDs quickly;
    #: nothing else should change it.
    mid_space: int = attrs.field(default=0x10000, validator=attrs.validators.in_(range(1, 0x10001)))
    #: Options a response may carry (critical ones outside this set reject it).
    recognized_response_options: frozenset[int] = RECOGNIZED_RESPONSE_OPTIONS


def _check_block_size(
    instance: BlockwiseConfig, attribute: attrs.Attribute[int], value: int
) -> None:
    if value not in (16, 32, 64, 128, 256, 512, 1024):
        raise ValueError(f"block size {value} is not a power of two in 16..1024")


@attrs.frozen
class BlockwiseConfig:
    """Tunables of block-wise transfers (RFC 7959), client and server side.

    ``block_size`` is the largest block this side sends or asks for: the
    client's Block1 size and its early Block2 negotiation, the server's
    preferred Block2 size and the size it asks for in 2.31 Continue. The
    peer may always negotiate smaller blocks.
    """

    #: Block size in bytes (16..1024, a power of two).
    block_size: int = attrs.field(default=1024, validator=_check_block_size)
    #: Server: the largest request body assembled from Block1 blocks (4.13 with
    #: Size1 beyond). Client: the largest response assembled in memory from
    #: Block2 blocks (``Context.stream`` has no such limit).
    max_body_size: int = 1 << 20
    #: Server: unfinished Block1 assemblies kept per remote and in total.
    max_assemblies_per_remote: int = 8
    max_assemblies: int = 1024
    #: Server: bytes held by all Block1 assemblies together.
    max_assembly_bytes: int = 64 << 20
    #: Server: rendered representations kept for Block2 transfers in progress,
    #: per remote and in total, and the bytes they may hold together.
    max_cached_per_remote: int = 16
    max_cached: int = 1024
    max_cached_bytes: int = 64 << 20
    #: Seconds an unfinished transfer is kept after its last block.
    lifetime: float = attrs.field(factory=lambda: TransmissionParameters().EXCHANGE_LIFETIME)

    @property
    def szx(self) -> int:
        """The size exponent of ``block_size``."""
        return self.block_size.bit_length() - 5


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
    #: Observations whose notifications the machine tracks (over a reliable
    #: transport, per connection; the UDP machine keeps none: 0).
    served_observations: int = 0
