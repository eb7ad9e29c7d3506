"""Issuing an account's credentials to the publisher: the one place a token leaves the service.

A token that expires within the refresh margin is refreshed first, through the worker's own
single-flight refresh (`worker.checks.refresh_tokens`: a Redis lock per account, the new pair
stored with a compare-and-swap on the token generation). Requests for the same account in one
process share one refresh; a process that finds another one (or the worker) refreshing waits
for it and serves what it stored. What the platform answered is written as a sweep would
write it (`worker.checks.decide`): a refresh refused for good deactivates the account with
its event and reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from service.api.errors import AccountInactive, ApiError, NotFound, PlatformUnavailable
from service.core.repository import credentials as repo
from service.core.vault import Sealed, VaultError
from service.platforms.base import CheckResult, TokenOutcome
from worker.checks import REFRESH_LOCK, TokenPlan, decide, plan_tokens, refresh_tokens
from worker.limits import PlatformPaused
from worker.runtime import Runtime

log = logging.getLogger("octopost.credentials")

# How long a request waits for a refresh another process is making before it gives up on it.
OTHER_REFRESH_WAIT_SECONDS = 15.0
OTHER_REFRESH_POLL_SECONDS = 0.05
DEFAULT_RETRY_AFTER_SECONDS = 5


class NoCredentials(ApiError):
    status = 409
    type = "no_credentials"


@dataclass(frozen=True, slots=True)
class Credentials:
    account_id: str
    platform: str
    platform_user_id: str
    access_token: str
    expires_at: datetime | None
    scopes: tuple[str, ...]
    instance_url: str | None
    refreshed: bool = False

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"Credentials(account_id={self.account_id!r}, expires_at={self.expires_at!r})"


def _now() -> datetime:
    return datetime.now(UTC)


def _inactive(account_id: str, status: str, reason: str | None) -> AccountInactive:
    return AccountInactive(
        f"account {account_id} is inactive (status {status}, reason {reason or 'none'}); "
        "the customer has to reconnect it"
    )


def _unavailable(account_id: str, result: CheckResult) -> PlatformUnavailable:
    seconds = result.retry_after
    retry = min(3600, max(1, math.ceil(seconds))) if seconds else DEFAULT_RETRY_AFTER_SECONDS
    return PlatformUnavailable(
        f"the platform could not refresh the token of account {account_id} "
        f"({result.reason or 'unavailable'}) and the current one has expired; retry later",
        headers={"Retry-After": str(retry)},
    )


class Issuer:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._refreshing: dict[str, asyncio.Task[Credentials]] = {}

    async def issue(self, account_id: str) -> Credentials:
        """Usable credentials for the account, refreshed first when due; raises the ApiError
        the caller answers with. Does not record the issuance (see `record`)."""
        row = await repo.load_for_issue(self.rt.pool, account_id)
        if row is None:
            raise NotFound("account not found")
        plan = self._plan(row)
        if plan.expiry_passed and not plan.can_refresh:
            # what a sweep concludes too: expired, no way to refresh, so dead
            dead = CheckResult(TokenOutcome.dead, reason="token_expired")
            raise await self._conclude(row, plan, dead) or _inactive(
                row["id"], "expired", "token_expired"
            )
        if not plan.refresh_due:
            return self._credentials(row, plan)
        task = self._refreshing.get(account_id)
        if task is None:
            task = asyncio.ensure_future(self._refresh(row, plan))
            self._refreshing[account_id] = task
            task.add_done_callback(lambda t: self._forget(account_id, t))
        # shielded: one caller going away must not cancel the refresh the others wait for
        return await asyncio.shield(task)

    def _forget(self, account_id: str, task: asyncio.Task[Credentials]) -> None:
        self._refreshing.pop(account_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away meanwhile

    async def record(self, credentials: Credentials, key_id: str, key_name: str) -> None:
        await repo.record_issued(
            self.rt.pool, credentials.account_id, key_id, key_name, credentials.refreshed
        )

    def _plan(self, row: asyncpg.Record) -> TokenPlan:
        if not row["is_active"]:
            raise _inactive(row["id"], row["health_status"], row["health_reason"])
        if row["sealed"] is None:
            raise NoCredentials(f"account {row['id']} has no stored credentials")
        try:
            access, refresh = self.rt.vault.open_tokens(
                row["id"], Sealed(row["key_id"], row["sealed"])
            )
        except VaultError as exc:
            log.error("cannot open tokens account_id=%s error=%s", row["id"], exc)
            raise NoCredentials(
                f"the credentials of account {row['id']} cannot be decrypted here "
                "(token key missing); the operators have to fix OCTOPOST_TOKEN_KEYS"
            ) from None
        adapter = self.rt.adapters[row["platform"]]
        return plan_tokens(self.rt, adapter, row, access, refresh, _now())

    @staticmethod
    def _credentials(row: asyncpg.Record, plan: TokenPlan, refreshed: bool = False) -> Credentials:
        t = plan.tokens
        return Credentials(
            row["id"],
            row["platform"],
            row["platform_user_id"],
            t.access_token,
            t.access_expires_at,
            t.scopes,
            row["instance_url"],
            refreshed,
        )

    async def _refresh(self, row: asyncpg.Record, plan: TokenPlan) -> Credentials:
        adapter = self.rt.adapters[row["platform"]]
        try:
            result, stored = await refresh_tokens(
                self.rt, adapter, plan.account, plan.tokens, row["generation"]
            )
        except PlatformPaused as paused:
            result = CheckResult(
                TokenOutcome.transient,
                reason="platform_paused",
                retry_after=max(1.0, paused.until - time.time()),
            )
            stored = False
        if result.reason == "refresh_in_progress":
            return await self._after_other_refresh(row, plan)
        if stored and result.new_tokens is not None:
            new = result.new_tokens
            await self._conclude(row, plan, result, refreshed=True)
            log.info(
                "credentials refreshed before issuance account_id=%s platform=%s",
                row["id"],
                row["platform"],
            )
            tokens = replace(
                plan.tokens,
                access_token=new.access_token,
                access_expires_at=new.access_expires_at,
                scopes=new.scopes or plan.tokens.scopes,
            )
            return self._credentials(row, replace(plan, tokens=tokens), refreshed=True)
        if result.outcome is TokenOutcome.valid:
            # refreshed by someone else meanwhile (rotated_elsewhere), or our pair lost the
            # compare-and-swap: what is stored now is what to serve
            return await self._current(row["id"], refreshed=True)
        error = await self._conclude(row, plan, result)
        if error is not None:
            raise error
        return self._still_valid(row, plan, result)

    async def _after_other_refresh(self, row: asyncpg.Record, plan: TokenPlan) -> Credentials:
        lock = REFRESH_LOCK.format(row["id"])
        # The lock is all there is to watch across processes: poll it, briefly.
        for _ in range(int(OTHER_REFRESH_WAIT_SECONDS / OTHER_REFRESH_POLL_SECONDS)):
            if not await self.rt.redis.exists(lock):
                break
            await asyncio.sleep(OTHER_REFRESH_POLL_SECONDS)
        fresh = await repo.load_for_issue(self.rt.pool, row["id"])
        if fresh is None:
            raise NotFound("account not found")
        if fresh["generation"] != row["generation"]:
            return self._credentials(fresh, self._plan(fresh), refreshed=True)
        # the other refresh failed, or is still running: decide on what is stored
        plan = self._plan(fresh)
        return self._still_valid(
            fresh, plan, CheckResult(TokenOutcome.transient, reason="refresh_in_progress")
        )

    async def _current(self, account_id: str, *, refreshed: bool) -> Credentials:
        row = await repo.load_for_issue(self.rt.pool, account_id)
        if row is None:
            raise NotFound("account not found")
        return self._credentials(row, self._plan(row), refreshed)

    def _still_valid(
        self, row: asyncpg.Record, plan: TokenPlan, result: CheckResult
    ) -> Credentials:
        """After a refresh that did not happen: the current token while it lasts."""
        expires = plan.tokens.access_expires_at
        if expires is None or expires > _now():
            return self._credentials(row, plan)
        raise _unavailable(row["id"], result)

    async def _conclude(
        self, row: asyncpg.Record, plan: TokenPlan, result: CheckResult, *, refreshed: bool = False
    ) -> ApiError | None:
        """Write the platform's answer as a sweep would; for a dead one, the error to answer."""
        new = result.new_tokens
        outcome = decide(
            self.rt,
            row,
            result,
            now=_now(),
            access_expires_at=new.access_expires_at
            if refreshed and new is not None
            else plan.tokens.access_expires_at,
            can_refresh=plan.can_refresh,
            margin=plan.margin,
        )
        if refreshed and outcome.event is None:
            outcome = replace(outcome, event="refreshed")
        written = await repo.apply_outcome(self.rt.pool, outcome)
        if result.outcome is not TokenOutcome.dead:
            return None
        if not written:
            return NotFound("account not found")
        log.info(
            "account deactivated by a refresh before issuance account_id=%s reason=%s",
            row["id"],
            outcome.reason,
        )
        return _inactive(row["id"], outcome.status, outcome.reason)
