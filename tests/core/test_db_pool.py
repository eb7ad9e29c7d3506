"""The database pool (service.core.db.Pool: asyncpg's own pool plus the acquire timeout): each
property the service relies on, against the real PostgreSQL.

- a waiter cancelled just as a connection is handed to it loses no wake-up and raises
  nothing but its CancelledError;
- ``db_acquire_timeout`` bounds every wait for a connection (and the API answers 503);
- no request waits behind another workspace's read, nor fails because of another request;
- the repository's rows do not depend on how the connection was obtained.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from arq.connections import ArqRedis

from devkit.embedded import free_port
from service.api.app import create_app
from service.api.models import ACCOUNT_FIELDS, Account, AccountList, account_json, account_list_json
from service.api.server import AppRunner
from service.core.db import Pool, create_pool
from service.core.repository import accounts
from service.core.settings import Settings
from tests.conftest import SEED_ACCOUNTS, with_tokens

# A wait that must end at the acquire timeout ends well before this, even on a busy machine.
BOUND_SLACK = 5.0


async def workspace_id(pool: Pool, name: str) -> int:
    value: int = await pool.fetchval("SELECT id FROM workspaces WHERE name = $1", name)
    return value


@pytest.fixture
async def small_pool(settings: Settings) -> AsyncIterator[Pool]:
    """Two connections, a 0.5 s acquire timeout."""
    pool = await create_pool(
        settings.model_copy(update={"db_pool_min": 2, "db_pool_max": 2, "db_acquire_timeout": 0.5})
    )
    yield pool
    await pool.close()


async def test_a_cancelled_waiter_loses_no_wake_up(settings: Settings) -> None:
    """One connection, two waiters; the connection is released and the first waiter is
    cancelled, at every offset around the hand-over (the same loop turn included). The
    other waiter always gets the connection, and nothing but CancelledError is raised."""
    pool = await create_pool(
        settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 1, "db_acquire_timeout": 10})
    )
    try:
        for offset in range(8):
            holder = pool.acquire()
            conn = await holder.__aenter__()

            async def wait_and_query() -> int:
                async with pool.acquire() as c:
                    value: int = await c.fetchval("SELECT 1")
                    return value

            first = asyncio.ensure_future(wait_and_query())
            second = asyncio.ensure_future(wait_and_query())
            await asyncio.sleep(0)  # both are parked on the pool's queue
            release = asyncio.ensure_future(holder.__aexit__(None, None, None))
            for _ in range(offset):
                await asyncio.sleep(0)
            first.cancel()
            results = await asyncio.wait_for(
                asyncio.gather(first, second, release, return_exceptions=True), 10
            )
            assert isinstance(results[0], asyncio.CancelledError) or results[0] == 1, results
            assert results[1] == 1, (offset, results)
            assert results[2] is None, (offset, results)
            del conn
        # the connection is free again, and nobody is left parked
        assert pool.get_idle_size() == 1
        assert await pool.fetchval("SELECT 2") == 2
    finally:
        await pool.close()


async def test_the_acquire_timeout_bounds_every_wait_for_a_connection(small_pool: Pool) -> None:
    async with small_pool.acquire(), small_pool.acquire():  # both connections taken
        for wait in (
            small_pool.fetchval("SELECT 1"),
            small_pool.fetch("SELECT 1"),
            small_pool.fetchrow("SELECT 1"),
            small_pool.execute("SELECT 1"),
        ):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await wait
            assert time.monotonic() - started < 0.5 + BOUND_SLACK
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with small_pool.acquire():
                pass
        assert time.monotonic() - started < 0.5 + BOUND_SLACK
    assert await small_pool.fetchval("SELECT 1") == 1  # and nothing leaked


async def test_the_api_answers_503_when_no_connection_comes_in_time(
    settings: Settings, small_pool: Pool, redis: ArqRedis, seeded: str
) -> None:
    app = create_app(settings, pool=small_pool, redis=redis)
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/v1/accounts/acc_abc123"
            headers = {"Authorization": f"Bearer {seeded}"}
            async with http.get(url, headers=headers) as r:
                assert r.status == 200  # the key is now cached: only the read needs the pool
            async with small_pool.acquire(), small_pool.acquire():
                started = time.monotonic()
                async with http.get(url, headers=headers) as r:
                    body = orjson.loads(await r.read())
                    assert r.status == 503, body
                    assert body["error"]["type"] == "service_unavailable"
                    assert r.headers["Retry-After"] == "1"
                assert time.monotonic() - started < 0.5 + BOUND_SLACK
            async with http.get(url, headers=headers) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()


async def test_no_request_waits_behind_another_workspaces_read(
    settings: Settings, seeded: str, make_key: Any
) -> None:
    """A long read of workspace beta (standing for any large one) holds its own connection:
    reads of acme, started after it, are answered while it still runs."""
    pool = await create_pool(settings.model_copy(update={"db_command_timeout": 120}))
    await make_key("beta")
    beta = await workspace_id(pool, "beta")
    acme = await workspace_id(pool, "acme")
    long_read = asyncio.ensure_future(
        pool.fetch("SELECT pg_sleep(60), $1::bigint AS workspace_id", beta)
    )
    try:
        await asyncio.sleep(0)
        row = await asyncio.wait_for(accounts.get_account(pool, "acc_abc123", acme), 20)
        assert row is not None and row["id"] == "acc_abc123"
        rows = await asyncio.wait_for(accounts.list_accounts(pool, acme), 20)
        assert [r["id"] for r in rows] == [a["id"] for a in SEED_ACCOUNTS]
        assert not long_read.done()
    finally:
        long_read.cancel()
        await asyncio.gather(long_read, return_exceptions=True)
        await pool.close()


async def test_no_request_fails_because_of_another(pool: Pool, seeded: str) -> None:
    acme = await workspace_id(pool, "acme")
    # an id PostgreSQL refuses (a NUL in text): that request fails, alone. (Not a value
    # asyncpg refuses while encoding, such as 2**70 for a bigint: on a connection that has
    # not prepared the statement yet, asyncpg 0.32 then leaves the backend in its implicit
    # transaction, holding AccessShare locks until the connection's next statement, and the
    # next test's TRUNCATE waits for it.)
    results = await asyncio.gather(
        accounts.get_account(pool, "acc_abc123", acme),
        accounts.get_account(pool, "acc_\x00", acme),
        accounts.list_accounts(pool, acme),
        accounts.get_account(pool, "acc_ghi789", acme),
        return_exceptions=True,
    )
    assert isinstance(results[1], asyncpg.DataError), results
    assert results[0]["id"] == "acc_abc123"
    assert len(results[2]) == 3
    assert results[3]["id"] == "acc_ghi789"


async def test_a_cancelled_request_leaves_the_others_their_answers(pool: Pool, seeded: str) -> None:
    acme = await workspace_id(pool, "acme")
    tasks = [
        asyncio.ensure_future(accounts.get_account(pool, a["id"], acme)) for a in SEED_ACCOUNTS
    ]
    await asyncio.sleep(0)
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [r["id"] for r in (done[0], done[2])] == ["acc_abc123", "acc_ghi789"]  # type: ignore[index]


async def test_rows_do_not_depend_on_how_the_connection_was_obtained(
    pool: Pool, seeded: str, make_key: Any, import_lines: Any
) -> None:
    await make_key("beta")
    await import_lines(
        "beta",
        [with_tokens({**a, "id": a["id"] + "b", "platform_user_id": "b" + a["id"]})
         for a in reversed(SEED_ACCOUNTS)],
    )  # fmt: skip
    acme, beta = await workspace_id(pool, "acme"), await workspace_id(pool, "beta")
    asks = [(a["id"], ws) for a in SEED_ACCOUNTS for ws in (acme, beta)] + [
        ("acc_abc123b", beta),
        ("acc_nothing", acme),
    ]
    through_pool = [await accounts.get_account(pool, i, ws) for i, ws in asks]
    lists = [
        await accounts.list_accounts(pool, ws, platform=platform, is_active=active)
        for ws in (acme, beta, 999_999)
        for platform in (None, "twitter", "youtube")
        for active in (None, True, False)
    ]
    async with pool.acquire() as conn:
        for (account_id, ws), row in zip(asks, through_pool, strict=True):
            alone = await accounts.get_account(conn, account_id, ws)
            assert (alone is None) == (row is None), (account_id, ws)
            if alone is not None and row is not None:
                assert list(alone.keys()) == list(row.keys()) == list(ACCOUNT_FIELDS)
                assert account_json(alone) == account_json(row)
        i = 0
        for ws in (acme, beta, 999_999):
            for platform in (None, "twitter", "youtube"):
                for active in (None, True, False):
                    alone_rows = await accounts.list_accounts(
                        conn, ws, platform=platform, is_active=active
                    )
                    assert [tuple(r.items()) for r in alone_rows] == [
                        tuple(r.items()) for r in lists[i]
                    ]
                    i += 1
    rows = await accounts.list_accounts(pool, acme)
    models = [Account.model_validate(dict(r)) for r in rows]
    expected = AccountList(accounts=models).model_dump_json().encode()
    assert account_list_json(rows, next_cursor=None) == expected
