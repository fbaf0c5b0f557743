"""Request URIs <-> options, as RFC 7252 §6.4 and §6.5 specify.

Owns: splitting an absolute ``coap://`` (``coaps``, ``coap+tcp``,
``coaps+tcp``, ``coap+ws``, ``coaps+ws``) URI into a destination
(:class:`Origin`) plus Uri-Host / Uri-Path / Uri-Query options, and building
the URI back from options and a destination, with percent-encoding both ways.

Must not know about transports, resolution of host names, or messages beyond
their :class:`~coap_trio.options.Options`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Protocol

import attrs

from .errors import InvalidURIError
from .numbers.constants import DEFAULT_PORTS
from .options import Options

__all__ = [
    "InvalidURIError",
    "Origin",
    "RemoteLike",
    "build_uri",
    "format_hostinfo",
    "is_ip_literal",
    "split_uri",
    "uri_options",
]


@attrs.frozen
class Origin:
    """Where a request goes before name resolution: scheme, host and port of a URI.

    ``host`` is an IP address without brackets or a lower-case host name.
    """

    scheme: str
    host: str
    port: int

    @property
    def hostinfo(self) -> str:
        """``host[:port]`` as it appears in a URI (port omitted when it is the default)."""
        return format_hostinfo(self.scheme, self.host, self.port)

    @property
    def uri_base(self) -> str:
        """``scheme://hostinfo``."""
        return f"{self.scheme}://{self.hostinfo}"


def format_hostinfo(scheme: str, host: str, port: int) -> str:
    """``host[:port]`` for a URI: IPv6 in brackets (zone as ``%25``), default port omitted."""
    host = _bracket(host)
    if DEFAULT_PORTS.get(scheme) == port:
        return host
    return f"{host}:{port}"


class RemoteLike(Protocol):
    """What :func:`build_uri` needs of a destination: scheme, host, port."""

    @property
    def scheme(self) -> str:
        """The URI scheme, e.g. ``"coap"``."""
        ...

    @property
    def host(self) -> str:
        """The IP address (no brackets) or host name."""
        ...

    @property
    def port(self) -> int:
        """The port number."""
        ...


# RFC 3986 §3: scheme ":" "//" authority path-abempty [ "?" query ] [ "#" fragment ]
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(#.*)?$")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = frozenset(b"!$&'()*+,;=")
_PCHAR = _UNRESERVED | _SUB_DELIMS | frozenset(b":@")
_QUERY_CHAR = (_PCHAR | frozenset(b"/?")) - frozenset(b"&")
_HOST_CHAR = _UNRESERVED | _SUB_DELIMS
_HEX = frozenset(b"0123456789abcdefABCDEF")


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address (zone allowed), False for a host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bracket(host: str) -> str:
    if ":" in host:
        host = host.replace("%", "%25")
        return f"[{host}]"
    return host


def _percent_decode(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if b"%" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # '%'
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in _HEX for c in pair):
                raise InvalidURIError(f"bad percent-encoding in {what}: {text!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def _percent_decode_str(text: str, what: str) -> str:
    try:
        return _percent_decode(text, what).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidURIError(f"{what} {text!r} is not UTF-8 once decoded") from None


def _percent_encode(value: str, allowed: frozenset[int]) -> str:
    raw = value.encode("utf-8")
    if all(c in allowed for c in raw):
        return value
    return "".join(chr(c) if c in allowed else f"%{c:02X}" for c in raw)


def _encode_segment(segment: str) -> str:
    """A Uri-Path value as a path segment; "." and ".." are encoded so that
    dot-segment removal (§6.4 step 6) does not drop them on the way back."""
    if segment in (".", ".."):
        return "%2E" * len(segment)
    return _percent_encode(segment, _PCHAR)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    if "." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    result = "/".join(output)
    if path.startswith("/") and not result.startswith("/"):
        result = "/" + result
    return result


def _split_authority(authority: str, scheme: str) -> tuple[str, int]:
    if "@" in authority:
        raise InvalidURIError("CoAP URIs have no userinfo")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidURIError(f"unterminated IP-literal in {authority!r}")
        literal, rest = authority[1:end], authority[end + 1 :]
        literal = literal.replace("%25", "%")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidURIError(f"{literal!r} is not an IPv6 address") from None
        host = literal
        if rest and not rest.startswith(":"):
            raise InvalidURIError(f"unexpected {rest!r} after the IP-literal")
        port_text = rest[1:] if rest else ""
    else:
        host_text, _, port_text = authority.partition(":")
        if not host_text:
            raise InvalidURIError("the URI has no host")
        if any(c not in _HOST_CHAR and c != 0x25 for c in host_text.encode("utf-8")):
            raise InvalidURIError(f"invalid character in host {host_text!r}")
        # §6.4 step 5: ASCII lower-case first, then percent-decode (so that
        # a decoded non-ASCII name keeps its bytes and round-trips).
        host = _percent_decode_str(host_text.lower(), "host")
    if port_text:
        if not port_text.isdigit() or not port_text.isascii():
            raise InvalidURIError(f"port {port_text!r} is not a number")
        port = int(port_text)
        if port > 0xFFFF:
            raise InvalidURIError(f"port {port} is out of range")
    else:
        port = DEFAULT_PORTS[scheme]
    return host, port


def split_uri(uri: str) -> tuple[Origin, str | None, list[str], list[str]]:
    """Decompose an absolute CoAP URI as RFC 7252 §6.4 does.

    Returns the destination, the Uri-Host value (None when the host is an IP
    literal, which the destination address already carries), the Uri-Path
    segments and the Uri-Query arguments, all percent-decoded. Uri-Port is
    never needed: the destination port is the URI's.
    Raises :class:`InvalidURIError` for a relative URI, an unknown scheme, a
    fragment, or a malformed authority.
    """
    match = _URI.match(uri)
    if match is None:
        raise InvalidURIError(f"{uri!r} is not an absolute URI")
    scheme_text, authority, path, query, fragment = match.groups()
    scheme = scheme_text.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidURIError(f"{scheme!r} is not a CoAP URI scheme")
    if fragment is not None:
        raise InvalidURIError("CoAP URIs cannot carry a fragment (§6.4 step 3)")
    if authority is None:
        raise InvalidURIError(f"{uri!r} has no authority (//host)")
    host, port = _split_authority(authority, scheme)
    uri_host = None if is_ip_literal(host) else host
    path = _remove_dot_segments(path)
    segments: list[str] = []
    if path not in ("", "/"):
        segments = [_percent_decode_str(s, "path segment") for s in path[1:].split("/")]
    arguments: list[str] = []
    if query:
        arguments = [_percent_decode_str(a, "query argument") for a in query.split("&")]
    return Origin(scheme, host, port), uri_host, segments, arguments


def build_uri(options: Options, remote: RemoteLike | None) -> str:
    """Compose the request URI from options and the destination (RFC 7252 §6.5).

    Proxy-Uri, when present, is the answer. Otherwise the scheme is
    Proxy-Scheme or the destination's, the host is Uri-Host or the
    destination's address, the port Uri-Port or the destination's (omitted
    when it is the scheme's default), then Uri-Path and Uri-Query,
    percent-encoded as §6.5 steps 8 and 9 say.
    Raises :class:`InvalidURIError` when neither options nor ``remote`` say
    where the request goes.
    """
    proxy_uri = options.proxy_uri
    if proxy_uri is not None:
        return proxy_uri
    scheme = options.proxy_scheme or (remote.scheme if remote is not None else "coap")
    host = options.uri_host
    if host is None:
        if remote is None:
            raise InvalidURIError("no Uri-Host and no remote: the URI has no host")
        host = remote.host
    port = options.uri_port
    if port is None:
        if remote is not None:
            port = remote.port
        else:
            port = DEFAULT_PORTS.get(scheme, 0)
    if ":" in host:
        authority = _bracket(host)
    else:
        authority = _percent_encode(host, _HOST_CHAR)
    if DEFAULT_PORTS.get(scheme) != port:
        authority = f"{authority}:{port}"
    path = "".join("/" + _encode_segment(s) for s in options.uri_path) or "/"
    query = options.uri_query
    tail = "?" + "&".join(_percent_encode(a, _QUERY_CHAR) for a in query) if query else ""
    return f"{scheme}://{authority}{path}{tail}"


#: The options a request URI sets (and replaces): Uri-Host, Uri-Port, Uri-Path,
#: Uri-Query, Proxy-Uri, Proxy-Scheme.
URI_OPTION_NUMBERS = frozenset({3, 7, 11, 15, 35, 39})


@functools.lru_cache(maxsize=1024)
def uri_options(uri: str) -> tuple[Origin, tuple[tuple[int, bytes], ...]]:
    """:func:`split_uri` as raw option items in wire order, cached per URI string.

    Requests to the same URIs are the common case; parsing and validating a
    URI costs far more than looking it up.
    """
    origin, uri_host, path, query = split_uri(uri)
    options = Options()
    if uri_host is not None:
        options.uri_host = uri_host
    if path:
        options.uri_path = path
    if query:
        options.uri_query = query
    return origin, tuple(options.raw_items)
