"""Prometheus metrics: requests and latencies by route template, what the registry did, the process.

Label sets are bounded (route templates, methods, statuses, a few outcomes). The domain
counters are read off the responses here, in one middleware, so no handler counts anything:
publishes by outcome, blob bytes served, failed authentications, rate-limited requests. The
process, platform and garbage-collector collectors come with ``prometheus_client``.
``tests/api/test_metrics.py`` runs ``promtool check metrics`` over ``GET /metrics``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLISH_ROUTE = "/v1/adapters/{namespace}/{name}/versions"
# Routes whose response bodies are blob bytes (the API's, and the pages' named files).
BLOB_ROUTES = frozenset(
    {"/v1/blobs/{digest}", "/adapters/{namespace}/{name}/{version}/files/{path}"}
)
_PUBLISH_OUTCOME = {201: "created", 200: "unchanged"}


class Metrics:
    """Every series one app exports, on a registry of its own (several apps per test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.requests = Counter(
            "stance_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stance_http_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            registry=self.registry,
        )
        self.publishes = Counter(
            "stance_publishes",
            "Version commits by outcome: created, unchanged (identical re-publish) or refused",
            ["outcome"],
            registry=self.registry,
        )
        self.blob_bytes = Counter(
            "stance_blob_served_bytes",
            "Blob bytes sent in response bodies (API downloads and named file links)",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "stance_auth_failures",
            "Requests refused for a missing, unknown or revoked token (HTTP 401)",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "stance_rate_limited_requests",
            "Requests refused by the failed-authentication limiter (HTTP 429)",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        # Each labelled child looked up once (labels() validates and locks on every call).
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if status == 401:
            self.auth_failures.inc()
        elif status == 429:
            self.rate_limited.inc()
        if route == PUBLISH_ROUTE and method == "POST":
            self.publishes.labels(_PUBLISH_OUTCOME.get(status, "refused")).inc()


class _Measure:
    """Plain ASGI middleware: cheaper on the hot resolve path than BaseHTTPMiddleware."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and _route(scope) in BLOB_ROUTES:
                self.metrics.blob_bytes.inc(len(message.get("body", b"")))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.record(scope["method"], _route(scope), status, time.perf_counter() - start)


def _route(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", "unmatched")


def install(app: FastAPI) -> None:
    """Count and time every request; expose ``GET /metrics`` (per process)."""
    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(_Measure, metrics=metrics)  # type: ignore[arg-type]

    @app.get("/metrics", include_in_schema=False)
    def _metrics() -> Any:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
