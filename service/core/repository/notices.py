"""The platform notice inbox and what applying a notice writes to the matched accounts."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import orjson

from service.core.notices import Notice, Subject

# A redelivered notice finds its row: the no-op update takes the row lock and returns the
# first delivery's status and confirmation code, so the answer is the same both times.
RECORD = """
INSERT INTO platform_notices (id, platform, event, action, subject_type, subject, reason,
                              detail, confirmation_code)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id
RETURNING id, status, confirmation_code, (xmax = 0) AS inserted
"""
LOCK_PENDING = """
SELECT id, platform, event, action, subject_type, subject, reason, detail, received_at
FROM platform_notices WHERE id = $1 AND status = 'pending'
FOR UPDATE
"""
# Matching is across every workspace, among the accounts whose tokens were stored before the
# notice arrived: a reconnect made after it (while Redis was down, say) is not undone. An
# account without tokens (already revoked by an earlier notice or check) still matches a
# user: a data deletion request usually follows the deauthorization.
MATCH = {
    Subject.user: """
SELECT a.id FROM accounts a LEFT JOIN account_tokens t ON t.account_id = a.id
WHERE a.platform = $1 AND a.disconnected_at IS NULL
  AND (a.platform_user_id = $2 OR a.authorizing_user_id = $2)
  AND (t.account_id IS NULL OR t.updated_at <= $3)
ORDER BY a.id FOR UPDATE OF a
""",
    Subject.refresh_digest: """
SELECT a.id FROM accounts a JOIN account_tokens t ON t.account_id = a.id
WHERE a.platform = $1 AND a.disconnected_at IS NULL AND t.refresh_digest = $2
  AND t.updated_at <= $3
ORDER BY a.id FOR UPDATE OF a
""",
    Subject.refresh_prefix_digest: """
SELECT a.id FROM accounts a JOIN account_tokens t ON t.account_id = a.id
WHERE a.platform = $1 AND a.disconnected_at IS NULL
  AND t.refresh_prefix_digest = decode($2, 'hex') AND t.updated_at <= $3
ORDER BY a.id FOR UPDATE OF a
""",
}
# The platform has already killed the tokens: erase them (no revoke call), stop checking
# (a reconnect re-arms the checks), and drop any in-flight check's lease so its late
# answer writes nothing (see APPLY_OUTCOMES in health.py). An account already in exactly
# this state (a second platform notice saying the same) is left as it is, without an event.
DEACTIVATE = """
WITH acc AS (
    UPDATE accounts
    SET is_active = false, health_status = $2, health_reason = $3, health_error_code = NULL,
        transient_failures = 0, lease_sweep_id = NULL,
        next_check_at = now() + interval '3650 days'
    WHERE id = ANY($1::text[]) AND disconnected_at IS NULL
      AND (is_active OR health_status <> $2 OR health_reason IS DISTINCT FROM $3
           OR EXISTS (SELECT 1 FROM account_tokens t WHERE t.account_id = accounts.id))
    RETURNING id
), tok AS (
    DELETE FROM account_tokens t USING acc WHERE t.account_id = acc.id
)
INSERT INTO account_events (account_id, kind, reason, detail)
SELECT id, 'deactivated', $3, $4::jsonb FROM acc
RETURNING account_id
"""
# A data deletion request: the account is disconnected as a DELETE would, without a
# revocation (the platform asked), and what we knew of the person goes with the tokens.
DELETE_DATA = """
WITH acc AS (
    UPDATE accounts
    SET disconnected_at = now(), is_active = false, health_status = 'disconnected',
        health_reason = NULL, health_error_code = NULL, lease_sweep_id = NULL,
        username = '', display_name = '', avatar_url = NULL, authorizing_user_id = NULL
    WHERE id = ANY($1::text[]) AND disconnected_at IS NULL
    RETURNING id
), tok AS (
    DELETE FROM account_tokens t USING acc WHERE t.account_id = acc.id
)
INSERT INTO account_events (account_id, kind, reason, detail)
SELECT id, 'disconnected', $2, $3::jsonb FROM acc
RETURNING account_id
"""
CHECK_NOW = """
UPDATE accounts SET next_check_at = now()
WHERE id = ANY($1::text[]) AND disconnected_at IS NULL AND lease_sweep_id IS NULL
RETURNING id
"""
FINISH = """
UPDATE platform_notices SET status = 'applied', matched = $2, applied_at = now(),
                            updated_at = now()
WHERE id = $1
"""
PENDING_FOR_RELAY = """
SELECT id, received_at FROM platform_notices
WHERE status = 'pending' AND received_at < now() - make_interval(secs => $1)
  AND (received_at, id) > ($2::timestamptz, $3::text)
ORDER BY received_at, id LIMIT $4
"""
GET_DELETION = """
SELECT confirmation_code, platform, status, matched, received_at, applied_at
FROM platform_notices WHERE confirmation_code = $1
"""
LIST_NOTICES = """
SELECT id, platform, event, action, reason, status, matched, received_at, applied_at
FROM platform_notices
WHERE status = ANY($1::text[])
ORDER BY received_at DESC, id DESC LIMIT $2
"""

EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


async def record(
    conn: asyncpg.Pool | asyncpg.Connection, notice: Notice, confirmation_code: str | None
) -> asyncpg.Record:
    """(id, status, confirmation_code, inserted) of the notice's row, new or not."""
    row: asyncpg.Record = await conn.fetchrow(
        RECORD,
        notice.id,
        notice.platform,
        notice.event,
        notice.action.value,
        notice.subject_type.value,
        notice.subject,
        notice.reason,
        orjson.dumps(notice.detail).decode(),
        confirmation_code,
    )
    return row


async def lock_pending(conn: asyncpg.Connection, notice_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(LOCK_PENDING, notice_id)
    return row


async def match(
    conn: asyncpg.Connection,
    platform: str,
    subject_type: Subject,
    subject: str,
    received_at: datetime,
) -> list[str]:
    rows = await conn.fetch(MATCH[subject_type], platform, subject, received_at)
    return [r["id"] for r in rows]


async def deactivate(
    conn: asyncpg.Connection, ids: list[str], status: str, reason: str, detail: str
) -> list[str]:
    return [r["account_id"] for r in await conn.fetch(DEACTIVATE, ids, status, reason, detail)]


async def delete_data(
    conn: asyncpg.Connection, ids: list[str], reason: str, detail: str
) -> list[str]:
    return [r["account_id"] for r in await conn.fetch(DELETE_DATA, ids, reason, detail)]


async def check_now(conn: asyncpg.Connection, ids: list[str]) -> list[str]:
    return [r["id"] for r in await conn.fetch(CHECK_NOW, ids)]


async def finish(conn: asyncpg.Connection, notice_id: str, matched: int) -> None:
    await conn.execute(FINISH, notice_id, matched)


async def pending_for_relay(
    conn: asyncpg.Pool,
    grace_seconds: float,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[asyncpg.Record]:
    after_at, after_id = after or (EPOCH, "")
    rows: list[asyncpg.Record] = await conn.fetch(
        PENDING_FOR_RELAY, grace_seconds, after_at, after_id, limit
    )
    return rows


async def get_deletion(
    conn: asyncpg.Pool | asyncpg.Connection, confirmation_code: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(GET_DELETION, confirmation_code)
    return row


async def list_notices(
    conn: asyncpg.Pool | asyncpg.Connection, statuses: list[str], limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_NOTICES, statuses, limit)
    return rows
