"""What the internal credentials API reads and writes: an account with its sealed tokens
(whatever its workspace: the publisher acts for all), the issuance audit, a check outcome
written outside any sweep, and usage reports."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from service.core.db import Pool
from service.core.repository.sweeps import Outcome

_ACCOUNT_WITH_TOKENS = """
a.id, a.platform, a.platform_user_id, a.instance_url, a.is_active, a.health_status,
a.health_reason, a.transient_failures,
t.key_id, t.sealed, t.has_refresh, t.access_expires_at, t.refresh_expires_at, t.scopes,
t.generation
"""
LOAD_FOR_ISSUE = f"""
SELECT {_ACCOUNT_WITH_TOKENS}
FROM accounts a LEFT JOIN account_tokens t ON t.account_id = a.id
WHERE a.id = $1 AND a.disconnected_at IS NULL
"""
# The audit of every issuance, written before the token leaves.
RECORD_ISSUED = """
INSERT INTO account_events (account_id, kind, detail)
VALUES ($1, 'credentials_issued',
        jsonb_build_object('service_key', $3::text, 'service_key_id', $2::text,
                           'refreshed', $4::boolean))
"""
# A check outcome decided outside a sweep (a refresh a credentials request made): the same
# columns and event as the sweep's batch write, but no lease to test or release. A sweep
# that holds the account's lease writes its own outcome after, by the same rules.
APPLY_OUTCOME = """
WITH upd AS (
    UPDATE accounts a SET
        health_status = $2,
        health_reason = $3,
        health_error_code = $4,
        is_active = coalesce($5, a.is_active),
        last_checked_at = now(),
        next_check_at = $6,
        transient_failures = $7
    WHERE a.id = $1 AND a.disconnected_at IS NULL
    RETURNING a.id
), ev AS (
    INSERT INTO account_events (account_id, kind, reason, detail)
    SELECT id, $8, $3,
           jsonb_strip_nulls(jsonb_build_object('error_code', $4::text, 'source', $9::text))
    FROM upd WHERE $8::text IS NOT NULL
)
SELECT id FROM upd
"""

# `published`: forward only, in one round trip. No row: unknown or disconnected. The outer
# SELECT sees the row as it was before the UPDATE (one snapshot), hence the coalesce.
MARK_USED = """
WITH upd AS (
    UPDATE accounts SET last_used_at = $2
    WHERE id = $1 AND disconnected_at IS NULL AND (last_used_at IS NULL OR last_used_at < $2)
    RETURNING last_used_at
)
SELECT coalesce((SELECT last_used_at FROM upd), a.last_used_at) AS last_used_at,
       EXISTS (SELECT 1 FROM upd) AS moved
FROM accounts a WHERE a.id = $1 AND a.disconnected_at IS NULL
"""
IS_ACTIVE = "SELECT is_active FROM accounts WHERE id = $1 AND disconnected_at IS NULL"


async def load_for_issue(conn: asyncpg.Connection | Pool, account_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(LOAD_FOR_ISSUE, account_id)
    return row


async def record_issued(
    conn: asyncpg.Connection | Pool,
    account_id: str,
    key_id: str,
    key_name: str,
    refreshed: bool,
) -> None:
    await conn.execute(RECORD_ISSUED, account_id, key_id, key_name, refreshed)


async def apply_outcome(conn: asyncpg.Connection | asyncpg.Pool, outcome: Outcome) -> bool:
    """False if the account was disconnected meanwhile (nothing written)."""
    written = await conn.fetchval(
        APPLY_OUTCOME,
        outcome.account_id,
        outcome.status,
        outcome.reason,
        outcome.error_code,
        outcome.is_active,
        outcome.next_check_at,
        outcome.transient_failures,
        outcome.event,
        outcome.source,
    )
    return written is not None


async def mark_used(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, at: datetime
) -> asyncpg.Record | None:
    """(last_used_at, moved) after the report; None: no such account."""
    row: asyncpg.Record | None = await conn.fetchrow(MARK_USED, account_id, at)
    return row


async def is_active(conn: asyncpg.Connection | asyncpg.Pool, account_id: str) -> bool | None:
    """None: no such account (or disconnected)."""
    active: bool | None = await conn.fetchval(IS_ACTIVE, account_id)
    return active
