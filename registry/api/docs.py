"""/docs and /redoc from local files, and the pages' own CSS and JavaScript.

FastAPI's default docs load Swagger UI and ReDoc from a CDN: on a machine without internet
/docs is blank. The assets come from the ``fastapi-offline`` package instead (the very files
FastAPI would fetch, swagger-ui-dist 5 and redoc 2, re-released on PyPI as they move); only
its static folder is used, our ``create_app`` stays ours. Nothing here needs a token: the
OpenAPI schema is public as before.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

from registry.errors import NotFound

router = APIRouter(include_in_schema=False)

VENDORED = Path(fastapi_offline.__file__).parent / "static"
OURS = Path(__file__).parent / "static"
# Served by name only: a fixed list, so no path from a request ever reaches the file system.
ASSETS = {
    "docs/swagger-ui-bundle.js": VENDORED / "swagger-ui-bundle.js",
    "docs/swagger-ui.css": VENDORED / "swagger-ui.css",
    "docs/redoc.standalone.js": VENDORED / "redoc.standalone.js",
    "docs/favicon.png": VENDORED / "favicon.png",
    "pages.css": OURS / "pages.css",
    "pages.js": OURS / "pages.js",
}
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}/static/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/static/docs/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/docs/favicon.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
    )


@router.get(OAUTH2_REDIRECT)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/static/docs/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static/docs/favicon.png",
        with_google_fonts=False,
    )


@router.get("/static/{name:path}")
def asset(name: str) -> FileResponse:
    """One of ASSETS; they change only with a release, so browsers may keep them a day."""
    path = ASSETS.get(name)
    if path is None:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
