"""The ``coap-trio`` command (also ``python -m coap_trio``).

For now it has one verb, ``demo``, which shows the message layer at work:
it builds requests and responses, encodes them to the bytes that go on the
wire, decodes them back and prints both. The client and server verbs arrive
with the messaging and CLI issues.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import codec
from .message import Message
from .numbers import CON, CONTENT, GET, ContentFormat, Type


def _hexdump(data: bytes) -> str:
    return " ".join(f"{byte:02x}" for byte in data)


def _demo() -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coap-trio`` console script."""
    parser = argparse.ArgumentParser(prog="coap-trio", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("demo", help="encode and decode a request and a response, and print them")
    args = parser.parse_args(argv)
    if args.verb == "demo":
        return _demo()
    parser.error(f"unknown verb {args.verb}")  # pragma: no cover - argparse rejects first
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
