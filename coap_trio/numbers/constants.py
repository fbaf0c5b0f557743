"""Protocol constants: transmission parameters (RFC 7252 §4.8) and URI schemes.

Owns the numbers the reliability layer and URI handling read. The derived
values are computed from the base parameters exactly as §4.8.2 does, so that
changing ACK_TIMEOUT or MAX_RETRANSMIT changes every dependent figure.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "COAPS_PORT",
    "COAP_PORT",
    "DEFAULT_PORTS",
    "TransmissionParameters",
]


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 1:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


def _non_negative_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


@attrs.frozen
class TransmissionParameters:
    """The CoAP transmission parameters of RFC 7252 §4.8, with the derived ones of §4.8.2.

    All times are in seconds. The defaults are the RFC's.
    """

    ACK_TIMEOUT: float = attrs.field(default=2.0, validator=_positive)
    ACK_RANDOM_FACTOR: float = attrs.field(default=1.5, validator=_at_least_one)
    MAX_RETRANSMIT: int = attrs.field(default=4, validator=_non_negative_int)
    NSTART: int = attrs.field(default=1, validator=[_non_negative_int, _at_least_one])
    DEFAULT_LEISURE: float = attrs.field(default=5.0, validator=_positive)
    #: Bytes per second towards an endpoint that does not respond (§4.7).
    PROBING_RATE: float = attrs.field(default=1.0, validator=_positive)
    #: Fixed by the RFC at 100 s; changeable only for deployments that know better.
    MAX_LATENCY: float = attrs.field(default=100.0, validator=_positive)

    @property
    def MAX_TRANSMIT_SPAN(self) -> float:  # noqa: N802 -- the RFC's name
        """Longest time from the first to the last transmission of a CON (45 s by default)."""
        return float(self.ACK_TIMEOUT * (2**self.MAX_RETRANSMIT - 1) * self.ACK_RANDOM_FACTOR)

    @property
    def MAX_TRANSMIT_WAIT(self) -> float:  # noqa: N802
        """Longest time from the first transmission of a CON to giving up (93 s)."""
        return float(
            self.ACK_TIMEOUT * (2 ** (self.MAX_RETRANSMIT + 1) - 1) * self.ACK_RANDOM_FACTOR
        )

    @property
    def PROCESSING_DELAY(self) -> float:  # noqa: N802
        """Time a node takes to turn around a CON into an ACK; ACK_TIMEOUT (2 s)."""
        return self.ACK_TIMEOUT

    @property
    def MAX_RTT(self) -> float:  # noqa: N802
        """Maximum round-trip time: 2 * MAX_LATENCY + PROCESSING_DELAY (202 s)."""
        return 2 * self.MAX_LATENCY + self.PROCESSING_DELAY

    @property
    def EXCHANGE_LIFETIME(self) -> float:  # noqa: N802
        """How long a message ID of a CON stays in use (247 s)."""
        return self.MAX_TRANSMIT_SPAN + 2 * self.MAX_LATENCY + self.PROCESSING_DELAY

    @property
    def NON_LIFETIME(self) -> float:  # noqa: N802
        """How long a message ID of a NON stays in use (145 s)."""
        return self.MAX_TRANSMIT_SPAN + self.MAX_LATENCY


#: The default port of ``coap://`` (and of ``coap+tcp://``), RFC 7252 §6.1.
COAP_PORT = 5683
#: The default port of ``coaps://`` (and of ``coaps+tcp://``), RFC 7252 §6.2.
COAPS_PORT = 5684

#: Default port per URI scheme (RFC 7252 §6, RFC 8323 §8).
DEFAULT_PORTS: dict[str, int] = {
    "coap": COAP_PORT,
    "coaps": COAPS_PORT,
    "coap+tcp": COAP_PORT,
    "coaps+tcp": COAPS_PORT,
    "coap+ws": 80,
    "coaps+ws": 443,
}
