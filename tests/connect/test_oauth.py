"""Connect and reconnect through each platform's authorization flow, end to end over real
HTTP: internal API -> the sandbox's consent screen -> our public callback -> the dashboard."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import asyncpg
import pytest

from devkit.sandbox.consent import google_sub
from tests.connect.conftest import OAUTH_PLATFORMS, Stack, user

pytestmark = pytest.mark.parametrize("platform", OAUTH_PLATFORMS)


def page(n: int) -> dict[str, Any]:
    return {
        "id": f"page-{n}",
        "username": f"page_{n}",
        "name": f"Page {n}",
        "avatar_url": f"https://cdn.sandbox.example/pages/{n}.jpg",
    }


async def login(stack: Stack, platform: str, n: int = 1, **extra: Any) -> dict[str, Any]:
    who = user(platform, n)
    if platform == "facebook":
        extra.setdefault("pages", [page(n)])
    await stack.login(platform, who, **extra)
    return who


def expected(platform: str, who: dict[str, Any], n: int = 1) -> dict[str, Any]:
    """The Account object fields the sandbox user should come back as."""
    if platform == "facebook":
        who = page(n)
    account = {
        "platform": platform,
        "platform_user_id": who["id"],
        "username": who["username"],
        "display_name": who["name"],
        "avatar_url": who["avatar_url"],
        "is_active": True,
    }
    if platform == "linkedin":
        account["platform_user_id"] = f"urn:li:person:{who['id']}"
        account["username"] = f"{who['username']}@linkedin.example"
    if platform == "youtube":
        account["username"] = f"@{who['username']}"
    if platform == "mastodon":
        account["username"] = f"{who['username']}@mastodon.example"
    return account


async def test_connect_gives_an_account_with_the_profile_that_a_sweep_finds_healthy(
    platform: str, stack: Stack, sweep: Any, pool: asyncpg.Pool
) -> None:
    who = await login(stack, platform)
    status, created = await stack.create(platform)
    assert status == 201, created
    assert created["id"].startswith("cs_")
    assert created["status"] == "pending"
    assert {"platform": platform, "workspace": "acme"}.items() <= created.items()
    assert created["expires_at"].endswith("Z")

    landed = await stack.browse(created["authorize_url"])
    assert landed["status"] == "connected", landed
    assert landed["connect_session"] == created["id"]
    account_id = landed["account_id"]

    status, account = await stack.account(account_id)
    assert status == 200, account
    assert expected(platform, who).items() <= account.items()
    session = await stack.session(created["id"])
    assert session["status"] == "connected"
    assert session["account_id"] == account_id
    assert session["error"] is None

    row = await pool.fetchrow(
        "SELECT kind FROM account_events WHERE account_id = $1 ORDER BY id", account_id
    )
    assert row["kind"] == "connected"
    authorizing = await pool.fetchval(
        "SELECT authorizing_user_id FROM accounts WHERE id = $1", account_id
    )
    assert authorizing == {"facebook": who["id"], "youtube": google_sub(who["id"])}.get(platform)

    result = await sweep(account_id)
    assert result["checked"] == 1, dict(result)
    status, healthy = await stack.account(account_id, "/health")
    assert healthy["status"] == "healthy", healthy
    assert healthy["is_active"] is True


async def test_reconnect_keeps_the_id_and_clears_a_revoked_state(
    platform: str, stack: Stack, pool: asyncpg.Pool
) -> None:
    who = await login(stack, platform)
    first = (await stack.connect(platform))["account_id"]
    await pool.execute(
        "UPDATE accounts SET is_active = false, health_status = 'revoked', "
        "health_reason = 'token_revoked' WHERE id = $1",
        first,
    )
    landed = await stack.connect(platform, account_id=first)
    assert landed["status"] == "connected", landed
    assert landed["account_id"] == first
    status, health = await stack.account(first, "/health")
    assert (health["is_active"], health["status"], health["reason"]) == (True, "unchecked", None)
    status, account = await stack.account(first)
    assert status == 200, account
    assert expected(platform, who).items() <= account.items()
    kinds = [
        r["kind"]
        for r in await pool.fetch(
            "SELECT kind FROM account_events WHERE account_id = $1 ORDER BY id", first
        )
    ]
    assert kinds == ["connected", "reconnected"]
    # a plain connect of the same platform user is a reconnect too
    again = await stack.connect(platform)
    assert again["account_id"] == first
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 1


async def test_another_platform_user_on_a_reconnect_is_wrong_account(
    platform: str, stack: Stack, pool: asyncpg.Pool
) -> None:
    await login(stack, platform, 1)
    first = (await stack.connect(platform))["account_id"]
    await login(stack, platform, 2)
    status, created = await stack.create(platform, account_id=first)
    assert status == 201, created
    landed = await stack.browse(created["authorize_url"])
    assert landed == {
        "connect_session": created["id"],
        "status": "failed",
        "error": "wrong_account",
    }
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 1
    session = await stack.session(created["id"])
    assert (session["status"], session["error"], session["account_id"]) == (
        "failed",
        "wrong_account",
        None,
    )


async def test_declining_at_the_consent_screen_is_access_denied(
    platform: str, stack: Stack, pool: asyncpg.Pool
) -> None:
    await login(stack, platform, decision="deny")
    status, created = await stack.create(platform)
    assert status == 201, created
    landed = await stack.browse(created["authorize_url"])
    assert landed == {
        "connect_session": created["id"],
        "status": "failed",
        "error": "access_denied",
    }
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0


async def test_a_replayed_callback_and_a_forged_state_are_refused(
    platform: str, stack: Stack, pool: asyncpg.Pool
) -> None:
    await login(stack, platform)
    status, created = await stack.create(platform)
    assert status == 201, created
    callback = await stack.callback_url(created["authorize_url"])
    assert callback.startswith(f"{stack.public}/oauth/callback/{platform}?")
    async with stack.http.get(callback, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        assert "status=connected" in r.headers["Location"]
    async with stack.http.get(callback, allow_redirects=False) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_state"
    forged = f"{stack.public}/oauth/callback/{platform}?code=x&state={secrets.token_urlsafe(32)}"
    async with stack.http.get(forged, allow_redirects=False) as r:
        assert r.status == 400
        body = await r.json()
        assert body == {
            "error": {"type": "invalid_state", "message": "unknown or already used state"}
        }
    async with stack.http.get(f"{stack.public}/oauth/callback/{platform}?code=x") as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_state"
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 1


async def test_an_expired_session_fails_with_expired(
    platform: str, stack: Stack, pool: asyncpg.Pool
) -> None:
    await login(stack, platform)
    status, created = await stack.create(platform)
    assert status == 201, created
    await pool.execute(
        "UPDATE connect_sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
        created["id"],
    )
    assert (await stack.session(created["id"]))["error"] == "expired"
    landed = await stack.browse(created["authorize_url"])
    assert landed == {"connect_session": created["id"], "status": "failed", "error": "expired"}
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0


async def test_a_redirect_url_outside_the_allowed_origins_is_refused(
    platform: str, stack: Stack
) -> None:
    for url in (
        "https://evil.example/connected",
        f"{stack.dashboard}.evil.example/x",
        "https://app.octopost.example.evil.example/x",
        "javascript:alert(1)",
        "/relative",
    ):
        status, body = await stack.create(platform, redirect_url=url)
        assert status == 400, (url, body)
        assert body["error"]["type"] == "invalid_request"
    status, body = await stack.create(platform, redirect_url="https://app.octopost.example/ok?x=1")
    assert status == 201, body


async def test_no_token_code_or_state_reaches_a_log_line(
    platform: str, stack: Stack, caplog: pytest.LogCaptureFixture, pool: asyncpg.Pool
) -> None:
    caplog.set_level(logging.DEBUG)
    await login(stack, platform)
    status, created = await stack.create(platform)
    assert status == 201, created
    callback = await stack.callback_url(created["authorize_url"])
    async with stack.http.get(callback, allow_redirects=False) as r:
        assert r.status == 302
    async with stack.http.get(callback, allow_redirects=False) as r:
        assert r.status == 400
    secrets_seen = {c["token"] for c in await stack.calls() if c["token"]}
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(callback).query)
    secrets_seen |= {query["code"][0], query["state"][0]}
    assert len(secrets_seen) >= 3  # the code, the state and at least one token
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"platform={platform} status=connected" in logged
    for secret in secrets_seen:
        assert secret not in logged
