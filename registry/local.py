"""The embedded registry: the service over a local catalog and store, one transaction per call."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import BinaryIO

from registry import analysis, queries, service
from registry.analysis import Diff, SimilarAdapter
from registry.cache import Cache
from registry.db import ensure_schema, make_engine, session_factory, transaction
from registry.schemas import (
    AdapterDetail,
    AdapterSummary,
    Page,
    PublishResult,
    Resolution,
    VersionDetail,
    VersionRef,
)
from registry.settings import Settings
from registry.spec import parse_publish_target, validate_alias
from registry.stores import copy_verified, open_store


class LocalRegistry:
    """Publish, resolve and fetch against the catalog and store named by ``settings``."""

    def __init__(self, settings: Settings | None = None, *, actor: str | None = None) -> None:
        self.settings = settings or Settings()
        self.engine = make_engine(self.settings.catalog_url)
        try:
            ensure_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self.sessions = session_factory(self.engine)
        self.store = open_store(self.settings.store_url)
        self.cache = Cache(self.settings.cache_dir)
        self.actor = actor or f"local:{getpass.getuser()}"

    def __repr__(self) -> str:
        return f"LocalRegistry({self.engine.url!r}, store={self.store.url!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def publish(self, folder: Path, target: str, *, alias: str | None = None) -> PublishResult:
        """Publish the PEFT adapter in ``folder`` as ``[ns/]name@version``."""
        parse_publish_target(target)
        if alias is not None:
            validate_alias(alias)
        staged = service.stage_folder(
            self.store, Path(folder), max_weights_bytes=self.settings.max_weights_bytes
        )
        with transaction(self.sessions) as session:
            return service.publish(session, staged, target=target, alias=alias, actor=self.actor)

    def resolve(self, spec: str) -> Resolution:
        """The exact version and digest that ``spec`` selects now."""
        with self.sessions() as session:
            return queries.resolve_spec(session, spec)

    def fetch(self, spec: str, dest: Path | None = None) -> Path:
        """A folder with the files of ``spec``'s version, each verified against its digest.

        Without ``dest`` it is the version's folder in the shared client cache (read-only);
        with ``dest`` the files are copied there.
        """
        resolution = self.resolve(spec)
        if dest is None:
            return self.cache.version(resolution, self.store.open)
        copy_verified(self.store, resolution.files, Path(dest))
        return Path(dest)

    def open_blob(self, digest: str) -> BinaryIO:
        return self.store.open(digest)

    def show(self, spec: str) -> VersionDetail:
        with self.sessions() as session:
            return queries.version_detail(session, spec)

    def adapter(self, ref: str) -> AdapterDetail:
        with self.sessions() as session:
            return queries.adapter_detail(session, ref)

    def search(
        self,
        text: str | None = None,
        *,
        base_model: str | None = None,
        target: str | None = None,
        rank: int | None = None,
        namespace: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AdapterSummary]:
        with self.sessions() as session:
            return queries.search(
                session,
                text=text,
                base_model=base_model,
                target=target,
                rank=rank,
                namespace=namespace,
                limit=limit,
                cursor=cursor,
            )

    def set_alias(self, ref: str, alias: str, version: str) -> VersionRef:
        with transaction(self.sessions) as session:
            return service.set_alias(session, ref, alias, version, actor=self.actor)

    def remove_alias(self, ref: str, alias: str) -> None:
        with transaction(self.sessions) as session:
            service.remove_alias(session, ref, alias, actor=self.actor)

    def yank(self, spec: str, *, reason: str | None = None) -> VersionRef:
        with transaction(self.sessions) as session:
            return service.yank(session, spec, reason=reason, actor=self.actor)

    def unyank(self, spec: str) -> VersionRef:
        with transaction(self.sessions) as session:
            return service.unyank(session, spec, actor=self.actor)

    def diff(self, x: str, y: str) -> Diff:
        """Exact cosine of two adapters' updates; each side a published spec or a folder."""
        with self.sessions() as session:
            return analysis.diff(
                session, self.store, x, y, max_weights_bytes=self.settings.max_weights_bytes
            )

    def similar(self, spec: str, *, limit: int = 10) -> list[SimilarAdapter]:
        """Published adapters on the same base model, most similar update first."""
        with self.sessions() as session:
            return analysis.similar(
                session,
                self.store,
                spec,
                limit=limit,
                max_weights_bytes=self.settings.max_weights_bytes,
            )
