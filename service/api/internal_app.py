"""The internal API: `/internal/v1/...` on a listener of its own, for other Octopost services.

Served by the same processes as the public API (`octopost api --internal-port`), usually on
a private address. Only service keys (`oct_svc_...`) authenticate here, each route names the
scope it needs, and nothing here is reachable through the public listener.

Adding an internal endpoint: write the handler, register it in `add_routes` with its scope,
describe it in `service.api.internal_openapi`, and, if it needs a resource of its own (a client
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

from service.api import appkeys, internal_views
from service.api.app import redis_client, request_id_middleware
from service.api.connect_views import add_internal_routes as add_connect_routes
from service.api.connect_views import connect_context
from service.api.credentials import Issuer
from service.api.errors import error_middleware
from service.api.internal_openapi import OPENAPI_PATH, build_internal_openapi
from service.api.metrics import ApiMetrics, metrics_middleware, metrics_view
from service.api.service_auth import SERVICE_PRINCIPAL, ServiceAuthenticator, requires_scope
from service.api.views import healthz, readyz
from service.core.db import create_pool
from service.core.keyring import load_vault
from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from service.platforms.registry import build_adapters
from worker.limits import PlatformLimits
from worker.metrics import WorkerMetrics
from worker.runtime import Runtime

PREFIX = "/internal/v1/"


def add_routes(app: web.Application) -> None:
    """Every internal route, with the scope a service key needs for it."""
    r = app.router
    r.add_get("/internal/v1/service-key", internal_views.whoami, allow_head=False)
    add_connect_routes(app)
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
        request[SERVICE_PRINCIPAL] = await request.app[appkeys.SERVICE_AUTHENTICATOR].authenticate(
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
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = ApiMetrics()

    async def database(app: web.Application) -> AsyncIterator[None]:
        given = pool if pool is not None else shared[appkeys.POOL] if shared is not None else None
        app[appkeys.POOL] = await create_pool(settings) if given is None else given
        app[appkeys.SERVICE_AUTHENTICATOR] = ServiceAuthenticator(
            app[appkeys.POOL],
            cache_seconds=settings.key_cache_seconds,
            cache_size=settings.key_cache_size,
            failures_per_minute=settings.auth_failures_per_minute,
        )
        yield
        if given is None:
            await app[appkeys.POOL].close()

    async def queue(app: web.Application) -> AsyncIterator[None]:
        given = (
            redis if redis is not None else shared[appkeys.REDIS] if shared is not None else None
        )
        app[appkeys.REDIS] = redis_client(settings.redis_url) if given is None else given
        yield
        if given is None:
            await app[appkeys.REDIS].aclose()

    async def issuance(app: web.Application) -> AsyncIterator[None]:
        # What the worker's refresh needs, on this app's pool and Redis: the vault (the only
        # place tokens are opened in the API), the platform adapters and the shared limits.
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as http:
            rt = Runtime(
                settings,
                app[appkeys.POOL],
                app[appkeys.REDIS],
                load_vault(settings),
                http,
                build_adapters(http, platform_settings or PlatformSettings()),
                PlatformLimits(
                    app[appkeys.REDIS],
                    concurrency=settings.platform_concurrency,
                    rate_per_second=settings.platform_rate_per_second,
                ),
                WorkerMetrics(),
            )
            app[appkeys.ISSUER] = Issuer(rt)
            yield

    app.cleanup_ctx.extend(
        [database, queue, connect_context(settings, platform_settings, shared=shared), issuance]
    )

    openapi = orjson.dumps(build_internal_openapi())

    async def openapi_view(_: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    add_routes(app)
    app.router.add_get(OPENAPI_PATH, openapi_view, allow_head=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
