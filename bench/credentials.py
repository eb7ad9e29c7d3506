"""Credentials for the publisher: issuance throughput against the framework ceiling, and one
platform refresh for a burst of requests.

- Issuance: ``POST /internal/v1/accounts/{id}/credentials`` for tokens that need no refresh
  (wrk cycling over ``--accounts`` accounts), 64 connections, one API process (`octopost api
  --internal-port`), and in the same repetition the framework ceiling (``bench/ceiling.py``:
  a minimal aiohttp JSON endpoint served the same way). Every issuance decrypts the token,
  writes its audit event and answers the token, as in production. Targets: at least 0.25 of
  the ceiling's req/s, p99 under 25 ms.
- Burst: ``--burst`` (200) concurrent requests for one account whose token expires in two
  minutes, the sandbox (`octopost sandbox`) answering the refresh after ``--refresh-ms``, with
  one API process and with one per core. Counted: the platform's refresh calls (target:
  exactly one), the statuses, the distinct tokens served, and the wall time of the burst.

    python -m bench.credentials [--seconds 5] [--repeat 3] [--processes 1,2]

(``--processes`` is for the burst; issuance always runs one API process.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from bench import loadgen
from bench.api import add_api_arguments, add_common_arguments
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

# what the sandbox accepts as app credentials (it takes any)
SANDBOX_APP_ENV = {
    "OCTOPOST_YOUTUBE_CLIENT_ID": "bench-client",
    "OCTOPOST_YOUTUBE_CLIENT_SECRET": "bench-secret",
    "OCTOPOST_TWITTER_CLIENT_ID": "bench-client",
    "OCTOPOST_TWITTER_CLIENT_SECRET": "bench-secret",
}
PLATFORMS = ("twitter", "youtube", "mastodon", "bluesky", "linkedin", "tiktok")


@dataclass
class Options:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    db_name: str = "octopost_bench_credentials"
    seconds: float = 5.0
    warmup: float = 1.0
    repeat: int = 3
    connections: int = 64
    accounts: int = 100
    burst: int = 200
    refresh_ms: float = 300.0
    processes: tuple[int, ...] = (1, cores())
    loadgen: str = "wrk"


@dataclass
class Burst:
    processes: int
    requests: int
    ok: int
    tokens: int
    refresh_calls: int
    seconds: float


@dataclass
class Results:
    options: Options
    ceiling: list[LoadResult] = field(default_factory=list)
    issuance: list[LoadResult] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)

    def issuance_table(self) -> Table:
        o = self.options
        table = Table(
            f"Credentials issuance at {o.connections} connections, one API process, "
            f"{o.seconds:g} s per run, median of {o.repeat} ({o.loadgen})",
            ["endpoint", "req/s", "÷ framework", "p50 ms", "p99 ms", "target"],
        )
        top = _median(self.ceiling)
        got = _median(self.issuance)
        table.add(
            "minimal aiohttp JSON endpoint (framework ceiling)", fmt(top["rps"]), "1.00",
            fmt(top["p50"], 2), fmt(top["p99"], 2), "-",
        )  # fmt: skip
        share = got["rps"] / top["rps"] if top["rps"] else 0.0
        met = share >= 0.25 and got["p99"] < 25
        table.add(
            f"POST /internal/v1/accounts/{{id}}/credentials ({o.accounts} accounts, no refresh)",
            fmt(got["rps"]),
            ratio(got["rps"], top["rps"]),
            fmt(got["p50"], 2),
            fmt(got["p99"], 2),
            f"≥ 0.25 and p99 < 25 ms: {'met' if met else 'NOT met'}",
        )
        table.notes = [
            "Each issuance: service-key auth (cached), one batched read of the account and its "
            "sealed tokens, AES-GCM decryption, one batched INSERT of the credentials_issued "
            "event, the JSON answer. Load generator, API, PostgreSQL and Redis share the "
            "same cores.",
            QUIET.note(),
        ]
        bad = [r for r in (*self.ceiling, *self.issuance) if r.errors or r.unexpected]
        if bad:
            table.notes.append(
                "ERRORS: "
                + "; ".join(f"{r.errors} socket errors, {r.unexpected} unexpected" for r in bad)
            )
        return table

    def burst_table(self) -> Table:
        o = self.options
        table = Table(
            f"{o.burst} concurrent credentials requests for one near-expiry account "
            f"(refresh answered after {o.refresh_ms:g} ms)",
            ["API processes", "answers 200", "distinct tokens", "platform refresh calls",
             "burst wall time s", "target"],
        )  # fmt: skip
        for b in self.bursts:
            table.add(
                b.processes,
                f"{b.ok}/{b.requests}",
                b.tokens,
                b.refresh_calls,
                fmt(b.seconds, 2),
                f"exactly one refresh call: {'met' if b.refresh_calls == 1 else 'NOT met'}",
            )
        table.notes = [
            "A fresh account per run; its refresh token is set 'slow' in the sandbox so every "
            "request arrives while the one refresh runs. With several processes the kernel "
            "spreads the connections (SO_REUSEPORT): the process holding the Redis lock "
            "calls the platform, the others wait for it and serve what it stored."
        ]
        return table


def _median(runs: list[LoadResult]) -> dict[str, float]:
    return {
        "rps": median(r.rps for r in runs),
        "p50": median(r.p50_ms for r in runs),
        "p99": median(r.p99_ms for r in runs),
    }


@dataclass
class Seeded:
    token_keys: str
    service_key: str
    account_ids: list[str]


def _line(i: int, platform: str, expires: datetime | None, tag: str) -> dict[str, Any]:
    line: dict[str, Any] = {
        "platform": platform,
        "platform_user_id": f"{tag}-{i}",
        "username": f"{tag}{i}@example.social" if platform == "mastodon" else f"{tag}{i}",
        "display_name": f"{tag} {i}",
        "access_token": f"bench-{tag}-{i}-access",
        "refresh_token": f"bench-{tag}-{i}-refresh",
    }
    if expires is not None:
        line["token_expires_at"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    return line


async def seed(db: BenchDatabase, n: int) -> Seeded:
    import asyncpg

    from service.core import api_keys
    from service.core.importer import import_accounts, parse_lines
    from service.core.repository import service_keys, workspaces
    from service.core.vault import Vault, new_key

    token_keys = f"bench:{new_key()}"
    vault = Vault.from_config(token_keys)
    key = api_keys.new_service_key()
    later = datetime.now(UTC) + timedelta(days=2)  # far from the refresh margin
    lines = [_line(i, PLATFORMS[i % len(PLATFORMS)], later, "acct") for i in range(n)]
    conn = await asyncpg.connect(db.url)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, "bench")
            parsed = parse_lines(orjson.dumps(line).decode() for line in lines)
            account_ids = await import_accounts(conn, vault, workspace_id, parsed)
            await service_keys.insert_service_key(
                conn,
                api_keys.new_service_key_id(),
                "bench-publisher",
                api_keys.service_key_display_prefix(key),
                api_keys.hash_api_key(key),
                ["credentials"],
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return Seeded(token_keys, key, account_ids)


async def near_expiry_account(db: BenchDatabase, token_keys: str, tag: str) -> tuple[str, str]:
    """A youtube account whose token expires in two minutes; (its id, its refresh token)."""
    import asyncpg

    from service.core.importer import import_accounts, parse_lines
    from service.core.repository import workspaces
    from service.core.vault import Vault

    line = _line(0, "youtube", datetime.now(UTC) + timedelta(minutes=2), tag)
    conn = await asyncpg.connect(db.url)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, "bench")
            (account_id,) = await import_accounts(
                conn,
                Vault.from_config(token_keys),
                workspace_id,
                parse_lines([orjson.dumps(line).decode()]),
            )
    finally:
        await conn.close()
    return account_id, line["refresh_token"]


def _post(url: str, key: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - our own server
        url, method="POST", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _load(o: Options, url: str, *, seconds: float, **kwargs: Any) -> LoadResult:
    if o.loadgen == "python":
        result: LoadResult = run_async(
            loadgen.python_load(url, connections=o.connections, seconds=seconds, **kwargs)
        )
        return result
    return loadgen.wrk(url, connections=o.connections, seconds=seconds, **kwargs)


def measure(o: Options, url: str, **kwargs: Any) -> LoadResult:
    if o.warmup > 0:
        _load(o, url, seconds=o.warmup, **kwargs)
    QUIET.wait()
    return _load(o, url, seconds=o.seconds, **kwargs)


def run_ceiling(o: Options) -> LoadResult:
    port = free_port()
    argv = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--processes", "1"]
    with running("ceiling", argv, {}) as proc:
        wait_for_port(proc, port)
        result = measure(o, f"http://{HOST}:{port}/v1/accounts")
        proc.check_alive()
        return result


def api_argv(port: int, internal_port: int, processes: int) -> list[str]:
    return [
        *octopost_command(), "api", "--port", str(port), "--internal-port", str(internal_port),
        "--processes", str(processes),
    ]  # fmt: skip


def api_env(o: Options, db: BenchDatabase, seeded: Seeded, sandbox_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db.url,
        "REDIS_URL": o.redis_url,
        "OCTOPOST_ENV": "test",
        "OCTOPOST_TOKEN_KEYS": seeded.token_keys,
        "OCTOPOST_LOG_LEVEL": "WARNING",
        "OCTOPOST_SANDBOX_URL": sandbox_url,
        **SANDBOX_APP_ENV,
    }


def run_issuance(o: Options, env: dict[str, str], seeded: Seeded) -> LoadResult:
    port, internal = free_port(), free_port()
    base = f"http://{HOST}:{internal}"
    paths = [f"/internal/v1/accounts/{a}/credentials" for a in seeded.account_ids]
    with running("api", api_argv(port, internal, 1), env) as proc:
        wait_for_port(proc, internal)
        status, body = _post(base + paths[0], seeded.service_key)
        if status != 200 or "access_token" not in orjson.loads(body):
            raise BenchError(f"credentials answered {status}: {body[:300]!r}")
        result = measure(
            o,
            base,
            headers={"Authorization": f"Bearer {seeded.service_key}"},
            paths=paths,
            method="POST",
        )
        proc.check_alive()
        return result


async def _burst_requests(url: str, key: str, n: int) -> tuple[list[int], set[str], float]:
    connector = aiohttp.TCPConnector(limit=n, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        async def one() -> tuple[int, str]:
            async with http.post(url) as r:
                body = await r.json()
                return r.status, body.get("access_token", "")

        started = time.perf_counter()
        answers = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - started
    return [s for s, _ in answers], {t for _, t in answers if t}, elapsed


async def _sandbox(url: str, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as http, http.request(method, url + path, json=body) as r:
        if r.status != 200:
            raise BenchError(f"sandbox {method} {path} answered {r.status}: {await r.text()}")
        return await r.json()


def run_burst(
    o: Options,
    db: BenchDatabase,
    env: dict[str, str],
    seeded: Seeded,
    sandbox_url: str,
    processes: int,
    rep: int,
) -> Burst:
    account_id, refresh = run_async(
        near_expiry_account(db, seeded.token_keys, f"burst{processes}x{rep}")
    )
    run_async(
        _sandbox(
            sandbox_url,
            "POST",
            "/sandbox/tokens",
            {"token": refresh, "state": "slow", "delay_ms": o.refresh_ms},
        )
    )
    port, internal = free_port(), free_port()
    url = f"http://{HOST}:{internal}/internal/v1/accounts/{account_id}/credentials"
    with running(
        "api", api_argv(port, internal, processes), {**env, "OCTOPOST_LOG_LEVEL": "INFO"}
    ) as proc:
        wait_for_port(proc, internal)
        # every forked process has both listeners up, or the kernel gives them all to one
        deadline = time.monotonic() + 30
        while proc.output().count("serving on") < 2 * processes:
            proc.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the API processes did not all start:\n{proc.output()}")
            time.sleep(0.05)
        QUIET.wait()
        statuses, tokens, seconds = run_async(_burst_requests(url, seeded.service_key, o.burst))
        proc.check_alive()
    calls = run_async(
        _sandbox(sandbox_url, "GET", f"/sandbox/calls?platform=youtube&token={refresh}")
    )
    refreshes = [c for c in calls["calls"] if c["path"] == "/youtube/token"]
    return Burst(
        processes, len(statuses), statuses.count(200), len(tokens), len(refreshes), seconds
    )


async def _prepare(o: Options, db: BenchDatabase) -> Seeded:
    await flush_redis(o.redis_url)
    return await seed(db, o.accounts)


async def run(o: Options) -> Results:
    if o.loadgen == "wrk":
        loadgen.find_wrk()
    results = Results(o)
    async with bench_database(o.database_url, o.db_name) as db:
        seeded = await _prepare(o, db)
        sandbox_port = free_port()
        sandbox_url = f"http://{HOST}:{sandbox_port}"
        argv = [*octopost_command(), "sandbox", "--port", str(sandbox_port)]
        with running("sandbox", argv, {"OCTOPOST_LOG_LEVEL": "WARNING"}) as sandbox:
            wait_for_port(sandbox, sandbox_port)
            env = api_env(o, db, seeded, sandbox_url)
            for rep in range(o.repeat):
                say(f"credentials: repetition {rep + 1}/{o.repeat}")
                results.ceiling.append(await asyncio.to_thread(run_ceiling, o))
                results.issuance.append(await asyncio.to_thread(run_issuance, o, env, seeded))
            for processes in o.processes:
                say(f"credentials: burst of {o.burst} with {processes} API process(es)")
                results.bursts.append(
                    await asyncio.to_thread(
                        run_burst, o, db, env, seeded, sandbox_url, processes, 0
                    )
                )
        await flush_redis(o.redis_url)
    return results


def add_credentials_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--issue-accounts", type=int, default=100, help="accounts the issuance run cycles over"
    )
    parser.add_argument("--burst", type=int, default=200, help="concurrent near-expiry requests")
    parser.add_argument(
        "--refresh-ms", type=float, default=300.0, help="the sandbox's refresh answer delay"
    )


def options_from(args: argparse.Namespace) -> Options:
    """From the arguments of this script or of bench.run (which shares the API's)."""
    QUIET.max_wait = args.quiet_wait
    return Options(
        database_url=args.database_url,
        redis_url=args.redis_url,
        db_name=f"{args.db_name}_credentials",
        seconds=args.seconds,
        warmup=args.warmup,
        repeat=args.repeat,
        connections=args.connections,
        accounts=args.issue_accounts,
        burst=args.burst,
        refresh_ms=args.refresh_ms,
        processes=tuple(int(p) for p in args.processes.split(",")),
        loadgen=args.loadgen,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    add_api_arguments(parser)
    add_credentials_arguments(parser)
    args = parser.parse_args(argv)
    try:
        results = run_async(run(options_from(args)))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(results.issuance_table().text())
    print(results.burst_table().text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
