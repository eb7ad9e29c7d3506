"""Every benchmark script runs end to end at tiny sizes, so the harness cannot rot. These are
not timed: a figure only has to exist and be sane. Each script starts its own processes
(API, sandbox, workers) against a database it creates next to the test database and the
test Redis database (which it flushes, as the tests do anyway)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# wrk where it is installed; elsewhere (CI without it) the Python stand-in keeps the harness
# itself covered. test_missing_wrk_is_explained covers what a real run does without wrk.
LOADGEN = "wrk" if shutil.which("wrk") else "python"


def bench(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def servers(database_url: str, redis_url: str) -> list[str]:
    return [
        "--database-url",
        database_url,
        "--redis-url",
        redis_url,
        "--db-name",
        f"octopost_bench_smoke_{secrets.token_hex(3)}",
        "--quiet-wait",
        "0",
    ]


def cells(output: str, label: str) -> list[str]:
    """The cells of the first text-table row starting with label."""
    for line in output.splitlines():
        if line.startswith(label):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {label!r} in:\n{output}")


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_api_bench_runs(database_url: str, redis_url: str) -> None:
    done = bench(
        "api",
        *servers(database_url, redis_url),
        *("--seconds", "1", "--warmup", "0", "--repeat", "1", "--big", "30"),
        *("--processes", "1", "--connections", "8", "--loadgen", LOADGEN),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ERRORS" not in out, out
    for label in (
        "minimal aiohttp JSON endpoint",
        "minimal endpoint + one asyncpg SELECT",
        "GET /v1/accounts (3 accounts)",
        "GET /v1/accounts?limit=100, paging",
        "GET /v1/accounts/{id}",
        "GET /v1/accounts, unknown key: 401",
    ):
        row = cells(out, label)
        assert row[1] == "1", row  # one API process
        assert number(row[2]) > 0, row  # req/s
        assert 0 < number(row[3]), row  # ÷ framework
    pgbench = cells(out, "pgbench -S")
    assert number(pgbench[2]) > 0, pgbench


def test_credentials_bench_runs(database_url: str, redis_url: str) -> None:
    done = bench(
        "credentials",
        *servers(database_url, redis_url),
        *("--seconds", "1", "--warmup", "0", "--repeat", "1", "--issue-accounts", "5"),
        *("--processes", "1,2", "--connections", "8", "--burst", "20", "--loadgen", LOADGEN),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ERRORS" not in out, out
    ceiling = cells(out, "minimal aiohttp JSON endpoint")
    issued = cells(out, "POST /internal/v1/accounts/{id}/credentials")
    assert number(ceiling[1]) > 0 and number(issued[1]) > 0, out
    for processes in ("1", "2"):
        row = cells(out, f"{processes}  ")
        # every answer 200, one token, one platform refresh call (the figure, not a timing)
        assert row[1:4] == ["20/20", "1", "1"], row


def test_sweep_bench_runs(database_url: str, redis_url: str) -> None:
    done = bench(
        "sweep",
        *servers(database_url, redis_url),
        *("--accounts", "200", "--scale", "50", "--workers", "1,2", "--sweep-repeat", "1"),
        *("--seconds", "1", "--sandbox-connections", "16", "--loadgen", LOADGEN),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert number(cells(out, "sandbox alone")[1]) > 0, out
    for workers in ("1", "2"):
        row = cells(out, f"{workers}  ")
        assert number(row[1]) > 0, row  # checks/s
        assert 0 < number(row[5]) < 1, row  # statements per check: batched, well under one
        assert 0 < number(row[6]) < 1, row  # transactions per check, seen by the server
        assert 20 < number(row[7]) < 500, row  # peak worker RSS, MB
    for size in ("50", "200"):
        row = cells(out, f"{size}  ")
        assert number(row[1]) > 0 and number(row[6]) > 0, row  # list req/s, sweep checks/s


@pytest.mark.skipif(LOADGEN != "wrk", reason="the scale run measures the API with wrk only")
def test_scale_bench_runs(database_url: str, redis_url: str, tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nHand-written analysis stays.\n")
    args = ["--sizes", "150,400", "--sweep-sizes", "400", "--seconds", "1", "--quiet-wait", "0"]
    args += ["--db-name", f"octopost_bench_smoke_{secrets.token_hex(3)}", "--output", str(output)]
    done = bench("scale", *args, env={"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for size in ("150", "400"):
        row = cells(out, f"{size}  ")
        assert number(row[1]) > 0, row  # import accounts/s
        assert 100 < number(row[2].split()[0]) < 10_000, row  # bytes per account
        assert 0 < number(row[5]) < 10_000, row  # list page p99 ms
    for kind in ("manual", "scheduled"):
        row = cells(out, f"400       {kind}")
        assert number(row[2]) > 0, row  # checks/s
        assert 20 < number(row[7]) < 500, row  # peak worker RSS, MB
        assert number(row[9].split()[0]) >= 1, row  # accounts row updates per check
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written analysis stays.\n")
    assert text.count("<!-- bench:scale:begin") == 1 and "accounts_pkey" in text


def test_run_writes_results_between_the_markers(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nHand-written analysis stays.\n")
    args = [
        "--skip-api",
        "--skip-sweep",
        "--skip-credentials",
        "--output",
        str(output),
        *servers(database_url, redis_url),
    ]
    for _ in range(2):  # the second run replaces the first's results, nothing else
        done = bench("run", *args)
        assert done.returncode == 0, done.stderr
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written analysis stays.\n")
    assert text.count("<!-- bench:results:begin") == 1 and text.count("bench:results:end") == 1
    for field in ("| cpu |", "| python |", "| postgresql |", "| redis |", "| load average"):
        assert field in text, text


@pytest.mark.parametrize("module", ["api", "sweep", "credentials"])
def test_missing_wrk_is_explained(module: str, tmp_path: Path) -> None:
    done = bench(module, "--sweep-repeat" if module == "sweep" else "--repeat", "1",
                 env={"PATH": str(tmp_path)})  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "wrk is not installed" in done.stderr
    assert "apt-get install -y wrk" in done.stderr


def test_notice_bench_runs_at_a_tiny_size() -> None:
    # private embedded servers of its own: nothing shared is touched
    result = bench("notices", "--notices", "12", "--rate", "20", "--throughput", "30")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    row = next(line for line in out.splitlines() if line.startswith("| `is_active` false seen"))
    p50, p99 = (float(c.replace(",", "")) for c in row.split("|")[2:5:2])
    assert 0 < p50 <= p99 < 60_000, row
    assert "| TikTok (HMAC-SHA256) |" in out and "| Google RISC (RS256 JWT) |" in out


def test_webhooks_bench_end_to_end() -> None:
    """Its own embedded PostgreSQL, a receiver and a dispatcher process; every figure there."""
    r = bench(
        "webhooks",
        "--endpoints",
        "2",
        "--per-endpoint",
        "10",
        "--changes",
        "20",
        "--repeat",
        "1",
        "--receiver-delay-ms",
        "5",
        "--timeout",
        "2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 2, r.stdout
    for row in rows:
        cols = [c.strip() for c in row.strip("|").split("|")]
        assert cols[2] == "20" and number(cols[3]) > 0, row
    assert "only" not in r.stdout, r.stdout  # every change arrived
