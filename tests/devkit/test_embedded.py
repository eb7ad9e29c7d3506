"""The private PostgreSQL / Redis servers of devkit.embedded, driven with real clients."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psutil
import pytest
import redis

from devkit.embedded import (
    RESERVED_PORTS,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    free_port,
)


def _processes_in(data_dir: Path) -> list[int]:
    """Live processes working in data_dir (postgres and redis chdir there)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == data_dir.resolve():
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def _pg(url: str, *statements: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[asyncpg.Record] = []
        for sql in statements:
            rows = await conn.fetch(sql)
        return rows
    finally:
        await conn.close()


def pg_fetch(url: str, *statements: str) -> list[asyncpg.Record]:
    return asyncio.run(_pg(url, *statements))


def test_free_port_is_bindable_and_never_a_system_port() -> None:
    port = free_port()
    assert port not in RESERVED_PORTS
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_postgres_start_restart_kill(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    pg = EmbeddedPostgres(data_dir)
    assert not pg.is_running()

    url = pg.start()
    assert url == pg.url
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.username, parts.path) == (
        "postgresql", "127.0.0.1", "postgres", "/octopost",
    )  # fmt: skip
    assert _port(url) not in RESERVED_PORTS
    assert pg.is_running()

    rows = pg_fetch(
        url,
        "CREATE TABLE t (v text)",
        "INSERT INTO t VALUES ('before stop')",
        "SELECT current_database() AS db, current_setting('max_connections') AS mc,"
        " current_setting('fsync') AS fsync, current_setting('listen_addresses') AS la",
    )
    assert dict(rows[0]) == {"db": "octopost", "mc": "200", "fsync": "off", "la": "127.0.0.1"}

    # a clean stop/start keeps the data and the URL
    pg.stop()
    assert not pg.is_running()
    assert _processes_in(data_dir) == []
    pg.stop()  # idempotent
    assert pg.start() == url
    pg_fetch(url, "INSERT INTO t VALUES ('before kill')")

    # SIGKILL leaves a stale postmaster.pid (and maybe backends); start() recovers
    pg.kill()
    assert not pg.is_running()
    assert (data_dir / "postmaster.pid").exists()
    assert pg.start() == url
    rows = pg_fetch(url, "SELECT v FROM t ORDER BY v")
    assert [r["v"] for r in rows] == ["before kill", "before stop"]

    # a second handle on the same data dir adopts the running server
    other = EmbeddedPostgres(data_dir)
    assert other.start() == url
    assert other.is_running()

    pg.stop()
    assert not other.is_running()
    assert _processes_in(data_dir) == []
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(OSError):  # nothing listens any more
        pg_fetch(url, "SELECT 1")


def test_postgres_context_manager_and_fresh_handle_reuses_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with EmbeddedPostgres(data_dir, database="other") as pg:
        url = pg.url
        pg_fetch(url, "CREATE TABLE kept (id int)", "INSERT INTO kept VALUES (42)")
    assert _processes_in(data_dir) == []

    with EmbeddedPostgres(data_dir, database="other") as again:  # remembered port
        assert again.url == url
        assert [r["id"] for r in pg_fetch(url, "SELECT id FROM kept")] == [42]
    assert _processes_in(data_dir) == []


def test_postgres_refuses_a_busy_explicit_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match="already in use"):
            EmbeddedPostgres(tmp_path / "pg", port=busy).start()
    assert _processes_in(tmp_path / "pg") == []


def test_redis_start_restart_kill(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir) as server:
        url = server.url
        assert url.startswith("redis://127.0.0.1:")
        assert _port(url) not in RESERVED_PORTS
        client = redis.Redis.from_url(url)
        try:
            assert client.ping()
            client.set("k", "v")
            assert client.get("k") == b"v"
        finally:
            client.close()

        server.stop()
        assert not server.is_running()
        assert _processes_in(data_dir) == []
        assert server.start() == url

        server.kill()
        assert not server.is_running()
        assert (data_dir / "redis.pid").exists()  # stale, cleaned by start()
        assert server.start() == url
        client = redis.Redis.from_url(url)
        try:
            assert client.ping()
            assert client.get("k") is None  # no persistence: --save "" and no AOF
        finally:
            client.close()

    assert not server.is_running()
    assert _processes_in(data_dir) == []
    assert not (data_dir / "redis.pid").exists()
    server.stop()  # idempotent
