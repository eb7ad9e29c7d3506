"""The one interface every platform adapter implements, and the outcome types it returns.

An adapter turns one platform call into exactly one ``TokenOutcome``. Adapters never touch
the database; ``worker/checks.py`` decides what to do with the result.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import aiohttp


class TokenOutcome(StrEnum):
    valid = "valid"
    dead = "dead"
    transient = "transient"
    unknown = "unknown"


class RevokeOutcome(StrEnum):
    revoked = "revoked"  # the platform confirmed the revocation
    already_invalid = "already_invalid"  # the platform says the token was dead already: done
    unsupported = "unsupported"  # the platform has no revoke endpoint
    transient = "transient"  # retry later
    failed = "failed"  # any other answer: give up (after logging the platform's code)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Decrypted tokens of one account. Never logged, never serialised into a response."""

    access_token: str
    refresh_token: str | None = None
    access_expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()

    def __repr__(self) -> str:  # keep tokens out of tracebacks and logs
        return (
            f"TokenSet(access_expires_at={self.access_expires_at!r}, "
            f"refresh={'yes' if self.refresh_token else 'no'}, scopes={self.scopes!r})"
        )


@dataclass(frozen=True, slots=True)
class AccountRef:
    """The non-secret facts an adapter may need about the account it checks."""

    account_id: str
    platform: str
    platform_user_id: str
    instance_url: str | None = None  # Mastodon instance or Bluesky PDS


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one verify or refresh call concluded.

    ``reason`` is our reason code (``token_expired``, ``token_revoked``, ``refresh_failed``,
    ``rate_limited``, ``server_error``, ``timeout``, ``connection_error``, ...).
    ``error_code`` is the platform's own code or error string, for logs.
    ``retry_after`` is in seconds, when the platform said how long to wait.
    ``platform_wide`` marks a throttle that applies to the whole app (Meta code 4, quotas):
    the caller pauses every check on that platform until ``retry_after`` has passed.
    ``try_refresh`` marks a verify answer that says the *access* token is no longer accepted
    (X 401, Bluesky 400 ExpiredToken, TikTok access_token_invalid, YouTube 401): when the
    account has a refresh grant the caller refreshes and the refresh decides; without one
    the ``outcome`` given here stands.
    ``new_tokens`` is set by a successful refresh (the rotated pair and expiries).
    """

    outcome: TokenOutcome
    reason: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    retry_after: float | None = None
    platform_wide: bool = False
    try_refresh: bool = False
    new_tokens: TokenSet | None = None


@dataclass(frozen=True, slots=True)
class RevokeResult:
    outcome: RevokeOutcome
    error_code: str | None = None
    http_status: int | None = None
    retry_after: float | None = None


def conclude_after_refresh(verify: CheckResult, refresh: CheckResult) -> CheckResult:
    """The outcome of a verify answer with ``try_refresh`` followed by the refresh it asked for.

    The refresh decides, with one rule from PLATFORMS.md: a documented dead answer to verify
    (``outcome`` dead) and a refresh refused with a 4xx other than 429 (``refresh_rejected``,
    whose body alone is UNCONFIRMED) are dead together.
    """
    if verify.outcome is TokenOutcome.dead and refresh.reason == "refresh_rejected":
        return replace(refresh, outcome=TokenOutcome.dead, reason="refresh_failed")
    return refresh


class PlatformAdapter(abc.ABC):
    """One platform. Subclasses set the class attributes and implement the calls it has."""

    name: str = ""
    supports_refresh: bool = False
    supports_revoke: bool = False
    # Meta's long-lived tokens refresh themselves (the access token is the grant), so they
    # need no stored refresh token, but can no longer be refreshed once expired.
    refresh_needs_refresh_token: bool = True
    # Refresh this long before expiry at the latest (on top of the worker's own margin):
    # a 60-day token should not be left to its last half hour.
    refresh_ahead_seconds: float = 0.0

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials or {}

    @abc.abstractmethod
    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult: ...

    async def refresh(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        return CheckResult(TokenOutcome.unknown, reason="refresh_unsupported")

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        return RevokeResult(RevokeOutcome.unsupported)
