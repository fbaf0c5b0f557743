"""Request/response matching by token (RFC 7252 §5.3.2).

Owns the tokens of outstanding requests keyed by (remote, token), their
allocation (random, configurable length, 8 bytes by default), and the
decision whether a response's options can be accepted (§5.4.1: an
unrecognized critical option rejects it). Must not know about message IDs,
retransmission or sockets.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator

from ..message import Message
from ..numbers.optionnumbers import OptionNumber
from ..options import is_malformed
from .exchanges import ClientExchange
from .randomness import RandomBytes

__all__ = ["RECOGNIZED_RESPONSE_OPTIONS", "Matcher", "has_unrecognized_critical"]

_N = OptionNumber

#: Critical options a *response* may carry that this stack handles today.
#: Request options (Uri-*, Proxy-*, If-*, Accept) are recognized and ignored in
#: a response. Block1/Block2 (RFC 7959) are handled by the block-wise layers;
#: OSCORE, EDHOC and Q-Block1/2 are not handled yet, so they are unrecognized.
RECOGNIZED_RESPONSE_OPTIONS = frozenset(
    int(n)
    for n in (
        _N.IF_MATCH,
        _N.URI_HOST,
        _N.IF_NONE_MATCH,
        _N.URI_PORT,
        _N.URI_PATH,
        _N.URI_QUERY,
        _N.ACCEPT,
        _N.PROXY_URI,
        _N.PROXY_SCHEME,
        _N.BLOCK2,
        _N.BLOCK1,
    )
)


def has_unrecognized_critical(message: Message, recognized: frozenset[int]) -> bool:
    """Whether ``message`` carries a critical option outside ``recognized``, or a
    recognized critical one whose value is malformed (§5.4.1, §5.4.3, §5.4.5)."""
    previous = -1
    for number, value in message.opt.raw_items:
        if number & 1 and (
            number not in recognized or is_malformed(number, value, number == previous)
        ):
            return True
        previous = number
    return False


class Matcher:
    """Outstanding requests by (remote, token)."""

    def __init__(self, rng: random.Random, token_length: int = 8) -> None:
        if not 0 <= token_length <= 8:
            raise ValueError(f"token length {token_length} is not in 0..8")
        self._token_length = token_length
        #: The outstanding exchanges by (remote, token): read by the owning
        #: state machine's response path; changed through the methods below.
        self.pending: dict[tuple[Hashable, bytes], ClientExchange] = {}
        #: Multicast requests by token alone: their responses come from members
        #: (any remote), not from the group address they were sent to.
        self.groups: dict[bytes, ClientExchange] = {}
        # The operating system's randomness is drawn a block at a time (one
        # getrandom() call per 512 tokens instead of one per request); a seeded
        # Random is asked per token, so its sequence stays what tests expect.
        self._random = RandomBytes(rng)

    def new_token(self, remote: Hashable) -> bytes | None:
        """A token not in use towards ``remote``; None if the (tiny) token space is full."""
        if self.groups:  # (rare) a group's token must not be reused towards anyone
            return self._new_token_beside_groups(remote)
        pending = self.pending
        take = self._random.take
        length = self._token_length
        token = take(length)
        if (remote, token) not in pending:  # (the usual case, before the loop's setup)
            return token
        for _ in range(15):
            token = take(length)
            if (remote, token) not in pending:
                return token
        return None

    def _new_token_beside_groups(self, remote: Hashable) -> bytes | None:
        take, length, groups = self._random.take, self._token_length, self.groups
        for _ in range(16):
            token = take(length)
            if (remote, token) not in self.pending and token not in groups:
                return token
        return None

    def in_use(self, remote: Hashable, token: bytes) -> bool:
        """Whether ``token`` is outstanding towards ``remote`` (or by a multicast request)."""
        return (remote, token) in self.pending or token in self.groups

    def register(self, exchange: ClientExchange) -> None:
        """Start expecting responses for ``exchange`` (from any member, for a group request)."""
        self.pending[(exchange.remote, exchange.token)] = exchange
        if exchange.group:
            self.groups[exchange.token] = exchange

    def unregister(self, exchange: ClientExchange) -> None:
        """Stop expecting responses for ``exchange`` (idempotent)."""
        key = (exchange.remote, exchange.token)
        if self.pending.get(key) is exchange:
            del self.pending[key]
        if exchange.group and self.groups.get(exchange.token) is exchange:
            del self.groups[exchange.token]

    def find(self, remote: Hashable, token: bytes) -> ClientExchange | None:
        """The exchange waiting for a response with this token from this remote, or
        the multicast request with this token (a member answers from its own address)."""
        exchange = self.pending.get((remote, token))
        if exchange is None and self.groups:
            return self.groups.get(token)
        return exchange

    def towards(self, remote: Hashable) -> Iterator[ClientExchange]:
        """Every outstanding exchange with ``remote`` (a scan; for rare events)."""
        return iter([e for (r, _), e in self.pending.items() if r == remote])

    def __len__(self) -> int:
        return len(self.pending)
