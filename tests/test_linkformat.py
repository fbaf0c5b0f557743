"""Tests for coap_trio.linkformat (RFC 6690 CoRE Link Format)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio import linkformat
from coap_trio.linkformat import Link, LinkFormatError, filter_links, matches, parse, serialize

# --- RFC 6690 §5 and real-world vectors --------------------------------------

RFC_SENSORS_IF = '</sensors/temp>;if="sensor",</sensors/light>;if="sensor"'
RFC_SENSORS_RT = (
    '</sensors/temp>;rt="temperature-c";if="sensor",</sensors/light>;rt="light-lux";if="sensor"'
)
# As printed in RFC 6690 §5, with its line breaks (including one before ";").
RFC_ANCHORS = """</sensors>;ct=40;title="Sensor Index",
   </sensors/temp>;rt="temperature-c";if="sensor",
   </sensors/light>;rt="light-lux";if="sensor",
   <http://www.example.com/sensors/t123>;anchor="/sensors/temp"
   ;rel="describedby",
   </t>;anchor="/sensors/temp";rel="alternate"
"""
LIBCOAP = (
    '</>;title="General Info";ct=0,'
    '</time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs,'
    "</async>;ct=0"
)


def test_rfc_well_known_core_single_link() -> None:
    assert parse("</sensors>;ct=40") == [Link("/sensors", (("ct", "40"),))]


def test_rfc_interface_example() -> None:
    links = parse(RFC_SENSORS_IF)
    assert links == [
        Link("/sensors/temp", (("if", "sensor"),)),
        Link("/sensors/light", (("if", "sensor"),)),
    ]
    assert [link.if_ for link in links] == [("sensor",), ("sensor",)]
    assert serialize(links) == RFC_SENSORS_IF


def test_rfc_resource_type_example_and_filters() -> None:
    links = parse(RFC_SENSORS_RT)
    assert [link.rt for link in links] == [("temperature-c",), ("light-lux",)]
    assert serialize(links) == RFC_SENSORS_RT
    assert [link.target for link in filter_links(links, ["rt=temperature-c"])] == ["/sensors/temp"]
    assert [link.target for link in filter_links(links, ["rt=light-lux"])] == ["/sensors/light"]
    assert filter_links(links, ["href=/sensors/*"]) == links
    assert filter_links(links, ["href=/sensors/light"]) == links[1:]
    assert filter_links(links, ["rt=humidity"]) == []


def test_rfc_anchor_example() -> None:
    links = parse(RFC_ANCHORS)
    assert [link.target for link in links] == [
        "/sensors",
        "/sensors/temp",
        "/sensors/light",
        "http://www.example.com/sensors/t123",
        "/t",
    ]
    assert links[0].ct == (40,)
    assert links[0].title == "Sensor Index"
    assert links[3].anchor == "/sensors/temp"
    assert links[3].rel == ("describedby",)
    assert links[4].attributes == (("anchor", "/sensors/temp"), ("rel", "alternate"))
    described = filter_links(links, ["anchor=/sensors/temp", "rel=describedby"])
    assert [link.target for link in described] == ["http://www.example.com/sensors/t123"]
    assert parse(serialize(links)) == links


def test_rfc_sz_example() -> None:
    (link,) = parse('</firmware/v2.1>;rt="firmware";sz=262144')
    assert link.sz == 262144
    assert link.rt == ("firmware",)
    assert serialize([link]) == '</firmware/v2.1>;rt="firmware";sz=262144'


def test_ct_multiple_formats_in_one_quoted_value() -> None:
    (link,) = parse('</sensors/temp>;ct="0 41 60";obs')
    assert link.ct == (0, 41, 60)
    assert link.obs
    assert serialize([link]) == '</sensors/temp>;ct="0 41 60";obs'


def test_libcoap_discovery_payload() -> None:
    links = parse(LIBCOAP)
    assert [link.target for link in links] == ["/", "/time", "/async"]
    root, clock, async_ = links
    assert root.title == "General Info"
    assert root.ct == (0,)
    assert not root.obs
    assert clock.if_ == ("clock",)
    assert clock.rt == ("ticks",)
    assert clock.title == "Internal Clock"
    assert clock.obs
    assert clock.attributes[-1] == ("obs", None)
    assert async_.attributes == (("ct", "0"),)
    assert serialize(links) == LIBCOAP
    assert filter_links(links, ["obs"]) == [clock]


def test_whitespace_tolerated_around_separators() -> None:
    text = ' \t</a> ; rt = "x y" ;obs , \r\n</b>;ct= 0 ;title ="t" \n'
    assert parse(text) == [
        Link("/a", (("rt", "x y"), ("obs", None))),
        Link("/b", (("ct", "0"), ("title", "t"))),
    ]


def test_empty_and_blank_input() -> None:
    assert parse("") == []
    assert parse(" \r\n\t") == []
    assert serialize([]) == ""


def test_param_names_are_case_insensitive() -> None:
    (link,) = parse('</a>;RT="x";If=y;Obs')
    assert link.attributes == (("rt", "x"), ("if", "y"), ("obs", None))
    assert link.get("RT") == "x"
    assert Link("/a", (("RT", "x"),)) == Link("/a", (("rt", "x"),))


def test_quoted_string_escapes() -> None:
    (link,) = parse(r'</a>;title="say \"hi\" \\ \o";foo="a,b;c=d"')
    assert link.title == 'say "hi" \\ o'
    assert link.get("foo") == "a,b;c=d"
    assert parse(serialize([link])) == [link]


def test_ptoken_values_may_contain_angle_brackets_and_equals() -> None:
    (link,) = parse("</a>;x=<b>=c*;y")
    assert link.attributes == (("x", "<b>=c*"), ("y", None))


def test_ext_name_star_parameter() -> None:
    (link,) = parse("</a>;title*=UTF-8'de'n%c3%a4chstes")
    assert link.get("title*") == "UTF-8'de'n%c3%a4chstes"
    assert link.title is None


def test_empty_target_and_empty_quoted_value() -> None:
    assert parse('<>;foo=""') == [Link("", (("foo", ""),))]
    assert serialize([Link("", (("foo", ""),))]) == '<>;foo=""'


# --- Link properties and constructor ------------------------------------------


def test_multi_valued_properties_collect_all_params() -> None:
    link = Link("/a", (("rt", "a b"), ("rt", "c"), ("rt", None), ("rel", "x  y")))
    assert link.rt == ("a", "b", "c")
    assert link.rel == ("x", "y")
    assert link.if_ == ()
    assert link.get_all("rt") == ("a b", "c", None)
    assert link.get("missing") is None
    assert link.get_all("missing") == ()


def test_ct_ignores_non_numeric_values_and_sz_parses_numbers() -> None:
    link = Link("/a", (("ct", "0 text/plain 40"), ("ct", "²"), ("sz", "12")))
    assert link.ct == (0, 40)
    assert link.sz == 12
    assert Link("/a", (("sz", "big"),)).sz is None
    assert Link("/a", (("sz", None),)).sz is None
    assert Link("/a").sz is None
    assert Link("/a").title is None
    assert Link("/a").anchor is None


def test_build_orders_attributes() -> None:
    link = Link.build(
        "/s",
        extra=[("Foo", "bar"), ("baz", None)],
        obs=True,
        sz=10,
        ct=[0, 40],
        title="T",
        if_="sensor",
        rt=["temperature-c", "x"],
        rel="describedby",
        anchor="/c",
    )
    assert link.attributes == (
        ("anchor", "/c"),
        ("rel", "describedby"),
        ("rt", "temperature-c x"),
        ("if", "sensor"),
        ("title", "T"),
        ("ct", "0 40"),
        ("sz", "10"),
        ("obs", None),
        ("foo", "bar"),
        ("baz", None),
    )
    assert serialize([link]) == (
        '</s>;anchor="/c";rel="describedby";rt="temperature-c x";if="sensor";title="T";'
        'ct="0 40";sz=10;obs;foo=bar;baz'
    )


def test_build_minimal_and_single_ct() -> None:
    assert Link.build("/a") == Link("/a")
    assert Link.build("/a", ct=0, rt="r").attributes == (("rt", "r"), ("ct", "0"))
    assert serialize([Link.build("/a", ct=0)]) == "</a>;ct=0"


def test_build_rejects_out_of_range_numbers() -> None:
    with pytest.raises(ValueError, match="ct"):
        Link.build("/a", ct=70000)
    with pytest.raises(ValueError, match="ct"):
        Link.build("/a", ct=[-1])
    with pytest.raises(ValueError, match="sz"):
        Link.build("/a", sz=-5)


def test_link_rejects_unserialisable_target() -> None:
    for target in ["/a>b", "/a<b", "/a b", "/a\nb"]:
        with pytest.raises(LinkFormatError, match="target"):
            Link(target)


def test_link_rejects_invalid_param_name() -> None:
    for name in ["", "*", "a b", "a;b", "a=b", "ä"]:
        with pytest.raises(LinkFormatError, match="name"):
            Link("/a", ((name, "v"),))


# --- serialisation --------------------------------------------------------------


def test_serialize_quoting_rules() -> None:
    link = Link(
        "/a",
        (
            ("rt", "temperature-c"),
            ("if", "sensor"),
            ("ct", "40"),
            ("sz", "5"),
            ("foo", "bar"),
            ("sp", "two words"),
            ("q", 'a"b\\c'),
            ("empty", ""),
            ("comma", "a,b"),
        ),
    )
    assert serialize([link]) == (
        '</a>;rt="temperature-c";if="sensor";ct=40;sz=5;foo=bar;sp="two words";'
        'q="a\\"b\\\\c";empty="";comma="a,b"'
    )


def test_serialize_accepts_any_iterable() -> None:
    links = (Link(f"/{i}") for i in range(3))
    assert serialize(links) == "</0>,</1>,</2>"


# --- malformations --------------------------------------------------------------


def test_error_is_a_value_error_with_offset() -> None:
    with pytest.raises(ValueError, match="offset 0"):
        parse("/sensors")
    assert issubclass(LinkFormatError, ValueError)


def test_rejects_missing_opening_angle_bracket() -> None:
    with pytest.raises(LinkFormatError, match=r"expected '<'.*offset 0"):
        parse("/sensors;ct=0")


def test_rejects_unterminated_target() -> None:
    with pytest.raises(LinkFormatError, match=r"unterminated '<'.*offset 5"):
        parse("</a>,</sensors;ct=0")


def test_rejects_invalid_character_in_target() -> None:
    with pytest.raises(LinkFormatError, match="invalid character ' ' in link target at offset 3"):
        parse("</a b>")
    with pytest.raises(LinkFormatError, match="invalid character '<'"):
        parse("<</a>")


def test_rejects_unterminated_quoted_string() -> None:
    with pytest.raises(LinkFormatError, match="unterminated quoted-string at offset 11"):
        parse('</a>;title="foo')


def test_rejects_backslash_at_end_of_quoted_string() -> None:
    with pytest.raises(LinkFormatError, match="unterminated quoted-string"):
        parse('</a>;title="foo\\')
    with pytest.raises(LinkFormatError, match="unterminated quoted-string"):
        parse('</a>;title="foo\\"')


def test_rejects_empty_param_name() -> None:
    with pytest.raises(LinkFormatError, match=r"empty link-param name.*offset 5"):
        parse("</a>;=5")
    with pytest.raises(LinkFormatError, match=r"empty link-param name.*end of input"):
        parse("</a>;")
    with pytest.raises(LinkFormatError, match="empty link-param name"):
        parse("</a>;;ct=0")
    with pytest.raises(LinkFormatError, match="empty link-param name"):
        parse("</a>;*=x")


def test_rejects_invalid_param_name_character() -> None:
    with pytest.raises(LinkFormatError, match="empty link-param name"):
        parse('</a>;"rt"=x')


def test_rejects_missing_param_value() -> None:
    with pytest.raises(LinkFormatError, match=r"missing value for link-param 'ct' .*offset 8"):
        parse("</a>;ct=")
    with pytest.raises(LinkFormatError, match="missing value"):
        parse("</a>;ct=,</b>")
    with pytest.raises(LinkFormatError, match="missing value"):
        parse("</a>;ct=;obs")


def test_rejects_stray_characters_after_target() -> None:
    with pytest.raises(LinkFormatError, match="expected ',' or ';' but found 'x' at offset 4"):
        parse("</a>x")


def test_rejects_stray_characters_after_quoted_value() -> None:
    with pytest.raises(LinkFormatError, match="found 'y' at offset 14"):
        parse('</a>;title="x"y')


def test_rejects_unquoted_value_with_space() -> None:
    with pytest.raises(LinkFormatError, match="found '1'"):
        parse("</a>;ct=0 1")


def test_rejects_name_followed_by_stray_word() -> None:
    with pytest.raises(LinkFormatError, match="found 'b'"):
        parse("</a>;a b=1")


def test_rejects_trailing_comma() -> None:
    with pytest.raises(LinkFormatError, match=r"trailing ','.*offset 4"):
        parse("</a>,")
    with pytest.raises(LinkFormatError, match="trailing ','"):
        parse("</a>, \n")


def test_rejects_leading_and_doubled_comma() -> None:
    with pytest.raises(LinkFormatError, match=r"expected '<'.*offset 0"):
        parse(",</a>")
    with pytest.raises(LinkFormatError, match="expected '<' to start a link but found ','"):
        parse("</a>,,</b>")


# --- query filtering (RFC 6690 §4.1) ----------------------------------------------

FILTER_LINKS = [
    Link("/sensors/temp", (("rt", "temperature-c sensor"), ("if", "core.s"), ("ct", "0 40"))),
    Link("/sensors/light", (("rt", "light-lux"), ("if", "core.s"), ("obs", None))),
    Link("/actuators/led", (("rt", "light"), ("title", "Status LED"), ("ct", "0"))),
]


def _targets(queries: list[str]) -> list[str]:
    return [link.target for link in filter_links(FILTER_LINKS, queries)]


def test_filter_empty_query_list_matches_everything() -> None:
    assert filter_links(FILTER_LINKS, []) == FILTER_LINKS


def test_filter_exact_value() -> None:
    assert _targets(["rt=light"]) == ["/actuators/led"]
    assert _targets(["rt=light-lu"]) == []


def test_filter_prefix_wildcard() -> None:
    assert _targets(["rt=light*"]) == ["/sensors/light", "/actuators/led"]
    assert _targets(["rt=*"]) == ["/sensors/temp", "/sensors/light", "/actuators/led"]
    assert _targets(["title=Status*"]) == ["/actuators/led"]


def test_filter_multi_valued_attribute_matches_any_word() -> None:
    assert _targets(["rt=sensor"]) == ["/sensors/temp"]
    assert _targets(["ct=40"]) == ["/sensors/temp"]
    assert _targets(["ct=0"]) == ["/sensors/temp", "/actuators/led"]
    assert _targets(["rt=temperature-c sensor"]) == []


def test_filter_single_valued_attribute_needs_whole_value() -> None:
    assert _targets(["title=Status"]) == []
    assert _targets(["title=Status LED"]) == ["/actuators/led"]


def test_filter_href() -> None:
    assert _targets(["href=/sensors/light"]) == ["/sensors/light"]
    assert _targets(["href=/sensors/*"]) == ["/sensors/temp", "/sensors/light"]
    assert _targets(["href=/sensors"]) == []
    assert _targets(["href"]) == [link.target for link in FILTER_LINKS]


def test_filter_several_items_are_anded() -> None:
    assert _targets(["if=core.s", "rt=light*"]) == ["/sensors/light"]
    assert _targets(["href=/sensors/*", "ct=0"]) == ["/sensors/temp"]
    assert _targets(["rt=light", "rt=light-lux"]) == []


def test_filter_bare_name_means_has_parameter() -> None:
    assert _targets(["obs"]) == ["/sensors/light"]
    assert _targets(["title"]) == ["/actuators/led"]
    assert _targets(["sz"]) == []


def test_filter_bare_parameter_never_matches_a_value() -> None:
    assert _targets(["obs=*"]) == []
    assert _targets(["obs="]) == []


def test_filter_query_name_is_case_insensitive_value_is_not() -> None:
    assert _targets(["RT=light"]) == ["/actuators/led"]
    assert _targets(["rt=LIGHT"]) == []


def test_filter_empty_item_is_ignored() -> None:
    assert matches(FILTER_LINKS[0], "")
    assert not matches(FILTER_LINKS[0], "=x")


def test_filter_value_may_contain_equals() -> None:
    link = Link("/a", (("foo", "x=y"),))
    assert matches(link, "foo=x=y")
    assert matches(link, "foo=x=*")


def test_filter_links_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        filter_links(FILTER_LINKS, "rt=light")


# --- properties (hypothesis) ------------------------------------------------------

_TARGET_ALPHABET = string.ascii_letters + string.digits + "/:?#[]@!$&'()*+,;=-._~%\"\\éü€"
_VALUE_ALPHABET = string.ascii_letters + string.digits + " \"\\,;=<>*/.-_:?\t'é€"
_NAME_ALPHABET = string.ascii_letters + string.digits + "!#$&+-.^_`|~"

targets = st.text(_TARGET_ALPHABET, max_size=30)
names = st.one_of(
    st.sampled_from(["rt", "if", "ct", "sz", "obs", "title", "anchor", "rel", "rev", "href"]),
    st.builds(
        lambda base, star: base + star,
        st.text(_NAME_ALPHABET, min_size=1, max_size=8),
        st.sampled_from(["", "*"]),
    ),
)
values = st.one_of(
    st.none(),
    st.text(_VALUE_ALPHABET, max_size=20),
    st.text(max_size=10),
    st.integers(min_value=0, max_value=70000).map(str),
)
links_strategy = st.lists(
    st.builds(Link, targets, st.lists(st.tuples(names, values), max_size=6).map(tuple)),
    max_size=5,
)


@settings(deadline=None)
@given(links_strategy)
def test_round_trip(links: list[Link]) -> None:
    text = serialize(links)
    assert parse(text) == links
    assert serialize(parse(text)) == text


def _parse_or_error(text: str) -> None:
    try:
        links = parse(text)
    except LinkFormatError as exc:
        message = str(exc)
    else:
        assert parse(serialize(links)) == links
        return
    assert "offset" in message


@settings(deadline=None)
@given(st.text())
def test_parser_only_raises_link_format_error(text: str) -> None:
    _parse_or_error(text)


@settings(deadline=None)
@given(st.text('<>;,="\\ \t\n/a*=', max_size=40))
def test_parser_only_raises_link_format_error_on_link_like_text(text: str) -> None:
    _parse_or_error(text)


@settings(deadline=None)
@given(links_strategy, st.integers(min_value=0), st.text(max_size=3))
def test_parser_survives_corrupted_payloads(links: list[Link], where: int, junk: str) -> None:
    text = serialize(links)
    cut = where % (len(text) + 1)
    _parse_or_error(text[:cut] + junk + text[cut + 1 :])


@settings(deadline=None)
@given(links_strategy, st.lists(st.text(max_size=8), max_size=3))
def test_filter_is_and_of_matches(links: list[Link], queries: list[str]) -> None:
    expected = [link for link in links if all(matches(link, q) for q in queries)]
    assert filter_links(links, queries) == expected
    assert linkformat.filter_links(links, []) == links
