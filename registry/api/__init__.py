"""The HTTP service: ``create_app(settings)`` builds the FastAPI app; nothing runs at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from registry.api import blobs, errors, metrics, pages, routes
from registry.api.auth import FailedAuthLimiter
from registry.api.deps import AppState
from registry.catalog.db import open_catalog
from registry.settings import Settings
from registry.stores import open_store


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API and pages over the catalog and store that ``settings`` name."""
    settings = settings or Settings()
    catalog = open_catalog(settings.catalog_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        catalog.close()

    app = FastAPI(
        lifespan=lifespan,
        title="stance registry",
        version="1",
        description="Registry for LoRA adapters: publish, discover, pin and fetch versions.",
    )
    app.state.registry = AppState(
        settings, catalog.engine, catalog.sessions, open_store(settings.store_url)
    )
    app.state.auth_limiter = FailedAuthLimiter()
    errors.install(app)
    metrics.install(app)
    app.include_router(routes.router)
    app.include_router(blobs.router)
    app.include_router(pages.router)
    return app
