"""Tools for the revocation tests: the platform sandbox on a real port, burst workers, the
relay run as the cron runs it, and the `octopost` command or worker as subprocesses."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from service.server import AppRunner
from service.settings import Settings
from tests.conftest import ROOT, free_port
from tests.platforms.rows import CREDENTIALS
from tests.worker.conftest import Sandbox
from worker.platforms.config import PlatformSettings
from worker.revoke import relay_revocations
from worker.runtime import CTX_KEY, Runtime
from worker.sandbox.app import create_sandbox_app
from worker.settings import make_worker

__all__ = ["CREDENTIALS", "Sandbox"]


@asynccontextmanager
async def running_sandbox() -> AsyncIterator[Sandbox]:
    runner = AppRunner(create_sandbox_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Sandbox(f"http://127.0.0.1:{port}", http)
    finally:
        await runner.cleanup()


def sandbox_platforms(sandbox: Sandbox) -> PlatformSettings:
    return PlatformSettings(
        sandbox_url=sandbox.url,
        request_timeout_seconds=5,
        **CREDENTIALS,  # type: ignore[arg-type]
    )


async def drain(
    settings: Settings, platforms: PlatformSettings, *, within: float = 30.0, **overrides: Any
) -> None:
    """A burst worker in this process until the queue is empty (deferred retries included:
    a burst worker keeps polling while a job waits out its backoff)."""
    worker = make_worker(
        settings,
        platform_settings=platforms,
        burst=True,
        handle_signals=False,
        cron_jobs=[],
        poll_delay=0.02,
        **overrides,
    )
    try:
        await asyncio.wait_for(worker.main(), within)
    finally:
        await worker.close()


async def relay(settings: Settings, platforms: PlatformSettings, redis: ArqRedis) -> dict[str, int]:
    """One tick of the relay cron, with the context a worker gives it."""
    rt = await Runtime.start(settings, redis, platform_settings=platforms)
    try:
        return await relay_revocations({CTX_KEY: rt, "redis": redis})
    finally:
        await rt.close()


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, within: float = 20.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def octopost_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "OCTOPOST_TOKEN_KEYS": settings.token_keys,
        "OCTOPOST_DATA_DIR": str(settings.data_dir),
        "OCTOPOST_ENV": "test",
        **extra,
    }


def octopost(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`octopost ARGS` as ops run it, against the test database and Redis."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        env=octopost_env(settings, **(env or {})),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def worker_process(settings: Settings, sandbox: Sandbox, **extra: str) -> subprocess.Popen[bytes]:
    """`octopost worker` in a process of its own (no schedule), talking to the sandbox."""
    env = octopost_env(
        settings,
        OCTOPOST_SANDBOX_URL=sandbox.url,
        OCTOPOST_SWEEP_INTERVAL_MINUTES="0",
        OCTOPOST_LOG_LEVEL="INFO",
        **{f"OCTOPOST_{k.upper()}": v for k, v in CREDENTIALS.items()},
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def revocation(pool: asyncpg.Pool, revocation_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM revocations WHERE id = $1", revocation_id)
    assert row is not None, revocation_id
    return row


async def events(pool: asyncpg.Pool, account_id: str) -> list[tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT kind, reason FROM account_events WHERE account_id = $1 ORDER BY id", account_id
    )
    return [(r["kind"], r["reason"]) for r in rows]


async def ciphertext_left(pool: asyncpg.Pool) -> int:
    """Sealed token sets anywhere: live tokens plus revocations still carrying theirs."""
    n: int = await pool.fetchval(
        "SELECT (SELECT count(*) FROM account_tokens)"
        " + (SELECT count(*) FROM revocations WHERE sealed IS NOT NULL OR key_id IS NOT NULL)"
    )
    return n
