"""Protecting and verifying requests and responses (RFC 8613 §4, §5, §6, §8).

Known answers: RFC 8613 Appendix C.4 (request, empty Sender ID), C.5
(request, Sender ID 0x00, no Master Salt), C.6 (request with 'kid context'),
C.7 (response without Partial IV) and C.8 (response with Partial IV), the
§5.4 AAD example and the §6.3 compressed COSE examples, byte for byte, with
the unprotected messages built by coap_trio's codec. Then the option
classes (§4.1, Figure 5), the Outer Code (§4.2), Proxy-Uri (§4.1.3.3),
Observe (§4.1.3.5), Inner and Outer Block options (§4.1.3.4), Echo and
Request-Tag, and the request-response binding (§7.1).
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coap_trio import codec
from coap_trio.block import BlockValue
from coap_trio.errors import OscoreFailure, OscoreProtectError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.contentformat import ContentFormat
from coap_trio.numbers.optionnumbers import OptionNumber, registered_options
from coap_trio.numbers.types import Type
from coap_trio.options import Options
from coap_trio.protocol.blockwise import Block1Assembler, Complete, Continue, slice_block2
from coap_trio.protocol.blockwise_client import Block1Upload, SendBlock
from coap_trio.protocol.oscore import (
    ClientBinding,
    OscoreEngine,
    RequestRejected,
    RequestVerified,
    ResponseRejected,
    ResponseVerified,
    SecurityContext,
    ServerBinding,
)
from coap_trio.protocol.oscore.classes import (
    OPTION_CLASSES,
    OptionClass,
    decompose_proxy_uri,
    option_class,
)
from coap_trio.protocol.oscore.option import (
    CompressedHeader,
    decode_oscore_option,
    encode_oscore_option,
)
from coap_trio.protocol.oscore.protect import aad, external_aad, plaintext

h = bytes.fromhex

MASTER_SECRET = h("0102030405060708090a0b0c0d0e0f10")
MASTER_SALT = h("9e7ca92223786340")
ID_CONTEXT = h("37cbf3210017a2d3")


def c1_client(sequence: int = 20) -> SecurityContext:
    return SecurityContext.derive(
        master_secret=MASTER_SECRET,
        master_salt=MASTER_SALT,
        sender_id=b"",
        recipient_id=b"\x01",
        sender_sequence_number=sequence,
    )


def c1_server(sequence: int = 0) -> SecurityContext:
    return SecurityContext.derive(
        master_secret=MASTER_SECRET,
        master_salt=MASTER_SALT,
        sender_id=b"\x01",
        recipient_id=b"",
        sender_sequence_number=sequence,
    )


def pair(
    *, id_context: bytes | None = None
) -> tuple[OscoreEngine, SecurityContext, OscoreEngine, SecurityContext]:
    """A client engine and context, a server engine and context, sharing a secret."""
    client = SecurityContext.derive(
        master_secret=MASTER_SECRET, sender_id=b"\x0a", recipient_id=b"\x0b", id_context=id_context
    )
    server = SecurityContext.derive(
        master_secret=MASTER_SECRET, sender_id=b"\x0b", recipient_id=b"\x0a", id_context=id_context
    )
    return OscoreEngine(), client, OscoreEngine([server]), server


def wire(message: Message) -> Message:
    """``message`` through the codec both ways, as a peer receives it."""
    mid = 1 if message.mid is None else message.mid
    message = message.copy(mtype=message.mtype or Type.CON, mid=mid)
    return codec.decode(codec.encode(message))


# -- known answers ------------------------------------------------------------------


C4_PLAIN = "44015d1f00003974396c6f63616c686f737483747631"
C4_PROTECTED = "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e"
C7_PLAIN = "64455d1f00003974ff48656c6c6f20576f726c6421"
C7_PROTECTED = "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"
C8_PROTECTED = "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"


@pytest.mark.parametrize(
    ("name", "salt", "id_context", "sender", "plain", "protected", "aad_hex", "option"),
    [
        (
            "C.4",
            MASTER_SALT,
            None,
            b"",
            C4_PLAIN,
            C4_PROTECTED,
            "8368456e63727970743040488501810a40411440",
            "0914",
        ),
        (
            "C.5",
            b"",
            None,
            b"\x00",
            "440171c30000b932396c6f63616c686f737483747631",
            "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0",
            "8368456e63727970743040498501810a4100411440",
            "091400",
        ),
        (
            "C.6",
            MASTER_SALT,
            ID_CONTEXT,
            b"",
            "44012f8eef9bbf7a396c6f63616c686f737483747631",
            "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff"
            "72cd7273fd331ac45cffbe55c3",
            "8368456e63727970743040488501810a40411440",
            "19140837cbf3210017a2d3",
        ),
    ],
)
def test_rfc8613_request_vectors(
    name: str,
    salt: bytes,
    id_context: bytes | None,
    sender: bytes,
    plain: str,
    protected: str,
    aad_hex: str,
    option: str,
) -> None:
    """C.4, C.5, C.6: the protected request byte for byte, and the server gets it back."""
    client = SecurityContext.derive(
        master_secret=MASTER_SECRET,
        master_salt=salt,
        id_context=id_context,
        sender_id=sender,
        recipient_id=b"\x01",
        sender_sequence_number=20,
    )
    request = codec.decode(h(plain))
    assert plaintext(request.code, request.opt.raw_items[1:], b"") == h("01b3747631")
    assert aad(10, sender, b"\x14") == h(aad_hex)
    engine = OscoreEngine()
    outer, binding = engine.protect_request(request, client)
    assert outer.opt.oscore == h(option), name
    assert codec.encode(outer) == h(protected), name
    assert (binding.request_kid, binding.request_piv) == (sender, b"\x14")
    assert client.sequence.next == 21  # §8.1 step 3: incremented
    server = SecurityContext.derive(
        master_secret=MASTER_SECRET,
        master_salt=salt,
        id_context=id_context,
        sender_id=b"\x01",
        recipient_id=sender,
    )
    result = OscoreEngine([server]).verify_request(codec.decode(h(protected)))
    assert isinstance(result, RequestVerified), result
    assert codec.encode(result.request) == h(plain)


@pytest.mark.parametrize(
    ("name", "own_piv", "protected"), [("C.7", False, C7_PROTECTED), ("C.8", True, C8_PROTECTED)]
)
def test_rfc8613_response_vectors(name: str, own_piv: bool, protected: str) -> None:
    """C.7 (the request's nonce) and C.8 (the server's Partial IV 0), byte for byte."""
    client_engine, client = OscoreEngine(), c1_client()
    _, binding = client_engine.protect_request(codec.decode(h(C4_PLAIN)), client)
    server_engine = OscoreEngine([c1_server()])
    verified = server_engine.verify_request(codec.decode(h(C4_PROTECTED)))
    assert isinstance(verified, RequestVerified)
    if own_piv:
        verified.binding.nonce_reusable = False  # the server chooses its own Partial IV
    outer = server_engine.protect_response(codec.decode(h(C7_PLAIN)), verified.binding)
    assert codec.encode(outer) == h(protected), name
    result = client_engine.verify_response(codec.decode(h(protected)), binding)
    assert isinstance(result, ResponseVerified), result
    assert codec.encode(result.response) == h(C7_PLAIN)
    assert not result.notification


def test_the_aad_example_of_section_5_4() -> None:
    """§5.4: AES-CCM-16-64-128, request_kid 0x00, request_piv 0x25, no Class I options."""
    assert external_aad(10, b"\x00", b"\x25") == h("8501810a4100412540")
    assert aad(10, b"\x00", b"\x25") == h("8368456e63727970743040498501810a4100412540")


@given(
    algorithm=st.integers(min_value=-(2**40), max_value=2**40),
    kid=st.binary(max_size=300),
    piv=st.binary(max_size=5),
)
def test_the_aad_is_the_cbor_encoding_of_its_arrays(algorithm: int, kid: bytes, piv: bytes) -> None:
    """The AAD written by hand equals cbor2's encoding of the same arrays (§5.4)."""
    inner = cbor2.dumps([1, [algorithm], kid, piv, b""])
    assert external_aad(algorithm, kid, piv) == inner
    assert aad(algorithm, kid, piv) == cbor2.dumps(["Encrypt0", b"", inner])


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (CompressedHeader(partial_iv=b"\x05", kid=b"\x25"), "090525"),
        (CompressedHeader(partial_iv=b"\x00", kid=b""), "0900"),
        (
            CompressedHeader(partial_iv=b"\x05", kid_context=h("44616c656b"), kid=b""),
            "19050544616c656b",
        ),
        (CompressedHeader(), ""),
        (CompressedHeader(partial_iv=b"\x07"), "0107"),
    ],
)
def test_the_compressed_cose_examples_of_section_6_3(header: CompressedHeader, value: str) -> None:
    assert encode_oscore_option(header) == h(value)
    assert decode_oscore_option(h(value)) == header


# -- option classes and the outer message ------------------------------------------


def test_the_option_classes_of_figure_5() -> None:
    e, u, eu = OptionClass.E, OptionClass.U, OptionClass.E | OptionClass.U
    figure_5 = {
        1: e, 3: u, 4: e, 5: e, 6: eu, 7: u, 8: e, 9: u, 11: e, 12: e, 14: eu, 15: e,
        17: e, 20: e, 23: eu, 27: eu, 28: eu, 35: u, 39: u, 60: eu, 258: eu,
    }  # fmt: skip
    for number, expected in figure_5.items():
        assert option_class(number) == expected, number
    # Registered since: Echo, Request-Tag (RFC 9175), Hop-Limit (RFC 8768),
    # EDHOC (RFC 9668), Q-Block (RFC 9177); everything else is Class E.
    assert option_class(OptionNumber.ECHO) == e
    assert option_class(OptionNumber.REQUEST_TAG) == e
    assert option_class(OptionNumber.HOP_LIMIT) == u
    assert option_class(OptionNumber.EDHOC) == u
    assert option_class(OptionNumber.Q_BLOCK2) == eu
    assert option_class(65000) == option_class(2049) == e
    # Every option of the registry has a class, and no Class I is defined.
    for spec in registered_options():
        assert option_class(spec.number) in (e, u, eu)
    assert set(OPTION_CLASSES.values()) <= {e, u, eu}


def full_request() -> Message:
    request = Message(code=Code.PUT, mtype=Type.CON, mid=7, token=b"\x01\x02")
    opt = request.opt
    opt.uri_host = "example.org"
    opt.uri_port = 5684
    opt.proxy_scheme = "coap"
    opt.if_match = [b"\x01"]
    opt.etag = [b"\x09"]
    opt.uri_path = ["a", "b"]
    opt.uri_query = ["q=1"]
    opt.content_format = ContentFormat(50)
    opt.accept = ContentFormat(60)
    opt.max_age = 30
    opt.size1 = 300
    opt.block1 = BlockValue(1, True, 2)
    opt.echo = b"\x05" * 8
    opt.request_tag = [b"\x07"]
    opt.no_response = 26
    opt.hop_limit = 16
    opt.add(65000, b"unknown")
    request.payload = b"body"
    return request


def test_class_e_options_are_encrypted_and_class_u_stay_outer() -> None:
    client_engine, client, server_engine, _ = pair()
    request = full_request()
    outer, _ = client_engine.protect_request(request, client)
    assert outer.code == Code.POST  # §4.2
    assert {number for number, _ in outer.opt.raw_items} == {3, 7, 9, 16, 39}
    assert b"body" not in outer.payload
    assert b"unknown" not in outer.payload
    assert (outer.mtype, outer.mid, outer.token) == (Type.CON, 7, b"\x01\x02")
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    assert result.request.code == Code.PUT  # the inner code
    assert result.request.opt == request.opt
    assert result.request.payload == b"body"


def test_the_plaintext_is_the_code_then_inner_options_then_the_payload() -> None:
    """§5.3: the first plaintext byte is the Code; 0xFF precedes a payload."""
    client_engine, client, _, server = pair()
    request = Message(code=Code.DELETE, uri_path=("x",), payload=b"p")
    outer, binding = client_engine.protect_request(request, client)
    nonce = server.nonce(binding.request_kid, binding.request_piv)
    data = server.recipient_cipher.open(
        nonce, outer.payload, aad(10, binding.request_kid, binding.request_piv)
    )
    assert data == bytes((Code.DELETE,)) + b"\xb1x\xffp"


def test_outer_class_e_options_are_discarded_and_counted() -> None:
    """§8.2 step 1: an Outer If-Match or Uri-Path (added on the way) is dropped."""
    client_engine, client, server_engine, _ = pair()
    outer, _ = client_engine.protect_request(Message(code=Code.GET, uri_path=("in",)), client)
    outer.opt.add(1, b"\x01")
    outer.opt.add(11, b"injected")
    outer.opt.add(65000, b"x")
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    assert result.request.opt.uri_path == ("in",)
    assert 1 not in result.request.opt
    assert 65000 not in result.request.opt
    assert server_engine.statistics.outer_class_e_discarded == 3


def test_a_changed_outer_code_is_ignored() -> None:
    """§4.2: the receiver discards the Outer Code."""
    client_engine, client, server_engine, _ = pair()
    outer, _ = client_engine.protect_request(Message(code=Code.GET, uri_path=("x",)), client)
    outer.code = Code.DELETE
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    assert result.request.code == Code.GET


def test_nested_oscore_is_refused() -> None:
    """§4.1.3.7: an OSCORE option in the original message stops processing."""
    client_engine, client, _, _ = pair()
    request = Message(code=Code.GET)
    request.opt.oscore = b""
    with pytest.raises(OscoreProtectError, match="already"):
        client_engine.protect_request(request, client)
    assert client.sequence.next == 0  # no sequence number spent


def test_only_requests_and_responses_are_protected() -> None:
    client_engine, client, server_engine, _ = pair()
    with pytest.raises(OscoreProtectError, match="not a request"):
        client_engine.protect_request(Message(code=Code.CONTENT), client)
    outer, _ = client_engine.protect_request(Message(code=Code.GET), client)
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    with pytest.raises(OscoreProtectError, match="not a response"):
        server_engine.protect_response(Message(code=Code.GET), result.binding)


# -- Proxy-Uri ----------------------------------------------------------------------


def test_proxy_uri_is_decomposed_as_in_section_4_1_3_3() -> None:
    outer, inner = decompose_proxy_uri("coap://example.com/resource?q=1")
    assert outer == "coap://example.com"
    assert inner == [(11, b"resource"), (15, b"q=1")]
    assert decompose_proxy_uri("http://Example.com:8080/a/b")[0] == "http://example.com:8080"
    assert decompose_proxy_uri("coap://[2001:db8::1]:5683/x") == (
        "coap://[2001:db8::1]",
        [(11, b"x")],
    )
    for bad in ("mailto:x@example.com", "http://user@example.com/", "coap://h/#f", "relative"):
        with pytest.raises(OscoreProtectError):
            decompose_proxy_uri(bad)


def test_a_request_through_a_proxy_keeps_only_scheme_and_authority_outside() -> None:
    client_engine, client, server_engine, _ = pair()
    request = Message(code=Code.GET)
    request.set_request_uri("coap://example.com/resource?q=1", proxy="coap://127.0.0.1")
    outer, _ = client_engine.protect_request(request, client)
    assert outer.opt.proxy_uri == "coap://example.com"
    assert outer.opt.uri_path == ()
    assert outer.opt.uri_query == ()
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    assert result.request.opt.uri_path == ("resource",)
    assert result.request.opt.uri_query == ("q=1",)


# -- responses, the binding ---------------------------------------------------------


def exchange(
    client_engine: OscoreEngine, client: SecurityContext, server_engine: OscoreEngine,
    request: Message,
) -> tuple[RequestVerified, ClientBinding]:  # fmt: skip
    outer, binding = client_engine.protect_request(request, client)
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified), result
    return result, binding


def test_the_first_response_reuses_the_request_nonce_later_ones_do_not() -> None:
    """§8.3 step 3: one response may use the request's nonce; §5.2: a Partial IV otherwise."""
    client_engine, client, server_engine, server = pair()
    verified, _ = exchange(client_engine, client, server_engine, Message(code=Code.GET))
    first = server_engine.protect_response(Message(code=Code.CONTENT), verified.binding)
    assert first.opt.oscore == b""
    assert first.code == Code.CHANGED
    second = server_engine.protect_response(Message(code=Code.CONTENT), verified.binding)
    assert decode_oscore_option(second.opt.oscore or b"").partial_iv == b"\x00"
    assert server.sequence.next == 1


def test_a_response_verifies_only_for_its_own_request() -> None:
    """§7.1: the request's kid and Partial IV are in the response's AAD."""
    client_engine, client, server_engine, _ = pair()
    verified_a, binding_a = exchange(client_engine, client, server_engine, Message(code=Code.GET))
    _, binding_b = exchange(client_engine, client, server_engine, Message(code=Code.GET))
    response = server_engine.protect_response(Message(code=Code.CONTENT), verified_a.binding)
    wrong = client_engine.verify_response(wire(response), binding_b)
    assert isinstance(wrong, ResponseRejected)
    assert wrong.failure is OscoreFailure.DECRYPTION
    right = client_engine.verify_response(wire(response), binding_a)
    assert isinstance(right, ResponseVerified)


def test_only_one_response_is_accepted_for_a_plain_request() -> None:
    """§7.4: responses are protected against replay by accepting a single one."""
    client_engine, client, server_engine, _ = pair()
    verified, binding = exchange(client_engine, client, server_engine, Message(code=Code.GET))
    response = wire(server_engine.protect_response(Message(code=Code.CONTENT), verified.binding))
    assert isinstance(client_engine.verify_response(response, binding), ResponseVerified)
    again = client_engine.verify_response(response, binding)
    assert isinstance(again, ResponseRejected)
    assert again.failure is OscoreFailure.REPLAY


# -- Observe ------------------------------------------------------------------------


def test_an_observe_registration_goes_out_as_fetch_with_inner_and_outer_observe() -> None:
    """§4.1.3.5: Outer Code FETCH; the Inner and Outer Observe carry the request's value."""
    client_engine, client, server_engine, _ = pair()
    request = Message(code=Code.GET, uri_path=("obs",), observe=0)
    outer, binding = client_engine.protect_request(request, client)
    assert outer.code == Code.FETCH
    assert outer.opt.observe == 0
    assert binding.observe
    outer.opt.remove(6)  # an intermediary dropping the Outer Observe changes nothing (§4.1.3.5.1)
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    assert result.request.opt.observe == 0
    assert result.binding.observe
    cancel, cancel_binding = client_engine.protect_request(request.copy(observe=1), client)
    assert cancel.code == Code.FETCH
    assert not cancel_binding.observe


def test_notifications_carry_their_own_partial_iv_and_an_empty_inner_observe() -> None:
    """§4.1.3.5.2, §8.3.1: every notification has a Partial IV; Outer Observe, Inner empty."""
    client_engine, client, server_engine, server = pair()
    verified, binding = exchange(
        client_engine, client, server_engine, Message(code=Code.GET, observe=0)
    )
    notifications = []
    for value in (5, 6, 7):
        outer = server_engine.protect_response(
            Message(code=Code.CONTENT, observe=value, payload=b"%d" % value), verified.binding
        )
        assert outer.code == Code.CONTENT
        assert outer.opt.observe == value
        assert decode_oscore_option(outer.opt.oscore or b"").partial_iv is not None
        notifications.append(wire(outer))
    # The Inner Observe is empty: open the first one by hand.
    piv = decode_oscore_option(notifications[0].opt.oscore or b"").partial_iv or b""
    data = client.recipient_cipher.open(
        client.nonce(server.sender_id, piv),
        notifications[0].payload,
        aad(10, binding.request_kid, binding.request_piv),
    )
    assert data == b"\x45\x60\xff5"  # 2.05, Observe of length 0, payload
    seen = []
    for notification in (notifications[0], notifications[2]):
        result = client_engine.verify_response(notification, binding)
        assert isinstance(result, ResponseVerified)
        assert result.notification
        seen.append(result.response.opt.observe)
    assert seen == [1, 3]  # ordered by Partial IV (+1), the Outer value ignored
    stale = client_engine.verify_response(notifications[1], binding)
    assert isinstance(stale, ResponseRejected)
    assert stale.failure is OscoreFailure.REPLAY
    final = server_engine.protect_response(Message(code=Code.NOT_FOUND), verified.binding)
    assert decode_oscore_option(final.opt.oscore or b"").partial_iv is not None
    ended = client_engine.verify_response(wire(final), binding)
    assert isinstance(ended, ResponseVerified)
    assert not ended.notification
    late = client_engine.verify_response(notifications[2], binding)
    assert isinstance(late, ResponseRejected)


def notification_with_request_nonce(
    server: SecurityContext, binding: ServerBinding, payload: bytes
) -> Message:
    """A notification protected with the request's nonce, as a peer may do once (§8.3.1)."""
    body = plaintext(Code.CONTENT, [(6, b"")], payload)
    sealed = server.sender_cipher.seal(
        server.nonce(binding.request_kid, binding.request_piv),
        body,
        aad(10, binding.request_kid, binding.request_piv),
    )
    message = Message(code=Code.CONTENT, mtype=Type.NON, mid=2, observe=9, payload=sealed)
    message.opt.oscore = b""
    return message


def test_at_most_one_notification_without_partial_iv_and_it_is_the_oldest() -> None:
    """§7.4.1, §8.4.2: a peer may omit the Partial IV in one notification, the oldest."""
    client_engine, client, server_engine, server = pair()
    verified, binding = exchange(
        client_engine, client, server_engine, Message(code=Code.GET, observe=0)
    )
    first = notification_with_request_nonce(server, verified.binding, b"first")
    result = client_engine.verify_response(wire(first), binding)
    assert isinstance(result, ResponseVerified)
    assert result.notification
    assert result.response.opt.observe == 0
    assert result.response.payload == b"first"
    newer = server_engine.protect_response(
        Message(code=Code.CONTENT, observe=10, payload=b"newer"), verified.binding
    )
    assert decode_oscore_option(newer.opt.oscore or b"").partial_iv == b"\x00"
    result = client_engine.verify_response(wire(newer), binding)
    assert isinstance(result, ResponseVerified)
    assert result.response.opt.observe == 1
    again = client_engine.verify_response(wire(first), binding)
    assert isinstance(again, ResponseRejected)
    assert again.failure is OscoreFailure.REPLAY


def test_inner_observe_in_a_response_to_a_plain_request_stops_processing() -> None:
    """§4.1.3.5.2: a response with Inner Observe to a request without it is refused."""
    client_engine, client, server_engine, _ = pair()
    verified, binding = exchange(client_engine, client, server_engine, Message(code=Code.GET))
    outer = server_engine.protect_response(Message(code=Code.CONTENT, observe=3), verified.binding)
    result = client_engine.verify_response(wire(outer), binding)
    assert isinstance(result, ResponseRejected)
    assert result.failure is OscoreFailure.UNEXPECTED_OBSERVE


# -- Block-wise -----------------------------------------------------------------------


def test_inner_block_options_are_encrypted() -> None:
    """§4.1.3.4.1: a message fragmented before OSCORE keeps its Block options inside."""
    client_engine, client, server_engine, _ = pair()
    request = Message(code=Code.PUT, uri_path=("f",), payload=b"x" * 64)
    request.opt.block1 = BlockValue(0, True, 2)
    request.opt.size1 = 1000
    outer, _ = client_engine.protect_request(request, client)
    assert outer.opt.block1 is None
    assert outer.opt.size1 is None
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    assert result.request.opt.block1 == BlockValue(0, True, 2)
    assert result.request.opt.size1 == 1000
    verified = result.binding
    response = Message(code=Code.CONTINUE)
    response.opt.block1 = BlockValue(0, True, 2)
    protected = server_engine.protect_response(response, verified)
    assert protected.opt.block1 is None
    assert protected.code == Code.CHANGED


def test_outer_block1_fragments_of_an_oscore_request_are_reassembled_first() -> None:
    """§4.1.3.4.2, §8.2.1: Outer blocks are processed before OSCORE verifies the whole."""
    client_engine, client, server_engine, _ = pair()
    request = Message(code=Code.POST, uri_path=("big",), payload=bytes(range(256)) * 10)
    outer, _ = client_engine.protect_request(request, client)
    upload = Block1Upload(outer.payload, szx=2)
    assembler = Block1Assembler()
    step: object = upload.first()
    blocks = 0
    while isinstance(step, SendBlock) and blocks < 100:
        blocks += 1
        fragment = outer.copy(payload=step.payload, block1=step.block)
        received = wire(fragment)
        answer = assembler.feed("peer", "key", received.opt.block1, received.payload, None, 0.0)
        if isinstance(answer, Complete):
            received.payload = answer.body
            result = server_engine.verify_request(received)  # Outer Block1 still on it
            assert isinstance(result, RequestVerified)
            assert result.request.payload == request.payload
            assert result.request.opt.block1 is None
            break
        assert isinstance(answer, Continue)
        reply = Message(code=Code.CONTINUE)
        reply.opt.block1 = answer.block
        step = upload.feed(reply)
    assert blocks == len(outer.payload) // 64 + 1


def test_outer_block2_fragments_of_an_oscore_response_are_reassembled_first() -> None:
    client_engine, client, server_engine, _ = pair()
    verified, binding = exchange(client_engine, client, server_engine, Message(code=Code.GET))
    body = b"representation " * 100
    outer = server_engine.protect_response(
        Message(code=Code.CONTENT, payload=body), verified.binding
    )
    pieces = []
    number = 0
    while number < 100:
        piece, block = slice_block2(outer.payload, BlockValue(number, False, 3))
        pieces.append(piece)
        if not block.more:
            break
        number += 1
    assembled = outer.copy(payload=b"".join(pieces), block2=BlockValue(number, False, 3))
    result = client_engine.verify_response(wire(assembled), binding)
    assert isinstance(result, ResponseVerified)
    assert result.response.payload == body
    assert result.response.opt.block2 is None


def test_a_message_over_the_unfragmented_limit_is_discarded() -> None:
    """§4.1.3.4.2: MAX_UNFRAGMENTED_SIZE: the message is discarded, no response."""
    from coap_trio.protocol.oscore import OscoreConfig

    client_engine, client, _, server = pair()
    server_engine = OscoreEngine([server], OscoreConfig(max_unfragmented_size=100))
    outer, _ = client_engine.protect_request(Message(code=Code.PUT, payload=bytes(200)), client)
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestRejected)
    assert result.failure is OscoreFailure.TOO_LARGE
    assert result.response is None


# -- Echo and Request-Tag ------------------------------------------------------------


def test_echo_and_request_tag_are_class_e() -> None:
    client_engine, client, server_engine, _ = pair()
    request = Message(code=Code.POST, uri_path=("e",), echo=b"\x01\x02", request_tag=(b"t",))
    outer, _ = client_engine.protect_request(request, client)
    assert outer.opt.echo is None
    assert outer.opt.request_tag == ()
    result = server_engine.verify_request(wire(outer))
    assert isinstance(result, RequestVerified)
    assert result.request.opt.echo == b"\x01\x02"
    assert result.request.opt.request_tag == (b"t",)


@pytest.mark.parametrize("id_context", [None, ID_CONTEXT])
def test_a_round_trip_with_and_without_id_context(id_context: bytes | None) -> None:
    client_engine, client, server_engine, _ = pair(id_context=id_context)
    verified, binding = exchange(
        client_engine, client, server_engine, Message(code=Code.GET, uri_path=("r",))
    )
    header = CompressedHeader(partial_iv=b"\x00", kid_context=id_context, kid=b"\x0a")
    assert verified.binding.request_piv == b"\x00"
    assert encode_oscore_option(header)
    response = server_engine.protect_response(
        Message(code=Code.CONTENT, payload=b"ok"), verified.binding
    )
    result = client_engine.verify_response(wire(response), binding)
    assert isinstance(result, ResponseVerified)
    assert result.response.payload == b"ok"
    assert server_engine.statistics.requests_verified == 1
    assert client_engine.statistics.responses_verified == 1


def test_messages_keep_their_options_object_independent() -> None:
    """Protecting does not change the original message."""
    client_engine, client, _, _ = pair()
    request = full_request()
    before = Options.from_wire(list(request.opt.raw_items))
    client_engine.protect_request(request, client)
    assert request.opt == before
