"""The contracts between the layers (seeded from aiocoap.interfaces).

Owns the abstract shapes only, no implementation: what a request provider,
a request, a resource and an observable resource must offer. Code written
against aiocoap's interfaces maps one to one:

=======================  =========================================
aiocoap.interfaces       coap_trio.interfaces
=======================  =========================================
RequestProvider          :class:`RequestProvider` (``Context``)
Request                  :class:`Request` (``.response`` awaitable)
Resource                 :class:`Resource` (``render``,
                         ``needs_blockwise_assembly``)
ObservableResource       :class:`ObservableResource`
TransportEndpoint        :class:`coap_trio.transports.base.DatagramEndpoint`
=======================  =========================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from .message import Message

__all__ = [
    "ObservableResource",
    "Request",
    "RequestProvider",
    "Resource",
    "ServerObservation",
]


@runtime_checkable
class Request(Protocol):
    """One request in flight; its response is awaitable from creation."""

    @property
    def request(self) -> Message:
        """The request message as given."""
        ...

    @property
    def response(self) -> Awaitable[Message]:
        """Await to get the response message, or a :class:`~coap_trio.errors.RequestError`."""
        ...

    def cancel(self) -> None:
        """Abandon the exchange (no more retransmissions)."""
        ...


@runtime_checkable
class RequestProvider(Protocol):
    """Something that sends requests: ``request(message) -> Request``."""

    def request(self, message: Message) -> Request:
        """Start sending ``message``; returns at once."""
        ...


@runtime_checkable
class Resource(Protocol):
    """A server-side resource.

    ``render`` receives the request (with ``remote`` set) and returns the
    response; the response sets code, payload and options only, never token,
    MID, type or remote (the messaging layer does).
    """

    async def render(self, request: Message) -> Message:
        """Produce the response to ``request``."""
        ...

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        """Whether block-wise transfers are assembled before ``render`` (default True)."""
        ...


class ServerObservation(Protocol):
    """The server side of one observation, handed to ``add_observation``."""

    def accept(self, cancellation_callback: Callable[[], None]) -> None:
        """Accept the registration; the callback runs when the observation ends."""
        ...

    def trigger(self, response: Message | None = None) -> None:
        """The state changed: send a notification (rendered again unless given)."""
        ...


@runtime_checkable
class ObservableResource(Resource, Protocol):
    """A resource that supports observation (RFC 7641)."""

    async def add_observation(self, request: Message, observation: ServerObservation) -> None:
        """Called for a GET with Observe=0; accept with ``observation.accept(...)``."""
        ...
