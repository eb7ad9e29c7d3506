"""The PostgreSQL pool and the migration runner."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import importlib.resources
import logging
import time
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


# Server errors after which the session is gone (SQLSTATE class 08 and 57P01-57P03).
CONNECTION_FATAL: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)

# A lane connection idle this long goes back to the pool (whose own idle timer then closes
# it down to min_size).
LANE_IDLE_SECONDS = 60.0
# Callers one batched statement serves at most; more in one turn go out as several.
BATCH_MAX = 256


class BatchedStatement:
    """One statement of a given shape for every caller of one event-loop turn.

    Under load a process receives many requests in one turn of the loop, and one database
    round trip costs more CPU (protocol, system calls, waking PostgreSQL) than everything
    else a simple read does. ``fetch(*params)`` queues the caller's parameters; at the end
    of the turn they go out together as one statement taking one array per parameter, and
    each caller gets its own rows back.

    The statement numbers its inputs ``WITH ORDINALITY`` and returns that number as its
    last column, ``batch_n``. A batch is sent after every request in it arrived, so no
    caller ever gets an answer older than its request (read-your-writes holds exactly as
    with one statement each). A failure reaches every caller in the batch.
    """

    def __init__(self, pool: Pool, sql: str) -> None:
        self.pool = pool
        self.sql = sql
        self._params: list[tuple[Any, ...]] = []
        self._futures: list[asyncio.Future[list[asyncpg.Record]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0  # statements sent, for tests and curiosity

    async def fetch(self, *params: Any) -> list[asyncpg.Record]:
        loop = asyncio.get_running_loop()
        if not self._futures:
            loop.call_soon(self._dispatch)
        future: asyncio.Future[list[asyncpg.Record]] = loop.create_future()
        self._params.append(params)
        self._futures.append(future)
        return await future

    def _dispatch(self) -> None:
        params, futures = self._params, self._futures
        self._params, self._futures = [], []
        for lo in range(0, len(futures), BATCH_MAX):
            task = asyncio.ensure_future(
                self._run(params[lo : lo + BATCH_MAX], futures[lo : lo + BATCH_MAX])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self, params: list[tuple[Any, ...]], futures: list[asyncio.Future[list[asyncpg.Record]]]
    ) -> None:
        self.sent += 1
        try:
            columns = [list(column) for column in zip(*params, strict=True)]
            rows = await self.pool.fetch(self.sql, *columns)
        except BaseException as exc:
            for future in futures:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        answers: list[list[asyncpg.Record]] = [[] for _ in futures]
        for row in rows:
            answers[row["batch_n"] - 1].append(row)
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():
                future.set_result(answer)


class Pool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no type information
    """asyncpg's pool, with a fast lane for the single-statement shortcuts.

    ``fetch``, ``fetchrow``, ``fetchval`` and ``execute`` (each one statement, autocommit) run
    on connections the lane keeps checked out of the pool and hands from query to query
    itself, first come first served. asyncpg's own acquire/release costs more CPU than the
    query (a proxy object, a future, a timer and a shielded task per release), and its queue
    lets a newcomer take a just-released connection ahead of the waiters, which under load
    left some requests waiting a second (p99) while the median waited 5 ms.

    The lane holds at most ``max_size - 1`` connections, so ``acquire()`` (transactions)
    always finds one. A connection whose statement failed other than with a PostgreSQL error
    (cancelled, timed out, broken) goes back to the pool, which cleans it up or replaces it.
    """

    def __init__(self, *args: Any, lane_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane_max = lane_size
        self._lane_count = 0  # connections the lane holds or is taking from the pool
        self._lane_idle: list[tuple[Any, float]] = []  # (connection, idle since), LIFO
        self._lane_waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._lane_closed = False
        self._lane_trimmer: asyncio.TimerHandle | None = None
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._batched: dict[str, BatchedStatement] = {}

    def batched(self, sql: str) -> BatchedStatement:
        """The batched form of a statement (see BatchedStatement), one per pool."""
        statement = self._batched.get(sql)
        if statement is None:
            statement = self._batched[sql] = BatchedStatement(self, sql)
        return statement

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        return await self._lane_run("fetch", query, args, kwargs)  # type: ignore[no-any-return]

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> asyncpg.Record | None:
        return await self._lane_run("fetchrow", query, args, kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._lane_run("fetchval", query, args, kwargs)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        return await self._lane_run("execute", query, args, kwargs)  # type: ignore[no-any-return]

    async def close(self) -> None:
        self._lane_closed = True
        while self._lane_waiters:
            waiter = self._lane_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(asyncpg.exceptions.InterfaceError("pool is closing"))
        idle, self._lane_idle = self._lane_idle, []
        for conn, _ in idle:
            await self._lane_release(conn)
        if self._lane_tasks:
            await asyncio.gather(*self._lane_tasks, return_exceptions=True)
        if self._lane_trimmer is not None:
            self._lane_trimmer.cancel()
        await super().close()

    def terminate(self) -> None:
        self._lane_closed = True
        self._lane_idle.clear()
        if self._lane_trimmer is not None:
            self._lane_trimmer.cancel()
        super().terminate()

    async def _lane_run(
        self, method: str, query: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._lane_max <= 0 or self._lane_closed:
            return await getattr(super(), method)(query, *args, **kwargs)
        conn = await self._lane_take()
        try:
            result = await getattr(conn, method)(query, *args, **kwargs)
        except CONNECTION_FATAL:
            # the server is ending the session (shutdown, crash recovery): never reuse it
            self._lane_drop(conn)
            raise
        except asyncpg.PostgresError:
            # the server refused the statement; the connection is as good as before
            self._lane_give(conn)
            raise
        except BaseException:
            self._lane_drop(conn)
            raise
        self._lane_give(conn)
        return result

    async def _lane_take(self) -> Any:
        while True:
            if self._lane_idle:
                return self._lane_idle.pop()[0]
            if self._lane_count < self._lane_max:
                self._lane_count += 1
                try:
                    return await super().acquire()
                except BaseException:
                    self._lane_count -= 1
                    self._lane_wake_one(None)
                    raise
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._lane_waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._lane_give(waiter.result())  # handed over just as we were cancelled
                raise
            if conn is not None:
                return conn
            # None: a lane slot came free (a connection was dropped); take it

    def _lane_wake_one(self, conn: Any) -> bool:
        while self._lane_waiters:
            waiter = self._lane_waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _lane_give(self, conn: Any) -> None:
        if self._lane_closed or conn.is_closed() or conn.is_in_transaction():
            self._lane_drop(conn)
        elif not self._lane_wake_one(conn):
            self._lane_idle.append((conn, time.monotonic()))
            if self._lane_trimmer is None:
                self._lane_trimmer = asyncio.get_running_loop().call_later(
                    LANE_IDLE_SECONDS, self._lane_trim
                )

    def _lane_drop(self, conn: Any) -> None:
        task = asyncio.ensure_future(self._lane_release(conn))
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_tasks.discard)

    async def _lane_release(self, conn: Any) -> None:
        try:
            # asyncpg waits out a cancelled query, rolls back, or replaces a broken connection
            await super().release(conn)
        except Exception:
            log.warning("a lane connection could not be released cleanly", exc_info=True)
        finally:
            self._lane_count -= 1
            if not self._lane_closed:
                self._lane_wake_one(None)

    def _lane_trim(self) -> None:
        self._lane_trimmer = None
        cutoff = time.monotonic() - LANE_IDLE_SECONDS
        stale = [conn for conn, since in self._lane_idle if since <= cutoff]
        self._lane_idle = [(conn, since) for conn, since in self._lane_idle if since > cutoff]
        for conn in stale:
            self._lane_drop(conn)
        if self._lane_idle:
            self._lane_trimmer = asyncio.get_running_loop().call_later(
                LANE_IDLE_SECONDS, self._lane_trim
            )


async def create_pool(settings: Settings, *, min_size: int | None = None) -> Pool:
    pool = Pool(
        settings.database_url,
        lane_size=settings.db_pool_max - 1,
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=settings.db_command_timeout,
        timeout=settings.db_acquire_timeout,
        reset=_reset_connection,
        server_settings={"application_name": "octopost", "timezone": "UTC"},
    )
    await pool
    return pool


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
