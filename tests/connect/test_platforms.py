"""What is particular to some platforms: Mastodon's per-instance apps and host checks,
Bluesky's app passwords, Facebook's Pages, LinkedIn's missing refresh token."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from arq.connections import ArqRedis

from devkit.embedded import free_port
from service.api.app import create_app
from service.api.server import AppRunner
from service.core.vault import Sealed, Vault
from service.platforms.config import PlatformSettings
from tests.connect.conftest import Stack, user
from worker.assembly import make_worker


async def test_two_mastodon_connects_on_one_instance_register_one_app(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    await stack.login("mastodon", user("mastodon", 1))
    first = await stack.connect("mastodon", instance="Mastodon.Example")
    await stack.login("mastodon", user("mastodon", 2))
    second = await stack.connect("mastodon", instance="mastodon.example")
    assert first["status"] == second["status"] == "connected"
    assert first["account_id"] != second["account_id"]
    registrations = [
        c for c in await stack.calls(platform="mastodon") if c["path"].endswith("/apps")
    ]
    assert len(registrations) == 1
    assert await pool.fetchval("SELECT count(*) FROM mastodon_apps") == 1
    # another instance gets its own app
    await stack.login("mastodon", user("mastodon", 3))
    await stack.connect("mastodon", instance="other.example")
    registrations = [
        c for c in await stack.calls(platform="mastodon") if c["path"].endswith("/apps")
    ]
    assert len(registrations) == 2
    status, account = await stack.account(second["account_id"])
    assert status == 200, account
    assert account["username"] == "mastodon_user2@mastodon.example"


async def test_a_connected_mastodon_account_is_revoked_with_the_app_that_connected_it(
    stack: Stack, pool: asyncpg.Pool, redis: ArqRedis
) -> None:
    # Mastodon revokes a token only for the app it was issued to; that app was registered by
    # the connect flow and lives sealed in the database, not in the settings.
    await stack.login("mastodon", user("mastodon", 1))
    landed = await stack.connect("mastodon", instance="mastodon.example")
    assert landed["status"] == "connected", landed
    account_id = landed["account_id"]
    async with stack.http.delete(
        f"{stack.public}/v1/accounts/{account_id}",
        headers={"Authorization": f"Bearer {stack.customer_key}"},
    ) as r:
        assert r.status == 204, await r.text()
    worker = make_worker(
        stack.settings,
        platform_settings=stack.platform_settings,
        burst=True,
        handle_signals=False,
        cron_jobs=[],
        poll_delay=0.05,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    row = await pool.fetchrow(
        "SELECT status, last_error FROM revocations WHERE account_id = $1", account_id
    )
    assert row is not None and (row["status"], row["last_error"]) == ("done", None), row
    revokes = [c for c in await stack.calls(platform="mastodon") if c["path"].endswith("/revoke")]
    assert [c["status"] for c in revokes] == [200]


@pytest.mark.parametrize(
    "instance",
    [
        "127.0.0.1",
        "10.0.0.8",
        "[::1]",
        "localhost",
        "metadata.internal",
        "169.254.169.254",
        "http://a b",
        "exa_mple.com/path",
    ],
)
async def test_a_private_or_malformed_mastodon_instance_is_refused(
    instance: str, stack: Stack, settings: Any, pool: asyncpg.Pool, redis: Any
) -> None:
    strict = stack.platform_settings.model_copy(update={"allow_private_hosts": False})
    port = free_port()
    app = create_app(stack.settings, pool=pool, redis=redis, platform_settings=strict)
    from service.api.internal_app import create_internal_app

    internal = AppRunner(
        create_internal_app(stack.settings, pool=pool, redis=redis, platform_settings=strict),
        access_log=None,
    )
    await internal.setup()
    await web.TCPSite(internal, "127.0.0.1", port).start()
    try:
        body = {
            "workspace": "acme",
            "platform": "mastodon",
            "redirect_url": stack.redirect_url,
            "instance": instance,
        }
        async with stack.http.post(
            f"http://127.0.0.1:{port}/internal/v1/connect-sessions",
            json=body,
            headers={"Authorization": f"Bearer {stack.service_key}"},
        ) as r:
            assert r.status == 400, await r.text()
            assert (await r.json())["error"]["type"] == "invalid_request"
    finally:
        await internal.cleanup()
        del app
    assert [c for c in await stack.calls(platform="mastodon")] == []  # nothing was called


async def test_bluesky_connects_with_an_app_password_that_is_never_stored_or_logged(
    stack: Stack, pool: asyncpg.Pool, vault: Vault, sweep: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "abcd-efgh-ijkl-mnop"
    who = user("bluesky")
    await stack.login("bluesky", who, app_password=password)
    status, body = await stack.create(
        "bluesky", handle=who["username"], app_password="wrong-pass-word-xxxx"
    )
    assert status == 422, body
    assert body["error"]["type"] == "invalid_credentials"
    status, body = await stack.create("bluesky", handle="nobody.bsky.social", app_password=password)
    assert status == 422, body

    status, body = await stack.create(
        "bluesky", handle=f"@{who['username']}", app_password=password
    )
    assert status == 201, body
    assert body["status"] == "connected"
    account_id = body["account_id"]
    status, account = await stack.account(account_id)
    assert {
        "platform": "bluesky",
        "platform_user_id": who["id"],
        "username": who["username"],
        "display_name": who["name"],
        "avatar_url": who["avatar_url"],
        "is_active": True,
    }.items() <= account.items()
    assert (await stack.session(body["id"]))["status"] == "connected"
    row = await pool.fetchrow(
        "SELECT key_id, sealed FROM account_tokens WHERE account_id = $1", account_id
    )
    access, refresh = vault.open_tokens(account_id, Sealed(row["key_id"], row["sealed"]))
    assert password not in (access, refresh)
    dump = await pool.fetchval("SELECT string_agg(t::text, ' ') FROM connect_sessions t")
    assert password not in dump
    assert password not in "\n".join(r.getMessage() for r in caplog.records)

    # reconnect: same id; another handle for that account is wrong_account
    status, again = await stack.create(
        "bluesky", handle=who["username"], app_password=password, account_id=account_id
    )
    assert (status, again["account_id"]) == (201, account_id), again
    other = user("bluesky", 2)
    await stack.login("bluesky", other, app_password=password)
    status, wrong = await stack.create(
        "bluesky", handle=other["username"], app_password=password, account_id=account_id
    )
    assert status == 409 and wrong["error"]["type"] == "wrong_account", wrong

    assert (await sweep(account_id))["checked"] == 1
    status, health = await stack.account(account_id, "/health")
    assert health["status"] == "healthy", health


async def test_facebook_connects_every_granted_page_or_the_one_named(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    pages = [
        {"id": "p1", "username": "one", "name": "One"},
        {"id": "p2", "username": "two", "name": "Two"},
        {"id": "p3", "username": "three", "name": "Three", "granted": False},
    ]
    fb_user = user("facebook")
    await stack.login("facebook", fb_user, pages=pages)
    landed = await stack.connect("facebook")
    assert landed["status"] == "connected", landed
    ids = landed["account_ids"].split(",")
    assert len(ids) == 2 and landed["account_id"] == ids[0]
    rows = await pool.fetch(
        "SELECT platform_user_id, authorizing_user_id FROM accounts ORDER BY platform_user_id"
    )
    assert [tuple(r) for r in rows] == [("p1", fb_user["id"]), ("p2", fb_user["id"])]
    # the page that was not ticked is not stored with the user token
    named = await stack.connect("facebook", page_id="p2")
    assert named["status"] == "connected" and named["account_id"] in ids
    assert "account_ids" not in named
    missing = await stack.connect("facebook", page_id="p3")
    assert missing["error"] == "wrong_account"


async def test_a_reconnect_without_a_refresh_token_keeps_the_stored_one(
    stack: Stack, pool: asyncpg.Pool, vault: Vault, import_lines: Any
) -> None:
    who = user("linkedin")
    [account_id] = await import_lines(
        "acme",
        [
            {
                "platform": "linkedin",
                "platform_user_id": f"urn:li:person:{who['id']}",
                "username": "old",
                "display_name": "Old",
                "access_token": "old-access",
                "refresh_token": "stored-refresh",
            }
        ],
    )
    await stack.login("linkedin", who)
    landed = await stack.connect("linkedin", account_id=account_id)
    assert landed["account_id"] == account_id, landed
    row = await pool.fetchrow(
        "SELECT key_id, sealed, has_refresh FROM account_tokens WHERE account_id = $1", account_id
    )
    access, refresh = vault.open_tokens(account_id, Sealed(row["key_id"], row["sealed"]))
    assert access != "old-access"
    assert (refresh, row["has_refresh"]) == ("stored-refresh", True)


def test_sandbox_and_service_agree_on_app_credentials_without_configuration() -> None:
    from service.platforms.config import app_credentials

    service = PlatformSettings(sandbox_url="http://sandbox:1")
    sandbox = app_credentials(PlatformSettings())
    assert service.twitter_client_id == sandbox["twitter"][0]
    assert service.instagram_client_secret.get_secret_value() == sandbox["instagram"][1]
    explicit = PlatformSettings(sandbox_url="http://sandbox:1", tiktok_client_key="mine")
    assert explicit.tiktok_client_key == app_credentials(explicit)["tiktok"][0] == "mine"
