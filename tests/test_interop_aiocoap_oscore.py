"""OSCORE at the engine level against aiocoap's implementation (``aiocoap.oscore``).

Both sides derive the same security context from one Master Secret, Master
Salt, Sender and Recipient IDs (and ID Context); aiocoap's is a
``FilesystemSecurityContext`` read from a ``settings.json`` as aiocoap's
documentation describes. Messages cross as bytes (coap_trio's codec one way,
aiocoap's the other). In both directions, for requests and responses:
GET, POST with a payload, an Observe registration with its notifications
and block-wise options, with and without ID Context, with each of the three
AEAD algorithms both implement.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.oscore
import pytest
from aiocoap.optiontypes import BlockOption

from coap_trio import codec
from coap_trio.block import BlockValue
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.contentformat import ContentFormat
from coap_trio.numbers.types import Type
from coap_trio.protocol.oscore import (
    ALGORITHMS,
    MemorySequenceStore,
    OscoreEngine,
    RequestRejected,
    RequestVerified,
    ResponseRepeat,
    ResponseVerified,
    SecurityContext,
)
from coap_trio.protocol.oscore.algorithms import algorithm_by_name

SECRET = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
SALT = bytes.fromhex("9e7ca92223786340")
CLIENT_ID = b"\x01"
SERVER_ID = b"\x02\x02"

ALGORITHM_NAMES = [alg.name for alg in ALGORITHMS.values()]
ID_CONTEXTS = [None, bytes.fromhex("37cbf3210017a2d3")]


def aio_context(
    directory: Path, *, sender: bytes, recipient: bytes, algorithm: str, id_context: bytes | None
) -> Any:
    """aiocoap's security context from a settings.json written as its docs describe."""
    settings: dict[str, object] = {
        "sender-id_hex": sender.hex(),
        "recipient-id_hex": recipient.hex(),
        "secret_hex": SECRET.hex(),
        "salt_hex": SALT.hex(),
        "algorithm": algorithm,
    }
    if id_context is not None:
        settings["id-context_hex"] = id_context.hex()
    directory.mkdir()
    (directory / "settings.json").write_text(json.dumps(settings))
    return aiocoap.oscore.FilesystemSecurityContext(str(directory))


def our_context(
    *, sender: bytes, recipient: bytes, algorithm: str, id_context: bytes | None
) -> SecurityContext:
    return SecurityContext.derive(
        master_secret=SECRET,
        master_salt=SALT,
        sender_id=sender,
        recipient_id=recipient,
        id_context=id_context,
        algorithm=algorithm_by_name(algorithm),
    )


def to_aiocoap(message: Message) -> Any:
    """Our message as aiocoap receives it (through the bytes)."""
    if message.mid is None or message.mtype is None:
        message = message.copy(mtype=message.mtype or Type.CON, mid=message.mid or 0x1234)
    return aiocoap.Message.decode(codec.encode(message))


def from_aiocoap(message: Any, mtype: int = 0) -> Message:
    """aiocoap's outgoing message as we receive it (through the bytes)."""
    message.mtype = aiocoap.numbers.types.Type(mtype)
    message.mid = 0x4321
    message.token = b"\x07\x08"
    return codec.decode(message.encode())


def aio_options(message: Any) -> list[tuple[int, bytes]]:
    return [(int(option.number), option.encode()) for option in message.opt.option_list()]


@pytest.fixture
def aio_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Makes aiocoap contexts in their own directories; releases their locks at the end."""
    made: list[Any] = []
    count = iter(range(1000))

    def make(**kwargs: Any) -> Any:
        context = aio_context(tmp_path / f"context{next(count)}", **kwargs)
        made.append(context)
        return context

    yield make
    for context in made:
        context._destroy()  # aiocoap's way to write its state back and release the lock


def requests() -> list[tuple[str, Message]]:
    post = Message(code=Code.POST, uri_path=("sensors", "temp"), payload=b"set 21.5")
    post.opt.content_format = ContentFormat.TEXT
    block2 = Message(code=Code.GET, uri_path=("large",), block2=BlockValue(2, False, 4))
    block1 = Message(
        code=Code.PUT, uri_path=("upload",), payload=bytes(64), block1=BlockValue(1, True, 2)
    )
    block1.opt.size1 = 1000
    return [
        ("GET", Message(code=Code.GET, uri_path=("hello",), uri_query=("a=1",))),
        ("POST", post),
        ("observe", Message(code=Code.GET, uri_path=("clock",), observe=0)),
        ("Block2", block2),
        ("Block1", block1),
    ]


REQUESTS = requests()


@pytest.mark.parametrize("id_context", ID_CONTEXTS, ids=["no-id-context", "id-context"])
@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
@pytest.mark.parametrize(("kind", "request_message"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_our_client_with_aiocoaps_server(
    aio_factory: Callable[..., Any],
    kind: str,
    request_message: Message,
    algorithm: str,
    id_context: bytes | None,
) -> None:
    client = our_context(
        sender=CLIENT_ID, recipient=SERVER_ID, algorithm=algorithm, id_context=id_context
    )
    server = aio_factory(
        sender=SERVER_ID, recipient=CLIENT_ID, algorithm=algorithm, id_context=id_context
    )
    engine = OscoreEngine()
    outer, binding = engine.protect_request(request_message.copy(), client)
    received = to_aiocoap(outer)
    unprotected_fields = aiocoap.oscore.verify_start(received)
    assert server.get_oscore_context_for(unprotected_fields) is server
    inner, request_id = server.unprotect(received)
    assert int(inner.code) == int(request_message.code)
    assert inner.payload == request_message.payload
    assert aio_options(inner) == request_message.opt.raw_items
    # aiocoap answers; the first response uses the request's nonce.
    observing = kind == "observe"
    answers = 3 if observing else 1
    for number in range(answers):
        response = aiocoap.Message(code=aiocoap.CONTENT, payload=b"answer %d" % number)
        response.opt.content_format = 0
        if observing:
            response.opt.observe = number + 5
        if kind == "Block2":
            response.opt.block2 = BlockOption.BlockwiseTuple(2, True, 4)
        protected, _ = server.protect(response, request_id)
        result = engine.verify_response(from_aiocoap(protected, mtype=2), binding)
        assert isinstance(result, ResponseVerified), result
        assert result.response.code == Code.CONTENT
        assert result.response.payload == b"answer %d" % number
        assert result.response.opt.content_format == 0
        assert result.notification is observing
        if kind == "Block2":
            assert result.response.opt.block2 == BlockValue(2, True, 4)


@pytest.mark.parametrize("id_context", ID_CONTEXTS, ids=["no-id-context", "id-context"])
@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
@pytest.mark.parametrize(("kind", "request_message"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_aiocoaps_client_with_our_server(
    aio_factory: Callable[..., Any],
    kind: str,
    request_message: Message,
    algorithm: str,
    id_context: bytes | None,
) -> None:
    client = aio_factory(
        sender=CLIENT_ID, recipient=SERVER_ID, algorithm=algorithm, id_context=id_context
    )
    server = our_context(
        sender=SERVER_ID, recipient=CLIENT_ID, algorithm=algorithm, id_context=id_context
    )
    engine = OscoreEngine([server])
    outgoing = to_aiocoap(request_message)
    outgoing.direction = aiocoap.message.Direction.OUTGOING
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        protected, request_id = client.protect(outgoing)
    result = engine.verify_request(from_aiocoap(protected))
    assert isinstance(result, RequestVerified), result
    assert result.request.code == request_message.code
    assert result.request.payload == request_message.payload
    assert result.request.opt.raw_items == request_message.opt.raw_items
    observing = kind == "observe"
    assert result.binding.observe is observing
    for number in range(3 if observing else 1):
        response = Message(code=Code.CONTENT, payload=b"reply %d" % number)
        if observing:
            response.opt.observe = number + 1
        if kind == "Block1":
            response.code = Code.CONTINUE
            response.opt.block1 = BlockValue(1, True, 2)
        answer = engine.protect_response(response, result.binding)
        inner, _ = client.unprotect(to_aiocoap(answer.copy(mtype=Type.ACK)), request_id)
        assert int(inner.code) == int(response.code)
        assert inner.payload == response.payload
        if kind == "Block1":
            assert aio_options(inner) == response.opt.raw_items
        if observing:
            assert inner.opt.observe is not None  # aiocoap orders by Partial IV too


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
def test_many_requests_each_way_keep_their_sequence_numbers_apart(
    aio_factory: Callable[..., Any], algorithm: str
) -> None:
    """A shared context used in both roles: 20 exchanges each way, no replay refused."""
    ours = our_context(sender=CLIENT_ID, recipient=SERVER_ID, algorithm=algorithm, id_context=None)
    theirs = aio_factory(
        sender=SERVER_ID, recipient=CLIENT_ID, algorithm=algorithm, id_context=None
    )
    engine = OscoreEngine([ours])
    for number in range(20):
        outer, binding = engine.protect_request(
            Message(code=Code.GET, uri_path=("n", str(number))), ours
        )
        inner, request_id = theirs.unprotect(to_aiocoap(outer))
        assert inner.opt.uri_path == ("n", str(number))
        reply, _ = theirs.protect(aiocoap.Message(code=aiocoap.CONTENT, payload=b"ok"), request_id)
        assert isinstance(engine.verify_response(from_aiocoap(reply, 2), binding), ResponseVerified)
        outgoing = to_aiocoap(Message(code=Code.GET, uri_path=("m", str(number))))
        outgoing.direction = aiocoap.message.Direction.OUTGOING
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            protected, their_id = theirs.protect(outgoing)
        verified = engine.verify_request(from_aiocoap(protected))
        assert isinstance(verified, RequestVerified)
        answer = engine.protect_response(Message(code=Code.CONTENT), verified.binding)
        theirs.unprotect(to_aiocoap(answer.copy(mtype=Type.ACK)), their_id)


def test_our_client_repeats_with_the_echo_of_a_restarted_aiocoap_server(tmp_path: Path) -> None:
    """aiocoap's replay window is unknown after its restart: it answers 4.01 with Echo."""
    directory = tmp_path / "restarted"
    directory.mkdir()
    (directory / "sequence.json").write_text('{"next-to-send": 100, "received": "unknown"}')
    settings = {
        "sender-id_hex": SERVER_ID.hex(),
        "recipient-id_hex": CLIENT_ID.hex(),
        "secret_hex": SECRET.hex(),
        "salt_hex": SALT.hex(),
    }
    (directory / "settings.json").write_text(json.dumps(settings))
    server = aiocoap.oscore.FilesystemSecurityContext(str(directory))
    try:
        client = our_context(
            sender=CLIENT_ID, recipient=SERVER_ID, algorithm="AES-CCM-16-64-128", id_context=None
        )
        engine = OscoreEngine()
        outer, binding = engine.protect_request(Message(code=Code.GET, uri_path=("x",)), client)
        with pytest.raises(aiocoap.oscore.ReplayErrorWithEcho) as caught:
            server.unprotect(to_aiocoap(outer))
        challenge = caught.value.to_message()
        result = engine.verify_response(from_aiocoap(challenge, mtype=2), binding)
        assert isinstance(result, ResponseRepeat), result
        assert result.response.code == Code.UNAUTHORIZED
        inner, request_id = server.unprotect(to_aiocoap(result.request))
        assert inner.opt.uri_path == ("x",)
        assert inner.opt.echo == result.response.opt.echo
        reply, _ = server.protect(aiocoap.Message(code=aiocoap.CONTENT, payload=b"ok"), request_id)
        done = engine.verify_response(from_aiocoap(reply, mtype=2), result.binding)
        assert isinstance(done, ResponseVerified)
        assert done.response.payload == b"ok"
    finally:
        server._destroy()


def test_aiocoaps_client_repeats_with_the_echo_of_our_restarted_server(
    aio_factory: Callable[..., Any],
) -> None:
    client = aio_factory(
        sender=CLIENT_ID, recipient=SERVER_ID, algorithm="AES-CCM-16-64-128", id_context=None
    )
    server = SecurityContext.derive(
        master_secret=SECRET,
        master_salt=SALT,
        sender_id=SERVER_ID,
        recipient_id=CLIENT_ID,
        sequence_store=MemorySequenceStore(300),
    )
    engine = OscoreEngine([server])
    outgoing = to_aiocoap(Message(code=Code.POST, uri_path=("door",), payload=b"open"))
    outgoing.direction = aiocoap.message.Direction.OUTGOING
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        protected, request_id = client.protect(outgoing)
    challenge = engine.verify_request(from_aiocoap(protected))
    assert isinstance(challenge, RequestRejected)
    assert challenge.response is not None
    inner, _ = client.unprotect(to_aiocoap(challenge.response.copy(mtype=Type.ACK)), request_id)
    assert int(inner.code) == int(Code.UNAUTHORIZED)
    assert inner.opt.echo == server.echo_value
    again = to_aiocoap(Message(code=Code.POST, uri_path=("door",), payload=b"open"))
    again.direction = aiocoap.message.Direction.OUTGOING
    again.opt.echo = inner.opt.echo
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        repeated, _ = client.protect(again)
    accepted = engine.verify_request(from_aiocoap(repeated))
    assert isinstance(accepted, RequestVerified), accepted
    assert accepted.request.payload == b"open"
