"""Soak: the API at a steady request rate for minutes while sweeps keep the worker busy.

    python -m bench.soak                       # 3 minutes at 200 requests/s, 3,000 accounts
    python -m bench.soak --duration 600 --rate 300
    python -m bench.soak --duration 8 --rate 40 --accounts 200 --json   # the suite's smoke run

Real processes: ``octopost api``, ``octopost worker`` and ``octopost sandbox`` (the platforms),
over PostgreSQL and Redis. Servers: ``DATABASE_URL`` names a server on which the soak creates
(and at the end drops) a database of its own; ``REDIS_URL`` names a Redis database the soak
flushes before and after. Without them it starts private embedded servers, like the suite.

Traffic is open-loop (a request is started every 1/rate s whether or not earlier ones have
answered, so a stall shows as latency, not as a slower client): every 100th request a
disconnect, the others 70 % a page of the listing (cursors followed), 20 % one account, 5 %
health, 5 % events. A sweep is triggered every ``--sweep-every`` s, and checked accounts are
due again after a few seconds, so the worker checks against the sandbox for the whole run.

The run fails (exit 1, each violated bound printed) on any request error (a status other
than the expected one, a timeout, a refused connection), on p99 latency above ``--p99-ms``,
on RSS growth of the API or the worker above ``--rss-growth-mb`` between the end of the
warm-up and the end, on more PostgreSQL connections than the pools allow, or on more open
TCP connections in the API than in-flight requests and pools explain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
import orjson
import psutil
from yarl import URL

from devkit.embedded import free_port
from service.api.app import redis_client
from service.core import api_keys, ids
from service.core.db import migrate
from service.core.importer import import_accounts, parse_lines
from service.core.jobs import enqueue_sweep
from service.core.repository import sweeps, workspaces
from service.core.vault import Vault, new_key

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WORKSPACE = "soak"
# Each process's pool: API and worker. PostgreSQL connections beyond both pools plus the
# soak's own would be a leak.
DB_POOL_MAX = 10
MAX_IN_FLIGHT = 256
REQUEST_TIMEOUT = 10.0


class SoakError(Exception):
    """The soak could not run (a process died, a server is unreachable)."""


@dataclass
class Options:
    duration: float = 180.0
    rate: float = 200.0
    accounts: int = 3000
    sweep_every: float = 10.0
    check_interval: float = 5.0
    warmup: float = 0.2  # share of the duration
    p99_ms: float = 100.0
    rss_growth_mb: float = 40.0
    sample_every: float = 2.0
    json: bool = False


# ------------------------------------------------------------------------ servers


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[str, str]]:
    """(admin database URL, Redis URL): from the environment, or embedded ones."""
    from devkit.embedded import EmbeddedPostgres, EmbeddedRedis

    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    pg = None if database_url else EmbeddedPostgres(workdir / "pg")
    rd = None if redis_url else EmbeddedRedis(workdir / "redis")
    try:
        yield (database_url or pg.start(), redis_url or rd.start())  # type: ignore[union-attr]
    finally:
        if rd is not None:
            rd.stop()
        if pg is not None:
            pg.stop()


@contextlib.asynccontextmanager
async def own_database(admin_url: str) -> AsyncIterator[str]:
    name = f"octopost_soak_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield str(URL(admin_url).with_path(f"/{name}"))
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def alive(self) -> None:
        if self.popen.poll() is not None:
            raise SoakError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.log.close()
        return self.popen.returncode


@contextlib.contextmanager
def process(name: str, args: list[str], env: dict[str, str]) -> Iterator[Proc]:
    log = tempfile.TemporaryFile()
    popen = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc = Proc(name, popen, log)
    try:
        yield proc
    finally:
        proc.stop()


async def wait_ready(proc: Proc, url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            proc.alive()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as r:
                    if r.status < 500:
                        return
            if time.monotonic() > deadline:
                raise SoakError(f"{proc.name} did not come up:\n{proc.output()}")
            await asyncio.sleep(0.1)


# ------------------------------------------------------------------------- seeding


@dataclass
class Seeded:
    key: str
    readable: list[str]
    deletable: list[str]


async def seed(database_url: str, token_keys: str, accounts: int) -> Seeded:
    await migrate(database_url)
    vault = Vault.from_config(token_keys)
    conn = await asyncpg.connect(database_url)
    try:
        key = api_keys.new_api_key()
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, WORKSPACE)
            await workspaces.insert_key(
                conn, api_keys.new_key_id(), workspace_id, api_keys.key_display_prefix(key),
                api_keys.hash_api_key(key),
            )  # fmt: skip
            lines = []
            for i in range(accounts):
                platform = ids.PLATFORMS[i % len(ids.PLATFORMS)]
                lines.append(
                    orjson.dumps(
                        {
                            "platform": platform,
                            "platform_user_id": f"soak-{i}",
                            "username": f"u{i}@soak.example" if platform == "mastodon" else f"u{i}",
                            "display_name": f"User {i}",
                            "access_token": f"soak-at-{i}-{secrets.token_hex(8)}",
                            "refresh_token": f"soak-rt-{i}-{secrets.token_hex(8)}",
                        }
                    )
                )
            created = await import_accounts(conn, vault, workspace_id, parse_lines(lines))
    finally:
        await conn.close()
    spare = max(1, accounts // 10)  # disconnected during the run
    return Seeded(key, created[spare:], created[:spare])


# ------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    base: str
    seeded: Seeded
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _cursor: str | None = None
    _sent: int = 0

    def _next(self) -> tuple[str, str, int]:
        """(method, path, expected status): every 100th a DELETE (counted, not drawn, so
        even a short run disconnects), the rest reads drawn at random."""
        self._sent += 1
        if self._sent % 100 == 50 and self.seeded.deletable:
            return "DELETE", f"/v1/accounts/{self.seeded.deletable.pop()}", 204
        roll = random.random()
        if roll < 0.70:
            path = "/v1/accounts?limit=50" + (f"&cursor={self._cursor}" if self._cursor else "")
            return "GET", path, 200
        if roll < 0.90:
            return "GET", f"/v1/accounts/{random.choice(self.seeded.readable)}", 200
        if roll < 0.95:
            return "GET", f"/v1/accounts/{random.choice(self.seeded.readable)}/health", 200
        return "GET", f"/v1/accounts/{random.choice(self.seeded.readable)}/events", 200

    async def one(self, session: aiohttp.ClientSession) -> None:
        method, path, expected = self._next()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.perf_counter()
        try:
            async with session.request(method, self.base + path) as r:
                body = await r.read()
                elapsed = (time.perf_counter() - started) * 1000
                self.statuses[str(r.status)] += 1
                if r.status != expected:
                    self.errors.append(f"{method} {path} -> {r.status} {body[:200]!r}")
                elif path.startswith("/v1/accounts?"):
                    self._cursor = orjson.loads(body)["next_cursor"]
                self.latencies_ms.append(elapsed)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.statuses[type(exc).__name__] += 1
            self.errors.append(f"{method} {path} -> {type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1

    async def run(self, duration: float, rate: float) -> None:
        interval = 1.0 / rate
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
        headers = {"Authorization": f"Bearer {self.seeded.key}"}
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers
        ) as session:
            start = time.monotonic()
            n = 0
            while True:
                due = start + n * interval
                now = time.monotonic()
                if due - start >= duration:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                if self.in_flight >= MAX_IN_FLIGHT:
                    self.statuses["not sent: too many in flight"] += 1
                    self.errors.append("client side: too many requests in flight")
                else:
                    task = asyncio.create_task(self.one(session))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)


# ------------------------------------------------------------------------ sampling


@dataclass
class Sample:
    at: float
    api_rss_mb: float
    worker_rss_mb: float
    api_tcp: int
    api_fds: int
    pg_connections: int
    redis_clients: int


async def sampler(
    stop: asyncio.Event,
    every: float,
    api: Proc,
    worker: Proc,
    database_url: str,
    redis_url: str,
    samples: list[Sample],
) -> None:
    conn = await asyncpg.connect(database_url)
    redis = redis_client(redis_url)
    database = URL(database_url).path.lstrip("/")
    try:
        start = time.monotonic()
        while not stop.is_set():
            api.alive()
            worker.alive()
            a, w = api.ps, worker.ps
            info = await redis.info("clients")
            samples.append(
                Sample(
                    at=round(time.monotonic() - start, 1),
                    api_rss_mb=round(a.memory_info().rss / 2**20, 1),
                    worker_rss_mb=round(w.memory_info().rss / 2**20, 1),
                    api_tcp=len(a.net_connections(kind="tcp")),
                    api_fds=a.num_fds(),
                    pg_connections=await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
                    ),
                    redis_clients=int(info["connected_clients"]),
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await redis.aclose()
        await conn.close()


async def sweeper(stop: asyncio.Event, every: float, database_url: str, redis_url: str) -> int:
    """Trigger a sweep of all accounts every `every` seconds, as `octopost sweep` does."""
    conn = await asyncpg.connect(database_url)
    redis = redis_client(redis_url)
    triggered = 0
    try:
        while not stop.is_set():
            sweep_id = await sweeps.create_sweep(conn, "manual", None, None)
            await enqueue_sweep(redis, sweep_id)
            triggered += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await redis.aclose()
        await conn.close()
    return triggered


# --------------------------------------------------------------------------- run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def soak(o: Options, admin_url: str, redis_url: str) -> dict[str, Any]:
    token_keys = f"soak:{new_key()}"
    flush = redis_client(redis_url)
    await flush.flushdb()
    try:
        async with own_database(admin_url) as database_url:
            seeded = await seed(database_url, token_keys, o.accounts)
            return await _run(o, database_url, redis_url, token_keys, seeded)
    finally:
        await flush.flushdb()
        await flush.aclose()


async def _run(
    o: Options, database_url: str, redis_url: str, token_keys: str, seeded: Seeded
) -> dict[str, Any]:
    api_port, sandbox_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOPOST_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OCTOPOST_TOKEN_KEYS": token_keys,
            "OCTOPOST_ENV": "test",
            "OCTOPOST_LOG_LEVEL": "WARNING",
            "OCTOPOST_DB_POOL_MAX": str(DB_POOL_MAX),
            "OCTOPOST_SANDBOX_URL": f"http://{HOST}:{sandbox_port}",
            "OCTOPOST_SWEEP_INTERVAL_MINUTES": "0",
            "OCTOPOST_CHECK_INTERVAL_SECONDS": str(o.check_interval),
        }
    )
    base = f"http://{HOST}:{api_port}"
    with (
        process("sandbox", ["sandbox", "--port", str(sandbox_port)], env) as sandbox,
        process("api", ["api", "--port", str(api_port)], env) as api,
        process("worker", ["worker"], env) as worker,
    ):
        await wait_ready(sandbox, f"http://{HOST}:{sandbox_port}/sandbox/calls?limit=1")
        await wait_ready(api, f"{base}/healthz")
        stop = asyncio.Event()
        samples: list[Sample] = []
        sampling = asyncio.create_task(
            sampler(stop, o.sample_every, api, worker, database_url, redis_url, samples)
        )
        sweeping = asyncio.create_task(sweeper(stop, o.sweep_every, database_url, redis_url))
        traffic = Traffic(base, seeded)
        started = time.monotonic()
        try:
            await traffic.run(o.duration, o.rate)
        finally:
            stop.set()
            await asyncio.gather(sampling, sweeping, return_exceptions=True)
        elapsed = time.monotonic() - started
        api.alive()
        worker.alive()
        triggered = sweeping.result() if not sweeping.exception() else 0
        if sampling.exception():
            raise SoakError(f"sampling failed: {sampling.exception()!r}")
        sweeps = await _sweeps(database_url)
        api_exit, worker_exit = api.stop(), worker.stop()
    return _summary(o, traffic, samples, sweeps, triggered, elapsed, api_exit, worker_exit)


async def _sweeps(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'done') AS done, count(*) AS total, "
            "coalesce(sum(checked), 0) AS checked, coalesce(sum(transient), 0) AS transient, "
            "coalesce(sum(unknown), 0) AS unknown, coalesce(sum(deactivated), 0) AS deactivated "
            "FROM sweeps"
        )
    finally:
        await conn.close()
    return {k: int(v) for k, v in dict(row).items()}


def _summary(
    o: Options,
    traffic: Traffic,
    samples: list[Sample],
    sweeps: dict[str, int],
    triggered: int,
    elapsed: float,
    api_exit: int | None,
    worker_exit: int | None,
) -> dict[str, Any]:
    lat = traffic.latencies_ms
    warm = [s for s in samples if s.at >= o.duration * o.warmup] or samples
    first, last = warm[0], warm[-1]
    connection_bound = 2 * DB_POOL_MAX + 2  # API pool, worker pool, the sampler
    tcp_bound = MAX_IN_FLIGHT + DB_POOL_MAX + 8  # clients, its pool, Redis, the listener
    result: dict[str, Any] = {
        "duration_s": round(elapsed, 1),
        "rate_target": o.rate,
        "requests": sum(traffic.statuses.values()),
        "rate_achieved": round(len(lat) / elapsed, 1) if elapsed else 0,
        "statuses": dict(traffic.statuses),
        "errors": len(traffic.errors),
        "first_errors": traffic.errors[:5],
        "p50_ms": round(percentile(lat, 0.50), 2),
        "p99_ms": round(percentile(lat, 0.99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
        "max_in_flight": traffic.max_in_flight,
        "sweeps_triggered": triggered,
        "sweeps": sweeps,
        "api_rss_mb": {"after_warmup": first.api_rss_mb, "end": last.api_rss_mb},
        "worker_rss_mb": {"after_warmup": first.worker_rss_mb, "end": last.worker_rss_mb},
        "api_tcp_max": max(s.api_tcp for s in samples),
        "api_fds": {"after_warmup": first.api_fds, "end": last.api_fds},
        "pg_connections_max": max(s.pg_connections for s in samples),
        "redis_clients_max": max(s.redis_clients for s in samples),
        "samples": [asdict(s) for s in samples],
        "exit_codes": {"api": api_exit, "worker": worker_exit},
        "bounds": {
            "p99_ms": o.p99_ms,
            "rss_growth_mb": o.rss_growth_mb,
            "pg_connections": connection_bound,
            "api_tcp": tcp_bound,
        },
    }
    violations = []
    if traffic.errors:
        violations.append(f"{len(traffic.errors)} request errors, e.g. {traffic.errors[0]}")
    if result["p99_ms"] > o.p99_ms:
        violations.append(f"p99 {result['p99_ms']} ms > {o.p99_ms} ms")
    for name in ("api_rss_mb", "worker_rss_mb"):
        growth = result[name]["end"] - result[name]["after_warmup"]
        if growth > o.rss_growth_mb:
            violations.append(f"{name} grew by {growth:.1f} MB > {o.rss_growth_mb} MB")
    if result["pg_connections_max"] > connection_bound:
        violations.append(f"{result['pg_connections_max']} PostgreSQL connections")
    if result["api_tcp_max"] > tcp_bound:
        violations.append(f"{result['api_tcp_max']} open TCP connections in the API")
    if result["api_fds"]["end"] - result["api_fds"]["after_warmup"] > 32:
        violations.append(f"API file descriptors grew: {result['api_fds']}")
    if sweeps["done"] == 0 or sweeps["checked"] == 0:
        violations.append(f"no sweep finished during the soak: {sweeps}")
    if sweeps["transient"] or sweeps["unknown"] or sweeps["deactivated"]:
        violations.append(f"checks that were not 'valid' against a healthy sandbox: {sweeps}")
    if (api_exit, worker_exit) != (0, 0):
        violations.append(f"exit codes on SIGTERM: api {api_exit}, worker {worker_exit}")
    result["violations"] = violations
    result["ok"] = not violations
    return result


def print_human(r: dict[str, Any]) -> None:
    print(f"soak: {r['duration_s']} s at {r['rate_achieved']}/s (target {r['rate_target']}/s)")
    print(f"  requests {r['requests']}  statuses {r['statuses']}  errors {r['errors']}")
    print(
        f"  latency ms: p50 {r['p50_ms']}  p99 {r['p99_ms']} (bound {r['bounds']['p99_ms']})"
        f"  max {r['max_ms']}  in flight max {r['max_in_flight']}"
    )
    s = r["sweeps"]
    print(f"  sweeps: {r['sweeps_triggered']} triggered, {s['done']} done, {s['checked']} checks")
    print(
        f"  RSS MB api {r['api_rss_mb']}  worker {r['worker_rss_mb']}"
        f" (growth bound {r['bounds']['rss_growth_mb']})"
    )
    print(
        f"  connections: PostgreSQL max {r['pg_connections_max']}"
        f" (bound {r['bounds']['pg_connections']}), API TCP max {r['api_tcp_max']},"
        f" API fds {r['api_fds']}, Redis clients max {r['redis_clients_max']}"
    )
    print("  OK" if r["ok"] else "  FAILED:\n    " + "\n    ".join(r["violations"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    d = Options()
    parser.add_argument("--duration", type=float, default=d.duration, help="seconds")
    parser.add_argument("--rate", type=float, default=d.rate, help="requests per second")
    parser.add_argument("--accounts", type=int, default=d.accounts)
    parser.add_argument("--sweep-every", type=float, default=d.sweep_every, help="seconds")
    parser.add_argument("--p99-ms", type=float, default=d.p99_ms)
    parser.add_argument("--rss-growth-mb", type=float, default=d.rss_growth_mb)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    o = Options(
        duration=args.duration,
        rate=args.rate,
        accounts=args.accounts,
        sweep_every=args.sweep_every,
        p99_ms=args.p99_ms,
        rss_growth_mb=args.rss_growth_mb,
        json=args.json,
    )
    with (
        tempfile.TemporaryDirectory(prefix="octopost-soak-") as tmp,
        servers(Path(tmp)) as (
            admin_url,
            redis_url,
        ),
    ):
        try:
            result = asyncio.run(soak(o, admin_url, redis_url))
        except SoakError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return 2
    if o.json:
        print(orjson.dumps(result).decode())
    else:
        print_human(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
