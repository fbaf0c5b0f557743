"""Tests for :mod:`coap_trio.observable`: one server-side observation and ObservableResource.

The observation is driven with a fake ``render`` (counts calls, may sleep to
simulate a slow resource) and a fake ``send`` collecting
``(message, confirmable)``; ``run()`` runs in a nursery. Anything timed
uses the autojump clock; every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import gc
import itertools
import tracemalloc

import pytest
import trio
import trio.testing

from coap_trio.errors import LocalProtocolError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.observable import ObservableResource, ServerObservation
from coap_trio.response_errors import NotFound

LIMIT = 100  # seconds of (mostly virtual) time any test may take


class Fake:
    """A render that counts calls (optionally slow) and a send that collects."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.state = 0
        self.renders = 0
        self.sent: list[tuple[Message, bool]] = []
        self.error: BaseException | None = None
        self.code = Code.CONTENT

    async def render(self, request: Message) -> Message:
        self.renders += 1
        if self.delay:
            await trio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return Message(code=self.code, payload=str(self.state).encode())

    def send(self, message: Message, confirmable: bool) -> None:
        self.sent.append((message, confirmable))

    def make(self, **kwargs: float) -> ServerObservation:
        request = Message(code=Code.GET, uri_path=("x",), observe=0)
        return ServerObservation(request, self.render, self.send, **kwargs)


class Callbacks:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_trigger_sends_one_notification_with_increasing_observe() -> None:
    fake = Fake()
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    assert obs.accepted
    registration = obs.sequence.next()  # what the Context puts on the registration response
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            assert fake.sent == []
            fake.state = 1
            obs.trigger()
            await settle()
            fake.state = 2
            obs.trigger()
            await settle()
            assert fake.renders == 2
            assert [m.payload for m, _ in fake.sent] == [b"1", b"2"]
            assert [m.opt.observe for m, _ in fake.sent] == [registration + 1, registration + 2]
            assert [c for _, c in fake.sent] == [False, False]
            # the ORIGINAL request is rendered each time
            obs.end("test")
    assert cb.calls == 1
    assert obs.ended
    assert obs.reason == "test"


async def test_trigger_with_ready_response_is_copied_not_rendered() -> None:
    fake = Fake()
    seen: list[Message] = []

    async def render(request: Message) -> Message:
        seen.append(request)
        return await fake.render(request)

    request = Message(code=Code.GET, uri_path=("x",), observe=0)
    obs = ServerObservation(request, render, fake.send)
    obs.accept(Callbacks())
    ready = Message(code=Code.CONTENT, payload=b"ready")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger(ready)
            await settle()
            obs.trigger()
            await settle()
            obs.end()
    assert fake.renders == 1
    assert seen == [request]
    assert seen[0] is request
    assert [m.payload for m, _ in fake.sent] == [b"ready", b"0"]
    assert fake.sent[0][0] is not ready  # a copy: the shared message is left alone
    assert ready.opt.observe is None
    assert fake.sent[0][0].opt.observe == 0


async def test_triggers_during_slow_render_coalesce_into_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = Fake(delay=5.0)
    obs = fake.make()
    obs.accept(Callbacks())
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            fake.state = 1
            obs.trigger()
            await trio.sleep(1.0)  # first render in progress
            assert fake.renders == 1
            for state in range(2, 12):
                fake.state = state
                obs.trigger()
                await trio.sleep(0.1)
            await trio.sleep(20.0)
            assert fake.renders == 2
            # the first render finished after the state moved on; the second has the latest
            assert fake.sent[-1][0].payload == b"11"
            assert len(fake.sent) == 2
            await trio.sleep(50.0)
            assert fake.renders == 2
            obs.end()


async def test_ready_responses_coalesce_latest_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = Fake(delay=5.0)
    obs = fake.make()
    obs.accept(Callbacks())
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
            await trio.sleep(1.0)
            for i in range(10):
                obs.trigger(Message(code=Code.CONTENT, payload=b"r%d" % i))
            await trio.sleep(20.0)
            assert fake.renders == 1
            assert [m.payload for m, _ in fake.sent] == [b"0", b"r9"]
            obs.end()


async def test_final_error_result_ends_without_observe_and_confirmable() -> None:
    fake = Fake()
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
            await settle()
            fake.code = Code.NOT_FOUND
            obs.trigger()
        # run() returned by itself: the nursery closed
    assert obs.ended
    assert cb.calls == 1
    final, confirmable = fake.sent[-1]
    assert final.code == Code.NOT_FOUND
    assert final.opt.observe is None
    assert confirmable is True
    assert len(fake.sent) == 2
    obs.trigger()
    obs.end()
    assert cb.calls == 1
    assert len(fake.sent) == 2


async def test_ready_error_response_is_final() -> None:
    fake = Fake()
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger(Message(code=Code.SERVICE_UNAVAILABLE, observe=5))
    assert [(m.code, m.opt.observe, c) for m, c in fake.sent] == [
        (Code.SERVICE_UNAVAILABLE, None, True)
    ]
    assert cb.calls == 1


async def test_render_raising_renderable_error_is_final() -> None:
    fake = Fake()
    fake.error = NotFound("gone")
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
    [(final, confirmable)] = fake.sent
    assert final.code == Code.NOT_FOUND
    assert final.payload == b"gone"
    assert final.opt.observe is None
    assert confirmable
    assert obs.ended
    assert cb.calls == 1


async def test_render_raising_other_exception_is_final_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = Fake()
    fake.error = ValueError("oops")
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
    [(final, confirmable)] = fake.sent
    assert final.code == Code.INTERNAL_SERVER_ERROR
    assert final.payload == b""  # no details on the wire
    assert final.opt.observe is None
    assert confirmable
    assert cb.calls == 1
    assert "oops" in caplog.text


async def test_render_returning_non_response_code_is_final_500() -> None:
    fake = Fake()
    fake.code = Code.GET
    obs = fake.make()
    obs.accept(Callbacks())
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
    assert [(m.code, c) for m, c in fake.sent] == [(Code.INTERNAL_SERVER_ERROR, True)]


async def test_end_stops_run_promptly_during_slow_render(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = Fake(delay=1000.0)
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
            await trio.sleep(1.0)
            start = trio.current_time()
            obs.end("reset by peer")
            assert cb.calls == 1  # synchronously
        assert trio.current_time() - start < 1.0
    assert fake.sent == []
    obs.end("again")
    assert cb.calls == 1
    assert obs.reason == "reset by peer"
    obs.trigger()
    await trio.sleep(0)
    assert fake.sent == []


async def test_end_during_a_renders_first_step_stops_it_at_its_first_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A render that ends its own observation before it first waits: the wait
    # is cancelled at once, nothing is sent.
    fake = Fake()
    obs = fake.make()
    reached: list[str] = []

    async def render(request: Message) -> Message:
        obs.end("ended by the resource")
        reached.append("ended")
        await trio.sleep(1000.0)
        reached.append("after the wait")
        return Message(code=Code.CONTENT)

    obs._render = render
    obs.accept(Callbacks())
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            start = trio.current_time()
            obs.trigger()
        assert trio.current_time() - start < 1.0
    assert reached == ["ended"]
    assert fake.sent == []


async def test_outside_cancellation_during_a_waiting_render_ends_the_observation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = Fake(delay=1000.0)
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
            await trio.sleep(1.0)
            start = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() - start < 1.0
    assert obs.ended
    assert obs.reason == "task cancelled"
    assert cb.calls == 1
    assert fake.sent == []


async def test_renders_that_wait_are_notified_like_those_that_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A render that waits several times, one that raises after waiting (a
    # 5.00, final), and values sent back into the render by the event loop.
    fake = Fake()
    obs = fake.make()
    steps: list[int] = []

    async def render(request: Message) -> Message:
        for step in range(3):
            await trio.sleep(1.0)
            steps.append(step)
        with trio.move_on_after(0.5):  # a cancellation inside the render, caught there
            await trio.sleep(10.0)
        if len(steps) > 3:
            raise ValueError("the sensor failed")
        return Message(code=Code.CONTENT, payload=b"%d" % len(steps))

    obs._render = render
    obs.accept(Callbacks())
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
            await trio.sleep(5.0)
            assert [(m.code, m.payload) for m, _ in fake.sent] == [(Code.CONTENT, b"3")]
            obs.trigger()
    assert steps == [0, 1, 2, 0, 1, 2]
    assert [m.code for m, _ in fake.sent] == [Code.CONTENT, Code.INTERNAL_SERVER_ERROR]
    assert obs.ended


async def test_end_while_idle_and_before_run() -> None:
    fake = Fake()
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.end()
            obs.end()
    assert cb.calls == 1

    early = fake.make()
    cb2 = Callbacks()
    early.accept(cb2)
    early.end("context closing")
    assert cb2.calls == 1
    with trio.fail_after(LIMIT):
        await early.run()  # returns at once
    assert cb2.calls == 1
    assert fake.sent == []


async def test_end_called_from_send_is_honoured() -> None:
    fake = Fake()
    obs = fake.make()
    cb = Callbacks()

    def send(message: Message, confirmable: bool) -> None:
        fake.send(message, confirmable)
        obs.end("send failed")

    obs._send = send
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
            obs.trigger()
    assert len(fake.sent) == 1
    assert cb.calls == 1


async def test_outside_cancellation_ends_observation() -> None:
    fake = Fake()
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            nursery.cancel_scope.cancel()
    assert obs.ended
    assert cb.calls == 1


def test_accept_twice_and_after_end() -> None:
    fake = Fake()
    obs = fake.make()
    cb = Callbacks()
    obs.accept(cb)
    with pytest.raises(LocalProtocolError, match="already accepted"):
        obs.accept(cb)
    late = fake.make()
    late.end()
    late.accept(cb)  # already over: the callback runs at once
    assert cb.calls == 1
    with pytest.raises(ValueError):
        fake.make(con_interval=0)


async def test_failing_callback_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    fake = Fake()
    obs = fake.make()

    def bad() -> None:
        raise KeyError("cb")

    obs.accept(bad)
    obs.end()
    assert obs.ended
    assert "cancellation callback" in caplog.text


async def test_con_at_least_every_con_interval(autojump_clock: trio.testing.MockClock) -> None:
    fake = Fake()
    obs = fake.make(con_interval=10.0)
    obs.accept(Callbacks())
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            # one trigger per second for 25 s: CON at ~10 s and ~20 s after the start
            times: list[float] = []
            start = trio.current_time()
            for _ in range(25):
                await trio.sleep(1.0)
                times.append(trio.current_time() - start)
                obs.trigger()
                await settle()
            obs.end()
    flags = [c for _, c in fake.sent]
    assert len(flags) == 25
    con_at = [t for t, c in zip(times, flags, strict=True) if c]
    assert con_at == [10.0, 20.0]
    observes = [m.opt.observe for m, _ in fake.sent]
    assert observes == list(range(25))


async def test_con_after_long_silence(autojump_clock: trio.testing.MockClock) -> None:
    fake = Fake()
    obs = fake.make(con_interval=10.0)
    obs.accept(Callbacks())
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(obs.run)
            await settle()
            obs.trigger()
            await settle()
            await trio.sleep(50.0)
            obs.trigger()
            await settle()
            obs.trigger()
            await settle()
            obs.end()
    assert [c for _, c in fake.sent] == [False, True, False]


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0
        self.counts: list[int] = []

    async def render_get(self, request: Message) -> Message:
        return Message(payload=str(self.value).encode())

    def update_observation_count(self, count: int) -> None:
        self.counts.append(count)


class NoInit(ObservableResource):
    def __init__(self) -> None:  # does not call super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(payload=str(self.value).encode())


@pytest.mark.parametrize("cls", [Counter, NoInit])
async def test_observable_resource_triggers_all_and_forgets_ended(
    cls: type[Counter] | type[NoInit],
) -> None:
    resource = cls()
    assert resource.obs is True
    assert resource.get_link(("c",)).obs
    sent: dict[int, list[tuple[Message, bool]]] = {i: [] for i in range(3)}
    observations = []
    for i in range(3):
        request = Message(code=Code.GET, uri_path=("c",), observe=0)
        obs = ServerObservation(request, resource.render, lambda m, c, i=i: sent[i].append((m, c)))
        await resource.add_observation(request, obs)
        observations.append(obs)
    assert resource.observation_count == 3
    assert all(o.accepted for o in observations)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for obs in observations:
                nursery.start_soon(obs.run)
            await settle()
            resource.value = 7
            resource.updated_state()
            await settle()
            assert [[m.payload for m, _ in sent[i]] for i in range(3)] == [[b"7"]] * 3
            assert all(m.code == Code.CONTENT for i in range(3) for m, _ in sent[i])

            observations[1].end("reset")
            await settle()
            assert resource.observation_count == 2

            shared = Message(code=Code.CONTENT, payload=b"ready")
            resource.updated_state(shared)
            await settle()
            assert [len(sent[i]) for i in range(3)] == [2, 1, 2]
            assert sent[0][1][0] is not sent[2][1][0]  # each got its own copy
            assert shared.opt.observe is None

            resource.updated_state(Message(code=Code.NOT_FOUND))
        # every remaining observation got a final notification and ended
    assert resource.observation_count == 0
    assert all(o.ended for o in observations)
    if isinstance(resource, Counter):
        # Ends are counted lazily (ending many at once must not be quadratic), so the
        # hook may see coalesced counts; it always ends on the true number.
        assert resource.counts[:3] == [1, 2, 3]
        assert resource.counts[-1] == 0
        assert all(a > b for a, b in itertools.pairwise(resource.counts[2:]))


async def test_observable_resource_add_already_ended() -> None:
    resource = Counter()
    request = Message(code=Code.GET, uri_path=("c",), observe=0)
    obs = ServerObservation(request, resource.render, lambda m, c: None)
    obs.end()
    await resource.add_observation(request, obs)
    assert resource.observation_count == 0


def test_memory_of_10000_observations() -> None:
    request = Message(code=Code.GET, uri_path=("x",), observe=0)

    async def render(request: Message) -> Message:
        return Message(code=Code.CONTENT)

    def send(message: Message, confirmable: bool) -> None:
        pass

    def noop() -> None:
        pass

    count = 10_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        observations = [ServerObservation(request, render, send) for _ in range(count)]
        for obs in observations:
            obs.accept(noop)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_observation = (after - before) / count
    print(f"ServerObservation: {per_observation:.0f} bytes each (incl. list slot)")
    assert per_observation < 2000
    assert len(observations) == count
