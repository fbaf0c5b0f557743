"""pytest fixtures for testing CoAP applications on a :class:`~coap_trio.testing.MemoryNetwork`.

Owns the fixtures ``memory_network`` and ``make_memory_network``. pytest
loads this module in every session through coap_trio's ``pytest11`` entry
point (disable it with ``-p no:coap_trio``), so it imports only pytest at
load time: the network (and trio) is imported when a fixture is first used.
Must not know how the network works. Use the fixtures with pytest-trio's
``autojump_clock`` so delays and timeouts cost no real time::

    async def test_ping(memory_network, autojump_clock):
        server = memory_network.open_endpoint("10.0.0.2", 5683)
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .network import MemoryNetwork

__all__ = ["make_memory_network", "memory_network"]


@pytest.fixture
def memory_network() -> MemoryNetwork:
    """A fresh ``MemoryNetwork(seed=0)`` with perfect links, for one test."""
    from .network import MemoryNetwork

    return MemoryNetwork(seed=0)


@pytest.fixture
def make_memory_network() -> type[MemoryNetwork]:
    """A factory for networks taking :class:`~coap_trio.testing.MemoryNetwork`'s arguments.

    For lossy or several networks in one test::

        network = make_memory_network(seed=3, conditions=LinkConditions(loss=0.3))
    """
    from .network import MemoryNetwork

    return MemoryNetwork
