"""Platform push notices end to end: the sandbox builds and signs each notice as its platform
documents it and POSTs it over real HTTP to the API's receiver; the inbox row, the arq job
(a burst worker against real Redis) and the accounts as the public API shows them."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from arq.connections import ArqRedis

from devkit.embedded import EmbeddedRedis, free_port
from devkit.sandbox.credentials import push_receiver_settings
from service.api.app import create_app
from service.api.push.meta import parse_signed_request
from service.api.server import AppRunner
from service.core.fingerprints import sha512_sha512
from service.core.jobs import enqueue_sweep
from service.core.settings import Settings
from service.core.vault import Sealed, Vault
from service.platforms.config import PlatformSettings
from tests.conftest import with_tokens
from tests.worker.revocation_helpers import (
    Sandbox,
    drain,
    events,
    running_sandbox,
    sandbox_platforms,
    wait_for,
)
from worker.notices import relay_platform_notices
from worker.runtime import CTX_KEY, Runtime


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox() as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
async def fresh(sandbox: Sandbox, pool: asyncpg.Pool, redis: ArqRedis) -> None:
    await sandbox.reset()


@pytest.fixture
def platforms(sandbox: Sandbox) -> PlatformSettings:
    return sandbox_platforms(sandbox)


@pytest.fixture
def psettings(settings: Settings, sandbox: Sandbox) -> Settings:
    return settings.model_copy(
        update={
            **push_receiver_settings(sandbox.url),
            "google_risc_jwks_refetch_seconds": 0.0,
            "public_base_url": "https://accounts.octopost.example",
            "notice_relay_grace_seconds": 0.0,
            "sweep_interval_minutes": 0,
        }
    )


class Service:
    def __init__(self, base: str, http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
        self.base = base
        self.http = http
        self.sandbox = sandbox

    async def push(self, expect: int | None = None, **ask: Any) -> dict[str, Any]:
        async with self.http.post(
            f"{self.sandbox.url}/sandbox/push", json={"target": self.base, **ask}
        ) as r:
            out: dict[str, Any] = await r.json()
            assert r.status == 200, out
        if expect is not None:
            assert out["status"] == expect, out
        return out

    async def get(self, path: str, key: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.http.get(f"{self.base}{path}", headers=headers) as r:
            return r.status, await r.json()

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}{path}", **kwargs) as r:
            assert r.content_type == "application/json", await r.text()
            return r.status, await r.json()


async def start_service(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis | None, sandbox: Sandbox
) -> tuple[AppRunner, str]:
    runner = AppRunner(create_app(settings, pool=pool, redis=redis), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def service(
    psettings: Settings, pool: asyncpg.Pool, redis: ArqRedis, sandbox: Sandbox
) -> AsyncIterator[Service]:
    runner, base = await start_service(psettings, pool, redis, sandbox)
    try:
        async with aiohttp.ClientSession() as http:
            yield Service(base, http, sandbox)
    finally:
        await runner.cleanup()


def account(platform: str, user: str, **extra: Any) -> dict[str, Any]:
    return with_tokens(
        {"platform": platform, "platform_user_id": user, "username": user, "display_name": user},
        **extra,
    )


async def state(pool: asyncpg.Pool, account_id: str) -> tuple[bool, str, str | None, bool]:
    """(is_active, health_status, health_reason, has tokens)"""
    row = await pool.fetchrow(
        "SELECT a.is_active, a.health_status, a.health_reason, t.account_id IS NOT NULL AS tok"
        " FROM accounts a LEFT JOIN account_tokens t ON t.account_id = a.id WHERE a.id = $1",
        account_id,
    )
    assert row is not None
    return row["is_active"], row["health_status"], row["health_reason"], row["tok"]


HEALTHY = (True, "unchecked", None, True)


async def inbox(pool: asyncpg.Pool) -> list[tuple[str, str, int | None]]:
    rows = await pool.fetch("SELECT id, status, matched FROM platform_notices ORDER BY id")
    return [(r["id"], r["status"], r["matched"]) for r in rows]


async def public_active(service: Service, key: str, account_id: str) -> bool:
    status, body = await service.get(f"/v1/accounts/{account_id}", key)
    assert status == 200, body
    active: bool = body["is_active"]
    return active


# --- Meta ------------------------------------------------------------------------------------


def test_signed_request_test_vector() -> None:
    # PLATFORM-AUTH.md 2.2: the bk-rs test vector, secret "key"
    signed = (
        "Mf_s6nTb38UYqioBmPqu0Ewm9souPZB9I2fIGwV729U."
        "eyJ1c2VyX2lkIjoiMCIsImFsZ29yaXRobSI6IkhNQUMtU0hBMjU2IiwiaXNzdWVkX2F0IjoxNjI0MjQ0MTU2fQ"
    )
    assert parse_signed_request(signed, "key") == {
        "user_id": "0",
        "algorithm": "HMAC-SHA256",
        "issued_at": 1624244156,
    }


async def test_facebook_deauthorize_flips_every_page_of_the_user_in_every_workspace(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
    sandbox: Sandbox,
) -> None:
    key_a = await make_key("acme")
    key_b = await make_key("globex")
    page1, page2, other = await import_lines(
        "acme",
        [
            account("facebook", "page-1", authorizing_user_id="fbu-1"),
            account("facebook", "page-2", authorizing_user_id="fbu-1"),
            account("facebook", "page-3", authorizing_user_id="fbu-2"),
        ],
    )
    (page1_b, insta_b) = await import_lines(
        "globex",
        [
            account("facebook", "page-1", authorizing_user_id="fbu-1"),
            account("instagram", "fbu-1"),  # another platform's id space: untouched
        ],
    )
    started = time.monotonic()
    sent = await service.push(200, platform="facebook", event="deauthorize", user_id="fbu-1")
    assert sent["response"] == {"received": True}
    await drain(psettings, platforms)
    for key, account_id in ((key_a, page1), (key_a, page2), (key_b, page1_b)):
        await wait_for(functools.partial(_inactive, service, key, account_id), what="flip")
    assert time.monotonic() - started < 10
    for account_id in (page1, page2, page1_b):
        assert await state(pool, account_id) == (
            False,
            "revoked",
            "deauthorized_at_platform",
            False,
        )
    for account_id in (other, insta_b):
        assert await state(pool, account_id) == HEALTHY
    assert await public_active(service, key_a, other)

    ((notice_id, status, matched),) = await inbox(pool)
    assert (status, matched) == ("applied", 3)
    assert notice_id.startswith("facebook:deauthorize:")
    assert await events(pool, page1) == [
        ("connected", None),
        ("deactivated", "deauthorized_at_platform"),
    ]
    status_code, trail = await service.get(f"/v1/accounts/{page1}/events", key_a)
    assert status_code == 200
    detail = trail["events"][0]["detail"]
    assert detail["notice_id"] == notice_id
    assert detail["platform_event"] == "deauthorize"
    # the platform already killed the tokens: no revoke call was made
    assert await sandbox.calls() == []


async def _inactive(service: Service, key: str, account_id: str) -> bool:
    return not await public_active(service, key, account_id)


async def test_a_redelivered_notice_changes_nothing_and_is_still_200(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    await make_key("acme")
    (page,) = await import_lines("acme", [account("facebook", "p", authorizing_user_id="u")])
    ask = {"platform": "facebook", "event": "deauthorize", "user_id": "u", "timestamp": 1700000000}
    await service.push(200, **ask)
    await drain(psettings, platforms)
    before = await inbox(pool)
    trail = await events(pool, page)
    await service.push(200, **ask)  # byte for byte the same signed_request
    await drain(psettings, platforms)
    assert await inbox(pool) == before
    assert await events(pool, page) == trail


@pytest.mark.parametrize("platform", ["instagram", "threads"])
async def test_instagram_and_threads_deauthorize_with_their_own_secret(
    platform: str,
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    await make_key("acme")
    mine, other = await import_lines("acme", [account(platform, "u-1"), account(platform, "u-2")])
    facebook_secret = psettings.facebook_app_secret.get_secret_value()
    out = await service.push(
        401, platform=platform, event="deauthorize", user_id="u-1", secret=facebook_secret
    )
    assert out["response"]["error"]["type"] == "invalid_signature"
    assert await inbox(pool) == []
    await service.push(200, platform=platform, event="deauthorize", user_id="u-1")
    await drain(psettings, platforms)
    assert await state(pool, mine) == (False, "revoked", "deauthorized_at_platform", False)
    assert await state(pool, other) == HEALTHY


async def test_meta_refusals_record_nothing(
    service: Service, make_key: Any, import_lines: Any, pool: asyncpg.Pool
) -> None:
    await make_key("acme")
    (page,) = await import_lines("acme", [account("facebook", "p", authorizing_user_id="u")])
    ask = {"platform": "facebook", "event": "deauthorize", "user_id": "u"}
    forged = await service.push(401, **ask, secret="not-the-app-secret")
    assert forged["response"]["error"]["type"] == "invalid_signature"
    unsigned = await service.push(400, **ask, unsigned=True)
    assert unsigned["response"]["error"]["type"] == "invalid_request"
    other_alg = await service.push(400, **ask, algorithm="HMAC-SHA1")
    assert "HMAC-SHA256" in other_alg["response"]["error"]["message"]
    for body in (
        {"signed_request": "garbage"},
        {"signed_request": "!!!.???"},
        {"other": "x"},
    ):
        status, err = await service.post("/platform-events/facebook/deauthorize", data=body)
        assert status == 400, err
        assert set(err["error"]) == {"type", "message"}
    status, err = await service.post(
        "/platform-events/facebook/deauthorize", json={"signed_request": "a.b"}
    )
    assert status == 400, err
    status, err = await service.post("/platform-events/linkedin/deauthorize", data={"a": "b"})
    assert status == 404, err
    assert await inbox(pool) == []
    assert await state(pool, page) == HEALTHY


async def test_data_deletion_disconnects_erases_and_answers_a_status_url(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    key = await make_key("acme")
    gone, kept = await import_lines(
        "acme",
        [
            account(
                "facebook", "page-1", authorizing_user_id="fbu-1", avatar_url="https://x/a.jpg"
            ),
            account("facebook", "page-2", authorizing_user_id="fbu-2"),
        ],
    )
    ask = {"platform": "facebook", "event": "data_deletion", "user_id": "fbu-1", "timestamp": 1}
    out = await service.push(200, **ask)
    code = out["response"]["confirmation_code"]
    assert out["response"] == {
        "url": f"https://accounts.octopost.example/platform-events/deletions/{code}",
        "confirmation_code": code,
    }
    status, body = await service.get(f"/platform-events/deletions/{code}")
    assert (status, body["status"], body["accounts_deleted"]) == (200, "pending", None)
    again = await service.push(200, **ask)
    assert again["response"] == out["response"]  # a redelivery gets the same code

    await drain(psettings, platforms)
    status, body = await service.get(f"/platform-events/deletions/{code}")
    assert status == 200
    assert body["status"] == "completed"
    assert body["accounts_deleted"] == 1
    assert body["platform"] == "facebook"
    assert body["completed_at"].endswith("Z")
    status, _ = await service.get(f"/v1/accounts/{gone}", key)
    assert status == 404
    status, listing = await service.get("/v1/accounts", key)
    assert [a["id"] for a in listing["accounts"]] == [kept]
    row = await pool.fetchrow("SELECT * FROM accounts WHERE id = $1", gone)
    assert row["disconnected_at"] is not None
    assert (row["username"], row["display_name"], row["avatar_url"]) == ("", "", None)
    assert row["authorizing_user_id"] is None
    assert (
        await pool.fetchval("SELECT count(*) FROM account_tokens WHERE account_id = $1", gone) == 0
    )
    assert await pool.fetchval("SELECT count(*) FROM revocations") == 0  # no platform call
    assert (await events(pool, gone))[-1] == ("disconnected", "platform_data_deletion")
    assert await state(pool, kept) == HEALTHY

    status, err = await service.get("/platform-events/deletions/nope")
    assert status == 404 and err["error"]["type"] == "not_found"


# --- TikTok ----------------------------------------------------------------------------------


async def test_tiktok_authorization_removed(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    await make_key("acme")
    await make_key("globex")
    (a,) = await import_lines("acme", [account("tiktok", "act.one")])
    (b, c) = await import_lines(
        "globex", [account("tiktok", "act.one"), account("tiktok", "act.deleted")]
    )
    await service.push(200, platform="tiktok", event="authorization.removed", user_id="act.one")
    await service.push(
        200, platform="tiktok", event="authorization.removed", user_id="act.deleted", reason=2
    )
    # other events are answered and ignored
    await service.push(200, platform="tiktok", event="video.publish.completed", user_id="act.one")
    assert len(await inbox(pool)) == 2
    await drain(psettings, platforms)
    assert await state(pool, a) == (False, "revoked", "deauthorized_at_platform", False)
    assert await state(pool, b) == (False, "revoked", "deauthorized_at_platform", False)
    assert await state(pool, c) == (False, "deactivated", "platform_account_deleted", False)
    detail = await pool.fetchval(
        "SELECT detail FROM account_events WHERE account_id = $1 AND kind = 'deactivated'", c
    )
    assert '"tiktok_reason": 2' in detail


async def test_tiktok_refusals_record_nothing(
    service: Service, make_key: Any, import_lines: Any, pool: asyncpg.Pool
) -> None:
    await make_key("acme")
    (a,) = await import_lines("acme", [account("tiktok", "act.one")])
    ask = {"platform": "tiktok", "event": "authorization.removed", "user_id": "act.one"}
    stale = await service.push(401, **ask, timestamp=int(time.time()) - 301)
    assert "timestamp" in stale["response"]["error"]["message"]
    await service.push(401, **ask, timestamp=int(time.time()) + 3600)
    await service.push(401, **ask, secret="wrong-secret")
    await service.push(401, **ask, unsigned=True)
    status, err = await service.post(
        "/platform-events/tiktok", data=b"{}", headers={"TikTok-Signature": "t=1,s=zz"}
    )
    assert status == 401, err
    assert await inbox(pool) == []
    assert await state(pool, a) == HEALTHY


# --- X ---------------------------------------------------------------------------------------


async def test_x_crc_and_oauth_revoke(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    await make_key("acme")
    mine, other = await import_lines("acme", [account("twitter", "111"), account("twitter", "222")])
    crc = await service.push(200, platform="twitter", event="crc")
    assert crc["crc_ok"] is True, crc
    status, err = await service.get("/platform-events/twitter")
    assert status == 400, err
    ask = {"platform": "twitter", "event": "oauth.revoke", "user_id": "111", "event_uuid": "59345"}
    await service.push(401, **ask, secret="wrong")
    await service.push(401, **ask, unsigned=True)
    assert await inbox(pool) == []
    await service.push(200, **ask)
    await service.push(200, **ask)  # X retries: same event_uuid
    assert [n[0] for n in await inbox(pool)] == ["twitter:59345"]
    await drain(psettings, platforms)
    assert await state(pool, mine) == (False, "revoked", "deauthorized_at_platform", False)
    assert await state(pool, other) == HEALTHY


# --- Google RISC -----------------------------------------------------------------------------


async def test_risc_events_by_google_sub_and_by_refresh_token(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    await make_key("acme")
    await make_key("globex")
    disabled, by_hash, by_prefix, untouched = await import_lines(
        "acme",
        [
            account("youtube", "UC-a", authorizing_user_id="g-sub-1", refresh_token="1//rt-a"),
            account(
                "youtube", "UC-b", authorizing_user_id="g-sub-2", refresh_token="1//0b-rt-bbbb-x"
            ),
            account(
                "youtube",
                "UC-c",
                authorizing_user_id="g-sub-3",
                refresh_token="1//0c-prefix-cc-rest",
            ),
            account(
                "youtube",
                "UC-d",
                authorizing_user_id="g-sub-4",
                refresh_token="1//0c-prefix-cc-other"[:15] + "Zrest",
            ),
        ],
    )
    (disabled_b,) = await import_lines(
        "globex", [account("youtube", "UC-a2", authorizing_user_id="g-sub-1")]
    )
    ok = await service.push(
        202, platform="youtube", event="account-disabled", user_id="g-sub-1", reason="hijacking"
    )
    assert ok["response"] == {"received": True}
    await service.push(
        202,
        platform="youtube",
        event="token-revoked",
        subject_type="oauth_token",
        token="1//0b-rt-bbbb-x",
        token_identifier_alg="hash_base64_sha512_sha512",
    )
    await service.push(
        202,
        platform="youtube",
        event="token-revoked",
        subject_type="oauth_token",
        token="1//0c-prefix-cc-rest",
        token_identifier_alg="prefix",
    )
    await service.push(202, platform="youtube", event="verification", user_id="x")
    assert len(await inbox(pool)) == 3  # verification is only logged
    await drain(psettings, platforms)
    for account_id in (disabled, disabled_b):
        assert await state(pool, account_id) == (
            False,
            "deactivated",
            "platform_account_disabled",
            False,
        )
    for account_id in (by_hash, by_prefix):
        assert await state(pool, account_id) == (
            False,
            "revoked",
            "token_revoked_at_platform",
            False,
        )
    assert await state(pool, untouched) == HEALTHY


async def test_risc_sessions_revoked_queues_a_check_instead_of_flipping(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
    sandbox: Sandbox,
) -> None:
    await make_key("acme")
    (channel,) = await import_lines(
        "acme",
        [account("youtube", "UC-s", authorizing_user_id="g-sub-s", access_token="yt-at-s")],
    )
    await pool.execute("UPDATE accounts SET next_check_at = now() + interval '1 day'")
    await service.push(202, platform="youtube", event="sessions-revoked", user_id="g-sub-s")
    await drain(psettings, platforms)
    sweep = await pool.fetchrow("SELECT * FROM sweeps")
    assert (sweep["trigger"], sweep["account_id"], sweep["status"]) == ("notice", channel, "done")
    assert sweep["checked"] == 1
    assert [c["token"] for c in await sandbox.calls()] == ["yt-at-s"]
    active, status, _, tokens = await state(pool, channel)
    assert (active, status, tokens) == (True, "healthy", True)


async def test_risc_refusals_record_nothing(
    service: Service, make_key: Any, import_lines: Any, pool: asyncpg.Pool, sandbox: Sandbox
) -> None:
    await make_key("acme")
    (channel,) = await import_lines("acme", [account("youtube", "UC-r", authorizing_user_id="g")])
    ask = {"platform": "youtube", "event": "tokens-revoked", "user_id": "g"}
    for bend, status in (
        ({"aud": "someone-elses-client"}, 400),
        ({"iss": "https://evil.example/"}, 400),
        ({"kid": "no-such-kid"}, 400),
        ({"alg": "none"}, 400),
        ({"forge": True}, 401),
    ):
        out = await service.push(status, **ask, **bend)
        assert set(out["response"]["error"]) == {"type", "message"}, (bend, out)
    for body in (b"", b"not a jwt", b"a.b.c", "é".encode()):
        code, err = await service.post("/platform-events/google", data=body)
        assert code == 400, (body, err)
    assert await inbox(pool) == []
    assert await state(pool, channel) == HEALTHY

    # a key added to the issuer's set after ours was cached: the unknown kid refetches once
    async with sandbox.http.post(f"{sandbox.url}/sandbox/risc/rotate") as r:
        assert r.status == 200
    await service.push(202, **ask)
    assert len(await inbox(pool)) == 1


async def test_unconfigured_receivers_are_404(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, sandbox: Sandbox
) -> None:
    runner, base = await start_service(settings, pool, redis, sandbox)
    try:
        async with aiohttp.ClientSession() as http:
            service = Service(base, http, sandbox)
            await service.push(404, platform="facebook", event="deauthorize", user_id="u")
            await service.push(404, platform="tiktok", event="authorization.removed", user_id="u")
            await service.push(404, platform="twitter", event="oauth.revoke", user_id="u")
            await service.push(404, platform="youtube", event="tokens-revoked", user_id="u")
    finally:
        await runner.cleanup()
    assert await inbox(pool) == []


# --- outages, reconnects, fingerprints ---------------------------------------------------------


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_redis_down_at_receipt_is_applied_after_it_returns(
    private_redis: EmbeddedRedis,
    psettings: Settings,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    sandbox: Sandbox,
    platforms: PlatformSettings,
) -> None:
    own = psettings.model_copy(update={"redis_url": private_redis.url})
    await make_key("acme")
    (a,) = await import_lines("acme", [account("tiktok", "act.offline")])
    runner, base = await start_service(own, pool, None, sandbox)
    try:
        async with aiohttp.ClientSession() as http:
            service = Service(base, http, sandbox)
            private_redis.stop()
            await service.push(
                200, platform="tiktok", event="authorization.removed", user_id="act.offline"
            )
    finally:
        await runner.cleanup()
    ((notice_id, status, _),) = await inbox(pool)
    assert status == "pending"
    private_redis.start()  # same port, empty: the job never reached a queue
    queue = ArqRedis.from_url(private_redis.url)
    try:
        rt = await Runtime.start(own, queue, platform_settings=platforms)
        try:
            assert await relay_platform_notices({CTX_KEY: rt, "redis": queue}) == {"queued": 1}
        finally:
            await rt.close()
        await drain(own, platforms)
    finally:
        await queue.aclose()
    assert await inbox(pool) == [(notice_id, "applied", 1)]
    assert await state(pool, a) == (False, "revoked", "deauthorized_at_platform", False)


async def test_reconnect_after_a_push_revocation_makes_it_active_again(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    key = await make_key("acme")
    (page,) = await import_lines("acme", [account("facebook", "p", authorizing_user_id="u")])
    await service.push(200, platform="facebook", event="deauthorize", user_id="u")
    await drain(psettings, platforms)
    assert not await public_active(service, key, page)
    (again,) = await import_lines("acme", [account("facebook", "p", access_token="fresh-at")])
    assert again == page
    assert await public_active(service, key, page)
    assert await state(pool, page) == HEALTHY
    # the reconnect kept the authorizing user: a later deauthorization still finds it (a
    # later one: Meta's signed_request names the second it was issued)
    later = int(time.time()) + 5
    await service.push(200, platform="facebook", event="deauthorize", user_id="u", timestamp=later)
    await drain(psettings, platforms)
    assert not await public_active(service, key, page)


async def test_a_notice_received_before_a_reconnect_does_not_undo_it(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
    redis: ArqRedis,
) -> None:
    key = await make_key("acme")
    (page,) = await import_lines("acme", [account("facebook", "p", authorizing_user_id="u")])
    await service.push(200, platform="facebook", event="deauthorize", user_id="u")
    await redis.flushdb()  # the job is lost (as with Redis)
    await import_lines("acme", [account("facebook", "p", access_token="fresh-at")])
    rt = await Runtime.start(psettings, redis, platform_settings=platforms)
    try:
        assert await relay_platform_notices({CTX_KEY: rt, "redis": redis}) == {"queued": 1}
    finally:
        await rt.close()
    await drain(psettings, platforms)
    ((_, status, matched),) = await inbox(pool)
    assert (status, matched) == ("applied", 0)
    assert await public_active(service, key, page)


async def test_refresh_tokens_are_fingerprinted_at_import_and_at_refresh(
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    vault: Vault,
    psettings: Settings,
    platforms: PlatformSettings,
    redis: ArqRedis,
) -> None:
    from datetime import UTC, datetime, timedelta

    from service.core.repository import sweeps

    await make_key("acme")
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    (a,) = await import_lines(
        "acme", [account("twitter", "rot", refresh_token="x-rt-rot", token_expires_at=soon)]
    )
    digest = await pool.fetchval(
        "SELECT refresh_digest FROM account_tokens WHERE account_id = $1", a
    )
    assert digest == sha512_sha512("x-rt-rot")
    sweep_id = await sweeps.create_sweep(pool, "manual", None, a)
    await enqueue_sweep(redis, sweep_id)
    await drain(psettings, platforms)
    row = await pool.fetchrow(
        "SELECT key_id, sealed, refresh_digest FROM account_tokens WHERE account_id = $1", a
    )
    _, refresh = vault.open_tokens(a, Sealed(row["key_id"], row["sealed"]))
    assert refresh is not None and refresh != "x-rt-rot"  # X rotates
    assert row["refresh_digest"] == sha512_sha512(refresh)


async def test_a_check_in_flight_cannot_undo_a_push_revocation(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    from datetime import UTC, datetime, timedelta

    from service.core.repository import sweeps

    await make_key("acme")
    (a,) = await import_lines("acme", [account("tiktok", "act.racing")])
    sweep_id = await sweeps.create_sweep(pool, "manual", None, a)
    claimed = await sweeps.claim(
        pool, sweep_id, manual=True, platform=None, account_id=a, limit=10, lease_seconds=600
    )
    assert claimed.ids == [a]  # the check has loaded the tokens and is waiting for the platform
    await service.push(200, platform="tiktok", event="authorization.removed", user_id="act.racing")
    await drain(psettings, platforms)
    assert await state(pool, a) == (False, "revoked", "deauthorized_at_platform", False)
    # ... and now the check's (stale) answer arrives: it must write nothing
    valid = sweeps.Outcome(
        a, "valid", "healthy", None, True, datetime.now(UTC) + timedelta(hours=6), 0, None, None
    )
    applied = await sweeps.apply_outcomes(pool, sweep_id, [valid], 0)
    assert (applied.checked, applied.skipped) == (0, 0)
    assert await state(pool, a) == (False, "revoked", "deauthorized_at_platform", False)


@pytest.mark.parametrize(
    "path",
    [
        "/platform-events/facebook/deauthorize",
        "/platform-events/instagram/data-deletion",
        "/platform-events/tiktok",
        "/platform-events/google",
        "/platform-events/twitter",
    ],
)
async def test_garbage_is_a_json_4xx_never_a_500(
    path: str, service: Service, pool: asyncpg.Pool
) -> None:
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (b"", {}),
        (b"\xff\xfe\x00", {"Content-Type": "application/octet-stream"}),
        (b"signed_request=" + b"A" * 9000, {"Content-Type": "application/x-www-form-urlencoded"}),
        (b'{"data": [1, 2]}', {"Content-Type": "application/json"}),
        (b"[]", {"Content-Type": "application/json", "TikTok-Signature": "t=,s="}),
        (b"x" * (70 * 1024), {"Content-Type": "application/json"}),
        (b"a=b", {"Content-Type": "multipart/form-data; boundary=zz"}),
    ]
    for body, headers in bodies:
        async with service.http.post(f"{service.base}{path}", data=body, headers=headers) as r:
            assert 400 <= r.status < 500, (body[:40], r.status, await r.text())
            assert r.content_type == "application/json"
            err = await r.json()
            assert set(err["error"]) == {"type", "message"}
    assert await inbox(pool) == []


async def test_octopost_notices_lists_the_inbox(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
    settings: Settings,
) -> None:
    from tests.worker.revocation_helpers import octopost

    await make_key("acme")
    await import_lines("acme", [account("twitter", "42")])
    ask = {"platform": "twitter", "event": "oauth.revoke"}
    await service.push(200, **ask, user_id="42", event_uuid="777")
    await drain(psettings, platforms)
    await service.push(200, **ask, user_id="43", event_uuid="778")  # no worker: stays pending
    done = octopost(settings, "notices", "--status", "applied")
    assert done.returncode == 0, done.stderr
    (header, line) = done.stdout.splitlines()
    assert header.split() == ["received", "platform", "event", "action", "status", "accounts", "id"]
    assert line.split()[1:] == ["twitter", "oauth.revoke", "revoke", "applied", "1", "twitter:777"]
    everything = octopost(settings, "notices")
    assert [row.split()[-1] for row in everything.stdout.splitlines()[1:]] == [
        "twitter:778",
        "twitter:777",
    ]


async def test_data_deletion_after_deauthorization_still_erases(
    service: Service,
    make_key: Any,
    import_lines: Any,
    pool: asyncpg.Pool,
    psettings: Settings,
    platforms: PlatformSettings,
) -> None:
    # Meta sends both when the user removes the app and asks for deletion: the first one
    # erases the tokens, the second must still find the account
    key = await make_key("acme")
    (page,) = await import_lines("acme", [account("facebook", "p", authorizing_user_id="u")])
    now = int(time.time())
    ask = {"platform": "facebook", "user_id": "u"}
    await service.push(200, **ask, event="deauthorize", timestamp=now)
    await drain(psettings, platforms)
    # another deauthorization (a later signed_request) finds it already so: no new event
    await service.push(200, **ask, event="deauthorize", timestamp=now + 1)
    await drain(psettings, platforms)
    assert sorted(m or 0 for _, _, m in await inbox(pool)) == [0, 1]
    assert await events(pool, page) == [
        ("connected", None),
        ("deactivated", "deauthorized_at_platform"),
    ]
    out = await service.push(200, **ask, event="data_deletion", timestamp=now + 2)
    await drain(psettings, platforms)
    status, body = await service.get(out["response"]["url"].split(".example", 1)[1])
    assert (status, body["status"], body["accounts_deleted"]) == (200, "completed", 1)
    status, _ = await service.get(f"/v1/accounts/{page}", key)
    assert status == 404
    row = await pool.fetchrow("SELECT username, display_name FROM accounts WHERE id = $1", page)
    assert tuple(row) == ("", "")
