"""The PostgreSQL pool and the migration runner."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from service.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql"
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


async def create_pool(settings: Settings, *, min_size: int | None = None) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max,
        command_timeout=settings.db_command_timeout,
        timeout=settings.db_acquire_timeout,
        reset=_reset_connection,
        server_settings={"application_name": "octopost", "timezone": "UTC"},
    )
    assert pool is not None
    return pool


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        number, _, rest = path.stem.partition("_")
        if not number.isdigit():
            raise RuntimeError(f"migration file name must start with a number: {path.name}")
        migrations.append(Migration(int(number), rest or path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a number")
    return migrations


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations in order, each once, each in its own transaction.

    A session-level advisory lock makes concurrent starters wait for each other instead of
    racing; the loser then sees the migrations as applied and does nothing.
    """
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
            for migration in load_migrations(directory):
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
