"""Disconnect that really revokes: DELETE -> outbox row -> arq job -> the platform sandbox
over real HTTP -> the outcome as an event, with the ciphertext erased. Real PostgreSQL, real
Redis (a private one where the test stops it), real worker processes where one is killed."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from arq import func
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from devkit.embedded import EmbeddedRedis, free_port
from service.api.app import create_app
from service.api.server import AppRunner
from service.cli import build_parser, cmd_accounts_disconnect
from service.core.ids import PLATFORMS
from service.core.jobs import REVOKE_JOB, enqueue_sweep, revoke_job_id
from service.core.repository import sweeps
from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from tests.conftest import Api, with_tokens
from tests.worker.revocation_helpers import (
    Sandbox,
    ciphertext_left,
    drain,
    events,
    octopost,
    relay,
    revocation,
    running_sandbox,
    sandbox_platforms,
    wait_for,
    worker_process,
)
from worker.checks import REFRESH_LOCK
from worker.limits import BUDGET_KEY, PlatformLimits
from worker.revoke import revoke_account_tokens

QUEUE = "arq:queue"
# The token each platform's revoke call presents, given access "<p>-at" and refresh "<p>-rt"
# (PLATFORMS.md: revoke the refresh token where it takes the whole grant with it).
REVOKE_TOKEN = {
    "twitter": "rt",
    "bluesky": "rt",
    "mastodon": "at",
    "linkedin": "at",
    "facebook": "at",
    "tiktok": "at",
    "youtube": "rt",
}
REVOKE_PATH = {
    "twitter": "/twitter/2/oauth2/revoke",
    "bluesky": "/bluesky/xrpc/com.atproto.server.deleteSession",
    "mastodon": "/mastodon/oauth/revoke",
    "linkedin": "/linkedin/oauth/v2/revoke",
    "facebook": "/facebook/v21.0/{user}/permissions",
    "tiktok": "/tiktok/v2/oauth/revoke/",
    "youtube": "/youtube/revoke",
}


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox() as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
async def fresh(sandbox: Sandbox, pool: asyncpg.Pool, redis: ArqRedis) -> None:
    """Empty tables, an empty queue (the session `clean` fixture) and a clean sandbox."""
    await sandbox.reset()


@pytest.fixture
def platforms(sandbox: Sandbox) -> PlatformSettings:
    return sandbox_platforms(sandbox)


@pytest.fixture
def rsettings(settings: Settings) -> Settings:
    """Fast backoff; the relay takes anything pending (grace 0) unless a test says otherwise."""
    return settings.model_copy(
        update={
            "revoke_backoff_base_seconds": 0.05,
            "revoke_backoff_max_seconds": 0.2,
            "revoke_relay_grace_seconds": 0.0,
            "sweep_batch_size": 50,
        }
    )


def account(platform: str, user: str, **extra: Any) -> dict[str, Any]:
    base = {
        "platform": platform,
        "platform_user_id": user,
        "username": f"{user}@mastodon.example" if platform == "mastodon" else user,
        "display_name": user,
    }
    return with_tokens(base, **extra)


async def delete(api: Api, key: str, account_id: str) -> int:
    async with await api.request("DELETE", f"/v1/accounts/{account_id}", key) as r:
        body = await r.read()
        assert r.status in (204, 404), body
        return r.status


async def only_revocation(pool: asyncpg.Pool, account_id: str) -> asyncpg.Record:
    rows = await pool.fetch("SELECT * FROM revocations WHERE account_id = $1", account_id)
    assert len(rows) == 1, rows
    row: asyncpg.Record = rows[0]
    return row


async def revoke_calls(sandbox: Sandbox, token: str) -> list[tuple[str, int]]:
    return [
        (c["path"], c["status"])
        for c in await sandbox.calls(token=token)
        if "revoke" in c["path"] or "deleteSession" in c["path"] or "permissions" in c["path"]
    ]


async def drain_one_job(
    settings: Settings, platforms: PlatformSettings, redis: ArqRedis, revocation_id: str
) -> Any:
    """Enqueue the revoke job by hand (a redelivery) under a fresh id and run it."""
    job = await redis.enqueue_job(REVOKE_JOB, revocation_id, _job_id=f"again:{revocation_id}")
    assert job is not None
    await drain(settings, platforms)
    return await job.result(timeout=5)


# --- the DELETE and the job ----------------------------------------------------------------


async def test_delete_revokes_once_with_the_right_token(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("twitter", "bye", access_token="x-at-bye", refresh_token="x-rt-bye")]
    )
    assert await delete(api, key, account_id) == 204
    rev = await only_revocation(pool, account_id)
    # committed with the tombstone, ciphertext moved, job queued under the derived id
    assert (rev["status"], rev["attempts"], rev["platform"]) == ("pending", 0, "twitter")
    assert rev["sealed"] is not None and rev["key_id"] is not None
    assert await pool.fetchval("SELECT count(*) FROM account_tokens") == 0
    assert await Job(revoke_job_id(rev["id"]), redis).status() is JobStatus.queued

    await drain(rsettings, platforms)

    # X revokes the refresh token (it takes the grant with it); nothing else was called
    assert [(c["path"], c["token"], c["status"]) for c in await sandbox.calls()] == [
        ("/twitter/2/oauth2/revoke", "x-rt-bye", 200)
    ]
    rev = await revocation(pool, rev["id"])
    assert (rev["status"], rev["attempts"], rev["last_error"]) == ("done", 1, None)
    assert rev["sealed"] is None and rev["key_id"] is None and rev["completed_at"] is not None
    assert await ciphertext_left(pool) == 0
    assert await events(pool, account_id) == [
        ("connected", None),
        ("disconnected", "api"),
        ("revoke_done", "revoked"),
    ]
    detail = await pool.fetchval(
        "SELECT detail FROM account_events WHERE account_id = $1 AND kind = 'revoke_done'",
        account_id,
    )
    assert orjson.loads(detail) == {"revocation_id": rev["id"], "attempts": 1}
    # a second run of the same job (a duplicate delivery) changes nothing and calls no one
    assert await drain_one_job(rsettings, platforms, redis, rev["id"]) == "nothing to do"
    assert len(await sandbox.calls()) == 1
    assert len(await events(pool, account_id)) == 3
    assert "revocation finished" in caplog.text  # the worker's logs were captured ...
    assert "x-rt-bye" not in caplog.text and "x-at-bye" not in caplog.text  # ... tokenless


async def test_every_platform_revoke_path(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """For each platform: a live token is revoked, a token the platform already considers
    dead counts as done, and Threads / Instagram Login (no revoke endpoint) are recorded
    as unsupported without a call. Every ciphertext is gone at the end."""
    key = await make_key("acme")
    lines = []
    for platform in PLATFORMS:
        for st in ("valid", "revoked"):
            lines.append(
                account(
                    platform,
                    f"{platform}-{st}",
                    access_token=f"{platform}-{st}-at",
                    refresh_token=f"{platform}-{st}-rt",
                )
            )
            if st == "revoked":
                await sandbox.set(f"{platform}-{st}-at", "revoked")
                await sandbox.set(f"{platform}-{st}-rt", "revoked")
    account_ids = await import_lines("acme", lines)
    by_name = {line["platform_user_id"]: i for line, i in zip(lines, account_ids, strict=True)}
    for account_id in account_ids:
        assert await delete(api, key, account_id) == 204
    await drain(rsettings, platforms)

    seen: dict[tuple[str, str], tuple[str, str, list[tuple[str, int]]]] = {}
    for platform in PLATFORMS:
        for st in ("valid", "revoked"):
            account_id = by_name[f"{platform}-{st}"]
            rev = await only_revocation(pool, account_id)
            kinds = await events(pool, account_id)
            assert kinds[:2] == [("connected", None), ("disconnected", "api")], platform
            assert len(kinds) == 3, (platform, kinds)
            calls = await revoke_calls(sandbox, f"{platform}-{st}-at") + await revoke_calls(
                sandbox, f"{platform}-{st}-rt"
            )
            seen[(platform, st)] = (rev["status"], kinds[2][1] or "", calls)
            assert kinds[2][0] == {
                "done": "revoke_done",
                "unsupported": "revoke_unsupported",
            }.get(rev["status"]), (platform, st, rev["status"], kinds)
            assert rev["sealed"] is None and rev["key_id"] is None

    expected: dict[tuple[str, str], tuple[str, str, list[tuple[str, int]]]] = {}
    for platform in PLATFORMS:
        if platform in ("threads", "instagram"):
            for st in ("valid", "revoked"):
                expected[(platform, st)] = ("unsupported", "unsupported", [])
            continue
        path = REVOKE_PATH[platform].replace("{user}", f"{platform}-valid")
        expected[(platform, "valid")] = ("done", "revoked", [(path, 200)])
        dead_path = REVOKE_PATH[platform].replace("{user}", f"{platform}-revoked")
        # the platform's "already revoked" answer; Mastodon's and LinkedIn's revoke endpoints
        # answer 200 for a dead token too (RFC 7009), which is "revoked"
        idempotent = platform in ("mastodon", "linkedin")
        dead_status = {
            "twitter": 401,
            "bluesky": 400,
            "mastodon": 200,
            "linkedin": 200,
            "facebook": 400,
            "tiktok": 401,
            "youtube": 400,
        }[platform]
        expected[(platform, "revoked")] = (
            "done",
            "revoked" if idempotent else "already_invalid",
            [(dead_path, dead_status)],
        )
    assert seen == expected
    # and each call presented the token that platform's revoke takes
    for platform, which in REVOKE_TOKEN.items():
        assert len(await revoke_calls(sandbox, f"{platform}-valid-{which}")) == 1, platform
    assert await ciphertext_left(pool) == 0
    assert len(await sandbox.calls()) == 14  # revoke calls only, one per supported account


async def test_delete_when_tokens_are_already_gone(
    api: Api, make_key: Any, import_lines: Any, pool: asyncpg.Pool, redis: ArqRedis
) -> None:
    key = await make_key("acme")
    (account_id,) = await import_lines("acme", [account("twitter", "bare")])
    await pool.execute("DELETE FROM account_tokens WHERE account_id = $1", account_id)
    assert await delete(api, key, account_id) == 204
    assert await pool.fetchval("SELECT count(*) FROM revocations") == 0
    assert await redis.zcard(QUEUE) == 0
    assert await events(pool, account_id) == [("connected", None), ("disconnected", "api")]
    assert await delete(api, key, account_id) == 404


# --- Redis down, retries, exhaustion ---------------------------------------------------------


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_redis_down_during_delete_is_204_then_revoked_after_redis_returns(
    private_redis: EmbeddedRedis,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    own = rsettings.model_copy(
        update={"redis_url": private_redis.url, "revoke_relay_grace_seconds": 60.0}
    )
    runner = AppRunner(create_app(own, pool=pool), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        key = await make_key("acme")
        (account_id,) = await import_lines(
            "acme", [account("linkedin", "offline", access_token="li-at-offline")]
        )
        private_redis.stop()
        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as http,
            http.delete(
                f"http://127.0.0.1:{port}/v1/accounts/{account_id}",
                headers={"Authorization": f"Bearer {key}"},
            ) as r,
        ):
            assert r.status == 204, await r.text()
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, elapsed
        rev = await only_revocation(pool, account_id)
        assert (rev["status"], rev["attempts"]) == ("pending", 0)
        assert rev["sealed"] is not None

        private_redis.start()  # same port, empty: the job never reached a queue
        queue = ArqRedis.from_url(private_redis.url)
        try:
            assert await queue.zcard(QUEUE) == 0
            # within the grace period the relay leaves it alone ...
            assert await relay(own, platforms, queue) == {}
            assert await queue.zcard(QUEUE) == 0
            # ... after it, the relay queues it, and a worker revokes it
            late = own.model_copy(update={"revoke_relay_grace_seconds": 0.0})
            assert await relay(late, platforms, queue) == {"queued": 1}
            assert await queue.zcard(QUEUE) == 1
            await drain(late, platforms)
        finally:
            await queue.aclose()
        assert await revoke_calls(sandbox, "li-at-offline") == [("/linkedin/oauth/v2/revoke", 200)]
        rev = await revocation(pool, rev["id"])
        assert (rev["status"], rev["attempts"]) == ("done", 1)
        assert await ciphertext_left(pool) == 0
        assert await events(pool, account_id) == [
            ("connected", None),
            ("disconnected", "api"),
            ("revoke_done", "revoked"),
        ]
    finally:
        await runner.cleanup()


async def test_platform_failing_twice_then_revoked_after_retries(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("tiktok", "flaky", access_token="tt-at-flaky")]
    )
    await sandbox.set("tt-at-flaky", "flaky", fail_times=2)
    assert await delete(api, key, account_id) == 204
    await drain(rsettings, platforms)
    assert await revoke_calls(sandbox, "tt-at-flaky") == [
        ("/tiktok/v2/oauth/revoke/", 500),
        ("/tiktok/v2/oauth/revoke/", 500),
        ("/tiktok/v2/oauth/revoke/", 200),
    ]
    rev = await only_revocation(pool, account_id)
    assert (rev["status"], rev["attempts"], rev["last_error"]) == ("done", 3, None)
    assert await ciphertext_left(pool) == 0
    assert await events(pool, account_id) == [
        ("connected", None),
        ("disconnected", "api"),
        ("revoke_done", "revoked"),
    ]


async def test_attempts_exhausted_is_failed_with_ciphertext_erased_and_an_event(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
    settings: Settings,
) -> None:
    three = rsettings.model_copy(update={"revoke_max_attempts": 3})
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("youtube", "down", access_token="yt-at-down", refresh_token="yt-rt-down")]
    )
    await sandbox.set("yt-rt-down", "error")
    assert await delete(api, key, account_id) == 204
    await drain(three, platforms)
    assert await revoke_calls(sandbox, "yt-rt-down") == [("/youtube/revoke", 500)] * 3
    rev = await only_revocation(pool, account_id)
    assert (rev["status"], rev["attempts"]) == ("failed", 3)
    assert rev["last_error"].startswith("transient: "), rev["last_error"]
    assert rev["sealed"] is None and rev["key_id"] is None and rev["completed_at"] is not None
    assert await ciphertext_left(pool) == 0
    assert await events(pool, account_id) == [
        ("connected", None),
        ("disconnected", "api"),
        ("revoke_failed", "attempts_exhausted"),
    ]
    r = octopost(settings, "revocations")
    assert r.returncode == 0, r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith(rev["id"])]
    assert line.split()[1:5] == [account_id, "youtube", "failed", "3"]
    assert "yt-rt-down" not in r.stdout + r.stderr


async def test_attempts_used_up_by_crashed_runs_fail_without_a_call(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """Runs that died mid-call count their attempt but record nothing; once the count is
    past the limit the next run ends it as failed, with no further call."""
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("linkedin", "crashy", access_token="li-at-crashy")]
    )
    assert await delete(api, key, account_id) == 204
    await pool.execute("UPDATE revocations SET attempts = $1", rsettings.revoke_max_attempts)
    await drain(rsettings, platforms)
    assert await sandbox.calls() == []
    rev = await only_revocation(pool, account_id)
    assert (rev["status"], rev["attempts"]) == ("failed", rsettings.revoke_max_attempts + 1)
    assert await ciphertext_left(pool) == 0
    assert (await events(pool, account_id))[-1] == ("revoke_failed", "attempts_exhausted")


async def test_paused_platform_waits_without_spending_attempts(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """A platform paused by a rate limit (seen by any worker) is not called; the job waits
    the pause out and the revocation is done afterwards with one attempt on the books."""
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("mastodon", "paused", access_token="m-at-paused")]
    )
    await PlatformLimits(redis, concurrency=1, rate_per_second=10).pause("mastodon", 1.0)
    assert await delete(api, key, account_id) == 204
    started = time.time()
    await drain(rsettings, platforms)
    (call,) = await sandbox.calls(token="m-at-paused")
    assert call["at"] >= started + 0.9  # not before the pause ended
    rev = await only_revocation(pool, account_id)
    assert (rev["status"], rev["attempts"]) == ("done", 1)


async def test_relay_requeues_a_job_that_ended_without_an_outcome(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """A job that times out ends in arq with a kept result under the revocation's job id.
    Re-enqueueing under that id is a no-op while the result is kept (an hour when arq gives
    up on tries), so the relay must clear it, or the revocation would sit pending."""
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("linkedin", "timeout", access_token="li-at-timeout")]
    )
    await sandbox.set("li-at-timeout", "slow", delay_ms=1500)
    assert await delete(api, key, account_id) == 204
    rev = await only_revocation(pool, account_id)
    short = [func(revoke_account_tokens, name=REVOKE_JOB, timeout=0.3, keep_result=3600)]
    await drain(rsettings, platforms, functions=short)

    async def answered() -> list[dict[str, Any]]:
        return await sandbox.calls(token="li-at-timeout")

    await wait_for(answered, within=5, what="the timed-out call to be answered")
    job = Job(revoke_job_id(rev["id"]), redis)
    assert await job.status() is JobStatus.complete
    assert (await revocation(pool, rev["id"]))["status"] == "pending"
    # a plain enqueue is blocked by the kept result ...
    assert await redis.enqueue_job(REVOKE_JOB, rev["id"], _job_id=revoke_job_id(rev["id"])) is None
    # ... the relay clears it and queues the job again
    await sandbox.set("li-at-timeout", "valid")
    assert await relay(rsettings, platforms, redis) == {"queued": 1}
    await drain(rsettings, platforms)
    rev = await revocation(pool, rev["id"])
    assert (rev["status"], rev["attempts"]) == ("done", 2)
    assert await ciphertext_left(pool) == 0
    # the relay leaves done revocations, and jobs that are queued or deferred, alone
    assert await relay(rsettings, platforms, redis) == {}


# --- a worker killed mid-call ----------------------------------------------------------------


async def test_worker_killed_after_the_revoke_call_the_retry_is_harmless(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """A real `octopost worker` takes the job and sends the revoke call; the platform takes
    its time (sandbox `slow`) and we SIGKILL the worker while the call is in flight. The
    platform completes the revocation anyway (the sandbox finishes a request whose client
    went away), so the state is "revoked at the platform, not recorded by us": attempts 1,
    still pending, ciphertext still there. A second worker runs the job again once the dead
    worker's in-progress mark lapses: its call meets "already revoked", which counts as
    done, and exactly one outcome event is written.

    What this cannot pin down: the kill lands while the request is in flight, not at the
    instant between reading the answer and writing it; the "already invalid" path that the
    retry takes is the same either way."""
    lease = "2"  # the worker's in-progress mark lasts this long without renewal
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("twitter", "killed", access_token="x-at-k", refresh_token="x-rt-k")]
    )
    await sandbox.set("x-rt-k", "slow", delay_ms=2500)
    assert await delete(api, key, account_id) == 204
    rev = await only_revocation(pool, account_id)
    proc = worker_process(rsettings, sandbox, OCTOPOST_CHECK_LEASE_SECONDS=lease)
    try:

        async def counted() -> bool:
            return bool((await revocation(pool, rev["id"]))["attempts"] == 1)

        await wait_for(counted, within=30, what="the worker to take the job")

        async def on_the_wire() -> bool:  # the sandbox holds it (and answers at 2.5 s)
            async with sandbox.http.get(f"{sandbox.url}/sandbox/calls") as r:
                return "x-rt-k" in (await r.json())["in_flight"]

        await wait_for(on_the_wire, within=30, what="the revoke call to reach the platform")
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # the dead worker's job is still marked as running, and still in the queue
        assert await Job(revoke_job_id(rev["id"]), redis).status() is JobStatus.in_progress
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert "x-rt-k" not in stderr and "x-at-k" not in stderr

    # the platform did revoke (answered after the worker was gone); nothing was recorded
    async def platform_answered() -> list[dict[str, Any]]:
        return await sandbox.calls(token="x-rt-k")

    (first,) = await wait_for(platform_answered, within=10, what="the in-flight call")
    assert (first["path"], first["status"]) == ("/twitter/2/oauth2/revoke", 200)
    assert first["at"] > killed_at
    row = await revocation(pool, rev["id"])
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["sealed"] is not None
    # its mark lapses when the dead worker stops renewing it: the job is queued again as is
    assert await Job(revoke_job_id(rev["id"]), redis).status() in (
        JobStatus.in_progress,
        JobStatus.queued,
    )

    await drain(rsettings.model_copy(update={"check_lease_seconds": float(lease)}), platforms)

    assert await revoke_calls(sandbox, "x-rt-k") == [
        ("/twitter/2/oauth2/revoke", 200),
        ("/twitter/2/oauth2/revoke", 401),
    ]
    row = await revocation(pool, rev["id"])
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 2, None)
    assert await ciphertext_left(pool) == 0
    assert await events(pool, account_id) == [
        ("connected", None),
        ("disconnected", "api"),
        ("revoke_done", "already_invalid"),
    ]


# --- races -----------------------------------------------------------------------------------


async def test_concurrent_deletes_of_one_id_are_one_204_and_one_404(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """Both DELETEs are made to wait on the account's row lock, so both statements are in
    flight at once; released together, one wins and the other finds the tombstone."""
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("mastodon", "twice", access_token="m-at-twice")]
    )
    async with pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)
        first = asyncio.create_task(delete(api, key, account_id))
        second = asyncio.create_task(delete(api, key, account_id))

        async def both_waiting() -> bool:
            n = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%UPDATE accounts%'"
            )
            return bool(n == 2)

        await wait_for(both_waiting, within=10, what="both DELETEs to wait on the row")
        await tx.rollback()
        statuses = sorted(await asyncio.gather(first, second))
    assert statuses == [204, 404]
    await only_revocation(pool, account_id)
    assert await events(pool, account_id) == [("connected", None), ("disconnected", "api")]
    assert await redis.zcard(QUEUE) == 1
    await drain(rsettings, platforms)
    assert await revoke_calls(sandbox, "m-at-twice") == [("/mastodon/oauth/revoke", 200)]


async def run_sweep_in_background(
    settings: Settings, platforms: PlatformSettings, pool: asyncpg.Pool, redis: ArqRedis
) -> asyncio.Task[None]:
    sweep_id = await sweeps.create_sweep(pool, "manual", None, None)
    await enqueue_sweep(redis, sweep_id)
    return asyncio.create_task(drain(settings, platforms))


async def test_delete_during_a_refresh_leaves_no_token_behind(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """The DELETE lands while the refresh call is at the platform. The refreshed pair is not
    stored (the account stays disconnected, no tokens row comes back), and it does not stay
    alive at the platform either: it is revoked like the pair the DELETE moved."""
    key = await make_key("acme")
    soon = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    (account_id,) = await import_lines(
        "acme",
        [
            account(
                "twitter",
                "refreshing",
                access_token="x-at-r",
                refresh_token="x-rt-r",
                token_expires_at=soon,
            )
        ],
    )
    await sandbox.set("x-rt-r", "slow", delay_ms=1000)
    sweeping = await run_sweep_in_background(rsettings, platforms, pool, redis)

    async def refreshing() -> bool:
        return bool(await redis.exists(REFRESH_LOCK.format(account_id)))

    await wait_for(refreshing, within=15, what="the refresh to start")
    assert await delete(api, key, account_id) == 204
    deleted_at = time.time()
    await sweeping
    await drain(rsettings, platforms)

    (refresh,) = [c for c in await sandbox.calls(token="x-rt-r") if c["path"].endswith("/token")]
    assert refresh["status"] == 200 and refresh["at"] > deleted_at  # answered after the DELETE
    assert await pool.fetchval("SELECT count(*) FROM account_tokens") == 0
    row = await pool.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
    assert row["disconnected_at"] is not None
    assert (row["is_active"], row["health_status"]) == (False, "disconnected")
    rows = await pool.fetch(
        "SELECT * FROM revocations WHERE account_id = $1 ORDER BY created_at", account_id
    )
    assert [r["status"] for r in rows] == ["done", "done"]
    assert await ciphertext_left(pool) == 0
    # One revoke call per pair: the DELETE's old pair (its job may run while the refresh is
    # still at the platform, so it meets the old refresh token rotated or not yet rotated)
    # and the pair the refresh obtained after the DELETE, which is live: revoked.
    revoked = {
        c["token"]: c["status"]
        for c in await sandbox.calls(platform="twitter")
        if c["path"].endswith("/revoke")
    }
    assert len(await sandbox.calls(platform="twitter")) == 3  # refresh + two revokes
    assert revoked.pop("x-rt-r") in (200, 401)
    ((new_refresh, status),) = revoked.items()
    assert new_refresh.startswith("x-rt-r~r") and status == 200
    kinds = await events(pool, account_id)
    assert kinds[:2] == [("connected", None), ("disconnected", "api")]
    assert [k for k, _ in kinds[2:]] == ["revoke_done", "revoke_done"]


async def test_delete_during_a_health_check_does_not_resurrect(
    api: Api,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    """The check of an inactive account is at the platform (which now says "valid") when the
    DELETE lands: its outcome must not reactivate, re-health or re-token the account."""
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("mastodon", "checking", access_token="m-at-check", is_active=False)]
    )
    await sandbox.set("m-at-check", "slow", delay_ms=1000)
    sweeping = await run_sweep_in_background(rsettings, platforms, pool, redis)

    async def calling() -> bool:
        # the worker takes a request permit from the shared budget right before the call
        return bool(await redis.keys(BUDGET_KEY.format("mastodon", "*")))

    await wait_for(calling, within=15, what="the check's call to start")
    assert await delete(api, key, account_id) == 204
    deleted_at = time.time()
    await sweeping
    await drain(rsettings, platforms)

    verify = [c for c in await sandbox.calls(token="m-at-check") if "verify" in c["path"]]
    assert verify and verify[0]["status"] == 200 and verify[0]["at"] > deleted_at
    row = await pool.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
    assert row["disconnected_at"] is not None
    assert (row["is_active"], row["health_status"]) == (False, "disconnected")
    assert await pool.fetchval("SELECT count(*) FROM account_tokens") == 0
    assert await events(pool, account_id) == [
        ("connected", None),
        ("disconnected", "api"),
        ("revoke_done", "revoked"),
    ]
    assert await ciphertext_left(pool) == 0
    assert await delete(api, key, account_id) == 404


# --- ops: bulk disconnect and the list ---------------------------------------------------------


async def test_cli_disconnect_by_ids_queues_and_reports(
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    settings: Settings,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    ids_ = await import_lines(
        "acme",
        [
            account("twitter", "c1", access_token="SECRET-c1", refresh_token="SECRET-c1-rt"),
            account("linkedin", "c2", access_token="SECRET-c2"),
            account("threads", "c3", access_token="SECRET-c3"),
        ],
    )
    r = octopost(settings, "accounts", "disconnect", *ids_, "acc_missing", ids_[0])
    assert r.returncode == 1, r.stderr  # one id was not found
    lines = [ln.split("\t") for ln in r.stdout.splitlines()]
    revs = {row["account_id"]: row["id"] for row in await pool.fetch("SELECT * FROM revocations")}
    assert lines == [
        [ids_[0], "twitter", revs[ids_[0]], "revocation queued"],
        [ids_[1], "linkedin", revs[ids_[1]], "revocation queued"],
        [ids_[2], "threads", revs[ids_[2]], "revocation queued"],
    ]
    assert "acc_missing\tnot found" in r.stderr
    assert "disconnected 3: 3 revocations queued" in r.stderr
    assert "SECRET" not in r.stdout + r.stderr
    for account_id in ids_:
        assert (await events(pool, account_id))[-1] == ("disconnected", "ops")
        assert await Job(revoke_job_id(revs[account_id]), redis).status() is JobStatus.queued

    r = octopost(settings, "revocations")
    assert r.returncode == 0, r.stderr
    listed = {ln.split()[0]: ln.split()[3] for ln in r.stdout.splitlines()[1:]}
    assert listed == {rev: "pending" for rev in revs.values()}

    await drain(rsettings, platforms)
    # two revoke jobs run at once: the calls' order is theirs
    assert sorted(c["token"] for c in await sandbox.calls()) == ["SECRET-c1-rt", "SECRET-c2"]
    r = octopost(settings, "revocations")
    assert r.stdout.splitlines()[1:] == []  # nothing pending or failed any more
    assert "no pending or failed revocations" in r.stderr
    r = octopost(settings, "revocations", "--all")
    listed = {ln.split()[0]: ln.split()[3] for ln in r.stdout.splitlines()[1:]}
    assert listed == {
        revs[ids_[0]]: "done",
        revs[ids_[1]]: "done",
        revs[ids_[2]]: "unsupported",
    }
    r = octopost(settings, "revocations", "--status", "unsupported")
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [revs[ids_[2]]]
    assert "SECRET" not in r.stdout + r.stderr


async def test_cli_disconnect_a_workspace_platform(
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    settings: Settings,
) -> None:
    acme = await import_lines(
        "acme",
        [
            account("twitter", "t1"),
            account("twitter", "t2"),
            account("bluesky", "b1"),
        ],
    )
    (other,) = await import_lines("other", [account("twitter", "t1")])
    r = octopost(settings, "accounts", "disconnect", "--workspace", "acme", "--platform", "twitter")
    assert r.returncode == 0, r.stderr
    # (accounts imported together share connected_at: listed in id order)
    assert [ln.split("\t")[:2] for ln in r.stdout.splitlines()] == [
        [i, "twitter"] for i in sorted(acme[:2])
    ]
    live = {
        row["id"]
        for row in await pool.fetch("SELECT id FROM accounts WHERE disconnected_at IS NULL")
    }
    assert live == {acme[2], other}
    assert await redis.zcard(QUEUE) == 2
    # the rest of the workspace
    r = octopost(settings, "accounts", "disconnect", "--workspace", "acme")
    assert r.returncode == 0, r.stderr
    assert [ln.split("\t")[0] for ln in r.stdout.splitlines()] == [acme[2]]
    # usage errors change nothing (the command returns before connecting: run in-process)
    for args in (
        (),
        ("--platform", "twitter"),
        (other, "--workspace", "other"),
        (other, "--platform", "twitter"),
    ):
        parsed = build_parser().parse_args(["accounts", "disconnect", *args])
        assert await cmd_accounts_disconnect(parsed, settings) == 2, args
    r = octopost(settings, "accounts", "disconnect", "--workspace", "nope")
    assert r.returncode == 1 and "no workspace named 'nope'" in r.stderr
    assert await pool.fetchval("SELECT count(*) FROM accounts WHERE disconnected_at IS NULL") == 1


async def test_cli_disconnect_with_redis_unreachable_leaves_them_to_the_relay(
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox: Sandbox,
    settings: Settings,
    rsettings: Settings,
    platforms: PlatformSettings,
) -> None:
    ids_ = await import_lines(
        "acme", [account("mastodon", f"u{n}", access_token=f"m-at-u{n}") for n in range(3)]
    )
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    r = octopost(settings, "accounts", "disconnect", *ids_, env={"REDIS_URL": nowhere})
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 15
    lines = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert [(ln[0], ln[3]) for ln in lines] == [
        (i, "revocation pending: queue unreachable, the relay will queue it") for i in ids_
    ]
    assert r.stderr.count("revocation not queued") == 1  # tried once, not once per account
    assert await redis.zcard(QUEUE) == 0
    assert await relay(rsettings, platforms, redis) == {"queued": 3}
    await drain(rsettings, platforms)
    for n in range(3):
        assert await revoke_calls(sandbox, f"m-at-u{n}") == [("/mastodon/oauth/revoke", 200)]
    assert await ciphertext_left(pool) == 0
