"""The worker against real PostgreSQL, real Redis and the platform sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from arq.connections import ArqRedis

from devkit.embedded import free_port
from devkit.sandbox.app import create_sandbox_app
from service.api.server import AppRunner
from service.core.jobs import enqueue_sweep
from service.core.repository import sweeps
from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from worker.assembly import make_worker
from worker.runtime import Runtime


@dataclass
class Sandbox:
    url: str
    http: aiohttp.ClientSession

    async def set(self, token: str, state: str, **extra: Any) -> None:
        async with self.http.post(
            f"{self.url}/sandbox/tokens", json={"token": token, "state": state, **extra}
        ) as r:
            assert r.status == 200, await r.text()

    async def calls(self, **params: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/sandbox/calls", params=params) as r:
            assert r.status == 200, await r.text()
            calls: list[dict[str, Any]] = (await r.json())["calls"]
            return calls

    async def reset(self) -> None:
        async with self.http.post(f"{self.url}/sandbox/reset") as r:
            assert r.status == 200


@pytest.fixture(scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    runner = AppRunner(create_sandbox_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        yield Sandbox(f"http://127.0.0.1:{port}", http)
    await runner.cleanup()


@pytest.fixture(autouse=True)
async def fresh_sandbox(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        await request.getfixturevalue("sandbox").reset()


@pytest.fixture
def platform_settings(sandbox: Sandbox) -> PlatformSettings:
    return PlatformSettings(
        sandbox_url=sandbox.url,
        request_timeout_seconds=2,
    )


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"sweep_batch_size": 50, "backoff_base_seconds": 60})


SweepRunner = Callable[..., Any]


@pytest.fixture
def sweep(
    worker_settings: Settings,
    platform_settings: PlatformSettings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
) -> SweepRunner:
    """Trigger a sweep and run a burst worker in this process until the queue is empty."""

    async def run(
        trigger: str = "manual",
        platform: str | None = None,
        account: str | None = None,
        settings: Settings | None = None,
    ) -> asyncpg.Record:
        sweep_id = await sweeps.create_sweep(pool, trigger, platform, account)
        await enqueue_sweep(redis, sweep_id)
        worker = make_worker(
            settings or worker_settings,
            platform_settings=platform_settings,
            burst=True,
            handle_signals=False,
            cron_jobs=[],
            poll_delay=0.05,
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        row = await sweeps.get_sweep(pool, sweep_id)
        assert row is not None
        return row

    return run


@pytest.fixture
async def runtime(
    worker_settings: Settings, platform_settings: PlatformSettings, redis: ArqRedis
) -> AsyncIterator[Runtime]:
    rt = await Runtime.start(worker_settings, redis, platform_settings=platform_settings)
    yield rt
    await rt.close()
