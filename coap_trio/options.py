"""The options of a message: raw storage in wire order plus typed accessors.

Owns: how options are held (a list of ``(number, raw bytes)`` kept in the
order the wire needs), the typed views (``opt.uri_path``, ``opt.observe``,
``opt.block2``...) and the rules that make a received value unusable
(RFC 7252 §5.4.1, §5.4.3, §5.4.5). Values stay raw until asked for, so
decoding and re-encoding never lose or reformat an option, known or not.

Every typed accessor is checked against :mod:`coap_trio.numbers.optionnumbers`
when the class is built: its name, format and repeatability come from the
registry, not from this file.

Must not know about the wire encoding of option headers (that is
:mod:`coap_trio.codec`) or about what any option means to a protocol layer.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

from .block import BlockValue
from .numbers.contentformat import ContentFormat
from .numbers.optionnumbers import (
    OptionFormat,
    OptionNumber,
    OptionSpec,
    option_spec,
    registered_options,
)

__all__ = ["Options", "decode_uint", "encode_uint", "is_malformed", "typed_option_names"]

T = TypeVar("T")


def encode_uint(value: int) -> bytes:
    """The minimal big-endian form of a uint option value (0 is zero bytes, §3.2)."""
    if value < 0:
        raise ValueError(f"uint option value {value} is negative")
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def decode_uint(raw: bytes) -> int:
    """A uint option value; leading zero bytes are accepted as §3.2 asks of receivers."""
    return int.from_bytes(raw, "big")


class _Codec(Generic[T]):
    """How one option's Python value maps to and from raw bytes."""

    __slots__ = ("dump", "format", "load")

    def __init__(
        self, fmt: OptionFormat, load: Callable[[bytes], T], dump: Callable[[T], bytes]
    ) -> None:
        self.format = fmt
        self.load = load
        self.dump = dump


def _dump_str(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value.encode("utf-8")


def _dump_bytes(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return bytes(value)


def _dump_int(value: int) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected int, got {type(value).__name__}")
    return encode_uint(value)


def _load_str(raw: bytes) -> str:
    return raw.decode("utf-8")


def _load_bytes(raw: bytes) -> bytes:
    return raw


_STR: _Codec[str] = _Codec(OptionFormat.STRING, _load_str, _dump_str)
_OPAQUE: _Codec[bytes] = _Codec(OptionFormat.OPAQUE, _load_bytes, _dump_bytes)
_UINT: _Codec[int] = _Codec(OptionFormat.UINT, decode_uint, _dump_int)
_CONTENT_FORMAT: _Codec[ContentFormat] = _Codec(
    OptionFormat.UINT, lambda raw: ContentFormat(decode_uint(raw)), _dump_int
)


def _dump_block(value: BlockValue) -> bytes:
    if not isinstance(value, BlockValue):
        raise TypeError(f"expected BlockValue, got {type(value).__name__}")
    return encode_uint(value.to_int())


_BLOCK: _Codec[BlockValue] = _Codec(
    OptionFormat.UINT, lambda raw: BlockValue.from_int(decode_uint(raw)), _dump_block
)


class _Accessor:
    """Common checks: the attribute name, format and repeatability match the registry."""

    repeatable = False

    def __init__(self, number: OptionNumber) -> None:
        self.number = int(number)
        self.spec: OptionSpec = option_spec(self.number)

    def __set_name__(self, owner: type, name: str) -> None:
        if name != self.spec.attribute:
            raise TypeError(f"accessor {name} does not match registry name {self.spec.name}")
        if self.repeatable != self.spec.repeatable:
            raise TypeError(f"accessor {name} disagrees with the registry on repeatability")
        codec: _Codec[Any] | None = getattr(self, "codec", None)
        fmt = codec.format if codec is not None else OptionFormat.EMPTY
        if fmt is not self.spec.format:
            raise TypeError(f"accessor {name} disagrees with the registry on the format")
        _ACCESSORS[self.number] = name

    def _check_length(self, raw: bytes) -> bytes:
        if not self.spec.length_ok(len(raw)):
            raise ValueError(
                f"{self.spec.name} value of {len(raw)} bytes is outside "
                f"{self.spec.min_length}..{self.spec.max_length}"
            )
        return raw


class _Single(_Accessor, Generic[T]):
    """A non-repeatable option: ``T | None``. Only the first occurrence counts (§5.4.5)."""

    def __init__(self, number: OptionNumber, codec: _Codec[T]) -> None:
        super().__init__(number)
        self.codec = codec

    @overload
    def __get__(self, obj: None, owner: type) -> _Single[T]: ...
    @overload
    def __get__(self, obj: Options, owner: type) -> T | None: ...
    def __get__(self, obj: Options | None, owner: type) -> _Single[T] | T | None:
        if obj is None:
            return self
        number = self.number
        for n, raw in obj.raw_items:
            if n == number:
                if not self.spec.length_ok(len(raw)):
                    return None
                try:
                    return self.codec.load(raw)
                except ValueError:
                    return None
            if n > number:
                break
        return None

    def __set__(self, obj: Options, value: T | None) -> None:
        if value is None:
            obj.remove(self.number)
        else:
            obj.replace(self.number, [self._check_length(self.codec.dump(value))])

    def __delete__(self, obj: Options) -> None:
        obj.remove(self.number)


class _Repeated(_Accessor, Generic[T]):
    """A repeatable option: a tuple of values in their order; malformed ones are skipped."""

    repeatable = True

    def __init__(self, number: OptionNumber, codec: _Codec[T]) -> None:
        super().__init__(number)
        self.codec = codec
        self._read = (self.number, codec.load, self.spec.min_length, self.spec.max_length)

    @overload
    def __get__(self, obj: None, owner: type) -> _Repeated[T]: ...
    @overload
    def __get__(self, obj: Options, owner: type) -> tuple[T, ...]: ...
    def __get__(self, obj: Options | None, owner: type) -> _Repeated[T] | tuple[T, ...]:
        if obj is None:
            return self
        values = []
        number, load, low, high = self._read
        for n, raw in obj.raw_items:  # in number order: stop after the last occurrence
            if n == number:
                if low <= len(raw) <= high:
                    try:
                        values.append(load(raw))
                    except ValueError:
                        continue
            elif n > number:
                break
        return tuple(values)

    def __set__(self, obj: Options, values: Iterable[T]) -> None:
        if isinstance(values, str | bytes):
            raise TypeError(f"{self.spec.name} takes a sequence of values, not one value")
        obj.replace(self.number, [self._check_length(self.codec.dump(v)) for v in values])

    def __delete__(self, obj: Options) -> None:
        obj.remove(self.number)


class _Flag(_Accessor):
    """An empty-format option: present or not."""

    @overload
    def __get__(self, obj: None, owner: type) -> _Flag: ...
    @overload
    def __get__(self, obj: Options, owner: type) -> bool: ...
    def __get__(self, obj: Options | None, owner: type) -> _Flag | bool:
        if obj is None:
            return self
        for n, raw in obj.raw_items:
            if n == self.number:
                return raw == b""
            if n > self.number:
                break
        return False

    def __set__(self, obj: Options, value: bool) -> None:
        if value:
            obj.replace(self.number, [b""])
        else:
            obj.remove(self.number)

    def __delete__(self, obj: Options) -> None:
        obj.remove(self.number)


#: option number -> attribute name of its typed accessor (filled in by __set_name__).
_ACCESSORS: dict[int, str] = {}

_N = OptionNumber


class Options:
    """The options of one message, in wire order.

    Raw access works for any number: :meth:`get_all`, :meth:`add`,
    :meth:`replace`, :meth:`remove`, iteration over ``(OptionNumber, bytes)``.
    Typed access works for every registered option through attributes named
    after the registry (``uri_path``, ``content_format``, ``block2``...):
    repeatable options are tuples, empty-format options are bools, others are
    ``value | None``. Setting a typed attribute validates the value against
    the registry's length bounds; assigning None (or an empty tuple) removes it.

    Values that break their registered length or format, and extra
    occurrences of a non-repeatable option, are kept (so they re-encode
    unchanged) but read as absent through the typed view and are listed by
    :meth:`malformed`, so that a server can treat them as unrecognized
    (RFC 7252 §5.4.1, §5.4.3, §5.4.5).
    """

    __slots__ = ("raw_items",)

    #: The raw ``(number, value)`` pairs, in ascending number order (the
    #: wire order). The codec and the protocol machines read it directly; code
    #: that assigns it keeps the order.
    raw_items: list[tuple[int, bytes]]

    def __init__(self, items: Iterable[tuple[int, bytes]] = ()) -> None:
        self.raw_items = []
        for number, value in items:
            self.add(number, value)

    @classmethod
    def from_wire(cls, items: list[tuple[int, bytes]]) -> Options:
        """Adopt ``items``, in number order already (the decoder's output), as they are."""
        options = cls.__new__(cls)
        options.raw_items = items
        return options

    # -- raw access -------------------------------------------------------

    def get_all(self, number: int) -> tuple[bytes, ...]:
        """Every raw value of option ``number``, in order."""
        return tuple(raw for n, raw in self.raw_items if n == number)

    def add(self, number: int, value: bytes) -> None:
        """Append one raw value of option ``number`` after any existing ones."""
        if not 0 <= number <= 0xFFFF:
            raise ValueError(f"option number {number} is not in 0..65535")
        if not isinstance(value, bytes):
            if not isinstance(value, bytearray | memoryview):
                raise TypeError(f"option values are bytes, got {type(value).__name__}")
            value = bytes(value)
        items = self.raw_items
        if not items or items[-1][0] <= number:
            items.append((number, value))
        else:
            items.insert(bisect_right(items, number, key=_number_of), (number, value))

    def replace(self, number: int, values: Iterable[bytes]) -> None:
        """Replace every value of option ``number`` with ``values`` (raw)."""
        self.remove(number)
        for value in values:
            self.add(number, value)

    def remove(self, number: int) -> None:
        """Drop every occurrence of option ``number``."""
        items = self.raw_items
        if any(n == number for n, _ in items):
            self.raw_items = [item for item in items if item[0] != number]

    def __contains__(self, number: object) -> bool:
        for n, _ in self.raw_items:  # noqa: SIM110 -- a plain loop: on every request's path
            if n == number:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[OptionNumber, bytes]]:
        return ((OptionNumber(n), raw) for n, raw in self.raw_items)

    def __len__(self) -> int:
        return len(self.raw_items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Options):
            return NotImplemented
        return self.raw_items == other.raw_items

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Options:
        """An independent copy."""
        return Options.from_wire(list(self.raw_items))

    def numbers(self) -> tuple[OptionNumber, ...]:
        """The distinct option numbers present, ascending."""
        return tuple(OptionNumber(n) for n in sorted({n for n, _ in self.raw_items}))

    def malformed(self) -> tuple[OptionNumber, ...]:
        """Numbers whose values must be treated as unrecognized options.

        That is: a value outside the registered length bounds, a string that
        is not UTF-8, a value a typed accessor cannot parse (e.g. a block
        option over 3 bytes), or a second occurrence of a non-repeatable
        option. Unregistered numbers are never listed here; whether they are
        *recognized* is the business of the layer that handles them.
        """
        bad: list[OptionNumber] = []
        previous = -1
        for number, raw in self.raw_items:
            if is_malformed(number, raw, number == previous) and (not bad or bad[-1] != number):
                bad.append(OptionNumber(number))
            previous = number
        return tuple(bad)

    # -- typed access: one line per registered option --------------------

    if_match = _Repeated(_N.IF_MATCH, _OPAQUE)
    uri_host = _Single(_N.URI_HOST, _STR)
    etag = _Repeated(_N.ETAG, _OPAQUE)
    if_none_match = _Flag(_N.IF_NONE_MATCH)
    observe = _Single(_N.OBSERVE, _UINT)
    uri_port = _Single(_N.URI_PORT, _UINT)
    location_path = _Repeated(_N.LOCATION_PATH, _STR)
    oscore = _Single(_N.OSCORE, _OPAQUE)
    uri_path = _Repeated(_N.URI_PATH, _STR)
    content_format = _Single(_N.CONTENT_FORMAT, _CONTENT_FORMAT)
    max_age = _Single(_N.MAX_AGE, _UINT)
    uri_query = _Repeated(_N.URI_QUERY, _STR)
    hop_limit = _Single(_N.HOP_LIMIT, _UINT)
    accept = _Single(_N.ACCEPT, _CONTENT_FORMAT)
    q_block1 = _Single(_N.Q_BLOCK1, _BLOCK)
    location_query = _Repeated(_N.LOCATION_QUERY, _STR)
    edhoc = _Flag(_N.EDHOC)
    block2 = _Single(_N.BLOCK2, _BLOCK)
    block1 = _Single(_N.BLOCK1, _BLOCK)
    size2 = _Single(_N.SIZE2, _UINT)
    q_block2 = _Repeated(_N.Q_BLOCK2, _BLOCK)
    proxy_uri = _Single(_N.PROXY_URI, _STR)
    proxy_scheme = _Single(_N.PROXY_SCHEME, _STR)
    size1 = _Single(_N.SIZE1, _UINT)
    echo = _Single(_N.ECHO, _OPAQUE)
    no_response = _Single(_N.NO_RESPONSE, _UINT)
    request_tag = _Repeated(_N.REQUEST_TAG, _OPAQUE)
    ocf_accept_content_format_version = _Single(_N.OCF_ACCEPT_CONTENT_FORMAT_VERSION, _UINT)
    ocf_content_format_version = _Single(_N.OCF_CONTENT_FORMAT_VERSION, _UINT)

    def __repr__(self) -> str:
        parts = []
        for number, raw in self.raw_items:
            name = _ACCESSORS.get(number)
            if name is None:
                parts.append(f"{number}={raw.hex()}")
            else:
                parts.append(f"{option_spec(number).name}={_show(number, raw)}")
        return f"<Options {', '.join(parts)}>"


_STRING_FORMAT = OptionFormat.STRING
#: (repeatable, min length, max length, is a string) of every registered option,
#: so that the check on every received option is one dict lookup.
_MALFORMED_RULES = {
    spec.number: (
        spec.repeatable,
        spec.min_length,
        spec.max_length,
        spec.format is _STRING_FORMAT,
    )
    for spec in registered_options()
}


def is_malformed(number: int, value: bytes, repeated: bool) -> bool:
    """Whether one occurrence of option ``number`` must be treated as unrecognized:
    its value breaks the registered length or format (not UTF-8 for a string,
    RFC 7252 §5.4.3), or it repeats a non-repeatable option (§5.4.5).
    ``repeated``: an occurrence of the same number came just before it."""
    rules = _MALFORMED_RULES.get(number)
    if rules is None:
        spec = option_spec(number)
        rules = (spec.repeatable, spec.min_length, spec.max_length, spec.format is _STRING_FORMAT)
    repeatable, low, high, string = rules
    if repeated and not repeatable:
        return True
    if not low <= len(value) <= high:
        return True
    if string and not value.isascii():
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


def _number_of(item: tuple[int, bytes]) -> int:
    return item[0]


def _show(number: int, raw: bytes) -> str:
    fmt = option_spec(number).format
    if fmt is OptionFormat.UINT:
        return str(decode_uint(raw))
    if fmt is OptionFormat.STRING:
        try:
            return repr(raw.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    if fmt is OptionFormat.EMPTY and not raw:
        return "(empty)"
    return raw.hex() or "(empty)"


def typed_option_names() -> dict[int, str]:
    """Option number -> attribute name of its typed accessor on :class:`Options`."""
    return dict(_ACCESSORS)
