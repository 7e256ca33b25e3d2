"""``stance verify --all``: every published version's blobs re-read from the store and re-hashed.

What a restore, a disk fault or a hand in the bucket can break, and a publish never does: a blob
a version references that is gone from the store, or whose bytes no longer hash to its digest.
Each blob is read once however many versions share it (rows come ordered by digest, so memory
stays flat at any catalog size). The catalog's own rows are checked too: a version's manifest
must hash to its digest and list exactly its file rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registry.catalog.models import Adapter, Namespace, Version, VersionFile
from registry.errors import NotFound
from registry.manifest import FileEntry, Manifest, digest_bytes, digest_stream
from registry.stores import Store

BATCH = 1000  # rows fetched at a time: flat memory however many versions there are


class BlobProblem(BaseModel):
    """A referenced blob that is missing from the store, or whose bytes hash otherwise."""

    digest: str
    size: int  # what the catalog recorded
    actual_digest: str | None = None  # what the store's bytes hash to (corrupt blobs)
    actual_size: int | None = None
    versions: list[str]  # ``ns/name@version`` of every version that references it


class Verification(BaseModel):
    """What ``verify_store`` checked and what it found; ``ok`` when nothing is wrong."""

    store: str
    versions: int
    blobs: int
    bytes: int
    missing: list[BlobProblem]
    corrupt: list[BlobProblem]
    inconsistent: list[str]  # versions whose manifest disagrees with its digest or file rows

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.inconsistent)

    def summary(self) -> str:
        """One line for people: what was checked, and what is wrong."""
        checked = f"{self.versions} version(s), {self.blobs} blob(s) in {self.store}"
        if self.ok:
            return f"verified {checked}"
        found = [
            f"{len(self.missing)} missing blob(s)" if self.missing else "",
            f"{len(self.corrupt)} corrupt blob(s)" if self.corrupt else "",
            f"{len(self.inconsistent)} inconsistent version(s)" if self.inconsistent else "",
        ]
        return f"{', '.join(f for f in found if f)} among {checked}"


def _references(session: Session) -> Iterator[tuple[str, int, str]]:
    """``(digest, size, spec)`` of every version file, ordered by digest."""
    rows = session.execute(
        select(
            VersionFile.digest,
            VersionFile.size,
            Namespace.name,
            Adapter.name,
            Version.version,
        )
        .join(Version, Version.id == VersionFile.version_id)
        .join(Adapter, Adapter.id == Version.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .order_by(VersionFile.digest, Version.id)
        .execution_options(yield_per=BATCH)
    )
    for digest, size, namespace, name, version in rows:
        yield digest, size, f"{namespace}/{name}@{version}"


def _check_blob(store: Store, digest: str, size: int, specs: list[str]) -> BlobProblem | None:
    """None when the store's bytes hash to ``digest`` with ``size``, else what is wrong."""
    try:
        with store.open(digest) as stream:
            actual, actual_size = digest_stream(stream)
    except NotFound:
        return BlobProblem(digest=digest, size=size, versions=specs)
    if actual == digest and actual_size == size:
        return None
    return BlobProblem(
        digest=digest, size=size, actual_digest=actual, actual_size=actual_size, versions=specs
    )


def _versions(session: Session) -> Iterator[tuple[str, bool]]:
    """``(spec, consistent)`` of every version: its manifest hashes to its digest, and its
    file rows make the same manifest."""
    rows = session.execute(
        select(
            Version.id,
            Version.digest,
            Version.manifest,
            Namespace.name,
            Adapter.name,
            Version.version,
            VersionFile.path,
            VersionFile.digest,
            VersionFile.size,
        )
        .join(Adapter, Adapter.id == Version.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .outerjoin(VersionFile, VersionFile.version_id == Version.id)
        .order_by(Version.id)
        .execution_options(yield_per=BATCH)
    )
    for _, group in groupby(rows, key=lambda row: row[0]):
        files = list(group)
        _, digest, manifest, namespace, name, version = files[0][:6]
        rows_of = [(p, d, s) for *_, p, d, s in files if p is not None]
        yield f"{namespace}/{name}@{version}", _consistent(digest, manifest, rows_of)


def _consistent(digest: str, manifest: str, files: list[tuple[str, str, int]]) -> bool:
    if not files or digest_bytes(manifest.encode()) != digest:
        return False
    try:
        entries = [FileEntry(path=path, digest=d, size=size) for path, d, size in files]
        return Manifest.of(entries).digest == digest
    except ValueError:  # a row no publish writes (a bad digest or name): not this manifest
        return False


def verify_store(sessions: sessionmaker[Session], store: Store) -> Verification:
    """Re-hash every blob a version references; list the missing, corrupt and inconsistent."""
    missing: list[BlobProblem] = []
    corrupt: list[BlobProblem] = []
    blobs = total = 0
    with sessions() as session:
        versions, inconsistent = 0, []
        for spec, consistent in _versions(session):
            versions += 1
            if not consistent:
                inconsistent.append(spec)
        for digest, group in groupby(_references(session), key=lambda row: row[0]):
            rows = list(group)
            size = rows[0][1]
            blobs, total = blobs + 1, total + size
            problem = _check_blob(store, digest, size, sorted({spec for _, _, spec in rows}))
            if problem is not None:
                (missing if problem.actual_digest is None else corrupt).append(problem)
    return Verification(
        store=store.url,
        versions=versions,
        blobs=blobs,
        bytes=total,
        missing=missing,
        corrupt=corrupt,
        inconsistent=inconsistent,
    )
