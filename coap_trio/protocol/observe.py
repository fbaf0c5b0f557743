"""Observe (RFC 7641) bookkeeping that needs no I/O: sequence numbers and freshness.

Owns the 24-bit Observe sequence of a server-side observation, the
notification rendered once and sent to many observers
(:class:`SharedNotification`), and the §3.4 rule a client uses to drop
stale (reordered) notifications. Must not know
about exchanges, resources or time sources (``now`` is an argument).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..message import Message

__all__ = [
    "FRESHNESS_WINDOW",
    "NotificationOrder",
    "ObserveSequence",
    "SharedNotification",
    "is_newer",
]

_MOD = 1 << 24
_HALF = 1 << 23
#: Seconds after which any notification counts as newer (RFC 7641 §3.4).
FRESHNESS_WINDOW = 128.0


def is_newer(v1: int, t1: float, v2: int, t2: float) -> bool:
    """Whether notification 2 (Observe ``v2`` received at ``t2``) is newer than 1 (§3.4)."""
    return (
        (v1 < v2 and v2 - v1 < _HALF) or (v1 > v2 and v1 - v2 > _HALF) or t2 > t1 + FRESHNESS_WINDOW
    )


class NotificationOrder:
    """The client side of §3.4: remembers the freshest notification seen so far."""

    __slots__ = ("_time", "_value")

    def __init__(self) -> None:
        self._value: int | None = None
        self._time = 0.0

    def accept(self, value: int, now: float) -> bool:
        """True (and remember it) if a notification with Observe ``value`` is fresh."""
        if self._value is not None and not is_newer(self._value, self._time, value, now):
            return False
        self._value = value & (_MOD - 1)
        self._time = now
        return True


class ObserveSequence:
    """The server side: strictly increasing 24-bit Observe values for one observation."""

    __slots__ = ("_next",)

    def __init__(self, start: int = 0) -> None:
        self._next = start % _MOD

    def next(self) -> int:
        """The Observe value for the next notification (wraps at 2**24)."""
        value = self._next
        self._next = (value + 1) % _MOD
        return value


class SharedNotification:
    """One rendered notification sent to several observers whose registrations
    are alike: each one's copy differs only in token, message ID, type and Observe.

    :attr:`message` (a 2.xx, without Observe) must not change once made; the
    first messaging machine that encodes it keeps the encoded parts in
    :attr:`parts` (see :func:`coap_trio.codec.observe_parts`) for the others.
    """

    __slots__ = ("message", "parts")

    def __init__(self, message: Message) -> None:
        #: The notification as rendered (code, options, payload; no Observe).
        self.message = message
        #: Set by the first machine that encodes it: its parts around Observe.
        self.parts: tuple[bytes, bytes, int] | None = None
