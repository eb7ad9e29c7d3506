"""The PostgreSQL pool and the migration runner."""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg

from service.core.settings import Settings

log = logging.getLogger(__name__)

# The top-level sql/ folder, installed as this package (setup.py maps one to the other).
MIGRATIONS_PACKAGE = "service.migrations"
# Any constant works; it only has to be the same for every process that migrates.
MIGRATION_LOCK_ID = 0x6F6374_6F706F
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"

# Errors that mean "the database is not reachable right now", as opposed to a bug.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
)


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # The app sets no session state, so asyncpg's default reset (advisory unlock, CLOSE ALL,
    # UNLISTEN, RESET ALL: one round trip on every release) is pure cost. A transaction
    # abandoned by a cancelled request is the one thing that must not leak to the next user.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class _QuietFloorRetries(logging.Filter):
    """asyncpg (0.32) logs a traceback each time it fails to reconnect its min_size
    connections (after 1, 2, 4 ... 60 s) while the database is down. The outage is the
    worker's to report, once, and /readyz's; the retries themselves are not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to restore the pool connection floor")


_QUIET_FLOOR_RETRIES = _QuietFloorRetries()


class Pool:
    """asyncpg's own pool, with ``db_acquire_timeout`` on every wait for a connection.

    asyncpg bounds a wait for a connection only when ``acquire(timeout=...)`` is given one;
    its shortcuts (``pool.fetch`` and the like) and a bare ``acquire()`` wait for ever. Every
    path here passes the timeout, so a request waits at most that long for a connection
    (TimeoutError, which the API answers 503) and then at most ``db_command_timeout`` for
    its statement. Queueing, waking, cancellation and replacing broken connections are
    asyncpg's: nothing is shared between two callers but the pool itself.
    """

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.asyncpg_pool = pool
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        """``async with pool.acquire() as conn``: a connection of one's own (transactions)."""
        return self.asyncpg_pool.acquire(
            timeout=self.acquire_timeout if timeout is None else timeout
        )

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        async with self.acquire() as conn:
            rows: list[Any] = await conn.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args)
            return status

    def get_size(self) -> int:
        size: int = self.asyncpg_pool.get_size()
        return size

    def get_idle_size(self) -> int:
        idle: int = self.asyncpg_pool.get_idle_size()
        return idle

    async def close(self) -> None:
        await self.asyncpg_pool.close()

    def terminate(self) -> None:
        self.asyncpg_pool.terminate()


async def create_pool(settings: Settings, *, min_size: int | None = None) -> Pool:
    logging.getLogger("asyncpg.pool").addFilter(_QUIET_FLOOR_RETRIES)  # once: a set
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        command_timeout=settings.db_command_timeout,
        # the connect timeout; the wait for a pooled connection is bounded in Pool.acquire
        timeout=settings.db_acquire_timeout,
        reset=_reset_connection,
        server_settings={"application_name": "octopost", "timezone": "UTC"},
    )
    return Pool(pool, settings.db_acquire_timeout)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationsMissing(RuntimeError):
    """No migration files where they should be: a broken install, never "up to date"."""


def migration_files() -> Traversable:
    """The installed migrations folder (``sql/`` in a source checkout)."""
    try:
        return importlib.resources.files(MIGRATIONS_PACKAGE)
    except ModuleNotFoundError:
        raise MigrationsMissing(
            f"no migrations: the package {MIGRATIONS_PACKAGE} is not installed; "
            "reinstall octopost-accounts (pip install .)"
        ) from None


def load_migrations(source: Traversable | None = None) -> list[Migration]:
    """Every ``NNNN_name.sql`` in order; raises MigrationsMissing if there is none."""
    source = migration_files() if source is None else source
    try:
        files = sorted(
            (f for f in source.iterdir() if f.name.endswith(".sql") and f.is_file()),
            key=lambda f: f.name,
        )
    except OSError:  # the folder itself is gone
        files = []
    if not files:
        raise MigrationsMissing(
            f"no migration files (*.sql) in {source}; reinstall octopost-accounts"
        )
    migrations = []
    for file in files:
        number, _, rest = file.name.removesuffix(".sql").partition("_")
        if not number.isdigit():
            raise RuntimeError(f"migration file name must start with a number: {file.name}")
        migrations.append(Migration(int(number), rest or number, file.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a number")
    return migrations


async def migrate(dsn: str, source: Traversable | None = None) -> list[Migration]:
    """Apply pending migrations in order, each once, each in its own transaction.

    A session-level advisory lock makes concurrent starters wait for each other instead of
    racing; the loser then sees the migrations as applied and does nothing. Without any
    migration file it raises MigrationsMissing before it connects.
    """
    migrations = load_migrations(source)
    applied_now: list[Migration] = []
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                r["version"]: r["checksum"]
                for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
            }
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning("migration %s changed after it was applied", migration.version)
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        RECORD_MIGRATION,
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration)
                log.info("applied migration %04d_%s", migration.version, migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()
    return applied_now
