"""``coap-trio codec-demo``: the message layer alone, no network.

A request and a response are encoded to the wire and decoded back, and each
step is printed; a round trip that changes the message is an error (exit
status 1).
"""

from __future__ import annotations

import sys

from .. import codec
from ..message import Message
from ..numbers import CON, CONTENT, GET, ContentFormat, Type

__all__ = ["codec_demo"]


def _hexdump(data: bytes) -> str:
    return " ".join(f"{byte:02x}" for byte in data)


def codec_demo() -> int:
    """Encode and decode a request and a response, print them; returns the exit status."""
    request = Message(
        code=GET,
        mtype=CON,
        mid=0x7D34,
        token=b"\x71\x2c\x9e\x01",
        uri="coap://[::1]/sensors/temperature?unit=celsius",
        accept=ContentFormat.JSON,
        observe=0,
    )
    response = Message(
        code=CONTENT,
        mtype=Type.ACK,
        mid=request.mid,
        token=request.token,
        payload=b'{"temperature": 21.5}',
        content_format=ContentFormat.JSON,
        observe=12,
        max_age=30,
    )
    for label, message in (("request", request), ("response", response)):
        wire = codec.encode(message)
        decoded = codec.decode(wire, remote=message.remote)
        print(f"{label}:  {message!r}")
        print(f"  wire ({len(wire)} bytes): {_hexdump(wire)}")
        print(f"  decoded: {decoded!r}")
        print(f"  options: {decoded.opt!r}")
        if decoded != message:
            print("  ROUND TRIP MISMATCH", file=sys.stderr)
            return 1
    echoed = codec.decode(codec.encode(request), remote=request.remote)
    print(f"request URI read back from the options: {echoed.get_request_uri()}")
    return 0
