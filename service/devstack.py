"""`octopost dev`: the whole service on one machine with nothing but Python.

Starts an embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set), migrates,
seeds a demo workspace, starts the platform sandbox, the health worker and the API in one
process, and prints an API key with a curl line that works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator

import asyncpg
from aiohttp import web

from service import ids
from service.app import create_app
from service.db import migrate
from service.importer import import_accounts, parse_lines
from service.repository import workspaces
from service.server import AppRunner
from service.settings import Settings
from service.tokenkeys import load_vault
from service.vault import Vault

log = logging.getLogger("octopost.dev")

DEMO_WORKSPACE = "demo"
SANDBOX_PORT_OFFSET = 10  # the sandbox listens on the API port + 10

# The seed's three accounts plus one on every other platform, so a sweep touches them all.
DEMO_ACCOUNTS = [
    (
        "acc_abc123",
        "twitter",
        "1234567890",
        "octopost",
        "Octopost",
        "https://pbs.twimg.com/profile_images/abc/photo.jpg",
        True,
        "2026-03-15T10:00:00Z",
        "2026-04-03T12:05:00Z",
    ),
    (
        "acc_def456",
        "bluesky",
        "did:plc:abc123",
        "octopost.bsky.social",
        "Octopost",
        "https://cdn.bsky.app/avatars/abc.jpg",
        True,
        "2026-03-16T11:00:00Z",
        "2026-04-03T12:05:00Z",
    ),
    (
        "acc_ghi789",
        "linkedin",
        "urn:li:person:abc",
        "octopost",
        "Octopost Inc.",
        "https://media.licdn.com/dms/image/abc/photo.jpg",
        False,
        "2026-03-20T09:00:00Z",
        "2026-03-28T16:00:00Z",
    ),
    (
        "acc_mas001",
        "mastodon",
        "109876",
        "octopost@mastodon.social",
        "Octopost",
        None,
        True,
        "2026-03-21T09:00:00Z",
        None,
    ),
    (
        "acc_thr001",
        "threads",
        "thr-1",
        "octopost",
        "Octopost",
        None,
        True,
        "2026-03-22T09:00:00Z",
        None,
    ),
    (
        "acc_ig0001",
        "instagram",
        "ig-1",
        "octopost",
        "Octopost",
        None,
        True,
        "2026-03-23T09:00:00Z",
        None,
    ),
    (
        "acc_fb0001",
        "facebook",
        "fb-1",
        "octopost",
        "Octopost",
        None,
        True,
        "2026-03-24T09:00:00Z",
        None,
    ),
    (
        "acc_tt0001",
        "tiktok",
        "tt-1",
        "octopost",
        "Octopost",
        None,
        True,
        "2026-03-25T09:00:00Z",
        None,
    ),
    (
        "acc_yt0001",
        "youtube",
        "UC-octopost",
        "octopost",
        "Octopost",
        None,
        True,
        "2026-03-26T09:00:00Z",
        None,
    ),
]


def demo_lines() -> list[str]:
    import orjson

    lines = []
    for (
        account_id,
        platform,
        user_id,
        username,
        name,
        avatar,
        active,
        connected,
        used,
    ) in DEMO_ACCOUNTS:
        lines.append(
            orjson.dumps(
                {
                    "id": account_id,
                    "platform": platform,
                    "platform_user_id": user_id,
                    "username": username,
                    "display_name": name,
                    "avatar_url": avatar,
                    "is_active": active,
                    "connected_at": connected,
                    "last_used_at": used,
                    "access_token": f"demo-{platform}-access",
                    "refresh_token": f"demo-{platform}-refresh",
                }
            ).decode()
        )
    return lines


@contextlib.contextmanager
def embedded_servers(settings: Settings) -> Iterator[Settings]:
    """Start what DATABASE_URL / REDIS_URL do not name; yield settings pointing at them."""
    update: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        data = settings.data_dir.resolve()
        if "DATABASE_URL" not in os.environ:
            from service.embedded import EmbeddedPostgres

            pg = stack.enter_context(EmbeddedPostgres(data / "pg"))
            update["database_url"] = pg.url
            print(f"octopost dev: embedded PostgreSQL at {pg.url} (data in {data / 'pg'})")
        if "REDIS_URL" not in os.environ:
            from service.embedded import EmbeddedRedis

            redis = stack.enter_context(EmbeddedRedis(data / "redis"))
            update["redis_url"] = redis.url
            print(f"octopost dev: embedded Redis at {redis.url}")
        yield settings.model_copy(update=update)


async def seed_demo(settings: Settings, vault: Vault) -> str:
    """Create the demo accounts on first run, and a fresh API key on every run."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, DEMO_WORKSPACE)
            existing = await conn.fetchval(
                "SELECT count(*) FROM accounts WHERE workspace_id = $1", workspace_id
            )
            if existing == 0:
                await import_accounts(conn, vault, workspace_id, parse_lines(demo_lines()))
            key = ids.new_api_key()
            await workspaces.insert_key(
                conn,
                ids.new_key_id(),
                workspace_id,
                ids.key_display_prefix(key),
                ids.hash_api_key(key),
            )
    finally:
        await conn.close()
    return key


@contextlib.asynccontextmanager
async def running_site(app: web.Application, host: str, port: int) -> AsyncIterator[None]:
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()


async def serve_dev(settings: Settings, host: str, port: int) -> None:
    vault = load_vault(settings)
    await migrate(settings.database_url)
    key = await seed_demo(settings, vault)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_site(create_app(settings), host, port))
        local = host in ("127.0.0.1", "0.0.0.0")  # noqa: S104 - naming, not binding
        base = f"http://{'localhost' if local else host}:{port}"
        print(
            "\noctopost dev is running.\n"
            f"  API          {base}/v1/accounts   (OpenAPI: {base}/v1/openapi.json)\n"
            f"  workspace    {DEMO_WORKSPACE!r}, API key (shown once):\n\n{key}\n\n"
            f'  try:  curl {base}/v1/accounts -H "Authorization: Bearer {key}"\n'
            "  stop: Ctrl-C\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("octopost dev: stopping", flush=True)


def run_dev(settings: Settings, *, host: str, port: int) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with embedded_servers(settings) as effective:
        asyncio.run(serve_dev(effective, host, port))
    return 0


__all__ = ["run_dev"]
