"""The OSCORE engine: what the shell calls to protect and verify messages (RFC 8613 §8).

Owns the security contexts a server verifies requests with (found by 'kid'
and 'kid context', §8.2 step 2), the replay check and its update (§7.4),
freshness after a restart (an Echo challenge, RFC 9175 and Appendix B.1.2,
on both sides), the checks on responses (one response, ordered
notifications, §7.4.1, §8.4.2), the answer to every failure (§8.2: 4.02,
4.01, 4.00, sent unprotected; the freshness 4.01 protected) and the
counters.

Verification never raises: :meth:`OscoreEngine.verify_request` and
:meth:`OscoreEngine.verify_response` return a result object. The engine
holds no per-request state (the bindings travel with the exchanges), so
nothing a peer sends makes it grow. Must not know about transports, tasks,
time or files.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

import attrs

from ...errors import (
    OscoreFailure,
    OscoreProtectError,
    OscoreVerificationError,
)
from ...message import Message
from ...numbers.codes import Code
from ...options import Options, encode_uint
from .binding import ClientBinding, ClientInput, ClientState, ServerBinding
from .classes import OptionClass, option_class
from .context import SecurityContext
from .option import CompressedHeader, decode_oscore_option
from .protect import decrypted_message, open_ciphertext, protect_request, protect_response
from .replay import WindowState

__all__ = [
    "FAILURE_CODES",
    "OscoreConfig",
    "OscoreEngine",
    "OscoreStatistics",
    "RequestRejected",
    "RequestVerified",
    "ResponseRejected",
    "ResponseRepeat",
    "ResponseVerified",
    "is_protected",
]

_OSCORE = 9
_OBSERVE = 6
_ECHO = 252
_MAX_AGE = 14

#: The response code RFC 8613 gives each failure of a request; None: no response.
FAILURE_CODES: dict[OscoreFailure, Code | None] = {
    OscoreFailure.DECODE: Code.BAD_OPTION,  # §8.2 step 2
    OscoreFailure.CONTEXT_NOT_FOUND: Code.UNAUTHORIZED,  # §8.2 step 2
    OscoreFailure.DECRYPTION: Code.BAD_REQUEST,  # §8.2 step 6
    OscoreFailure.REPLAY: Code.UNAUTHORIZED,  # §7.4
    OscoreFailure.FRESHNESS: Code.UNAUTHORIZED,  # Appendix B.1.2 (protected)
    OscoreFailure.UNPROTECTED: Code.UNAUTHORIZED,
    OscoreFailure.TOO_LARGE: None,  # §4.1.3.4.2: discarded
}


def is_protected(message: Message) -> bool:
    """Whether ``message`` carries an OSCORE option."""
    return _OSCORE in message.opt


@attrs.frozen
class OscoreConfig:
    """Tunables of an :class:`OscoreEngine`."""

    #: The largest OSCORE payload (ciphertext) accepted, after any Outer
    #: block-wise reassembly: MAX_UNFRAGMENTED_SIZE of §4.1.3.4.2.
    max_unfragmented_size: int = 64 * 1024
    #: Whether error responses carry an Outer Max-Age of 0 (§4.1.3.1, §8.2).
    max_age_zero: bool = True
    #: Whether error responses carry the diagnostic text of §7.4 and §8.2.
    diagnostics: bool = True


@attrs.define
class OscoreStatistics:
    """Counters of an :class:`OscoreEngine`."""

    requests_protected: int = 0
    requests_verified: int = 0
    responses_protected: int = 0
    responses_verified: int = 0
    #: Verification failures by kind (requests and responses).
    failures: dict[OscoreFailure, int] = attrs.Factory(lambda: dict.fromkeys(OscoreFailure, 0))
    #: Requests answered with an Echo challenge (a subset of FRESHNESS failures).
    echo_challenges: int = 0
    #: Replay windows synchronized by a request repeating our Echo value.
    echo_synchronized: int = 0
    #: Requests repeated with a server's Echo value.
    echo_repeats: int = 0
    #: Outer Class E options discarded from verified messages (§8.2 step 1).
    outer_class_e_discarded: int = 0


@attrs.frozen
class RequestVerified:
    """A request verified: ``request`` goes to the handlers, ``binding`` protects its responses."""

    #: The decrypted request (header fields of the OSCORE message, inner
    #: Code, options and payload; no OSCORE option).
    request: Message
    #: What :meth:`OscoreEngine.protect_response` needs.
    binding: ServerBinding


@attrs.frozen
class RequestRejected:
    """A request that failed verification: it reaches no handler (§8.2)."""

    #: Why.
    error: OscoreVerificationError
    #: The response to send (unprotected, but for the freshness challenge,
    #: §8.3), or None to stay silent.
    response: Message | None

    @property
    def failure(self) -> OscoreFailure:
        """The kind of failure."""
        return self.error.failure


@attrs.frozen
class ResponseVerified:
    """A response verified for its request (§8.4)."""

    #: The decrypted response; a notification's Observe is derived from its
    #: Partial IV (§4.1.3.5.2): ``(PIV + 1) mod 2**24``, 0 without one.
    response: Message
    #: Whether it is a notification of an observation (Inner Observe present).
    notification: bool


@attrs.frozen
class ResponseRejected:
    """A response that failed verification: the client discards it (§8.4 step 8)."""

    #: Why; raise it to end the request, or keep waiting for a genuine response.
    error: OscoreVerificationError
    #: The response as received (for an unprotected error, its code and diagnostic).
    response: Message

    @property
    def failure(self) -> OscoreFailure:
        """The kind of failure."""
        return self.error.failure


@attrs.frozen
class ResponseRepeat:
    """The server asked for freshness (4.01 with Echo, RFC 9175 §2.4): send ``request``.

    ``request`` is the original request with the Echo value, protected
    with a new Partial IV; ``binding`` replaces the old one for its
    responses (and will not repeat again).
    """

    #: The protected request to send, as a new exchange.
    request: Message
    #: Its binding.
    binding: ClientBinding
    #: The verified 4.01 that asked for it.
    response: Message


RequestResult = RequestVerified | RequestRejected
ResponseResult = ResponseVerified | ResponseRepeat | ResponseRejected


class OscoreEngine:
    """Protects and verifies CoAP messages with OSCORE, for both roles (RFC 8613 §8).

    Client: :meth:`protect_request` gives the OSCORE request and a
    :class:`~coap_trio.protocol.oscore.binding.ClientBinding` kept with the
    exchange; each response goes to :meth:`verify_response` with it.

    Server: :meth:`verify_request` finds the security context among those
    added (:meth:`add_context`) and returns :class:`RequestVerified` or
    :class:`RequestRejected` (with the response the RFC asks for); the
    handler's response goes to :meth:`protect_response` with the binding.
    :meth:`refuse_unprotected` answers a plain request to a resource that
    requires OSCORE.
    """

    def __init__(
        self, contexts: Iterable[SecurityContext] = (), config: OscoreConfig | None = None
    ) -> None:
        #: The tunables.
        self.config = config if config is not None else OscoreConfig()
        #: The counters.
        self.statistics = OscoreStatistics()
        self._by_recipient: dict[bytes, list[SecurityContext]] = {}
        for context in contexts:
            self.add_context(context)

    # -- the server's security contexts ------------------------------------------

    def add_context(self, context: SecurityContext) -> None:
        """Verify requests whose 'kid' is ``context.recipient_id`` with ``context``."""
        candidates = self._by_recipient.setdefault(context.recipient_id, [])
        if context not in candidates:
            candidates.append(context)

    def remove_context(self, context: SecurityContext) -> None:
        """Stop verifying requests with ``context``."""
        candidates = self._by_recipient.get(context.recipient_id, [])
        if context in candidates:
            candidates.remove(context)
        if not candidates:
            self._by_recipient.pop(context.recipient_id, None)

    @property
    def contexts(self) -> list[SecurityContext]:
        """The security contexts requests are verified with."""
        return [context for group in self._by_recipient.values() for context in group]

    def _candidates(self, header: CompressedHeader) -> list[SecurityContext]:
        assert header.kid is not None
        found = self._by_recipient.get(header.kid, [])
        if header.kid_context is None:
            return list(found)
        return [context for context in found if context.id_context == header.kid_context]

    # -- client ------------------------------------------------------------------

    def protect_request(
        self, request: Message, context: SecurityContext
    ) -> tuple[Message, ClientBinding]:
        """The OSCORE request for ``request`` (§8.1) and its binding.

        Raises :class:`~coap_trio.errors.OscoreProtectError` (nested OSCORE,
        a Proxy-Uri that cannot be split) and its subclasses
        :class:`~coap_trio.errors.SequenceNumberExhaustedError` and
        :class:`~coap_trio.errors.SequenceStoreError`.
        """
        protected, binding = protect_request(context, request)
        self.statistics.requests_protected += 1
        return protected, binding

    def verify_response(self, response: Message, binding: ClientBinding) -> ResponseResult:
        """Verify a response to the request of ``binding`` (§8.4); never raises.

        A 4.01 carrying an Echo value, to a request not repeated yet, gives
        :class:`ResponseRepeat`: the request again with that Echo value and
        a new Partial IV.
        """
        try:
            verified, event = self._open_response(response, binding)
        except OscoreVerificationError as error:
            self._count(error.failure)
            return ResponseRejected(error, response)
        if (
            verified.code == Code.UNAUTHORIZED
            and _ECHO in verified.opt
            and binding.may_repeat
            and binding.accepts(ClientInput.REPEAT)
        ):
            repeated = binding.request.copy()
            repeated.opt.replace(_ECHO, verified.opt.get_all(_ECHO)[:1])
            try:
                protected, follow_up = protect_request(binding.context, repeated)
            except OscoreProtectError:
                pass  # the 4.01 itself is the answer then
            else:
                binding.move(ClientInput.REPEAT)
                follow_up.may_repeat = False
                self.statistics.responses_verified += 1
                self.statistics.requests_protected += 1
                self.statistics.echo_repeats += 1
                return ResponseRepeat(protected, follow_up, verified)
        binding.move(event)
        self.statistics.responses_verified += 1
        return ResponseVerified(verified, event is ClientInput.NOTIFICATION)

    def _open_response(
        self, response: Message, binding: ClientBinding
    ) -> tuple[Message, ClientInput]:
        values = response.opt.get_all(_OSCORE)
        if not values:
            raise OscoreVerificationError(
                OscoreFailure.UNPROTECTED_RESPONSE,
                f"{response.code.dotted} {response.code.name_printable} without OSCORE option",
            )
        header = _header_of_values(values)
        if not response.payload:
            raise OscoreVerificationError(OscoreFailure.DECODE, "no payload")
        self._check_size(response)
        context = binding.context
        if header.kid is not None and header.kid != context.recipient_id:
            raise OscoreVerificationError(OscoreFailure.DECRYPTION, "'kid' of another sender")
        if header.kid_context is not None and header.kid_context != context.id_context:
            raise OscoreVerificationError(OscoreFailure.DECRYPTION, "'kid context' of another")
        if binding.state not in _OPEN_STATES:
            raise OscoreVerificationError(OscoreFailure.REPLAY, "the request was answered")
        piv = header.partial_iv
        number = None
        if piv is None:
            if binding.request_nonce_used:
                raise OscoreVerificationError(
                    OscoreFailure.REPLAY, "a second response without Partial IV"
                )
            nonce = context.nonce(binding.request_kid, binding.request_piv)
        else:
            number = int.from_bytes(piv, "big")
            if binding.notification_number is not None and number <= binding.notification_number:
                raise OscoreVerificationError(
                    OscoreFailure.REPLAY, "a notification not newer than the latest"
                )
            nonce = context.nonce(context.recipient_id, piv)
        data = open_ciphertext(
            context, response.payload, nonce, binding.request_kid, binding.request_piv
        )
        if data is None:
            raise OscoreVerificationError(OscoreFailure.DECRYPTION)
        verified = decrypted_message(response, data)
        self._count_discarded(response)
        if _OBSERVE in verified.opt:
            if not binding.observe:
                raise OscoreVerificationError(OscoreFailure.UNEXPECTED_OBSERVE)
            event = ClientInput.NOTIFICATION
            # §4.1.3.5.2: ordered by Partial IV; the one without is the oldest.
            verified.opt.observe = 0 if number is None else (number + 1) & 0xFFFFFF
        else:
            event = ClientInput.FINAL
        if number is None:
            binding.request_nonce_used = True
        elif event is ClientInput.NOTIFICATION:
            binding.notification_number = number
        return verified, event

    # -- server ------------------------------------------------------------------

    def verify_request(self, request: Message) -> RequestResult:
        """Verify a request carrying an OSCORE option (§8.2); never raises.

        Steps: decode the option (4.02 on failure), find the context by
        'kid' and 'kid context' (4.01 "Security context not found"), check
        the replay window (4.01 "Replay detected"), decrypt (4.00
        "Decryption failed"), update the window. While the window is
        unknown (after a restart), a verified request without our Echo value
        is answered with a protected 4.01 carrying it; one repeating it
        synchronizes the window (Appendix B.1.2).
        """
        try:
            return self._verify_request(request)
        except OscoreVerificationError as error:
            self._count(error.failure)
            return RequestRejected(error, self._error_response(request, error.failure))

    def _verify_request(self, request: Message) -> RequestResult:
        values = request.opt.get_all(_OSCORE)
        if not values:
            raise OscoreVerificationError(OscoreFailure.UNPROTECTED, "no OSCORE option")
        header = _header_of_values(values)
        if header.kid is None or header.partial_iv is None:
            raise OscoreVerificationError(OscoreFailure.DECODE, "a request without kid or PIV")
        if not request.payload:
            raise OscoreVerificationError(OscoreFailure.DECODE, "no payload")
        self._check_size(request)
        candidates = self._candidates(header)
        if not candidates:
            raise OscoreVerificationError(OscoreFailure.CONTEXT_NOT_FOUND)
        piv = header.partial_iv
        kid = header.kid
        number = int.from_bytes(piv, "big")
        replayed = False
        for context in candidates:
            window = context.replay_window
            known = window.state is WindowState.VALID
            if known and not window.is_fresh(number):
                replayed = True
                continue
            data = open_ciphertext(context, request.payload, context.nonce(kid, piv), kid, piv)
            if data is None:
                continue
            try:
                verified = decrypted_message(request, data)
            except OscoreVerificationError:
                # Authentic but not a CoAP message: its Partial IV is used up.
                if known:
                    window.accept(number)
                raise
            return self._accept(request, verified, context, piv, number, known)
        if replayed:
            raise OscoreVerificationError(OscoreFailure.REPLAY, f"Partial IV {number}")
        raise OscoreVerificationError(OscoreFailure.DECRYPTION)

    def _accept(
        self,
        request: Message,
        verified: Message,
        context: SecurityContext,
        piv: bytes,
        number: int,
        known: bool,
    ) -> RequestResult:
        observe = verified.opt.observe == 0
        binding = ServerBinding(
            context, context.recipient_id, piv, observe=observe, nonce_reusable=known
        )
        window = context.replay_window
        if known:
            window.accept(number)
        else:
            echo = verified.opt.echo
            if echo is None or not hmac.compare_digest(echo, context.echo_value):
                return self._challenge(request, binding)
            window.synchronize(number)
            verified.opt.remove(_ECHO)
            self.statistics.echo_synchronized += 1
        self._count_discarded(request)
        self.statistics.requests_verified += 1
        return RequestVerified(verified, binding)

    def _challenge(self, request: Message, binding: ServerBinding) -> RequestRejected:
        """The protected 4.01 with only an Echo option (Appendix B.1.2, RFC 9175 §2.4)."""
        error = OscoreVerificationError(OscoreFailure.FRESHNESS, "replay window unknown")
        self._count(OscoreFailure.FRESHNESS)
        self.statistics.echo_challenges += 1
        answer = Message.from_fields(
            Code.UNAUTHORIZED,
            request.mtype,
            None,
            request.token,
            Options.from_wire([(_ECHO, binding.context.echo_value)]),
            b"",
            request.remote,
        )
        try:
            protected = protect_response(answer, binding, new_partial_iv=True)
        except OscoreProtectError:
            return RequestRejected(error, None)  # no sequence number left: stay silent
        self.statistics.responses_protected += 1
        return RequestRejected(error, protected)

    def protect_response(self, response: Message, binding: ServerBinding) -> Message:
        """The OSCORE response to the request of ``binding`` (§8.3).

        The first response may reuse the request's nonce (no Partial IV);
        notifications and later responses carry their own Partial IV.
        Raises :class:`~coap_trio.errors.OscoreProtectError` and its subclasses.
        """
        protected = protect_response(response, binding)
        self.statistics.responses_protected += 1
        return protected

    def refuse_unprotected(self, request: Message) -> RequestRejected:
        """The answer to a request without OSCORE for a resource that requires it (4.01)."""
        error = OscoreVerificationError(OscoreFailure.UNPROTECTED, "no OSCORE option")
        self._count(error.failure)
        return RequestRejected(error, self._error_response(request, error.failure))

    # -- helpers -----------------------------------------------------------------

    def _check_size(self, message: Message) -> None:
        if len(message.payload) > self.config.max_unfragmented_size:
            raise OscoreVerificationError(
                OscoreFailure.TOO_LARGE,
                f"{len(message.payload)} bytes, more than {self.config.max_unfragmented_size}",
            )

    def _count(self, failure: OscoreFailure) -> None:
        self.statistics.failures[failure] += 1

    def _count_discarded(self, protected: Message) -> None:
        discarded = 0
        for number, _ in protected.opt.raw_items:
            if number != _OSCORE and _is_outer_class_e(number):
                discarded += 1
        if discarded:
            self.statistics.outer_class_e_discarded += discarded

    def _error_response(self, request: Message, failure: OscoreFailure) -> Message | None:
        """The unprotected error response of §7.4 / §8.2 (with Max-Age 0 and the diagnostic)."""
        code = FAILURE_CODES.get(failure)
        if code is None:
            return None
        items = [(_MAX_AGE, encode_uint(0))] if self.config.max_age_zero else []
        payload = failure.value.encode("ascii") if self.config.diagnostics else b""
        return Message.from_fields(
            code,
            request.mtype,
            None,
            request.token,
            Options.from_wire(items),
            payload,
            request.remote,
        )


#: Binding states in which a response can still arrive.
_OPEN_STATES = frozenset({ClientState.SENT, ClientState.OBSERVING})


def _header_of_values(values: tuple[bytes, ...]) -> CompressedHeader:
    if len(values) != 1:
        raise OscoreVerificationError(OscoreFailure.DECODE, "more than one OSCORE option")
    return decode_oscore_option(values[0])


def _is_outer_class_e(number: int) -> bool:
    return number != _OSCORE and OptionClass.E in option_class(number)
