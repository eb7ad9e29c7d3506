"""Accounts as the API sees them, and the disconnect transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

PUBLIC_COLUMNS = """
    id, platform, platform_user_id, username, display_name, avatar_url, is_active,
    connected_at, last_used_at
"""

# Filters are optional: a NULL parameter switches its condition off. The listing index
# (workspace_id, connected_at, id) serves every variant. The cursor condition is not written
# the same way: once PostgreSQL switches a prepared statement to its generic plan, a
# "$5 IS NULL OR (connected_at, id) > ..." cannot bound the index scan, and every page after
# the first read the workspace from its beginning (31 ms a page at 50,000 accounts).
_LIST_FILTERS = """
WHERE workspace_id = $1
  AND disconnected_at IS NULL
  AND ($2::text IS NULL OR platform = $2)
  AND ($3::boolean IS NULL OR is_active = $3)
  AND ($4::text IS NULL OR health_status = $4)
"""
LIST_ACCOUNTS = f"""
SELECT {PUBLIC_COLUMNS}
FROM accounts {_LIST_FILTERS}
ORDER BY connected_at, id
LIMIT $5
"""
LIST_ACCOUNTS_AFTER = f"""
SELECT {PUBLIC_COLUMNS}
FROM accounts {_LIST_FILTERS}
  AND (connected_at, id) > ($5::timestamptz, $6::text)
ORDER BY connected_at, id
LIMIT $7
"""

GET_ACCOUNT = f"""
SELECT {PUBLIC_COLUMNS}
FROM accounts
WHERE id = $1 AND workspace_id = $2 AND disconnected_at IS NULL
"""


GET_HEALTH = """
SELECT id, is_active, health_status, health_reason, health_error_code, last_checked_at,
       next_check_at, transient_failures
FROM accounts
WHERE id = $1 AND workspace_id = $2 AND disconnected_at IS NULL
"""

# One statement, one transaction: tombstone the account, move the sealed tokens into the
# revocation outbox, delete them, and record the event. A concurrent second DELETE waits on
# the row lock, then finds the tombstone and matches nothing (404).
DISCONNECT = """
WITH acc AS (
    UPDATE accounts
    SET disconnected_at = now(), is_active = false, health_status = 'disconnected',
        health_reason = NULL
    WHERE id = $1 AND workspace_id = $2 AND disconnected_at IS NULL
    RETURNING id, platform
), tok AS (
    DELETE FROM account_tokens t USING acc
    WHERE t.account_id = acc.id
    RETURNING t.account_id, t.key_id, t.sealed
), rev AS (
    INSERT INTO revocations (id, account_id, platform, key_id, sealed)
    SELECT $3, acc.id, acc.platform, tok.key_id, tok.sealed FROM acc JOIN tok ON true
    RETURNING id
), ev AS (
    INSERT INTO account_events (account_id, kind, reason)
    SELECT id, 'disconnected', $4 FROM acc
)
SELECT acc.id, acc.platform, (SELECT id FROM rev) AS revocation_id FROM acc
"""

LIST_IDS_FOR_DISCONNECT = """
SELECT a.id, a.workspace_id
FROM accounts a JOIN workspaces w ON w.id = a.workspace_id
WHERE w.name = $1 AND a.disconnected_at IS NULL AND ($2::text IS NULL OR a.platform = $2)
ORDER BY a.connected_at, a.id
"""

GET_WORKSPACE_OF = """
SELECT workspace_id FROM accounts WHERE id = $1 AND disconnected_at IS NULL
"""


async def list_accounts(
    conn: asyncpg.Connection | asyncpg.Pool,
    workspace_id: int,
    *,
    platform: str | None = None,
    is_active: bool | None = None,
    status: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int | None = None,
) -> list[asyncpg.Record]:
    """Rows in listing order (``limit`` None: the whole list)."""
    rows: list[asyncpg.Record]
    if after is None:
        rows = await conn.fetch(LIST_ACCOUNTS, workspace_id, platform, is_active, status, limit)
    else:
        rows = await conn.fetch(
            LIST_ACCOUNTS_AFTER, workspace_id, platform, is_active, status, *after, limit
        )
    return rows


async def get_account(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, workspace_id: int
) -> asyncpg.Record | None:
    """The account's public row."""
    row: asyncpg.Record | None = await conn.fetchrow(GET_ACCOUNT, account_id, workspace_id)
    return row


async def get_health(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, workspace_id: int
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(GET_HEALTH, account_id, workspace_id)
    return row


async def disconnect(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: str,
    workspace_id: int,
    revocation_id: str,
    reason: str = "api",
) -> asyncpg.Record | None:
    """Tombstone the account; returns (id, platform, revocation_id) or None if not found."""
    row: asyncpg.Record | None = await conn.fetchrow(
        DISCONNECT, account_id, workspace_id, revocation_id, reason
    )
    return row


async def ids_for_disconnect(
    conn: asyncpg.Connection, workspace: str, platform: str | None
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_IDS_FOR_DISCONNECT, workspace, platform)
    return rows


async def workspace_of(conn: asyncpg.Connection, account_id: str) -> int | None:
    workspace_id: int | None = await conn.fetchval(GET_WORKSPACE_OF, account_id)
    return workspace_id
