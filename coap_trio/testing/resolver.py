"""The fake resolver of the in-memory network: a table of host names to IP literals.

Owns :class:`HostTable`, which :meth:`MemoryNetwork.add_host
<coap_trio.testing.MemoryNetwork.add_host>` fills and :meth:`MemoryNetwork.resolve
<coap_trio.testing.MemoryNetwork.resolve>` reads. Must not know about trio,
endpoints or the real resolver: lookups are plain dictionary reads, so they
never start a thread (which would stall ``MockClock``'s autojump).
"""

from __future__ import annotations

import socket

from ._addresses import canonical_host

__all__ = ["HostTable"]


def _name_key(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"host name must be a str, not {type(name).__name__}")
    return name.rstrip(".").lower()


class HostTable:
    """Host names (case-insensitive, trailing dot ignored) and their addresses."""

    def __init__(self) -> None:
        self._hosts: dict[str, list[str]] = {}

    def add(self, name: str, addresses: tuple[str, ...]) -> None:
        """Map ``name`` to these IP literals, preferred first, replacing earlier ones."""
        key = _name_key(name)
        if not key:
            raise ValueError("the host name is empty")
        try:
            canonical_host(name)
        except ValueError:
            pass
        else:
            raise ValueError(f"IP literals resolve to themselves, not a host name: {name!r}")
        if not addresses:
            raise ValueError(f"no addresses given for {name!r}")
        self._hosts[key] = list(dict.fromkeys(canonical_host(a) for a in addresses))

    def lookup(self, host: str) -> list[str]:
        """An IP literal's canonical form, or a name's addresses (``socket.gaierror`` if none)."""
        try:
            return [canonical_host(host)]
        except ValueError:
            pass
        addresses = self._hosts.get(_name_key(host))
        if addresses is None:
            raise socket.gaierror(
                socket.EAI_NONAME, f"unknown host {host!r} (see MemoryNetwork.add_host)"
            )
        return list(addresses)
