"""One task per connection, and few system calls: how a StreamEndpoint spends its resources.

Checked from the outside on loopback: the tasks in the endpoint's nursery
(seen from the hooks, which run in each connection's task), the ``send``
calls on the connection's socket (counted by wrapping ``socket.socket.send``),
and peers that write without reading.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
import trio
from test_transport_tcp import TIMEOUT, Peer, frame, running, tls_contexts, wait_until

from coap_trio.remote import DatagramRemote
from coap_trio.transports.stream import StreamLimits


def record_tasks(peer: Peer) -> list[trio.lowlevel.Task]:
    """The task of each connection made (the hook runs in it)."""
    tasks: list[trio.lowlevel.Task] = []

    def made(remote: DatagramRemote) -> None:
        peer.made.append(remote)
        tasks.append(trio.lowlevel.current_task())

    peer.endpoint.on_connection_made = made
    return tasks


async def test_each_connection_is_one_task_without_a_nursery_of_its_own() -> None:
    server_ssl, client_ssl = tls_contexts()
    listen = [
        ("::1", "coap+tcp", None),
        ("::1", "coaps+tcp", server_ssl),
        ("::1", "coap+ws", None),
        ("::1", "coaps+ws", server_ssl),
    ]
    with trio.fail_after(TIMEOUT):
        async with running(listen) as server, running(client_ssl=client_ssl) as client:
            server_tasks, client_tasks = record_tasks(server), record_tasks(client)
            remotes = [
                client.endpoint.remote_for("::1", address.port, address.scheme)
                for address in server.endpoint.addresses
            ]
            for remote in remotes:
                client.endpoint.send(frame(remote.scheme.encode()), remote)
            await wait_until(lambda: len(server.frames) == 4)
            connections = len(remotes)
            assert len(server_tasks) == len(client_tasks) == connections

            for tasks, listeners in ((server_tasks, 4), (client_tasks, 0)):
                nursery = tasks[0].parent_nursery
                assert nursery is not None
                assert all(task.parent_nursery is nursery for task in tasks)
                # Listeners plus one task per connection: no reader/writer pair.
                assert len(nursery.child_tasks) == listeners + connections
                assert set(tasks) <= nursery.child_tasks
                for task in tasks:
                    assert task.child_nurseries == []
            # Frames are handed over by the connection's task itself.
            assert set(server.delivering) == set(server_tasks)


def count_sends(
    monkeypatch: pytest.MonkeyPatch, match: Callable[[socket.socket], bool]
) -> list[int]:
    """Patch ``socket.socket.send``: the size of every call on a socket ``match`` accepts."""
    calls: list[int] = []
    original = socket.socket.send

    def send(self: socket.socket, data: bytes, flags: int = 0) -> int:
        sent = original(self, data, flags)
        if match(self):
            calls.append(sent)
        return sent

    monkeypatch.setattr(socket.socket, "send", send)
    return calls


def local_port(sock: socket.socket) -> int | None:
    """The local port of a TCP socket (None for others: trio's wake-up socketpair)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return int(sock.getsockname()[1])


def peer_port(sock: socket.socket) -> int | None:
    """The peer's port of a connected TCP socket (None for others; only connected
    sockets send, and nothing resets them in these tests)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return int(sock.getpeername()[1])


@pytest.mark.parametrize("scheme", ["coap+tcp", "coaps+tcp", "coap+ws"])
async def test_frames_queued_in_one_tick_leave_in_one_send_call(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    server_ssl, client_ssl = tls_contexts()
    context = server_ssl if scheme.startswith("coaps") else None
    with trio.fail_after(TIMEOUT):
        async with (
            running([("::1", scheme, context)]) as server,
            running(client_ssl=client_ssl) as client,
        ):
            port = server.endpoint.addresses[0].port
            remote = client.endpoint.remote_for("::1", port, scheme)
            client.endpoint.send(frame(b"hello"), remote)
            await wait_until(lambda: len(server.frames) == 1)
            from_client = server.frames[0][1]
            await trio.sleep(0.05)  # both connections idle, everything flushed

            server_sends = count_sends(monkeypatch, lambda sock: local_port(sock) == port)
            for number in range(64):  # one tick: no checkpoint in between
                server.endpoint.send(frame(b"%d" % number, token=bytes([number])), from_client)
            await wait_until(lambda: len(client.frames) == 64)
            assert [data for data, _ in client.frames] == [
                frame(b"%d" % number, token=bytes([number])) for number in range(64)
            ]
            assert 1 <= len(server_sends) <= 2, server_sends

            client_sends = count_sends(monkeypatch, lambda sock: peer_port(sock) == port)
            for number in range(64):
                client.endpoint.send(frame(b"c%d" % number), remote)
            await wait_until(lambda: len(server.frames) == 65)
            assert 1 <= len(client_sends) <= 2, client_sends
            assert server.endpoint.statistics.datagrams_sent == 64


async def test_two_peers_writing_without_reading_do_not_deadlock() -> None:
    """Both sides queue far more than the kernel buffers at once: each keeps reading
    while it waits for room, so both transfers complete."""
    limits = StreamLimits(max_message_size=40_000, max_send_buffer=32 << 20)
    chunk = frame(b"d" * 32_000)
    count = 200  # 6.4 MB each way
    with trio.fail_after(TIMEOUT):
        async with (
            running([("::1", "coap+tcp", None)], limits=limits) as server,
            running(limits=limits) as client,
        ):
            port = server.endpoint.addresses[0].port
            remote = client.endpoint.remote_for("::1", port, "coap+tcp")
            client.endpoint.send(frame(b"hello"), remote)
            await wait_until(lambda: len(server.frames) == 1)
            from_client = server.frames[0][1]
            for _ in range(count):  # both queues filled in the same tick
                server.endpoint.send(chunk, from_client)
                client.endpoint.send(chunk, remote)
            await wait_until(
                lambda: len(client.frames) == count and len(server.frames) == count + 1,
                timeout=TIMEOUT - 1,
            )
            assert server.lost == client.lost == []


async def test_a_peer_reading_nothing_is_closed_after_the_idle_time() -> None:
    """The server has a backlog the peer never reads (under ``max_send_buffer``):
    with no byte taken for ``idle_timeout``, the connection is closed as idle."""
    limits = StreamLimits(idle_timeout=0.5, max_send_buffer=16 << 20)
    with trio.fail_after(TIMEOUT):
        async with running([("::1", "coap+tcp", None)], limits=limits) as server:
            port = server.endpoint.addresses[0].port
            sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("::1", port))
            await sock.send(frame(b"hello"))  # never reads
            await wait_until(lambda: len(server.frames) == 1)
            remote = server.frames[0][1]
            for _ in range(500):  # 8 MB: far more than the kernel holds
                server.endpoint.send(frame(b"y" * 16000), remote)
            started = trio.current_time()
            assert server.endpoint.statistics.outbox_depth > 0
            await wait_until(lambda: bool(server.lost))
            assert 0.4 <= trio.current_time() - started < 3
            assert isinstance(server.lost[0][1], TimeoutError)
            stats = server.endpoint.connection_statistics
            assert (stats.closed_idle, stats.closed_slow) == (1, 0)
            sock.close()
