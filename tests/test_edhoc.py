"""EDHOC (RFC 9528) on lakers: our initiator and responder, in memory.

Both flows (message_3 in its own exchange with message_4; message_3 in the
EDHOC + OSCORE request, RFC 9668), the OSCORE contexts they derive (one
protects, the other verifies), credentials by reference and by value,
untrusted peers, tampered messages, and the responder's bounded, expiring
state.
"""

from __future__ import annotations

import cbor2
import pytest

from coap_trio.errors import EdhocError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.protocol.oscore import OscoreEngine, RequestVerified, ResponseVerified
from coap_trio.protocol.oscore.edhoc import (
    CBOR_TRUE,
    EdhocCredentials,
    EdhocInitiator,
    EdhocResponders,
    ccs_credential,
    split_message_3,
)


def pair(
    *, client_by_value: bool = False, server_by_value: bool = False
) -> tuple[EdhocCredentials, EdhocCredentials]:
    client = EdhocCredentials.generate(b"\x0a", "client", by_value=client_by_value)
    server = EdhocCredentials.generate(b"\x0b", "server", by_value=server_by_value)
    client = EdhocCredentials(
        client.private_key, client.credential, (server.credential,), client_by_value
    )
    server = EdhocCredentials(
        server.private_key, server.credential, (client.credential,), server_by_value
    )
    return client, server


def check_contexts_work(initiator: EdhocInitiator, responder_context: object) -> None:
    client_engine = OscoreEngine()
    server_engine = OscoreEngine([responder_context])  # type: ignore[list-item]
    assert initiator.context is not None
    request, binding = client_engine.protect_request(
        Message(code=Code.GET, uri_path=("x",)), initiator.context
    )
    verified = server_engine.verify_request(request)
    assert isinstance(verified, RequestVerified)
    assert verified.request.opt.uri_path == ("x",)
    response = server_engine.protect_response(
        Message(code=Code.CONTENT, payload=b"ok"), verified.binding
    )
    result = client_engine.verify_response(response, binding)
    assert isinstance(result, ResponseVerified)
    assert result.response.payload == b"ok"


@pytest.mark.parametrize("client_by_value", [False, True])
@pytest.mark.parametrize("server_by_value", [False, True])
def test_the_four_message_flow(client_by_value: bool, server_by_value: bool) -> None:
    client, server = pair(client_by_value=client_by_value, server_by_value=server_by_value)
    responders = EdhocResponders(server)
    initiator = EdhocInitiator(client, b"\x37")
    message_1 = initiator.message_1()
    assert message_1.startswith(CBOR_TRUE)
    message_2 = responders.message_1(message_1[1:], 0.0, set())
    initiator.take_message_2(message_2)
    assert initiator.peer == server.credential
    assert initiator.c_r is not None
    payload = initiator.message_3_request()
    c_r, message_3 = payload[:1], payload[1:]
    assert c_r == initiator.c_r
    established = responders.message_3(c_r, message_3, 1.0)
    assert established.peer == client.credential
    initiator.take_message_4(established.message_4)
    assert initiator.context is not None
    assert initiator.context.sender_id == established.context.recipient_id
    assert initiator.context.recipient_id == established.context.sender_id == b"\x37"
    assert initiator.context.sender_key == established.context.recipient_key
    check_contexts_work(initiator, established.context)
    assert (responders.completed, responders.failed, len(responders)) == (1, 0, 0)


def test_the_combined_request_carries_message_3_before_the_ciphertext() -> None:
    client, server = pair()
    responders = EdhocResponders(server)
    initiator = EdhocInitiator(client, b"\x05")
    initiator.take_message_2(responders.message_1(initiator.message_1()[1:], 0.0, set()))
    message_3 = initiator.message_3()
    assert initiator.context is not None
    engine = OscoreEngine()
    request, _ = engine.protect_request(Message(code=Code.GET), initiator.context)
    combined = message_3 + request.payload
    found, rest = split_message_3(combined)
    assert (found, rest) == (message_3, request.payload)
    assert initiator.c_r is not None
    established = responders.message_3(initiator.c_r, found, 0.5)
    check_contexts_work(initiator, established.context)


def test_an_untrusted_client_is_refused_and_forgotten() -> None:
    _client, server = pair()
    stranger = EdhocCredentials.generate(b"\x0c", peers=(server.credential,))
    responders = EdhocResponders(server)
    initiator = EdhocInitiator(stranger, b"\x01")
    initiator.take_message_2(responders.message_1(initiator.message_1()[1:], 0.0, set()))
    assert initiator.c_r is not None
    with pytest.raises(EdhocError, match="no trusted credential"):
        responders.message_3(initiator.c_r, initiator.message_3_request()[1:], 1.0)
    assert responders.failed == 1
    assert not responders.is_pending(initiator.c_r)


def test_a_client_refuses_a_server_it_does_not_trust() -> None:
    client, _ = pair()
    impostor = EdhocCredentials.generate(b"\x0b", peers=(client.credential,))
    responders = EdhocResponders(impostor)
    initiator = EdhocInitiator(client, b"\x01")
    with pytest.raises(EdhocError):
        initiator.take_message_2(responders.message_1(initiator.message_1()[1:], 0.0, set()))


def test_trust_on_first_use_takes_a_credential_sent_by_value() -> None:
    server = EdhocCredentials.generate(b"\x0b", by_value=True)
    client = EdhocCredentials.generate(b"\x0a", peers=(server.credential,), by_value=True)
    responders = EdhocResponders(server)  # no peers: any credential sent by value
    initiator = EdhocInitiator(client, b"\x02")
    initiator.take_message_2(responders.message_1(initiator.message_1()[1:], 0.0, set()))
    assert initiator.c_r is not None
    established = responders.message_3(initiator.c_r, initiator.message_3_request()[1:], 0.0)
    assert established.peer == client.credential


def test_tampered_messages_are_edhoc_errors() -> None:
    client, server = pair()
    responders = EdhocResponders(server)
    with pytest.raises(EdhocError):
        responders.message_1(b"\x03\x02", 0.0, set())
    initiator = EdhocInitiator(client, b"\x01")
    message_2 = bytearray(responders.message_1(initiator.message_1()[1:], 0.0, set()))
    message_2[-1] ^= 1
    with pytest.raises(EdhocError):
        initiator.take_message_2(bytes(message_2))
    with pytest.raises(EdhocError, match="no EDHOC exchange"):
        responders.message_3(b"\x17", b"\x41\x00", 0.0)
    assert responders.failed == 2


def test_the_responder_state_is_bounded_and_expires() -> None:
    client, server = pair()
    responders = EdhocResponders(server, max_pending=4, lifetime=10.0)
    for number in range(6):
        initiator = EdhocInitiator(client, bytes([number]))
        responders.message_1(initiator.message_1()[1:], float(number), set())
    assert len(responders) == 4
    assert responders.evicted == 2
    responders.message_1(EdhocInitiator(client, b"\x09").message_1()[1:], 100.0, set())
    assert len(responders) == 1  # the others expired
    assert responders.evicted == 6


def test_connection_identifiers_avoid_those_in_use() -> None:
    client, server = pair()
    responders = EdhocResponders(server)
    in_use = {bytes([n]) for n in range(24)} | {b"\x20"}
    initiator = EdhocInitiator(client, b"\x21")
    initiator.take_message_2(responders.message_1(initiator.message_1()[1:], 0.0, in_use))
    assert initiator.c_r == b"\x22"


def test_the_ccs_credential_is_deterministic_cbor() -> None:
    key = bytes(range(1, 33))
    credential = ccs_credential(key, b"\x2b", "42-50-31-FF-EF-37-32-39")
    claims = cbor2.loads(credential)
    assert claims[2] == "42-50-31-FF-EF-37-32-39"
    assert claims[8][1][2] == b"\x2b"
    assert cbor2.dumps(claims, canonical=True) == credential


@pytest.mark.parametrize("payload", [b"", b"\x01\x02", b"\x58", b"\x43abc", b"\x5f\x00"], ids=repr)
def test_split_message_3_refuses_what_is_not_a_byte_string_and_more(payload: bytes) -> None:
    with pytest.raises(EdhocError):
        split_message_3(payload)


# RFC 9529 §3 (method 3, cipher suite 2): the static keys and credentials.
SK_R = "72cc4761dbd4c78f758931aa589d348d1ef874a7e303ede2f140dcf3e6aa4aac"
CRED_R = (
    "a2026b6578616d706c652e65647508a101a501020241322001215820bbc34960526ea4d32e940cad2a23"
    "4148ddc21791a12afbcbac93622046dd44f02258204519e257236b2a0ce2023f0931f1f386ca7afda64f"
    "cde0108c224c51eabf6072"
)
SK_I = "fb13adeb6518cee5f88417660841142e830a81fe334380a953406a1305e8706b"
CRED_I = (
    "a2027734322d35302d33312d46462d45462d33372d33322d333908a101a5010202412b2001215820ac75"
    "e9ece3e50bfc8ed60399889522405c47bf16df96660a41298cb4307f7eb62258206e5de611388a4b8a82"
    "11334ac7d37ecb52a387d257e6db3c2a93df21ff3affc8"
)


def test_rfc_9529_credentials_and_a_handshake_with_its_static_keys() -> None:
    """The CCSs of RFC 9529 §3 come out of its private keys byte for byte, and the two
    sides of that trace complete a handshake by reference ('kid' 0x2b, 0x32), C_I
    -24 and the C_R 0x27 of the trace. (lakers' Python API draws the ephemeral
    keys itself, so the trace's messages cannot be reproduced byte for byte.)"""
    cred_i = ccs_credential(bytes.fromhex(SK_I), b"\x2b", "42-50-31-FF-EF-37-32-39")
    cred_r = ccs_credential(bytes.fromhex(SK_R), b"\x32", "example.edu")
    assert cred_i.hex() == CRED_I
    assert cred_r.hex() == CRED_R
    initiator_credentials = EdhocCredentials(bytes.fromhex(SK_I), cred_i, (cred_r,))
    responder_credentials = EdhocCredentials(bytes.fromhex(SK_R), cred_r, (cred_i,))
    responders = EdhocResponders(responder_credentials)
    initiator = EdhocInitiator(initiator_credentials, b"\x37")  # C_I = -24
    in_use = {bytes([n]) for n in range(24)} | {bytes([0x20 + n]) for n in range(7)}
    initiator.take_message_2(responders.message_1(initiator.message_1()[1:], 0.0, in_use))
    assert initiator.c_r == b"\x27"  # C_R = -8, as in the trace
    established = responders.message_3(b"\x27", initiator.message_3_request()[1:], 0.0)
    initiator.take_message_4(established.message_4)
    check_contexts_work(initiator, established.context)


def test_a_responder_picks_its_identity_by_the_origin_asked() -> None:
    """Identities by URI pattern (aiocoap's ``coap://host/*``): the longest match wins;
    none matching: the only identity, or None when there are several."""
    first = EdhocCredentials.generate(b"\x01", "first")
    second = EdhocCredentials.generate(b"\x02", "second")
    responders = EdhocResponders(
        first, identities={"coap://a/*": first, "coap://b/*": second, "coap://b/x/*": first}
    )
    assert responders.identity_for("coap://a/.well-known/edhoc") is first
    assert responders.identity_for("coap://b/.well-known/edhoc") is second
    assert responders.identity_for("coap://b/x/.well-known/edhoc") is first
    assert responders.identity_for("coap://c/.well-known/edhoc") is None
    assert responders.identity_for(None) is None
    alone = EdhocResponders(first, identities={"coap://a/*": second})
    assert alone.identity_for("coap://elsewhere/.well-known/edhoc") is second
    assert EdhocResponders(first).identity_for("coap://any/") is first


def test_message_1_asking_for_the_credential_by_value_gets_it() -> None:
    """EAD item 15 (non-critical) in message_1: message_2 carries the responder's
    credential by value, though it sends it by reference otherwise; an initiator
    trusting any peer asks for it."""
    server = EdhocCredentials.generate(b"\x0b", "server")
    client = EdhocCredentials.generate(b"\x0a", "client", trust_on_first_use=True)
    responders = EdhocResponders(
        EdhocCredentials(server.private_key, server.credential, (client.credential,))
    )
    initiator = EdhocInitiator(client, b"\x05")
    message_1 = initiator.message_1()
    message_2 = responders.message_1(message_1[1:], 0.0, set())
    initiator.take_message_2(message_2)
    assert initiator.peer == server.credential  # (sent by value: no kid to look up)
    established = responders.message_3(initiator.c_r or b"", initiator.message_3(), 1.0)
    assert established.peer == client.credential
