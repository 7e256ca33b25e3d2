"""``AdapterRegistry``: what the loader, the lock file code and the CLI need from a registry.

``EmbeddedRegistry`` (catalog + store in this process) and ``RemoteRegistry`` (HTTP) both
satisfy it, and raise the same ``registry.errors`` for the same failures. It sits after the
``lora`` and ``transfer`` rooms because its shapes (``Diff``, ``Cache``) live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol, Self, runtime_checkable

from registry.lora.compare import Comparison, Diff
from registry.schemas import (
    AdapterDetail,
    AdapterSummary,
    AliasMove,
    AuditEntry,
    Page,
    PublishResult,
    Resolution,
    SearchQuery,
    SimilarAdapter,
    VersionDetail,
    VersionRef,
)
from registry.transfer.cache import Cache


@runtime_checkable
class AdapterRegistry(Protocol):
    """Publish, discover, pin and fetch adapter versions."""

    cache: Cache  # the verified client cache that ``fetch`` fills

    def publish(self, folder: Path, target: str, *, alias: str | None = None) -> PublishResult:
        """Publish the PEFT adapter in ``folder`` as ``[ns/]name@version``."""
        ...

    def resolve(self, spec: str) -> Resolution:
        """The exact version, digest and files that ``spec`` selects now."""
        ...

    def poll(self, spec: str, etag: str | None = None) -> tuple[Resolution | None, str | None]:
        """The resolution if it changed since ``etag`` (else None), and the new tag."""
        ...

    def fetch(self, spec: str, dest: Path | None = None) -> Path:
        """A folder with the version's files, each verified against its digest."""
        ...

    def open_blob(self, digest: str, start: int = 0) -> BinaryIO: ...

    def show(self, spec: str) -> VersionDetail: ...

    def adapter(self, ref: str) -> AdapterDetail: ...

    def search(self, filters: SearchQuery | None = None) -> Page[AdapterSummary]: ...

    def set_alias(
        self, ref: str, alias: str, version: str, *, protect: bool | None = None
    ) -> VersionRef: ...

    def remove_alias(self, ref: str, alias: str) -> None: ...

    def alias_history(self, ref: str) -> list[AliasMove]: ...

    def yank(self, spec: str, *, reason: str | None = None) -> VersionRef: ...

    def unyank(self, spec: str) -> VersionRef: ...

    def audit(
        self, *, limit: int = 100, before: int | None = None, action: str | None = None
    ) -> list[AuditEntry]: ...

    def diff(self, x: str, y: str) -> Diff: ...

    def compare(self, specs: list[str]) -> Comparison:
        """2 to 8 adapters side by side: cosine matrix, per-layer ||dW|| and raw ||A||."""
        ...

    def similar(self, spec: str, *, limit: int = 10) -> list[SimilarAdapter]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...
