"""The scale run (``make bench-scale``): one database grown to 10,000, 100,000 and 1,000,000
accounts, and at each size what ops and customers see.

- import rate: accounts per second of the real importer (parsed, sealed, upserted in chunks
  of 20,000 in one transaction each), from the size before to this one;
- PostgreSQL bytes per account: accounts + account_tokens, table and indexes, after the
  import and again after the sweeps;
- API: ``GET /v1/accounts?limit=100`` (cycling the first five pages) and
  ``GET /v1/accounts/{id}`` (cycling 500 random ids) p50/p99 at 64 connections, one API
  process (wrk);
- sweeps (at 100,000 and 1,000,000): one manual sweep (``octopost sweep --wait``, timed from
  the command's start to its final line) and one scheduled sweep (every account made due,
  queued and watched the same way), one worker process, the sandbox answering after 50 ms:
  checks/s, the worker's CPU per check and peak RSS, PostgreSQL CPU per check, statements
  per check, accounts row updates and WAL per check, dead tuples left;
- the EXPLAIN (ANALYZE, BUFFERS) of every claim statement's generic plan at each size.

Servers: private embedded PostgreSQL and Redis in a temporary directory (never the
system's), unless ``DATABASE_URL``/``REDIS_URL`` are set.

    python -m bench.scale [--sizes 10000,100000,1000000] [--sweep-sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncpg
import orjson

from bench import loadgen
from bench.api import _get
from bench.common import (
    HOST,
    QUIET,
    ROOT,
    BenchError,
    Table,
    bench_database,
    cores,
    fmt,
    load_average,
    machine_info,
    octopost_command,
    run_async,
    running,
    say,
    wait_for_port,
)
from bench.sweep import (
    Stack,
    SweepOptions,
    SweepRun,
    claim_plans,
    grow,
    prepare,
    sweep_once,
)
from devkit.embedded import free_port

BEGIN = "<!-- bench:scale:begin (written by `make bench-scale`; edit outside these markers) -->"
END = "<!-- bench:scale:end -->"

SIZES = """
SELECT pg_table_size('accounts') AS accounts_table,
       pg_indexes_size('accounts') AS accounts_indexes,
       pg_total_relation_size('account_tokens') AS tokens_total,
       (SELECT count(*) FROM accounts) AS n
"""


@dataclass
class SizeRun:
    accounts: int
    import_rate: float
    bytes_after_import: dict[str, int]
    page: loadgen.LoadResult | None = None
    get: loadgen.LoadResult | None = None
    bytes_after_sweeps: dict[str, int] = field(default_factory=dict)
    sweeps: list[tuple[str, SweepRun]] = field(default_factory=list)
    plans: list[tuple[str, str]] = field(default_factory=list)
    count_by_status_ms: float = 0.0


@dataclass
class ScaleOptions:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    sweep_sizes: tuple[int, ...] = (100_000, 1_000_000)
    seconds: float = 5.0
    latency_ms: float = 50.0
    timeout: float = 3600.0
    db_name: str = "octopost_bench_scale"


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[str, str]]:
    """(admin database URL, Redis URL): from the environment, or private embedded ones."""
    from devkit.embedded import EmbeddedPostgres, EmbeddedRedis

    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    # a buffer cache that holds a million accounts, as a production server's would
    pg = (
        None
        if database_url
        else EmbeddedPostgres(workdir / "pg", settings={"shared_buffers": "1GB"})
    )
    rd = None if redis_url else EmbeddedRedis(workdir / "redis")
    try:
        yield (database_url or pg.start(), redis_url or rd.start())  # type: ignore[union-attr]
    finally:
        if rd is not None:
            rd.stop()
        if pg is not None:
            pg.stop()


async def sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(SIZES)
    finally:
        await conn.close()
    return {k: int(v) for k, v in dict(row).items()}


def per_account(b: dict[str, int]) -> str:
    n = max(1, b["n"])
    return (
        f"{(b['accounts_table'] + b['accounts_indexes'] + b['tokens_total']) / n:,.0f} "
        f"({b['accounts_table'] / n:,.0f} + {b['accounts_indexes'] / n:,.0f} + "
        f"{b['tokens_total'] / n:,.0f})"
    )


async def count_by_status_ms(url: str) -> float:
    """The statement each sweep ends with (accounts by platform and status, for the gauge)."""
    from service.core.repository import sweeps

    conn = await asyncpg.connect(url)
    try:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            await conn.fetch(sweeps.COUNT_BY_STATUS)
            timings.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return 1000 * min(timings)


async def random_ids(url: str, n: int = 500) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id FROM accounts TABLESAMPLE SYSTEM (1) LIMIT 5000")
        if len(rows) < n:
            rows = await conn.fetch("SELECT id FROM accounts LIMIT 5000")
    finally:
        await conn.close()
    ids = [r["id"] for r in rows]
    random.shuffle(ids)
    return ids[:n]


def api_latency(
    o: ScaleOptions, stack: Stack, ids: list[str]
) -> tuple[loadgen.LoadResult, loadgen.LoadResult]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    argv = [*octopost_command(), "api", "--port", str(port), "--processes", "1"]
    headers = {"Authorization": f"Bearer {stack.key}"}
    with running("api", argv, stack.env) as proc:
        wait_for_port(proc, port)
        pages = ["/v1/accounts?limit=100"]
        for _ in range(4):
            status, body = _get(base + pages[-1], stack.key)
            if status != 200:
                raise BenchError(f"list answered {status}: {body[:200]!r}")
            page = orjson.loads(body)
            if not page["has_more"]:
                break
            pages.append(f"/v1/accounts?limit=100&cursor={page['next_cursor']}")
        status, body = _get(f"{base}/v1/accounts/{ids[0]}", stack.key)
        if status != 200:
            raise BenchError(f"get answered {status}: {body[:200]!r}")
        gets = [f"/v1/accounts/{i}" for i in ids]
        results = []
        for paths in (pages, gets):
            loadgen.wrk(base + paths[0], connections=64, seconds=1, headers=headers, paths=paths)
            QUIET.wait()
            results.append(
                loadgen.wrk(
                    base + paths[0],
                    connections=64,
                    seconds=o.seconds,
                    headers=headers,
                    paths=paths,
                )
            )
        proc.check_alive()
    return results[0], results[1]


async def run(o: ScaleOptions, admin_url: str, redis_url: str) -> list[SizeRun]:
    loadgen.find_wrk()
    runs: list[SizeRun] = []
    sandbox_port = free_port()
    sweep_options = SweepOptions(
        database_url=admin_url,
        redis_url=redis_url,
        db_name=o.db_name,
        latency_ms=o.latency_ms,
        timeout=o.timeout,
    )
    async with bench_database(admin_url, sweep_options.db_name) as db:
        stack = await prepare(sweep_options, db, sandbox_port)
        argv = [
            *octopost_command(), "sandbox", "--port", str(sandbox_port),
            "--latency-ms", f"{o.latency_ms:g}",
        ]  # fmt: skip
        with running("sandbox", argv, stack.env) as sandbox:
            wait_for_port(sandbox, sandbox_port)
            have = 0
            for size in sorted(o.sizes):
                started = time.perf_counter()
                await grow(stack, have, size)
                rate = (size - have) / (time.perf_counter() - started)
                have = size
                run_ = SizeRun(size, rate, await sizes(db.url))
                per = per_account(run_.bytes_after_import)
                say(f"imported {size:,} accounts ({rate:,.0f}/s); {per} B/account")
                run_.count_by_status_ms = await count_by_status_ms(db.url)
                run_.plans = await claim_plans(db.url)
                for name, plan in run_.plans:
                    say(f"EXPLAIN at {size:,}, {name}:\n{plan}")
                ids = await random_ids(db.url)
                page, get = await asyncio.to_thread(api_latency, o, stack, ids)
                run_.page, run_.get = page, get
                say(f"API at {size:,}: page p99 {page.p99_ms:.1f} ms, get p99 {get.p99_ms:.1f} ms")
                if size in o.sweep_sizes:
                    for kind, manual in (("manual", True), ("scheduled", False)):
                        so = replace(sweep_options, manual=manual)
                        result = await sweep_once(so, stack, 1, size, sandbox)
                        run_.sweeps.append((kind, result))
                    run_.bytes_after_sweeps = await sizes(db.url)
                runs.append(run_)
    return runs


def tables(runs: list[SizeRun], o: ScaleOptions) -> list[Table]:
    size_table = Table(
        "Scale: import, storage and API latency as accounts grow (one API process)",
        [
            "accounts",
            "import accounts/s",
            "PostgreSQL bytes/account after import (accounts table + indexes + tokens)",
            "after the sweeps",
            "list page p50 ms",
            "list page p99 ms",
            "get by id p50 ms",
            "get by id p99 ms",
            "count_by_status ms",
        ],
    )
    for r in runs:
        size_table.add(
            f"{r.accounts:,}",
            fmt(r.import_rate),
            per_account(r.bytes_after_import),
            per_account(r.bytes_after_sweeps) if r.bytes_after_sweeps else "-",
            fmt(r.page.p50_ms, 2) if r.page else "-",
            fmt(r.page.p99_ms, 2) if r.page else "-",
            fmt(r.get.p50_ms, 2) if r.get else "-",
            fmt(r.get.p99_ms, 2) if r.get else "-",
            fmt(r.count_by_status_ms, 1),
        )
    size_table.notes = [
        "import: the real importer (parse, seal with AES-GCM, upsert) in chunks of 20,000 "
        "accounts, one transaction each, then ANALYZE; rate over the accounts added to "
        "reach this size.",
        "bytes: pg_table_size + pg_indexes_size of accounts, pg_total_relation_size of "
        "account_tokens, / accounts; after the sweeps: the same with the dead row versions "
        "autovacuum had not yet reclaimed.",
        f"API: wrk, 64 connections, {o.seconds:g} s after 1 s of warm-up; the page cycles the "
        "first five pages of ?limit=100 (cursors included), the get cycles 500 random ids.",
        "count_by_status: the accounts-by-platform-and-status count every sweep ends with "
        "(a scan of all accounts), best of 3.",
    ]
    sweep_table = Table(
        f"Scale: sweeps, one worker process, sandbox latency {o.latency_ms:g} ms",
        [
            "accounts",
            "sweep",
            "checks/s (wall)",
            "seconds (wall)",
            "seconds (sweep row)",
            "worker CPU ms/check",
            "PostgreSQL CPU ms/check",
            "peak worker RSS MB",
            "statements/check",
            "row updates/check (HOT)",
            "WAL bytes/check",
            "dead tuples left",
            "Redis commands/check",
        ],
    )
    for r in runs:
        for kind, s in r.sweeps:
            sweep_table.add(
                f"{r.accounts:,}",
                kind,
                fmt(s.rate),
                fmt(s.seconds, 1),
                fmt(s.row_seconds, 1),
                fmt(1000 * s.worker_cpu_s / s.checked, 3),
                fmt(1000 * s.postgres_cpu_s / s.checked, 3),
                fmt(s.peak_rss_mb, 1),
                fmt(s.statements / s.checked, 4),
                f"{s.writes.updates / s.checked:.2f} ({s.writes.hot_updates / s.checked:.2f})",
                fmt(s.writes.wal_bytes / s.checked),
                f"{s.writes.dead:+,}",
                fmt(s.redis_commands / s.checked, 3),
            )
    sweep_table.notes = [
        "manual: `octopost sweep --wait` run as a process, timed from its start to its final "
        "line; scheduled: the sweep queued as the cron does (every account made due first by "
        "one UPDATE and a VACUUM ANALYZE, not timed), watched every 0.25 s as that command "
        "does, timed from queueing to seeing it done. Every account valid: one verify call "
        "each, all healthy (checked).",
        "row updates: pg_stat_user_tables n_tup_upd of accounts over the sweep / checks (HOT: "
        "heap-only, no index entries); each leaves one dead row version. Dead tuples left: "
        "n_dead_tup after - before (autovacuum runs meanwhile). WAL: pg_current_wal_lsn() over "
        "the sweep on the private server / checks.",
        "Redis commands: INFO total_commands_processed of the private server over the sweep "
        "(arq's queue, locks, the per-platform budgets and pauses) / checks.",
        f"{cores()} cores shared by the worker, the sandbox, PostgreSQL, Redis and the "
        "harness (and, on the shared machine, everyone else's work).",
        QUIET.note(),
    ]
    return [size_table, sweep_table]


def plans_markdown(runs: list[SizeRun]) -> str:
    biggest = max(runs, key=lambda r: r.accounts)
    out = [
        f"#### Claim plans at {biggest.accounts:,} accounts (generic plans, EXPLAIN ANALYZE "
        "in a transaction rolled back)",
        "",
    ]
    for name, plan in biggest.plans:
        out += [f"{name}:", "", "```", plan, "```", ""]
    return "\n".join(out)


def write(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{body.strip()}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--sweep-sizes", default="100000,1000000")
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument("--db-name", default="octopost_bench_scale")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    QUIET.max_wait = args.quiet_wait
    o = ScaleOptions(
        sizes=tuple(int(x) for x in args.sizes.split(",") if x),
        sweep_sizes=tuple(int(x) for x in args.sweep_sizes.split(",") if x),
        seconds=args.seconds,
        latency_ms=args.latency_ms,
        db_name=args.db_name,
    )
    load_before = load_average()
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="octopost-scale-") as tmp,
            servers(Path(tmp)) as (admin_url, redis_url),
        ):
            info = run_async(machine_info(admin_url, redis_url))
            runs = run_async(run(o, admin_url, redis_url))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    minutes = (time.monotonic() - started) / 60
    out = tables(runs, o)
    for table in out:
        print(table.text())
    if not args.no_write:
        command = "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])
        body = "\n".join(
            [
                f"Generated by `{command.strip()}` on {info['date']}, {minutes:.1f} min on "
                f"{cores()} cores; load average before {load_before}, after {load_average()}; "
                f"PostgreSQL {info.get('postgresql', '?')} (private, embedded: fsync off, "
                "shared_buffers 1GB), Redis private.",
                "",
                *(t.markdown() for t in out),
                plans_markdown(runs),
            ]
        )
        write(Path(args.output), body)
        say(f"wrote the results into {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
