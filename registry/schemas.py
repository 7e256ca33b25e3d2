"""Pydantic shapes that cross an edge (CLI JSON, HTTP, client), kept apart from the ORM models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class SimilarAdapter(BaseModel):
    """A neighbour of a version: the exact cosine of the updates, and the sketch's estimate."""

    namespace: str
    name: str
    version: str
    cosine: float
    sketch_cosine: float


class SearchQuery(BaseModel):
    """The search filters, spelled once for every caller (Python, CLI, HTTP, pages).

    Over HTTP the text is ``q``; an empty form field means "no filter", as on the pages.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str | None = Field(default=None, alias="q", max_length=64, description="text in the name")
    base_model: str | None = Field(default=None, max_length=256, description="exact base model id")
    target: str | None = Field(default=None, max_length=128, description="e.g. q_proj")
    rank: int | None = Field(default=None, ge=1, le=65536, description="LoRA rank r")
    namespace: str | None = Field(default=None, max_length=64)
    cursor: str | None = Field(default=None, max_length=512, description="next_cursor of a page")
    limit: int = Field(default=50, ge=1, le=100)

    @field_validator("text", "base_model", "target", "rank", "namespace", "cursor", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def params(self) -> dict[str, Any]:
        """The query string that asks a server the same thing."""
        return self.model_dump(by_alias=True, exclude_none=True)


class VersionCreate(BaseModel):
    """Commit a version whose blobs were uploaded with ``PUT /v1/blobs/{digest}``."""

    version: str = Field(examples=["1.2.0"])
    files: list[FileEntry]
    alias: str | None = None


class AliasUpdate(BaseModel):
    version: str = Field(examples=["1.2.0"])
    protected: bool | None = Field(default=None, description="admin only; None leaves it")


class YankRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class Health(BaseModel):
    status: str
    catalog_revision: str | None
    store: str | None = None  # only for callers who may read (anonymous ones when reads are open)
