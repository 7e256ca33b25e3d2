"""Prometheus metrics: request counts and latencies by route template (bounded label sets)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _Measure:
    """Plain ASGI middleware: cheaper on the hot resolve path than BaseHTTPMiddleware."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], template, str(status)).inc()
            self.latency.labels(template).observe(time.perf_counter() - start)


def install(app: FastAPI) -> None:
    """Count and time every request; expose ``GET /metrics`` (per process)."""
    metrics = CollectorRegistry()
    requests = Counter(
        "stance_http_requests", "HTTP requests", ["method", "route", "status"], registry=metrics
    )
    latency = Histogram(
        "stance_http_request_seconds", "HTTP request latency", ["route"], registry=metrics
    )
    app.add_middleware(_Measure, requests=requests, latency=latency)  # type: ignore[arg-type]

    @app.get("/metrics", include_in_schema=False)
    def _metrics() -> Any:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)
