"""The client cache: verified, read-only, content-addressed files that services load from.

Layout under ``<home>/cache`` (pinned by a test; other tools may read it):

    blobs/<hex>                               read-only, verified against its digest on write
    versions/<namespace>/<name>/<version>/    one symlink per file, into blobs/
    locks/<hex>.lock                          a cross-process lock per blob (a courtesy)
    resolutions.json                          the last resolution of each spec (offline start)

Writes go to a unique temporary name and are renamed into place: the lock stops two processes
downloading the same blob twice; the rename is the guarantee that nobody sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from registry.errors import IntegrityError
from registry.manifest import CHUNK, FileEntry
from registry.schemas import Resolution

Opener = Callable[[str], BinaryIO]


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


class Cache:
    """Blobs fetched once, verified before first use, shared by every process on the machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._verified: set[str] = set()
        self._remembered: dict[str, Resolution] = {}

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / _hex(digest)

    def _write(self, entry: FileEntry, opener: Opener) -> None:
        target = self.blob_path(entry.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{_hex(entry.digest)[:12]}-")
        try:
            hasher, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, opener(entry.digest) as source:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > entry.size:  # a store that sends more is wrong; stop filling disk
                        break
                    hasher.update(chunk)
                    out.write(chunk)
            actual = "sha256:" + hasher.hexdigest()
            if actual != entry.digest or size != entry.size:
                raise IntegrityError(
                    f"{entry.path}: downloaded {size} bytes hashing to {actual}, "
                    f"expected {entry.size} bytes with {entry.digest}"
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def verify(self, entry: FileEntry) -> None:
        """Re-hash a cached blob; raise IntegrityError naming the file and both digests."""
        path = self.blob_path(entry.digest)
        hasher = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                hasher.update(chunk)
        actual = "sha256:" + hasher.hexdigest()
        if actual != entry.digest:
            raise IntegrityError(
                f"{entry.path}: cached file {path} hashes to {actual}, expected {entry.digest}"
            )
        self._verified.add(entry.digest)

    def blob(self, entry: FileEntry, opener: Opener) -> Path:
        """The cached, verified blob of ``entry``, downloaded through ``opener`` when missing."""
        path = self.blob_path(entry.digest)
        if not path.exists():
            (self.root / "locks").mkdir(parents=True, exist_ok=True)
            with FileLock(self.root / "locks" / f"{_hex(entry.digest)}.lock"):
                if not path.exists():  # another process may have fetched it meanwhile
                    self._write(entry, opener)
                    self._verified.add(entry.digest)
        if entry.digest not in self._verified:
            self.verify(entry)
        return path

    def version(self, resolution: Resolution, opener: Opener) -> Path:
        """``versions/<ns>/<name>/<version>/``: the version's files as links into blobs/."""
        folder = self.root / "versions" / resolution.namespace / resolution.name
        folder = folder / resolution.version
        folder.mkdir(parents=True, exist_ok=True)
        for entry in resolution.files:
            blob = self.blob(entry, opener)
            link = folder / entry.path
            if link.is_symlink() and link.resolve() == blob.resolve():
                continue
            tmp = folder / f".{entry.path}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.path.relpath(blob, folder))
            os.replace(tmp, link)
        return folder

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
