"""Server-side routing and the convenience resource base classes.

Owns :class:`Site` (dispatch on Uri-Path to the resources added to it, and
the automatic ``/.well-known/core`` of RFC 6690) and :class:`Resource` (a
base class dispatching on the method to ``render_get``, ``render_put``...,
with content negotiation, Content-Format checks, conditional requests and
Max-Age handled declaratively). Both implement
:class:`coap_trio.interfaces.Resource`.

Must not know about the wire, the messaging layer or tasks: everything here
takes a request :class:`~coap_trio.message.Message` and returns a response
(code, options and payload only) or raises one of the
:mod:`coap_trio.response_errors`, which are re-exported here for handler
authors' convenience.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar
from urllib.parse import quote

import trio

from . import interfaces
from .linkformat import Link, filter_links, serialize
from .message import Message
from .numbers.codes import Code
from .numbers.contentformat import ContentFormat
from .remote import MulticastRemote
from .response_errors import (
    BadOption,
    BadRequest,
    EchoRequired,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PreconditionFailed,
    RenderableError,
    UnsupportedContentFormat,
)

__all__ = [
    "WELL_KNOWN_CORE",
    "BadOption",
    "BadRequest",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PreconditionFailed",
    "RenderableError",
    "Resource",
    "Site",
    "UnsupportedContentFormat",
    "created",
    "is_proxy_request",
    "path_to_target",
]

#: The Uri-Path of the resource discovery resource (RFC 6690 §4).
WELL_KNOWN_CORE: tuple[str, ...] = (".well-known", "core")

_Handler = Callable[[Message], Awaitable[Message]]

_HANDLER_NAMES: dict[Code, str] = {
    Code.GET: "render_get",
    Code.POST: "render_post",
    Code.PUT: "render_put",
    Code.DELETE: "render_delete",
    Code.FETCH: "render_fetch",
    Code.PATCH: "render_patch",
    Code.iPATCH: "render_ipatch",
}
# (module constants: an Enum class attribute is slow on 3.11)
_EMPTY, _CONTENT, _DELETED, _CHANGED = Code.EMPTY, Code.CONTENT, Code.DELETED, Code.CHANGED
_DELETE = Code.DELETE
# Safe methods: their 2.05 is a representation of the resource (RFC 8132 §2).
_SAFE = frozenset({Code.GET, Code.FETCH})
# Methods whose request payload is checked against ``accepted_formats``.
_WITH_PAYLOAD = frozenset({Code.POST, Code.PUT, Code.PATCH, Code.iPATCH, Code.FETCH})
# RFC 3986 pchar minus the unreserved characters ``quote`` always keeps.
_PCHAR_SAFE = "!$&'()*+,;=:@"
# Option numbers of If-Match and If-None-Match (RFC 7252 §5.10.8).
_IF_MATCH = 1
_IF_NONE_MATCH = 5
# Option numbers of Proxy-Uri and Proxy-Scheme (RFC 7252 §5.10.2).
_PROXY_OPTIONS = frozenset({35, 39})


def path_to_target(path: Sequence[str]) -> str:
    """The link target of a Uri-Path: ``("a", "b c")`` gives ``"/a/b%20c"``, ``()`` gives ``"/"``.

    Each segment is percent-encoded as an RFC 3986 path segment; ``"."`` and
    ``".."`` are encoded too so that they survive dot-segment removal.
    """
    return "/" + "/".join(
        "%2E" * len(segment) if segment in (".", "..") else quote(segment, safe=_PCHAR_SAFE)
        for segment in path
    )


def is_proxy_request(request: Message) -> bool:
    """Whether ``request`` asks a forward proxy: it carries Proxy-Uri or Proxy-Scheme."""
    return any(number in _PROXY_OPTIONS for number, _ in request.opt.raw_items)


def _split(value: str | Sequence[str], separator: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.strip(separator)
        return tuple(value.split(separator)) if value else ()
    return tuple(value)


def created(
    location_path: str | Sequence[str] = (),
    location_query: str | Sequence[str] = (),
    payload: bytes = b"",
) -> Message:
    """A 2.01 Created response pointing at the new resource (RFC 7252 §5.9.1.1).

    ``location_path`` is a sequence of segments (or one ``"a/b"`` string,
    split at ``/``); ``location_query`` a sequence of items (or one
    ``"x=1&y=2"`` string, split at ``&``).
    """
    response = Message(code=Code.CREATED, payload=payload)
    path = _split(location_path, "/")
    query = _split(location_query, "&")
    if path:
        response.opt.location_path = path
    if query:
        response.opt.location_query = query
    return response


class Resource:
    """Convenience base class implementing :class:`coap_trio.interfaces.Resource`.

    :meth:`render` dispatches on the request's method to the coroutine
    methods ``render_get``, ``render_post``, ``render_put``,
    ``render_delete``, ``render_fetch``, ``render_patch`` and
    ``render_ipatch`` that a subclass defines; any other method answers
    4.05 (:class:`MethodNotAllowed`). A handler is a coroutine method
    (``async def``) that returns the response :class:`~coap_trio.message.Message`
    or raises a :class:`RenderableError`; a handler that is not async, or
    returns anything else (``None``...), fails with a TypeError naming it,
    which the server logs and answers 5.00. A response left at code 0.00 gets
    the method's usual success code (2.05 for GET/FETCH, 2.02 for DELETE,
    2.04 otherwise).

    Before the handler runs, and according to the attributes below:

    * GET/FETCH with an Accept not in :attr:`representations`: 4.06.
    * POST/PUT/PATCH/iPATCH/FETCH whose Content-Format is not in
      :attr:`accepted_formats` (or is missing while a payload is present): 4.15.
    * If-Match / If-None-Match (RFC 7252 §5.10.8) are evaluated against
      :meth:`current_etag` when the subclass overrides it; a GET or FETCH
      whose ETag options include the current ETag is answered 2.03 Valid
      without calling the handler (§5.10.6.2).

    After it, a 2.05 answer to GET/FETCH gets a Content-Format (the Accept
    value, else the first of :attr:`representations`) and the current ETag,
    and any 2.05 gets Max-Age :attr:`max_age`, each only when the handler
    did not set that option itself.
    """

    #: The Content-Formats GET/FETCH can answer with (None: not negotiated).
    representations: tuple[ContentFormat, ...] | None = None
    #: The Content-Formats accepted in request payloads (None: not checked).
    accepted_formats: tuple[ContentFormat, ...] | None = None
    #: Max-Age set on 2.05 (and 2.03) responses that do not set one.
    max_age: int | None = None

    #: Discovery (RFC 6690) resource type(s): ``rt``.
    rt: str | tuple[str, ...] | None = None
    #: Discovery interface description(s): ``if``.
    if_: str | tuple[str, ...] | None = None
    #: Discovery human-readable title: ``title``.
    title: str | None = None
    #: Discovery Content-Format(s) ``ct``; None derives them from :attr:`representations`.
    ct: int | tuple[int, ...] | None = None
    #: Discovery maximum size estimate: ``sz``.
    sz: int | None = None
    #: Whether discovery marks the resource observable (``obs``).
    obs: bool = False
    #: Whether the resource is left out of ``/.well-known/core``.
    hidden: bool = False
    #: Whether POST, PUT, DELETE, PATCH and iPATCH must prove they are fresh
    #: (RFC 9175 §2.4, e.g. for an actuator: a delayed or replayed request must
    #: not act): one without a valid Echo value of this resource, given less
    #: than :attr:`echo_window` seconds ago to the same client address, is
    #: answered 4.01 with a new Echo value (:class:`EchoRequired`), and a client
    #: repeats it with that value (coap_trio's does by itself).
    echo_unsafe: bool = False
    #: Seconds an Echo value of :attr:`echo_unsafe` stays valid.
    echo_window: float = 10.0
    #: Whether requests that reach it through a multicast group (RFC 7252 §8.2;
    #: ``request.remote`` is then a :class:`~coap_trio.remote.MulticastRemote`)
    #: are answered. False: the :class:`Site` routing to it answers nothing.
    multicast: bool = True
    #: Whether only OSCORE-protected requests reach it (RFC 8613): on a
    #: Context opened with OSCORE credentials, a plain request routed here
    #: is answered 4.01 Unauthorized before any handler runs, and counted.
    #: Handlers of protected requests see an
    #: :class:`~coap_trio.remote.OscoreRemote` on ``request.remote``.
    requires_oscore: bool = False

    # Whether the class overrides current_etag (set by __init_subclass__).
    _conditional: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._conditional = cls.current_etag is not Resource.current_etag

    async def current_etag(self, request: Message) -> bytes | None:
        """The ETag of the current representation, or None if the resource does not exist.

        Override to enable conditional requests; the base class's version is
        never called (If-Match / If-None-Match are then left to the handler).
        ``request`` is given so the ETag can depend on e.g. its Accept.
        """
        return None

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        """Always True: requests are assembled before :meth:`render`."""
        return True

    def _check_fresh(self, request: Message) -> None:
        """Raise EchoRequired unless ``request`` carries a fresh Echo value of ours for
        its sender (stateless: an HMAC over the sender's address and a time)."""
        now = trio.current_time()
        secret = self.__dict__.get("_echo_secret")
        if secret is None:
            secret = self.__dict__["_echo_secret"] = os.urandom(32)
        sender = repr(getattr(request.remote, "sockaddr", request.remote)).encode()
        echo = request.opt.echo
        if echo is not None and len(echo) == 12:
            stamp = echo[:4]
            expected = hmac.new(secret, stamp + sender, hashlib.sha256).digest()[:8]
            given = int.from_bytes(stamp, "big")
            age = (int(now * 10) - given) & 0xFFFFFFFF
            if hmac.compare_digest(expected, echo[4:]) and age <= self.echo_window * 10:
                return
        stamp = (int(now * 10) & 0xFFFFFFFF).to_bytes(4, "big")
        mac = hmac.new(secret, stamp + sender, hashlib.sha256).digest()[:8]
        raise EchoRequired(stamp + mac, "a fresh request is needed: repeat it with this Echo")

    async def render(self, request: Message) -> Message:
        """Check the request as configured, call the method's handler, complete its response."""
        code = request.code
        name = _HANDLER_NAMES.get(code)
        handler: _Handler | None = None if name is None else getattr(self, name, None)
        if handler is None or name is None:
            raise MethodNotAllowed(f"{code.name_printable} is not allowed here")
        safe = code in _SAFE
        if self.echo_unsafe and not safe:
            self._check_fresh(request)
        if code in _WITH_PAYLOAD and self.accepted_formats is not None:
            self._check_content_format(request, self.accepted_formats)
        chosen: ContentFormat | None = None
        if safe and self.representations is not None:
            chosen = self._negotiate(request, self.representations)

        etag: bytes | None = None
        if self._conditional and (
            safe or _IF_MATCH in request.opt or _IF_NONE_MATCH in request.opt
        ):
            etag = await self.current_etag(request)
            _check_preconditions(request, etag)
            if safe and etag is not None and etag in request.opt.etag:
                valid = Message(code=Code.VALID, etag=(etag,))
                if self.max_age is not None:
                    valid.opt.max_age = self.max_age
                return valid

        pending = handler(request)
        try:
            response = await pending
        except TypeError:
            if not inspect.isawaitable(pending):
                raise _handler_error(self, name, "is not async: define it with async def") from None
            raise
        if not isinstance(response, Message):
            returned = "None" if response is None else f"a {type(response).__name__}"
            raise _handler_error(self, name, f"returned {returned}, not the response Message")
        if response.code == _EMPTY:
            response.code = _CONTENT if safe else _DELETED if code == _DELETE else _CHANGED
        if response.code == _CONTENT:
            opt = response.opt
            if chosen is not None and opt.content_format is None:
                opt.content_format = chosen
            if safe and etag is not None and not opt.etag:
                opt.etag = (etag,)
            if self.max_age is not None and opt.max_age is None:
                opt.max_age = self.max_age
        return response

    @staticmethod
    def _check_content_format(request: Message, accepted: tuple[ContentFormat, ...]) -> None:
        content_format = request.opt.content_format
        if content_format is None:
            if request.payload:
                raise UnsupportedContentFormat("a Content-Format is required")
        elif content_format not in accepted:
            raise UnsupportedContentFormat(f"Content-Format {int(content_format)} not supported")

    @staticmethod
    def _negotiate(request: Message, representations: tuple[ContentFormat, ...]) -> ContentFormat:
        accept = request.opt.accept
        if accept is None:
            if not representations:
                raise NotAcceptable("no representation available")
            return representations[0]
        if accept not in representations:
            raise NotAcceptable(f"no representation in Content-Format {int(accept)}")
        return accept

    def get_link(self, path: tuple[str, ...]) -> Link:
        """The discovery link of this resource served at ``path``, built from the attributes."""
        if self.ct is not None:
            ct: int | tuple[int, ...] = self.ct
        else:
            ct = tuple(int(f) for f in self.representations or ())
        return Link.build(
            path_to_target(path),
            rt=self.rt or (),
            if_=self.if_ or (),
            title=self.title,
            ct=int(ct) if isinstance(ct, int) else tuple(int(f) for f in ct),
            sz=self.sz,
            obs=self.obs,
        )

    #: :func:`created`, reachable as ``self.created(...)`` from a handler.
    created = staticmethod(created)


def _handler_error(resource: Resource, name: str, problem: str) -> TypeError:
    """The error of a handler that broke its contract: which one, and what it did."""
    return TypeError(f"{type(resource).__qualname__}.{name} {problem}")


def _check_preconditions(request: Message, etag: bytes | None) -> None:
    """Raise 4.12 when If-Match or If-None-Match (RFC 7252 §5.10.8) fails."""
    if_match = request.opt.if_match
    if if_match and (etag is None or not any(v == b"" or v == etag for v in if_match)):
        raise PreconditionFailed("If-Match not satisfied")
    if etag is not None and request.opt.if_none_match:
        raise PreconditionFailed("If-None-Match: the resource exists")


class _WellKnownCore(Resource):
    """``/.well-known/core``: the links of a site, filtered by the query (RFC 6690 §4)."""

    representations = (ContentFormat.LINKFORMAT,)
    hidden = True

    def __init__(self, site: Site) -> None:
        self._site = site

    async def render_get(self, request: Message) -> Message:
        links = filter_links(self._site.get_links(), request.opt.uri_query)
        return Message(code=Code.CONTENT, payload=serialize(links).encode("utf-8"))


class Site:
    """Routes requests on their Uri-Path to the resources added; implements the Resource contract.

    It is what a :class:`~coap_trio.context.Context` serves. An exact path
    is one dictionary lookup; only when subtrees exist are the prefixes of
    the path walked, longest first. A path matched by nothing answers 4.04
    (:class:`NotFound`). Resources may be added and removed while serving.

    With ``well_known_core`` (the default) the site serves
    ``/.well-known/core`` listing the links of its non-hidden resources
    (see :meth:`get_links`); adding another resource at that path replaces
    it. A ``Site`` nested in another one should normally be created with
    ``well_known_core=False``: the outer site's listing already includes
    the nested resources.

    With ``proxy`` (a resource, such as
    :class:`coap_trio.proxy.ForwardProxy`), every request carrying
    Proxy-Uri or Proxy-Scheme (RFC 7252 §5.7) goes to it, whatever its
    Uri-Path; without, the server answers such requests 5.05 Proxying Not
    Supported before any resource runs.

    With ``requires_oscore`` every resource of the site (nested sites
    included) requires OSCORE, as the attribute of the same name on a
    :class:`Resource` does for one resource.
    """

    def __init__(
        self,
        *,
        well_known_core: bool = True,
        proxy: interfaces.Resource | None = None,
        requires_oscore: bool = False,
    ) -> None:
        #: Whether every resource of the site requires OSCORE (see
        #: :attr:`Resource.requires_oscore`).
        self.requires_oscore = requires_oscore
        self._proxy = proxy
        self._exact: dict[tuple[str, ...], interfaces.Resource] = {}
        self._subtrees: dict[tuple[str, ...], interfaces.Resource] = {}
        # Everything added, in insertion order, keyed by (path, is_subtree).
        self._entries: dict[tuple[tuple[str, ...], bool], interfaces.Resource] = {}
        self._depth = -1  # the longest subtree path's length (-1: no subtrees)
        if well_known_core:
            self.add(WELL_KNOWN_CORE, _WellKnownCore(self))

    def add(
        self, path: Sequence[str], resource: interfaces.Resource, *, subtree: bool = False
    ) -> None:
        """Serve ``resource`` at ``path`` (a sequence of segments; ``()`` is the root).

        With ``subtree=True`` it also serves every path below, receiving the
        request with its Uri-Path reduced to the remaining segments. A
        :class:`Site` is always added as a subtree. Adding at a path already
        taken (in the same mode) replaces the resource there.
        """
        key = _as_path(path)
        if isinstance(resource, Site):
            subtree = True
        (self._subtrees if subtree else self._exact)[key] = resource
        self._entries[key, subtree] = resource
        if subtree:
            self._depth = max(self._depth, len(key))

    def remove(self, path: Sequence[str]) -> None:
        """Stop serving ``path`` (both its exact and subtree resource); KeyError if neither.

        Observers of a removed resource get a final 4.04 notification
        (RFC 7641 §3.2) when it has ``end_observations`` (ObservableResource).
        """
        key = _as_path(path)
        found = False
        for subtree, table in ((False, self._exact), (True, self._subtrees)):
            removed = table.pop(key, None)
            if removed is not None:
                del self._entries[key, subtree]
                found = True
                end_observations = getattr(removed, "end_observations", None)
                if end_observations is not None:
                    end_observations()
        if not found:
            raise KeyError(key)
        self._depth = max(map(len, self._subtrees), default=-1)

    @property
    def proxy(self) -> interfaces.Resource | None:
        """The resource serving requests with Proxy-Uri or Proxy-Scheme (None: refused, 5.05).

        May be set while serving."""
        return self._proxy

    @proxy.setter
    def proxy(self, proxy: interfaces.Resource | None) -> None:
        self._proxy = proxy

    def _route(self, request: Message) -> tuple[interfaces.Resource, Message]:
        proxy = self._proxy
        if proxy is not None and is_proxy_request(request):
            return proxy, request
        path = request.opt.uri_path
        resource = self._exact.get(path)
        if resource is not None:
            return resource, request
        subtrees = self._subtrees
        if subtrees:
            for end in range(min(len(path), self._depth), -1, -1):
                resource = subtrees.get(path[:end])
                if resource is not None:
                    return resource, request.copy(uri_path=path[end:])
        raise NotFound()

    def route(self, request: Message) -> tuple[interfaces.Resource, Message]:
        """The resource ``request`` routes to, and the request as that resource sees it
        (Uri-Path reduced for subtrees). Raises NotFound."""
        return self._route(request)

    async def render(self, request: Message) -> Message:
        """Render ``request`` with the resource its Uri-Path routes to (NotFound: 4.04).

        A request through a multicast group to a resource whose ``multicast``
        attribute is False is answered NotFound, which the server does not
        send to a group request (RFC 7252 §8.2): the resource stays silent.
        """
        resource = None if self._proxy is not None else self._exact.get(request.opt.uri_path)
        if resource is not None:  # (the usual case of _route, inline)
            routed = request
        else:
            resource, routed = self._route(request)
        if type(request.remote) is MulticastRemote and not getattr(resource, "multicast", True):
            raise NotFound()
        return await resource.render(routed)

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        """Ask the routed resource; False when nothing matches (4.04 comes without assembly)."""
        try:
            resource, routed = self._route(request)
        except NotFound:
            return False
        return await resource.needs_blockwise_assembly(routed)

    def get_links(self, prefix: tuple[str, ...] = ()) -> list[Link]:
        """The discovery links of the non-hidden resources, in insertion order.

        Paths are prefixed with ``prefix``; nested sites contribute their
        own links under their path. A resource's link comes from its
        ``get_link(path)`` when it has one, else is a bare ``Link(target)``.
        """
        links: list[Link] = []
        for (path, _subtree), resource in self._entries.items():
            full = prefix + path
            if isinstance(resource, Site):
                links.extend(resource.get_links(full))
            elif not getattr(resource, "hidden", False):
                get_link = getattr(resource, "get_link", None)
                links.append(get_link(full) if callable(get_link) else Link(path_to_target(full)))
        return links


def _as_path(path: Sequence[str]) -> tuple[str, ...]:
    if isinstance(path, str):
        raise TypeError(f"a path is a sequence of segments, not the string {path!r}")
    key = tuple(path)
    if not all(isinstance(segment, str) for segment in key):
        raise TypeError(f"path segments must be strings, got {key!r}")
    return key
