"""``edhoc-oscore`` entries of credentials files, and the diagnostic notation they are written in.

- :mod:`coap_trio.edn`: values round-trip through diagnostic notation
  written with comments and odd spacing (Hypothesis); any text gives a value
  or an :class:`~coap_trio.edn.EdnError` naming line and column, nothing else;
- the entries: each field read as aiocoap reads it, the client's and the
  server's EDHOC credentials made of them, and every bad entry a
  :class:`~coap_trio.errors.CredentialsError` of one line (a table of bad
  entries, and Hypothesis replacing any field with any value);
- the key files: CBOR or diagnostic notation, refused when others may read them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coap_trio import edn
from coap_trio.errors import CredentialsError
from coap_trio.oscore_credentials import (
    CredentialsMap,
    EdhocCredential,
    load_credentials,
    parse_credentials,
)
from coap_trio.protocol.oscore.edhoc import EdhocCredentials, ccs_credential

# -- diagnostic notation ------------------------------------------------------------------------


def write_edn(value: Any, spacing: str = " ") -> str:
    """``value`` in diagnostic notation (the test's own writer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + f",{spacing}".join(write_edn(v, spacing) for v in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{write_edn(k, spacing)}:{spacing}{write_edn(v, spacing)}" for k, v in value.items()
        )
        return "{" + spacing + f",{spacing}".join(items) + spacing + "}"
    raise TypeError(value)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
KEYS = st.integers(-100, 100) | st.text(max_size=8) | st.binary(max_size=4)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)
SPACING = st.sampled_from([" ", "", "\n  ", " / a comment / ", "  # a line comment\n"])


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(deadline=None, max_examples=300)
@given(VALUES, SPACING)
def test_values_round_trip_through_diagnostic_notation(value: Any, spacing: str) -> None:
    if isinstance(value, dict) and len({(type(k), k) for k in value}) != len(value):
        return  # (True and 1 are one key to Python)
    assert same(edn.loads(write_edn(value, spacing)), value)


@settings(deadline=None, max_examples=500)
@given(st.text(max_size=60) | st.text(alphabet="{}[]:,'\"h/#-0x1a b64_", max_size=40))
def test_any_text_is_a_value_or_an_edn_error(text: str) -> None:
    message = ""
    try:
        edn.loads(text)
    except edn.EdnError as error:
        message = str(error)
        assert message.startswith("line ")
    assert "\n" not in message


def test_the_spellings_a_credentials_file_uses() -> None:
    text = """
    / aiocoap-keygen prints credentials like this /
    {"coap://[::1]/*": {"edhoc-oscore": {
        "suite": 2, "method": 0x3,   # a hexadecimal integer
        "own_cred": {14: {2: "subject", 8: {1: {1: 2, 2: h'0A', -1: 1,
            -2: h'01 02  03', -3: b64'AQID'}}}},
        "use_combined_edhoc": false, "bytes": 'text as bytes', "nothing": null
    }}}
    """
    value = edn.loads(text)
    assert isinstance(value, dict)
    entry = value["coap://[::1]/*"]["edhoc-oscore"]
    key = entry["own_cred"][14][8][1]
    assert (entry["method"], key[2], key[-2], key[-3]) == (3, b"\n", b"\1\2\3", b"\1\2\3")
    assert (entry["use_combined_edhoc"], entry["bytes"], entry["nothing"]) == (
        False,
        b"text as bytes",
        None,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1, column 1: a data item is missing"),
        ("{1: 2", "line 1, column 6: expected ','"),
        ('{"a": 1,\n "a": 2}', "line 2, column 2: the map key 'a' is given twice"),
        ("h'0g'", "not hexadecimal"),
        ("1 2", "more than one data item"),
        ("24(h'01')", "line 1, column 1: tags are not supported"),
        ("[_ 1]", "indefinite lengths are not supported"),
        ("/ open", "a comment that is not closed"),
        ("undefined", "'undefined' is not supported here"),
        ("x'00'", "the string prefix 'x' is not supported"),
        ("[" * 100, "nested more than 64 deep"),
    ],
)
def test_bad_notation_says_where(text: str, message: str) -> None:
    with pytest.raises(edn.EdnError, match=message.replace("(", r"\(")):
        edn.loads(text)


# -- edhoc-oscore entries -----------------------------------------------------------------------

PRIVATE = bytes.fromhex("fb13adeb6518cee5f88417660841142e830a81fe334380a953406a1305e8706b")
PEER_PRIVATE = bytes.fromhex("72cc4761dbd4c78f758931aa589d348d1ef874a7e303ede2f140dcf3e6aa4aac")
OWN = cbor2.loads(ccs_credential(PRIVATE, b"\x0a", "client"))
PEER = cbor2.loads(ccs_credential(PEER_PRIVATE, b"\x0b", "server"))


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "suite": 2,
        "method": 3,
        "own_cred_style": "by-key-id",
        "own_cred": {14: OWN},
        "private_key": {1: 2, -1: 1, -4: PRIVATE},
        "peer_cred": {14: PEER},
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


def parse(body: Any, tmp_path: Path | None = None) -> EdhocCredential:
    found = parse_credentials(
        {"coap://host/*": {"edhoc-oscore": body}}, tmp_path or Path(".")
    ).entries["coap://host/*"]
    assert isinstance(found, EdhocCredential)
    return found


def test_an_entry_gives_the_clients_edhoc_credentials() -> None:
    read = parse(entry(use_combined_edhoc=False))
    client = read.initiator()
    assert client.private_key == PRIVATE
    assert client.credential == cbor2.dumps(OWN, canonical=True)
    assert client.peers == (cbor2.dumps(PEER, canonical=True),)
    assert (client.by_value, client.combined, client.accepts_any) == (False, False, False)
    credentials = CredentialsMap({"coap://host/*": read})
    assert credentials.security_for("coap://host/x") is read
    assert credentials.for_uri("coap://host/x") is None  # (no OSCORE context of its own)


def test_unauthenticated_credentials_make_a_key_and_accept_any_peer() -> None:
    read = parse(
        entry(
            own_cred={"unauthenticated": True},
            own_cred_style=...,
            private_key=...,
            peer_cred={"unauthenticated": True},
        )
    )
    client = read.initiator()
    assert client.by_value
    assert client.accepts_any
    assert len(client.private_key) == 32
    assert cbor2.loads(client.credential)[8][1][2] == b"?"


def test_a_servers_identities_trust_every_entrys_peer() -> None:
    data = {
        "coap://a/*": {"edhoc-oscore": entry(peer_cred=..., own_cred_style="by-value")},
        ":one": {"edhoc-oscore": {"suite": 2, "method": 3, "peer_cred": {14: PEER}}},
        ":two": {"edhoc-oscore": {"suite": 2, "method": 3, "peer_cred": {14: OWN}}},
    }
    identities = parse_credentials(data, Path(".")).edhoc_identities()
    assert list(identities) == ["coap://a/*"]
    server = identities["coap://a/*"]
    assert server.by_value
    assert set(server.peers) == {
        cbor2.dumps(PEER, canonical=True),
        cbor2.dumps(OWN, canonical=True),
    }
    assert not server.accepts_any
    data[":anyone"] = {
        "edhoc-oscore": {"suite": 2, "method": 3, "peer_cred": {"unauthenticated": True}}
    }
    assert parse_credentials(data, Path(".")).edhoc_identities()["coap://a/*"].accepts_any


def test_an_entry_without_a_peer_cannot_start_edhoc() -> None:
    with pytest.raises(CredentialsError, match="needs peer_cred"):
        parse(entry(peer_cred=...)).initiator()
    with pytest.raises(CredentialsError, match="without own_cred"):
        parse({"suite": 2, "method": 3, "peer_cred": {14: PEER}}).initiator()


BAD_ENTRIES = [
    ("not a map", "'edhoc-oscore' takes an object"),
    (entry(suite=...), "needs 'suite'"),
    (entry(suite=0), "cipher suite 0 is not supported"),
    (entry(suite="2"), "'suite' and 'method' are numbers"),
    (entry(method=0), "EDHOC method 0 is not supported"),
    (entry(colour="red"), "unknown edhoc-oscore field 'colour'"),
    (entry(own_cred_style="by-magic"), "'by-key-id' or 'by-value'"),
    (entry(private_key=...), "go together"),
    (entry(private_key_file="k"), "not both"),
    (entry(own_cred={"14": OWN}), "JSON cannot spell the integer key 14"),
    (entry(own_cred={14: "x"}), "the CCS of own_cred is not a map"),
    (entry(own_cred={14: {8: {}}}), "has no cnf COSE_Key"),
    (entry(peer_cred={14: {8: {1: {1: 1, -1: 1}}}}), "not an EC2 P-256 key"),
    (entry(peer_cred={14: {8: {1: {1: 2, -1: 1, -2: b"x"}}}}), "32-byte x"),
    (entry(peer_cred={"unauthenticated": False}), "takes only true"),
    (entry(private_key={1: 2, -1: 1, -4: b"short"}), "32-byte d"),
    (entry(private_key={1: 2, -1: 1, -4: PRIVATE, 5: 0}), "more than 1, -1 and -4"),
    (entry(private_key={1: 2, -1: 1, -4: bytes(32)}), "not a P-256 scalar"),
    (entry(private_key={1: 2, -1: 1, -4: PEER_PRIVATE}), "not the key of own_cred"),
    (entry(use_combined_edhoc="yes"), "true or false"),
    (
        entry(own_cred={14: cbor2.loads(ccs_credential(PRIVATE, b"", "x"))}),
        None,  # (a kid of zero bytes is a kid)
    ),
    (
        entry(own_cred={14: {8: {1: {k: v for k, v in OWN[8][1].items() if k != 2}}}}),
        "needs a kid",
    ),
    (
        entry(own_cred={"unauthenticated": True}, own_cred_style=..., private_key=...),
        None,
    ),
    (entry(own_cred={"unauthenticated": True}), "takes no key"),
]


@pytest.mark.parametrize(("body", "message"), BAD_ENTRIES)
def test_bad_entries_are_one_line_errors(body: Any, message: str | None) -> None:
    if message is None:
        parse(body)
        return
    with pytest.raises(CredentialsError) as raised:
        parse(body)
    text = str(raised.value)
    assert message in text
    assert text.startswith("credentials: entry 'coap://host/*': ")
    assert "\n" not in text


ANY_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-30, 30) | st.text(max_size=6) | st.binary(max_size=33),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.integers(-5, 15) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    [
        "suite",
        "method",
        "own_cred_style",
        "own_cred",
        "private_key",
        "private_key_file",
        "peer_cred",
        "use_combined_edhoc",
        "other",
    ]
)


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(FIELDS, ANY_JSONISH | st.just(...), max_size=4), ANY_JSONISH)
def test_any_field_with_any_value_parses_or_is_a_one_line_error(
    changes: dict[str, Any], whole: Any
) -> None:
    for body in (entry(**changes), whole):
        message = ""
        try:
            parse(body)
        except CredentialsError as error:
            message = str(error)
        assert "\n" not in message


# -- files --------------------------------------------------------------------------------------


def key_file(path: Path, content: bytes, mode: int = 0o600) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with open(descriptor, "wb") as file:
        file.write(content)
    os.chmod(path, mode)


@pytest.mark.parametrize("spelling", ["cbor", "edn"])
def test_a_diag_file_with_a_key_file(tmp_path: Path, spelling: str) -> None:
    cose_key = {1: 2, -1: 1, -4: PRIVATE}
    content = cbor2.dumps(cose_key) if spelling == "cbor" else write_edn(cose_key).encode()
    key_file(tmp_path / "client.cosekey", content)
    body = entry(private_key=..., private_key_file="client.cosekey")
    (tmp_path / "client.diag").write_text(
        "# credentials\n" + write_edn({"coap://host/*": {"edhoc-oscore": body}}, "\n  ")
    )
    read = load_credentials(tmp_path / "client.diag").security_for("coap://host/a")
    assert isinstance(read, EdhocCredential)
    assert read.private_key == PRIVATE


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    key_file(tmp_path / "k.cosekey", cbor2.dumps({1: 2, -1: 1, -4: PRIVATE}), mode=0o644)
    with pytest.raises(CredentialsError, match=r"group or others may access \(chmod 600\)"):
        parse(entry(private_key=..., private_key_file="k.cosekey"), tmp_path)


def test_a_key_file_that_is_neither_cbor_nor_notation(tmp_path: Path) -> None:
    key_file(tmp_path / "k.cosekey", b"\xa3\x01\x02 trailing")
    with pytest.raises(CredentialsError, match="neither CBOR nor diagnostic notation"):
        parse(entry(private_key=..., private_key_file="k.cosekey"), tmp_path)
    with pytest.raises(CredentialsError, match="No such file"):
        parse(entry(private_key=..., private_key_file="missing"), tmp_path)


def test_a_diag_file_that_is_not_notation(tmp_path: Path) -> None:
    (tmp_path / "bad.diag").write_text('{"coap://*": {"edhoc-oscore": {1: }}}')
    with pytest.raises(CredentialsError, match=r"bad.diag: not diagnostic notation \(line 1"):
        load_credentials(tmp_path / "bad.diag")


def test_edhoc_credentials_trust_on_first_use_is_explicit() -> None:
    peer = ccs_credential(PEER_PRIVATE, b"\x0b", "server")
    none = EdhocCredentials(PRIVATE, cbor2.dumps(OWN), (), trust_on_first_use=False)
    assert not none.accepts_any
    legacy = EdhocCredentials(PRIVATE, cbor2.dumps(OWN))
    assert legacy.accepts_any  # (no peers named: any peer by value, as before)
    assert EdhocCredentials(PRIVATE, cbor2.dumps(OWN), (peer,)).accepts_any is False
    by_value = cbor2.dumps({14: cbor2.loads(peer)})
    assert legacy.peer_credential(by_value) == peer
    with pytest.raises(Exception, match="not trusted"):
        none.peer_credential(by_value)
