"""``coap-trio serve ... --workers N``: N processes sharing one port through SO_REUSEPORT.

Each test runs ``python -m coap_trio serve plugtest --workers 2`` as a
subprocess on ``[::1]`` (port 0), reads the address and the workers' process
IDs it prints, and checks what can be seen from outside: requests from many
source ports are all answered, the kernel spread them over both workers
(each worker writes its own datagram counters to standard error when it
stops), and neither SIGTERM to the parent nor the parent's sudden death
leaves a worker running. Every test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
import trio

from coap_trio import Code, Message, Type
from coap_trio.codec import decode, encode

TEST_TIMEOUT = 60.0
#: Distinct client source ports: the chance that all hash to one of two workers is 2**-39.
CLIENTS = 40
COMMAND = [sys.executable, "-m", "coap_trio", "serve", "plugtest"]


def _parent_of(pid: int) -> int | None:
    """The parent PID of ``pid`` from /proc, or None when no such process (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if fields[0] == "Z" else int(fields[1])


async def _start(*extra: str, **options: Any) -> tuple[trio.Process, int, list[int], bytes]:
    """Start the parent (``options`` go to the process); wait for its ``listening on``
    and ``workers:`` lines."""
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--bind", "[::1]:0", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )
    assert process.stdout is not None
    output = b""
    while b"workers:" not in output or not output.endswith(b"\n"):
        chunk = await process.stdout.receive_some()
        assert chunk, f"the server stopped early: {output!r}"
        output += chunk
    found = re.search(rb"listening on coap://\[::1\]:(\d+)\n", output)
    assert found is not None, output
    workers = [int(pid) for pid in output.split(b"workers:")[1].split()]
    return process, int(found[1]), workers, output


async def _get_test(port: int, index: int) -> Message:
    """GET /test from a fresh socket (its own source port); the decoded response."""
    request = Message(
        code=Code.GET, mtype=Type.CON, mid=index, token=index.to_bytes(2, "big"), uri_path=["test"]
    )
    with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        await sock.bind(("::1", 0))
        await sock.connect(("::1", port))
        while True:  # CON: resend until answered (the caller's fail_after bounds it)
            await sock.send(encode(request))
            with trio.move_on_after(1.0):
                response = decode(await sock.recv(2048))
                assert response.mid == index
                return response


async def test_workers_share_the_port_and_stop_on_sigterm() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        process, port, workers, output = await _start("--workers", "2")
        try:
            assert output.count(b"listening on") == 1  # printed once, by the parent
            assert len(set(workers)) == 2
            assert all(_parent_of(pid) == process.pid for pid in workers)
            responses: list[Message] = []

            async def one(index: int) -> None:
                responses.append(await _get_test(port, index))

            async with trio.open_nursery() as nursery:
                for index in range(CLIENTS):
                    nursery.start_soon(one, index)
            assert len(responses) == CLIENTS
            assert {r.code for r in responses} == {Code.CONTENT}
            assert all(r.payload for r in responses)
            process.send_signal(signal.SIGTERM)
            assert process.stderr is not None
            errors = b""
            while chunk := await process.stderr.receive_some():
                errors += chunk
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
    counters = {
        int(pid): int(received)
        for pid, received in re.findall(
            rb"coap-trio worker (\d+): (\d+) datagrams received", errors
        )
    }
    assert set(counters) == set(workers), errors
    assert all(received > 0 for received in counters.values()), counters
    assert sum(counters.values()) >= CLIENTS
    assert all(_parent_of(pid) != process.pid for pid in workers)  # stopped and reaped
    assert all(_parent_of(pid) is None for pid in workers)


@pytest.mark.parametrize("whole_group", [False, True], ids=["parent", "group"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_workers_stop_with_status_0_on_a_signal(whole_group: bool, signum: int) -> None:
    """To the parent alone (``kill PID``) or to the whole process group, as Ctrl-C in a
    terminal does: then each worker gets it too, besides the parent's SIGTERM."""
    with trio.fail_after(TEST_TIMEOUT):
        process, port, workers, _ = await _start("--workers", "2", start_new_session=True)
        try:
            assert os.getpgid(process.pid) == process.pid  # a group of its own
            assert all(os.getpgid(pid) == process.pid for pid in workers)
            assert (await _get_test(port, 1)).code == Code.CONTENT
            if whole_group:
                os.killpg(process.pid, signum)
            else:
                os.kill(process.pid, signum)
            assert process.stderr is not None
            errors = b""
            while chunk := await process.stderr.receive_some():
                errors += chunk
            status = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            for pid in workers:  # if an assertion failed: leave nothing behind
                if _parent_of(pid) is not None:
                    os.kill(pid, signal.SIGKILL)
    assert status == 0, errors
    lines = errors.decode().splitlines()
    counters = r"coap-trio worker (\d+): \d+ datagrams received, \d+ sent"
    assert all(re.fullmatch(counters, line) for line in lines), lines  # nothing else
    assert sorted(int(re.findall(r"\d+", line)[0]) for line in lines) == sorted(workers)
    assert all(_parent_of(pid) is None for pid in workers)


async def test_workers_stop_when_the_parent_is_killed() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        process, port, workers, _ = await _start("--workers", "2")
        try:
            assert (await _get_test(port, 1)).code == Code.CONTENT
            process.kill()  # no chance to forward anything: the workers notice alone
            await process.wait()
            while any(_parent_of(pid) is not None for pid in workers):
                await trio.sleep(0.1)
        finally:
            if process.returncode is None:
                process.kill()
            for pid in workers:  # if the assertion timed out: leave nothing behind
                if _parent_of(pid) is not None:
                    os.kill(pid, signal.SIGKILL)


async def test_workers_report_a_taken_port() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as taken:
            taken.bind(("::1", 0))  # without SO_REUSEPORT: nobody may share it
            port = taken.getsockname()[1]
            done = await trio.run_process(
                [*COMMAND, "--bind", f"[::1]:{port}", "--workers", "2"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"cannot serve" in done.stderr
