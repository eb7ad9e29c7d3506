"""API throughput against its two ceilings, in one run under the same load.

For each repetition: ``pgbench -S`` (the database's ceiling), then for one process and for
one process per core the minimal aiohttp endpoint (``bench/ceiling.py``, the framework's
ceiling) and the API's endpoints, each at 64 connections for a fixed duration with wrk:

- ``GET /v1/accounts`` in the seed's workspace of 3 accounts
- ``GET /v1/accounts?limit=100`` paging through a workspace of 500 (cursors cycled)
- ``GET /v1/accounts/{id}``
- ``GET /v1/accounts`` with an unknown (well-formed) key: 401. The brute-force limiter is
  switched off for the run (``OCTOPOST_AUTH_FAILURES_PER_MINUTE=0``), or wrk would measure
  429s after the 30th request.

The API runs as a real ``octopost api --processes N`` against a dedicated database.

    python -m bench.api [--seconds 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import loadgen
from bench.common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    HOST,
    QUIET,
    BenchDatabase,
    BenchError,
    Table,
    bench_database,
    cores,
    flush_redis,
    fmt,
    median,
    octopost_command,
    ratio,
    run_async,
    running,
    say,
    wait_for_port,
)
from bench.loadgen import LoadResult
from devkit.embedded import free_port
from service.core.ids import PLATFORMS

SEED_WORKSPACE = "seed"
BIG_WORKSPACE = "big"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    label: str


CEILING = Scenario("ceiling", "minimal aiohttp JSON endpoint (framework ceiling)")
CEILING_QUERY = Scenario("ceiling+query", "minimal endpoint + one asyncpg SELECT by key")
PGBENCH = Scenario("pgbench", "pgbench -S -M prepared (database ceiling)")
LIST3 = Scenario("list3", "GET /v1/accounts (3 accounts)")
LIST500 = Scenario("list500", "GET /v1/accounts?limit=100, paging 500 accounts")
GET = Scenario("get", "GET /v1/accounts/{id}")
BAD_KEY = Scenario("401", "GET /v1/accounts, unknown key: 401")
API_SCENARIOS = (LIST3, LIST500, GET, BAD_KEY)


@dataclass
class ApiOptions:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    db_name: str = "octopost_bench"
    seconds: float = 5.0
    warmup: float = 1.0
    repeat: int = 3
    connections: int = 64
    threads: int = 1
    processes: tuple[int, ...] = (1, cores())
    big: int = 500
    loadgen: str = "wrk"
    api_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Seeded:
    seed_key: str
    big_key: str
    account_id: str
    big_pages: list[str] = field(default_factory=list)


@dataclass
class ApiResults:
    options: ApiOptions
    # (scenario name, processes) -> one result per repetition; pgbench under processes 0
    runs: dict[tuple[str, int], list[LoadResult]] = field(default_factory=dict)

    def add(self, scenario: Scenario, processes: int, result: LoadResult) -> None:
        self.runs.setdefault((scenario.name, processes), []).append(result)

    def median(self, scenario: Scenario, processes: int) -> dict[str, float]:
        runs = self.runs.get((scenario.name, processes), [])
        return {
            "rps": median(r.rps for r in runs),
            "p50": median(r.p50_ms for r in runs),
            "p99": median(r.p99_ms for r in runs),
            "runs": len(runs),
        }

    def table(self) -> Table:
        o = self.options
        table = Table(
            f"API at {o.connections} connections, {o.seconds:g} s per run, "
            f"median of {o.repeat} ({o.loadgen})",
            [
                "endpoint",
                "API processes",
                "req/s",
                "÷ framework",
                "÷ framework+query",
                "÷ database",
                "p50 ms",
                "÷ framework",
                "p99 ms",
                "÷ framework",
            ],
        )
        db = self.median(PGBENCH, 0)
        table.add(
            PGBENCH.label, "-", fmt(db["rps"]), "-", "-", "1.00", fmt(db["p50"], 2), "-",
            fmt(db["p99"], 2), "-",
        )  # fmt: skip
        for processes in o.processes:
            top = self.median(CEILING, processes)
            with_query = self.median(CEILING_QUERY, processes)
            for scenario in (CEILING, CEILING_QUERY, *API_SCENARIOS):
                m = self.median(scenario, processes)
                table.add(
                    scenario.label,
                    processes,
                    fmt(m["rps"]),
                    ratio(m["rps"], top["rps"]),
                    "-" if scenario is CEILING else ratio(m["rps"], with_query["rps"]),
                    ratio(m["rps"], db["rps"]),
                    fmt(m["p50"], 2),
                    ratio(m["p50"], top["p50"]),
                    fmt(m["p99"], 2),
                    ratio(m["p99"], top["p99"]),
                )
        table.notes = [
            "÷ framework: the figure divided by the minimal aiohttp endpoint's with the same "
            "number of processes (req/s: higher is better, max 1; latency: lower is better, "
            "min about 1). ÷ framework+query: req/s divided by that of the minimal endpoint "
            "doing one primary-key SELECT through the service's pool (no middleware, no "
            "auth): what is left is our own code. ÷ database: req/s divided by pgbench -S "
            "transactions/s.",
            f"Load: {o.loadgen} with {o.threads} thread(s), {o.connections} keep-alive "
            f"connections, {o.warmup:g} s warm-up before each run; "
            f"pgbench -S -M prepared -c {o.connections} -j {o.threads}. Load generator, "
            "API, PostgreSQL and Redis share the same cores.",
            "401 runs with OCTOPOST_AUTH_FAILURES_PER_MINUTE=0 (the brute-force limiter off).",
            QUIET.note(),
        ]
        bad = [
            f"{name} x{p}: {sum(r.errors for r in rs)} socket errors, "
            f"{sum(r.unexpected for r in rs)} unexpected statuses"
            for (name, p), rs in self.runs.items()
            if any(r.errors or r.unexpected for r in rs)
        ]
        if bad:
            table.notes.append("ERRORS: " + "; ".join(bad))
        return table

    def as_json(self) -> dict[str, Any]:
        return {
            f"{name}@{p}": [
                {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors}
                for r in rs
            ]
            for (name, p), rs in self.runs.items()
        }


async def seed(db: BenchDatabase, big: int) -> Seeded:
    """The seed's three accounts in one workspace, ``big`` accounts in another, a key each."""
    import asyncpg

    from bench.ceiling import PAYLOAD
    from service.core import api_keys
    from service.core.importer import import_accounts, parse_lines
    from service.core.repository import workspaces
    from service.core.vault import Vault, new_key

    vault = Vault.from_config(f"bench:{new_key()}")
    keys: dict[str, str] = {}
    conn = await asyncpg.connect(db.url)
    try:
        for workspace, lines in (
            (
                SEED_WORKSPACE,
                [{**a, "access_token": f"at-{a['id']}"} for a in PAYLOAD["accounts"]],
            ),
            (BIG_WORKSPACE, [_account_line(i) for i in range(big)]),
        ):
            key = api_keys.new_api_key()
            async with conn.transaction():
                workspace_id = await workspaces.ensure_workspace(conn, workspace)
                await workspaces.insert_key(
                    conn,
                    api_keys.new_key_id(),
                    workspace_id,
                    api_keys.key_display_prefix(key),
                    api_keys.hash_api_key(key),
                )
                parsed = parse_lines(orjson.dumps(line).decode() for line in lines)
                await import_accounts(conn, vault, workspace_id, parsed)
            keys[workspace] = key
        await conn.execute("ANALYZE")  # as autovacuum would soon: plans from real statistics
    finally:
        await conn.close()
    return Seeded(keys[SEED_WORKSPACE], keys[BIG_WORKSPACE], "acc_abc123")


def _account_line(i: int, token: str | None = None) -> dict[str, Any]:
    platform = PLATFORMS[i % len(PLATFORMS)]
    return {
        "platform": platform,
        "platform_user_id": f"user-{i}",
        "username": f"user{i}@example.social" if platform == "mastodon" else f"user{i}",
        "display_name": f"User {i}",
        "avatar_url": f"https://cdn.example.com/avatars/{i}.jpg",
        "connected_at": f"2026-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        "access_token": token or f"bench-{i}-{secrets.token_hex(6)}",
    }


def _get(url: str, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 - our own server
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def page_paths(base: str, key: str, limit: int = 100) -> list[str]:
    """Every page of the big workspace, as wrk will ask for them (first page, then cursors)."""
    path = f"/v1/accounts?limit={limit}"
    paths = [path]
    while True:
        status, body = _get(base + paths[-1], key)
        if status != 200:
            raise BenchError(f"GET {paths[-1]} answered {status}: {body[:200]!r}")
        page = orjson.loads(body)
        if not page["has_more"]:
            return paths
        paths.append(f"{path}&cursor={page['next_cursor']}")


def check_answers(base: str, seeded: Seeded, bad_key: str) -> None:
    """One request per scenario before any load: the right status and the right body."""
    status, body = _get(f"{base}/v1/accounts", seeded.seed_key)
    if status != 200 or len(orjson.loads(body)["accounts"]) != 3:
        raise BenchError(f"list answered {status}: {body[:300]!r}")
    status, body = _get(f"{base}/v1/accounts/{seeded.account_id}", seeded.seed_key)
    if status != 200 or orjson.loads(body)["id"] != seeded.account_id:
        raise BenchError(f"get answered {status}: {body[:300]!r}")
    for _ in range(3):  # more than once: the limiter must be off
        status, body = _get(f"{base}/v1/accounts", bad_key)
        if status != 401:
            raise BenchError(f"unknown key answered {status}, not 401: {body[:300]!r}")


def load(
    o: ApiOptions,
    url: str,
    *,
    key: str | None = None,
    paths: list[str] | None = None,
    expect_2xx: bool = True,
    seconds: float | None = None,
) -> LoadResult:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    seconds = o.seconds if seconds is None else seconds
    if o.loadgen == "python":
        result: LoadResult = run_async(
            loadgen.python_load(
                url,
                connections=o.connections,
                seconds=seconds,
                headers=headers,
                paths=paths,
                expect_2xx=expect_2xx,
            )
        )
        return result
    return loadgen.wrk(
        url,
        connections=o.connections,
        seconds=seconds,
        threads=o.threads,
        headers=headers,
        paths=paths,
        expect_2xx=expect_2xx,
    )


def measure(o: ApiOptions, url: str, **kwargs: Any) -> LoadResult:
    if o.warmup > 0:
        load(o, url, seconds=o.warmup, **kwargs)
    QUIET.wait()
    return load(o, url, **kwargs)


def api_env(o: ApiOptions, db: BenchDatabase) -> dict[str, str]:
    return {
        "DATABASE_URL": db.url,
        "REDIS_URL": o.redis_url,
        "OCTOPOST_AUTH_FAILURES_PER_MINUTE": "0",
        "OCTOPOST_LOG_LEVEL": "WARNING",
        **o.api_env,
    }


def run_ceiling(
    o: ApiOptions, db: BenchDatabase, seeded: Seeded, processes: int
) -> tuple[LoadResult, LoadResult]:
    """The framework's ceiling, and the framework's with one query per request."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    argv = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--database-url", db.url]
    with running("ceiling", [*argv, "--processes", str(processes)], {}) as proc:
        wait_for_port(proc, port)
        status, body = _get(f"{base}/v1/accounts/{seeded.account_id}", "-")
        if status != 200:
            raise BenchError(f"the ceiling's query endpoint answered {status}: {body[:200]!r}")
        bare = measure(o, f"{base}/v1/accounts")
        with_query = measure(o, f"{base}/v1/accounts/{seeded.account_id}")
        proc.check_alive()
        return bare, with_query


def run_api(
    o: ApiOptions, db: BenchDatabase, seeded: Seeded, processes: int
) -> dict[str, LoadResult]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    argv = [*octopost_command(), "api", "--port", str(port), "--processes", str(processes)]
    bad_key = "oct_live_" + "0" * 32
    results: dict[str, LoadResult] = {}
    with running("api", argv, api_env(o, db)) as proc:
        wait_for_port(proc, port)
        check_answers(base, seeded, bad_key)
        if not seeded.big_pages:
            seeded.big_pages = page_paths(base, seeded.big_key)
        results[LIST3.name] = measure(o, f"{base}/v1/accounts", key=seeded.seed_key)
        results[LIST500.name] = measure(o, base, key=seeded.big_key, paths=seeded.big_pages)
        results[GET.name] = measure(
            o, f"{base}/v1/accounts/{seeded.account_id}", key=seeded.seed_key
        )
        results[BAD_KEY.name] = measure(o, f"{base}/v1/accounts", key=bad_key, expect_2xx=False)
        proc.check_alive()
    return results


def run_pgbench(o: ApiOptions, db: BenchDatabase) -> LoadResult | None:
    pgbench = loadgen.find_pgbench()
    if pgbench is None:
        return None
    QUIET.wait()
    return loadgen.pgbench_select(
        pgbench, db.url, connections=o.connections, seconds=o.seconds, threads=o.threads
    )


async def _prepare(o: ApiOptions, db: BenchDatabase) -> Seeded:
    await flush_redis(o.redis_url)
    seeded = await seed(db, o.big)
    pgbench = loadgen.find_pgbench()
    if pgbench is not None:
        await asyncio.to_thread(loadgen.pgbench_init, pgbench, db.url)
    return seeded


async def run(o: ApiOptions) -> ApiResults:
    if o.loadgen == "wrk":
        loadgen.find_wrk()  # fail first, clearly
    results = ApiResults(o)
    async with bench_database(o.database_url, o.db_name) as db:
        seeded = await _prepare(o, db)
        for rep in range(o.repeat):
            say(f"api: repetition {rep + 1}/{o.repeat}")
            db_result = await asyncio.to_thread(run_pgbench, o, db)
            if db_result is not None:
                results.add(PGBENCH, 0, db_result)
            for processes in o.processes:
                bare, with_query = await asyncio.to_thread(run_ceiling, o, db, seeded, processes)
                results.add(CEILING, processes, bare)
                results.add(CEILING_QUERY, processes, with_query)
                by_name = await asyncio.to_thread(run_api, o, db, seeded, processes)
                for scenario in API_SCENARIOS:
                    results.add(scenario, processes, by_name[scenario.name])
        await flush_redis(o.redis_url)
    return results


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        help="any database on the server to use; the harness creates its own next to it",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help="a Redis database the harness may flush",
    )
    parser.add_argument("--db-name", default="octopost_bench")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0,
        help="before each timed run wait up to this long for the cores to be under 15 %% busy",
    )  # fmt: skip


def options_from(args: argparse.Namespace) -> ApiOptions:
    QUIET.max_wait = args.quiet_wait
    return ApiOptions(
        database_url=args.database_url,
        redis_url=args.redis_url,
        db_name=args.db_name,
        seconds=args.seconds,
        warmup=args.warmup,
        repeat=args.repeat,
        connections=args.connections,
        threads=args.threads,
        processes=tuple(int(p) for p in args.processes.split(",")),
        big=args.big,
        loadgen=args.loadgen,
        api_env=dict(kv.split("=", 1) for kv in args.api_env),
    )


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk/pgbench threads")
    parser.add_argument("--processes", default=f"1,{cores()}", help="API process counts")
    parser.add_argument("--big", type=int, default=500, help="accounts in the big workspace")
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    parser.add_argument(
        "--api-env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment for the API processes (e.g. OCTOPOST_DB_POOL_MAX=4)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    add_api_arguments(parser)
    parser.add_argument("--json", action="store_true", help="also print the raw runs as JSON")
    args = parser.parse_args(argv)
    try:
        results = run_async(run(options_from(args)))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(results.table().text())
    if args.json:
        print(orjson.dumps(results.as_json()).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
