"""The internal API: `/internal/v1/...` on a listener of its own, for other Octopost services.

Served by the same processes as the public API (`octopost api --internal-port`), usually on
a private address. Only service keys (`oct_svc_...`) authenticate here, each route names the
scope it needs, and nothing here is reachable through the public listener.

Adding an internal endpoint: write the handler, register it in `add_routes` with its scope,
describe it in `service.internal_openapi`, and, if it needs a resource of its own (a client
session, say), add a cleanup context in `create_internal_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from arq.connections import ArqRedis

from service import internal_views, keys
from service.app import redis_client, request_id_middleware
from service.credentials import Issuer
from service.db import create_pool
from service.errors import error_middleware
from service.internal_openapi import OPENAPI_PATH, build_internal_openapi
from service.metrics import ApiMetrics, metrics_middleware, metrics_view
from service.service_auth import SERVICE_PRINCIPAL, ServiceAuthenticator, requires_scope
from service.settings import Settings
from service.tokenkeys import load_vault
from service.views import healthz, readyz
from worker.limits import PlatformLimits
from worker.metrics import WorkerMetrics
from worker.platforms.config import PlatformSettings
from worker.platforms.registry import build_adapters
from worker.runtime import Runtime

PREFIX = "/internal/v1/"


def add_routes(app: web.Application) -> None:
    """Every internal route, with the scope a service key needs for it."""
    r = app.router
    r.add_get("/internal/v1/service-key", internal_views.whoami, allow_head=False)
    r.add_post(
        "/internal/v1/accounts/{account_id}/credentials",
        requires_scope("credentials", internal_views.issue_credentials),
    )
    r.add_post(
        "/internal/v1/accounts/{account_id}/usage",
        requires_scope("credentials", internal_views.report_usage),
    )


@web.middleware
async def service_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PREFIX) and request.path != OPENAPI_PATH:
        request[SERVICE_PRINCIPAL] = await request.app[keys.SERVICE_AUTHENTICATOR].authenticate(
            request.headers.get("Authorization"), request.remote or "unknown"
        )
    return await handler(request)


@web.middleware
async def no_store_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Answers here may carry tokens: no cache on the way may keep any of them.
    response = await handler(request)
    response.headers["Cache-Control"] = "no-store"
    return response


def create_internal_app(
    settings: Settings | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    redis: ArqRedis | None = None,
    shared: web.Application | None = None,
    platform_settings: PlatformSettings | None = None,
) -> web.Application:
    """Build the internal app. It uses the pool and Redis handed in, else those of `shared`
    (the public app of the same process, set up first), else its own."""
    settings = settings or Settings()
    app = web.Application(
        middlewares=[
            request_id_middleware,
            no_store_middleware,
            metrics_middleware,
            error_middleware,
            service_auth_middleware,
        ],
        # bodies are read whole (JSON); a larger one is a 413 from aiohttp itself
        client_max_size=settings.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = ApiMetrics()

    async def database(app: web.Application) -> AsyncIterator[None]:
        given = pool if pool is not None else shared[keys.POOL] if shared is not None else None
        app[keys.POOL] = await create_pool(settings) if given is None else given
        app[keys.SERVICE_AUTHENTICATOR] = ServiceAuthenticator(
            app[keys.POOL],
            cache_seconds=settings.key_cache_seconds,
            cache_size=settings.key_cache_size,
            failures_per_minute=settings.auth_failures_per_minute,
        )
        yield
        if given is None:
            await app[keys.POOL].close()

    async def queue(app: web.Application) -> AsyncIterator[None]:
        given = redis if redis is not None else shared[keys.REDIS] if shared is not None else None
        app[keys.REDIS] = redis_client(settings.redis_url) if given is None else given
        yield
        if given is None:
            await app[keys.REDIS].aclose()

    async def issuance(app: web.Application) -> AsyncIterator[None]:
        # What the worker's refresh needs, on this app's pool and Redis: the vault (the only
        # place tokens are opened in the API), the platform adapters and the shared limits.
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as http:
            rt = Runtime(
                settings,
                app[keys.POOL],
                app[keys.REDIS],
                load_vault(settings),
                http,
                build_adapters(http, platform_settings or PlatformSettings()),
                PlatformLimits(
                    app[keys.REDIS],
                    concurrency=settings.platform_concurrency,
                    rate_per_second=settings.platform_rate_per_second,
                ),
                WorkerMetrics(),
            )
            app[keys.ISSUER] = Issuer(rt)
            yield

    app.cleanup_ctx.extend([database, queue, issuance])

    openapi = orjson.dumps(build_internal_openapi())

    async def openapi_view(_: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    add_routes(app)
    app.router.add_get(OPENAPI_PATH, openapi_view, allow_head=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
