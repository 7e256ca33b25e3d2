"""The catalog's ORM models (SQLAlchemy 2). The schema itself changes only through Alembic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


intpk = Annotated[int, mapped_column(Integer, primary_key=True)]
created = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow)]
name64 = Annotated[str, mapped_column(String(64))]
digest_str = Annotated[str, mapped_column(String(71))]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Namespace(Base):
    __tablename__ = "namespaces"

    id: Mapped[intpk]
    name: Mapped[name64] = mapped_column(unique=True)
    created_at: Mapped[created]


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (
        UniqueConstraint("namespace_id", "name"),
        # Search pages are ordered by ref: a filter on an equality column reads its matches in
        # page order and stops at the page's end, however many adapters match.
        Index("ix_adapters_latest_base_model_ref", "latest_base_model", "ref"),
        Index("ix_adapters_latest_r_ref", "latest_r", "ref"),
    )

    id: Mapped[intpk]
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    name: Mapped[name64]
    # "namespace/name", set once on create (adapters are never renamed): the one column search
    # pages are ordered and keyset-paged by, so that an index, not a sort of the whole join
    # with namespaces, yields a page.
    ref: Mapped[str] = mapped_column(String(129), unique=True, index=True)
    created_at: Mapped[created]
    # The highest non-yanked release, kept by the service on publish, yank and unyank, so that
    # search filters and summaries join one row per adapter instead of ranking every version.
    # No foreign key: versions already reference adapters, and the service owns both writes.
    latest_version_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # What search filters on, copied from that release (with its targets in adapter_targets):
    # filters then read adapters alone instead of visiting every adapter's latest version.
    latest_base_model: Mapped[str | None] = mapped_column(String(256))
    latest_r: Mapped[int | None] = mapped_column(Integer)

    namespace: Mapped[Namespace] = relationship(lazy="joined")
    # Written with the adapter, never read through the ORM: search queries the table.
    suffixes: Mapped[list[AdapterSuffix]] = relationship(cascade="all, delete-orphan")


MIN_SUFFIX = 3
"""Texts this long or longer are searched through ``adapter_suffixes``; shorter ones match
most adapters, and a page of them is found sooner by reading adapters in page order."""


def name_suffixes(name: str) -> list[str]:
    """The suffixes of an adapter name that ``adapter_suffixes`` holds: a name contains a text
    exactly when one of them starts with it."""
    return [name[i:] for i in range(len(name) - MIN_SUFFIX + 1)]


class AdapterSuffix(Base):
    """Every suffix of an adapter's name at least ``MIN_SUFFIX`` long, so that "name contains
    text" is one index range (suffixes that start with the text) on both backends and costs
    what matches: ``LIKE '%text%'`` reads adapters until a page fills, all of them when few match.

    Byte order (collation "C" on PostgreSQL; SQLite's default) makes a prefix one range.
    """

    __tablename__ = "adapter_suffixes"

    suffix: Mapped[str] = mapped_column(
        String(64).with_variant(String(64, collation="C"), "postgresql"), primary_key=True
    )
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), primary_key=True)


class GcRun(Base):
    """One ``stance gc``: the blobs it condemned are deleted from the store once it started,
    and all of them are gone once it finished (see ``registry.catalog.gc``)."""

    __tablename__ = "gc_runs"

    id: Mapped[intpk]
    started_at: Mapped[created]
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Blob(Base):
    """A blob the catalog knows of: referenced by a version, or condemned by a gc run (a row
    kept as a tombstone, so a publish that saw the blob before its deletion is refused)."""

    __tablename__ = "blobs"

    digest: Mapped[digest_str] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[created]
    condemned_by: Mapped[int | None] = mapped_column(ForeignKey("gc_runs.id"), index=True)


class Upload(Base):
    """A blob a token uploaded: until a version references it, it counts against the token's
    quota of uncommitted bytes; ``stance gc`` sweeps rows older than its grace period."""

    __tablename__ = "uploads"

    actor: Mapped[str] = mapped_column(String(128), primary_key=True)
    digest: Mapped[digest_str] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[created] = mapped_column(index=True)


class Version(Base):
    """One immutable published version; ``yanked`` hides it from ranges and ``latest`` only."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "version"),
        Index("ix_versions_adapter_order", "adapter_id", "major", "minor", "patch"),
    )

    id: Mapped[intpk]
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    version: Mapped[str] = mapped_column(String(128))
    major: Mapped[int] = mapped_column(BigInteger)
    minor: Mapped[int] = mapped_column(BigInteger)
    patch: Mapped[int] = mapped_column(BigInteger)
    prerelease: Mapped[bool] = mapped_column(Boolean)
    digest: Mapped[digest_str] = mapped_column(index=True)
    manifest: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str | None] = mapped_column(String(256), index=True)
    base_revision: Mapped[str | None] = mapped_column(String(128))
    r: Mapped[int] = mapped_column(Integer, index=True)
    # Deferred: resolving (the hot path) needs neither the fingerprint nor the sketch.
    info: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)
    # registry.lora.sketch.Sketch.encode(): the first pass of "similar adapters".
    sketch: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yanked_reason: Mapped[str | None] = mapped_column(Text)
    yanked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    published_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[created]
    # Where a store that releases versions (hf://) put this one: plain PEFT users load
    # ``hub_repo`` at ``hub_revision`` (a commit SHA) and get these exact files.
    hub_repo: Mapped[str | None] = mapped_column(String(256))
    hub_revision: Mapped[str | None] = mapped_column(String(64))

    adapter: Mapped[Adapter] = relationship()
    # The manifest column already lists the files; these rows are for joins (gc, blob lookups).
    files: Mapped[list[VersionFile]] = relationship(
        order_by="VersionFile.path", cascade="all, delete-orphan"
    )


class VersionFile(Base):
    __tablename__ = "version_files"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(256), primary_key=True)
    digest: Mapped[digest_str] = mapped_column(ForeignKey("blobs.digest"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class VersionTarget(Base):
    """One row per targeted module type, so search can filter on targets with an index."""

    __tablename__ = "version_targets"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    module: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


class AdapterTarget(Base):
    """The modules the adapter's latest release targets, kept with ``latest_version_id``.

    Search filters on what an adapter is now; joining this table reads one row per adapter
    and module, where ``version_targets`` grows with every version ever published (at 100k
    versions PostgreSQL chose to scan all of it for a common module like ``q_proj``).
    """

    __tablename__ = "adapter_targets"

    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), primary_key=True)
    module: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("adapter_id", "name"),)

    id: Mapped[intpk]
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    name: Mapped[name64]
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[created]

    version: Mapped[Version] = relationship(lazy="joined")


class AliasEvent(Base):
    """Alias history: who moved which alias from what to what, and when."""

    __tablename__ = "alias_events"

    id: Mapped[intpk]
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    alias: Mapped[name64]
    from_version: Mapped[str | None] = mapped_column(String(128))
    to_version: Mapped[str | None] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[created]


class AuditEvent(Base):
    """Every write, successful or refused: actor, action, target, outcome."""

    __tablename__ = "audit_events"

    id: Mapped[intpk]
    at: Mapped[created]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(512))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Token(Base):
    """An API token: only a salted SHA-256 of the secret is kept, never the secret itself."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    salt: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    namespaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[created]
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
