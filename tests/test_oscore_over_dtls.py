"""OSCORE over coaps:// (RFC 8613 over RFC 7252 §9): both protections at once,
between two Contexts on a MemoryNetwork (virtual time)."""

from __future__ import annotations

import trio

from coap_trio import Code, DtlsCredentials, Message, Resource, Site, open_context
from coap_trio.oscore_credentials import CredentialsMap
from coap_trio.protocol.oscore.context import SecurityContext
from coap_trio.remote import OscoreRemote
from coap_trio.testing import MemoryNetwork

SERVER = "10.0.0.2"
SECRET = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")


class Who(Resource):
    """GET: which OSCORE context and which DTLS peer the request came with."""

    def __init__(self) -> None:
        super().__init__()
        self.remotes: list[object] = []

    async def render_get(self, request: Message) -> Message:
        self.remotes.append(request.remote)
        return Message(code=Code.CONTENT, payload=b"both")


async def test_an_oscore_request_over_a_dtls_session(autojump_clock: object) -> None:
    client_context = SecurityContext.derive(
        master_secret=SECRET, sender_id=b"\x01", recipient_id=b""
    )
    server_context = SecurityContext.derive(
        master_secret=SECRET, sender_id=b"", recipient_id=b"\x01"
    )
    who = Who()
    site = Site()
    site.add(("who",), who)
    site.requires_oscore = True
    network = MemoryNetwork(seed=1)
    with trio.fail_after(600):
        async with (
            open_context(
                network=network,
                site=site,
                dtls_bind=(SERVER, 5684),
                dtls=DtlsCredentials(psk_table={b"me": b"secret key"}),
                oscore=CredentialsMap.from_contexts({"coaps://*": server_context}),
            ) as server,
            open_context(
                network=network,
                dtls=DtlsCredentials(psk_identity=b"me", psk=b"secret key"),
                oscore=CredentialsMap.from_contexts({f"coaps://{SERVER}/*": client_context}),
            ) as client,
        ):
            response = await client.get(f"coaps://{SERVER}/who")
            stats = server.statistics
    assert response.payload == b"both"
    [remote] = who.remotes
    assert isinstance(remote, OscoreRemote)
    assert remote.recipient_id == b"\x01"
    assert remote.scheme == "coaps"
    assert stats.oscore_refused == 0
    # Nothing readable on the wire: the DTLS records carry the OSCORE message.
    assert all(b"who" not in d.data for d in network.capture)
