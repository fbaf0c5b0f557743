"""The CoAP message: header fields, options, payload and the remote it travels with.

Owns the in-memory shape of a message and its conveniences (building a
request from a URI, reading the URI back, a readable repr). Must not know
about any wire format (:mod:`coap_trio.codec`), transports or exchanges.
"""

from __future__ import annotations

import re
from typing import Any

from .block import BlockValue
from .numbers.codes import CODE_TABLE, Code
from .numbers.types import Type
from .options import Options, typed_option_names
from .uri import URI_OPTION_NUMBERS, InvalidURIError, build_uri, uri_options

__all__ = ["BlockValue", "Message"]

_ABSOLUTE_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]+")

_new = object.__new__

#: The keyword names that set a typed option (not Options' methods such as ``copy``).
_OPTION_KEYWORDS = frozenset(typed_option_names().values())


class Message:
    """One CoAP message.

    ``Message(code=GET, uri="coap://[::1]/sensors/temp?unit=C")`` builds a
    request whose options and :attr:`remote` follow RFC 7252 §6.4; any typed
    option can be given by keyword (``content_format=ContentFormat.JSON``,
    ``observe=0``, ``uri_path=("a", "b")``...). Fields left as None
    (``mtype``, ``mid``) are filled in by the layer that sends the message.
    The ``payload`` is bytes, a bytearray or a memoryview (kept as bytes);
    anything else raises TypeError (encode text first: ``text.encode()``).

    Attribute names follow aiocoap's (``code``, ``mtype``, ``mid``,
    ``token``, ``opt``, ``payload``, ``remote``).
    """

    __slots__ = ("code", "mid", "mtype", "opt", "payload", "remote", "token")

    #: The method, response or signaling code.
    code: Code
    #: CON, NON, ACK or RST; None until the messaging layer decides.
    mtype: Type | None
    #: The 16-bit message ID; None until the messaging layer assigns one.
    mid: int | None
    #: The token, 0..8 bytes.
    token: bytes
    #: The options, with typed accessors.
    opt: Options
    #: The payload (possibly empty).
    payload: bytes
    #: Where the message comes from or goes to: an :class:`~coap_trio.uri.Origin`
    #: before resolution, a transport's address object after; None if unknown.
    remote: Any

    def __init__(
        self,
        *,
        code: int = Code.EMPTY,
        mtype: Type | None = None,
        mid: int | None = None,
        token: bytes = b"",
        payload: bytes | bytearray | memoryview = b"",
        opt: Options | None = None,
        uri: str | None = None,
        remote: object = None,
        **options: Any,
    ) -> None:
        self.code = CODE_TABLE[code] if isinstance(code, int) and 0 <= code <= 255 else Code(code)
        self.mtype = None if mtype is None else Type(mtype)
        if mid is not None and not 0 <= mid <= 0xFFFF:
            raise ValueError(f"message ID {mid} is not in 0..65535")
        self.mid = mid
        if len(token) > 8:
            raise ValueError(f"token of {len(token)} bytes is longer than 8")
        self.token = token if type(token) is bytes else bytes(token)
        self.payload = payload if type(payload) is bytes else _as_payload(payload)
        if opt is not None:
            self.opt = opt
            self.remote = remote
            if uri is not None:
                self.set_request_uri(uri)
        elif uri is not None:  # set_request_uri on empty options, inline (the usual request)
            self.remote, items = uri_options(uri)
            self.opt = Options.from_wire(list(items))
        else:
            opt = self.opt = _new(Options)  # (Options.from_wire([]), inline: every response)
            opt.raw_items = []
            self.remote = remote
        for name, value in options.items() if options else ():
            if name not in _OPTION_KEYWORDS:
                raise TypeError(f"Message() got an unexpected keyword argument {name!r}")
            setattr(self.opt, name, value)

    @classmethod
    def from_fields(
        cls,
        code: Code,
        mtype: Type | None,
        mid: int | None,
        token: bytes,
        opt: Options,
        payload: bytes,
        remote: object,
    ) -> Message:
        """Construct from already-checked fields, without validation.

        For the codec and the protocol machines' hot paths: nothing is
        copied or checked, so ``opt`` must be an :class:`Options` the caller
        owns.
        """
        message = cls.__new__(cls)
        message.code = code
        message.mtype = mtype
        message.mid = mid
        message.token = token
        message.opt = opt
        message.payload = payload
        message.remote = remote
        return message

    # -- URIs ---------------------------------------------------------------

    def set_request_uri(self, uri: str, *, proxy: str | None = None) -> None:
        """Point this request at ``uri`` (RFC 7252 §6.4).

        Sets :attr:`remote` to the URI's :class:`~coap_trio.uri.Origin` and
        replaces Uri-Host, Uri-Port, Uri-Path and Uri-Query. With ``proxy``
        (a CoAP URI of a forward proxy), the request goes to the proxy
        instead and carries ``uri`` whole in Proxy-Uri (§5.10.2); ``uri`` may
        then use any scheme the proxy translates to (``http://`` for a
        cross-proxy), but must be absolute and carry no fragment.
        """
        if proxy is None:
            origin, items = uri_options(uri)
        else:
            if not _ABSOLUTE_URI.match(uri) or "#" in uri:
                raise InvalidURIError(f"Proxy-Uri {uri!r} is not an absolute URI")
            origin, _ = uri_options(proxy)
            proxied = Options()
            proxied.proxy_uri = uri  # validates the registered length bounds
            items = tuple(proxied.raw_items)
        # Validated before anything changes: a refused URI leaves the message as it was.
        current = self.opt.raw_items
        kept = [item for item in current if item[0] not in URI_OPTION_NUMBERS] if current else None
        self.opt.raw_items = sorted([*kept, *items], key=_number_of) if kept else list(items)
        self.remote = origin

    def get_request_uri(self) -> str:
        """The absolute URI this request addresses (RFC 7252 §6.5).

        Uses Proxy-Uri when present; otherwise Uri-Host / Uri-Port and the
        :attr:`remote`'s scheme, host and port, then Uri-Path and Uri-Query.
        """
        remote = self.remote
        if remote is not None and not _is_remote_like(remote):
            raise InvalidURIError(f"remote {remote!r} has no scheme, host and port")
        return build_uri(self.opt, remote)

    # -- conveniences ------------------------------------------------------------

    def copy(self, **changes: Any) -> Message:
        """A copy with independent options; keyword arguments replace fields."""
        message = Message.from_fields(
            self.code,
            self.mtype,
            self.mid,
            self.token,
            self.opt.copy(),
            self.payload,
            self.remote,
        )
        for name, value in changes.items():
            if name in Message.__slots__:
                if name == "code":
                    value = Code(value)
                elif name == "mtype" and value is not None:
                    value = Type(value)
                elif name == "mid" and value is not None and not 0 <= value <= 0xFFFF:
                    raise ValueError(f"message ID {value} is not in 0..65535")
                elif name == "payload":
                    value = value if type(value) is bytes else _as_payload(value)
                elif name == "token":
                    value = bytes(value)
                    if len(value) > 8:
                        raise ValueError(f"token of {len(value)} bytes is longer than 8")
                setattr(message, name, value)
            elif name in _OPTION_KEYWORDS:
                setattr(message.opt, name, value)
            else:
                raise TypeError(f"copy() got an unexpected keyword argument {name!r}")
        return message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.code == other.code
            and self.mtype == other.mtype
            and self.mid == other.mid
            and self.token == other.token
            and self.opt == other.opt
            and self.payload == other.payload
            and self.remote == other.remote
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [
            "?" if self.mtype is None else self.mtype.name,
            f"{self.code.dotted} {self.code.name_printable}",
            f"mid={'?' if self.mid is None else self.mid}",
            f"token={self.token.hex() or '-'}",
        ]
        opt = self.opt
        if len(opt):
            path = opt.uri_path
            query = opt.uri_query
            if path or query:
                parts.append("/" + "/".join(path) + ("?" + "&".join(query) if query else ""))
            labelled: tuple[tuple[str, object], ...] = (
                ("ct", None if opt.content_format is None else int(opt.content_format)),
                ("accept", None if opt.accept is None else int(opt.accept)),
                ("observe", opt.observe),
                ("block1", opt.block1),
                ("block2", opt.block2),
                ("etag", ",".join(e.hex() for e in opt.etag) or None),
            )
            parts.extend(f"{label}={value}" for label, value in labelled if value is not None)
            shown = {11, 15, 12, 17, 6, 27, 23, 4}
            others = len({n for n, _ in opt.raw_items if n not in shown})
            if others:
                parts.append(f"+{others} opt")
        if self.payload:
            parts.append(f"{len(self.payload)}B")
        return f"<Message {' '.join(parts)}>"


def _as_payload(payload: object) -> bytes:
    """``payload`` as bytes when it is bytes-like; TypeError for anything else.

    ``bytes()`` alone would turn ``5`` into five zero bytes and a list of ints
    into bytes: a payload is given as bytes, a bytearray or a memoryview only.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        raise TypeError(
            "a payload is bytes, bytearray or memoryview, not str:"
            " encode the text first, e.g. payload=text.encode()"
        )
    raise TypeError(f"a payload is bytes, bytearray or memoryview, not {type(payload).__name__}")


def _is_remote_like(remote: object) -> bool:
    return all(hasattr(remote, name) for name in ("scheme", "host", "port"))


def _number_of(item: tuple[int, bytes]) -> int:
    return item[0]
