"""The forward and reverse proxies on a MemoryNetwork under the autojump clock.

An origin server (10.0.0.2), a proxy (10.0.0.3, its upstream side on
10.0.0.4) and a client (10.0.0.1) share one simulated network; what the
proxy sends upstream is read from the network's capture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from coap_trio import (
    CONTENT,
    GET,
    PUT,
    Code,
    Context,
    Message,
    ObservableResource,
    ObservationError,
    Resource,
    Site,
    open_context,
)
from coap_trio.codec import decode, encode
from coap_trio.proxy import ProxyServer, ReverseProxy, open_proxy
from coap_trio.proxy.upstream import Upstream
from coap_trio.remote import DatagramRemote
from coap_trio.testing import MemoryNetwork

ORIGIN = ("10.0.0.2", 5683)
PROXY = ("10.0.0.3", 5683)
PROXY_UPSTREAM = ("10.0.0.4", 0)
PROXY_URI = "coap://10.0.0.3"
ALLOW = ["coap://10.0.0.2"]


@dataclass
class Seen:
    """What the origin's resources saw."""

    requests: list[Message] = field(default_factory=list)


class Hello(Resource):
    max_age = 30

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def render_get(self, request: Message) -> Message:
        self.seen.requests.append(request)
        return Message(payload=b"hello %d" % len(self.seen.requests))


class Tagged(Resource):
    """An ETag'd resource with Max-Age 1: revalidated after a second."""

    max_age = 1

    def __init__(self, seen: Seen) -> None:
        self.seen = seen
        self.body = b"tagged v1"

    async def current_etag(self, request: Message) -> bytes | None:
        return self.body[-2:]

    async def render_get(self, request: Message) -> Message:
        self.seen.requests.append(request)
        return Message(payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.body = request.payload
        return Message(code=Code.CHANGED)


class Store(Resource):
    def __init__(self) -> None:
        self.body = b""

    async def render_get(self, request: Message) -> Message:
        return Message(payload=self.body, max_age=0)

    async def render_put(self, request: Message) -> Message:
        self.body = request.payload
        return Message(code=Code.CHANGED)


class Slow(Resource):
    """Never answers until released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.waiting = 0

    async def render_get(self, request: Message) -> Message:
        self.waiting += 1
        await self.release.wait()
        return Message(payload=b"late", max_age=0)


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=b"%d" % self.value)

    def bump(self) -> None:
        self.value += 1
        self.updated_state()


@dataclass
class Env:
    network: MemoryNetwork
    proxy: ProxyServer
    client: Context
    seen: Seen
    counter: Counter
    slow: Slow
    tagged: Tagged

    def via_proxy(self, code: Code, uri: str, **options: Any) -> Message:
        message = Message(code=code, **options)
        message.set_request_uri(uri, proxy=PROXY_URI)
        return message

    async def ask(self, code: Code, uri: str, **options: Any) -> Message:
        return await self.client.request(self.via_proxy(code, uri, **options)).response

    def upstream_requests(self) -> list[Message]:
        """Every request the proxy sent to the origin (retransmissions left out)."""
        found = []
        for record in self.network.capture:
            if record.destination.host == ORIGIN[0] and record.copy == 0:
                message = decode(record.data, record.source)
                if message.code.is_request():
                    found.append(message)
        return found


def origin_site(seen: Seen, counter: Counter, slow: Slow, tagged: Tagged) -> Site:
    site = Site()
    site.add(["hello"], Hello(seen))
    site.add(["tagged"], tagged)
    site.add(["store"], Store())
    site.add(["slow"], slow)
    site.add(["counter"], counter)
    return site


@asynccontextmanager
async def environment(**proxy_options: Any) -> AsyncIterator[Env]:
    network = MemoryNetwork()
    seen, counter, slow = Seen(), Counter(), Slow()
    tagged = Tagged(seen)
    options: dict[str, Any] = {"allow": ALLOW, "client_bind": PROXY_UPSTREAM}
    options.update(proxy_options)
    async with (
        open_context(network=network, bind=ORIGIN, site=origin_site(seen, counter, slow, tagged)),
        open_proxy(PROXY, network=network, **options) as proxy,
        open_context(network=network) as client,
    ):
        yield Env(network, proxy, client, seen, counter, slow, tagged)
        slow.release.set()


# -- forwarding and the cache ----------------------------------------------------------------


async def test_get_through_the_proxy_then_from_its_cache(autojump_clock: Any) -> None:
    async with environment() as env:
        first = await env.ask(GET, "coap://10.0.0.2/hello")
        await trio.sleep(10)
        second = await env.ask(GET, "coap://10.0.0.2/hello")
        await trio.sleep(25)  # past the 30 s of Max-Age: fetched again
        third = await env.ask(GET, "coap://10.0.0.2/hello")
        statistics = env.proxy.upstream.cache.statistics  # type: ignore[union-attr]
    assert (first.code, first.payload, first.opt.max_age) == (CONTENT, b"hello 1", 30)
    assert (second.payload, second.opt.max_age) == (b"hello 1", 20)  # what is left of it
    assert third.payload == b"hello 2"
    assert len(env.seen.requests) == 2
    assert (statistics.hits, statistics.misses) == (1, 2)
    # The origin saw a plain request: no Proxy-Uri, the URI in Uri-Path, Hop-Limit 15.
    upstream = env.upstream_requests()[0]
    assert upstream.opt.proxy_uri is None
    assert upstream.opt.uri_path == ("hello",)
    assert upstream.opt.hop_limit == 15
    assert upstream.remote.host == PROXY_UPSTREAM[0]


async def test_proxy_scheme_and_uri_options_name_the_target(autojump_clock: Any) -> None:
    async with environment() as env:
        message = Message(code=GET, uri="coap://10.0.0.3/hello", proxy_scheme="coap")
        message.opt.uri_host = "10.0.0.2"
        response = await env.client.request(message).response
    assert (response.code, response.payload) == (CONTENT, b"hello 1")


async def test_stale_response_is_revalidated_with_its_etag(autojump_clock: Any) -> None:
    async with environment() as env:
        first = await env.ask(GET, "coap://10.0.0.2/tagged")
        await trio.sleep(5)  # Max-Age 1: stale, but it has an ETag
        second = await env.ask(GET, "coap://10.0.0.2/tagged")
        valid = await env.ask(GET, "coap://10.0.0.2/tagged", etag=(b"v1",))
        statistics = env.proxy.upstream.cache.statistics  # type: ignore[union-attr]
        upstream = env.upstream_requests()
    assert first.payload == second.payload == b"tagged v1"
    assert len(env.seen.requests) == 1  # the second GET was answered 2.03 upstream
    assert upstream[1].opt.etag == (b"v1",)
    assert statistics.revalidated == 1
    # A client holding the current ETag gets 2.03 from the cache itself.
    assert valid.code is Code.VALID
    assert valid.opt.etag == (b"v1",)
    assert len(upstream) == 2


async def test_a_change_through_the_proxy_makes_the_cached_response_stale(
    autojump_clock: Any,
) -> None:
    async with environment() as env:
        await env.ask(GET, "coap://10.0.0.2/hello")
        changed = await env.ask(PUT, "coap://10.0.0.2/tagged", payload=b"tagged v2")
        await env.ask(GET, "coap://10.0.0.2/tagged")
        await env.ask(PUT, "coap://10.0.0.2/tagged", payload=b"tagged v3")
        after = await env.ask(GET, "coap://10.0.0.2/tagged")
    assert changed.code is Code.CHANGED
    assert after.payload == b"tagged v3"  # not the cached v2, although Max-Age had not passed


async def test_without_a_cache_every_request_goes_upstream(autojump_clock: Any) -> None:
    async with environment(cache=False) as env:
        for _ in range(3):
            await env.ask(GET, "coap://10.0.0.2/hello")
    assert len(env.seen.requests) == 3


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxy_uri", "code"),
    [
        ("coap://10.0.0.9/hello", Code.FORBIDDEN),  # not in the allow-list
        ("coap+tcp://10.0.0.2/hello", Code.FORBIDDEN),  # the list names coap:// only
        ("coaps://10.0.0.2/hello", Code.PROXYING_NOT_SUPPORTED),  # no DTLS
        ("http://10.0.0.2/hello", Code.PROXYING_NOT_SUPPORTED),  # no HTTP forwarder
        ("gopher://10.0.0.2/hello", Code.PROXYING_NOT_SUPPORTED),
        ("/hello", Code.BAD_REQUEST),
        ("hello", Code.BAD_REQUEST),
        ("coap://10.0.0.2:99999/hello", Code.BAD_REQUEST),
        ("coap://[::1/hello", Code.BAD_REQUEST),
        ("coap://10.0.0.2/%zz", Code.BAD_REQUEST),
        ("coap://10.0.0.2/hello#here", Code.BAD_REQUEST),
    ],
)
async def test_proxy_uri_refused(autojump_clock: Any, proxy_uri: str, code: Code) -> None:
    async with environment() as env:
        message = Message(code=GET, uri=PROXY_URI, proxy_uri=proxy_uri)
        response = await env.client.request(message).response
    assert response.code is code, response.payload
    assert env.seen.requests == []
    assert env.upstream_requests() == []


async def test_an_empty_allow_list_refuses_everything(autojump_clock: Any) -> None:
    async with environment(allow=()) as env:
        response = await env.ask(GET, "coap://10.0.0.2/hello")
    assert response.code is Code.FORBIDDEN
    assert env.proxy.forward.refused == 1
    assert env.upstream_requests() == []


async def test_proxy_scheme_without_uri_host_is_a_bad_request(autojump_clock: Any) -> None:
    async with environment() as env:
        message = Message(code=GET, uri="coap://10.0.0.3/hello", proxy_scheme="coap")
        response = await env.client.request(message).response
    assert response.code is Code.BAD_REQUEST


async def test_a_server_without_proxy_still_answers_5_05(autojump_clock: Any) -> None:
    async with environment() as env:
        message = Message(code=GET, uri="coap://10.0.0.2", proxy_uri="coap://10.0.0.2/hello")
        response = await env.client.request(message).response
    assert response.code is Code.PROXYING_NOT_SUPPORTED


async def test_unknown_critical_options_safe_to_forward_are_forwarded(
    autojump_clock: Any,
) -> None:
    async with environment() as env:
        safe = env.via_proxy(GET, "coap://10.0.0.2/hello")
        safe.opt.add(65001, b"x")  # critical, safe to forward, unknown to both
        forwarded = await env.client.request(safe).response
        unsafe = env.via_proxy(GET, "coap://10.0.0.2/hello")
        unsafe.opt.add(65003, b"x")  # critical and unsafe: the proxy must understand it
        refused = await env.client.request(unsafe).response
        upstream = env.upstream_requests()
    assert forwarded.code is Code.BAD_OPTION  # the origin's answer, passed back
    assert upstream[0].opt.get_all(65001) == (b"x",)
    assert refused.code is Code.BAD_GATEWAY  # RFC 7252 §5.7.1
    assert len(upstream) == 1


# -- Hop-Limit ------------------------------------------------------------------------------


async def test_hop_limit_is_decremented_and_stops_at_one(autojump_clock: Any) -> None:
    async with environment() as env:
        passed = await env.ask(GET, "coap://10.0.0.2/hello", hop_limit=2)
        reached = await env.ask(GET, "coap://10.0.0.2/hello", hop_limit=1)
        message = env.via_proxy(GET, "coap://10.0.0.2/hello")
        message.opt.add(16, b"\x00")  # Hop-Limit 0 (the typed view would encode 0 as empty)
        zero = await env.client.request(message).response
        upstream = env.upstream_requests()
    assert passed.code is CONTENT
    assert [m.opt.hop_limit for m in upstream] == [1]
    assert reached.code is Code.HOP_LIMIT_REACHED
    assert reached.payload == b"coap_trio"
    assert zero.code is Code.BAD_REQUEST


async def test_a_loop_of_two_proxies_is_stopped_by_hop_limit(autojump_clock: Any) -> None:
    network = MemoryNetwork()
    a, b = ("10.0.1.1", 5683), ("10.0.1.2", 5683)
    async with (
        open_proxy(a, network=network, allow=["*"], via="coap://10.0.1.2", cache=False) as pa,
        open_proxy(b, network=network, allow=["*"], via="coap://10.0.1.1", cache=False) as pb,
        open_context(network=network) as client,
    ):
        message = Message(code=GET)
        message.set_request_uri("coap://10.9.9.9/anywhere", proxy="coap://10.0.1.1")
        with trio.fail_after(60):
            response = await client.request(message).response
        forwarded = pa.upstream.statistics.forwarded + pb.upstream.statistics.forwarded
    assert response.code is Code.HOP_LIMIT_REACHED
    assert forwarded == 15  # 16 hops allowed: the 16th proxy answers 5.08


async def test_a_loop_of_reverse_proxies_is_stopped_by_hop_limit(autojump_clock: Any) -> None:
    network = MemoryNetwork()
    site_a, site_b = Site(), Site()
    async with (
        open_proxy(("10.0.1.1", 5683), network=network, site=site_a, cache=False) as pa,
        open_proxy(("10.0.1.2", 5683), network=network, site=site_b, cache=False) as pb,
        open_context(network=network) as client,
    ):
        site_a.add(["x"], ReverseProxy(pa.upstream, "coap://10.0.1.2/x"), subtree=True)
        site_b.add(["x"], ReverseProxy(pb.upstream, "coap://10.0.1.1/x"), subtree=True)
        with trio.fail_after(60):
            response = await client.get("coap://10.0.1.1/x/y")
    assert response.code is Code.HOP_LIMIT_REACHED


# -- failures upstream ----------------------------------------------------------------------


async def test_no_upstream_response_is_a_gateway_timeout(autojump_clock: Any) -> None:
    async with environment(allow=["*"], timeout=20) as env, trio.open_nursery() as nursery:
        silent = env.network.open_endpoint("10.0.0.77", 5683)  # takes requests, never answers
        nursery.start_soon(silent.run, lambda datagrams: None, lambda *args: None)
        started = trio.current_time()
        response = await env.ask(GET, "coap://10.0.0.77/nobody")
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert response.code is Code.GATEWAY_TIMEOUT, response.payload
    assert 20 <= elapsed < 21
    assert env.proxy.upstream.statistics.timeouts == 1


async def test_a_malformed_upstream_response_is_a_bad_gateway(autojump_clock: Any) -> None:
    network = MemoryNetwork()
    raw = network.open_endpoint("10.0.0.8", 5683)

    def answer_badly(datagrams: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, source in datagrams:
            request = decode(data, source)
            response = Message(
                code=CONTENT, mtype=2, mid=request.mid, token=request.token, payload=b"x"
            )
            response.opt.add(65001, b"?")  # critical, unknown: the response is rejected
            raw.send(encode(response), source)

    async with (
        trio.open_nursery() as nursery,
        open_proxy(PROXY, network=network, allow=["*"]) as proxy,
        open_context(network=network) as client,
    ):
        nursery.start_soon(raw.run, answer_badly, lambda *args: None)
        message = Message(code=GET)
        message.set_request_uri("coap://10.0.0.8/bad", proxy=PROXY_URI)
        response = await client.request(message).response
        nursery.cancel_scope.cancel()
    assert response.code is Code.BAD_GATEWAY
    assert b"Traceback" not in response.payload
    assert proxy.upstream.statistics.bad_gateway == 1


async def test_a_slow_upstream_does_not_hold_up_other_requests(autojump_clock: Any) -> None:
    async with environment() as env, trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(env.ask, GET, "coap://10.0.0.2/slow")
        for _ in range(100):  # until every slow request reached the origin
            if env.slow.waiting == 5:
                break
            await trio.sleep(0.1)
        answers = [await env.ask(GET, "coap://10.0.0.2/hello") for _ in range(3)]
        stored = await env.ask(PUT, "coap://10.0.0.2/store", payload=b"meanwhile")
        still_waiting = env.slow.waiting == 5 and not env.slow.release.is_set()
        env.slow.release.set()
    assert still_waiting
    assert [a.code for a in answers] == [CONTENT] * 3
    assert stored.code is Code.CHANGED


# -- block-wise through the proxy --------------------------------------------------------------


async def test_one_mebibyte_up_and_down_through_the_proxy(autojump_clock: Any) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    async with environment() as env:
        put = await env.ask(PUT, "coap://10.0.0.2/store", payload=body)
        got = await env.ask(GET, "coap://10.0.0.2/store")
    assert put.code is Code.CHANGED
    assert got.code is CONTENT
    assert got.payload == body
    blocks_up = [m for m in env.upstream_requests() if m.opt.block1 is not None]
    assert len(blocks_up) == 1024  # the proxy's client side uploaded it in 1 KiB blocks


# -- observe through the proxy ------------------------------------------------------------------


async def test_three_observers_share_one_upstream_observation(autojump_clock: Any) -> None:
    async with environment() as env, AsyncExitStack() as stack:
        observers = [
            await stack.enter_async_context(open_context(network=env.network)) for _ in range(3)
        ]
        received: list[list[bytes]] = [[], [], []]

        async def observe(index: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            message = env.via_proxy(GET, "coap://10.0.0.2/counter")
            async with observers[index].observe(message) as seen:
                async for response in seen:
                    received[index].append(response.payload)
                    if len(received[index]) == 1:
                        task_status.started()
                    if len(received[index]) == 4:
                        return

        async with trio.open_nursery() as nursery:
            for index in range(3):
                await nursery.start(observe, index)
            for _ in range(3):
                await trio.sleep(1)
                env.counter.bump()
        shared = env.proxy.upstream.statistics.observations
        await trio.sleep(10)  # the deregistrations go through, downstream then upstream
        upstream = env.upstream_requests()
        left = env.counter.observation_count
    assert received == [[b"0", b"1", b"2", b"3"]] * 3
    assert shared == 1
    # One upstream registration on the wire for three observers, and once the
    # last observer left, one deregistration.
    assert [m.opt.observe for m in upstream if m.opt.observe is not None] == [0, 1]
    assert left == 0


async def test_observing_an_unobservable_resource_gives_a_plain_response(
    autojump_clock: Any,
) -> None:
    async with environment() as env:
        message = env.via_proxy(GET, "coap://10.0.0.2/hello")
        async with env.client.observe(message) as seen:
            responses = [response async for response in seen]
    assert [(r.code, r.opt.observe) for r in responses] == [(CONTENT, None)]


async def test_an_observation_of_a_missing_resource_ends_with_its_error(
    autojump_clock: Any,
) -> None:
    async with environment() as env:
        message = env.via_proxy(GET, "coap://10.0.0.2/missing")

        async def follow() -> None:
            async with env.client.observe(message) as seen:
                async for _ in seen:
                    pass

        with pytest.raises(ObservationError) as error:
            await follow()
    assert error.value.response.code is Code.NOT_FOUND


# -- reverse proxies -------------------------------------------------------------------------


async def test_a_reverse_proxy_mounts_a_remote_path(autojump_clock: Any) -> None:
    async with environment() as env:
        reverse = ReverseProxy(env.proxy.upstream, "coap://10.0.0.2/")
        env.proxy.site.add(["remote"], reverse, subtree=True)
        hello = await env.client.get("coap://10.0.0.3/remote/hello")
        missing = await env.client.get("coap://10.0.0.3/remote/nothing")
        local = await env.client.get("coap://10.0.0.3/hello")
    assert (hello.code, hello.payload) == (CONTENT, b"hello 1")
    assert missing.code is Code.NOT_FOUND
    assert local.code is Code.NOT_FOUND  # only what is mounted is served
    assert reverse.base == "coap://10.0.0.2/"
    assert reverse.target_for(("a", "b"), ("x=1",)) == "coap://10.0.0.2/a/b?x=1"


async def test_the_upstream_validates_its_arguments() -> None:
    async with open_context(network=MemoryNetwork()) as ctx:
        with pytest.raises(ValueError, match="hop_limit"):
            Upstream(ctx, hop_limit=0)
        with pytest.raises(ValueError, match="timeout"):
            Upstream(ctx, timeout=0)
