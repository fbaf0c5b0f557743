"""Replay protection and restarts (RFC 8613 §7.4, Appendix B.1; RFC 9175 Echo).

- The replay window against a reference model (Hypothesis), its bounds,
  its "unknown" state after a restart and its synchronization.
- The Sender Sequence Number persisted in steps of K through a store; a
  process killed at random moments (SIGKILL, bounded rounds) never reuses a
  sequence number after its restart.
- The file store: aiocoap's sequence.json format, atomic replacement.
- Echo: a restarted server challenges the first request with a protected
  4.01 and its Echo value; the client repeats the request once with it and
  a new Partial IV; the server synchronizes its window and refuses replays.
- The transition tables of the window, the sender and the client binding,
  walked.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio import codec
from coap_trio.errors import (
    CredentialsError,
    OscoreFailure,
    SequenceNumberExhaustedError,
    SequenceStoreError,
)
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.oscore_storage import FileSequenceStore
from coap_trio.protocol.oscore import (
    MemorySequenceStore,
    OscoreEngine,
    RequestRejected,
    RequestVerified,
    ResponseRepeat,
    ResponseVerified,
    SecurityContext,
    replay,
)
from coap_trio.protocol.oscore import binding as binding_module
from coap_trio.protocol.oscore.binding import (
    CLIENT_TRANSITIONS,
    ClientBinding,
    ClientInput,
    ClientState,
)
from coap_trio.protocol.oscore.option import decode_oscore_option
from coap_trio.protocol.oscore.replay import (
    MAX_SEQUENCE_NUMBER,
    MAX_WINDOW_SIZE,
    SENDER_TRANSITIONS,
    WINDOW_TRANSITIONS,
    ReplayWindow,
    SenderSequence,
    SenderState,
    WindowState,
)

SECRET = bytes(range(1, 17))


def wire(message: Message) -> Message:
    mid = 1 if message.mid is None else message.mid
    message = message.copy(mtype=message.mtype or Type.CON, mid=mid)
    return codec.decode(codec.encode(message))


# -- the replay window --------------------------------------------------------------


def test_the_default_window_is_32_and_slides() -> None:
    """§3.2.2: the anti-replay window of RFC 6347 with 32 entries."""
    window = ReplayWindow()
    assert window.size == 32
    for number in (5, 3, 4, 39):
        assert window.is_fresh(number)
        window.accept(number)
    for number in (5, 3, 4, 39, 7, 0):  # seen, or more than 31 below 39
        assert not window.is_fresh(number), number
    assert window.is_fresh(8)  # 31 below 39: still inside
    assert window.is_fresh(38)
    assert window.is_fresh(2**40 - 1)
    with pytest.raises(ValueError, match="not fresh"):
        window.accept(39)


@pytest.mark.parametrize("size", [0, -1, MAX_WINDOW_SIZE + 1])
def test_the_window_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError, match="window size"):
        ReplayWindow(size)


@settings(deadline=None, max_examples=200)
@given(
    size=st.integers(1, 64),
    numbers=st.lists(st.integers(0, 300), max_size=120),
)
def test_the_window_agrees_with_a_reference_model(size: int, numbers: list[int]) -> None:
    """Fresh: above every accepted number, or within ``size`` below the highest and unseen."""
    window = ReplayWindow(size)
    seen: set[int] = set()
    for number in numbers:
        top = max(seen, default=-1)
        expected = number not in seen and (number > top or top - number < size)
        assert window.is_fresh(number) == expected
        if expected:
            window.accept(number)
            seen.add(number)
        assert 0 <= window._seen < (1 << size)  # bounded whatever arrives


def test_an_unknown_window_accepts_nothing_until_synchronized() -> None:
    """Appendix B.1.2: the verified fresh Partial IV is the lower limit."""
    window = ReplayWindow(known=False)
    assert window.state is WindowState.UNKNOWN
    assert not any(window.is_fresh(n) for n in (0, 1, 1000))
    with pytest.raises(KeyError):
        window.accept(5)  # not a move of WINDOW_TRANSITIONS
    window.synchronize(100)
    assert window.state is WindowState.VALID
    assert not window.is_fresh(100)  # the synchronizing request itself
    assert not window.is_fresh(99)  # below the lower limit, even inside the window
    assert window.is_fresh(101)
    with pytest.raises(KeyError):
        window.synchronize(200)


# -- sequence numbers and their store ----------------------------------------------


def test_sequence_numbers_are_stored_every_k_before_use() -> None:
    """Appendix B.1.1: one write per K numbers, each before a number it covers is used."""
    store = MemorySequenceStore()
    sequence = SenderSequence(store, step=10)
    assert not sequence.restarted
    for expected in range(35):
        number = sequence.take()
        assert number == expected
        assert store.value is not None
        assert store.value > number  # stored before use
    assert store.writes == [10, 20, 30, 40]


def test_a_restart_resumes_at_the_stored_limit_and_its_window_is_unknown() -> None:
    store = MemorySequenceStore()
    first = SecurityContext.derive(
        master_secret=SECRET, sender_id=b"", recipient_id=b"\x01", sequence_store=store,
        persist_step=16,
    )  # fmt: skip
    assert first.replay_window.state is WindowState.VALID  # a new context: nothing to forget
    used = [first.sequence.take() for _ in range(20)]
    again = SecurityContext.derive(
        master_secret=SECRET, sender_id=b"", recipient_id=b"\x01", sequence_store=store,
        persist_step=16,
    )  # fmt: skip
    assert again.sequence.restarted
    assert again.sequence.next == 32 > max(used)
    assert again.replay_window.state is WindowState.UNKNOWN


def test_a_failing_store_spends_no_sequence_number() -> None:
    class Failing(MemorySequenceStore):
        fail = True

        def store(self, limit: int) -> None:
            if self.fail:
                raise OSError("disk full")
            super().store(limit)

    store = Failing()
    sequence = SenderSequence(store, step=4)
    with pytest.raises(SequenceStoreError, match="disk full"):
        sequence.take()
    assert sequence.next == 0
    store.fail = False
    assert sequence.take() == 0
    assert store.value == 4


def test_the_store_never_passes_the_maximum() -> None:
    store = MemorySequenceStore(MAX_SEQUENCE_NUMBER - 1)
    sequence = SenderSequence(store, step=100)
    assert sequence.take() == MAX_SEQUENCE_NUMBER - 1
    assert store.value == MAX_SEQUENCE_NUMBER + 1
    with pytest.raises(ValueError, match="out of range"):
        SenderSequence(MemorySequenceStore(MAX_SEQUENCE_NUMBER + 2))
    with pytest.raises(ValueError, match="not positive"):
        SenderSequence(step=0)


def test_the_file_store_writes_aiocoaps_format_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sequence.json"
    store = FileSequenceStore(path)
    assert store.load() is None
    store.store(120)
    assert json.loads(path.read_text()) == {"next-to-send": 120, "received": "unknown"}
    assert store.load() == 120
    store.store(240)
    assert store.load() == 240
    assert store.writes == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sequence.json"]  # no temporary left


@pytest.mark.parametrize(
    "content", ["", "{", "[]", '{"next-to-send": "12"}', '{"next-to-send": -1}', '{"a": 1}']
)
def test_a_damaged_sequence_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "sequence.json"
    path.write_text(content)
    with pytest.raises(CredentialsError, match="sequence"):
        FileSequenceStore(path).load()


def test_a_store_that_cannot_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "sequence.json"
    store = FileSequenceStore(path)
    with pytest.raises(OSError):
        store.store(5)  # the directory does not exist
    assert not path.exists()


CHILD = """
import sys
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.oscore_storage import FileSequenceStore
from coap_trio.protocol.oscore import OscoreEngine, SecurityContext

store = FileSequenceStore(sys.argv[1])
context = SecurityContext.derive(
    master_secret=bytes(range(1, 17)), sender_id=b"\\x01", recipient_id=b"\\x02",
    sequence_store=store, persist_step=int(sys.argv[2]),
)
engine = OscoreEngine()
write = sys.stdout.write
for _ in range(int(sys.argv[3])):
    _, binding = engine.protect_request(Message(code=Code.GET, uri_path=("x",)), context)
    write("%d\\n" % int.from_bytes(binding.request_piv, "big"))
    sys.stdout.flush()
"""


def test_a_process_killed_between_writes_never_reuses_a_sequence_number(tmp_path: Path) -> None:
    """SIGKILL at random points, then a restart: every number is new (Appendix B.1.1)."""
    path = tmp_path / "sequence.json"
    rng = random.Random(8613)
    used: list[int] = []
    deadline = time.monotonic() + 30
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), "3", "20000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        numbers = []
        wanted = rng.randint(1, 60)
        while len(numbers) < wanted and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            numbers.append(int(line))
        # The child runs ahead of what was read: the kill lands anywhere in its loop.
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
        numbers += [int(line) for line in rest.splitlines() if line.strip()]
        assert child.returncode == -signal.SIGKILL
        assert numbers, "the child printed nothing"
        assert numbers == sorted(set(numbers))
        assert not used or numbers[0] > used[-1], (used[-1], numbers[0])
        used += numbers
        assert FileSequenceStore(path).load() is not None  # never a torn file
    assert len(used) == len(set(used))


# -- Echo after a restart -------------------------------------------------------------


def restarted_pair(
    store: MemorySequenceStore,
) -> tuple[OscoreEngine, SecurityContext, OscoreEngine, SecurityContext]:
    client = SecurityContext.derive(master_secret=SECRET, sender_id=b"\x0a", recipient_id=b"\x0b")
    server = SecurityContext.derive(
        master_secret=SECRET, sender_id=b"\x0b", recipient_id=b"\x0a", sequence_store=store
    )
    return OscoreEngine(), client, OscoreEngine([server]), server


def test_a_restarted_server_asks_for_echo_and_the_client_repeats_once() -> None:
    """Appendix B.1.2 and RFC 9175 §2.4, from both ends."""
    client_engine, client, server_engine, server = restarted_pair(MemorySequenceStore(500))
    assert server.replay_window.state is WindowState.UNKNOWN
    request = Message(code=Code.POST, uri_path=("actuator",), payload=b"on")
    outer, binding = client_engine.protect_request(request, client)
    first = wire(outer)
    challenge = server_engine.verify_request(first)
    assert isinstance(challenge, RequestRejected)
    assert challenge.failure is OscoreFailure.FRESHNESS
    answer = challenge.response
    assert answer is not None
    assert answer.code == Code.CHANGED  # protected: the 4.01 is inside
    header = decode_oscore_option(answer.opt.oscore or b"")
    assert header.partial_iv == (500).to_bytes(2, "big")  # its own Partial IV, after the restart
    assert server.replay_window.state is WindowState.UNKNOWN
    repeat = client_engine.verify_response(wire(answer), binding)
    assert isinstance(repeat, ResponseRepeat)
    assert repeat.response.code == Code.UNAUTHORIZED
    assert repeat.response.opt.echo == server.echo_value
    assert repeat.binding.request_piv != binding.request_piv  # a new Partial IV
    assert repeat.request.opt.echo is None  # Echo is Class E
    accepted = server_engine.verify_request(wire(repeat.request))
    assert isinstance(accepted, RequestVerified)
    assert accepted.request.payload == b"on"
    assert accepted.request.opt.echo is None  # consumed by the engine
    assert server.replay_window.state is WindowState.VALID
    assert server_engine.statistics.echo_synchronized == 1
    for old in (first, wire(repeat.request)):  # neither comes back
        replayed = server_engine.verify_request(old)
        assert isinstance(replayed, RequestRejected)
        assert replayed.failure is OscoreFailure.REPLAY
    response = server_engine.protect_response(Message(code=Code.CHANGED), accepted.binding)
    done = client_engine.verify_response(wire(response), repeat.binding)
    assert isinstance(done, ResponseVerified)
    assert done.response.code == Code.CHANGED
    assert client_engine.statistics.echo_repeats == 1


def test_the_client_repeats_only_once() -> None:
    client_engine, client, server_engine, server = restarted_pair(MemorySequenceStore(7))
    outer, binding = client_engine.protect_request(Message(code=Code.GET), client)
    challenge = server_engine.verify_request(wire(outer))
    assert isinstance(challenge, RequestRejected)
    assert challenge.response is not None
    repeat = client_engine.verify_response(wire(challenge.response), binding)
    assert isinstance(repeat, ResponseRepeat)
    # The server lost its state again: a second challenge ends the request.
    server.replay_window = ReplayWindow(known=False)
    server.echo_value = b"new-echo"
    second = server_engine.verify_request(wire(repeat.request))
    assert isinstance(second, RequestRejected)
    assert second.response is not None
    final = client_engine.verify_response(wire(second.response), repeat.binding)
    assert isinstance(final, ResponseVerified)
    assert final.response.code == Code.UNAUTHORIZED


def test_a_wrong_echo_value_is_challenged_again() -> None:
    client_engine, client, server_engine, server = restarted_pair(MemorySequenceStore(1))
    outer, _ = client_engine.protect_request(Message(code=Code.GET, echo=b"guessed!"), client)
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestRejected)
    assert result.failure is OscoreFailure.FRESHNESS
    assert server.replay_window.state is WindowState.UNKNOWN
    assert server_engine.statistics.echo_challenges == 1


def test_a_request_that_fails_to_decrypt_is_not_challenged() -> None:
    client_engine, client, server_engine, _ = restarted_pair(MemorySequenceStore(1))
    outer, _ = client_engine.protect_request(Message(code=Code.GET), client)
    outer.payload = bytes(len(outer.payload))
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestRejected)
    assert result.failure is OscoreFailure.DECRYPTION
    assert server_engine.statistics.echo_challenges == 0


# -- the transition tables, walked ----------------------------------------------------


@settings(deadline=None, max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["accept", "sync"]), st.integers(0, 100)), max_size=40))
def test_window_states_move_only_through_their_table(ops: list[tuple[str, int]]) -> None:
    window = ReplayWindow(known=False)
    allowed = {(state, after) for (state, _), after in WINDOW_TRANSITIONS.items()}
    for op, number in ops:
        before = window.state
        try:
            if op == "accept":
                window.accept(number)
            else:
                window.synchronize(number)
        except (KeyError, ValueError):
            assert window.state is before
            continue
        assert (before, window.state) in allowed


class Recording(dict[Any, Any]):
    """A transition table that remembers which of its entries were looked up."""

    def __init__(self, table: dict[Any, Any]) -> None:
        super().__init__(table)
        self.used: set[Any] = set()

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        self.used.add(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            self.used.add(key)
        return super().get(key, default)


def test_every_window_and_sender_move_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    windows = Recording(WINDOW_TRANSITIONS)
    senders = Recording(SENDER_TRANSITIONS)
    monkeypatch.setattr(replay, "WINDOW_TRANSITIONS", windows)
    monkeypatch.setattr(replay, "SENDER_TRANSITIONS", senders)
    window = ReplayWindow(known=False)
    window.synchronize(3)
    window.accept(4)
    sequence = SenderSequence(start=MAX_SEQUENCE_NUMBER)
    assert sequence.take() == MAX_SEQUENCE_NUMBER
    for _ in range(2):
        with pytest.raises(SequenceNumberExhaustedError):
            sequence.take()
    assert sequence.state is SenderState.EXHAUSTED
    assert windows.used == set(WINDOW_TRANSITIONS)
    assert senders.used == set(SENDER_TRANSITIONS)


def client_walk(seed: int) -> None:
    """Random responses (final, notifications, Echo challenges) to random requests."""
    rng = random.Random(seed)
    client_engine = OscoreEngine()
    client = SecurityContext.derive(master_secret=SECRET, sender_id=b"\x0a", recipient_id=b"\x0b")
    server = SecurityContext.derive(master_secret=SECRET, sender_id=b"\x0b", recipient_id=b"\x0a")
    server_engine = OscoreEngine([server])
    allowed = {(state, after) for (state, _), after in CLIENT_TRANSITIONS.items()}
    for _ in range(30):
        observe = rng.random() < 0.5
        request = Message(code=Code.GET, observe=0 if observe else None)
        outer, binding = client_engine.protect_request(request, client)
        verified = server_engine.verify_request(wire(outer))
        assert isinstance(verified, RequestVerified)
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(["final", "notification", "echo"])
            if kind == "final":
                response = Message(code=Code.CONTENT)
            elif kind == "notification":
                response = Message(code=Code.CONTENT, observe=rng.randint(2, 100))
            else:
                response = Message(code=Code.UNAUTHORIZED, echo=b"e")
            outer_response = server_engine.protect_response(response, verified.binding)
            before = binding.state
            result = client_engine.verify_response(wire(outer_response), binding)
            assert binding.state is before or (before, binding.state) in allowed
            if isinstance(result, ResponseRepeat):
                break


def test_a_seeded_walk_takes_every_client_transition(monkeypatch: pytest.MonkeyPatch) -> None:
    table = Recording(CLIENT_TRANSITIONS)
    monkeypatch.setattr(binding_module, "CLIENT_TRANSITIONS", table)
    for seed in range(20):
        client_walk(seed)
    assert table.used == set(CLIENT_TRANSITIONS)


def test_a_binding_refuses_moves_outside_its_table() -> None:
    context = SecurityContext.derive(master_secret=SECRET, sender_id=b"", recipient_id=b"\x01")
    binding = ClientBinding(context, b"\x00", Message(code=Code.GET), observe=False)
    assert binding.move(ClientInput.FINAL)
    for event in ClientInput:
        assert not binding.accepts(event)
        assert not binding.move(event)
    assert binding.state is ClientState.DONE
