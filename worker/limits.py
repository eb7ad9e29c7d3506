"""Per-platform limits shared by every worker: concurrency, a request budget, and pauses.

- Concurrency: a semaphore per platform in each process, so one slow platform holds its own
  slots and never the others'.
- Budget: requests per second per platform across all workers, counted in Redis per
  one-second window. A process takes permits in chunks to keep Redis off the hot path.
- Pauses: when a platform says "stop until T" (429 with a reset, Meta app-level throttling,
  quotas), every worker leaves that platform alone until T.

While Redis does not answer, the checks in flight go on under limits kept in this process
(its own budget of rate_per_second, the pauses it knows of) instead of failing one by one;
one warning when that starts, one line when Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from arq.connections import ArqRedis
from redis.exceptions import RedisError

T = TypeVar("T")

log = logging.getLogger("octopost.limits")
REDIS_ERRORS = (RedisError, OSError)

PAUSE_KEY = "octopost:pause:{}"
BUDGET_KEY = "octopost:budget:{}:{}"
PAUSE_CACHE_SECONDS = 1.0
# Set-if-later, in one step on the server: a short pause (a plain 429, 60 s) written by one
# worker never cuts short a longer one (a platform-wide throttle, 1 h) another worker set.
# Returns the pause in force afterwards. A script, not SET's newer conditions: the embedded
# Redis is 6.2.
_PAUSE_IF_LATER = """
local stored = redis.call('GET', KEYS[1])
if stored and (tonumber(stored) or 0) >= tonumber(ARGV[1]) then
    return stored
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


class PlatformPaused(Exception):
    """The platform asked us to wait; nothing was sent."""

    def __init__(self, until: float) -> None:
        super().__init__(until)
        self.until = until


@dataclass(slots=True)
class _Permits:
    window: int = -1
    left: int = 0
    # granted in this process while Redis does not answer, for local_window
    local_window: int = -1
    local_used: int = 0


class PlatformLimits:
    def __init__(
        self,
        redis: ArqRedis,
        *,
        concurrency: int,
        rate_per_second: int,
        chunk: int | None = None,
    ) -> None:
        self.redis = redis
        self.concurrency = concurrency
        self.rate = rate_per_second
        # A tenth of the budget per trip to Redis (at most 100): at 1,000 requests/s a
        # worker asks 10 times a second, not 40. A process holds at most one chunk it may
        # not use before the window ends: the budget can go under-used, never over.
        self.chunk = max(1, min(chunk or max(1, rate_per_second // 10), 100, rate_per_second))
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._permits: dict[str, _Permits] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pauses: dict[str, tuple[float, float]] = {}  # platform -> (until, read_at)
        self._pause_if_later = redis.register_script(_PAUSE_IF_LATER)
        self._redis_down = False
        self._reading: dict[str, asyncio.Future[float]] = {}  # platform -> read in flight

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._redis_down:
            self._redis_down = True
            log.warning(
                "platform limits: Redis did not answer (%s); limiting in this process until it"
                " does",
                type(exc).__name__,
            )

    def _redis_answered(self) -> None:
        if self._redis_down:
            self._redis_down = False
            log.info("platform limits: Redis answers again; limits shared again")

    def _semaphore(self, platform: str) -> asyncio.Semaphore:
        sem = self._semaphores.get(platform)
        if sem is None:
            sem = self._semaphores[platform] = asyncio.Semaphore(self.concurrency)
        return sem

    async def paused_until(self, platform: str) -> float | None:
        """Epoch seconds until which the platform is paused, or None."""
        now = time.time()
        cached = self._pauses.get(platform)
        if cached is None or now - cached[1] > PAUSE_CACHE_SECONDS:
            # One read per platform at a time: the calls that find the cache stale together
            # (up to `concurrency` of them) share it instead of each asking Redis.
            reading = self._reading.get(platform)
            if reading is None:
                reading = asyncio.ensure_future(self._read_pause(platform, now))
                self._reading[platform] = reading
                reading.add_done_callback(lambda done: self._read_done(platform, done))
            until = await asyncio.shield(reading)
        else:
            until = cached[0]
        return until if until > time.time() else None

    def _read_done(self, platform: str, done: asyncio.Future[float]) -> None:
        self._reading.pop(platform, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have been cancelled meanwhile

    async def _read_pause(self, platform: str, now: float) -> float:
        try:
            raw = await self.redis.get(PAUSE_KEY.format(platform))
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            raw = None
        else:
            self._redis_answered()
        until = float(raw) if raw else 0.0
        # a pause this process set itself may be newer than Redis's answer
        cached = self._pauses.get(platform)
        if cached is not None and cached[0] > until:
            until = cached[0]
        self._pauses[platform] = (until, now)
        return until

    async def pause(self, platform: str, seconds: float) -> float:
        """Pause the platform for every worker until now + seconds, unless a later pause is
        already set; returns the end of the pause in force."""
        until = time.time() + seconds
        current = self._pauses.get(platform, (0.0, 0.0))[0]
        if until > current:
            self._pauses[platform] = (until, time.time())
            try:
                answer = await self._pause_if_later(
                    keys=[PAUSE_KEY.format(platform)], args=[repr(until), int(seconds * 1000) + 1]
                )
            except REDIS_ERRORS as exc:  # this process keeps the pause; the others cannot
                self._redis_failed(exc)
                answer = 0.0
            else:
                self._redis_answered()
            until = max(until, float(answer))
            self._pauses[platform] = (until, time.time())
        return max(until, current)

    async def _take_permit(self, platform: str) -> None:
        permits = self._permits.setdefault(platform, _Permits())
        lock = self._locks.setdefault(platform, asyncio.Lock())
        while True:
            window = int(time.time())
            if permits.window == window and permits.left > 0:
                permits.left -= 1
                return
            async with lock:
                window = int(time.time())
                if permits.window == window and permits.left > 0:
                    continue
                key = BUDGET_KEY.format(platform, window)
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.incrby(key, self.chunk)
                        pipe.expire(key, 5)
                        used, _ = await pipe.execute()
                except REDIS_ERRORS as exc:
                    self._redis_failed(exc)
                    if permits.local_window != window:
                        permits.local_window, permits.local_used = window, 0
                    granted = max(0, min(self.chunk, self.rate - permits.local_used))
                    permits.local_used += granted
                else:
                    self._redis_answered()
                    granted = max(0, min(self.chunk, self.rate - (int(used) - self.chunk)))
                if granted > 0:
                    permits.window, permits.left = window, granted - 1
                    return
                await asyncio.sleep(max(0.0, window + 1 - time.time()))

    async def call(self, platform: str, make_call: Callable[[], Awaitable[T]]) -> T:
        async with self._semaphore(platform):
            # Checked after the wait for a slot: a pause set by a call that was in flight
            # while this one queued must stop it too.
            until = await self.paused_until(platform)
            if until is not None:
                raise PlatformPaused(until)
            await self._take_permit(platform)
            return await make_call()
