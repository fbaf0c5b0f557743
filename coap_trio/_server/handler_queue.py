"""The bounded queue between a Context's receive tasks and its handler tasks.

Owns handing received requests to a fixed pool of handler tasks with as few
task switches as possible: :meth:`HandlerQueue.put_nowait` (from a receive
task, never blocks) wakes one parked handler only when no handler is already
woken to pick items up, and a handler that finished a request takes the next
queued one at once (:meth:`~HandlerQueue.take`) instead of parking and being
woken for it. When a handler takes an item while more are queued and none
is woken, it wakes one more, so a handler that suspends in its resource
never holds up the queue while others are parked: up to the pool's size of
requests are handled concurrently, as with one task switch per request.

Bounds: ``capacity`` items may wait beyond the parked and woken handlers
(as a memory channel's buffer beyond its waiting receivers); a full queue
refuses the item (the caller answers 5.03 or drops it).

Must not know what the items are.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import trio

__all__ = ["HandlerQueue"]

T = TypeVar("T")


class HandlerQueue(Generic[T]):
    """Items for a pool of handler tasks; see the module docstring."""

    __slots__ = ("_capacity", "_idle", "_items", "_woken")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._items: deque[T] = deque()
        #: Parked handler tasks (a dict for O(1) removal when one is cancelled).
        self._idle: dict[trio.lowlevel.Task, None] = {}
        #: Handlers rescheduled but not yet running.
        self._woken = 0

    def __len__(self) -> int:
        """Items waiting for a handler."""
        return len(self._items)

    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` for a handler; False (nothing queued) when the queue is full."""
        items = self._items
        if len(items) >= self._capacity + len(self._idle) + self._woken:
            return False
        items.append(item)
        if not self._woken and self._idle:
            self._wake()
        return True

    def take(self) -> T | None:
        """The next item without waiting (and without a checkpoint), or None."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if items and not self._woken and self._idle:
            self._wake()  # more work than this handler: another one takes the rest
        return item

    async def get(self) -> T:
        """The next item: after one checkpoint when one is queued, else when one arrives."""
        if self._items:
            await trio.lowlevel.checkpoint()
        while True:
            item = self.take()
            if item is not None:
                return item
            await self._park()

    async def _park(self) -> None:
        """Wait among the idle handlers until :meth:`_wake` picks this task."""
        task = trio.lowlevel.current_task()
        idle = self._idle
        idle[task] = None

        def abort(_: object) -> trio.lowlevel.Abort:
            del idle[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        self._woken -= 1

    def _wake(self) -> None:
        task, _ = self._idle.popitem()  # the most recently parked: warmest caches
        self._woken += 1
        trio.lowlevel.reschedule(task)
