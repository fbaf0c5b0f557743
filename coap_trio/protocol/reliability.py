"""CON retransmission and ACK/RST matching by message ID (RFC 7252 §4.2, §4.3).

Owns the messages this endpoint sent that a peer may still acknowledge or
reset: CONs awaiting their ACK (retransmitted on the §4.2 schedule: an
initial timeout uniform in [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR],
doubling, at most MAX_RETRANSMIT times) and NONs a peer may still answer
with RST (for NON_LIFETIME). Timers live in the shared
:class:`~coap_trio.protocol.timers.TimerHeap` of the endpoint.

Must not know what the messages are (requests, responses, notifications):
the owner of each transmission is opaque here.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Hashable
from typing import Any

from ..numbers.constants import TransmissionParameters
from .timers import TimerHeap

__all__ = ["RETRANSMIT", "Reliability", "Transmission"]

#: The timer kind this module schedules in the shared heap.
RETRANSMIT = 0

_Key = tuple[Hashable, int]


class Transmission:
    """A CON being (re)transmitted until it is acknowledged, reset or given up."""

    __slots__ = ("count", "data", "interval", "key", "owner", "ticket")

    def __init__(self, key: _Key, data: bytes, owner: Any, interval: float) -> None:
        #: (remote, MID)
        self.key = key
        #: The encoded datagram, sent again unchanged.
        self.data = data
        #: Whatever the caller attached (the exchange).
        self.owner = owner
        #: The current timeout; doubles with each retransmission.
        self.interval = interval
        #: Retransmissions so far.
        self.count = 0
        #: The ticket of its pending timer; 0 when none is current.
        self.ticket = 0


class Reliability:
    """Outgoing CONs awaiting ACK and recent NONs, by (remote, MID)."""

    def __init__(
        self,
        params: TransmissionParameters,
        rng: random.Random,
        timers: TimerHeap[tuple[int, Any]],
    ) -> None:
        self._params = params
        self._rng = rng
        self._timers = timers
        self._unacked: dict[_Key, Transmission] = {}
        self._sent_non: dict[_Key, tuple[float, Any]] = {}
        self._sent_non_order: deque[tuple[float, _Key]] = deque()
        #: Retransmissions performed so far.
        self.retransmissions = 0

    def send_con(self, key: _Key, data: bytes, owner: Any, now: float) -> Transmission:
        """Start retransmitting ``data`` (already sent once by the caller) until acknowledged."""
        params = self._params
        interval = self._rng.uniform(
            params.ACK_TIMEOUT, params.ACK_TIMEOUT * params.ACK_RANDOM_FACTOR
        )
        transmission = Transmission(key, data, owner, interval)
        transmission.ticket = self._timers.schedule(now + interval, (RETRANSMIT, transmission))
        self._unacked[key] = transmission
        return transmission

    def remember_non(self, key: _Key, owner: Any, now: float) -> float:
        """Remember a NON we sent so an RST can be matched to ``owner``; returns its expiry."""
        expires = now + self._params.NON_LIFETIME
        self._sent_non[key] = (expires, owner)
        self._sent_non_order.append((expires, key))
        return expires

    def acknowledged(self, key: _Key) -> Any:
        """An ACK for ``key`` arrived: stop retransmitting; returns the owner (or None)."""
        transmission = self._unacked.pop(key, None)
        if transmission is None:
            return None
        self._timers.cancel(transmission.ticket)
        transmission.ticket = 0
        return transmission.owner

    def reset(self, key: _Key, now: float) -> Any:
        """An RST for ``key`` arrived: returns the owner of the CON or NON it answers, or None."""
        transmission = self._unacked.pop(key, None)
        if transmission is not None:
            self._timers.cancel(transmission.ticket)
            transmission.ticket = 0
            return transmission.owner
        entry = self._sent_non.pop(key, None)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def cancel(self, transmission: Transmission) -> None:
        """Stop retransmitting (abandoned exchange); idempotent."""
        key = transmission.key
        if self._unacked.get(key) is transmission:
            del self._unacked[key]
        self._timers.cancel(transmission.ticket)
        transmission.ticket = 0

    def inherit(self, new: Transmission, old: Transmission, now: float) -> None:
        """``new`` replaces the superseded ``old`` (RFC 7641 §4.5.2): it takes over
        the retransmission counter and the current timeout."""
        new.count = old.count
        new.interval = old.interval
        self._timers.cancel(new.ticket)
        new.ticket = self._timers.schedule(now + new.interval, (RETRANSMIT, new))

    def fire(self, transmission: Transmission, ticket: int, now: float) -> bytes | bool | None:
        """A retransmission timer is due. Returns the bytes to send again, ``None``
        for a stale timer, or ``False`` when MAX_RETRANSMIT is reached and the
        transmission is given up."""
        if transmission.ticket != ticket:
            return None
        if transmission.count < self._params.MAX_RETRANSMIT:
            transmission.count += 1
            transmission.interval *= 2
            transmission.ticket = self._timers.schedule(
                now + transmission.interval, (RETRANSMIT, transmission)
            )
            self.retransmissions += 1
            return transmission.data
        self.cancel(transmission)
        return False

    def sweep(self, now: float) -> float | None:
        """Forget expired NON records; returns the next expiry (or None)."""
        order = self._sent_non_order
        sent_non = self._sent_non
        while order and order[0][0] <= now:
            _, key = order.popleft()
            entry = sent_non.get(key)
            if entry is not None and entry[0] <= now:
                del sent_non[key]
        return order[0][0] if order else None

    def towards(self, remote: Hashable) -> list[Transmission]:
        """Every CON awaiting its ACK from ``remote`` (a scan; for rare events)."""
        return [t for (r, _), t in self._unacked.items() if r == remote]

    @property
    def awaiting_ack(self) -> int:
        """CONs currently awaiting their ACK."""
        return len(self._unacked)
