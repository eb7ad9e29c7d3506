"""Prometheus metrics for the API: requests by route and status, and latency."""

from __future__ import annotations

import os
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.api import appkeys

# Any other method (aiohttp accepts any token) is counted as OTHER: a client must not be able
# to mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "octopost_http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "octopost_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        # labels() costs a lock and a dict lookup per metric per request; the children for
        # a (route, method, status) are looked up once. The key space is bounded: route
        # templates, METHODS and the statuses the app answers.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._included: list[CollectorRegistry] = []

    def include(self, registry: CollectorRegistry) -> None:
        """Serve another registry's metrics on /metrics too (the dev stack's worker)."""
        self._included.append(registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in METHODS else "OTHER", status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(key[0], key[1], str(status)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # several processes serve the port (service.api.server): every process's metrics,
            # summed, whichever answers
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return b"".join(generate_latest(r) for r in (self.registry, *self._included))


def route_name(request: web.Request) -> str:
    # The route template, never the raw path: ids must not explode label cardinality.
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        request.app[appkeys.METRICS].observe(
            route_name(request), request.method, status, time.perf_counter() - started
        )


async def metrics_view(request: web.Request) -> web.Response:
    body = request.app[appkeys.METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
