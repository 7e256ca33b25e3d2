"""Pydantic shapes that cross an edge (CLI JSON, HTTP, client), kept apart from the ORM models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from registry.manifest import FileEntry


class VersionRef(BaseModel):
    """The contract of ``stance resolve --json``: what a spec points at."""

    namespace: str
    name: str
    version: str
    digest: str
    yanked: bool

    @property
    def spec(self) -> str:
        return f"{self.namespace}/{self.name}@{self.version}"


class Resolution(VersionRef):
    yanked_reason: str | None = None
    base_model: str | None = None
    files: list[FileEntry] = []
    # Set when the version was released to the Hub (an ``hf://`` store): repo id, commit SHA.
    hub_repo: str | None = None
    hub_revision: str | None = None


class PublishResult(BaseModel):
    namespace: str
    name: str
    version: str
    digest: str
    created: bool
    warnings: list[str] = []


class AliasInfo(BaseModel):
    name: str
    version: str
    protected: bool
    updated_by: str
    updated_at: datetime


class VersionSummary(BaseModel):
    version: str
    digest: str
    prerelease: bool
    yanked: bool
    yanked_reason: str | None
    base_model: str | None
    r: int
    created_at: datetime
    published_by: str
    hub_repo: str | None = None
    hub_revision: str | None = None


class VersionDetail(VersionSummary):
    namespace: str
    name: str
    yanked_at: datetime | None
    files: list[FileEntry]
    aliases: list[str]
    info: dict[str, Any]


class AdapterSummary(BaseModel):
    namespace: str
    name: str
    latest: str | None
    base_model: str | None
    r: int | None
    target_modules: list[str]
    versions: int
    updated_at: datetime  # when the latest release was published (else the adapter created)


class AdapterDetail(BaseModel):
    namespace: str
    name: str
    created_at: datetime
    latest: str | None
    versions: list[VersionSummary]
    aliases: list[AliasInfo]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class AliasMove(BaseModel):
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    at: datetime


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
