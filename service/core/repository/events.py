"""The append-only trail of account transitions."""

from __future__ import annotations

import asyncpg

LIST_EVENTS = """
SELECT e.id, e.kind, e.reason, e.detail, e.created_at
FROM account_events e JOIN accounts a ON a.id = e.account_id
WHERE e.account_id = $1 AND a.workspace_id = $2 AND a.disconnected_at IS NULL
  AND ($3::bigint IS NULL OR e.id < $3)
ORDER BY e.id DESC
LIMIT $4
"""


async def list_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: str,
    workspace_id: int,
    *,
    before: int | None = None,
    limit: int = 100,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        LIST_EVENTS, account_id, workspace_id, before, limit
    )
    return rows
