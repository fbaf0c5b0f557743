"""Amplification mitigation with the Echo option (RFC 7252 §11.3, RFC 9175 §2.4).

Owns :class:`AmplificationGuard`: before a response goes to a UDP client
whose address has not been verified, it checks the response's size against
``factor`` times the request's (3, RFC 9175 §2.4); a larger one is replaced
by a 4.01 Unauthorized carrying an Echo option. A client that repeats its
request with that Echo value proves it receives at its address: the value
checks out (an HMAC of the address and a time, so nothing is kept per
challenge), the address counts as verified for ``verified_for`` seconds
(bounded table, oldest forgotten first) and the response goes out. Must not
know about sockets or tasks; the time comes from a clock given to it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from ..message import Message
from ..numbers.codes import Code
from ..options import Options

__all__ = ["AmplificationGuard"]

_TIME = struct.Struct(">I")
#: Bytes of HMAC kept in an Echo value (plus 4 bytes of time: 12 of Echo's 40).
_MAC_LENGTH = 8
#: Seconds an Echo value is accepted after it was given.
_FRESH_FOR = 60


def _wire_size(message: Message) -> int:
    """A close lower bound of ``message``'s encoded size (header, token, options, payload)."""
    size = 4 + len(message.token)
    previous = 0
    for number, value in message.opt.raw_items:
        delta = number - previous
        length = len(value)
        size += 1 + len(value) + (0 if delta < 13 else 1 if delta < 269 else 2)
        size += 0 if length < 13 else 1 if length < 269 else 2
        previous = number
    if message.payload:
        size += 1 + len(message.payload)
    return size


class AmplificationGuard:
    """Keeps responses to unverified UDP clients within ``factor`` times their request.

    ``clock`` gives the time in seconds (the Context gives ``trio.current_time``;
    Echo values carry whole seconds of it). See the module docstring.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        factor: float = 3.0,
        verified_for: float = 600.0,
        max_verified: int = 10_000,
    ) -> None:
        if factor < 1 or verified_for <= 0 or max_verified < 1:
            raise ValueError("factor >= 1, verified_for > 0 and max_verified >= 1")
        self._clock = clock
        self.factor = factor
        self._verified_for = verified_for
        self._max_verified = max_verified
        self._secret = os.urandom(32)
        #: Verified client hosts and until when, oldest first.
        self._verified: dict[str, float] = {}
        #: Responses replaced by a 4.01 Echo challenge.
        self.challenges = 0
        #: Requests whose Echo value checked out (their host now verified).
        self.verified = 0

    def check(self, host: str, request: Message, response: Message) -> Message:
        """The response to send to ``host`` for ``request``: ``response``, or a 4.01
        Echo challenge in its place when it is too large for an unverified host."""
        now = self._clock()
        until = self._verified.get(host)
        if until is not None and until > now:
            return response
        echo = request.opt.echo
        if echo is not None and self._valid(host, echo, now):
            self._remember(host, now)
            self.verified += 1
            return response
        if _wire_size(response) <= self.factor * _wire_size(request):
            return response
        self.challenges += 1
        challenge = Message(code=Code.UNAUTHORIZED, opt=Options())
        challenge.opt.echo = self._value(host, now)
        challenge.opt.max_age = 0
        return challenge

    @property
    def verified_hosts(self) -> int:
        """Hosts verified now (expired ones may still be counted until replaced)."""
        return len(self._verified)

    def _value(self, host: str, now: float) -> bytes:
        stamp = _TIME.pack(int(now) & 0xFFFFFFFF)
        mac = hmac.new(self._secret, stamp + host.encode(), hashlib.sha256).digest()
        return stamp + mac[:_MAC_LENGTH]

    def _valid(self, host: str, echo: bytes, now: float) -> bool:
        if len(echo) != _TIME.size + _MAC_LENGTH:
            return False
        stamp = echo[: _TIME.size]
        expected = hmac.new(self._secret, stamp + host.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected[:_MAC_LENGTH], echo[_TIME.size :]):
            return False
        given: int = _TIME.unpack(stamp)[0]
        return (int(now) - given) & 0xFFFFFFFF <= _FRESH_FOR

    def _remember(self, host: str, now: float) -> None:
        verified = self._verified
        verified.pop(host, None)
        while len(verified) >= self._max_verified:
            del verified[next(iter(verified))]
        verified[host] = now + self._verified_for
