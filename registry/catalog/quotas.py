"""Per-token quotas of uncommitted uploads: what a publisher may store that no version uses.

Any publisher may upload any blob (blobs are content-addressed, not namespaced), so without a
bound one token could fill the store with bytes it never commits. Each verified upload is
recorded against its token; until a version references the blob it counts against the token's
``STANCE_UPLOAD_QUOTA_BYTES``, and ``stance gc`` sweeps the rows it no longer needs
(``registry.catalog.gc``). Functions take a session and flush, never commit.
"""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from registry.access import Caller
from registry.catalog.models import Upload, VersionFile, utcnow


def upload_allowance(session: Session, caller: Caller, *, quota: int) -> int:
    """The bytes ``caller`` may still upload: its quota less its uploads no version references
    (a publisher cannot fill the store with blobs it never commits)."""
    used = session.scalar(
        select(func.coalesce(func.sum(Upload.size), 0)).where(
            Upload.actor == caller.actor,
            ~exists().where(VersionFile.digest == Upload.digest),
        )
    )
    return max(0, quota - int(used or 0))


def record_upload(session: Session, caller: Caller, digest: str, size: int) -> None:
    """Count a verified upload against ``caller``'s quota until a version references it."""
    row = session.get(Upload, (caller.actor, digest))
    if row is None:
        try:
            with session.begin_nested():  # two uploads of one blob by one token may race
                session.add(Upload(actor=caller.actor, digest=digest, size=size))
            return
        except DBIntegrityError:
            row = session.get(Upload, (caller.actor, digest), populate_existing=True)
            assert row is not None
    row.size, row.created_at = size, utcnow()  # uploaded again: young again, as its blob is
    session.flush()
