"""Tests for coap_trio.resource: Site routing, the Resource base class and /.well-known/core.

Everything calls ``render`` directly on request messages built from URIs:
no network, no context. Errors are checked as the raised
:class:`~coap_trio.response_errors.RenderableError` and its code.
"""

from __future__ import annotations

from typing import Any

import pytest

from coap_trio import interfaces, linkformat
from coap_trio.linkformat import Link
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.contentformat import ContentFormat
from coap_trio.resource import (
    WELL_KNOWN_CORE,
    Resource,
    Site,
    created,
    path_to_target,
)
from coap_trio.response_errors import (
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PreconditionFailed,
    RenderableError,
    UnsupportedContentFormat,
)

BASE = "coap://[::1]"
TEXT = ContentFormat.TEXT
JSON = ContentFormat.JSON
CBOR = ContentFormat.CBOR
LINKFORMAT = ContentFormat.LINKFORMAT


def req(path: str = "/", code: Code = Code.GET, **kwargs: Any) -> Message:
    return Message(code=code, uri=BASE + path, **kwargs)


class Echo(Resource):
    """Answers GET with its name and the Uri-Path/Uri-Query it received."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.seen: list[Message] = []

    async def render_get(self, request: Message) -> Message:
        self.seen.append(request)
        text = "/".join(request.opt.uri_path) + "?" + "&".join(request.opt.uri_query)
        return Message(code=Code.CONTENT, payload=f"{self.name}:{text}".encode())


class Bare:
    """A resource implementing the contract without the base class (no get_link)."""

    async def render(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"bare")

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False


async def payload_of(site: Site, path: str, **kwargs: Any) -> bytes:
    response = await site.render(req(path, **kwargs))
    assert response.code == Code.CONTENT
    return response.payload


async def raises(
    error: type[RenderableError], resource: interfaces.Resource, request: Message
) -> RenderableError:
    with pytest.raises(error) as info:
        await resource.render(request)
    return info.value


# --- routing -----------------------------------------------------------------


def test_site_and_resource_satisfy_the_contract() -> None:
    assert isinstance(Site(), interfaces.Resource)
    assert isinstance(Echo(), interfaces.Resource)


async def test_exact_routing_passes_the_request_unchanged() -> None:
    site = Site()
    echo = Echo()
    site.add(("a", "b"), echo)
    request = req("/a/b?x=1")
    assert await site.render(request) == Message(code=Code.CONTENT, payload=b"echo:a/b?x=1")
    assert echo.seen == [request]
    assert echo.seen[0] is request


async def test_exact_routing_does_not_match_below_or_above() -> None:
    site = Site()
    site.add(("a", "b"), Echo())
    for path in ("/a", "/a/b/c", "/", "/b"):
        error = await raises(NotFound, site, req(path))
        assert error.code == Code.NOT_FOUND
        assert error.to_message().code == Code.NOT_FOUND


async def test_root_resource() -> None:
    site = Site()
    site.add((), Echo("root"))
    assert await payload_of(site, "/") == b"root:?"
    assert await site.render(req("")) == Message(code=Code.CONTENT, payload=b"root:?")
    await raises(NotFound, site, req("/x"))


async def test_subtree_gets_remaining_path_and_keeps_the_rest() -> None:
    site = Site()
    echo = Echo("tree")
    site.add(["files"], echo, subtree=True)
    request = req("/files/dir/name.txt?x=1&y=2", token=b"tk", mid=7)
    assert (await site.render(request)).payload == b"tree:dir/name.txt?x=1&y=2"
    assert await payload_of(site, "/files") == b"tree:?"
    seen = echo.seen[0]
    assert seen.remote == request.remote
    assert (seen.token, seen.mid, seen.code) == (b"tk", 7, Code.GET)
    assert request.opt.uri_path == ("files", "dir", "name.txt")  # the original is untouched
    await raises(NotFound, site, req("/file"))
    await raises(NotFound, site, req("/"))


async def test_root_subtree_catches_everything() -> None:
    site = Site()
    site.add((), Echo("all"), subtree=True)
    site.add(("x",), Echo("x"))
    assert await payload_of(site, "/") == b"all:?"
    assert await payload_of(site, "/a/b") == b"all:a/b?"
    assert await payload_of(site, "/x") == b"x:x?"
    assert await payload_of(site, "/x/y") == b"all:x/y?"


async def test_longest_prefix_wins_and_exact_beats_subtree() -> None:
    site = Site()
    site.add(("a",), Echo("short"), subtree=True)
    site.add(("a", "b"), Echo("long"), subtree=True)
    site.add(("a", "b", "c"), Echo("exact"))
    assert await payload_of(site, "/a/x/y") == b"short:x/y?"
    assert await payload_of(site, "/a") == b"short:?"
    assert await payload_of(site, "/a/b") == b"long:?"
    assert await payload_of(site, "/a/b/d/e") == b"long:d/e?"
    assert await payload_of(site, "/a/b/c") == b"exact:a/b/c?"
    assert await payload_of(site, "/a/b/c/d") == b"long:c/d?"


async def test_same_path_exact_and_subtree_coexist() -> None:
    site = Site()
    site.add(("a",), Echo("exact"))
    site.add(("a",), Echo("tree"), subtree=True)
    assert await payload_of(site, "/a") == b"exact:a?"
    assert await payload_of(site, "/a/b") == b"tree:b?"
    site.remove(("a",))
    await raises(NotFound, site, req("/a"))
    await raises(NotFound, site, req("/a/b"))


async def test_nested_sites_are_subtrees() -> None:
    outer = Site()
    inner = Site(well_known_core=False)
    innermost = Site(well_known_core=False)
    outer.add(("sub",), inner)  # no subtree=True needed
    inner.add(("x",), Echo("x"))
    inner.add((), Echo("inner-root"))
    inner.add(("deep",), innermost)
    innermost.add(("y", "z"), Echo("yz"))
    assert await payload_of(outer, "/sub/x?q") == b"x:x?q"
    assert await payload_of(outer, "/sub") == b"inner-root:?"
    assert await payload_of(outer, "/sub/deep/y/z") == b"yz:y/z?"
    await raises(NotFound, outer, req("/sub/y"))
    await raises(NotFound, outer, req("/sub/deep/y"))


async def test_add_and_remove_while_serving() -> None:
    site = Site()
    await raises(NotFound, site, req("/late"))
    site.add(("late",), Echo("one"))
    assert await payload_of(site, "/late") == b"one:late?"
    site.add(("late",), Echo("two"))  # replaces
    assert await payload_of(site, "/late") == b"two:late?"
    site.remove(("late",))
    await raises(NotFound, site, req("/late"))
    with pytest.raises(KeyError):
        site.remove(("late",))
    site.add(("t",), Echo("tree"), subtree=True)
    site.add(("t", "u", "v"), Echo("deeper"), subtree=True)
    site.remove(["t", "u", "v"])
    assert await payload_of(site, "/t/u/v/w") == b"tree:u/v/w?"
    site.remove(["t"])
    await raises(NotFound, site, req("/t/u"))


def test_add_rejects_a_string_path() -> None:
    site = Site()
    with pytest.raises(TypeError):
        site.add("a/b", Echo())
    with pytest.raises(TypeError):
        site.add(("a", 1), Echo())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        site.remove("a")


async def test_needs_blockwise_assembly_delegates() -> None:
    site = Site()
    site.add(("bare",), Bare())
    site.add(("echo",), Echo())
    site.add(("tree",), Bare(), subtree=True)
    assert await site.needs_blockwise_assembly(req("/echo")) is True
    assert await site.needs_blockwise_assembly(req("/bare")) is False
    assert await site.needs_blockwise_assembly(req("/tree/x")) is False
    assert await site.needs_blockwise_assembly(req("/nothing")) is False
    assert (await site.render(req("/bare"))).payload == b"bare"


# --- method dispatch -----------------------------------------------------------


class AllMethods(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"get")

    async def render_post(self, request: Message) -> Message:
        return Message(code=Code.CHANGED, payload=b"post")

    async def render_put(self, request: Message) -> Message:
        return Message(code=Code.CHANGED, payload=b"put")

    async def render_delete(self, request: Message) -> Message:
        return Message(code=Code.DELETED, payload=b"delete")

    async def render_fetch(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"fetch")

    async def render_patch(self, request: Message) -> Message:
        return Message(code=Code.CHANGED, payload=b"patch")

    async def render_ipatch(self, request: Message) -> Message:
        return Message(code=Code.CHANGED, payload=b"ipatch")


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (Code.GET, b"get"),
        (Code.POST, b"post"),
        (Code.PUT, b"put"),
        (Code.DELETE, b"delete"),
        (Code.FETCH, b"fetch"),
        (Code.PATCH, b"patch"),
        (Code.iPATCH, b"ipatch"),
    ],
)
async def test_method_dispatch(method: Code, expected: bytes) -> None:
    site = Site()
    site.add(("r",), AllMethods())
    assert (await site.render(req("/r", method))).payload == expected


@pytest.mark.parametrize(
    "method", [Code.POST, Code.PUT, Code.DELETE, Code.FETCH, Code.PATCH, Code.iPATCH]
)
async def test_undefined_method_is_405(method: Code) -> None:
    error = await raises(MethodNotAllowed, Echo(), req("/", method))
    assert error.to_message().code == Code.METHOD_NOT_ALLOWED


@pytest.mark.parametrize("code", [Code(8), Code(31), Code.CONTENT, Code.EMPTY])
async def test_unknown_or_non_request_code_is_405(code: Code) -> None:
    await raises(MethodNotAllowed, AllMethods(), req("/", code))


class Blank(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(payload=b"x")

    async def render_post(self, request: Message) -> Message:
        return Message()

    async def render_delete(self, request: Message) -> Message:
        return Message()

    async def render_fetch(self, request: Message) -> Message:
        return Message()


@pytest.mark.parametrize(
    ("method", "code"),
    [
        (Code.GET, Code.CONTENT),
        (Code.FETCH, Code.CONTENT),
        (Code.POST, Code.CHANGED),
        (Code.DELETE, Code.DELETED),
    ],
)
async def test_a_response_without_code_gets_the_usual_success(method: Code, code: Code) -> None:
    assert (await Blank().render(req("/", method))).code == code


async def test_resource_needs_blockwise_assembly() -> None:
    assert await Echo().needs_blockwise_assembly(req("/")) is True


# --- content negotiation and Content-Format -----------------------------------------


class Negotiated(Resource):
    representations = (JSON, CBOR)

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"{}")

    async def render_fetch(self, request: Message) -> Message:
        if request.payload == b"fixed":
            return Message(code=Code.CONTENT, content_format=TEXT)
        if request.payload == b"error":
            return Message(code=Code.BAD_REQUEST)
        return Message(code=Code.CONTENT)

    async def render_post(self, request: Message) -> Message:
        return Message(code=Code.CONTENT)


async def test_content_format_defaults_to_first_representation() -> None:
    response = await Negotiated().render(req("/"))
    assert response.opt.content_format == JSON


async def test_content_format_follows_accept() -> None:
    response = await Negotiated().render(req("/", accept=CBOR))
    assert response.opt.content_format == CBOR
    response = await Negotiated().render(req("/", Code.FETCH, accept=CBOR))
    assert response.opt.content_format == CBOR


async def test_unacceptable_accept_is_406() -> None:
    error = await raises(NotAcceptable, Negotiated(), req("/", accept=TEXT))
    assert error.code == Code.NOT_ACCEPTABLE
    await raises(NotAcceptable, Negotiated(), req("/", Code.FETCH, accept=TEXT))


async def test_handler_content_format_and_other_codes_are_kept() -> None:
    fixed = await Negotiated().render(req("/", Code.FETCH, payload=b"fixed"))
    assert fixed.opt.content_format == TEXT
    bad = await Negotiated().render(req("/", Code.FETCH, payload=b"error"))
    assert bad.opt.content_format is None
    # Accept is negotiated for GET/FETCH only; POST's 2.05 is not a representation.
    posted = await Negotiated().render(req("/", Code.POST, accept=TEXT))
    assert posted.opt.content_format is None


async def test_without_representations_accept_is_not_checked() -> None:
    response = await Echo().render(req("/", accept=TEXT))
    assert response.opt.content_format is None


class Strict(AllMethods):
    accepted_formats = (JSON,)


@pytest.mark.parametrize("method", [Code.POST, Code.PUT, Code.PATCH, Code.iPATCH, Code.FETCH])
async def test_unsupported_content_format_is_415(method: Code) -> None:
    error = await raises(UnsupportedContentFormat, Strict(), req("/", method, payload=b"{}"))
    assert error.code == Code.UNSUPPORTED_CONTENT_FORMAT
    await raises(
        UnsupportedContentFormat, Strict(), req("/", method, payload=b"x", content_format=TEXT)
    )
    await raises(UnsupportedContentFormat, Strict(), req("/", method, content_format=CBOR))
    ok = await Strict().render(req("/", method, payload=b"{}", content_format=JSON))
    assert ok.code.is_successful()
    empty = await Strict().render(req("/", method))
    assert empty.code.is_successful()


async def test_content_format_not_checked_for_get_and_delete() -> None:
    assert (await Strict().render(req("/", Code.GET, content_format=TEXT))).payload == b"get"
    assert (await Strict().render(req("/", Code.DELETE, payload=b"x"))).payload == b"delete"


# --- conditional requests and Max-Age ----------------------------------------------


class Stored(Resource):
    """A document with an ETag; None when deleted."""

    max_age = 30

    def __init__(self, value: bytes | None = b"v1") -> None:
        self.value = value
        self.gets = 0

    async def current_etag(self, request: Message) -> bytes | None:
        return None if self.value is None else b"E-" + self.value

    async def render_get(self, request: Message) -> Message:
        self.gets += 1
        if self.value is None:
            raise NotFound()
        return Message(code=Code.CONTENT, payload=self.value)

    async def render_fetch(self, request: Message) -> Message:
        return await self.render_get(request)

    async def render_put(self, request: Message) -> Message:
        existed = self.value is not None
        self.value = request.payload
        return Message(code=Code.CHANGED) if existed else created(("doc",))


async def test_get_adds_the_current_etag_and_max_age() -> None:
    response = await Stored().render(req("/"))
    assert response.opt.etag == (b"E-v1",)
    assert response.opt.max_age == 30
    other = await Stored().render(req("/", etag=(b"E-old",)))
    assert other.code == Code.CONTENT
    assert other.opt.etag == (b"E-v1",)


async def test_get_with_matching_etag_is_valid_without_render() -> None:
    resource = Stored()
    response = await resource.render(req("/", etag=(b"E-old", b"E-v1")))
    assert response == Message(code=Code.VALID, etag=(b"E-v1",), max_age=30)
    assert resource.gets == 0
    fetched = await resource.render(req("/", Code.FETCH, payload=b"q", etag=(b"E-v1",)))
    assert fetched.code == Code.VALID
    assert resource.gets == 0
    # The ETag is not compared for unsafe methods.
    put = await resource.render(req("/", Code.PUT, payload=b"v2", etag=(b"E-v1",)))
    assert put.code == Code.CHANGED


async def test_if_match() -> None:
    resource = Stored()
    error = await raises(PreconditionFailed, resource, req("/", Code.PUT, if_match=(b"E-x",)))
    assert error.code == Code.PRECONDITION_FAILED
    assert resource.value == b"v1"
    ok = await resource.render(req("/", Code.PUT, payload=b"v2", if_match=(b"E-x", b"E-v1")))
    assert ok.code == Code.CHANGED
    ok = await resource.render(req("/", Code.PUT, payload=b"v3", if_match=(b"",)))
    assert ok.code == Code.CHANGED
    assert resource.value == b"v3"


async def test_if_match_on_a_missing_resource_fails() -> None:
    resource = Stored(None)
    await raises(PreconditionFailed, resource, req("/", Code.PUT, payload=b"x", if_match=(b"",)))
    assert resource.value is None


async def test_if_none_match() -> None:
    resource = Stored(None)
    response = await resource.render(req("/", Code.PUT, payload=b"new", if_none_match=True))
    assert response.code == Code.CREATED
    await raises(PreconditionFailed, resource, req("/", Code.PUT, payload=b"x", if_none_match=True))
    assert resource.value == b"new"


async def test_without_current_etag_conditions_are_left_to_the_handler() -> None:
    response = await Blank().render(req("/", if_match=(b"nope",), etag=(b"E",)))
    assert response.code == Code.CONTENT
    assert response.opt.etag == ()
    assert (await Blank().render(req("/", if_none_match=True))).code == Code.CONTENT


async def test_handler_set_etag_and_max_age_are_kept() -> None:
    class Own(Stored):
        async def render_get(self, request: Message) -> Message:
            return Message(code=Code.CONTENT, etag=(b"mine",), max_age=5)

    response = await Own().render(req("/"))
    assert response.opt.etag == (b"mine",)
    assert response.opt.max_age == 5


async def test_max_age_only_on_content() -> None:
    resource = Stored()
    assert (await resource.render(req("/", Code.PUT, payload=b"x"))).opt.max_age is None
    resource.value = None
    await raises(NotFound, resource, req("/"))


# --- created() ------------------------------------------------------------------


def test_created() -> None:
    response = created(("items", "42"), ("v=1", "w"), payload=b"ok")
    assert response.code == Code.CREATED
    assert response.opt.location_path == ("items", "42")
    assert response.opt.location_query == ("v=1", "w")
    assert response.payload == b"ok"
    assert created("/items/42", "v=1&w") == response.copy(payload=b"")
    bare = created()
    assert bare == Message(code=Code.CREATED)
    assert len(bare.opt) == 0
    assert Resource.created is created


# --- links and /.well-known/core -------------------------------------------------------


class Temp(Echo):
    rt = "temperature-c"
    if_ = ("sensor", "core.s")
    title = "Temperature"
    representations = (TEXT, JSON)
    sz = 12
    obs = True


class Light(Echo):
    rt = ("light-lux", "light")
    ct = 50


class Hidden(Echo):
    hidden = True


def test_get_link_from_attributes() -> None:
    assert Temp().get_link(("s", "t")) == Link(
        "/s/t",
        (
            ("rt", "temperature-c"),
            ("if", "sensor core.s"),
            ("title", "Temperature"),
            ("ct", "0 50"),
            ("sz", "12"),
            ("obs", None),
        ),
    )
    assert Light().get_link(()) == Link("/", (("rt", "light-lux light"), ("ct", "50")))
    assert Echo().get_link(("x",)) == Link("/x")

    class Typed(Echo):
        ct = JSON  # a ContentFormat is written as its number

    assert Typed().get_link(("t",)) == Link("/t", (("ct", "50"),))


def test_path_to_target_escapes_segments() -> None:
    assert path_to_target(()) == "/"
    assert (
        path_to_target(("a b", "c/d", "é", "x?y", "..", "."))
        == "/a%20b/c%2Fd/%C3%A9/x%3Fy/%2E%2E/%2E"
    )
    assert path_to_target(("k=v;w", "@:")) == "/k=v;w/@:"


def discovery_site() -> Site:
    site = Site()
    site.add(("sensors", "temp"), Temp())
    site.add(("sensors", "light"), Light())
    site.add(("a",), Echo(), subtree=True)
    site.add(("secret",), Hidden())
    inner = Site(well_known_core=False)
    inner.add(("x",), Temp())
    inner.add(("hid",), Hidden())
    site.add(("nested",), inner)
    site.add(("bare",), Bare())
    site.add((), Echo())
    return site


TEMP_ATTRS = ';rt="temperature-c";if="sensor core.s";title="Temperature";ct="0 50";sz=12;obs'
ALL_LINKS = (
    f"</sensors/temp>{TEMP_ATTRS},"
    '</sensors/light>;rt="light-lux light";ct=50,'
    "</a>,"
    f"</nested/x>{TEMP_ATTRS},"
    "</bare>,"
    "</>"
)


async def discover(site: Site, query: str = "", **kwargs: Any) -> Message:
    return await site.render(req("/.well-known/core" + query, **kwargs))


async def test_well_known_core_lists_everything_in_insertion_order() -> None:
    response = await discover(discovery_site())
    assert response.code == Code.CONTENT
    assert response.opt.content_format == LINKFORMAT
    assert response.payload.decode() == ALL_LINKS
    links = linkformat.parse(response.payload.decode())
    assert [link.target for link in links] == [
        "/sensors/temp",
        "/sensors/light",
        "/a",
        "/nested/x",
        "/bare",
        "/",
    ]
    assert links[0].rt == ("temperature-c",)
    assert links[0].ct == (0, 50)
    assert links[0].obs


@pytest.mark.parametrize(
    ("query", "targets"),
    [
        ("?rt=temp*", ["/sensors/temp", "/nested/x"]),
        ("?rt=light", ["/sensors/light"]),
        ("?href=/a*", ["/a"]),
        ("?href=/sensors/light", ["/sensors/light"]),
        ("?ct=40", []),
        ("?ct=50", ["/sensors/temp", "/sensors/light", "/nested/x"]),
        ("?if=sensor", ["/sensors/temp", "/nested/x"]),
        ("?obs", ["/sensors/temp", "/nested/x"]),
        ("?rt=temp*&href=/n*", ["/nested/x"]),
        ("?title=nothing", []),
    ],
)
async def test_well_known_core_filters(query: str, targets: list[str]) -> None:
    response = await discover(discovery_site(), query)
    assert response.code == Code.CONTENT
    links = linkformat.parse(response.payload.decode())
    assert [link.target for link in links] == targets
    assert linkformat.serialize(links) == response.payload.decode()


async def test_well_known_core_ct_filter_finds_link_format_resources() -> None:
    site = Site()
    index = Echo()
    site.add(("index",), Negotiated())
    site.add(("dir",), index)

    class Catalog(Echo):
        representations = (LINKFORMAT,)

    site.add(("catalog",), Catalog())
    response = await discover(site, "?ct=40")
    assert response.payload == b"</catalog>;ct=40"


async def test_well_known_core_details() -> None:
    site = discovery_site()
    await raises(MethodNotAllowed, site, req("/.well-known/core", Code.POST))
    await raises(NotAcceptable, site, req("/.well-known/core", accept=JSON))
    ok = await discover(site, accept=LINKFORMAT)
    assert ok.payload.decode() == ALL_LINKS
    # The nested site has no discovery resource of its own.
    await raises(NotFound, site, req("/nested/.well-known/core"))
    assert WELL_KNOWN_CORE == (".well-known", "core")


async def test_empty_site_lists_nothing() -> None:
    response = await discover(Site())
    assert response.code == Code.CONTENT
    assert response.payload == b""
    assert linkformat.parse("") == []


async def test_well_known_core_can_be_disabled_or_replaced() -> None:
    await raises(NotFound, Site(well_known_core=False), req("/.well-known/core"))
    site = Site()
    site.add(WELL_KNOWN_CORE, Echo("custom"))
    assert (await discover(site)).payload == b"custom:.well-known/core?"
    site.remove(WELL_KNOWN_CORE)
    await raises(NotFound, site, req("/.well-known/core"))


async def test_discovery_follows_runtime_changes() -> None:
    site = Site()
    site.add(("one",), Echo())
    assert (await discover(site)).payload == b"</one>"
    site.add(("two",), Light())
    site.remove(("one",))
    assert (await discover(site)).payload == b'</two>;rt="light-lux light";ct=50'


async def test_nested_site_links_with_its_own_well_known_core_are_not_listed() -> None:
    site = Site()
    inner = Site()  # keeps its own (hidden) /.well-known/core
    inner.add(("y",), Echo())
    site.add(("in", "ner"), inner)
    assert (await discover(site)).payload == b"</in/ner/y>"
    assert site.get_links() == [Link("/in/ner/y")]
    assert inner.get_links(("p",)) == [Link("/p/y")]
