"""The RFC 8323 messaging machine (coap_trio.protocol.stream_messaging) without sockets.

A :class:`Link` joins a client and a server machine: every ``Transmit`` goes
through the receiver's :class:`~coap_trio.protocol.framing.StreamDecoder`
(in random splits when asked) and its frames into ``receive``; the other
events are collected per side. Single-machine tests play the peer with raw
frames.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio.errors import (
    BadResponseError,
    ConnectionAbortedByPeerError,
    ConnectionLostError,
    ConnectionReleasedError,
    HandshakeError,
    LocalProtocolError,
    MessageTooLargeError,
    RequestTimeoutError,
)
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.options import Options
from coap_trio.protocol.config import MessagingConfig
from coap_trio.protocol.exchanges import (
    ClientExchange,
    CloseConnection,
    Event,
    NotificationReceived,
    RequestFailed,
    RequestReceived,
    ResponseFailed,
    ResponseReceived,
    ServerExchange,
    StreamClientState,
    StreamServerState,
    Transmit,
)
from coap_trio.protocol.framing import (
    StreamDecoder,
    decode_frame,
    decode_websocket,
    encode_stream,
    encode_websocket,
)
from coap_trio.protocol.signaling import (
    Abort,
    Csm,
    build_abort,
    build_csm,
    build_ping,
    build_release,
    parse_signal,
)
from coap_trio.protocol.stream_messaging import (
    PeerSettings,
    StreamMessaging,
    StreamMessagingConfig,
)

CLIENT = "client"
SERVER = "server"
PEER = ("192.0.2.1", 5683)


def frames_of(events: Sequence[Event]) -> list[Message]:
    return [decode_frame(e.data) for e in events if isinstance(e, Transmit)]


def others(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, Transmit)]


def get(path: str = "a", **options: object) -> Message:
    return Message(code=Code.GET, uri_path=(path,), **options)  # type: ignore[arg-type]


class Link:
    """A client and a server machine joined by a lossless, ordered stream."""

    def __init__(
        self,
        config: StreamMessagingConfig | None = None,
        server_config: StreamMessagingConfig | None = None,
        split: random.Random | None = None,
    ) -> None:
        self.now = 0.0
        self.client = StreamMessaging(config, random.Random(1))
        self.server = StreamMessaging(server_config or config, random.Random(2))
        self.machines = {CLIENT: self.client, SERVER: self.server}
        self.decoders = {
            CLIENT: StreamDecoder(self.client.config.max_message_size),
            SERVER: StreamDecoder(self.server.config.max_message_size),
        }
        self.events: dict[str, list[Event]] = {CLIENT: [], SERVER: []}
        self.wire: list[tuple[str, Message]] = []
        self.split = split

    def pump(self, sender: str, events: Sequence[Event]) -> None:
        """Deliver ``sender``'s Transmits (and the replies they cause) to the other side."""
        queue = [(sender, list(events))]
        while queue:
            side, batch = queue.pop(0)
            receiver = SERVER if side == CLIENT else CLIENT
            for event in batch:
                if not isinstance(event, Transmit):
                    self.events[side].append(event)
                    continue
                self.wire.append((side, decode_frame(event.data)))
                data = event.data
                chunks = [data]
                if self.split is not None and len(data) > 1:
                    cut = self.split.randrange(1, len(data))
                    chunks = [data[:cut], data[cut:]]
                for chunk in chunks:
                    for frame in self.decoders[receiver].feed(chunk):
                        replies = self.machines[receiver].receive(frame, side, self.now)
                        queue.append((receiver, replies))

    def connect(self) -> None:
        self.pump(CLIENT, self.client.connection_made(SERVER, self.now))
        self.pump(SERVER, self.server.connection_made(CLIENT, self.now))

    def request(self, message: Message) -> ClientExchange:
        exchange, events = self.client.send_request(message, SERVER, self.now)
        self.pump(CLIENT, events)
        return exchange

    def served(self) -> list[ServerExchange]:
        return [e.exchange for e in self.events[SERVER] if isinstance(e, RequestReceived)]

    def respond(self, exchange: ServerExchange, response: Message | None) -> None:
        self.pump(SERVER, self.server.respond(exchange, response, self.now))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.pump(CLIENT, self.client.timeout(self.now))
        self.pump(SERVER, self.server.timeout(self.now))

    def client_events(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events[CLIENT] if isinstance(e, kind)]


# -- CSM -------------------------------------------------------------------------------------


def test_connection_made_sends_our_csm_first() -> None:
    machine = StreamMessaging(
        StreamMessagingConfig(max_message_size=4096, block_wise_transfer=True)
    )
    events = machine.connection_made(PEER, 0.0)
    assert len(events) == 1
    (csm,) = frames_of(events)
    assert parse_signal(csm) == Csm(4096, True)
    assert machine.connection_made(PEER, 1.0) == []  # idempotent
    assert machine.peer_settings(PEER) == PeerSettings(1152, False, False)
    assert machine.peer_settings("nobody") is None
    assert machine.connected(PEER)


def test_first_request_makes_the_connection_csm_first() -> None:
    machine = StreamMessaging()
    exchange, events = machine.send_request(get(), PEER, 0.0)
    sent = frames_of(events)
    assert [m.code for m in sent] == [Code.CSM, Code.GET]
    assert sent[1].token == exchange.token
    assert len(exchange.token) == 8
    assert sent[1].mtype is None
    assert sent[1].mid is None
    assert exchange.state is StreamClientState.SENT


def test_receiving_first_makes_the_connection_and_answers_pings() -> None:
    machine = StreamMessaging()
    events = machine.receive(encode_stream(build_csm(2048)), PEER, 0.0)
    assert [m.code for m in frames_of(events)] == [Code.CSM]
    events = machine.receive(encode_stream(build_ping(b"pp", custody=True)), PEER, 0.0)
    (pong,) = frames_of(events)
    assert pong.code is Code.PONG
    assert pong.token == b"pp"
    assert pong.opt.get_all(2) == (b"",)  # Custody echoed
    assert machine.peer_settings(PEER) == PeerSettings(2048, False, True)
    assert machine.statistics.pings == 1


def test_later_csm_updates_only_what_it_carries() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm(5000, block_wise_transfer=True)), PEER, 0.0)
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    assert machine.peer_settings(PEER) == PeerSettings(5000, True, True)
    machine.receive(encode_stream(build_csm(3000)), PEER, 0.0)
    settings = machine.peer_settings(PEER)
    assert settings == PeerSettings(3000, True, True)
    assert settings.bert
    machine.receive(encode_stream(build_csm(1152)), PEER, 0.0)
    settings = machine.peer_settings(PEER)
    assert settings is not None
    assert not settings.bert  # Block-Wise-Transfer with 1152 or less: no BERT (§5.3.2)
    assert settings.block_wise_transfer


def test_bert_agreement_and_size() -> None:
    machine = StreamMessaging(max_message_size=9000)
    assert machine.bert_size(PEER) is None
    machine.receive(encode_stream(build_csm(20_000)), PEER, 0.0)
    assert machine.bert_size(PEER) is None
    machine.receive(encode_stream(build_csm(20_000, block_wise_transfer=True)), PEER, 0.0)
    assert machine.bert_size(PEER) == 8192  # our 9000 is the smaller, minus headroom
    quiet = StreamMessaging(max_message_size=9000, block_wise_transfer=False)
    quiet.receive(encode_stream(build_csm(20_000, block_wise_transfer=True)), PEER, 0.0)
    # we did not announce it:
    assert quiet.bert_size(PEER) is None


def test_first_message_not_a_csm_aborts() -> None:
    machine = StreamMessaging()
    exchange, _ = machine.send_request(get(), PEER, 0.0)
    events = machine.receive(encode_stream(Message(code=Code.GET, token=b"x")), PEER, 1.0)
    (abort,) = frames_of(events)
    assert abort.code is Code.ABORT
    assert parse_signal(abort) == Abort(None, "the first message was not a CSM")
    failed, close = others(events)
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is exchange
    assert isinstance(failed.error, ConnectionLostError)
    assert isinstance(close, CloseConnection)
    assert close.remote == PEER
    assert exchange.state is StreamClientState.DONE
    assert not machine.connected(PEER)
    assert machine.connection_lost(PEER, None, 2.0) == []  # already forgotten


def test_unknown_critical_csm_option_aborts_with_bad_csm_option() -> None:
    machine = StreamMessaging()
    csm = Message.from_fields(
        Code.CSM, None, None, b"", Options([(2, b"\x10"), (9, b"")]), b"", None
    )
    events = machine.receive(encode_stream(csm), PEER, 0.0)
    sent = frames_of(events)
    assert [m.code for m in sent] == [Code.CSM, Code.ABORT]
    signal = parse_signal(sent[1])
    assert isinstance(signal, Abort)
    assert signal.bad_csm_option == 9
    assert isinstance(events[-1], CloseConnection)


def test_unknown_elective_csm_option_is_ignored() -> None:
    machine = StreamMessaging()
    csm = Message.from_fields(
        Code.CSM, None, None, b"", Options([(6, b"\x10"), (10, b"")]), b"", None
    )
    events = machine.receive(encode_stream(csm), PEER, 0.0)
    assert [m.code for m in frames_of(events)] == [Code.CSM]
    assert machine.peer_settings(PEER) == PeerSettings(1152, False, True)


def test_unknown_critical_option_in_ping_aborts_without_bad_csm_option() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    ping = Message.from_fields(Code.PING, None, None, b"", Options([(3, b"")]), b"", None)
    events = machine.receive(encode_stream(ping), PEER, 0.0)
    (abort,) = frames_of(events)
    signal = parse_signal(abort)
    assert isinstance(signal, Abort)
    assert signal.bad_csm_option is None
    assert isinstance(events[-1], CloseConnection)


def test_malformed_frame_aborts() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    events = machine.receive(b"\x10\x45\xff", PEER, 0.0)  # payload marker, no payload
    (abort,) = frames_of(events)
    assert abort.code is Code.ABORT
    assert "malformed" in abort.payload.decode()
    assert isinstance(events[-1], CloseConnection)
    assert machine.statistics.malformed == 1


# -- requests and responses ---------------------------------------------------------------------


def test_request_response_by_token() -> None:
    link = Link()
    link.connect()
    exchange = link.request(get("temp"))
    (served,) = link.served()
    assert served.request.opt.uri_path == ("temp",)
    assert served.con  # over a reliable transport every request expects its response
    assert served.token == exchange.token
    link.respond(served, Message(code=Code.CONTENT, payload=b"22 C"))
    (received,) = link.client_events(ResponseReceived)
    assert isinstance(received, ResponseReceived)
    assert received.exchange is exchange
    assert received.response.payload == b"22 C"
    assert received.response.token == exchange.token
    assert exchange.state is StreamClientState.DONE
    assert served.state is StreamServerState.DONE
    with pytest.raises(LocalProtocolError):
        link.server.respond(served, Message(code=Code.CONTENT), link.now)
    assert link.client.statistics.outstanding_requests == 0


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 30), st.randoms(use_true_random=False))
def test_responses_in_any_order_match_by_token(count: int, rng: random.Random) -> None:
    link = Link(split=rng)
    exchanges = [link.request(get(f"r{i}")) for i in range(count)]
    served = link.served()
    assert len(served) == count
    rng.shuffle(served)
    for exchange in served:
        path = exchange.request.opt.uri_path[0]
        link.respond(exchange, Message(code=Code.CONTENT, payload=path.encode()))
    answers = {
        e.exchange.request.opt.uri_path[0]: e.response.payload
        for e in link.client_events(ResponseReceived)
        if isinstance(e, ResponseReceived)
    }
    assert answers == {f"r{i}": f"r{i}".encode() for i in range(count)}
    assert all(e.state is StreamClientState.DONE for e in exchanges)


def test_given_token_is_kept_and_a_duplicate_refused() -> None:
    machine = StreamMessaging()
    exchange, events = machine.send_request(get(token=b"mine"), PEER, 0.0)
    assert exchange.token == b"mine"
    assert frames_of(events)[-1].token == b"mine"
    with pytest.raises(LocalProtocolError):
        machine.send_request(get(token=b"mine"), PEER, 0.0)
    with pytest.raises(LocalProtocolError):
        machine.send_request(Message(code=Code.CONTENT), PEER, 0.0)


def test_unknown_token_is_ignored_and_counted() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    exchange, _ = machine.send_request(get(), PEER, 0.0)
    stray = Message(code=Code.CONTENT, token=b"nope", payload=b"x")
    assert machine.receive(encode_stream(stray), PEER, 1.0) == []  # no Reset on streams
    assert machine.statistics.unmatched == 1
    assert exchange.state is StreamClientState.SENT


def test_empty_and_reserved_codes_are_ignored() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    assert machine.receive(b"\x00\x00", PEER, 0.0) == []  # 0.00 keepalive
    assert machine.statistics.unmatched == 0
    reserved = Message.from_fields(Code((6 << 5) | 5), None, None, b"", Options(), b"", None)
    assert machine.receive(encode_stream(reserved), PEER, 0.0) == []
    undefined_signal = Message.from_fields(
        Code((7 << 5) | 9), None, None, b"", Options(), b"", None
    )
    assert machine.receive(encode_stream(undefined_signal), PEER, 0.0) == []
    assert machine.statistics.unmatched == 2


def test_response_with_unrecognized_critical_option_fails_the_request() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    exchange, _ = machine.send_request(get(), PEER, 0.0)
    bad = Message(code=Code.CONTENT, token=exchange.token)
    bad.opt.add(65001, b"")
    (failed,) = machine.receive(encode_stream(bad), PEER, 0.0)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, BadResponseError)
    assert machine.statistics.rejected_responses == 1


def test_request_timeout() -> None:
    machine = StreamMessaging(StreamMessagingConfig(response_timeout=10.0))
    assert StreamMessagingConfig().response_timeout == pytest.approx(247.0)
    exchange, _ = machine.send_request(get(), PEER, 100.0)
    assert machine.next_deadline() == 110.0
    assert machine.timeout(109.9) == []
    (failed,) = machine.timeout(110.0)
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is exchange
    assert isinstance(failed.error, RequestTimeoutError)
    assert machine.statistics.requests_timed_out == 1
    assert machine.next_deadline() is None
    late = Message(code=Code.CONTENT, token=exchange.token)
    machine.receive(encode_stream(build_csm()), PEER, 111.0)
    assert machine.receive(encode_stream(late), PEER, 111.0) == []


@settings(deadline=None, max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["send", "answer", "abandon", "wait"]),
            st.integers(0, 50),
            st.floats(0.0, 6.0),
        ),
        max_size=120,
    )
)
def test_response_deadlines_match_a_model(operations: list[tuple[str, int, float]]) -> None:
    # Requests fail with RequestTimeoutError exactly when neither answered nor
    # abandoned response_timeout after they were sent; next_deadline is the
    # earliest live one. (Deadlines live in a FIFO, rebuilt as entries go stale.)
    machine = StreamMessaging(StreamMessagingConfig(response_timeout=10.0))
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    now = 0.0
    live: dict[ClientExchange, float] = {}  # exchange -> its deadline
    sent: list[ClientExchange] = []
    for operation, index, seconds in operations:
        if operation == "send":
            before = machine.next_deadline()
            exchange, _ = machine.send_request(get(), PEER, now)
            # kept_next_deadline says exactly when another deadline was live:
            # then the earliest one, which a driver's timer waits for, is unchanged.
            assert machine.kept_next_deadline == bool(live)
            if machine.kept_next_deadline:
                assert machine.next_deadline() == before
            live[exchange] = now + 10.0
            sent.append(exchange)
        elif operation == "answer" and sent:
            exchange = sent[index % len(sent)]
            answer = Message(code=Code.CONTENT, token=exchange.token)
            events = machine.receive(encode_stream(answer), PEER, now)
            was_live = live.pop(exchange, None) is not None
            assert [type(e) for e in events] == ([ResponseReceived] if was_live else [])
        elif operation == "abandon" and sent:
            exchange = sent[index % len(sent)]
            machine.abandon(exchange, now)
            live.pop(exchange, None)
        elif operation == "wait":
            now += seconds
            failed = machine.timeout(now)
            due = {e for e, deadline in live.items() if deadline <= now}
            assert {e.exchange for e in failed} == due
            assert all(isinstance(e, RequestFailed) for e in failed)
            for exchange in due:
                del live[exchange]
        expected = min(live.values()) if live else None
        assert machine.next_deadline() == expected
        assert len(machine._deadlines) <= 2 * len(live) + 64 + 1


def test_a_busy_client_keeps_few_response_deadlines() -> None:
    # 100,000 answered requests: finished ones must not wait 247 s in the FIFO.
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    first, _ = machine.send_request(get(), PEER, 0.0)  # never answered: at the head
    for i in range(100_000):
        exchange, _ = machine.send_request(get(), PEER, i * 1e-3)
        answer = Message(code=Code.CONTENT, token=exchange.token)
        machine.receive(encode_stream(answer), PEER, i * 1e-3)
        assert len(machine._deadlines) <= 2 + 64 + 1
    assert machine.next_deadline() == pytest.approx(247.0)
    (failed,) = machine.timeout(247.0)
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is first


def test_abandon_frees_the_token_and_ignores_the_late_response() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    exchange, _ = machine.send_request(get(), PEER, 0.0)
    assert machine.abandon(exchange, 1.0) == []
    assert machine.abandon(exchange, 1.0) == []
    assert exchange.state is StreamClientState.DONE
    assert machine.next_deadline() is None
    late = Message(code=Code.CONTENT, token=exchange.token)
    assert machine.receive(encode_stream(late), PEER, 2.0) == []
    assert machine.statistics.unmatched == 1


def test_interface_extras() -> None:
    machine = StreamMessaging()
    assert machine.mid_available(PEER, 0.0) is True
    machine.set_nstart(4)
    with pytest.raises(ValueError):
        machine.set_nstart(0)
    stats = machine.statistics
    assert (stats.retransmissions, stats.duplicates, stats.dedup_entries) == (0, 0, 0)


def test_messaging_config_and_max_message_size_keyword() -> None:
    config = MessagingConfig(token_length=4, separate_response_timeout=30.0)
    machine = StreamMessaging(config, random.Random(3), max_message_size=8192)
    assert machine.config.token_length == 4
    assert machine.config.response_timeout == 30.0
    assert machine.config.max_message_size == 8192
    exchange, events = machine.send_request(get(), PEER, 0.0)
    assert len(exchange.token) == 4
    assert parse_signal(frames_of(events)[0]) == Csm(8192, True)  # Block-Wise-Transfer: default
    quiet = StreamMessaging(config, random.Random(3), block_wise_transfer=False)
    assert not quiet.config.block_wise_transfer
    _, events = quiet.send_request(get(), PEER, 0.0)
    assert parse_signal(frames_of(events)[0]) == Csm(1152, False)


# -- server side -----------------------------------------------------------------------------


def test_no_response_sends_nothing_and_forget_drops() -> None:
    link = Link()
    link.connect()
    link.request(get("a"))
    link.request(get("b"))
    first, second = link.served()
    assert link.server.statistics.pending_server_requests == 2
    before = len(link.wire)
    link.respond(first, None)
    assert len(link.wire) == before
    link.server.forget(second)
    assert second.state is StreamServerState.DONE
    assert link.server.statistics.pending_server_requests == 0


def test_overload_answers_5_03() -> None:
    link = Link(server_config=StreamMessagingConfig(max_pending_requests=1))
    link.connect()
    link.request(get("a"))
    second = link.request(get("b"))
    assert len(link.served()) == 1
    (busy,) = link.client_events(ResponseReceived)
    assert isinstance(busy, ResponseReceived)
    assert busy.exchange is second
    assert busy.response.code is Code.SERVICE_UNAVAILABLE
    assert busy.response.opt.max_age == 2
    assert link.server.statistics.overloaded == 1


# -- observe ---------------------------------------------------------------------------------


def observed_link() -> tuple[Link, ClientExchange, ServerExchange]:
    link = Link()
    link.connect()
    exchange = link.request(get("obs", observe=0))
    (served,) = link.served()
    link.respond(served, Message(code=Code.CONTENT, observe=1, payload=b"first"))
    assert exchange.state is StreamClientState.OBSERVING
    return link, exchange, served


def test_observe_every_notification_is_delivered() -> None:
    link, exchange, served = observed_link()
    assert link.client.next_deadline() is None  # an observation has no response deadline
    for value in (5, 3, 4, 4):  # no ordering over reliable transports (RFC 8323 §7)
        events = link.server.notify(
            served, Message(code=Code.CONTENT, observe=value, payload=bytes([value])), link.now
        )
        link.pump(SERVER, events)
    notes = link.client_events(NotificationReceived)
    assert [n.response.payload for n in notes] == [b"\x05", b"\x03", b"\x04", b"\x04"]  # type: ignore[attr-defined]
    # A final notification (no Observe) ends it on both sides.
    link.pump(
        SERVER, link.server.notify(served, Message(code=Code.NOT_FOUND), link.now, confirmable=True)
    )
    assert exchange.state is StreamClientState.DONE
    assert isinstance(link.client_events(NotificationReceived)[-1], NotificationReceived)
    (gone,) = link.server.notify(served, Message(code=Code.CONTENT, observe=9), link.now)
    assert isinstance(gone, ResponseFailed)


def test_notify_before_respond_is_refused() -> None:
    link = Link()
    link.connect()
    link.request(get("obs", observe=0))
    (served,) = link.served()
    with pytest.raises(LocalProtocolError):
        link.server.notify(served, Message(code=Code.CONTENT, observe=2), link.now)


def test_registration_answered_without_observe_is_no_observation() -> None:
    link = Link()
    link.connect()
    exchange = link.request(get("obs", observe=0))
    (served,) = link.served()
    link.respond(served, Message(code=Code.CONTENT))
    assert exchange.state is StreamClientState.DONE
    (failed,) = link.server.notify(served, Message(code=Code.CONTENT, observe=3), link.now)
    assert isinstance(failed, ResponseFailed)


def test_end_observation() -> None:
    link, _, served = observed_link()
    link.server.end_observation(served)
    (failed,) = link.server.notify(served, Message(code=Code.CONTENT, observe=3), link.now)
    assert isinstance(failed, ResponseFailed)


# -- connection end ---------------------------------------------------------------------------


def test_connection_lost_fails_requests_and_ends_served_observations() -> None:
    link, observing, served = observed_link()
    pending = link.request(get("slow"))
    waiting_server = link.served()[-1]
    error = ConnectionResetError(104, "reset")
    client_events = link.client.connection_lost(SERVER, error, link.now)
    failed = [e for e in client_events if isinstance(e, RequestFailed)]
    assert {e.exchange for e in failed} == {observing, pending}
    for event in failed:
        assert isinstance(event.error, ConnectionLostError)
        assert event.error.os_error is error
    assert not any(isinstance(e, CloseConnection) for e in client_events)  # closed already
    server_events = link.server.connection_lost(CLIENT, None, link.now)
    (ended,) = server_events
    assert isinstance(ended, ResponseFailed)
    assert ended.exchange is served
    assert isinstance(ended.error, ConnectionLostError)
    # Answering a request of the lost connection sends nothing.
    assert link.server.respond(waiting_server, Message(code=Code.CONTENT), link.now) == []
    assert link.server.statistics.pending_server_requests == 0
    assert link.client.connection_lost(SERVER, None, link.now) == []


def test_peer_error_closes_the_connection() -> None:
    machine = StreamMessaging()
    exchange, _ = machine.send_request(get(), PEER, 0.0)
    events = machine.peer_error(PEER, OSError(113, "no route"), 1.0)
    failed, close = events
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is exchange
    assert isinstance(close, CloseConnection)
    assert machine.peer_error(PEER, OSError(113, "no route"), 1.0) == []


def test_peer_error_with_a_request_error_fails_the_requests_with_it() -> None:
    machine = StreamMessaging()
    exchange, _ = machine.send_request(get(), PEER, 0.0)
    error = HandshakeError("refused", 40)
    failed, close = machine.peer_error(PEER, error, 1.0)
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is exchange
    assert failed.error is error
    assert isinstance(close, CloseConnection)


def test_abort_ourselves() -> None:
    machine = StreamMessaging()
    machine.send_request(get(), PEER, 0.0)
    events = machine.abort(PEER, 1.0, "shutting down")
    (abort,) = frames_of(events)
    assert parse_signal(abort) == Abort(None, "shutting down")
    assert isinstance(events[-1], CloseConnection)
    assert machine.abort(PEER, 1.0) == []


def test_abort_received() -> None:
    link, observing, served = observed_link()
    pending = link.request(get("slow"))
    link.pump(SERVER, [Transmit(CLIENT, encode_stream(build_abort(4, "no BERT here")))])
    failed = link.client_events(RequestFailed)
    assert {e.exchange for e in failed} == {observing, pending}  # type: ignore[attr-defined]
    error = failed[0].error  # type: ignore[attr-defined]
    assert isinstance(error, ConnectionAbortedByPeerError)
    assert error.bad_csm_option == 4
    assert "no BERT here" in str(error)
    (close,) = link.client_events(CloseConnection)
    assert isinstance(close, CloseConnection)
    assert close.remote == SERVER
    assert not link.client.connected(SERVER)
    assert served.state is StreamServerState.DONE


def test_release_lets_outstanding_requests_finish() -> None:
    link = Link()
    link.connect()
    outstanding = link.request(get("slow"))
    (served,) = link.served()
    release = build_release(("coap+tcp://other.example",), 30, "maintenance")
    link.pump(SERVER, [Transmit(CLIENT, encode_stream(release))])
    assert link.client_events(CloseConnection) == []
    late, events = link.client.send_request(get("new"), SERVER, link.now)
    (refused,) = events
    assert isinstance(refused, RequestFailed)
    assert refused.exchange is late
    assert isinstance(refused.error, ConnectionReleasedError)
    assert refused.error.alternative_addresses == ("coap+tcp://other.example",)
    assert refused.error.hold_off == 30
    link.respond(served, Message(code=Code.CONTENT, payload=b"done"))
    (answer,) = link.client_events(ResponseReceived)
    assert answer.exchange is outstanding  # type: ignore[attr-defined]
    (close,) = link.client_events(CloseConnection)
    assert isinstance(close, CloseConnection)
    assert isinstance(close.error, ConnectionReleasedError)


def test_release_without_outstanding_requests_closes_at_once() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    events = machine.receive(encode_stream(build_release()), PEER, 0.0)
    (close,) = events
    assert isinstance(close, CloseConnection)
    assert close.remote == PEER


def test_release_then_abandon_or_timeout_closes() -> None:
    machine = StreamMessaging(StreamMessagingConfig(response_timeout=5.0))
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    first, _ = machine.send_request(get("a"), PEER, 0.0)
    second, _ = machine.send_request(get("b"), PEER, 0.0)
    assert machine.receive(encode_stream(build_release()), PEER, 0.0) == []
    (close,) = [
        e
        for e in machine.abandon(first, 1.0) + machine.timeout(5.0)
        if isinstance(e, CloseConnection)
    ]
    assert close.remote == PEER
    assert second.state is StreamClientState.DONE


# -- ping / pong ------------------------------------------------------------------------------


def test_ping_pong() -> None:
    link = Link()
    link.connect()
    exchange, events = link.client.send_ping(SERVER, link.now)
    assert exchange.ping
    link.pump(CLIENT, events)
    (pong,) = link.client_events(ResponseReceived)
    assert isinstance(pong, ResponseReceived)
    assert pong.exchange is exchange
    assert pong.response.code is Code.PONG
    assert pong.response.token == exchange.token
    assert exchange.state is StreamClientState.DONE
    assert link.client.next_deadline() is None
    assert link.server.statistics.pings == 1


def test_ping_without_pong_kills_the_connection() -> None:
    machine = StreamMessaging(StreamMessagingConfig(ping_timeout=5.0))
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    request, _ = machine.send_request(get(), PEER, 0.0)
    ping, events = machine.send_ping(PEER, 0.0)
    assert [m.code for m in frames_of(events)] == [Code.PING]
    assert machine.timeout(4.9) == []
    events = machine.timeout(5.0)
    assert isinstance(events[0], RequestFailed)
    assert events[0].exchange is ping
    assert isinstance(events[0].error, RequestTimeoutError)
    assert isinstance(events[1], RequestFailed)
    assert events[1].exchange is request
    assert isinstance(events[1].error, ConnectionLostError)
    assert isinstance(events[-1], CloseConnection)
    assert "Pong" in events[-1].reason
    assert not machine.connected(PEER)


def test_abandoned_ping_and_stray_pong() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    ping, _ = machine.send_ping(PEER, 0.0)
    assert machine.abandon(ping, 1.0) == []
    assert machine.next_deadline() is None
    pong = Message.from_fields(Code.PONG, None, None, ping.token, Options(), b"", None)
    assert machine.receive(encode_stream(pong), PEER, 2.0) == []
    assert machine.statistics.unmatched == 1


def test_pings_with_empty_tokens_replace_each_other() -> None:
    machine = StreamMessaging(StreamMessagingConfig(token_length=0, ping_timeout=5.0))
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    first, _ = machine.send_ping(PEER, 0.0)
    second, _ = machine.send_ping(PEER, 1.0)
    assert first.state is StreamClientState.DONE
    assert second.state is StreamClientState.SENT
    pong = Message.from_fields(Code.PONG, None, None, b"", Options(), b"", None)
    (answered,) = machine.receive(encode_stream(pong), PEER, 2.0)
    assert isinstance(answered, ResponseReceived)
    assert answered.exchange is second


def test_empty_token_pong_answers_the_only_ping() -> None:
    # libcoap 4.3.1 answers a Ping with an empty-token Pong instead of echoing the token.
    machine = StreamMessaging(StreamMessagingConfig(ping_timeout=5.0))
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    ping, _ = machine.send_ping(PEER, 0.0)
    assert len(ping.token) == 8
    pong = Message.from_fields(Code.PONG, None, None, b"", Options(), b"", None)
    (answered,) = machine.receive(encode_stream(pong), PEER, 1.0)
    assert isinstance(answered, ResponseReceived)
    assert answered.exchange is ping
    assert ping.state is StreamClientState.DONE
    assert machine.next_deadline() is None


def test_empty_token_pong_is_unmatched_with_two_pings_outstanding() -> None:
    machine = StreamMessaging(StreamMessagingConfig(ping_timeout=5.0))
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    first, _ = machine.send_ping(PEER, 0.0)
    second, _ = machine.send_ping(PEER, 0.0)
    pong = Message.from_fields(Code.PONG, None, None, b"", Options(), b"", None)
    assert machine.receive(encode_stream(pong), PEER, 1.0) == []
    assert machine.statistics.unmatched == 1
    assert first.state is StreamClientState.SENT
    assert second.state is StreamClientState.SENT


# -- Max-Message-Size ---------------------------------------------------------------------------


def test_request_over_the_peers_limit_fails_unsent() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm(100)), PEER, 0.0)
    exchange, events = machine.send_request(Message(code=Code.PUT, payload=bytes(200)), PEER, 0.0)
    (failed,) = events
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is exchange
    assert isinstance(failed.error, MessageTooLargeError)
    assert isinstance(failed.error, LocalProtocolError)
    assert failed.error.limit == 100
    assert failed.error.size > 200
    _fits, events = machine.send_request(Message(code=Code.PUT, payload=bytes(50)), PEER, 0.0)
    assert [m.code for m in frames_of(events)] == [Code.PUT]


def test_large_request_waits_for_the_peers_csm() -> None:
    machine = StreamMessaging()
    big = Message(code=Code.PUT, payload=bytes(3000))
    allowed, events = machine.send_request(big, PEER, 0.0)
    assert [m.code for m in frames_of(events)] == [Code.CSM]  # held back
    assert allowed.state is StreamClientState.QUEUED
    refused, _ = machine.send_request(Message(code=Code.PUT, payload=bytes(9000)), PEER, 0.0)
    assert machine.statistics.queued_requests == 2
    events = machine.receive(encode_stream(build_csm(5000)), PEER, 1.0)
    sent = frames_of(events)
    assert [m.code for m in sent] == [Code.PUT]
    assert len(sent[0].payload) == 3000
    (failed,) = others(events)
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is refused
    assert isinstance(failed.error, MessageTooLargeError)
    assert allowed.state is StreamClientState.SENT
    assert machine.statistics.queued_requests == 0


def test_waiting_request_abandoned_or_refused_by_the_default_limit() -> None:
    machine = StreamMessaging()
    dropped, _ = machine.send_request(Message(code=Code.PUT, payload=bytes(3000)), PEER, 0.0)
    refused, _ = machine.send_request(Message(code=Code.PUT, payload=bytes(3000)), PEER, 0.0)
    assert machine.abandon(dropped, 0.5) == []
    # The peer's CSM announces nothing: the default 1152 holds.
    (failed,) = machine.receive(encode_stream(build_csm()), PEER, 1.0)
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is refused
    assert isinstance(failed.error, MessageTooLargeError)
    assert failed.error.limit == 1152
    assert dropped.state is StreamClientState.DONE


def test_waiting_request_times_out() -> None:
    machine = StreamMessaging(StreamMessagingConfig(response_timeout=3.0))
    waiting, _ = machine.send_request(Message(code=Code.PUT, payload=bytes(3000)), PEER, 0.0)
    (failed,) = machine.timeout(3.0)
    assert isinstance(failed, RequestFailed)
    assert failed.exchange is waiting
    assert machine.statistics.queued_requests == 0
    assert machine.receive(encode_stream(build_csm(10_000)), PEER, 4.0) == []


def test_response_over_the_peers_limit_becomes_5_00() -> None:
    link = Link(config=StreamMessagingConfig(max_message_size=200))
    link.decoders[CLIENT].set_max_message_size(10_000)  # to see what the server sends
    link.connect()
    exchange = link.request(get())
    (served,) = link.served()
    link.respond(served, Message(code=Code.CONTENT, payload=bytes(500)))
    (answer,) = link.client_events(ResponseReceived)
    assert answer.exchange is exchange  # type: ignore[attr-defined]
    assert answer.response.code is Code.INTERNAL_SERVER_ERROR  # type: ignore[attr-defined]


def test_notification_over_the_peers_limit_ends_the_observation() -> None:
    link = Link(config=StreamMessagingConfig(max_message_size=300))
    link.connect()
    link.request(get("obs", observe=0))
    (served,) = link.served()
    link.respond(served, Message(code=Code.CONTENT, observe=1))
    (failed,) = link.server.notify(
        served, Message(code=Code.CONTENT, observe=2, payload=bytes(400)), 0.0
    )
    assert isinstance(failed, ResponseFailed)
    assert isinstance(failed.error, MessageTooLargeError)
    (again,) = link.server.notify(served, Message(code=Code.CONTENT, observe=3), 0.0)
    assert isinstance(again, ResponseFailed)


# -- WebSockets ---------------------------------------------------------------------------------


def test_websocket_framing() -> None:
    machine = StreamMessaging(websocket=True)
    events = machine.connection_made(PEER, 0.0)
    (transmit,) = events
    assert isinstance(transmit, Transmit)
    assert transmit.data[0] >> 4 == 0  # Len 0 (§4.4)
    assert parse_signal(decode_websocket(transmit.data)) == Csm(1152, True)
    machine.receive(encode_websocket(build_csm(4096)), PEER, 0.0)
    exchange, events = machine.send_request(get(), PEER, 0.0)
    request = decode_websocket(events[0].data)  # type: ignore[attr-defined]
    assert request.token == exchange.token
    response = Message.from_fields(Code.CONTENT, None, None, exchange.token, Options(), b"ok", None)
    (received,) = machine.receive(encode_websocket(response), PEER, 0.0)
    assert isinstance(received, ResponseReceived)
    assert received.response.payload == b"ok"
    # A stream frame (Len not 0) is malformed on a WebSocket: abort.
    events = machine.receive(encode_stream(response.copy(payload=b"x")), PEER, 0.0)
    assert isinstance(events[-1], CloseConnection)


# -- after a close -----------------------------------------------------------------------------


def test_frames_after_our_close_are_ignored_until_the_driver_reports() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    events = machine.abort(PEER, 1.0, "bye")
    assert isinstance(events[-1], CloseConnection)
    # Still in flight on the closing connection: no new CSM, no second Abort.
    late = Message(code=Code.GET, token=b"x")
    assert machine.receive(encode_stream(late), PEER, 1.1) == []
    assert not machine.connected(PEER)
    assert machine.connection_lost(PEER, None, 1.2) == []
    # A new connection from the same address starts afresh, CSM first.
    events = machine.receive(encode_stream(build_csm(3000)), PEER, 2.0)
    assert [m.code for m in frames_of(events)] == [Code.CSM]
    assert machine.peer_settings(PEER) == PeerSettings(3000, False, True)


def test_connection_made_after_our_close_starts_afresh() -> None:
    machine = StreamMessaging()
    machine.receive(encode_stream(build_csm()), PEER, 0.0)
    machine.receive(encode_stream(build_release()), PEER, 0.0)
    assert not machine.connected(PEER)
    (csm,) = frames_of(machine.connection_made(PEER, 1.0))
    assert csm.code is Code.CSM
    assert machine.peer_settings(PEER) == PeerSettings(1152, False, False)


def test_closing_remotes_are_bounded() -> None:
    machine = StreamMessaging()
    for index in range(4100):
        remote = ("198.51.100.7", index)
        machine.receive(b"\x00\x45", remote, 0.0)  # not a CSM: aborted, closing
    assert len(machine._closing) == 4096
    # The oldest were forgotten: a frame from one makes a new connection.
    events = machine.receive(encode_stream(build_csm()), ("198.51.100.7", 0), 1.0)
    assert [m.code for m in frames_of(events)] == [Code.CSM]
    assert machine.receive(b"\x00\x45", ("198.51.100.7", 4099), 1.0) == []


# -- robustness --------------------------------------------------------------------------------


def test_fuzz_receive_never_raises() -> None:
    """Seeded: random and mutated frames into a machine with requests, pings and
    observations in flight; ``receive`` returns events and raises nothing."""
    rng = random.Random(0x8323)
    corpus = [
        encode_stream(build_csm(4096, block_wise_transfer=True)),
        encode_stream(build_ping(b"p")),
        encode_stream(build_release(("h:1",), 5, "x")),
        encode_stream(build_abort(2, "y")),
        encode_stream(Message(code=Code.CONTENT, token=b"12345678", observe=3, payload=b"v")),
        encode_stream(Message(code=Code.GET, token=b"t", uri_path=("a",), observe=0)),
    ]
    kinds: set[type[Event]] = set()
    for iteration in range(3000):
        machine = StreamMessaging(rng=random.Random(iteration))
        remote = ("203.0.113.9", iteration)
        machine.receive(corpus[0], remote, 0.0)
        machine.send_request(get(observe=0), remote, 0.0)
        machine.send_ping(remote, 0.0)
        for _ in range(4):
            frame = bytearray(rng.choice(corpus))
            for _ in range(rng.randint(0, 3)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            for event in machine.receive(bytes(frame), remote, 1.0):
                kinds.add(type(event))
                if isinstance(event, RequestReceived):
                    response = Message(code=Code.CONTENT, observe=1)
                    machine.respond(event.exchange, response, 1.0)
        machine.timeout(1e9)
        assert machine.next_deadline() is None
    assert {Transmit, CloseConnection, RequestReceived, RequestFailed} <= kinds
