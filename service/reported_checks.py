"""The seam between a publisher's `auth_failed` report and the worker's check of the account.

The job id is the account's, so a burst of reports (every post of a channel failing at once)
queues one check: arq refuses a second job with the id while the first is queued or running,
and for `OCTOPOST_REPORTED_CHECK_WINDOW_SECONDS` after it finished (its result is kept that
long).
"""

from __future__ import annotations

from arq.connections import ArqRedis

REPORTED_CHECK_JOB = "check_reported_account"


def reported_check_job_id(account_id: str) -> str:
    return f"reported-check:{account_id}"


async def enqueue_reported_check(redis: ArqRedis, account_id: str) -> bool:
    """True if this call queued the check; False if one is already queued, running, or ran
    within the window. Redis errors propagate (the caller answers 503 and is retried)."""
    job = await redis.enqueue_job(
        REPORTED_CHECK_JOB, account_id, _job_id=reported_check_job_id(account_id)
    )
    return job is not None
