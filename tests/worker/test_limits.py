"""Platform pauses shared by every worker through Redis: set-if-later, atomically."""

from __future__ import annotations

import asyncio
import time

import pytest
from arq.connections import ArqRedis

from devkit.embedded import free_port
from service.api.app import redis_client
from service.core.settings import Settings
from worker.limits import PAUSE_KEY, PlatformLimits, PlatformPaused

HOUR, MINUTE = 3600.0, 60.0


@pytest.mark.parametrize("long_first", [True, False])
async def test_a_short_pause_never_cuts_a_longer_one_short(
    long_first: bool, settings: Settings, redis: ArqRedis
) -> None:
    """Two workers (two clients, two PlatformLimits): one sets a platform-wide throttle of
    an hour while the other records a plain 429 of a minute, the two writes racing in
    either order, many times over. The hour always stands, in Redis and for a third
    worker that only reads."""
    other = redis_client(settings.redis_url)
    try:
        for round_ in range(40):
            platform = f"race{round_}"
            await redis.delete(PAUSE_KEY.format(platform))
            throttle = PlatformLimits(redis, concurrency=1, rate_per_second=10)
            plain = PlatformLimits(other, concurrency=1, rate_per_second=10)
            calls = [throttle.pause(platform, HOUR), plain.pause(platform, MINUTE)]
            if not long_first:
                calls.reverse()
            before = time.time()
            answers = await asyncio.gather(*calls)
            # each writer learns the pause in force after its write (at least its own; the
            # two reach Redis over two connections, in whichever order they arrive)
            hour, minute = answers if long_first else answers[::-1]
            assert hour >= before + HOUR and minute >= before + MINUTE, (round_, answers)
            stored = float(await redis.get(PAUSE_KEY.format(platform)))
            assert before + HOUR <= stored <= time.time() + HOUR
            assert await redis.pttl(PAUSE_KEY.format(platform)) > (HOUR - MINUTE) * 1000
            reader = PlatformLimits(redis, concurrency=1, rate_per_second=10)
            until = await reader.paused_until(platform)
            assert until is not None and until >= before + HOUR
    finally:
        await other.aclose()


async def test_a_later_pause_replaces_an_earlier_one(redis: ArqRedis) -> None:
    await redis.delete(PAUSE_KEY.format("later"))
    a = PlatformLimits(redis, concurrency=1, rate_per_second=10)
    b = PlatformLimits(redis, concurrency=1, rate_per_second=10)
    first = await a.pause("later", MINUTE)
    second = await b.pause("later", HOUR)
    assert second > first + HOUR - MINUTE - 1
    assert float(await redis.get(PAUSE_KEY.format("later"))) == pytest.approx(second)
    assert await redis.pttl(PAUSE_KEY.format("later")) > (HOUR - MINUTE) * 1000


async def test_without_redis_calls_go_on_under_this_processs_own_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis unreachable (nothing listens on its port): calls are still made, a pause set
    in this process still holds, the per-second budget is kept in the process, and the
    outage is logged once."""
    gone = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        limits = PlatformLimits(gone, concurrency=4, rate_per_second=30, chunk=10)
        calls = 0

        async def call() -> str:
            nonlocal calls
            calls += 1
            return "answered"

        window = int(time.time())
        results: list[str] = []
        while len(results) < 30 and int(time.time()) == window:
            results.append(await limits.call("nowhere", call))
        assert results == ["answered"] * len(results) and calls == len(results)
        if int(time.time()) == window:  # the window's budget is spent: the next call waits
            assert len(results) == 30
            await limits.call("nowhere", call)
            assert int(time.time()) > window
        until = await limits.pause("nowhere", MINUTE)
        with pytest.raises(PlatformPaused) as paused:
            await limits.call("nowhere", call)
        assert paused.value.until == until
        warnings = [r for r in caplog.records if "Redis did not answer" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await gone.aclose()
