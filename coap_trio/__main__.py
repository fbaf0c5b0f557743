"""The ``coap-trio`` command (also ``python -m coap_trio``).

Verbs today: ``demo`` (a server and a client on loopback, see
:mod:`coap_trio.demo`) and ``codec-demo`` (the message layer alone: a request
and a response encoded to the wire and decoded back). The client and server
verbs arrive with the CLI issue.
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
    verbs.add_parser("demo", help="serve and query real CoAP over loopback, and print it")
    verbs.add_parser("codec-demo", help="encode and decode a request and a response")
    args = parser.parse_args(argv)
    if args.verb == "demo":
        import trio

        from .demo import run_demo

        return trio.run(run_demo)
    if args.verb == "codec-demo":
        return _demo()
    parser.error(f"unknown verb {args.verb}")  # pragma: no cover - argparse rejects first
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
