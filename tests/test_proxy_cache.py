"""The proxy's response cache, sans-I/O: time is an argument, no sockets, no clock."""

from __future__ import annotations

import pytest

from coap_trio import CONTENT, FETCH, GET, POST, Code, ContentFormat, Message
from coap_trio.proxy.cache import DEFAULT_MAX_AGE, ResponseCache, cache_key

TARGET = "coap://[2001:db8::1]/sensors/temp"


def request(code: Code = GET, **options: object) -> Message:
    return Message(code=code, **options)  # type: ignore[arg-type]


def content(payload: bytes = b"21.5", **options: object) -> Message:
    return Message(code=CONTENT, payload=payload, **options)  # type: ignore[arg-type]


def key(message: Message, target: str = TARGET) -> object:
    return cache_key(message.code, target, message)


def test_a_stored_response_is_fresh_for_its_max_age() -> None:
    cache = ResponseCache()
    assert cache.store(key(request()), TARGET, GET, content(max_age=30), now=100.0)
    hit = cache.lookup(key(request()), now=110.4)
    assert hit is not None
    assert hit.fresh
    assert hit.max_age == 19  # what is left, rounded down
    assert hit.response.payload == b"21.5"
    assert cache.lookup(key(request()), now=130.0) is None  # stale, no ETag: dropped
    assert len(cache) == 0
    statistics = cache.statistics
    assert (statistics.hits, statistics.misses) == (1, 1)


def test_without_max_age_a_response_is_fresh_for_sixty_seconds() -> None:
    cache = ResponseCache()
    cache.store(key(request()), TARGET, GET, content(), now=0.0)
    hit = cache.lookup(key(request()), now=DEFAULT_MAX_AGE - 0.5)
    assert hit is not None
    assert hit.fresh
    assert cache.lookup(key(request()), now=DEFAULT_MAX_AGE + 0.5) is None


def test_a_stale_response_with_an_etag_is_kept_for_validation() -> None:
    cache = ResponseCache()
    cache.store(key(request()), TARGET, GET, content(max_age=0, etag=(b"e1",)), now=0.0)
    stale = cache.lookup(key(request()), now=1.0)
    assert stale is not None
    assert not stale.fresh
    assert stale.etag == b"e1"
    # A 2.03 with another ETag does not refresh it; one with its ETag does.
    other = Message(code=Code.VALID, etag=(b"e2",), max_age=5)
    assert cache.revalidated(key(request()), other, now=2.0) is None
    valid = Message(code=Code.VALID, etag=(b"e1",), max_age=5)
    refreshed = cache.revalidated(key(request()), valid, now=2.0)
    assert refreshed is not None
    assert refreshed.fresh
    assert refreshed.max_age == 5
    again = cache.lookup(key(request()), now=6.0)
    assert again is not None
    assert again.fresh
    assert again.response.opt.max_age == 5
    assert cache.statistics.revalidated == 1


@pytest.mark.parametrize(
    ("method", "response"),
    [
        (POST, content()),  # not a safe method
        (GET, Message(code=Code.CHANGED)),
        (GET, Message(code=Code.NOT_FOUND)),
        (GET, content(max_age=0)),  # neither fresh nor validatable
    ],
)
def test_what_is_not_stored(method: Code, response: Message) -> None:
    cache = ResponseCache()
    assert not cache.store(key(request(method)), TARGET, method, response, now=0.0)
    assert len(cache) == 0


def test_the_key_ignores_nocachekey_and_hop_by_hop_options() -> None:
    plain = key(request())
    assert key(request(size1=10)) == plain  # Size1 is NoCacheKey (RFC 7252 §5.4.6)
    assert key(request(etag=(b"x",))) == plain  # a validator, not a selector
    assert key(request(hop_limit=3)) == plain
    assert key(request(observe=0)) == plain
    assert key(request(no_response=2)) == plain
    assert key(request(uri_path=("other",))) == plain  # the target carries the URI
    assert key(request(accept=ContentFormat.JSON)) != plain
    assert key(request(), "coap://[2001:db8::1]/other") != plain
    assert key(request(POST)) != plain
    assert key(request(FETCH), TARGET) != key(Message(code=FETCH, payload=b"q"), TARGET)


def test_unknown_options_are_in_the_key_unless_nocachekey() -> None:
    with_unknown = request()
    with_unknown.opt.add(65000, b"a")  # elective, safe, cache key
    assert key(with_unknown) != key(request())
    no_cache_key = request()
    no_cache_key.opt.add(65020, b"a")  # 65020 & 0x1e == 0x1c: NoCacheKey
    assert key(no_cache_key) == key(request())


def test_a_change_marks_the_targets_responses_not_fresh() -> None:
    cache = ResponseCache()
    cache.store(key(request()), TARGET, GET, content(max_age=60), now=0.0)
    json = request(accept=ContentFormat.JSON)
    cache.store(key(json), TARGET, GET, content(b"{}", max_age=60, etag=(b"j",)), now=0.0)
    cache.store(key(request(), "coap://h/other"), "coap://h/other", GET, content(), now=0.0)
    cache.response_for_unsafe(TARGET, Message(code=Code.BAD_REQUEST))  # no change
    assert len(cache) == 3
    cache.response_for_unsafe(TARGET, Message(code=Code.CHANGED))
    assert cache.lookup(key(request()), now=1.0) is None
    kept = cache.lookup(key(json), now=1.0)
    assert kept is not None
    assert not kept.fresh  # kept to be validated
    other = cache.lookup(key(request(), "coap://h/other"), now=1.0)
    assert other is not None
    assert other.fresh


def test_least_recently_used_goes_first() -> None:
    cache = ResponseCache(max_entries=2)
    targets = [f"coap://h/{i}" for i in range(3)]
    cache.store(key(request(), targets[0]), targets[0], GET, content(), now=0.0)
    cache.store(key(request(), targets[1]), targets[1], GET, content(), now=0.0)
    assert cache.lookup(key(request(), targets[0]), now=1.0) is not None  # used: kept
    cache.store(key(request(), targets[2]), targets[2], GET, content(), now=1.0)
    assert cache.lookup(key(request(), targets[1]), now=1.0) is None
    assert cache.lookup(key(request(), targets[0]), now=1.0) is not None
    assert cache.statistics.evicted == 1


def test_a_response_too_large_for_the_cache_is_not_stored() -> None:
    cache = ResponseCache(max_entry_bytes=4096)
    assert cache.store(key(request()), TARGET, GET, content(b"small"), now=0.0)
    assert not cache.store(key(request()), TARGET, GET, content(b"x" * 5000), now=0.0)
    assert cache.lookup(key(request()), now=0.0) is None  # the old, smaller one is gone too
    assert cache.statistics.too_large == 1


def test_bounds_hold_under_100_000_distinct_uris() -> None:
    cache = ResponseCache(max_entries=1000, max_bytes=256 * 1024)
    peak_entries = peak_bytes = 0
    for i in range(100_000):
        target = f"coap://[2001:db8::1]/r/{i}?q={i * 7}"
        message = request()
        cache.store(key(message, target), target, GET, content(b"%d" % i * 3), now=i * 0.001)
        peak_entries = max(peak_entries, len(cache))
        peak_bytes = max(peak_bytes, cache.nbytes)
    assert peak_entries <= 1000
    assert peak_bytes <= 256 * 1024
    assert cache.statistics.evicted >= 100_000 - 1000
    last = "coap://[2001:db8::1]/r/99999?q=699993"
    assert cache.lookup(key(request(), last), now=100.0) is not None


def test_the_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ResponseCache(max_entries=0)
    cache = ResponseCache()
    cache.store(key(request()), TARGET, GET, content(), now=0.0)
    cache.clear()
    assert (len(cache), cache.nbytes) == (0, 0)
