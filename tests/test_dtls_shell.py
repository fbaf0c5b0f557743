"""coaps:// between Contexts on a MemoryNetwork: the DTLS shell, under the autojump clock.

Two Contexts, a server opened with ``dtls_bind`` and a client with ``dtls``
credentials, talk CoAP over DTLS through the in-memory network, unchanged:
GET, PUT, observe and block-wise transfers over one session per peer; the
peer a session authenticated on ``request.remote.peer``; the typed errors
of handshakes that fail (a wrong key, an untrusted certificate, a server
that never answers), nothing served then; a lossy handshake; the limits on
sessions and handshakes; idle sessions closed (but not an observer's); a
client that restarts on the same port; close_notify to every peer when a
Context closes, also when it is cancelled. No sockets, no real sleeps.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dtls_helpers import IDENTITY, KEY, rpk_credentials

import coap_trio
from coap_trio import (
    Code,
    Context,
    DtlsAlertError,
    DtlsCredentials,
    DtlsEndpointStatistics,
    DtlsLimits,
    DtlsPeer,
    DtlsRemote,
    HandshakeError,
    HandshakeTimeoutError,
    Message,
    ObservableResource,
    RequestTimeoutError,
    Resource,
    Site,
    UnsupportedTransportError,
    open_context,
)
from coap_trio.protocol.dtls.messages import AlertDescription
from coap_trio.protocol.dtls.pki import rpk_fingerprint, spki_der
from coap_trio.testing import CapturedDatagram, LinkConditions, MemoryNetwork

SERVER = "10.0.0.2"
PORT = 5684
BASE = f"coaps://{SERVER}:{PORT}"
#: Bounds every test in simulated seconds (the autojump clock makes them instant).
DEADLINE = 600.0
PSK_SERVER = DtlsCredentials(psk_table={IDENTITY: KEY, b"admin": b"admin key"}, psk_hint=b"CoAP")
PSK_CLIENT = DtlsCredentials(psk_identity=IDENTITY, psk=KEY)


class Store(Resource):
    """GET and PUT a body of any size; counts what it served."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.served = 0

    async def render_get(self, request: Message) -> Message:
        self.served += 1
        return Message(code=Code.CONTENT, payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.served += 1
        self.body = request.payload
        return Message(code=Code.CHANGED)


class Who(Resource):
    """Answers with the peer the DTLS session authenticated; only ``admin`` may PUT."""

    def __init__(self) -> None:
        self.remotes: list[object] = []

    async def render_get(self, request: Message) -> Message:
        self.remotes.append(request.remote)
        peer = request.remote.peer
        assert isinstance(peer, DtlsPeer)
        named = peer.certificate_subject or peer.rpk_fingerprint or ""
        return Message(code=Code.CONTENT, payload=peer.psk_identity or named.encode())

    async def render_put(self, request: Message) -> Message:
        peer = request.remote.peer
        if peer is None or peer.psk_identity != b"admin":
            return Message(code=Code.FORBIDDEN)
        return Message(code=Code.CHANGED)


class Counter(ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    def tick(self) -> None:
        self.value += 1
        self.updated_state()

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"%d" % self.value)


def site() -> tuple[Site, Store, Who, Counter]:
    store, who, counter = Store(b"x" * 5000), Who(), Counter()
    served = Site()
    served.add(["store"], store)
    served.add(["who"], who)
    served.add(["obs"], counter)
    return served, store, who, counter


@asynccontextmanager
async def server(
    network: MemoryNetwork,
    credentials: DtlsCredentials = PSK_SERVER,
    served: Site | None = None,
    **options: Any,
) -> AsyncIterator[Context]:
    async with open_context(
        network=network,
        site=served if served is not None else site()[0],
        dtls_bind=(SERVER, PORT),
        dtls=credentials,
        **options,
    ) as ctx:
        yield ctx


def only_dtls(ctx: Context) -> DtlsEndpointStatistics:
    (statistics,) = ctx.statistics.dtls
    return statistics


# -- one session, every kind of exchange ------------------------------------------------------


async def test_get_put_observe_and_blockwise_over_one_psk_session(autojump_clock: object) -> None:
    network = MemoryNetwork()
    served, store, _, counter = site()
    with trio.fail_after(DEADLINE):
        async with (
            server(network, served=served) as srv,
            open_context(network=network, dtls=PSK_CLIENT) as client,
        ):
            assert [str(a) for a in srv.dtls_addresses] == [f"coaps://{SERVER}"]  # (port 5684)
            response = await client.get(f"{BASE}/store")  # block-wise: 5,000 bytes
            assert response.code is Code.CONTENT
            assert response.payload == b"x" * 5000
            assert isinstance(response.remote, DtlsRemote)
            assert response.remote.peer == DtlsPeer(psk_identity=IDENTITY)
            body = bytes(range(256)) * 40  # 10,240 bytes up in Block1 blocks
            assert (await client.put(f"{BASE}/store", body)).code is Code.CHANGED
            assert store.body == body
            assert (await client.get(f"{BASE}/store")).payload == body
            async with client.observe(f"{BASE}/obs") as notifications:
                seen = []
                async for notification in notifications:
                    seen.append(notification.payload)
                    if len(seen) == 4:
                        break
                    counter.tick()
            assert seen == [b"0", b"1", b"2", b"3"]
            assert await client.ping(BASE) >= 0
            # One session each side, reused by everything above.
            assert only_dtls(client).handshakes_completed == 1
            assert only_dtls(srv).handshakes_completed == 1
            assert only_dtls(srv).hello_verify_requests == 1
            assert only_dtls(srv).sessions == 1
            assert srv.statistics.dtls_messaging[0].datagrams_received > 20


async def test_the_authenticated_peer_is_on_request_remote(autojump_clock: object) -> None:
    network = MemoryNetwork()
    served, _, who, _ = site()
    admin = DtlsCredentials(psk_identity=b"admin", psk=b"admin key")
    with trio.fail_after(DEADLINE):
        async with (
            server(network, served=served),
            open_context(network=network, dtls=PSK_CLIENT) as guest,
            open_context(network=network, dtls=admin) as boss,
        ):
            assert (await guest.get(f"{BASE}/who")).payload == IDENTITY
            assert (await boss.get(f"{BASE}/who")).payload == b"admin"
            # The resource authorizes on it.
            assert (await guest.put(f"{BASE}/who", b"x")).code is Code.FORBIDDEN
            assert (await boss.put(f"{BASE}/who", b"x")).code is Code.CHANGED
    first, second = who.remotes
    assert isinstance(first, DtlsRemote)
    assert first.scheme == "coaps"
    assert first != second  # two clients, two addresses


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificates() -> tuple[DtlsCredentials, DtlsCredentials, str]:
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    chain = []
    for leaf in (ca.issue_cert("server.test"), ca.issue_cert("client.test")):
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        certificates = tuple(
            x509.load_pem_x509_certificate(p.bytes()) for p in leaf.cert_chain_pems
        )
        chain.append((certificates, key))
    trusted = (x509.load_pem_x509_certificate(ca.cert_pem.bytes()),)
    server_side = DtlsCredentials(
        certificate_chain=chain[0][0],
        private_key=chain[0][1],
        trusted_cas=trusted,
        require_client_auth=True,
    )
    client_side = DtlsCredentials(
        certificate_chain=chain[1][0], private_key=chain[1][1], trusted_cas=trusted
    )
    return server_side, client_side, chain[1][0][0].subject.rfc4514_string()


async def test_certificates_name_the_peer_and_the_server_name_is_checked(
    autojump_clock: object,
) -> None:
    network = MemoryNetwork()
    network.add_host("server.test", SERVER)
    network.add_host("elsewhere.test", SERVER)
    server_side, client_side, subject = _certificates()
    with trio.fail_after(DEADLINE):
        async with (
            server(network, server_side),
            open_context(network=network, dtls=client_side) as client,
        ):
            response = await client.get(f"coaps://server.test:{PORT}/who")
            assert response.payload == subject.encode()
            assert response.remote.peer.certificate_subject is not None
        # The same server under another name: its certificate does not name it.
        async with (
            server(network, server_side),
            open_context(network=network, dtls=client_side) as client,
        ):
            with pytest.raises(HandshakeError) as refused:
                await client.get(f"coaps://elsewhere.test:{PORT}/who")
            assert refused.value.alert == AlertDescription.BAD_CERTIFICATE


async def test_raw_public_keys_name_the_peer(autojump_clock: object) -> None:
    network = MemoryNetwork()
    server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    server_side = rpk_credentials(server_key, client_key, require_client_auth=True)
    client_side = rpk_credentials(client_key, server_key)
    with trio.fail_after(DEADLINE):
        async with (
            server(network, server_side),
            open_context(network=network, dtls=client_side) as client,
        ):
            response = await client.get(f"{BASE}/who")
    assert response.payload == rpk_fingerprint(spki_der(client_key.public_key())).encode()
    assert response.remote.peer.rpk_fingerprint == rpk_fingerprint(
        spki_der(server_key.public_key())
    )


# -- failures: typed, and nothing served ------------------------------------------------------


async def test_a_wrong_psk_fails_every_request_typed_and_nothing_is_served(
    autojump_clock: object,
) -> None:
    network = MemoryNetwork()
    served, store, _, _ = site()
    wrong = DtlsCredentials(psk_identity=IDENTITY, psk=b"not the key")
    errors: list[DtlsAlertError] = []
    with trio.fail_after(DEADLINE):
        async with (
            server(network, served=served) as srv,
            open_context(network=network, dtls=wrong) as client,
        ):

            async def get(path: str) -> None:
                try:
                    await client.get(f"{BASE}/{path}")
                except DtlsAlertError as error:
                    errors.append(error)

            async with trio.open_nursery() as nursery:  # NSTART 1: two wait behind the first
                for path in ("store", "who", "obs"):
                    nursery.start_soon(get, path)
            assert only_dtls(srv).handshakes_failed == 1
            assert only_dtls(srv).sessions == 0
            assert only_dtls(client).handshakes_failed == 1
    assert len(errors) == 3
    assert {e.description for e in errors} == {AlertDescription.DECRYPT_ERROR}
    assert store.served == 0


async def test_an_untrusted_server_certificate_fails_typed(autojump_clock: object) -> None:
    network = MemoryNetwork()
    network.add_host("server.test", SERVER)
    served, store, _, _ = site()
    server_side, _, _ = _certificates()
    _, stranger, _ = _certificates()  # trusts another CA
    with trio.fail_after(DEADLINE):
        async with (
            server(network, server_side, served),
            open_context(network=network, dtls=stranger) as client,
        ):
            with pytest.raises(HandshakeError) as refused:
                await client.get(f"coaps://server.test:{PORT}/store")
    assert refused.value.alert == AlertDescription.UNKNOWN_CA
    assert store.served == 0


async def test_an_unknown_client_certificate_is_refused(autojump_clock: object) -> None:
    network = MemoryNetwork()
    network.add_host("server.test", SERVER)
    served, store, _, _ = site()
    server_side, _, _ = _certificates()
    _, stranger, _ = _certificates()
    stranger_trusting_server = DtlsCredentials(
        certificate_chain=stranger.certificate_chain,
        private_key=stranger.private_key,
        trusted_cas=server_side.trusted_cas,
    )
    with trio.fail_after(DEADLINE):
        async with (
            server(network, server_side, served) as srv,
            open_context(network=network, dtls=stranger_trusting_server) as client,
        ):
            with pytest.raises(DtlsAlertError) as refused:
                await client.get(f"coaps://server.test:{PORT}/store")
            assert only_dtls(srv).handshakes_failed == 1
    assert refused.value.description == AlertDescription.UNKNOWN_CA
    assert store.served == 0


async def test_a_silent_server_ends_in_a_typed_handshake_timeout(autojump_clock: object) -> None:
    network = MemoryNetwork()
    limits = DtlsLimits(handshake_timeout=20.0)
    with trio.fail_after(DEADLINE):
        async with open_context(network=network, dtls=PSK_CLIENT, dtls_limits=limits) as client:
            started = trio.current_time()
            with pytest.raises(HandshakeTimeoutError):
                await client.get(f"{BASE}/store")  # nobody at that address
            assert trio.current_time() - started == pytest.approx(20.0, abs=0.01)
            assert only_dtls(client).retransmissions >= 3  # the ClientHello, again and again


@pytest.mark.parametrize("seed", range(12))
async def test_a_lossy_handshake_completes_or_ends_in_a_typed_timeout(
    seed: int, autojump_clock: object
) -> None:
    network = MemoryNetwork(seed=seed, conditions=LinkConditions(loss=0.3))
    served, store, _, _ = site()
    store.body = b"small"
    outcome: object
    with trio.fail_after(DEADLINE):
        async with (
            server(network, served=served) as srv,
            open_context(network=network, dtls=PSK_CLIENT) as client,
        ):
            try:
                outcome = (await client.get(f"{BASE}/store")).payload
            except (HandshakeTimeoutError, RequestTimeoutError) as error:
                outcome = error
            statistics = only_dtls(srv)
    assert outcome == b"small" or isinstance(outcome, HandshakeTimeoutError | RequestTimeoutError)
    if outcome == b"small":
        assert statistics.handshakes_completed == 1


async def test_most_lossy_handshakes_complete(autojump_clock: object) -> None:
    done = 0
    for seed in range(20):
        network = MemoryNetwork(seed=100 + seed, conditions=LinkConditions(loss=0.3))
        with trio.fail_after(DEADLINE):
            async with server(network), open_context(network=network, dtls=PSK_CLIENT) as client:
                try:
                    await client.get(f"{BASE}/who")
                    done += 1
                except (HandshakeTimeoutError, RequestTimeoutError):
                    pass
    # Each flight is retransmitted (1 s, doubling) for 60 s. The failures seen
    # are the request's own RequestTimeoutError: its CoAP retransmissions run
    # while the handshake is still in progress. trio's scheduling order varies
    # from run to run, so the count does too: 0 to 6 failures of 20 in
    # 31 runs, mean 2.1.
    assert done >= 13


# -- limits, idle sessions, restarts ------------------------------------------------------------


async def test_handshakes_beyond_the_limit_are_refused_and_counted(autojump_clock: object) -> None:
    network = MemoryNetwork()
    limits = DtlsLimits(max_sessions=2)
    with trio.fail_after(DEADLINE):
        async with server(network, dtls_limits=limits) as srv:
            contexts = [open_context(network=network, dtls=PSK_CLIENT) for _ in range(3)]
            async with contexts[0] as first, contexts[1] as second, contexts[2] as third:
                assert (await first.get(f"{BASE}/who")).payload == IDENTITY
                assert (await second.get(f"{BASE}/who")).payload == IDENTITY
                with trio.move_on_after(15.0) as waited:
                    await third.get(f"{BASE}/who")
                assert waited.cancelled_caught  # its valid ClientHellos get no answer
                statistics = only_dtls(srv)
                assert statistics.sessions == 2
                assert statistics.sessions_refused >= 1


async def test_our_requests_beyond_the_client_limits_fail_typed(autojump_clock: object) -> None:
    network = MemoryNetwork()
    limits = DtlsLimits(max_sessions_per_address=1)
    with trio.fail_after(DEADLINE):
        async with (
            server(network),
            open_context(network=network, dtls=PSK_CLIENT, dtls_limits=limits) as client,
            open_context(
                network=network, dtls=PSK_SERVER, dtls_bind=(SERVER, PORT + 1), site=site()[0]
            ),
        ):
            assert (await client.get(f"{BASE}/who")).payload == IDENTITY
            with pytest.raises(HandshakeError, match="too many DTLS sessions"):
                await client.get(f"coaps://{SERVER}:{PORT + 1}/who")


async def test_idle_sessions_close_and_the_next_request_opens_one(autojump_clock: object) -> None:
    network = MemoryNetwork()
    limits = DtlsLimits(idle_timeout=60.0)
    with trio.fail_after(DEADLINE):
        async with (
            server(network, dtls_limits=limits) as srv,
            open_context(network=network, dtls=PSK_CLIENT) as client,
        ):
            await client.get(f"{BASE}/who")
            await trio.sleep(30.0)
            await client.get(f"{BASE}/who")  # traffic: the session stays
            assert only_dtls(srv).sessions == 1
            await trio.sleep(100.0)
            assert only_dtls(srv).sessions == 0
            assert only_dtls(srv).sessions_idle_closed == 1
            assert only_dtls(client).sessions == 0  # it got the close_notify
            assert (await client.get(f"{BASE}/who")).payload == IDENTITY
            assert only_dtls(srv).handshakes_completed == 2


def _alerts_sent(network: MemoryNetwork, source: str) -> list[CapturedDatagram]:
    """The protected alert records (close_notify, once established) sent from ``source``."""
    return [
        record
        for record in network.capture
        if record.source.host == source
        and record.data[:1] == b"\x15"
        and record.data[3:5] != b"\0\0"
    ]


async def test_leaving_a_client_context_sends_close_notify(autojump_clock: object) -> None:
    network = MemoryNetwork()
    with trio.fail_after(DEADLINE):
        async with server(network) as srv:
            async with open_context(
                network=network, dtls=PSK_CLIENT, dtls_bind=("10.0.0.1", 0)
            ) as client:
                assert (await client.get(f"{BASE}/who")).payload == IDENTITY
                assert only_dtls(srv).sessions == 1
                left = trio.current_time()
            assert trio.current_time() == left  # leaving waited for nothing
            assert only_dtls(client).close_notify_sent == 1
            await trio.sleep(1.0)  # the close_notify crosses the simulated wire
            statistics = only_dtls(srv)
            assert statistics.close_notify_received == 1  # the server's engine saw it
            assert statistics.sessions == 0
            assert statistics.sessions_idle_closed == 0
    assert len(_alerts_sent(network, "10.0.0.1")) == 1
    # The server answered with its own close_notify (RFC 5246 §7.2.1).
    assert len(_alerts_sent(network, SERVER)) == 1


async def test_leaving_a_server_context_sends_close_notify_to_each_client(
    autojump_clock: object,
) -> None:
    network = MemoryNetwork()
    with trio.fail_after(DEADLINE):
        async with (
            open_context(network=network, dtls=PSK_CLIENT, dtls_bind=("10.0.0.1", 0)) as one,
            open_context(network=network, dtls=PSK_CLIENT, dtls_bind=("10.0.0.3", 0)) as two,
        ):
            async with server(network) as srv:
                for client in (one, two):
                    assert (await client.get(f"{BASE}/who")).payload == IDENTITY
                left = trio.current_time()
            assert trio.current_time() == left
            assert only_dtls(srv).close_notify_sent == 2
            await trio.sleep(1.0)
            for client in (one, two):
                statistics = only_dtls(client)
                assert statistics.close_notify_received == 1
                assert statistics.sessions == 0
    assert len(_alerts_sent(network, SERVER)) == 2


async def test_a_cancelled_context_still_sends_close_notify_and_stops_at_once(
    autojump_clock: object,
) -> None:
    network = MemoryNetwork()
    with trio.fail_after(DEADLINE):
        async with server(network) as srv:
            with trio.CancelScope() as scope:
                async with open_context(network=network, dtls=PSK_CLIENT) as client:
                    await client.get(f"{BASE}/who")
                    scope.cancel()
                    left = trio.current_time()
                    await trio.sleep_forever()
            assert scope.cancelled_caught
            assert trio.current_time() == left
            await trio.sleep(1.0)
            assert only_dtls(srv).close_notify_received == 1
            assert only_dtls(srv).sessions == 0


async def test_a_handshake_in_progress_gets_no_close_notify(autojump_clock: object) -> None:
    network = MemoryNetwork()
    network.set_conditions(LinkConditions(loss=1.0), source=SERVER)  # the server is mute
    with trio.fail_after(DEADLINE):
        async with server(network) as srv:
            async with open_context(network=network, dtls=PSK_CLIENT) as client:
                with trio.move_on_after(5.0):
                    await client.get(f"{BASE}/who")
                assert only_dtls(client).handshakes_in_progress == 1
            assert only_dtls(client).close_notify_sent == 0
            assert only_dtls(client).sessions == 0
            await trio.sleep(1.0)
            assert only_dtls(srv).close_notify_received == 0


async def test_an_observer_keeps_its_idle_session(autojump_clock: object) -> None:
    network = MemoryNetwork()
    served, _, _, counter = site()
    limits = DtlsLimits(idle_timeout=60.0)
    with trio.fail_after(DEADLINE):
        async with (
            server(network, served=served, dtls_limits=limits) as srv,
            open_context(
                network=network, dtls=PSK_CLIENT, dtls_limits=DtlsLimits(idle_timeout=1000.0)
            ) as client,
            client.observe(f"{BASE}/obs") as notifications,
        ):
            first = await notifications.__anext__()
            await trio.sleep(200.0)  # nothing changes: no traffic at all
            assert only_dtls(srv).sessions == 1
            counter.tick()
            second = await notifications.__anext__()
    assert (first.payload, second.payload) == (b"0", b"1")


async def test_a_restarted_client_replaces_its_session(autojump_clock: object) -> None:
    network = MemoryNetwork()
    with trio.fail_after(DEADLINE):
        async with server(network) as srv:
            for _ in range(2):  # the same address and port twice: a restarted client
                async with open_context(
                    network=network, dtls=PSK_CLIENT, dtls_bind=("10.0.0.1", 40000)
                ) as client:
                    assert (await client.get(f"{BASE}/who")).payload == IDENTITY
                    # It crashes: its close_notify is lost.
                    network.set_conditions(LinkConditions(loss=1.0), source="10.0.0.1")
                network.set_conditions(None, source="10.0.0.1")
            statistics = only_dtls(srv)
            assert statistics.sessions_replaced == 1
            assert statistics.sessions == 1
            assert statistics.handshakes_completed == 2


# -- configuration ------------------------------------------------------------------------------


async def test_serve_reports_the_dtls_addresses_too(autojump_clock: object) -> None:
    network = MemoryNetwork()
    serving = functools.partial(
        coap_trio.serve,
        site()[0],
        network=network,
        dtls_bind=(SERVER, PORT),
        dtls=PSK_SERVER,
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            udp, over_dtls = await nursery.start(serving, (SERVER, 5683))
            assert (udp.scheme, over_dtls.scheme) == ("coap", "coaps")
            async with open_context(network=network, dtls=PSK_CLIENT) as client:
                assert (await client.get(f"{over_dtls}/who")).payload == IDENTITY
            nursery.cancel_scope.cancel()


async def test_coaps_needs_credentials(autojump_clock: object) -> None:
    network = MemoryNetwork()
    async with open_context(network=network) as client:
        with pytest.raises(UnsupportedTransportError, match="DtlsCredentials"):
            await client.get(f"{BASE}/who")
    with pytest.raises(ValueError, match="dtls_bind needs dtls="):
        async with open_context(network=network, dtls_bind=(SERVER, PORT)):
            pass


_WITHOUT_CRYPTOGRAPHY = """
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cryptography":
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Absent())
import trio
import coap_trio
from coap_trio.testing import MemoryNetwork

async def main():
    async with coap_trio.open_context(network=MemoryNetwork()) as ctx:
        try:
            await ctx.get("coaps://10.0.0.2/x")
        except coap_trio.UnsupportedTransportError as error:
            print("coaps:", error)

trio.run(main)
print("loaded:", sorted(m for m in sys.modules if m.startswith("coap_trio.protocol.dtls")))
try:
    coap_trio.DtlsCredentials
except ImportError as error:
    print("import:", error)
"""


def test_without_the_dtls_extra_everything_else_works() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_CRYPTOGRAPHY],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "coaps: coaps:// needs DTLS credentials: open_context(dtls=DtlsCredentials(...))"
    )
    assert lines[1] == "loaded: []"  # a Context without DTLS imports none of it
    assert lines[2].startswith("import: coap_trio.DtlsCredentials needs the 'dtls' extra")
