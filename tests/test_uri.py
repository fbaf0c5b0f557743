"""Tests for coap_trio.uri and Message's URI conveniences (RFC 7252 §6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio import GET, InvalidURIError, LocalProtocolError, Message, Origin
from coap_trio.numbers import DEFAULT_PORTS
from coap_trio.options import Options
from coap_trio.uri import build_uri, is_ip_literal, split_uri

# --- §6.4 decomposition -------------------------------------------------------------


def test_well_known_core() -> None:
    origin, host, path, query = split_uri("coap://example.net/.well-known/core")
    assert origin == Origin("coap", "example.net", 5683)
    assert host == "example.net"
    assert path == [".well-known", "core"]
    assert query == []
    message = Message(code=GET, uri="coap://example.net/.well-known/core")
    assert message.opt.uri_host == "example.net"
    assert message.opt.uri_path == (".well-known", "core")
    assert message.opt.uri_port is None  # the destination port is the URI's
    assert message.opt.uri_query == ()
    assert message.remote == origin


def test_rfc7252_internationalized_example() -> None:
    uri = "coap://xn--18j4d.example/%E3%81%93%E3%82%93%E3%81%AB%E3%81%A1%E3%81%AF"
    message = Message(code=GET, uri=uri)
    assert message.opt.uri_host == "xn--18j4d.example"
    assert message.opt.uri_path == ("\u3053\u3093\u306b\u3061\u306f",)  # "こんにちは"
    assert message.get_request_uri() == uri


@pytest.mark.parametrize(
    "uri",
    [
        "coap://example.com:5683/~sensors/temp.xml",
        "coap://EXAMPLE.com/%7Esensors/temp.xml",
        "coap://EXAMPLE.com:/%7esensors/temp.xml",
    ],
)
def test_rfc7252_equivalent_uris(uri: str) -> None:
    # §6.3: these three URIs are equivalent and give the same options.
    message = Message(code=GET, uri=uri)
    assert message.remote == Origin("coap", "example.com", 5683)
    assert message.opt.uri_host == "example.com"
    assert message.opt.uri_path == ("~sensors", "temp.xml")
    assert message.get_request_uri() == "coap://example.com/~sensors/temp.xml"


@pytest.mark.parametrize(
    ("uri", "host", "port"),
    [
        ("coap://192.0.2.1/x", "192.0.2.1", 5683),
        ("coap://192.0.2.1:61616/x", "192.0.2.1", 61616),
        ("coap://[2001:db8::1]/x", "2001:db8::1", 5683),
        ("coap://[2001:db8::1]:61616/x", "2001:db8::1", 61616),
        ("coap://[fe80::1%25eth0]/x", "fe80::1%eth0", 5683),
        ("coaps://[::1]:/x", "::1", 5684),
    ],
)
def test_ip_literals_give_no_uri_host(uri: str, host: str, port: int) -> None:
    origin, uri_host, path, _ = split_uri(uri)
    assert uri_host is None
    assert origin.host == host
    assert origin.port == port
    assert path == ["x"]
    message = Message(code=GET, uri=uri)
    assert message.opt.uri_host is None
    assert Message(code=GET, uri=message.get_request_uri()) == message


def test_ipv6_zone_round_trips() -> None:
    message = Message(code=GET, uri="coap://[fe80::1%25eth0]:1234/x")
    assert message.get_request_uri() == "coap://[fe80::1%25eth0]:1234/x"
    assert Origin("coap", "fe80::1%eth0", 5683).uri_base == "coap://[fe80::1%25eth0]"


def test_is_ip_literal() -> None:
    assert is_ip_literal("192.0.2.1")
    assert is_ip_literal("2001:db8::1")
    assert is_ip_literal("fe80::1%eth0")
    assert not is_ip_literal("example.net")
    assert not is_ip_literal("192.0.2")
    assert not is_ip_literal("[::1]")


def test_host_names_are_lower_cased() -> None:
    message = Message(code=GET, uri="COAP://Example.NET/Path")
    assert message.opt.uri_host == "example.net"
    assert message.remote == Origin("coap", "example.net", 5683)
    assert message.opt.uri_path == ("Path",)  # the path keeps its case


def test_host_is_lower_cased_before_percent_decoding() -> None:
    # §6.4 step 5: "converted to ASCII lowercase, and then all percent-encodings
    # replaced", so a decoded non-ASCII name keeps its bytes.
    _, host, _, _ = split_uri("coap://%C3%9C.Example/")
    assert host == "\u00dc.example"
    message = Message(code=GET, uri_host="\u00dc.example", remote=Origin("coap", "::1", 5683))
    uri = message.get_request_uri()
    assert uri == "coap://%C3%9C.example/"
    assert Message(code=GET, uri=uri).opt.uri_host == "\u00dc.example"


@pytest.mark.parametrize(
    ("scheme", "port"),
    [
        ("coap", 5683),
        ("coaps", 5684),
        ("coap+tcp", 5683),
        ("coaps+tcp", 5684),
        ("coap+ws", 80),
        ("coaps+ws", 443),
    ],
)
def test_default_ports_per_scheme(scheme: str, port: int) -> None:
    origin, _, _, _ = split_uri(f"{scheme}://example.net/x")
    assert origin == Origin(scheme, "example.net", port)
    assert origin.hostinfo == "example.net"
    assert origin.uri_base == f"{scheme}://example.net"
    explicit, _, _, _ = split_uri(f"{scheme.upper()}://example.net:{port}/x")
    assert explicit == origin
    message = Message(code=GET, uri=f"{scheme}://example.net:{port}/x")
    assert message.get_request_uri() == f"{scheme}://example.net/x"  # default port omitted


@pytest.mark.parametrize("scheme", sorted(DEFAULT_PORTS))
def test_explicit_ports(scheme: str) -> None:
    origin, _, _, _ = split_uri(f"{scheme}://example.net:61616/x")
    assert origin.port == 61616
    assert origin.hostinfo == "example.net:61616"
    message = Message(code=GET, uri=f"{scheme}://example.net:61616/x")
    assert message.opt.uri_port is None
    assert message.get_request_uri() == f"{scheme}://example.net:61616/x"


def test_port_zero_and_leading_zeros() -> None:
    assert split_uri("coap://h:0/")[0].port == 0
    assert split_uri("coap://h:05683/")[0].port == 5683


@pytest.mark.parametrize(
    "uri", ["coap://example.net", "coap://example.net/", "coap://example.net?", "coap://h:1/"]
)
def test_empty_and_root_paths_give_no_uri_path(uri: str) -> None:
    _, _, path, query = split_uri(uri)
    assert path == []
    assert query == []
    assert Message(code=GET, uri=uri).opt.uri_path == ()


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("coap://h/a/", ["a", ""]),
        ("coap://h/a/b/", ["a", "b", ""]),
        ("coap://h//", ["", ""]),
        ("coap://h//a", ["", "a"]),
        ("coap://h/a//b", ["a", "", "b"]),
    ],
)
def test_trailing_slash_and_empty_segments(uri: str, path: list[str]) -> None:
    assert split_uri(uri)[2] == path
    message = Message(code=GET, uri=uri)
    assert message.get_request_uri() == uri


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("coap://h/a/./b", ["a", "b"]),
        ("coap://h/a/../b", ["b"]),
        ("coap://h/a/b/c/./../../g", ["a", "g"]),
        ("coap://h/a/.", ["a", ""]),
        ("coap://h/a/..", []),
        ("coap://h/..", []),
        ("coap://h/../../a", ["a"]),
        ("coap://h/./a", ["a"]),
        ("coap://h/a/..b/.c", ["a", "..b", ".c"]),
        ("coap://h/%2E/%2E%2E", [".", ".."]),  # encoded dots are not dot-segments
    ],
)
def test_dot_segments_are_removed(uri: str, path: list[str]) -> None:
    assert split_uri(uri)[2] == path


@pytest.mark.parametrize(
    ("uri", "query"),
    [
        ("coap://h/?a&&b", ["a", "", "b"]),
        ("coap://h/?&", ["", ""]),
        ("coap://h/?a=1&b=2", ["a=1", "b=2"]),
        ("coap://h/?a=b=c", ["a=b=c"]),
        ("coap://h/?x/y?z", ["x/y?z"]),
        ("coap://h/?%26&%3D", ["&", "="]),
        ("coap://h?x", ["x"]),
    ],
)
def test_query_arguments(uri: str, query: list[str]) -> None:
    assert split_uri(uri)[3] == query


def test_percent_decoding_of_path_and_query() -> None:
    _, _, path, query = split_uri("coap://h/a%2Fb/%20/%25/%C3%BC?k%3Dv=%26&%E2%82%AC")
    assert path == ["a/b", " ", "%", "\u00fc"]
    assert query == ["k=v=&", "\u20ac"]


@pytest.mark.parametrize(
    ("segment", "encoded"),
    [
        ("a b", "a%20b"),
        ("a/b", "a%2Fb"),
        ("a?b", "a%3Fb"),
        ("a#b", "a%23b"),
        ("100%", "100%25"),
        ("\u00fc", "%C3%BC"),
        ("[x]", "%5Bx%5D"),
        ("a:b@c!$&'()*+,;=", "a:b@c!$&'()*+,;="),  # pchar stays as it is
        ("-._~", "-._~"),
        (".", "%2E"),  # would otherwise be removed as a dot-segment
        ("..", "%2E%2E"),
        ("...", "..."),
    ],
)
def test_percent_encoding_of_path_segments(segment: str, encoded: str) -> None:
    message = Message(code=GET, uri_path=(segment,), remote=Origin("coap", "192.0.2.1", 5683))
    uri = message.get_request_uri()
    assert uri == f"coap://192.0.2.1/{encoded}"
    assert Message(code=GET, uri=uri).opt.uri_path == (segment,)


@pytest.mark.parametrize(
    ("argument", "encoded"),
    [
        ("a&b", "a%26b"),  # "&" separates arguments, so it is encoded inside one
        ("a=b", "a=b"),
        ("x/y?z", "x/y?z"),
        ("a b", "a%20b"),
        ("#", "%23"),
        ("%", "%25"),
        ("\u20ac", "%E2%82%AC"),
    ],
)
def test_percent_encoding_of_query_arguments(argument: str, encoded: str) -> None:
    message = Message(code=GET, uri_query=(argument, "z"), remote=Origin("coap", "192.0.2.1", 5683))
    uri = message.get_request_uri()
    assert uri == f"coap://192.0.2.1/?{encoded}&z"
    assert Message(code=GET, uri=uri).opt.uri_query == (argument, "z")


@pytest.mark.parametrize(
    "uri",
    [
        "/relative/path",
        "relative",
        "//example.net/x",
        "",
        "coap:/x",  # no authority
        "coap:x",
        "coap://",  # no host
        "coap://:5683/",
        "http://example.net/",
        "mailto:someone@example.net",
        "coap+udp://example.net/",
        "coap://example.net/#frag",
        "coap://example.net/x#",
        "coap://user@example.net/",
        "coap://user:pw@example.net/",
        "coap://example.net/%zz",
        "coap://example.net/%4",
        "coap://example.net/%",
        "coap://example.net/%C3",  # not UTF-8 once decoded
        "coap://example.net/?q=%G0",
        "coap://ex%ZZample.net/",
        "coap://exa mple.net/",
        "coap://example.net:abc/",
        "coap://example.net:65536/",
        "coap://example.net:-1/",
        "coap://example.net:+1/",
        "coap://example.net:1:2/",
        "coap://[::1/",
        "coap://[::1]x/",
        "coap://[192.0.2.1]/",
        "coap://[not-an-address]/",
    ],
)
def test_invalid_uris(uri: str) -> None:
    with pytest.raises(InvalidURIError):
        split_uri(uri)
    with pytest.raises(InvalidURIError):
        Message(code=GET, uri=uri)
    assert issubclass(InvalidURIError, LocalProtocolError)
    assert issubclass(InvalidURIError, ValueError)


# --- §6.5 composition --------------------------------------------------------------


def test_build_uri_from_options_and_remote() -> None:
    opt = Options()
    opt.uri_path = ("a", "b")
    opt.uri_query = ("x=1",)
    assert build_uri(opt, Origin("coap", "192.0.2.1", 5683)) == "coap://192.0.2.1/a/b?x=1"
    assert build_uri(opt, Origin("coaps", "2001:db8::1", 1)) == "coaps://[2001:db8::1]:1/a/b?x=1"
    opt.uri_host = "example.net"
    opt.uri_port = 61616
    assert build_uri(opt, Origin("coap", "192.0.2.1", 5683)) == ("coap://example.net:61616/a/b?x=1")


def test_build_uri_without_a_path_is_the_root() -> None:
    assert build_uri(Options(), Origin("coap", "192.0.2.1", 5683)) == "coap://192.0.2.1/"


def test_build_uri_without_remote() -> None:
    opt = Options()
    opt.uri_host = "example.net"
    assert build_uri(opt, None) == "coap://example.net/"
    opt.uri_port = 5684
    assert build_uri(opt, None) == "coap://example.net:5684/"
    with pytest.raises(InvalidURIError):
        build_uri(Options(), None)
    with pytest.raises(InvalidURIError):
        Message(code=GET).get_request_uri()


def test_remote_that_is_not_remote_like_is_an_error() -> None:
    message = Message(code=GET, uri_host="h", remote=("192.0.2.1", 5683))
    with pytest.raises(InvalidURIError):
        message.get_request_uri()


def test_uri_port_is_shown_only_when_not_the_default() -> None:
    message = Message(code=GET, uri_port=5683, remote=Origin("coap", "192.0.2.1", 5683))
    assert message.get_request_uri() == "coap://192.0.2.1/"


def test_set_request_uri_replaces_previous_uri_options() -> None:
    message = Message(code=GET, uri="coap://a.example:1/x/y?q")
    message.opt.uri_port = 9
    message.set_request_uri("coap://192.0.2.1/z")
    assert message.opt.uri_host is None
    assert message.opt.uri_port is None
    assert message.opt.uri_path == ("z",)
    assert message.opt.uri_query == ()
    assert message.remote == Origin("coap", "192.0.2.1", 5683)


def test_set_request_uri_keeps_other_options() -> None:
    message = Message(code=GET, observe=0, uri="coap://h/a")
    message.set_request_uri("coap://h/b")
    assert message.opt.observe == 0
    assert message.opt.uri_path == ("b",)


@pytest.mark.parametrize(
    ("uri", "proxy", "error"),
    [
        ("coap://h/#fragment", None, InvalidURIError),
        ("coap://other.example/" + "x" * 256, None, ValueError),  # Uri-Path over 255 bytes
        ("coap://h/#fragment", "coap://proxy.example", InvalidURIError),
        ("coap://h/ok", "coap://proxy.example/#x", InvalidURIError),
        ("coap://h/" + "x" * 1100, "coap://proxy.example", ValueError),  # Proxy-Uri too long
    ],
)
def test_refused_uri_leaves_the_message_unchanged(
    uri: str, proxy: str | None, error: type[Exception]
) -> None:
    message = Message(code=GET, uri="coap://example.net/a?b", observe=0)
    before = message.copy()
    options = message.opt
    with pytest.raises(error):
        message.set_request_uri(uri, proxy=proxy)
    assert message == before
    assert message.opt is options


# --- round trips ---------------------------------------------------------------------

_SEGMENTS = st.lists(st.text(max_size=16), max_size=5)
_ARGUMENTS = st.lists(st.text(max_size=16), max_size=5)


def _normalized(values: list[str]) -> tuple[str, ...]:
    # §6.5 writes a single empty Uri-Path as "/" and a single empty Uri-Query
    # as "?"; §6.4 reads both back as no option at all: the URI cannot tell.
    return () if values == [""] else tuple(values)


@settings(deadline=None, max_examples=200)
@given(path=_SEGMENTS, query=_ARGUMENTS, host=st.sampled_from([None, "example.net"]))
def test_options_to_uri_to_options_round_trip(
    path: list[str], query: list[str], host: str | None
) -> None:
    remote = Origin("coap", "192.0.2.1", 5683)
    message = Message(code=GET, uri_host=host, uri_path=path, uri_query=query, remote=remote)
    uri = message.get_request_uri()
    again = Message(code=GET, uri=uri)
    assert again.opt.uri_host == host
    assert again.opt.uri_path == _normalized(path)
    assert again.opt.uri_query == _normalized(query)
    assert again.opt.uri_port is None
    expected = Message(
        code=GET, uri_host=host, uri_path=_normalized(path), uri_query=_normalized(query)
    )
    assert again.opt == expected.opt
    assert again.get_request_uri() == (uri.removesuffix("?") if query == [""] else uri)


@settings(deadline=None, max_examples=100)
@given(
    scheme=st.sampled_from(sorted(DEFAULT_PORTS)),
    host=st.sampled_from(["example.net", "192.0.2.1", "2001:db8::1", "fe80::1%eth0"]),
    port=st.integers(min_value=0, max_value=0xFFFF),
    path=_SEGMENTS,
    query=_ARGUMENTS,
)
def test_uri_to_options_to_uri_is_stable(
    scheme: str, host: str, port: int, path: list[str], query: list[str]
) -> None:
    first = Message(code=GET, uri_path=path, uri_query=query, remote=Origin(scheme, host, port))
    uri = first.get_request_uri()
    second = Message(code=GET, uri=uri)
    assert second.remote == Origin(scheme, host, port)
    if query == [""]:
        # "...?" reads back as no query at all, so the next URI drops the "?".
        assert second.get_request_uri() + "?" == uri
    else:
        assert second.get_request_uri() == uri
    third = Message(code=GET, uri=second.get_request_uri())
    assert third == second
    assert third.get_request_uri() == second.get_request_uri()


@pytest.mark.parametrize(
    ("uri", "canonical"),
    [
        ("COAP://Example.NET:5683/a/./b/../c?x", "coap://example.net/a/c?x"),
        ("coap://h/%7e/%41", "coap://h/~/A"),
        ("coap://h/a%2fb", "coap://h/a%2Fb"),
        ("coap://h/?", "coap://h/"),
        ("coap://h", "coap://h/"),
        ("coaps+ws://h:443/x/", "coaps+ws://h/x/"),
        ("coap://h/a?b&&c", "coap://h/a?b&&c"),
        ("coap://h/%2E%2E/a", "coap://h/%2E%2E/a"),
    ],
)
def test_messy_uris_settle_on_a_canonical_form(uri: str, canonical: str) -> None:
    first = Message(code=GET, uri=uri).get_request_uri()
    assert first == canonical
    assert Message(code=GET, uri=first).get_request_uri() == first


# --- forward proxies (§5.10.2, §6.5 step 1) --------------------------------------------


def test_request_through_a_proxy() -> None:
    message = Message(code=GET)
    target = "coap://example.net/sensors/temp?unit=C"
    message.set_request_uri(target, proxy="coap://proxy.example:5683")
    assert message.remote == Origin("coap", "proxy.example", 5683)
    assert message.opt.proxy_uri == target
    assert message.opt.uri_host is None
    assert message.opt.uri_path == ()
    assert message.opt.uri_query == ()
    assert message.get_request_uri() == target


def test_proxy_with_another_scheme_and_port() -> None:
    message = Message(code=GET)
    message.set_request_uri("coaps://example.net/x", proxy="coap+tcp://[2001:db8::2]:61616")
    assert message.remote == Origin("coap+tcp", "2001:db8::2", 61616)
    assert message.opt.proxy_uri == "coaps://example.net/x"


def test_proxy_replaces_earlier_uri_options_and_back() -> None:
    message = Message(code=GET, uri="coap://example.net/a?b")
    message.set_request_uri("coap://other.example/c", proxy="coap://proxy.example")
    assert message.opt.uri_host is None
    assert message.opt.uri_path == ()
    assert message.opt.uri_query == ()
    assert message.opt.proxy_uri == "coap://other.example/c"
    message.set_request_uri("coap://example.net/d")
    assert message.opt.proxy_uri is None
    assert message.opt.uri_path == ("d",)
    assert message.remote == Origin("coap", "example.net", 5683)


@pytest.mark.parametrize(
    ("target", "proxy"),
    [
        ("coap://example.net/#frag", "coap://proxy.example"),
        ("/relative", "coap://proxy.example"),
        ("coap://example.net/", "http://proxy.example"),
        ("coap://example.net/", "coap://proxy.example/#x"),
    ],
)
def test_proxy_errors(target: str, proxy: str) -> None:
    message = Message(code=GET)
    with pytest.raises(InvalidURIError):
        message.set_request_uri(target, proxy=proxy)


def test_proxy_uri_wins_over_everything_else() -> None:
    message = Message(
        code=GET,
        proxy_uri="coap://target.example/x",
        uri_path=("ignored",),
        remote=Origin("coap", "proxy.example", 5683),
    )
    assert message.get_request_uri() == "coap://target.example/x"
    # A request as a proxy receives it, without a remote to fall back on.
    assert Message(code=GET, proxy_uri="coap://t.example/").get_request_uri() == (
        "coap://t.example/"
    )


def test_proxy_scheme_is_honoured() -> None:
    # §6.5 step 3: the scheme comes from Proxy-Scheme; the host and port from
    # Uri-Host / Uri-Port or else the (proxy's) destination address.
    proxy = Origin("coap", "192.0.2.1", 5683)
    message = Message(
        code=GET,
        proxy_scheme="coap+tcp",
        uri_host="example.net",
        uri_path=("x",),
        remote=proxy,
    )
    assert message.get_request_uri() == "coap+tcp://example.net/x"
    message.opt.proxy_scheme = "coaps"
    assert message.get_request_uri() == "coaps://example.net:5683/x"
    message.opt.uri_port = 5684
    assert message.get_request_uri() == "coaps://example.net/x"
    message.opt.proxy_scheme = None
    assert message.get_request_uri() == "coap://example.net:5684/x"


def test_cross_proxy_accepts_any_absolute_proxy_uri() -> None:
    message = Message(code=GET)
    message.set_request_uri("http://example.com/x?y=1", proxy="coap://[::1]:5700")
    assert message.opt.proxy_uri == "http://example.com/x?y=1"
    assert message.remote == Origin("coap", "::1", 5700)
    assert message.get_request_uri() == "http://example.com/x?y=1"


@pytest.mark.parametrize("bad", ["nope", "/relative", "http://example.com/#frag"])
def test_cross_proxy_refuses_non_absolute_proxy_uri(bad: str) -> None:
    message = Message(code=GET, uri="coap://[::1]/kept")
    with pytest.raises(InvalidURIError):
        message.set_request_uri(bad, proxy="coap://[::1]:5700")
    assert message.opt.uri_path == ("kept",)


@pytest.mark.parametrize(
    ("path", "query", "uri"),
    [
        ([""], [], "coap://192.0.2.1/"),
        ([], [""], "coap://192.0.2.1/?"),
        ([""], [""], "coap://192.0.2.1/?"),
    ],
)
def test_a_lone_empty_path_or_query_option_is_lost_in_a_round_trip(
    path: list[str], query: list[str], uri: str
) -> None:
    # §6.5 builds "/" for one empty Uri-Path and "?" for one empty Uri-Query;
    # §6.4 makes no option of either. Two empty ones do come back.
    origin = Origin("coap", "192.0.2.1", 5683)
    options = Options()
    options.uri_path = path
    options.uri_query = query
    built = build_uri(options, origin)
    assert built == uri
    assert split_uri(built)[2:] == ([], [])
    options.uri_path = [*path, *path]
    options.uri_query = [*query, *query]
    assert split_uri(build_uri(options, origin))[2:] == ([*path, *path], [*query, *query])
