"""Injected faults under traffic: PostgreSQL stopped, killed and frozen, Redis stopped, and
SIGTERM to a serving API process. Private servers (devkit.embedded) are stopped and
started on the same port; the API is the real app on a real port.

What must hold: every request gets an answer within a bound (503 JSON with Retry-After
while PostgreSQL is gone, never a hang), the same process serves 200s again once it is
back, and no committed disconnect is lost or half-done.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from arq.constants import default_queue_name

from devkit.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from service.api.app import create_app, redis_client
from service.api.server import AppRunner
from service.core.db import migrate
from service.core.jobs import revoke_job_id
from service.core.settings import Settings
from service.core.vault import Vault
from tests.reliability.conftest import (
    ApiProcess,
    account_line,
    api_env,
    assert_error_body,
    create_key,
    import_into,
)

# No request may take longer than this while a dependency is down or frozen: the pool's
# acquire timeout and the command timeout below, plus scheduling slack on a busy machine.
ANSWER_BOUND = 4.0
COMMAND_TIMEOUT = 1.5
ACQUIRE_TIMEOUT = 1.5
# After the database is back, the same process answers 200 again within this long.
RECOVERY_BOUND = 10.0

FIGURES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("fault-pg") / "data")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    yield server
    server.stop()
    print(f"\nfault figures: {dict(sorted(FIGURES.items()))}")


@dataclass
class Stack:
    pg: EmbeddedPostgres
    redis_server: EmbeddedRedis
    settings: Settings
    base: str
    session: aiohttp.ClientSession
    key: str
    account_ids: list[str]
    redis: ArqRedis

    async def call(self, method: str, path: str) -> tuple[int, float, dict[str, Any] | None]:
        started = time.monotonic()
        async with self.session.request(
            method, f"{self.base}{path}", headers={"Authorization": f"Bearer {self.key}"}
        ) as r:
            body = await r.read()
            elapsed = time.monotonic() - started
            doc = None
            if r.status >= 400:
                doc = assert_error_body(r.status, r.headers, body)
                if r.status == 503:
                    assert r.headers["Retry-After"].isdigit()
            return r.status, elapsed, doc


@pytest.fixture
async def stack(
    private_pg: EmbeddedPostgres,
    private_redis: EmbeddedRedis,
    settings: Settings,
    vault: Vault,
) -> AsyncIterator[Stack]:
    """The app (its own pool and Redis client) over the private servers, 40 accounts."""
    private_pg.start()  # a no-op when a previous test left it running
    private_redis.start()
    await migrate(private_pg.url)
    conn = await asyncpg.connect(private_pg.url)
    try:
        await conn.execute(
            "TRUNCATE account_events, revocations, account_tokens, accounts, api_keys, "
            "workspaces RESTART IDENTITY CASCADE"
        )
        key = await create_key(conn, "faults")
        account_ids = await import_into(
            conn, vault, "faults", [account_line("twitter", f"f{i}") for i in range(40)]
        )
    finally:
        await conn.close()
    fault_settings = settings.model_copy(
        update={
            "database_url": private_pg.url,
            "redis_url": private_redis.url,
            "db_acquire_timeout": ACQUIRE_TIMEOUT,
            "db_command_timeout": COMMAND_TIMEOUT,
            "db_pool_min": 2,
            "db_pool_max": 8,
        }
    )
    app = create_app(fault_settings)
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    redis = redis_client(private_redis.url)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield Stack(
            private_pg,
            private_redis,
            fault_settings,
            f"http://127.0.0.1:{port}",
            session,
            key,
            account_ids,
            redis,
        )
    await redis.aclose()
    await runner.cleanup()


@dataclass
class Traffic:
    """Readers in a loop until stopped; every answer recorded with its time."""

    stack: Stack
    readers: int = 6
    results: list[tuple[float, int, float]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _reader(self, n: int) -> None:
        paths = ["/v1/accounts", f"/v1/accounts/{self.stack.account_ids[n]}"]
        i = 0
        while not self._stop.is_set():
            status, elapsed, _ = await self.stack.call("GET", paths[i % 2])
            self.results.append((time.monotonic(), status, elapsed))
            i += 1
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._reader(n)) for n in range(self.readers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def between(self, start: float, end: float) -> list[tuple[float, int, float]]:
        return [r for r in self.results if start <= r[0] <= end]


async def _consistent(stack: Stack) -> dict[str, int]:
    """Every account is live with its tokens, or disconnected with no tokens and exactly one
    revocation row that still holds the ciphertext: nothing half-done, nothing lost."""
    conn = await asyncpg.connect(stack.pg.url)
    try:
        rows = await conn.fetch(
            """SELECT a.id, a.disconnected_at IS NOT NULL AS gone,
                      (SELECT count(*) FROM account_tokens t WHERE t.account_id = a.id) AS tokens,
                      (SELECT count(*) FROM revocations r
                        WHERE r.account_id = a.id AND r.sealed IS NOT NULL) AS revocations
               FROM accounts a"""
        )
    finally:
        await conn.close()
    assert len(rows) == len(stack.account_ids)
    for r in rows:
        if r["gone"]:
            assert (r["tokens"], r["revocations"]) == (0, 1), dict(r)
        else:
            assert (r["tokens"], r["revocations"]) == (1, 0), dict(r)
    return {"live": sum(not r["gone"] for r in rows), "gone": sum(r["gone"] for r in rows)}


async def _outage(
    stack: Stack, down: Callable[[], object], up: Callable[[], object], label: str
) -> None:
    traffic = Traffic(stack)
    traffic.start()
    await asyncio.sleep(0.5)
    deletes: dict[str, int] = {}
    # some disconnects before, during and after the outage
    for account_id in stack.account_ids[10:13]:
        deletes[account_id] = (await stack.call("DELETE", f"/v1/accounts/{account_id}"))[0]
    t_down = time.monotonic()
    await asyncio.to_thread(down)
    await asyncio.sleep(2.0)
    for account_id in stack.account_ids[13:16]:
        deletes[account_id] = (await stack.call("DELETE", f"/v1/accounts/{account_id}"))[0]
    t_up = time.monotonic()
    await asyncio.to_thread(up)
    t_started = time.monotonic()
    await asyncio.sleep(0.2)
    deadline = time.monotonic() + RECOVERY_BOUND
    while time.monotonic() < deadline:
        recent = traffic.between(time.monotonic() - 0.5, time.monotonic())
        if len(recent) >= 10 and all(s == 200 for _, s, _ in recent):
            break
        await asyncio.sleep(0.1)
    t_recovered = time.monotonic()
    await asyncio.sleep(1.0)
    for account_id in stack.account_ids[16:19]:
        deletes[account_id] = (await stack.call("DELETE", f"/v1/accounts/{account_id}"))[0]
    await traffic.stop()

    statuses = Counter(s for _, s, _ in traffic.results)
    slowest = max(e for _, _, e in traffic.results)
    assert set(statuses) <= {200, 503}, statuses
    assert slowest < ANSWER_BOUND, (label, slowest)
    during = traffic.between(t_down + 1.0, t_up)
    assert during and all(s == 503 for _, s, _ in during), Counter(s for _, s, _ in during)
    assert t_recovered < deadline, (label, "no recovery", statuses)
    after = traffic.between(t_recovered, time.monotonic())
    assert after and all(s == 200 for _, s, _ in after), Counter(s for _, s, _ in after)
    # disconnects: 204 before and after; 503 while down, and such a one was not done
    assert [deletes[i] for i in stack.account_ids[10:13]] == [204] * 3
    assert [deletes[i] for i in stack.account_ids[13:16]] == [503] * 3
    assert [deletes[i] for i in stack.account_ids[16:19]] == [204] * 3
    state = await _consistent(stack)
    assert state == {"live": len(stack.account_ids) - 6, "gone": 6}
    FIGURES[f"{label}: requests"] += len(traffic.results)
    FIGURES[f"{label}: 503 answers"] += statuses[503]
    FIGURES[f"{label}: slowest answer ms"] = round(slowest * 1000)
    FIGURES[f"{label}: back to 200 after restart ms"] = round((t_recovered - t_started) * 1000)
    FIGURES["faults survived"] += 1


async def test_postgres_stopped_during_traffic(stack: Stack) -> None:
    await _outage(stack, lambda: stack.pg.stop("fast"), stack.pg.start, "postgres stopped")


async def test_postgres_killed_during_traffic(stack: Stack) -> None:
    await _outage(stack, stack.pg.kill, stack.pg.start, "postgres killed")


def _postgres_processes(pg: EmbeddedPostgres) -> list[psutil.Process]:
    pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    main = psutil.Process(pid)
    return [main, *main.children(recursive=True)]


async def test_postgres_frozen_during_traffic(stack: Stack) -> None:
    """A database that accepts nothing and answers nothing (SIGSTOP: a partition, a stuck
    host): requests end at the acquire/command timeouts as 503s, not hang."""
    frozen: list[psutil.Process] = []

    def freeze() -> None:
        frozen.extend(_postgres_processes(stack.pg))
        for p in frozen:
            p.send_signal(signal.SIGSTOP)

    def thaw() -> None:
        for p in frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGCONT)

    try:
        await _outage(stack, freeze, thaw, "postgres frozen")
    finally:
        thaw()


async def test_redis_stopped_reads_and_disconnects_still_served(stack: Stack) -> None:
    await asyncio.to_thread(stack.redis_server.stop)
    try:
        r = await stack.session.get(f"{stack.base}/readyz")
        assert r.status == 503
        assert assert_error_body(r.status, r.headers, await r.read())["message"] == (
            "not ready: redis unreachable"
        )
        started = time.monotonic()
        for account_id in stack.account_ids[:5]:
            assert (await stack.call("GET", f"/v1/accounts/{account_id}"))[0] == 200
        assert (await stack.call("GET", "/v1/accounts"))[0] == 200
        for account_id in stack.account_ids[:3]:
            status, elapsed, doc = await stack.call("DELETE", f"/v1/accounts/{account_id}")
            assert status == 204, doc
            assert elapsed < ANSWER_BOUND
        assert (await stack.call("GET", f"/v1/accounts/{stack.account_ids[0]}"))[0] == 404
        assert time.monotonic() - started < 3 * ANSWER_BOUND
    finally:
        await asyncio.to_thread(stack.redis_server.start)
    # The disconnects are durable in the outbox, waiting for the relay (nothing queued).
    conn = await asyncpg.connect(stack.pg.url)
    try:
        pending = await conn.fetch(
            "SELECT id, status, sealed IS NOT NULL AS sealed FROM revocations ORDER BY id"
        )
    finally:
        await conn.close()
    assert len(pending) == 3 and all(r["status"] == "pending" and r["sealed"] for r in pending)
    for r in pending:
        assert await stack.redis.zscore(default_queue_name, revoke_job_id(r["id"])) is None
    # Redis back: the same process queues the next disconnect at once.
    r = await stack.session.get(f"{stack.base}/readyz")
    assert r.status == 200, await r.text()
    status, _, _ = await stack.call("DELETE", f"/v1/accounts/{stack.account_ids[3]}")
    assert status == 204
    conn = await asyncpg.connect(stack.pg.url)
    try:
        (revocation_id,) = await conn.fetchrow(
            "SELECT id FROM revocations WHERE account_id = $1", stack.account_ids[3]
        )
    finally:
        await conn.close()
    assert await stack.redis.zscore(default_queue_name, revoke_job_id(revocation_id)) is not None
    await _consistent(stack)
    FIGURES["redis stopped: disconnects kept pending"] += 3
    FIGURES["faults survived"] += 1


# ----------------------------------------------------------------- SIGTERM drain


async def test_sigterm_drains_in_flight_requests(
    settings: Settings, vault: Vault, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """SIGTERM while requests are held inside the database: the port closes, the held
    requests still complete with 200, then the process exits 0."""
    async with pool.acquire() as conn:
        key = await create_key(conn, "drain")
        (account_id,) = await import_into(conn, vault, "drain", [account_line("youtube", "d")])
    api = ApiProcess(api_env(settings, OCTOPOST_LOG_LEVEL="INFO"), tmp_path / "api.log")
    await asyncio.to_thread(api.start)
    headers = {"Authorization": f"Bearer {key}"}
    paths = ["/v1/accounts", f"/v1/accounts/{account_id}"] * 4
    lock = await asyncpg.connect(settings.database_url)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{api.base}/v1/accounts", headers=headers) as warm:
                assert warm.status == 200  # the key is resolved and cached now
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")

        async def held(path: str) -> tuple[int, bytes]:
            async with aiohttp.ClientSession() as own:  # a connection each
                async with own.get(f"{api.base}{path}", headers=headers) as r:
                    return r.status, await r.read()

        in_flight = [asyncio.create_task(held(p)) for p in paths]
        # All requests are in the API (one connection each), and each one's statement (a
        # pooled connection each) waits for our lock.
        await _until(lambda: _inbound(api) >= len(paths))
        holder = await lock.fetchval("SELECT pg_backend_pid()")
        await _until_async(
            lambda: lock.fetchval(
                "SELECT count(*) >= $2 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                holder,
                len(paths),
            )
        )
        assert not any(t.done() for t in in_flight)
        signalled = time.monotonic()
        api.signal(signal.SIGTERM)
        # The listening socket closes: new connections are refused while draining.
        while time.monotonic() - signalled < 5:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", api.port)
            except OSError:
                break
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the port stayed open after SIGTERM")
        assert api.proc is not None and api.proc.poll() is None  # still draining
        await asyncio.sleep(0.5)
        await tx.rollback()
        answers = await asyncio.wait_for(asyncio.gather(*in_flight), timeout=10)
        code = await asyncio.to_thread(api.wait, 15)
    finally:
        await lock.close()  # never leave the table locked for the tests after this one
        api.kill()
    assert [status for status, _ in answers] == [200] * len(paths), answers
    assert code == 0, api.logs()
    assert "shutting down" in api.logs()
    FIGURES["sigterm: in-flight requests drained"] += len(paths)
    FIGURES["faults survived"] += 1


def _inbound(api: ApiProcess) -> int:
    """Client connections the API process has accepted and holds open."""
    assert api.proc is not None
    return sum(
        1
        for c in psutil.Process(api.proc.pid).net_connections("tcp")
        if c.laddr and c.laddr.port == api.port and c.status == psutil.CONN_ESTABLISHED
    )


async def _until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _until_async(condition: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
