"""Platform notice jobs: apply a recorded push notice to every matching account, in every
workspace, in one transaction; and the relay that queues notices whose job never ran."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from service.core.jobs import enqueue_notice, enqueue_sweep, notice_job_id
from service.core.notices import Action, Subject
from service.core.repository import notices, sweeps
from worker.relay import Recorded, relay
from worker.runtime import runtime

log = logging.getLogger("octopost.notices")

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
                # what account.deactivated webhooks name as its source
                "source": "platform_push",
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


NOTICES = Recorded(
    "notice", notices.pending_for_relay, "received_at", enqueue_notice, notice_job_id
)


async def relay_platform_notices(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron: queue the notices still pending after the grace period (received while
    Redis was down, or lost with it). A no-op for those whose job is queued or running."""
    rt = runtime(ctx)
    return await relay(rt, NOTICES, rt.settings.notice_relay_grace_seconds)
