"""The command line of the proxies: --proxy on the client verbs, serve proxy's flags."""

from __future__ import annotations

import io

import pytest

from coap_trio.cli import main
from coap_trio.cli.client import Console, build_request
from coap_trio.cli.exitcodes import ExitStatus
from coap_trio.cli.parsing import build_parser


def console() -> Console:
    return Console(io.BytesIO(), io.StringIO(), io.BytesIO(), False, False)


def test_get_with_proxy_puts_the_target_in_proxy_uri() -> None:
    args = build_parser().parse_args(
        ["get", "--proxy", "coap://[::1]:5700", "coap://[2001:db8::1]/a/b?x=1"]
    )
    message = build_request(args, console())
    assert message.opt.proxy_uri == "coap://[2001:db8::1]/a/b?x=1"
    assert message.opt.uri_path == ()
    assert (message.remote.host, message.remote.port) == ("::1", 5700)


def test_discover_with_proxy_names_well_known_core() -> None:
    args = build_parser().parse_args(
        ["discover", "--proxy", "coap://[::1]", "--rt", "temp", "coap://h.example"]
    )
    message = build_request(args, console())
    assert message.opt.proxy_uri == "coap://h.example/.well-known/core?rt=temp"


def test_an_http_target_through_a_cross_proxy() -> None:
    args = build_parser().parse_args(["get", "--proxy", "coap://[::1]", "http://h.example/x"])
    message = build_request(args, console())
    assert message.opt.proxy_uri == "http://h.example/x"


def test_ping_takes_no_proxy() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ping", "--proxy", "coap://[::1]", "coap://[::1]"])


def test_serve_proxy_flags() -> None:
    args = build_parser().parse_args(
        ["serve", "proxy", "--bind", "[::1]:0", "--http-bind", "127.0.0.1", "--allow", "*"]
    )
    assert args.bind == [("::1", 0)]
    assert args.http_bind == [("127.0.0.1", 8080)]
    assert args.allow == ["*"]
    assert (args.cache_entries, args.upstream_timeout, args.no_cache) == (10_000, 60.0, False)


def test_a_malformed_allow_pattern_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["serve", "proxy", "--bind", "[::1]:0", "--allow", "coap://h/with/path"])
    assert status == ExitStatus.USAGE
    assert "allow pattern" in capsys.readouterr().err
