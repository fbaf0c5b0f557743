"""OSCORE on the client side of a Context (RFC 8613 §8.1, §8.4).

Owns :class:`OscoreClientCore`, the client core of a Context opened with
OSCORE credentials: each exchange whose request URI matches a credentials
entry is protected right before it goes to its endpoint runner (after
block-wise slicing: every block is its own OSCORE request, "Inner
block-wise", §4.1.3.4.1), its binding is kept by the exchange's owner, and
every response and notification is verified in the receive path before the
rest of the client (block-wise, observations, the waiting Request) sees it.
A 4.01 with an Echo value from a server that lost its replay window is
answered by sending the request once more, by itself (RFC 9175 §2.4).

A Context without credentials uses the plain :class:`ClientCore`: nothing
here costs it anything. Must not know about resources, the server side or
the wire format.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import cast

import trio

from .._runner import EndpointRunner
from ..errors import OscoreFailure, OscoreVerificationError
from ..message import Message
from ..protocol.config import BlockwiseConfig
from ..protocol.exchanges import ClientExchange
from ..protocol.oscore.binding import ClientBinding
from ..protocol.oscore.context import SecurityContext
from ..protocol.oscore.engine import OscoreEngine, ResponseRejected, ResponseRepeat
from .core import ClientCore
from .request import ExchangeOwner
from .routing import RequestRouter

__all__ = ["OscoreClientCore", "SecurityContextLookup"]

#: Finds the security context for a request URI (None: the request goes unprotected).
SecurityContextLookup = Callable[[str], "SecurityContext | None"]

#: Request URIs whose security context is remembered (the cache is cleared when full).
_LOOKUP_CACHE_SIZE = 1024


class OscoreClientCore(ClientCore):
    """A :class:`ClientCore` that protects the requests ``lookup`` finds a context for."""

    def __init__(
        self,
        nursery: trio.Nursery,
        router: RequestRouter,
        blockwise: BlockwiseConfig,
        engine: OscoreEngine,
        lookup: SecurityContextLookup,
    ) -> None:
        super().__init__(nursery, router, blockwise)
        #: Protects requests and verifies responses (shared with the server side).
        self.engine = engine
        self._lookup = lookup
        self._contexts: dict[str, SecurityContext | None] = {}
        #: Responses discarded because they did not verify (notifications
        #: included); the engine counts them by kind.
        self.rejected = 0

    def context_for(self, message: Message) -> SecurityContext | None:
        """The security context protecting ``message``, by its request URI (cached)."""
        if message.remote is None:
            return None
        uri = message.get_request_uri()
        contexts = self._contexts
        try:
            return contexts[uri]
        except KeyError:
            pass
        if len(contexts) >= _LOOKUP_CACHE_SIZE:
            contexts.clear()
        context = contexts[uri] = self._lookup(uri)
        return context

    def send(self, owner: ExchangeOwner, runner: EndpointRunner, remote: Hashable) -> None:
        """Send ``owner.wire``, protected when its URI has a security context.

        Raises what protecting raises (:class:`~coap_trio.errors.OscoreProtectError`).
        """
        context = self.context_for(owner.wire)
        if context is None:
            owner.oscore = None
            super().send(owner, runner, remote)
            return
        protected, binding = self.engine.protect_request(owner.wire, context)
        self._send_protected(owner, runner, remote, protected, binding)

    @staticmethod
    def _send_protected(
        owner: ExchangeOwner,
        runner: EndpointRunner,
        remote: Hashable,
        protected: Message,
        binding: ClientBinding,
    ) -> None:
        owner.oscore = binding
        exchange = runner.send_request(protected, remote)
        exchange.owner = owner
        owner.exchange = (runner, exchange)

    # -- the runner's ClientSink ---------------------------------------------------------

    def response_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """Verify the response of a protected request, then hand it on (see the module)."""
        owner = cast("ExchangeOwner | None", exchange.owner)
        binding = owner.oscore if owner is not None else None
        if owner is None or binding is None:
            super().response_received(runner, exchange, response)
            return
        result = self.engine.verify_response(response, binding)
        if isinstance(result, ResponseRepeat):
            # The server asked for freshness (RFC 9175 §2.4): the request again, once.
            exchange.owner = None
            if self.closed:
                return
            self._send_protected(owner, runner, exchange.remote, result.request, result.binding)
            return
        if isinstance(result, ResponseRejected):
            self.rejected += 1
            if exchange.done:
                exchange.owner = None
            else:
                runner.abandon(exchange)  # nothing more is accepted for it
            error = _rejection(result)
            owner._fail(error)
            self.inflight.discard(owner)
            if owner.observation is not None:
                owner.observation._fail(error)
            return
        super().response_received(runner, exchange, result.response)

    def notification_received(
        self, runner: EndpointRunner, exchange: ClientExchange, response: Message
    ) -> None:
        """Verify a notification; one that does not verify is discarded (§8.4 step 8)."""
        owner = cast("ExchangeOwner | None", exchange.owner)
        binding = owner.oscore if owner is not None else None
        if owner is None or binding is None:
            super().notification_received(runner, exchange, response)
            return
        result = self.engine.verify_response(response, binding)
        if isinstance(result, ResponseRejected | ResponseRepeat):
            self.rejected += 1
            return
        super().notification_received(runner, exchange, result.response)


def _rejection(result: ResponseRejected) -> OscoreVerificationError:
    """The error a request ends with when its response did not verify.

    An unprotected error response (the server's OSCORE error, §8.2, sent in
    the clear) is named with its code and diagnostic.
    """
    error = result.error
    if error.failure is OscoreFailure.UNPROTECTED_RESPONSE:
        response = result.response
        text = response.payload.decode("utf-8", "replace")
        detail = f"{response.code.dotted} {response.code.name_printable}"
        return OscoreVerificationError(error.failure, f"{detail}: {text}" if text else detail)
    return error
