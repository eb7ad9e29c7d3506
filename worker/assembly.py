"""The arq worker, declared in one place: functions, cron jobs, startup and shutdown.

`octopost worker` (and `octopost dev`) build it with `make_worker`. There is deliberately no
class for `arq worker.assembly.WorkerSettings`: arq's own runner cannot shorten the
in-progress mark below, so a worker started that way would strand a dead worker's jobs for
the longest job timeout (hours) instead of one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from typing import Any

from arq import cron
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob
from arq.worker import Function, func

from service.core.jobs import CHECK_JOB, NOTICE_JOB, REPORTED_CHECK_JOB, REVOKE_JOB, SWEEP_JOB
from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from worker.checks import check_batch
from worker.notices import apply_platform_notice, relay_platform_notices
from worker.outages import POSTGRES, REDIS, REDIS_ERRORS, Dependencies, OutlastingWorker, outlasting
from worker.reported import check_reported_account
from worker.revoke import relay_revocations, revoke_account_tokens
from worker.runtime import CTX_KEY, Runtime
from worker.sweep import run_sweep, scheduled_sweep

log = logging.getLogger("octopost.worker")

HEARTBEAT_KEY = "_octopost_heartbeat"


def functions(settings: Settings, deps: Dependencies | None = None) -> list[Function]:
    deps = deps or Dependencies()
    return [
        func(outlasting(deps, check_batch), name=CHECK_JOB, timeout=300, keep_result=60),
        func(
            outlasting(deps, run_sweep),
            name=SWEEP_JOB,
            timeout=6 * 3600,
            keep_result=3600,
            max_tries=3,
        ),
        func(
            outlasting(deps, revoke_account_tokens),
            name=REVOKE_JOB,
            timeout=120,
            keep_result=60,
            max_tries=settings.revoke_max_attempts + 2,
        ),
        func(
            outlasting(deps, apply_platform_notice),
            name=NOTICE_JOB,
            timeout=60,
            keep_result=60,
            max_tries=5,
        ),
        # its kept result is what makes a burst of reports one check (see reported_checks)
        func(
            outlasting(deps, check_reported_account),
            name=REPORTED_CHECK_JOB,
            timeout=120,
            keep_result=max(1, int(settings.reported_check_window_seconds)),
            max_tries=3,
        ),
    ]


def cron_jobs(settings: Settings, deps: Dependencies | None = None) -> list[CronJob]:
    deps = deps or Dependencies()
    relay = outlasting(deps, relay_revocations, cron=True)
    notices_relay = outlasting(deps, relay_platform_notices, cron=True)
    jobs = [
        cron(relay, name="cron:relay_revocations", second={7}, run_at_startup=True, timeout=120),
        cron(
            notices_relay,
            name="cron:relay_platform_notices",
            second={37},
            run_at_startup=True,
            timeout=120,
        ),
    ]
    if settings.sweep_interval_minutes > 0:
        minutes = set(range(0, 60, settings.sweep_interval_minutes))
        sweep = outlasting(deps, scheduled_sweep, cron=True)
        jobs.append(
            cron(sweep, name="cron:scheduled_sweep", minute=minutes, second={0}, timeout=6 * 3600)
        )
    return jobs


async def _keep_in_progress(redis: ArqRedis, job_id: str, ttl: float, deps: Dependencies) -> None:
    key = in_progress_key_prefix + job_id
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            await redis.pexpire(key, int(ttl * 1000))
        except REDIS_ERRORS as exc:  # at worst the job runs again after its lease
            deps.lost(REDIS, exc)


def make_worker(
    settings: Settings, *, platform_settings: PlatformSettings | None = None, **overrides: Any
) -> OutlastingWorker:
    deps = Dependencies()

    async def startup(ctx: dict[str, Any]) -> None:
        rt = await Runtime.start(settings, ctx["redis"], platform_settings=platform_settings)
        rt.metrics.serve(settings.worker_metrics_port)
        ctx[CTX_KEY] = rt
        deps.set_probe(POSTGRES, lambda: rt.pool.fetchval("SELECT 1"))
        deps.set_probe(REDIS, rt.redis.ping)
        # Everything built so far lives as long as the process: keep it out of the
        # collector's generations, so a full collection walks only what the jobs made.
        gc.freeze()
        log.info("worker ready pid=%s", os.getpid())

    # arq marks a started job "in progress" for its longest function timeout (+10 s): six
    # hours here, because of run_sweep. A worker that dies (SIGKILL, OOM, lost machine) would
    # strand its jobs that long. Instead the mark lasts one check lease and the running
    # worker renews it every third of that: a dead worker's jobs are run again by another
    # worker at most one lease after its last sign of life, and a live worker's long job
    # is never started twice.
    in_progress_ttl = max(1.0, settings.check_lease_seconds)

    async def job_start(ctx: dict[str, Any]) -> None:
        ctx[HEARTBEAT_KEY] = asyncio.create_task(
            _keep_in_progress(ctx["redis"], ctx["job_id"], in_progress_ttl, deps)
        )

    async def job_end(ctx: dict[str, Any]) -> None:
        task: asyncio.Task[None] | None = ctx.pop(HEARTBEAT_KEY, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def shutdown(ctx: dict[str, Any]) -> None:
        rt: Runtime | None = ctx.get(CTX_KEY)
        if rt is not None:
            await rt.close()

    options: dict[str, Any] = {
        "functions": functions(settings, deps),
        "cron_jobs": cron_jobs(settings, deps),
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "on_job_start": job_start,
        "on_job_end": job_end,
        "max_jobs": settings.worker_max_jobs,
        # A job whose worker died is retried; a revocation or a batch must not be lost.
        "retry_jobs": True,
        "job_completion_wait": 30,
        "poll_delay": 0.1,
        **overrides,
    }
    worker = OutlastingWorker(deps=deps, **options)
    worker.in_progress_timeout_s = in_progress_ttl
    return worker
