"""Encode/decode speed of coap_trio's codec against aiocoap's, side by side.

Run by hand (not collected by pytest)::

    python benchmarks/codec.py            # full run, well under a minute
    python benchmarks/codec.py --quick    # about 5 seconds

For each case (a typical request, a typical response, a block-wise response)
the script first checks that both encoders produce identical bytes and that
each library decodes the other's datagram to the same fields, then times
``encode`` and ``decode`` of each library with :mod:`timeit` (several repeats,
each of a calibrated number of loops) and prints the median and minimum time
per operation in microseconds with the ratio aiocoap / coap_trio.

The target is for coap_trio to be at least 3x faster than aiocoap in both
directions for every case (compared on the medians).

Note: the two decoders do not do the same amount of work. aiocoap parses every
option value into a typed object while decoding; coap_trio keeps the raw bytes
and parses on access. That is a design difference the numbers include.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import timeit
import warnings
from dataclasses import dataclass
from typing import Any

import aiocoap

import coap_trio
from coap_trio.block import BlockValue
from coap_trio.codec import decode, encode
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type

TARGET_RATIO = 3.0


@dataclass(frozen=True)
class Case:
    name: str
    trio: Message
    aio: Any


def _aio_message(**kwargs: Any) -> Any:
    # aiocoap deprecates setting mid/mtype/token in its constructor; a codec
    # benchmark has to.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return aiocoap.Message(**kwargs)


def build_cases() -> list[Case]:
    token = b"\x8a\x01\x5c\xe3"
    request = Case(
        "request (CON GET, Uri-Path x2, Uri-Query, Accept)",
        Message(
            code=Code.GET,
            mtype=Type.CON,
            mid=0x7D34,
            token=token,
            uri_path=("sensors", "temperature"),
            uri_query=("unit=C",),
            accept=50,
        ),
        _aio_message(
            code=aiocoap.GET,
            mtype=aiocoap.CON,
            mid=0x7D34,
            token=token,
            uri_path=("sensors", "temperature"),
            uri_query=("unit=C",),
            accept=50,
        ),
    )
    body = b'{"t":22.5,"unit":"C"}'
    response = Case(
        "response (ACK 2.05, C-F, Max-Age, ETag, 21 B)",
        Message(
            code=Code.CONTENT,
            mtype=Type.ACK,
            mid=0x7D34,
            token=token,
            payload=body,
            content_format=50,
            max_age=60,
            etag=(b"\x5a\x17\x03\xe1",),
        ),
        _aio_message(
            code=aiocoap.CONTENT,
            mtype=aiocoap.ACK,
            mid=0x7D34,
            token=token,
            payload=body,
            content_format=50,
            max_age=60,
            etags=(b"\x5a\x17\x03\xe1",),
        ),
    )
    block = bytes(range(256)) * 4
    blockwise = Case(
        "block-wise (ACK 2.05, Block2, Size2, 1024 B)",
        Message(
            code=Code.CONTENT,
            mtype=Type.ACK,
            mid=0x7D35,
            token=token,
            payload=block,
            block2=BlockValue(1, True, 6),
            size2=4096,
        ),
        _aio_message(
            code=aiocoap.CONTENT,
            mtype=aiocoap.ACK,
            mid=0x7D35,
            token=token,
            payload=block,
            block2=(1, True, 6),
            size2=4096,
        ),
    )
    return [request, response, blockwise]


def _trio_fields(message: Message) -> tuple[object, ...]:
    return (
        int(message.mtype or 0),
        int(message.code),
        message.mid,
        message.token,
        [(int(n), raw) for n, raw in message.opt],
        message.payload,
    )


def _aio_fields(message: Any) -> tuple[object, ...]:
    return (
        int(message.mtype),
        int(message.code),
        message.mid,
        message.token,
        [(int(o.number), o.encode()) for o in message.opt.option_list()],
        message.payload,
    )


def verify(case: Case) -> bytes:
    """Identical bytes from both encoders, and the same fields from both decoders."""
    trio_bytes = encode(case.trio)
    aio_bytes = case.aio.encode()
    if trio_bytes != aio_bytes:
        raise SystemExit(
            f"{case.name}: encoders disagree\n"
            f"  coap_trio: {trio_bytes.hex()}\n  aiocoap:   {aio_bytes.hex()}"
        )
    if _trio_fields(decode(aio_bytes)) != _aio_fields(aiocoap.Message.decode(trio_bytes)):
        raise SystemExit(f"{case.name}: decoders disagree")
    return trio_bytes


@dataclass(frozen=True)
class Timing:
    median_us: float
    min_us: float


def _loops_for(timer: timeit.Timer, seconds: float) -> int:
    """How many loops make one repeat last about ``seconds``."""
    loops, elapsed = 1, timer.timeit(1)
    while elapsed < 0.02:  # grow the loop count until the time is measurable
        loops *= 10
        elapsed = timer.timeit(loops)
    return max(1, int(loops * seconds / elapsed))


def measure_pair(
    trio_stmt: str, aio_stmt: str, namespace: dict[str, Any], repeat: int, seconds: float
) -> tuple[Timing, Timing]:
    """Time both statements with timeit, alternating their repeats.

    The statements are compiled inline into timeit's loop (no call overhead is
    added to either side). Alternating trio/aio repeats exposes both to the
    same background load, which keeps the ratio meaningful on a busy machine.
    """
    timers = [timeit.Timer(stmt, globals=namespace) for stmt in (trio_stmt, aio_stmt)]
    loops = [_loops_for(timer, seconds) for timer in timers]
    runs: list[list[float]] = [[], []]
    for _ in range(repeat):
        for side, timer in enumerate(timers):
            runs[side].append(timer.timeit(loops[side]) / loops[side])
    trio_t, aio_t = (Timing(statistics.median(r) * 1e6, min(r) * 1e6) for r in runs)
    return trio_t, aio_t


def measure_cases(repeat: int, seconds: float) -> list[tuple[Case, str, int, Timing, Timing]]:
    """Verify every case, then time it: (case, "encode"/"decode", bytes, coap_trio, aiocoap)."""
    out = []
    for case in build_cases():
        datagram = verify(case)
        namespace: dict[str, Any] = {
            "trio_encode": encode,
            "trio_decode": decode,
            "aio_decode": aiocoap.Message.decode,
            "trio_msg": case.trio,
            "aio_msg": case.aio,
            "datagram": datagram,
        }
        statements = [
            ("encode", "trio_encode(trio_msg)", "aio_msg.encode()"),
            ("decode", "trio_decode(datagram)", "aio_decode(datagram)"),
        ]
        for op, trio_stmt, aio_stmt in statements:
            trio_t, aio_t = measure_pair(trio_stmt, aio_stmt, namespace, repeat, seconds)
            out.append((case, op, len(datagram), trio_t, aio_t))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~5 s run (fewer, shorter repeats)")
    parser.add_argument("--repeat", type=int, help="timeit repeats per measurement")
    parser.add_argument("--seconds", type=float, help="target duration of one repeat (s)")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when the target is missed"
    )
    args = parser.parse_args(argv)
    repeat = args.repeat or (9 if args.quick else 25)
    seconds = args.seconds or (0.02 if args.quick else 0.1)

    cases = build_cases()
    print(
        f"coap_trio {coap_trio.__version__} vs aiocoap {importlib.metadata.version('aiocoap')}, "
        f"Python {sys.version.split()[0]}"
    )
    print(
        f"timeit: {repeat} repeats of ~{seconds:g} s per library and operation, "
        "coap_trio and aiocoap alternating; times per operation in µs"
    )
    print("verified: identical datagrams from both encoders, same fields from both decoders")
    print()
    width = max(len(case.name) for case in cases)
    header = (
        f"{'case':<{width}} {'op':<6} {'coap_trio med / min':>19} "
        f"{'aiocoap med / min':>19} {'ratio med / min':>16} {'>=3x':>5}"
    )
    print(header)
    print("-" * len(header))
    all_met = True
    previous: Case | None = None
    previous_size = 0
    for case, op, size, trio_t, aio_t in measure_cases(repeat, seconds):
        if previous is not None and case is not previous:
            print(f"{'':<{width}} ({previous_size} bytes on the wire)")
        previous, previous_size = case, size
        ratio = aio_t.median_us / trio_t.median_us
        ratio_min = aio_t.min_us / trio_t.min_us
        met = ratio >= TARGET_RATIO
        all_met &= met
        print(
            f"{case.name:<{width}} {op:<6} "
            f"{trio_t.median_us:>8.2f} / {trio_t.min_us:>8.2f} "
            f"{aio_t.median_us:>8.2f} / {aio_t.min_us:>8.2f} "
            f"{ratio:>6.1f}x / {ratio_min:>5.1f}x {'yes' if met else 'NO':>5}"
        )
    if previous is not None:
        print(f"{'':<{width}} ({previous_size} bytes on the wire)")
    print()
    verdict = "MET" if all_met else "NOT MET"
    print(
        f"target (coap_trio at least {TARGET_RATIO:g}x faster than aiocoap, encode and decode, "
        f"every case, on medians): {verdict}"
    )
    return 1 if args.check and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
