"""1,000 CON requests from one client to one server through a lossy, duplicating network.

The :class:`~coap_trio.testing.MemoryNetwork`'s default conditions apply in
both directions, and every copy of every datagram is dropped independently,
so some requests, some ACKs (with their piggybacked responses) and some
retransmissions are lost, and some are delivered twice. Checked, under
pytest-trio's ``autojump_clock``:

* every exchange ends (answered, or RequestTimeoutError after 5
  transmissions) within MAX_TRANSMIT_WAIT of its first transmission as the
  capture shows it; none hangs;
* the server renders no request twice (deduplication, RFC 7252 §4.5), and
  every answer is the answer to its own request;
* at loss 0.3 at least 94 % complete (about 2.5 % are expected to fail: all
  five round trips lost); at loss 0.02 all do.

Run with ``-s`` to see the completion percentages.
"""

from __future__ import annotations

import random
from collections import Counter

import attrs
import pytest
import trio
import trio.testing

from coap_trio.codec import decode
from coap_trio.context import open_context
from coap_trio.errors import RequestTimeoutError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.constants import TransmissionParameters
from coap_trio.numbers.types import Type
from coap_trio.testing import LinkConditions, MemoryNetwork

SERVER = "10.0.0.2"
CLIENT = "10.0.0.1"
PORT = 5683
URI = f"coap://{SERVER}/count"
REQUESTS = 1000
WORKERS = 64
PARAMS = TransmissionParameters()
MAX_TRANSMIT_WAIT = PARAMS.MAX_TRANSMIT_WAIT  # 93 s


class CountingResource:
    """Counts renders per request id (the payload) and answers with that id.

    With ``slow_odd``, odd ids take 0.5 s: past the piggyback window, so they
    get an empty ACK and a separate CON response (which the link may lose too).
    """

    def __init__(self, *, slow_odd: bool = False) -> None:
        self.renders: Counter[bytes] = Counter()
        self.slow_odd = slow_odd

    async def render(self, request: Message) -> Message:
        self.renders[request.payload] += 1
        if self.slow_odd and int(request.payload) % 2:
            await trio.sleep(0.5)
        return Message(code=Code.CHANGED, payload=b"done " + request.payload)

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False


@attrs.frozen
class Outcome:
    ended_at: float
    response: Message | None = None
    error: RequestTimeoutError | None = None


@attrs.frozen
class Run:
    outcomes: dict[bytes, Outcome]
    first_sent: dict[bytes, float]
    renders: Counter[bytes]
    ended_at: float
    #: Duplicate requests the server's deduplication caught.
    server_duplicates: int

    @property
    def completed(self) -> int:
        return sum(outcome.response is not None for outcome in self.outcomes.values())


async def run_requests(
    conditions: LinkConditions, seed: int, *, slow_odd: bool = False, bound: float
) -> Run:
    net = MemoryNetwork(seed=seed, conditions=conditions)
    site = CountingResource(slow_odd=slow_odd)
    outcomes: dict[bytes, Outcome] = {}
    ids = [b"%d" % i for i in range(REQUESTS)]
    async with (
        open_context(
            network=net, bind=(SERVER, PORT), site=site, rng=random.Random(seed)
        ) as server,
        open_context(network=net, rng=random.Random(seed + 1)) as client,
    ):
        client.set_nstart(WORKERS)
        send, receive = trio.open_memory_channel[bytes](REQUESTS)
        for request_id in ids:
            send.send_nowait(request_id)
        send.close()

        async def worker() -> None:
            async for request_id in receive:
                request = client.request(Message(code=Code.POST, uri=URI, payload=request_id))
                # With at most WORKERS requests in flight and NSTART == WORKERS, a
                # request is transmitted at once: this bounds it from its first send.
                with trio.fail_after(bound + 1):
                    try:
                        response = await request.response
                    except RequestTimeoutError as error:
                        outcomes[request_id] = Outcome(trio.current_time(), error=error)
                    else:
                        outcomes[request_id] = Outcome(trio.current_time(), response=response)

        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(worker)
        ended_at = trio.current_time()
        assert client.statistics.requests_in_flight == 0
        (stats,) = client.statistics.messaging
        assert (stats.outstanding_requests, stats.queued_requests) == (0, 0)
        server_duplicates = server.statistics.messaging[0].duplicates

    first_sent: dict[bytes, float] = {}
    for record in net.capture:
        if record.source.host == CLIENT and not record.duplicate:
            message = decode(record.data)
            if message.code is Code.POST:
                first_sent.setdefault(message.payload, record.time)
    assert net.statistics.capture_evicted == 0
    return Run(outcomes, first_sent, site.renders, ended_at, server_duplicates)


def check(
    run: Run, label: str, *, bound: float = MAX_TRANSMIT_WAIT, separate: bool = False
) -> float:
    """The invariants of every run; returns the completion ratio."""
    assert set(run.outcomes) == {b"%d" % i for i in range(REQUESTS)}
    assert set(run.first_sent) == set(run.outcomes)  # every request went on the wire
    for request_id, outcome in run.outcomes.items():
        assert outcome.ended_at - run.first_sent[request_id] <= bound
        slow = separate and int(request_id) % 2 == 1
        if outcome.response is not None:
            assert outcome.response.code is Code.CHANGED
            assert outcome.response.payload == b"done " + request_id
            # Piggybacked when quick; a slow one always comes separately, as a CON.
            assert outcome.response.mtype is (Type.CON if slow else Type.ACK)
            assert run.renders[request_id] == 1
        else:
            assert outcome.error is not None
            # A CON never acknowledged gives up after 5 transmissions; after an
            # empty ACK, the separate response may be what never arrived.
            assert outcome.error.transmissions == 5 or slow
    assert max(run.renders.values()) == 1  # no request rendered twice
    assert set(run.renders) <= set(run.outcomes)
    ratio = run.completed / REQUESTS
    print(
        f"\n{label}: {run.completed}/{REQUESTS} completed ({ratio:.1%}), "
        f"{len(run.renders)} rendered, {run.server_duplicates} duplicates caught by the server, "
        f"last exchange ended at t={run.ended_at:.1f} s"
    )
    return ratio


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("delay", [(0.0, 0.0), (0.001, 0.2)])
async def test_lossy_30_percent(
    autojump_clock: trio.testing.MockClock, seed: int, delay: tuple[float, float]
) -> None:
    conditions = LinkConditions(loss=0.3, duplicate=0.1, delay=delay)
    with trio.fail_after(10 * REQUESTS):
        run = await run_requests(conditions, seed, bound=MAX_TRANSMIT_WAIT)
    ratio = check(run, f"loss 0.3, duplicate 0.1, delay {delay}, seed {seed}")
    assert ratio >= 0.94
    assert ratio < 1.0  # the network really lost some whole exchanges
    assert run.server_duplicates > 0  # and duplicated or retransmitted some requests


@pytest.mark.parametrize("seed", [1, 2])
async def test_lossy_2_percent_all_complete(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    conditions = LinkConditions(loss=0.02, duplicate=0.1)
    with trio.fail_after(10 * REQUESTS):
        run = await run_requests(conditions, seed, bound=MAX_TRANSMIT_WAIT)
    ratio = check(run, f"loss 0.02, duplicate 0.1, seed {seed}")
    assert ratio == 1.0


async def test_lossy_30_percent_with_separate_responses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Half the requests are slow: empty ACK, then a separate CON response, both lossy.

    After an empty ACK the client waits up to EXCHANGE_LIFETIME for the
    separate response (the documented ``separate_response_timeout``), so the
    bound here is the last retransmission plus that wait.
    """
    bound = PARAMS.MAX_TRANSMIT_SPAN + PARAMS.EXCHANGE_LIFETIME
    conditions = LinkConditions(loss=0.3, duplicate=0.1, delay=(0.001, 0.2))
    with trio.fail_after(10 * REQUESTS):
        run = await run_requests(conditions, 3, slow_odd=True, bound=bound)
    ratio = check(run, "loss 0.3, duplicate 0.1, half separate", bound=bound, separate=True)
    assert ratio >= 0.94
