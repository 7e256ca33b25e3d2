"""The Store protocol every backend implements, blob keys, and the verified copy out of a store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from registry.errors import IntegrityError
from registry.manifest import FileEntry, Manifest, digest_stream


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


@dataclass(frozen=True)
class Release:
    """Where a releasing store put a version: ``revision`` is a commit SHA, never a moving ref."""

    repo: str
    revision: str


@runtime_checkable
class Releasing(Protocol):
    """A store that also publishes each version in its own native form (the Hub's repos)."""

    def repo_for(self, namespace: str, name: str) -> str:
        """Where releases of ``namespace/name`` go; InvalidSpec if the store cannot name it."""

    def release(
        self, namespace: str, name: str, version: str, manifest: Manifest, base_model: str | None
    ) -> Release:
        """Publish the version's files; idempotent for the same content, else Conflict."""


def blob_key(digest: str) -> str:
    """``sha256/ab/cd/<hex>``: two fan-out levels keep directories and S3 prefixes small."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}/{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}"


def copy_hashing(source: BinaryIO, out: BinaryIO) -> str:
    """Copy ``source`` into ``out`` in chunks; the ``sha256:`` digest of the bytes copied."""
    return digest_stream(source, out=out)[0]


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
            with store.open(entry.digest) as source, staged.open("wb") as out:
                actual = copy_hashing(source, out)
            if actual != entry.digest:
                raise IntegrityError(
                    f"{entry.path}: the store returned content hashing to {actual}, "
                    f"expected {entry.digest}"
                )
            written.append(staged)
        for staged in written:
            os.replace(staged, dest / staged.name)
    return [dest / p.name for p in written]
