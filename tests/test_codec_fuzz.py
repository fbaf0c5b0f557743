"""Deterministic, seeded fuzzing of coap_trio.codec.decode.

Two loops with plain ``random.Random(seed)`` (no Hypothesis, so every run
decodes the same datagrams): purely random datagrams, and mutations of a
corpus of valid messages built through the Message API. For each datagram,
``decode`` must return a Message or raise MessageFormatError; anything else
fails with the seed, the iteration and the offending bytes. A decoded message
must re-encode to the very same bytes (the codec has no non-minimal forms, see
tests/test_codec.py) and decode again to an equal message, and reading it
through the typed option accessors must never raise.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from coap_trio import (
    ACK,
    CON,
    NON,
    RST,
    BlockValue,
    Code,
    ContentFormat,
    FormatErrorKind,
    Message,
    MessageFormatError,
    Options,
    Type,
)
from coap_trio.codec import decode, encode, reset_for
from coap_trio.options import typed_option_names

RANDOM_SEED = 0xC0A7_2014
MUTATION_SEED = 7252
RANDOM_COUNT = 40_000
MUTATION_COUNT = 80_000
#: Read the typed options of every n-th datagram that decodes.
READ_OPTIONS_EVERY = 4

TYPED_NAMES = tuple(sorted(set(typed_option_names().values())))


def _corpus() -> list[bytes]:
    """Valid datagrams covering requests, responses, blocks, observe and odd options."""
    messages: list[Message] = [
        Message(
            code=Code.GET,
            mtype=CON,
            mid=0x7D34,
            token=b"\x20",
            uri="coap://[2001:db8::1]:61616/sensors/temp?unit=C&precision=2",
        ),
        Message(
            code=Code.GET,
            mtype=CON,
            mid=1,
            token=bytes(range(8)),
            uri="coap://example.com/.well-known/core?rt=temperature-c",
            accept=ContentFormat.LINKFORMAT,
            observe=0,
        ),
        Message(
            code=Code.POST,
            mtype=CON,
            mid=0xFFFF,
            token=b"post",
            uri="coap://192.0.2.1/upload",
            content_format=ContentFormat.JSON,
            block1=BlockValue(3, True, 6),
            size1=4096,
            payload=b'{"temperature": 22.3, "unit": "C"}' * 3,
        ),
        Message(
            code=Code.CONTENT,
            mtype=ACK,
            mid=0x1234,
            token=b"\xde\xad\xbe\xef",
            etag=(b"\x01\x02\x03\x04",),
            max_age=60,
            content_format=ContentFormat.TEXT,
            block2=BlockValue(0, True, 2),
            size2=1000,
            payload=bytes(range(64)),
        ),
        Message(
            code=Code.CONTENT,
            mtype=NON,
            mid=0x4242,
            token=b"obs",
            observe=123456,
            content_format=ContentFormat.CBOR,
            payload=b"\xa1\x61t\xf9\x4d\x93",
        ),
        Message(
            code=Code.CREATED,
            mtype=ACK,
            mid=77,
            token=b"\x07",
            location_path=("items", "42"),
            location_query=("v=1",),
        ),
        Message(
            code=Code.PUT,
            mtype=CON,
            mid=5,
            token=b"\x99",
            uri="coap://[::1]/config",
            if_match=(b"\xaa\xbb", b""),
            if_none_match=True,
            payload=b"x" * 300,
        ),
        Message(
            code=Code.NOT_FOUND,
            mtype=NON,
            mid=0x952A,
            token=b"\x86",
            payload=b"no such resource",
        ),
        Message(code=Code.EMPTY, mtype=ACK, mid=0x7D38),
        Message(code=Code.EMPTY, mtype=RST, mid=0xAD7C),
        Message(code=Code.EMPTY, mtype=CON, mid=0),
        Message(
            code=Code.FETCH,
            mtype=CON,
            mid=9,
            token=b"f",
            uri="coap://[2001:db8::2]/long",
            uri_query=("q=" + "a" * 250,),
            hop_limit=16,
            echo=b"\x01" * 40,
            request_tag=(b"", b"\x05"),
            payload=b"\x00",
        ),
        Message(code=Code(0xE1), mtype=CON, mid=3, token=b"s", payload=b"signal"),
        Message(code=Code(0x3F), mtype=NON, mid=4, payload=b"reserved class 1"),
    ]
    proxied = Message(code=Code.GET, mtype=CON, mid=10, token=b"p")
    proxied.set_request_uri(
        "coap://upstream.example/" + "segment/" * 80, proxy="coap://[2001:db8::3]"
    )
    messages.append(proxied)

    unknown = Message(code=Code.POST, mtype=CON, mid=11, token=b"u", uri="coap://[::1]/x")
    unknown.opt.add(2, b"elective-unknown")
    unknown.opt.add(2048, b"")
    unknown.opt.add(2049, b"\x00\x01")
    unknown.opt.add(65000, bytes(range(256)) + b"tail" * 20)  # a 14-form length
    unknown.opt.add(65001, b"critical")
    unknown.opt.add(65535, b"")
    unknown.payload = b"payload after odd options"
    messages.append(unknown)

    odd = Message(code=Code.CONTENT, mtype=ACK, mid=12, token=b"o")
    odd.opt = Options(
        [
            (4, b"123456789"),  # ETag too long
            (5, b"\x01"),  # If-None-Match with a value
            (11, b"\xff\xfe"),  # Uri-Path not UTF-8
            (12, b"\x00\x00\x32"),  # Content-Format too long
            (12, b"\x32"),  # a second Content-Format
            (14, b"\x00\x00\x00\x00\x3c"),  # Max-Age too long
            (23, b"\x01\x02\x03\x04"),  # Block2 too long
            (268, b"x" * 13),
            (269, b"y" * 268),
            (537, b"z" * 269),
        ]
    )
    odd.payload = b"!"
    messages.append(odd)

    corpus = [encode(message) for message in messages]
    for wire in corpus:
        assert encode(decode(wire)) == wire
    return corpus


def _random_datagram(rng: random.Random) -> bytes:
    """0..64 random bytes; usually version 1 and a legal token length, to get past the header."""
    data = bytearray(rng.randbytes(rng.randrange(65)))
    if data and rng.random() < 0.85:
        data[0] = 0x40 | (data[0] & 0x3F)
        if rng.random() < 0.8:
            data[0] = (data[0] & 0xF0) | rng.randrange(9)
    return bytes(data)


INTERESTING = (0x00, 0x01, 0x0C, 0x0D, 0x0E, 0x0F, 0xC0, 0xD0, 0xDD, 0xE0, 0xEE, 0xF0, 0xFF)


def _mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        how = rng.randrange(8)
        size = len(buf)
        if how == 0 and size:  # flip 1..4 bits
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(size)] ^= 1 << rng.randrange(8)
        elif how == 1:  # insert 1..3 bytes
            at = rng.randrange(size + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 3))
        elif how == 2 and size:  # delete 1..3 bytes
            at = rng.randrange(size)
            del buf[at : at + rng.randint(1, 3)]
        elif how == 3:  # truncate
            del buf[rng.randrange(size + 1) :]
        elif how == 4:  # splice: our prefix + another datagram's suffix
            other = rng.choice(corpus)
            buf = buf[: rng.randrange(size + 1)] + other[rng.randrange(len(other) + 1) :]
        elif how == 5 and size:  # an interesting byte where option headers live
            buf[rng.randrange(size)] = rng.choice(INTERESTING)
        elif how == 6 and size:  # duplicate a chunk
            at = rng.randrange(size)
            chunk = buf[at : at + rng.randint(1, 8)]
            to = rng.randrange(size + 1)
            buf[to:to] = chunk
        elif how == 7 and size > 4:  # overwrite a byte past the header with a random one
            buf[rng.randrange(4, size)] = rng.randrange(256)
    return bytes(buf)


def _check(data: bytes, where: str, *, read_options: bool = True) -> str:
    """Decode one datagram and check it; returns "ok" or the error kind's name.

    With ``read_options``, a decoded message is also read through every typed
    accessor, ``malformed()`` and ``repr()`` (the costliest part, so sampled).
    """
    try:
        message = decode(data)
    except MessageFormatError as error:
        if error.should_reset:
            rst = reset_for(error)
            if rst is None or rst.mtype is not Type.RST or rst.mid != error.mid:
                pytest.fail(f"{where}: bad reset for {data.hex()}: {rst!r}")
        elif reset_for(error) is not None:
            pytest.fail(f"{where}: unexpected reset for {data.hex()}")
        return error.kind.name
    except Exception as exc:
        pytest.fail(f"{where}: decode({data.hex()}) raised {exc!r}")
    try:
        wire = encode(message)
        again = decode(wire)
        if read_options:
            opt = message.opt
            for name in TYPED_NAMES:
                getattr(opt, name)
            opt.malformed()
            repr(message)
    except Exception as exc:
        pytest.fail(f"{where}: re-encoding or reading {data.hex()} raised {exc!r}")
    if wire != data:
        pytest.fail(f"{where}: {data.hex()} re-encoded as {wire.hex()}")
    if again != message:
        pytest.fail(f"{where}: {data.hex()} decoded to {message!r}, then to {again!r}")
    return "ok"


def _run(seed: int, count: int, make: Callable[[random.Random], bytes]) -> Counter[str]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for i in range(count):
        data = make(rng)
        where = f"seed={seed} iteration={i}"
        outcomes[_check(data, where, read_options=i % READ_OPTIONS_EVERY == 0)] += 1
    return outcomes


def test_fuzz_random_datagrams() -> None:
    outcomes = _run(RANDOM_SEED, RANDOM_COUNT, _random_datagram)
    assert outcomes.total() == RANDOM_COUNT
    # The generator reaches every kind of malformation, and some datagrams decode.
    assert set(outcomes) == {"ok"} | {kind.name for kind in FormatErrorKind}, outcomes
    assert outcomes["ok"] > RANDOM_COUNT // 50, outcomes


def test_fuzz_mutated_corpus() -> None:
    corpus = _corpus()

    def make(rng: random.Random) -> bytes:
        return _mutate(rng, rng.choice(corpus), corpus)

    outcomes = _run(MUTATION_SEED, MUTATION_COUNT, make)
    assert outcomes.total() == MUTATION_COUNT
    assert set(outcomes) == {"ok"} | {kind.name for kind in FormatErrorKind}, outcomes
    assert outcomes["ok"] > MUTATION_COUNT // 10, outcomes


def test_fuzz_corpus_itself_round_trips() -> None:
    for wire in _corpus():
        assert _check(wire, "corpus") == "ok"
