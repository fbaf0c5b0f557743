"""How a simulated link treats datagrams: loss, duplication, delay and reordering.

Owns :class:`LinkConditions` (a validated, immutable description of one
direction of a link), the per-direction override table a
:class:`~coap_trio.testing.MemoryNetwork` consults, and :func:`judge`, which
turns uniform random draws into the fate of each copy of a datagram. Must not
know about endpoints, trio, capture or where the random numbers come from:
the network supplies them, so that every decision stays reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from ._addresses import canonical_host

__all__ = ["LinkConditions"]


def _check_probability(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0.0 <= value <= 1.0  # also rejects NaN
    ):
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], not {value!r}")


def _check_duration(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0.0 <= value < math.inf  # also rejects NaN
    ):
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0, not {value!r}")


def _to_delay(value: float | tuple[float, float]) -> tuple[float, float]:
    """Accept ``(min, max)`` or one number (a fixed delay); validate both bounds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, tuple) and len(value) == 2:
        low, high = value
    else:
        raise ValueError(f"delay must be (min, max) seconds or one number, not {value!r}")
    for bound in (low, high):
        if (
            not isinstance(bound, int | float)
            or isinstance(bound, bool)
            or not 0.0 <= bound < math.inf
        ):
            raise ValueError(f"delay bounds must be finite numbers of seconds >= 0, not {value!r}")
    if low > high:
        raise ValueError(f"delay minimum exceeds its maximum: {value!r}")
    return (float(low), float(high))


@attrs.frozen
class LinkConditions:
    """What one direction of a simulated link does to each datagram (all default to perfect).

    Every datagram is first duplicated with probability :attr:`duplicate`;
    each resulting copy is then judged on its own: lost with probability
    :attr:`loss`, otherwise delayed by a uniform draw from :attr:`delay`, plus,
    with probability :attr:`reorder`, an extra uniform delay of up to
    :attr:`reorder_delay` seconds (which lets later datagrams overtake it).

    The draws are made in a fixed order whatever the values, so with one seed
    and the same traffic, raising :attr:`loss` only ever drops *more* of the
    same datagrams, and so on for the other knobs.
    """

    #: Probability that a copy is dropped (independently for each copy).
    loss: float = attrs.field(default=0.0, validator=_check_probability)
    #: Probability that a datagram is delivered twice.
    duplicate: float = attrs.field(default=0.0, validator=_check_probability)
    #: ``(min, max)`` seconds of uniform one-way delay; one number means a fixed delay.
    delay: tuple[float, float] = attrs.field(default=(0.0, 0.0), converter=_to_delay)
    #: Probability that a copy gets the extra reordering delay.
    reorder: float = attrs.field(default=0.0, validator=_check_probability)
    #: Upper bound, in seconds, of the extra (uniform) reordering delay.
    reorder_delay: float = attrs.field(default=1.0, validator=_check_duration)

    @property
    def is_perfect(self) -> bool:
        """True when nothing is lost, duplicated or delayed."""
        return (
            self.loss == 0.0
            and self.duplicate == 0.0
            and self.delay == (0.0, 0.0)
            and (self.reorder == 0.0 or self.reorder_delay == 0.0)
        )


#: Draws per datagram: one for duplication, then four for each of two copies.
DRAWS = 9


def judge(conditions: LinkConditions, draw: Callable[[], float]) -> list[float | None]:
    """The fate of each copy of one datagram: its delay in seconds, or None when lost.

    Always consumes exactly :data:`DRAWS` values from ``draw`` (uniform in
    [0, 1)), in a fixed order, whatever the conditions say.
    """
    values = [draw() for _ in range(DRAWS)]
    copies = 2 if values[0] < conditions.duplicate else 1
    low, high = conditions.delay
    fates: list[float | None] = []
    for index in range(copies):
        lost, spread, reorder, extra = values[1 + 4 * index : 5 + 4 * index]
        if lost < conditions.loss:
            fates.append(None)
            continue
        delay = low + (high - low) * spread
        if reorder < conditions.reorder:
            delay += conditions.reorder_delay * extra
        fates.append(delay)
    return fates


class ConditionTable:
    """The network-wide default conditions and the per-direction overrides by host.

    A datagram from ``source`` to ``destination`` (canonical hosts) takes the
    first match among ``(source, destination)``, ``(source, any)``,
    ``(any, destination)`` and the default.
    """

    def __init__(self, default: LinkConditions) -> None:
        self._table: dict[tuple[str | None, str | None], LinkConditions] = {(None, None): default}

    @property
    def default(self) -> LinkConditions:
        """The conditions of every direction without an override."""
        return self._table[None, None]

    def set(
        self, conditions: LinkConditions | None, source: str | None, destination: str | None
    ) -> None:
        """Set (or with None remove) the conditions for a direction; None hosts mean any."""
        key = (
            None if source is None else canonical_host(source),
            None if destination is None else canonical_host(destination),
        )
        if conditions is None:
            if key == (None, None):
                raise ValueError("the default conditions cannot be removed, only replaced")
            self._table.pop(key, None)
        elif not isinstance(conditions, LinkConditions):
            raise TypeError(f"expected LinkConditions, not {type(conditions).__name__}")
        else:
            self._table[key] = conditions

    def lookup(self, source: str, destination: str) -> LinkConditions:
        """The conditions for a datagram between two canonical hosts (most specific wins)."""
        table = self._table
        if len(table) > 1:
            for key in ((source, destination), (source, None), (None, destination)):
                found = table.get(key)
                if found is not None:
                    return found
        return table[None, None]
