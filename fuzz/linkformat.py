"""Fuzz target: the link-format parser (``coap_trio.linkformat``, RFC 6690).

``parse`` must return links or raise LinkFormatError and nothing else, for
any text; what it returns serializes to text that parses to the same links;
every accessor of a link answers, and ``filter_links`` with any query item
(the input's last line) neither raises nor keeps a link that ``matches``
rejects.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import atheris
from common import instrumented, main

with instrumented():
    from coap_trio.errors import LinkFormatError
    from coap_trio.linkformat import filter_links, matches, parse, serialize


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    query = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 24))
    text = provider.ConsumeUnicodeNoSurrogates(len(data))
    try:
        links = parse(text)
    except LinkFormatError:
        return
    again = parse(serialize(links))
    assert again == links, (text, links, again)
    for link in links:
        for name, _ in link.attributes:
            link.get(name)
            link.get_all(name)
        link.rt, link.if_, link.rel, link.ct, link.sz, link.obs, link.title, link.anchor  # noqa: B018
    kept = filter_links(links, [query])
    assert kept == [link for link in links if matches(link, query)]


if __name__ == "__main__":
    main(test_one_input)
