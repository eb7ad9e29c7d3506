"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from service.api import appkeys, push_views, views, webhook_views
from service.api.appkeys import PRINCIPAL
from service.api.auth import Authenticator
from service.api.errors import PayloadTooLarge, RequestTimeout, error_middleware
from service.api.metrics import ApiMetrics, metrics_middleware, metrics_view
from service.api.openapi import build_openapi
from service.core.db import create_pool
from service.core.ids import random_string
from service.core.keyring import load_vault
from service.core.settings import Settings
from service.core.vault import Vault
from service.platforms.config import PlatformSettings

BODY_READ_SECONDS = 10.0
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._\-]{1,64}")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else random_string(16)
    request[appkeys.REQUEST_ID] = request_id
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Refuse an oversized body up front, also on endpoints that read none (where aiohttp's
    # client_max_size never triggers) instead of silently ignoring it.
    limit = request.app[appkeys.SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    reads_body = request.path.startswith(push_views.PREFIX + "/")
    if request.content_length is None and request.body_exists and not reads_body:
        # A chunked body declares no length: count it (up to the limit) instead, and do not
        # wait for ever on a client that stops sending.
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_READ_SECONDS):
                while chunk := await request.content.read(64 * 1024):
                    body += chunk
                    if len(body) > limit:
                        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        except TimeoutError:
            raise RequestTimeout("the request body did not arrive in time") from None
        request[appkeys.READ_BODY] = bytes(body)  # the stream is used up: handlers read this
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(("/v1/accounts", "/v1/webhook_endpoints")):
        request[PRINCIPAL] = await request.app[appkeys.AUTHENTICATOR].authenticate(
            request.headers.get("Authorization"), request.remote or "unknown"
        )
    return await handler(request)


def redis_client(url: str) -> ArqRedis:
    """A Redis client that never blocks a request for long when Redis is down."""
    pool = ConnectionPool.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=30
    )
    client = ArqRedis(connection_pool=pool)
    # A client given a pool leaves it open on aclose(); this pool is the client's own, and
    # its connections must close with it (else sockets leak at every shutdown).
    client.auto_close_connection_pool = True
    return client


def create_app(
    settings: Settings | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    redis: ArqRedis | None = None,
    platform_settings: PlatformSettings | None = None,
    vault: Vault | None = None,
) -> web.Application:
    """Build the app. Resources handed in are used as they are and not closed here."""
    from service.api.connect_views import add_public_routes, connect_context

    settings = settings or Settings()
    app = web.Application(
        middlewares=[
            request_id_middleware,
            metrics_middleware,
            error_middleware,
            body_limit_middleware,
            auth_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = ApiMetrics()
    app[appkeys.VAULT] = vault or load_vault(settings)

    async def database(app: web.Application) -> AsyncIterator[None]:
        own = pool is None
        app[appkeys.POOL] = await create_pool(settings) if pool is None else pool
        app[appkeys.AUTHENTICATOR] = Authenticator(
            app[appkeys.POOL],
            cache_seconds=settings.key_cache_seconds,
            cache_size=settings.key_cache_size,
            failures_per_minute=settings.auth_failures_per_minute,
        )
        yield
        if own:
            await app[appkeys.POOL].close()

    async def queue(app: web.Application) -> AsyncIterator[None]:
        own = redis is None
        app[appkeys.REDIS] = redis_client(settings.redis_url) if redis is None else redis
        yield
        if own:
            await app[appkeys.REDIS].aclose()

    app.cleanup_ctx.extend([database, queue, connect_context(settings, platform_settings)])

    openapi = orjson.dumps(build_openapi())

    async def openapi_view(_: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    app.router.add_get("/v1/accounts", views.list_accounts, allow_head=False)
    app.router.add_get("/v1/accounts/{account_id}", views.get_account, allow_head=False)
    app.router.add_delete("/v1/accounts/{account_id}", views.disconnect_account)
    app.router.add_get("/v1/accounts/{account_id}/health", views.account_health, allow_head=False)
    app.router.add_get("/v1/accounts/{account_id}/events", views.account_events, allow_head=False)
    webhook_views.add_routes(app)
    app.router.add_get("/v1/openapi.json", openapi_view, allow_head=False)
    add_public_routes(app)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/metrics", metrics_view)
    push_views.add_routes(app)
    return app
