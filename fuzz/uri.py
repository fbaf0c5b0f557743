"""Fuzz target: URIs to options and back (``coap_trio.uri``, RFC 7252 §6.4 and §6.5).

Two halves, chosen by the input's first byte:

* any text: ``split_uri`` and ``uri_options`` return or raise
  InvalidURIError, nothing else; a URI that splits is built again by
  ``build_uri`` from its options and destination, and that URI splits to
  the same destination, Uri-Host, path and query;
* any Uri-Host, Uri-Path and Uri-Query values (as a request could carry
  them): ``build_uri`` returns a URI (or raises InvalidURIError), and
  ``split_uri`` gives the same values back (path segments ``.`` and
  ``..``, which §5.10.1 forbids, excepted; a lone empty Uri-Path or
  Uri-Query is the URI's ``/`` or ``?``, which has none).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import atheris
from common import instrumented, main

with instrumented():
    from coap_trio.errors import InvalidURIError
    from coap_trio.options import Options
    from coap_trio.uri import Origin, build_uri, is_ip_literal, split_uri, uri_options

SCHEMES = ("coap", "coaps", "coap+tcp", "coaps+tcp", "coap+ws", "coaps+ws")


_ASCII_UPPER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def ascii_lower(text: str) -> str:
    """``text`` with A-Z in lower case (§6.4 step 5 lower-cases the ASCII host, no more)."""
    return text.translate(_ASCII_UPPER)


def options_for(uri_host: str | None, path: list[str], query: list[str]) -> Options:
    options = Options()
    if uri_host is not None:
        options.uri_host = uri_host
    if path:
        options.uri_path = path
    if query:
        options.uri_query = query
    return options


def split_and_rebuild(text: str) -> None:
    try:
        split = split_uri(text)
    except InvalidURIError:
        try:
            uri_options.__wrapped__(text)
        except InvalidURIError:
            return
        raise AssertionError("uri_options accepted what split_uri refused") from None
    origin, uri_host, path, query = split
    assert uri_options.__wrapped__(text)[0] == origin
    built = build_uri(options_for(uri_host, path, query), origin)
    assert split_uri(built) == split, (text, built)


def build_and_split(provider: atheris.FuzzedDataProvider) -> None:
    scheme = SCHEMES[provider.ConsumeIntInRange(0, len(SCHEMES) - 1)]
    port = provider.ConsumeIntInRange(0, 65535)
    host = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 40))
    path = [
        provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 12))
        for _ in range(provider.ConsumeIntInRange(0, 4))
    ]
    query = [
        provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 12))
        for _ in range(provider.ConsumeIntInRange(0, 3))
    ]
    if any(segment in (".", "..") for segment in path):
        return
    origin = Origin(scheme, "192.0.2.1", port)
    try:
        options = options_for(host or None, path, query)
    except ValueError:
        return  # a value longer than the option allows (documented)
    try:
        uri = build_uri(options, origin)
    except InvalidURIError:
        return
    try:
        back, uri_host, back_path, back_query = split_uri(uri)
    except InvalidURIError as error:
        if host and not is_ip_literal(host):
            return  # a Uri-Host that is no reg-name (e.g. with "@" or ":") has no URI
        raise AssertionError((uri, error)) from None
    assert (back.scheme, back.port) == (scheme, port), uri
    # One empty Uri-Path (or Uri-Query) is the URI "/" (or "?"), which has none.
    assert back_path == ([] if path == [""] else path), uri
    assert back_query == ([] if query == [""] else query), uri
    if host and not is_ip_literal(host):
        assert uri_host == ascii_lower(host), uri


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():
        split_and_rebuild(provider.ConsumeUnicodeNoSurrogates(len(data)))
    else:
        build_and_split(provider)


if __name__ == "__main__":
    main(test_one_input)
