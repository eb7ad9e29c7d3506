"""Riding out Redis and PostgreSQL outages: the worker stays up and resumes by itself.

arq's poll loop lets any Redis error out of ``Worker.main``, which ends the process at
the first blip of the queue. ``OutlastingWorker`` keeps polling instead:

- Redis: an iteration of the poll loop that fails is logged once ("Redis unreachable"),
  retried with a growing pause (at most ``MAX_PAUSE``), and the first one that works again
  logs "Redis is back". A job whose end could not be recorded stays in the queue with its
  in-progress mark, so it runs again after its lease, as after a crash of the worker.
- PostgreSQL: a job that fails while the database is unreachable (a probe says so, not a
  guess from the exception type) is not a failed job: it goes back to the queue (arq
  ``Retry``) and no job is started until a probe, once a second, finds the database again.
  A cron job is not retried; its next tick does the work.

Every job here is safe to run again: check batches read only the accounts still leased to
their sweep, and revocations only pending ones.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry
from arq.typing import WorkerCoroutine
from arq.worker import Worker
from redis.exceptions import RedisError

log = logging.getLogger("octopost.worker")

REDIS = "Redis"
POSTGRES = "PostgreSQL"
# Errors of the poll loop that mean "Redis is not answering" (a refused or reset socket is
# an OSError before redis-py wraps it).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
PROBE_TIMEOUT = 2.0
# While a dependency is down it is asked this often whether it is back; while it is up,
# PostgreSQL is asked every HEALTH_EVERY, so an outage is noticed (and jobs held) even by
# an idle worker.
PROBE_EVERY = 1.0
HEALTH_EVERY = 5.0
MAX_PAUSE = 2.0
# A job put back because the database went away runs again this soon once it is back.
RETRY_AFTER_OUTAGE = 1.0

Probe = Callable[[], Awaitable[object]]


class Dependencies:
    """Which dependencies are reachable, with one log line per change of state."""

    def __init__(self) -> None:
        self._down: dict[str, float] = {}  # name -> since (monotonic)
        self._probes: dict[str, Probe] = {}
        self._last_probe: dict[str, float] = {}

    def set_probe(self, name: str, probe: Probe) -> None:
        self._probes[name] = probe

    def is_down(self, name: str) -> bool:
        return name in self._down

    def lost(self, name: str, exc: BaseException | None = None) -> None:
        if name in self._down:
            return
        self._down[name] = time.monotonic()
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        log.warning("%s unreachable%s; waiting for it (jobs resume when it is back)", name, detail)

    def found(self, name: str) -> None:
        since = self._down.pop(name, None)
        if since is not None:
            log.info("%s is back after %.1fs; resuming", name, time.monotonic() - since)

    async def probe(self, name: str) -> bool:
        """Ask the dependency itself; records and logs the answer."""
        probe = self._probes.get(name)
        if probe is None:
            return True
        self._last_probe[name] = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.lost(name, exc)
            return False
        self.found(name)
        return True

    async def recheck(self, name: str) -> bool:
        """Probe at most once per PROBE_EVERY while down, once per HEALTH_EVERY while up."""
        every = PROBE_EVERY if name in self._down else HEALTH_EVERY
        if time.monotonic() - self._last_probe.get(name, 0.0) < every:
            return name not in self._down
        return await self.probe(name)

    async def any_gone(self) -> bool:
        """After a job failed: is a dependency unreachable (so it is not the job's fault)?"""
        results = [await self.probe(name) for name in list(self._probes)]
        return not all(results)


def outlasting(
    deps: Dependencies, coroutine: Callable[..., Awaitable[Any]], *, cron: bool = False
) -> WorkerCoroutine:
    """The job function, with a failure caused by an outage turned into "run it again"."""

    @functools.wraps(coroutine)
    async def job(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await coroutine(ctx, *args, **kwargs)
        except (Retry, asyncio.CancelledError):
            raise
        except Exception:
            if not await deps.any_gone():
                raise
            if cron:
                return "skipped: a dependency is unreachable; the next tick runs it"
            raise Retry(defer=RETRY_AFTER_OUTAGE) from None

    return job


class OutlastingWorker(Worker):
    """arq's worker, polling on through Redis and PostgreSQL outages (see module doc)."""

    deps: Dependencies

    def __init__(self, *args: Any, deps: Dependencies, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deps = deps
        self._pause = 0.0

    async def _poll_iteration(self) -> None:
        await self.deps.recheck(POSTGRES)
        try:
            await super()._poll_iteration()
        except REDIS_ERRORS as exc:
            self.deps.lost(REDIS, exc)
            # poll() already waits poll_delay between iterations; add a growing pause so
            # an outage costs a connection attempt a second or two, not ten
            self._pause = min(MAX_PAUSE, self._pause * 2 or self.poll_delay_s)
            await asyncio.sleep(self._pause)
            return
        self._pause = 0.0
        self.deps.found(REDIS)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        if self.deps.is_down(POSTGRES):
            return  # leave them queued: every job needs the database
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except REDIS_ERRORS:
                # arq took a slot (semaphore, counter) before its Redis calls and gives it
                # back only when the job's task ends; no task was made, so give it back here
                self.job_counter -= 1
                self.sem.release()
                raise
