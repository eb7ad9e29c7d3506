"""Refresh with rotation, revoke, flaky platforms, timeouts, refused connections."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from service.core.ids import PLATFORMS
from service.platforms.base import (
    PlatformAdapter,
    RevokeOutcome,
    TokenOutcome,
    TokenSet,
    conclude_after_refresh,
)
from service.platforms.registry import build_adapters

from .rows import Sandbox, account, sandbox_settings


def token(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("platform", ["twitter", "tiktok", "bluesky"])
async def test_refresh_rotates_and_the_old_refresh_token_is_rejected(
    platform: str, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]
) -> None:
    adapter, ref = adapters[platform], account(platform)
    old = TokenSet(token("at"), token("rt"))

    first = await adapter.refresh(ref, old)
    assert first.outcome is TokenOutcome.valid, first
    new = first.new_tokens
    assert new is not None
    assert new.refresh_token not in (None, old.refresh_token)
    assert new.access_expires_at is not None
    assert new.access_expires_at > datetime.now(UTC) + timedelta(minutes=100)

    # the loser of a refresh race: its refresh token was rotated away
    again = await adapter.refresh(ref, old)
    assert again.outcome is not TokenOutcome.valid, again
    assert again.reason in ("refresh_failed", "refresh_rejected")

    assert (await adapter.refresh(ref, new)).outcome is TokenOutcome.valid
    assert (await adapter.verify(ref, new)).outcome is TokenOutcome.valid


@pytest.mark.parametrize("platform", ["linkedin", "youtube"])
async def test_refresh_without_rotation_keeps_the_refresh_token(
    platform: str, adapters: dict[str, PlatformAdapter]
) -> None:
    adapter, ref = adapters[platform], account(platform)
    tokens = TokenSet(token("at"), token("rt"))
    for _ in range(2):
        result = await adapter.refresh(ref, tokens)
        assert result.outcome is TokenOutcome.valid, result
        assert result.new_tokens is not None
        assert result.new_tokens.refresh_token == tokens.refresh_token
        assert result.new_tokens.access_token != tokens.access_token


async def test_tiktok_refresh_reports_both_expiries(adapters: dict[str, PlatformAdapter]) -> None:
    result = await adapters["tiktok"].refresh(account("tiktok"), TokenSet("a", token("rt")))
    assert result.new_tokens is not None
    assert result.new_tokens.refresh_expires_at is not None
    assert result.new_tokens.scopes == ("user.info.basic", "video.publish")


async def test_dead_verify_and_refused_refresh_are_dead_together(
    sandbox: Sandbox, adapters: dict[str, PlatformAdapter]
) -> None:
    x, ref = adapters["twitter"], account("twitter")
    tokens = TokenSet(token("at"), token("rt"))
    await sandbox.set(tokens.access_token, "revoked")
    await sandbox.set(tokens.refresh_token or "", "revoked")

    verify = await x.verify(ref, tokens)
    assert (verify.outcome, verify.try_refresh) == (TokenOutcome.dead, True)
    refresh = await x.refresh(ref, tokens)
    assert (refresh.outcome, refresh.reason) == (TokenOutcome.unknown, "refresh_rejected")
    final = conclude_after_refresh(verify, refresh)
    assert (final.outcome, final.reason, final.error_code) == (
        TokenOutcome.dead,
        "refresh_failed",
        "invalid_request",
    )


async def test_trap_verify_never_promotes_a_refused_refresh(
    sandbox: Sandbox, adapters: dict[str, PlatformAdapter]
) -> None:
    """Bluesky's 400 ExpiredToken on the access token only asks for a refresh."""
    bsky, ref = adapters["bluesky"], account("bluesky")
    tokens = TokenSet(token("at"), token("rt"))
    await sandbox.set(tokens.access_token, "expired")
    verify = await bsky.verify(ref, tokens)
    assert (verify.outcome, verify.try_refresh) == (TokenOutcome.unknown, True)
    refresh = await bsky.refresh(ref, tokens)
    assert refresh.outcome is TokenOutcome.valid
    assert conclude_after_refresh(verify, refresh) is refresh


@pytest.mark.parametrize("platform", ["twitter", "bluesky", "tiktok", "youtube", "facebook"])
async def test_a_revoked_token_is_dead_afterwards(
    platform: str, adapters: dict[str, PlatformAdapter]
) -> None:
    adapter, ref = adapters[platform], account(platform)
    shared = token("t")
    tokens = TokenSet(shared, shared)
    assert (await adapter.revoke(ref, tokens)).outcome is RevokeOutcome.revoked
    after = await adapter.verify(ref, tokens)
    assert after.outcome in (TokenOutcome.dead, TokenOutcome.unknown)  # bluesky: refresh decides
    assert after.outcome is TokenOutcome.dead or after.try_refresh


@pytest.mark.parametrize("platform", ["mastodon", "threads", "instagram", "facebook"])
async def test_unsupported_calls_make_no_request(
    platform: str, sandbox: Sandbox, adapters: dict[str, PlatformAdapter]
) -> None:
    adapter, tokens = adapters[platform], TokenSet(token("t"))
    if not adapter.supports_refresh:
        result = await adapter.refresh(account(platform), tokens)
        assert (result.outcome, result.reason) == (TokenOutcome.unknown, "refresh_unsupported")
    if not adapter.supports_revoke:
        revoked = await adapter.revoke(account(platform), tokens)
        assert revoked.outcome is RevokeOutcome.unsupported
    if adapter.supports_refresh and adapter.supports_revoke:
        pytest.fail(f"{platform} supports everything")
    assert await sandbox.calls(tokens.access_token) == []


async def test_flaky_token_fails_then_recovers(
    sandbox: Sandbox, adapters: dict[str, PlatformAdapter]
) -> None:
    tokens = TokenSet(token("flaky"))
    await sandbox.set(tokens.access_token, "flaky", fail_times=2)
    outcomes = [(await adapters["mastodon"].verify(account("mastodon"), tokens)) for _ in range(3)]
    assert [(r.outcome, r.reason) for r in outcomes] == [
        (TokenOutcome.transient, "server_error"),
        (TokenOutcome.transient, "server_error"),
        (TokenOutcome.valid, None),
    ]
    assert [c["status"] for c in await sandbox.calls(tokens.access_token)] == [503, 503, 200]


async def test_slow_platform_times_out(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    adapters = build_adapters(http, sandbox_settings(sandbox.url, request_timeout_seconds=0.2))
    tokens = TokenSet(token("slow"), token("slow"))
    await sandbox.set(tokens.access_token, "slow", delay_ms=600)
    await sandbox.set(tokens.refresh_token or "", "slow", delay_ms=600)
    started = time.monotonic()
    verify = await adapters["twitter"].verify(account("twitter"), tokens)
    refresh = await adapters["tiktok"].refresh(account("tiktok"), tokens)
    revoke = await adapters["youtube"].revoke(account("youtube"), tokens)
    assert time.monotonic() - started < 1.5
    assert (verify.outcome, verify.reason) == (TokenOutcome.transient, "timeout")
    assert (refresh.outcome, refresh.reason) == (TokenOutcome.transient, "timeout")
    assert (revoke.outcome, revoke.error_code) == (RevokeOutcome.transient, "timeout")


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_connection_refused_is_transient(
    platform: str, closed_port: int, http: aiohttp.ClientSession
) -> None:
    adapter = build_adapters(http, sandbox_settings(f"http://127.0.0.1:{closed_port}"))[platform]
    tokens = TokenSet(token("t"), token("rt"))
    verify = await adapter.verify(account(platform), tokens)
    assert (verify.outcome, verify.reason, verify.http_status) == (
        TokenOutcome.transient,
        "connection_error",
        None,
    )
    if adapter.supports_refresh:
        refresh = await adapter.refresh(account(platform), tokens)
        assert (refresh.outcome, refresh.reason) == (TokenOutcome.transient, "connection_error")
    if adapter.supports_revoke:
        revoke = await adapter.revoke(account(platform), tokens)
        assert (revoke.outcome, revoke.error_code) == (RevokeOutcome.transient, "connection_error")
