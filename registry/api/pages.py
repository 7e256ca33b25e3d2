"""Server-rendered discovery pages; each has a JSON twin under /v1 and links to it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from rich.filesize import decimal

from registry.api import svg
from registry.api.auth import require_read
from registry.api.deps import SessionDep
from registry.catalog import queries
from registry.schemas import SearchQuery

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(
    include_in_schema=False,
    default_response_class=HTMLResponse,
    dependencies=[Depends(require_read)],
)


templates.env.filters["size"] = decimal  # the CLI prints sizes the same way


@router.get("/")
def search_page(
    request: Request, session: SessionDep, filters: Annotated[SearchQuery, Query()]
) -> HTMLResponse:
    page = queries.search(session, filters)
    shown = {k: v for k, v in filters.params().items() if k not in ("cursor", "limit")}
    return templates.TemplateResponse(request, "search.html", {"page": page, "filters": shown})


@router.get("/adapters/{namespace}/{name}")
def adapter_page(request: Request, session: SessionDep, namespace: str, name: str) -> HTMLResponse:
    detail = queries.adapter_detail(session, f"{namespace}/{name}")
    by_version: dict[str, list[str]] = {}
    for alias in detail.aliases:
        by_version.setdefault(alias.version, []).append(alias.name)
    history = queries.alias_history(session, f"{namespace}/{name}")
    return templates.TemplateResponse(
        request,
        "adapter.html",
        {"adapter": detail, "aliases_of": by_version, "history": history},
    )


@router.get("/adapters/{namespace}/{name}/{version}")
def version_page(
    request: Request, session: SessionDep, namespace: str, name: str, version: str
) -> HTMLResponse:
    detail = queries.version_detail(session, f"{namespace}/{name}@{version}")
    fingerprint = detail.info["fingerprint"]
    ref = detail.name if detail.namespace == "default" else f"{detail.namespace}/{detail.name}"
    return templates.TemplateResponse(
        request,
        "version.html",
        {
            "v": detail,
            "info": detail.info,
            "heat_map": svg.heat_map(fingerprint),
            "energy_chart": svg.energy_chart(fingerprint),
            "pin": f'"{ref}" = "{detail.version}"' if "/" in ref else f'{ref} = "{detail.version}"',
            "pull": f"stance pull {detail.namespace}/{detail.name}@{detail.version}",
            "peft": (
                f'PeftModel.from_pretrained(base, "{detail.hub_repo}", '
                f'revision="{detail.hub_revision}")'
                if detail.hub_repo
                else None
            ),
        },
    )
