"""The client cache: verified, read-only, content-addressed files that services load from.

Layout under ``<home>/cache`` (pinned by a test; other tools may read it):

    blobs/<hex>                               read-only, verified against its digest on write
    blobs/.<hex>.partial                      a download in progress, or cut short (resumable)
    versions/<namespace>/<name>/<version>/    one symlink per file, into blobs/
    locks/<hex>.lock                          a cross-process lock per blob (a courtesy)
    resolutions.json                          the last resolution of each spec (offline start)

Downloads go to a partial file and are renamed into place once verified: the lock stops two
processes downloading the same blob twice; the rename is the guarantee that nobody sees half a
file (and a partial file never passes for a blob: its bytes are hashed to the end).

Resolutions come from a server or a lock file, neither of them trusted: namespace, name and
version must obey the publishing rules before they become folder names, every path built from
them is checked to stay under the cache, and a source that sends more than the declared size is
cut off at that size.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, BinaryIO

from filelock import FileLock

from registry.errors import IntegrityError, InvalidSpec, NotFound, Unreachable
from registry.manifest import CHUNK, FileEntry, StreamDigest, digest_file
from registry.schemas import Resolution
from registry.spec import parse_version, validate_digest, validate_name

Opener = Callable[[str], BinaryIO]
Resume = Callable[[str, int], BinaryIO]  # (digest, offset): the rest of a blob


# From versions/<namespace>/<name>/<version>/ up to the cache root, then into blobs/.
_LINK_TO_BLOBS = os.path.join("..", "..", "..", "..", "blobs", "")
# A download's read size: what the HTTP sources yield per chunk, so a read joins no bytes.
READ = CHUNK
AHEAD = 8  # reads handed to the hashing thread and not yet written: bounds memory (8 MiB)


def _hex(digest: str) -> str:
    return validate_digest(digest).removeprefix("sha256:")


def inside(path: str | Path, root: Path) -> Path:
    """``path`` if it stays under ``root`` once ``..`` and symlinks above it are resolved, else
    raise IntegrityError: no answer from a server or a lock file may name a path elsewhere.

    The last component is not followed: it is what will be written (or replaced, if a link).
    """
    parent, last = os.path.split(os.path.normpath(path))
    real = os.path.normpath(os.path.join(os.path.realpath(parent), last))
    base = os.path.realpath(root)
    if os.path.commonpath([real, base]) != base or real == base:
        raise IntegrityError(f"refusing to write {path}: it is not inside {root}")
    return Path(path)


def _drain(source: BinaryIO, out: IO[bytes], seen: StreamDigest, entry: FileEntry) -> None:
    """Copy ``source`` to ``out`` through ``seen``, never more than ``entry.size`` bytes in all.

    Hashing and writing run on a worker thread while this one reads the next chunk (hashlib
    and file writes release the GIL): a sequential loop took the SHA-256 time on top of the
    network's. Chunks are handed over in order and ``seen`` is final once this returns.
    """

    def take(chunk: bytes) -> None:
        seen.update(chunk)
        out.write(chunk)

    total = seen.size  # bytes of a resumed download already hashed
    with ThreadPoolExecutor(1, thread_name_prefix="stance-hash") as worker:
        pending: deque[Future[None]] = deque()
        while chunk := source.read(READ):
            total += len(chunk)
            if total > entry.size:  # never more than declared: hang up at once
                raise IntegrityError(
                    f"{entry.path}: the download sent more than the expected {entry.size} bytes"
                )
            pending.append(worker.submit(take, chunk))
            if len(pending) > AHEAD:
                pending.popleft().result()  # and a failed write stops the download
        while pending:
            pending.popleft().result()


def version_folder(root: Path, resolution: Resolution) -> Path:
    """``root/<namespace>/<name>/<version>``, once each part obeys the publishing rules."""
    try:
        validate_name(resolution.namespace, what="namespace")
        validate_name(resolution.name)
        parse_version(resolution.version)
    except InvalidSpec as exc:
        raise IntegrityError(f"refusing a resolution that names no version: {exc}") from None
    return inside(root / resolution.namespace / resolution.name / resolution.version, root)


class Cache:
    """Blobs fetched once, verified before first use, shared by every process on the machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._verified: set[str] = set()
        self._remembered: dict[str, Resolution] = {}
        self._folders: dict[tuple[str, str, str, tuple[str, ...]], tuple[Path, list[str]]] = {}

    def blob_path(self, digest: str) -> Path:
        return self._blobs / _hex(digest)

    def _write(self, entry: FileEntry, opener: Opener, resume: Resume | None) -> None:
        """Download into ``.<hex>.partial`` (under the blob's lock), verify, then rename.

        With ``resume``, a download cut short keeps its partial file and the next attempt asks
        only for the rest (HTTP Range); the bytes already there are hashed first.
        """
        target = self.blob_path(entry.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{_hex(entry.digest)}.partial"
        seen = StreamDigest()
        if resume is not None and partial.exists() and partial.stat().st_size < entry.size:
            with partial.open("rb") as done:
                while chunk := done.read(CHUNK):
                    seen.update(chunk)
            mode, source = "ab", resume(entry.digest, seen.size)
        else:
            mode, source = "wb", opener(entry.digest)
        try:
            with partial.open(mode) as out, source:
                _drain(source, out, seen, entry)
        except Unreachable:
            if resume is None:
                partial.unlink(missing_ok=True)
            raise  # with resume, the partial file waits for the next attempt
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        actual, size = seen.digest, seen.size
        if actual != entry.digest or size != entry.size:
            partial.unlink(missing_ok=True)
            raise IntegrityError(
                f"{entry.path}: downloaded {size} bytes hashing to {actual}, "
                f"expected {entry.size} bytes with {entry.digest}"
            )
        os.chmod(partial, 0o444)
        os.replace(partial, target)

    def verify(self, entry: FileEntry) -> None:
        """Re-hash a cached blob; raise IntegrityError naming the file and both digests."""
        path = self.blob_path(entry.digest)
        actual, _ = digest_file(path)
        if actual != entry.digest:
            raise IntegrityError(
                f"{entry.path}: cached file {path} hashes to {actual}, expected {entry.digest}"
            )
        self._verified.add(entry.digest)

    def blob(self, entry: FileEntry, opener: Opener, resume: Resume | None = None) -> Path:
        """The cached, verified blob of ``entry``, downloaded through ``opener`` when missing
        (``resume(digest, offset)``, where the source allows it, continues a broken download)."""
        path = self.blob_path(entry.digest)
        if not path.exists():
            (self.root / "locks").mkdir(parents=True, exist_ok=True)
            with FileLock(self.root / "locks" / f"{_hex(entry.digest)}.lock"):
                if not path.exists():  # another process may have fetched it meanwhile
                    self._write(entry, opener, resume)
                    self._verified.add(entry.digest)
        if entry.digest not in self._verified:
            try:
                self.verify(entry)
            except IntegrityError:
                self._replace(entry, opener)
        return path

    def _replace(self, entry: FileEntry, opener: Opener) -> None:
        """A cached blob that fails its digest (disk fault, edited by hand) is fetched again.

        The new copy is verified before the rename replaces the bad one; if fetching fails, the
        bad copy stays and the fetch's error says why (issue 16: sync and pull repair).
        """
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / "locks" / f"{_hex(entry.digest)}.lock"):
            try:
                self.verify(entry)  # another process may have replaced it meanwhile
            except IntegrityError as bad:
                try:
                    self._write(entry, opener, None)
                except NotFound as missing:  # nowhere to fetch it from (a lock, offline)
                    raise IntegrityError(f"{bad.message}; {missing.message}") from missing
                self._verified.add(entry.digest)

    def version(self, resolution: Resolution, opener: Opener, resume: Resume | None = None) -> Path:
        """``versions/<ns>/<name>/<version>/``: the version's files as links into blobs/."""
        folder, links = self._checked(resolution)
        made = False
        for entry, link in zip(resolution.files, links, strict=True):
            self.blob(entry, opener, resume)
            target = _LINK_TO_BLOBS + _hex(entry.digest)  # what os.path.relpath gives, cheaper
            with contextlib.suppress(OSError):  # missing, or not a link: (re)made below
                if os.readlink(link) == target:
                    continue  # one readlink, where resolving both paths cost a dozen syscalls
            if not made:
                folder.mkdir(parents=True, exist_ok=True)
                made = True
            tmp = folder / f".{entry.path}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
        return folder

    def _checked(self, resolution: Resolution) -> tuple[Path, list[str]]:
        """The version's folder and its files' link paths, each checked to stay in the cache.

        Checked once per process and version (as blobs are verified once): resolving every
        parent's symlinks cost more than the rest of a warm ``version`` call.
        """
        names = tuple(entry.path for entry in resolution.files)
        key = (resolution.namespace, resolution.name, resolution.version, names)
        checked = self._folders.get(key)
        if checked is None:
            folder = version_folder(self.root / "versions", resolution)
            links = [str(inside(os.path.join(folder, name), folder)) for name in names]
            checked = self._folders[key] = (folder, links)
        return checked

    def remember(self, spec: str, resolution: Resolution) -> None:
        """Record what ``spec`` resolved to: a pinned service can start with the registry down."""
        if self._remembered.get(spec) == resolution:
            return  # loads repeat the same answer; rewrite the file only when it changes
        self._remembered[spec] = resolution
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "resolutions.json"
        with FileLock(self.root / "resolutions.lock"):
            known = json.loads(path.read_text()) if path.exists() else {}
            known[spec] = resolution.model_dump(mode="json")
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".resolutions-")
            with os.fdopen(fd, "w") as out:
                json.dump(known, out, indent=1, sort_keys=True)
            os.replace(tmp, path)

    def recall(self, spec: str) -> Resolution | None:
        path = self.root / "resolutions.json"
        if not path.exists():
            return None
        known = json.loads(path.read_text()).get(spec)
        return Resolution.model_validate(known) if known else None
