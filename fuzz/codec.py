"""Fuzz target: the UDP codec (``coap_trio.codec``).

``decode`` must return a Message or raise MessageFormatError and nothing
else, for ``bytes``, ``bytearray`` and ``memoryview`` alike; a decoded
message keeps its ``remote``, re-encodes to the very same bytes (the codec
has no non-minimal forms) and can be read through every typed option
accessor; ``reset_for`` answers every MessageFormatError without raising.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import instrumented, main

with instrumented():
    from coap_trio.codec import decode, encode, reset_for
    from coap_trio.errors import MessageFormatError
    from coap_trio.options import typed_option_names

TYPED_NAMES = tuple(sorted(set(typed_option_names().values())))
REMOTE = ("192.0.2.1", 5683)


def failure(data: bytearray | memoryview) -> tuple[object, ...] | None:
    """What ``decode`` says is wrong with ``data``, or None if it decodes."""
    try:
        decode(data, REMOTE)
    except MessageFormatError as error:
        return (error.kind, error.offset, error.mid)
    return None


def test_one_input(data: bytes) -> None:
    try:
        message = decode(data, REMOTE)
    except MessageFormatError as error:
        reply = reset_for(error, REMOTE)
        if reply is not None:
            encode(reply)
        expected = (error.kind, error.offset, error.mid)
        for other in (bytearray(data), memoryview(data)):
            if failure(other) != expected:
                raise AssertionError(f"{type(other).__name__} fails otherwise") from None
        return
    assert message.remote == REMOTE
    assert encode(message) == data
    assert decode(bytearray(data), REMOTE) == message
    assert decode(memoryview(data), REMOTE) == message
    options = message.opt
    for name in TYPED_NAMES:
        getattr(options, name)
    options.malformed()
    repr(message)


if __name__ == "__main__":
    main(test_one_input)
