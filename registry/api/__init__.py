"""The HTTP service: ``create_app(settings)`` builds the FastAPI app; nothing runs at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from registry.api import blobs, compare, docs, errors, limits, metrics, pages, routes, security
from registry.api.auth import AnonymousRefusals, FailedAuthLimiter, WritesAuthenticated
from registry.api.deps import AppState
from registry.catalog import pg_direct
from registry.catalog.db import open_catalog
from registry.catalog.sqlite_direct import open_reader
from registry.settings import Settings
from registry.stores import open_store


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API and pages over the catalog and store that ``settings`` name."""
    settings = settings or Settings()
    catalog = open_catalog(settings.catalog_url)
    direct = open_reader(settings.catalog_url)  # after open_catalog: the schema is current
    postgres = pg_direct.open_reader(catalog.engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if direct is not None:
            direct.close()
        if postgres is not None:
            postgres.close()
        catalog.close()

    app = FastAPI(
        lifespan=lifespan,
        title="stance registry",
        version="1",
        description="Registry for LoRA adapters: publish, discover, pin and fetch versions.",
        docs_url=None,  # served from local files by registry.api.docs (no CDN)
        redoc_url=None,
    )
    app.state.registry = AppState(
        settings,
        catalog.engine,
        catalog.sessions,
        open_store(settings.store_url),
        direct,
        postgres,
    )
    app.state.auth_limiter = FailedAuthLimiter()
    app.state.anonymous_refusals = AnonymousRefusals()
    app.state.upload_slots = blobs.UploadSlots(settings.max_concurrent_uploads)
    routes.install(app)  # the hot route first
    blobs.install(app)  # downloads next
    errors.install(app)
    # Middleware, innermost first: bodies bounded, writes authenticated before their body is
    # read, every answer measured, then headers and proxies (README "Security model").
    limits.install(app, settings)
    app.add_middleware(WritesAuthenticated)
    metrics.install(app)
    security.install(app, settings)
    app.include_router(routes.router)
    app.include_router(blobs.router)
    app.include_router(pages.router)
    app.include_router(compare.router)
    app.include_router(docs.router)
    return app
