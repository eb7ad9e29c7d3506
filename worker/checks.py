"""One account's check: decide expired / refresh / verify, call the platform, and turn the
answer into the row the batch writes. Only this module decides what an outcome does."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from service.core.fingerprints import refresh_fingerprints
from service.core.repository import sweeps
from service.core.repository.sweeps import Outcome
from service.core.vault import Sealed, VaultError
from service.platforms.base import (
    AccountRef,
    CheckResult,
    PlatformAdapter,
    TokenOutcome,
    TokenSet,
    conclude_after_refresh,
)
from worker.limits import PlatformPaused
from worker.revoke import revoke_tokens_of_disconnected
from worker.runtime import Runtime, runtime

log = logging.getLogger("octopost.checks")

REFRESH_LOCK = "octopost:refresh-lock:{}"
REFRESH_LOCK_MS = 60_000
NEVER = timedelta(days=3650)
# Release the refresh lock only if we still own it.
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"

STATUS_BY_DEAD_REASON = {
    "token_expired": "expired",
    "refresh_failed": "expired",
    "token_revoked": "revoked",
}


@dataclass(slots=True)
class Checked:
    outcome: Outcome
    refreshed: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


def _jitter(seconds: float) -> timedelta:
    # +-10 %, so accounts imported together do not stay in lockstep forever
    return timedelta(seconds=seconds * random.uniform(0.9, 1.1))


def _backoff(rt: Runtime, failures: int) -> float:
    s = rt.settings
    return float(min(s.backoff_max_seconds, s.backoff_base_seconds * 2 ** max(0, failures - 1)))


def _next_valid_check(
    rt: Runtime,
    now: datetime,
    access_expires_at: datetime | None,
    can_refresh: bool,
    margin: timedelta,
) -> datetime:
    when = now + _jitter(rt.settings.check_interval_seconds)
    if access_expires_at is not None:
        # with a refresh grant: come back in time to refresh; without: right after expiry,
        # so a dead token is not reported active for long
        due = (
            access_expires_at - margin if can_refresh else access_expires_at + timedelta(seconds=1)
        )
        when = min(when, max(due, now + timedelta(seconds=60)))
    return when


def decide(
    rt: Runtime,
    row: asyncpg.Record,
    result: CheckResult,
    *,
    now: datetime,
    access_expires_at: datetime | None,
    can_refresh: bool,
    margin: timedelta = timedelta(0),
    source: str = "check",
) -> Outcome:
    """Map a platform answer onto the account's new health row (and its event).

    ``source`` says which call found a dead token (``check`` or ``refresh``); the
    account.deactivated webhook carries it."""
    was_active: bool = row["is_active"]
    status: str = row["health_status"]
    failures: int = row["transient_failures"]
    if result.outcome is TokenOutcome.valid:
        return Outcome(
            row["id"],
            "valid",
            "healthy",
            None,
            True,
            _next_valid_check(rt, now, access_expires_at, can_refresh, margin),
            0,
            None,
            None if was_active else "reactivated",
        )
    if result.outcome is TokenOutcome.dead:
        reason = result.reason or "token_revoked"
        return Outcome(
            row["id"],
            "dead",
            STATUS_BY_DEAD_REASON.get(reason, "deactivated"),
            reason,
            False,
            # a dead token stays dead until the customer reconnects (which re-arms checks)
            now + NEVER,
            failures,
            result.error_code,
            "deactivated",
            source,
        )
    if result.outcome is TokenOutcome.transient:
        failures += 1
        wait = max(_backoff(rt, failures), result.retry_after or 0.0)
        if failures >= rt.settings.degraded_after_failures and status in ("healthy", "unchecked"):
            status = "degraded"
        return Outcome(
            row["id"],
            "transient",
            status,
            result.reason,
            None,
            now + _jitter(wait),
            failures,
            result.error_code,
            None,
        )
    # unknown: change nothing about the account's standing; look again later
    log.warning(
        "unexpected platform answer account_id=%s platform=%s status=%s error_code=%s",
        row["id"],
        row["platform"],
        result.http_status,
        result.error_code,
    )
    wait = max(_backoff(rt, failures + 1), result.retry_after or 0.0)
    return Outcome(
        row["id"],
        "unknown",
        status,
        result.reason,
        None,
        now + _jitter(wait),
        failures,
        result.error_code,
        None,
    )


def skipped(row: asyncpg.Record, until: datetime) -> Outcome:
    """Not checked (its platform is paused): the lease is released, nothing else changes."""
    return Outcome(
        row["id"],
        "skipped",
        row["health_status"],
        None,
        None,
        until,
        row["transient_failures"],
        None,
        None,
    )


async def _call(rt: Runtime, platform: str, op: str, call: Any) -> CheckResult:
    started = time.perf_counter()
    result: CheckResult = await rt.limits.call(platform, call)
    rt.metrics.call_took(platform, time.perf_counter() - started)
    if (
        result.outcome is TokenOutcome.transient
        and result.retry_after
        and (result.platform_wide or result.http_status == 429)
    ):
        await rt.limits.pause(platform, result.retry_after)
        log.info("platform paused platform=%s seconds=%.0f op=%s", platform, result.retry_after, op)
    return result


async def refresh_tokens(
    rt: Runtime, adapter: PlatformAdapter, account: AccountRef, tokens: TokenSet, generation: int
) -> tuple[CheckResult, bool]:
    """Refresh with one refresher per account; returns (result, stored_new_tokens)."""
    lock_key = REFRESH_LOCK.format(account.account_id)
    owner = secrets.token_hex(8)
    if not await rt.redis.set(lock_key, owner, nx=True, px=REFRESH_LOCK_MS):
        return CheckResult(
            TokenOutcome.transient, reason="refresh_in_progress", retry_after=60.0
        ), False
    try:
        # Whoever held the lock before us may have refreshed already: the tokens we read
        # then are spent (a rotating platform would refuse them) and a second call is waste.
        current = await sweeps.read_tokens(rt.pool, account.account_id)
        if current is None or current["generation"] != generation:
            return CheckResult(TokenOutcome.valid, reason="rotated_elsewhere"), False
        result = await _call(
            rt, account.platform, "refresh", lambda: adapter.refresh(account, tokens)
        )
        if result.outcome is TokenOutcome.valid and result.new_tokens is not None:
            new = result.new_tokens
            # never replace a refresh token with nothing: platforms that do not rotate
            # simply omit it from the answer
            refresh = new.refresh_token or tokens.refresh_token
            sealed = rt.vault.seal_tokens(account.account_id, new.access_token, refresh)
            # a rotated refresh token must still be found by a RISC notice naming it
            refresh_digest, refresh_prefix_digest = refresh_fingerprints(refresh)
            stored = await sweeps.store_refreshed(
                rt.pool,
                account.account_id,
                generation,
                key_id=sealed.key_id,
                sealed=sealed.blob,
                has_refresh=refresh is not None,
                access_expires_at=new.access_expires_at,
                refresh_expires_at=new.refresh_expires_at,
                scopes=list(new.scopes) if new.scopes else None,
                refresh_digest=refresh_digest,
                refresh_prefix_digest=refresh_prefix_digest,
            )
            if stored is None:
                log.info(
                    "refreshed tokens not stored (changed or disconnected meanwhile) account_id=%s",
                    account.account_id,
                )
                # A DELETE that won the race moved the old pair out; the new one must not
                # stay alive at the platform either.
                await revoke_tokens_of_disconnected(rt, account.account_id, sealed)
            return result, stored is not None
        if result.outcome is TokenOutcome.dead:
            # Rotating platforms reject a refresh token another worker already used. If the
            # stored tokens changed since we read them, the account is fine.
            current = await sweeps.read_tokens(rt.pool, account.account_id)
            if current is not None and current["generation"] != generation:
                return CheckResult(TokenOutcome.valid, reason="rotated_elsewhere"), False
        return result, False
    finally:
        await rt.redis.eval(_UNLOCK, 1, lock_key, owner)  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class TokenPlan:
    """What a check (or a credentials request) knows about an account's tokens before it
    calls anything: the decrypted set, and whether it can and should refresh."""

    account: AccountRef
    tokens: TokenSet
    expiry_passed: bool
    can_refresh: bool
    margin: timedelta
    refresh_due: bool  # it can, and its access token expires within the margin


def plan_tokens(
    rt: Runtime,
    adapter: PlatformAdapter,
    row: asyncpg.Record,
    access: str,
    refresh: str | None,
    now: datetime,
) -> TokenPlan:
    """The refresh rules, shared by the sweep's checks and the internal credentials API."""
    access_expires_at: datetime | None = row["access_expires_at"]
    refresh_expires_at: datetime | None = row["refresh_expires_at"]
    tokens = TokenSet(
        access, refresh, access_expires_at, refresh_expires_at, tuple(row["scopes"] or ())
    )
    account = AccountRef(row["id"], row["platform"], row["platform_user_id"], row["instance_url"])
    expiry_passed = access_expires_at is not None and access_expires_at <= now
    can_refresh = (
        adapter.supports_refresh
        and not (refresh_expires_at is not None and refresh_expires_at <= now)
        and (refresh is not None if adapter.refresh_needs_refresh_token else not expiry_passed)
    )
    margin = timedelta(
        seconds=max(rt.settings.refresh_margin_seconds, adapter.refresh_ahead_seconds)
    )
    refresh_due = (
        can_refresh and access_expires_at is not None and access_expires_at - now <= margin
    )
    return TokenPlan(account, tokens, expiry_passed, can_refresh, margin, refresh_due)


async def check_account(rt: Runtime, row: asyncpg.Record) -> Checked:
    now = _now()
    platform: str = row["platform"]
    adapter = rt.adapters[platform]
    if row["sealed"] is None:
        result = CheckResult(TokenOutcome.unknown, reason="no_tokens_stored")
        return Checked(decide(rt, row, result, now=now, access_expires_at=None, can_refresh=False))
    try:
        access, refresh = rt.vault.open_tokens(row["id"], Sealed(row["key_id"], row["sealed"]))
    except VaultError as exc:
        log.error("cannot open tokens account_id=%s error=%s", row["id"], exc)
        result = CheckResult(TokenOutcome.unknown, reason="tokens_unreadable")
        return Checked(decide(rt, row, result, now=now, access_expires_at=None, can_refresh=False))
    plan = plan_tokens(rt, adapter, row, access, refresh, now)
    account, tokens, margin = plan.account, plan.tokens, plan.margin
    access_expires_at = tokens.access_expires_at
    expiry_passed, can_refresh = plan.expiry_passed, plan.can_refresh
    refreshed = via_refresh = False
    if expiry_passed and not can_refresh:
        result = CheckResult(TokenOutcome.dead, reason="token_expired")
    elif plan.refresh_due:
        result, refreshed = await refresh_tokens(rt, adapter, account, tokens, row["generation"])
        via_refresh = True
    else:
        result = await _call(rt, platform, "verify", lambda: adapter.verify(account, tokens))
        if result.try_refresh and can_refresh:
            after, refreshed = await refresh_tokens(rt, adapter, account, tokens, row["generation"])
            result = conclude_after_refresh(result, after)
            via_refresh = True
    if refreshed and result.new_tokens is not None:
        access_expires_at = result.new_tokens.access_expires_at
    rt.metrics.checked(platform, result.outcome.value)
    outcome = decide(
        rt,
        row,
        result,
        now=now,
        access_expires_at=access_expires_at,
        can_refresh=can_refresh,
        margin=margin,
        source="refresh" if via_refresh else "check",
    )
    if refreshed and outcome.event is None:
        outcome = replace(outcome, event="refreshed")
    return Checked(outcome, refreshed)


async def _safe_check(rt: Runtime, row: asyncpg.Record) -> Checked:
    try:
        return await check_account(rt, row)
    except PlatformPaused as paused:
        return Checked(skipped(row, datetime.fromtimestamp(paused.until, UTC)))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one account's bug must not sink the batch
        log.exception("check failed account_id=%s platform=%s", row["id"], row["platform"])
        result = CheckResult(
            TokenOutcome.unknown, reason="check_error", error_code=type(exc).__name__
        )
        return Checked(
            decide(rt, row, result, now=_now(), access_expires_at=None, can_refresh=False)
        )


async def check_batch(ctx: dict[str, Any], sweep_id: int, account_ids: list[str]) -> dict[str, int]:
    """arq job: check the accounts this sweep leased, then write every outcome at once."""
    rt = runtime(ctx)
    rows = await sweeps.load_batch(rt.pool, sweep_id, account_ids)
    results = await asyncio.gather(*(_safe_check(rt, row) for row in rows))
    refreshed = sum(1 for r in results if r.refreshed)
    applied = await sweeps.apply_outcomes(
        rt.pool, sweep_id, [r.outcome for r in results], refreshed
    )
    # While the sweep is still claiming, its claimer closes it when claiming ends (the two
    # writes meet on the sweep row's lock, so one of them sees the other's); only the
    # batches reported after that may be the last.
    if not applied.claiming:
        await sweeps.finish_if_idle(rt.pool, sweep_id)
    return {"checked": applied.checked, "skipped": applied.skipped, "refreshed": refreshed}
