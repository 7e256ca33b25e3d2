"""``/compare``: N published adapters side by side, and its JSON twin ``GET /v1/compare``.

The page shows the exact cosine matrix of the updates, the per-layer ``||dW||_F`` curves
overlaid, and the raw ``||A||_F`` per layer next to them: the raw norm is flat at PEFT's
initialisation whatever was learned, the update's norm is what changed.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from registry.api import svg
from registry.api.auth import require_read
from registry.api.deps import AppState, StateDep
from registry.api.errors import status_of
from registry.api.pages import error_page, templates
from registry.catalog import analysis, queries
from registry.errors import RegistryError
from registry.lora.compare import Comparison, check_count

router = APIRouter(dependencies=[Depends(require_read)])
Specs = Annotated[
    list[str] | None,
    Query(description="a published spec; repeat it: ?spec=a@1.0.0&spec=b@prod (2 to 8)"),
]


def _compare(app: AppState, session: Session, specs: list[str]) -> Comparison:
    check_count(specs)
    return analysis.compare_specs(
        session, app.store, specs, folders=False, max_weights_bytes=app.settings.max_weights_bytes
    )


def _given(spec: list[str] | None) -> list[str]:
    return [s.strip() for s in spec or [] if s.strip()]


@router.get("/v1/compare", response_model=Comparison, tags=["analyse"])
async def compare(app: StateDep, spec: Specs = None) -> Comparison:
    """2 to 8 published adapters: cosine matrix, per-layer ||dW||_F and raw ||A||_F, ranks."""
    specs = _given(spec)

    def work() -> Comparison:
        with app.sessions() as session:
            return _compare(app, session, specs)

    return await app.heavy(work)


def _charts(result: Comparison) -> dict[str, Markup]:
    labels = result.specs

    def per_layer(field: str) -> list[tuple[str, list[tuple[float, float]]]]:
        return [
            (label, [(row.layer, getattr(row, field)) for row in adapter.layers])
            for label, adapter in zip(labels, result.adapters, strict=True)
        ]

    charts = {
        "matrix": svg.cosine_matrix(labels, result.cosine),
        "delta": svg.line_chart(
            per_layer("delta_norm"),
            css="delta-curves",
            title="||dW||_F per layer",
            x_label="layer",
            y_label="||dW||_F",
            width=440,
        ),
        "raw": svg.line_chart(
            per_layer("a_norm"),
            css="raw-curves",
            title="raw ||A||_F per layer",
            x_label="layer",
            y_label="||A||_F",
            width=440,
        ),
    }
    return {k: Markup(v) for k, v in charts.items()}  # noqa: S704 - values escaped in svg.py


def _page_context(app: AppState, given: list[str]) -> dict[str, Any]:
    with app.sessions() as session:
        result = _compare(app, session, given)
        found = [queries.resolve_spec(session, s) for s in given]
    layers = sorted({row.layer for a in result.adapters for row in a.layers})
    return {
        "result": result,
        "found": found,
        "layers": layers,
        "cells": [{row.layer: row for row in a.layers} for a in result.adapters],
        "charts": _charts(result),
        "json_url": "/v1/compare?" + urlencode([("spec", s) for s in given]),
    }


@router.get("/compare", include_in_schema=False, response_class=HTMLResponse)
async def compare_page(request: Request, app: StateDep, spec: Specs = None) -> Response:
    """The comparison drawn (in an analysis worker, as the JSON twin); no spec: the form."""
    given = _given(spec)
    context: dict[str, Any] = {"given": given, "result": None}
    if given:
        try:
            context |= await app.heavy(lambda: _page_context(app, given))
        except RegistryError as exc:
            return error_page(request, status_of(exc), exc.code, exc.message)
    return templates.TemplateResponse(request, "compare.html", context)
