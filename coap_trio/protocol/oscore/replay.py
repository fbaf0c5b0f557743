"""Replay protection and sequence numbers that survive restarts (RFC 8613 §7, Appendix B.1).

Owns the Recipient's replay window (§7.4: the sliding anti-replay window of
RFC 6347 §4.1.2.6, 32 entries by default, a fixed-size bit field), its
"unknown" state after a restart and its synchronization by a verified fresh
request (Appendix B.1.2), and the Sender Sequence Number with its
persistence in steps (Appendix B.1.1) through :class:`SequenceStore`, an
interface whose implementations (a file, written atomically:
:mod:`coap_trio.oscore_storage`) live above the sans-I/O line.

Must not know about messages, keys or files. The legal state changes are
``WINDOW_TRANSITIONS`` and ``SENDER_TRANSITIONS``.
"""

from __future__ import annotations

import enum
from typing import Protocol

from ...errors import SequenceNumberExhaustedError, SequenceStoreError

__all__ = [
    "DEFAULT_PERSIST_STEP",
    "DEFAULT_WINDOW_SIZE",
    "MAX_SEQUENCE_NUMBER",
    "MAX_WINDOW_SIZE",
    "SENDER_TRANSITIONS",
    "WINDOW_TRANSITIONS",
    "MemorySequenceStore",
    "ReplayWindow",
    "SenderInput",
    "SenderSequence",
    "SenderState",
    "SequenceStore",
    "WindowInput",
    "WindowState",
]

#: The largest Sender Sequence Number (§7.2.1: less than 2**40; 5-byte Partial IVs).
MAX_SEQUENCE_NUMBER = 2**40 - 1
#: The default replay window size (§3.2.2).
DEFAULT_WINDOW_SIZE = 32
#: The largest replay window accepted: the window is one integer of this many bits.
MAX_WINDOW_SIZE = 4096
#: How many sequence numbers one write to the store covers (K of Appendix B.1.1).
DEFAULT_PERSIST_STEP = 100


class WindowState(enum.Enum):
    """Whether the replay window says anything (Appendix B.1.2)."""

    # Members are singletons compared by identity: hash them as objects (in C,
    # where Enum's own __hash__ hashes the name in Python, per state transition).
    __hash__ = object.__hash__

    #: After a restart from stored state: which Partial IVs were seen is not
    #: known, so no request is accepted before one is verified fresh (Echo).
    UNKNOWN = "unknown"
    #: Checking requests; the normal state.
    VALID = "valid"


class WindowInput(enum.Enum):
    """What happens to a replay window."""

    # Members are singletons compared by identity: hash them as objects (in C,
    # where Enum's own __hash__ hashes the name in Python, per state transition).
    __hash__ = object.__hash__

    #: A request with a fresh Partial IV verified: mark it seen.
    ACCEPT = "accept"
    #: A request verified fresh by Echo: its Partial IV becomes the lower limit.
    SYNCHRONIZE = "synchronize"


#: (state, input) -> next state. Anything else is a programming error.
WINDOW_TRANSITIONS: dict[tuple[WindowState, WindowInput], WindowState] = {
    (WindowState.VALID, WindowInput.ACCEPT): WindowState.VALID,
    (WindowState.UNKNOWN, WindowInput.SYNCHRONIZE): WindowState.VALID,
}


class ReplayWindow:
    """The anti-replay window of one Recipient Context (§7.4).

    A Partial IV is fresh when it is above the highest one accepted, or
    within ``size`` below it and not yet seen, and not below the lower limit
    set by a synchronization. Its memory is one integer of ``size`` bits,
    whatever a peer sends.
    """

    __slots__ = ("_lower", "_seen", "_top", "size", "state")

    #: How many Partial IVs below the highest accepted are remembered.
    size: int
    #: :attr:`WindowState.VALID`, or :attr:`WindowState.UNKNOWN` after a restart.
    state: WindowState

    def __init__(self, size: int = DEFAULT_WINDOW_SIZE, *, known: bool = True) -> None:
        if not 1 <= size <= MAX_WINDOW_SIZE:
            raise ValueError(f"replay window size {size} is not in 1..{MAX_WINDOW_SIZE}")
        self.size = size
        self.state = WindowState.VALID if known else WindowState.UNKNOWN
        self._top = -1  # the highest accepted Partial IV; -1: none yet
        self._seen = 0  # bit i: Partial IV (_top - i) was accepted
        self._lower = 0  # Partial IVs below this are refused

    def is_fresh(self, number: int) -> bool:
        """Whether a request with Partial IV ``number`` may be accepted (False while UNKNOWN)."""
        if self.state is not WindowState.VALID or number < self._lower:
            return False
        if number > self._top:
            return True
        offset = self._top - number
        return offset < self.size and not (self._seen >> offset) & 1

    def accept(self, number: int) -> None:
        """Mark ``number`` seen; it must be fresh (call after the request verified, §8.2 step 6)."""
        self.state = WINDOW_TRANSITIONS[(self.state, WindowInput.ACCEPT)]
        if not self.is_fresh(number):
            raise ValueError(f"Partial IV {number} is not fresh")
        self._mark(number)

    def synchronize(self, number: int) -> None:
        """Leave UNKNOWN: ``number``, verified fresh by Echo, is the lower limit (B.1.2).

        ``number`` itself counts as seen; everything below it is refused.
        """
        self.state = WINDOW_TRANSITIONS[(self.state, WindowInput.SYNCHRONIZE)]
        self._top = number
        self._seen = 1
        self._lower = number

    def _mark(self, number: int) -> None:
        if number > self._top:
            shift = number - self._top
            self._seen = ((self._seen << shift) | 1) & ((1 << self.size) - 1)
            self._top = number
        else:
            self._seen |= 1 << (self._top - number)

    def __repr__(self) -> str:
        return f"<ReplayWindow {self.state.value} top={self._top} size={self.size}>"


class SequenceStore(Protocol):
    """Where a Sender Sequence Number limit survives restarts (Appendix B.1.1).

    The stored value is a *limit*: no sequence number at or above it has been
    used. :meth:`store` must return only once the value is durable (and
    raise if it is not); the security context writes before it uses a number
    at or above the previous limit. :class:`~coap_trio.oscore_storage.FileSequenceStore`
    writes a file atomically; :class:`MemorySequenceStore` is for tests.
    """

    def load(self) -> int | None:
        """The stored limit, or None when nothing was ever stored (a new context)."""
        ...

    def store(self, limit: int) -> None:
        """Make ``limit`` durable before returning."""
        ...


class MemorySequenceStore:
    """A :class:`SequenceStore` in memory (it survives a context, not a process): for tests."""

    def __init__(self, value: int | None = None) -> None:
        #: The stored limit, or None.
        self.value = value
        #: Every value stored, in order.
        self.writes: list[int] = []

    def load(self) -> int | None:
        """The stored limit."""
        return self.value

    def store(self, limit: int) -> None:
        """Keep ``limit``."""
        self.value = limit
        self.writes.append(limit)


class SenderState(enum.Enum):
    """Whether a Sender Context can still protect messages (§7.2.1)."""

    # Members are singletons compared by identity: hash them as objects (in C,
    # where Enum's own __hash__ hashes the name in Python, per state transition).
    __hash__ = object.__hash__

    #: Sequence numbers remain.
    ACTIVE = "active"
    #: Past :data:`MAX_SEQUENCE_NUMBER`: the context protects nothing more.
    EXHAUSTED = "exhausted"


class SenderInput(enum.Enum):
    """What happens to a Sender Sequence Number."""

    # Members are singletons compared by identity: hash them as objects (in C,
    # where Enum's own __hash__ hashes the name in Python, per state transition).
    __hash__ = object.__hash__

    #: A number was handed out for a Partial IV.
    TAKE = "take"
    #: The next number would pass the maximum.
    EXHAUST = "exhaust"


#: (state, input) -> next state.
SENDER_TRANSITIONS: dict[tuple[SenderState, SenderInput], SenderState] = {
    (SenderState.ACTIVE, SenderInput.TAKE): SenderState.ACTIVE,
    (SenderState.ACTIVE, SenderInput.EXHAUST): SenderState.EXHAUSTED,
    (SenderState.EXHAUSTED, SenderInput.EXHAUST): SenderState.EXHAUSTED,
}


class SenderSequence:
    """The Sender Sequence Number of one Sender Context, persisted in steps (B.1.1).

    Without a store, numbers start at ``start`` (0, §3.2.2) and live in
    memory only. With a store, the stored limit is the first number used
    (a restart resumes there), and before a number at or above the current
    limit is handed out, ``number + step`` is stored: one write per ``step``
    numbers, and whatever the moment a process dies, no number is used
    twice. This is Appendix B.1.1 with K = ``step`` and F = 0, the stored
    value being SSN1 + K: F may be 0 because the write completes before the
    number is used.
    """

    __slots__ = ("_limit", "_next", "_store", "restarted", "state", "step")

    #: Numbers covered by one write.
    step: int
    #: Whether the numbers resumed from a stored limit (the process restarted).
    restarted: bool
    #: ACTIVE or EXHAUSTED.
    state: SenderState

    def __init__(
        self,
        store: SequenceStore | None = None,
        *,
        step: int = DEFAULT_PERSIST_STEP,
        start: int = 0,
    ) -> None:
        if step < 1:
            raise ValueError(f"persistence step {step} is not positive")
        if not 0 <= start <= MAX_SEQUENCE_NUMBER + 1:
            raise ValueError(f"sequence number {start} is out of range")
        self.step = step
        self._store = store
        self.state = SenderState.ACTIVE
        stored = store.load() if store is not None else None
        if stored is not None:
            if not 0 <= stored <= MAX_SEQUENCE_NUMBER + 1:
                raise ValueError(f"stored sequence number limit {stored} is out of range")
            start = max(start, stored)
        self.restarted = stored is not None
        self._next = start
        # Below this, numbers are covered by a completed write (or need none).
        self._limit = start if store is not None else MAX_SEQUENCE_NUMBER + 1

    @property
    def next(self) -> int:
        """The number the next :meth:`take` returns (if it can)."""
        return self._next

    def take(self) -> int:
        """A new sequence number, never returned before by this context or a stored one.

        Raises :class:`~coap_trio.errors.SequenceNumberExhaustedError` past the
        maximum (§7.2.1) and :class:`~coap_trio.errors.SequenceStoreError` when
        the store fails (the number is then not used).
        """
        number = self._next
        if number > MAX_SEQUENCE_NUMBER:
            self.state = SENDER_TRANSITIONS[(self.state, SenderInput.EXHAUST)]
            raise SequenceNumberExhaustedError(
                f"the Sender Sequence Number passed {MAX_SEQUENCE_NUMBER}: a new security"
                " context is needed (RFC 8613 §7.2.1)"
            )
        self.state = SENDER_TRANSITIONS[(self.state, SenderInput.TAKE)]
        store = self._store
        if store is not None and number >= self._limit:
            limit = min(number + self.step, MAX_SEQUENCE_NUMBER + 1)
            try:
                store.store(limit)
            except Exception as error:
                raise SequenceStoreError(f"storing sequence number limit {limit}: {error}") from (
                    error
                )
            self._limit = limit
        self._next = number + 1
        return number

    def __repr__(self) -> str:
        return f"<SenderSequence next={self._next} {self.state.value}>"
