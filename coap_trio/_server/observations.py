"""The observations a Context serves: registry, limits, and one task each (RFC 7641).

Owns which observations exist, keyed by (remote, token) — a new registration
with the same key replaces the old one; other tokens from the same endpoint
are left alone — the limits (in total and per remote; beyond them a
registration is served without Observe), and starting each observation's
task in the Context's nursery. Ending paths: a GET with Observe=1, an RST or
a timed-out CON notification (reported by the messaging layer), a final
4.xx/5.xx notification, the resource ending it, and the Context closing.
Must not know about sockets or wire formats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import trio

from ..interfaces import Resource
from ..message import Message
from ..observable import ServerObservation
from ..protocol.observe import SharedNotification
from ..response_errors import RenderableError

__all__ = ["ServerObservations"]

logger = logging.getLogger("coap_trio.server")

_Key = tuple[Hashable, bytes]


class ServerObservations:
    """Registry of a Context's server-side observations (see the module docstring)."""

    def __init__(
        self, nursery: trio.Nursery, max_total: int = 100_000, max_per_remote: int = 1_000
    ) -> None:
        self._nursery = nursery
        self._max_total = max_total
        self._max_per_remote = max_per_remote
        self._by_key: dict[_Key, ServerObservation] = {}
        self._per_remote: dict[Hashable, int] = {}
        #: Registrations served without Observe because a limit was reached.
        self.refused = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def has_remote(self, remote: Hashable) -> bool:
        """Whether ``remote`` has an observation served now."""
        return remote in self._per_remote

    def end(self, key: _Key, reason: str) -> None:
        """End the observation registered under ``key``, if any (e.g. GET Observe=1)."""
        observation = self._by_key.get(key)
        if observation is not None:
            observation.end(reason)

    def end_remote(self, remote: Hashable, reason: str) -> int:
        """End every observation of ``remote`` (the network reported it unreachable);
        returns how many ended. A scan: ICMP errors are rare and rate-limited."""
        ended = [o for (r, _), o in self._by_key.items() if r == remote]
        for observation in ended:
            observation.end(reason)
        return len(ended)

    def _forget(
        self, key: _Key, observation: ServerObservation, release: Callable[[], None] | None
    ) -> None:
        if release is not None:
            release()
        if self._by_key.get(key) is observation:
            del self._by_key[key]
            remote = key[0]
            left = self._per_remote.get(remote, 1) - 1
            if left:
                self._per_remote[remote] = left
            else:
                self._per_remote.pop(remote, None)

    async def prepare(
        self,
        site: Resource,
        request: Message,
        key: _Key,
        send: Callable[[Message, bool], None],
        send_shared: Callable[[SharedNotification, bool, int], None] | None = None,
    ) -> ServerObservation | None:
        """Offer a registration to the resource it routes to; the accepted observation or None.

        Call before rendering the registration; then :meth:`start` it with the
        successful response, or ``end()`` it. ``send`` and ``send_shared`` are
        the observation's (see :class:`~coap_trio.observable.ServerObservation`).
        """
        self.end(key, "replaced by a new registration with the same token")
        remote = key[0]
        if len(self._by_key) >= self._max_total or (
            self._per_remote.get(remote, 0) >= self._max_per_remote
        ):
            self.refused += 1
            return None
        route = getattr(site, "route", None)
        try:
            resource, routed = route(request) if route is not None else (site, request)
        except RenderableError:  # e.g. NotFound: rendering will answer it
            return None
        add_observation = getattr(resource, "add_observation", None)
        if add_observation is None:
            return None
        observation = ServerObservation(request, site.render, send, send_shared=send_shared)
        try:
            await add_observation(routed, observation)
        except Exception:
            logger.exception("add_observation failed for %r", request)
            observation.end("add_observation failed")
            return None
        if not observation.accepted:
            observation.end("not accepted")
            return None
        return observation

    def start(
        self,
        observation: ServerObservation,
        key: _Key,
        response: Message,
        release: Callable[[], None] | None = None,
    ) -> Message:
        """Register ``observation``, number the registration ``response``, start its task.

        ``release`` runs once when the observation ends (the messaging machine
        forgets what it kept for it).
        """
        response.opt.observe = observation.sequence.next()
        remote = key[0]
        self._by_key[key] = observation
        self._per_remote[remote] = self._per_remote.get(remote, 0) + 1

        observation.when_ended(_Forget(self, key, observation, release))
        self._nursery.start_soon(observation.run)
        return response


class _Forget:
    """What runs when a served observation ends: the registry forgets it (one small
    object per observation, a third of a partial's size)."""

    __slots__ = ("key", "observation", "registry", "release")

    def __init__(
        self,
        registry: ServerObservations,
        key: _Key,
        observation: ServerObservation,
        release: Callable[[], None] | None,
    ) -> None:
        self.registry = registry
        self.key = key
        self.observation = observation
        self.release = release

    def __call__(self) -> None:
        self.registry._forget(self.key, self.observation, self.release)
