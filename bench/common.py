"""What every benchmark shares: a dedicated database, real processes, the machine's description,
and the table printer.

Servers come from ``DATABASE_URL`` (any database on the server: the harness creates and drops
a database of its own next to it, ``octopost_bench`` by default) and ``REDIS_URL`` (a database
number the harness may FLUSH, db 15 by default). Without them the system servers on
127.0.0.1 are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import asyncpg
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
HOST = "127.0.0.1"


class BenchError(Exception):
    """A benchmark cannot run (a tool is missing, a server is down); the message says why."""


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def octopost_command() -> list[str]:
    """The installed ``octopost`` entry point of this virtualenv (or ``python -m``)."""
    script = BIN / "octopost"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


# --- the dedicated database ------------------------------------------------------------------


@dataclass
class BenchDatabase:
    """A database of the harness's own on the server that ``admin_url`` points at."""

    admin_url: str
    name: str = "octopost_bench"

    @property
    def url(self) -> str:
        return str(URL(self.admin_url).with_path(f"/{self.name}"))

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self) -> None:
        await self.drop()
        await self._admin(f'CREATE DATABASE "{self.name}"')

    async def drop(self) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def bench_database(admin_url: str, name: str) -> AsyncIterator[BenchDatabase]:
    from service.core.db import migrate

    db = BenchDatabase(admin_url, name)
    try:
        await db.create()
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create database {name!r} via {admin_url}: {exc}") from exc
    try:
        await migrate(db.url)
        yield db
    finally:
        await db.drop()


async def flush_redis(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        await client.flushdb()
    except OSError as exc:
        raise BenchError(f"cannot reach Redis at {url}: {exc}") from exc
    finally:
        await client.aclose()


# --- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process in its own process group, its output kept in a temporary file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (a multi-process server forwards it anyway), then KILL."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        # children of a forking server may outlive the parent by a moment
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, 0)
            time.sleep(0.2)
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.log.close()


def start(name: str, argv: Sequence[str], env: dict[str, str]) -> Proc:
    log = tempfile.TemporaryFile()  # closed by Proc.stop
    popen = subprocess.Popen(  # noqa: S603 - our own commands
        list(argv),
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Proc(name, popen, log)


@contextlib.contextmanager
def running(name: str, argv: Sequence[str], env: dict[str, str]) -> Iterator[Proc]:
    proc = start(name, argv, env)
    try:
        yield proc
    finally:
        proc.stop()


def wait_for_port(proc: Proc, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.closing(socket.socket()) as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"{proc.name} did not listen on port {port} within {timeout:.0f}s")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM): the kernel tracks it, nothing is sampled."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:  # pragma: no cover - every Linux kernel reports it
        raise BenchError(f"no VmHWM for pid {pid}")
    return int(match.group(1)) / 1024


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Quiet:
    """Waits, before each timed run, until the machine is nearly idle: on a machine shared
    with other work a run that starts during someone's burst measures the burst."""

    busy_below: float = 0.15  # share of all cores
    max_wait: float = 60.0
    waited: float = 0.0
    gave_up: int = 0

    def wait(self) -> None:
        if self.max_wait <= 0:
            return
        started = time.monotonic()
        while True:
            before = cpu_ticks()
            time.sleep(0.5)
            busy, total = (b - a for a, b in zip(before, cpu_ticks(), strict=True))
            if not total or busy / total < self.busy_below:
                break
            if time.monotonic() - started > self.max_wait:
                self.gave_up += 1
                break
        self.waited += time.monotonic() - started

    def note(self) -> str:
        if self.max_wait <= 0:
            return "The runs did not wait for a quiet machine (--quiet-wait 0)."
        text = (
            f"Before each timed run the harness waited for the cores to be under "
            f"{100 * self.busy_below:.0f} % busy ({self.waited:.0f} s in all)"
        )
        if self.gave_up:
            text += f"; {self.gave_up} run(s) started busier after {self.max_wait:.0f} s"
        return text + "."


QUIET = Quiet()


# --- the machine -----------------------------------------------------------------------------


def _first(pattern: str, text: str, default: str = "?") -> str:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1).strip() if match else default


def _tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except OSError:
        return "not installed"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _read(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else ""


async def machine_info(database_url: str, redis_url: str) -> dict[str, str]:
    from redis.asyncio import Redis

    cpuinfo, meminfo, os_release = (
        _read(p) for p in ("/proc/cpuinfo", "/proc/meminfo", "/etc/os-release")
    )
    mem_kb = int(_first(r"^MemTotal:\s+(\d+)", meminfo, "0"))
    cpu_model = _first(r"^model name\s*:(.*)$", cpuinfo)
    distro = _first(r'^PRETTY_NAME="?([^"\n]*)', os_release)
    conn = await asyncpg.connect(database_url)
    try:
        pg_version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        redis_version = (await redis.info("server")).get("redis_version", "?")
    finally:
        await redis.aclose()
    from bench.loadgen import find_pgbench

    pgbench = find_pgbench()
    packages = ("aiohttp", "asyncpg", "arq", "uvloop", "orjson", "pydantic", "redis")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model} ({cores()} cores usable)",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{distro}, kernel {platform.release()}",
        "python": platform.python_version(),
        "packages": ", ".join(f"{p} {_version(p)}" for p in packages),
        "postgresql": str(pg_version),
        "redis": str(redis_version),
        "wrk": _tool_version(["wrk", "--version"]).split(" [")[0]
        if shutil.which("wrk")
        else "not installed",
        "pgbench": _tool_version([pgbench, "--version"]) if pgbench else "not installed",
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


# --- output ----------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        widths = [
            max(len(self.columns[i]), *(len(r[i]) for r in self.rows)) if self.rows else 0
            for i in range(len(self.columns))
        ]
        widths = [max(w, len(c)) for w, c in zip(widths, self.columns, strict=True)]
        out = [self.title, "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows]
        out += [f"  * {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def ratio(value: float, ceiling: float) -> str:
    if not ceiling or value != value or ceiling != ceiling:
        return "-"
    return f"{value / ceiling:.2f}"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
