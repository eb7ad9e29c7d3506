"""The token-health sweep: checks per second, database statements per check and worker
memory, with one and with two worker processes, against the sandbox's own ceiling; and how
list latency and sweep memory grow with the number of accounts.

Everything is a real process: the platform sandbox (``octopost sandbox --latency-ms 50``),
the workers (``python -m bench.worker``: ``octopost worker`` plus a statement counter) and,
for list latency, ``octopost api``. Accounts are spread evenly over the nine platforms, all
with valid tokens (unknown tokens are valid to the sandbox), so every check is one verify
call answered after 50 ms.

- checks/s: the sweep's own record, checked / (finished_at - started_at), claiming included.
- statements per check: every statement the workers' connections executed during the sweep
  (asyncpg's query logger, BEGIN and COMMIT included), divided by the accounts checked.
  Cross-checked on the server: pg_stat_database's committed + rolled back transactions in
  the benchmark database over the same window, less the harness's own polling.
- peak RSS: each worker's VmHWM from /proc (the kernel's high-water mark, not a sample).
- sandbox ceiling: wrk against the sandbox alone (no workers), one verify endpoint, same
  added latency, more connections than a worker keeps in flight.

    python -m bench.sweep [--accounts 100000] [--scale 1000,10000] [--workers 1,2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import loadgen
from bench.api import _account_line, _get, add_common_arguments
from bench.common import (
    HOST,
    QUIET,
    BenchDatabase,
    BenchError,
    Proc,
    Table,
    bench_database,
    cores,
    cpu_ticks,
    flush_redis,
    fmt,
    median,
    octopost_command,
    peak_rss_mb,
    ratio,
    run_async,
    running,
    say,
    start,
    wait_for_port,
)
from bench.loadgen import LoadResult
from bench.worker import COUNT_FILE
from devkit.embedded import free_port
from service.core.jobs import enqueue_sweep

WORKSPACE = "sweep"
SWEEP_STATE = """
SELECT status, claimed, checked, skipped, healthy, started_at, finished_at
FROM sweeps WHERE id = $1
"""
TRANSACTIONS = """
SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1
"""
OTHER_BACKENDS = """
SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""
MAKE_ALL_DUE = """
UPDATE accounts SET next_check_at = now() - interval '1 second'
WHERE disconnected_at IS NULL
"""
WORKER_BACKENDS = """
SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'octopost'
"""


@dataclass
class SweepOptions:
    database_url: str
    redis_url: str
    db_name: str = "octopost_bench"
    accounts: int = 100_000
    scale: tuple[int, ...] = (1_000, 10_000)
    workers: tuple[int, ...] = (1, 2)
    repeat: int = 3
    latency_ms: float = 50.0
    sandbox_connections: int = 512
    seconds: float = 5.0
    loadgen: str = "wrk"
    list_latency: bool = True
    manual: bool = False  # octopost sweep (every account, due or not) instead of the schedule
    profile: str = ""  # py-spy: write the first worker's stacks during each sweep here
    timeout: float = 900.0


@dataclass
class SweepRun:
    accounts: int
    workers: int
    seconds: float  # wall time, as ops see it (see sweep_once)
    row_seconds: float  # the sweep row's finished_at - started_at
    checked: int
    statements: int
    transactions: int
    peak_rss_mb: float
    worker_cpu_s: float
    sandbox_cpu_s: float
    postgres_cpu_s: float
    machine_busy: float  # share of all cores busy (anyone's work), 0..1
    writes: TableStats
    redis_commands: int = 0  # the whole Redis server's commands over the sweep

    @property
    def rate(self) -> float:
        return self.checked / self.seconds if self.seconds else 0.0


@dataclass
class ListRun:
    accounts: int
    page: LoadResult
    full_ms: float
    full_mb: float


@dataclass
class SweepResults:
    options: SweepOptions
    runs: list[SweepRun] = field(default_factory=list)
    ceilings: list[LoadResult] = field(default_factory=list)
    lists: list[ListRun] = field(default_factory=list)

    def _runs(self, accounts: int, workers: int) -> list[SweepRun]:
        return [r for r in self.runs if r.accounts == accounts and r.workers == workers]

    def sweep_table(self) -> Table:
        o = self.options
        ceiling = median(c.rps for c in self.ceilings)
        one = median(r.rate for r in self._runs(o.accounts, 1))
        table = Table(
            f"{'Manual' if o.manual else 'Scheduled'} sweep of {o.accounts:,} accounts, "
            f"sandbox latency {o.latency_ms:g} ms, "
            f"median of {o.repeat}",
            [
                "workers",
                "checks/s",
                "per worker",
                "÷ 1 worker",
                "÷ sandbox ceiling",
                "statements/check",
                "transactions/check",
                "peak worker RSS MB",
                "worker CPU ms/check",
                "sandbox CPU %",
                "PostgreSQL CPU %",
                "all cores busy %",
                "row updates/check (HOT)",
                "WAL bytes/check",
            ],
        )
        table.add(
            f"sandbox alone (wrk, {o.sandbox_connections} connections)",
            fmt(ceiling), "-", "-", "1.00", "-", "-", "-", "-", "-", "-", "-", "-", "-",
        )  # fmt: skip
        for workers in o.workers:
            runs = self._runs(o.accounts, workers)
            if not runs:
                continue
            rate = median(r.rate for r in runs)
            table.add(
                workers,
                fmt(rate),
                fmt(rate / workers),
                ratio(rate, one),
                ratio(rate, ceiling),
                fmt(median(r.statements / r.checked for r in runs), 4),
                fmt(median(r.transactions / r.checked for r in runs), 4),
                fmt(max(r.peak_rss_mb for r in runs), 1),
                fmt(median(1000 * r.worker_cpu_s / r.checked for r in runs), 3),
                fmt(median(100 * r.sandbox_cpu_s / r.seconds for r in runs)),
                fmt(median(100 * r.postgres_cpu_s / r.seconds for r in runs)),
                fmt(median(100 * r.machine_busy for r in runs)),
                f"{median(r.writes.updates / r.checked for r in runs):.2f} "
                f"({median(r.writes.hot_updates / r.checked for r in runs):.2f})",
                fmt(median(r.writes.wal_bytes / r.checked for r in runs)),
            )
        table.notes = [
            "checks/s = checked / wall time, "
            + (
                "from the start of `octopost sweep --wait` to its final line. "
                if self.options.manual
                else "from queueing the sweep to seeing it done (polled every 0.25 s, as "
                "`octopost sweep --wait` does). "
            )
            + "Every account valid, one verify call each. "
            + (
                "Manual sweeps (`octopost sweep`: every account, due or not)."
                if self.options.manual
                else "Scheduled sweeps (what the cron runs), every account made due first "
                "(one UPDATE and a VACUUM ANALYZE, not measured)."
            ),
            "statements/check: statements the workers' connections executed (asyncpg query "
            "logger, BEGIN/COMMIT included) / checks; transactions/check: pg_stat_database "
            "xact_commit + xact_rollback of the benchmark database over the sweep, less the "
            "harness's own polls, / checks. Peak RSS: max VmHWM over the workers and runs.",
            "row updates/check: pg_stat_user_tables n_tup_upd of accounts over the sweep / "
            "checks (HOT: of those, heap-only updates, which write no index entry); each "
            "update leaves one dead row version for vacuum. WAL bytes: pg_current_wal_lsn() "
            "over the sweep (the whole server's) / checks.",
            "CPU % is of one core over the sweep (the sandbox, the benchmark database's "
            "PostgreSQL backends); all cores busy: /proc/stat over the sweep, everyone's work "
            f"on all {cores()} cores.",
            f"Defaults: batch {250}, 8 jobs and 64 requests per platform in flight per worker; "
            f"{cores()} cores shared by workers, sandbox, PostgreSQL and Redis.",
            QUIET.note(),
        ]
        return table

    def scale_table(self) -> Table:
        sizes = sorted({r.accounts for r in self.runs} | {x.accounts for x in self.lists})
        table = Table(
            "Scale: cost as accounts grow (one API process, one worker)",
            [
                "accounts",
                "list page req/s",
                "list page p50 ms",
                "list page p99 ms",
                "full list ms",
                "full list MB",
                "sweep checks/s",
                "peak worker RSS MB",
                "statements/check",
            ],
        )
        for size in sizes:
            listed = next((x for x in self.lists if x.accounts == size), None)
            runs = self._runs(size, 1)
            table.add(
                f"{size:,}",
                fmt(listed.page.rps) if listed else "-",
                fmt(listed.page.p50_ms, 2) if listed else "-",
                fmt(listed.page.p99_ms, 2) if listed else "-",
                fmt(listed.full_ms) if listed else "-",
                fmt(listed.full_mb, 1) if listed else "-",
                fmt(median(r.rate for r in runs)) if runs else "-",
                fmt(max(r.peak_rss_mb for r in runs), 1) if runs else "-",
                fmt(median(r.statements / r.checked for r in runs), 4) if runs else "-",
            )
        table.notes = [
            "list page: GET /v1/accounts?limit=100 (first page) in the workspace holding all "
            f"the accounts, 64 connections, {self.options.seconds:g} s; full list: one "
            "unpaginated GET /v1/accounts (every account in one body), median of 3.",
        ]
        return table

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": [r.__dict__ | {"rate": r.rate} for r in self.runs],
            "ceilings": [c.rps for c in self.ceilings],
            "lists": [
                {"accounts": x.accounts, "page_rps": x.page.rps, "full_ms": x.full_ms}
                for x in self.lists
            ],
        }


# --- seeding ---------------------------------------------------------------------------------


@dataclass
class Stack:
    db: BenchDatabase
    env: dict[str, str]
    key: str
    workspace_id: int
    token_keys: str


async def prepare(o: SweepOptions, db: BenchDatabase, sandbox_port: int) -> Stack:
    from service.core import api_keys
    from service.core.repository import workspaces
    from service.core.vault import new_key

    await flush_redis(o.redis_url)
    token_keys = f"bench:{new_key()}"
    key = api_keys.new_api_key()
    conn = await asyncpg.connect(db.url)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, WORKSPACE)
            await workspaces.insert_key(
                conn, api_keys.new_key_id(), workspace_id, api_keys.key_display_prefix(key),
                api_keys.hash_api_key(key),
            )  # fmt: skip
    finally:
        await conn.close()
    env = {
        "DATABASE_URL": db.url,
        "REDIS_URL": o.redis_url,
        "OCTOPOST_ENV": "test",
        "OCTOPOST_TOKEN_KEYS": token_keys,
        "OCTOPOST_SANDBOX_URL": f"http://{HOST}:{sandbox_port}",
        "OCTOPOST_SWEEP_INTERVAL_MINUTES": "0",
        "OCTOPOST_AUTH_FAILURES_PER_MINUTE": "0",
        "OCTOPOST_LOG_LEVEL": "WARNING",
    }
    return Stack(db, env, key, workspace_id, token_keys)


async def grow(stack: Stack, have: int, want: int, chunk: int = 20_000) -> None:
    """Import accounts have..want-1 (the real importer: parsed, sealed, upserted)."""
    from service.core.importer import import_accounts, parse_lines
    from service.core.vault import Vault

    vault = Vault.from_config(stack.token_keys)
    conn = await asyncpg.connect(stack.db.url)
    try:
        for lo in range(have, want, chunk):
            hi = min(want, lo + chunk)
            parsed = parse_lines(orjson.dumps(_account_line(i)).decode() for i in range(lo, hi))
            async with conn.transaction():
                await import_accounts(conn, vault, stack.workspace_id, parsed)
        await conn.execute("ANALYZE accounts")
        await conn.execute("ANALYZE account_tokens")
    finally:
        await conn.close()


# --- measuring -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # a backend that has just exited
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = $1"


async def backend_cpu(admin: asyncpg.Connection, db: str) -> dict[int, float]:
    return {r["pid"]: cpu_seconds(r["pid"]) for r in await admin.fetch(BACKENDS, db)}


def sandbox_ceiling(o: SweepOptions, port: int) -> LoadResult:
    url = f"http://{HOST}:{port}/twitter/2/users/me"
    status, body = _get(url, "bench-ceiling-token")
    if status != 200:
        raise BenchError(f"the sandbox answered {status}: {body[:200]!r}")
    headers = {"Authorization": "Bearer bench-ceiling-token"}
    if o.loadgen == "python":
        result: LoadResult = run_async(
            loadgen.python_load(
                url, connections=o.sandbox_connections, seconds=o.seconds, headers=headers
            )
        )
        return result
    loadgen.wrk(url, connections=o.sandbox_connections, seconds=1, headers=headers)
    QUIET.wait()
    return loadgen.wrk(url, connections=o.sandbox_connections, seconds=o.seconds, headers=headers)


def _read_count(path: Path, after: int) -> tuple[int, int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            serial, count = (int(x) for x in path.read_text().split())
            if serial > after:
                return serial, count
        time.sleep(0.02)
    raise BenchError(f"a worker did not report its statement count to {path}")


def statement_counts(workers: list[Proc], files: list[Path], serials: list[int]) -> list[int]:
    import signal

    for proc in workers:
        proc.check_alive()
        os.kill(proc.pid, signal.SIGUSR1)
    counts = []
    for i, path in enumerate(files):
        serials[i], count = _read_count(path, serials[i])
        counts.append(count)
    return counts


@contextlib.contextmanager
def worker_processes(stack: Stack, n: int, tmp: Path) -> Iterator[tuple[list[Proc], list[Path]]]:
    files = [tmp / f"worker-{i}.count" for i in range(n)]
    procs: list[Proc] = []
    try:
        for i in range(n):
            env = {**stack.env, COUNT_FILE: str(files[i])}
            procs.append(start(f"worker {i + 1}", [sys.executable, "-m", "bench.worker"], env))
        yield procs, files
    finally:
        for proc in procs:
            proc.stop(timeout=30)


async def _wait_workers_ready(admin: asyncpg.Connection, db: str, procs: list[Proc]) -> None:
    deadline = time.monotonic() + 60
    while await admin.fetchval(WORKER_BACKENDS, db) < len(procs):
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise BenchError("the workers did not connect to the database within 60 s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # their startup statements (the revocation relay) settle


async def _wait_no_backends(admin: asyncpg.Connection, db: str) -> None:
    deadline = time.monotonic() + 30
    while await admin.fetchval(OTHER_BACKENDS, db):
        if time.monotonic() > deadline:
            raise BenchError("connections to the benchmark database did not go away")
        await asyncio.sleep(0.05)


def _py_spy(prefix: str, pid: int, accounts: int, workers: int) -> subprocess.Popen[bytes] | None:
    """Sample one worker with py-spy (collapsed stacks, for bench/profile.py) until SIGINT."""
    if not prefix:
        return None
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    path = f"{prefix}-{accounts}-{workers}w-{time.strftime('%H%M%S')}.txt"
    argv = [binary, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
            "--format", "raw", "--output", path]  # fmt: skip
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    say(f"py-spy sampling worker {pid} into {path}")
    return spy


async def redis_commands(redis: Any) -> int:
    """Commands the Redis server has processed (INFO stats): exact on a private server."""
    info = await redis.info("stats")
    return int(info["total_commands_processed"])


async def _octopost_sweep(stack: Stack, give_up_after: float) -> int:
    """Run `octopost sweep --wait` to its end; the sweep id from its first line."""
    argv = [*octopost_command(), "sweep", "--wait", "--timeout", f"{give_up_after:.0f}"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **stack.env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = out.decode().splitlines()
    if proc.returncode != 0 or not lines or not lines[0].startswith("sweep "):
        raise BenchError(f"octopost sweep exited {proc.returncode}: {out!r} {err[-2000:]!r}")
    return int(lines[0].split()[1])


@dataclass
class TableStats:
    """The accounts table's write counters and size, and the server's WAL position."""

    updates: int = 0
    hot_updates: int = 0
    dead: int = 0
    table_bytes: int = 0
    index_bytes: int = 0
    wal_bytes: int = 0

    def minus(self, other: TableStats) -> TableStats:
        return TableStats(
            self.updates - other.updates,
            self.hot_updates - other.hot_updates,
            self.dead - other.dead,
            self.table_bytes - other.table_bytes,
            self.index_bytes - other.index_bytes,
            self.wal_bytes - other.wal_bytes,
        )

    def describe(self, checks: int) -> str:
        n = max(1, checks)
        return (
            f"accounts row updates/check {self.updates / n:.2f} (HOT {self.hot_updates / n:.2f}), "
            f"dead tuples +{self.dead:,}, WAL {self.wal_bytes / n:,.0f} B/check"
        )


TABLE_STATS = """
SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup,
       pg_table_size('accounts') AS table_bytes, pg_indexes_size('accounts') AS index_bytes,
       pg_current_wal_lsn() - '0/0'::pg_lsn AS wal
FROM pg_stat_user_tables WHERE relname = 'accounts'
"""


async def table_stats(admin: asyncpg.Connection, url: str) -> TableStats:
    """Read in the benchmark database (pg_stat_user_tables is per database). The WAL
    position is the whole server's: exact on a private server, noisy on a shared one."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        r = await conn.fetchrow(TABLE_STATS)
    finally:
        await conn.close()
    return TableStats(
        int(r["n_tup_upd"]), int(r["n_tup_hot_upd"]), int(r["n_dead_tup"]),
        int(r["table_bytes"]), int(r["index_bytes"]), int(r["wal"]),
    )  # fmt: skip


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


async def claim_plans(url: str, batch: int = 250, lease: float = 600.0) -> list[tuple[str, str]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each claim statement as the worker runs it: the generic
    plan (what a prepared statement settles on after five runs), for a manual sweep halfway
    through its key range, a one-platform one, a one-account one, and a scheduled one (with
    every account due, as right after the import: call it then). Run in a transaction that
    is rolled back: nothing stays claimed."""
    from service.core.repository import sweeps

    conn = await asyncpg.connect(url)
    plans: list[tuple[str, str]] = []
    try:
        total = await conn.fetchval("SELECT count(*) FROM accounts")
        middle = await conn.fetchval(
            "SELECT id FROM accounts ORDER BY id OFFSET $1 LIMIT 1", total // 2
        )
        one = await conn.fetchval("SELECT id FROM accounts ORDER BY id DESC LIMIT 1")
        cases: list[tuple[str, str, str | None, str, list[object]]] = [
            ("manual sweep, all accounts, halfway", sweeps.CLAIM_SCOPE, None, "manual",
             [None, batch, lease]),
            ("manual sweep, one platform, halfway", sweeps.CLAIM_SCOPE, "bluesky", "manual",
             ["bluesky", batch, lease]),
            ("manual sweep, one account", sweeps.CLAIM_ONE, None, "manual", [one, lease]),
            ("scheduled sweep, every account due (as imported)", sweeps.CLAIM_DUE, None, "schedule",
             [batch, lease]),
        ]  # fmt: skip
        for name, sql, platform, trigger, args in cases:
            tx = conn.transaction()
            await tx.start()
            try:
                sweep_id = await sweeps.create_sweep(conn, trigger, platform)
                if trigger == "manual":
                    await conn.execute(
                        "UPDATE sweeps SET claim_cursor = $2 WHERE id = $1", sweep_id, middle
                    )
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE bench_claim AS {sql}")
                params = ", ".join(_literal(v) for v in [sweep_id, *args])
                rows = await conn.fetch(
                    f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE bench_claim({params})"
                )
                plans.append((name, "\n".join(r[0] for r in rows)))
            finally:
                await tx.rollback()
                await conn.execute("DEALLOCATE bench_claim")
    finally:
        await conn.close()
    return plans


async def make_all_due(db: BenchDatabase) -> None:
    """Every account due now, as if the schedule had come round for all of them; vacuumed,
    so each run starts from the same table."""
    conn = await asyncpg.connect(db.url)
    try:
        await conn.execute(MAKE_ALL_DUE)
        await conn.execute("VACUUM ANALYZE accounts")
    finally:
        await conn.close()


async def sweep_once(
    o: SweepOptions, stack: Stack, n_workers: int, accounts: int, sandbox: Proc
) -> SweepRun:
    from arq.connections import ArqRedis, RedisSettings, create_pool

    from service.core.repository import sweeps

    db = stack.db
    if not o.manual:
        await make_all_due(db)
    admin = await asyncpg.connect(db.admin_url)
    redis: ArqRedis = await create_pool(RedisSettings.from_dsn(o.redis_url))
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            worker_processes(stack, n_workers, Path(tmp)) as (procs, files),
        ):
            await _wait_workers_ready(admin, db.name, procs)
            await asyncio.to_thread(QUIET.wait)
            serials = [0] * n_workers
            before = statement_counts(procs, files, serials)
            transactions_before = await admin.fetchval(TRANSACTIONS, db.name)
            cpu_before = [cpu_seconds(p.pid) for p in procs]
            sandbox_before = cpu_seconds(sandbox.pid)
            postgres_before = await backend_cpu(admin, db.name)
            machine_before = cpu_ticks()
            table_before = await table_stats(admin, db.url)
            redis_before = await redis_commands(redis)
            spy = _py_spy(o.profile, procs[0].pid, accounts, n_workers)
            conn = await asyncpg.connect(db.url)
            own = 0
            try:
                # Wall time as ops see it: from the command's start to its final line. A
                # manual sweep is `octopost sweep --wait` itself (its process start included);
                # a scheduled one is queued and watched the way that command watches.
                started = time.perf_counter()
                if o.manual:
                    sweep_id = await _octopost_sweep(stack, o.timeout)
                else:
                    sweep_id = await sweeps.create_sweep(conn, "schedule")
                    own += 1
                    await enqueue_sweep(redis, sweep_id)
                deadline = time.monotonic() + o.timeout
                while True:
                    row = await conn.fetchrow(SWEEP_STATE, sweep_id)
                    own += 1
                    if row["status"] == "done":
                        break
                    if time.monotonic() > deadline:
                        raise BenchError(f"sweep {sweep_id} not done after {o.timeout:.0f}s")
                    for proc in procs:
                        proc.check_alive()
                    await asyncio.sleep(0.25)
                wall = time.perf_counter() - started
                redis_used = await redis_commands(redis) - redis_before
            finally:
                await conn.close()
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    spy.wait(60)
            await asyncio.sleep(0.3)  # the last batches' bookkeeping statements
            after = statement_counts(procs, files, serials)
            worker_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu_before, strict=True))
            sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox_before
            postgres_cpu = sum(
                cpu - postgres_before.get(pid, 0.0)
                for pid, cpu in (await backend_cpu(admin, db.name)).items()
            )
            busy, total = (b - a for a, b in zip(machine_before, cpu_ticks(), strict=True))
            peak = max(peak_rss_mb(p.pid) for p in procs)
        # the workers are stopped: their statistics are flushed when their backends exit
        await _wait_no_backends(admin, db.name)
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        table_after = await table_stats(admin, db.url)
        # less the harness's polls and its two table_stats reads (two statements each)
        transactions = await admin.fetchval(TRANSACTIONS, db.name) - transactions_before - own - 4
    finally:
        await redis.aclose()
        await admin.close()
    # A call the loaded machine answered too late (a transient outcome) is still a check;
    # more than one in a thousand means the run measured something else.
    if row["checked"] != row["claimed"] or row["healthy"] < 0.999 * row["checked"]:
        raise BenchError(f"sweep {sweep_id} did not check every account healthy: {dict(row)}")
    if row["healthy"] != row["checked"]:
        say(f"sweep {sweep_id}: {row['checked'] - row['healthy']} checks not healthy (transient)")
    if row["checked"] != accounts:
        raise BenchError(f"sweep {sweep_id} checked {row['checked']} of {accounts} accounts")
    seconds = (row["finished_at"] - row["started_at"]).total_seconds()
    result = SweepRun(
        accounts,
        n_workers,
        wall,
        seconds,
        int(row["checked"]),
        sum(after) - sum(before),
        int(transactions),
        peak,
        worker_cpu,
        sandbox_cpu,
        postgres_cpu,
        busy / total if total else float("nan"),
        table_after.minus(table_before),
        redis_used,
    )
    say(
        f"sweep: {accounts:,} accounts, {n_workers} worker(s): {result.rate:,.0f} checks/s, "
        f"{result.statements / result.checked:.4f} statements/check, peak RSS {peak:.0f} MB, "
        f"CPU ms/check: workers {1000 * worker_cpu / result.checked:.3f}, "
        f"PostgreSQL {1000 * postgres_cpu / result.checked:.3f}; "
        f"{result.writes.describe(result.checked)}, "
        f"Redis {result.redis_commands / result.checked:.3f} commands/check"
    )
    return result


def list_latency(o: SweepOptions, stack: Stack, accounts: int) -> ListRun:
    port = free_port()
    base = f"http://{HOST}:{port}"
    argv = [*octopost_command(), "api", "--port", str(port), "--processes", "1"]
    with running("api", argv, stack.env) as proc:
        wait_for_port(proc, port)
        status, body = _get(f"{base}/v1/accounts?limit=100", stack.key)
        if status != 200 or len(orjson.loads(body)["accounts"]) != min(100, accounts):
            raise BenchError(f"list answered {status}: {body[:200]!r}")
        headers = {"Authorization": f"Bearer {stack.key}"}
        url = f"{base}/v1/accounts?limit=100"
        if o.loadgen == "python":
            page: LoadResult = run_async(
                loadgen.python_load(url, connections=64, seconds=o.seconds, headers=headers)
            )
        else:
            loadgen.wrk(url, connections=64, seconds=1, headers=headers)
            QUIET.wait()
            page = loadgen.wrk(url, connections=64, seconds=o.seconds, headers=headers)
        timings, size = [], 0
        for _ in range(3):
            started = time.perf_counter()
            status, body = _get(f"{base}/v1/accounts", stack.key)
            timings.append(time.perf_counter() - started)
            if status != 200:
                raise BenchError(f"full list answered {status}")
            size = len(body)
        proc.check_alive()
    say(f"list: {accounts:,} accounts: page p99 {page.p99_ms:.1f} ms, full {median(timings):.2f}s")
    return ListRun(accounts, page, 1000 * median(timings), size / 1e6)


async def run(o: SweepOptions) -> SweepResults:
    if o.loadgen == "wrk":
        loadgen.find_wrk()
    results = SweepResults(o)
    sandbox_port = free_port()
    async with bench_database(o.database_url, o.db_name) as db:
        stack = await prepare(o, db, sandbox_port)
        argv = [
            *octopost_command(), "sandbox", "--port", str(sandbox_port),
            "--latency-ms", f"{o.latency_ms:g}",
        ]  # fmt: skip
        with running("sandbox", argv, stack.env) as sandbox:
            wait_for_port(sandbox, sandbox_port)
            for _ in range(o.repeat):
                results.ceilings.append(await asyncio.to_thread(sandbox_ceiling, o, sandbox_port))
            say(f"sandbox alone: {median(c.rps for c in results.ceilings):,.0f} requests/s")
            have = 0
            for size in sorted({*o.scale, o.accounts}):
                started = time.perf_counter()
                await grow(stack, have, size)
                have = size
                say(f"seeded {size:,} accounts ({time.perf_counter() - started:.1f}s)")
                if o.list_latency:
                    results.lists.append(await asyncio.to_thread(list_latency, o, stack, size))
                if size == o.accounts:
                    for _ in range(o.repeat):
                        for n in o.workers:
                            results.runs.append(await sweep_once(o, stack, n, size, sandbox))
                else:
                    results.runs.append(await sweep_once(o, stack, 1, size, sandbox))
        await flush_redis(o.redis_url)
    return results


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument(
        "--scale", default="1000,10000", help="smaller sizes for the scale table ('' for none)"
    )
    parser.add_argument("--workers", default="1,2", help="worker process counts")
    parser.add_argument("--sweep-repeat", type=int, default=3, help="sweeps per worker count")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--sandbox-connections", type=int, default=512)
    parser.add_argument("--no-list-latency", action="store_true")
    parser.add_argument(
        "--manual", action="store_true",
        help="measure `octopost sweep` (every account, due or not) instead of scheduled sweeps",
    )  # fmt: skip
    parser.add_argument(
        "--profile", default="", metavar="PREFIX",
        help="sample the first worker with py-spy during each sweep into PREFIX-*.txt "
        "(collapsed stacks; summarise with python -m bench.profile)",
    )  # fmt: skip


def sweep_options(args: argparse.Namespace) -> SweepOptions:
    QUIET.max_wait = args.quiet_wait
    return SweepOptions(
        database_url=args.database_url,
        redis_url=args.redis_url,
        db_name=args.db_name,
        accounts=args.accounts,
        scale=tuple(int(x) for x in args.scale.split(",") if x),
        workers=tuple(int(x) for x in args.workers.split(",")),
        repeat=args.sweep_repeat,
        latency_ms=args.latency_ms,
        sandbox_connections=args.sandbox_connections,
        seconds=args.seconds,
        loadgen=args.loadgen,
        list_latency=not args.no_list_latency,
        manual=args.manual,
        profile=args.profile,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    add_sweep_arguments(parser)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--json", action="store_true", help="also print the raw runs as JSON")
    args = parser.parse_args(argv)
    try:
        results = run_async(run(sweep_options(args)))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(results.sweep_table().text())
    print(results.scale_table().text())
    if args.json:
        print(orjson.dumps(results.as_json()).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
