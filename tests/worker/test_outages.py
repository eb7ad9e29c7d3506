"""A running `octopost worker` and `octopost api` outlive Redis and PostgreSQL restarts.

Both are real subprocesses on private embedded servers that this module starts, stops and
starts again on the same port. Neither process is restarted: after each outage a sweep
and a revocation complete, the API answers reads and /readyz again, and the worker has
said once that the dependency went away and once that it is back (no traceback per poll).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from arq.connections import ArqRedis

from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from service.api.app import redis_client
from service.core.db import migrate
from service.core.jobs import enqueue_sweep
from service.core.repository import sweeps
from service.core.settings import Settings
from service.core.vault import Vault
from tests.conftest import ROOT
from tests.reliability.conftest import ApiProcess, api_env, create_key, import_into
from tests.worker.conftest import Sandbox
from tests.worker.test_processes import WorkerProcess, account_lines, process_env

# Generous: the machine is shared and busy. Each wait ends as soon as its event happens.
DEADLINE = 60.0


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("outage-pg") / "data")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("outage-redis"))
    server.start()
    yield server
    server.stop()


async def until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    within: float = DEADLINE,
    log: Callable[[], str] = str,
) -> None:
    """Wait for an event (asked again every 50 ms), failing after a generous deadline."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}\n{log()[-6000:]}"
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    pg: EmbeddedPostgres
    redis_server: EmbeddedRedis
    worker: WorkerProcess
    api: ApiProcess
    http: aiohttp.ClientSession
    key: str
    account_ids: list[str]

    async def db(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(self.pg.url)
        return conn

    async def redis(self) -> ArqRedis:
        return redis_client(self.redis_server.url)

    async def status(self, path: str) -> int:
        try:
            async with self.http.get(
                f"{self.api.base}{path}", headers={"Authorization": f"Bearer {self.key}"}
            ) as r:
                await r.read()
                return r.status
        except aiohttp.ClientError:
            return 0

    async def log_count(self, text: str) -> int:
        return self.worker.text().count(text)

    async def sweep_completes(self) -> None:
        """A manual sweep, queued now, checks every live account."""
        conn = await self.db()
        redis = await self.redis()
        try:
            sweep_id = await sweeps.create_sweep(conn, "manual")
            await enqueue_sweep(redis, sweep_id)

            async def done() -> bool:
                row = await sweeps.get_sweep(conn, sweep_id)
                return row is not None and row["status"] == "done"

            await until(f"sweep {sweep_id} done", done, log=self.worker.text)
            row = await sweeps.get_sweep(conn, sweep_id)
            assert row is not None
            live = await conn.fetchval(
                "SELECT count(*) FROM accounts WHERE disconnected_at IS NULL"
            )
            assert row["checked"] == live, dict(row)
        finally:
            await redis.aclose()
            await conn.close()

    async def revocation_completes(self) -> None:
        """DELETE an account through the API; its tokens are revoked at the platform."""
        account_id = self.account_ids.pop()
        async with self.http.delete(
            f"{self.api.base}/v1/accounts/{account_id}",
            headers={"Authorization": f"Bearer {self.key}"},
        ) as r:
            assert r.status == 204, await r.text()
        conn = await self.db()
        try:

            async def revoked() -> bool:
                status = await conn.fetchval(
                    "SELECT status FROM revocations WHERE account_id = $1", account_id
                )
                return bool(status == "done")

            await until(f"revocation of {account_id} done", revoked, log=self.worker.text)
        finally:
            await conn.close()

    def assert_alive(self) -> None:
        assert self.worker.proc.returncode is None, self.worker.text()[-3000:]
        assert self.api.proc is not None and self.api.proc.poll() is None, self.api.logs()[-3000:]


@pytest.fixture
async def stack(
    private_pg: EmbeddedPostgres,
    private_redis: EmbeddedRedis,
    settings: Settings,
    vault: Vault,
    sandbox: Sandbox,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    await asyncio.to_thread(private_pg.start)  # no-ops when running
    await asyncio.to_thread(private_redis.start)
    await migrate(private_pg.url)
    conn = await asyncpg.connect(private_pg.url)
    try:
        await conn.execute(
            "TRUNCATE sweeps, account_events, revocations, account_tokens, accounts, api_keys,"
            " workspaces RESTART IDENTITY CASCADE"
        )
        key = await create_key(conn, "outages")
        account_ids = await import_into(conn, vault, "outages", account_lines(45, "out"))
    finally:
        await conn.close()
    redis = redis_client(private_redis.url)
    try:
        await redis.flushdb()  # job ids repeat (sweep ids restart): no earlier test's results
    finally:
        await redis.aclose()
    own = settings.model_copy(
        update={"database_url": private_pg.url, "redis_url": private_redis.url}
    )
    env = process_env(own, sandbox, OCTOPOST_DB_ACQUIRE_TIMEOUT="2")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    worker = WorkerProcess("worker", proc, log)
    api = ApiProcess(
        api_env(own, OCTOPOST_DB_ACQUIRE_TIMEOUT="2", OCTOPOST_LOG_LEVEL="INFO"),
        tmp_path / "api.log",
    )
    try:
        await worker.ready()
        await asyncio.to_thread(api.start)
        async with aiohttp.ClientSession() as http:
            yield Stack(private_pg, private_redis, worker, api, http, key, account_ids)
    finally:
        api.kill()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _outage(
    stack: Stack, name: str, stop: Callable[[], Any], start: Callable[[], Any]
) -> None:
    # working before
    await stack.sweep_completes()
    await stack.revocation_completes()
    assert await stack.status("/readyz") == 200

    await asyncio.to_thread(stop)

    async def noticed() -> bool:
        return await stack.log_count(f"{name} unreachable") == 1

    await until(f"the worker notices {name} is gone", noticed)
    assert await stack.status("/readyz") == 503
    stack.assert_alive()

    await asyncio.to_thread(start)

    async def back() -> bool:
        return await stack.log_count(f"{name} is back") == 1

    await until(f"the worker sees {name} back", back)

    async def ready() -> bool:
        return await stack.status("/readyz") == 200

    await until("the API is ready again", ready)
    assert await stack.status(f"/v1/accounts/{stack.account_ids[0]}") == 200
    assert await stack.status("/v1/accounts") == 200

    # the same processes go on working
    await stack.sweep_completes()
    await stack.revocation_completes()
    stack.assert_alive()
    log = stack.worker.text()
    assert log.count(f"{name} unreachable") == 1, log[-4000:]
    assert log.count(f"{name} is back") == 1, log[-4000:]
    assert "Traceback" not in log, log[-4000:]


async def test_worker_and_api_outlive_a_redis_restart(stack: Stack) -> None:
    await _outage(stack, "Redis", stack.redis_server.stop, stack.redis_server.start)


async def test_worker_and_api_outlive_a_postgres_restart(stack: Stack) -> None:
    await _outage(stack, "PostgreSQL", lambda: stack.pg.stop("fast"), stack.pg.start)


async def test_a_sweep_queued_while_postgres_is_down_runs_when_it_is_back(
    stack: Stack,
) -> None:
    """A job picked (or running) while the database is gone is not a failed job: it goes
    back to the queue and runs once the database answers again."""
    conn = await stack.db()
    try:
        sweep_id = await sweeps.create_sweep(conn, "manual")
    finally:
        await conn.close()
    await asyncio.to_thread(stack.pg.stop, "fast")
    redis = await stack.redis()
    try:
        await enqueue_sweep(redis, sweep_id)

        async def noticed() -> bool:
            return await stack.log_count("PostgreSQL unreachable") == 1

        await until("the worker notices PostgreSQL is gone", noticed)
        assert await redis.zscore("arq:queue", f"sweep:{sweep_id}") is not None
    finally:
        await redis.aclose()
    await asyncio.to_thread(stack.pg.start)
    conn = await stack.db()
    try:

        async def done() -> bool:
            row = await sweeps.get_sweep(conn, sweep_id)
            return row is not None and row["status"] == "done"

        await until(f"sweep {sweep_id} done", done, log=stack.worker.text)
        row = await sweeps.get_sweep(conn, sweep_id)
        assert row is not None, sweep_id
        assert row["checked"] == len(stack.account_ids), dict(row)
    finally:
        await conn.close()
    stack.assert_alive()
    assert "Traceback" not in stack.worker.text(), stack.worker.text()[-4000:]
