"""One row of a platform's classification table, sent through the real adapter over real
HTTP to the sandbox."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from service.platforms.base import (
    AccountRef,
    CheckResult,
    PlatformAdapter,
    RevokeOutcome,
    RevokeResult,
    TokenOutcome,
    TokenSet,
)
from service.platforms.config import PlatformSettings


def sandbox_settings(url: str, **overrides: object) -> PlatformSettings:
    values: dict[str, object] = {
        "sandbox_url": url,
        "request_timeout_seconds": 5,
    }
    return PlatformSettings(**(values | overrides))  # type: ignore[arg-type]


@dataclass
class Sandbox:
    url: str
    http: aiohttp.ClientSession

    async def set(self, token: str, state: str, **extra: Any) -> None:
        body = {"token": token, "state": state, **extra}
        async with self.http.post(f"{self.url}/sandbox/tokens", json=body) as r:
            assert r.status == 200, await r.text()

    async def calls(self, token: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/sandbox/calls", params={"token": token}) as r:
            assert r.status == 200, await r.text()
            calls: list[dict[str, Any]] = (await r.json())["calls"]
            return calls


@dataclass
class Row:
    call: str  # verify | refresh | revoke
    state: str  # the sandbox state of the token
    outcome: TokenOutcome | RevokeOutcome
    reason: str | None = None
    status: int | None = None  # what the sandbox answered
    code: str | None = None  # the platform's error code, when the row pins it
    retry_after: float | Callable[[], float] | None = None
    platform_wide: bool = False
    try_refresh: bool = False
    expired: bool = False  # the stored access expiry has passed
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.call}-{self.state}" + ("-past-expiry" if self.expired else "")


def account(platform: str) -> AccountRef:
    return AccountRef(
        account_id="acc_1",
        platform=platform,
        platform_user_id="1784",
        instance_url="https://mastodon.example" if platform == "mastodon" else None,
    )


def fresh_tokens(platform: str, row: Row) -> TokenSet:
    """One token string as both access and refresh token, so its state applies anywhere."""
    token = f"{platform}-{row}-{uuid.uuid4().hex[:8]}"
    offset = timedelta(hours=-1 if row.expired else 1)
    return TokenSet(token, token, access_expires_at=datetime.now(UTC) + offset)


async def run_row(sandbox: Sandbox, adapter: PlatformAdapter, row: Row) -> None:
    tokens = fresh_tokens(adapter.name, row)
    if row.state != "valid":
        await sandbox.set(tokens.access_token, row.state, **row.extra)
    ref = account(adapter.name)
    result: CheckResult | RevokeResult
    if row.call == "verify":
        result = await adapter.verify(ref, tokens)
    elif row.call == "refresh":
        result = await adapter.refresh(ref, tokens)
    else:
        result = await adapter.revoke(ref, tokens)

    assert result.outcome == row.outcome, result
    if isinstance(result, CheckResult):
        assert result.reason == row.reason, result
        assert result.platform_wide == row.platform_wide, result
        assert result.try_refresh == row.try_refresh, result
        if row.outcome is TokenOutcome.valid and row.call == "refresh":
            assert result.new_tokens is not None
            assert result.new_tokens.access_token != tokens.access_token
    if row.code is not None:
        assert result.error_code == row.code, result
    expected = row.retry_after() if callable(row.retry_after) else row.retry_after
    if expected is None:
        assert result.retry_after is None, result
    else:
        assert result.retry_after == pytest.approx(expected, abs=3), result

    calls = await sandbox.calls(tokens.access_token)
    assert calls, "the sandbox saw no call carrying the token"
    assert calls[-1]["platform"] == adapter.name
    assert calls[-1]["status"] == result.http_status
    if row.status is not None:
        assert result.http_status == row.status, result
