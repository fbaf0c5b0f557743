"""A server Context fed datagrams no well-behaved client sends.

A bare :class:`~coap_trio.testing.MemoryNetwork` endpoint sends exact bytes
to a server :class:`~coap_trio.context.Context` and records every reply.
RFC 7252 asks for a Reset to a Confirmable message that cannot be processed
(a format error, §4.2; a response with an unknown token, §4.3) and for
silence otherwise (NON, ACK, RST, unknown versions, datagrams too short to
carry a message ID). Every case is also counted in the messaging
statistics, never reaches the handler, and leaves the server serving.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from coap_trio.codec import decode, encode
from coap_trio.context import Context, open_context
from coap_trio.errors import MessageFormatError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.protocol.config import MessagingStatistics
from coap_trio.remote import DatagramRemote
from coap_trio.testing import MemoryNetwork

SERVER = "10.0.0.2"
PORT = 5683
SERVER_ADDRESS = DatagramRemote((SERVER, PORT), "coap")
PEER = "10.0.0.9"
VIRTUAL_LIMIT = 1000.0
#: How long to listen for a reply that must not come.
QUIET = 10.0


class Counting:
    """A site that answers 2.05 and records every request it is asked to render."""

    def __init__(self) -> None:
        self.rendered: list[Message] = []

    async def render(self, request: Message) -> Message:
        self.rendered.append(request)
        return Message(code=Code.CONTENT, payload=b"ok")

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False


class RawPeer:
    """A bare endpoint at PEER: sends exact datagrams to the server, records every reply."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.endpoint = net.open_endpoint(PEER, 0)
        self.received: list[bytes] = []

    def _on_datagrams(self, batch: list[tuple[bytes, DatagramRemote]]) -> None:
        for data, source in batch:
            assert source == SERVER_ADDRESS, source
            self.received.append(data)

    @staticmethod
    def _on_error(remote: DatagramRemote, error: OSError) -> None:
        raise AssertionError(f"unexpected network error from {remote}: {error}")

    def send(self, data: bytes) -> None:
        self.endpoint.send(data, SERVER_ADDRESS)

    async def exchange(self, data: bytes, quiet: float = QUIET) -> list[bytes]:
        """Send ``data``; return what came back within ``quiet`` seconds."""
        before = len(self.received)
        self.send(data)
        await trio.sleep(quiet)
        return self.received[before:]


@asynccontextmanager
async def server_and_peer(net: MemoryNetwork) -> AsyncIterator[tuple[Context, Counting, RawPeer]]:
    site = Counting()
    async with (
        open_context(network=net, bind=(SERVER, PORT), site=site, rng=random.Random(1)) as server,
        trio.open_nursery() as nursery,
    ):
        peer = RawPeer(net)
        await nursery.start(peer.endpoint.run, peer._on_datagrams, peer._on_error)
        yield server, site, peer
        nursery.cancel_scope.cancel()


def rst(mid: int) -> bytes:
    """The Reset for message ID ``mid``: the bare 4-byte header (RFC 7252 §4.2)."""
    return bytes((0x70, 0x00, mid >> 8, mid & 0xFF))


def good_request(mid: int = 0x0FF0, token: bytes = b"ok") -> bytes:
    return encode(Message(code=Code.GET, mtype=Type.CON, mid=mid, token=token, uri_path=("x",)))


async def assert_still_serving(peer: RawPeer, site: Counting) -> None:
    """A good request after the bad input is answered (piggybacked) and rendered once."""
    assert site.rendered == []
    (reply,) = await peer.exchange(good_request(), quiet=1.0)
    message = decode(reply)
    assert (message.mtype, message.code, message.mid, message.token) == (
        Type.ACK,
        Code.CONTENT,
        0x0FF0,
        b"ok",
    )
    assert len(site.rendered) == 1


def header(mtype: Type, code: int, mid: int, tkl: int = 0, version: int = 1) -> bytes:
    """A raw 4-byte CoAP header (no validation: any field may be out of range)."""
    return bytes(((version << 6) | (int(mtype) << 4) | tkl, code, mid >> 8, mid & 0xFF))


CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST
GET = int(Code.GET)

#: name -> (datagram, the reply RFC 7252 asks for or None, the counter it lands in)
CASES: dict[str, tuple[bytes, bytes | None, str]] = {
    # Too short to carry a message ID: nothing to reset.
    "empty datagram": (b"", None, "malformed"),
    "1 byte": (b"\x40", None, "malformed"),
    "3 bytes of a CON header": (b"\x40\x01\x12", None, "malformed"),
    # Unknown version (§3): silently ignored, even as a CON.
    "version 0 CON": (header(CON, GET, 0x0100, version=0), None, "malformed"),
    "version 2 CON": (header(CON, GET, 0x0101, version=2) + b"\xb1x", None, "malformed"),
    "version 3 CON": (header(CON, GET, 0x0102, version=3), None, "malformed"),
    # Token length 9..15 is a format error (§3).
    **{
        f"TKL {tkl} CON": (
            header(CON, GET, 0x0900 + tkl, tkl=tkl) + bytes(15),
            rst(0x0900 + tkl),
            "malformed",
        )
        for tkl in range(9, 16)
    },
    "TKL 9 NON": (header(NON, GET, 0x0909, tkl=9) + bytes(9), None, "malformed"),
    "TKL 9 ACK": (header(ACK, 69, 0x090A, tkl=9) + bytes(9), None, "malformed"),
    "TKL 15 RST": (header(RST, 0, 0x090B, tkl=15), None, "malformed"),
    # The token is cut short.
    "TKL 8 with 3 token bytes CON": (
        header(CON, GET, 0x0A01, tkl=8) + b"abc",
        rst(0x0A01),
        "malformed",
    ),
    # Option delta nibble 15 that is not the payload marker; option length nibble 15.
    "option delta 15 CON": (header(CON, GET, 0x0F01) + b"\xf1x", rst(0x0F01), "malformed"),
    "option delta 15 NON": (header(NON, GET, 0x0F02) + b"\xf1x", None, "malformed"),
    "option length 15 CON": (header(CON, GET, 0x0F03) + b"\xbfx", rst(0x0F03), "malformed"),
    "delta 15 after a good option CON": (
        header(CON, GET, 0x0F04) + b"\xb1x\xf0",
        rst(0x0F04),
        "malformed",
    ),
    # A payload marker followed by nothing (§3).
    "payload marker, empty payload, CON": (
        header(CON, GET, 0xFF01) + b"\xff",
        rst(0xFF01),
        "malformed",
    ),
    "payload marker, empty payload, NON": (header(NON, GET, 0xFF02) + b"\xff", None, "malformed"),
    "payload marker after an option, CON": (
        header(CON, GET, 0xFF03, tkl=1) + b"t\xb1x\xff",
        rst(0xFF03),
        "malformed",
    ),
    # Option values and extended fields running past the end of the datagram.
    "option value cut short CON": (header(CON, GET, 0x0B01) + b"\xb5ab", rst(0x0B01), "malformed"),
    "extended delta byte missing CON": (
        header(CON, GET, 0x0B02) + b"\xd1",
        rst(0x0B02),
        "malformed",
    ),
    "extended length bytes missing CON": (
        header(CON, GET, 0x0B03) + b"\xbe\x01",
        rst(0x0B03),
        "malformed",
    ),
    # An absurd length: 65804 bytes announced, three present.
    "absurd option length CON": (
        header(CON, GET, 0x0B04) + b"\xbe\xff\xff" + b"abc",
        rst(0x0B04),
        "malformed",
    ),
    "absurd option length NON": (
        header(NON, GET, 0x0B05) + b"\xbe\xff\xff" + b"abc",
        None,
        "malformed",
    ),
    # Option numbers adding up past 65535.
    "option number above 65535 CON": (
        header(CON, GET, 0x0B06) + b"\xe0\xff\x00" + b"\xe0\xff\x00",
        rst(0x0B06),
        "malformed",
    ),
    # An Empty message (0.00) with a token, option or payload (§4.1).
    "empty CON with a token": (header(CON, 0, 0x0E01, tkl=2) + b"tt", rst(0x0E01), "malformed"),
    "empty CON with a payload": (header(CON, 0, 0x0E02) + b"\xffpay", rst(0x0E02), "malformed"),
    "empty ACK with a token": (header(ACK, 0, 0x0E03, tkl=1) + b"t", None, "malformed"),
    # Well-formed, but not for us: a response whose token matches no request of ours
    # (§4.3 for the CON; this stack resets the NON as well, which §4.3 allows).
    "2.05 CON with an unknown token": (
        header(CON, int(Code.CONTENT), 0x0C01, tkl=2) + b"zz\xffhello",
        rst(0x0C01),
        "unmatched",
    ),
    "4.04 NON with an unknown token": (
        header(NON, int(Code.NOT_FOUND), 0x0C02, tkl=3) + b"zzz",
        rst(0x0C02),
        "unmatched",
    ),
    "2.05 ACK with an unknown MID": (
        header(ACK, int(Code.CONTENT), 0x0C03, tkl=1) + b"z",
        None,
        "unmatched",
    ),
    # Bare ACK and RST for message IDs the server never used: silence.
    "bare ACK, unknown MID": (header(ACK, 0, 0x0D01), None, "unmatched"),
    "bare RST, unknown MID": (header(RST, 0, 0x0D02), None, "unmatched"),
    # Codes of reserved classes (1.xx, 6.xx) and signaling (7.xx) mean nothing over UDP.
    "code 1.00 CON": (header(CON, 0x20, 0x0D03, tkl=1) + b"r", rst(0x0D03), "unmatched"),
    "code 6.00 NON": (header(NON, 0xC0, 0x0D04, tkl=1) + b"r", None, "unmatched"),
    "code 7.01 CON": (header(CON, 0xE1, 0x0D05, tkl=1) + b"r", rst(0x0D05), "unmatched"),
}


def counters(server: Context) -> MessagingStatistics:
    (stats,) = server.statistics.messaging
    return stats


@pytest.mark.parametrize(("datagram", "reply", "counter"), CASES.values(), ids=CASES)
async def test_bad_datagram(
    autojump_clock: trio.testing.MockClock, datagram: bytes, reply: bytes | None, counter: str
) -> None:
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net) as (server, site, peer):
            replies = await peer.exchange(datagram)
            # A retransmission of the same bytes is treated the same way (nothing was recorded).
            again = await peer.exchange(datagram)
            stats = counters(server)
            await assert_still_serving(peer, site)
    # A malformed datagram is not recorded, so its repeat is treated the same way; a
    # well-formed CON or NON is (§4.5): the repeat is a duplicate, the CON's RST replayed.
    well_formed = counter != "malformed"
    deduplicated = well_formed and Type((datagram[0] >> 4) & 3) in (CON, NON)
    first = [] if reply is None else [reply]
    assert replies == first
    assert again == ([] if deduplicated and Type((datagram[0] >> 4) & 3) is NON else first)
    assert stats.datagrams_received == 2
    assert getattr(stats, counter) == (1 if deduplicated else 2)
    assert stats.duplicates == (1 if deduplicated else 0)
    others = {"malformed", "unmatched"} - {counter}
    assert all(getattr(stats, name) == 0 for name in others)
    assert stats.resets_sent == (0 if reply is None else 1 if deduplicated else 2)
    assert stats.pending_server_requests == 0
    assert stats.dedup_entries == (1 if deduplicated else 0)
    assert server.statistics.handler_errors == 0


def _decodes(data: bytes) -> bool:
    """Whether ``data`` is a well-formed message (decode raises only MessageFormatError)."""
    try:
        decode(data)
    except MessageFormatError:
        return False
    return True


async def test_random_garbage(autojump_clock: trio.testing.MockClock) -> None:
    """A few hundred undecodable datagrams: RST exactly for the version-1 CONs, one each."""
    rng = random.Random(20240607)
    sent = resets = 0
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net) as (server, site, peer):
            attempts = 0
            while sent < 300:
                attempts += 1
                assert attempts < 10_000
                data = bytearray(rng.randbytes(rng.randrange(0, 48)))
                if data and rng.random() < 0.6:
                    data[0] = 0x40 | (data[0] & 0x3F)  # version 1 often, so parsing goes deep
                data = bytes(data)
                if _decodes(data):
                    continue  # it happens to be a well-formed message: not garbage
                expect_reset = len(data) >= 4 and data[0] >> 4 == 0x4  # version 1, CON
                replies = await peer.exchange(data, quiet=0.01)
                assert replies == ([rst(int.from_bytes(data[2:4]))] if expect_reset else []), data
                sent += 1
                resets += expect_reset
            stats = counters(server)
            await assert_still_serving(peer, site)
    assert resets > 20  # the mix had plenty of both kinds
    assert sent - resets > 20
    assert (stats.datagrams_received, stats.malformed, stats.resets_sent) == (sent, sent, resets)
    assert stats.unmatched == 0


async def test_garbage_in_one_batch_is_answered_datagram_by_datagram(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Bad and good datagrams arriving together: each gets its own treatment."""
    net = MemoryNetwork(seed=0)
    batch = [
        header(CON, GET, 0x0901, tkl=9),
        good_request(mid=0x0001, token=b"g1"),
        header(CON, GET, 0xFF01) + b"\xff",
        header(NON, GET, 0xFF02) + b"\xff",
        header(CON, 0, 0x0002),  # a ping
        good_request(mid=0x0003, token=b"g3"),
    ]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net) as (server, site, peer):
            for data in batch:
                peer.send(data)
            await trio.sleep(QUIET)
            stats = counters(server)
    messages = [decode(data) for data in peer.received]
    # The RSTs go out as the batch is read; the good requests are answered by handler tasks.
    assert [(m.mtype, m.code, m.mid) for m in messages[:3]] == [
        (Type.RST, Code.EMPTY, 0x0901),
        (Type.RST, Code.EMPTY, 0xFF01),
        (Type.RST, Code.EMPTY, 0x0002),
    ]
    assert sorted((m.mtype, m.code, m.mid, m.token) for m in messages[3:]) == [
        (Type.ACK, Code.CONTENT, 0x0001, b"g1"),
        (Type.ACK, Code.CONTENT, 0x0003, b"g3"),
    ]
    assert sorted(m.token for m in site.rendered) == [b"g1", b"g3"]
    assert (stats.malformed, stats.pings) == (3, 1)


async def test_oversized_datagram_of_60_kb(autojump_clock: trio.testing.MockClock) -> None:
    """60 KB that break the format: the RST comes back and nothing is rendered."""
    net = MemoryNetwork(seed=0)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net) as (server, site, peer):
            # Options that claim more bytes than follow, after 60 KB of a well-formed value.
            big_option = b"\xbe" + (60_000 - 269).to_bytes(2, "big") + bytes(60_000)
            truncated = header(CON, GET, 0x6001) + big_option + b"\x1e\xff\xff"
            assert len(truncated) > 60_000
            replies = await peer.exchange(truncated)
            # 60 KB after a reserved token length.
            replies += await peer.exchange(header(CON, GET, 0x6002, tkl=12) + bytes(60_000))
            # 60 KB as a NON with a reserved option delta at its very end.
            replies += await peer.exchange(header(NON, GET, 0x6003) + big_option + b"\xf0")
            stats = counters(server)
            await assert_still_serving(peer, site)
    assert replies == [rst(0x6001), rst(0x6002)]
    assert (stats.malformed, stats.resets_sent) == (3, 2)


async def test_well_formed_request_with_a_60_kb_payload_gets_4_13(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Well-formed but larger than max_request_payload (16 KiB by default): answered
    4.13 Request Entity Too Large with Size1 (RFC 7252 §5.9.2.9), counted, and the
    handler never sees it; a payload within the limit is served."""
    net = MemoryNetwork(seed=0)
    payload = random.Random(1).randbytes(60_000)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with server_and_peer(net) as (server, site, peer):
            data = encode(
                Message(code=Code.PUT, mtype=Type.CON, mid=0x6004, token=b"big", payload=payload)
            )
            (reply,) = await peer.exchange(data)
            ok = encode(
                Message(
                    code=Code.PUT, mtype=Type.CON, mid=0x6005, token=b"ok", payload=bytes(16_384)
                )
            )
            (served,) = await peer.exchange(ok)
            oversized = server.statistics.oversized_requests
    message = decode(reply)
    assert (message.mtype, message.code, message.mid, message.token) == (
        Type.ACK,
        Code.REQUEST_ENTITY_TOO_LARGE,
        0x6004,
        b"big",
    )
    assert message.opt.size1 == 16_384
    assert decode(served).code == Code.CONTENT
    assert [len(r.payload) for r in site.rendered] == [16_384]
    assert oversized == 1


async def test_reset_of_a_separate_response_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client may reject a separate response with RST: no retransmissions follow."""

    class Slow(Counting):
        async def render(self, request: Message) -> Message:
            await trio.sleep(1.0)
            return await super().render(request)

    net = MemoryNetwork(seed=0)
    site = Slow()
    with trio.fail_after(VIRTUAL_LIMIT):
        async with (
            open_context(
                network=net, bind=(SERVER, PORT), site=site, rng=random.Random(1)
            ) as server,
            trio.open_nursery() as nursery,
        ):
            peer = RawPeer(net)
            await nursery.start(peer.endpoint.run, peer._on_datagrams, peer._on_error)
            peer.send(good_request(mid=0x5001, token=b"sr"))
            await trio.sleep(2.0)
            empty_ack, separate = (decode(data) for data in peer.received)
            assert (empty_ack.mtype, empty_ack.code) == (Type.ACK, Code.EMPTY)
            assert (separate.mtype, separate.code) == (Type.CON, Code.CONTENT)
            peer.send(rst(separate.mid))
            await trio.sleep(200)
            stats = counters(server)
            nursery.cancel_scope.cancel()
    assert len(peer.received) == 2
    assert stats.retransmissions == 0
    assert stats.unmatched == 0  # the RST matched the separate response
