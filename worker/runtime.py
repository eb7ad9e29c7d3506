"""Everything a job needs, built once per worker process (arq startup) and kept in ctx."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from arq.connections import ArqRedis

from service.core.db import Pool, create_pool
from service.core.keyring import load_vault
from service.core.settings import Settings
from service.core.vault import Vault
from service.platforms.base import PlatformAdapter
from service.platforms.config import PlatformSettings
from service.platforms.http import HTTPAdapter
from service.platforms.registry import build_adapters
from service.platforms.reqwest import ReqwestTransport
from worker.limits import PlatformLimits
from worker.metrics import WorkerMetrics
from worker.webhooks import WebhookDispatcher

CTX_KEY = "octopost"


@dataclass(slots=True)
class Runtime:
    settings: Settings
    pool: Pool
    redis: ArqRedis
    vault: Vault
    http: aiohttp.ClientSession
    adapters: dict[str, PlatformAdapter]
    limits: PlatformLimits
    metrics: WorkerMetrics
    # the worker's webhook dispatcher; None where only the refresh machinery is borrowed
    # (the API's credential issuance)
    webhooks: WebhookDispatcher | None = None
    transport: ReqwestTransport | None = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        redis: ArqRedis,
        *,
        platform_settings: PlatformSettings | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> Runtime:
        vault = load_vault(settings)
        pool = await create_pool(settings, min_size=1)
        connector = aiohttp.TCPConnector(
            limit=settings.platform_concurrency * 9, limit_per_host=0, ttl_dns_cache=300
        )
        # No cookie jar: platform calls authenticate with tokens, never cookies, and the jar
        # filters every request and stores every Set-Cookie of every answer.
        http = aiohttp.ClientSession(
            connector=connector, raise_for_status=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        adapters = build_adapters(http, platform_settings or PlatformSettings())
        transport: ReqwestTransport | None = None
        if settings.worker_http_client == "reqwest":
            transport = ReqwestTransport(max_connections=settings.platform_concurrency * 9)
            for adapter in adapters.values():
                if isinstance(adapter, HTTPAdapter):
                    adapter.transport = transport
        limits = PlatformLimits(
            redis,
            concurrency=settings.platform_concurrency,
            rate_per_second=settings.platform_rate_per_second,
        )
        metrics = metrics or WorkerMetrics()
        webhooks = WebhookDispatcher(settings, pool, vault, metrics)
        await webhooks.start()
        return cls(
            settings,
            pool,
            redis,
            vault,
            http,
            adapters,
            limits,
            metrics,
            webhooks=webhooks,
            transport=transport,
        )

    async def close(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.transport is not None:
            await self.transport.close()
        await self.http.close()
        await self.pool.close()


def runtime(ctx: dict[str, Any]) -> Runtime:
    rt: Runtime = ctx[CTX_KEY]
    return rt
