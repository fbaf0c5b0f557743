"""Signaling messages of CoAP over reliable transports (RFC 8323 §5).

Owns building and parsing the five 7.xx signals: CSM 7.01 (Max-Message-Size,
Block-Wise-Transfer), Ping 7.02 and Pong 7.03 (Custody), Release 7.04
(Alternative-Address, Hold-Off) and Abort 7.05 (Bad-CSM-Option), and the
rule for options a signal carries that this stack does not know (§5.2):
an unknown *critical* (odd) option makes the signal unacceptable
(:class:`SignalingError`; the connection is aborted, for a CSM with
Bad-CSM-Option naming it, §5.3, §5.6); an unknown elective (even) one is
ignored.

Signaling option numbers belong to their signaling code and collide with
request/response option numbers (Max-Message-Size and Uri-Host are both 2),
so they are read and written raw (``opt.get_all(n)`` / ``opt.add``), never
through the typed view. A known option whose value breaks its length or
format is treated as unrecognized (RFC 7252 §5.4.3); all the defined ones
are elective, so such a value is ignored.

Must not know about connections, exchanges, time or framing.
"""

from __future__ import annotations

import attrs

from ..errors import SignalingError
from ..message import Message
from ..numbers.codes import Code
from ..options import Options, decode_uint, encode_uint
from .framing import DEFAULT_MAX_MESSAGE_SIZE

__all__ = [
    "ALTERNATIVE_ADDRESS",
    "BAD_CSM_OPTION",
    "BLOCK_WISE_TRANSFER",
    "CUSTODY",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HOLD_OFF",
    "MAX_MESSAGE_SIZE",
    "Abort",
    "Csm",
    "Ping",
    "Pong",
    "Release",
    "Signal",
    "SignalingError",
    "build_abort",
    "build_csm",
    "build_ping",
    "build_pong",
    "build_release",
    "parse_signal",
]

#: CSM option: the largest message the sender can receive (uint, 0-4 bytes, §5.3.1).
MAX_MESSAGE_SIZE = 2
#: CSM option: the sender supports block-wise transfers with BERT (empty, §5.3.2).
BLOCK_WISE_TRANSFER = 4
#: Ping/Pong option: answer promptly, the Ping is about the peer's liveness (empty, §5.4.1).
CUSTODY = 2
#: Release option: an address to reconnect to (string 1-255, repeatable, §5.5.1).
ALTERNATIVE_ADDRESS = 2
#: Release option: seconds to wait before reconnecting (uint 0-3 bytes, §5.5.2).
HOLD_OFF = 4
#: Abort option: the CSM option that caused the abort (uint 0-2 bytes, §5.6.1).
BAD_CSM_OPTION = 2


@attrs.frozen
class Csm:
    """A parsed Capabilities and Settings Message (7.01, §5.3).

    ``None`` / False mean the option was absent: a later CSM only changes
    what it carries, so the receiver keeps earlier values.
    """

    #: Max-Message-Size, if announced.
    max_message_size: int | None = None
    #: Block-Wise-Transfer: the sender supports BERT (RFC 8323 §6).
    block_wise_transfer: bool = False


@attrs.frozen
class Ping:
    """A parsed Ping (7.02, §5.4): to be answered with a Pong carrying the same token."""

    #: The Ping's token (the Pong must echo it).
    token: bytes = b""
    #: Custody: the sender asks for a prompt Pong.
    custody: bool = False


@attrs.frozen
class Pong:
    """A parsed Pong (7.03, §5.4)."""

    #: The token of the Ping it answers.
    token: bytes = b""
    #: Custody was echoed.
    custody: bool = False


@attrs.frozen
class Release:
    """A parsed Release (7.04, §5.5): the peer wants this connection to end."""

    #: Alternative-Address options, in order.
    alternative_addresses: tuple[str, ...] = ()
    #: Hold-Off in seconds, if given.
    hold_off: int | None = None
    #: The diagnostic payload (UTF-8, undecodable bytes replaced).
    diagnostic: str = ""


@attrs.frozen
class Abort:
    """A parsed Abort (7.05, §5.6): the peer is closing the connection at once."""

    #: Bad-CSM-Option, if given: the option of our CSM that caused it.
    bad_csm_option: int | None = None
    #: The diagnostic payload (UTF-8, undecodable bytes replaced).
    diagnostic: str = ""


#: What :func:`parse_signal` returns.
Signal = Csm | Ping | Pong | Release | Abort


def _message(code: Code, token: bytes, items: list[tuple[int, bytes]], payload: bytes) -> Message:
    return Message.from_fields(code, None, None, token, Options(items), payload, None)


def build_csm(max_message_size: int | None = None, *, block_wise_transfer: bool = False) -> Message:
    """A CSM announcing ``max_message_size`` (if given) and BERT support (if True)."""
    items: list[tuple[int, bytes]] = []
    if max_message_size is not None:
        if not 0 <= max_message_size <= 0xFFFFFFFF:
            raise ValueError(f"Max-Message-Size {max_message_size} is not in 0..2**32-1")
        items.append((MAX_MESSAGE_SIZE, encode_uint(max_message_size)))
    if block_wise_transfer:
        items.append((BLOCK_WISE_TRANSFER, b""))
    return _message(Code.CSM, b"", items, b"")


def build_ping(token: bytes = b"", *, custody: bool = False) -> Message:
    """A Ping with ``token`` (0-8 bytes), with the Custody option if asked."""
    return _message(Code.PING, bytes(token), [(CUSTODY, b"")] if custody else [], b"")


def build_pong(token: bytes = b"", *, custody: bool = False) -> Message:
    """The Pong for a Ping with ``token`` (echoing Custody if the Ping had it)."""
    return _message(Code.PONG, bytes(token), [(CUSTODY, b"")] if custody else [], b"")


def build_release(
    alternative_addresses: tuple[str, ...] = (),
    hold_off: int | None = None,
    diagnostic: str = "",
) -> Message:
    """A Release with optional Alternative-Address(es), Hold-Off and diagnostic payload."""
    items: list[tuple[int, bytes]] = []
    for address in alternative_addresses:
        raw = address.encode("utf-8")
        if not 1 <= len(raw) <= 255:
            raise ValueError(f"Alternative-Address {address!r} is not 1..255 bytes")
        items.append((ALTERNATIVE_ADDRESS, raw))
    if hold_off is not None:
        if not 0 <= hold_off <= 0xFFFFFF:
            raise ValueError(f"Hold-Off {hold_off} does not fit 3 bytes")
        items.append((HOLD_OFF, encode_uint(hold_off)))
    return _message(Code.RELEASE, b"", items, diagnostic.encode("utf-8"))


def build_abort(bad_csm_option: int | None = None, diagnostic: str = "") -> Message:
    """An Abort, naming the rejected CSM option (Bad-CSM-Option) if given."""
    items: list[tuple[int, bytes]] = []
    if bad_csm_option is not None:
        if not 0 <= bad_csm_option <= 0xFFFF:
            raise ValueError(f"Bad-CSM-Option {bad_csm_option} does not fit 2 bytes")
        items.append((BAD_CSM_OPTION, encode_uint(bad_csm_option)))
    return _message(Code.ABORT, b"", items, diagnostic.encode("utf-8"))


#: Per signaling code: option number -> (min length, max length, repeatable, kind).
_KNOWN: dict[int, dict[int, tuple[int, int, bool, str]]] = {
    Code.CSM: {
        MAX_MESSAGE_SIZE: (0, 4, False, "uint"),
        BLOCK_WISE_TRANSFER: (0, 0, False, "empty"),
    },
    Code.PING: {CUSTODY: (0, 0, False, "empty")},
    Code.PONG: {CUSTODY: (0, 0, False, "empty")},
    Code.RELEASE: {ALTERNATIVE_ADDRESS: (1, 255, True, "string"), HOLD_OFF: (0, 3, False, "uint")},
    Code.ABORT: {BAD_CSM_OPTION: (0, 2, False, "uint")},
}


def _usable(message: Message) -> dict[int, list[bytes]]:
    """The known options with well-formed values; raises for an unknown critical one."""
    known = _KNOWN[message.code]
    usable: dict[int, list[bytes]] = {}
    for number, value in message.opt.raw_items:
        spec = known.get(number)
        if spec is None:
            if number & 1:
                raise SignalingError(message.code, number)
            continue
        low, high, repeatable, kind = spec
        seen = usable.get(number)
        if not low <= len(value) <= high or (seen is not None and not repeatable):
            continue  # treated as unrecognized, and every known one is elective
        if kind == "string":
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                continue
        usable.setdefault(number, []).append(value)
    return usable


def parse_signal(message: Message) -> Signal | None:
    """The parsed signal of a 7.xx ``message``; None for a signaling code not defined
    (7.00, 7.06-7.31), which the caller ignores.

    Raises :class:`SignalingError` for an unknown critical option (§5.2-§5.6).
    """
    code = message.code
    if code not in _KNOWN:
        return None
    usable = _usable(message)
    if code is Code.CSM:
        sizes = usable.get(MAX_MESSAGE_SIZE)
        return Csm(
            max_message_size=None if sizes is None else decode_uint(sizes[0]),
            block_wise_transfer=BLOCK_WISE_TRANSFER in usable,
        )
    if code is Code.PING:
        return Ping(token=message.token, custody=CUSTODY in usable)
    if code is Code.PONG:
        return Pong(token=message.token, custody=CUSTODY in usable)
    diagnostic = message.payload.decode("utf-8", "replace")
    if code is Code.RELEASE:
        holds = usable.get(HOLD_OFF)
        return Release(
            alternative_addresses=tuple(
                raw.decode("utf-8") for raw in usable.get(ALTERNATIVE_ADDRESS, ())
            ),
            hold_off=None if holds is None else decode_uint(holds[0]),
            diagnostic=diagnostic,
        )
    bad = usable.get(BAD_CSM_OPTION)
    return Abort(bad_csm_option=None if bad is None else decode_uint(bad[0]), diagnostic=diagnostic)
