"""Garbage collection: blobs that no version references, once they are older than a grace period.

Publishing uploads blobs first and commits the catalog row after (``service.stage_folder`` then
``service.publish``), so a crash leaves unreferenced blobs and never a version without its blobs.
Those blobs are collected here. The grace period protects a publish still in flight: its blobs
are in the store, young, and not referenced *yet*; keep it longer than the slowest publish.

Order matters: the store is listed *before* the catalog is read, so a version committed between
the two steps is seen as referencing its blobs. What remains is a narrow race that the grace
period alone cannot close: a publish of bytes identical to an old unreferenced blob finds the
blob present (no re-upload). The local store then makes the blob young again, so only a
collection that listed it in the moment before can still delete it (on S3 and the Hub that
refresh would cost a copy or a commit, so there the window is the whole collection).
``stance verify`` detects such a version; publishing it again re-uploads the blob.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, delete, exists, select
from sqlalchemy.orm import Session

from registry.models import Blob, VersionFile
from registry.stores import Store

DEFAULT_GRACE = timedelta(hours=1)


@runtime_checkable
class Sweepable(Protocol):
    """A store that can also remove half-finished uploads left by killed processes (S3)."""

    def sweep(self, before: datetime, *, dry_run: bool = False) -> int: ...


@runtime_checkable
class Reclaimable(Protocol):
    """A store whose deletions free space only once history forgets them (the Hub's repos)."""

    def reclaim(self) -> None: ...


class FreedBlob(BaseModel):
    digest: str
    size: int
    modified: datetime


class Collection(BaseModel):
    """What a collection freed (or, with ``dry_run``, would free)."""

    store: str
    dry_run: bool
    grace_seconds: float
    count: int
    bytes: int
    digests: list[str]
    blobs: list[FreedBlob]
    catalog_rows: int
    leftover_uploads: int


def _referenced(session: Session) -> set[str]:
    return set(session.scalars(select(VersionFile.digest).distinct()))


def _orphan_rows(cutoff: datetime) -> ColumnElement[bool]:
    """``blobs`` rows that no version file points at (none exist today: versions are never
    deleted; a row could only be orphaned by hand or by a future delete)."""
    return and_(~exists().where(VersionFile.digest == Blob.digest), Blob.created_at <= cutoff)


def collect_garbage(
    session: Session,
    store: Store,
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Collection:
    """Delete unreferenced blobs older than ``grace`` from ``store`` and the catalog.

    Flushes, never commits: the caller owns the transaction. Store deletions cannot be rolled
    back, which is safe: a blob is deleted only when nothing references it.
    """
    if grace < timedelta(0):
        raise ValueError("the grace period cannot be negative")
    cutoff = (now or datetime.now(UTC)) - grace
    listed = [blob for blob in store.iter() if blob.modified <= cutoff]
    referenced = _referenced(session)  # read after listing: see the docstring of this module
    freed = sorted(
        (
            FreedBlob(digest=b.digest, size=b.size, modified=b.modified)
            for b in listed
            if b.digest not in referenced
        ),
        key=lambda b: b.digest,
    )
    orphans = list(session.scalars(select(Blob.digest).where(_orphan_rows(cutoff))))
    if not dry_run:
        for blob in freed:
            store.delete(blob.digest)
        if freed and isinstance(store, Reclaimable):
            store.reclaim()
        if orphans:
            session.execute(
                delete(Blob)
                .where(Blob.digest.in_(orphans), _orphan_rows(cutoff))
                .execution_options(synchronize_session=False)
            )
        session.flush()
    leftovers = store.sweep(cutoff, dry_run=dry_run) if isinstance(store, Sweepable) else 0
    return Collection(
        store=store.url,
        dry_run=dry_run,
        grace_seconds=grace.total_seconds(),
        count=len(freed),
        bytes=sum(b.size for b in freed),
        digests=[b.digest for b in freed],
        blobs=freed,
        catalog_rows=len(orphans),
        leftover_uploads=leftovers,
    )
