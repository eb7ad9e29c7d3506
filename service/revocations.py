"""The seam between a committed disconnect and the revoke job on the arq queue."""

from __future__ import annotations

import logging
from enum import StrEnum

from arq.connections import ArqRedis
from redis.exceptions import RedisError

log = logging.getLogger("octopost.revocations")

REVOKE_JOB = "revoke_account_tokens"


class Enqueued(StrEnum):
    queued = "queued"
    # a job with this id is queued, deferred, running, or its result is still kept
    already_queued = "already_queued"
    # Redis did not answer; the outbox row stays pending and the relay queues it later
    unreachable = "unreachable"


def revoke_job_id(revocation_id: str) -> str:
    return f"revoke:{revocation_id}"


async def enqueue_revocation(redis: ArqRedis, revocation_id: str) -> Enqueued:
    """Queue the revoke job. Never raises for Redis trouble: the outbox row is the record.

    The deterministic job id makes a second enqueue (by the relay cron) a no-op while the
    first is queued, running or its result is kept.
    """
    try:
        job = await redis.enqueue_job(
            REVOKE_JOB, revocation_id, _job_id=revoke_job_id(revocation_id)
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "revocation not queued, the relay will retry revocation_id=%s error=%s",
            revocation_id,
            type(exc).__name__,
        )
        return Enqueued.unreachable
    return Enqueued.queued if job is not None else Enqueued.already_queued
