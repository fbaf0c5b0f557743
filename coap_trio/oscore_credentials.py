"""OSCORE credentials files, in the format aiocoap's ``--credentials`` reads (JSON or EDN).

Owns reading a credentials file (entries keyed by URI patterns, ``*`` a
wildcard, ``:name`` references between entries, ``{"oscore": {"basedir":
"dir/"}}`` or aiocoap's older spelling ``"contextfile"``) and the security
context directories it names (``settings.json`` and ``secret.json`` with
``sender-id_hex``, ``recipient-id_hex``, ``secret_ascii`` or
``secret_hex``, ``salt_hex``, ``id-context_hex``, ``algorithm``,
``kdf-hashfun``, ``window``; the ``_hex`` / ``_ascii`` suffixes say how a
value is spelled) into :class:`~coap_trio.protocol.oscore.context.SecurityContext`
objects whose Sender Sequence Number lives in the directory's
``sequence.json`` (:class:`~coap_trio.oscore_storage.FileSequenceStore`,
aiocoap's format).

One directory is one security context: however many entries name it, they
share one object (two would reuse nonces). Relative directories are taken
from the credentials file's own directory (aiocoap takes them from the
working directory; both agree when it is the file's). Entries of other
kinds (``dtls``, ``tlscert``, ``any-of``, ``all-of``) are
kept as :class:`UnsupportedCredential`.

``edhoc-oscore`` entries (aiocoap's, RFC 9528 with RFC 9668) are read into
:class:`EdhocCredential`: ``suite`` (2), ``method`` (3), ``own_cred`` (a
``{14: CCS}`` map, or ``{"unauthenticated": true}`` for a key made at
load time and sent by value), ``own_cred_style`` (``"by-key-id"`` or
``"by-value"``), the private key as ``private_key`` (a COSE_Key map) or
``private_key_file`` (a COSE_Key in CBOR or diagnostic notation, readable
by its owner only), ``peer_cred`` (a ``{14: CCS}`` map, or
``{"unauthenticated": true}`` to accept any peer that sends its credential
by value) and ``use_combined_edhoc``. A client runs EDHOC with the entry of
a request's URI; a server answers EDHOC with the entry of its origin
(``coap://host:port/*``) that has its own credential, and trusts the
``peer_cred`` of every entry. Since JSON has no integer map keys, such
entries are written in diagnostic notation (EDN: a ``.diag`` or ``.edn``
file, as aiocoap's tools read them; :mod:`coap_trio.edn`). Must not know
about sockets, messages or trio.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from . import edn
from .errors import CredentialsError
from .oscore_storage import SEQUENCE_FILE_NAME, FileSequenceStore
from .protocol.oscore.algorithms import algorithm_by_name
from .protocol.oscore.context import SecurityContext
from .protocol.oscore.replay import DEFAULT_PERSIST_STEP, DEFAULT_WINDOW_SIZE

if TYPE_CHECKING:
    from .protocol.oscore.edhoc import EdhocCredentials

__all__ = [
    "CredentialReference",
    "CredentialsMap",
    "EdhocCredential",
    "OscoreCredential",
    "UnsupportedCredential",
    "load_credentials",
    "load_security_context",
    "parse_credentials",
]

#: How many references a lookup follows before it gives up (a cycle).
MAX_REFERENCES = 16

_KNOWN_KEYS = frozenset(
    {
        "sender-id",
        "recipient-id",
        "secret",
        "salt",
        "id-context",
        "algorithm",
        "kdf-hashfun",
        "window",
    }
)
_OTHER_KINDS = frozenset({"dtls", "tlscert", "any-of", "all-of"})
#: The fields of an ``edhoc-oscore`` entry (``-`` and ``_`` alike, as aiocoap reads them).
_EDHOC_FIELDS = frozenset(
    {
        "suite",
        "method",
        "own_cred_style",
        "own_cred",
        "private_key_file",
        "private_key",
        "peer_cred",
        "use_combined_edhoc",
    }
)
#: File names read as diagnostic notation rather than JSON (aiocoap's tools alike).
EDN_SUFFIXES = (".diag", ".edn")
_UNAUTHENTICATED = {"unauthenticated": True}


@attrs.frozen(eq=False)
class OscoreCredential:
    """An ``{"oscore": ...}`` entry: a security context read from its directory."""

    #: The security context directory (None: a context made in the program).
    directory: Path | None
    #: The context (shared by every entry naming the same directory).
    context: SecurityContext


@attrs.frozen
class CredentialReference:
    """A ``":name"`` entry: use the entry named ``target``."""

    #: The name of the entry referred to, with its leading colon.
    target: str


@attrs.frozen
class UnsupportedCredential:
    """An entry of a kind this stack does not use for OSCORE (``dtls``, ``tlscert``...)."""

    #: The entry's kind, its single key.
    kind: str


@attrs.frozen(eq=False, repr=False)
class EdhocCredential:
    """An ``edhoc-oscore`` entry: EDHOC (RFC 9528) then OSCORE, as aiocoap's files hold it.

    Only cipher suite 2 and method 3 (static Diffie-Hellman keys, CCS
    credentials) are read: those are what lakers, the EDHOC implementation
    underneath, offers.
    """

    #: The cipher suite (2: AES-CCM-16-64-128, SHA-256, P-256).
    suite: int
    #: The EDHOC method (3: static DH keys on both sides).
    method: int
    #: Our P-256 private key (32 bytes) and our credential (a CCS, CBOR-encoded),
    #: None when the entry only names a peer.
    private_key: bytes | None
    credential: bytes | None
    #: Whether our credential is sent by value (else by reference, its 'kid').
    by_value: bool
    #: The peer's credential (a CCS, CBOR-encoded), None when it is not given.
    peer: bytes | None
    #: ``peer_cred`` is ``{"unauthenticated": true}``: any credential sent by value.
    peer_unauthenticated: bool
    #: Whether message_3 rides on the first OSCORE request (None: the default, yes).
    combined: bool | None
    #: Our credential was made at load time (``own_cred`` ``{"unauthenticated": true}``).
    own_unauthenticated: bool = False

    #: The EDHOC credentials a client uses with this entry (one object, made
    #: when the entry is read), None when it lacks our credential or the peer's.
    client: EdhocCredentials | None = None

    def initiator(self) -> EdhocCredentials:
        """The EDHOC credentials of a client using this entry.

        Raises :class:`~coap_trio.errors.CredentialsError` when the entry
        lacks our own credential, or the peer's.
        """
        if self.client is not None:
            return self.client
        if self.credential is None:
            raise CredentialsError("an edhoc-oscore entry without own_cred cannot start EDHOC")
        raise CredentialsError(
            'an edhoc-oscore entry needs peer_cred (or {"unauthenticated": true}) to start EDHOC'
        )

    def __repr__(self) -> str:
        return (
            f"<EdhocCredential suite={self.suite} method={self.method} "
            f"own={self.credential is not None} peer={self.peer is not None}>"
        )


Credential = OscoreCredential | CredentialReference | UnsupportedCredential | EdhocCredential


class CredentialsMap:
    """The entries of a credentials file, by URI pattern or ``:name``."""

    def __init__(self, entries: dict[str, Credential]) -> None:
        #: Pattern (or ``:name``) -> entry, in the file's order.
        self.entries = dict(entries)

    @classmethod
    def from_contexts(cls, contexts: dict[str, SecurityContext]) -> CredentialsMap:
        """A map of security contexts made in the program, by URI pattern.

        ``{"coap://[::1]/*": context}``: as a file's entries, ``*`` matches
        any text and the longest matching pattern wins. A context named by
        several patterns is one context (its sequence numbers are shared).
        """
        return cls(
            {pattern: OscoreCredential(None, context) for pattern, context in contexts.items()}
        )

    def for_uri(self, uri: str) -> SecurityContext | None:
        """The security context for requests to ``uri``, or None.

        The longest pattern matching ``uri`` wins (``*`` matches any text),
        as in aiocoap; references are followed (at most
        :data:`MAX_REFERENCES`). Raises :class:`~coap_trio.errors.CredentialsError`
        for a reference to a missing entry or a cycle.
        """
        target = uri
        for _ in range(MAX_REFERENCES):
            entry = self._match(target)
            if entry is None:
                return None
            if isinstance(entry, CredentialReference):
                target = entry.target
                continue
            return entry.context if isinstance(entry, OscoreCredential) else None
        raise CredentialsError(f"more than {MAX_REFERENCES} references from {uri!r}")

    def security_for(self, uri: str) -> SecurityContext | EdhocCredential | None:
        """What protects requests to ``uri``: a security context, an ``edhoc-oscore``
        entry (EDHOC runs first), or None (see :meth:`for_uri` for the matching)."""
        target = uri
        for _ in range(MAX_REFERENCES):
            entry = self._match(target)
            if isinstance(entry, CredentialReference):
                target = entry.target
                continue
            if isinstance(entry, OscoreCredential):
                return entry.context
            return entry if isinstance(entry, EdhocCredential) else None
        raise CredentialsError(f"more than {MAX_REFERENCES} references from {uri!r}")

    def edhoc_identities(self) -> dict[str, EdhocCredentials]:
        """A server's EDHOC identities: the ``edhoc-oscore`` entries with our own
        credential, by URI pattern, each trusting the ``peer_cred`` of every entry
        (and any peer sending its credential by value when an entry says
        ``{"unauthenticated": true}``). Empty when there is none."""
        entries = [entry for entry in self.entries.values() if isinstance(entry, EdhocCredential)]
        if not entries:
            return {}
        from .protocol.oscore.edhoc import EdhocCredentials

        peers = tuple(entry.peer for entry in entries if entry.peer is not None)
        anyone = any(entry.peer_unauthenticated for entry in entries)
        identities: dict[str, EdhocCredentials] = {}
        for pattern, entry in self.entries.items():
            if not isinstance(entry, EdhocCredential) or entry.private_key is None:
                continue
            assert entry.credential is not None
            identities[pattern] = EdhocCredentials(
                entry.private_key,
                entry.credential,
                peers,
                by_value=entry.by_value,
                trust_on_first_use=anyone,
            )
        return identities

    def _match(self, target: str) -> Credential | None:
        if target.startswith(":"):
            if target not in self.entries:
                raise CredentialsError(f"reference to a missing entry {target!r}")
            return self.entries[target]
        matching = [
            pattern
            for pattern in self.entries
            if not pattern.startswith(":") and _wildcard(pattern).fullmatch(target)
        ]
        if not matching:
            return None
        return self.entries[max(matching, key=len)]

    @property
    def contexts(self) -> list[SecurityContext]:
        """Every OSCORE security context of the file, once each (for a server)."""
        found: dict[int, SecurityContext] = {}
        for entry in self.entries.values():
            if isinstance(entry, OscoreCredential):
                found.setdefault(id(entry.context), entry.context)
        return list(found.values())


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace("\\*", ".*"))


def load_credentials(
    path: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    persist_step: int = DEFAULT_PERSIST_STEP,
) -> CredentialsMap:
    """Read a credentials file (``--credentials`` of aiocoap's tools).

    JSON, or diagnostic notation (EDN) for a name ending in ``.diag`` or
    ``.edn``. Relative context directories and key files are taken from
    ``base``, by default the file's directory. Raises :class:`~coap_trio.errors.CredentialsError`
    naming the file and entry at fault.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise CredentialsError(f"{file}: {error.strerror or error}") from None
    except ValueError as error:
        raise CredentialsError(f"{file}: not UTF-8 text ({error})") from None
    if file.suffix in EDN_SUFFIXES:
        try:
            data = edn.loads(text)
        except edn.EdnError as error:
            raise CredentialsError(f"{file}: not diagnostic notation ({error})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise CredentialsError(f"{file}: not JSON ({error})") from None
    where = Path(base) if base is not None else file.parent
    return parse_credentials(data, where, persist_step=persist_step, source=str(file))


def parse_credentials(
    data: object,
    base: str | os.PathLike[str],
    *,
    persist_step: int = DEFAULT_PERSIST_STEP,
    source: str = "credentials",
) -> CredentialsMap:
    """The :class:`CredentialsMap` of already-parsed JSON ``data`` (see :func:`load_credentials`).

    A ``null`` entry is left out, as aiocoap removes it.
    """
    if not isinstance(data, dict):
        raise CredentialsError(f"{source}: the top level is not an object")
    entries: dict[str, Credential] = {}
    contexts: dict[Path, SecurityContext] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise CredentialsError(f"{source}: an entry whose name {key!r} is not a string")
        if value is None:
            entries.pop(key, None)
            continue
        entries[key] = _entry(key, value, Path(base), contexts, persist_step, source)
    return CredentialsMap(entries)


def _entry(
    key: str,
    value: object,
    base: Path,
    contexts: dict[Path, SecurityContext],
    persist_step: int,
    source: str,
) -> Credential:
    where = f"{source}: entry {key!r}"
    if isinstance(value, str):
        if not value.startswith(":"):
            raise CredentialsError(f"{where}: a reference must start with ':'")
        return CredentialReference(value)
    if not isinstance(value, dict) or len(value) != 1:
        raise CredentialsError(f"{where}: an entry is a string or an object with one key")
    ((kind, body),) = value.items()
    if kind in _OTHER_KINDS:
        return UnsupportedCredential(kind)
    if kind == "edhoc-oscore":
        return _edhoc_entry(where, body, base)
    if kind != "oscore":
        raise CredentialsError(f"{where}: unknown credential type {kind!r}")
    if not isinstance(body, dict):
        raise CredentialsError(f"{where}: 'oscore' takes an object")
    names = set(body) - {"basedir", "contextfile"}
    if names or len(body) != 1:
        raise CredentialsError(f"{where}: 'oscore' takes one of 'basedir' or 'contextfile'")
    (directory_name,) = body.values()
    if not isinstance(directory_name, str):
        raise CredentialsError(f"{where}: the context directory is not a string")
    directory = (base / directory_name).resolve()
    context = contexts.get(directory)
    if context is None:
        context = load_security_context(directory, persist_step=persist_step)
        contexts[directory] = context
    return OscoreCredential(directory, context)


def load_security_context(
    directory: str | os.PathLike[str], *, persist_step: int = DEFAULT_PERSIST_STEP
) -> SecurityContext:
    """The security context of an aiocoap-style directory (``settings.json``, ``secret.json``).

    Its Sender Sequence Number is kept in ``sequence.json`` there; a
    directory used before resumes from it with its replay window unknown
    (RFC 8613 Appendix B.1). Raises :class:`~coap_trio.errors.CredentialsError`.
    """
    folder = Path(directory)
    values: dict[str, object] = {}
    found = False
    for name in ("secret.json", "settings.json"):
        file = folder / name
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as error:
            raise CredentialsError(f"{file}: {error}") from None
        found = True
        if not isinstance(content, dict):
            raise CredentialsError(f"{file}: not a JSON object")
        for key, value in content.items():
            name_, decoded = _decode_setting(file, key, value)
            if name_ in values:
                raise CredentialsError(f"{folder}: {name_!r} is given more than once")
            values[name_] = decoded
    if not found:
        raise CredentialsError(f"{folder}: neither settings.json nor secret.json")
    unknown = set(values) - _KNOWN_KEYS
    if unknown:
        raise CredentialsError(f"{folder}: unknown settings {sorted(unknown)}")
    for required in ("sender-id", "recipient-id", "secret"):
        if required not in values:
            raise CredentialsError(f"{folder}: {required!r} is missing")
    hashfun = values.get("kdf-hashfun", "sha256")
    if hashfun != "sha256":
        raise CredentialsError(f"{folder}: only HKDF with sha256 is supported, not {hashfun!r}")
    window = values.get("window", DEFAULT_WINDOW_SIZE)
    if not isinstance(window, int) or isinstance(window, bool):
        raise CredentialsError(f"{folder}: the replay window is not a number")
    algorithm_name = values.get("algorithm", "AES-CCM-16-64-128")
    if not isinstance(algorithm_name, str | int):
        raise CredentialsError(f"{folder}: the algorithm is neither a name nor a number")
    id_context = values.get("id-context")
    try:
        algorithm = algorithm_by_name(algorithm_name)
        return SecurityContext.derive(
            master_secret=_bytes(folder, "secret", values["secret"]),
            master_salt=_bytes(folder, "salt", values.get("salt", b"")),
            sender_id=_bytes(folder, "sender-id", values["sender-id"]),
            recipient_id=_bytes(folder, "recipient-id", values["recipient-id"]),
            id_context=None if id_context is None else _bytes(folder, "id-context", id_context),
            algorithm=algorithm,
            replay_window_size=window,
            sequence_store=FileSequenceStore(folder / SEQUENCE_FILE_NAME),
            persist_step=persist_step,
        )
    except ValueError as error:
        if isinstance(error, CredentialsError):
            raise
        raise CredentialsError(f"{folder}: {error}") from None


def _decode_setting(file: Path, key: object, value: object) -> tuple[str, object]:
    """A settings key without its ``_hex`` / ``_ascii`` suffix, and its value decoded."""
    if not isinstance(key, str):
        raise CredentialsError(f"{file}: a key that is not a string")
    if key.endswith("_hex"):
        if not isinstance(value, str):
            raise CredentialsError(f"{file}: {key} is not a string")
        try:
            return key[:-4], bytes.fromhex(value)
        except ValueError:
            raise CredentialsError(f"{file}: {key} is not hexadecimal") from None
    if key.endswith("_ascii"):
        if not isinstance(value, str) or not value.isascii():
            raise CredentialsError(f"{file}: {key} is not an ASCII string")
        return key[:-6], value.encode("ascii")
    return key, value


def _bytes(folder: Path, name: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise CredentialsError(f"{folder}: {name!r} needs a _hex or _ascii spelling")
    return value


# -- edhoc-oscore entries ----------------------------------------------------------------------


def _edhoc_entry(where: str, body: object, base: Path) -> EdhocCredential:
    """An ``edhoc-oscore`` entry's fields checked and read (see the module)."""
    if not isinstance(body, dict):
        raise CredentialsError(f"{where}: 'edhoc-oscore' takes an object")
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if not isinstance(name, str):
            raise CredentialsError(f"{where}: a field name {name!r} that is not a string")
        field = name.replace("-", "_")
        if field not in _EDHOC_FIELDS:
            raise CredentialsError(f"{where}: unknown edhoc-oscore field {name!r}")
        fields[field] = value
    for required in ("suite", "method"):
        if required not in fields:
            raise CredentialsError(f"{where}: edhoc-oscore needs {required!r}")
    suite, method = fields["suite"], fields["method"]
    if type(suite) is not int or type(method) is not int:
        raise CredentialsError(f"{where}: 'suite' and 'method' are numbers")
    if suite != 2:
        raise CredentialsError(
            f"{where}: cipher suite {suite} is not supported "
            "(only 2: AES-CCM-16-64-128, SHA-256, P-256)"
        )
    if method != 3:
        raise CredentialsError(
            f"{where}: EDHOC method {method} is not supported (only 3: static DH keys)"
        )
    combined = fields.get("use_combined_edhoc")
    if combined is not None and not isinstance(combined, bool):
        raise CredentialsError(f"{where}: 'use_combined_edhoc' is true or false")
    style = fields.get("own_cred_style")
    if style is not None and style not in ("by-key-id", "by-value"):
        raise CredentialsError(f"{where}: 'own_cred_style' is 'by-key-id' or 'by-value'")
    own = fields.get("own_cred")
    key_given = "private_key" in fields or "private_key_file" in fields
    if "private_key" in fields and "private_key_file" in fields:
        raise CredentialsError(f"{where}: give 'private_key' or 'private_key_file', not both")
    private_key: bytes | None = None
    credential: bytes | None = None
    own_unauthenticated = own == _UNAUTHENTICATED
    if own_unauthenticated:
        if key_given or style not in (None, "by-value"):
            raise CredentialsError(
                f"{where}: an unauthenticated own_cred takes no key, and is sent by value"
            )
        from .protocol.oscore.edhoc import EdhocCredentials

        made = EdhocCredentials.generate(b"?")  # (aiocoap's 'kid' for such a key)
        private_key, credential, style = made.private_key, made.credential, "by-value"
    elif own is not None or style is not None or key_given:
        if own is None or style is None or not key_given:
            raise CredentialsError(
                f"{where}: own_cred, own_cred_style and private_key (or "
                "private_key_file) go together"
            )
        if "private_key" in fields:
            private_key = _cose_private_key(where, fields["private_key"])
        else:
            private_key = _key_file(where, fields["private_key_file"], base)
        claims = _ccs(where, "own_cred", own)
        credential = _encoded(claims)
        x, y, kid = _ccs_key(where, "own_cred", claims)
        if _public_key(private_key) != (x, y):
            raise CredentialsError(f"{where}: the private key is not the key of own_cred")
        if style == "by-key-id" and kid is None:
            raise CredentialsError(f"{where}: own_cred_style 'by-key-id' needs a kid in own_cred")
    peer = fields.get("peer_cred")
    peer_unauthenticated = peer == _UNAUTHENTICATED
    peer_credential: bytes | None = None
    if peer is not None and not peer_unauthenticated:
        claims = _ccs(where, "peer_cred", peer)
        _ccs_key(where, "peer_cred", claims)
        peer_credential = _encoded(claims)
    client = None
    if credential is not None and (peer_credential is not None or peer_unauthenticated):
        from .protocol.oscore.edhoc import EdhocCredentials

        assert private_key is not None
        client = EdhocCredentials(
            private_key,
            credential,
            () if peer_credential is None else (peer_credential,),
            by_value=style == "by-value",
            combined=combined is not False,
            trust_on_first_use=peer_unauthenticated,
        )
    return EdhocCredential(
        suite=suite,
        method=method,
        private_key=private_key,
        credential=credential,
        by_value=style == "by-value",
        peer=peer_credential,
        peer_unauthenticated=peer_unauthenticated,
        combined=combined,
        own_unauthenticated=own_unauthenticated,
        client=client,
    )


def _ccs(where: str, name: str, value: object) -> dict[Any, Any]:
    """The CCS of ``{14: CCS}`` (the only credential kind read)."""
    if isinstance(value, dict) and set(value) == {"unauthenticated"}:
        raise CredentialsError(f'{where}: {name} {{"unauthenticated": ...}} takes only true')
    if not isinstance(value, dict) or len(value) != 1 or 14 not in value:
        raise CredentialsError(
            f"{where}: {name} is {{14: CCS}} (a CWT Claims Set; JSON cannot spell the "
            "integer key 14: write the file in diagnostic notation, .diag)"
        )
    claims = value[14]
    if not isinstance(claims, dict):
        raise CredentialsError(f"{where}: the CCS of {name} is not a map")
    return claims


def _ccs_key(where: str, name: str, claims: dict[Any, Any]) -> tuple[bytes, bytes, bytes | None]:
    """The P-256 public key (x, y) and the 'kid' of a CCS's cnf COSE_Key."""
    cnf = claims.get(8)
    cose_key = cnf.get(1) if isinstance(cnf, dict) else None
    if not isinstance(cose_key, dict):
        raise CredentialsError(f"{where}: the CCS of {name} has no cnf COSE_Key (8: {{1: ...}})")
    x, y, kid = cose_key.get(-2), cose_key.get(-3), cose_key.get(2)
    if cose_key.get(1) != 2 or cose_key.get(-1) != 1:
        raise CredentialsError(f"{where}: the key of {name} is not an EC2 P-256 key")
    if not (isinstance(x, bytes) and isinstance(y, bytes) and len(x) == len(y) == 32):
        raise CredentialsError(f"{where}: the key of {name} needs 32-byte x (-2) and y (-3)")
    if kid is not None and not isinstance(kid, bytes):
        raise CredentialsError(f"{where}: the kid (2) of {name} is not a byte string")
    if 2 in claims and not isinstance(claims[2], str):
        raise CredentialsError(f"{where}: the subject (2) of {name} is not a text string")
    return x, y, kid


def _encoded(claims: dict[Any, Any]) -> bytes:
    import cbor2

    return cbor2.dumps(claims, canonical=True)


def _public_key(private_key: bytes) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")


def _cose_private_key(where: str, value: object) -> bytes:
    """``d`` of a COSE_Key ``{1: 2, -1: 1, -4: d}`` (EC2, P-256), nothing else in it."""
    if not isinstance(value, dict):
        raise CredentialsError(f"{where}: the private key is not a COSE_Key map")
    if value.get(1) != 2 or value.get(-1) != 1:
        raise CredentialsError(f"{where}: the private key is not an EC2 P-256 key (1: 2, -1: 1)")
    d = value.get(-4)
    if not isinstance(d, bytes) or len(d) != 32:
        raise CredentialsError(f"{where}: the private key needs a 32-byte d (-4)")
    if set(value) - {1, -1, -4}:
        raise CredentialsError(f"{where}: the private key holds more than 1, -1 and -4")
    if not 0 < int.from_bytes(d, "big") < _P256_ORDER:
        raise CredentialsError(f"{where}: the private key is not a P-256 scalar")
    return d


#: The order of P-256's group (a private key is in 1..n-1).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _key_file(where: str, name: object, base: Path) -> bytes:
    """The COSE_Key of a ``private_key_file`` (CBOR, or diagnostic notation), which must
    be readable by its owner only."""
    if not isinstance(name, str):
        raise CredentialsError(f"{where}: 'private_key_file' is not a string")
    file = base / name
    try:
        mode = file.stat().st_mode
        data = file.read_bytes()
    except OSError as error:
        raise CredentialsError(f"{where}: {file}: {error.strerror or error}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{where}: {file}: a private key that its group or others may access (chmod 600)"
        )
    import cbor2

    value: object
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
        if stream.tell() != len(data):
            raise ValueError("more than one data item")
    except (cbor2.CBORDecodeError, ValueError, EOFError):
        try:
            value = edn.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, edn.EdnError):
            raise CredentialsError(
                f"{where}: {file}: neither CBOR nor diagnostic notation"
            ) from None
    return _cose_private_key(f"{where}: {file}", value)
