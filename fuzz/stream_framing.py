"""Fuzz target: CoAP over TCP/TLS framing and WebSocket messages (RFC 8323 §3.2, §4.4).

The input is a byte stream cut into chunks (sizes from the input's first
bytes) and fed to a ``StreamDecoder``: ``feed`` returns frames or raises
FrameTooLarge, and after that error raises it again; the frames it returns
are the stream's consecutive prefix.
Each frame is decoded with ``decode_frame`` (a Message with no type or
MID, re-encoded by ``encode_stream`` to the same bytes, or
MessageFormatError), and the whole input with ``decode_websocket``
(likewise with ``encode_websocket``). Nothing else may escape.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import atheris
from common import instrumented, main

with instrumented():
    from coap_trio.errors import FrameTooLarge, MessageFormatError
    from coap_trio.protocol.framing import (
        StreamDecoder,
        decode_frame,
        decode_websocket,
        encode_stream,
        encode_websocket,
    )


def check_frame(frame: bytes) -> None:
    try:
        message = decode_frame(frame)
    except MessageFormatError:
        return
    assert message.mtype is None
    assert message.mid is None
    assert encode_stream(message) == frame


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    limit = provider.ConsumeIntInRange(2, 2048)
    cuts = [provider.ConsumeIntInRange(0, 64) for _ in range(provider.ConsumeIntInRange(0, 8))]
    stream = provider.ConsumeBytes(len(data))
    decoder = StreamDecoder(limit)
    frames: list[bytes] = []
    position = 0
    failed = False
    for size in [*cuts, len(stream)]:
        chunk = stream[position : position + size]
        position += len(chunk)
        try:
            frames += decoder.feed(chunk if size % 2 else bytearray(chunk))
        except FrameTooLarge:
            failed = True
            try:
                decoder.feed(b"")
            except FrameTooLarge:
                pass
            else:
                raise AssertionError("a failed decoder accepted more data") from None
            break
    joined = b"".join(frames)
    assert stream.startswith(joined)
    if not failed:
        assert decoder.buffered == len(stream) - len(joined)
    for frame in frames:
        assert type(frame) is bytes
        assert len(frame) <= limit
        check_frame(frame)
    try:
        message = decode_websocket(stream)
    except MessageFormatError:
        return
    assert encode_websocket(message) == stream


if __name__ == "__main__":
    main(test_one_input)
