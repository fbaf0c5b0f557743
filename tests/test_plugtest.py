"""The ETSI CoAP#4 plugtest server (coap_trio.plugtest), end to end.

Most tests run a coap_trio client against :func:`plugtest_site` on a
MemoryNetwork under the autojump clock and check both the responses and the
datagrams on the wire (types, MIDs, empty ACKs). The interop tests at the
end run libcoap's ``coap-client-notls`` (a child process, real clock,
loopback only) through the TD_COAP_CORE, LINK, BLOCK and OBS cases against
:func:`serve_plugtest` bound to ``[::1]:0``.

Tests marked "block-wise" in their docstring need the server's transparent
Block1/Block2 handling (RFC 7959) in the Context.
"""

from __future__ import annotations

import itertools
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from coap_trio import (
    ACK,
    CON,
    GET,
    NON,
    Code,
    ContentFormat,
    Context,
    Message,
    ObservationError,
    open_context,
)
from coap_trio.codec import decode
from coap_trio.linkformat import parse
from coap_trio.observable import ServerObservation
from coap_trio.plugtest import (
    LARGE_SIZE,
    LOCATION_QUERY,
    TEST_LOCATION,
    PlugtestSite,
    large_text,
    plugtest_site,
    serve_plugtest,
)
from coap_trio.testing import MemoryNetwork

SERVER_HOST = "10.0.0.2"
BASE = f"coap://{SERVER_HOST}"
OBS_PERIOD = 5.0
SEPARATE_DELAY = 1.0


@dataclass
class Env:
    network: MemoryNetwork
    site: PlugtestSite
    server: Context
    client: Context

    def server_datagrams(self, since: float = -1.0) -> list[tuple[float, Message]]:
        return [
            (record.time, decode(record.data))
            for record in self.network.capture
            if record.source.host == SERVER_HOST and record.time >= since
        ]


@asynccontextmanager
async def plugtest(*, run: bool = True, seed: int = 0) -> AsyncIterator[Env]:
    network = MemoryNetwork(seed=seed)
    site = plugtest_site(obs_period=OBS_PERIOD, separate_delay=SEPARATE_DELAY)
    async with trio.open_nursery() as nursery:
        if run:
            await nursery.start(site.run)
        async with (
            open_context(
                network=network, bind=(SERVER_HOST, 5683), site=site, rng=random.Random(seed)
            ) as server,
            open_context(network=network, rng=random.Random(seed + 1)) as client,
        ):
            yield Env(network, site, server, client)
        nursery.cancel_scope.cancel()


def links_of(response: Message) -> dict[str, dict[str, list[str | None]]]:
    """The links of a link-format payload: target -> attribute name -> values."""
    result: dict[str, dict[str, list[str | None]]] = {}
    for link in parse(response.payload.decode()):
        attributes: dict[str, list[str | None]] = {}
        for name, value in link.attributes:
            attributes.setdefault(name, []).append(value)
        result[link.target] = attributes
    return result


# -- TD_COAP_CORE -----------------------------------------------------------------------------


async def test_core_01_get_test_is_piggybacked_with_content_format(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            response = await env.client.get(f"{BASE}/test")
            wire = env.server_datagrams()
    assert response.code == Code.CONTENT
    assert response.opt.content_format == ContentFormat.TEXT
    text = response.payload.decode()
    assert "Type: CON" in text
    assert "Code: 0.01" in text
    assert f"Token: {response.token.hex()}" in text
    assert [m.mtype for _, m in wire] == [ACK]
    assert wire[0][1].code == Code.CONTENT
    assert wire[0][1].token == response.token


async def test_core_02_to_04_delete_put_post(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            deleted = await env.client.delete(f"{BASE}/test")
            put = await env.client.put(
                f"{BASE}/test", b"new value", content_format=ContentFormat.TEXT
            )
            posted = await env.client.post(
                f"{BASE}/test", b"posted", content_format=ContentFormat.TEXT
            )
    assert deleted.code == Code.DELETED
    assert put.code == Code.CHANGED
    assert posted.code == Code.CREATED
    # TD_COAP_CORE_18: three Location-Path options, none containing "/".
    assert posted.opt.location_path == TEST_LOCATION
    assert all("/" not in segment for segment in posted.opt.location_path)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (Code.GET, Code.CONTENT),
        (Code.PUT, Code.CHANGED),
        (Code.POST, Code.CREATED),
        (Code.DELETE, Code.DELETED),
    ],
)
async def test_core_05_to_08_non_requests_get_non_responses(
    autojump_clock: object, method: Code, expected: Code
) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            request = Message(code=method, mtype=NON, uri=f"{BASE}/test")
            if method in (Code.PUT, Code.POST):
                request.payload = b"non payload"
                request.opt.content_format = ContentFormat.TEXT
            response = await env.client.request(request).response
            wire = env.server_datagrams()
    assert response.code == expected
    assert [(m.mtype, m.code) for _, m in wire] == [(NON, expected)]
    assert wire[0][1].token == response.token


async def test_core_09_separate_response_after_an_empty_ack(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            start = trio.current_time()
            response = await env.client.get(f"{BASE}/separate")
            took = trio.current_time() - start
            await trio.sleep(1)  # the client's ACK of the separate response
            wire = env.server_datagrams()
            client_acks = [
                decode(r.data)
                for r in env.network.capture
                if r.destination.host == SERVER_HOST and decode(r.data).mtype is ACK
            ]
    assert response.code == Code.CONTENT
    assert response.opt.content_format == ContentFormat.TEXT
    assert response.payload
    assert took >= SEPARATE_DELAY
    (empty_at, empty), (late_at, late) = wire
    assert empty.mtype is ACK
    assert empty.code == Code.EMPTY
    assert not empty.payload
    assert empty_at - start < 0.5  # within the piggyback window, not after the handler
    assert late.mtype is CON
    assert late.code == Code.CONTENT
    assert late.mid != empty.mid
    assert late.token == response.token
    assert late_at - empty_at >= SEPARATE_DELAY - 0.2
    assert [a.mid for a in client_acks] == [late.mid]


async def test_core_17_separate_non_gets_no_empty_ack(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            response = await env.client.request(
                Message(code=GET, mtype=NON, uri=f"{BASE}/separate")
            ).response
            wire = env.server_datagrams()
    assert response.code == Code.CONTENT
    assert [(m.mtype, m.code) for _, m in wire] == [(NON, Code.CONTENT)]


async def test_core_13_14_long_path_and_query(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            segments = await env.client.get(f"{BASE}/seg1/seg2/seg3")
            query = await env.client.get(f"{BASE}/query?first=1&second=2&third=3")
            no_query = await env.client.get(f"{BASE}/query")
            shorter = await env.client.get(f"{BASE}/seg1/seg2")
    assert segments.code == Code.CONTENT
    assert segments.payload == b"/seg1/seg2/seg3"
    assert query.code == Code.CONTENT
    assert query.payload.decode().splitlines() == ["first=1", "second=2", "third=3"]
    assert no_query.payload == b"(no query)"
    assert shorter.code == Code.NOT_FOUND


async def test_core_19_location_query(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            response = await env.client.post(
                f"{BASE}/location-query", b"x", content_format=ContentFormat.TEXT
            )
    assert response.code == Code.CREATED
    assert response.opt.location_query == LOCATION_QUERY


async def test_core_20_multi_format_by_accept(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            text = await env.client.get(f"{BASE}/multi-format", accept=ContentFormat.TEXT)
            xml = await env.client.get(f"{BASE}/multi-format", accept=ContentFormat.XML)
            default = await env.client.get(f"{BASE}/multi-format")
            json = await env.client.get(f"{BASE}/multi-format", accept=ContentFormat.JSON)
    assert text.code == Code.CONTENT
    assert text.opt.content_format == ContentFormat.TEXT
    assert not text.payload.startswith(b"<")
    assert xml.code == Code.CONTENT
    assert xml.opt.content_format == ContentFormat.XML
    assert xml.payload.startswith(b"<msg")
    assert xml.payload.endswith(b"</msg>")
    assert default.opt.content_format == ContentFormat.TEXT
    assert json.code == Code.NOT_ACCEPTABLE


async def test_core_21_etag_validation(autojump_clock: object) -> None:
    uri = f"{BASE}/validate"
    with trio.fail_after(60):
        async with plugtest() as env:
            first = await env.client.get(uri)
            (etag1,) = first.opt.etag
            valid = await env.client.get(uri, etag=(etag1,))
            changed = await env.client.put(uri, b"updated by a client", content_format=0)
            after = await env.client.get(uri, etag=(etag1,))
    assert first.code == Code.CONTENT
    assert first.payload
    assert valid.code == Code.VALID
    assert valid.opt.etag == (etag1,)
    assert valid.payload == b""
    assert changed.code == Code.CHANGED
    assert after.code == Code.CONTENT
    assert after.payload == b"updated by a client"
    assert after.payload != first.payload
    (etag2,) = after.opt.etag
    assert etag2 != etag1


async def test_core_22_if_match(autojump_clock: object) -> None:
    uri = f"{BASE}/validate"
    with trio.fail_after(60):
        async with plugtest() as env:
            (etag1,) = (await env.client.get(uri)).opt.etag
            atomic = await env.client.put(uri, b"step 5", content_format=0, if_match=(etag1,))
            step10 = await env.client.get(uri)
            (etag2,) = step10.opt.etag
            other = await env.client.put(uri, b"step 12", content_format=0)
            stale = await env.client.put(uri, b"step 14", content_format=0, if_match=(etag2,))
            final = await env.client.get(uri)
    assert atomic.code == Code.CHANGED
    assert step10.payload == b"step 5"
    assert etag2 != etag1
    assert other.code == Code.CHANGED
    assert stale.code == Code.PRECONDITION_FAILED
    assert final.payload == b"step 12"


async def test_core_23_create1_with_if_none_match(autojump_clock: object) -> None:
    uri = f"{BASE}/create1"
    with trio.fail_after(60):
        async with plugtest() as env:
            missing = await env.client.get(uri)
            first = await env.client.put(uri, b"one", content_format=0, if_none_match=True)
            second = await env.client.put(uri, b"two", content_format=0, if_none_match=True)
            content = await env.client.get(uri)
            deleted = await env.client.delete(uri)
            again = await env.client.put(uri, b"three", content_format=0, if_none_match=True)
    assert missing.code == Code.NOT_FOUND
    assert first.code == Code.CREATED
    assert second.code == Code.PRECONDITION_FAILED
    assert content.payload == b"one"
    assert deleted.code == Code.DELETED
    assert again.code == Code.CREATED


# -- TD_COAP_LINK ---------------------------------------------------------------------------


async def test_link_01_full_listing(autojump_clock: object) -> None:
    """block-wise: the whole listing is larger than one block."""
    with trio.fail_after(60):
        async with plugtest() as env:
            everything = await env.client.get(f"{BASE}/.well-known/core")
    assert everything.code == Code.CONTENT
    assert everything.opt.content_format == ContentFormat.LINKFORMAT
    listed = links_of(everything)
    for path in (
        "/test", "/seg1/seg2/seg3", "/query", "/separate", "/location-query", "/multi-format",
        "/validate", "/create1", "/large", "/large-update", "/large-create", "/large-post",
        "/obs", "/obs-non", "/obs-large", "/link1", "/link2", "/link3", "/path", "/path/sub1",
        "/path/sub2", "/path/sub3",
    ):  # fmt: skip
        assert path in listed, path
    assert "/.well-known/core" not in listed
    assert listed["/path"]["ct"] == ["40"]


@pytest.mark.parametrize(
    ("period", "shown", "max_age"), [(0.5, "0.5", 1), (5, "5", 5), (2.5, "2.5", 3)]
)
def test_observable_titles_show_the_real_period(period: float, shown: str, max_age: int) -> None:
    site = plugtest_site(obs_period=period)
    for resource in site.observed.values():
        assert f"changes every period ({shown} s)," in resource.title
        assert resource.max_age == max_age  # Max-Age is whole seconds: rounded up


async def test_link_02_to_08_filters(autojump_clock: object) -> None:
    wkc = f"{BASE}/.well-known/core"
    with trio.fail_after(60):
        async with plugtest() as env:
            observe = await env.client.get(f"{wkc}?rt=observe")
            link1 = await env.client.get(f"{wkc}?title=Link*&href=/link1")
            type1 = await env.client.get(f"{wkc}?rt=Type1")
            type2 = await env.client.get(f"{wkc}?rt=Type2")
            any_rt = await env.client.get(f"{wkc}?rt=*")
            if_prefix = await env.client.get(f"{wkc}?if=If*")
            any_sz = await env.client.get(f"{wkc}?sz=*")
            href = await env.client.get(f"{wkc}?href=/link1")
            href_prefix = await env.client.get(f"{wkc}?href=/link*")
    listed = links_of(observe)
    assert set(listed) == {"/obs", "/obs-non", "/obs-large"}
    assert listed["/obs"]["obs"] == [None]
    assert listed["/obs"]["rt"] == ["observe"]
    first = links_of(link1)["/link1"]
    assert first["rt"] == ["Type1 Type2"]
    assert first["if"] == ["If1"]
    assert set(links_of(type1)) == {"/link1", "/link3"}
    assert set(links_of(type2)) == {"/link1", "/link2"}
    with_rt = set(links_of(any_rt))
    assert {"/link1", "/link2", "/link3", "/obs", "/large"} <= with_rt
    assert "/test" not in with_rt
    assert all("rt" in attributes for attributes in links_of(any_rt).values())
    assert set(links_of(if_prefix)) == {"/link1", "/link2"}
    assert set(links_of(any_sz)) == {"/large"}
    assert links_of(any_sz)["/large"]["sz"] == [str(LARGE_SIZE)]
    assert set(links_of(href)) == {"/link1"}
    assert set(links_of(href_prefix)) == {"/link1", "/link2", "/link3"}


async def test_link_09_path_hierarchy(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest() as env:
            listing = await env.client.get(f"{BASE}/path")
            sub1 = await env.client.get(f"{BASE}/path/sub1")
    assert listing.code == Code.CONTENT
    assert listing.opt.content_format == ContentFormat.LINKFORMAT
    assert list(links_of(listing)) == ["/path/sub1", "/path/sub2", "/path/sub3"]
    assert sub1.payload == b"/path/sub1"


# -- TD_COAP_BLOCK (whole bodies; block-wise on the wire once the server layer does it) ---------


async def test_large_resources_whole_bodies(autojump_clock: object) -> None:
    """block-wise: the /large* bodies are larger than one block."""
    body = large_text(3000, title="uploaded")
    with trio.fail_after(120):
        async with plugtest() as env:
            large = await env.client.get(f"{BASE}/large")
            updated = await env.client.put(f"{BASE}/large-update", body, content_format=0)
            read_back = await env.client.get(f"{BASE}/large-update")
            made = await env.client.post(f"{BASE}/large-create", body, content_format=0)
            location = "/".join(made.opt.location_path)
            fetched = await env.client.get(f"{BASE}/{location}")
            echoed = await env.client.post(f"{BASE}/large-post", body, content_format=0)
    assert large.code == Code.CONTENT
    assert large.payload == large_text()
    assert len(large.payload) == LARGE_SIZE > 1024
    assert updated.code == Code.CHANGED
    assert read_back.payload == body
    assert made.code == Code.CREATED
    assert made.opt.location_path[0] == "large-create"
    assert len(made.opt.location_path) == 2
    assert fetched.code == Code.CONTENT
    assert fetched.payload == body
    assert echoed.code == Code.CHANGED
    assert echoed.payload == body


async def test_block_01_large_is_sent_in_blocks(autojump_clock: object) -> None:
    """block-wise: GET /large is answered with Block2 blocks of at most 1024 bytes."""
    with trio.fail_after(120):
        async with plugtest() as env:
            response = await env.client.get(f"{BASE}/large")
            wire = env.server_datagrams()
    assert response.payload == large_text()
    blocks = [m for _, m in wire if m.code == Code.CONTENT]
    assert len(blocks) >= 3
    assert all(m.opt.block2 is not None for m in blocks)
    assert all(len(m.payload) <= 1024 for m in blocks)
    assert b"".join(m.payload for m in blocks) == large_text()


# -- TD_COAP_OBS ------------------------------------------------------------------------------


async def test_obs_01_confirmable_notifications_every_period(autojump_clock: object) -> None:
    with trio.fail_after(120):
        async with plugtest() as env:
            seen: list[tuple[float, Message]] = []
            async with env.client.observe(f"{BASE}/obs") as notifications:
                async for message in notifications:
                    seen.append((trio.current_time(), message))
                    if len(seen) == 4:
                        break
            wire = env.server_datagrams()
    first = seen[0][1]
    assert first.code == Code.CONTENT
    assert first.opt.observe is not None
    assert first.opt.max_age == 5
    assert first.opt.content_format == ContentFormat.TEXT
    ticks = [int(m.payload.split()[-1]) for _, m in seen]
    assert ticks == sorted(ticks)
    assert len(set(ticks)) == 4
    observes = [m.opt.observe for _, m in seen]
    assert observes == sorted(observes)  # type: ignore[type-var]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen[1:])]
    assert all(abs(gap - OBS_PERIOD) < 0.5 for gap in gaps), gaps
    notified = [m for _, m in wire if m.code == Code.CONTENT and m.mtype is not ACK]
    assert len(notified) >= 3
    assert all(m.mtype is CON for m in notified)
    assert all(m.opt.content_format == ContentFormat.TEXT for m in notified)


async def test_obs_02_non_confirmable_notifications(autojump_clock: object) -> None:
    with trio.fail_after(120):
        async with plugtest() as env:
            request = Message(code=GET, mtype=NON, uri=f"{BASE}/obs-non")
            seen: list[Message] = []
            async with env.client.observe(request) as notifications:
                async for message in notifications:
                    seen.append(message)
                    if len(seen) == 3:
                        break
            wire = env.server_datagrams()
    assert all(m.code == Code.CONTENT for m in seen)
    assert all(m.payload.startswith(b"obs-non tick") for m in seen)
    notified = [m for _, m in wire if m.code == Code.CONTENT]
    assert len(notified) >= 3
    assert all(m.mtype is NON for m in notified)


async def test_obs_09_put_same_format_notifies_new_value(autojump_clock: object) -> None:
    with trio.fail_after(120):
        async with (
            plugtest(run=False) as env,
            env.client.observe(f"{BASE}/obs") as notifications,
        ):
            first = await notifications.__anext__()
            put = await env.client.put(f"{BASE}/obs", b"client value", content_format=0)
            second = await notifications.__anext__()
    assert first.payload == b"obs tick 0"
    assert put.code == Code.CHANGED
    assert second.payload == b"client value"
    assert second.opt.content_format == ContentFormat.TEXT


async def test_obs_08_other_format_ends_with_4_06(autojump_clock: object) -> None:
    with trio.fail_after(120):
        async with plugtest(run=False) as env:
            async with env.client.observe(f"{BASE}/obs") as notifications:
                await notifications.__anext__()
                await env.client.put(f"{BASE}/obs", b'{"v": 1}', content_format=50)
                with pytest.raises(ObservationError) as info:
                    await notifications.__anext__()
            await trio.sleep(1)
            assert env.site.observed["obs"].observation_count == 0
            wire = env.server_datagrams()
    final = info.value.response
    assert final.code == Code.NOT_ACCEPTABLE
    assert final.opt.observe is None
    assert [m.mtype for _, m in wire if m.code == Code.NOT_ACCEPTABLE] == [CON]


async def test_obs_07_delete_ends_with_4_04(autojump_clock: object) -> None:
    with trio.fail_after(120):
        async with plugtest(run=False) as env:
            async with env.client.observe(f"{BASE}/obs") as notifications:
                await notifications.__anext__()
                deleted = await env.client.delete(f"{BASE}/obs")
                with pytest.raises(ObservationError) as info:
                    await notifications.__anext__()
            after = await env.client.get(f"{BASE}/obs")
    assert deleted.code == Code.DELETED
    assert info.value.response.code == Code.NOT_FOUND
    assert after.code == Code.CONTENT


async def test_obs_large_representation(autojump_clock: object) -> None:
    """block-wise: the notifications are larger than one block."""
    with trio.fail_after(120):
        async with plugtest() as env:
            seen: list[Message] = []
            async with env.client.observe(f"{BASE}/obs-large") as notifications:
                async for message in notifications:
                    seen.append(message)
                    if len(seen) == 2:
                        break
    assert all(len(m.payload) > 1024 for m in seen)
    assert seen[0].payload.startswith(b"obs-large tick ")
    assert seen[1].payload.split(b"\n")[0] != seen[0].payload.split(b"\n")[0]


async def test_run_ticks_every_period_without_drift(autojump_clock: object) -> None:
    site = plugtest_site(obs_period=2.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            await nursery.start(site.run)
            await trio.sleep(2.0 * 10 + 0.5)
            nursery.cancel_scope.cancel()
    assert trio.current_time() - start < 21
    assert [r.ticks for r in site.observed.values()] == [10, 10, 10]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="obs_period"):
        plugtest_site(obs_period=0)
    with pytest.raises(ValueError, match="separate_delay"):
        plugtest_site(separate_delay=-1)


async def test_serve_plugtest_on_loopback() -> None:
    with trio.fail_after(20):
        async with (
            serve_plugtest(("::1", 0), obs_period=0.2, separate_delay=0.3) as server,
            open_context() as client,
        ):
            base = f"coap://[::1]:{server.addresses[0].port}"
            response = await client.get(f"{base}/test")
            seen: list[Message] = []
            async with client.observe(f"{base}/obs") as notifications:
                async for message in notifications:
                    seen.append(message)
                    if len(seen) == 3:
                        break
    assert response.code == Code.CONTENT
    assert [m.payload.startswith(b"obs tick ") for m in seen] == [True] * 3
    assert len({m.payload for m in seen}) == 3


async def test_serve_plugtest_propagates_the_body_error() -> None:
    with trio.fail_after(10), pytest.raises(KeyError, match="from the body"):
        async with serve_plugtest(("::1", 0), obs_period=0.1):
            raise KeyError("from the body")


# -- libcoap's coap-client against the plugtest server (real clock, loopback) -------------------

LIBCOAP_CLIENT = "coap-client-notls"
_WIRE = re.compile(
    r"^v:1 t:(?P<mtype>CON|NON|ACK|RST) c:(?P<code>\S+) i:(?P<mid>[0-9a-f]{4}) "
    r"\{(?P<token>[0-9a-f]*)\} \[(?P<options>.*?)\](?: :: '(?P<payload>.*)')?$"
)


@dataclass
class Line:
    direction: str  # "sent" / "received"
    mtype: str
    code: str
    mid: int
    token: str
    options: str


@dataclass
class Run:
    argv: list[str]
    stdout: str
    stderr: str
    payload: bytes | None
    wires: list[Line]

    def __str__(self) -> str:
        return f"{' '.join(self.argv)}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"

    def received(self, code: str | None = None) -> list[Line]:
        return [
            w for w in self.wires if w.direction == "received" and (code is None or w.code == code)
        ]


def _wires(log: str) -> list[Line]:
    wires: list[Line] = []
    direction: str | None = None
    for line in log.splitlines():
        match = _WIRE.match(line)
        if match is None:
            direction = (
                "sent" if " : sent " in line else "received" if " : received " in line else None
            )
            continue
        if direction is not None:
            wires.append(
                Line(
                    direction,
                    match["mtype"],
                    match["code"],
                    int(match["mid"], 16),
                    match["token"],
                    match["options"],
                )
            )
        direction = None
    return wires


async def coap_client(uri: str, *args: str, wait: int = 5, body: bytes | None = None) -> Run:
    """``coap-client-notls -v 7 -B wait -o FILE [-f BODY] *args uri``, bounded in time."""
    binary = shutil.which(LIBCOAP_CLIENT)
    assert binary is not None, f"{LIBCOAP_CLIENT} is not installed (Debian libcoap3-bin)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "payload"
        extra: list[str] = []
        if body is not None:
            (Path(tmp) / "body").write_bytes(body)
            extra = ["-f", str(Path(tmp) / "body")]
        argv = [binary, "-v", "7", "-B", str(wait), "-o", str(out), *extra, *args, uri]
        with trio.fail_after(wait + 15):
            process = await trio.run_process(
                argv,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        payload = out.read_bytes() if out.exists() else None
    stdout = process.stdout.decode("utf-8", "replace")
    run = Run(argv, stdout, process.stderr.decode("utf-8", "replace"), payload, _wires(stdout))
    assert process.returncode == 0, str(run)
    return run


@asynccontextmanager
async def served(obs_period: float = 0.5) -> AsyncIterator[str]:
    async with serve_plugtest(("::1", 0), obs_period=obs_period, separate_delay=0.5) as server:
        yield f"coap://[::1]:{server.addresses[0].port}"


async def test_libcoap_core_cases() -> None:
    with trio.fail_after(60):
        async with served() as base:
            get = await coap_client(f"{base}/test")
            non = await coap_client(f"{base}/test", "-N")
            post = await coap_client(f"{base}/test", "-m", "post", "-e", "x", "-t", "0")
            put = await coap_client(f"{base}/test", "-m", "put", "-e", "x", "-t", "0")
            delete = await coap_client(f"{base}/test", "-m", "delete")
            separate = await coap_client(f"{base}/separate")
            segments = await coap_client(f"{base}/seg1/seg2/seg3")
            query = await coap_client(f"{base}/query?first=1&second=2")
            xml = await coap_client(f"{base}/multi-format", "-A", "41")
            location = await coap_client(f"{base}/location-query", "-m", "post", "-e", "x")
            create = await coap_client(f"{base}/create1", "-m", "put", "-e", "a", "-O", "5")
            again = await coap_client(f"{base}/create1", "-m", "put", "-e", "b", "-O", "5")
    (response,) = get.received("2.05")
    assert response.mtype == "ACK", str(get)
    assert "Content-Format:text/plain" in response.options, str(get)
    assert get.payload is not None
    assert b"Code: 0.01" in get.payload
    assert [w.mtype for w in non.received("2.05")] == ["NON"], str(non)
    assert [w.code for w in post.received()] == ["2.01"], str(post)
    assert "Location-Path:location1" in post.received()[0].options, str(post)
    assert [w.code for w in put.received()] == ["2.04"], str(put)
    assert [w.code for w in delete.received()] == ["2.02"], str(delete)
    # TD_COAP_CORE_09: an empty ACK first, then the response as CON.
    kinds = [(w.mtype, w.code) for w in separate.received()]
    assert kinds == [("ACK", "0.00"), ("CON", "2.05")], str(separate)
    assert separate.payload is not None
    assert separate.payload.startswith(b"separate")
    assert segments.payload == b"/seg1/seg2/seg3", str(segments)
    assert query.payload == b"first=1\nsecond=2", str(query)
    assert xml.payload is not None
    assert xml.payload.startswith(b"<msg"), str(xml)
    assert "Content-Format:application/xml" in xml.received()[0].options, str(xml)
    (created,) = location.received("2.01")
    assert "Location-Query:first=1" in created.options, str(location)
    assert "Location-Query:second=2" in created.options, str(location)
    assert [w.code for w in create.received()] == ["2.01"], str(create)
    assert [w.code for w in again.received()] == ["4.12"], str(again)


async def test_libcoap_link_cases() -> None:
    with trio.fail_after(60):
        async with served() as base:
            everything = await coap_client(f"{base}/.well-known/core")
            type1 = await coap_client(f"{base}/.well-known/core?rt=Type1")
            interface = await coap_client(f"{base}/.well-known/core?if=If*")
            path = await coap_client(f"{base}/path")
    assert everything.payload is not None
    targets = {link.target for link in parse(everything.payload.decode())}
    assert {"/test", "/obs", "/large", "/link1", "/path/sub3"} <= targets, str(everything)
    assert "Content-Format:application/link-format" in everything.received()[-1].options
    assert type1.payload is not None
    assert {link.target for link in parse(type1.payload.decode())} == {"/link1", "/link3"}
    assert interface.payload is not None
    assert {link.target for link in parse(interface.payload.decode())} == {"/link1", "/link2"}
    assert path.payload is not None
    assert [link.target for link in parse(path.payload.decode())] == [
        "/path/sub1",
        "/path/sub2",
        "/path/sub3",
    ]


async def test_libcoap_block_cases() -> None:
    """block-wise: libcoap asks for and sends 1024-byte (and 64-byte) blocks."""
    body = large_text(2500, title="libcoap")
    with trio.fail_after(60):
        async with served() as base:
            large = await coap_client(f"{base}/large", "-b", "1024")
            small_blocks = await coap_client(f"{base}/large", "-b", "64")
            update = await coap_client(
                f"{base}/large-update", "-m", "put", "-b", "1024", "-t", "0", body=body
            )
            read_back = await coap_client(f"{base}/large-update", "-b", "1024")
            create = await coap_client(
                f"{base}/large-create", "-m", "post", "-b", "1024", "-t", "0", body=body
            )
            echoed = await coap_client(
                f"{base}/large-post", "-m", "post", "-b", "1024", "-t", "0", body=body
            )
    assert large.payload == large_text(), str(large)
    assert len(large.received("2.05")) >= 3, str(large)
    assert all("Block2:" in w.options for w in large.received("2.05")), str(large)
    assert small_blocks.payload == large_text(), str(small_blocks)
    small = small_blocks.received("2.05")
    assert len(small) >= LARGE_SIZE // 64, str(small_blocks)
    assert all(re.search(r"Block2:\d+/[M_]/64\b", w.options) for w in small), str(small_blocks)
    assert update.received()[-1].code == "2.04", str(update)
    assert read_back.payload == body, str(read_back)
    assert create.received()[-1].code == "2.01", str(create)
    assert "Location-Path:large-create" in create.received()[-1].options, str(create)
    assert echoed.payload == body, str(echoed)


async def test_libcoap_obs_cases() -> None:
    with trio.fail_after(60):
        async with served(obs_period=0.5) as base:
            obs = await coap_client(f"{base}/obs", "-s", "3", wait=6)
            non = await coap_client(f"{base}/obs-non", "-s", "3", "-N", wait=6)
    notifications = obs.received("2.05")
    assert len(notifications) >= 4, str(obs)
    assert notifications[0].mtype == "ACK", str(obs)
    assert all(w.mtype == "CON" for w in notifications[1:]), str(obs)
    assert all("Observe:" in w.options for w in notifications), str(obs)
    assert len({w.token for w in notifications}) == 1, str(obs)
    # libcoap acknowledges every CON notification.
    acks = [w for w in obs.wires if w.direction == "sent" and w.mtype == "ACK"]
    assert {a.mid for a in acks} >= {w.mid for w in notifications[1:]}, str(obs)
    non_notifications = non.received("2.05")
    assert len(non_notifications) >= 4, str(non)
    assert all(w.mtype == "NON" for w in non_notifications), str(non)


async def test_libcoap_observes_the_large_resource_block_by_block() -> None:
    # Every notification of /obs-large is its first block (Observe, Block2 0/M,
    # Size2, an ETag); libcoap fetches the other blocks with plain GETs and
    # each comes back with that notification's ETag, the last without M.
    with trio.fail_after(60):
        async with served(obs_period=0.5) as base:
            run = await coap_client(f"{base}/obs-large", "-s", "3", wait=6)
    received = run.received("2.05")
    notifications = [w for w in received if "Observe:" in w.options]
    assert len(notifications) >= 4, str(run)
    assert notifications[0].mtype == "ACK", str(run)
    assert all(w.mtype == "CON" for w in notifications[1:]), str(run)
    assert all("Block2:0/M/1024" in w.options for w in notifications), str(run)
    assert all("Size2:" in w.options for w in notifications), str(run)
    etag = re.compile(r"ETag:(0x[0-9a-f]+)")

    def etag_of(line: Line) -> str:
        match = etag.search(line.options)
        assert match is not None, str(run)
        return match.group(1)

    assert len({etag_of(w) for w in notifications}) == len(notifications), str(run)
    # After each notification: blocks 1 and 2 of that same representation.
    for index, notification in enumerate(notifications[:-1]):
        start = received.index(notification)
        following = received[start + 1 : received.index(notifications[index + 1])]
        blocks = [w for w in following if "Observe:" not in w.options]
        assert [w.options.split("Block2:")[1].split(",")[0].strip() for w in blocks] == [
            "1/M/1024",
            "2/_/1024",
        ], str(run)
        assert {etag_of(w) for w in blocks} == {etag_of(notification)}, str(run)
    # The assembled representations, one after the other, ticking on.
    assert run.payload is not None
    ticks = [int(n) for n in re.findall(rb"obs-large tick (\d+)\n", run.payload)]
    assert len(ticks) >= 4, str(run)
    assert ticks == sorted(ticks), str(run)
    assert len(set(ticks)) == len(ticks), str(run)


async def test_a_tick_does_not_replace_the_final_notification(autojump_clock: object) -> None:
    with trio.fail_after(60):
        async with plugtest(run=False) as env:
            async with env.client.observe(f"{BASE}/obs") as notifications:
                await notifications.__anext__()
                resource = env.site.observed["obs"]
                resource.end_observations()  # a final 4.04 is pending...
                env.site.tick()  # ...and a change arrives before it went out
                with pytest.raises(ObservationError) as info:
                    await notifications.__anext__()
            await trio.sleep(1)
            assert resource.observation_count == 0
    assert info.value.response.code == Code.NOT_FOUND


def test_con_interval_must_not_be_negative() -> None:
    async def render(request: Message) -> Message:
        return Message(code=Code.CONTENT)

    observation = ServerObservation(Message(code=GET), render, lambda message, con: None)
    observation.set_con_interval(0)
    with pytest.raises(ValueError, match="con_interval"):
        observation.set_con_interval(-1)
