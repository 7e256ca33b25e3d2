"""Request bodies of the HTTP API (responses reuse registry.schemas)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from registry.manifest import FileEntry


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
    store: str
