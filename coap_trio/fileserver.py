"""A ready-made server for a directory tree: files, listings, observation, optional writes.

Owns :class:`FileServer` (the resource serving everything below a root
directory), :class:`FileServerSite` (a :class:`~coap_trio.resource.Site`
with it mounted at ``/`` and the polling task that notices changes on disk)
and :func:`serve_files`, which serves one on a Context. Nothing here
starts a task by itself: :meth:`FileServerSite.run` runs in a nursery the
caller owns (or the one :func:`serve_files` owns), so nothing outlives it.

What a request gets:

* A regular file: its bytes, an ETag (from size, mtime and inode; a GET
  with a matching ETag gets 2.03), and a Content-Format guessed from the
  extension (:data:`CONTENT_FORMATS`; application/octet-stream otherwise).
* A directory (``/dir/`` or ``/dir``; ``/`` is the root): a link-format
  listing of its entries, sub-directories with a trailing ``/``.
* Observation (RFC 7641) of a file or directory: observers are notified
  when it changes on disk (:meth:`FileServerSite.run` looks every
  ``poll_interval`` seconds, only at observed paths) and at once after a
  PUT or DELETE through CoAP; a file that disappears ends its observations
  with 4.04.
* With ``write=True``: PUT creates or replaces a file (atomically, through
  a temporary file in the same directory; If-Match / If-None-Match
  honoured: 4.12), DELETE removes one. Without it both answer 4.05. A
  created file gets mode 0644 less the process's umask, as files other
  programs create; a replaced one keeps its permission bits.

Safety: a path never leaves the root. Segments ``.``/``..`` (also when they
arrived percent-encoded), segments containing ``/`` or NUL, and empty
segments other than a final one are refused with 4.03; so is any path whose
real location (symlinks resolved) is outside the root, and anything that is
neither a regular file nor a directory (FIFOs, devices). Listings leave out
entries that would be refused. Files larger than ``max_file_size`` are not
read (4.03). Disk access runs in worker threads (``trio.to_thread``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from . import interfaces
from .context import Context
from .hosting import serve_site
from .linkformat import Link, serialize
from .message import Message
from .numbers.codes import Code
from .numbers.contentformat import ContentFormat
from .resource import Resource, Site, path_to_target
from .response_errors import Forbidden, MethodNotAllowed, NotAcceptable, NotFound

__all__ = [
    "CONTENT_FORMATS",
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_POLL_INTERVAL",
    "FileServer",
    "FileServerSite",
    "content_format_for",
    "fileserver_site",
    "serve_files",
]

#: Seconds between two looks at the observed paths by default.
DEFAULT_POLL_INTERVAL = 2.0
#: Files larger than this (bytes) are not served by default.
DEFAULT_MAX_FILE_SIZE = 16 << 20

#: Content-Format by file extension (lower case); anything else is application/octet-stream.
CONTENT_FORMATS: dict[str, ContentFormat] = {
    ".txt": ContentFormat.TEXT,
    ".text": ContentFormat.TEXT,
    ".json": ContentFormat.JSON,
    ".cbor": ContentFormat.CBOR,
    ".wlnk": ContentFormat.LINKFORMAT,
    ".xml": ContentFormat.XML,
}

_Key = tuple[str, ...]
# What identifies a version of a path on disk (None: gone or not servable).
_Signature = tuple[object, ...] | None


def content_format_for(name: str) -> ContentFormat:
    """The Content-Format of a file called ``name``, by extension (see :data:`CONTENT_FORMATS`)."""
    return CONTENT_FORMATS.get(os.path.splitext(name)[1].lower(), ContentFormat.OCTETSTREAM)


def _etag(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()[:8]


#: The mode a file created by PUT is opened with; the process's umask applies.
_NEW_FILE_MODE = 0o644
#: Names tried for a temporary file before giving up (each is random: one is enough).
_TEMPORARY_ATTEMPTS = 100


def _create_temporary(parent: Path, mode: int) -> tuple[int, Path]:
    """Create a new, empty file in ``parent`` with ``mode`` (less the umask); its
    descriptor (open for writing) and path. A dot file, as editors' are."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMPORARY_ATTEMPTS):
        path = parent / f".coap-put-{secrets.token_hex(8)}"
        try:
            return os.open(path, flags, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {parent}")


class _Found:
    """A request path resolved inside the root (the target may not exist)."""

    __slots__ = ("directory", "key", "real", "st")

    def __init__(self, key: _Key, directory: bool, real: Path, st: os.stat_result | None) -> None:
        self.key = key  # the segments, without a final empty one
        self.directory = directory  # the path ended with "/" (or is the root)
        self.real = real  # symlinks resolved
        self.st = st  # None: does not exist


class FileServer(Resource):
    """Serves the directory ``root`` (see the module docstring); mount it as a subtree.

    ``prefix`` is the path it is mounted at, used for the link targets of
    listings. It is observable (it has ``add_observation``); who watches
    the disk for changes is :meth:`poll`, called by :meth:`FileServerSite.run`.
    """

    title = "Directory listing"

    def __init__(
        self,
        root: Path | str,
        *,
        write: bool = False,
        prefix: Sequence[str] = (),
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    ) -> None:
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
        #: The served directory, symlinks resolved.
        self.root = real
        #: Whether PUT and DELETE are allowed.
        self.write = write
        self.prefix = tuple(prefix)
        self.max_file_size = max_file_size
        self.ct = int(ContentFormat.LINKFORMAT)
        # Observed paths: observations and the signature last notified.
        self._watched: dict[_Key, tuple[set[interfaces.ServerObservation], _Signature]] = {}
        self._write_lock = trio.Lock()

    # -- paths -----------------------------------------------------------------------------

    def _locate(self, segments: Sequence[str]) -> _Found:
        """Resolve a request's Uri-Path inside the root (blocking: run in a thread)."""
        key = tuple(segments)
        directory = not key
        if key and key[-1] == "":
            key = key[:-1]
            directory = True
        for segment in key:
            if segment in ("", ".", "..") or "/" in segment or "\x00" in segment:
                raise Forbidden("path segment not allowed")
        real = Path(os.path.realpath(self.root.joinpath(*key)))
        if not real.is_relative_to(self.root):
            raise Forbidden("outside the served directory")
        try:
            st: os.stat_result | None = real.stat()
        except FileNotFoundError:
            st = None
        except OSError as error:
            raise Forbidden(f"not accessible: {error.strerror}") from None
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise Forbidden("neither a file nor a directory")
        return _Found(key, directory, real, st)

    async def _found(self, request: Message) -> _Found:
        return await trio.to_thread.run_sync(self._locate, request.opt.uri_path)

    # -- reading ---------------------------------------------------------------------------

    def _listing(self, found: _Found) -> bytes:
        """The link-format listing of a directory (blocking)."""
        links: list[Link] = []
        try:
            names = sorted(os.listdir(found.real))
        except OSError as error:
            raise Forbidden(f"cannot list: {error.strerror}") from None
        for name in names:
            try:
                entry = self._locate((*found.key, name))
            except Forbidden:
                continue  # e.g. a symlink out of the root: not listed
            if entry.st is None:
                continue  # a dangling symlink, or removed meanwhile
            target = path_to_target(self.prefix + entry.key)
            if stat.S_ISDIR(entry.st.st_mode):
                links.append(Link.build(target + "/", ct=int(ContentFormat.LINKFORMAT)))
            else:
                links.append(
                    Link.build(target, ct=int(content_format_for(name)), sz=entry.st.st_size)
                )
        return serialize(links).encode("utf-8")

    @staticmethod
    def _file_etag(st: os.stat_result) -> bytes:
        return _etag(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    def _read(self, found: _Found) -> tuple[bytes, bytes]:
        """The (payload, ETag) of a file or directory (blocking)."""
        st = found.st
        if st is None:
            raise NotFound()
        if stat.S_ISDIR(st.st_mode):
            listing = self._listing(found)
            return listing, _etag("dir", listing)
        if found.directory:
            raise NotFound("not a directory")
        if st.st_size > self.max_file_size:
            raise Forbidden(f"larger than {self.max_file_size} bytes")
        try:
            # O_NONBLOCK: never hang on something that became a FIFO meanwhile.
            fd = os.open(found.real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise NotFound() from None
        except OSError as error:
            raise Forbidden(f"cannot open: {error.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            opened = os.fstat(file.fileno())
            if not stat.S_ISREG(opened.st_mode):
                raise Forbidden("not a regular file")
            data = file.read(self.max_file_size + 1)
        if len(data) > self.max_file_size:
            raise Forbidden(f"larger than {self.max_file_size} bytes")
        return data, self._file_etag(opened)

    def _current_etag(self, segments: Sequence[str]) -> bytes | None:
        found = self._locate(segments)
        if found.st is None:
            return None
        if stat.S_ISDIR(found.st.st_mode):
            return _etag("dir", self._listing(found))
        if found.directory:
            return None
        return self._file_etag(found.st)

    async def current_etag(self, request: Message) -> bytes | None:
        """The ETag of what the path names now; None if nothing (path errors are raised)."""
        return await trio.to_thread.run_sync(self._current_etag, request.opt.uri_path)

    async def render(self, request: Message) -> Message:
        """Refuse writes unless enabled (4.05), then dispatch; writes are serialized."""
        if request.code not in (Code.GET, Code.FETCH):
            if not self.write or request.code not in (Code.PUT, Code.DELETE):
                raise MethodNotAllowed(f"{request.code.name_printable} is not allowed here")
            async with self._write_lock:
                return await super().render(request)
        return await super().render(request)

    async def render_get(self, request: Message) -> Message:
        """The file's bytes, or the directory's listing."""
        found = await self._found(request)
        payload, etag = await trio.to_thread.run_sync(self._read, found)
        if found.st is not None and stat.S_ISDIR(found.st.st_mode):
            content_format = ContentFormat.LINKFORMAT
        else:
            content_format = content_format_for(found.real.name)
        accept = request.opt.accept
        if accept is not None and accept != content_format:
            raise NotAcceptable(f"available as Content-Format {int(content_format)} only")
        return Message(
            code=Code.CONTENT, payload=payload, content_format=content_format, etag=(etag,)
        )

    # -- writing ---------------------------------------------------------------------------

    def _write(self, found: _Found, payload: bytes) -> tuple[bool, bytes]:
        """Create or replace the file atomically (blocking); (created, new ETag)."""
        parent = found.real.parent
        if not parent.is_relative_to(self.root) or not parent.is_dir():
            raise NotFound("the parent directory does not exist")
        # A new file gets 0644 less the umask (the kernel applies it), as files other
        # programs create; a replaced one keeps its permission bits.
        replaced = found.st is not None and stat.S_ISREG(found.st.st_mode)
        fd, temporary = _create_temporary(parent, _NEW_FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as file:
                if replaced:
                    assert found.st is not None
                    os.fchmod(file.fileno(), stat.S_IMODE(found.st.st_mode) & 0o777)
                file.write(payload)
            os.replace(temporary, found.real)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return found.st is None, self._file_etag(found.real.stat())

    async def render_put(self, request: Message) -> Message:
        """Create (2.01) or replace (2.04) a file with the request's payload."""
        found = await self._found(request)
        if found.directory or (found.st is not None and stat.S_ISDIR(found.st.st_mode)):
            raise MethodNotAllowed("a directory cannot be written")
        try:
            created, etag = await trio.to_thread.run_sync(self._write, found, request.payload)
        except OSError as error:
            raise Forbidden(f"cannot write: {error.strerror}") from None
        await self._notify_now(found.key)
        return Message(code=Code.CREATED if created else Code.CHANGED, etag=(etag,))

    async def render_delete(self, request: Message) -> Message:
        """Remove a file (2.02)."""
        found = await self._found(request)
        if found.st is None:
            raise NotFound()
        if found.directory or stat.S_ISDIR(found.st.st_mode):
            raise MethodNotAllowed("a directory cannot be deleted")
        try:
            await trio.to_thread.run_sync(os.unlink, found.real)
        except FileNotFoundError:
            raise NotFound() from None
        except OSError as error:
            raise Forbidden(f"cannot delete: {error.strerror}") from None
        await self._notify_now(found.key)
        return Message(code=Code.DELETED)

    # -- observation -----------------------------------------------------------------------

    def _signature(self, key: _Key) -> _Signature:
        """What changes when the path changes on disk (blocking)."""
        try:
            found = self._locate(key)
        except Forbidden:
            return None
        st = found.st
        if st is None:
            return None
        if stat.S_ISDIR(st.st_mode):
            try:
                return ("dir", self._listing(found))
            except Forbidden:
                return None
        return ("file", st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    async def add_observation(
        self, request: Message, observation: interfaces.ServerObservation
    ) -> None:
        """Accept observers of existing files and directories (others get a plain response)."""
        try:
            found = await self._found(request)
        except Forbidden:
            return
        if found.st is None:
            return
        key = found.key
        signature = await trio.to_thread.run_sync(self._signature, key)
        entry = self._watched.get(key)
        if entry is None:
            entry = self._watched[key] = (set(), signature)
        observations = entry[0]

        def ended() -> None:
            observations.discard(observation)
            current = self._watched.get(key)
            if current is not None and current[0] is observations and not observations:
                del self._watched[key]

        observations.add(observation)
        observation.accept(ended)

    @property
    def observed_paths(self) -> int:
        """How many paths have observers."""
        return len(self._watched)

    def _changed(self, key: _Key, signature: _Signature) -> None:
        """Record ``signature`` for ``key`` and notify its observers."""
        entry = self._watched.get(key)
        if entry is None:
            return
        observations = entry[0]
        self._watched[key] = (observations, signature)
        for observation in list(observations):
            observation.trigger()

    async def _notify_now(self, key: _Key) -> None:
        """After a write through CoAP: notify the path's observers without waiting for a poll."""
        if key in self._watched:
            signature = await trio.to_thread.run_sync(self._signature, key)
            self._changed(key, signature)

    async def poll(self) -> int:
        """Look at every observed path once; notify those that changed. Returns how many did.

        A PUT or DELETE through CoAP notifies at once and records the new
        signature, so the next poll does not notify that change again.
        """
        keys = list(self._watched)
        if not keys:
            return 0
        signatures = await trio.to_thread.run_sync(lambda: [self._signature(key) for key in keys])
        changed = 0
        for key, signature in zip(keys, signatures, strict=True):
            entry = self._watched.get(key)
            if entry is not None and entry[1] != signature:
                changed += 1
                self._changed(key, signature)
        return changed


class FileServerSite(Site):
    """A :class:`Site` serving a directory through a :class:`FileServer` mounted at ``/``.

    Create it with :func:`fileserver_site`; run :meth:`run` in a nursery
    for changes on disk to reach observers.
    """

    def __init__(
        self, root: Path | str, *, write: bool, poll_interval: float, max_file_size: int
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        super().__init__()
        #: The resource serving the files.
        self.files = FileServer(root, write=write, max_file_size=max_file_size)
        #: Seconds between two looks at the observed paths.
        self.poll_interval = poll_interval
        self.add((), self.files, subtree=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the observed paths every ``poll_interval`` seconds, forever (until cancelled)."""
        task_status.started()
        while True:
            await trio.sleep(self.poll_interval)
            await self.files.poll()


def fileserver_site(
    root: Path | str,
    *,
    write: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
) -> FileServerSite:
    """A :class:`FileServerSite` for the directory ``root`` (NotADirectoryError otherwise).

    ``write`` enables PUT and DELETE; ``poll_interval`` is how often
    :meth:`FileServerSite.run` looks for changes of observed paths;
    ``max_file_size`` bounds the files served (bigger ones: 4.03).
    """
    return FileServerSite(
        root, write=write, poll_interval=poll_interval, max_file_size=max_file_size
    )


@asynccontextmanager
async def serve_files(
    root: Path | str,
    bind: tuple[str, int] | Sequence[tuple[str, int]] = ("::", 5683),
    *,
    write: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    **context_options: Any,
) -> AsyncIterator[Context]:
    """Serve ``root`` on ``bind`` while the block runs; yields the Context.

    Owns a nursery holding :meth:`FileServerSite.run` and the Context
    (``open_context(bind=bind, site=..., **context_options)``); leaving the
    block stops both. Exceptions from the body propagate as themselves.
    """
    site = fileserver_site(
        root, write=write, poll_interval=poll_interval, max_file_size=max_file_size
    )
    async with serve_site(site, bind, **context_options) as context:
        yield context
