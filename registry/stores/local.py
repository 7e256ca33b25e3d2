"""Blobs in a local folder: ``<root>/sha256/ab/cd/<hex>``, written via a temp file and rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from registry.errors import IntegrityError, NotFound
from registry.stores.base import StoredBlob, blob_key, copy_hashing


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, digest: str) -> Path:
        return self.root / blob_key(digest)

    def put(self, digest: str, source: BinaryIO) -> None:
        target = self._path(digest)
        if target.exists():
            # Re-publishing bytes gc may be about to collect: make them young again, so the
            # grace period protects this publish as it protects a fresh upload.
            os.utime(target)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                actual = copy_hashing(source, out)
            if actual != digest:
                raise IntegrityError(f"blob content hashes to {actual}, not {digest}")
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)  # the rename is the guarantee: readers never see a partial blob
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def open(self, digest: str, start: int = 0) -> BinaryIO:
        try:
            stream = self._path(digest).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store {self.url}") from None
        stream.seek(start)
        return stream

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def iter(self) -> Iterator[StoredBlob]:
        for path in sorted(self.root.glob("sha256/*/*/*")):
            if path.name.startswith("."):
                continue
            stat = path.stat()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            yield StoredBlob(f"sha256:{path.name}", stat.st_size, modified)

    def sweep(self, before: datetime, *, dry_run: bool = False) -> int:
        """Remove temp files of uploads killed before ``before`` (never blobs); their count."""
        found = 0
        for path in self.root.glob("sha256/*/*/.incoming-*"):
            if datetime.fromtimestamp(path.stat().st_mtime, UTC) < before:
                found += 1
                if not dry_run:
                    path.unlink(missing_ok=True)
        return found
