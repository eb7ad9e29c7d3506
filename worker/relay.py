"""The relay every recorded job shares (revocations, platform notices): queue again the rows
still pending after a grace period, a no-op for those whose job is queued or running."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import Job, JobStatus

from service.core.db import Pool
from service.core.jobs import Enqueued
from worker.runtime import Runtime

log = logging.getLogger("octopost.relay")

RELAY_BATCH = 500


@dataclass(frozen=True, slots=True)
class Recorded:
    """One kind of row whose job the relay keeps queued."""

    what: str  # for the log lines: "revocation", "notice"
    pending: Callable[[Pool, float, int, Any], Awaitable[list[asyncpg.Record]]]
    sort_column: str  # the listing order the pending query pages by, with the id
    enqueue: Callable[[ArqRedis, str], Awaitable[Enqueued]]
    job_id: Callable[[str], str]


async def _relay_one(rt: Runtime, kind: Recorded, row_id: str) -> str:
    enqueued = await kind.enqueue(rt.redis, row_id)
    if enqueued is not Enqueued.already_queued:
        return enqueued.value
    job_id = kind.job_id(row_id)
    status = await Job(job_id, rt.redis).status()
    if status is JobStatus.complete:
        # The job ended (raised, timed out, ran out of arq tries) without finishing its row;
        # its kept result would block the job id.
        await rt.redis.delete(result_key_prefix + job_id)
        log.warning("%s job ended without an outcome, queued again job_id=%s", kind.what, job_id)
        return (await kind.enqueue(rt.redis, row_id)).value
    return str(status.value)


async def relay(rt: Runtime, kind: Recorded, grace_seconds: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    after = None
    while True:
        rows = await kind.pending(rt.pool, grace_seconds, RELAY_BATCH, after)
        for row in rows:
            what = await _relay_one(rt, kind, row["id"])
            counts[what] = counts.get(what, 0) + 1
            if what == Enqueued.unreachable:
                break  # the next tick tries again; no need to time out once per row
        if len(rows) < RELAY_BATCH or counts.get(Enqueued.unreachable):
            break
        after = (rows[-1][kind.sort_column], rows[-1]["id"])
    if counts:
        log.info(
            "relay looked at pending %ss %s",
            kind.what,
            " ".join(f"{k}={v}" for k, v in sorted(counts.items())),
        )
    return counts
