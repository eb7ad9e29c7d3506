"""The internal API as ops run it: two `octopost api --internal-port` processes against one
PostgreSQL, one Redis and the platform sandbox. One refresh however many processes ask, and
no token anywhere but in the credentials answer: not in a log line, not in an error body,
not in a pg_dump beyond its ciphertext."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from service.core import ids
from service.core.settings import Settings
from service.core.vault import Sealed, Vault
from tests.api.internal_helpers import ApiWithInternal, api_process_env
from tests.conftest import ROOT
from tests.reliability.test_secrets import leaks, pg_dump
from tests.worker.conftest import Sandbox
from tests.worker.test_internal_credentials import REFRESH_PATHS, line


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def secret(kind: str) -> str:
    return f"{kind}{ids.random_string(28)}"


def process_env(settings: Settings, sandbox: Sandbox) -> dict[str, str]:
    return api_process_env(
        settings,
        OCTOPOST_SANDBOX_URL=sandbox.url,
    )


async def test_two_processes_one_refresh_and_no_token_outside_the_answer(
    settings: Settings,
    pool: asyncpg.Pool,
    vault: Vault,
    sandbox: Sandbox,
    import_lines: Any,
    tmp_path: Path,
) -> None:
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.cli", "service-keys", "create", "--name", "publisher",
         "--scope", "credentials"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env=process_env(settings, sandbox),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    secrets = {key}
    lines = {
        "near": line(
            "youtube",
            "UC-near",
            access_token=secret("ATnear"),
            refresh_token=secret("RTnear"),
            token_expires_at=iso(timedelta(minutes=2)),
        ),
        "fresh": line(
            "twitter",
            "tw-fresh",
            access_token=secret("ATfresh"),
            refresh_token=secret("RTfresh"),
            token_expires_at=iso(timedelta(hours=2)),
        ),
        "dead": line(
            "youtube",
            "UC-dead",
            access_token=secret("ATdead"),
            refresh_token=secret("RTdead"),
            token_expires_at=iso(timedelta(minutes=2)),
        ),
    }
    for item in lines.values():
        secrets |= {item["access_token"], item["refresh_token"]}
    account_ids = dict(zip(lines, await import_lines("acme", list(lines.values())), strict=True))
    # the refresh takes a second at the platform: every request below arrives while it runs
    await sandbox.set(lines["near"]["refresh_token"], "slow", delay_ms=1000)
    await sandbox.set(lines["dead"]["refresh_token"], "revoked")

    env = process_env(settings, sandbox)
    apis = [ApiWithInternal(env, tmp_path / f"api-{n}.log") for n in range(2)]
    await asyncio.gather(*(a.start() for a in apis))
    answers: list[str] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:

            async def credentials(api: ApiWithInternal, account: str) -> tuple[int, Any]:
                url = f"{api.internal}/internal/v1/accounts/{account_ids[account]}/credentials"
                async with http.post(url) as r:
                    text = await r.text()
                    answers.append(text)
                    return r.status, await r.json()

            got = await asyncio.gather(*(credentials(apis[n % 2], "near") for n in range(50)))
            assert {status for status, _ in got} == {200}, got[:3]
            tokens = {body["access_token"] for _, body in got}
            assert len(tokens) == 1
            (served,) = tokens
            assert served != lines["near"]["access_token"]
            calls = [
                c
                for c in await sandbox.calls(platform="youtube")
                if c["path"] == REFRESH_PATHS["youtube"]
            ]
            assert len(calls) == 1, calls
            row = await pool.fetchrow(
                "SELECT key_id, sealed, generation FROM account_tokens WHERE account_id = $1",
                account_ids["near"],
            )
            assert row["generation"] == 2
            assert (
                vault.open_tokens(account_ids["near"], Sealed(row["key_id"], row["sealed"]))[0]
                == served
            )
            secrets.add(served)
            issued = await pool.fetchval(
                "SELECT count(*) FROM account_events WHERE account_id = $1 "
                "AND kind = 'credentials_issued'",
                account_ids["near"],
            )
            assert issued == 50

            status, body = await credentials(apis[0], "fresh")
            assert status == 200 and body["access_token"] == lines["fresh"]["access_token"]
            status, body = await credentials(apis[1], "dead")
            assert status == 409 and body["error"]["type"] == "account_inactive", body
            # the error answers name no token
            errors = [a for a in answers if '"error"' in a]
            assert errors and not leaks("\n".join(errors), secrets)
            async with http.post(
                f"{apis[1].internal}/internal/v1/accounts/{account_ids['fresh']}/usage",
                json={"result": "auth_failed", "platform_status": 401, "platform_error": "nope"},
            ) as r:
                assert r.status == 202, await r.text()
    finally:
        codes = await asyncio.gather(*(a.stop() for a in apis))
    logs = "\n".join(a.logs() for a in apis)
    assert codes == [0, 0], logs[-3000:]
    assert "credentials issued" in logs and "Traceback" not in logs
    assert not leaks(logs, secrets), "a token in the API's log"
    # the whole database, as a backup would have it: ciphertext only
    dump = pg_dump(settings.database_url, tmp_path / "dump.sql")
    assert "COPY public.account_tokens" in dump and "COPY public.service_keys" in dump
    assert account_ids["near"] in dump and "credentials_issued" in dump
    assert not leaks(dump, secrets), "a plaintext token or key in pg_dump"
