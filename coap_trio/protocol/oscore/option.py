"""The OSCORE option value: the compressed COSE header (RFC 8613 §6.1).

Owns encoding and decoding the option value: the flag byte (three reserved
bits, h, k and the Partial IV length n), the Partial IV, the 'kid context'
with its length byte and the 'kid'. Whatever bytes come in,
:func:`decode_oscore_option` returns a :class:`CompressedHeader` or raises
:class:`~coap_trio.errors.OscoreVerificationError` with
:attr:`~coap_trio.errors.OscoreFailure.DECODE`; nothing else escapes.

Must not know about keys, contexts or what the fields are used for.
"""

from __future__ import annotations

import attrs

from ...errors import OscoreFailure, OscoreVerificationError

__all__ = ["MAX_OPTION_LENGTH", "CompressedHeader", "decode_oscore_option", "encode_oscore_option"]

#: The longest OSCORE option value (the registry's 0-255, RFC 8613 §2).
MAX_OPTION_LENGTH = 255

_RESERVED = 0xE0
_H = 0x10
_K = 0x08
_N = 0x07


@attrs.frozen
class CompressedHeader:
    """The fields of a compressed COSE_Encrypt0 header (§6.1): each None when absent.

    An empty 'kid' (``b""``) is present, not absent: the empty Sender ID is
    legitimate (§3.3).
    """

    #: The Partial IV (1 to 5 bytes), or None.
    partial_iv: bytes | None = None
    #: The 'kid context' (0 to 255 bytes), or None.
    kid_context: bytes | None = None
    #: The 'kid', or None.
    kid: bytes | None = None


def encode_oscore_option(header: CompressedHeader) -> bytes:
    """The option value for ``header``; empty when no field is present (§2).

    Raises ``ValueError`` for a Partial IV that is not 1 to 5 bytes, a 'kid
    context' over 255 bytes or a value over 255 bytes.
    """
    flags = 0
    parts = [b""]
    piv = header.partial_iv
    if piv is not None:
        if not 1 <= len(piv) <= 5:
            raise ValueError(f"a Partial IV of {len(piv)} bytes (1 to 5)")
        flags |= len(piv)
        parts.append(piv)
    context = header.kid_context
    if context is not None:
        if len(context) > 255:
            raise ValueError(f"a 'kid context' of {len(context)} bytes (at most 255)")
        flags |= _H
        parts.append(bytes((len(context),)))
        parts.append(context)
    if header.kid is not None:
        flags |= _K
        parts.append(header.kid)
    if not flags:
        return b""
    parts[0] = bytes((flags,))
    value = b"".join(parts)
    if len(value) > MAX_OPTION_LENGTH:
        raise ValueError(f"an OSCORE option value of {len(value)} bytes (at most 255)")
    return value


def _malformed(detail: str) -> OscoreVerificationError:
    return OscoreVerificationError(OscoreFailure.DECODE, detail)


def decode_oscore_option(value: bytes) -> CompressedHeader:
    """Parse an OSCORE option value (§6.1).

    An empty value (and a lone zero flag byte, its non-minimal spelling) has
    no field. Reserved flag bits, n = 6 or 7, a value cut short or longer
    than 255 bytes raise :class:`~coap_trio.errors.OscoreVerificationError`
    (:attr:`~coap_trio.errors.OscoreFailure.DECODE`).
    """
    size = len(value)
    if size == 0:
        return CompressedHeader()
    if size > MAX_OPTION_LENGTH:
        raise _malformed(f"OSCORE option of {size} bytes")
    flags = value[0]
    if flags & _RESERVED:
        raise _malformed(f"reserved flag bits set in 0x{flags:02x}")
    length = flags & _N
    if length > 5:
        raise _malformed(f"reserved Partial IV length {length}")
    position = 1
    piv = None
    if length:
        if position + length > size:
            raise _malformed("the Partial IV is cut short")
        piv = bytes(value[position : position + length])
        position += length
    context = None
    if flags & _H:
        if position >= size:
            raise _malformed("the 'kid context' length is missing")
        context_length = value[position]
        position += 1
        if position + context_length > size:
            raise _malformed("the 'kid context' is cut short")
        context = bytes(value[position : position + context_length])
        position += context_length
    kid = None
    if flags & _K:
        kid = bytes(value[position:])
    elif position != size:
        raise _malformed("bytes after the last field")
    return CompressedHeader(partial_iv=piv, kid_context=context, kid=kid)
