"""Configuration from the environment (``STANCE_*``), each also settable from the CLI."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything a registry process needs to know; built at the edge, never at import time."""

    model_config = SettingsConfigDict(env_prefix="STANCE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".stance")
    database_url: str | None = None
    store: str | None = None
    registry: str | None = None
    token: str | None = None
    anonymous_read: bool = True
    # Refuse adapter weights above this size before reading them (bytes).
    max_weights_bytes: int = 4 * 1024**3

    # Server limits (README "Security model"): every one is enforced before the work it bounds.
    max_json_bytes: int = Field(default=MiB, ge=1024)  # any request body but a blob upload
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)  # request line plus headers
    header_timeout: float = Field(default=10.0, gt=0)  # a connection's headers must arrive by
    keep_alive_timeout: int = Field(default=5, ge=1)  # idle seconds between requests
    body_timeout: float = Field(default=30.0, gt=0)  # grace before body_min_rate applies
    body_min_rate: int = Field(default=64 * 1024, ge=1)  # bytes/s a body must average after it
    max_concurrent_uploads: int = Field(default=4, ge=1)  # blob PUTs in flight per token
    upload_quota_bytes: int = Field(default=16 * 1024**3, ge=0)  # uncommitted bytes per token
    analysis_workers: int = Field(default=2, ge=1)  # inspections, diffs, similar at a time
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks,
    # comma-separated; "*" trusts any peer). Empty: the peer's address is the client's.
    trusted_proxies: Annotated[list[str], NoDecode] = []

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> list[str]:
        items = value.split(",") if isinstance(value, str) else list(value)
        proxies = [str(item).strip() for item in items if str(item).strip()]
        for proxy in proxies:
            if proxy != "*":
                ipaddress.ip_network(proxy, strict=False)  # ValueError: a clear settings error
        return proxies

    @property
    def max_blob_bytes(self) -> int:
        """The largest blob a server accepts or a client downloads: the weights plus headroom."""
        return self.max_weights_bytes + MiB

    @property
    def catalog_url(self) -> str:
        """The SQLAlchemy URL of the catalog: the explicit one, else SQLite under the home."""
        return self.database_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def store_url(self) -> str:
        """The blob store URL: the explicit one, else a folder under the home."""
        return self.store or (self.home / "blobs").as_uri()
