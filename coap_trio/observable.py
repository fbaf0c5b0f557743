"""The server side of one RFC 7641 observation, and the convenience ``ObservableResource``.

Owns :class:`ServerObservation` (what a resource's ``add_observation``
receives: it accepts the registration, is triggered when the state changes,
and its :meth:`~ServerObservation.run` task renders and hands out the
notifications) and :class:`ObservableResource` (a
:class:`~coap_trio.resource.Resource` keeping its accepted observations
and triggering them all on :meth:`~ObservableResource.updated_state`, like
aiocoap's).

Must not know about sockets, tokens, message IDs or the messaging machine:
an observation talks to the outside through two callables given to it,
``render(request) -> response`` (the resource, usually through the site)
and ``send(notification, confirmable)`` (the Context, which sets token,
type, MID and remote). The Context's registry of served observations starts
:meth:`ServerObservation.run` in the Context's nursery and calls
:meth:`ServerObservation.end` when the client resets a notification, a CON
notification times out, the client deregisters, the network reports the
client unreachable or its connection is lost, a new registration takes its
token, or the Context closes; a resource that goes away ends its observations with a final
notification instead (:meth:`ObservableResource.end_observations`).

Notifications follow RFC 7641: 2.xx results carry a fresh Observe value
(§4.4); a 4.xx/5.xx result is the final notification, sent without Observe
and confirmable, and ends the observation (§4.2, §3.2); at least one
notification every ``con_interval`` seconds is confirmable (§4.5). State
changes that arrive while a notification is being produced collapse into
one further notification carrying the latest state (§4.5.2 lets a server
skip intermediate states), so nothing queues without bound.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import trio

from . import interfaces
from .errors import LocalProtocolError
from .message import Message
from .numbers.codes import Code
from .protocol.observe import ObserveSequence, SharedNotification
from .remote import DatagramRemote
from .resource import Resource
from .response_errors import RenderableError

__all__ = ["DEFAULT_CON_INTERVAL", "ObservableResource", "ServerObservation"]

logger = logging.getLogger("coap_trio.observable")

_OBSERVE = 6  # RFC 7641
#: Notifications a shared render sends in a row before other tasks may run.
_FAN_OUT_STRETCH = 128
#: Distinct registration keys an ObservableResource interns (see ``_share_key``).
_MAX_SHARE_KEYS = 4096

#: Seconds between confirmable notifications by default (RFC 7641 §4.5: "at least every 24 hours").
DEFAULT_CON_INTERVAL: float = 24 * 3600.0


class ServerObservation:
    """The server side of one observation (an :class:`interfaces.ServerObservation`).

    ``request`` is the registration (a GET or FETCH with Observe=0); every
    notification renders it again with ``render`` unless :meth:`trigger` is
    given a ready response. ``send(notification, confirmable)`` must not
    block; it receives a message with code, options (Observe included) and
    payload set. The registration response itself is the Context's job: it
    takes :attr:`sequence` ``.next()`` first, so notifications continue the
    sequence from there.

    Lifecycle: the resource calls :meth:`accept` (from its
    ``add_observation``), the Context starts :meth:`run`, the resource calls
    :meth:`trigger` on every change, and the observation ends with a final
    (error) notification or :meth:`end`. Either way :attr:`ended` becomes
    True, the cancellation callback runs exactly once and :meth:`run`
    returns; later triggers are ignored.

    While idle it is its :meth:`run` task parked until the next trigger
    (``trio.lowlevel.wait_task_rescheduled``), with no event or cancel scope
    of its own, so tens of thousands are cheap.

    ``send_shared(shared, confirmable, observe)``, when given, sends a
    :class:`~coap_trio.protocol.observe.SharedNotification` (one render for
    several observations, see :meth:`ObservableResource.updated_state`) with
    this observation's Observe value, as ``send`` would send a copy of
    ``shared.message`` carrying it.
    """

    __slots__ = (
        "_callback",
        "_con_interval",
        "_followers",
        "_group",
        "_last_con",
        "_on_end",
        "_pending",
        "_pending_response",
        "_render",
        "_scope",
        "_send",
        "_send_shared",
        "_waiter",
        "accepted",
        "ended",
        "reason",
        "request",
        "sequence",
        "share_key",
    )

    #: The registration request, rendered again for each notification.
    request: Message
    #: Whether :meth:`accept` was called.
    accepted: bool
    #: Whether the observation is over (final notification sent or :meth:`end` called).
    ended: bool
    #: Why it ended ("" while running, or when no reason was given).
    reason: str
    #: The Observe values: the registration response takes the first, notifications the rest.
    sequence: ObserveSequence
    #: What decides whether another observation's render can be this one's
    #: (None: it cannot); set by :class:`ObservableResource`.
    share_key: object

    def __init__(
        self,
        request: Message,
        render: Callable[[Message], Awaitable[Message]],
        send: Callable[[Message, bool], None],
        *,
        con_interval: float = DEFAULT_CON_INTERVAL,
        send_shared: Callable[[SharedNotification, bool, int], None] | None = None,
    ) -> None:
        if not con_interval > 0:
            raise ValueError(f"con_interval must be positive, got {con_interval!r}")
        self.request = request
        self._render = render
        self._send = send
        self._send_shared = send_shared
        self.share_key = None
        # While a render for others too is due: the observations it goes to.
        self._followers: list[ServerObservation] | None = None
        # The followers list of the shared render this one waits for (None: none).
        self._group: list[ServerObservation] | None = None
        self._con_interval = con_interval
        self.accepted = False
        self.ended = False
        self.reason = ""
        self.sequence = ObserveSequence()
        self._callback: Callable[[], None] | None = None
        self._on_end: Callable[[], None] | None = None
        # A state change not yet notified, and its ready response (None: render).
        self._pending = False
        self._pending_response: Message | None = None
        # The task of run() while it is parked waiting for a trigger, and the
        # cancel scope around a render in progress. Neither exists while idle
        # or rendering respectively: 10,000 idle observations must stay cheap.
        self._waiter: trio.lowlevel.Task | None = None
        self._scope: trio.CancelScope | None = None
        # trio.current_time() of the last CON notification; -inf until run() starts.
        self._last_con = -math.inf

    def __repr__(self) -> str:
        state = "ended" if self.ended else "accepted" if self.accepted else "new"
        return f"<ServerObservation {state} of {self.request!r}>"

    # -- the resource's side -------------------------------------------------

    def accept(self, cancellation_callback: Callable[[], None]) -> None:
        """Accept the registration; ``cancellation_callback`` runs once when the observation ends.

        May be called once (:class:`~coap_trio.errors.LocalProtocolError`
        otherwise). Accepting an observation that already ended runs the
        callback at once.
        """
        if self.accepted:
            raise LocalProtocolError("observation already accepted")
        self.accepted = True
        if self.ended:
            _run_callback(cancellation_callback, self)
        else:
            self._callback = cancellation_callback

    def set_con_interval(self, seconds: float) -> None:
        """Make a notification confirmable whenever ``seconds`` passed since the last CON one.

        ``0`` makes every notification confirmable (what the ETSI plugtest's
        ``/obs`` asks for); the default is :data:`DEFAULT_CON_INTERVAL`.
        """
        if not seconds >= 0:
            raise ValueError(f"con_interval must be >= 0, got {seconds!r}")
        self._con_interval = seconds

    def trigger(self, response: Message | None = None) -> None:
        """The state changed: send a notification (never blocks; ignored once ended).

        Without ``response`` the registration request is rendered again;
        with one, a copy of it is sent instead (so one message may be given
        to many observations). Triggers arriving before the previous
        notification went out collapse into one; the latest one wins, except
        that nothing replaces a pending final (4.xx/5.xx) notification.
        """
        if self.ended:
            return
        pending = self._pending_response
        if self._pending and pending is not None and pending.code.is_error():
            return  # a final notification is on its way: nothing may replace it
        self._pending = True
        self._pending_response = response
        self._group = None  # it renders by itself now: no older shared render is its
        self._wake()

    def _idle(self) -> bool:
        """Parked, with no notification due: a render of another one may serve it."""
        return self._waiter is not None and not self._pending

    def _trigger_group(self, followers: list[ServerObservation]) -> None:
        """:meth:`trigger` without a response, the render to serve ``followers`` too
        (each of them still idle and still of this group when it is done)."""
        self._followers = followers
        for follower in followers:
            follower._group = followers  # (a later group, or a trigger, takes it over)
        self.trigger()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def _abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    # -- the Context's side --------------------------------------------------

    def end(self, reason: str = "") -> None:
        """End the observation from outside; :meth:`run` returns promptly.

        Sends nothing. The cancellation callback runs (once, here, unless it
        already ran); calling it again is a no-op, as are later triggers.
        """
        if self.ended:
            return
        self.ended = True
        self.reason = reason
        self._pending = False
        self._pending_response = None
        self._followers = None
        self._group = None
        scope = self._scope
        if scope is not None:
            scope.cancel()
        self._wake()
        self._run_end_callbacks()

    def when_ended(self, callback: Callable[[], None]) -> None:
        """For the server's registry: ``callback`` runs once when the observation ends
        (after the resource's cancellation callback). One such callback at most."""
        if self.ended:
            _run_callback(callback, self)
        else:
            self._on_end = callback

    def _run_end_callbacks(self) -> None:
        callback, self._callback = self._callback, None
        on_end, self._on_end = self._on_end, None
        if callback is not None:
            _run_callback(callback, self)
        if on_end is not None:
            _run_callback(on_end, self)

    async def run(self) -> None:
        """The observation's task: wait for triggers and send the notifications.

        Returns when the observation ends: after a final notification (a
        4.xx/5.xx result of ``render`` or a ready error response; a
        :class:`RenderableError` raised by ``render`` gives its response,
        any other exception 5.00), or promptly after :meth:`end`. If the
        task is cancelled from outside, the observation is ended too.
        """
        if self.ended:
            return
        # One frame on purpose (no helper coroutine): an idle observation costs
        # its task, this frame and nothing else.
        try:
            self._last_con = trio.current_time()
            while not self.ended:
                while not self._pending:
                    self._waiter = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._abort)
                    if self.ended:
                        return
                ready = self._pending_response
                followers = self._followers
                self._pending = False
                self._pending_response = None
                self._followers = None
                if ready is None:
                    with trio.CancelScope() as scope:  # end() cancels a render in progress
                        self._scope = scope
                        response = await self._render_request()
                    self._scope = None
                    if scope.cancelled_caught:
                        return
                else:
                    response = ready.copy()
                    await trio.lowlevel.checkpoint()
                if self.ended:  # end() called from inside render
                    return
                if followers is None:
                    self._notify(response)
                else:
                    await _fan_out(response, self, followers)
        finally:
            self._scope = None
            self._waiter = None
            if not self.ended:
                self.end("task cancelled")

    async def _render_request(self) -> Message:
        """Render the original request; errors become their (final) response."""
        try:
            response = await self._render(self.request)
            if not isinstance(response, Message):
                raise TypeError(f"render returned {type(response).__name__}, not a Message")
            return response
        except RenderableError as error:
            return error.to_message()
        except Exception:
            logger.exception("rendering a notification failed for %r", self.request)
            return Message(code=Code.INTERNAL_SERVER_ERROR)

    def _notify_shared(self, shared: SharedNotification) -> None:
        """Send the successful ``shared.message`` as this observation's next notification."""
        send = self._send_shared
        if send is None:
            self._notify(shared.message.copy())
            return
        observe = self.sequence.next()
        now = trio.current_time()
        confirmable = now - self._last_con >= self._con_interval
        if confirmable:
            self._last_con = now
        send(shared, confirmable, observe)

    def _notify(self, response: Message) -> None:
        """Send ``response`` as the next notification, or as the final one."""
        code = response.code
        if code.is_successful():
            response.opt.observe = self.sequence.next()
            now = trio.current_time()
            confirmable = now - self._last_con >= self._con_interval
            if confirmable:
                self._last_con = now
            self._send(response, confirmable)
            return
        if not code.is_error():
            logger.error("notification with non-response code %s for %r", code, self.request)
            response = Message(code=Code.INTERNAL_SERVER_ERROR)
        response.opt.observe = None
        # Mark it ended before sending: send() may call end() itself.
        self.ended = True
        self.reason = f"final notification {response.code.dotted}"
        self._send(response, True)
        self._run_end_callbacks()


async def _fan_out(
    response: Message, leader: ServerObservation, followers: list[ServerObservation]
) -> None:
    """Send one render to ``leader`` and to the ``followers`` still idle (see
    :meth:`ObservableResource.updated_state`): a success encoded once for all, a
    final (error) notification to each. Other tasks run every
    :data:`_FAN_OUT_STRETCH` followers: a change to 10,000 observers does not
    hold up the receive path until the last one is sent."""
    if response.code.is_successful():
        response.opt.observe = None  # each observer's own goes in when it is sent
        shared = SharedNotification(response)
        leader._notify_shared(shared)
    else:
        shared = None
        leader._notify(response)
    for index, follower in enumerate(followers, 1):
        # Not one that a later change grouped anew, or that rendered by itself
        # since: its notification would be older than one it already has.
        if follower._group is followers and not follower.ended and follower._idle():
            follower._group = None
            if shared is not None:
                follower._notify_shared(shared)
            else:
                follower._notify(response.copy())
        if not index % _FAN_OUT_STRETCH:
            await trio.lowlevel.checkpoint()


def _run_callback(callback: Callable[[], None], observation: ServerObservation) -> None:
    try:
        callback()
    except Exception:
        logger.exception("cancellation callback of %r failed", observation)


class ObservableResource(Resource):
    """A :class:`~coap_trio.resource.Resource` that can be observed (like aiocoap's).

    Every registration is accepted and kept until it ends; call
    :meth:`updated_state` whenever the resource changes to notify all
    observers. Override :meth:`add_observation` to refuse some (not
    accepting leaves the response a plain one) and
    :meth:`update_observation_count` to learn when observers come and go.
    Discovery marks it ``obs``.
    """

    obs = True
    #: Seconds between confirmable notifications of each observation (0: all
    #: CON); None leaves the observation's default (:data:`DEFAULT_CON_INTERVAL`).
    con_interval: float | None = None
    #: Whether observations registered alike share one render per change (see
    #: :meth:`updated_state`). Set it False when the representation depends on
    #: the client's address (``request.remote``), which the sharing ignores.
    share_renders: bool = True

    def __init__(self) -> None:
        self._observations: set[interfaces.ServerObservation] = set()
        self._share_keys: dict[object, object] = {}

    def _observation_set(self) -> set[interfaces.ServerObservation]:
        # Tolerates subclasses whose __init__ does not call super().__init__().
        try:
            return self._observations
        except AttributeError:
            self._observations = set()
            return self._observations

    async def add_observation(
        self, request: Message, observation: interfaces.ServerObservation
    ) -> None:
        """Accept ``observation`` and keep it until it ends (applying :attr:`con_interval`)."""
        if isinstance(observation, ServerObservation):
            if self.con_interval is not None:
                observation.set_con_interval(self.con_interval)
            observation.share_key = self._share_key(observation.request)
        observation.accept(self._cancelled_callback())
        if not getattr(observation, "ended", False):  # accept() runs it at once if over
            observations = self._observation_set()
            observations.add(observation)
            self.update_observation_count(len(observations))

    def _share_key(self, request: Message) -> object:
        """What registrations must have in common to share a render: the method,
        every option but Observe (Uri-Path and Uri-Query, Accept, ETag, Block2...)
        and the payload (FETCH). None (never shared) for a request through a
        multicast group, OSCORE or DTLS, whose rendering may depend on who asks.
        Equal keys are one object (interned), so an observation holds a pointer."""
        if type(request.remote) is not DatagramRemote:
            return None
        key = (
            int(request.code),
            tuple(item for item in request.opt.raw_items if item[0] != _OBSERVE),
            request.payload,
        )
        try:
            keys = self._share_keys
        except AttributeError:  # (a subclass' __init__ need not call super().__init__())
            keys = self._share_keys = {}
        if len(keys) >= _MAX_SHARE_KEYS:  # interning only saves memory: start over
            keys.clear()
        return keys.setdefault(key, key)

    def _cancelled_callback(self) -> Callable[[], None]:
        # One shared callback per resource (not one per observation: 10,000 of
        # them add up); it prunes every ended observation.
        try:
            return self._prune_callback
        except AttributeError:
            self._prune_callback: Callable[[], None] = self._prune
            return self._prune_callback

    def _prune(self) -> None:
        # O(1) when an observation ends (ending 10,000 must not be quadratic);
        # the set is compacted on the next read.
        self._stale = True

    def _live_observations(self) -> set[interfaces.ServerObservation]:
        observations = self._observation_set()
        if getattr(self, "_stale", False):
            self._stale = False
            ended = [o for o in observations if getattr(o, "ended", False)]
            if ended:
                observations.difference_update(ended)
                self.update_observation_count(len(observations))
        return observations

    def update_observation_count(self, count: int) -> None:
        """Hook: called with the number of observers when it changes (does nothing).

        Additions are reported at once; ends are reported when the resource
        next looks at its observers, so several ends may arrive as one count.
        """

    def updated_state(self, response: Message | None = None) -> None:
        """The state changed: trigger every observation (with ``response`` if given).

        Without ``response`` each observation's registration is rendered again;
        with :attr:`share_renders`, observations whose registrations are alike
        (the same method, options but Observe, and payload, over plain UDP)
        and that are idle share one render: the first one's task renders, once,
        and the result goes to each of them, encoded once, with only the token,
        message ID, type and Observe of each one's own.
        """
        observations = list(self._live_observations())
        if response is not None or not self.share_renders:
            for observation in observations:
                observation.trigger(response)
            return
        groups: dict[object, list[ServerObservation]] = {}
        for observation in observations:
            key = getattr(observation, "share_key", None)
            if (
                key is None
                or not isinstance(observation, ServerObservation)
                or not observation._idle()
            ):
                observation.trigger()
            else:
                group = groups.get(key)
                if group is None:
                    groups[key] = [observation]
                else:
                    group.append(observation)
        for group in groups.values():
            if len(group) == 1:
                group[0].trigger()
            else:
                group[0]._trigger_group(group[1:])

    def end_observations(self, response: Message | None = None) -> None:
        """End every observation with a final notification (default 4.04 Not Found,
        as RFC 7641 §3.2 asks when a resource goes away).
        :meth:`Site.remove <coap_trio.resource.Site.remove>`
        calls this for the resources it removes."""
        final = response if response is not None else Message(code=Code.NOT_FOUND)
        if not final.code.is_error():
            raise ValueError("a final notification has an error code")
        for observation in list(self._live_observations()):
            observation.trigger(final)

    @property
    def observation_count(self) -> int:
        """How many observations are currently accepted and not ended."""
        return len(self._live_observations())
