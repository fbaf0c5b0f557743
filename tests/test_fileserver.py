"""The directory server (coap_trio.fileserver), end to end.

A coap_trio client talks to :func:`fileserver_site` over a MemoryNetwork
with the real clock (file access runs in worker threads, which an autojump
clock would treat as idle time), then :func:`serve_files` on loopback UDP,
also against libcoap's ``coap-client-notls``. Every test works in its own
``tmp_path``: ``root/`` is served, ``outside/`` holds what must never leak.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from coap_trio import Code, ContentFormat, Context, Message, ObservationError, open_context
from coap_trio.fileserver import (
    FileServerSite,
    content_format_for,
    fileserver_site,
    serve_files,
)
from coap_trio.linkformat import parse
from coap_trio.testing import MemoryNetwork

SERVER_HOST = "10.0.0.2"
BASE = f"coap://{SERVER_HOST}"
SECRET = b"secret outside the root"
POLL = 0.05


@dataclass
class Env:
    root: Path
    outside: Path
    site: FileServerSite
    client: Context

    async def get_path(self, *segments: str, **options: object) -> Message:
        """GET with exactly these Uri-Path segments (no URI parsing in between)."""
        request = Message(code=Code.GET, uri=f"{BASE}/")
        request.opt.uri_path = segments
        for name, value in options.items():
            setattr(request.opt, name, value)
        return await self.client.request(request).response

    async def put_path(self, segments: tuple[str, ...], payload: bytes) -> Message:
        request = Message(code=Code.PUT, uri=f"{BASE}/", payload=payload)
        request.opt.uri_path = segments
        return await self.client.request(request).response


def make_tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "hello.txt").write_bytes(b"hello, files")
    (root / "data.json").write_bytes(b'{"a": 1}')
    (root / "data.cbor").write_bytes(b"\xa1\x61\x61\x01")
    (root / "links.wlnk").write_bytes(b"</x>")
    (root / "blob.bin").write_bytes(bytes(range(256)))
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inner file")
    (root / "sub" / "deeper").mkdir()
    (root / "escape-file.txt").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside)
    (root / "inside-link.txt").symlink_to(root / "hello.txt")
    return root, outside


@asynccontextmanager
async def files(
    tmp_path: Path, *, write: bool = False, poll_interval: float = POLL, **options: int
) -> AsyncIterator[Env]:
    root, outside = make_tree(tmp_path)
    network = MemoryNetwork(seed=0)
    site = fileserver_site(root, write=write, poll_interval=poll_interval, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(site.run)
        async with (
            open_context(network=network, bind=(SERVER_HOST, 5683), site=site),
            open_context(network=network) as client,
        ):
            yield Env(root, outside, site, client)
        nursery.cancel_scope.cancel()


def targets(response: Message) -> dict[str, dict[str, str | None]]:
    return {link.target: dict(link.attributes) for link in parse(response.payload.decode("utf-8"))}


# -- reading ---------------------------------------------------------------------------------


async def test_files_with_content_format_and_etag(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path) as env:
            text = await env.client.get(f"{BASE}/hello.txt")
            json = await env.client.get(f"{BASE}/data.json")
            cbor = await env.client.get(f"{BASE}/data.cbor")
            links = await env.client.get(f"{BASE}/links.wlnk")
            blob = await env.client.get(f"{BASE}/blob.bin")
            inner = await env.client.get(f"{BASE}/sub/inner.txt")
            linked = await env.client.get(f"{BASE}/inside-link.txt")
            missing = await env.client.get(f"{BASE}/nope.txt")
            wrong_accept = await env.client.get(f"{BASE}/hello.txt", accept=ContentFormat.JSON)
            file_as_dir = await env.client.get(f"{BASE}/hello.txt/")
    assert text.code == Code.CONTENT
    assert text.payload == b"hello, files"
    assert text.opt.content_format == ContentFormat.TEXT
    assert len(text.opt.etag) == 1
    assert json.opt.content_format == ContentFormat.JSON
    assert cbor.opt.content_format == ContentFormat.CBOR
    assert cbor.payload == b"\xa1\x61\x61\x01"
    assert links.opt.content_format == ContentFormat.LINKFORMAT
    assert blob.opt.content_format == ContentFormat.OCTETSTREAM
    assert blob.payload == bytes(range(256))
    assert inner.payload == b"inner file"
    assert linked.payload == b"hello, files"
    assert missing.code == Code.NOT_FOUND
    assert wrong_accept.code == Code.NOT_ACCEPTABLE
    assert file_as_dir.code == Code.NOT_FOUND


def test_content_format_guess() -> None:
    assert content_format_for("A.TXT") == ContentFormat.TEXT
    assert content_format_for("x.json") == ContentFormat.JSON
    assert content_format_for("x.cbor") == ContentFormat.CBOR
    assert content_format_for("noextension") == ContentFormat.OCTETSTREAM


async def test_etag_validation_and_change_on_disk(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path) as env:
            first = await env.client.get(f"{BASE}/hello.txt")
            (etag,) = first.opt.etag
            valid = await env.client.get(f"{BASE}/hello.txt", etag=(etag,))
            (env.root / "hello.txt").write_bytes(b"changed on disk!")
            changed = await env.client.get(f"{BASE}/hello.txt", etag=(etag,))
    assert valid.code == Code.VALID
    assert valid.opt.etag == (etag,)
    assert valid.payload == b""
    assert changed.code == Code.CONTENT
    assert changed.payload == b"changed on disk!"
    assert changed.opt.etag != (etag,)


async def test_directory_listings(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path) as env:
            root = await env.client.get(f"{BASE}/")
            sub = await env.client.get(f"{BASE}/sub/")
            sub_no_slash = await env.client.get(f"{BASE}/sub")
            (etag,) = sub.opt.etag
            unchanged = await env.client.get(f"{BASE}/sub/", etag=(etag,))
            (env.root / "sub" / "new.json").write_bytes(b"[]")
            grown = await env.client.get(f"{BASE}/sub/", etag=(etag,))
    assert root.code == Code.CONTENT
    assert root.opt.content_format == ContentFormat.LINKFORMAT
    listed = targets(root)
    assert listed["/hello.txt"] == {"ct": "0", "sz": "12"}
    assert listed["/data.json"]["ct"] == "50"
    assert listed["/sub/"] == {"ct": "40"}
    assert "/inside-link.txt" in listed
    # Symlinks leading out of the root are not listed.
    assert "/escape-file.txt" not in listed
    assert "/escape-dir/" not in listed
    assert "/escape-dir" not in listed
    assert set(targets(sub)) == {"/sub/inner.txt", "/sub/deeper/"}
    assert sub_no_slash.payload == sub.payload
    assert unchanged.code == Code.VALID
    assert grown.code == Code.CONTENT
    assert "/sub/new.json" in targets(grown)


# -- nothing escapes the root ------------------------------------------------------------------


@pytest.mark.parametrize(
    "segments",
    [
        ("..", "outside", "secret.txt"),
        ("sub", "..", "..", "outside", "secret.txt"),
        (".", "hello.txt"),
        ("/" + "etc", "passwd"),
        ("sub/../../outside", "secret.txt"),
        ("sub", "", "inner.txt"),
        ("hello.txt\x00",),
        ("escape-file.txt",),
        ("escape-dir", "secret.txt"),
        ("escape-dir", ""),
    ],
)
async def test_paths_out_of_the_root_are_refused(tmp_path: Path, segments: tuple[str, ...]) -> None:
    with trio.fail_after(20):
        async with files(tmp_path) as env:
            response = await env.get_path(*segments)
    assert response.code in (Code.FORBIDDEN, Code.NOT_FOUND)
    assert SECRET not in response.payload


async def test_uri_escapes_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path) as env:
            dotdot = await env.client.get(f"{BASE}/%2e%2e/outside/secret.txt")
            upper = await env.client.get(f"{BASE}/sub/%2E%2E/%2E%2E/outside/secret.txt")
            slash = await env.client.get(f"{BASE}/%2Fetc%2Fpasswd")
            absolute = await env.client.get(f"{BASE}/{'%2F'.join(str(tmp_path).split('/'))}")
    for response in (dotdot, upper, slash, absolute):
        assert response.code == Code.FORBIDDEN, response
        assert SECRET not in response.payload


async def test_fifo_and_too_large_files_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path, max_file_size=100) as env:
            os.mkfifo(env.root / "pipe")
            fifo = await env.client.get(f"{BASE}/pipe")
            large = await env.client.get(f"{BASE}/blob.bin")
            listing = await env.client.get(f"{BASE}/")
    assert fifo.code == Code.FORBIDDEN
    assert large.code == Code.FORBIDDEN
    assert "/pipe" not in targets(listing)


# -- writing ------------------------------------------------------------------------------------


async def test_writes_are_refused_by_default(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path) as env:
            put = await env.client.put(f"{BASE}/hello.txt", b"overwritten")
            create = await env.client.put(f"{BASE}/new.txt", b"new")
            delete = await env.client.delete(f"{BASE}/hello.txt")
            post = await env.client.post(f"{BASE}/hello.txt", b"x")
            content = (env.root / "hello.txt").read_bytes()
            created = (env.root / "new.txt").exists()
    assert [r.code for r in (put, create, delete, post)] == [Code.METHOD_NOT_ALLOWED] * 4
    assert content == b"hello, files"
    assert not created


async def test_put_and_delete_with_write(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path, write=True) as env:
            created = await env.client.put(f"{BASE}/sub/new.txt", b"first")
            on_disk = (env.root / "sub" / "new.txt").read_bytes()
            replaced = await env.client.put(f"{BASE}/sub/new.txt", b"second")
            exclusive = await env.client.put(f"{BASE}/sub/new.txt", b"x", if_none_match=True)
            stale = await env.client.put(f"{BASE}/sub/new.txt", b"x", if_match=(b"stale",))
            (etag,) = (await env.client.get(f"{BASE}/sub/new.txt")).opt.etag
            matched = await env.client.put(f"{BASE}/sub/new.txt", b"third", if_match=(etag,))
            fresh = await env.client.put(f"{BASE}/fresh.txt", b"f", if_none_match=True)
            final = (env.root / "sub" / "new.txt").read_bytes()
            deleted = await env.client.delete(f"{BASE}/sub/new.txt")
            gone = not (env.root / "sub" / "new.txt").exists()
            again = await env.client.delete(f"{BASE}/sub/new.txt")
            directory = await env.client.put(f"{BASE}/sub/", b"x")
            dir_delete = await env.client.delete(f"{BASE}/sub")
            no_parent = await env.client.put(f"{BASE}/nodir/file.txt", b"x")
            leftovers = [p.name for p in env.root.rglob(".coap-put-*")]
    assert created.code == Code.CREATED
    assert len(created.opt.etag) == 1
    assert on_disk == b"first"
    assert replaced.code == Code.CHANGED
    assert exclusive.code == Code.PRECONDITION_FAILED
    assert stale.code == Code.PRECONDITION_FAILED
    assert matched.code == Code.CHANGED
    assert fresh.code == Code.CREATED
    assert final == b"third"
    assert deleted.code == Code.DELETED
    assert gone
    assert again.code == Code.NOT_FOUND
    assert directory.code == Code.METHOD_NOT_ALLOWED
    assert dir_delete.code == Code.METHOD_NOT_ALLOWED
    assert no_parent.code == Code.NOT_FOUND
    assert leftovers == []


async def test_put_creates_files_with_the_usual_mode(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual one, whatever the test runner's is
    try:
        with trio.fail_after(20):
            async with files(tmp_path, write=True) as env:
                (env.root / "kept.txt").write_bytes(b"")
                (env.root / "kept.txt").chmod(0o640)
                created = await env.client.put(f"{BASE}/made.txt", b"new")
                replaced = await env.client.put(f"{BASE}/kept.txt", b"new")
                made = stat.S_IMODE((env.root / "made.txt").stat().st_mode)
                kept = stat.S_IMODE((env.root / "kept.txt").stat().st_mode)
    finally:
        os.umask(previous)
    assert (created.code, replaced.code) == (Code.CREATED, Code.CHANGED)
    assert made == 0o644  # as other programs create files: not mkstemp's 0600
    assert kept == 0o640  # a replaced file keeps its permission bits


async def test_writes_never_leave_the_root(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path, write=True) as env:
            responses = [
                await env.put_path(("..", "outside", "planted.txt"), b"planted"),
                await env.put_path(("escape-dir", "planted.txt"), b"planted"),
                await env.put_path(("escape-file.txt",), b"planted"),
                await env.put_path(("/tmp", "planted.txt"), b"planted"),
                await env.client.put(f"{BASE}/%2e%2e/outside/planted.txt", b"planted"),
                await env.client.delete(f"{BASE}/escape-file.txt"),
            ]
            outside = sorted(p.name for p in env.outside.iterdir())
            secret = (env.outside / "secret.txt").read_bytes()
            link_kept = (env.root / "escape-file.txt").is_symlink()
    assert [r.code for r in responses] == [Code.FORBIDDEN] * len(responses)
    assert outside == ["secret.txt"]
    assert secret == SECRET
    assert link_kept


# -- observation ---------------------------------------------------------------------------------


async def test_observe_a_file_changed_on_disk_then_removed(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with files(tmp_path) as env:
            path = env.root / "hello.txt"
            async with env.client.observe(f"{BASE}/hello.txt") as notifications:
                first = await notifications.__anext__()
                assert env.site.files.observed_paths == 1
                path.write_bytes(b"version 2, longer")
                second = await notifications.__anext__()
                path.unlink()
                with pytest.raises(ObservationError) as info:
                    await notifications.__anext__()
            await trio.sleep(POLL * 4)
            observed = env.site.files.observed_paths
    assert first.payload == b"hello, files"
    assert first.opt.observe is not None
    assert second.payload == b"version 2, longer"
    assert second.opt.observe is not None
    assert second.opt.etag != first.opt.etag
    assert info.value.response.code == Code.NOT_FOUND
    assert observed == 0


async def test_put_notifies_observers_without_waiting_for_a_poll(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with (
            files(tmp_path, write=True, poll_interval=3600) as env,
            env.client.observe(f"{BASE}/hello.txt") as notifications,
        ):
            await notifications.__anext__()
            started = trio.current_time()
            await env.client.put(f"{BASE}/hello.txt", b"through CoAP")
            second = await notifications.__anext__()
            took = trio.current_time() - started
    assert second.payload == b"through CoAP"
    assert took < 5


async def test_observe_a_directory(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with (
            files(tmp_path) as env,
            env.client.observe(f"{BASE}/sub/") as notifications,
        ):
            first = await notifications.__anext__()
            (env.root / "sub" / "added.txt").write_bytes(b"x")
            second = await notifications.__anext__()
    assert "/sub/added.txt" not in targets(first)
    assert "/sub/added.txt" in targets(second)


async def test_unchanged_files_are_not_notified(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with (
            files(tmp_path) as env,
            env.client.observe(f"{BASE}/hello.txt") as notifications,
        ):
            await notifications.__anext__()
            polls = 10
            await trio.sleep(POLL * polls)
            extra = notifications.received
    assert extra == 1


def test_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fileserver_site(tmp_path / "file")
    with pytest.raises(ValueError, match="poll_interval"):
        fileserver_site(tmp_path, poll_interval=0)


# -- on loopback: coap_trio's client and libcoap's ------------------------------------------


async def test_serve_files_on_loopback_with_libcoap(tmp_path: Path) -> None:
    root, _outside = make_tree(tmp_path)
    binary = shutil.which("coap-client-notls")
    assert binary is not None, "coap-client-notls is not installed (Debian libcoap3-bin)"
    with trio.fail_after(30):
        async with (
            serve_files(root, ("::1", 0), poll_interval=POLL) as server,
            open_context() as client,
        ):
            base = f"coap://[::1]:{server.addresses[0].port}"
            ours = await client.get(f"{base}/sub/inner.txt")
            out = tmp_path / "out"
            runs = []
            for path in ("/hello.txt", "/sub/", "/%2e%2e/outside/secret.txt"):
                if out.exists():
                    out.unlink()
                process = await trio.run_process(
                    [binary, "-B", "5", "-o", str(out), f"{base}{path}"],
                    stdin=subprocess.DEVNULL,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                runs.append((process, out.read_bytes() if out.exists() else None))
    assert ours.payload == b"inner file"
    (hello, hello_out), (listing, listing_out), (escape, escape_out) = runs
    assert listing.returncode == 0
    assert hello.returncode == 0
    assert hello_out == b"hello, files"
    assert listing_out is not None
    assert b"</sub/inner.txt>" in listing_out
    assert escape_out is None  # libcoap writes 2.xx payloads only
    assert b"4.03" in escape.stderr + escape.stdout
