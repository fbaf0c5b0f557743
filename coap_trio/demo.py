"""``coap-trio demo``: a server and a client talking real CoAP over loopback.

Starts a coap_trio server on ``[::1]`` (any free port) with a few resources,
then, as a client of it in the same process: a GET, a discovery of
``/.well-known/core`` with a filter, a PUT then GET, an error response, a
separate response (a slow resource), a block-wise transfer (RFC 7959: a
6 KiB body fetched in 1024-byte blocks, with a progress line per block), a
few notifications of an observed counter (RFC 7641), and a ping; prints each
exchange and its bytes on the wire. Must not be imported by the library
itself.
"""

from __future__ import annotations

import time

import trio

from . import codec
from .context import Context, open_context
from .message import Message
from .numbers import CHANGED, CONTENT, GET, PUT, ContentFormat
from .observable import ObservableResource
from .resource import Resource, Site
from .response_errors import NotFound

#: The block-wise demo body: 6 KiB of numbered lines.
_BOOK = b"".join(b"line %04d of a body too large for one datagram\n" % n for n in range(140))[
    : 6 * 1024
]


class _Clock(Resource):
    rt = "time"
    title = "Current time"
    representations = (ContentFormat.TEXT,)

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=time.strftime("%H:%M:%S").encode())


class _Note(Resource):
    rt = "note"
    representations = (ContentFormat.TEXT,)

    def __init__(self) -> None:
        self.text = b"(empty)"

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=self.text)

    async def render_put(self, request: Message) -> Message:
        self.text = request.payload
        return Message(code=CHANGED)


class _Sensor(Resource):
    rt = "temperature-c"
    representations = (ContentFormat.JSON,)

    async def render_get(self, request: Message) -> Message:
        if request.opt.uri_query == ("unit=kelvin",):
            raise NotFound("no kelvin here")
        await trio.sleep(0.3)  # longer than the piggyback window: a separate response
        return Message(code=CONTENT, payload=b'{"temperature": 21.5}')


class _Book(Resource):
    rt = "book"
    representations = (ContentFormat.TEXT,)

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=_BOOK)


class _Counter(ObservableResource):
    """Counts up every 0.2 s while the demo runs; observers are notified of each step."""

    rt = "counter"
    representations = (ContentFormat.TEXT,)

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: Message) -> Message:
        return Message(code=CONTENT, payload=str(self.value).encode())

    async def tick(self) -> None:
        while True:
            await trio.sleep(0.2)
            self.value += 1
            self.updated_state()


def _show(label: str, request: Message, response: Message) -> None:
    print(f"{label}")
    print(f"  -> {request.get_request_uri()}")
    wire = codec.encode(response.copy(mid=response.mid or 0))
    print(f"  <- {response!r}")
    print(f"     payload: {response.payload.decode('utf-8', 'replace')}")
    more = " ..." if len(wire) > 24 else ""
    print(f"     {len(wire)} bytes on the wire: {wire[:24].hex(' ')}{more}")


async def run_demo() -> int:
    """Serve, query, print; returns the exit status."""
    site = Site()
    site.add(["time"], _Clock())
    site.add(["note"], _Note())
    site.add(["sensors", "temp"], _Sensor())
    site.add(["book"], _Book())
    counter = _Counter()
    site.add(["counter"], counter)
    with trio.fail_after(30):
        async with open_context(bind=("::1", 0), site=site) as server, trio.open_nursery() as tasks:
            tasks.start_soon(counter.tick)
            port = server.addresses[0].port
            base = f"coap://[::1]:{port}"
            print(f"server listening on {base}")
            async with open_context() as client:
                for label, message in (
                    ("GET /time", Message(code=GET, uri=f"{base}/time")),
                    (
                        "discovery, rt=temp*",
                        Message(code=GET, uri=f"{base}/.well-known/core?rt=temp*"),
                    ),
                    ("discovery, everything", Message(code=GET, uri=f"{base}/.well-known/core")),
                    ("PUT /note", Message(code=PUT, uri=f"{base}/note", payload=b"hello, CoAP")),
                    ("GET /note", Message(code=GET, uri=f"{base}/note")),
                    (
                        "GET /sensors/temp (slow: separate response)",
                        Message(code=GET, uri=f"{base}/sensors/temp"),
                    ),
                    (
                        "GET /sensors/temp?unit=kelvin (an error)",
                        Message(code=GET, uri=f"{base}/sensors/temp?unit=kelvin"),
                    ),
                ):
                    response = await client.request(message).response
                    _show(label, message, response)
                await _blockwise(client, base)
                await _observe(client, base)
                rtt = await client.ping(base)
                print(f"ping {base}: answered (RST) in {rtt * 1000:.2f} ms")
                stats = server.statistics.messaging[0]
                print(
                    f"server saw {stats.datagrams_received} datagrams, "
                    f"{stats.duplicates} duplicates, {stats.malformed} malformed"
                )
            tasks.cancel_scope.cancel()
    return 0


async def _blockwise(client: Context, base: str) -> None:
    print("GET /book (block-wise, 1024-byte blocks)")

    def progress(done: int, total: int | None) -> None:
        print(f"  block received: {done}/{total if total is not None else '?'} bytes")

    request = client.request(Message(code=GET, uri=f"{base}/book"), progress=progress)
    response = await request.response
    intact = "intact" if response.payload == _BOOK else "DIFFERENT"
    print(
        f"  <- {response.code.dotted} {response.code.name_printable}: "
        f"{len(response.payload)} bytes, {intact}"
    )


async def _observe(client: Context, base: str) -> None:
    print("observe /counter (three notifications, then deregister)")
    async with client.observe(f"{base}/counter") as notifications:
        seen = 0
        async for response in notifications:
            print(f"  <- observe={response.opt.observe} value={response.payload.decode()}")
            seen += 1
            if seen == 4:
                break
    print("  left the observation (deregistered)")
