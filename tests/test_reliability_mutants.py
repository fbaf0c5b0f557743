"""Gaps in the retransmission tests that mutation testing found
(docs/testing.md, "Mutation testing").

Each test pins a behaviour that a surviving mutant of
``coap_trio/protocol/reliability.py`` changed without any other test noticing.
"""

from __future__ import annotations

import random
from typing import Any

from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.protocol.reliability import RETRANSMIT, Reliability
from coap_trio.protocol.timers import TimerHeap


def test_a_superseding_transmission_leaves_no_timer_of_its_own() -> None:
    """RFC 7641 §4.5.2: the CON notification that supersedes another takes over its
    counter and timeout; the timer its own first sending started is cancelled, so
    the endpoint's next deadline is the inherited one (no wake-up for nothing)."""
    timers: TimerHeap[tuple[int, Any]] = TimerHeap()
    reliability = Reliability(TransmissionParameters(), random.Random(0), timers)
    old = reliability.send_con(("a", 1), b"old", "first", 0.0)
    # Two retransmissions of the old one: its timeout is four times the initial one.
    now = 0.0
    for _ in range(2):
        deadline = timers.next_deadline()
        assert deadline is not None
        now = deadline
        [(ticket, (kind, subject))] = timers.pop_due(now)
        assert (kind, subject) == (RETRANSMIT, old)
        assert reliability.fire(old, ticket, now) == b"old"
    superseded_at = now + 0.5
    new = reliability.send_con(("a", 2), b"new", "second", superseded_at)
    assert new.interval < old.interval  # its own first timeout would come sooner
    reliability.cancel(old)
    reliability.inherit(new, old, superseded_at)
    assert (new.count, new.interval) == (2, old.interval)
    assert timers.next_deadline() == superseded_at + old.interval
    [(ticket, (kind, subject))] = timers.pop_due(superseded_at + old.interval)
    assert subject is new
    assert reliability.fire(new, ticket, superseded_at + old.interval) == b"new"
