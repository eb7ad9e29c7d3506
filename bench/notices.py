"""Platform push notices: how soon a notice shows as ``is_active: false`` on the public API,
and how many valid notices one API process receives per second.

    python -m bench.notices                       # 1,000 notices at 50/s, then throughput
    python -m bench.notices --notices 200 --throughput 500      # a quick look

Real parts only: `octopost api` (one process) and `octopost worker` (one process) as
subprocesses, on a private embedded PostgreSQL and Redis (never the machine's shared servers).
The notices are built and signed by the platform sandbox's own builder (the one
``POST /sandbox/push`` uses), one account per notice, the six push platforms in turn (Meta
deauthorize for facebook, instagram and threads, TikTok authorization.removed, X oauth.revoke,
Google RISC tokens-revoked); this process serves the RISC JWKS.

Latency: from just before the notice's POST to the first ``GET /v1/accounts/{id}`` answering
``is_active: false`` (polled every 5 ms per notice in flight), the notices sent on a fixed
50/s schedule. Throughput: the worker stopped (so it takes no CPU), distinct valid TikTok
notices, then Google RISC ones, sent as fast as 32 connections allow; each is verified,
written to the inbox and queued in Redis before its 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from bench.common import (
    HOST,
    Table,
    cores,
    fmt,
    load_average,
    octopost_command,
    run_async,
    say,
    start,
    wait_for_port,
)
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from devkit.sandbox.app import create_sandbox_app
from devkit.sandbox.credentials import SANDBOX_CREDENTIALS
from devkit.sandbox.push import PUSHER, Built, Pusher
from service.core import api_keys
from service.core.db import migrate
from service.core.importer import import_accounts, parse_lines
from service.core.repository import workspaces
from service.core.vault import Vault, new_key

PLATFORMS = ("facebook", "instagram", "threads", "tiktok", "twitter", "youtube")
POLL_SECONDS = 0.005


def account_line(platform: str, i: int) -> dict[str, Any]:
    line: dict[str, Any] = {
        "platform": platform,
        "platform_user_id": f"{platform}-{i}",
        "username": f"user{i}",
        "display_name": f"User {i}",
        "access_token": f"at-{platform}-{i}",
        "refresh_token": f"rt-{platform}-{i}",
    }
    if platform == "facebook":
        line["platform_user_id"] = f"page-{i}"
        line["authorizing_user_id"] = f"facebook-{i}"
    if platform == "youtube":
        line["platform_user_id"] = f"UC-{i}"
        line["authorizing_user_id"] = f"youtube-{i}"
    return line


def notice_ask(platform: str, i: int) -> dict[str, Any]:
    user = f"{platform}-{i}"
    if platform in ("facebook", "instagram", "threads"):
        return {"platform": platform, "event": "deauthorize", "user_id": user}
    if platform == "tiktok":
        return {"platform": platform, "event": "authorization.removed", "user_id": user}
    if platform == "twitter":
        return {"platform": platform, "event": "oauth.revoke", "user_id": user}
    return {"platform": platform, "event": "tokens-revoked", "user_id": user}


def percentile(values: list[float], p: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
    return data[k]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seed(database_url: str, vault: Vault, n: int) -> tuple[str, list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        lines = [
            orjson.dumps(account_line(PLATFORMS[i % len(PLATFORMS)], i)).decode() for i in range(n)
        ]
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, "bench")
            account_ids = await import_accounts(conn, vault, workspace_id, parse_lines(lines))
            key = api_keys.new_api_key()
            await workspaces.insert_key(
                conn,
                api_keys.new_key_id(),
                workspace_id,
                api_keys.key_display_prefix(key),
                api_keys.hash_api_key(key),
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return key, account_ids


async def send(http: aiohttp.ClientSession, base: str, built: Built) -> int:
    method, path, headers, body = built
    async with http.request(method, base + path, headers=headers, data=body) as r:
        await r.read()
        return r.status


async def latency_run(
    base: str, key: str, account_ids: list[str], notices: list[Built], rate: float
) -> tuple[list[float], list[float]]:
    auth = {"Authorization": f"Bearer {key}"}
    flips: list[float] = []
    answers: list[float] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            t0 = time.perf_counter()
            status = await send(http, base, notices[i])
            answers.append(time.perf_counter() - t0)
            if status not in (200, 202):
                raise RuntimeError(f"notice {i} answered {status}")
            while True:
                async with http.get(f"{base}/v1/accounts/{account_ids[i]}", headers=auth) as r:
                    body = await r.json()
                if not body["is_active"]:
                    break
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError(f"account {account_ids[i]} still active after 60 s")
                await asyncio.sleep(POLL_SECONDS)
            flips.append(time.perf_counter() - t0)

        begin = time.perf_counter() + 0.5
        await asyncio.gather(*(one(i, begin + i / rate) for i in range(len(notices))))
    return flips, answers


async def throughput_run(base: str, notices: list[Built], connections: int) -> float:
    connector = aiohttp.TCPConnector(limit=connections)
    queue = list(reversed(notices))
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            while queue:
                status = await send(http, base, queue.pop())
                if status not in (200, 202):
                    raise RuntimeError(f"a valid notice answered {status}")

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        return time.perf_counter() - started


async def run(args: argparse.Namespace) -> list[Table]:
    tmp = Path(tempfile.mkdtemp(prefix="octopost-bench-notices-"))
    pg = EmbeddedPostgres(tmp / "pg")
    redis = EmbeddedRedis(tmp / "redis")
    database_url, redis_url = pg.start(), redis.start()
    procs = []
    jwks_runner = None
    try:
        await migrate(database_url)
        token_keys = f"k1:{new_key()}"
        vault = Vault.from_config(token_keys)
        say(f"seeding {args.notices} accounts")
        key, account_ids = await seed(database_url, vault, args.notices)

        # this process serves the RISC key set, and its Pusher builds every notice
        sandbox = create_sandbox_app(credentials=SANDBOX_CREDENTIALS)
        pusher: Pusher = sandbox[PUSHER]
        jwks_runner = web.AppRunner(sandbox, access_log=None)
        await jwks_runner.setup()
        jwks_port = free_port()
        await web.TCPSite(jwks_runner, HOST, jwks_port).start()

        port = free_port()
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OCTOPOST_ENV": "test",
            "OCTOPOST_DATA_DIR": str(tmp / "data"),
            "OCTOPOST_TOKEN_KEYS": token_keys,
            "OCTOPOST_SWEEP_INTERVAL_MINUTES": "0",
            "OCTOPOST_GOOGLE_RISC_JWKS_URL": f"http://{HOST}:{jwks_port}/google/oauth2/v3/certs",
            **{f"OCTOPOST_{k.upper()}": v for k, v in SANDBOX_CREDENTIALS.items()},
        }
        api = start("api", [*octopost_command(), "api", "--port", str(port)], env)
        procs.append(api)
        worker = start("worker", [*octopost_command(), "worker"], env)
        procs.append(worker)
        wait_for_port(api, port)
        base = f"http://{HOST}:{port}"
        await asyncio.sleep(2.0)  # the worker's startup

        built = [
            pusher.build(notice_ask(PLATFORMS[i % len(PLATFORMS)], i)) for i in range(args.notices)
        ]
        say(f"latency: {args.notices} notices at {args.rate:g}/s")
        load_before = load_average()
        flips, answers = await latency_run(base, key, account_ids, built, args.rate)
        load_after = load_average()

        worker.stop()
        procs.remove(worker)
        results = []
        for platform in ("tiktok", "youtube"):
            # users no account has: the receiver does the same work for them
            notices = [
                pusher.build(notice_ask(platform, 10_000_000 + i)) for i in range(args.throughput)
            ]
            say(f"throughput: {args.throughput} {platform} notices, {args.connections} connections")
            cpu0 = cpu_seconds(api.pid)
            elapsed = await throughput_run(base, notices, args.connections)
            cpu = cpu_seconds(api.pid) - cpu0
            results.append((platform, args.throughput / elapsed, cpu / args.throughput * 1e6))
        api.check_alive()
    finally:
        for proc in procs:
            proc.stop()
        if jwks_runner is not None:
            await jwks_runner.cleanup()
        redis.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    latency = Table(
        f"Notice received -> is_active false on the public API, {args.notices} notices at "
        f"{args.rate:g}/s",
        ["", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    )
    for name, values in (
        ("notice answered (2xx)", answers),
        ("`is_active` false seen on the public API", flips),
    ):
        latency.add(
            name,
            *(fmt(percentile(values, p) * 1000, 1) for p in (50, 90, 99)),
            fmt(max(values) * 1000, 1),
        )
    latency.notes.append(
        f"one API process, one worker process, embedded PostgreSQL and Redis, {cores()} cores "
        f"shared with the load generator; load average before {load_before}, after {load_after}"
    )
    latency.notes.append(f"flip polled every {POLL_SECONDS * 1000:g} ms per notice in flight")
    throughput = Table(
        f"Receiver throughput, valid notices, one API process, {args.connections} connections",
        ["notices", "per second", "API CPU per notice (us)"],
    )
    for platform, rate, cpu_us in results:
        label = "TikTok (HMAC-SHA256)" if platform == "tiktok" else "Google RISC (RS256 JWT)"
        throughput.add(label, fmt(rate), fmt(cpu_us))
    throughput.notes.append(
        "each: verify, one INSERT into the inbox (committed), one enqueue in Redis, the 2xx"
    )
    return [latency, throughput]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--throughput", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    tables = run_async(run(args))
    for table in tables:
        print(table.markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
