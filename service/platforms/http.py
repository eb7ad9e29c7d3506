"""What every adapter shares: one request with a timeout, the answers all platforms mean
alike (no answer, 429, 5xx), retry-after headers, and small builders for results.

Nothing here logs, and no exception leaves ``HTTPAdapter.call``: a token in a URL or a
body can never reach a traceback or a log line from this module.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp
import orjson

from service.platforms.base import (
    CheckResult,
    PlatformAdapter,
    RevokeOutcome,
    RevokeResult,
    TokenOutcome,
    TokenSet,
)

_EPOCH_FLOOR = 1_000_000_000  # a reset value this large is an epoch timestamp, not a delta
_META_USAGE_HEADERS = ("x-business-use-case-usage", "x-app-usage", "x-page-usage")


@dataclass(frozen=True, slots=True)
class Reply:
    """One platform answer. ``status`` 0 and ``failure`` set when no answer came."""

    status: int
    body: Any = field(default=None, repr=False)  # parsed JSON; refresh bodies hold tokens
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    failure: str | None = None  # "timeout" | "connection_error"


class Transport(Protocol):
    """Another HTTP client for `HTTPAdapter.call` (the worker's: service/platforms/reqwest.py)."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        data: Mapping[str, str] | None,
        timeout_seconds: float,
        json: Any = None,
    ) -> Reply: ...


class HTTPAdapter(PlatformAdapter):
    """A PlatformAdapter that talks HTTP through the shared session, with a timeout, or
    through `transport` when one is set (the same request, the same Reply)."""

    transport: Transport | None = None

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        credentials: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(session, base_url, credentials)
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply:
        if self.transport is not None:
            return await self.transport.request(
                method,
                url,
                headers=headers,
                params=params,
                data=data,
                timeout_seconds=self.timeout.total or 10.0,
                json=json,
            )
        try:
            async with self.session.request(
                method,
                url,
                headers=headers,
                params=params,
                data=data,
                json=json,
                timeout=self.timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                return Reply(resp.status, parse_json(raw), resp.headers)
        except TimeoutError:
            return Reply(0, failure="timeout")
        except aiohttp.ClientError:
            return Reply(0, failure="connection_error")


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def dig(body: Any, *path: str) -> Any:
    """``body[path[0]][path[1]]...`` or None when any step is missing or not an object."""
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


# --- results ---------------------------------------------------------------------------


def valid(reply: Reply, new_tokens: TokenSet | None = None) -> CheckResult:
    return CheckResult(TokenOutcome.valid, http_status=reply.status, new_tokens=new_tokens)


def dead(reason: str, reply: Reply, code: str | None, *, try_refresh: bool = False) -> CheckResult:
    return CheckResult(
        TokenOutcome.dead,
        reason=reason,
        error_code=code,
        http_status=reply.status,
        try_refresh=try_refresh,
    )


def unknown(
    reply: Reply,
    code: str | None,
    reason: str = "unexpected_response",
    *,
    try_refresh: bool = False,
) -> CheckResult:
    return CheckResult(
        TokenOutcome.unknown,
        reason=reason,
        error_code=code,
        http_status=reply.status,
        try_refresh=try_refresh,
    )


def later(
    reason: str,
    reply: Reply,
    code: str | None = None,
    *,
    platform_wide: bool = False,
    retry_after: float | None = None,
) -> CheckResult:
    return CheckResult(
        TokenOutcome.transient,
        reason=reason,
        error_code=code,
        http_status=reply.status or None,
        retry_after=retry_after if retry_after is not None else retry_after_seconds(reply.headers),
        platform_wide=platform_wide,
    )


def transient(reply: Reply) -> CheckResult | None:
    """No answer, 429 or 5xx: transient on every platform, whatever the body says."""
    if reply.failure:
        return later(reply.failure, reply)
    if reply.status == 429:
        return later("rate_limited", reply)
    if reply.status >= 500:
        return later("server_error", reply)
    return None


def as_revoke(result: CheckResult) -> RevokeResult:
    """Revoke answers reuse the check classifiers: dead means the token was dead already."""
    outcome = {
        TokenOutcome.valid: RevokeOutcome.revoked,
        TokenOutcome.dead: RevokeOutcome.already_invalid,
        TokenOutcome.transient: RevokeOutcome.transient,
        TokenOutcome.unknown: RevokeOutcome.failed,
    }[result.outcome]
    code = result.reason if result.outcome is TokenOutcome.transient else result.error_code
    return RevokeResult(outcome, code, result.http_status, result.retry_after)


def expired_or_revoked(tokens: TokenSet) -> str:
    """A 401 that does not say which: past the known expiry it is expiry, before it revocation."""
    if tokens.access_expires_at is not None and tokens.access_expires_at <= datetime.now(UTC):
        return "token_expired"
    return "token_revoked"


def expires_in(seconds: Any) -> datetime | None:
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return datetime.now(UTC) + timedelta(seconds=seconds)
    return None


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT, read without verifying it (only to schedule the refresh)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return datetime.fromtimestamp(float(claims["exp"]), UTC)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def seconds_until_midnight(tz: str = "UTC") -> float:
    now = datetime.now(ZoneInfo(tz))
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


# --- retry-after -----------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from the first header that says: ``Retry-After`` (seconds or
    HTTP date), ``RateLimit-Reset`` (delta, or epoch as Bluesky sends it),
    ``x-rate-limit-reset`` / ``X-RateLimit-Reset`` (epoch on X and GoToSocial, ISO 8601 on
    Mastodon), Meta usage headers (``estimated_time_to_regain_access`` minutes)."""
    now = time.time() if now is None else now
    if (value := headers.get("Retry-After")) is not None:
        return _delta_or_date(value, now)
    for name in ("RateLimit-Reset", "x-rate-limit-reset", "X-RateLimit-Reset"):
        if (value := headers.get(name)) is not None:
            return _reset(value, now)
    return _meta_regain(headers)


def _delta_or_date(value: str, now: float) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _reset(value: str, now: float) -> float | None:
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        try:
            return max(0.0, datetime.fromisoformat(value).timestamp() - now)
        except ValueError:
            return None
    return max(0.0, number - now) if number >= _EPOCH_FLOOR else max(0.0, number)


def _meta_regain(headers: Mapping[str, str]) -> float | None:
    minutes: list[float] = []
    for name in _META_USAGE_HEADERS:
        if (value := headers.get(name)) is not None:
            _collect_regain(parse_json(value.encode()), minutes)
    longest = max(minutes, default=0.0)
    return longest * 60 if longest > 0 else None


def _collect_regain(node: Any, into: list[float]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "estimated_time_to_regain_access" and isinstance(value, int | float):
                into.append(float(value))
            else:
                _collect_regain(value, into)
    elif isinstance(node, list):
        for item in node:
            _collect_regain(item, into)
