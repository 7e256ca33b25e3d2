"""Blob stores behind one small protocol; ``open_store(url)`` picks the backend from the URL."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from registry.errors import IntegrityError, InvalidSpec
from registry.manifest import CHUNK, FileEntry


@dataclass(frozen=True)
class StoredBlob:
    digest: str
    size: int
    modified: datetime


@runtime_checkable
class Store(Protocol):
    """Content-addressed blobs: written once under their digest, verified on the way in."""

    url: str

    def put(self, digest: str, source: BinaryIO) -> None:
        """Store ``source`` under ``digest``; raise IntegrityError if its bytes hash otherwise."""

    def open(self, digest: str, start: int = 0) -> BinaryIO:
        """A binary stream of the blob from byte ``start`` on; raise NotFound if there is none."""

    def exists(self, digest: str) -> bool: ...

    def delete(self, digest: str) -> None: ...

    def iter(self) -> Iterator[StoredBlob]:
        """Every blob in the store, for garbage collection."""


def blob_key(digest: str) -> str:
    """``sha256/ab/cd/<hex>``: two fan-out levels keep directories and S3 prefixes small."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}/{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}"


def open_store(url: str) -> Store:
    """The store for ``url``: ``file:///abs/path`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from registry.stores.local import LocalStore

        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidSpec(f"store URL {url!r} names no bucket: expected s3://bucket/prefix")
        from registry.stores.s3 import S3Store

        return S3Store(parsed.netloc, unquote(parsed.path))
    raise InvalidSpec(
        f"unsupported store URL {url!r}: expected file:///absolute/path or s3://bucket/prefix"
    )


def copy_verified(store: Store, entries: Iterable[FileEntry], dest: Path) -> list[Path]:
    """Write ``entries`` from ``store`` into ``dest``, all or nothing, each checked on its digest.

    Files land in a temporary sibling folder first and are renamed into place only after every
    digest matched, so a corrupt blob leaves ``dest`` exactly as it was.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=dest, prefix=".stance-") as tmp:
        for entry in entries:
            staged = Path(tmp) / entry.path
            hasher = hashlib.sha256()
            with store.open(entry.digest) as source, staged.open("wb") as out:
                while chunk := source.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            actual = "sha256:" + hasher.hexdigest()
            if actual != entry.digest:
                raise IntegrityError(
                    f"{entry.path}: the store returned content hashing to {actual}, "
                    f"expected {entry.digest}"
                )
            written.append(staged)
        for staged in written:
            os.replace(staged, dest / staged.name)
    return [dest / p.name for p in written]
