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

It also runs EDHOC (RFC 9528) as the initiator (:meth:`OscoreClientCore.edhoc`):
message_1 and message_2 through ``/.well-known/edhoc``, then message_3 in
its own exchange or in front of the first request the new context protects
(the EDHOC + OSCORE request, RFC 9668); the context then serves the URIs of
that origin. A request whose credentials entry is ``edhoc-oscore`` waits for
that exchange, started by the first such request to its origin, and is
then protected with the new context (or fails with the exchange's error).

A Context without credentials uses the plain :class:`ClientCore`: nothing
here costs it anything. Must not know about resources, the server side or
the wire format.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, cast

import trio

from .._runner import EndpointRunner
from ..errors import CoapError, EdhocError, OscoreFailure, OscoreVerificationError
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..protocol.config import BlockwiseConfig
from ..protocol.exchanges import ClientExchange
from ..protocol.oscore.binding import ClientBinding
from ..protocol.oscore.context import SecurityContext
from ..protocol.oscore.engine import OscoreEngine, ResponseRejected, ResponseRepeat
from ..uri import split_uri
from .core import ClientCore
from .request import ExchangeOwner
from .routing import RequestRouter

if TYPE_CHECKING:
    from ..oscore_credentials import EdhocCredential
    from ..protocol.oscore.edhoc import EdhocCredentials

__all__ = ["OscoreClientCore", "SecurityContextLookup"]

#: Finds the security context for a request URI, or the ``edhoc-oscore`` entry
#: to establish one with (None: the request goes unprotected).
SecurityContextLookup = Callable[[str], "SecurityContext | EdhocCredential | None"]
#: A request held until EDHOC with its origin completes: its owner, runner and remote.
_Held = tuple[ExchangeOwner, EndpointRunner, Hashable]

#: Requests (remote and options) whose security context is remembered (the cache
#: is cleared when full).
_LOOKUP_CACHE_SIZE = 1024
_EDHOC = int(OptionNumber.EDHOC)
_WELL_KNOWN_EDHOC = (".well-known", "edhoc")
#: Our C_I candidates: the one-byte CBOR integers (RFC 9528 §3.3.2).
_CONNECTION_IDS = [bytes([n]) for n in range(24)] + [bytes([0x20 + n]) for n in range(24)]


class OscoreClientCore(ClientCore):
    """A :class:`ClientCore` that protects the requests ``lookup`` finds a context for."""

    def __init__(
        self,
        nursery: trio.Nursery,
        router: RequestRouter,
        blockwise: BlockwiseConfig,
        engine: OscoreEngine,
        lookup: SecurityContextLookup,
        edhoc: EdhocCredentials | None = None,
    ) -> None:
        super().__init__(nursery, router, blockwise)
        #: Protects requests and verifies responses (shared with the server side).
        self.engine = engine
        #: Our EDHOC credentials, for :meth:`edhoc` (None: it needs them given).
        self.edhoc_credentials = edhoc
        self._lookup = lookup
        self._contexts: dict[Hashable, SecurityContext | EdhocCredential | None] = {}
        #: Requests waiting for the EDHOC exchange with their origin, by origin.
        self._held: dict[str, list[_Held]] = {}
        #: Contexts established with EDHOC, by URI pattern (they win over the map's).
        self._established: dict[str, SecurityContext] = {}
        #: message_3 of a context whose first request is still to go (RFC 9668).
        self._message_3: dict[SecurityContext, bytes] = {}
        #: Responses discarded because they did not verify (notifications
        #: included); the engine counts them by kind.
        self.rejected = 0

    def context_for(self, message: Message) -> SecurityContext | EdhocCredential | None:
        """The security context protecting ``message``, by its request URI (cached), or
        the ``edhoc-oscore`` entry to establish it with.

        The cache is keyed by the remote and the options as they are (they
        hold the whole URI, with Uri-Path, Uri-Query, Uri-Host...): a hit
        costs no URI to build.
        """
        remote = message.remote
        if remote is None:
            return None
        key = (remote, tuple(message.opt.raw_items))
        contexts = self._contexts
        try:
            return contexts[key]
        except KeyError:
            pass
        except TypeError:  # a remote that cannot be a key: looked up each time
            return self._context_of(message)
        if len(contexts) >= _LOOKUP_CACHE_SIZE:
            contexts.clear()
        context = contexts[key] = self._context_of(message)
        return context

    def _context_of(self, message: Message) -> SecurityContext | EdhocCredential | None:
        if message.opt.uri_path == _WELL_KNOWN_EDHOC:
            return None
        return self._find(message.get_request_uri())

    def _find(self, uri: str) -> SecurityContext | EdhocCredential | None:
        matching = [pattern for pattern in self._established if _match(pattern, uri)]
        if matching:
            return self._established[max(matching, key=len)]
        return self._lookup(uri)

    def use_context(self, pattern: str, context: SecurityContext) -> None:
        """Protect requests to URIs matching ``pattern`` (``*``: any text) with ``context``."""
        self._established[pattern] = context
        self._contexts.clear()

    def send(self, owner: ExchangeOwner, runner: EndpointRunner, remote: Hashable) -> None:
        """Send ``owner.wire``, protected when its URI has a security context.

        Raises what protecting raises (:class:`~coap_trio.errors.OscoreProtectError`).
        """
        context = self.context_for(owner.wire)
        if context is None:
            owner.oscore = None
            super().send(owner, runner, remote)
            return
        if not isinstance(context, SecurityContext):  # an edhoc-oscore entry: EDHOC first
            self._hold(owner, runner, remote, context)
            return
        protected, binding = self.engine.protect_request(owner.wire, context)
        if self._message_3:
            message_3 = self._message_3.pop(context, None)
            if message_3 is not None:  # the EDHOC + OSCORE request (RFC 9668 §3.2)
                protected.opt.add(_EDHOC, b"")
                protected.payload = message_3 + protected.payload
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

    # -- EDHOC (RFC 9528) ------------------------------------------------------------

    def _hold(
        self, owner: ExchangeOwner, runner: EndpointRunner, remote: Hashable, entry: EdhocCredential
    ) -> None:
        """Keep ``owner`` until EDHOC with its origin completes; the first one held
        for an origin starts the exchange. Raises :class:`~coap_trio.errors.CredentialsError`
        for an entry that cannot start EDHOC."""
        credentials = entry.initiator()
        origin = split_uri(owner.wire.get_request_uri())[0].uri_base
        held = self._held.get(origin)
        if held is None:
            if self.closed:
                raise EdhocError("the context was closed")
            held = self._held[origin] = []
            self.spawn(self._establish_then_send, origin, credentials)
        held.append((owner, runner, remote))

    async def _establish_then_send(self, origin: str, credentials: EdhocCredentials) -> None:
        failure: CoapError | None = None
        try:
            await self.edhoc(origin, credentials)
        except CoapError as exchange_error:
            failure = exchange_error
        for owner, runner, remote in self._held.pop(origin, ()):
            if getattr(owner, "done", False):
                continue
            error = failure
            if error is None and not isinstance(self.context_for(owner.wire), SecurityContext):
                error = EdhocError(f"no security context for {origin} after EDHOC")
            if error is None:
                try:
                    self.send(owner, runner, remote)
                    continue
                except CoapError as raised:
                    error = raised
            self.inflight.discard(owner)
            owner._fail(error)
            if owner.observation is not None:
                owner.observation._fail(error)

    async def edhoc(self, origin: str, credentials: EdhocCredentials) -> SecurityContext:
        """Establish a security context with the server at ``origin`` (``scheme://host:port``).

        Requests to ``origin/*`` use it from then on. Raises
        :class:`~coap_trio.errors.EdhocError` (and what requests raise).
        """
        from ..protocol.oscore.edhoc import EdhocInitiator

        in_use = {context.recipient_id for context in self.engine.contexts}
        in_use.update(context.recipient_id for context in self._established.values())
        free = [c for c in _CONNECTION_IDS if c not in in_use] or _CONNECTION_IDS
        initiator = EdhocInitiator(credentials, random.choice(free))
        target = f"{origin}/.well-known/edhoc"
        message_2 = await self._edhoc_exchange(target, initiator.message_1())
        initiator.take_message_2(message_2)
        if credentials.combined:
            message_3 = initiator.message_3()
            assert initiator.context is not None
            context = initiator.context
            self._message_3[context] = message_3
        else:
            message_4 = await self._edhoc_exchange(target, initiator.message_3_request())
            initiator.take_message_4(message_4)
            assert initiator.context is not None
            context = initiator.context
        old = self._established.get(f"{origin}/*")
        if old is not None:
            self._message_3.pop(old, None)
        self.use_context(f"{origin}/*", context)
        return context

    async def _edhoc_exchange(self, target: str, payload: bytes) -> bytes:
        message = Message(code=Code.POST, uri=target, payload=payload)
        response = await self.request(message).response
        if response.code != Code.CHANGED:
            text = response.payload.decode("utf-8", "replace")
            raise EdhocError(f"{target} answered {response.code.dotted}: {text}".rstrip(": "))
        return response.payload

    def _forget(self, context: SecurityContext) -> None:
        """Stop using a context established with EDHOC that the server answered in the
        clear (it refused our message_3, or lost the context): the next request to
        that origin runs EDHOC again. Contexts of the credentials map stay."""
        patterns = [p for p, known in self._established.items() if known is context]
        if not patterns:
            return
        for pattern in patterns:
            del self._established[pattern]
        self._message_3.pop(context, None)
        self._contexts.clear()

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
            if result.error.failure is OscoreFailure.UNPROTECTED_RESPONSE:
                self._forget(binding.context)
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


def _match(pattern: str, uri: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace("\\*", ".*"), uri) is not None
