"""Which destinations a forward proxy serves: an allow-list of origin patterns.

Owns :class:`AllowList`. An open proxy (one that forwards anywhere) lets
anyone send traffic from the proxy's address, larger than what they sent
(an amplifier), so a proxy forwards only to the destinations its allow-list
names; an empty list refuses everything. Sans-I/O: patterns are matched
against the target URI's text, never resolved.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs

from ..errors import InvalidURIError
from ..numbers.constants import DEFAULT_PORTS
from ..uri import split_uri

__all__ = ["AllowList", "OriginPattern", "target_origin"]

#: Default ports of the schemes a proxy may reach besides CoAP's.
_HTTP_PORTS = {"http": 80, "https": 443}


def target_origin(uri: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an absolute URI: host lower-case and without
    brackets, port the scheme's default when absent. Raises
    :class:`~coap_trio.errors.InvalidURIError`."""
    scheme = uri.partition(":")[0].lower()
    if scheme in DEFAULT_PORTS:
        origin = split_uri(uri)[0]
        return origin.scheme, origin.host, origin.port
    if scheme in _HTTP_PORTS:
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as error:
            raise InvalidURIError(f"{uri!r}: {error}") from None
        if not parts.hostname:
            raise InvalidURIError(f"{uri!r} has no host")
        return scheme, parts.hostname.lower(), _HTTP_PORTS[scheme] if port is None else port
    raise InvalidURIError(f"{scheme!r} is not a scheme this proxy knows")


@attrs.frozen
class OriginPattern:
    """One allowed destination: scheme, host and port patterns (``*`` and ``?`` globs)."""

    scheme: str
    host: str
    port: str

    @classmethod
    def parse(cls, text: str) -> OriginPattern:
        """``[SCHEME://]HOST[:PORT]``, each part a glob; ``*`` alone allows everything.

        IPv6 addresses go in brackets (``coap://[::1]:5683``). A missing
        scheme or port means any. Raises ValueError for a pattern with a path
        or an empty host.
        """
        text = text.strip()
        scheme, separator, rest = text.partition("://")
        if not separator:
            scheme, rest = "*", text
        rest = rest.rstrip("/")
        if "/" in rest:
            raise ValueError(f"allow pattern {text!r}: only SCHEME://HOST:PORT, no path")
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ValueError(f"allow pattern {text!r}: expected [IPV6]:PORT")
            port = tail[1:] if tail else "*"
        elif rest.count(":") == 1:
            host, _, port = rest.partition(":")
        else:
            host, port = rest, "*"
        if not host or not port or not scheme:
            raise ValueError(f"allow pattern {text!r}: empty scheme, host or port")
        if port != "*" and not port.isdigit() and not any(c in port for c in "*?["):
            raise ValueError(f"allow pattern {text!r}: port {port!r} is not a number")
        return cls(scheme.lower(), host.lower(), port)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        """Whether the destination ``scheme://host:port`` is allowed by this pattern."""
        return (
            fnmatch.fnmatchcase(scheme, self.scheme)
            and fnmatch.fnmatchcase(host, self.host)
            and fnmatch.fnmatchcase(str(port), self.port)
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class AllowList:
    """The destinations a proxy forwards to (see the module docstring).

    ``AllowList(["coap://[::1]:*", "coap+tcp://*.example.com"])``; ``AllowList(["*"])``
    allows every destination (an open proxy); ``AllowList()`` none.
    """

    def __init__(self, patterns: Iterable[str | OriginPattern] = ()) -> None:
        self.patterns: tuple[OriginPattern, ...] = tuple(
            p if isinstance(p, OriginPattern) else OriginPattern.parse(p) for p in patterns
        )

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"AllowList({[str(p) for p in self.patterns]!r})"

    def allows(self, scheme: str, host: str, port: int) -> bool:
        """Whether any pattern allows ``scheme://host:port`` (host without brackets)."""
        host = host.lower()
        return any(p.matches(scheme, host, port) for p in self.patterns)

    def allows_uri(self, uri: str) -> bool:
        """Whether the destination of the absolute ``uri`` is allowed (False if malformed)."""
        try:
            return self.allows(*target_origin(uri))
        except InvalidURIError:
            return False
