"""Real PostgreSQL and Redis for every test: the servers named by DATABASE_URL / REDIS_URL,
or private embedded ones started for the session. Only the platforms are replaced (by the
platform sandbox, over real HTTP)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from yarl import URL

from devkit.embedded import free_port
from service.api.app import create_app, redis_client
from service.api.internal_app import create_internal_app
from service.api.server import AppRunner
from service.core import api_keys
from service.core.db import create_pool, migrate
from service.core.importer import import_accounts, parse_lines
from service.core.repository import service_keys, workspaces
from service.core.settings import Settings
from service.core.vault import Vault, new_key

TABLES = (
    "connect_sessions",
    "mastodon_apps",
    "service_keys",
    "platform_notices",
    "sweeps",
    "account_events",
    "revocations",
    "account_tokens",
    "accounts",
    "api_keys",
    "workspaces",
)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        # A database of our own on the given server, dropped at the end.
        import asyncio

        name = f"octopost_test_{secrets.token_hex(4)}"

        async def admin(sql: str) -> None:
            conn = await asyncpg.connect(external)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
        yield str(URL(external).with_path(f"/{name}"))
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    from devkit.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    url = pg.start()
    yield url
    pg.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    from devkit.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def token_keys() -> str:
    return f"k1:{new_key()}"


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, token_keys: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        redis_url=redis_url,
        token_keys=token_keys,
        data_dir=tmp_path_factory.mktemp("data"),
        auth_failures_per_minute=0,
        db_pool_min=1,
        db_pool_max=10,
    )


@pytest.fixture(scope="session")
def vault(settings: Settings) -> Vault:
    return Vault.from_config(settings.token_keys)


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    await migrate(settings.database_url)
    pool = await create_pool(settings)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    client = redis_client(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def clean(request: pytest.FixtureRequest) -> None:
    """Every test that touches the database starts from empty tables and an empty queue."""
    if "pool" not in request.fixturenames:
        return
    pool: asyncpg.Pool = request.getfixturevalue("pool")
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    if "redis" in request.fixturenames:
        await request.getfixturevalue("redis").flushdb()


@dataclass
class Api:
    """A running service on a real port, and a client for it."""

    base: URL
    session: aiohttp.ClientSession

    def url(self, path: str) -> URL:
        return self.base.join(URL(path))

    async def request(
        self, method: str, path: str, key: str | None = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await self.session.request(method, self.url(path), headers=headers, **kwargs)


@pytest.fixture
async def api(settings: Settings, pool: asyncpg.Pool, redis: ArqRedis) -> AsyncIterator[Api]:
    app = create_app(settings, pool=pool, redis=redis)
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    async with aiohttp.ClientSession() as session:
        yield Api(URL(f"http://127.0.0.1:{port}"), session)
    await runner.cleanup()


@pytest.fixture
async def internal(settings: Settings, pool: asyncpg.Pool, redis: ArqRedis) -> AsyncIterator[Api]:
    """The internal API (service keys, /internal/v1) on a real port of its own."""
    app = create_internal_app(settings, pool=pool, redis=redis)
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as session:
        yield Api(URL(f"http://127.0.0.1:{port}"), session)
    await runner.cleanup()


@pytest.fixture
def make_service_key(pool: asyncpg.Pool) -> Callable[..., Any]:
    """A new service key (returned in full) with a name and scopes."""

    async def make(name: str = "publisher", scopes: tuple[str, ...] = ("credentials",)) -> str:
        key = api_keys.new_service_key()
        await service_keys.insert_service_key(
            pool,
            api_keys.new_service_key_id(),
            name,
            api_keys.service_key_display_prefix(key),
            api_keys.hash_api_key(key),
            list(scopes),
        )
        return key

    return make


@pytest.fixture
def make_key(pool: asyncpg.Pool) -> Callable[[str], Any]:
    async def make(workspace: str) -> str:
        key = api_keys.new_api_key()
        async with pool.acquire() as conn, conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, workspace)
            await workspaces.insert_key(
                conn,
                api_keys.new_key_id(),
                workspace_id,
                api_keys.key_display_prefix(key),
                api_keys.hash_api_key(key),
            )
        return key

    return make


@pytest.fixture
def import_lines(pool: asyncpg.Pool, vault: Vault) -> Callable[..., Any]:
    async def do_import(workspace: str, lines: list[dict[str, Any]]) -> list[str]:
        parsed = parse_lines(orjson.dumps(line).decode() for line in lines)
        async with pool.acquire() as conn, conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, workspace)
            return await import_accounts(conn, vault, workspace_id, parsed)

    return do_import


SEED_ACCOUNTS: list[dict[str, Any]] = [
    {
        "id": "acc_abc123",
        "platform": "twitter",
        "platform_user_id": "1234567890",
        "username": "octopost",
        "display_name": "Octopost",
        "avatar_url": "https://pbs.twimg.com/profile_images/abc/photo.jpg",
        "is_active": True,
        "connected_at": "2026-03-15T10:00:00Z",
        "last_used_at": "2026-04-03T12:05:00Z",
    },
    {
        "id": "acc_def456",
        "platform": "bluesky",
        "platform_user_id": "did:plc:abc123",
        "username": "octopost.bsky.social",
        "display_name": "Octopost",
        "avatar_url": "https://cdn.bsky.app/avatars/abc.jpg",
        "is_active": True,
        "connected_at": "2026-03-16T11:00:00Z",
        "last_used_at": "2026-04-03T12:05:00Z",
    },
    {
        "id": "acc_ghi789",
        "platform": "linkedin",
        "platform_user_id": "urn:li:person:abc",
        "username": "octopost",
        "display_name": "Octopost Inc.",
        "avatar_url": "https://media.licdn.com/dms/image/abc/photo.jpg",
        "is_active": False,
        "connected_at": "2026-03-20T09:00:00Z",
        "last_used_at": "2026-03-28T16:00:00Z",
    },
]


def with_tokens(account: dict[str, Any], **extra: Any) -> dict[str, Any]:
    line = dict(account)
    line.setdefault("access_token", f"at-{secrets.token_hex(8)}")
    line.update(extra)
    return line


@pytest.fixture
async def seeded(make_key: Any, import_lines: Any) -> str:
    """Workspace 'acme' holding the seed's three accounts; returns its API key."""
    key: str = await make_key("acme")
    await import_lines(
        "acme", [with_tokens(a, refresh_token=f"rt-{a['id']}") for a in SEED_ACCOUNTS]
    )
    return key


ROOT = Path(__file__).resolve().parent.parent


async def stop_in_loop_worker(worker: Any, task: asyncio.Task[Any]) -> None:
    """Stop an arq worker running in this event loop (`task` runs its `async_run`).

    Running jobs end first: arq's close() cancels them and then re-raises that cancellation
    (its gather has no return_exceptions), skipping its own shutdown, and the loop would keep
    a worker of one test consuming the next tests' queue. The task is cancelled whatever
    close() does."""
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=30)
    try:
        await worker.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
