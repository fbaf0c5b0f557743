"""Test CoAP applications without sockets: an in-memory, lossy, reproducible network.

Owns the public testing API, re-exported here: :class:`MemoryNetwork` (a
:class:`~coap_trio.transports.base.DatagramNetwork` to pass wherever a real
UDP network would go), :class:`MemoryEndpoint`, :class:`LinkConditions`,
:class:`CapturedDatagram`, :data:`Fate` and :class:`NetworkStatistics`. The
pytest fixtures ``memory_network`` and ``make_memory_network`` come from
:mod:`coap_trio.testing.pytest_plugin`, which pytest loads automatically.

The names are imported on first use, so that pytest can load the plugin
(which lives in this package) without importing trio into every test session.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .capture import CapturedDatagram, Fate, NetworkStatistics
    from .conditions import LinkConditions
    from .network import MemoryEndpoint, MemoryGroupEndpoint, MemoryNetwork

__all__ = [
    "CapturedDatagram",
    "Fate",
    "LinkConditions",
    "MemoryEndpoint",
    "MemoryGroupEndpoint",
    "MemoryNetwork",
    "NetworkStatistics",
]

_HOMES = {
    "CapturedDatagram": ".capture",
    "Fate": ".capture",
    "LinkConditions": ".conditions",
    "MemoryEndpoint": ".network",
    "MemoryGroupEndpoint": ".network",
    "MemoryNetwork": ".network",
    "NetworkStatistics": ".capture",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
