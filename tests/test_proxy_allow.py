"""The allow-list of a forward proxy: patterns, matching, refusals."""

from __future__ import annotations

import pytest

from coap_trio.proxy.allow import AllowList, OriginPattern, target_origin


@pytest.mark.parametrize(
    ("patterns", "uri", "allowed"),
    [
        ([], "coap://[::1]/x", False),  # empty: refuses everything
        (["*"], "coap+tcp://example.com:9999/x", True),
        (["coap://[::1]"], "coap://[::1]:5684/x", True),  # no port: any port
        (["coap://[::1]:5683"], "coap://[::1]/x", True),  # the default port
        (["coap://[::1]:5683"], "coap://[::1]:5684/x", False),
        (["coap://[::1]:56*"], "coap://[::1]:5684/x", True),
        (["coap://127.0.0.1"], "coap+tcp://127.0.0.1/x", False),
        (["*://127.0.0.1"], "coap+tcp://127.0.0.1/x", True),
        (["coap://*.example.com"], "coap://Sensors.EXAMPLE.com/x", True),
        (["coap://*.example.com"], "coap://example.com.evil/x", False),
        (["http://127.0.0.1:8080"], "http://127.0.0.1:8080/a", True),
        (["coap://[::1]"], "coap://[::1/x", False),  # malformed: refused
    ],
)
def test_allow_list(patterns: list[str], uri: str, allowed: bool) -> None:
    assert AllowList(patterns).allows_uri(uri) is allowed


@pytest.mark.parametrize("text", ["coap://", "coap://h/path", "coap://[::1", "coap://h:port"])
def test_malformed_patterns_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="allow pattern"):
        OriginPattern.parse(text)


def test_patterns_read_back() -> None:
    assert str(OriginPattern.parse("[::1]:5683")) == "*://[::1]:5683"
    assert repr(AllowList(["coap://h"])) == "AllowList(['coap://h:*'])"
    assert not AllowList()
    assert target_origin("https://h.example/x") == ("https", "h.example", 443)
