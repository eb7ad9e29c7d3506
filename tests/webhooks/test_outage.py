"""The dispatcher outlives PostgreSQL: stopped and killed under it, started again on the same
port, and the next change is delivered by the same dispatcher (its LISTEN connection and its
pool come back on their own), with nothing committed before the outage lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from devkit.embedded import EmbeddedPostgres
from service.core.db import create_pool, migrate
from service.core.repository import webhooks as repo
from service.core.repository.webhooks import TrailEvent, record_account_events
from service.core.settings import Settings
from service.core.vault import Vault
from service.core.webhooks import ACCOUNT_EVENT_TYPES, new_secret
from tests.webhooks.conftest import Receiver, dispatching


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("webhook-pg") / "data")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
async def private_pool(
    private_pg: EmbeddedPostgres, wsettings: Settings
) -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    await migrate(private_pg.url)
    settings = wsettings.model_copy(
        update={"database_url": private_pg.url, "db_acquire_timeout": 1.5, "db_command_timeout": 2}
    )
    pool = await create_pool(settings)
    yield settings, pool
    await pool.close()


async def _change(url: str, account_id: str, workspace_id: int, *, new: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            if new:
                await conn.execute(
                    "INSERT INTO accounts (id, workspace_id, platform, platform_user_id, "
                    "username, display_name) VALUES ($1, $2, 'twitter', $1, $1, $1)",
                    account_id,
                    workspace_id,
                )
            await record_account_events(conn, [TrailEvent(account_id, "connected")])
    finally:
        await conn.close()


async def test_deliveries_resume_after_postgres_restarts(
    private_pg: EmbeddedPostgres,
    private_pool: tuple[Settings, asyncpg.Pool],
    vault: Vault,
    receiver: Receiver,
) -> None:
    settings, pool = private_pool
    url = private_pg.url
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE workspaces RESTART IDENTITY CASCADE")
        workspace_id: int = await conn.fetchval(
            "INSERT INTO workspaces (name) VALUES ('acme') RETURNING id"
        )
        secret = new_secret()
        sealed = vault.seal("we_outage", secret.encode())
        await repo.insert_endpoint(
            conn,
            "we_outage",
            workspace_id,
            url=receiver.url("/outage"),
            events=list(ACCOUNT_EVENT_TYPES),
            description="",
            key_id=sealed.key_id,
            sealed=sealed.blob,
        )
    finally:
        await conn.close()

    async with dispatching(settings, pool, vault) as dispatcher:
        await _change(url, "acc_before", workspace_id, new=True)
        await receiver.wait("/outage", 1)
        for n, down in enumerate((lambda: private_pg.stop("fast"), private_pg.kill)):
            await asyncio.to_thread(down)
            await asyncio.sleep(1.5)  # the listener and the relay meet the outage
            await asyncio.to_thread(private_pg.start)
            await asyncio.wait_for(dispatcher.listening.wait(), 30)
            await _change(url, f"acc_after{n}", workspace_id, new=True)
            received = await receiver.wait("/outage", 2 + n, within=30)
            assert received[-1].verified(secret)["data"]["account"]["id"] == f"acc_after{n}"
    ids: list[Any] = [r.json["data"]["account"]["id"] for r in receiver.at("/outage")]
    assert ids == ["acc_before", "acc_after0", "acc_after1"]
