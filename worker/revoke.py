"""Revocation jobs: revoke a disconnected account's tokens at the platform, from the outbox."""

from __future__ import annotations

import logging
import random
from typing import Any

from arq import Retry

from service.repository import revocations
from service.revocations import enqueue_revocation
from service.vault import Sealed, VaultError
from worker.platforms.base import AccountRef, RevokeOutcome, RevokeResult, TokenSet
from worker.runtime import runtime

log = logging.getLogger("octopost.revoke")

RELAY_BATCH = 500

# outcome -> (revocation status, event kind)
_FINAL = {
    RevokeOutcome.revoked: ("done", "revoke_done"),
    RevokeOutcome.already_invalid: ("done", "revoke_done"),
    RevokeOutcome.unsupported: ("unsupported", "revoke_unsupported"),
    RevokeOutcome.failed: ("failed", "revoke_failed"),
}


def _backoff(attempt: int) -> float:
    return float(min(3600, 5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))


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
    adapter = rt.adapters[row["platform"]]
    try:
        access, refresh = rt.vault.open_tokens(
            row["account_id"], Sealed(row["key_id"], row["sealed"])
        )
    except (VaultError, TypeError) as exc:
        await revocations.finish(
            rt.pool,
            revocation_id,
            "failed",
            f"tokens unreadable: {exc}",
            "revoke_failed",
            "tokens_unreadable",
        )
        return "failed"
    account = AccountRef(
        row["account_id"], row["platform"], row["platform_user_id"], row["instance_url"]
    )
    tokens = TokenSet(access, refresh)
    if not adapter.supports_revoke:
        result = RevokeResult(RevokeOutcome.unsupported)
    else:
        result = await rt.limits.call(row["platform"], lambda: adapter.revoke(account, tokens))
    rt.metrics.revocations.labels(row["platform"], result.outcome.value).inc()
    if result.outcome is RevokeOutcome.transient:
        error = f"transient: {result.error_code or result.http_status}"
        if attempts < rt.settings.revoke_max_attempts:
            await revocations.record_transient(rt.pool, revocation_id, error)
            defer = max(_backoff(attempts), result.retry_after or 0.0)
            log.info(
                "revoke will retry revocation_id=%s attempt=%s in=%.0fs",
                revocation_id,
                attempts,
                defer,
            )
            raise Retry(defer=defer)
        status, event, reason = "failed", "revoke_failed", "attempts_exhausted"
    else:
        status, event = _FINAL[result.outcome]
        reason = result.outcome.value
        error = f"{result.error_code or result.http_status}" if status == "failed" else ""
    await revocations.finish(rt.pool, revocation_id, status, error or None, event, reason)
    log.info(
        "revocation finished revocation_id=%s platform=%s status=%s",
        revocation_id,
        row["platform"],
        status,
    )
    return status


async def relay_revocations(ctx: dict[str, Any]) -> int:
    """arq cron: re-enqueue revocations still pending after the grace period (a DELETE made
    while Redis was down, a job lost with its worker). Deterministic job ids make it a no-op
    for revocations whose job is still queued."""
    rt = runtime(ctx)
    ids = await revocations.pending_for_relay(
        rt.pool, rt.settings.revoke_relay_grace_seconds, RELAY_BATCH
    )
    queued = 0
    for revocation_id in ids:
        if await enqueue_revocation(rt.redis, revocation_id):
            queued += 1
    if ids:
        log.info("relay re-enqueued pending revocations found=%s", len(ids))
    return queued
