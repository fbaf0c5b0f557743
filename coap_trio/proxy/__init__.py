"""Proxying (RFC 7252 §5.7): forward and reverse proxies, a cache, an HTTP cross-proxy.

An application of the library, above the Context (as the plugtest and file
servers are): nothing below imports it.

* :class:`~coap_trio.proxy.forward.ForwardProxy`: serves requests carrying
  Proxy-Uri or Proxy-Scheme (``Site(proxy=...)``), towards the destinations
  of its :class:`~coap_trio.proxy.allow.AllowList` (none by default);
* :class:`~coap_trio.proxy.reverse.ReverseProxy`: a remote server (or a
  path of one) mounted into a local Site;
* :class:`~coap_trio.proxy.upstream.Upstream`: what both share: Hop-Limit
  (RFC 8768), the :class:`~coap_trio.proxy.cache.ResponseCache` (§5.6), the
  mapping of upstream failures to 5.02 / 5.04 / 5.05, one upstream
  observation shared by many downstream observers (RFC 7641);
* :func:`~coap_trio.proxy.server.open_proxy`: all of it served in one call,
  with the HTTP-CoAP cross-proxy (RFC 8075, :mod:`coap_trio.proxy.http`,
  the ``http`` extra) when asked for.
"""

from __future__ import annotations

from .allow import AllowList
from .cache import ResponseCache
from .forward import ForwardProxy
from .reverse import ReverseProxy
from .server import ProxyServer, open_proxy
from .upstream import Upstream

__all__ = [
    "AllowList",
    "ForwardProxy",
    "ProxyServer",
    "ResponseCache",
    "ReverseProxy",
    "Upstream",
    "open_proxy",
]
