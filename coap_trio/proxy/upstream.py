"""The client half of every proxy: a request forwarded to its target and the answer mapped back.

Owns :class:`Upstream`, shared by the forward proxy, the reverse proxies
and the HTTP cross-proxy of one server: it takes a request as the server
received it (assembled: the server side of a Context does Block1 and
Block2) and an absolute target URI, and

* applies Hop-Limit (RFC 8768): the request's value (16 when absent) less
  one goes upstream; a request arriving with 1 is answered 5.08 Hop Limit
  Reached, one with 0 4.00;
* builds the upstream request: the same method and payload, the target's
  URI options, the options a proxy forwards (RFC 7252 §5.7.1: safe-to-
  forward ones, known or not, and the unsafe ones it understands; an
  unknown unsafe one is 5.02), without the options of one hop (Block1/
  Block2/Size1/Size2, Request-Tag, Observe, No-Response);
* answers GET and FETCH from its :class:`~coap_trio.proxy.cache.ResponseCache`
  when fresh (Max-Age set to what is left), validates a stale response
  with its ETag (a 2.03 makes it fresh again), and answers 2.03 to a
  client whose ETag is the current one; a 2.01/2.02/2.04 marks the target's
  stored responses not fresh;
* sends it through its client :class:`~coap_trio.context.Context` (which
  does block-wise transfers, so large bodies work both ways), optionally
  via a next proxy (``via``), and maps the outcome: the response with the
  options of one hop removed, 5.04 Gateway Timeout when none came within
  ``timeout``, 5.05 for a scheme with no transport, 5.02 Bad Gateway for
  every other failure (reset, unreachable, a malformed response);
* shares observations (RFC 7641): one upstream observation per target
  and cache key, whatever the number of downstream observers, each
  notification handed to all of them; the last observer leaving ends it
  upstream. Those run in the nursery of :meth:`Upstream.run`.

Errors are raised as :class:`~coap_trio.response_errors.RenderableError`
(the server turns them into their response); nothing a peer sends raises
anything else.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Hashable

import trio

from ..context import Context
from ..errors import CoapError, InvalidURIError, RequestTimeoutError, UnsupportedTransportError
from ..interfaces import ServerObservation
from ..message import Message
from ..numbers.codes import Code
from ..numbers.optionnumbers import OptionNumber
from ..response_errors import (
    BadGateway,
    BadRequest,
    GatewayTimeout,
    HopLimitReached,
    ObservationError,
    ProxyingNotSupported,
)
from .cache import Cached, ResponseCache, cache_key

__all__ = [
    "DEFAULT_HOP_LIMIT",
    "DEFAULT_TIMEOUT",
    "HttpForwarder",
    "Upstream",
    "UpstreamStatistics",
]

logger = logging.getLogger("coap_trio.proxy")

#: Hop-Limit of a request that arrives without one (RFC 8768 §3).
DEFAULT_HOP_LIMIT = 16
#: Seconds an upstream request may take before the proxy answers 5.04.
DEFAULT_TIMEOUT = 60.0

_HOP_LIMIT = int(OptionNumber.HOP_LIMIT)
#: Request options a proxy does not pass on as they are: the URI (the target
#: replaces it), the options of one hop's transfer, and the response-only ones.
_NOT_FORWARDED = frozenset({3, 7, 11, 15, 35, 39, 6, 16, 23, 27, 28, 60, 258, 292, 14, 8, 20})
#: Response options that belong to the upstream hop only.
_NOT_RETURNED = frozenset({3, 6, 7, 11, 15, 16, 23, 27, 28, 35, 39, 60, 292})
_SAFE = frozenset({Code.GET, Code.FETCH})
#: The schemes the client Context speaks (coaps:// raises UnsupportedTransportError).
_COAP_SCHEMES = frozenset({"coap", "coaps", "coap+tcp", "coaps+tcp", "coap+ws", "coaps+ws"})

#: An HTTP client for ``http://`` targets: ``(request, target, timeout) -> response``.
HttpForwarder = Callable[[Message, str, float], Awaitable[Message]]


class UpstreamStatistics:
    """Counters of an :class:`Upstream` (a live view, read any time)."""

    def __init__(self) -> None:
        #: Requests sent upstream (cache misses and validations included).
        self.forwarded = 0
        #: Requests answered from the cache without going upstream.
        self.from_cache = 0
        #: Requests answered 5.04 (no upstream response in time).
        self.timeouts = 0
        #: Requests answered 5.02 (the upstream exchange failed).
        self.bad_gateway = 0
        #: Requests answered 5.08 (Hop-Limit reached).
        self.hop_limit_reached = 0
        #: Upstream observations running now, and downstream observers sharing them.
        self.observations = 0
        self.observers = 0
        #: Registrations refused because ``max_observations`` were running.
        self.observations_refused = 0


class _Shared:
    """One upstream observation and the downstream observations it feeds."""

    __slots__ = ("done", "first", "key", "latest", "message", "observers", "scope")

    def __init__(self, key: Hashable, message: Message) -> None:
        self.key = key
        self.message = message
        self.observers: set[ServerObservation] = set()
        self.latest: Message | None = None
        self.first = trio.Event()
        self.done = False
        self.scope = trio.CancelScope()


class Upstream:
    """Forwards requests to their targets through ``client`` (see the module docstring).

    ``cache`` (None: no cache) is consulted for GET and FETCH. ``timeout``
    bounds each upstream exchange, block-wise transfers included.
    ``hop_limit`` is the Hop-Limit assumed for a request without one.
    ``via`` is the URI of a next proxy to send every request through (with
    Proxy-Uri) instead of to the target. ``name`` identifies this proxy in
    the diagnostic of a 5.08. ``max_observations`` bounds the shared upstream
    observations. ``http`` forwards ``http://`` and ``https://`` targets
    (see :mod:`coap_trio.proxy.http`); without it they are answered 5.05.

    Shared observations need :meth:`run` running (``await
    nursery.start(upstream.run)``); without it, observe registrations are
    served as plain requests.
    """

    def __init__(
        self,
        client: Context,
        *,
        cache: ResponseCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        hop_limit: int = DEFAULT_HOP_LIMIT,
        via: str | None = None,
        name: str = "coap_trio",
        max_observations: int = 1_000,
        http: HttpForwarder | None = None,
    ) -> None:
        if not 1 <= hop_limit <= 255:
            raise ValueError(f"hop_limit must be in 1..255, got {hop_limit}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if via is not None:
            Message(code=Code.GET).set_request_uri("coap://x/", proxy=via)  # validates it
        self.client = client
        self.cache = cache
        self.timeout = timeout
        self.hop_limit = hop_limit
        self.via = via
        self.name = name
        self.max_observations = max_observations
        self.http = http
        self.statistics = UpstreamStatistics()
        self._nursery: trio.Nursery | None = None
        self._shared: dict[Hashable, _Shared] = {}

    # -- the background task ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the shared observations' tasks until cancelled; started once this runs."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    # -- forwarding ---------------------------------------------------------------------

    def next_hop_limit(self, request: Message) -> int:
        """The Hop-Limit the forwarded request carries; raises 4.00 or 5.08 (RFC 8768)."""
        value = request.opt.hop_limit
        if value is None:
            if _HOP_LIMIT in request.opt:  # present but malformed (longer than a byte)
                raise BadRequest("malformed Hop-Limit")
            value = self.hop_limit
        if value == 0:
            raise BadRequest("Hop-Limit 0 is not allowed")
        if value <= 1:
            self.statistics.hop_limit_reached += 1
            raise HopLimitReached(self.name)
        return value - 1

    def outgoing(self, request: Message, target: str, hop_limit: int) -> Message:
        """The request to send upstream for ``request`` towards ``target``."""
        items = []
        for number, value in request.opt.raw_items:
            if number in _NOT_FORWARDED:
                continue
            if number & 2 and not OptionNumber(number).is_known():
                # RFC 7252 §5.7.1: an unsafe option the proxy does not understand.
                raise BadGateway(f"option {number} is unsafe to forward")
            items.append((number, value))
        message = Message(code=request.code, payload=request.payload)
        message.opt.raw_items = items
        try:
            message.set_request_uri(target, proxy=self.via)
        except InvalidURIError:
            raise BadRequest("malformed target URI") from None
        message.opt.hop_limit = hop_limit
        return message

    async def forward(self, request: Message, target: str) -> Message:
        """Forward ``request`` to the absolute URI ``target``; the response for downstream.

        Raises a RenderableError for the errors the module docstring lists.
        """
        hop_limit = self.next_hop_limit(request)
        scheme = target.partition(":")[0].lower()
        if scheme not in _COAP_SCHEMES:
            if scheme in ("http", "https") and self.http is not None:
                return await self._forward_http(request, target)
            raise ProxyingNotSupported(f"no proxying to {scheme}://")
        outgoing = self.outgoing(request, target, hop_limit)
        cache = self.cache
        method = request.code
        if cache is None:
            return self.downstream(await self.send(outgoing))
        if method not in _SAFE:
            response = await self.send(outgoing)
            cache.response_for_unsafe(target, response)
            return self.downstream(response)
        key = cache_key(method, target, request)
        cached = cache.lookup(key, trio.current_time())
        if cached is not None:
            if cached.fresh:
                self.statistics.from_cache += 1
                return _from_cache(request, cached)
            assert cached.etag is not None  # a stale entry is kept only to be validated
            if cached.etag not in outgoing.opt.etag:
                outgoing.opt.etag = (*outgoing.opt.etag, cached.etag)
        response = await self.send(outgoing)
        now = trio.current_time()
        if response.code == Code.VALID and cached is not None:
            refreshed = cache.revalidated(key, response, now)
            if refreshed is not None:
                return _from_cache(request, refreshed)
        cache.store(key, target, method, response, now)
        return self.downstream(response)

    async def send(self, outgoing: Message) -> Message:
        """Send ``outgoing`` through the client Context; failures as RenderableErrors."""
        self.statistics.forwarded += 1
        try:
            with trio.move_on_after(self.timeout):
                return await self.client.request(outgoing).response
        except RequestTimeoutError:
            self.statistics.timeouts += 1
            raise GatewayTimeout("no response from upstream") from None
        except (UnsupportedTransportError, ImportError):
            raise ProxyingNotSupported("no transport for this scheme") from None
        except InvalidURIError:
            raise BadRequest("malformed target URI") from None
        except CoapError as error:
            self.statistics.bad_gateway += 1
            raise BadGateway(_failure(error)) from None
        self.statistics.timeouts += 1
        raise GatewayTimeout("no response from upstream in time")

    async def _forward_http(self, request: Message, target: str) -> Message:
        assert self.http is not None
        self.statistics.forwarded += 1
        with trio.move_on_after(self.timeout):
            return await self.http(request, target, self.timeout)
        self.statistics.timeouts += 1
        raise GatewayTimeout("no response from upstream in time")

    @staticmethod
    def downstream(response: Message) -> Message:
        """``response`` as a proxy returns it: the upstream hop's options removed."""
        answer = Message(code=response.code, payload=response.payload)
        answer.opt.raw_items = [
            (number, value)
            for number, value in response.opt.raw_items
            if number not in _NOT_RETURNED
        ]
        return answer

    # -- shared observations --------------------------------------------------------------

    def current(self, request: Message, target: str) -> Message | None:
        """The latest notification of the shared observation ``request`` would join, if any."""
        shared = self._shared.get(_observe_key(request, target))
        if shared is None or shared.done or shared.latest is None:
            return None
        return shared.latest.copy()

    async def observe(self, request: Message, target: str, observation: ServerObservation) -> bool:
        """Join ``observation`` (a downstream registration of ``target``) to the shared
        upstream observation, starting it if needed; whether it was accepted.

        Not accepted (the registration is then answered as a plain request):
        :meth:`run` is not running, the Hop-Limit or the target is refused,
        ``max_observations`` are running, or the target answered without
        Observe or with an error.
        """
        nursery = self._nursery
        if nursery is None:
            return False
        if request.code not in _SAFE or target.partition(":")[0].lower() not in _COAP_SCHEMES:
            return False
        key = _observe_key(request, target)
        shared = self._shared.get(key)
        if shared is None or shared.done:
            if len(self._shared) >= self.max_observations:
                self.statistics.observations_refused += 1
                return False
            try:
                message = self.outgoing(request, target, self.next_hop_limit(request))
            except CoapError:
                return False
            shared = _Shared(key, message)
            self._shared[key] = shared
            self.statistics.observations += 1
            nursery.start_soon(self._observe_upstream, shared)
        with trio.move_on_after(self.timeout):
            await shared.first.wait()
        if shared.done or shared.latest is None:
            if not shared.observers and not shared.done:
                shared.scope.cancel()  # timed out waiting: nobody else wants it
            return False
        shared.observers.add(observation)
        self.statistics.observers += 1
        observation.accept(functools.partial(self._left, shared, observation))
        return True

    def _left(self, shared: _Shared, observation: ServerObservation) -> None:
        if observation in shared.observers:
            shared.observers.discard(observation)
            self.statistics.observers -= 1
        if not shared.observers:
            shared.scope.cancel()  # leaving ctx.observe() deregisters upstream

    async def _observe_upstream(self, shared: _Shared) -> None:
        final: Message | None = None
        try:
            with shared.scope:
                async with self.client.observe(shared.message) as notifications:
                    async for response in notifications:
                        answer = self.downstream(response)
                        shared.latest = answer
                        shared.first.set()
                        if response.opt.observe is None:
                            # Not observable, or the origin ended it: nothing more will come.
                            final = BadGateway("the observation ended upstream").to_message()
                            break
                        for observation in list(shared.observers):
                            observation.trigger(answer)
        except ObservationError as error:
            final = self.downstream(error.response)
        except RequestTimeoutError:
            final = GatewayTimeout("no response from upstream").to_message()
        except CoapError as error:
            final = BadGateway(_failure(error)).to_message()
        except Exception:  # a bug must not take the proxy's other observations down
            logger.exception("the shared observation of %r failed", shared.message)
            final = Message(code=Code.INTERNAL_SERVER_ERROR)
        finally:
            shared.done = True
            shared.first.set()
            if self._shared.get(shared.key) is shared:
                del self._shared[shared.key]
            self.statistics.observations -= 1
        if final is not None:
            for observation in list(shared.observers):
                observation.trigger(final)


def _observe_key(request: Message, target: str) -> Hashable:
    return cache_key(request.code, target, request)


def _from_cache(request: Message, cached: Cached) -> Message:
    """The answer from a cached response: 2.03 when the client has its ETag (§5.6.2)."""
    if cached.etag is not None and cached.etag in request.opt.etag:
        valid = Message(code=Code.VALID, etag=(cached.etag,))
        valid.opt.max_age = cached.max_age
        return valid
    response = cached.response
    response.opt.max_age = cached.max_age
    return response


def _failure(error: CoapError) -> str:
    """A short diagnostic for a failed upstream exchange (no internals)."""
    name = type(error).__name__.removesuffix("Error")
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()
    return f"upstream: {words}"
