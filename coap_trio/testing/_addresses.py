"""Fake IP addresses of the in-memory network: canonical text and port checks.

Owns the one canonical spelling of a host (the :mod:`ipaddress` compressed
form, IPv4-mapped IPv6 folded to plain IPv4) that bindings, routing, link
conditions and :class:`~coap_trio.remote.DatagramRemote` objects all use, so
that equal addresses always compare equal. Must not know about endpoints,
trio or CoAP.
"""

from __future__ import annotations

import ipaddress

__all__ = ["IPV4_WILDCARD", "IPV6_WILDCARD", "canonical_host", "check_port", "is_wildcard"]

#: Binding this host receives IPv4 datagrams for the port on any address not bound specifically.
IPV4_WILDCARD = "0.0.0.0"
#: Binding this host receives any datagram for the port on any address not bound specifically.
IPV6_WILDCARD = "::"


def canonical_host(host: str) -> str:
    """The canonical text of an IP literal; ValueError for anything else (host names too).

    ``"FD00:0::0001"`` becomes ``"fd00::1"``; ``"::ffff:10.0.0.1"`` becomes
    ``"10.0.0.1"``; a zone (``"fe80::1%eth0"``) is kept as written.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address literal: {host!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def is_wildcard(canonical: str) -> bool:
    """Whether a canonical host is one of the two wildcard ("any address") hosts."""
    return canonical in (IPV4_WILDCARD, IPV6_WILDCARD)


def check_port(port: int) -> None:
    """Raise ValueError unless ``port`` is in 0..65535 (TypeError unless it is an int)."""
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port!r}")
