"""Token health end to end: sweep -> arq burst worker -> sandbox over HTTP -> database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from service.core.ids import PLATFORMS
from service.core.jobs import enqueue_sweep
from service.core.repository import sweeps
from service.core.settings import Settings
from service.core.vault import Sealed, Vault
from service.platforms.base import AccountRef, TokenOutcome, TokenSet
from tests.conftest import with_tokens
from tests.worker.conftest import Sandbox, SweepRunner
from worker.checks import refresh_tokens
from worker.runtime import Runtime


def account(platform: str, user: str, **extra: Any) -> dict[str, Any]:
    base = {
        "platform": platform,
        "platform_user_id": user,
        "username": f"{user}@mastodon.example" if platform == "mastodon" else user,
        "display_name": user,
    }
    return with_tokens(base, **extra)


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


async def state(pool: asyncpg.Pool, account_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT is_active, health_status, health_reason, transient_failures, next_check_at, "
        "last_checked_at FROM accounts WHERE id = $1",
        account_id,
    )
    assert row is not None
    return row


async def events(pool: asyncpg.Pool, account_id: str) -> list[tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT kind, reason FROM account_events WHERE account_id = $1 ORDER BY id", account_id
    )
    return [(r["kind"], r["reason"]) for r in rows]


async def test_valid_tokens_stay_active_and_get_healthy(
    sweep: SweepRunner, sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool
) -> None:
    ids = await import_lines(
        "acme",
        [account(p, f"u-{p}") for p in PLATFORMS],
    )
    result = await sweep()
    assert result["status"] == "done"
    assert (result["claimed"], result["checked"], result["healthy"]) == (9, 9, 9)
    for account_id in ids:
        s = await state(pool, account_id)
        assert s["is_active"] is True and s["health_status"] == "healthy", account_id
        assert s["next_check_at"] > datetime.now(UTC) + timedelta(hours=1)


async def test_expired_without_refresh_grant_is_dead_without_a_call(
    sweep: SweepRunner, sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool
) -> None:
    (account_id,) = await import_lines(
        "acme",
        [
            account(
                "mastodon", "old", access_token="tok-old", token_expires_at=iso(-timedelta(hours=1))
            )
        ],
    )
    result = await sweep()
    assert result["deactivated"] == 1
    s = await state(pool, account_id)
    assert (s["is_active"], s["health_status"], s["health_reason"]) == (
        False,
        "expired",
        "token_expired",
    )
    assert await sandbox.calls(token="tok-old") == []
    assert ("deactivated", "token_expired") in await events(pool, account_id)


async def test_revoked_token_is_inactive_with_reason(
    sweep: SweepRunner,
    sandbox: Sandbox,
    import_lines: Any,
    pool: asyncpg.Pool,
    api: Any,
    make_key: Any,
) -> None:
    key = await make_key("acme")
    await sandbox.set("tok-revoked", "revoked")
    (account_id,) = await import_lines(
        "acme", [account("mastodon", "gone", access_token="tok-revoked")]
    )
    await sweep()
    s = await state(pool, account_id)
    assert (s["is_active"], s["health_status"], s["health_reason"]) == (
        False,
        "revoked",
        "token_revoked",
    )
    r = await api.request("GET", f"/v1/accounts/{account_id}", key)
    assert (await r.json())["is_active"] is False
    r = await api.request("GET", f"/v1/accounts/{account_id}/health", key)
    h = await r.json()
    assert (h["status"], h["reason"]) == ("revoked", "token_revoked")
    r = await api.request("GET", "/v1/accounts?status=revoked", key)
    assert [a["id"] for a in (await r.json())["accounts"]] == [account_id]
    r = await api.request("GET", f"/v1/accounts/{account_id}/events", key)
    assert [e["kind"] for e in (await r.json())["events"]] == ["deactivated", "connected"]


async def test_refresh_near_expiry_stores_new_tokens(
    sweep: SweepRunner, sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool, vault: Vault
) -> None:
    (account_id,) = await import_lines(
        "acme",
        [
            account(
                "twitter",
                "soon",
                access_token="x-at-1",
                refresh_token="x-rt-1",
                token_expires_at=iso(timedelta(minutes=5)),
            )
        ],
    )
    result = await sweep()
    assert (result["healthy"], result["refreshed"]) == (1, 1)
    s = await state(pool, account_id)
    assert s["is_active"] is True and s["health_status"] == "healthy"
    row = await pool.fetchrow("SELECT * FROM account_tokens WHERE account_id = $1", account_id)
    access, refresh = vault.open_tokens(account_id, Sealed(row["key_id"], row["sealed"]))
    assert access != "x-at-1" and refresh and refresh != "x-rt-1"
    assert row["generation"] == 2 and row["access_expires_at"] > datetime.now(UTC) + timedelta(
        minutes=30
    )
    assert [c["path"] for c in await sandbox.calls(token="x-rt-1")] == ["/twitter/2/oauth2/token"]
    assert ("refreshed", None) in await events(pool, account_id)


async def test_rotation_race_loser_rereads_and_stays_active(
    sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool, runtime: Runtime
) -> None:
    """Two refreshers read generation 1. The winner rotates the refresh token at the
    platform and stores generation 2; the loser, once it holds the lock, sees generation 2
    and calls nobody (the platform would refuse the spent token), and the account is not
    declared dead."""
    (account_id,) = await import_lines(
        "acme",
        [
            account(
                "tiktok",
                "race",
                access_token="tt-at-1",
                refresh_token="tt-rt-1",
                token_expires_at=iso(timedelta(minutes=5)),
            )
        ],
    )
    adapter = runtime.adapters["tiktok"]
    ref = AccountRef(account_id, "tiktok", "race")
    old = TokenSet("tt-at-1", "tt-rt-1", datetime.now(UTC) + timedelta(minutes=5))
    winner, stored = await refresh_tokens(runtime, adapter, ref, old, generation=1)
    assert winner.outcome is TokenOutcome.valid and stored
    loser, stored = await refresh_tokens(runtime, adapter, ref, old, generation=1)
    assert stored is False
    assert loser.outcome is TokenOutcome.valid and loser.reason == "rotated_elsewhere"
    assert len(await sandbox.calls(platform="tiktok", token="tt-rt-1")) == 1
    # Control: with nothing newer stored, the same refusal is a dead token.
    (other_id,) = await import_lines(
        "acme", [account("tiktok", "race2", access_token="tt-at-2", refresh_token="tt-rt-2")]
    )
    ref2 = AccountRef(other_id, "tiktok", "race2")
    old2 = TokenSet("tt-at-2", "tt-rt-2")
    await adapter.refresh(ref2, old2)  # rotated at the platform, never stored by us
    dead, _ = await refresh_tokens(runtime, adapter, ref2, old2, generation=1)
    assert dead.outcome is TokenOutcome.dead


async def test_concurrent_refreshers_one_calls_the_platform(
    sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool, runtime: Runtime
) -> None:
    (account_id,) = await import_lines(
        "acme", [account("twitter", "lock", access_token="x-at-9", refresh_token="x-rt-9")]
    )
    await sandbox.set("x-rt-9", "slow", delay_ms=300)
    ref = AccountRef(account_id, "twitter", "lock")
    old = TokenSet("x-at-9", "x-rt-9")
    adapter = runtime.adapters["twitter"]
    first, second = await asyncio.gather(
        refresh_tokens(runtime, adapter, ref, old, generation=1),
        refresh_tokens(runtime, adapter, ref, old, generation=1),
    )
    outcomes = sorted([first[0].reason or "", second[0].reason or ""])
    assert "refresh_in_progress" in outcomes
    assert len(await sandbox.calls(token="x-rt-9")) == 1


async def test_platform_outage_deactivates_nobody(
    sweep: SweepRunner, sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool
) -> None:
    lines = []
    for p in PLATFORMS:
        for n, st in enumerate(("error", "slow")):
            token = f"{p}-{st}"
            await sandbox.set(token, st, delay_ms=3000)
            await sandbox.set(f"{token}-rt", st, delay_ms=3000)
            lines.append(account(p, f"{p}-{n}", access_token=token, refresh_token=f"{token}-rt"))
    ids = await import_lines("acme", lines)
    result = await sweep()
    assert result["deactivated"] == 0 and result["checked"] == len(ids)
    assert result["transient"] == len(ids), dict(result)
    for account_id in ids:
        s = await state(pool, account_id)
        assert s["is_active"] is True and s["transient_failures"] == 1, (account_id, dict(s))
        assert s["next_check_at"] > datetime.now(UTC) + timedelta(seconds=30)


async def test_connection_refused_deactivates_nobody(
    worker_settings: Settings,
    pool: asyncpg.Pool,
    redis: Any,
    import_lines: Any,
) -> None:
    from devkit.embedded import free_port
    from service.platforms.config import PlatformSettings
    from worker.assembly import make_worker

    dead_end = PlatformSettings(
        sandbox_url=f"http://127.0.0.1:{free_port()}", request_timeout_seconds=1
    )
    ids = await import_lines(
        "acme", [account(p, f"cr-{p}") for p in ("twitter", "youtube", "bluesky", "facebook")]
    )
    sweep_id = await sweeps.create_sweep(pool, "manual")
    await enqueue_sweep(redis, sweep_id)
    worker = make_worker(
        worker_settings,
        platform_settings=dead_end,
        burst=True,
        handle_signals=False,
        cron_jobs=[],
        poll_delay=0.05,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    for account_id in ids:
        s = await state(pool, account_id)
        assert s["is_active"] is True and s["transient_failures"] == 1


async def test_rate_limit_pauses_the_platform_until_retry_after(
    sweep: SweepRunner,
    sandbox: Sandbox,
    import_lines: Any,
    pool: asyncpg.Pool,
    worker_settings: Settings,
) -> None:
    await sandbox.set("x-limited", "rate_limited", retry_after=120)
    lines = [account("twitter", "limited", access_token="x-limited")]
    lines += [account("twitter", f"later-{i}", access_token=f"x-later-{i}") for i in range(20)]
    lines += [account("mastodon", f"m-{i}") for i in range(5)]
    ids = await import_lines("acme", lines)
    # one account at a time per platform, so the 429 lands before the others are called
    settings = worker_settings.model_copy(update={"platform_concurrency": 1})
    result = await sweep(settings=settings)
    # (only this test's tokens: a slow call of an earlier test may still land after reset)
    tokens = [
        c["token"] for c in await sandbox.calls(platform="twitter") if c["token"].startswith("x-")
    ]
    # nothing on twitter was called after the 429 ...
    assert tokens[-1] == "x-limited", tokens
    before = len(tokens) - 1
    # ... the rest were left for after the reset, and the other platform went on
    assert result["skipped"] == 20 - before and result["transient"] == 1, dict(result)
    assert result["healthy"] == 5 + before
    limited = await state(pool, ids[0])
    assert limited["is_active"] is True
    assert limited["next_check_at"] >= datetime.now(UTC) + timedelta(seconds=100)
    unchecked = await pool.fetch(
        "SELECT next_check_at FROM accounts WHERE platform = 'twitter' AND last_checked_at IS NULL"
    )
    assert len(unchecked) == 20 - before
    assert all(r["next_check_at"] >= datetime.now(UTC) + timedelta(seconds=100) for r in unchecked)
    # a second sweep before the reset checks nothing on twitter
    await sweep(platform="twitter", settings=settings)
    after = [c for c in await sandbox.calls(platform="twitter") if c["token"].startswith("x-")]
    assert len(after) == len(tokens)


async def test_reconnect_reactivates_and_clears_health(
    sweep: SweepRunner, sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool
) -> None:
    await sandbox.set("tok-a", "revoked")
    line = account("mastodon", "phoenix", access_token="tok-a")
    (account_id,) = await import_lines("acme", [line])
    await sweep()
    assert (await state(pool, account_id))["is_active"] is False
    (again,) = await import_lines("acme", [{**line, "access_token": "tok-b"}])
    assert again == account_id
    s = await state(pool, account_id)
    assert (s["is_active"], s["health_status"], s["health_reason"]) == (True, "unchecked", None)
    await sweep()
    s = await state(pool, account_id)
    assert (s["is_active"], s["health_status"]) == (True, "healthy")
    kinds = [k for k, _ in await events(pool, account_id)]
    assert kinds == ["connected", "deactivated", "reconnected"]


async def test_scheduled_sweep_takes_only_due_accounts(
    sweep: SweepRunner, import_lines: Any, pool: asyncpg.Pool, sandbox: Sandbox
) -> None:
    ids = await import_lines("acme", [account("mastodon", f"d-{i}") for i in range(4)])
    await pool.execute(
        "UPDATE accounts SET next_check_at = now() + interval '1 hour' WHERE id = ANY($1::text[])",
        ids[:2],
    )
    result = await sweep(trigger="schedule")
    assert (result["claimed"], result["checked"]) == (2, 2)
    checked = await pool.fetch("SELECT id FROM accounts WHERE last_checked_at IS NOT NULL")
    assert sorted(r["id"] for r in checked) == sorted(ids[2:])


async def test_a_sweep_whose_batch_never_reported_is_closed_later(
    sweep: SweepRunner, import_lines: Any, pool: asyncpg.Pool, runtime: Runtime
) -> None:
    """A check job that timed out leaves its accounts leased to its sweep; once a later
    sweep has taken them over (the lease ran out), the next tick closes the old sweep."""
    ids = await import_lines("acme", [account("mastodon", f"s-{i}") for i in range(3)])
    stuck = await sweeps.create_sweep(pool, "schedule")
    await pool.execute("UPDATE sweeps SET status = 'running', claimed = 3 WHERE id = $1", stuck)
    await pool.execute(
        "UPDATE accounts SET lease_sweep_id = $1, last_sweep_id = $1, "
        "next_check_at = now() - interval '1 second' WHERE id = ANY($2::text[])",
        stuck,
        ids,
    )
    assert await sweeps.finish_idle_sweeps(pool) == []  # its leases are still held
    await sweep(trigger="schedule")  # lease ran out: a new sweep checks them
    from worker.runtime import CTX_KEY
    from worker.sweep import scheduled_sweep

    await scheduled_sweep({CTX_KEY: runtime})
    row = await sweeps.get_sweep(pool, stuck)
    assert row is not None and row["status"] == "done" and row["checked"] == 0
