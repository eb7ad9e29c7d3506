"""Service keys: the credentials other Octopost services present on the internal listener."""

from __future__ import annotations

import asyncpg

INSERT_SERVICE_KEY = """
INSERT INTO service_keys (id, name, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4, $5)
"""
# The internal read path's only query about keys: one index probe on the hash.
RESOLVE_SERVICE_KEY = """
SELECT id, name, key_hash, scopes FROM service_keys
WHERE key_hash = $1 AND revoked_at IS NULL
"""
TOUCH_SERVICE_KEY = "UPDATE service_keys SET last_used_at = now() WHERE id = $1"
# By id, display prefix, or the key itself (its hash: the key is never stored).
REVOKE_SERVICE_KEY = """
UPDATE service_keys SET revoked_at = now()
WHERE (id = $1 OR prefix = $1 OR key_hash = $2) AND revoked_at IS NULL
RETURNING id, name, prefix
"""
REVOKE_OTHER_SERVICE_KEYS = """
UPDATE service_keys SET revoked_at = now()
WHERE name = $1 AND id <> $2 AND revoked_at IS NULL
"""
LIST_SERVICE_KEYS = """
SELECT id, name, prefix, scopes, created_at, last_used_at, revoked_at FROM service_keys
ORDER BY created_at, id
"""


async def insert_service_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    key_id: str,
    name: str,
    prefix: str,
    key_hash: bytes,
    scopes: list[str],
) -> None:
    await conn.execute(INSERT_SERVICE_KEY, key_id, name, prefix, key_hash, scopes)


async def resolve_service_key(
    conn: asyncpg.Connection | asyncpg.Pool, key_hash: bytes
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(RESOLVE_SERVICE_KEY, key_hash)
    return row


async def touch_service_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> None:
    await conn.execute(TOUCH_SERVICE_KEY, key_id)


async def revoke_service_key(
    conn: asyncpg.Connection | asyncpg.Pool, id_or_prefix: str, key_hash: bytes
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(REVOKE_SERVICE_KEY, id_or_prefix, key_hash)
    return rows


async def revoke_other_service_keys(conn: asyncpg.Connection, name: str, keep_id: str) -> int:
    """Revoke every active service key called ``name`` except ``keep_id``; how many were."""
    status: str = await conn.execute(REVOKE_OTHER_SERVICE_KEYS, name, keep_id)
    return int(status.split()[-1])


async def list_service_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_SERVICE_KEYS)
    return rows
