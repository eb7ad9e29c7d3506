"""Sweeps: claim due accounts in batches, fan them out as check jobs, record the run."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from service.core.jobs import CHECK_JOB, batch_job_id
from service.core.repository import sweeps
from worker.runtime import runtime

log = logging.getLogger("octopost.sweep")


async def run_sweep(ctx: dict[str, Any], sweep_id: int) -> dict[str, int]:
    """arq job: claim everything in the sweep's scope and enqueue the batches."""
    rt = runtime(ctx)
    sweep = await sweeps.start_sweep(rt.pool, sweep_id)
    if sweep is None:
        return {"claimed": 0}
    # asked for (by ops, or by a publisher's auth_failed report): due or not, claimed from a
    # resume key
    manual = sweep["trigger"] in ("manual", "report")
    s = rt.settings
    started = time.perf_counter()
    claimed = 0
    while True:
        # One statement per batch: lease it and count it on the sweep row (a manual sweep
        # also moves its resume key), autocommitted.
        batch = await sweeps.claim(
            rt.pool,
            sweep_id,
            manual=manual,
            platform=sweep["platform"],
            account_id=sweep["account_id"],
            limit=s.sweep_batch_size,
            lease_seconds=s.check_lease_seconds,
        )
        if not batch.ids:
            break
        claimed += len(batch.ids)
        await rt.redis.enqueue_job(
            CHECK_JOB, sweep_id, batch.ids, _job_id=batch_job_id(sweep_id, batch.ids)
        )
        # Do not run too far ahead of the checkers: a lease must not run out while its
        # batch is still waiting in the queue.
        ahead = batch.ahead
        while ahead >= s.sweep_max_ahead:
            await asyncio.sleep(0.2)
            ahead = await sweeps.sweep_ahead(rt.pool, sweep_id)
    await sweeps.end_claiming(rt.pool, sweep_id)
    await sweeps.finish_if_idle(rt.pool, sweep_id)
    rt.metrics.sweep_duration.observe(time.perf_counter() - started)
    for row in await sweeps.count_by_status(rt.pool):
        rt.metrics.accounts.labels(row["platform"], row["health_status"]).set(row["n"])
    log.info("sweep claimed sweep_id=%s trigger=%s claimed=%s", sweep_id, sweep["trigger"], claimed)
    return {"claimed": claimed}


async def scheduled_sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron: one scheduled sweep per tick (arq runs a cron tick once across workers)."""
    rt = runtime(ctx)
    for stale in await sweeps.finish_idle_sweeps(rt.pool):
        log.warning("sweep closed after its last batch never reported sweep_id=%s", stale)
    sweep_id = await sweeps.create_sweep(rt.pool, "schedule")
    return await run_sweep(ctx, sweep_id)
