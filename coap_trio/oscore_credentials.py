"""OSCORE credentials files, in the JSON format aiocoap's ``--credentials`` reads.

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
kinds (``dtls``, ``tlscert``, ``edhoc-oscore``, ``any-of``, ``all-of``) are
kept as :class:`UnsupportedCredential`. Must not know about sockets,
messages or trio.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import attrs

from .errors import CredentialsError
from .oscore_storage import SEQUENCE_FILE_NAME, FileSequenceStore
from .protocol.oscore.algorithms import algorithm_by_name
from .protocol.oscore.context import SecurityContext
from .protocol.oscore.replay import DEFAULT_PERSIST_STEP, DEFAULT_WINDOW_SIZE

__all__ = [
    "CredentialReference",
    "CredentialsMap",
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
_OTHER_KINDS = frozenset({"dtls", "tlscert", "edhoc-oscore", "any-of", "all-of"})


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


Credential = OscoreCredential | CredentialReference | UnsupportedCredential


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
    """Read a JSON credentials file (``--credentials`` of aiocoap's tools).

    Relative context directories are taken from ``base``, by default the
    file's directory. Raises :class:`~coap_trio.errors.CredentialsError`
    naming the file and entry at fault.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise CredentialsError(f"{file}: {error.strerror or error}") from None
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
