"""Platform notice jobs: apply a recorded push notice to every matching account, in every
workspace, in one transaction; and the relay that queues notices whose job never ran."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from arq.constants import result_key_prefix
from arq.jobs import Job, JobStatus

from service.core.jobs import Enqueued, enqueue_notice, enqueue_sweep, notice_job_id
from service.core.notices import Action, Subject
from service.core.repository import notices, sweeps
from worker.runtime import runtime

log = logging.getLogger("octopost.notices")

RELAY_BATCH = 500
STATUS = {Action.revoke: "revoked", Action.deactivate: "deactivated"}


async def apply_platform_notice(ctx: dict[str, Any], notice_id: str) -> dict[str, Any]:
    """arq job. Safe to run more than once: the notice row is locked and marked applied in
    the transaction that changes the accounts, so a second run finds nothing pending."""
    rt = runtime(ctx)
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await notices.lock_pending(conn, notice_id)
        if row is None:
            return {"applied": 0, "note": "nothing pending"}
        action = Action(row["action"])
        ids = await notices.match(
            conn, row["platform"], Subject(row["subject_type"]), row["subject"], row["received_at"]
        )
        detail = orjson.dumps(
            {
                "notice_id": notice_id,
                "platform_event": row["event"],
                **(orjson.loads(row["detail"]) if row["detail"] else {}),
            }
        ).decode()
        changed: list[str] = []
        if ids and action in STATUS:
            changed = await notices.deactivate(conn, ids, STATUS[action], row["reason"], detail)
        elif ids and action is Action.delete_data:
            changed = await notices.delete_data(conn, ids, row["reason"], detail)
        elif ids and action is Action.check:
            changed = await notices.check_now(conn, ids)
        await notices.finish(conn, notice_id, len(changed))
    rt.metrics.notices.labels(row["platform"], action.value).inc()
    rt.metrics.notice_accounts.labels(row["platform"], action.value).inc(len(changed))
    log.info(
        "platform notice applied notice_id=%s platform=%s event=%s action=%s accounts=%s",
        notice_id,
        row["platform"],
        row["event"],
        action.value,
        len(changed),
    )
    if action is Action.check:
        for account_id in changed:
            # one account, checked now rather than at the next scheduled sweep
            sweep_id = await sweeps.create_sweep(rt.pool, "notice", row["platform"], account_id)
            await enqueue_sweep(rt.redis, sweep_id)
    return {"applied": len(changed), "action": action.value}


async def _relay_one(ctx: dict[str, Any], notice_id: str) -> str:
    rt = runtime(ctx)
    enqueued = await enqueue_notice(rt.redis, notice_id)
    if enqueued is not Enqueued.already_queued:
        return enqueued.value
    job_id = notice_job_id(notice_id)
    status = await Job(job_id, rt.redis).status()
    if status is JobStatus.complete:
        # The job ended (raised, ran out of tries) without applying the notice; its kept
        # result would block the job id.
        await rt.redis.delete(result_key_prefix + job_id)
        log.warning("notice job ended without applying it, queued again job_id=%s", job_id)
        return (await enqueue_notice(rt.redis, notice_id)).value
    return str(status.value)


async def relay_platform_notices(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron: queue the notices still pending after the grace period (received while
    Redis was down, or lost with it). A no-op for those whose job is queued or running."""
    rt = runtime(ctx)
    counts: dict[str, int] = {}
    after = None
    while True:
        rows = await notices.pending_for_relay(
            rt.pool, rt.settings.notice_relay_grace_seconds, RELAY_BATCH, after
        )
        for row in rows:
            what = await _relay_one(ctx, row["id"])
            counts[what] = counts.get(what, 0) + 1
            if what == Enqueued.unreachable:
                break
        if len(rows) < RELAY_BATCH or counts.get(Enqueued.unreachable):
            break
        after = (rows[-1]["received_at"], rows[-1]["id"])
    if counts:
        log.info(
            "relay looked at pending notices %s",
            " ".join(f"{k}={v}" for k, v in sorted(counts.items())),
        )
    return counts
