"""The revocation outbox: what the revoke job reads, and how it records the end."""

from __future__ import annotations

from datetime import datetime

import asyncpg

LOAD_REVOCATION = """
SELECT r.id, r.account_id, r.platform, r.key_id, r.sealed, r.status, r.attempts,
       a.platform_user_id, a.instance_url
FROM revocations r JOIN accounts a ON a.id = r.account_id
WHERE r.id = $1
"""
# Counted before the platform call: a crash after the call still uses up an attempt.
# `updated_at` doubles as the job's "started" mark the relay reads.
COUNT_ATTEMPT = """
UPDATE revocations SET attempts = attempts + 1, updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING attempts
"""
# Nothing was sent (the platform is paused for everyone): the attempt is given back.
RELEASE_ATTEMPT = """
UPDATE revocations SET attempts = greatest(attempts - 1, 0), last_error = $2, updated_at = now()
WHERE id = $1 AND status = 'pending'
"""
RECORD_TRANSIENT = """
UPDATE revocations SET last_error = $2, updated_at = now() WHERE id = $1 AND status = 'pending'
"""
# The end, whatever it was: the ciphertext goes, the outcome becomes an event. Only the
# first run to get here writes (a duplicate run after a crash finds it no longer pending).
FINISH = """
WITH r AS (
    UPDATE revocations SET status = $2, last_error = $3, sealed = NULL, key_id = NULL,
                           completed_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'pending'
    RETURNING id, account_id, attempts, last_error
)
INSERT INTO account_events (account_id, kind, reason, detail)
SELECT account_id, $4, $5,
       jsonb_strip_nulls(jsonb_build_object('revocation_id', id, 'attempts', attempts,
                                            'error', last_error))
FROM r
RETURNING account_id
"""
# Every pending revocation untouched for the grace period, oldest first, in pages (a page
# full of revocations waiting out a long backoff must not hide the ones behind it).
PENDING_FOR_RELAY = """
SELECT id, created_at FROM revocations
WHERE status = 'pending' AND updated_at < now() - make_interval(secs => $1)
  AND (created_at, id) > ($2::timestamptz, $3::text)
ORDER BY created_at, id LIMIT $4
"""
# A refresh that returned after its account was disconnected holds a fresh token pair the
# DELETE never saw (it moved the old one): it goes through the outbox like the DELETE's.
ADD_FOR_DISCONNECTED = """
INSERT INTO revocations (id, account_id, platform, key_id, sealed)
SELECT $1, a.id, a.platform, $3, $4 FROM accounts a
WHERE a.id = $2 AND a.disconnected_at IS NOT NULL
RETURNING id
"""
LIST_REVOCATIONS = """
SELECT r.id, r.account_id, r.platform, r.status, r.attempts, r.last_error, r.created_at,
       r.updated_at, r.completed_at
FROM revocations r
WHERE r.status = ANY($1::text[])
ORDER BY r.created_at DESC, r.id DESC LIMIT $2
"""

EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


async def load(conn: asyncpg.Pool, revocation_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(LOAD_REVOCATION, revocation_id)
    return row


async def count_attempt(conn: asyncpg.Pool, revocation_id: str) -> int | None:
    attempts: int | None = await conn.fetchval(COUNT_ATTEMPT, revocation_id)
    return attempts


async def release_attempt(conn: asyncpg.Pool, revocation_id: str, error: str) -> None:
    await conn.execute(RELEASE_ATTEMPT, revocation_id, error)


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
    """True if this call ended the revocation (False: another run had already)."""
    return await conn.fetchval(FINISH, revocation_id, status, error, event, reason) is not None


async def pending_for_relay(
    conn: asyncpg.Pool,
    grace_seconds: float,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[asyncpg.Record]:
    """(id, created_at) of the pending revocations idle for the grace period, a page."""
    after_at, after_id = after or (EPOCH, "")
    rows: list[asyncpg.Record] = await conn.fetch(
        PENDING_FOR_RELAY, grace_seconds, after_at, after_id, limit
    )
    return rows


async def add_for_disconnected(
    conn: asyncpg.Pool, revocation_id: str, account_id: str, key_id: str, sealed: bytes
) -> bool:
    """Queue sealed tokens of an account for revocation, only if it is disconnected."""
    return (
        await conn.fetchval(ADD_FOR_DISCONNECTED, revocation_id, account_id, key_id, sealed)
        is not None
    )


async def list_revocations(
    conn: asyncpg.Connection | asyncpg.Pool, statuses: list[str], limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_REVOCATIONS, statuses, limit)
    return rows
