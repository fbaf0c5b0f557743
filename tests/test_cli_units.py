"""The CLI's parsing, rendering and exit-status modules, without processes or sockets."""

from __future__ import annotations

import io

import cbor2
import pytest

from coap_trio import Code, ContentFormat, Message
from coap_trio.cli.exitcodes import ExitStatus, exit_status_table, status_for_code, status_for_error
from coap_trio.cli.output import (
    ProgressBar,
    cbor_diagnostic,
    describe_response,
    format_links,
    hexdump,
    payload_kind,
    render_payload,
)
from coap_trio.cli.parsing import (
    UsageError,
    build_parser,
    parse_bind,
    parse_content_format,
    parse_option,
    read_payload,
)
from coap_trio.cli.serve import format_address
from coap_trio.cli.trace import describe_datagram
from coap_trio.errors import (
    BadResponseError,
    NetworkError,
    RequestTimeoutError,
    ResetByPeerError,
    UnresolvableHostError,
    UnsupportedTransportError,
)
from coap_trio.remote import DatagramRemote
from coap_trio.uri import InvalidURIError

# -- content formats -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("0", 0),
        ("60", 60),
        ("text", 0),
        ("text/plain", 0),
        ("TEXT/PLAIN; charset=utf-8", 0),
        ("json", 50),
        ("application/json", 50),
        ("cbor", 60),
        ("application/link-format", 40),
        ("link-format", 40),
        ("senml+json", 110),
        ("octet-stream", 42),
        ("65000", 65000),
    ],
)
def test_content_format_names(text: str, number: int) -> None:
    assert parse_content_format(text) == number


@pytest.mark.parametrize("text", ["yaml", "application/nonsense", "70000", ""])
def test_unknown_content_formats_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_content_format(text)


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14=60", (14, b"\x3c")),  # Max-Age: uint
        ("14=0x100", (14, b"\x01\x00")),
        ("14=0", (14, b"")),
        ("Max-Age=3600", (14, b"\x0e\x10")),
        ("uri_query=a=b", (15, b"a=b")),  # string; only the first "=" separates
        ("4=0xcafe", (4, b"\xca\xfe")),  # ETag: opaque as hex
        ("4=ab", (4, b"ab")),  # opaque as text
        ("5=", (5, b"")),  # If-None-Match: empty
        ("65000=0x0102", (65000, b"\x01\x02")),  # unregistered: opaque
        ("65001=hello", (65001, b"hello")),
    ],
)
def test_option_values_follow_the_registry(text: str, expected: tuple[int, bytes]) -> None:
    assert parse_option(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "14=abc",  # not an integer
        "14=-1",
        "14=0x100000000",  # five bytes: beyond Max-Age's 4
        "5=x",  # If-None-Match takes nothing
        "4=0xzz",
        "4=",  # ETag needs 1..8 bytes
        "70000=1",
        "No-Such-Option=1",
    ],
)
def test_bad_option_values_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_option(text)


# -- binds and payloads --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::1]:0", ("::1", 0)),
        ("[::]:5683", ("::", 5683)),
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("::1", ("::1", 5683)),
        ("[::1]", ("::1", 5683)),
        ("localhost", ("localhost", 5683)),
    ],
)
def test_bind_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["[::1", "[::1]x", ":5683", "127.0.0.1:99999", "[zz::]:1"])
def test_bad_bind_addresses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_bind(text)


def test_payload_sources(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    file = tmp_path / "body.bin"
    file.write_bytes(b"\x00\x01file")
    assert read_payload("héllo", None) == "héllo".encode()
    assert read_payload(None, str(file)) == b"\x00\x01file"
    assert read_payload(None, "-", io.BytesIO(b"from stdin")) == b"from stdin"
    assert read_payload(None, None) == b""
    with pytest.raises(UsageError, match="not both"):
        read_payload("a", str(file))
    with pytest.raises(UsageError, match="missing"):
        read_payload(None, str(tmp_path / "missing"))


def test_parser_knows_every_verb_and_rejects_bad_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["post", "coap://[::1]/x", "--payload", "1", "--ct", "json", "-O", "14=5", "--non"]
    )
    assert args.verb == "post"
    assert args.content_format == ContentFormat.JSON
    assert args.option == [(14, b"\x05")]
    assert args.non is True
    args = parser.parse_args(["observe", "coap://[::1]/x", "--count", "3", "--duration", "1.5"])
    assert (args.count, args.duration) == (3, 1.5)
    args = parser.parse_args(["serve", "plugtest", "--bind", "[::1]:0", "--bind", "127.0.0.1:0"])
    assert args.bind == [("::1", 0), ("127.0.0.1", 0)]
    for bad in (
        ["get"],
        ["get", "coap://[::1]/", "--count", "2"],
        ["observe", "coap://[::1]/", "--count", "0"],
        ["get", "coap://[::1]/", "--block-size", "100"],
        ["get", "coap://[::1]/", "--timeout", "-1"],
        ["get", "coap://[::1]/", "--accept", "yaml"],
        ["frobnicate"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(bad)
        assert exit_info.value.code == ExitStatus.USAGE, bad


def test_help_lists_the_exit_statuses() -> None:
    text = build_parser().format_help()
    for status in ExitStatus:
        assert f"{int(status):>3}  " in text
    assert exit_status_table().count("\n") == len(ExitStatus) - 1


def test_help_and_docs_name_the_schemes_that_work() -> None:
    from pathlib import Path

    from coap_trio.transports.stream import STREAM_SCHEMES

    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    text = build_parser().format_help()
    for scheme in ("coap", "coaps", *STREAM_SCHEMES):  # what a client Context routes
        assert f"{scheme}://" in text, scheme
        assert f"| `{scheme}://` |" in docs, scheme
    unsupported = [line for line in text.splitlines() if line.startswith("    8  ")]
    assert unsupported == [
        "    8  unsupported scheme: coaps:// without the dtls extra,"
        " coap(s)+ws:// without the ws one"
    ]
    row = next(line for line in docs.splitlines() if line.startswith("| 8 |"))
    assert "coap+tcp" not in row


def test_docs_list_every_exit_status() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    statuses = [
        int(line.split("|")[1])
        for line in docs.splitlines()
        if line[:2] == "| " and line.split("|")[1].strip().isdigit()
    ]
    assert statuses == [int(status) for status in ExitStatus]


# -- exit statuses -------------------------------------------------------------------------


def test_status_for_codes() -> None:
    assert status_for_code(Code.CONTENT) is ExitStatus.OK
    assert status_for_code(Code.CREATED) is ExitStatus.OK
    assert status_for_code(Code.NOT_FOUND) is ExitStatus.CLIENT_ERROR
    assert status_for_code(Code.METHOD_NOT_ALLOWED) is ExitStatus.CLIENT_ERROR
    assert status_for_code(Code.INTERNAL_SERVER_ERROR) is ExitStatus.SERVER_ERROR
    assert status_for_code(Code.PROXYING_NOT_SUPPORTED) is ExitStatus.SERVER_ERROR
    assert status_for_code(Code(0x60)) is ExitStatus.PROTOCOL_ERROR  # 3.00: no such class


def test_status_for_errors() -> None:
    assert status_for_error(RequestTimeoutError(5)) is ExitStatus.TIMEOUT
    assert status_for_error(NetworkError("unreachable")) is ExitStatus.NETWORK_ERROR
    assert status_for_error(UnresolvableHostError("x")) is ExitStatus.NETWORK_ERROR
    assert status_for_error(ResetByPeerError("x")) is ExitStatus.NETWORK_ERROR
    assert status_for_error(ConnectionRefusedError()) is ExitStatus.NETWORK_ERROR
    assert status_for_error(BadResponseError("x")) is ExitStatus.PROTOCOL_ERROR
    assert status_for_error(UnsupportedTransportError("x")) is ExitStatus.UNSUPPORTED_TRANSPORT
    assert status_for_error(InvalidURIError("x")) is ExitStatus.USAGE
    assert len({int(status) for status in ExitStatus}) == len(ExitStatus)


# -- rendering -----------------------------------------------------------------------------


def test_json_is_pretty_printed() -> None:
    rendered = render_payload(b'{"b":[1,2],"a":"\xc3\xa9"}', 50, terminal=False)
    assert rendered.data.decode() == '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "é"\n}\n'
    assert rendered.note is None
    # +json media types too (SenML JSON)
    assert render_payload(b"[{}]", 110, terminal=False).data == b"[\n  {}\n]\n"


def test_invalid_json_is_shown_as_text_with_a_note() -> None:
    rendered = render_payload(b"{not json", 50, terminal=False)
    assert rendered.data == b"{not json"
    assert rendered.note is not None
    assert "JSON" in rendered.note


def test_cbor_diagnostic_notation() -> None:
    value = {"a": [1, -2, 1.5, b"\x01\xff"], 3: None, "t": True, "f": False}
    assert (
        cbor_diagnostic(cbor2.dumps(value))
        == '{"a": [1, -2, 1.5, h\'01ff\'], 3: null, "t": true, "f": false}'
    )
    assert cbor_diagnostic(cbor2.dumps(cbor2.CBORTag(4242, "x"))) == '4242("x")'
    assert cbor_diagnostic(bytes.fromhex("f7")) == "undefined"
    assert cbor_diagnostic(bytes.fromhex("f90000")) == "0.0"
    assert cbor_diagnostic(cbor2.dumps(float("inf"))) == "Infinity"
    with pytest.raises(ValueError, match="bytes follow"):
        cbor_diagnostic(b"\x01\x02")
    with pytest.raises(ValueError, match="not CBOR"):
        cbor_diagnostic(b"\x82\x01")
    rendered = render_payload(cbor2.dumps([1, "x"]), 60, terminal=True)
    assert rendered.data == b'[1, "x"]\n'


def test_cbor_without_cbor2_is_hex_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cbor2", None)  # import cbor2 now raises ImportError
    assert cbor_diagnostic(b"\x01") is None
    rendered = render_payload(b"\x82\x01\x02", 60, terminal=False)
    assert rendered.data == hexdump(b"\x82\x01\x02").encode()
    assert rendered.note is not None
    assert "cbor2" in rendered.note


def test_link_format_one_link_per_line() -> None:
    text = '</sensors/temp>;rt="temperature-c";if=sensor;ct=50;obs,</time>;title="Clock"'
    assert format_links(text) == (
        '</sensors/temp> rt="temperature-c" if="sensor" ct="50" obs\n</time> title="Clock"\n'
    )
    rendered = render_payload(text.encode(), 40, terminal=False)
    assert rendered.data.decode().splitlines()[1] == '</time> title="Clock"'
    broken = render_payload(b"<unterminated", 40, terminal=False)
    assert broken.data == b"<unterminated"
    assert broken.note is not None


def test_text_is_written_as_it_is() -> None:
    assert render_payload(b"caf\xc3\xa9", 0, terminal=True).data == b"caf\xc3\xa9"
    assert render_payload(b"plain", None, terminal=True).data == b"plain"  # no ct: looks like text
    assert render_payload(b"", 50, terminal=True).data == b""


def test_binary_is_hex_on_a_terminal_and_raw_when_piped() -> None:
    data = bytes(range(20))
    assert render_payload(data, 42, terminal=False).data == data
    on_terminal = render_payload(data, 42, terminal=True).data.decode()
    assert on_terminal == hexdump(data)
    assert on_terminal.splitlines()[1].startswith("00000010  10 11 12 13 ")
    assert render_payload(data, None, terminal=True).data == on_terminal.encode()  # no ct
    # --raw: bytes as they are, whatever the format
    assert render_payload(b'{"a":1}', 50, terminal=True, raw=True).data == b'{"a":1}'


def test_hexdump_layout() -> None:
    lines = hexdump(b"AB\x00" * 6).splitlines()
    assert lines == [
        "00000000  41 42 00 41 42 00 41 42 00 41 42 00 41 42 00 41  |AB.AB.AB.AB.AB.A|",
        "00000010  42 00                                            |B.|",
    ]
    assert hexdump(b"") == ""


def test_payload_kinds() -> None:
    assert payload_kind(50) == "json"
    assert payload_kind(60) == "cbor"
    assert payload_kind(112) == "cbor"  # senml+cbor
    assert payload_kind(40) == "links"
    assert payload_kind(0) == "text"
    assert payload_kind(41) == "text"  # XML
    assert payload_kind(42) == "binary"
    assert payload_kind(11050) == "binary"  # deflate-coded JSON
    assert payload_kind(65000) == "binary"  # unregistered
    assert payload_kind(None) == "unknown"


def test_describe_response() -> None:
    response = Message(code=Code.CREATED, location_path=("a", "b"), content_format=0, payload=b"ok")
    assert (
        describe_response(response)
        == "2.01 Created ct=text/plain; charset=utf-8 location=/a/b 2 bytes"
    )


def test_progress_bar_draws_in_place() -> None:
    stream = io.StringIO()
    now = [0.0]
    bar = ProgressBar(stream, width=10, interval=1.0, clock=lambda: now[0])
    bar(1024, 4096)
    bar(2048, 4096)  # within the interval: not drawn
    now[0] = 2.0
    bar(3072, 4096)
    bar(4096, 4096)  # complete: always drawn
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert [frame.split("]")[0] for frame in frames] == [
        "[##--------",
        "[########--",
        "[##########",
        "[##########",
    ]
    assert "100.0% 4.0 KiB / 4.0 KiB" in frames[-1]
    assert stream.getvalue().endswith("\n")
    unknown = ProgressBar(io.StringIO())
    unknown(500, None)
    assert unknown.line() == "[???] 500 B"
    silent = io.StringIO()
    ProgressBar(silent).close()
    assert silent.getvalue() == ""


def test_progress_bar_cleared_when_the_transfer_does_not_finish() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar(1024, 4096)
    bar.clear()
    assert stream.getvalue().endswith("\r\x1b[K")  # the half-drawn line is erased
    bar.clear()  # nothing drawn any more: nothing written
    bar.close()
    assert stream.getvalue().count("\r") == 2
    done = io.StringIO()
    finished = ProgressBar(done, width=10)
    finished(4096, 4096)
    finished.close()
    finished.clear()  # after close: the finished bar stays
    assert done.getvalue().endswith("\n")


def test_trace_lines_and_addresses() -> None:
    from coap_trio import codec

    remote = DatagramRemote(("::1", 5683, 0, 0))
    wire = codec.encode(Message(code=Code.GET, mtype=0, mid=7, uri="coap://[::1]/x", payload=b"p"))
    assert describe_datagram(wire, remote).startswith("<Message CON 0.01 GET mid=7")
    assert describe_datagram(wire, remote).endswith("payload=b'p'")
    assert "not CoAP" in describe_datagram(b"\x40", remote)
    assert format_address("::1", 5683) == "coap://[::1]:5683"
    assert format_address("127.0.0.1", 1) == "coap://127.0.0.1:1"
