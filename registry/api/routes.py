"""The JSON API under /v1: thin handlers over the catalog's queries, service and analysis."""

from __future__ import annotations

import hashlib
from functools import lru_cache, partial
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from registry.access import Scope
from registry.api.auth import Answer, CallerDep, Reader, ReadRoute, Writer, WriteSessionDep
from registry.api.deps import AppState, SessionDep, StateDep
from registry.catalog import analysis, publishing, queries, service
from registry.catalog.db import current_revision
from registry.lora.compare import Diff
from registry.manifest import Manifest
from registry.schemas import (
    AdapterDetail,
    AdapterSummary,
    AliasInfo,
    AliasMove,
    AliasUpdate,
    AuditEntry,
    Health,
    Page,
    PublishResult,
    Resolution,
    SearchQuery,
    SimilarAdapter,
    VersionCreate,
    VersionDetail,
    VersionRef,
    YankRequest,
)
from registry.spec import SelectorKind, Spec, parse_spec

router = APIRouter(prefix="/v1")
Name = Annotated[str, "namespace or adapter name"]


@router.get("/health", response_model=Health, response_model_exclude_none=True, tags=["meta"])
def health(app: StateDep, session: SessionDep, who: CallerDep) -> Health:
    """Liveness and the catalog's schema revision; the store only to those who may read."""
    revision = current_revision(session.get_bind())  # type: ignore[arg-type]
    may_read = who.scope is not None or app.settings.anonymous_read
    return Health(status="ok", catalog_revision=revision, store=app.store.url if may_read else None)


@router.get("/adapters", response_model=Page[AdapterSummary], tags=["discover"])
def list_adapters(
    _: Reader, session: SessionDep, filters: Annotated[SearchQuery, Query()]
) -> Page[AdapterSummary]:
    """Search adapters; ``next_cursor`` pages through the rest."""
    return queries.search(session, filters)


@router.get("/adapters/{namespace}/{name}", response_model=AdapterDetail, tags=["discover"])
def get_adapter(_: Reader, session: SessionDep, namespace: Name, name: Name) -> AdapterDetail:
    return queries.adapter_detail(session, f"{namespace}/{name}")


@router.get(
    "/adapters/{namespace}/{name}/versions/{version}",
    response_model=VersionDetail,
    tags=["discover"],
)
def get_version(
    _: Reader, session: SessionDep, namespace: Name, name: Name, version: str
) -> VersionDetail:
    return queries.version_detail(session, f"{namespace}/{name}@{version}")


SPEC_CHARS = 200


class _ResolveRoute(ReadRoute):
    """resolve with its one parameter in bounds answers without FastAPI's machinery."""

    @staticmethod
    def fast(request: Request) -> Answer | None:
        spec = request.query_params.get("spec")  # what FastAPI reads for ``spec: str``
        if spec is None or len(spec) > SPEC_CHARS:
            return None
        etag = request.headers.get("if-none-match")
        return lambda app, _: _answer(app, spec, etag)


async def resolve(
    app: StateDep,
    _: Reader,
    spec: Annotated[str, Query(max_length=SPEC_CHARS, description="[ns/]name[@selector]")],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The exact version, digest and files a spec selects now.

    The ETag changes whenever the answer does (an alias moves, a version is yanked), so a
    watcher can poll cheaply with If-None-Match.
    """
    return await _answer(app, spec, if_none_match)


def install(app: FastAPI) -> None:
    """Route resolve on the app itself, ahead of the rest: FastAPI matches a request against
    every route before it, and twice inside an included router (``router``, below)."""
    app.router.add_api_route(
        "/v1/resolve",
        resolve,
        methods=["GET"],
        response_model=Resolution,
        tags=["discover"],
        responses={304: {"description": "unchanged since the ETag sent in If-None-Match"}},
        route_class_override=_ResolveRoute,
    )


async def _answer(app: AppState, spec: str, if_none_match: str | None) -> Response:
    body = await _resolution(app, _parsed(spec))
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


# Parsing a selector tries it as a version and as a range first: cached, since it is pure.
_parsed = lru_cache(maxsize=4096)(parse_spec)


async def _resolution(app: AppState, spec: Spec) -> bytes:
    """The answer's bytes. On PostgreSQL the event loop's own connections answer any selector
    (it waits on the socket, not a thread); on SQLite one indexed lookup runs right here on
    the event loop (the hop to a worker thread costs more; it never waits for a lock); a
    range, which weighs every version of the adapter, and the full path run in a worker."""
    if app.postgres is not None:
        found = await app.postgres.resolve(spec)
    elif app.direct is not None and spec.kind is not SelectorKind.RANGE:
        found = app.direct.resolve(spec)
    else:
        return await run_in_threadpool(_resolution_json, app, spec)
    if found is not None:
        return found.to_json()
    return await run_in_threadpool(_full_json, app, spec)


def _resolution_json(app: AppState, spec: Spec) -> bytes:
    found = app.direct.resolve(spec) if app.direct is not None else None
    return found.to_json() if found is not None else _full_json(app, spec)


def _full_json(app: AppState, spec: Spec) -> bytes:
    """Any catalog, and every error worded: SQLAlchemy and pydantic."""
    with app.engine.connect() as conn:
        return queries.resolve_spec(conn, spec).model_dump_json().encode()


@router.post(
    "/adapters/{namespace}/{name}/versions",
    response_model=PublishResult,
    status_code=201,
    responses={200: {"description": "identical version already published (no-op)"}},
    tags=["publish"],
    name="publish",
)
async def commit_version(
    app: StateDep,
    who: Writer,
    namespace: Name,
    name: Name,
    body: VersionCreate,
    response: Response,
) -> PublishResult:
    """Commit a version whose blobs exist; its files are inspected here, never trusted."""
    result = await app.heavy(
        partial(
            publishing.publish_manifest,
            app.sessions,
            app.store,
            Manifest.of(body.files),
            target=f"{namespace}/{name}@{body.version}",
            alias=body.alias,
            caller=who,
            max_weights_bytes=app.settings.max_weights_bytes,
        )
    )
    if not result.created:
        response.status_code = 200
    return result


@router.get("/adapters/{namespace}/{name}/aliases", response_model=list[AliasInfo], tags=["pin"])
def list_aliases(_: Reader, session: SessionDep, namespace: Name, name: Name) -> list[AliasInfo]:
    return queries.adapter_detail(session, f"{namespace}/{name}").aliases


@router.put("/adapters/{namespace}/{name}/aliases/{alias}", response_model=VersionRef, tags=["pin"])
def set_alias(
    session: WriteSessionDep,
    who: Writer,
    namespace: Name,
    name: Name,
    alias: str,
    body: AliasUpdate,
) -> VersionRef:
    """Move an alias; ``protected`` (admin only) locks it against non-admin moves."""
    return service.set_alias(
        session, f"{namespace}/{name}", alias, body.version, caller=who, protect=body.protected
    )


@router.delete(
    "/adapters/{namespace}/{name}/aliases/{alias}", status_code=204, tags=["pin"], name="alias.rm"
)
def remove_alias(
    session: WriteSessionDep, who: Writer, namespace: Name, name: Name, alias: str
) -> Response:
    service.remove_alias(session, f"{namespace}/{name}", alias, caller=who)
    return Response(status_code=204)


@router.post(
    "/adapters/{namespace}/{name}/versions/{version}/yank",
    response_model=VersionRef,
    tags=["pin"],
    name="yank",
)
def yank(
    session: WriteSessionDep,
    who: Writer,
    namespace: Name,
    name: Name,
    version: str,
    body: YankRequest,
) -> VersionRef:
    return service.yank(session, f"{namespace}/{name}@{version}", reason=body.reason, caller=who)


@router.delete(
    "/adapters/{namespace}/{name}/versions/{version}/yank",
    response_model=VersionRef,
    tags=["pin"],
    name="unyank",
)
def unyank(
    session: WriteSessionDep, who: Writer, namespace: Name, name: Name, version: str
) -> VersionRef:
    return service.unyank(session, f"{namespace}/{name}@{version}", caller=who)


@router.get(
    "/adapters/{namespace}/{name}/versions/{version}/similar",
    response_model=list[SimilarAdapter],
    tags=["analyse"],
)
async def similar(
    app: StateDep,
    _: Reader,
    namespace: Name,
    name: Name,
    version: str,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[SimilarAdapter]:
    """Adapters on the same base model whose updates point the same way (exact cosines)."""

    def work() -> list[SimilarAdapter]:
        with app.sessions() as session:
            return analysis.similar(
                session,
                app.store,
                f"{namespace}/{name}@{version}",
                limit=limit,
                max_weights_bytes=app.settings.max_weights_bytes,
            )

    return await app.heavy(work)


@router.get("/diff", response_model=Diff, tags=["analyse"])
async def diff(
    app: StateDep,
    _: Reader,
    x: Annotated[str, Query(max_length=200, description="a spec")],
    y: Annotated[str, Query(max_length=200, description="a spec")],
) -> Diff:
    """Exact cosine of two published adapters' updates, per module."""

    def work() -> Diff:
        limit = app.settings.max_weights_bytes
        with app.sessions() as session:
            return analysis.diff(session, app.store, x, y, folders=False, max_weights_bytes=limit)

    return await app.heavy(work)


@router.get(
    "/adapters/{namespace}/{name}/aliases/history", response_model=list[AliasMove], tags=["pin"]
)
def alias_history(_: Reader, session: SessionDep, namespace: Name, name: Name) -> list[AliasMove]:
    """Who moved which alias from what to what, and when; newest first."""
    return queries.alias_history(session, f"{namespace}/{name}")


@router.get("/audit", response_model=list[AuditEntry], tags=["admin"])
def audit(
    who: Reader,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="an entry id")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> list[AuditEntry]:
    """Every write, successful or refused, newest first (admin only)."""
    who.authorize(Scope.ADMIN)
    return queries.audit_log(session, limit=limit, before=before, action=action)
