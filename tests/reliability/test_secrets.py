"""No secret at rest in plaintext, none in any log, none in any answer.

One whole run: an API key made with the CLI, accounts on every platform imported with the
CLI, an API process serving them (DEBUG logging), a sweep that checks, refreshes (new
tokens from the platform) and deactivates, disconnects through the API and the CLI, the
revoke jobs. Then a full pg_dump of the database, the API's log, the CLI's stderr and every
log record of the in-process worker are searched for every token and the key, plainly and
hex-encoded (as pg_dump writes bytea).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from devkit.embedded import postgres_bin_dir
from service.core import api_keys, ids
from service.core.settings import Settings
from service.core.vault import Sealed, Vault
from tests.conftest import ROOT
from tests.reliability.conftest import ApiProcess, api_env
from tests.worker.conftest import Sandbox, SweepRunner

FIGURES: Counter[str] = Counter()


def cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = api_env(settings)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def secret(kind: str) -> str:
    # distinctive and long: a hit is never a coincidence
    return f"{kind}{ids.random_string(28)}"


def leaks(text: str, secrets: set[str]) -> list[str]:
    found = []
    for s in secrets:
        if s in text or s.encode().hex() in text:
            found.append(s)
    return found


def pg_dump(database_url: str, out: Path) -> str:
    """A full dump (schema and data, every table) with the embedded PostgreSQL's pg_dump."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    done = subprocess.run(
        [str(postgres_bin_dir() / "pg_dump"), "--no-owner", "--file", str(out), database_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out.read_text()


async def test_no_token_or_key_in_the_dump_the_logs_or_the_answers(
    settings: Settings,
    pool: asyncpg.Pool,
    vault: Vault,
    sandbox: Sandbox,
    sweep: SweepRunner,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: set[str] = set()

    # 1. an API key from the CLI (stdout is where it is shown, once; stderr is the log)
    made = cli(settings, "keys", "create", "--workspace", "secrets")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert api_keys.is_well_formed_key(key)
    secrets.add(key)
    cli_logs = [made.stderr]

    # 2. accounts on every platform, imported with the CLI
    lines = []
    for platform in ids.PLATFORMS:
        for state in ("valid", "refresh", "revoked"):
            access, refresh = secret(f"AT{state}"), secret(f"RT{state}")
            secrets |= {access, refresh}
            line: dict[str, Any] = {
                "platform": platform,
                "platform_user_id": f"{platform}-{state}",
                "username": f"{state}@mastodon.example" if platform == "mastodon" else state,
                "display_name": state,
                "access_token": access,
                "refresh_token": refresh,
            }
            if state == "refresh":  # close to expiry: the sweep refreshes it
                line["token_expires_at"] = iso(timedelta(minutes=5))
            if state == "revoked":
                await sandbox.set(access, "revoked")
            lines.append(line)
    imported = cli(
        settings,
        "accounts",
        "import",
        "--workspace",
        "secrets",
        "-",
        stdin="".join(orjson.dumps(line).decode() + "\n" for line in lines),
    )
    assert imported.returncode == 0, imported.stderr
    account_ids = imported.stdout.split()
    assert len(account_ids) == len(lines)
    cli_logs.append(imported.stderr)

    # 3. the API, logging at DEBUG, answering every read
    api = ApiProcess(api_env(settings, OCTOPOST_LOG_LEVEL="DEBUG"), tmp_path / "api.log")
    api.start()
    answers: list[bytes] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:

            async def read_everything() -> None:
                async with http.get(f"{api.base}/v1/accounts?limit=500") as r:
                    assert r.status == 200
                    answers.append(await r.read())
                for account_id in account_ids:
                    for suffix in ("", "/health", "/events"):
                        async with http.get(f"{api.base}/v1/accounts/{account_id}{suffix}") as r:
                            answers.append(await r.read())

            await read_everything()
            # 4. a sweep: checks, refreshes (fresh tokens from the platform), deactivations
            result = await sweep()
            assert result["refreshed"] > 0 and result["deactivated"] > 0, dict(result)
            await read_everything()
            # 5. disconnects: through the API, and through the CLI
            through_api = account_ids[: len(account_ids) // 2]
            for account_id in through_api:
                async with http.delete(f"{api.base}/v1/accounts/{account_id}") as r:
                    assert r.status == 204, await r.text()
            done = cli(settings, "accounts", "disconnect", *account_ids[len(through_api) :])
            assert done.returncode == 0, done.stderr
            cli_logs.append(done.stderr)
            # the refreshed tokens are secrets too: read them before they are revoked
            rows = await pool.fetch("SELECT account_id, key_id, sealed FROM revocations")
            for r in rows:
                current, current_refresh = vault.open_tokens(
                    r["account_id"], Sealed(r["key_id"], r["sealed"])
                )
                secrets.add(current)
                if current_refresh:
                    secrets.add(current_refresh)
            # 6. the revoke jobs
            await sweep()
            await read_everything()
    finally:
        api.stop()
    assert len(secrets) > 2 * len(lines) + 1  # the refreshed ones were found and added
    revoked = await pool.fetchval("SELECT count(*) FROM revocations WHERE sealed IS NULL")
    assert revoked == len(account_ids)  # every revocation finished and its ciphertext is gone

    # the whole database, as a backup would have it
    dump = pg_dump(settings.database_url, tmp_path / "dump.sql")
    assert "COPY public.accounts" in dump and "COPY public.account_tokens" in dump
    assert all(account_id in dump for account_id in account_ids)
    assert not leaks(dump, secrets), "plaintext secret in pg_dump"
    # every log of the run
    api_log = api.logs()
    assert "GET" in api_log or "serving on" in api_log
    assert not leaks(api_log, secrets), "secret in the API's log"
    assert not leaks("\n".join(cli_logs), secrets), "secret in the CLI's log"
    worker_log = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    assert len(caplog.records) > 0
    assert not leaks(worker_log, secrets), "secret in the worker's log"
    assert not leaks(b"".join(answers).decode(), secrets), "secret in an API answer"
    FIGURES["secrets searched for"] = len(secrets)
    FIGURES["dump bytes"] = len(dump)
    FIGURES["log lines searched"] = (
        api_log.count("\n") + sum(s.count("\n") for s in cli_logs) + len(caplog.records)
    )
    print(f"\nsecret figures: {dict(FIGURES)}")
