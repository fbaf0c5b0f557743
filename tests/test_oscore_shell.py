"""OSCORE in the Context (RFC 8613): protected requests, protected resources, bad input.

A client Context and a server Context on a
:class:`~coap_trio.testing.MemoryNetwork` under ``autojump_clock``, each
opened with ``oscore=`` credentials made from security contexts that share
one Master Secret. What is checked: what the handler saw (the decrypted
request, ``request.remote``), what the wire carried (the network's capture:
nothing readable), the answers to bad input sent by a raw peer (exact
codes and diagnostics, RFC 8613 §7.4 and §8.2), and the counters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from coap_trio.codec import decode, encode
from coap_trio.context import Context, open_context
from coap_trio.errors import OscoreFailure, OscoreVerificationError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.observable import ObservableResource
from coap_trio.oscore_credentials import CredentialsMap
from coap_trio.protocol.oscore import MemorySequenceStore, SecurityContext
from coap_trio.protocol.oscore.option import decode_oscore_option
from coap_trio.remote import DatagramRemote, OscoreRemote
from coap_trio.resource import Resource, Site
from coap_trio.testing import MemoryNetwork

SERVER = "10.0.0.2"
CLIENT = "10.0.0.1"
PEER = "10.0.0.9"
BASE = f"coap://{SERVER}"
LIMIT = 600.0

SECRET = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
SALT = bytes.fromhex("9e7ca92223786340")
CLIENT_ID = b"\x01"
SERVER_ID = b""


def contexts(
    *,
    secret: bytes = SECRET,
    client_id: bytes = CLIENT_ID,
    id_context: bytes | None = None,
    store: MemorySequenceStore | None = None,
) -> tuple[SecurityContext, SecurityContext]:
    """(the client's context, the server's context) of one pair."""
    client = SecurityContext.derive(
        master_secret=secret,
        master_salt=SALT,
        sender_id=client_id,
        recipient_id=SERVER_ID,
        id_context=id_context,
    )
    server = SecurityContext.derive(
        master_secret=SECRET,
        master_salt=SALT,
        sender_id=SERVER_ID,
        recipient_id=CLIENT_ID,
        id_context=id_context,
        sequence_store=store,
    )
    return client, server


class Echo(Resource):
    """Answers with what it saw; records every request."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def render_get(self, request: Message) -> Message:
        self.seen.append(request)
        return Message(code=Code.CONTENT, payload=b"hello " + repr(request.remote).encode())

    async def render_post(self, request: Message) -> Message:
        self.seen.append(request)
        return Message(code=Code.CHANGED, payload=request.payload[::-1])


class Large(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=bytes(range(256)) * 20)

    async def render_put(self, request: Message) -> Message:
        return Message(code=Code.CHANGED, payload=b"%d" % len(request.payload))


class Secret(Resource):
    requires_oscore = True

    def __init__(self) -> None:
        self.rendered = 0

    async def render_get(self, request: Message) -> Message:
        self.rendered += 1
        remote = request.remote
        assert isinstance(remote, OscoreRemote)
        return Message(code=Code.CONTENT, payload=b"for " + remote.recipient_id.hex().encode())


class Whoami(Resource):
    """Requires OSCORE; records who asked."""

    requires_oscore = True

    def __init__(self) -> None:
        self.remotes: list[object] = []

    async def render_get(self, request: Message) -> Message:
        self.remotes.append(request.remote)
        return Message(code=Code.CONTENT)


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"%d" % self.value)


def make_site() -> tuple[Site, dict[str, Any]]:
    resources: dict[str, Any] = {
        "echo": Echo(),
        "large": Large(),
        "secret": Secret(),
        "counter": Counter(),
        "whoami": Whoami(),
    }
    site = Site()
    for name, resource in resources.items():
        site.add([name], resource)
    return site, resources


@asynccontextmanager
async def pair(
    client_context: SecurityContext | None = None,
    server_context: SecurityContext | None = None,
    network: MemoryNetwork | None = None,
) -> AsyncIterator[tuple[Context, Context, dict[str, Any], MemoryNetwork]]:
    """A server serving the site with OSCORE, and a client with credentials for it."""
    if client_context is None or server_context is None:
        client_context, server_context = contexts()
    network = network or MemoryNetwork(seed=7)
    site, resources = make_site()
    server_credentials = CredentialsMap.from_contexts({"coap://*": server_context})
    client_credentials = CredentialsMap.from_contexts({f"{BASE}/*": client_context})
    async with (
        open_context(
            bind=(SERVER, 5683), site=site, network=network, oscore=server_credentials
        ) as server,
        open_context(bind=(CLIENT, 0), network=network, oscore=client_credentials) as client,
    ):
        yield client, server, resources, network


def unreadable(network: MemoryNetwork, text: bytes) -> bool:
    """Whether no datagram on the wire shows ``text`` in the clear."""
    return all(text not in entry.data for entry in network.capture)


async def test_a_protected_get_reaches_the_handler_with_its_security_context(
    autojump_clock: object,
) -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (client, server, resources, network):
            response = await client.get(f"{BASE}/echo?q=top-secret")
            assert response.code == Code.CONTENT
            assert response.payload.startswith(b"hello OscoreRemote(")
            (seen,) = resources["echo"].seen
            assert seen.opt.uri_path == ("echo",)
            assert seen.opt.uri_query == ("q=top-secret",)
            assert seen.opt.oscore is None
            remote = seen.remote
            assert isinstance(remote, OscoreRemote)
            assert remote.recipient_id == CLIENT_ID
            assert remote.id_context is None
            assert remote.host == CLIENT
            # The wire shows neither the path nor the query, nor the answer.
            assert network.capture
            assert unreadable(network, b"top-secret")
            assert unreadable(network, b"echo")
            assert unreadable(network, b"hello")
            statistics = server.statistics.oscore
            assert statistics is not None
            assert statistics.requests_verified == 1
            assert statistics.responses_protected == 1
            client_statistics = client.statistics.oscore
            assert client_statistics is not None
            assert client_statistics.requests_protected == 1
            assert client_statistics.responses_verified == 1


async def test_post_with_an_id_context(autojump_clock: object) -> None:
    client_context, server_context = contexts(id_context=b"\x37\xcb")
    with trio.fail_after(LIMIT):
        async with pair(client_context, server_context) as (client, _, resources, network):
            response = await client.post(f"{BASE}/echo", b"private payload")
            assert (response.code, response.payload) == (Code.CHANGED, b"daolyap etavirp")
            (seen,) = resources["echo"].seen
            assert seen.remote.id_context == b"\x37\xcb"
            assert unreadable(network, b"private payload")


async def test_block_wise_both_ways_is_inner_each_block_its_own_oscore_request(
    autojump_clock: object,
) -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (client, server, _, network):
            response = await client.get(f"{BASE}/large")
            assert response.payload == bytes(range(256)) * 20
            body = b"0123456789" * 400
            response = await client.put(f"{BASE}/large", body)
            assert (response.code, response.payload) == (Code.CHANGED, b"4000")
            statistics = server.statistics.oscore
            assert statistics is not None
            # 5 Block2 blocks and 4 Block1 blocks: each one verified on its own.
            assert statistics.requests_verified == 9
            for entry in network.capture:
                message = decode(entry.data)
                assert message.opt.block1 is None
                assert message.opt.block2 is None


async def test_observe_notifications_are_protected_and_verified(
    autojump_clock: object,
) -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (client, _server, resources, network):
            counter = resources["counter"]
            received: list[bytes] = []
            async with client.observe(f"{BASE}/counter") as notifications:
                async for notification in notifications:
                    received.append(notification.payload)
                    if len(received) == 4:
                        break
                    counter.value += 1
                    counter.updated_state()
            assert received == [b"0", b"1", b"2", b"3"]
            statistics = client.statistics.oscore
            assert statistics is not None
            assert statistics.responses_verified >= 4
            assert unreadable(network, b"counter")


async def test_unprotected_request_to_a_protected_resource_is_refused_before_the_handler(
    autojump_clock: object,
) -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (_, server, resources, network):
            async with open_context(bind=(PEER, 0), network=network) as plain:
                response = await plain.get(f"{BASE}/secret")
                assert response.code == Code.UNAUTHORIZED
                assert response.payload == b"OSCORE required"
                assert response.opt.max_age == 0
                # A resource without requires_oscore still answers plain requests.
                response = await plain.get(f"{BASE}/echo")
                assert response.code == Code.CONTENT
                assert isinstance(resources["echo"].seen[0].remote, DatagramRemote)
                assert not isinstance(resources["echo"].seen[0].remote, OscoreRemote)
            assert resources["secret"].rendered == 0
            statistics = server.statistics
            assert statistics.oscore is not None
            assert statistics.oscore.failures[OscoreFailure.UNPROTECTED] == 1
            assert statistics.oscore_refused == 1


async def test_a_site_can_require_oscore_for_all_its_resources(autojump_clock: object) -> None:
    network = MemoryNetwork(seed=3)
    inner = Site(well_known_core=False, requires_oscore=True)
    echo = Echo()
    inner.add(["x"], echo)
    site = Site()
    site.add(["private"], inner)
    _, server_context = contexts()
    credentials = CredentialsMap.from_contexts({"coap://*": server_context})
    with trio.fail_after(LIMIT):
        async with (
            open_context(bind=(SERVER, 5683), site=site, network=network, oscore=credentials),
            open_context(bind=(PEER, 0), network=network) as plain,
        ):
            response = await plain.get(f"{BASE}/private/x")
            assert response.code == Code.UNAUTHORIZED
            response = await plain.get(f"{BASE}/.well-known/core")
            assert response.code == Code.CONTENT
    assert echo.seen == []


async def test_the_client_reports_the_servers_unprotected_error(autojump_clock: object) -> None:
    """Wrong key and wrong ID: the server answers 4.00 / 4.01 in the clear; the request
    ends with OscoreVerificationError naming it."""
    wrong_key, _ = contexts(secret=bytes(16))
    wrong_id, _ = contexts(client_id=b"\x05")
    _, server_context = contexts()
    with trio.fail_after(LIMIT):
        for client_context, expected in (
            (wrong_key, "4.00 Bad Request: Decryption failed"),
            (wrong_id, "4.01 Unauthorized: Security context not found"),
        ):
            async with pair(client_context, server_context) as (client, server, resources, _):
                with pytest.raises(OscoreVerificationError) as caught:
                    await client.get(f"{BASE}/echo")
                assert caught.value.failure is OscoreFailure.UNPROTECTED_RESPONSE
                assert str(caught.value) == f"Response not protected: {expected}"
                assert resources["echo"].seen == []
                assert server.statistics.oscore_refused == 1
                assert client.statistics.oscore_rejected_responses == 1


async def test_a_restarted_server_asks_for_echo_and_the_client_repeats_by_itself(
    autojump_clock: object,
) -> None:
    client_context, server_context = contexts(store=MemorySequenceStore(300))
    with trio.fail_after(LIMIT):
        async with pair(client_context, server_context) as (client, server, resources, _):
            response = await client.get(f"{BASE}/echo")
            assert response.code == Code.CONTENT
            assert len(resources["echo"].seen) == 1
            server_statistics = server.statistics.oscore
            client_statistics = client.statistics.oscore
            assert server_statistics is not None
            assert client_statistics is not None
            assert server_statistics.echo_challenges == 1
            assert server_statistics.echo_synchronized == 1
            assert client_statistics.echo_repeats == 1
            # Later requests go through at once.
            await client.get(f"{BASE}/echo")
            again = server.statistics.oscore
            assert again is not None
            assert again.echo_challenges == 1


# -- bad input from a raw peer ---------------------------------------------------------------


class RawPeer:
    """Sends exact datagrams to the server and collects its answers."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.endpoint = network.open_endpoint(PEER, 0)
        self.received: list[Message] = []
        self.server = DatagramRemote((SERVER, 5683), "coap")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        def on_datagrams(batch: list[tuple[bytes, DatagramRemote]]) -> None:
            for data, remote in batch:
                self.received.append(decode(data, remote))

        await self.endpoint.run(on_datagrams, lambda remote, error: None, task_status=task_status)

    async def exchange(self, message: Message, mid: int) -> Message:
        """Send ``message`` as a CON with ``mid``; the answer to it."""
        before = len(self.received)
        self.endpoint.send(encode(message.copy(mtype=Type.CON, mid=mid)), self.server)
        for _ in range(100):
            await trio.sleep(0.01)
            if len(self.received) > before:
                return self.received[-1]
        raise AssertionError("no answer")


def protected_request(client_context: SecurityContext, path: str) -> Message:
    from coap_trio.protocol.oscore import OscoreEngine

    message = Message(code=Code.GET, uri_path=(path,), token=b"\x42")
    protected, _ = OscoreEngine().protect_request(message, client_context)
    return protected


@pytest.mark.parametrize(
    ("kind", "code", "diagnostic", "failure"),
    [
        ("replay", Code.UNAUTHORIZED, b"Replay detected", OscoreFailure.REPLAY),
        ("old", Code.UNAUTHORIZED, b"Replay detected", OscoreFailure.REPLAY),
        ("truncated", Code.BAD_REQUEST, b"Decryption failed", OscoreFailure.DECRYPTION),
        ("altered", Code.BAD_REQUEST, b"Decryption failed", OscoreFailure.DECRYPTION),
        ("bad-option", Code.BAD_OPTION, b"Failed to decode COSE", OscoreFailure.DECODE),
        ("unknown-kid", Code.UNAUTHORIZED, b"Security context not found", None),
    ],
)
async def test_bad_input_gets_the_rfc_answer_is_counted_and_reaches_no_handler(
    autojump_clock: object,
    kind: str,
    code: Code,
    diagnostic: bytes,
    failure: OscoreFailure | None,
) -> None:
    client_context, server_context = contexts()
    network = MemoryNetwork(seed=11)
    with trio.fail_after(LIMIT):
        async with pair(client_context, server_context, network) as (_, server, resources, _):
            peer = RawPeer(network)
            async with trio.open_nursery() as nursery:
                await nursery.start(peer.run)
                first = protected_request(client_context, "echo")
                answer = await peer.exchange(first, 1)
                assert answer.code == Code.CHANGED  # the protected 2.05 (Outer code 2.04)
                assert len(resources["echo"].seen) == 1
                if kind == "replay":
                    bad = first
                elif kind == "old":
                    # Move the window 40 numbers on: the first one falls out of it.
                    for _number in range(40):
                        protected_request(client_context, "echo")
                    await peer.exchange(protected_request(client_context, "echo"), 2)
                    bad = first
                elif kind == "truncated":
                    bad = protected_request(client_context, "echo")
                    bad.payload = bad.payload[:-3]
                elif kind == "altered":
                    bad = protected_request(client_context, "echo")
                    bad.payload = bad.payload[:-1] + bytes([bad.payload[-1] ^ 1])
                elif kind == "bad-option":
                    bad = protected_request(client_context, "echo")
                    bad.opt.replace(9, [b"\xe0"])  # reserved bits set
                else:
                    other, _ = contexts(client_id=b"\x77")
                    bad = protected_request(other, "echo")
                seen = len(resources["echo"].seen)
                before = server.statistics.oscore
                assert before is not None
                answer = await peer.exchange(bad, 3)
                assert answer.code == code
                assert answer.payload == diagnostic
                assert answer.opt.oscore is None  # unprotected (§8.2)
                assert answer.opt.max_age == 0
                assert len(resources["echo"].seen) == seen
                after = server.statistics.oscore
                assert after is not None
                expected = failure or OscoreFailure.CONTEXT_NOT_FOUND
                assert after.failures[expected] == before.failures[expected] + 1
                nursery.cancel_scope.cancel()


async def test_a_class_e_option_in_the_clear_is_discarded_and_counted(
    autojump_clock: object,
) -> None:
    client_context, server_context = contexts()
    network = MemoryNetwork(seed=12)
    with trio.fail_after(LIMIT):
        async with pair(client_context, server_context, network) as (_, server, resources, _):
            peer = RawPeer(network)
            async with trio.open_nursery() as nursery:
                await nursery.start(peer.run)
                request = protected_request(client_context, "echo")
                request.opt.uri_query = ("admin=1",)  # Class E, Outer: never to a handler
                answer = await peer.exchange(request, 5)
                assert answer.code == Code.CHANGED
                (seen,) = resources["echo"].seen
                assert seen.opt.uri_query == ()
                assert seen.opt.uri_path == ("echo",)
                statistics = server.statistics.oscore
                assert statistics is not None
                assert statistics.outer_class_e_discarded == 1
                header = decode_oscore_option(answer.opt.oscore or b"")
                assert header.partial_iv is None  # the response reused the request's nonce
                nursery.cancel_scope.cancel()


# -- the reliable transports, on loopback ------------------------------------------------------


@pytest.mark.parametrize("scheme", ["coap+tcp", "coap+ws"])
async def test_oscore_over_tcp_and_websockets(scheme: str) -> None:
    """RFC 8323 transports carry OSCORE like UDP: the machines are below it."""
    client_context, server_context = contexts()
    site, resources = make_site()
    server_credentials = CredentialsMap.from_contexts({"*": server_context})
    client_credentials = CredentialsMap.from_contexts({f"{scheme}://127.0.0.1*": client_context})
    binds = (
        {"tcp_bind": ("127.0.0.1", 0)} if scheme == "coap+tcp" else {"ws_bind": ("127.0.0.1", 0)}
    )
    with trio.fail_after(20):
        async with (
            open_context(
                site=site, oscore=server_credentials, client_endpoints=0, **binds
            ) as server,
            open_context(oscore=client_credentials) as client,
        ):
            base = str(server.stream_addresses[0])
            response = await client.get(f"{base}/secret")
            assert (response.code, response.payload) == (Code.CONTENT, b"for 01")
            response = await client.get(f"{base}/large")
            assert response.payload == bytes(range(256)) * 20
            async with client.observe(f"{base}/counter") as notifications:
                async for notification in notifications:
                    assert notification.payload == b"0"
                    break
            statistics = server.statistics.oscore
            assert statistics is not None
            assert statistics.requests_verified >= 3
            assert resources["secret"].rendered == 1


# -- EDHOC (RFC 9528) then OSCORE, on the MemoryNetwork ---------------------------------------


@asynccontextmanager
async def edhoc_pair(
    *, combined: bool = True, trusted: bool = True
) -> AsyncIterator[tuple[Context, Context, dict[str, Any], bytes]]:
    """A server with EDHOC credentials (trusting the client's, when ``trusted``) and a
    client with its own; yields them, the resources and the client's credential."""
    from coap_trio.protocol.oscore.edhoc import EdhocCredentials

    server_edhoc = EdhocCredentials.generate(b"\x0b", "server")
    client_edhoc = EdhocCredentials.generate(
        b"\x0a", "client", peers=(server_edhoc.credential,), combined=combined
    )
    other = EdhocCredentials.generate(b"\x0a", "someone else")
    peers = (client_edhoc.credential if trusted else other.credential,)
    server_edhoc = EdhocCredentials(server_edhoc.private_key, server_edhoc.credential, peers)
    network = MemoryNetwork(seed=21)
    site, resources = make_site()
    async with (
        open_context(bind=(SERVER, 5683), site=site, network=network, edhoc=server_edhoc) as server,
        open_context(bind=(CLIENT, 0), network=network, edhoc=client_edhoc) as client,
    ):
        yield client, server, resources, client_edhoc.credential


@pytest.mark.parametrize("combined", [True, False], ids=["combined", "message-4"])
async def test_edhoc_then_oscore_and_the_handler_sees_the_clients_credential(
    autojump_clock: object, combined: bool
) -> None:
    with trio.fail_after(LIMIT):
        async with edhoc_pair(combined=combined) as (client, server, resources, credential):
            plain = await client.get(f"{BASE}/secret")  # no context yet: sent in the clear
            assert plain.code == Code.UNAUTHORIZED
            context = await client.edhoc(f"{BASE}/any/path")
            assert context.sender_id != context.recipient_id
            # Combined: message_3 waits for the first protected request.
            assert server.statistics.edhoc_pending == (1 if combined else 0)
            response = await client.get(f"{BASE}/whoami")
            assert response.code == Code.CONTENT
            statistics = server.statistics
            assert statistics.edhoc_completed == 1
            assert statistics.edhoc_pending == 0
            assert statistics.oscore is not None
            assert statistics.oscore.requests_verified == 1
            (remote,) = resources["whoami"].remotes
            assert isinstance(remote, OscoreRemote)
            assert remote.credential == credential
            assert remote.recipient_id == context.sender_id
            # Block-wise and later requests use the same context.
            large = await client.get(f"{BASE}/large")
            assert large.payload == bytes(range(256)) * 20
            assert (await client.get(f"{BASE}/secret")).code == Code.CONTENT


async def test_edhoc_with_an_untrusted_client_fails_and_reaches_no_handler(
    autojump_clock: object,
) -> None:
    from coap_trio.errors import EdhocError

    with trio.fail_after(LIMIT):
        async with edhoc_pair(combined=False, trusted=False) as (client, server, resources, _):
            with pytest.raises(EdhocError, match=r"4\.00: EDHOC failed"):
                await client.edhoc(BASE)
            assert server.statistics.edhoc_refused == 1
            assert server.statistics.edhoc_completed == 0
            assert resources["secret"].rendered == 0


def edhoc_entries(*, trusted: bool = True) -> tuple[CredentialsMap, CredentialsMap]:
    """A server's and a client's credentials maps with edhoc-oscore entries (as read
    from files: see tests/test_edhoc_credentials.py)."""
    import cbor2

    from coap_trio.oscore_credentials import parse_credentials
    from coap_trio.protocol.oscore.edhoc import EdhocCredentials

    server = EdhocCredentials.generate(b"\x0b", "server")
    client = EdhocCredentials.generate(b"\x0a", "client")
    stranger = EdhocCredentials.generate(b"\x0a", "stranger")

    def own(side: EdhocCredentials) -> dict[str, Any]:
        return {
            "suite": 2,
            "method": 3,
            "own_cred_style": "by-key-id",
            "own_cred": {14: cbor2.loads(side.credential)},
            "private_key": {1: 2, -1: 1, -4: side.private_key},
        }

    accepted = client if trusted else stranger
    server_map = parse_credentials(
        {
            f"{BASE}/*": {"edhoc-oscore": own(server)},
            ":client": {
                "edhoc-oscore": {
                    "suite": 2,
                    "method": 3,
                    "peer_cred": {14: cbor2.loads(accepted.credential)},
                }
            },
        },
        ".",
    )
    client_entry = {**own(client), "peer_cred": {14: cbor2.loads(server.credential)}}
    client_map = parse_credentials({f"{BASE}/*": {"edhoc-oscore": client_entry}}, ".")
    return server_map, client_map


async def test_requests_to_an_edhoc_oscore_entry_run_edhoc_once_then_go_protected(
    autojump_clock: object,
) -> None:
    server_map, client_map = edhoc_entries()
    network = MemoryNetwork(seed=31)
    site, resources = make_site()
    with trio.fail_after(LIMIT):
        async with (
            open_context(
                bind=(SERVER, 5683), site=site, network=network, oscore=server_map
            ) as server,
            open_context(bind=(CLIENT, 0), network=network, oscore=client_map) as client,
        ):
            responses: list[Message] = []

            async def get() -> None:
                responses.append(await client.get(f"{BASE}/secret"))

            async with trio.open_nursery() as nursery:
                for _ in range(5):  # all five wait for one EDHOC exchange
                    nursery.start_soon(get)
            assert [r.code for r in responses] == [Code.CONTENT] * 5
            assert (await client.get(f"{BASE}/whoami")).code == Code.CONTENT
            statistics = server.statistics
            assert statistics.edhoc_completed == 1
            assert statistics.oscore is not None
            assert statistics.oscore.requests_verified == 6
            assert resources["secret"].rendered == 5
            (remote,) = resources["whoami"].remotes
            assert isinstance(remote, OscoreRemote)
            assert remote.credential is not None


async def test_a_refused_edhoc_fails_every_request_that_waited_for_it(
    autojump_clock: object,
) -> None:
    """The server refuses message_3 (RFC 9668: in front of the first request): every
    request that waited fails, and the next one runs EDHOC again."""
    from coap_trio.errors import CoapError

    server_map, client_map = edhoc_entries(trusted=False)
    network = MemoryNetwork(seed=32)
    site, resources = make_site()
    with trio.fail_after(LIMIT):
        async with (
            open_context(
                bind=(SERVER, 5683), site=site, network=network, oscore=server_map
            ) as server,
            open_context(bind=(CLIENT, 0), network=network, oscore=client_map) as client,
        ):
            failures: list[str] = []

            async def get() -> None:
                try:
                    await client.get(f"{BASE}/secret")
                except CoapError as error:
                    failures.append(str(error))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(get)
            assert len(failures) == 3
            assert any("4.00 Bad Request: EDHOC failed" in text for text in failures)
            assert server.statistics.edhoc_refused == 1
            await get()
            assert server.statistics.edhoc_refused == 2  # EDHOC again, refused again
            assert resources["secret"].rendered == 0
