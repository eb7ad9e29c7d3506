"""POST /internal/v1/accounts/{id}/usage: last_used_at that tells the truth, and a failed
publish that gets the account checked by a real worker at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from tests.conftest import Api, stop_in_loop_worker
from tests.worker.conftest import Sandbox
from tests.worker.test_internal_credentials import line
from worker.assembly import make_worker
from worker.runtime import CTX_KEY

USAGE = "/internal/v1/accounts/{}/usage"


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def publisher(make_service_key: Any) -> str:
    key: str = await make_service_key("publisher", ("credentials",))
    return key


@pytest.fixture
async def worker(
    worker_settings: Settings, platform_settings: PlatformSettings, redis: ArqRedis
) -> AsyncIterator[Worker]:
    """A long-running worker in this event loop (no cron), as `octopost worker` runs."""
    w = make_worker(
        worker_settings,
        platform_settings=platform_settings,
        handle_signals=False,
        cron_jobs=[],
        poll_delay=0.05,
    )
    task = asyncio.create_task(w.async_run())
    deadline = time.monotonic() + 30
    while CTX_KEY not in w.ctx:
        assert not task.done(), task
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    try:
        yield w
    finally:
        await stop_in_loop_worker(w, task)


async def report(internal: Api, key: str, account_id: str, body: Any) -> tuple[int, Any]:
    r = await internal.request("POST", USAGE.format(account_id), key, json=body)
    return r.status, await r.json()


async def test_published_moves_last_used_at_forward_only(
    internal: Api, api: Api, publisher: str, seeded: str
) -> None:
    # the seed says acc_abc123 was last used 2026-04-03T12:05:00Z
    status, body = await report(
        internal, publisher, "acc_abc123", {"result": "published", "at": "2026-04-05T08:00:00Z"}
    )
    assert status == 202, body
    assert body["last_used_at"] == "2026-04-05T08:00:00Z"
    r = await api.request("GET", "/v1/accounts/acc_abc123", seeded)
    assert (await r.json())["last_used_at"] == "2026-04-05T08:00:00Z"
    # an older report (a retry arriving late) never moves it back
    status, body = await report(
        internal, publisher, "acc_abc123", {"result": "published", "at": "2026-04-04T00:00:00Z"}
    )
    assert status == 202 and body["last_used_at"] == "2026-04-05T08:00:00Z"
    r = await api.request("GET", "/v1/accounts/acc_abc123", seeded)
    assert (await r.json())["last_used_at"] == "2026-04-05T08:00:00Z"
    # without `at`: now
    before = datetime.now(UTC).replace(microsecond=0)
    status, body = await report(internal, publisher, "acc_abc123", {"result": "published"})
    assert status == 202
    assert datetime.fromisoformat(body["last_used_at"]) >= before
    # a little clock skew is fine, more than 5 minutes ahead is a mistake
    soon = iso(datetime.now(UTC) + timedelta(minutes=4))
    status, body = await report(
        internal, publisher, "acc_abc123", {"result": "published", "at": soon}
    )
    assert status == 202 and body["last_used_at"] == soon
    later = iso(datetime.now(UTC) + timedelta(minutes=6))
    status, body = await report(
        internal, publisher, "acc_abc123", {"result": "published", "at": later}
    )
    assert status == 400
    assert body == {
        "error": {
            "type": "invalid_request",
            "message": "field 'at': more than 5 minutes in the future",
        }
    }
    r = await api.request("GET", "/v1/accounts/acc_abc123", seeded)
    assert (await r.json())["last_used_at"] == soon


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "result"),
        ({"result": "posted"}, "result"),
        ({"result": "published", "at": "yesterday"}, "at"),
        ({"result": "published", "at": "2026-04-05T08:00:00"}, "at"),  # no timezone
        ({"result": "auth_failed", "platform_status": "401"}, "platform_status"),
        ({"result": "auth_failed", "platform_status": 9000}, "platform_status"),
        ({"result": "failed", "platform_error": 5}, "platform_error"),
        ({"result": "failed", "platform_error": "x" * 1001}, "platform_error"),
        ({"result": "failed", "extra": 1}, "extra"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(
    internal: Api, publisher: str, seeded: str, body: Any, field: str
) -> None:
    status, answer = await report(internal, publisher, "acc_abc123", body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request"
    assert answer["error"]["message"].startswith(f"field '{field}': "), answer


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"published"', b"null"])
async def test_a_body_that_is_not_a_json_object_is_400(
    internal: Api, publisher: str, seeded: str, raw: bytes
) -> None:
    r = await internal.request("POST", USAGE.format("acc_abc123"), publisher, data=raw)
    assert r.status == 400
    assert await r.json() == {
        "error": {"type": "invalid_request", "message": "request body must be a JSON object"}
    }


async def test_usage_for_unknown_or_disconnected_accounts_is_404(
    internal: Api, api: Api, publisher: str, seeded: str
) -> None:
    await api.request("DELETE", "/v1/accounts/acc_def456", seeded)
    for account_id in ("acc_def456", "acc_nope"):
        for result in ("published", "auth_failed", "failed"):
            status, body = await report(internal, publisher, account_id, {"result": result})
            assert status == 404, body
            assert body["error"]["type"] == "not_found"


async def test_a_failed_report_changes_nothing(
    internal: Api, publisher: str, seeded: str, pool: asyncpg.Pool, redis: ArqRedis
) -> None:
    before = await pool.fetchrow("SELECT * FROM accounts WHERE id = 'acc_abc123'")
    status, body = await report(
        internal, publisher, "acc_abc123", {"result": "failed", "platform_status": 500}
    )
    assert status == 202 and body["check_queued"] is None
    assert await pool.fetchrow("SELECT * FROM accounts WHERE id = 'acc_abc123'") == before
    assert await redis.queued_jobs() == []


async def wait_for_sweep(pool: asyncpg.Pool, account_id: str, within: float) -> asyncpg.Record:
    deadline = time.monotonic() + within
    while True:
        row = await pool.fetchrow(
            "SELECT * FROM sweeps WHERE trigger = 'report' AND account_id = $1 AND status = 'done'",
            account_id,
        )
        if row is not None:
            return row
        assert time.monotonic() < deadline, await pool.fetch("SELECT * FROM sweeps")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("platform", ["mastodon", "youtube"])
async def test_auth_failed_for_a_token_revoked_at_the_platform_deactivates_within_10s(
    internal: Api,
    api: Api,
    publisher: str,
    sandbox: Sandbox,
    import_lines: Any,
    make_key: Any,
    pool: asyncpg.Pool,
    worker: Worker,
    platform: str,
) -> None:
    customer = await make_key("acme")
    (account_id,) = await import_lines(
        "acme",
        [
            line(
                platform,
                f"rev-{platform}",
                access_token=f"{platform}-a",
                refresh_token=f"{platform}-r",
            )
        ],
    )
    # the customer revoked the app at the platform: the whole grant is gone
    await sandbox.set(f"{platform}-a", "revoked")
    await sandbox.set(f"{platform}-r", "revoked")
    started = time.monotonic()
    status, body = await report(
        internal, publisher, account_id, {"result": "auth_failed", "platform_status": 401}
    )
    assert status == 202 and body["check_queued"] is True, body
    while True:
        r = await api.request("GET", f"/v1/accounts/{account_id}", customer)
        if (await r.json())["is_active"] is False:
            break
        assert time.monotonic() - started < 10, await pool.fetch("SELECT * FROM sweeps")
        await asyncio.sleep(0.05)
    r = await api.request("GET", f"/v1/accounts/{account_id}/events", customer)
    kinds = [e["kind"] for e in (await r.json())["events"]]
    assert kinds[0] == "deactivated"


async def test_auth_failed_for_a_valid_token_leaves_the_account_active(
    internal: Api,
    publisher: str,
    sandbox: Sandbox,
    import_lines: Any,
    pool: asyncpg.Pool,
    worker: Worker,
) -> None:
    (account_id,) = await import_lines("acme", [line("mastodon", "fine", access_token="fine-a")])
    status, body = await report(internal, publisher, account_id, {"result": "auth_failed"})
    assert status == 202 and body["check_queued"] is True
    sweep = await wait_for_sweep(pool, account_id, within=10)
    assert sweep["checked"] == 1 and sweep["healthy"] == 1
    row = await pool.fetchrow(
        "SELECT is_active, health_status FROM accounts WHERE id = $1", account_id
    )
    assert row["is_active"] is True and row["health_status"] == "healthy"
    verifies = [c for c in await sandbox.calls(platform="mastodon") if c["token"] == "fine-a"]
    assert len(verifies) == 1


async def test_a_burst_of_auth_failed_reports_makes_one_check(
    internal: Api,
    publisher: str,
    sandbox: Sandbox,
    import_lines: Any,
    pool: asyncpg.Pool,
    worker: Worker,
) -> None:
    (account_id,) = await import_lines("acme", [line("mastodon", "burst", access_token="burst-a")])
    answers = await asyncio.gather(
        *(
            report(
                internal, publisher, account_id, {"result": "auth_failed", "platform_status": 401}
            )
            for _ in range(30)
        )
    )
    assert {status for status, _ in answers} == {202}
    assert sum(1 for _, body in answers if body["check_queued"]) == 1
    await wait_for_sweep(pool, account_id, within=10)
    # and more reports right after the check still make no second one (the window)
    for _ in range(5):
        status, body = await report(internal, publisher, account_id, {"result": "auth_failed"})
        assert status == 202 and body["check_queued"] is False
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM sweeps WHERE trigger = 'report' AND account_id = $1", account_id
        )
        == 1
    )
    assert (
        len([c for c in await sandbox.calls(platform="mastodon") if c["token"] == "burst-a"]) == 1
    )


async def test_an_oversized_body_is_413_in_the_one_error_body(
    internal: Api, publisher: str, seeded: str
) -> None:
    big = b'{"result": "failed", "platform_error": "' + b"x" * 70_000 + b'"}'
    r = await internal.request("POST", USAGE.format("acc_abc123"), publisher, data=big)
    assert r.status == 413
    assert (await r.json())["error"]["type"] == "payload_too_large"


async def test_auth_failed_for_an_inactive_account_queues_no_check(
    internal: Api, publisher: str, seeded: str, redis: ArqRedis
) -> None:
    # acc_ghi789 is the seed's inactive account
    status, body = await report(internal, publisher, "acc_ghi789", {"result": "auth_failed"})
    assert status == 202 and body["check_queued"] is False, body
    assert await redis.queued_jobs() == []
