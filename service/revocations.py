"""The seam between a committed disconnect and the revoke job on the arq queue."""

from __future__ import annotations

import logging

from arq.connections import ArqRedis
from redis.exceptions import RedisError

log = logging.getLogger("octopost.revocations")

REVOKE_JOB = "revoke_account_tokens"


def revoke_job_id(revocation_id: str) -> str:
    return f"revoke:{revocation_id}"


async def enqueue_revocation(redis: ArqRedis, revocation_id: str) -> bool:
    """Queue the revoke job; False (and a log line) when Redis is unreachable.

    The deterministic job id makes a second enqueue (by the relay cron) a no-op while the
    first is queued or its result is kept.
    """
    try:
        await redis.enqueue_job(REVOKE_JOB, revocation_id, _job_id=revoke_job_id(revocation_id))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "revocation not queued, the relay will retry revocation_id=%s error=%s",
            revocation_id,
            type(exc).__name__,
        )
        return False
    return True
