"""Revocation jobs: revoke a disconnected account's tokens at the platform, from the outbox."""

from __future__ import annotations

import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit

from arq import Retry

from service.core.ids import new_revocation_id
from service.core.jobs import enqueue_revocation, revoke_job_id
from service.core.repository import connect, revocations
from service.core.vault import Sealed, VaultError
from service.platforms.base import (
    AccountRef,
    PlatformAdapter,
    RevokeOutcome,
    RevokeResult,
    TokenSet,
)
from service.platforms.mastodon import MastodonAdapter
from worker.limits import PlatformPaused
from worker.relay import Recorded, relay
from worker.runtime import Runtime, runtime

log = logging.getLogger("octopost.revoke")


# outcome -> (revocation status, event kind)
_FINAL = {
    RevokeOutcome.revoked: ("done", "revoke_done"),
    RevokeOutcome.already_invalid: ("done", "revoke_done"),
    RevokeOutcome.unsupported: ("unsupported", "revoke_unsupported"),
    RevokeOutcome.failed: ("failed", "revoke_failed"),
}


def _backoff(rt: Runtime, attempt: int) -> float:
    s = rt.settings
    base = min(s.revoke_backoff_max_seconds, s.revoke_backoff_base_seconds * 2 ** (attempt - 1))
    return float(base * random.uniform(0.8, 1.2))


async def _finish(
    rt: Runtime,
    revocation_id: str,
    platform: str,
    status: str,
    error: str | None,
    event: str,
    reason: str | None,
) -> str:
    ended = await revocations.finish(rt.pool, revocation_id, status, error, event, reason)
    log.info(
        "revocation finished revocation_id=%s platform=%s status=%s reason=%s%s",
        revocation_id,
        platform,
        status,
        reason,
        "" if ended else " (already ended by another run)",
    )
    return status


async def _learn_mastodon_app(
    rt: Runtime, adapter: PlatformAdapter, instance_url: str | None
) -> None:
    """Mastodon's revoke wants the client credentials of the app the token was issued to: the
    one the connect flow registered on that instance (stored sealed), unless configured."""
    host = urlsplit(instance_url or "").hostname
    if not host or not isinstance(adapter, MastodonAdapter) or host in adapter.apps:
        return
    app = await connect.get_mastodon_app(rt.pool, host)
    if app is not None:
        secret = rt.vault.open(f"mastodon:{host}", Sealed(app["key_id"], app["sealed_secret"]))
        adapter.registered[host] = (app["client_id"], secret.decode())


async def revoke_account_tokens(ctx: dict[str, Any], revocation_id: str) -> str:
    """arq job. Safe to run more than once: a finished revocation is left alone, and a
    repeated platform call after a crash meets "already invalid", which counts as done."""
    rt = runtime(ctx)
    row = await revocations.load(rt.pool, revocation_id)
    if row is None or row["status"] != "pending":
        return "nothing to do"
    attempts = await revocations.count_attempt(rt.pool, revocation_id)
    if attempts is None:
        return "nothing to do"
    platform: str = row["platform"]
    max_attempts = rt.settings.revoke_max_attempts
    if attempts > max_attempts:
        # Runs that died mid-call (or raised) used the attempts up without recording an end.
        return await _finish(
            rt, revocation_id, platform, "failed", None, "revoke_failed", "attempts_exhausted"
        )
    adapter = rt.adapters[platform]
    if not adapter.supports_revoke:
        rt.metrics.revocations.labels(platform, RevokeOutcome.unsupported.value).inc()
        return await _finish(
            rt,
            revocation_id,
            platform,
            "unsupported",
            None,
            "revoke_unsupported",
            RevokeOutcome.unsupported.value,
        )
    try:
        access, refresh = rt.vault.open_tokens(
            row["account_id"], Sealed(row["key_id"], row["sealed"])
        )
    except (VaultError, TypeError) as exc:
        return await _finish(
            rt,
            revocation_id,
            platform,
            "failed",
            f"tokens unreadable: {type(exc).__name__}",
            "revoke_failed",
            "tokens_unreadable",
        )
    account = AccountRef(row["account_id"], platform, row["platform_user_id"], row["instance_url"])
    tokens = TokenSet(access, refresh)
    if platform == "mastodon":
        await _learn_mastodon_app(rt, adapter, row["instance_url"])
    try:
        result: RevokeResult = await rt.limits.call(
            platform, lambda: adapter.revoke(account, tokens)
        )
    except PlatformPaused as paused:
        # Nothing was sent: wait the pause out without spending an attempt.
        await revocations.release_attempt(rt.pool, revocation_id, "platform paused")
        raise Retry(defer=max(1.0, paused.until - time.time())) from None
    rt.metrics.revocations.labels(platform, result.outcome.value).inc()
    if result.outcome is RevokeOutcome.transient:
        error = f"transient: {result.error_code or result.http_status}"
        if attempts < max_attempts:
            await revocations.record_transient(rt.pool, revocation_id, error)
            defer = max(_backoff(rt, attempts), result.retry_after or 0.0)
            log.info(
                "revoke will retry revocation_id=%s attempt=%s in=%.1fs",
                revocation_id,
                attempts,
                defer,
            )
            raise Retry(defer=defer)
        return await _finish(
            rt, revocation_id, platform, "failed", error, "revoke_failed", "attempts_exhausted"
        )
    status, event = _FINAL[result.outcome]
    code = f"{result.error_code or result.http_status}" if status == "failed" else None
    if status == "failed":
        log.warning(
            "revoke answer not understood revocation_id=%s platform=%s status=%s error_code=%s",
            revocation_id,
            platform,
            result.http_status,
            result.error_code,
        )
    return await _finish(rt, revocation_id, platform, status, code, event, result.outcome.value)


async def revoke_tokens_of_disconnected(rt: Runtime, account_id: str, sealed: Sealed) -> bool:
    """A token pair obtained for an account that was disconnected meanwhile (a refresh in
    flight during the DELETE) goes through the outbox too; False if the account is live."""
    revocation_id = new_revocation_id()
    if not await revocations.add_for_disconnected(
        rt.pool, revocation_id, account_id, sealed.key_id, sealed.blob
    ):
        return False
    log.info(
        "tokens refreshed during a disconnect queued for revocation account_id=%s revocation_id=%s",
        account_id,
        revocation_id,
    )
    await enqueue_revocation(rt.redis, revocation_id)
    return True


REVOCATIONS = Recorded(
    "revocation", revocations.pending_for_relay, "created_at", enqueue_revocation, revoke_job_id
)


async def relay_revocations(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron: re-enqueue revocations still pending after the grace period (a DELETE made
    while Redis was down, a job lost with Redis, a job that ended without an outcome).
    Deterministic job ids make it a no-op for revocations whose job is queued, deferred
    (backoff) or running; a job whose worker died is run again by arq itself once its
    in-progress mark lapses."""
    rt = runtime(ctx)
    return await relay(rt, REVOCATIONS, rt.settings.revoke_relay_grace_seconds)
