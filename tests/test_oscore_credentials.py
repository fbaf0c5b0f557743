"""OSCORE credentials files in aiocoap's JSON format (``--credentials``).

The files are made the way aiocoap's documentation shows (a credentials
file keyed by URI patterns pointing at security context directories with a
``settings.json``); the contexts read from them must equal aiocoap's own
reading of the same files, talk to each other, and share the sequence
numbers' file with aiocoap in both directions.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import aiocoap.credentials
import aiocoap.oscore
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap_trio import codec
from coap_trio.errors import CredentialsError
from coap_trio.message import Message
from coap_trio.numbers.codes import Code
from coap_trio.numbers.types import Type
from coap_trio.oscore_credentials import (
    CredentialReference,
    OscoreCredential,
    UnsupportedCredential,
    load_credentials,
    load_security_context,
    parse_credentials,
)
from coap_trio.oscore_storage import FileSequenceStore
from coap_trio.protocol.oscore import (
    A128GCM,
    OscoreEngine,
    RequestVerified,
    ResponseVerified,
)
from coap_trio.protocol.oscore.replay import WindowState

SECRET = "Correct Horse Battery Staple"


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def example_files(root: Path) -> tuple[Path, Path]:
    """A client and a server credentials file as in aiocoap's OSCORE guide."""
    write(
        root / "client1" / "settings.json",
        {"sender-id_hex": "01", "recipient-id_ascii": "", "secret_ascii": SECRET},
    )
    write(
        root / "server" / "settings.json",
        {"sender-id_ascii": "", "recipient-id_hex": "01", "secret_ascii": SECRET},
    )
    client = write(
        root / "client.json", {"coap://localhost/*": {"oscore": {"contextfile": "client1/"}}}
    )
    server = write(root / "server.json", {":client1": {"oscore": {"basedir": "server/"}}})
    return client, server


def test_the_example_files_give_contexts_that_talk_to_each_other(tmp_path: Path) -> None:
    client_file, server_file = example_files(tmp_path)
    client_map = load_credentials(client_file)
    server_map = load_credentials(server_file)
    client = client_map.for_uri("coap://localhost/sensors/temp")
    assert client is not None
    assert (client.sender_id, client.recipient_id) == (b"\x01", b"")
    assert client_map.for_uri("coap://example.com/") is None
    engine = OscoreEngine(server_map.contexts)
    outer, binding = OscoreEngine().protect_request(Message(code=Code.GET, uri_path=("t",)), client)
    result = engine.verify_request(codec.decode(codec.encode(outer.copy(mtype=Type.CON, mid=1))))
    assert isinstance(result, RequestVerified)
    response = engine.protect_response(Message(code=Code.CONTENT, payload=b"21"), result.binding)
    verified = OscoreEngine().verify_response(
        codec.decode(codec.encode(response.copy(mtype=Type.ACK, mid=1))), binding
    )
    assert isinstance(verified, ResponseVerified)
    assert (tmp_path / "client1" / "sequence.json").exists()  # numbers are persisted there


def aio_reading(data: dict[str, object], uri: str) -> Any:
    """aiocoap's own reading of the same credentials (in the working directory)."""
    credentials = aiocoap.credentials.CredentialsMap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "contextfile" is its old spelling
        credentials.load_from_dict(data)
    message = aiocoap.Message(code=aiocoap.GET)
    message.set_request_uri(uri)
    return credentials.credentials_from_request(message)


@pytest.mark.parametrize("algorithm", ["AES-CCM-16-64-128", "A128GCM", "ChaCha20/Poly1305"])
@pytest.mark.parametrize("with_context", [False, True])
def test_contexts_equal_aiocoaps_reading_of_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algorithm: str, with_context: bool
) -> None:
    monkeypatch.chdir(tmp_path)  # aiocoap takes directories from the working directory
    settings: dict[str, object] = {
        "sender-id_hex": "0a0b",
        "recipient-id_hex": "0c",
        "secret_hex": "0102030405060708090a0b0c0d0e0f10",
        "salt_hex": "9e7ca92223786340",
        "algorithm": algorithm,
        "window": 64,
    }
    if with_context:
        settings["id-context_hex"] = "37cbf3210017a2d3"
    write(tmp_path / "ctx" / "settings.json", settings)
    data: dict[str, object] = {"coap://h/*": {"oscore": {"basedir": "ctx/"}}}
    ours = parse_credentials(data, tmp_path).for_uri("coap://h/x")
    theirs = aio_reading(data, "coap://h/x")
    try:
        assert ours is not None
        assert ours.sender_key == theirs.sender_key
        assert ours.recipient_key == theirs.recipient_key
        assert ours.common_iv == theirs.common_iv
        assert ours.id_context == theirs.id_context
        assert ours.algorithm.name == algorithm
        assert ours.replay_window.size == 64
    finally:
        theirs._destroy()  # aiocoap's way to release its lock


def test_sequence_numbers_move_between_aiocoap_and_us_without_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both keep next-to-send in sequence.json: a directory can change hands safely."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "ctx" / "settings.json",
        {"sender-id_hex": "01", "recipient-id_hex": "02", "secret_ascii": SECRET},
    )
    theirs = aiocoap.oscore.FilesystemSecurityContext("ctx")
    for _ in range(30):
        theirs.new_sequence_number()
    used_by_them = theirs.sender_sequence_number
    theirs._destroy()
    ours = load_security_context(tmp_path / "ctx", persist_step=10)
    assert ours.sequence.next >= used_by_them
    assert ours.replay_window.state is WindowState.UNKNOWN  # not known after the hand-over
    last = max(ours.sequence.take() for _ in range(25))
    theirs = aiocoap.oscore.FilesystemSecurityContext("ctx")
    try:
        assert theirs.sender_sequence_number > last
    finally:
        theirs._destroy()


def test_longest_pattern_wins_and_references_are_followed(tmp_path: Path) -> None:
    for name, sender in (("a", "01"), ("b", "02")):
        write(
            tmp_path / name / "settings.json",
            {"sender-id_hex": sender, "recipient-id_hex": "09", "secret_ascii": SECRET},
        )
    data = {
        "coap://*": {"oscore": {"basedir": "a"}},
        "coap://special/*": ":b",
        ":b": {"oscore": {"contextfile": "b/"}},
        "coaps://*": {"dtls": {"psk": {"ascii": "x"}, "client-identity": {"ascii": "c"}}},
        "coap://gone/*": None,
        ":loop": ":loop2",
        ":loop2": ":loop",
        "coap://loop/*": ":loop",
    }
    credentials = parse_credentials(data, tmp_path)
    general = credentials.for_uri("coap://host/x")
    special = credentials.for_uri("coap://special/x")
    assert general is not None
    assert special is not None
    assert (general.sender_id, special.sender_id) == (b"\x01", b"\x02")
    assert credentials.for_uri("coaps://host/") is None
    assert isinstance(credentials.entries["coaps://*"], UnsupportedCredential)
    assert credentials.entries["coap://special/*"] == CredentialReference(":b")
    assert "coap://gone/*" not in credentials.entries
    with pytest.raises(CredentialsError, match="references"):
        credentials.for_uri("coap://loop/x")
    assert len(credentials.contexts) == 2


def test_entries_naming_one_directory_share_one_context(tmp_path: Path) -> None:
    """Two contexts for one directory would reuse nonces: there is one object."""
    write(
        tmp_path / "ctx" / "settings.json",
        {"sender-id_hex": "01", "recipient-id_hex": "02", "secret_ascii": SECRET},
    )
    data = {
        "coap://a/*": {"oscore": {"basedir": "ctx"}},
        "coap://b/*": {"oscore": {"basedir": "./ctx/"}},
    }
    credentials = parse_credentials(data, tmp_path)
    entries = [e for e in credentials.entries.values() if isinstance(e, OscoreCredential)]
    assert entries[0].context is entries[1].context
    assert credentials.contexts == [entries[0].context]


def test_secret_json_and_settings_json_are_merged(tmp_path: Path) -> None:
    write(tmp_path / "ctx" / "secret.json", {"secret_hex": "00112233", "salt_hex": "44"})
    write(
        tmp_path / "ctx" / "settings.json",
        {"sender-id_hex": "", "recipient-id_hex": "01", "algorithm": "A128GCM"},
    )
    context = load_security_context(tmp_path / "ctx")
    assert context.algorithm is A128GCM
    assert context.sequence.next == 0
    assert context.replay_window.state is WindowState.VALID  # a new context


@pytest.mark.parametrize(
    ("settings", "secret", "message"),
    [
        ({"recipient-id_hex": "01", "secret_ascii": "s"}, None, "sender-id"),
        ({"sender-id_hex": "", "secret_ascii": "s"}, None, "recipient-id"),
        ({"sender-id_hex": "", "recipient-id_hex": "01"}, None, "secret"),
        ({"sender-id_hex": "zz", "recipient-id_hex": "01", "secret_ascii": "s"}, None, "hex"),
        ({"sender-id": "01", "recipient-id_hex": "01", "secret_ascii": "s"}, None, "spelling"),
        ({"sender-id_hex": "", "recipient-id_hex": "01", "secret_ascii": "é"}, None, "ASCII"),
        (
            {"sender-id_hex": "", "recipient-id_hex": "01", "secret_ascii": "s", "colour": 1},
            None,
            "unknown",
        ),
        (
            {"sender-id_hex": "", "recipient-id_hex": "01", "secret_ascii": "s"},
            {"secret_hex": "00"},
            "more than once",
        ),
        (
            {"sender-id_hex": "", "recipient-id_hex": "01", "secret_ascii": "s", "algorithm": "x"},
            None,
            "unsupported",
        ),
        (
            {
                "sender-id_hex": "",
                "recipient-id_hex": "01",
                "secret_ascii": "s",
                "kdf-hashfun": "sha384",
            },
            None,
            "sha256",
        ),
        (
            {"sender-id_hex": "", "recipient-id_hex": "01", "secret_ascii": "s", "window": "32"},
            None,
            "window",
        ),
        (
            {"sender-id_hex": "0102030405060708", "recipient-id_hex": "01", "secret_ascii": "s"},
            None,
            "longer than",
        ),
        ("not an object", None, "object"),
    ],
)
def test_bad_context_directories_are_refused_with_a_reason(
    tmp_path: Path, settings: object, secret: object, message: str
) -> None:
    write(tmp_path / "ctx" / "settings.json", settings)
    if secret is not None:
        write(tmp_path / "ctx" / "secret.json", secret)
    with pytest.raises(CredentialsError, match=message):
        load_security_context(tmp_path / "ctx")


def test_a_directory_without_settings_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CredentialsError, match="neither"):
        load_security_context(tmp_path / "empty")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "top level"),
        ({"coap://*": "no-colon"}, "reference"),
        ({"coap://*": {"oscore": {}, "dtls": {}}}, "one key"),
        ({"coap://*": {"kerberos": {}}}, "unknown credential type"),
        ({"coap://*": {"oscore": "dir"}}, "object"),
        ({"coap://*": {"oscore": {"basedir": "a", "contextfile": "a"}}}, "one of"),
        ({"coap://*": {"oscore": {"basedir": 7}}}, "not a string"),
        ({"coap://*": {"oscore": {"basedir": "missing/"}}}, "neither"),
    ],
)
def test_bad_credentials_are_refused_with_a_reason(
    tmp_path: Path, data: object, message: str
) -> None:
    with pytest.raises(CredentialsError, match=message):
        parse_credentials(data, tmp_path)


def test_a_missing_or_broken_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="nothing"):
        load_credentials(tmp_path / "nothing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CredentialsError, match="not JSON"):
        load_credentials(tmp_path / "broken.json")


def test_relative_directories_can_be_taken_from_another_base(tmp_path: Path) -> None:
    write(
        tmp_path / "elsewhere" / "ctx" / "settings.json",
        {"sender-id_hex": "01", "recipient-id_hex": "02", "secret_ascii": SECRET},
    )
    file = write(tmp_path / "conf" / "creds.json", {"coap://*": {"oscore": {"basedir": "ctx"}}})
    with pytest.raises(CredentialsError):
        load_credentials(file)
    credentials = load_credentials(file, base=tmp_path / "elsewhere")
    assert credentials.for_uri("coap://x/") is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
entry_values = (
    json_values
    | st.builds(lambda d: {"oscore": {"basedir": d}}, st.sampled_from(["ctx", "nope", "."]))
    | st.sampled_from([":a", ":b", "coap://x"])
)


@settings(deadline=None, max_examples=300)
@given(
    data=st.dictionaries(
        st.sampled_from(["coap://*", ":a", ":b", "coap://x/*"]), entry_values, max_size=4
    )
    | json_values,
    uri=st.sampled_from(["coap://x/y", ":a", "coap://z"]),
)
def test_the_credentials_parser_raises_only_credentials_errors(
    tmp_path_factory: pytest.TempPathFactory, data: object, uri: str
) -> None:
    base = tmp_path_factory.getbasetemp() / "fuzz"
    if not (base / "ctx" / "settings.json").exists():
        write(
            base / "ctx" / "settings.json",
            {"sender-id_hex": "01", "recipient-id_hex": "02", "secret_ascii": SECRET},
        )
    try:
        credentials = parse_credentials(data, base)
        context = credentials.for_uri(uri)
    except CredentialsError:
        return
    assert context is None or context.sender_id == b"\x01"


@settings(deadline=None, max_examples=200)
@given(content=st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode()))
def test_the_sequence_file_reader_raises_only_credentials_errors(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "sequence-fuzz.json"
    path.write_bytes(content)
    try:
        value = FileSequenceStore(path).load()
    except CredentialsError:
        return
    assert isinstance(value, int)
    assert value >= 0
