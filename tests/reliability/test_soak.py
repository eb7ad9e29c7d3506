"""A short smoke run of the soak (`python -m bench.soak`): the documented command works end to
end against the suite's servers and its bounds hold for a few seconds. The real soak is the
same command with its defaults (minutes at 200 requests/s)."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from service.core.settings import Settings
from tests.conftest import ROOT

DURATION = 8
RATE = 50
SMOKE_ARGS = ["--duration", str(DURATION), "--rate", str(RATE), "--accounts", "300"]
# No latency bound here (a test is not a benchmark, and the machine may be busy): the
# smoke run checks that every request is answered as expected, not how fast.
SMOKE_ARGS += ["--sweep-every", "3", "--p99-ms", "60000"]


def test_soak_smoke_run(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOPOST_")}
    env |= {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--json", *SMOKE_ARGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 0: bounds held, 1: a bound broke (the JSON says which), else the soak could not run
    output = done.stdout.strip().splitlines()
    assert done.returncode in (0, 1) and output, done.stderr[-3000:]
    result = orjson.loads(output[-1])
    assert result["ok"], (result["violations"], done.stderr[-2000:])
    assert result["errors"] == 0
    assert set(result["statuses"]) <= {"200", "204"}
    assert result["requests"] >= 0.9 * DURATION * RATE
    assert result["statuses"].get("204", 0) > 0  # disconnects happened during the run
    assert result["sweeps"]["done"] >= 1 and result["sweeps"]["checked"] >= 300
    assert len(result["samples"]) >= 3
    print(
        f"\nsoak smoke: {result['requests']} requests, p50 {result['p50_ms']} ms,"
        f" p99 {result['p99_ms']} ms, {result['sweeps']['checked']} checks,"
        f" API RSS {result['api_rss_mb']}, PostgreSQL connections max"
        f" {result['pg_connections_max']}"
    )
