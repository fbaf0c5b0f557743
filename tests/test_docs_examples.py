"""The code examples of the guides run, on a MemoryNetwork under trio's autojump clock.

Convention in the Markdown pages listed in ``PAGES``: every fenced
``python`` block is preceded (on the line just above its fence) by one of

* ``<!-- run -->``: the block is executed here, as a program of its own;
* ``<!-- run: NAME -->``: the block belongs to the example group NAME of its
  page; the blocks of a group share one namespace and run together (a
  server program and the clients that talk to it);
* ``<!-- run: NAME (server) -->``: the same, for a program that serves until
  it is cancelled;
* ``<!-- not run: REASON -->``: the block is shown only (aiocoap code, a
  fragment, an API that needs a real network or is not built yet).

A ``text`` block preceded by ``<!-- output -->`` is what the group of the
runnable block above it prints, exactly.

Running a group: its blocks are executed in order, as ``__main__``, with
``trio.run`` replaced by a recorder and ``coap_trio.open_context`` (also as
``coap_trio.serve`` uses it) defaulting to one seeded
:class:`~coap_trio.testing.MemoryNetwork`. The recorded
programs then run in document order in one trio run on
``MockClock(autojump_threshold=0)``: a server is started in the background
and given one virtual second to bind, any other program is awaited until it
returns; the servers are cancelled at the end. Any ``async def test_*``
function a group defines is then awaited with the fixtures it names
(``memory_network``, ``make_memory_network``, ``autojump_clock``), like
pytest-trio would.
"""

from __future__ import annotations

import functools
import inspect
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import coap_trio
import coap_trio.context
import coap_trio.hosting
from coap_trio.testing import MemoryNetwork

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: The pages whose examples are checked (the CLI page and
#: architecture.md hold no Python examples of this kind).
PAGES = ["index.md", "quickstart.md", "tutorial.md", "testing.md", "from-aiocoap.md"]
#: Virtual seconds a group may take before it counts as hung.
VIRTUAL_TIMEOUT = 3600.0

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*(run|not run|output)\s*(?::\s*(.*?))?\s*-->$")
_SERVER = " (server)"


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None  # "run", "not run", "output" or None
    argument: str  # group name / reason ("" when none)


@dataclass
class Group:
    page: str
    name: str
    blocks: list[Block] = field(default_factory=list)
    expected_output: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.name}"


def _blocks(page: str) -> list[Block]:
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None or not opening.group(1):
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            index += 1
        code = "\n".join(lines[start + 1 : index]) + "\n"
        marker = _MARKER.match(lines[start - 1].strip()) if start else None
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                language=opening.group(1),
                code=code,
                marker=marker.group(1) if marker else None,
                argument=(marker.group(2) or "") if marker else "",
            )
        )
        index += 1
    return blocks


def _groups() -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for page in PAGES:
        last: Group | None = None
        for block in _blocks(page):
            if block.marker == "run":
                name = block.argument.removesuffix(_SERVER) or f"line {block.line}"
                group = groups.setdefault((page, name), Group(page, name))
                group.blocks.append(block)
                last = group
            elif block.marker == "output":
                assert last is not None, f"{page}:{block.line}: output block after no example"
                last.expected_output.append(block.code)
    return list(groups.values())


GROUPS = _groups()


def test_every_python_example_is_marked() -> None:
    """No example escapes the test silently: each one says whether it runs, and why not."""
    unmarked = [
        f"{block.page}:{block.line}"
        for page in PAGES
        for block in _blocks(page)
        if block.language == "python" and block.marker not in ("run", "not run")
    ]
    assert unmarked == []
    not_run_without_reason = [
        f"{block.page}:{block.line}"
        for page in PAGES
        for block in _blocks(page)
        if block.marker == "not run" and not block.argument
    ]
    assert not_run_without_reason == []
    misplaced_output = [
        f"{block.page}:{block.line}"
        for page in PAGES
        for block in _blocks(page)
        if block.marker == "output" and block.language != "text"
    ]
    assert misplaced_output == []


def test_the_guides_have_runnable_examples() -> None:
    pages = {group.page for group in GROUPS}
    assert {"quickstart.md", "tutorial.md", "from-aiocoap.md"} <= pages


def test_block_parser_reads_markers() -> None:
    blocks = _blocks("quickstart.md")
    markers = {(block.language, block.marker) for block in blocks}
    assert ("python", "run") in markers
    assert all(block.code.strip() for block in blocks)


@dataclass
class Program:
    function: Callable[..., Awaitable[object]]
    args: tuple[object, ...]
    server: bool


class _Recorder:
    """Stands in for ``trio.run`` while a block executes: remembers the program."""

    def __init__(self) -> None:
        self.programs: list[Program] = []
        self.block: Block | None = None

    def __call__(self, function: Callable[..., Awaitable[object]], *args: object) -> None:
        assert self.block is not None
        self.programs.append(Program(function, args, self.block.argument.endswith(_SERVER)))


def _defaulting_network(original: Any, network: MemoryNetwork, seeds: list[int]) -> Any:
    @functools.wraps(original)
    def open_context(**kwargs: Any) -> Any:
        kwargs.setdefault("network", network)
        seeds.append(len(seeds) + 1)
        kwargs.setdefault("rng", random.Random(seeds[-1]))
        return original(**kwargs)

    return open_context


async def _run_programs(
    programs: list[Program],
    tests: list[Callable[..., Awaitable[object]]],
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(VIRTUAL_TIMEOUT):
        async with trio.open_nursery() as servers:
            for program in programs:
                if program.server:
                    servers.start_soon(program.function, *program.args)
                    await trio.sleep(1)
                else:
                    await program.function(*program.args)
            servers.cancel_scope.cancel()
        for test in tests:
            fixtures = {
                "memory_network": lambda: MemoryNetwork(seed=0),
                "make_memory_network": lambda: MemoryNetwork,
                "autojump_clock": lambda: clock,
            }
            parameters = inspect.signature(test).parameters
            await test(**{name: fixtures[name]() for name in parameters})


@pytest.mark.parametrize("group", GROUPS, ids=[group.id for group in GROUPS])
def test_example_runs(
    group: Group, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_run = trio.run
    recorder = _Recorder()
    network = MemoryNetwork(seed=0)
    opener = _defaulting_network(coap_trio.context.open_context, network, [])
    monkeypatch.setattr(trio, "run", recorder)
    monkeypatch.setattr(coap_trio, "open_context", opener)
    monkeypatch.setattr(coap_trio.context, "open_context", opener)
    monkeypatch.setattr(coap_trio.hosting, "open_context", opener)  # coap_trio.serve's
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in group.blocks:
        recorder.block = block
        exec(compile(block.code, f"docs/{block.page}:{block.line}", "exec"), namespace)
    monkeypatch.setattr(trio, "run", real_run)
    tests = [
        value
        for name, value in namespace.items()
        if name.startswith("test_") and inspect.iscoroutinefunction(value)
    ]
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_run_programs, recorder.programs, tests, clock, clock=clock)
    if group.expected_output:
        assert capsys.readouterr().out == "".join(group.expected_output)
