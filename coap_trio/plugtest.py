"""A ready-made server with the resources of the ETSI CoAP#4 plugtest.

Owns the plugtest resource set (:func:`plugtest_site`) as the CoAP#4 test
descriptions (TD_COAP_CORE, TD_COAP_LINK, TD_COAP_BLOCK, TD_COAP_OBS)
expect it, and the one task it needs: :meth:`PlugtestSite.run`, which makes
the observable resources change every ``obs_period`` seconds. Nothing here
starts a task by itself: the caller runs :meth:`PlugtestSite.run` in a
nursery it owns (or uses :func:`serve_plugtest`, which owns one), so nothing
outlives its nursery. Without ``run`` the site still serves; its observable
resources just change only when a client PUTs to them.

=========================  ==============================================================
Path                       Behaviour
=========================  ==============================================================
``/test``                  GET 2.05 (a description of the request), POST 2.01 with
                           Location-Path ``location1/location2/location3``, PUT 2.04,
                           DELETE 2.02 (CORE_01..08, 10, 12, 18)
``/seg1/seg2/seg3``        GET 2.05 (CORE_13)
``/query``                 GET 2.05 echoing the Uri-Query items (CORE_14)
``/separate``              GET answered after ``separate_delay`` seconds, longer than the
                           piggyback window: empty ACK, then a separate response
                           (CORE_09, 11, 16, 17)
``/location-query``        POST 2.01 with Location-Query ``first=1&second=2`` (CORE_19)
``/multi-format``          GET in text/plain (0) or application/xml (41) by Accept (CORE_20)
``/validate``              ETag; 2.03 for a matching ETag; PUT changes it, If-Match
                           honoured (CORE_21, 22)
``/create1``               PUT with If-None-Match: 2.01 the first time, 4.12 after;
                           DELETE removes it again (CORE_23)
``/large``                 a text representation of :data:`LARGE_SIZE` bytes (BLOCK_01,
                           02, 06)
``/large-update``          PUT stores the whole body, GET returns it (BLOCK_03)
``/large-create``          POST 2.01 with Location-Path ``large-create/N``; GET of that
                           path returns the body (BLOCK_04)
``/large-post``            POST 2.04 echoing the whole body back (BLOCK_05)
``/obs``                   observable, changes every ``obs_period`` s, confirmable
                           notifications; PUT with the same Content-Format notifies the
                           new value, with another one ends observations with 4.06;
                           DELETE ends them with 4.04 (OBS_01, 04..12)
``/obs-non``               as ``/obs`` with non-confirmable notifications (OBS_02)
``/obs-large``             observable, a representation larger than one block
``/link1`` .. ``/link3``   rt ``Type1 Type2`` / ``Type2 Type3`` / ``Type1 Type3``,
                           if ``If1`` / ``If2`` / ``foo`` (LINK_02..08)
``/path``                  link-format listing of ``/path/sub1`` .. ``/path/sub3`` (LINK_09)
``/.well-known/core``      every resource above, with rt/if/ct/sz/obs/title (LINK_01..)
=========================  ==============================================================

Block-wise transfers (RFC 7959) are the server layer's job: the ``/large*``
resources return whole representations and receive whole bodies.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from .context import Context
from .hosting import serve_site
from .linkformat import Link, serialize
from .message import Message
from .numbers.codes import Code
from .numbers.contentformat import ContentFormat
from .observable import ObservableResource
from .resource import Resource, Site, created
from .response_errors import BadRequest, NotAcceptable, NotFound

__all__ = [
    "DEFAULT_OBS_PERIOD",
    "DEFAULT_SEPARATE_DELAY",
    "LARGE_SIZE",
    "PlugtestSite",
    "large_text",
    "plugtest_site",
    "serve_plugtest",
]

#: Seconds between changes of the observable resources (the test descriptions say 5).
DEFAULT_OBS_PERIOD = 5.0
#: Seconds ``/separate`` takes to answer: well above the default piggyback window (0.1 s).
DEFAULT_SEPARATE_DELAY = 1.0
#: Size in bytes of the ``/large`` representation: more than one 1024-byte block.
LARGE_SIZE = 2100
#: The Location-Path of the resource POST /test "creates" (TD_COAP_CORE_18).
TEST_LOCATION = ("location1", "location2", "location3")
#: The Location-Query POST /location-query answers with (TD_COAP_CORE_19).
LOCATION_QUERY = ("first=1", "second=2")
#: How many resources POST /large-create keeps (the oldest is forgotten beyond).
MAX_CREATED = 32

_TEXT = ContentFormat.TEXT


def large_text(size: int = LARGE_SIZE, title: str = "/large") -> bytes:
    """Readable text of exactly ``size`` bytes (numbered lines), for the large resources."""
    lines: list[bytes] = []
    length = 0
    number = 0
    while length < size:
        line = b"%s line %03d: the CoAP#4 plugtest's large representation.\n" % (
            title.encode(),
            number,
        )
        lines.append(line)
        length += len(line)
        number += 1
    return b"".join(lines)[:size]


def _etag(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()[:4]


def _text(payload: str) -> Message:
    return Message(code=Code.CONTENT, payload=payload.encode("utf-8"), content_format=_TEXT)


# -- TD_COAP_CORE ------------------------------------------------------------------------


class _Test(Resource):
    """``/test``: every method, answering as TD_COAP_CORE_01..08 expect."""

    title = "Default test resource"
    representations = (_TEXT,)

    async def render_get(self, request: Message) -> Message:
        mtype = request.mtype.name if request.mtype is not None else "?"
        text = f"Type: {mtype}\nCode: {request.code.dotted} ({request.code.name_printable})"
        text += f"\nMID: {request.mid}\nToken: {request.token.hex() or '(empty)'}"
        return Message(code=Code.CONTENT, payload=text.encode())

    async def render_post(self, request: Message) -> Message:
        return created(TEST_LOCATION)

    async def render_put(self, request: Message) -> Message:
        return Message(code=Code.CHANGED)

    async def render_delete(self, request: Message) -> Message:
        return Message(code=Code.DELETED)


class _Fixed(Resource):
    """A GET-only resource with a fixed text representation."""

    representations = (_TEXT,)

    def __init__(self, payload: bytes, title: str | None = None) -> None:
        self.payload = payload
        self.title = title

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=self.payload)


class _Query(Resource):
    """``/query``: echoes the Uri-Query items, one per line (TD_COAP_CORE_14)."""

    title = "Resource accepting query parameters"
    representations = (_TEXT,)

    async def render_get(self, request: Message) -> Message:
        items = request.opt.uri_query
        text = "\n".join(items) if items else "(no query)"
        return Message(code=Code.CONTENT, payload=text.encode("utf-8"))


class _Separate(Resource):
    """``/separate``: answers after a delay longer than the piggyback window."""

    title = "Resource which cannot be served immediately"
    representations = (_TEXT,)

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def render_get(self, request: Message) -> Message:
        await trio.sleep(self.delay)
        return Message(code=Code.CONTENT, payload=b"separate response after %gs" % self.delay)


class _LocationQuery(Resource):
    """``/location-query``: POST creates, located by two Location-Query items (CORE_19)."""

    title = "Perform POST transaction with responses containing Location-Query options"

    async def render_post(self, request: Message) -> Message:
        return created(location_query=LOCATION_QUERY)


class _MultiFormat(Resource):
    """``/multi-format``: text/plain or application/xml by Accept (TD_COAP_CORE_20)."""

    title = "Resource that exists in different content formats (text/plain, application/xml)"
    representations = (_TEXT, ContentFormat.XML)

    async def render_get(self, request: Message) -> Message:
        if request.opt.accept == ContentFormat.XML:
            payload = b'<msg type="plugtest">multi-format resource</msg>'
        else:
            payload = b"plugtest: multi-format resource"
        return Message(code=Code.CONTENT, payload=payload)


class _Validate(Resource):
    """``/validate``: an ETag per representation; a PUT changes it (CORE_21, 22)."""

    title = "Resource which varies"

    def __init__(self) -> None:
        self.payload = b"validate: initial representation"
        self.content_format: ContentFormat = _TEXT

    @property
    def etag(self) -> bytes:
        """The ETag of the current representation."""
        return _etag(self.payload, bytes([int(self.content_format) & 0xFF]))

    async def current_etag(self, request: Message) -> bytes | None:
        return self.etag

    async def render_get(self, request: Message) -> Message:
        accept = request.opt.accept
        if accept is not None and accept != self.content_format:
            raise NotAcceptable(f"only Content-Format {int(self.content_format)}")
        return Message(code=Code.CONTENT, payload=self.payload, content_format=self.content_format)

    async def render_put(self, request: Message) -> Message:
        self.payload = request.payload
        self.content_format = request.opt.content_format or _TEXT
        return Message(code=Code.CHANGED, etag=(self.etag,))


class _Create1(Resource):
    """``/create1``: does not exist until a PUT creates it (TD_COAP_CORE_23)."""

    title = "Resource which does not exist yet (to perform atomic PUT)"

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.content_format: ContentFormat = _TEXT

    async def current_etag(self, request: Message) -> bytes | None:
        return None if self.payload is None else _etag(self.payload)

    async def render_get(self, request: Message) -> Message:
        if self.payload is None:
            raise NotFound("/create1 does not exist (yet)")
        return Message(code=Code.CONTENT, payload=self.payload, content_format=self.content_format)

    async def render_put(self, request: Message) -> Message:
        existed = self.payload is not None
        self.payload = request.payload
        self.content_format = request.opt.content_format or _TEXT
        return Message(code=Code.CHANGED if existed else Code.CREATED)

    async def render_delete(self, request: Message) -> Message:
        self.payload = None
        return Message(code=Code.DELETED)


# -- TD_COAP_BLOCK -------------------------------------------------------------------------


class _Large(Resource):
    """``/large``: a text representation larger than one block."""

    title = "Large resource"
    rt = "block"
    representations = (_TEXT,)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.sz = len(payload)

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=self.payload)


class _LargeUpdate(Resource):
    """``/large-update``: PUT replaces the representation, GET returns it (BLOCK_03)."""

    title = "Large resource that can be updated using PUT method"
    rt = "block"

    def __init__(self) -> None:
        self.payload = large_text(title="/large-update")
        self.content_format: ContentFormat = _TEXT

    async def render_get(self, request: Message) -> Message:
        accept = request.opt.accept
        if accept is not None and accept != self.content_format:
            raise NotAcceptable(f"only Content-Format {int(self.content_format)}")
        return Message(code=Code.CONTENT, payload=self.payload, content_format=self.content_format)

    async def render_put(self, request: Message) -> Message:
        self.payload = request.payload
        self.content_format = request.opt.content_format or _TEXT
        return Message(code=Code.CHANGED)


class _LargeCreate(Resource):
    """``/large-create`` (a subtree): POST creates ``/large-create/N``, GET reads it (BLOCK_04)."""

    title = "Large resource that can be created using POST method"
    rt = "block"

    def __init__(self) -> None:
        self.bodies: OrderedDict[str, tuple[bytes, ContentFormat]] = OrderedDict()
        self._next = 1

    def _entry(self, request: Message) -> tuple[str, tuple[bytes, ContentFormat]]:
        path = request.opt.uri_path
        if len(path) != 1 or path[0] not in self.bodies:
            raise NotFound()
        return path[0], self.bodies[path[0]]

    async def render_post(self, request: Message) -> Message:
        if request.opt.uri_path:
            raise NotFound("POST to /large-create itself")
        name = str(self._next)
        self._next += 1
        self.bodies[name] = (request.payload, request.opt.content_format or _TEXT)
        while len(self.bodies) > MAX_CREATED:
            self.bodies.popitem(last=False)
        return created(("large-create", name))

    async def render_get(self, request: Message) -> Message:
        if not request.opt.uri_path:
            text = "\n".join(f"/large-create/{name}" for name in self.bodies)
            return _text(text or "(nothing created yet)")
        _name, (payload, content_format) = self._entry(request)
        return Message(code=Code.CONTENT, payload=payload, content_format=content_format)

    async def render_delete(self, request: Message) -> Message:
        name, _entry = self._entry(request)
        del self.bodies[name]
        return Message(code=Code.DELETED)


class _LargePost(Resource):
    """``/large-post``: POST answers 2.04 with the whole body echoed (BLOCK_05)."""

    title = "Handle POST with two-way blockwise transfer"
    rt = "block"

    async def render_post(self, request: Message) -> Message:
        response = Message(code=Code.CHANGED, payload=request.payload)
        if request.opt.content_format is not None:
            response.opt.content_format = request.opt.content_format
        return response


# -- TD_COAP_OBS ---------------------------------------------------------------------------


class _Observed(ObservableResource):
    """An observable resource ticking every period (``/obs``, ``/obs-non``, ``/obs-large``).

    A PUT stores a new representation (Content-Format required): the same
    Content-Format notifies it, another one first ends every observation
    with 4.06 (RFC 7641 §4.2, TD_COAP_OBS_08). DELETE ends them with 4.04
    and goes back to ticking (TD_COAP_OBS_07). Ticks replace the
    representation while it is text/plain.
    """

    rt = "observe"

    def __init__(self, name: str, *, confirmable: bool, period: float, large: bool = False) -> None:
        super().__init__()
        self.name = name
        self.large = large
        # Max-Age is whole seconds: the period rounded up, at least 1.
        self.max_age = max(1, math.ceil(period))
        self.con_interval = 0.0 if confirmable else None
        self.title = (
            f"Observable resource which changes every period ({period:g} s), "
            + ("confirmable" if confirmable else "non-confirmable")
            + " notifications"
        )
        self.ticks = 0
        self.payload = self._tick_payload()
        self.content_format: ContentFormat = _TEXT

    def _tick_payload(self) -> bytes:
        text = b"%s tick %d" % (self.name.encode(), self.ticks)
        if self.large:
            return text + b"\n" + large_text(LARGE_SIZE, title=self.name)
        return text

    def tick(self) -> None:
        """One period passed: a new text representation, notified to every observer."""
        self.ticks += 1
        if self.content_format == _TEXT:
            self.payload = self._tick_payload()
            self.updated_state()

    async def render_get(self, request: Message) -> Message:
        accept = request.opt.accept
        if accept is not None and accept != self.content_format:
            raise NotAcceptable(f"only Content-Format {int(self.content_format)}")
        return Message(code=Code.CONTENT, payload=self.payload, content_format=self.content_format)

    async def render_put(self, request: Message) -> Message:
        content_format = request.opt.content_format
        if content_format is None:
            raise BadRequest("Content-Format not set")
        changed_format = content_format != self.content_format
        self.payload = request.payload
        self.content_format = content_format
        if changed_format:
            self.end_observations(Message(code=Code.NOT_ACCEPTABLE))
        else:
            self.updated_state()
        return Message(code=Code.CHANGED)

    async def render_delete(self, request: Message) -> Message:
        self.end_observations()
        self.content_format = _TEXT
        self.payload = self._tick_payload()
        return Message(code=Code.DELETED)


# -- TD_COAP_LINK ---------------------------------------------------------------------------


class _Link(Resource):
    """``/link1`` .. ``/link3``: link attributes for the discovery filters."""

    representations = (_TEXT,)

    def __init__(self, rt: tuple[str, ...], if_: str) -> None:
        self.rt = rt
        self.if_ = if_
        self.title = "Link test resource"

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"link test resource")


class _Path(Resource):
    """``/path``: the link-format listing of its sub-resources (TD_COAP_LINK_09)."""

    title = "Hierarchical link description entry"
    representations = (ContentFormat.LINKFORMAT,)

    def __init__(self, subs: Sequence[str]) -> None:
        self.subs = tuple(subs)

    async def render_get(self, request: Message) -> Message:
        links = [Link.build(f"/path/{sub}", ct=int(_TEXT)) for sub in self.subs]
        return Message(code=Code.CONTENT, payload=serialize(links).encode())


class _PathSub(Resource):
    """``/path/subN``: its own path as text."""

    representations = (_TEXT,)

    def __init__(self, name: str) -> None:
        self.name = name
        self.title = f"Hierarchical link description sub-resource {name}"

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=f"/path/{self.name}".encode())


# -- the site --------------------------------------------------------------------------------


class PlugtestSite(Site):
    """The plugtest resources (see the module docstring); :meth:`run` makes ``/obs*`` change.

    Create it with :func:`plugtest_site`. ``observed`` lists the observable
    resources by path (``"obs"``, ``"obs-non"``, ``"obs-large"``), whose
    ``ticks`` count the periods so far.
    """

    def __init__(self, *, obs_period: float, separate_delay: float) -> None:
        if not obs_period > 0:
            raise ValueError(f"obs_period must be positive, got {obs_period!r}")
        if not separate_delay >= 0:
            raise ValueError(f"separate_delay must be >= 0, got {separate_delay!r}")
        super().__init__()
        #: Seconds between two changes of the observable resources.
        self.obs_period = obs_period
        self.observed: dict[str, _Observed] = {
            "obs": _Observed("obs", confirmable=True, period=obs_period),
            "obs-non": _Observed("obs-non", confirmable=False, period=obs_period),
            "obs-large": _Observed("obs-large", confirmable=True, period=obs_period, large=True),
        }
        self.add(["test"], _Test())
        self.add(["seg1", "seg2", "seg3"], _Fixed(b"/seg1/seg2/seg3", "Long path resource"))
        self.add(["query"], _Query())
        self.add(["separate"], _Separate(separate_delay))
        self.add(["location-query"], _LocationQuery())
        self.add(["multi-format"], _MultiFormat())
        self.add(["validate"], _Validate())
        self.add(["create1"], _Create1())
        self.add(["large"], _Large(large_text()))
        self.add(["large-update"], _LargeUpdate())
        self.add(["large-create"], _LargeCreate(), subtree=True)
        self.add(["large-post"], _LargePost())
        for path, resource in self.observed.items():
            self.add([path], resource)
        self.add(["link1"], _Link(("Type1", "Type2"), "If1"))
        self.add(["link2"], _Link(("Type2", "Type3"), "If2"))
        self.add(["link3"], _Link(("Type1", "Type3"), "foo"))
        subs = ("sub1", "sub2", "sub3")
        self.add(["path"], _Path(subs))
        for sub in subs:
            self.add(["path", sub], _PathSub(sub))

    def tick(self) -> None:
        """Advance every observable resource by one period now (what :meth:`run` calls)."""
        for resource in self.observed.values():
            resource.tick()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Call :meth:`tick` every ``obs_period`` seconds, forever (until cancelled).

        Run it in a nursery that also encloses the serving Context (or use
        :func:`serve_plugtest`). Periods are counted from the start, so they do
        not drift; after a stall the schedule restarts from now instead of
        ticking in a burst.
        """
        task_status.started()
        deadline = trio.current_time()
        while True:
            deadline += self.obs_period
            now = trio.current_time()
            if deadline < now:
                deadline = now + self.obs_period
            await trio.sleep_until(deadline)
            self.tick()


def plugtest_site(
    *, obs_period: float = DEFAULT_OBS_PERIOD, separate_delay: float = DEFAULT_SEPARATE_DELAY
) -> PlugtestSite:
    """The ETSI CoAP#4 plugtest resources as a :class:`Site`.

    ``obs_period``: seconds between changes of ``/obs``, ``/obs-non`` and
    ``/obs-large`` (Max-Age is that, rounded up); they change only while
    :meth:`PlugtestSite.run` runs. ``separate_delay``: how long ``/separate``
    takes, which must exceed the server's piggyback window
    (``MessagingConfig.ack_delay``, 0.1 s by default) for the response to be
    a separate one.
    """
    return PlugtestSite(obs_period=obs_period, separate_delay=separate_delay)


@asynccontextmanager
async def serve_plugtest(
    bind: tuple[str, int] | Sequence[tuple[str, int]] = ("::", 5683),
    *,
    site: PlugtestSite | None = None,
    obs_period: float = DEFAULT_OBS_PERIOD,
    separate_delay: float = DEFAULT_SEPARATE_DELAY,
    **context_options: Any,
) -> AsyncIterator[Context]:
    """Serve the plugtest resources on ``bind`` while the block runs; yields the Context.

    ``site`` defaults to ``plugtest_site(obs_period=..., separate_delay=...)``.
    Owns a nursery holding :meth:`PlugtestSite.run` and the Context (opened
    with ``open_context(bind=bind, site=site, **context_options)``); leaving
    the block stops both. Exceptions from the body propagate as themselves.
    """
    if site is None:
        site = plugtest_site(obs_period=obs_period, separate_delay=separate_delay)
    async with serve_site(site, bind, **context_options) as context:
        yield context
