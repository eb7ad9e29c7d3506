"""Job names, job ids and enqueue-after-commit: the one place the API, the CLI and the worker
agree on what sits in the arq queue."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

from arq.connections import ArqRedis
from redis.exceptions import RedisError

log = logging.getLogger("octopost.revocations")

REVOKE_JOB = "revoke_account_tokens"
CHECK_JOB = "check_batch"
SWEEP_JOB = "run_sweep"


class Enqueued(StrEnum):
    queued = "queued"
    # a job with this id is queued, deferred, running, or its result is still kept
    already_queued = "already_queued"
    # Redis did not answer; the outbox row stays pending and the relay queues it later
    unreachable = "unreachable"


def revoke_job_id(revocation_id: str) -> str:
    return f"revoke:{revocation_id}"


def sweep_job_id(sweep_id: int) -> str:
    return f"sweep:{sweep_id}"


def batch_job_id(sweep_id: int, account_ids: list[str]) -> str:
    # Derived from the content, so a sweep job that is retried after a crash re-enqueues
    # an already queued batch as a no-op.
    return f"check:{sweep_id}:{account_ids[0]}:{len(account_ids)}"


async def enqueue_sweep(redis: ArqRedis, sweep_id: int) -> None:
    """Queue the job that claims and fans out a sweep row already committed."""
    await redis.enqueue_job(SWEEP_JOB, sweep_id, _job_id=sweep_job_id(sweep_id))


async def enqueue_revocation(redis: ArqRedis, revocation_id: str) -> Enqueued:
    """Queue the revoke job. Never raises for Redis trouble: the outbox row is the record.

    The deterministic job id makes a second enqueue (by the relay cron) a no-op while the
    first is queued, running or its result is kept.
    """
    return await _enqueue_recorded(redis, REVOKE_JOB, revocation_id, revoke_job_id, "revocation")


async def _enqueue_recorded(
    redis: ArqRedis, job: str, row_id: str, job_id: Callable[[str], str], what: str
) -> Enqueued:
    """Queue ``job`` for an outbox/inbox row already committed. Never raises for Redis
    trouble: the row is the record, and its relay queues it later."""
    try:
        queued = await redis.enqueue_job(job, row_id, _job_id=job_id(row_id))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "%s not queued, the relay will retry %s_id=%s error=%s",
            what,
            what,
            row_id,
            type(exc).__name__,
        )
        return Enqueued.unreachable
    return Enqueued.queued if queued is not None else Enqueued.already_queued


NOTICE_JOB = "apply_platform_notice"


def notice_job_id(notice_id: str) -> str:
    return f"notice:{notice_id}"


async def enqueue_notice(redis: ArqRedis, notice_id: str) -> Enqueued:
    """Queue the job that applies the notice (its inbox row is the record)."""
    return await _enqueue_recorded(redis, NOTICE_JOB, notice_id, notice_job_id, "notice")


# A publisher's `auth_failed` report queues a check of the account. The job id is the
# account's, so a burst of reports (every post of a channel failing at once) queues one
# check: arq refuses a second job with the id while the first is queued or running, and for
# `OCTOPOST_REPORTED_CHECK_WINDOW_SECONDS` after it finished (its result is kept that long).
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
