"""The only code that writes the catalog: publish, alias, yank; and the reads that resolve specs.

Functions take a session, flush and never commit: the caller (CLI command, HTTP request,
``EmbeddedRegistry`` call) owns the transaction. They raise only ``registry.errors``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from sqlalchemy import delete, insert, literal, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session, lazyload

from registry.access import Caller, Scope
from registry.catalog.audit import record
from registry.catalog.gc import Watermark, revive
from registry.catalog.models import (
    Adapter,
    AdapterSuffix,
    AdapterTarget,
    Alias,
    AliasEvent,
    Blob,
    Namespace,
    Version,
    VersionFile,
    VersionTarget,
    name_suffixes,
    utcnow,
)
from registry.catalog.queries import find_adapter, find_version, latest_release
from registry.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidAdapter,
    InvalidSpec,
    NotFound,
)
from registry.lora.files import open_regular
from registry.lora.format import CARD, CONFIG, WEIGHTS
from registry.lora.inspection import AdapterInfo, inspect_dir
from registry.lora.sketch import Sketch
from registry.manifest import Manifest
from registry.schemas import PublishResult, VersionRef
from registry.semver import Version as SemVer
from registry.spec import parse_publish_target, parse_ref, parse_version, validate_alias
from registry.stores import Release, Releasing, Store, copy_verified

PUBLISHABLE = (CONFIG, WEIGHTS, CARD)
M = TypeVar("M")


def _get_or_create(session: Session, model: type[M], lookup: dict, **extra: object) -> M:
    """Insert-or-select that lets the database arbitrate races (unique constraint + savepoint)."""
    found = session.scalars(select(model).filter_by(**lookup)).one_or_none()
    if found is not None:
        return found
    try:
        with session.begin_nested():
            row = model(**lookup, **extra)
            session.add(row)
        return row
    except DBIntegrityError:
        return session.scalars(select(model).filter_by(**lookup)).one()


def _existing(session: Session, namespace: str, name: str, version: str) -> Version | None:
    adapter = find_adapter(session, namespace, name)
    return None if adapter is None else find_version(session, adapter, version)


def _same_or_conflict(existing: Version, manifest: Manifest) -> None:
    if existing.digest != manifest.digest:
        raise Conflict(
            f"{existing.adapter.namespace.name}/{existing.adapter.name}@{existing.version} "
            f"is already published with different content ({existing.digest}); versions are "
            "immutable: publish a new version"
        )


def _result(version: Version, *, created: bool, warnings: list[str]) -> PublishResult:
    return PublishResult(
        namespace=version.adapter.namespace.name,
        name=version.adapter.name,
        version=version.version,
        digest=version.digest,
        created=created,
        warnings=warnings,
    )


@dataclass(frozen=True)
class Staged:
    """Validated files whose blobs are in the store, ready to be recorded in the catalog."""

    manifest: Manifest
    info: AdapterInfo
    sketch: Sketch
    warnings: list[str]
    mark: Watermark  # the gc runs known before the store was checked for these blobs
    release: Release | None = None  # where a releasing store (the Hub) put it


def _insert_version(
    session: Session,
    *,
    namespace: str,
    name: str,
    version: SemVer,
    staged: Staged,
    actor: str,
) -> Version:
    manifest, info = staged.manifest, staged.info
    ns = _get_or_create(session, Namespace, {"name": namespace})
    adapter = _get_or_create(
        session,
        Adapter,
        {"namespace_id": ns.id, "name": name},
        ref=f"{namespace}/{name}",
        suffixes=[AdapterSuffix(suffix=s) for s in name_suffixes(name)],
    )
    for entry in manifest.files:
        _get_or_create(session, Blob, {"digest": entry.digest}, size=entry.size)
    row = Version(
        adapter=adapter,
        version=str(version),
        major=version.major,
        minor=version.minor,
        patch=version.patch,
        prerelease=bool(version.prerelease),
        digest=manifest.digest,
        manifest=manifest.canonical(),
        base_model=info.base_model,
        base_revision=info.base_revision,
        r=info.r,
        info=info.model_dump(mode="json"),
        sketch=staged.sketch.encode(),
        published_by=actor,
        hub_repo=staged.release.repo if staged.release else None,
        hub_revision=staged.release.revision if staged.release else None,
        files=[VersionFile(path=f.path, digest=f.digest, size=f.size) for f in manifest.files],
    )
    with session.begin_nested():
        session.add(row)
        session.flush()
        session.add_all(VersionTarget(version_id=row.id, module=m) for m in info.target_modules)
        revive(session, [entry.digest for entry in manifest.files], staged.mark)
    _refresh_latest(session, adapter)
    return row


def _refresh_latest(session: Session, adapter: Adapter) -> None:
    """Keep ``adapters.latest_version_id`` and ``adapter_targets`` true after every publish,
    yank and unyank.

    Writers of one adapter take turns from here (a row lock on PostgreSQL; SQLite serialises
    every writer already): the latest release is read after the lock, so a concurrent publish
    of a higher version that committed meanwhile is never overwritten by a stale answer.
    FOR NO KEY UPDATE, not FOR UPDATE: each publisher's new version row already holds the
    foreign key's KEY SHARE lock on the adapter, and FOR UPDATE would wait on the others'
    (sixteen concurrent releases deadlocked, issue 14).
    """
    session.flush()
    current = session.execute(
        select(Adapter.latest_version_id)
        .where(Adapter.id == adapter.id)
        .with_for_update(key_share=True)
    ).scalar_one()
    latest = latest_release(session, adapter)
    new_id = latest.id if latest is not None else None
    if current == new_id:
        return
    adapter.latest_version_id = new_id
    adapter.latest_base_model = latest.base_model if latest is not None else None
    adapter.latest_r = latest.r if latest is not None else None
    session.execute(delete(AdapterTarget).where(AdapterTarget.adapter_id == adapter.id))
    if new_id is not None:
        session.execute(
            insert(AdapterTarget).from_select(
                ["adapter_id", "module"],
                select(literal(adapter.id), VersionTarget.module).where(
                    VersionTarget.version_id == new_id
                ),
            )
        )
    session.flush()


def stage_folder(store: Store, folder: Path, *, max_weights_bytes: int, mark: Watermark) -> Staged:
    """Validate a PEFT folder and upload its blobs; touches no catalog (no lock held meanwhile).

    Blobs go first: a crash before the catalog commit leaves only unreferenced blobs, which
    ``stance gc`` removes; never a version without its blobs. ``mark`` is ``gc.watermark``
    read before this call.
    """
    inspection = inspect_dir(folder, max_weights_bytes=max_weights_bytes)
    manifest = inspection.manifest  # the digests of the bytes that were validated
    for entry in manifest.files:
        with open_regular(inspection.files[entry.path]) as source:
            store.put(entry.digest, source)
    return Staged(manifest, inspection.info, inspection.sketch, inspection.warnings, mark)


def stage_manifest(
    store: Store, manifest: Manifest, *, max_weights_bytes: int, mark: Watermark
) -> Staged:
    """Validate a version whose blobs were uploaded separately; inspected here, never trusted.

    ``mark`` is ``gc.watermark`` read before this call (blobs found now may be collected later).
    """
    unknown = {f.path for f in manifest.files} - set(PUBLISHABLE)
    if unknown:
        raise InvalidAdapter(f"unexpected files {sorted(unknown)}; a version holds {PUBLISHABLE}")
    missing = [f"{e.path} ({e.digest})" for e in manifest.files if not store.exists(e.digest)]
    if missing:
        raise NotFound(f"blobs not uploaded yet: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="stance-stage-") as tmp:
        copy_verified(store, manifest.files, Path(tmp))
        _check_sizes(manifest, Path(tmp))
        # Every blob was checked against its digest on the way here, and the folder holds only
        # the manifest's files: what is inspected is exactly what the manifest names.
        inspection = inspect_dir(Path(tmp), max_weights_bytes=max_weights_bytes)
    return Staged(manifest, inspection.info, inspection.sketch, inspection.warnings, mark)


def _check_sizes(manifest: Manifest, folder: Path) -> None:
    """Refuse a manifest whose sizes are not its blobs' own: the size recorded for a blob is
    shared by every tenant that publishes it, and served as its Content-Length."""
    for entry in manifest.files:
        actual = (folder / entry.path).stat().st_size
        if actual != entry.size:
            raise IntegrityError(
                f"{entry.path}: the manifest says {entry.size} bytes, but its blob "
                f"{entry.digest} has {actual}"
            )


def check_target(store: Store, target: str) -> None:
    """Refuse, before anything is uploaded, a target that is invalid or the store cannot hold."""
    namespace, name, _ = parse_publish_target(target)
    if isinstance(store, Releasing):
        store.repo_for(namespace, name)


def release(
    session: Session, store: Store, staged: Staged, *, target: str, caller: Caller
) -> Staged:
    """Release a new version through a store that publishes versions (the Hub), if it is one.

    Call it between staging and the catalog transaction, with a read session: a Hub commit
    takes seconds, and holding the catalog's write lock that long would stall every writer.
    Races are settled by the Hub's tag as they are by the unique constraint in the catalog,
    so the later publish() still decides. A version already in the catalog is not released
    again.
    """
    if not isinstance(store, Releasing):
        return staged
    namespace, name, version = parse_publish_target(target)
    caller.authorize(Scope.PUBLISH, namespace)
    existing = _existing(session, namespace, name, str(version))
    if existing is not None:
        _same_or_conflict(existing, staged.manifest)
        return staged
    done = store.release(namespace, name, str(version), staged.manifest, staged.info.base_model)
    return replace(staged, release=done)


def publish(
    session: Session, staged: Staged, *, target: str, alias: str | None = None, caller: Caller
) -> PublishResult:
    """Record ``staged`` as ``[ns/]name@version``: a no-op if identical, a Conflict if not."""
    namespace, name, version = parse_publish_target(target)
    caller.authorize(Scope.PUBLISH, namespace)
    actor = caller.actor
    if alias is not None:
        validate_alias(alias)
    existing = _existing(session, namespace, name, str(version))
    if existing is not None:
        _same_or_conflict(existing, staged.manifest)
        row = existing
    else:
        try:
            row = _insert_version(
                session,
                namespace=namespace,
                name=name,
                version=version,
                staged=staged,
                actor=actor,
            )
        except DBIntegrityError:
            # Another publisher committed the same version first: same content is fine.
            existing = _existing(session, namespace, name, str(version))
            if existing is None:
                raise
            _same_or_conflict(existing, staged.manifest)
            row = existing
    created = row is not existing
    if created:
        record(
            session,
            actor=actor,
            action="publish",
            target=f"{namespace}/{name}@{version}",
            digest=staged.manifest.digest,
        )
    if alias is not None:
        set_alias(session, f"{namespace}/{name}", alias, row.version, caller=caller)
    session.flush()
    return _result(row, created=created, warnings=staged.warnings)


def _alias_row(session: Session, adapter: Adapter, alias: str) -> Alias | None:
    """The alias, locked until the transaction ends: concurrent movers take turns, so each
    history event starts where the previous one ended (issue 14). Its version is loaded after
    the lock: a joined row, re-checked by PostgreSQL once the lock is granted, would be the
    version before the move, gone from the join."""
    return session.scalars(
        select(Alias)
        .filter_by(adapter_id=adapter.id, name=alias)
        .options(lazyload(Alias.version))
        .with_for_update(of=Alias, key_share=True)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _locked_alias(
    session: Session, adapter: Adapter, alias: str, target: Version, actor: str
) -> tuple[Alias, str | None]:
    """The alias row (locked) and the version it named before; None when created here. Of two
    creators, the unique constraint lets one insert; the other then moves what it made."""
    row = _alias_row(session, adapter, alias)
    if row is not None:
        return row, row.version.version
    try:
        with session.begin_nested():
            row = Alias(adapter_id=adapter.id, name=alias, version=target, updated_by=actor)
            session.add(row)
        return row, None
    except DBIntegrityError:
        row = _alias_row(session, adapter, alias)
        if row is None:
            raise
        return row, row.version.version


def _guard_protected(row: Alias | None, caller: Caller, ref: str) -> None:
    if row is not None and row.protected and not caller.is_admin:
        raise Forbidden(f"alias {row.name!r} of {ref} is protected: only an admin may move it")


def set_alias(
    session: Session,
    ref: str,
    alias: str,
    version: str,
    *,
    caller: Caller,
    protect: bool | None = None,
) -> VersionRef:
    """Point ``alias`` at an exact, non-yanked ``version``; the move is recorded in its history.

    ``protect`` marks (or unmarks) the alias so that only admins may move or remove it.
    """
    validate_alias(alias)
    parse_version(version)
    namespace, name = parse_ref(ref)
    caller.authorize(Scope.ADMIN if protect is not None else Scope.PUBLISH, namespace)
    actor = caller.actor
    adapter = find_adapter(session, namespace, name, required=True)
    target = find_version(session, adapter, version, required=True)
    if target.yanked:
        raise Conflict(f"{namespace}/{name}@{version} is yanked; an alias cannot point at it")
    row, before = _locked_alias(session, adapter, alias, target, actor)
    _guard_protected(row, caller, f"{namespace}/{name}")
    if before is not None and before != version:
        row.version, row.updated_by, row.updated_at = target, actor, utcnow()
    if protect is not None:
        row.protected = protect
    if before != version:
        session.add(
            AliasEvent(
                adapter_id=adapter.id,
                alias=alias,
                from_version=before,
                to_version=version,
                actor=actor,
            )
        )
        record(
            session,
            actor=actor,
            action="alias.set",
            target=f"{namespace}/{name}@{alias}",
            from_version=before,
            to_version=version,
        )
    session.flush()
    return _ref(target)


def remove_alias(session: Session, ref: str, alias: str, *, caller: Caller) -> None:
    """Delete ``alias``; its history stays."""
    namespace, name = parse_ref(ref)
    caller.authorize(Scope.PUBLISH, namespace)
    actor = caller.actor
    adapter = find_adapter(session, namespace, name, required=True)
    row = _alias_row(session, adapter, alias)
    if row is None:
        raise NotFound(f"{namespace}/{name} has no alias {alias!r}")
    _guard_protected(row, caller, f"{namespace}/{name}")
    session.add(
        AliasEvent(
            adapter_id=adapter.id,
            alias=alias,
            from_version=row.version.version,
            to_version=None,
            actor=actor,
        )
    )
    record(
        session,
        actor=actor,
        action="alias.rm",
        target=f"{namespace}/{name}@{alias}",
        from_version=row.version.version,
    )
    session.delete(row)
    session.flush()


def _exact(session: Session, spec: str, caller: Caller) -> Version:
    ref, sep, version = spec.partition("@")
    if not sep:
        raise InvalidSpec(f"{spec!r}: name an exact version, e.g. {ref}@1.0.0")
    parse_version(version)
    namespace, name = parse_ref(ref)
    caller.authorize(Scope.PUBLISH, namespace)
    adapter = find_adapter(session, namespace, name, required=True)
    return find_version(session, adapter, version, required=True)


def _ref(row: Version) -> VersionRef:
    return VersionRef(
        namespace=row.adapter.namespace.name,
        name=row.adapter.name,
        version=row.version,
        digest=row.digest,
        yanked=row.yanked,
    )


def _guard_protected_target(session: Session, row: Version, caller: Caller) -> None:
    """Yanking what a protected alias points at moves that alias's meaning: admins only."""
    guarded = session.scalars(
        select(Alias.name).where(Alias.version_id == row.id, Alias.protected.is_(True))
    ).all()
    if guarded and not caller.is_admin:
        names = ", ".join(sorted(guarded))
        raise Forbidden(
            f"{_ref(row).spec} is the target of protected alias(es) {names}: only an admin may "
            "yank it"
        )


def yank(session: Session, spec: str, *, reason: str | None = None, caller: Caller) -> VersionRef:
    """Hide an exact version from ranges and ``latest``; still resolvable, never deleted."""
    row = _exact(session, spec, caller)
    actor = caller.actor
    if not row.yanked:
        _guard_protected_target(session, row, caller)
        row.yanked, row.yanked_reason, row.yanked_at = True, reason, utcnow()
        record(session, actor=actor, action="yank", target=_ref(row).spec, reason=reason)
        _refresh_latest(session, row.adapter)
    return _ref(row)


def unyank(session: Session, spec: str, *, caller: Caller) -> VersionRef:
    row = _exact(session, spec, caller)
    actor = caller.actor
    if row.yanked:
        row.yanked, row.yanked_reason, row.yanked_at = False, None, None
        record(session, actor=actor, action="unyank", target=_ref(row).spec)
        _refresh_latest(session, row.adapter)
    return _ref(row)
