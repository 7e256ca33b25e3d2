"""Garbage collection: blobs that no version references, once they are older than a grace period.

Publishing uploads blobs first and commits the catalog row after (``service.stage_folder`` then
``service.publish``), so a crash leaves unreferenced blobs and never a version without its blobs.
Those blobs are collected here. The grace period protects a publish still in flight: its blobs
are in the store, young, and not referenced *yet*; keep it longer than the slowest publish.

The grace period alone cannot protect a publish of bytes identical to an old unreferenced blob:
it finds the blob present, uploads nothing, and a collection may delete the blob before the
version is committed. So a collection works in the catalog first: one transaction records a
``GcRun`` and *condemns* the blobs it will delete (``blobs.condemned_by``), having made sure no
version references them; only then are they deleted from the store, and the run is marked
finished once all are gone. A publisher reads a ``Watermark`` (the runs it knows of) before it
checks the store for its blobs, and its commit, which serialises with the condemning
transaction, refuses blobs condemned by any run that had not finished by then: they may be
gone. Condemnations by runs that had finished are taken back (those bytes were uploaded again).
A run that died before finishing is finished by the next collection.

Each collection also sweeps the ``uploads`` rows (the per-token quota of uncommitted bytes,
``quotas.upload_allowance``) that a version now references or that are older than the grace
period: their blobs are committed, or collected by this very run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from registry.catalog.db import transaction
from registry.catalog.models import Blob, GcRun, Upload, VersionFile, utcnow
from registry.errors import Conflict
from registry.stores import Store, StoredBlob

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
    upload_rows: int = 0  # quota rows swept: committed, or older than the grace period


@dataclass(frozen=True)
class Watermark:
    """The gc runs a publisher knew of before it checked the store for its blobs."""

    last: int  # the highest run id started
    unfinished: frozenset[int]

    def covers(self, run: int) -> bool:
        """Whether ``run`` had deleted everything it condemned when this was read."""
        return run <= self.last and run not in self.unfinished


def watermark(session: Session) -> Watermark:
    """Read before a publish checks or uploads its blobs; ``publish`` then refuses what later
    runs condemned."""
    last = session.scalar(select(func.max(GcRun.id))) or 0
    unfinished = session.scalars(select(GcRun.id).where(GcRun.finished_at.is_(None)))
    return Watermark(last, frozenset(unfinished))


def revive(session: Session, digests: list[str], mark: Watermark) -> None:
    """Refuse a version whose blobs a gc run condemned after ``mark`` (they may be gone); take
    back earlier condemnations (those bytes were uploaded again after their deletion).

    Call it after inserting the version's files: on PostgreSQL that insert waits for a
    condemning transaction to end (``_hold_references``), so this read sees what it did.
    """
    rows = session.execute(
        select(Blob.digest, Blob.condemned_by).where(
            Blob.digest.in_(digests), Blob.condemned_by.is_not(None)
        )
    ).all()
    late = sorted(digest for digest, run in rows if run is not None and not mark.covers(run))
    if late:
        raise Conflict(
            f"blob(s) {', '.join(late)} were garbage-collected while this publish was in "
            "flight; publish again (it uploads them anew)"
        )
    if rows:
        session.execute(
            update(Blob)
            .where(Blob.digest.in_([digest for digest, _ in rows]))
            .values(condemned_by=None)
            .execution_options(synchronize_session=False)
        )


def _referenced(session: Session) -> set[str]:
    return set(session.scalars(select(VersionFile.digest).distinct()))


def _hold_references(session: Session) -> None:
    """Keep versions from referencing blobs until this transaction ends (SQLite's write
    transaction already excludes every other writer)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE version_files IN SHARE MODE"))


def _orphan_rows(cutoff: datetime) -> ColumnElement[bool]:
    """``blobs`` rows that no version file points at and no publish can still need: never
    condemned (only by hand: versions are never deleted), or condemned by a run that finished
    longer ago than the grace period (a publish in flight that long is not protected anyway)."""
    settled = select(GcRun.id).where(GcRun.finished_at <= cutoff)
    return and_(
        ~exists().where(VersionFile.digest == Blob.digest),
        Blob.created_at <= cutoff,
        or_(Blob.condemned_by.is_(None), Blob.condemned_by.in_(settled)),
    )


def _settled_uploads(cutoff: datetime) -> ColumnElement[bool]:
    """Upload rows that no longer count against a quota: committed, or as old as gc allows."""
    return or_(Upload.created_at <= cutoff, exists().where(VersionFile.digest == Upload.digest))


def _sweep_uploads(session: Session, cutoff: datetime, *, dry_run: bool) -> int:
    if dry_run:
        counted = select(func.count()).select_from(Upload).where(_settled_uploads(cutoff))
        return session.scalar(counted) or 0
    swept = session.execute(
        delete(Upload).where(_settled_uploads(cutoff)).execution_options(synchronize_session=False)
    )
    return int(swept.rowcount or 0)  # type: ignore[attr-defined]


def _orphans(session: Session, cutoff: datetime) -> list[str]:
    return list(session.scalars(select(Blob.digest).where(_orphan_rows(cutoff))))


def _unreferenced(session: Session, listed: list[StoredBlob]) -> list[FreedBlob]:
    referenced = _referenced(session)
    return sorted(
        (
            FreedBlob(digest=b.digest, size=b.size, modified=b.modified)
            for b in listed
            if b.digest not in referenced
        ),
        key=lambda b: b.digest,
    )


def _condemn(session: Session, freed: list[FreedBlob], run: int) -> None:
    digests = [b.digest for b in freed]
    known = set(session.scalars(select(Blob.digest).where(Blob.digest.in_(digests))))
    session.add_all(Blob(digest=b.digest, size=b.size) for b in freed if b.digest not in known)
    session.flush()
    session.execute(
        update(Blob)
        .where(Blob.digest.in_(digests))
        .values(condemned_by=run)
        .execution_options(synchronize_session=False)
    )


def _execute(sessions: sessionmaker[Session], store: Store, run: int, digests: list[str]) -> None:
    """Delete what ``run`` condemned from the store, then mark the run finished."""
    for digest in digests:
        store.delete(digest)
    if digests and isinstance(store, Reclaimable):
        store.reclaim()
    with transaction(sessions) as session:
        session.execute(update(GcRun).where(GcRun.id == run).values(finished_at=utcnow()))


def _finish_abandoned(sessions: sessionmaker[Session], store: Store) -> None:
    """Finish runs that died between condemning and finishing (their blobs stay refused)."""
    with sessions() as session:
        runs = list(session.scalars(select(GcRun.id).where(GcRun.finished_at.is_(None))))
        condemned = {
            run: list(session.scalars(select(Blob.digest).where(Blob.condemned_by == run)))
            for run in runs
        }
    for run, digests in condemned.items():
        _execute(sessions, store, run, digests)


def collect_garbage(
    sessions: sessionmaker[Session],
    store: Store,
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Collection:
    """Delete unreferenced blobs older than ``grace`` from ``store``, and settled catalog rows.

    No transaction is open while the store deletes: publishers never wait on the store.
    """
    if grace < timedelta(0):
        raise ValueError("the grace period cannot be negative")
    cutoff = (now or datetime.now(UTC)) - grace
    # The store is listed before the catalog is read: a version committed in between is seen.
    listed = [blob for blob in store.iter() if blob.modified <= cutoff]
    if dry_run:
        with sessions() as session:
            freed = _unreferenced(session, listed)
            rows = _orphans(session, cutoff)
            swept = _sweep_uploads(session, cutoff, dry_run=True)
    else:
        _finish_abandoned(sessions, store)
        with transaction(sessions) as session:
            _hold_references(session)
            run = GcRun()
            session.add(run)
            session.flush()
            freed = _unreferenced(session, listed)
            _condemn(session, freed, run.id)
            rows = _orphans(session, cutoff)
            if rows:
                session.execute(
                    delete(Blob)
                    .where(Blob.digest.in_(rows), _orphan_rows(cutoff))
                    .execution_options(synchronize_session=False)
                )
        _execute(sessions, store, run.id, [b.digest for b in freed])
        with transaction(sessions) as session:
            swept = _sweep_uploads(session, cutoff, dry_run=False)
    leftovers = store.sweep(cutoff, dry_run=dry_run) if isinstance(store, Sweepable) else 0
    return Collection(
        store=store.url,
        dry_run=dry_run,
        grace_seconds=grace.total_seconds(),
        count=len(freed),
        bytes=sum(b.size for b in freed),
        digests=[b.digest for b in freed],
        blobs=freed,
        catalog_rows=len(rows),
        leftover_uploads=leftovers,
        upload_rows=swept,
    )
