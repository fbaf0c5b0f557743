"""Protecting and opening OSCORE messages (RFC 8613 §5, §8.1-§8.4).

Owns the transformation of one message: the plaintext (Code, Inner options,
payload marker and payload, §5.3), the AAD (the external_aad array in the
COSE Enc_structure, §5.4), the Outer Code (§4.2), the OSCORE option
(§6.1), encryption with the Sender Key and decryption with the Recipient
Key, and the decrypted message put back together (§8.2 step 7, §8.4 step 6).

Which security context, whether a Partial IV is fresh, what to answer and
what to count are the engine's (:mod:`~coap_trio.protocol.oscore.engine`).
Functions that open a message return None or raise
:class:`~coap_trio.errors.OscoreVerificationError`; functions that protect
raise :class:`~coap_trio.errors.OscoreProtectError`. Must not know about
transports, time or files.
"""

from __future__ import annotations

import functools

from ...codec import decode_options, encode_options
from ...errors import (
    MessageEncodeError,
    MessageFormatError,
    OscoreFailure,
    OscoreProtectError,
    OscoreVerificationError,
)
from ...message import Message
from ...numbers.codes import CODE_TABLE, Code
from ...options import Options
from .binding import ClientBinding, ServerBinding
from .classes import merge_options, split_options
from .context import SecurityContext
from .option import MAX_OPTION_LENGTH, CompressedHeader, encode_oscore_option

__all__ = [
    "OSCORE_VERSION",
    "aad",
    "decrypted_message",
    "external_aad",
    "open_ciphertext",
    "outer_request_code",
    "outer_response_code",
    "parse_plaintext",
    "plaintext",
    "protect_request",
    "protect_response",
]

#: The oscore_version of the external_aad (§5.4).
OSCORE_VERSION = 1

_OSCORE = 9
_OBSERVE = 6


def external_aad(algorithm_id: int, request_kid: bytes, request_piv: bytes) -> bytes:
    """The aad_array of §5.4, CBOR-encoded: ``[1, [alg_aead], request_kid, request_piv, h'']``.

    There are no Class I options, so the options element is empty. Written
    directly (the array's shape is fixed; per message, cbor2 cost more than
    the cipher): ``tests/test_oscore_protect.py`` checks it against cbor2.
    """
    return b"".join(
        (
            b"\x85\x01\x81",  # array(5), 1 (the version), array(1)
            _cbor_int(algorithm_id),
            _cbor_head(0x40, len(request_kid)),
            request_kid,
            _cbor_head(0x40, len(request_piv)),
            request_piv,
            b"\x40",  # h'': no Class I options
        )
    )


#: ``array(3), "Encrypt0", h''``: the start of every Enc_structure (RFC 8152 §5.3).
_ENC_STRUCTURE = b"\x83\x68Encrypt0\x40"


def aad(algorithm_id: int, request_kid: bytes, request_piv: bytes) -> bytes:
    """The AAD: the Enc_structure ``["Encrypt0", h'', external_aad]`` (§5.4, RFC 8152 §5.3).

    Everything before the Partial IV depends only on the algorithm, the
    'kid' and the Partial IV's length: made once per algorithm and 'kid'
    (:func:`_aad_heads`, a bounded cache).
    """
    length = len(request_piv)
    if 0 < length <= _MAX_PIV:
        return _aad_heads(algorithm_id, request_kid)[length] + request_piv + b"\x40"
    inner = external_aad(algorithm_id, request_kid, request_piv)
    return _ENC_STRUCTURE + _cbor_head(0x40, len(inner)) + inner


#: The longest Partial IV (§6.1: 5 bytes).
_MAX_PIV = 5


@functools.lru_cache(maxsize=1024)
def _aad_heads(algorithm_id: int, request_kid: bytes) -> tuple[bytes, ...]:
    """The AAD up to the Partial IV, for each Partial IV length 0..5 (by index)."""
    heads = []
    for length in range(_MAX_PIV + 1):
        piv = bytes(length)
        inner = external_aad(algorithm_id, request_kid, piv)
        whole = _ENC_STRUCTURE + _cbor_head(0x40, len(inner)) + inner
        heads.append(whole[: len(whole) - length - 1])
    return tuple(heads)


def _cbor_head(major: int, value: int) -> bytes:
    """A CBOR head: major type ``major`` (its top three bits) and argument ``value``."""
    if value < 24:
        return bytes((major | value,))
    if value < 0x100:
        return bytes((major | 24, value))
    if value < 0x10000:
        return bytes((major | 25,)) + value.to_bytes(2, "big")
    if value < 0x1_0000_0000:
        return bytes((major | 26,)) + value.to_bytes(4, "big")
    return bytes((major | 27,)) + value.to_bytes(8, "big")


def _cbor_int(value: int) -> bytes:
    """A CBOR integer (COSE algorithm identifiers may be negative)."""
    return _cbor_head(0x00, value) if value >= 0 else _cbor_head(0x20, -1 - value)


def plaintext(code: int, inner: list[tuple[int, bytes]], payload: bytes) -> bytes:
    """The plaintext of §5.3: the Code, the Inner options, 0xFF and the payload if any."""
    try:
        return bytes((code,)) + encode_options(inner, payload)
    except MessageEncodeError as error:
        raise OscoreProtectError(str(error)) from None


def parse_plaintext(data: bytes) -> tuple[Code, list[tuple[int, bytes]], bytes]:
    """The Code, Inner options and payload of a decrypted plaintext (§5.3).

    Raises :class:`~coap_trio.errors.OscoreVerificationError`
    (:attr:`~coap_trio.errors.OscoreFailure.DECODE`) when it is not a CoAP
    message body or carries an OSCORE option.
    """
    if not data:
        raise OscoreVerificationError(OscoreFailure.DECODE, "empty plaintext")
    try:
        items, payload = decode_options(data, 1, len(data))
    except MessageFormatError as error:
        detail = f"plaintext: {error.kind.value}"
        raise OscoreVerificationError(OscoreFailure.DECODE, detail) from None
    if any(number == _OSCORE for number, _ in items):
        raise OscoreVerificationError(OscoreFailure.DECODE, "an Inner OSCORE option")
    return CODE_TABLE[data[0]], items, payload


def outer_request_code(request: Message) -> Code:
    """0.05 FETCH for a request with Observe, 0.02 POST otherwise (§4.2, §4.1.3.5)."""
    return Code.FETCH if _OBSERVE in request.opt else Code.POST


def outer_response_code(response: Message) -> Code:
    """2.05 Content for a response with Observe, 2.04 Changed otherwise (§4.2, §4.1.3.5)."""
    return Code.CONTENT if _OBSERVE in response.opt else Code.CHANGED


def _outer_message(
    original: Message, code: Code, outer: list[tuple[int, bytes]], option: bytes, body: bytes
) -> Message:
    items = [*outer, (_OSCORE, option)]
    items.sort(key=_number)
    return Message.from_fields(
        code,
        original.mtype,
        original.mid,
        original.token,
        Options.from_wire(items),
        body,
        original.remote,
    )


def protect_request(context: SecurityContext, request: Message) -> tuple[Message, ClientBinding]:
    """The OSCORE request for ``request`` and what the client keeps for its responses (§8.1).

    Takes the next Sender Sequence Number as Partial IV; the OSCORE option
    carries it, the 'kid' (our Sender ID) and, when the context has one, the
    ID Context as 'kid context'. Type, message ID, token and remote are
    copied. Raises :class:`~coap_trio.errors.OscoreProtectError` (and its
    subclasses for an exhausted or unstorable sequence number).
    """
    code = request.code
    if not code.is_request():
        raise OscoreProtectError(f"{code.dotted} is not a request code")
    inner, outer = split_options(request.opt.raw_items, request=True)
    body = plaintext(code, inner, request.payload)
    piv = context.new_partial_iv()
    kid = context.sender_id
    nonce = context.nonce(kid, piv)
    option = _request_option(piv, context.id_context, kid)
    associated = aad(context.algorithm.cose_id, kid, piv)
    ciphertext = context.seal(nonce, body, associated)
    # Observe is Outer too (§4.1.3.5.1): a registration is Observe 0 there.
    observe = None
    for number, value in outer:
        if number == _OBSERVE:
            observe = value
            break
    outer_code = Code.POST if observe is None else Code.FETCH  # (outer_request_code)
    protected = _outer_message(request, outer_code, outer, option, ciphertext)
    # Observe 0 (a registration): no bytes, or zero bytes of a uint (at most 3).
    registers = observe is not None and len(observe) <= 3 and not any(observe)
    return protected, ClientBinding(context, piv, request, observe=registers)


def _request_option(piv: bytes, kid_context: bytes | None, kid: bytes) -> bytes:
    """The OSCORE option of a request: Partial IV, 'kid context' if any, 'kid' (§6.1).

    What follows the Partial IV is the same for every request of a context
    (:func:`_request_option_tail`, a bounded cache).
    """
    length = len(piv)
    if not 1 <= length <= _MAX_PIV:
        raise ValueError(f"a Partial IV of {length} bytes (1 to 5)")
    flags, tail = _request_option_tail(kid_context, kid)
    value = bytes((flags | length,)) + piv + tail
    if len(value) > MAX_OPTION_LENGTH:
        raise ValueError(f"an OSCORE option value of {len(value)} bytes (at most 255)")
    return value


@functools.lru_cache(maxsize=1024)
def _request_option_tail(kid_context: bytes | None, kid: bytes) -> tuple[int, bytes]:
    """The flags and the bytes after the Partial IV of a request's OSCORE option."""
    value = encode_oscore_option(
        CompressedHeader(partial_iv=b"\0", kid_context=kid_context, kid=kid)
    )
    return value[0] & ~0x07, value[2:]


def protect_response(
    response: Message, binding: ServerBinding, *, new_partial_iv: bool = False
) -> Message:
    """The OSCORE response for ``response`` to the request of ``binding`` (§8.3).

    The request's nonce is reused (no Partial IV in the response) only when
    ``binding.nonce_reusable`` and the response is neither a notification
    nor asked ``new_partial_iv``; otherwise the next Sender Sequence Number
    is the response's Partial IV. Notifications (responses with Observe)
    always carry their own (§4.1.3.5.2, §8.3.1). Raises
    :class:`~coap_trio.errors.OscoreProtectError` and its subclasses.
    """
    code = response.code
    if not code.is_response():
        raise OscoreProtectError(f"{code.dotted} is not a response code")
    context = binding.context
    inner, outer = split_options(response.opt.raw_items, request=False)
    body = plaintext(code, inner, response.payload)
    notification = _OBSERVE in response.opt
    if binding.nonce_reusable and not notification and not new_partial_iv:
        binding.nonce_reusable = False
        nonce = context.nonce(binding.request_kid, binding.request_piv)
        header = CompressedHeader()
    else:
        piv = context.new_partial_iv()
        binding.nonce_reusable = False  # a later response cannot tell which came first
        nonce = context.nonce(context.sender_id, piv)
        header = CompressedHeader(partial_iv=piv)
    associated = aad(context.algorithm.cose_id, binding.request_kid, binding.request_piv)
    ciphertext = context.seal(nonce, body, associated)
    return _outer_message(
        response, outer_response_code(response), outer, encode_oscore_option(header), ciphertext
    )


def open_ciphertext(
    context: SecurityContext,
    ciphertext: bytes,
    nonce: bytes,
    request_kid: bytes,
    request_piv: bytes,
) -> bytes | None:
    """The plaintext of ``ciphertext`` under the Recipient Key, or None when it does not verify."""
    if len(ciphertext) < context.algorithm.tag_length + 1:  # + the Code byte
        return None
    associated = aad(context.algorithm.cose_id, request_kid, request_piv)
    return context.open(nonce, ciphertext, associated)


def decrypted_message(protected: Message, data: bytes) -> Message:
    """The original message: ``protected``'s header fields, the plaintext's Code,
    options merged (§8.2 step 7, §8.4 step 6) and payload.

    Raises :class:`~coap_trio.errors.OscoreVerificationError`
    (:attr:`~coap_trio.errors.OscoreFailure.DECODE`) for a plaintext that is
    not a CoAP message body.
    """
    code, inner, payload = parse_plaintext(data)
    items = merge_options(protected.opt.raw_items, inner)
    return Message.from_fields(
        code,
        protected.mtype,
        protected.mid,
        protected.token,
        Options.from_wire(items),
        payload,
        protected.remote,
    )


def _number(item: tuple[int, bytes]) -> int:
    return item[0]
