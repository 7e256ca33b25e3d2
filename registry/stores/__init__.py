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
from registry.manifest import CHUNK, FileEntry, Manifest


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


def open_store(url: str) -> Store:
    """The store for ``url``: ``file:///abs/path``, ``s3://bucket/prefix`` or ``hf://owner``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from registry.stores.local import LocalStore

        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidSpec(f"store URL {url!r} names no bucket: expected s3://bucket/prefix")
        from registry.stores.s3 import S3Store

        return S3Store(parsed.netloc, unquote(parsed.path))
    if parsed.scheme == "hf":
        if not parsed.netloc or parsed.path.strip("/"):
            raise InvalidSpec(f"store URL {url!r}: expected hf://owner (a user or organization)")
        from registry.stores.hf import HfStore

        return HfStore(parsed.netloc)
    raise InvalidSpec(
        f"unsupported store URL {url!r}: expected file:///absolute/path, s3://bucket/prefix "
        "or hf://owner"
    )


def copy_hashing(source: BinaryIO, out: BinaryIO) -> str:
    """Copy ``source`` into ``out`` in chunks; the ``sha256:`` digest of the bytes copied."""
    hasher = hashlib.sha256()
    while chunk := source.read(CHUNK):
        hasher.update(chunk)
        out.write(chunk)
    return "sha256:" + hasher.hexdigest()


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
