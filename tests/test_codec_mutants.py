"""Gaps in the codec's tests that mutation testing found (docs/testing.md, "Mutation testing").

Each test pins a behaviour that a surviving mutant of ``coap_trio/codec.py``
changed without any other test noticing.
"""

from __future__ import annotations

import pytest

from coap_trio.codec import decode_options, encode
from coap_trio.errors import FormatErrorKind, MessageEncodeError, MessageFormatError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type


def test_encode_errors_name_what_is_wrong() -> None:
    """The encoder's refusals say which field is at fault (a caller's bug to find)."""
    with pytest.raises(MessageEncodeError, match=r"^message type \(mtype\) is not set$"):
        encode(Message(code=Code.GET, mid=1))
    with pytest.raises(
        MessageEncodeError,
        match=r"^an Empty message \(0\.00\) carries no token, options or payload$",
    ):
        encode(Message(code=Code.EMPTY, mtype=Type.CON, mid=1, token=b"\x01"))


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"\xf0", FormatErrorKind.RESERVED_DELTA), (b"\x0f", FormatErrorKind.RESERVED_LENGTH)],
)
def test_decode_options_reports_offset_zero_as_an_int(data: bytes, kind: FormatErrorKind) -> None:
    """decode_options (public: the stream framing's too) read from the start of its
    buffer: a reserved nibble in the very first byte is reported at offset 0, an
    int like every other offset (MessageFormatError.offset), not None."""
    with pytest.raises(MessageFormatError) as caught:
        decode_options(data, 0, len(data))
    assert caught.value.kind is kind
    assert caught.value.offset == 0
    assert caught.value.offset is not None
