"""The revocation outbox: what the revoke job reads, and how it records the end."""

from __future__ import annotations

import asyncpg

LOAD_REVOCATION = """
SELECT r.id, r.account_id, r.platform, r.key_id, r.sealed, r.status, r.attempts,
       a.platform_user_id, a.instance_url
FROM revocations r JOIN accounts a ON a.id = r.account_id
WHERE r.id = $1
"""
# Counted before the platform call: a crash after the call still uses up an attempt.
COUNT_ATTEMPT = """
UPDATE revocations SET attempts = attempts + 1, updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING attempts
"""
RECORD_TRANSIENT = """
UPDATE revocations SET last_error = $2, updated_at = now() WHERE id = $1 AND status = 'pending'
"""
# The end, whatever it was: the ciphertext goes, the outcome becomes an event.
FINISH = """
WITH r AS (
    UPDATE revocations SET status = $2, last_error = $3, sealed = NULL, key_id = NULL,
                           completed_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'pending'
    RETURNING account_id
)
INSERT INTO account_events (account_id, kind, reason)
SELECT account_id, $4, $5 FROM r
RETURNING account_id
"""
PENDING_FOR_RELAY = """
SELECT id FROM revocations
WHERE status = 'pending' AND updated_at < now() - make_interval(secs => $1)
ORDER BY created_at LIMIT $2
"""
LIST_REVOCATIONS = """
SELECT r.id, r.account_id, r.platform, r.status, r.attempts, r.last_error, r.created_at,
       r.completed_at
FROM revocations r
WHERE r.status = ANY($1::text[])
ORDER BY r.created_at DESC LIMIT $2
"""


async def load(conn: asyncpg.Pool, revocation_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(LOAD_REVOCATION, revocation_id)
    return row


async def count_attempt(conn: asyncpg.Pool, revocation_id: str) -> int | None:
    attempts: int | None = await conn.fetchval(COUNT_ATTEMPT, revocation_id)
    return attempts


async def record_transient(conn: asyncpg.Pool, revocation_id: str, error: str) -> None:
    await conn.execute(RECORD_TRANSIENT, revocation_id, error)


async def finish(
    conn: asyncpg.Pool,
    revocation_id: str,
    status: str,
    error: str | None,
    event: str,
    reason: str | None,
) -> bool:
    return await conn.fetchval(FINISH, revocation_id, status, error, event, reason) is not None


async def pending_for_relay(conn: asyncpg.Pool, grace_seconds: float, limit: int) -> list[str]:
    return [r["id"] for r in await conn.fetch(PENDING_FOR_RELAY, grace_seconds, limit)]


async def list_revocations(
    conn: asyncpg.Connection | asyncpg.Pool, statuses: list[str], limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_REVOCATIONS, statuses, limit)
    return rows
