"""A file that keeps an OSCORE Sender Sequence Number limit across restarts.

Owns :class:`FileSequenceStore`, the ``SequenceStore`` (the interface of
the engine in ``coap_trio.protocol.oscore``) of a real deployment (RFC 8613
Appendix B.1.1): each write goes to a temporary file in the same
directory, is flushed and fsynced, renamed over the previous file and the
directory fsynced, so a process killed at any
moment leaves either the old value or the new one, never a torn file, and
:meth:`FileSequenceStore.store` returns only once the value is durable.

The format is aiocoap's ``sequence.json`` (``{"next-to-send": N, "received":
"unknown"}``), so a security context directory can move between aiocoap and
coap_trio without reusing a nonce: both read ``next-to-send`` as the first
number not yet used, and neither trusts a replay window it did not keep.

Blocking file I/O, no trio: writes happen once per ``persist_step``
sequence numbers. Must not know about messages or keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .errors import CredentialsError

__all__ = ["SEQUENCE_FILE_NAME", "FileSequenceStore"]

#: The file name in a security context directory (aiocoap's).
SEQUENCE_FILE_NAME = "sequence.json"


class FileSequenceStore:
    """A Sender Sequence Number limit in a JSON file, replaced atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        #: The file.
        self.path = Path(path)
        #: Completed writes (for tests and statistics).
        self.writes = 0

    def load(self) -> int | None:
        """The stored limit, or None when the file does not exist.

        Raises :class:`~coap_trio.errors.CredentialsError` for a file that is
        not such a JSON object: using the context anyway could reuse nonces.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            value = data["next-to-send"]
        except (ValueError, TypeError, KeyError):
            raise CredentialsError(f"{self.path}: not a sequence number file") from None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CredentialsError(f"{self.path}: next-to-send {value!r} is not a number")
        return value

    def store(self, limit: int) -> None:
        """Replace the file with ``limit``: temporary file, fsync, rename, directory fsync."""
        directory = self.path.parent
        data = json.dumps({"next-to-send": limit, "received": "unknown"}).encode("ascii")
        handle, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{self.path.name}-", suffix=".tmp"
        )
        try:
            try:
                os.write(handle, data)
                os.fsync(handle)
            finally:
                os.close(handle)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)
        self.writes += 1

    def __repr__(self) -> str:
        return f"<FileSequenceStore {str(self.path)!r}>"
