"""Sweep rate: accounts checked per second by one and by several `octopost worker` processes.

Everything runs as it does in production, each in its own process: the platform sandbox
(``octopost sandbox --latency-ms 50``: every platform answers after 50 ms), the workers
(``octopost worker``), and the sweep (``octopost sweep --wait``). The accounts are imported
with ``octopost accounts import`` from a generated JSON-lines file, spread evenly over the nine
platforms. The rate is the sweep's own record: accounts checked / (finished_at - started_at),
claiming included.

Servers: ``DATABASE_URL`` names a server (the script creates and drops a database of its own
on it) and ``REDIS_URL`` a Redis database it FLUSHES (db 11 by default). Defaults: the system
PostgreSQL and Redis on 127.0.0.1.

    .venv/bin/python -m bench.sweep_rate [--accounts 20000] [--workers 1,2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
import orjson
import psutil
from yarl import URL

from service.core.ids import PLATFORMS

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = {
    "OCTOPOST_TWITTER_CLIENT_ID": "bench",
    "OCTOPOST_TWITTER_CLIENT_SECRET": "bench",
    "OCTOPOST_LINKEDIN_CLIENT_ID": "bench",
    "OCTOPOST_LINKEDIN_CLIENT_SECRET": "bench",
    "OCTOPOST_FACEBOOK_APP_ID": "bench",
    "OCTOPOST_FACEBOOK_APP_SECRET": "bench",
    "OCTOPOST_TIKTOK_CLIENT_KEY": "bench",
    "OCTOPOST_TIKTOK_CLIENT_SECRET": "bench",
    "OCTOPOST_YOUTUBE_CLIENT_ID": "bench",
    "OCTOPOST_YOUTUBE_CLIENT_SECRET": "bench",
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def octopost(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def alive(self) -> None:
        if self.popen.poll() is not None:
            sys.exit(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.popen.pid).cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(40)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


@contextlib.contextmanager
def running(name: str, argv: Sequence[str], env: dict[str, str]) -> Iterator[Proc]:
    log = tempfile.TemporaryFile()
    popen = subprocess.Popen(  # noqa: S603 - our own command
        list(argv), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    proc = Proc(name, popen, log)
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(proc: Proc, ready: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ready not in proc.output():
        proc.alive()
        if time.monotonic() > deadline:
            sys.exit(f"{proc.name} not ready after {timeout:.0f}s:\n{proc.output()[-3000:]}")
        time.sleep(0.05)


def run(argv: Sequence[str], env: dict[str, str], stdin: IO[bytes] | None = None) -> str:
    done = subprocess.run(  # noqa: S603 - our own command
        list(argv), cwd=ROOT, env=env, stdin=stdin, capture_output=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[2:])} failed:\n{done.stderr.decode()[-3000:]}")
    return done.stdout.decode()


def account_lines(n: int) -> Iterator[bytes]:
    for i in range(n):
        platform = PLATFORMS[i % len(PLATFORMS)]
        user = f"bench-{i}"
        yield (
            orjson.dumps(
                {
                    "platform": platform,
                    "platform_user_id": user,
                    "username": f"{user}@mastodon.example" if platform == "mastodon" else user,
                    "display_name": user,
                    "access_token": f"tok-{i}-{secrets.token_hex(8)}",
                }
            )
            + b"\n"
        )


async def admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def sweep_row(url: str, sweep_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(url)
    try:
        row: asyncpg.Record = await conn.fetchrow("SELECT * FROM sweeps WHERE id = $1", sweep_id)
        return row
    finally:
        await conn.close()


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def postgres_cpu(db_name: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving this benchmark's database."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if db_name in " ".join(proc.info["cmdline"] or ()):
                t = proc.cpu_times()
                found[proc.pid] = float(t.user + t.system)
        except psutil.Error:
            continue
    return found


@dataclass
class Result:
    workers: int
    accounts: int
    seconds: float
    worker_cpu: float  # seconds, all workers together
    sandbox_cpu: float
    postgres_cpu: float
    load: float  # 1-minute load average at the end

    @property
    def rate(self) -> float:
        return self.accounts / self.seconds


def measure(
    n_workers: int, env: dict[str, str], database_url: str, db_name: str, sandbox: Proc
) -> Result:
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(running(f"worker {i + 1}", octopost("worker"), env))
            for i in range(n_workers)
        ]
        for w in workers:
            wait_until(w, "worker ready")
        cpu0 = [w.cpu_seconds() for w in workers]
        sandbox0 = sandbox.cpu_seconds()
        pg0 = postgres_cpu(db_name)
        out = run(octopost("sweep", "--wait", "--timeout", "1200"), env)
        cpu = sum(w.cpu_seconds() - c for w, c in zip(workers, cpu0, strict=True))
        sandbox_cpu = sandbox.cpu_seconds() - sandbox0
        # backends that came and went during the sweep are missed: the workers' pools hold
        # theirs for the whole run
        pg_cpu = sum(t - pg0.get(pid, 0.0) for pid, t in postgres_cpu(db_name).items())
        load = os.getloadavg()[0]
    summary = out.strip().splitlines()[-1]
    sweep_id = int(summary.split()[1])
    row = asyncio.run(sweep_row(database_url, sweep_id))
    if row["checked"] != row["claimed"] or row["healthy"] != row["checked"]:
        sys.exit(f"the sweep did not check every account healthy: {summary}")
    seconds = (row["finished_at"] - row["started_at"]).total_seconds()
    say(f"  {n_workers} worker(s): {summary} in {seconds:.2f}s")
    return Result(n_workers, int(row["checked"]), seconds, cpu, sandbox_cpu, pg_cpu, load)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2", help="worker process counts to measure")
    parser.add_argument("--repeat", type=int, default=2, help="sweeps per worker count")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra worker setting, e.g. --set OCTOPOST_WORKER_MAX_JOBS=4 (repeatable)",
    )
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]

    admin_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11")
    db_name = f"octopost_bench_sweep_{secrets.token_hex(3)}"
    database_url = str(URL(admin_url).with_path(f"/{db_name}"))
    sandbox_port = free_port()
    from service.core.vault import new_key

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OCTOPOST_")},
        **CREDENTIALS,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OCTOPOST_ENV": "test",
        "OCTOPOST_TOKEN_KEYS": f"bench:{new_key()}",
        "OCTOPOST_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "OCTOPOST_SWEEP_INTERVAL_MINUTES": "0",
        "OCTOPOST_LOG_LEVEL": "INFO",
        **dict(item.split("=", 1) for item in args.set),
    }
    asyncio.run(admin(admin_url, f'CREATE DATABASE "{db_name}"'))
    results: list[Result] = []
    try:
        flush_redis(redis_url)
        run(octopost("migrate"), env)
        with tempfile.TemporaryFile() as jsonl:
            jsonl.writelines(account_lines(args.accounts))
            jsonl.seek(0)
            started = time.perf_counter()
            run(octopost("accounts", "import", "--workspace", "bench", "-"), env, stdin=jsonl)
            say(f"imported {args.accounts} accounts in {time.perf_counter() - started:.1f}s")
        sandbox_argv = octopost(
            "sandbox", "--port", str(sandbox_port), "--latency-ms", f"{args.latency_ms:g}"
        )
        with running("sandbox", sandbox_argv, env) as sandbox:
            wait_until(sandbox, "platform sandbox on")
            for n in counts:
                for _ in range(args.repeat):
                    results.append(measure(n, env, database_url, db_name, sandbox))
    finally:
        flush_redis(redis_url)
        asyncio.run(admin(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))

    print(
        f"\nsweep rate: {args.accounts} accounts over {len(PLATFORMS)} platforms, sandbox "
        f"latency {args.latency_ms:g} ms, {os.cpu_count()} cores; settings "
        f"{' '.join(args.set) or 'default'} (default: batch 250, 8 jobs and 128 requests per "
        "platform in flight per worker)\n"
    )
    print(
        f"{'workers':>7} {'seconds':>8} {'checks/s':>9} {'per worker':>10} "
        f"{'CPU ms/check: worker':>20} {'sandbox':>7} {'postgres':>8} "
        f"{'worker CPU %':>12} {'load':>5}"
    )
    for r in results:
        per_check = [1000 * c / r.accounts for c in (r.worker_cpu, r.sandbox_cpu, r.postgres_cpu)]
        print(
            f"{r.workers:>7} {r.seconds:>8.2f} {r.rate:>9,.0f} {r.rate / r.workers:>10,.0f} "
            f"{per_check[0]:>20.3f} {per_check[1]:>7.3f} {per_check[2]:>8.3f} "
            f"{100 * r.worker_cpu / r.seconds / r.workers:>12.0f} {r.load:>5.1f}"
        )
    print(
        "\nworker CPU % is per worker process (100 = one core); load is the 1-minute load "
        f"average at the end of the sweep (the machine has {os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
