"""The queue between receive tasks and handler tasks (coap_trio._server.handler_queue).

Checked: capacity counts parked and woken handlers like a memory channel's
waiting receivers; a handler takes queued items without parking; a handler
suspended in its work never holds up items other handlers could take (the
chain wake-up); cancelled parked handlers leave no trace.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from coap_trio._server.handler_queue import HandlerQueue


def test_capacity_without_handlers() -> None:
    queue: HandlerQueue[int] = HandlerQueue(2)
    assert queue.put_nowait(1)
    assert queue.put_nowait(2)
    assert not queue.put_nowait(3)
    assert len(queue) == 2
    assert queue.take() == 1
    assert queue.take() == 2
    assert queue.take() is None
    with pytest.raises(ValueError):
        HandlerQueue(-1)


async def test_parked_handlers_add_room_and_get_items_in_order() -> None:
    queue: HandlerQueue[int] = HandlerQueue(0)
    got: list[int] = []

    async def handler() -> None:
        while True:
            got.append(await queue.get())

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(handler)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.put_nowait(1)  # room: two parked handlers
        assert queue.put_nowait(2)
        assert not queue.put_nowait(3)  # capacity 0 beyond the handlers
        await trio.testing.wait_all_tasks_blocked()
        assert got == [1, 2]
        assert len(queue) == 0
        nursery.cancel_scope.cancel()


async def test_one_handler_takes_a_burst_without_parking() -> None:
    queue: HandlerQueue[int] = HandlerQueue(10)
    got: list[int] = []
    parks = 0

    async def handler() -> None:
        nonlocal parks
        while True:
            item = queue.take()
            if item is None:
                parks += 1
                item = await queue.get()
            got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handler)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(5):
            assert queue.put_nowait(i)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert got == [0, 1, 2, 3, 4]
    assert parks == 2  # once before the burst, once after it: not once per item


async def test_a_suspended_handler_does_not_hold_up_the_queue() -> None:
    queue: HandlerQueue[int] = HandlerQueue(10)
    release = trio.Event()
    started: list[int] = []
    finished: list[int] = []

    async def handler() -> None:
        while True:
            item = queue.take()
            if item is None:
                item = await queue.get()
            started.append(item)
            if item == 0:
                await release.wait()  # the first item blocks its handler
            finished.append(item)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(handler)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(4):
            assert queue.put_nowait(i)
        await trio.testing.wait_all_tasks_blocked()
        # Items 1..3 were taken by the other handlers while item 0 blocks.
        assert sorted(started) == [0, 1, 2, 3]
        assert sorted(finished) == [1, 2, 3]
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(finished) == [0, 1, 2, 3]
        nursery.cancel_scope.cancel()


async def test_get_checkpoints_when_an_item_is_ready() -> None:
    queue: HandlerQueue[int] = HandlerQueue(1)
    assert queue.put_nowait(7)
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.get()  # cancelled at its checkpoint, before taking the item
    assert scope.cancelled_caught
    assert len(queue) == 1
    assert await queue.get() == 7


async def test_cancelled_parked_handlers_leave_no_room_behind() -> None:
    queue: HandlerQueue[int] = HandlerQueue(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.get)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert not queue.put_nowait(1)  # nobody parked any more: no room
    assert len(queue) == 0
