"""Every OSCORE verification failure is typed, counted and answered as RFC 8613 says.

§8.2: a request whose OSCORE option or COSE object does not decode gets
4.02 Bad Option; one whose 'kid' names no security context 4.01
Unauthorized "Security context not found"; one that does not decrypt 4.00
Bad Request "Decryption failed"; §7.4: a replay 4.01 "Replay detected". Those
answers are sent unprotected (§8.3), with an Outer Max-Age of 0, and the
request reaches no handler. The client discards a response that does not
verify (§8.4). Nothing is raised out of the engine: Hypothesis feeds the
option parser and both verifications arbitrary bytes and messages.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coap_trio import codec
from coap_trio.errors import MessageFormatError, OscoreFailure, OscoreVerificationError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.options import Options
from coap_trio.protocol.oscore import (
    A128GCM,
    AES_CCM_16_64_128,
    Aead,
    ClientBinding,
    OscoreConfig,
    OscoreEngine,
    RequestRejected,
    RequestVerified,
    ResponseRejected,
    ResponseVerified,
    SecurityContext,
)
from coap_trio.protocol.oscore.option import (
    CompressedHeader,
    decode_oscore_option,
    encode_oscore_option,
)
from coap_trio.protocol.oscore.protect import aad, parse_plaintext, plaintext

SECRET = bytes(range(1, 17))


def contexts(
    *, id_context: bytes | None = None, algorithm: Aead = AES_CCM_16_64_128
) -> tuple[SecurityContext, SecurityContext]:
    """A client's context, and its server's (which may differ in ID Context or algorithm)."""
    client = SecurityContext.derive(master_secret=SECRET, sender_id=b"\x0a", recipient_id=b"\x0b")
    peer = SecurityContext.derive(
        master_secret=SECRET,
        sender_id=b"\x0b",
        recipient_id=b"\x0a",
        id_context=id_context,
        algorithm=algorithm,
    )
    return client, peer


def wire(message: Message) -> Message:
    mid = 1 if message.mid is None else message.mid
    message = message.copy(mtype=message.mtype or Type.CON, mid=mid, token=b"\x42")
    return codec.decode(codec.encode(message))


def protected_request(client: SecurityContext, payload: bytes = b"") -> Message:
    request = Message(code=Code.GET, uri_path=("r",), payload=payload)
    outer, _ = OscoreEngine().protect_request(request, client)
    return wire(outer)


def assert_answer(result: object, failure: OscoreFailure, code: Code | None) -> None:
    """The result is a rejection of that kind, answered unprotected with that code."""
    assert isinstance(result, RequestRejected), result
    assert result.failure is failure
    assert isinstance(result.error, OscoreVerificationError)
    if code is None:
        assert result.response is None
        return
    response = result.response
    assert response is not None
    assert response.code == code
    assert 9 not in response.opt  # unprotected (§8.3)
    assert response.opt.max_age == 0  # §4.1.3.1
    assert response.payload == failure.value.encode()
    assert response.token == b"\x42"


# -- requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"\x29\x00",  # a reserved flag bit
        b"\x89\x00",  # another
        b"\x0e\x01\x02\x03\x04\x05\x06",  # n = 6
        b"\x0f" + bytes(7),  # n = 7
        b"\x0b\x01",  # n = 3, one byte
        b"\x19\x01",  # h without the 'kid context' length
        b"\x19\x01\x05\x01",  # 'kid context' cut short
        b"\x11\x01\x00\x07",  # bytes after the last field, no 'kid'
        b"\x08\x0a",  # 'kid' without Partial IV: a request needs both
        b"\x01\x00",  # Partial IV without 'kid'
        b"",  # no field at all
    ],
)
def test_an_option_that_does_not_decode_gets_4_02(value: bytes) -> None:
    client, server = contexts()
    engine = OscoreEngine([server])
    request = protected_request(client)
    request.opt.replace(9, [value])
    assert_answer(engine.verify_request(request), OscoreFailure.DECODE, Code.BAD_OPTION)
    assert engine.statistics.failures[OscoreFailure.DECODE] == 1


def test_an_oscore_message_without_payload_is_malformed() -> None:
    """§2: a message with an OSCORE option and no payload is malformed."""
    client, server = contexts()
    engine = OscoreEngine([server])
    request = protected_request(client)
    request.payload = b""
    assert_answer(engine.verify_request(request), OscoreFailure.DECODE, Code.BAD_OPTION)


def test_two_oscore_options_are_malformed() -> None:
    client, server = contexts()
    request = protected_request(client)
    request.opt.add(9, request.opt.get_all(9)[0])
    result = OscoreEngine([server]).verify_request(request)
    assert_answer(result, OscoreFailure.DECODE, Code.BAD_OPTION)


def test_an_unknown_kid_gets_4_01_security_context_not_found() -> None:
    client, _ = contexts()
    other = SecurityContext.derive(master_secret=SECRET, sender_id=b"\x0b", recipient_id=b"\x0c")
    engine = OscoreEngine([other])
    assert_answer(
        engine.verify_request(protected_request(client)),
        OscoreFailure.CONTEXT_NOT_FOUND,
        Code.UNAUTHORIZED,
    )
    assert engine.statistics.failures[OscoreFailure.CONTEXT_NOT_FOUND] == 1


def test_an_unknown_kid_context_gets_4_01() -> None:
    """§5: with a 'kid context', only a context with that ID Context verifies."""
    client = SecurityContext.derive(
        master_secret=SECRET, sender_id=b"\x0a", recipient_id=b"\x0b", id_context=b"group-1"
    )
    _, server = contexts(id_context=b"group-2")
    result = OscoreEngine([server]).verify_request(protected_request(client))
    assert_answer(result, OscoreFailure.CONTEXT_NOT_FOUND, Code.UNAUTHORIZED)


def test_contexts_sharing_a_recipient_id_are_tried_in_turn() -> None:
    """§3.3: the same Recipient ID in several contexts: try each (a bounded, configured list)."""
    client = SecurityContext.derive(
        master_secret=SECRET, sender_id=b"\x0a", recipient_id=b"\x0b", id_context=b"two"
    )
    _, first = contexts(id_context=b"one")
    _, second = contexts(id_context=b"two")
    engine = OscoreEngine([first, second])
    request = protected_request(client)
    request.opt.replace(9, [b"\x09\x00\x0a"])  # without the 'kid context'
    result = engine.verify_request(request)
    assert isinstance(result, RequestVerified)
    assert result.binding.context is second
    engine.remove_context(second)
    assert engine.contexts == [first]


@pytest.mark.parametrize("where", ["ciphertext", "tag", "piv", "kid_context_alg"])
def test_a_message_that_does_not_decrypt_gets_4_00(where: str) -> None:
    client, server = contexts()
    engine = OscoreEngine([server])
    request = protected_request(client)
    genuine = request.copy()
    if where == "ciphertext":
        request.payload = bytes((request.payload[0] ^ 1,)) + request.payload[1:]
    elif where == "tag":
        request.payload = request.payload[:-1] + bytes((request.payload[-1] ^ 0x80,))
    elif where == "piv":
        request.opt.replace(9, [b"\x09\x01\x0a"])  # another Partial IV: another nonce and AAD
    else:  # the same secret and IDs, another algorithm: the AAD and keys differ
        _, server = contexts(algorithm=A128GCM)
        engine = OscoreEngine([server])
    assert_answer(engine.verify_request(request), OscoreFailure.DECRYPTION, Code.BAD_REQUEST)
    assert engine.statistics.failures[OscoreFailure.DECRYPTION] == 1
    if where != "kid_context_alg":
        # §8.2 step 6: the window is updated only after decryption succeeded.
        assert isinstance(engine.verify_request(genuine), RequestVerified)


def test_a_replay_gets_4_01_replay_detected() -> None:
    client, server = contexts()
    engine = OscoreEngine([server])
    request = protected_request(client)
    assert isinstance(engine.verify_request(request), RequestVerified)
    assert_answer(engine.verify_request(request), OscoreFailure.REPLAY, Code.UNAUTHORIZED)
    assert engine.statistics.failures[OscoreFailure.REPLAY] == 1
    assert engine.statistics.requests_verified == 1


def test_an_authentic_plaintext_that_is_not_a_message_gets_4_02_and_spends_its_piv() -> None:
    client, server = contexts()
    engine = OscoreEngine([server])
    piv = client.new_partial_iv()
    body = b"\x01\xf5junk"  # the Code, then a reserved option length nibble
    sealed = client.sender_cipher.seal(client.nonce(b"\x0a", piv), body, aad(10, b"\x0a", piv))
    request = Message(code=Code.POST, payload=sealed)
    request.opt.oscore = encode_oscore_option(CompressedHeader(partial_iv=piv, kid=b"\x0a"))
    result = engine.verify_request(wire(request))
    assert_answer(result, OscoreFailure.DECODE, Code.BAD_OPTION)
    assert not server.replay_window.is_fresh(int.from_bytes(piv, "big"))


def test_an_unprotected_request_to_a_protected_resource_gets_4_01() -> None:
    _, server = contexts()
    engine = OscoreEngine([server])
    plain = wire(Message(code=Code.GET, uri_path=("secret",)))
    assert_answer(engine.verify_request(plain), OscoreFailure.UNPROTECTED, Code.UNAUTHORIZED)
    assert_answer(engine.refuse_unprotected(plain), OscoreFailure.UNPROTECTED, Code.UNAUTHORIZED)
    assert engine.statistics.failures[OscoreFailure.UNPROTECTED] == 2


def test_the_answers_can_leave_out_max_age_and_diagnostics() -> None:
    client, server = contexts()
    engine = OscoreEngine([server], OscoreConfig(max_age_zero=False, diagnostics=False))
    request = protected_request(client)
    request.opt.replace(9, [b"\xff"])
    result = engine.verify_request(request)
    assert isinstance(result, RequestRejected)
    assert result.response is not None
    assert result.response.code == Code.BAD_OPTION
    assert len(result.response.opt) == 0
    assert result.response.payload == b""


# -- responses -------------------------------------------------------------------------


def request_and_binding() -> tuple[OscoreEngine, ClientBinding, OscoreEngine, RequestVerified]:
    client, server = contexts()
    client_engine, server_engine = OscoreEngine(), OscoreEngine([server])
    outer, binding = client_engine.protect_request(Message(code=Code.GET), client)
    verified = server_engine.verify_request(wire(outer))
    assert isinstance(verified, RequestVerified)
    return client_engine, binding, server_engine, verified


def test_an_unprotected_error_response_is_a_typed_failure_the_client_can_read() -> None:
    """§8.2's errors come back unprotected: the client sees which, and discards them."""
    client_engine, binding, _, _ = request_and_binding()
    answer = wire(Message(code=Code.UNAUTHORIZED, payload=b"Security context not found"))
    result = client_engine.verify_response(answer, binding)
    assert isinstance(result, ResponseRejected)
    assert result.failure is OscoreFailure.UNPROTECTED_RESPONSE
    assert result.response.payload == b"Security context not found"
    assert client_engine.statistics.failures[OscoreFailure.UNPROTECTED_RESPONSE] == 1


@pytest.mark.parametrize("damage", ["option", "payload", "empty", "kid", "kid_context", "tag"])
def test_a_damaged_response_is_discarded(damage: str) -> None:
    client_engine, binding, server_engine, verified = request_and_binding()
    response = wire(server_engine.protect_response(Message(code=Code.CONTENT), verified.binding))
    expected = OscoreFailure.DECRYPTION
    if damage == "option":
        response.opt.replace(9, [b"\xe0"])
        expected = OscoreFailure.DECODE
    elif damage == "payload":
        response.payload = bytes(len(response.payload))
    elif damage == "empty":
        response.payload = b""
        expected = OscoreFailure.DECODE
    elif damage == "kid":
        response.opt.replace(9, [b"\x08\x0c"])  # a 'kid' other than the server's
    elif damage == "kid_context":
        response.opt.replace(9, [b"\x10\x01\x99"])
    else:
        response.payload = response.payload[:-1]
    result = client_engine.verify_response(response, binding)
    assert isinstance(result, ResponseRejected)
    assert result.failure is expected
    assert client_engine.statistics.failures[expected] == 1
    # The genuine response still verifies afterwards (discarded, not fatal).
    genuine = wire(server_engine.protect_response(Message(code=Code.CONTENT), verified.binding))
    assert isinstance(client_engine.verify_response(genuine, binding), ResponseVerified)


# -- Hypothesis: nothing escapes ------------------------------------------------------


@settings(deadline=None, max_examples=1000)
@given(st.binary(max_size=300))
def test_the_option_parser_takes_any_bytes(value: bytes) -> None:
    failure = None
    try:
        header = decode_oscore_option(value)
    except OscoreVerificationError as error:
        failure = error.failure
    if failure is not None:
        assert failure is OscoreFailure.DECODE
        return
    again = encode_oscore_option(header)
    assert decode_oscore_option(again) == header
    if value != b"\x00":  # the one non-minimal spelling accepted
        assert again == value


@settings(deadline=None, max_examples=300)
@given(
    piv=st.none() | st.binary(min_size=1, max_size=5),
    kid_context=st.none() | st.binary(max_size=40),
    kid=st.none() | st.binary(max_size=40),
)
def test_option_values_round_trip(
    piv: bytes | None, kid_context: bytes | None, kid: bytes | None
) -> None:
    header = CompressedHeader(partial_iv=piv, kid_context=kid_context, kid=kid)
    assert decode_oscore_option(encode_oscore_option(header)) == header


option_items = st.lists(
    st.tuples(
        st.sampled_from([1, 4, 6, 9, 9, 9, 11, 12, 23, 27, 35, 252, 65000]), st.binary(max_size=20)
    ),
    max_size=8,
).map(lambda items: sorted(items, key=lambda item: item[0]))


def arbitrary_message(items: list[tuple[int, bytes]], code: int, payload: bytes) -> Message:
    return Message.from_fields(
        Code(code), Type.CON, 1, b"\x01", Options.from_wire(items), payload, None
    )


@settings(deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(items=option_items, code=st.integers(0, 255), payload=st.binary(max_size=60))
def test_verify_request_never_raises(
    items: list[tuple[int, bytes]], code: int, payload: bytes
) -> None:
    _, server = contexts()
    engine = OscoreEngine([server])
    result = engine.verify_request(arbitrary_message(items, code, payload))
    assert isinstance(result, RequestRejected)  # nothing forged verifies
    assert sum(engine.statistics.failures.values()) == 1


@settings(deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(items=option_items, code=st.integers(0, 255), payload=st.binary(max_size=60))
def test_verify_response_never_raises(
    items: list[tuple[int, bytes]], code: int, payload: bytes
) -> None:
    client, _ = contexts()
    engine = OscoreEngine()
    _, binding = engine.protect_request(Message(code=Code.GET, observe=0), client)
    result = engine.verify_response(arbitrary_message(items, code, payload), binding)
    assert isinstance(result, ResponseRejected)


@settings(deadline=None, max_examples=300)
@given(data=st.binary(max_size=120))
def test_any_datagram_decoded_is_verified_without_raising(data: bytes) -> None:
    _, server = contexts()
    try:
        message = codec.decode(data)
    except MessageFormatError:
        return
    result = OscoreEngine([server]).verify_request(message)
    assert isinstance(result, RequestRejected)


@settings(deadline=None, max_examples=300)
@given(position=st.integers(0, 200), bit=st.integers(0, 7))
def test_flipping_any_bit_of_a_protected_request_is_caught(position: int, bit: int) -> None:
    """Every bit of the OSCORE option and the payload is protected (or checked)."""
    client, server = contexts()
    request = protected_request(client, payload=b"payload")
    data = bytearray(codec.encode(request))
    start = len(codec.encode(request.copy(payload=b"", opt=Options()))) - 0
    index = start + position % (len(data) - start)
    data[index] ^= 1 << bit
    try:
        damaged = codec.decode(bytes(data))
    except MessageFormatError:
        return
    result = OscoreEngine([server]).verify_request(damaged)
    if isinstance(result, RequestVerified):
        # Only an Outer option other than OSCORE may change without notice (Class U);
        # the decrypted request is then the original one.
        assert result.request.payload == b"payload"
        assert result.request.opt.uri_path == ("r",)


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=80))
def test_the_plaintext_parser_takes_any_bytes(data: bytes) -> None:
    """§5.3: a decrypted plaintext that is not a CoAP message body is a DECODE failure."""
    failure = None
    try:
        code, items, payload = parse_plaintext(data)
    except OscoreVerificationError as error:
        failure = error.failure
    if failure is not None:
        assert failure is OscoreFailure.DECODE
        return
    assert code == data[0]
    assert parse_plaintext(plaintext(code, items, payload)) == (code, items, payload)
