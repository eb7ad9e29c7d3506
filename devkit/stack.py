"""`octopost dev`: the whole service on one machine with nothing but Python.

Starts an embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set), migrates,
seeds a demo workspace, and runs the API, the platform sandbox (on the API port + 10 unless
told otherwise) and the token-health worker (checking against that sandbox) in one process
and one event loop. It prints the demo workspace's API key with a curl line that works; the
key is kept in ``<data dir>/demo-key`` and is the workspace's only active key, so every start
prints the same one. The worker's metrics are served on the API's /metrics.

One stack per data dir: the first start holds an flock on ``<data dir>/dev.lock`` (which
names its pid and ports) for its whole life; a second start on the same data dir refuses at
once, naming the first, before it touches anything the first one uses. ``--reset`` (under
that lock) deletes the embedded servers' data so the next start seeds the demo afresh.

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
import fcntl
import logging
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from arq.worker import Worker

from service.api import appkeys
from service.api.app import create_app
from service.api.internal_app import create_internal_app
from service.api.server import AppRunner
from service.api.service_auth import SCOPES
from service.cli import CommandError
from service.core import api_keys
from service.core.db import migrate
from service.core.importer import import_accounts, parse_lines
from service.core.keyring import load_vault
from service.core.repository import service_keys, workspaces
from service.core.settings import Settings
from service.core.vault import Vault

log = logging.getLogger("octopost.dev")

DEMO_WORKSPACE = "demo"
SANDBOX_PORT_OFFSET = 10  # the sandbox listens on the API port + 10
INTERNAL_PORT_OFFSET = 1  # the internal API listens on the API port + 1
DEV_SERVICE_KEY_NAME = "dev"
DEV_ENV_FILE = "dev.env"
# What a second shell needs to reach the running stack; the pid tells a live file from a
# stale one.
DEV_ENV_KEYS = ("DATABASE_URL", "REDIS_URL", "OCTOPOST_SANDBOX_URL")
DEV_PID_KEY = "OCTOPOST_DEV_PID"
LOCK_FILE = "dev.lock"  # flocked by the running stack; names its pid and ports
DEMO_KEY_FILE = "demo-key"  # the demo workspace's one API key (0600)
DEV_SERVICE_KEY_FILE = "dev-service-key"  # the dev stack's one service key (0600)
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


# The platform user behind the demo Page and channel, as push notices name them.
DEMO_AUTHORIZING_USERS = {"acc_fb0001": "fb-user-1", "acc_yt0001": "google-sub-1"}
DEMO_PUSH = '{"platform": "facebook", "event": "deauthorize", "user_id": "fb-user-1"}'


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
                **(
                    {"authorizing_user_id": DEMO_AUTHORIZING_USERS[account["id"]]}
                    if account["id"] in DEMO_AUTHORIZING_USERS
                    else {}
                ),
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
            from devkit.embedded import EmbeddedPostgres

            pg = stack.enter_context(EmbeddedPostgres(data / "pg"))
            update["database_url"] = pg.url
            print(f"octopost dev: embedded PostgreSQL at {pg.url} (data in {data / 'pg'})")
        if "REDIS_URL" not in os.environ:
            from devkit.embedded import EmbeddedRedis

            redis = stack.enter_context(EmbeddedRedis(data / "redis"))
            update["redis_url"] = redis.url
            print(f"octopost dev: embedded Redis at {redis.url}")
        yield settings.model_copy(update=update)


def _read_key(path: Path, well_formed: Callable[[str], bool]) -> str | None:
    with contextlib.suppress(OSError):
        key = path.read_text().strip()
        if well_formed(key):
            return key
    return None


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


async def _dev_service_key(conn: asyncpg.Connection, path: Path) -> str:
    """The dev stack's service key (every scope): the one kept in ``path`` while it still
    works, else a new one; other active keys of that name are revoked."""
    key = _read_key(path, api_keys.is_well_formed_service_key)
    row = None
    if key is not None:
        row = await service_keys.resolve_service_key(conn, api_keys.hash_api_key(key))
    if key is None or row is None:
        key, key_id = api_keys.new_service_key(), api_keys.new_service_key_id()
        await service_keys.insert_service_key(
            conn,
            key_id,
            DEV_SERVICE_KEY_NAME,
            api_keys.service_key_display_prefix(key),
            api_keys.hash_api_key(key),
            list(SCOPES),
        )
    else:
        key_id = row["id"]
    await service_keys.revoke_other_service_keys(conn, DEV_SERVICE_KEY_NAME, key_id)
    _write_secret(path, key + "\n")
    return key


async def seed_demo(settings: Settings, vault: Vault) -> tuple[str, str]:
    """Create the demo accounts on first run, and keep the demo workspace at one active API
    key: the one in ``<data dir>/demo-key`` while it still works, else a new one. Any other
    active key of the workspace is revoked. The same for the dev service key."""
    key_file = settings.data_dir / DEMO_KEY_FILE
    key = _read_key(key_file, api_keys.is_well_formed_key)
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            workspace_id = await workspaces.ensure_workspace(conn, DEMO_WORKSPACE)
            existing = await conn.fetchval(
                "SELECT count(*) FROM accounts WHERE workspace_id = $1", workspace_id
            )
            if existing == 0:
                await import_accounts(conn, vault, workspace_id, parse_lines(demo_lines()))
            row = (
                None
                if key is None
                else await workspaces.resolve_key(conn, api_keys.hash_api_key(key))
            )
            if key is not None and row is not None and row["workspace_id"] == workspace_id:
                key_id = row["id"]
            else:
                key, key_id = api_keys.new_api_key(), api_keys.new_key_id()
                await workspaces.insert_key(
                    conn,
                    key_id,
                    workspace_id,
                    api_keys.key_display_prefix(key),
                    api_keys.hash_api_key(key),
                )
            revoked = await workspaces.revoke_other_keys(conn, workspace_id, key_id)
            service_key = await _dev_service_key(conn, settings.data_dir / DEV_SERVICE_KEY_FILE)
    finally:
        await conn.close()
    if revoked:
        log.info("revoked %d other key(s) of the %s workspace", revoked, DEMO_WORKSPACE)
    _write_secret(key_file, key + "\n")
    return key, service_key


PICK_PORTS = (
    "pick other ports: `python3 dev.py --port P` moves the API to P and the sandbox to P+10, "
    "`--sandbox-port Q` moves the sandbox alone"
)


def _port_taken(host: str, port: int) -> bool:
    """Somebody listens on host:port (bound as aiohttp binds: SO_REUSEADDR, so a TIME_WAIT
    leftover is no clash)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False  # the bind itself will say what is wrong with the host
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return True
    return False


def _clash(service: str, host: str, port: int, exc: OSError | None = None) -> CommandError:
    why = "another program listens there" if exc is None else exc.strerror or str(exc)
    return CommandError(f"{service} wants {host}:{port}, but {why}; {PICK_PORTS}")


def check_ports(host: str, port: int, sandbox_port: int) -> None:
    """Refuse before anything starts if the API's or the sandbox's port is taken."""
    if port == sandbox_port:
        raise CommandError(f"the API and the sandbox cannot share port {port}; {PICK_PORTS}")
    for service, where, number in (
        ("the API", host, port),
        ("the platform sandbox", "127.0.0.1", sandbox_port),
    ):
        if _port_taken(where, number):
            raise _clash(service, where, number)


@contextlib.asynccontextmanager
async def running_site(
    app: web.Application, host: str, port: int, service: str = "the server"
) -> AsyncIterator[None]:
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:  # taken since check_ports, or a host we cannot bind
            raise _clash(service, host, port, exc) from exc
        yield
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def single_instance(data_dir: Path, host: str, port: int, sandbox_port: int) -> Iterator[None]:
    """Hold ``<data dir>/dev.lock`` for the life of this stack, or refuse at once, naming
    the stack that holds it. The kernel drops the lock when its holder dies, however."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_env_file(path)
            raise CommandError(
                f"another `octopost dev` (pid {holder.get('pid', '?')}, API on "
                f"{holder.get('api', '?')}, sandbox on {holder.get('sandbox', '?')}) already "
                f"runs on the data dir {data_dir}; use that one, or stop it first (Ctrl-C in "
                "its shell). A second stack needs a data dir of its own: "
                "OCTOPOST_DATA_DIR=.var2 python3 dev.py --port 8180"
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            f"pid={os.getpid()}\napi={host}:{port}\nsandbox=127.0.0.1:{sandbox_port}\n".encode(),
        )
        yield
    finally:
        os.close(fd)


def reset_data(data_dir: Path) -> list[str]:
    """Stop and delete the embedded servers' data (under the instance lock); what went."""
    from devkit.embedded import EmbeddedPostgres, EmbeddedRedis

    for var in ("DATABASE_URL", "REDIS_URL"):
        if var in os.environ:
            raise CommandError(
                f"--reset deletes the embedded servers' data, but {var} is set: this stack "
                f"uses that server, so reset it yourself (or unset {var})"
            )
    removed = []
    for name, server in (("pg", EmbeddedPostgres), ("redis", EmbeddedRedis)):
        path = data_dir / name
        if path.exists():
            server(path).stop()  # a server a crashed stack left running on it
            shutil.rmtree(path)
            removed.append(str(path))
    key_file = data_dir / DEMO_KEY_FILE
    if key_file.exists():
        key_file.unlink()
        removed.append(str(key_file))
    return removed


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


def dev_platform_settings(sandbox_url: str) -> Any:
    """What the API (connect) and the worker use: the sandbox for every platform, with the
    app credentials it expects, and private hosts allowed (it listens on 127.0.0.1)."""
    from service.platforms.config import PlatformSettings

    return PlatformSettings(
        sandbox_url=sandbox_url, request_timeout_seconds=5, allow_private_hosts=True
    )


def sandbox_app(platform_settings: Any = None, push_target: str | None = None) -> web.Application:
    """The platform sandbox, agreeing with the demo data: the tokens of the demo accounts
    that are inactive are revoked at the "platform", so a sweep keeps them inactive. Its
    push notices go to `push_target` (the API) unless a request names another."""
    from devkit.sandbox.app import SANDBOX_STATE, create_sandbox_app
    from devkit.sandbox.credentials import SANDBOX_CREDENTIALS
    from devkit.sandbox.state import TokenState

    app = create_sandbox_app(
        platform_settings=platform_settings,
        credentials=SANDBOX_CREDENTIALS,
        push_target=push_target,
    )
    tokens = app[SANDBOX_STATE].tokens
    for account in DEMO_ACCOUNTS:
        if not account["is_active"]:
            for token in demo_tokens(account["platform"]):
                tokens[token] = TokenState("revoked")
    return app


class _StopSignal(logging.Filter):
    """arq names the signal of a worker it does not handle signals for SIGUSR1 when it
    closes; name the one that stopped the stack instead."""

    def __init__(self) -> None:
        super().__init__()
        self.name_of_signal = "the stop of octopost dev"  # until a signal says which

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("shutdown on ")
            and isinstance(record.args, tuple)
            and record.args[:1] == ("SIGUSR1",)
        ):
            record.args = (self.name_of_signal, *record.args[1:])
        return True


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, sandbox_url: str, stop_signal: _StopSignal | None = None
) -> AsyncIterator[Worker]:
    """The arq worker in this event loop, checking tokens against the sandbox."""
    from worker.assembly import make_worker
    from worker.runtime import CTX_KEY

    platforms = dev_platform_settings(sandbox_url)
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
        arq_log = logging.getLogger("arq.worker")
        if stop_signal is not None:
            arq_log.addFilter(stop_signal)
        try:
            await worker.close()
        finally:
            if stop_signal is not None:
                arq_log.removeFilter(stop_signal)
        await asyncio.wait([task])


async def serve_dev(settings: Settings, host: str, port: int, sandbox_port: int) -> None:
    from worker.runtime import runtime

    if "OCTOPOST_ALLOW_PRIVATE_HOSTS" not in os.environ:
        # a local stack delivers webhooks to local receivers
        settings = settings.model_copy(update={"allow_private_hosts": True})
    vault = load_vault(settings)
    await migrate(settings.database_url)
    key, service_key = await seed_demo(settings, vault)
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    internal_port = port + INTERNAL_PORT_OFFSET
    platforms = dev_platform_settings(sandbox_url)
    local = host in ("127.0.0.1", "0.0.0.0")  # noqa: S104 - naming, not binding
    base = f"http://{'localhost' if local else host}:{port}"
    # connect: the callback is on this API, and a browser may be sent back to it
    origins = [o for o in settings.connect_redirect_origins.split(",") if o.strip()]
    origins += [base, f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    api_url = f"http://127.0.0.1:{port}" if local else base
    # The push receivers take the sandbox's secrets and keys, as the worker's adapters do.
    from devkit.sandbox.credentials import push_receiver_settings

    update = push_receiver_settings(sandbox_url)
    update["connect_redirect_origins"] = ",".join(origins)
    if "OCTOPOST_PUBLIC_BASE_URL" not in os.environ:
        update["public_base_url"] = base
    settings = settings.model_copy(update=update)
    stop_signal = _StopSignal()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            running_site(
                sandbox_app(platforms, push_target=api_url),
                "127.0.0.1",
                sandbox_port,
                "the platform sandbox",
            )
        )
        public = create_app(settings, platform_settings=platforms)
        await stack.enter_async_context(running_site(public, host, port, "the API"))
        internal = create_internal_app(settings, shared=public, platform_settings=platforms)
        # the internal API is for other services on this machine: never on a public address
        await stack.enter_async_context(
            running_site(internal, "127.0.0.1", internal_port, "the internal API")
        )
        worker = await stack.enter_async_context(running_worker(settings, sandbox_url, stop_signal))
        # one /metrics for the whole stack: the API's, and the worker's after them
        public[appkeys.METRICS].include(runtime(worker.ctx).metrics.registry)
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
        internal_base = f"http://localhost:{internal_port}"
        schedule = (
            f"a scheduled sweep every {settings.sweep_interval_minutes} min"
            if settings.sweep_interval_minutes > 0
            else "no scheduled sweeps"
        )
        print(
            "\noctopost dev is running.\n"
            f"  API          {base}/v1/accounts   (OpenAPI: {base}/v1/openapi.json)\n"
            f"  internal API {internal_base}/internal/v1   "
            f"(OpenAPI: {internal_base}/internal/v1/openapi.json)\n"
            f"  metrics      {base}/metrics   (the API's and the worker's)\n"
            f"  sandbox      {sandbox_url}   (the fake platforms the worker checks tokens at)\n"
            f"  worker       token health ({schedule}), revocations, platform notices, "
            "webhook deliveries\n"
            f"  workspace    {DEMO_WORKSPACE!r}, its API key (kept in "
            f"{settings.data_dir / DEMO_KEY_FILE}):\n\n{key}\n\n"
            f"  service key  {DEV_SERVICE_KEY_NAME!r} ({', '.join(SCOPES)}), for the internal "
            f"API (kept in {settings.data_dir / DEV_SERVICE_KEY_FILE}):\n\n{service_key}\n\n"
            f'  try:  curl {base}/v1/accounts -H "Authorization: Bearer {key}"\n'
            f'        curl {base}/v1/webhook_endpoints -H "Authorization: Bearer {key}" '
            '-d \'{"url": "http://127.0.0.1:9000/"}\'   (then: python3 dev.py octopost '
            "webhook-receiver --secret whsec_...)\n"
            "        python3 dev.py octopost sweep --wait   (another shell: check all tokens now)\n"
            f"        curl {sandbox_url}/sandbox/push -d '{DEMO_PUSH}'\n"
            "        (the demo Page's user removes the app: acc_fb0001 turns inactive)\n"
            "  the publisher's loop (internal API: a token, then what happened):\n"
            f"        curl -X POST {internal_base}/internal/v1/accounts/acc_abc123/credentials "
            f'-H "Authorization: Bearer {service_key}"\n'
            f"        curl -X POST {internal_base}/internal/v1/accounts/acc_abc123/usage "
            f'-H "Authorization: Bearer {service_key}" '
            """-d '{"result": "published"}'\n"""
            "  connect:   README.md, 'Connecting accounts' (sandbox consent screens at "
            f"{sandbox_url}/sandbox/login)\n"
            f"  other octopost commands find these servers through {env_file}\n"
            "  start again from the demo data: python3 dev.py --reset\n"
            "  stop: Ctrl-C\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop_on(sig: signal.Signals) -> None:
            stop_signal.name_of_signal = sig.name
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_on, sig)
        await stop.wait()
        print("octopost dev: stopping", flush=True)


def run_dev(
    settings: Settings,
    *,
    host: str,
    port: int,
    sandbox_port: int | None = None,
    reset: bool = False,
) -> int:
    """Failures a user can fix (a port taken, a second start, a server unreachable) are
    raised for the CLI's one error path to print as one line."""
    sandbox_port = port + SANDBOX_PORT_OFFSET if sandbox_port is None else sandbox_port
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    data = settings.data_dir.resolve()
    # Before anything that could touch what a running stack on this data dir uses.
    with single_instance(data, host, port, sandbox_port):
        if reset:
            removed = reset_data(data)
            print(f"octopost dev: reset: removed {', '.join(removed) or 'nothing (no data yet)'}")
        check_ports(host, port, sandbox_port)
        with embedded_servers(settings) as effective:
            asyncio.run(serve_dev(effective, host, port, sandbox_port))
    return 0


__all__ = ["load_dev_env", "run_dev"]
