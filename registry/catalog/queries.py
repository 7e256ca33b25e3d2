"""Read-only catalog queries: resolve, list, search; each a bounded number of SQL queries."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, overload

from sqlalchemy import ColumnElement, Connection, Row, Select, and_, bindparam, func, select
from sqlalchemy.orm import Session

from registry.catalog.models import (
    MIN_SUFFIX,
    Adapter,
    AdapterSuffix,
    AdapterTarget,
    Alias,
    AliasEvent,
    AuditEvent,
    Blob,
    Namespace,
    Version,
)
from registry.errors import InvalidSpec, NotFound
from registry.lora.sketch import Sketch
from registry.manifest import Manifest
from registry.schemas import (
    AdapterDetail,
    AdapterSummary,
    AliasInfo,
    AliasMove,
    AuditEntry,
    Page,
    Resolution,
    SearchQuery,
    VersionDetail,
    VersionSummary,
)
from registry.semver import Version as SemVer
from registry.spec import SelectorKind, Spec, parse_ref, parse_spec, validate_digest
from registry.spec import select as select_range

MAX_PAGE = 100


_ADAPTER = (
    select(Adapter)
    .join(Namespace)
    .where(Namespace.name == bindparam("namespace"), Adapter.name == bindparam("name"))
)
_ADAPTER_ID = _ADAPTER.with_only_columns(Adapter.id)


def _no_adapter(namespace: str, name: str) -> NotFound:
    return NotFound(f"no adapter {namespace}/{name}")


@overload
def find_adapter(
    session: Session, namespace: str, name: str, *, required: Literal[True]
) -> Adapter: ...
@overload
def find_adapter(
    session: Session, namespace: str, name: str, *, required: bool = False
) -> Adapter | None: ...
def find_adapter(
    session: Session, namespace: str, name: str, *, required: bool = False
) -> Adapter | None:
    adapter = session.scalars(_ADAPTER, {"namespace": namespace, "name": name}).one_or_none()
    if adapter is None and required:
        raise _no_adapter(namespace, name)
    return adapter


@overload
def find_version(
    session: Session, adapter: Adapter, version: str, *, required: Literal[True]
) -> Version: ...
@overload
def find_version(
    session: Session, adapter: Adapter, version: str, *, required: bool = False
) -> Version | None: ...
def find_version(
    session: Session, adapter: Adapter, version: str, *, required: bool = False
) -> Version | None:
    row = session.scalars(
        select(Version).where(Version.adapter_id == adapter.id, Version.version == version)
    ).one_or_none()
    if row is None and required:
        raise NotFound(f"no version {version} of {adapter.namespace.name}/{adapter.name}")
    return row


def _release_order():
    return (Version.major.desc(), Version.minor.desc(), Version.patch.desc())


# A resolution's columns: loading whole rows would also decode each version's ``info`` JSON
# (its whole fingerprint), which cost a resolve more than the query itself.
_RESOLVED = (
    Version.version,
    Version.digest,
    Version.yanked,
    Version.yanked_reason,
    Version.base_model,
    Version.manifest,
    Version.hub_repo,
    Version.hub_revision,
)


def _statements(*columns: Any) -> dict[SelectorKind, Select[Any]]:
    """How each kind of selector finds its version, as statements with bound parameters.

    Resolving is the hot path: they are built once, because building them on every call cost
    more than the database took to answer them.
    """
    in_adapter = (
        select(*columns)
        .join(Adapter, Adapter.id == Version.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .where(Namespace.name == bindparam("namespace"), Adapter.name == bindparam("name"))
    )
    # From the alias's unique (adapter, name) index straight to its one version.
    aliased = (
        select(Alias.version_id)
        .join(Adapter, Adapter.id == Alias.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .where(
            Namespace.name == bindparam("namespace"),
            Adapter.name == bindparam("name"),
            Alias.name == bindparam("selector"),
        )
        .scalar_subquery()
    )
    return {
        # The pointer the service keeps on publish, yank and unyank (one indexed join).
        SelectorKind.LATEST: in_adapter.where(Version.id == Adapter.latest_version_id),
        SelectorKind.EXACT: in_adapter.where(Version.version == bindparam("selector")),
        SelectorKind.RANGE: in_adapter.with_only_columns(Version.version).where(~Version.yanked),
        SelectorKind.DIGEST: in_adapter.where(Version.digest == bindparam("selector")),
        SelectorKind.ALIAS: select(*columns).where(Version.id == aliased),
    }


_ROWS = _statements(Version, Version.version)  # whole rows; ``version`` orders DIGEST matches
_RESOLUTIONS = _statements(*_RESOLVED)


def _select(
    db: Session | Connection, spec: Spec, statements: dict[SelectorKind, Select[Any]]
) -> Row[Any] | None:
    """The row ``spec`` selects from ``statements`` (whole versions or resolution columns)."""
    params = {"namespace": spec.namespace, "name": spec.name, "selector": spec.selector}
    found = db.execute(statements[spec.kind], params)
    match spec.kind:
        case SelectorKind.RANGE:
            best = select_range(list(found.scalars()), spec.selector)
            if best is None:
                return None
            return _select(db, replace(spec, selector=best, kind=SelectorKind.EXACT), statements)
        case SelectorKind.DIGEST:
            # Identical content published twice: the highest version names it.
            return max(found, key=lambda v: SemVer(v.version), default=None)
        case _:
            return found.first()


def resolve_version(session: Session, spec: Spec) -> Version:
    """The version row ``spec`` selects, or NotFound saying what was asked."""
    return _found(session, spec, _ROWS)[0]


def _found(
    db: Session | Connection, spec: Spec, statements: dict[SelectorKind, Select[Any]]
) -> Row[Any]:
    row = _select(db, spec, statements)
    if row is None:
        params = {"namespace": spec.namespace, "name": spec.name}
        if db.execute(_ADAPTER_ID, params).first() is None:  # "no adapter" comes first
            raise _no_adapter(spec.namespace, spec.name)
        what = {
            SelectorKind.LATEST: "has no non-yanked release",
            SelectorKind.EXACT: f"has no version {spec.selector}",
            SelectorKind.RANGE: f"has no non-yanked version matching {spec.selector!r}",
            SelectorKind.ALIAS: f"has no alias {spec.selector!r}",
            SelectorKind.DIGEST: f"has no version with digest {spec.selector}",
        }[spec.kind]
        raise NotFound(f"{spec.ref} {what}")
    return row


def latest_release(session: Session, adapter: Adapter) -> Version | None:
    """The highest non-yanked, non-prerelease version, by the ordering index."""
    return session.scalars(
        select(Version)
        .where(Version.adapter_id == adapter.id, ~Version.yanked, ~Version.prerelease)
        .order_by(*_release_order())
        .limit(1)
    ).first()


def resolve_spec(db: Session | Connection, spec: str | Spec) -> Resolution:
    """Resolve ``[ns/]name[@selector]`` to an exact version, its digest and files.

    Takes a plain connection too: resolving needs no ORM, and a Session around one query
    cost as much as the query.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    row = _found(db, parsed, _RESOLUTIONS)
    return Resolution(
        namespace=parsed.namespace,
        name=parsed.name,
        version=row.version,
        digest=row.digest,
        yanked=row.yanked,
        yanked_reason=row.yanked_reason,
        base_model=row.base_model,
        files=Manifest.model_validate_json(row.manifest).files,
        hub_repo=row.hub_repo,
        hub_revision=row.hub_revision,
    )


def _summary(row: Version) -> VersionSummary:
    return VersionSummary(
        version=row.version,
        digest=row.digest,
        prerelease=row.prerelease,
        yanked=row.yanked,
        yanked_reason=row.yanked_reason,
        base_model=row.base_model,
        r=row.r,
        created_at=row.created_at,
        published_by=row.published_by,
        hub_repo=row.hub_repo,
        hub_revision=row.hub_revision,
    )


def version_detail(session: Session, spec: str) -> VersionDetail:
    parsed = parse_spec(spec)
    row = resolve_version(session, parsed)
    aliases = session.scalars(
        select(Alias.name).where(Alias.version_id == row.id).order_by(Alias.name)
    ).all()
    return VersionDetail(
        **_summary(row).model_dump(),
        namespace=parsed.namespace,
        name=parsed.name,
        yanked_at=row.yanked_at,
        files=Manifest.model_validate_json(row.manifest).files,
        aliases=list(aliases),
        info=row.info,
    )


def _semver_desc(rows: list[Version]) -> list[Version]:
    return sorted(rows, key=lambda v: SemVer(v.version), reverse=True)


def adapter_detail(session: Session, ref: str) -> AdapterDetail:
    """An adapter with every version (newest first, prereleases and yanked included) and alias."""
    namespace, name = parse_ref(ref)
    adapter = find_adapter(session, namespace, name, required=True)
    versions = _semver_desc(
        list(session.scalars(select(Version).where(Version.adapter_id == adapter.id)).all())
    )
    aliases = session.scalars(
        select(Alias).where(Alias.adapter_id == adapter.id).order_by(Alias.name)
    ).all()
    latest = next((v for v in versions if v.id == adapter.latest_version_id), None)
    return AdapterDetail(
        namespace=namespace,
        name=name,
        created_at=adapter.created_at,
        latest=latest.version if latest else None,
        versions=[_summary(v) for v in versions],
        aliases=[
            AliasInfo(
                name=a.name,
                version=a.version.version,
                protected=a.protected,
                updated_by=a.updated_by,
                updated_at=a.updated_at,
            )
            for a in aliases
        ],
    )


def _encode_cursor(ref: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(ref.split("/", 1)).encode()).decode()


def _decode_cursor(cursor: str) -> str:
    """The ref a page ends at; cursors stay ``[namespace, name]``, as before refs existed."""
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return f"{namespace}/{name}"
    except (ValueError, TypeError):
        raise InvalidSpec(f"invalid cursor {cursor!r}") from None


def search_statement(filters: SearchQuery) -> Select:  # type: ignore[type-arg]
    """The page query of a search: keyset-paged by ref, one row past the page.

    Ordered by the indexed ``adapters.ref`` alone, so a page is read from an index in order
    and the scan stops at its end (ordering by namespace name across the join sorted every
    adapter). Equality filters have (column, ref) indexes for the same reason.
    """
    query = select(
        Adapter.id,
        Adapter.ref,
        Adapter.latest_base_model,
        Adapter.latest_r,
        Adapter.created_at,
        Adapter.latest_version_id,
    )
    if filters.text:
        query = query.where(_name_contains(filters.text.lower()))
    if filters.namespace:
        query = query.where(
            Adapter.namespace_id
            == select(Namespace.id).where(Namespace.name == filters.namespace).scalar_subquery()
        )
    # Filters describe what an adapter is now: its latest release. The service copies those
    # facts onto adapters, so no version row is visited to filter.
    if filters.base_model:
        query = query.where(Adapter.latest_base_model == filters.base_model)
    if filters.rank is not None:
        query = query.where(Adapter.latest_r == filters.rank)
    if filters.target:
        query = query.join(
            AdapterTarget,
            and_(AdapterTarget.adapter_id == Adapter.id, AdapterTarget.module == filters.target),
        )
    if filters.cursor:
        query = query.where(Adapter.ref > _decode_cursor(filters.cursor))
    return query.order_by(Adapter.ref).limit(_limit(filters) + 1)


# Sorts after every character a name may hold ([a-z0-9._-]): [text, text + this) is the range
# of suffixes that start with text.
_PAST_NAME_CHARS = "{"


def _name_contains(text: str) -> ColumnElement[bool]:
    """Names that contain ``text``: one index range of their suffixes, so the cost follows the
    matches, not the catalog; a short text matches most names, found reading in page order."""
    if len(text) < MIN_SUFFIX:
        return Adapter.name.contains(text, autoescape=True)
    return Adapter.id.in_(
        select(AdapterSuffix.adapter_id).where(
            AdapterSuffix.suffix >= text, AdapterSuffix.suffix < text + _PAST_NAME_CHARS
        )
    )


def _limit(filters: SearchQuery) -> int:
    return min(filters.limit, MAX_PAGE)


def search(session: Session, filters: SearchQuery | None = None) -> Page[AdapterSummary]:
    """Adapters whose name matches the text and whose latest release matches every filter."""
    filters = filters or SearchQuery()
    limit = _limit(filters)
    rows = session.execute(search_statement(filters)).all()
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1][1]) if len(rows) > limit else None
    return Page[AdapterSummary](items=_summaries(session, page), next_cursor=next_cursor)


def _summaries(session: Session, page: Sequence[Any]) -> list[AdapterSummary]:
    """Summaries of a page of search rows, with three more queries (none per adapter)."""
    ids = [row[0] for row in page]
    if not ids:
        return []
    heads = [row[-1] for row in page if row[-1] is not None]
    # Joined here for the page only: joined in the search, every match was visited.
    released = {
        adapter_id: (version, created_at)
        for adapter_id, version, created_at in session.execute(
            select(Version.adapter_id, Version.version, Version.created_at).where(
                Version.id.in_(heads)
            )
        )
    }
    targets: dict[int, list[str]] = {}
    for adapter_id, module in session.execute(
        select(AdapterTarget.adapter_id, AdapterTarget.module)
        .where(AdapterTarget.adapter_id.in_(ids))
        .order_by(AdapterTarget.module)
    ):
        targets.setdefault(adapter_id, []).append(module)
    counts = dict(
        session.execute(  # answered from the (adapter_id, major, minor, patch) index
            select(Version.adapter_id, func.count())
            .where(Version.adapter_id.in_(ids))
            .group_by(Version.adapter_id)
        ).all()
    )
    out = []
    for adapter_id, ref, base, r, created_at, _ in page:
        ns, name = ref.split("/", 1)
        latest, released_at = released.get(adapter_id, (None, created_at))
        out.append(
            AdapterSummary(
                namespace=ns,
                name=name,
                latest=latest,
                base_model=base,
                r=r,
                target_modules=targets.get(adapter_id, []),
                versions=counts.get(adapter_id, 0),
                updated_at=released_at,
            )
        )
    return out


def similar_candidates(
    session: Session, spec: str, *, limit: int
) -> tuple[Version, list[tuple[float, str, str, str]]]:
    """The version ``spec`` names, and the latest release of every other adapter on its base
    model as (sketch cosine, namespace, name, version), best first; callers re-score exactly."""
    query = resolve_version(session, parse_spec(spec))
    if query.sketch is None:
        return query, []
    ranked = (
        select(
            Version.id,
            func.row_number()
            .over(partition_by=Version.adapter_id, order_by=_release_order())
            .label("rank"),
        )
        .where(
            Version.base_model == query.base_model,
            Version.adapter_id != query.adapter_id,
            ~Version.yanked,
            ~Version.prerelease,
            Version.sketch.is_not(None),
        )
        .subquery()
    )
    rows = session.execute(
        select(Namespace.name, Adapter.name, Version.version, Version.sketch)
        .join(ranked, ranked.c.id == Version.id)
        .join(Adapter, Adapter.id == Version.adapter_id)
        .join(Namespace, Namespace.id == Adapter.namespace_id)
        .where(ranked.c.rank == 1)
    ).all()
    mine = Sketch.decode(query.sketch)
    scored = [
        (mine.cosine(Sketch.decode(blob)), ns, name, version)
        for ns, name, version, blob in rows
        if blob is not None
    ]
    scored.sort(key=lambda item: -item[0])
    return query, scored[:limit]


def alias_history(session: Session, ref: str) -> list[AliasMove]:
    """Every alias move of an adapter, newest first (removed aliases included)."""
    namespace, name = parse_ref(ref)
    adapter = find_adapter(session, namespace, name, required=True)
    rows = session.scalars(
        select(AliasEvent).where(AliasEvent.adapter_id == adapter.id).order_by(AliasEvent.id.desc())
    ).all()
    return [AliasMove.model_validate(row, from_attributes=True) for row in rows]


def audit_log(
    session: Session, *, limit: int = 100, before: int | None = None, action: str | None = None
) -> list[AuditEntry]:
    """Audit rows newest first; ``before`` (an id) pages back through history."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(limit, 1000)))
    if before is not None:
        query = query.where(AuditEvent.id < before)
    if action:
        query = query.where(AuditEvent.action == action)
    return [AuditEntry.model_validate(row, from_attributes=True) for row in session.scalars(query)]


def blob_size(db: Session | Connection, digest: str) -> int:
    """The size of a blob that a published version references; only those are ever served.

    Takes a plain connection too: downloads look up nothing else, and need no ORM.
    """
    validate_digest(digest)
    size = db.scalar(select(Blob.size).where(Blob.digest == digest))
    if size is None:
        raise NotFound(f"no blob {digest}")
    return size
