"""Workspaces and their API keys."""

from __future__ import annotations

import asyncpg

ENSURE_WORKSPACE = """
INSERT INTO workspaces (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id
"""
GET_WORKSPACE_ID = "SELECT id FROM workspaces WHERE name = $1"

INSERT_KEY = """
INSERT INTO api_keys (id, workspace_id, prefix, key_hash) VALUES ($1, $2, $3, $4)
"""
# The read path's only query about keys: one index probe on the hash.
RESOLVE_KEY = """
SELECT k.id, k.workspace_id, k.key_hash, k.last_used_at
FROM api_keys k
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
"""
TOUCH_KEY = "UPDATE api_keys SET last_used_at = now() WHERE id = $1"
REVOKE_KEY = """
UPDATE api_keys SET revoked_at = now()
WHERE (id = $1 OR prefix = $1) AND revoked_at IS NULL
RETURNING id, prefix
"""
REVOKE_KEY_BY_HASH = """
UPDATE api_keys SET revoked_at = now()
WHERE key_hash = $1 AND revoked_at IS NULL
RETURNING id, prefix
"""
# Every active key of a workspace but one (the dev stack keeps one demo key).
REVOKE_OTHER_KEYS = """
UPDATE api_keys SET revoked_at = now()
WHERE workspace_id = $1 AND id <> $2 AND revoked_at IS NULL
"""
LIST_KEYS = """
SELECT k.id, k.prefix, w.name AS workspace, k.created_at, k.last_used_at, k.revoked_at
FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
ORDER BY k.created_at, k.id
"""


async def ensure_workspace(conn: asyncpg.Connection, name: str) -> int:
    workspace_id: int = await conn.fetchval(ENSURE_WORKSPACE, name)
    return workspace_id


async def get_workspace_id(conn: asyncpg.Connection, name: str) -> int | None:
    workspace_id: int | None = await conn.fetchval(GET_WORKSPACE_ID, name)
    return workspace_id


async def insert_key(
    conn: asyncpg.Connection, key_id: str, workspace_id: int, prefix: str, key_hash: bytes
) -> None:
    await conn.execute(INSERT_KEY, key_id, workspace_id, prefix, key_hash)


async def resolve_key(
    conn: asyncpg.Connection | asyncpg.Pool, key_hash: bytes
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(RESOLVE_KEY, key_hash)
    return row


async def touch_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> None:
    await conn.execute(TOUCH_KEY, key_id)


async def revoke_key(conn: asyncpg.Connection, prefix_or_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(REVOKE_KEY, prefix_or_id)
    return rows


async def revoke_key_by_hash(conn: asyncpg.Connection, key_hash: bytes) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(REVOKE_KEY_BY_HASH, key_hash)
    return rows


async def revoke_other_keys(conn: asyncpg.Connection, workspace_id: int, keep_id: str) -> int:
    """Revoke every active key of the workspace except ``keep_id``; how many were."""
    status: str = await conn.execute(REVOKE_OTHER_KEYS, workspace_id, keep_id)
    return int(status.split()[-1])


async def list_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_KEYS)
    return rows
