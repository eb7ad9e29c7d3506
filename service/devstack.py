"""`octopost dev`: the whole service on one machine with nothing but Python.

Starts an embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set), migrates,
seeds a demo workspace, and runs the API, the platform sandbox (on the API port + 10) and the
token-health worker (checking against that sandbox) in one process and one event loop. It
prints an API key with a curl line that works.

While it runs it writes ``<data dir>/dev.env`` (DATABASE_URL, REDIS_URL, OCTOPOST_SANDBOX_URL
and its pid) and removes it when it stops. Any other `octopost` command started with
OCTOPOST_ENV=development (the default) and the same data dir fills in whichever of those
variables its own environment lacks from that file (``load_dev_env``), so
``python3 dev.py octopost sweep --wait`` in a second shell talks to the running dev stack's
embedded servers. A dev.env whose pid is gone is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from arq.worker import Worker

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
DEV_ENV_FILE = "dev.env"
# What a second shell needs to reach the running stack; the pid tells a live file from a
# stale one.
DEV_ENV_KEYS = ("DATABASE_URL", "REDIS_URL", "OCTOPOST_SANDBOX_URL")
DEV_PID_KEY = "OCTOPOST_DEV_PID"
# App credentials for the platforms that want them; the sandbox accepts any.
SANDBOX_CREDENTIALS = {
    "twitter_client_id": "sandbox-client",
    "twitter_client_secret": "sandbox-secret",
    "linkedin_client_id": "sandbox-client",
    "linkedin_client_secret": "sandbox-secret",
    "facebook_app_id": "sandbox-app",
    "facebook_app_secret": "sandbox-secret",
    "tiktok_client_key": "sandbox-client",
    "tiktok_client_secret": "sandbox-secret",
    "youtube_client_id": "sandbox-client",
    "youtube_client_secret": "sandbox-secret",
}
WORKER_STOP_WAIT = 5.0  # seconds running jobs get to finish on Ctrl-C

# The seed's three Account objects, as the API reference shows them.
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

# The seed's accounts plus one on every other platform, so a sweep touches them all.
DEMO_ACCOUNTS: list[dict[str, Any]] = [
    *SEED_ACCOUNTS,
    *(
        {
            "id": account_id,
            "platform": platform,
            "platform_user_id": user_id,
            "username": username,
            "display_name": "Octopost",
            "avatar_url": None,
            "is_active": True,
            "connected_at": connected_at,
            "last_used_at": None,
        }
        for account_id, platform, user_id, username, connected_at in (
            (
                "acc_mas001",
                "mastodon",
                "109876",
                "octopost@mastodon.social",
                "2026-03-21T09:00:00Z",
            ),
            ("acc_thr001", "threads", "thr-1", "octopost", "2026-03-22T09:00:00Z"),
            ("acc_ig0001", "instagram", "ig-1", "octopost", "2026-03-23T09:00:00Z"),
            ("acc_fb0001", "facebook", "fb-1", "octopost", "2026-03-24T09:00:00Z"),
            ("acc_tt0001", "tiktok", "tt-1", "octopost", "2026-03-25T09:00:00Z"),
            ("acc_yt0001", "youtube", "UC-octopost", "octopost", "2026-03-26T09:00:00Z"),
        )
    ),
]


def demo_tokens(platform: str) -> tuple[str, str]:
    return f"demo-{platform}-access", f"demo-{platform}-refresh"


def demo_lines() -> list[str]:
    import orjson

    return [
        orjson.dumps(
            {
                **account,
                "access_token": demo_tokens(account["platform"])[0],
                "refresh_token": demo_tokens(account["platform"])[1],
            }
        ).decode()
        for account in DEMO_ACCOUNTS
    ]


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


def dev_env_path(data_dir: Path) -> Path:
    return data_dir / DEV_ENV_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def load_dev_env(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Fill unset DATABASE_URL / REDIS_URL / OCTOPOST_SANDBOX_URL from a running dev stack's
    dev.env (development only); returns the names it set."""
    env = os.environ if environ is None else environ
    if env.get("OCTOPOST_ENV", "development") != "development":
        return []
    path = dev_env_path(Path(env.get("OCTOPOST_DATA_DIR", ".var")))
    try:
        values = _read_env_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    pid = values.get(DEV_PID_KEY, "")
    if not (pid.isdigit() and _pid_alive(int(pid))):
        return []
    applied = [k for k in DEV_ENV_KEYS if k in values and k not in env]
    for key in applied:
        env[key] = values[key]
    return applied


@contextlib.contextmanager
def dev_env_file(data_dir: Path, values: dict[str, str]) -> Iterator[Path]:
    """dev.env for the life of this process (0600: a DATABASE_URL may carry a password)."""
    path = dev_env_path(data_dir)
    pid = str(os.getpid())
    lines = [
        f"# Written by `octopost dev` (pid {pid}) while it runs, removed when it stops. Other",
        "# octopost commands with OCTOPOST_ENV=development and this data dir take from it",
        "# whatever their own environment does not set.",
        f"{DEV_PID_KEY}={pid}",
        *(f"{k}={values[k]}" for k in DEV_ENV_KEYS),
    ]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    tmp.replace(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if _read_env_file(path).get(DEV_PID_KEY) == pid:
                path.unlink()


def sandbox_app() -> web.Application:
    """The platform sandbox, agreeing with the demo data: the tokens of the demo accounts
    that are inactive are revoked at the "platform", so a sweep keeps them inactive."""
    from worker.sandbox.app import SANDBOX_STATE, create_sandbox_app
    from worker.sandbox.state import TokenState

    app = create_sandbox_app()
    tokens = app[SANDBOX_STATE].tokens
    for account in DEMO_ACCOUNTS:
        if not account["is_active"]:
            for token in demo_tokens(account["platform"]):
                tokens[token] = TokenState("revoked")
    return app


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, sandbox_url: str) -> AsyncIterator[Worker]:
    """The arq worker in this event loop, checking tokens against the sandbox."""
    from worker.platforms.config import PlatformSettings
    from worker.runtime import CTX_KEY
    from worker.settings import make_worker

    platforms = PlatformSettings(
        sandbox_url=sandbox_url,
        request_timeout_seconds=5,
        **SANDBOX_CREDENTIALS,  # type: ignore[arg-type]
    )
    worker = make_worker(settings, platform_settings=platforms, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        # Up when its startup has built the runtime; a worker that cannot start (Redis
        # unreachable, say) is an error here, not a silent gap in the demo.
        while CTX_KEY not in worker.ctx:
            if task.done():
                task.result()
                raise RuntimeError("the worker stopped during startup")
            await asyncio.sleep(0.02)
        yield worker
    finally:
        # Stop taking jobs, give running ones a moment, then cancel the rest: arq puts a
        # cancelled job back in the queue for the next start.
        worker.allow_pick_jobs = False
        running = [t for t in worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=WORKER_STOP_WAIT)
        await worker.close()
        await asyncio.wait([task])


async def serve_dev(settings: Settings, host: str, port: int) -> None:
    if "OCTOPOST_ALLOW_PRIVATE_HOSTS" not in os.environ:
        # a local stack delivers webhooks to local receivers
        settings = settings.model_copy(update={"allow_private_hosts": True})
    vault = load_vault(settings)
    await migrate(settings.database_url)
    key = await seed_demo(settings, vault)
    sandbox_port = port + SANDBOX_PORT_OFFSET
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_site(sandbox_app(), "127.0.0.1", sandbox_port))
        await stack.enter_async_context(running_site(create_app(settings), host, port))
        await stack.enter_async_context(running_worker(settings, sandbox_url))
        env_file = stack.enter_context(
            dev_env_file(
                settings.data_dir,
                {
                    "DATABASE_URL": settings.database_url,
                    "REDIS_URL": settings.redis_url,
                    "OCTOPOST_SANDBOX_URL": sandbox_url,
                },
            )
        )
        local = host in ("127.0.0.1", "0.0.0.0")  # noqa: S104 - naming, not binding
        base = f"http://{'localhost' if local else host}:{port}"
        schedule = (
            f"a scheduled sweep every {settings.sweep_interval_minutes} min"
            if settings.sweep_interval_minutes > 0
            else "no scheduled sweeps"
        )
        print(
            "\noctopost dev is running.\n"
            f"  API          {base}/v1/accounts   (OpenAPI: {base}/v1/openapi.json)\n"
            f"  sandbox      {sandbox_url}   (the fake platforms the worker checks tokens at)\n"
            f"  worker       token health ({schedule}), revocations, webhook deliveries\n"
            f"  workspace    {DEMO_WORKSPACE!r}, API key (shown once):\n\n{key}\n\n"
            f'  try:  curl {base}/v1/accounts -H "Authorization: Bearer {key}"\n'
            f'        curl {base}/v1/webhook_endpoints -H "Authorization: Bearer {key}" '
            '-d \'{"url": "http://127.0.0.1:9000/"}\'   (then: python3 dev.py octopost '
            "webhook-receiver --secret whsec_...)\n"
            "        python3 dev.py octopost sweep --wait   (another shell: check all tokens now)\n"
            f"  other octopost commands find these servers through {env_file}\n"
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
        try:
            asyncio.run(serve_dev(effective, host, port))
        except OSError as exc:  # a port in use, mostly
            print(f"octopost dev: {exc}", file=sys.stderr)
            return 1
    return 0


__all__ = ["load_dev_env", "run_dev"]
