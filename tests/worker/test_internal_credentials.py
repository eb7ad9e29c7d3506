"""POST /internal/v1/accounts/{id}/credentials against real PostgreSQL, Redis and the platform
sandbox over HTTP: the token the publisher gets, refreshed first when due."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from yarl import URL

from devkit.embedded import free_port
from service.api.internal_app import create_internal_app
from service.api.internal_models import IssuedCredentials
from service.api.server import AppRunner
from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from tests.conftest import Api, with_tokens
from tests.worker.conftest import Sandbox

CREDENTIALS = "/internal/v1/accounts/{}/credentials"

REFRESH_PATHS = {
    "twitter": "/twitter/2/oauth2/token",
    "bluesky": "/bluesky/xrpc/com.atproto.server.refreshSession",
    "tiktok": "/tiktok/v2/oauth/token/",
    "youtube": "/youtube/token",
    "linkedin": "/linkedin/oauth/v2/accessToken",
}
VERIFY = {
    "twitter": ("GET", "/twitter/2/users/me"),
    "bluesky": ("GET", "/bluesky/xrpc/com.atproto.server.getSession"),
    "tiktok": ("GET", "/tiktok/v2/user/info/"),
    "youtube": ("GET", "/youtube/youtube/v3/channels"),
}


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def line(platform: str, user: str, **extra: Any) -> dict[str, Any]:
    base = {
        "platform": platform,
        "platform_user_id": user,
        "username": f"{user}@mastodon.example" if platform == "mastodon" else user,
        "display_name": user,
    }
    return with_tokens(base, **extra)


async def start_internal(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, platforms: PlatformSettings
) -> tuple[AppRunner, int]:
    app = create_internal_app(settings, pool=pool, redis=redis, platform_settings=platforms)
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@pytest.fixture
async def issuing(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, platform_settings: PlatformSettings
) -> AsyncIterator[Api]:
    """The internal API, refreshing at the sandbox."""
    runner, port = await start_internal(settings, pool, redis, platform_settings)
    async with aiohttp.ClientSession() as http:
        yield Api(URL(f"http://127.0.0.1:{port}"), http)
    await runner.cleanup()


@pytest.fixture
async def publisher(make_service_key: Any) -> str:
    key: str = await make_service_key("publisher", ("credentials",))
    return key


async def refresh_calls(sandbox: Sandbox, platform: str) -> list[dict[str, Any]]:
    return [
        c for c in await sandbox.calls(platform=platform) if c["path"] == REFRESH_PATHS[platform]
    ]


async def platform_accepts(sandbox: Sandbox, platform: str, token: str) -> int:
    method, path = VERIFY[platform]
    async with sandbox.http.request(
        method, f"{sandbox.url}{path}", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        await r.read()
        return r.status


async def events(pool: asyncpg.Pool, account_id: str) -> list[tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT kind, reason FROM account_events WHERE account_id = $1 ORDER BY id", account_id
    )
    return [(r["kind"], r["reason"]) for r in rows]


async def test_issues_the_stored_token_the_platform_accepts_and_audits_it(
    issuing: Api,
    api: Api,
    publisher: str,
    sandbox: Sandbox,
    import_lines: Any,
    make_key: Any,
    pool: asyncpg.Pool,
) -> None:
    customer = await make_key("acme")
    expires = iso(timedelta(hours=2))
    (account_id,) = await import_lines(
        "acme",
        [
            line(
                "twitter",
                "u1",
                access_token="tw-access-1",
                refresh_token="tw-refresh-1",
                token_expires_at=expires,
                scopes="tweet.read tweet.write offline.access",
            )
        ],
    )
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 200, await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    assert await r.json() == {
        "account_id": account_id,
        "platform": "twitter",
        "platform_user_id": "u1",
        "access_token": "tw-access-1",
        "token_type": "bearer",
        "expires_at": expires,
        "scopes": ["tweet.read", "tweet.write", "offline.access"],
        "instance_url": None,
    }
    IssuedCredentials.model_validate(await r.json())  # the schema the OpenAPI shows
    # the platform takes it (and tells a refused one apart)
    assert await platform_accepts(sandbox, "twitter", "tw-access-1") == 200
    await sandbox.set("some-other-token", "revoked")
    assert await platform_accepts(sandbox, "twitter", "some-other-token") == 401
    # nothing was refreshed for a token two hours from expiry
    assert await refresh_calls(sandbox, "twitter") == []
    # audited, with the service key's name, visible to the customer, never the token
    r = await api.request("GET", f"/v1/accounts/{account_id}/events", customer)
    body = await r.json()
    issued = [e for e in body["events"] if e["kind"] == "credentials_issued"]
    assert len(issued) == 1, body
    assert issued[0]["detail"]["service_key"] == "publisher"
    assert issued[0]["detail"]["refreshed"] is False
    assert "tw-access-1" not in await r.text()


@pytest.mark.parametrize(
    ("platform", "rotates"),
    [
        ("twitter", True),
        ("tiktok", True),
        ("bluesky", True),
        ("youtube", False),
        ("linkedin", False),
    ],
)
async def test_a_token_near_expiry_is_refreshed_first(
    issuing: Api,
    publisher: str,
    sandbox: Sandbox,
    import_lines: Any,
    pool: asyncpg.Pool,
    vault: Any,
    platform: str,
    rotates: bool,
) -> None:
    old_access, old_refresh = f"{platform}-old-access", f"{platform}-old-refresh"
    (account_id,) = await import_lines(
        "acme",
        [
            line(
                platform,
                f"u-{platform}",
                access_token=old_access,
                refresh_token=old_refresh,
                token_expires_at=iso(timedelta(minutes=5)),  # inside the 30 min margin
            )
        ],
    )
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 200, await r.text()
    body = await r.json()
    calls = await refresh_calls(sandbox, platform)
    assert len(calls) == 1, calls
    assert calls[0]["token"] == old_refresh
    new_access = body["access_token"]
    assert new_access != old_access
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires - datetime.now(UTC) > timedelta(minutes=40)
    # what was served is what is stored, and the refresh token rotated or stayed
    from service.core.vault import Sealed

    row = await pool.fetchrow(
        "SELECT key_id, sealed, generation FROM account_tokens WHERE account_id = $1", account_id
    )
    access, refresh = vault.open_tokens(account_id, Sealed(row["key_id"], row["sealed"]))
    assert access == new_access and row["generation"] == 2
    assert (refresh != old_refresh) is rotates
    if platform in VERIFY:
        assert await platform_accepts(sandbox, platform, new_access) == 200
    # written as a sweep writes a refresh: healthy, with the event
    health = await pool.fetchrow(
        "SELECT is_active, health_status FROM accounts WHERE id = $1", account_id
    )
    assert health["is_active"] is True and health["health_status"] == "healthy"
    kinds = [k for k, _ in await events(pool, account_id)]
    assert kinds == ["connected", "refreshed", "credentials_issued"]
    # the next request gets the same fresh token without another platform call
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert (await r.json())["access_token"] == new_access
    assert len(await refresh_calls(sandbox, platform)) == 1


async def test_concurrent_requests_in_one_process_make_one_refresh_call(
    issuing: Api, publisher: str, sandbox: Sandbox, import_lines: Any
) -> None:
    (account_id,) = await import_lines(
        "acme",
        [
            line(
                "twitter",
                "burst",
                access_token="burst-access",
                refresh_token="burst-refresh",
                token_expires_at=iso(timedelta(minutes=1)),
            )
        ],
    )

    async def one() -> tuple[int, str]:
        r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
        return r.status, (await r.json()).get("access_token", await r.text())

    answers = await asyncio.gather(*(one() for _ in range(50)))
    assert {status for status, _ in answers} == {200}
    assert len({token for _, token in answers}) == 1
    assert len(await refresh_calls(sandbox, "twitter")) == 1


async def test_a_refused_refresh_deactivates_as_a_sweep_would_and_answers_409(
    issuing: Api,
    api: Api,
    publisher: str,
    sandbox: Sandbox,
    import_lines: Any,
    make_key: Any,
    pool: asyncpg.Pool,
) -> None:
    customer = await make_key("acme")
    (account_id,) = await import_lines(
        "acme",
        [
            line(
                "youtube",  # 400 invalid_grant: refused for good (PLATFORMS.md)
                "UC-dead",
                access_token="dead-access",
                refresh_token="dead-refresh",
                token_expires_at=iso(timedelta(minutes=5)),
            )
        ],
    )
    await sandbox.set("dead-refresh", "revoked")
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 409, await r.text()
    error = (await r.json())["error"]
    assert error["type"] == "account_inactive"
    assert "status expired" in error["message"] and "refresh_failed" in error["message"]
    assert "dead-access" not in await r.text()
    r = await api.request("GET", f"/v1/accounts/{account_id}", customer)
    assert (await r.json())["is_active"] is False
    r = await api.request("GET", f"/v1/accounts/{account_id}/health", customer)
    health = await r.json()
    assert health["status"] == "expired" and health["reason"] == "refresh_failed"
    assert await events(pool, account_id) == [
        ("connected", None),
        ("deactivated", "refresh_failed"),
    ]
    # and from now on, without asking the platform again
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 409
    assert (await r.json())["error"]["type"] == "account_inactive"
    assert len(await refresh_calls(sandbox, "youtube")) == 1


async def test_an_inactive_account_is_409_naming_status_and_reason(
    issuing: Api, publisher: str, import_lines: Any, pool: asyncpg.Pool
) -> None:
    (account_id,) = await import_lines("acme", [line("mastodon", "gone", is_active=False)])
    await pool.execute(
        "UPDATE accounts SET health_status = 'revoked', health_reason = 'token_revoked' "
        "WHERE id = $1",
        account_id,
    )
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 409
    assert await r.json() == {
        "error": {
            "type": "account_inactive",
            "message": f"account {account_id} is inactive (status revoked, reason "
            "token_revoked); the customer has to reconnect it",
        }
    }
    assert r.headers["Cache-Control"] == "no-store"


async def test_unknown_and_disconnected_accounts_are_404(
    issuing: Api, api: Api, publisher: str, seeded: str
) -> None:
    r = await api.request("DELETE", "/v1/accounts/acc_abc123", seeded)
    assert r.status == 204
    for account_id in ("acc_abc123", "acc_nope", "x" * 80, "%20"):
        r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
        assert r.status == 404, await r.text()
        assert (await r.json())["error"]["type"] == "not_found"


async def test_credentials_are_served_whatever_the_workspace(
    issuing: Api, publisher: str, import_lines: Any
) -> None:
    (a,) = await import_lines("acme", [line("youtube", "UC-a", access_token="ws-a")])
    (b,) = await import_lines("globex", [line("youtube", "UC-b", access_token="ws-b")])
    for account_id, token in ((a, "ws-a"), (b, "ws-b")):
        r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
        assert (await r.json())["access_token"] == token


async def test_a_transient_refresh_failure_serves_the_current_token_while_valid(
    issuing: Api, publisher: str, sandbox: Sandbox, import_lines: Any, pool: asyncpg.Pool
) -> None:
    (account_id,) = await import_lines(
        "acme",
        [
            line(
                "youtube",
                "UC-t",
                access_token="t-access",
                refresh_token="t-refresh",
                token_expires_at=iso(timedelta(minutes=5)),
            )
        ],
    )
    await sandbox.set("t-refresh", "error")
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 200, await r.text()
    assert (await r.json())["access_token"] == "t-access"
    row = await pool.fetchrow(
        "SELECT is_active, transient_failures FROM accounts WHERE id = $1", account_id
    )
    assert row["is_active"] is True and row["transient_failures"] == 1


async def test_a_transient_refresh_failure_after_expiry_is_503_with_retry_after(
    issuing: Api, publisher: str, sandbox: Sandbox, import_lines: Any
) -> None:
    (account_id,) = await import_lines(
        "acme",
        [
            line(
                "youtube",
                "UC-x",
                access_token="x-access",
                refresh_token="x-refresh",
                token_expires_at=iso(timedelta(minutes=-5)),  # already expired
            )
        ],
    )
    await sandbox.set("x-refresh", "error")
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 503, await r.text()
    assert (await r.json())["error"]["type"] == "platform_unavailable"
    assert int(r.headers["Retry-After"]) >= 1
    assert "x-access" not in await r.text()


async def test_an_expired_token_without_a_refresh_grant_is_dead_as_in_a_sweep(
    issuing: Api, publisher: str, import_lines: Any, pool: asyncpg.Pool
) -> None:
    (account_id,) = await import_lines(
        "acme",
        [line("mastodon", "old", access_token="m-old", token_expires_at=iso(timedelta(hours=-1)))],
    )
    r = await issuing.request("POST", CREDENTIALS.format(account_id), publisher)
    assert r.status == 409, await r.text()
    assert "token_expired" in (await r.json())["error"]["message"]
    assert await events(pool, account_id) == [("connected", None), ("deactivated", "token_expired")]


async def test_the_credentials_routes_need_the_credentials_scope(
    issuing: Api, make_service_key: Any, make_key: Any, import_lines: Any
) -> None:
    (account_id,) = await import_lines("acme", [line("youtube", "UC-s")])
    connect_only = await make_service_key("connect", ("connect",))
    customer = await make_key("acme")
    for path, body in (
        (CREDENTIALS.format(account_id), None),
        (f"/internal/v1/accounts/{account_id}/usage", {"result": "failed"}),
    ):
        r = await issuing.request("POST", path, connect_only, json=body)
        assert r.status == 403, await r.text()
        assert (await r.json())["error"] == {
            "type": "forbidden",
            "message": "this service key lacks the 'credentials' scope",
        }
        r = await issuing.request("POST", path, customer, json=body)
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "unauthorized"
