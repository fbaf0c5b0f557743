"""The forward proxy (RFC 7252 §5.7.2): requests carrying Proxy-Uri or Proxy-Scheme.

Owns :class:`ForwardProxy`, the resource a :class:`~coap_trio.resource.Site`
hands every request with Proxy-Uri or Proxy-Scheme to
(``Site(proxy=ForwardProxy(...))``). It reads the target URI from the
request (Proxy-Uri, or Proxy-Scheme with Uri-Host, Uri-Port, Uri-Path and
Uri-Query, §6.5), checks it against the allow-list and forwards it through
an :class:`~coap_trio.proxy.upstream.Upstream`:

* a Proxy-Uri that is no absolute URI, or a Proxy-Scheme request without
  Uri-Host: 4.00 Bad Request;
* a scheme the proxy does not serve (``coaps://`` until DTLS exists,
  ``http://`` without an HTTP forwarder, anything else): 5.05 Proxying Not
  Supported;
* a destination the allow-list does not name: 4.03 Forbidden.

A registration (GET with Observe=0) joins the shared upstream observation of
its target (:meth:`Upstream.observe <coap_trio.proxy.upstream.Upstream.observe>`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from ..errors import InvalidURIError
from ..interfaces import ServerObservation
from ..message import Message
from ..numbers.codes import Code
from ..numbers.constants import DEFAULT_PORTS
from ..response_errors import BadRequest, Forbidden, ProxyingNotSupported, RenderableError
from ..uri import build_uri
from .allow import AllowList, target_origin
from .upstream import Upstream

__all__ = ["ForwardProxy", "proxy_target"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_HTTP_SCHEMES = frozenset({"http", "https"})
#: CoAP schemes without a transport yet (DTLS): answered 5.05 before the allow-list.
_NO_TRANSPORT = frozenset({"coaps"})


def proxy_target(request: Message) -> str:
    """The absolute URI a forward-proxy request asks for (Proxy-Uri, or Proxy-Scheme
    and the Uri-* options), normalized for CoAP schemes (RFC 7252 §6.4, §6.5).

    Raises :class:`~coap_trio.response_errors.BadRequest` for what is no
    absolute URI and :class:`~coap_trio.response_errors.ProxyingNotSupported`
    for a scheme that is neither CoAP's nor HTTP's.
    """
    opt = request.opt
    uri = opt.proxy_uri
    if uri is None:
        scheme = (opt.proxy_scheme or "").lower()
        if opt.uri_host is None:
            raise BadRequest("Proxy-Scheme needs Uri-Host")
        if scheme in _HTTP_SCHEMES:
            port = opt.uri_port
            tail = build_uri(opt, None).partition("://")[2].partition("/")[2]
            host = opt.uri_host
            hostinfo = f"[{host}]" if ":" in host else host
            if port is not None:
                hostinfo += f":{port}"
            return f"{scheme}://{hostinfo}/{tail}"
        if scheme not in DEFAULT_PORTS:
            raise ProxyingNotSupported(f"no proxying to {scheme}://")
        uri = build_uri(opt, None)
    return _normalized(uri)


@functools.lru_cache(maxsize=4096)
def _normalized(uri: str) -> str:
    """A Proxy-Uri checked and normalized (cached: clients repeat their URIs)."""
    match = _SCHEME.match(uri)
    if match is None or "://" not in uri:
        raise BadRequest("Proxy-Uri is not an absolute URI")
    scheme = match.group(1).lower()
    if scheme in DEFAULT_PORTS:
        try:
            return Message(code=Code.GET, uri=uri).get_request_uri()
        except InvalidURIError:
            raise BadRequest("malformed Proxy-Uri") from None
    if scheme in _HTTP_SCHEMES:
        try:
            target_origin(uri)
        except InvalidURIError:
            raise BadRequest("malformed Proxy-Uri") from None
        if "#" in uri:
            raise BadRequest("a Proxy-Uri has no fragment")
        return uri
    raise ProxyingNotSupported(f"no proxying to {scheme}://")


class ForwardProxy:
    """A forward proxy: give it to ``Site(proxy=...)`` (see the module docstring).

    ``upstream`` sends the requests on; ``allow`` (an
    :class:`~coap_trio.proxy.allow.AllowList` or its patterns) names the
    destinations served: none by default, since an open proxy is an
    amplifier (``["*"]`` allows all).
    """

    def __init__(self, upstream: Upstream, allow: AllowList | Iterable[str] = ()) -> None:
        self.upstream = upstream
        self.allow = allow if isinstance(allow, AllowList) else AllowList(allow)
        #: Requests refused because their destination is not allowed.
        self.refused = 0

    def target(self, request: Message) -> str:
        """The target URI of ``request`` once checked: see :func:`proxy_target`, plus the
        allow-list (:class:`~coap_trio.response_errors.Forbidden`) and the schemes served."""
        target = proxy_target(request)
        scheme = target.partition(":")[0]
        if scheme in _NO_TRANSPORT or (scheme in _HTTP_SCHEMES and self.upstream.http is None):
            raise ProxyingNotSupported(f"no proxying to {scheme}://")
        if not self.allow.allows_uri(target):
            self.refused += 1
            raise Forbidden("destination not allowed by this proxy")
        return target

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        """True: uploads are assembled before they go upstream, responses sliced after."""
        return True

    async def render(self, request: Message) -> Message:
        """Forward ``request`` to its target; the response (or the error's) for the client."""
        target = self.target(request)
        if request.opt.observe is not None:  # a registration, or a deregistration
            latest = self.upstream.current(request, target)
            if latest is not None:
                return latest
        return await self.upstream.forward(request, target)

    async def add_observation(self, request: Message, observation: ServerObservation) -> None:
        """Join the shared upstream observation of the request's target (if it is observable)."""
        try:
            target = self.target(request)
        except RenderableError:
            return  # rendering answers the error
        await self.upstream.observe(request, target, observation)
