"""Which options OSCORE encrypts and which stay outside (RFC 8613 §4.1).

Owns the option classes (Figure 5 of RFC 8613 and the options registered
since: Class E encrypted and integrity protected, Class U unprotected, no
Class I option defined), the split of an original message's options into
Inner and Outer ones, with the special cases of §4.1.3 (Proxy-Uri
decomposed, Observe both Inner and Outer, an Inner Observe of a
notification empty), and the merge a receiver makes (§8.2 step 1: Outer
Class E options are discarded).

Must not know about keys, nonces or the COSE object.
"""

from __future__ import annotations

import enum
from urllib.parse import unquote, urlsplit

from ...errors import InvalidURIError, OscoreProtectError
from ...numbers.optionnumbers import OptionNumber
from ...options import Options
from ...uri import split_uri

__all__ = [
    "OPTION_CLASSES",
    "OptionClass",
    "decompose_proxy_uri",
    "merge_options",
    "option_class",
    "split_options",
]


class OptionClass(enum.Flag):
    """How OSCORE protects an option (§4.1); an option may be both E and U."""

    #: Encrypted and integrity protected: Inner (§4.1.1).
    E = 1
    #: Unprotected: Outer, visible to proxies (§4.1.2).
    U = 2


_E, _U = OptionClass.E, OptionClass.U
_N = OptionNumber

#: The class of each registered option. Numbers not listed are Class E (§4.1).
OPTION_CLASSES: dict[int, OptionClass] = {
    # RFC 8613 Figure 5
    _N.IF_MATCH: _E,
    _N.URI_HOST: _U,
    _N.ETAG: _E,
    _N.IF_NONE_MATCH: _E,
    _N.OBSERVE: _E | _U,
    _N.URI_PORT: _U,
    _N.LOCATION_PATH: _E,
    _N.OSCORE: _U,
    _N.URI_PATH: _E,
    _N.CONTENT_FORMAT: _E,
    _N.MAX_AGE: _E | _U,
    _N.URI_QUERY: _E,
    _N.ACCEPT: _E,
    _N.LOCATION_QUERY: _E,
    _N.BLOCK2: _E | _U,
    _N.BLOCK1: _E | _U,
    _N.SIZE2: _E | _U,
    _N.PROXY_URI: _U,
    _N.PROXY_SCHEME: _U,
    _N.SIZE1: _E | _U,
    _N.NO_RESPONSE: _E | _U,
    # Hop-Limit: Class U (RFC 8768 §3).
    _N.HOP_LIMIT: _U,
    # Q-Block1 and Q-Block2: like Block1 and Block2 (RFC 9177 §4).
    _N.Q_BLOCK1: _E | _U,
    _N.Q_BLOCK2: _E | _U,
    # EDHOC: Class U (RFC 9668 §3.1).
    _N.EDHOC: _U,
    # Echo and Request-Tag: Class E between the OSCORE endpoints (RFC 9175 §2.2.1, §3.2.1).
    _N.ECHO: _E,
    _N.REQUEST_TAG: _E,
}

_OBSERVE = int(_N.OBSERVE)
_OSCORE = int(_N.OSCORE)
_PROXY_URI = int(_N.PROXY_URI)
_URI_PATH = int(_N.URI_PATH)
_URI_QUERY = int(_N.URI_QUERY)


def option_class(number: int) -> OptionClass:
    """The class of option ``number``: Class E unless registered otherwise (§4.1)."""
    return OPTION_CLASSES.get(number, _E)


def _is_inner(number: int) -> bool:
    return _E in OPTION_CLASSES.get(number, _E)


def decompose_proxy_uri(proxy_uri: str) -> tuple[str, list[tuple[int, bytes]]]:
    """Split a Proxy-Uri (§4.1.3.3): the Outer Proxy-Uri and the Inner Uri-Path/Uri-Query.

    ``"coap://example.com/resource?q=1"`` gives ``"coap://example.com"`` and
    the options Uri-Path "resource" and Uri-Query "q=1" (RFC 7252 §6.4 for
    CoAP schemes; the same split for http and https). Raises
    :class:`~coap_trio.errors.OscoreProtectError` when the URI cannot be split.
    """
    options = Options()
    try:
        origin, _, segments, arguments = split_uri(proxy_uri)
        outer = origin.uri_base
    except InvalidURIError:
        outer, segments, arguments = _split_http(proxy_uri)
    if segments:
        options.uri_path = segments
    if arguments:
        options.uri_query = arguments
    return outer, list(options.raw_items)


def _split_http(proxy_uri: str) -> tuple[str, list[str], list[str]]:
    """An http or https URI as its origin, path segments and query arguments."""
    try:
        parts = urlsplit(proxy_uri)
    except ValueError:
        raise OscoreProtectError(f"Proxy-Uri {proxy_uri!r} cannot be decomposed") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise OscoreProtectError(f"Proxy-Uri {proxy_uri!r} cannot be decomposed")
    if "@" in parts.netloc or parts.fragment:
        raise OscoreProtectError(
            f"Proxy-Uri {proxy_uri!r} has userinfo or a fragment (RFC 8613 §4.1.3.3)"
        )
    outer = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    path = parts.path
    segments = [unquote(s) for s in path[1:].split("/")] if path not in ("", "/") else []
    arguments = [unquote(a) for a in parts.query.split("&")] if parts.query else []
    return outer, segments, arguments


def split_options(
    items: list[tuple[int, bytes]], *, request: bool
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The Inner and Outer options of an original message (§4.1), each in wire order.

    Options with Class E go Inner (those that are also Class U, such as the
    Block options, are Inner: Outer ones are a proxy's); Class U options go
    Outer. Observe goes both ways: a request's value in both (§4.1.3.5.1); a
    notification's value Outer, its Inner Observe empty (§4.1.3.5.2). A
    request's Proxy-Uri is decomposed (§4.1.3.3). An OSCORE option raises
    :class:`~coap_trio.errors.OscoreProtectError` (no nesting, §4.1.3.7).
    """
    inner: list[tuple[int, bytes]] = []
    outer: list[tuple[int, bytes]] = []
    for number, value in items:
        if number == _OSCORE:
            raise OscoreProtectError("the message already has an OSCORE option (RFC 8613 §4.1.3.7)")
        if number == _OBSERVE:
            inner.append((number, value if request else b""))
            outer.append((number, value))
        elif number == _PROXY_URI and request:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise OscoreProtectError("a Proxy-Uri that is not UTF-8") from None
            proxy_outer, proxy_inner = decompose_proxy_uri(text)
            outer.append((number, proxy_outer.encode("utf-8")))
            inner.extend(proxy_inner)
        elif _is_inner(number):
            inner.append((number, value))
        else:
            outer.append((number, value))
    inner.sort(key=_number)
    return inner, outer


def merge_options(
    outer: list[tuple[int, bytes]], inner: list[tuple[int, bytes]]
) -> list[tuple[int, bytes]]:
    """The options of the decrypted message (§8.2 step 7, §8.4 step 6), in wire order.

    Outer options of Class E (including Observe and the Block options,
    which a receiver processes before: §8.2.1, §8.4.1) and the OSCORE option
    are discarded (§8.2 step 1); the Outer Class U options and every Inner
    option remain.
    """
    kept = [item for item in outer if item[0] != _OSCORE and not _is_inner(item[0])]
    merged = kept + inner
    merged.sort(key=_number)  # stable: an Outer option before an Inner one of its number
    return merged


def _number(item: tuple[int, bytes]) -> int:
    return item[0]
