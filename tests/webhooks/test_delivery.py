"""Account changes -> the outbox -> the dispatcher -> a real receiver, verified with the
`standardwebhooks` package exactly as a customer would."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis

from devkit.embedded import free_port
from service.api.app import redis_client
from service.core.jobs import enqueue_sweep
from service.core.repository import sweeps
from service.core.settings import Settings
from service.core.vault import Vault
from tests.conftest import Api, stop_in_loop_worker, with_tokens
from tests.webhooks.conftest import (
    Answer,
    Receiver,
    Sandbox,
    call,
    create_endpoint,
    dispatching,
    serving,
    wait_for,
)
from tests.worker.revocation_helpers import drain, sandbox_platforms
from worker.assembly import make_worker
from worker.webhooks import WebhookDispatcher

pytestmark = pytest.mark.usefixtures("dispatcher")


def account(platform: str, user: str, **extra: Any) -> dict[str, Any]:
    base = {
        "platform": platform,
        "platform_user_id": user,
        "username": user,
        "display_name": user.title(),
    }
    return with_tokens(base, **extra)


async def api_account(api: Api, key: str, account_id: str) -> dict[str, Any]:
    status, body = await call(api, "GET", f"/v1/accounts/{account_id}", key)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def test_connect_reconnect_and_delete_arrive_signed_with_the_account_after_each(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver
) -> None:
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/hooks"))
    secret = hook["secret"]
    (account_id,) = await import_lines("acme", [account("twitter", "ada")])
    (connected,) = await receiver.wait("/hooks", 1)
    after_connect = await api_account(wapi, key, account_id)
    payload = connected.verified(secret)
    assert payload["type"] == "account.connected"
    assert payload["id"] == connected.headers["webhook-id"]
    assert payload["id"].startswith("evt_")
    assert payload["data"] == {"account": after_connect}
    assert payload["created_at"].endswith("Z")

    await import_lines("acme", [account("twitter", "ada", display_name="Ada L.")])
    _, reconnected = await receiver.wait("/hooks", 2)
    payload = reconnected.verified(secret)
    assert payload["type"] == "account.reconnected"
    assert payload["data"]["account"] == await api_account(wapi, key, account_id)
    assert payload["data"]["account"]["display_name"] == "Ada L."

    status, _ = await call(wapi, "DELETE", f"/v1/accounts/{account_id}", key)
    assert status == 204
    *_, disconnected = await receiver.wait("/hooks", 3)
    payload = disconnected.verified(secret)
    assert payload["type"] == "account.disconnected"
    assert payload["data"] == {
        "account": {**after_connect, "display_name": "Ada L.", "is_active": False},
        "initiator": "api",
    }
    # three events, three ids, each sent once
    assert len({r.headers["webhook-id"] for r in receiver.at("/hooks")}) == 3


async def test_a_check_asked_for_by_a_publish_report_says_so(
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    sandbox: Sandbox,
    wsettings: Settings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
) -> None:
    # an auth_failed usage report queues a one-account sweep with trigger 'report'
    await sandbox.reset()
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("mastodon", "eve@mastodon.example", access_token="m-at-eve")]
    )
    hook = await create_endpoint(wapi, key, receiver.url("/report"), events=["account.deactivated"])
    await sandbox.set("m-at-eve", "revoked")
    sweep_id = await sweeps.create_sweep(pool, "report", None, account_id)
    await enqueue_sweep(redis, sweep_id)
    await drain(wsettings, sandbox_platforms(sandbox))
    (deactivated,) = await receiver.wait("/report", 1)
    payload = deactivated.verified(hook["secret"])
    assert payload["type"] == "account.deactivated"
    assert payload["data"]["source"] == "publish_report", payload


async def test_sweep_finding_a_revoked_token_then_a_valid_one(
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    sandbox: Sandbox,
    wsettings: Settings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
) -> None:
    await sandbox.reset()
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("mastodon", "bob@mastodon.example", access_token="m-at-bob")]
    )
    hook = await create_endpoint(
        wapi, key, receiver.url("/health"), events=["account.deactivated", "account.reactivated"]
    )
    await sandbox.set("m-at-bob", "revoked")
    platforms = sandbox_platforms(sandbox)

    async def sweep() -> None:
        sweep_id = await sweeps.create_sweep(pool, "manual", None, account_id)
        await enqueue_sweep(redis, sweep_id)
        await drain(wsettings, platforms)

    await sweep()
    (deactivated,) = await receiver.wait("/health", 1)
    payload = deactivated.verified(hook["secret"])
    assert payload["type"] == "account.deactivated"
    assert payload["data"] == {
        "account": await api_account(wapi, key, account_id),
        "status": "revoked",
        "reason": "token_revoked",
        "source": "check",
    }
    assert payload["data"]["account"]["is_active"] is False

    await sandbox.set("m-at-bob", "valid")
    await sweep()
    _, reactivated = await receiver.wait("/health", 2)
    payload = reactivated.verified(hook["secret"])
    assert payload["type"] == "account.reactivated"
    assert payload["data"] == {"account": await api_account(wapi, key, account_id)}
    assert payload["data"]["account"]["is_active"] is True


async def test_a_failed_revocation_is_reported(
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    sandbox: Sandbox,
    wsettings: Settings,
) -> None:
    await sandbox.reset()
    key = await make_key("acme")
    (account_id,) = await import_lines(
        "acme", [account("youtube", "yt", access_token="yt-at", refresh_token="yt-rt-down")]
    )
    hook = await create_endpoint(
        wapi, key, receiver.url("/rev"), events=["account.revocation_failed"]
    )
    await sandbox.set("yt-rt-down", "error")
    status, _ = await call(wapi, "DELETE", f"/v1/accounts/{account_id}", key)
    assert status == 204
    await drain(wsettings.model_copy(update={"revoke_max_attempts": 2}), sandbox_platforms(sandbox))
    (received,) = await receiver.wait("/rev", 1)
    payload = received.verified(hook["secret"])
    assert payload["type"] == "account.revocation_failed"
    assert payload["data"]["reason"] == "attempts_exhausted"
    assert payload["data"]["account"]["id"] == account_id
    assert payload["data"]["account"]["is_active"] is False


async def test_500_500_200_is_three_attempts_of_one_webhook_id(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver
) -> None:
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/flaky"))
    receiver.script("/flaky", Answer(500), Answer(503, headers={"Retry-After": "1"}), Answer(200))
    await import_lines("acme", [account("twitter", "ada")])
    first, second, third = await receiver.wait("/flaky", 3)
    assert first.body == second.body == third.body
    assert len({r.headers["webhook-id"] for r in (first, second, third)}) == 1
    for r in (first, second, third):
        r.verified(hook["secret"])
    # the 503's Retry-After (1 s) outweighs the schedule's 0.2 s
    assert third.at - second.at >= 0.95

    async def recorded() -> Any:
        status, page = await call(
            wapi, "GET", f"/v1/webhook_endpoints/{hook['id']}/deliveries", key
        )
        assert status == 200, page
        return page if len(page["deliveries"]) == 3 else None

    page = await wait_for(recorded, what="three attempts recorded")
    await asyncio.sleep(0.5)
    assert len(receiver.at("/flaky")) == 3
    rows = [
        (d["attempt"], d["result"], d["response_status"], d["error"]) for d in page["deliveries"]
    ]
    assert rows == [
        (3, "delivered", 200, None),
        (2, "retrying", 503, "HTTP 503"),
        (1, "retrying", 500, "HTTP 500"),
    ]
    assert {d["event_id"] for d in page["deliveries"]} == {first.headers["webhook-id"]}
    assert {d["type"] for d in page["deliveries"]} == {"account.connected"}


async def test_a_delivery_fails_after_the_last_step_of_the_schedule(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    key = await make_key("acme")
    await create_endpoint(wapi, key, receiver.url("/down"))
    receiver.script("/down", default=Answer(500))
    await import_lines("acme", [account("twitter", "ada")])
    await receiver.wait("/down", 4)  # the schedule has four steps

    async def failed() -> bool:
        status: str | None = await pool.fetchval("SELECT status FROM webhook_deliveries")
        return status == "failed"

    await wait_for(failed, what="the delivery to fail")
    await asyncio.sleep(0.5)
    assert len(receiver.at("/down")) == 4


async def test_410_disables_and_re_enabling_replays_only_what_is_asked(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/gone"))
    receiver.script("/gone", Answer(410))
    await import_lines("acme", [account("twitter", "ada")])
    await receiver.wait("/gone", 1)

    async def disabled() -> bool:
        status, body = await call(wapi, "GET", f"/v1/webhook_endpoints/{hook['id']}", key)
        return status == 200 and body["enabled"] is False

    await wait_for(disabled, what="the endpoint to be disabled")
    # while disabled: the event shows as a failed delivery, nothing is sent
    await import_lines("acme", [account("bluesky", "bob")])
    await asyncio.sleep(0.5)
    assert len(receiver.at("/gone")) == 1
    status, page = await call(wapi, "GET", f"/v1/webhook_endpoints/{hook['id']}/deliveries", key)
    assert status == 200
    latest, first = page["deliveries"]
    assert (latest["attempt"], latest["result"], latest["error"]) == (
        0,
        "failed",
        "endpoint disabled",
    )
    assert (first["attempt"], first["result"], first["response_status"]) == (1, "failed", 410)
    # a test and a retry on a disabled endpoint are refused until it is enabled again
    status, body = await call(wapi, "POST", f"/v1/webhook_endpoints/{hook['id']}/test", key)
    assert status == 409 and body["error"]["type"] == "conflict", body

    status, body = await call(
        wapi, "PATCH", f"/v1/webhook_endpoints/{hook['id']}", key, json={"enabled": True}
    )
    assert status == 200 and body["enabled"] is True, body
    await asyncio.sleep(0.5)
    assert len(receiver.at("/gone")) == 1  # no replay of its own accord
    status, body = await call(
        wapi,
        "POST",
        f"/v1/webhook_endpoints/{hook['id']}/deliveries/{latest['event_id']}/retry",
        key,
    )
    assert status == 202 and body == {"event_id": latest["event_id"]}, body
    _, replayed = await receiver.wait("/gone", 2)
    assert replayed.verified(hook["secret"])["id"] == latest["event_id"]
    assert replayed.headers["webhook-id"] == latest["event_id"]


async def test_an_endpoint_failing_for_the_whole_window_is_disabled(
    wsettings: Settings,
    pool: asyncpg.Pool,
    vault: Vault,
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
) -> None:
    await dispatcher.close()  # this test's worker has a longer schedule
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/broken"))
    receiver.script("/broken", default=Answer(500))
    quick = wsettings.model_copy(
        update={
            "webhook_disable_after_days": 1.0 / 86400,
            "webhook_retry_schedule": "0" + ",0.3" * 20,
        }
    )
    async with dispatching(quick, pool, vault):
        await import_lines("acme", [account("twitter", "ada")])

        async def disabled() -> bool:
            reason: str | None = await pool.fetchval(
                "SELECT disabled_reason FROM webhook_endpoints WHERE id = $1", hook["id"]
            )
            return reason == "failing"

        await wait_for(disabled, what="the endpoint to be disabled for failing")
    assert await pool.fetchval("SELECT status FROM webhook_deliveries") == "failed"


async def test_a_slow_endpoint_does_not_hold_up_another(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver
) -> None:
    key = await make_key("acme")
    await create_endpoint(wapi, key, receiver.url("/slow"))
    await create_endpoint(wapi, key, receiver.url("/fast"))
    receiver.script("/slow", default=Answer(200, delay=4.0))
    started = time.monotonic()
    for n in range(5):
        await import_lines("acme", [account("twitter", f"user{n}")])
    fast = await receiver.wait("/fast", 5)
    # every fast delivery arrived while the slow endpoint was still holding its first ones
    assert max(r.at for r in fast) - started < 3.0
    assert len(receiver.at("/slow")) >= 1


async def test_after_rotation_both_secrets_verify_for_a_day(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/rot"))
    status, rotated = await call(
        wapi, "POST", f"/v1/webhook_endpoints/{hook['id']}/rotate_secret", key
    )
    assert status == 200, rotated
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]
    assert {k: v for k, v in rotated.items() if k != "secret"} == {
        k: v for k, v in hook.items() if k != "secret"
    }
    await import_lines("acme", [account("twitter", "ada")])
    (received,) = await receiver.wait("/rot", 1)
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert received.verified(hook["secret"]) == received.verified(rotated["secret"])
    # once the overlap is over only the new secret signs
    await pool.execute("UPDATE webhook_endpoints SET previous_expires_at = now()")
    await import_lines("acme", [account("bluesky", "bob")])
    _, later = await receiver.wait("/rot", 2)
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    later.verified(rotated["secret"])
    with pytest.raises(Exception, match="No matching signature"):
        later.verified(hook["secret"])


async def test_workspace_b_receives_none_of_a_s_events(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver
) -> None:
    key_a = await make_key("acme")
    key_b = await make_key("globex")
    await create_endpoint(wapi, key_a, receiver.url("/a"))
    await create_endpoint(wapi, key_b, receiver.url("/b"))
    (acc_a,) = await import_lines("acme", [account("twitter", "ada")])
    (acc_b,) = await import_lines("globex", [account("twitter", "ada")])
    status, _ = await call(wapi, "DELETE", f"/v1/accounts/{acc_a}", key_a)
    assert status == 204
    a = await receiver.wait("/a", 2)
    b = await receiver.wait("/b", 1)
    await asyncio.sleep(0.5)
    assert [r.json["data"]["account"]["id"] for r in receiver.at("/a")] == [acc_a, acc_a]
    assert [r.json["data"]["account"]["id"] for r in receiver.at("/b")] == [acc_b]
    assert len(a) == 2 and len(b) == 1


async def test_redis_down_when_the_change_happens_still_delivers(
    wsettings: Settings,
    pool: asyncpg.Pool,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    wapi: Api,
) -> None:
    """The outbox and its wake-up live in PostgreSQL: the DELETE commits its event while
    Redis is unreachable (its revocation waits for the relay), and the webhook goes out."""
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/noredis"))
    (account_id,) = await import_lines("acme", [account("twitter", "ada")])
    await receiver.wait("/noredis", 1)
    dead = wsettings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    no_redis = redis_client(dead.redis_url)
    try:
        async with serving(dead, pool, no_redis) as api:
            status, _ = await call(api, "DELETE", f"/v1/accounts/{account_id}", key)
            assert status == 204
    finally:
        await no_redis.aclose()
    _, received = await receiver.wait("/noredis", 2)
    assert received.verified(hook["secret"])["type"] == "account.disconnected"


async def test_a_name_resolving_to_loopback_is_not_called_at_delivery(
    wsettings: Settings,
    pool: asyncpg.Pool,
    vault: Vault,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    wapi: Api,
    dispatcher: WebhookDispatcher,
) -> None:
    """Registered while private hosts were allowed; delivered by a worker that refuses them:
    `localhost` passes no IP-literal check, only its resolved address stops it."""
    await dispatcher.close()  # this test's worker is the strict one
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/private", host="localhost"))
    strict = wsettings.model_copy(update={"allow_private_hosts": False})
    async with dispatching(strict, pool, vault):
        await import_lines("acme", [account("twitter", "ada")])

        async def attempted() -> Any:
            status, page = await call(
                wapi, "GET", f"/v1/webhook_endpoints/{hook['id']}/deliveries", key
            )
            return page["deliveries"] if status == 200 and page["deliveries"] else None

        (attempt, *_) = await wait_for(attempted, what="a refused attempt")
    assert attempt["error"] == "refused: the host resolves to a non-public address"
    assert attempt["response_status"] is None
    assert receiver.at("/private") == []


async def test_no_secret_in_any_log_line(
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/logs"))
    receiver.script("/logs", Answer(500))
    status, rotated = await call(
        wapi, "POST", f"/v1/webhook_endpoints/{hook['id']}/rotate_secret", key
    )
    assert status == 200
    await import_lines("acme", [account("twitter", "ada")])
    await receiver.wait("/logs", 2)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "webhook" in text  # the path did log
    for secret in (hook["secret"], rotated["secret"]):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
    signatures = {r.headers["webhook-signature"] for r in receiver.at("/logs")}
    assert not any(s in text for s in signatures)


async def test_the_worker_process_delivers(
    wsettings: Settings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
) -> None:
    """The arq worker's startup runs the dispatcher (what `octopost worker` and `dev` run)."""
    await dispatcher.close()
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/worker"))
    worker = make_worker(wsettings, handle_signals=False, cron_jobs=[], poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:
        await import_lines("acme", [account("twitter", "ada")])
        (received,) = await receiver.wait("/worker", 1)
        assert received.verified(hook["secret"])["type"] == "account.connected"
    finally:
        await stop_in_loop_worker(worker, task)


async def test_a_refresh_refused_is_deactivated_with_source_refresh(
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    sandbox: Sandbox,
    wsettings: Settings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
) -> None:
    from datetime import UTC, datetime, timedelta

    await sandbox.reset()
    key = await make_key("acme")
    soon = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (account_id,) = await import_lines(
        "acme",
        [
            account(
                "youtube",
                "soon",
                access_token="yt-at-soon",
                refresh_token="yt-rt-soon",
                token_expires_at=soon,
            )
        ],
    )
    hook = await create_endpoint(
        wapi, key, receiver.url("/refresh"), events=["account.deactivated"]
    )
    await sandbox.set("yt-rt-soon", "revoked")
    sweep_id = await sweeps.create_sweep(pool, "manual", None, account_id)
    await enqueue_sweep(redis, sweep_id)
    await drain(wsettings, sandbox_platforms(sandbox))
    (received,) = await receiver.wait("/refresh", 1)
    data = received.verified(hook["secret"])["data"]
    assert data["source"] == "refresh", data
    assert data["account"] == await api_account(wapi, key, account_id)
    assert data["account"]["is_active"] is False


async def test_ops_disconnect_says_so(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver, settings: Settings
) -> None:
    from tests.worker.revocation_helpers import octopost

    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/ops"), events=["account.disconnected"])
    (account_id,) = await import_lines("acme", [account("twitter", "ada")])
    r = await asyncio.to_thread(octopost, settings, "accounts", "disconnect", account_id)
    assert r.returncode == 0, r.stderr
    (received,) = await receiver.wait("/ops", 1)
    payload = received.verified(hook["secret"])
    assert (payload["type"], payload["data"]["initiator"]) == ("account.disconnected", "ops")
    assert hook["secret"] not in r.stdout + r.stderr


async def test_redirects_are_not_followed(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver
) -> None:
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/moved"))
    receiver.script("/moved", Answer(302, headers={"Location": receiver.url("/elsewhere")}))
    await import_lines("acme", [account("twitter", "ada")])
    first, second = await receiver.wait("/moved", 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert receiver.at("/elsewhere") == []
    status, page = await call(wapi, "GET", f"/v1/webhook_endpoints/{hook['id']}/deliveries", key)
    assert status == 200
    assert page["deliveries"][-1]["error"] == "HTTP 302 (redirects are not followed)"


async def test_metrics_count_deliveries_attempts_and_the_backlog_age(
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    pool: asyncpg.Pool,
) -> None:
    from prometheus_client import generate_latest

    key = await make_key("acme")
    await create_endpoint(wapi, key, receiver.url("/m"))
    receiver.script("/m", Answer(500))
    await import_lines("acme", [account("twitter", "ada")])
    await receiver.wait("/m", 2)

    async def counted() -> str | None:
        text = generate_latest(dispatcher.metrics.registry).decode()
        done = 'octopost_webhook_deliveries_total{result="delivered",type="account.connected"} 1.0'
        return text if done in text else None

    text = await wait_for(counted, what="the delivery counted")
    assert 'octopost_webhook_attempts_total{result="http_error"} 1.0' in text
    assert 'octopost_webhook_attempts_total{result="success"} 1.0' in text
    assert "octopost_webhook_attempt_duration_seconds_count 2.0" in text
    # a delivery stuck pending shows as the age of the oldest
    await pool.execute(
        "UPDATE webhook_deliveries SET status = 'pending', created_at = now() - interval '1 hour',"
        " next_attempt_at = now() + interval '1 day'"
    )
    await dispatcher.relay_once()
    age = dispatcher.metrics.registry.get_sample_value(
        "octopost_webhook_oldest_undelivered_seconds"
    )
    assert age is not None and 3590 < age < 3700, age


async def test_retention_prunes_finished_events_and_attempts_only(
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    pool: asyncpg.Pool,
) -> None:
    key = await make_key("acme")
    await create_endpoint(wapi, key, receiver.url("/old"))
    await import_lines("acme", [account("twitter", "ada"), account("bluesky", "bob")])
    await receiver.wait("/old", 2)

    async def both_delivered() -> bool:
        n = await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"
        )
        return bool(n == 2)

    await wait_for(both_delivered, what="both delivered")
    old = "now() - interval '31 days'"
    await pool.execute(f"UPDATE webhook_events SET created_at = {old}")
    await pool.execute(f"UPDATE webhook_attempts SET created_at = {old}")
    # one of them is still pending: it stays, with its event
    kept = await pool.fetchval(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now() + interval "
        "'1 day' WHERE event_id = (SELECT min(event_id) FROM webhook_deliveries) RETURNING event_id"
    )
    dispatcher._next_prune = 0.0
    await dispatcher.relay_once()
    assert [r["id"] for r in await pool.fetch("SELECT id FROM webhook_events")] == [kept]
    assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
    assert await pool.fetchval("SELECT count(*) FROM webhook_attempts") == 0


async def test_a_change_that_rolls_back_is_never_reported(
    wapi: Api, make_key: Any, import_lines: Any, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    from service.core.repository.webhooks import TrailEvent, record_account_events

    key = await make_key("acme")
    await create_endpoint(wapi, key, receiver.url("/rollback"))
    (account_id,) = await import_lines("acme", [account("twitter", "ada")])
    await receiver.wait("/rollback", 1)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE accounts SET is_active = false WHERE id = $1", account_id)
            await record_account_events(conn, [TrailEvent(account_id, "deactivated", "x")])
            raise RuntimeError("the change fails after its outbox write")
    # the committed one after it arrives, the rolled-back one never does
    async with pool.acquire() as conn, conn.transaction():
        await record_account_events(conn, [TrailEvent(account_id, "reactivated")])
    _, second = await receiver.wait("/rollback", 2)
    assert second.json["type"] == "account.reactivated"
    await asyncio.sleep(0.5)
    assert [r.json["type"] for r in receiver.at("/rollback")] == [
        "account.connected",
        "account.reactivated",
    ]
    assert await pool.fetchval("SELECT count(*) FROM webhook_events") == 2


async def test_in_flight_requests_per_endpoint_are_bounded(
    wsettings: Settings,
    pool: asyncpg.Pool,
    vault: Vault,
    wapi: Api,
    make_key: Any,
    import_lines: Any,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
) -> None:
    await dispatcher.close()  # this test's worker has a bound of 3
    key = await make_key("acme")
    await create_endpoint(wapi, key, receiver.url("/bounded"))
    receiver.script("/bounded", default=Answer(200, delay=0.3))
    bounded = wsettings.model_copy(update={"webhook_endpoint_concurrency": 3})
    async with dispatching(bounded, pool, vault):
        await import_lines("acme", [account("twitter", f"user{n}") for n in range(10)])
        await receiver.wait("/bounded", 10)
    assert receiver.most_in_flight["/bounded"] == 3
