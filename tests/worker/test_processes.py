"""`octopost worker` as separate processes sharing one Redis queue and one database.

Each worker here is a real `python -m service.cli worker` subprocess configured only through
its environment; the platforms are the sandbox, served from this test process on a real
port. The sandbox cancels a request whose client went away (``handler_cancellation``), so
its call log holds only the calls that reached a live worker: a killed or cancelled
worker's unanswered calls do not count as checks.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from arq.connections import ArqRedis

from devkit.embedded import free_port
from devkit.sandbox.app import create_sandbox_app
from service.core.ids import PLATFORMS
from service.core.jobs import CHECK_JOB, SWEEP_JOB, enqueue_sweep
from service.core.repository import sweeps
from service.core.settings import Settings
from tests.conftest import ROOT
from tests.worker.conftest import Sandbox

BATCH = 50
READY_TIMEOUT = 30.0
# arq's log lines for a job starting and finishing, e.g.
#   "  0.01s → check:3:acc_x:50:check_batch(3, ['acc_x', …) try=2 delayed=6.10s"
#   "  1.02s ← check:3:acc_x:50:check_batch ● {'checked': 50, 'skipped': 0, 'refreshed': 0}"
STARTED = re.compile(r"→ (\S+):(\w+)\(.*?\)(?: try=(\d+))?(?: delayed=\S+)?$", re.M)
FINISHED = re.compile(r"← (check:\S+):check_batch ● (\{.*\})$", re.M)


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    """The platform sandbox, dropping a call whose client disconnected before the answer."""
    runner = web.AppRunner(create_sandbox_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        yield Sandbox(f"http://127.0.0.1:{port}", http)
    await runner.cleanup()


@dataclass
class WorkerProcess:
    name: str
    proc: asyncio.subprocess.Process
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while "worker ready" not in self.text():
            assert self.proc.returncode is None, f"{self.name} exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.text()}"
            await asyncio.sleep(0.05)

    def started(self, function: str = CHECK_JOB) -> list[tuple[str, int]]:
        """(job id, try) of every job of this function this worker started."""
        found = STARTED.finditer(self.text())
        return [(m[1], int(m[3] or 1)) for m in found if m[2] == function]

    def finished(self) -> dict[str, dict[str, int]]:
        """job id -> result of every check batch this worker completed."""
        return {m[1]: ast.literal_eval(m[2]) for m in FINISHED.finditer(self.text())}

    async def exit_code(self, within: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), within)


StartWorker = Callable[..., Awaitable[WorkerProcess]]


def process_env(settings: Settings, sandbox: Sandbox, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "OCTOPOST_TOKEN_KEYS": settings.token_keys,
        "OCTOPOST_ENV": "test",
        "OCTOPOST_DATA_DIR": str(settings.data_dir),
        "OCTOPOST_LOG_LEVEL": "INFO",
        "OCTOPOST_SANDBOX_URL": sandbox.url,
        "OCTOPOST_REQUEST_TIMEOUT_SECONDS": "10",
        # no scheduled sweeps: every sweep in these tests is one the test started
        "OCTOPOST_SWEEP_INTERVAL_MINUTES": "0",
        "OCTOPOST_SWEEP_BATCH_SIZE": str(BATCH),
        "OCTOPOST_DB_POOL_MAX": "4",
    }
    env.update(extra)
    return env


@pytest.fixture
async def start_worker(
    settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> AsyncIterator[StartWorker]:
    """Start `octopost worker` processes; every one still running at the end is killed."""
    started: list[WorkerProcess] = []

    async def start(name: str, *args: str, **env: str) -> WorkerProcess:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service.cli",
                "worker",
                *args,
                cwd=ROOT,
                env=process_env(settings, sandbox, **env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        worker = WorkerProcess(name, proc, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()


def account_lines(n: int, prefix: str) -> list[dict[str, Any]]:
    """n accounts spread round-robin over the nine platforms, each with its own token."""
    lines = []
    for i in range(n):
        platform = PLATFORMS[i % len(PLATFORMS)]
        user = f"{prefix}-{i}"
        lines.append(
            {
                "platform": platform,
                "platform_user_id": user,
                "username": f"{user}@mastodon.example" if platform == "mastodon" else user,
                "display_name": user,
                "access_token": f"tok-{user}",
            }
        )
    return lines


async def start_sweep(pool: asyncpg.Pool, redis: ArqRedis) -> int:
    sweep_id = await sweeps.create_sweep(pool, "manual")
    await enqueue_sweep(redis, sweep_id)
    return sweep_id


async def sweep_done(pool: asyncpg.Pool, sweep_id: int, within: float) -> asyncpg.Record:
    deadline = time.monotonic() + within
    while True:
        row = await sweeps.get_sweep(pool, sweep_id)
        assert row is not None
        if row["status"] == "done":
            return row
        assert time.monotonic() < deadline, dict(row)
        await asyncio.sleep(0.1)


async def batches_in_progress(redis: ArqRedis, sweep_id: int, n: int, within: float) -> None:
    """Wait until n of the sweep's check batches carry arq's in-progress mark."""
    deadline = time.monotonic() + within
    while len(await redis.keys(f"arq:in-progress:check:{sweep_id}:*")) < n:
        assert time.monotonic() < deadline, "the batches were never started"
        await asyncio.sleep(0.02)


async def set_tokens(sandbox: Sandbox, tokens: list[str], state: str, **extra: Any) -> None:
    body = [{"token": t, "state": state, **extra} for t in tokens]
    async with sandbox.http.post(f"{sandbox.url}/sandbox/tokens", json=body) as r:
        assert r.status == 200, await r.text()


async def run_cli(settings: Settings, sandbox: Sandbox, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        *args,
        cwd=ROOT,
        env=process_env(settings, sandbox),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def tokens_of(lines: list[dict[str, Any]]) -> list[str]:
    return [line["access_token"] for line in lines]


async def test_two_workers_check_every_account_exactly_once(
    start_worker: StartWorker,
    sandbox: Sandbox,
    settings: Settings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    import_lines: Any,
) -> None:
    lines = account_lines(2000, "two")
    await import_lines("acme", lines)
    workers = [await start_worker("a"), await start_worker("b")]
    for w in workers:
        await w.ready()

    rc, out, err = await run_cli(settings, sandbox, "sweep", "--wait", "--timeout", "60")
    assert rc == 0, err
    match = re.search(r"^sweep (\d+) done: (.*)$", out, re.M)
    assert match, out
    sweep_id = int(match[1])
    assert match[2] == (
        "checked=2000 healthy=2000 deactivated=0 refreshed=0 transient=0 unknown=0 skipped=0"
    )

    # the platforms saw every token once, and nothing else
    calls = await sandbox.calls()
    assert Counter(c["token"] for c in calls) == Counter(tokens_of(lines))
    assert {c["status"] for c in calls} == {200}
    # the database: one sweep, every account checked in it, no lease left behind
    row = await sweeps.get_sweep(pool, sweep_id)
    assert row is not None and (row["claimed"], row["checked"]) == (2000, 2000)
    assert await pool.fetchval("SELECT count(*) FROM sweeps") == 1
    checked = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE last_checked_at BETWEEN $2 AND $3) AS in_sweep,"
        " count(*) FILTER (WHERE last_sweep_id = $1) AS claimed,"
        " count(*) FILTER (WHERE lease_sweep_id IS NOT NULL) AS leased,"
        " count(*) FILTER (WHERE is_active AND health_status = 'healthy') AS healthy "
        "FROM accounts",
        sweep_id,
        row["started_at"],
        row["finished_at"],
    )
    assert dict(checked) == {"in_sweep": 2000, "claimed": 2000, "leased": 0, "healthy": 2000}
    # both processes did a share of the work, and the shares add up without overlap
    finished = [w.finished() for w in workers]
    assert all(finished), [w.text()[-2000:] for w in workers]
    assert not finished[0].keys() & finished[1].keys()
    assert sum(r["checked"] for f in finished for r in f.values()) == 2000
    assert all(t == 1 for w in workers for _, t in w.started())


async def test_a_live_workers_long_sweep_is_not_started_twice(
    start_worker: StartWorker,
    sandbox: Sandbox,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    import_lines: Any,
) -> None:
    """A job may run longer than the in-progress mark lasts (one lease): here the sweep job
    keeps claiming for ~7.5 s (five batches of 1.5 s calls, one at a time) against a 3 s
    lease. The worker running it renews the mark (every third of a lease), so the idle second
    worker never starts the same job again. (A 1.5 s lease, renewed every 0.5 s, lapsed when
    a busy machine left the worker's loop without a turn for that long.)"""
    lease = 3.0
    lines = account_lines(250, "long")
    tokens = tokens_of(lines)
    await import_lines("acme", lines)
    await set_tokens(sandbox, tokens, "slow", delay_ms=1500)
    env = {"OCTOPOST_CHECK_LEASE_SECONDS": str(lease), "OCTOPOST_SWEEP_MAX_AHEAD": str(BATCH)}
    workers = [await start_worker("a", **env), await start_worker("b", **env)]
    for w in workers:
        await w.ready()
    sweep_id = await start_sweep(pool, redis)
    row = await sweep_done(pool, sweep_id, within=90)
    assert (row["claimed"], row["checked"], row["healthy"]) == (250, 250, 250)
    assert (row["finished_at"] - row["started_at"]).total_seconds() > 2 * lease
    assert [t for w in workers for _, t in w.started(SWEEP_JOB)] == [1]
    assert sorted(t for w in workers for _, t in w.started()) == [1] * 5
    calls = await sandbox.calls()
    assert Counter(c["token"] for c in calls) == Counter(tokens)


LEASE = 6.0


async def test_killed_worker_batches_are_rerun_by_arq_after_the_lease(
    start_worker: StartWorker,
    sandbox: Sandbox,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    import_lines: Any,
) -> None:
    """Worker A is SIGKILLed while its batches wait on slow platform calls. Nothing is lost:
    the accounts keep their lease (next_check_at, lease_sweep_id), so another sweep leaves
    them alone; the batch jobs stay in arq's queue, and once their in-progress mark (one lease
    long, renewed by a live worker every third of it) has run out, worker B runs the same
    jobs again (try=2) in the same sweep. That is the mechanism, not a later sweep."""
    lines = account_lines(200, "kill")
    tokens = tokens_of(lines)
    await import_lines("acme", lines)
    await set_tokens(sandbox, tokens, "slow", delay_ms=8000)
    env = {"OCTOPOST_CHECK_LEASE_SECONDS": str(LEASE)}
    a = await start_worker("a", **env)
    await a.ready()
    sweep_id = await start_sweep(pool, redis)
    await batches_in_progress(redis, sweep_id, 200 // BATCH, within=10)
    b = await start_worker("b", **env)
    await b.ready()

    leased = await pool.fetchrow(
        "SELECT count(*) AS n, min(next_check_at) AS until, count(last_checked_at) AS checked "
        "FROM accounts WHERE lease_sweep_id = $1",
        sweep_id,
    )
    assert (leased["n"], leased["checked"]) == (200, 0), "A finished before it was killed"
    a.proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    assert await a.exit_code(5) == -signal.SIGKILL
    assert b.started() == []
    await set_tokens(sandbox, tokens, "valid")  # the platforms answer promptly again

    # while the lease holds, another sweep takes none of them
    during = await sweep_done(pool, await start_sweep(pool, redis), within=10)
    assert during["claimed"] == 0 and during["finished_at"] < leased["until"]

    row = await sweep_done(pool, sweep_id, within=LEASE + 20)
    assert (row["claimed"], row["checked"], row["healthy"]) == (200, 200, 200)
    # B ran exactly A's four batches again, as arq retries of the same jobs
    assert sorted(t for _, t in b.started()) == [2, 2, 2, 2], b.text()[-3000:]
    assert sum(r["checked"] for r in b.finished().values()) == 200
    # ... and not before the lease ran out
    first = await pool.fetchval(
        "SELECT min(last_checked_at) FROM accounts WHERE last_sweep_id = $1", sweep_id
    )
    assert first >= leased["until"], (first, leased["until"])
    # every token reached the platform once from a live worker, and after the kill
    calls = await sandbox.calls()
    assert Counter(c["token"] for c in calls) == Counter(tokens)
    assert min(c["at"] for c in calls) > killed_at


@pytest.mark.parametrize("ending", ["finish", "return"])
async def test_sigterm_finishes_or_returns_the_jobs(
    ending: str,
    start_worker: StartWorker,
    sandbox: Sandbox,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    import_lines: Any,
) -> None:
    """SIGTERM: worker A picks no new job and lets running batches finish within
    --shutdown-wait; a batch that cannot finish in time is cancelled and goes back to the
    queue at once. Either way worker B takes over immediately, not after a lease, and every
    account is checked exactly once."""
    lines = account_lines(300, f"term-{ending}")
    tokens = tokens_of(lines)
    await import_lines("acme", lines)
    # "finish": batches take ~1.5 s, A may wait 30 s. "return": batches would take 10 s,
    # A waits 0.5 s.
    delay, wait = (1500, "30") if ending == "finish" else (10_000, "0.5")
    await set_tokens(sandbox, tokens, "slow", delay_ms=delay)
    a = await start_worker("a", "--shutdown-wait", wait, OCTOPOST_WORKER_MAX_JOBS="3")
    await a.ready()
    sweep_id = await start_sweep(pool, redis)
    await batches_in_progress(redis, sweep_id, 3, within=10)

    a.proc.send_signal(signal.SIGTERM)
    b = await start_worker("b")
    assert await a.exit_code(15) == 0, a.text()[-3000:]
    stopped_at = time.time()
    log = a.text()
    assert "shutdown on SIGTERM" in log
    a_started = [job for job, _ in a.started()]
    assert len(a_started) == 3, log[-3000:]
    if ending == "finish":
        assert sorted(a.finished()) == sorted(a_started)
        assert "will be run again" not in log
    else:
        assert a.finished() == {}
        assert log.count("cancelled, will be run again") == 3, log[-3000:]
        await set_tokens(sandbox, tokens, "valid")

    await b.ready()
    row = await sweep_done(pool, sweep_id, within=20)
    assert (row["claimed"], row["checked"], row["healthy"]) == (300, 300, 300), (
        dict(row),
        a.text()[-4000:],
        b.text()[-4000:],
    )
    finished_at: datetime = row["finished_at"]
    assert finished_at.timestamp() - stopped_at < 15  # the lease (600 s) played no part
    b_started = dict(b.started())
    if ending == "finish":
        assert set(b_started.values()) == {1} and not b_started.keys() & set(a_started)
    else:
        assert {job: b_started[job] for job in a_started} == dict.fromkeys(a_started, 2)
    assert sum(r["checked"] for f in (a.finished(), b.finished()) for r in f.values()) == 300
    calls = await sandbox.calls()
    assert Counter(c["token"] for c in calls) == Counter(tokens)
