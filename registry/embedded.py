"""The embedded registry: the service over a local catalog and store, one transaction per call.

Whoever holds the catalog is its operator: local calls act with admin rights, as ``actor``.
"""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from registry.access import operator
from registry.catalog import analysis, publishing, queries, service, tokens
from registry.catalog.audit import refusals_recorded
from registry.catalog.db import open_catalog, transaction
from registry.catalog.gc import Collection, collect_garbage
from registry.catalog.sqlite_direct import open_reader
from registry.catalog.tokens import NewToken, TokenInfo
from registry.catalog.verification import Verification, verify_store
from registry.lora.compare import Comparison, Diff
from registry.manifest import FileEntry, Manifest
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
from registry.settings import Settings
from registry.spec import parse_spec
from registry.stores import copy_verified, open_store
from registry.transfer.cache import Cache


class EmbeddedRegistry:
    """Publish, resolve and fetch against the catalog and store named by ``settings``."""

    def __init__(self, settings: Settings | None = None, *, actor: str | None = None) -> None:
        self.settings = settings or Settings()
        catalog = open_catalog(self.settings.catalog_url)
        self.engine, self.sessions = catalog.engine, catalog.sessions
        self.store = open_store(self.settings.store_url)
        self.cache = Cache(self.settings.cache_dir)
        self.caller = operator(actor or f"local:{getpass.getuser()}")
        self._direct = open_reader(self.settings.catalog_url)  # after open_catalog migrated it
        self._files: dict[str, list[FileEntry]] = {}  # by version digest: a manifest's hash

    def __repr__(self) -> str:
        return f"EmbeddedRegistry({self.engine.url!r}, store={self.store.url!r})"

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self.engine.dispose()

    def __enter__(self) -> EmbeddedRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self, action: str, target: str) -> Iterator[Session]:
        with (
            refusals_recorded(self.sessions, actor=self.caller.actor, action=action, target=target),
            transaction(self.sessions) as session,
        ):
            yield session

    def publish(self, folder: Path, target: str, *, alias: str | None = None) -> PublishResult:
        """Publish the PEFT adapter in ``folder`` as ``[ns/]name@version``."""
        with refusals_recorded(
            self.sessions, actor=self.caller.actor, action="publish", target=target
        ):
            return publishing.publish_folder(
                self.sessions,
                self.store,
                Path(folder),
                target=target,
                alias=alias,
                caller=self.caller,
                max_weights_bytes=self.settings.max_weights_bytes,
            )

    def resolve(self, spec: str) -> Resolution:
        """The exact version and digest that ``spec`` selects now."""
        with self.engine.connect() as conn:
            return queries.resolve_spec(conn, spec)

    def poll(self, spec: str, etag: str | None = None) -> tuple[Resolution | None, str | None]:
        """Like ``RemoteRegistry.poll``: the resolution if it changed since ``etag``."""
        found = self.resolve(spec)
        tag = hashlib.sha256(found.model_dump_json().encode()).hexdigest()[:32]
        return (None, etag) if tag == etag else (found, tag)

    def fetch(self, spec: str, dest: Path | None = None) -> Path:
        """A folder with the files of ``spec``'s version, each verified against its digest.

        Without ``dest`` it is the version's folder in the shared client cache (read-only);
        with ``dest`` the files are copied there.
        """
        resolution = self._located(spec)
        if dest is None:
            return self.cache.version(resolution, self.store.open, resume=self.store.open)
        copy_verified(self.store, resolution.files, Path(dest))
        return Path(dest)

    def _located(self, spec: str) -> Resolution:
        """``resolve(spec)``, on a SQLite catalog by the stdlib reader when it can answer.

        A warm fetch is then the lookup and a few syscalls: SQLAlchemy's connection and the
        manifest's validation cost several times the query. A version's files are parsed once:
        its digest is its manifest's hash.
        """
        found = self._direct.resolve(parse_spec(spec)) if self._direct is not None else None
        if found is None:
            return self.resolve(spec)
        files = self._files.get(found.digest)
        if files is None:
            files = self._files[found.digest] = Manifest.model_validate_json(found.manifest).files
        return Resolution(
            namespace=found.namespace,
            name=found.name,
            version=found.version,
            digest=found.digest,
            yanked=found.yanked,
            yanked_reason=found.yanked_reason,
            base_model=found.base_model,
            files=files,
            hub_repo=found.hub_repo,
            hub_revision=found.hub_revision,
        )

    def open_blob(self, digest: str, start: int = 0) -> BinaryIO:
        return self.store.open(digest, start)

    def show(self, spec: str) -> VersionDetail:
        with self.sessions() as session:
            return queries.version_detail(session, spec)

    def adapter(self, ref: str) -> AdapterDetail:
        with self.sessions() as session:
            return queries.adapter_detail(session, ref)

    def search(self, filters: SearchQuery | None = None) -> Page[AdapterSummary]:
        with self.sessions() as session:
            return queries.search(session, filters)

    def set_alias(
        self, ref: str, alias: str, version: str, *, protect: bool | None = None
    ) -> VersionRef:
        with self._write("alias.set", f"{ref}@{alias}") as session:
            return service.set_alias(
                session, ref, alias, version, caller=self.caller, protect=protect
            )

    def remove_alias(self, ref: str, alias: str) -> None:
        with self._write("alias.rm", f"{ref}@{alias}") as session:
            service.remove_alias(session, ref, alias, caller=self.caller)

    def alias_history(self, ref: str) -> list[AliasMove]:
        with self.sessions() as session:
            return queries.alias_history(session, ref)

    def yank(self, spec: str, *, reason: str | None = None) -> VersionRef:
        with self._write("yank", spec) as session:
            return service.yank(session, spec, reason=reason, caller=self.caller)

    def unyank(self, spec: str) -> VersionRef:
        with self._write("unyank", spec) as session:
            return service.unyank(session, spec, caller=self.caller)

    def audit(
        self, *, limit: int = 100, before: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        with self.sessions() as session:
            return queries.audit_log(session, limit=limit, before=before, action=action)

    def create_token(
        self,
        scope: str,
        *,
        namespaces: list[str] | None = None,
        description: str | None = None,
        expires_in: timedelta | None = None,
    ) -> NewToken:
        """Mint a token (the operator's bootstrap path); its secret is shown only here."""
        with self._write("token.create", scope) as session:
            return tokens.create_token(
                session,
                scope=scope,
                namespaces=namespaces,
                description=description,
                expires_in=expires_in,
                actor=self.caller.actor,
            )

    def list_tokens(self) -> list[TokenInfo]:
        with self.sessions() as session:
            return tokens.list_tokens(session)

    def revoke_token(self, token_id: str) -> TokenInfo:
        with self._write("token.revoke", token_id) as session:
            return tokens.revoke_token(session, token_id, actor=self.caller.actor)

    def diff(self, x: str, y: str) -> Diff:
        """Exact cosine of two adapters' updates; each side a published spec or a folder."""
        with self.sessions() as session:
            return analysis.diff(
                session,
                self.store,
                x,
                y,
                folders=True,
                max_weights_bytes=self.settings.max_weights_bytes,
            )

    def compare(self, specs: list[str]) -> Comparison:
        """2 to 8 adapters side by side; each a published spec or a folder (as in ``diff``)."""
        with self.sessions() as session:
            return analysis.compare_specs(
                session,
                self.store,
                list(specs),
                folders=True,
                max_weights_bytes=self.settings.max_weights_bytes,
            )

    def collect_garbage(self, *, grace: timedelta, dry_run: bool = False) -> Collection:
        """Delete blobs no version references once older than ``grace`` (``stance gc``)."""
        return collect_garbage(self.sessions, self.store, grace=grace, dry_run=dry_run)

    def verify_store(self) -> Verification:
        """Re-hash every published version's blobs in the store (``stance verify --all``)."""
        return verify_store(self.sessions, self.store)

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
