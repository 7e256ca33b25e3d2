"""Configuration from the environment (``STANCE_*``), each also settable from the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
