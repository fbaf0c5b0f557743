"""The HTTP-CoAP cross-proxy (RFC 8075), and CoAP clients reaching HTTP resources.

Owns :func:`serve_http`: an HTTP/1.1 server on trio sockets (with h11, the
``http`` extra) that maps a request for ``/hc/coap://host/path`` (RFC 8075
§5: the default mapping, the target URI after ``/hc/``, written as it is or
percent-encoded) or an absolute-form ``coap://...`` request target to a
CoAP request sent through the :class:`~coap_trio.proxy.forward.ForwardProxy`
(so the same allow-list, Hop-Limit, cache and block-wise transfers apply),
and the CoAP response back:

* methods: GET, HEAD (a GET whose body is left out), POST, PUT, DELETE,
  PATCH; others 501;
* status codes as RFC 8075 §7 maps them (2.05 is 200, 2.03 304, 4.01 403,
  4.05 400, 5.05 502...), a diagnostic payload as ``text/plain``;
* Content-Type <-> Content-Format (an unknown Content-Type is 415), Accept,
  ETag <-> ETag, If-Match, If-None-Match (``*``, or ETags turned into a
  validation: 304 when one is current), Max-Age <-> ``Cache-Control:
  max-age`` (60 when absent), Location-Path/Query <-> ``Location``.

Every limit is bounded: connections (beyond ``max_connections`` a 503 and
close), header size (h11's 16 KiB), the body (``max_body`` bytes, 413
beyond) and time (a connection idle, or slow to send its request, for
``idle_timeout`` seconds is closed).

Owns also :func:`forward_to_http`, the other direction (RFC 7252 §10.1):
an :class:`~coap_trio.proxy.upstream.Upstream` given it as ``http``
forwards CoAP requests for ``http://`` targets (Proxy-Uri, or
Proxy-Scheme ``http``) as HTTP/1.1 requests, one connection each, and maps
the answer to a CoAP response.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import h11
import trio

from ..message import Message
from ..numbers.codes import Code
from ..numbers.contentformat import ContentFormat
from ..response_errors import (
    BadGateway,
    BadRequest,
    NotFound,
    RenderableError,
    ServerNotImplemented,
    UnsupportedContentFormat,
)
from ..uri import split_uri
from .forward import ForwardProxy

__all__ = [
    "DEFAULT_MAX_BODY",
    "coap_status_to_http",
    "forward_to_http",
    "http_status_to_coap",
    "serve_http",
]

logger = logging.getLogger("coap_trio.proxy.http")

#: The largest request or response body taken (1 MiB and some).
DEFAULT_MAX_BODY = (1 << 20) + 65536
#: The prefix of the default mapping (RFC 8075 §5.3).
_PREFIX = "/hc/"
_SERVER = b"coap_trio"

_HTTP_TO_CODE: dict[bytes, Code] = {
    b"GET": Code.GET,
    b"HEAD": Code.GET,
    b"POST": Code.POST,
    b"PUT": Code.PUT,
    b"DELETE": Code.DELETE,
    b"PATCH": Code.PATCH,
}
_CODE_TO_HTTP: dict[Code, str] = {
    Code.GET: "GET",
    Code.POST: "POST",
    Code.PUT: "PUT",
    Code.DELETE: "DELETE",
    Code.PATCH: "PATCH",
}

#: RFC 8075 §7: CoAP response codes to HTTP status codes.
_STATUS: dict[Code, int] = {
    Code.CREATED: 201,
    Code.VALID: 304,
    Code.CONTENT: 200,
    Code.BAD_REQUEST: 400,
    Code.UNAUTHORIZED: 403,
    Code.BAD_OPTION: 400,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.METHOD_NOT_ALLOWED: 400,
    Code.NOT_ACCEPTABLE: 406,
    Code.REQUEST_ENTITY_INCOMPLETE: 400,
    Code.CONFLICT: 409,
    Code.PRECONDITION_FAILED: 412,
    Code.REQUEST_ENTITY_TOO_LARGE: 413,
    Code.UNSUPPORTED_CONTENT_FORMAT: 415,
    Code.UNPROCESSABLE_ENTITY: 422,
    Code.TOO_MANY_REQUESTS: 429,
    Code.INTERNAL_SERVER_ERROR: 500,
    Code.NOT_IMPLEMENTED: 501,
    Code.BAD_GATEWAY: 502,
    Code.SERVICE_UNAVAILABLE: 503,
    Code.GATEWAY_TIMEOUT: 504,
    Code.PROXYING_NOT_SUPPORTED: 502,
    Code.HOP_LIMIT_REACHED: 508,
}
_REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    304: b"Not Modified",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    406: b"Not Acceptable",
    409: b"Conflict",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    422: b"Unprocessable Content",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    508: b"Loop Detected",
}
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)")


def coap_status_to_http(code: Code, has_payload: bool) -> int:
    """The HTTP status of a CoAP response (RFC 8075 §7)."""
    if code in (Code.CHANGED, Code.DELETED):
        return 200 if has_payload else 204
    status = _STATUS.get(code)
    if status is not None:
        return status
    return {2: 200, 4: 400}.get(code.class_, 500)


def http_status_to_coap(status: int, method: Code) -> Code:
    """The CoAP code of an HTTP response to ``method`` (RFC 7252 §10.1)."""
    if status == 200 or status == 203:
        if method in (Code.GET, Code.FETCH):
            return Code.CONTENT
        return Code.DELETED if method == Code.DELETE else Code.CHANGED
    if status == 201:
        return Code.CREATED
    if status == 204:
        return Code.DELETED if method == Code.DELETE else Code.CHANGED
    if status == 304:
        return Code.VALID
    for code, http in _STATUS.items():
        if http == status and code.class_ in (4, 5) and code != Code.PROXYING_NOT_SUPPORTED:
            if status == 403:
                return Code.FORBIDDEN
            if status == 400:
                return Code.BAD_REQUEST
            return code
    if status == 401:
        return Code.UNAUTHORIZED
    if status == 405:
        return Code.METHOD_NOT_ALLOWED
    if 400 <= status < 500:
        return Code.BAD_REQUEST
    return Code.BAD_GATEWAY


def _content_format(media_type: str) -> ContentFormat | None:
    for candidate in (media_type, media_type + ";charset=utf-8"):
        try:
            return ContentFormat.by_media_type(candidate)
        except KeyError:
            continue
    return None


def _media_type(content_format: ContentFormat | None) -> bytes | None:
    if content_format is None or content_format.media_type is None:
        return None
    return content_format.media_type.encode("ascii", "replace")


def _etag_text(etag: bytes) -> bytes:
    return b'"' + etag.hex().encode() + b'"'


def _etags_from(value: bytes) -> list[bytes]:
    """The entity tags of an If-Match / If-None-Match / ETag header, as CoAP ETags
    (the hex we wrote decoded back; any other tag hashed to 8 bytes)."""
    tags = []
    for item in value.split(b","):
        tag = item.strip().removeprefix(b"W/").strip(b'"')
        if not tag:
            continue
        try:
            raw = bytes.fromhex(tag.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raw = b""
        tags.append(raw if 1 <= len(raw) <= 8 else hashlib.blake2b(tag, digest_size=8).digest())
    return tags


def _target_uri(target: bytes) -> str:
    """The CoAP URI an HTTP request target names (``/hc/URI`` or absolute-form)."""
    text = target.decode("utf-8", "replace")
    if text.startswith(_PREFIX):
        rest = text[len(_PREFIX) :]
        return rest if "://" in rest else unquote(rest)
    if text.lower().startswith("coap"):
        return text
    raise NotFound("not a proxied URI: use /hc/coap://host/path")


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    values = [value for key, value in headers if key == name]
    return b", ".join(values) if values else None


def coap_request(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> Message:
    """The CoAP request (with Proxy-Uri) for an HTTP request.

    Raises the RenderableError of what cannot be mapped (404, 415, 501 once in HTTP).
    """
    code = _HTTP_TO_CODE.get(method)
    if code is None:
        raise ServerNotImplemented(f"{method.decode('ascii', 'replace')} is not mapped to CoAP")
    uri = _target_uri(target)
    message = Message(code=code, payload=body)
    try:
        message.opt.proxy_uri = uri
    except ValueError:
        raise BadRequest("the target URI is too long") from None
    content_type = _header(headers, b"content-type")
    if content_type is not None:
        content_format = _content_format(content_type.decode("latin-1"))
        if content_format is None:
            raise UnsupportedContentFormat("no CoAP Content-Format for this Content-Type")
        message.opt.content_format = content_format
    accept = _header(headers, b"accept")
    if accept is not None:
        for item in accept.decode("latin-1").split(","):
            wanted = _content_format(item.split(";q=")[0].strip())
            if wanted is not None:
                message.opt.accept = wanted
                break
    if_match = _header(headers, b"if-match")
    if if_match is not None:
        message.opt.if_match = [b""] if if_match.strip() == b"*" else _etags_from(if_match)
    if_none_match = _header(headers, b"if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == b"*":
            message.opt.if_none_match = True
        elif code == Code.GET:  # a validation: the proxy answers 2.03 -> 304
            message.opt.etag = _etags_from(if_none_match)[:8]
    return message


def http_response(
    response: Message, target: str, head: bool
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the HTTP response for a CoAP ``response``."""
    payload = response.payload
    status = coap_status_to_http(response.code, bool(payload))
    headers: list[tuple[bytes, bytes]] = [(b"server", _SERVER)]
    opt = response.opt
    media_type = _media_type(opt.content_format)
    if media_type is not None:
        headers.append((b"content-type", media_type))
    elif payload and response.code.is_error():
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    elif payload:
        headers.append((b"content-type", b"application/octet-stream"))
    if opt.etag:
        headers.append((b"etag", _etag_text(opt.etag[0])))
    if response.code in (Code.CONTENT, Code.VALID):
        max_age = 60 if opt.max_age is None else opt.max_age
        headers.append((b"cache-control", b"max-age=%d" % max_age))
    if opt.location_path or opt.location_query:
        origin = split_uri(target)[0]
        path = "/".join(quote(segment, safe="") for segment in opt.location_path)
        query = "&".join(quote(item, safe="=") for item in opt.location_query)
        location = f"{_PREFIX}{origin.uri_base}/{path}" + (f"?{query}" if query else "")
        headers.append((b"location", location.encode("utf-8")))
    if status in (204, 304):
        payload = b""
    headers.append((b"content-length", b"%d" % len(payload)))
    return status, headers, b"" if head else payload


async def serve_http(
    forward: ForwardProxy,
    bind: tuple[str, int] | Sequence[tuple[str, int]],
    *,
    max_connections: int = 256,
    max_body: int = DEFAULT_MAX_BODY,
    idle_timeout: float = 30.0,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP-CoAP cross-proxy on ``bind`` (``(host, port)`` or a list) until
    cancelled; reports the bound ``(host, port)`` pairs (port 0: the real port)."""
    binds: list[tuple[str, int]]
    if len(bind) == 2 and isinstance(bind[0], str):
        binds = [cast(tuple[str, int], bind)]
    else:
        binds = list(cast(Sequence[tuple[str, int]], bind))
    listeners: list[trio.SocketListener] = []
    try:
        for host, port in binds:
            listeners += await trio.open_tcp_listeners(port, host=host)
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        raise
    addresses = [
        (str(s.socket.getsockname()[0]), int(s.socket.getsockname()[1])) for s in listeners
    ]
    server = _HttpServer(forward, max_connections, max_body, idle_timeout)
    task_status.started(addresses)
    await trio.serve_listeners(server.connection, listeners)


class _HttpServer:
    def __init__(
        self, forward: ForwardProxy, max_connections: int, max_body: int, idle_timeout: float
    ) -> None:
        self.forward = forward
        self.max_connections = max_connections
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.connections = 0

    async def connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            async with stream:
                connection = h11.Connection(h11.SERVER)
                if self.connections > self.max_connections:
                    await _send(stream, connection, 503, [], b"too many connections\n")
                    return
                await self._serve(stream, connection)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            self.connections -= 1

    async def _serve(self, stream: trio.SocketStream, connection: h11.Connection) -> None:
        while True:
            request: h11.Request | None = None
            body = bytearray()
            too_large = False
            with trio.move_on_after(self.idle_timeout):
                try:
                    while True:
                        event = connection.next_event()
                        if event is h11.NEED_DATA:
                            data = await stream.receive_some(65536)
                            connection.receive_data(data)
                            continue
                        if isinstance(event, h11.Request):
                            request = event
                        elif isinstance(event, h11.Data):
                            if len(body) + len(event.data) > self.max_body:
                                too_large = True
                            else:
                                body += event.data
                        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                            break
                except h11.RemoteProtocolError:
                    if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        await _send(stream, connection, 400, [], b"malformed HTTP request\n")
                    return
            if request is None or connection.their_state is not h11.DONE:
                return  # closed, idle or too slow
            if too_large:
                await _send(stream, connection, 413, [], b"body too large\n")
                return
            status, headers, payload = await self._answer(request, bytes(body))
            with trio.move_on_after(self.idle_timeout) as sending:  # a client that reads not
                await _send(stream, connection, status, headers, payload)
            if sending.cancelled_caught:
                return
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            try:
                connection.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _answer(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = [(name.lower(), value) for name, value in request.headers]
        try:
            message = coap_request(request.method, request.target, headers, body)
            target = self.forward.target(message)
            response = await self.forward.render(message)
        except RenderableError as error:
            response = error.to_message()
            target = ""
        except Exception:  # a bug must not end the connection's task with a traceback
            logger.exception("the HTTP cross-proxy failed on %r", request.target)
            response = Message(code=Code.INTERNAL_SERVER_ERROR)
            target = ""
        if not target:
            response.opt.location_path = ()
            response.opt.location_query = ()
        return http_response(response, target, request.method == b"HEAD")


async def _send(
    stream: trio.SocketStream,
    connection: h11.Connection,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", b"%d" % len(body))]
    reason = _REASONS.get(status, b"")
    data = connection.send(h11.Response(status_code=status, headers=headers, reason=reason))
    assert data is not None
    if body:
        more = connection.send(h11.Data(data=body))
        assert more is not None
        data += more
    end = connection.send(h11.EndOfMessage())
    assert end is not None
    await stream.send_all(data + end)


# -- CoAP clients reaching HTTP resources ----------------------------------------------------


async def forward_to_http(request: Message, target: str, timeout: float) -> Message:
    """Send ``request`` to the ``http://`` or ``https://`` URI ``target``; the CoAP answer.

    One HTTP/1.1 connection per request, closed after it; the response body
    is bounded by :data:`DEFAULT_MAX_BODY` (5.02 beyond). Raises
    :class:`~coap_trio.response_errors.BadGateway` when the exchange fails
    and :class:`~coap_trio.response_errors.ServerNotImplemented` for
    methods HTTP has no equivalent of (FETCH, iPATCH). ``timeout`` is
    applied by the caller; it is given for the connection attempt.
    """
    method = _CODE_TO_HTTP.get(request.code)
    if method is None:
        raise ServerNotImplemented(f"{request.code.name_printable} has no HTTP method")
    parts = urlsplit(target)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [
        (
            b"host",
            parts.netloc.encode("idna") if not parts.netloc.isascii() else parts.netloc.encode(),
        ),
        (b"connection", b"close"),
        (b"user-agent", _SERVER),
        (b"content-length", b"%d" % len(request.payload)),
    ]
    opt = request.opt
    media_type = _media_type(opt.content_format)
    if media_type is not None:
        headers.append((b"content-type", media_type))
    accept = _media_type(opt.accept)
    if accept is not None:
        headers.append((b"accept", accept))
    if opt.etag:
        headers.append((b"if-none-match", b", ".join(_etag_text(e) for e in opt.etag)))
    connection = h11.Connection(h11.CLIENT)
    try:
        with trio.fail_after(timeout):
            if secure:
                stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(host, port)
            else:
                stream = await trio.open_tcp_stream(host, port)
        async with stream:
            data = connection.send(
                h11.Request(method=method, target=path.encode(), headers=headers)
            )
            assert data is not None
            body_part = connection.send(h11.Data(data=request.payload)) if request.payload else b""
            end = connection.send(h11.EndOfMessage())
            await stream.send_all(data + (body_part or b"") + (end or b""))
            return await _read_http_response(stream, connection, request.code)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError):
        raise BadGateway("upstream: HTTP exchange failed") from None


async def _read_http_response(
    stream: trio.abc.Stream, connection: h11.Connection, method: Code
) -> Message:
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(65536)))
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > DEFAULT_MAX_BODY:
                raise BadGateway("upstream: HTTP body too large")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if response is None:
        raise BadGateway("upstream: no HTTP response")
    answer = Message(code=http_status_to_coap(response.status_code, method), payload=bytes(body))
    headers = {name.lower(): value for name, value in response.headers}
    content_type = headers.get(b"content-type")
    if content_type is not None:
        content_format = _content_format(content_type.decode("latin-1"))
        if content_format is not None:
            answer.opt.content_format = content_format
    etag = headers.get(b"etag")
    if etag is not None:
        tags = _etags_from(etag)
        if tags:
            answer.opt.etag = tags[:1]
    cache_control = headers.get(b"cache-control")
    if cache_control is not None:
        match = _MAX_AGE.search(cache_control.decode("latin-1").lower())
        if match is not None:
            answer.opt.max_age = min(int(match.group(1)), 0xFFFFFFFF)
    return answer
