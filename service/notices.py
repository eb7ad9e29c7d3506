"""The seam between a recorded platform notice and the job that applies it."""

from __future__ import annotations

import logging

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from service.revocations import Enqueued

log = logging.getLogger("octopost.notices")

NOTICE_JOB = "apply_platform_notice"


def notice_job_id(notice_id: str) -> str:
    return f"notice:{notice_id}"


async def enqueue_notice(redis: ArqRedis, notice_id: str) -> Enqueued:
    """Queue the job that applies the notice. Never raises for Redis trouble: the inbox row
    is the record, and the relay queues it later."""
    try:
        job = await redis.enqueue_job(NOTICE_JOB, notice_id, _job_id=notice_job_id(notice_id))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "notice not queued, the relay will retry notice_id=%s error=%s",
            notice_id,
            type(exc).__name__,
        )
        return Enqueued.unreachable
    return Enqueued.queued if job is not None else Enqueued.already_queued
