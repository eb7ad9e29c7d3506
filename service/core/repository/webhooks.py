"""Webhook endpoints, the event outbox and its deliveries.

The outbox write is `record_account_events`: rows of the account trail, which a trigger
(sql/0006_webhooks.sql) turns into webhook events for the workspace's endpoints in the same
statement. Write account transitions through it (or any INSERT into account_events, as the
single-statement paths do) inside the transaction that makes the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from service.core.webhooks import TEST_EVENT_TYPE

# --- the outbox ------------------------------------------------------------------------------

INSERT_TRAIL = """
INSERT INTO account_events (account_id, kind, reason, detail)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
"""


@dataclass(frozen=True, slots=True)
class TrailEvent:
    """One account transition. Kinds that become webhooks: connected, reconnected,
    deactivated (detail may carry `source`), reactivated, disconnected (reason is the
    initiator), revoke_failed."""

    account_id: str
    kind: str
    reason: str | None = None
    detail: dict[str, Any] | None = None


async def record_account_events(conn: asyncpg.Connection, events: list[TrailEvent]) -> None:
    """Append to the account trail and, through it, to the webhook outbox. Call it in the
    transaction of the change, after the account row holds its new state (the webhook
    carries the account as it is at the end of the statement)."""
    if not events:
        return
    await conn.execute(
        INSERT_TRAIL,
        [e.account_id for e in events],
        [e.kind for e in events],
        [e.reason for e in events],
        [orjson.dumps(e.detail).decode() if e.detail is not None else None for e in events],
    )


# --- endpoints (the API) -------------------------------------------------------------------

ENDPOINT_COLUMNS = "id, url, events, description, enabled, created_at"

INSERT_ENDPOINT = f"""
INSERT INTO webhook_endpoints (id, workspace_id, url, events, description, key_id, sealed)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {ENDPOINT_COLUMNS}
"""
LIST_ENDPOINTS = f"""
SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE workspace_id = $1
ORDER BY created_at, id
"""
GET_ENDPOINT = f"""
SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2
"""
# NULL leaves a field as it is. Enabling clears the failure clock; disabling (for any
# reason) fails what was still pending: a re-enabled endpoint does not get the backlog
# unless the customer asks for each event again.
UPDATE_ENDPOINT = f"""
WITH upd AS (
    UPDATE webhook_endpoints SET
        url = coalesce($3, url),
        events = coalesce($4, events),
        description = coalesce($5, description),
        enabled = coalesce($6, enabled),
        disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason
                               WHEN $6 THEN NULL ELSE 'api' END,
        failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END,
        updated_at = now()
    WHERE id = $1 AND workspace_id = $2
    RETURNING {ENDPOINT_COLUMNS}
), failed AS (
    UPDATE webhook_deliveries d SET status = 'failed', last_error = 'endpoint disabled',
                                    leased_until = NULL, finished_at = now()
    FROM upd WHERE d.endpoint_id = upd.id AND NOT upd.enabled AND d.status = 'pending'
)
SELECT * FROM upd
"""
DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2 RETURNING id"
ROTATE_SECRET = f"""
UPDATE webhook_endpoints SET
    previous_key_id = key_id, previous_sealed = sealed,
    previous_expires_at = now() + make_interval(secs => $5),
    key_id = $3, sealed = $4, updated_at = now()
WHERE id = $1 AND workspace_id = $2
RETURNING {ENDPOINT_COLUMNS}
"""
SEND_TEST = """
SELECT (emit_webhook_events(ARRAY[$2::bigint], ARRAY[$3::text], ARRAY[NULL::text],
                            ARRAY[json_build_object('webhook_endpoint_id', $1::text)], $1))[1]
"""
# Newest first, with the event's type; `before` is the last attempt id of the page before.
LIST_ATTEMPTS = """
SELECT a.id, a.event_id, ev.type, a.attempt, a.result, a.response_status, a.error,
       a.created_at
FROM webhook_attempts a JOIN webhook_events ev ON ev.id = a.event_id
WHERE a.endpoint_id = $1 AND ($2::bigint IS NULL OR a.id < $2)
ORDER BY a.id DESC
LIMIT $3
"""
# Send an event to an endpoint again from the first step of the schedule.
RETRY_DELIVERY = """
WITH upd AS (
    UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                                  leased_until = NULL, finished_at = NULL
    WHERE endpoint_id = $1 AND event_id = $2
    RETURNING endpoint_id
)
SELECT upd.endpoint_id, pg_notify('octopost_webhooks', upd.endpoint_id) FROM upd
"""
ENDPOINT_STATE = "SELECT enabled FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2"


async def insert_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool,
    endpoint_id: str,
    workspace_id: int,
    *,
    url: str,
    events: list[str],
    description: str,
    key_id: str,
    sealed: bytes,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        INSERT_ENDPOINT, endpoint_id, workspace_id, url, events, description, key_id, sealed
    )
    return row


async def list_endpoints(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_ENDPOINTS, workspace_id)
    return rows


async def get_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: str, workspace_id: int
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(GET_ENDPOINT, endpoint_id, workspace_id)
    return row


async def endpoint_enabled(
    conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: str, workspace_id: int
) -> bool | None:
    """None when the workspace has no such endpoint."""
    enabled: bool | None = await conn.fetchval(ENDPOINT_STATE, endpoint_id, workspace_id)
    return enabled


async def update_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool,
    endpoint_id: str,
    workspace_id: int,
    *,
    url: str | None,
    events: list[str] | None,
    description: str | None,
    enabled: bool | None,
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        UPDATE_ENDPOINT, endpoint_id, workspace_id, url, events, description, enabled
    )
    return row


async def delete_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: str, workspace_id: int
) -> bool:
    return await conn.fetchval(DELETE_ENDPOINT, endpoint_id, workspace_id) is not None


async def rotate_secret(
    conn: asyncpg.Connection | asyncpg.Pool,
    endpoint_id: str,
    workspace_id: int,
    *,
    key_id: str,
    sealed: bytes,
    overlap_seconds: float,
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        ROTATE_SECRET, endpoint_id, workspace_id, key_id, sealed, overlap_seconds
    )
    return row


async def send_test(
    conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: str, workspace_id: int
) -> str | None:
    """A webhook.test event for this endpoint only; its id."""
    event_id: str | None = await conn.fetchval(
        SEND_TEST, endpoint_id, workspace_id, TEST_EVENT_TYPE
    )
    return event_id


async def list_attempts(
    conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: str, *, before: int | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_ATTEMPTS, endpoint_id, before, limit)
    return rows


async def retry_delivery(
    conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: str, event_id: str
) -> bool:
    """False when the endpoint never had this event."""
    return await conn.fetchval(RETRY_DELIVERY, endpoint_id, event_id) is not None


# --- delivery (the worker) -----------------------------------------------------------------

# The secrets to sign with: the current one, and the previous one until its overlap ends.
LOAD_FOR_DELIVERY = """
SELECT id, url, enabled, key_id, sealed,
       CASE WHEN previous_expires_at > now() THEN previous_key_id END AS previous_key_id,
       CASE WHEN previous_expires_at > now() THEN previous_sealed END AS previous_sealed
FROM webhook_endpoints WHERE id = $1
"""
# Due deliveries of one enabled endpoint, oldest due first, leased for one attempt's time
# (a dispatcher that dies mid-batch leaves them to be claimed again when the lease ends).
CLAIM_DUE = """
WITH due AS (
    SELECT d.event_id FROM webhook_deliveries d
    JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
    WHERE d.endpoint_id = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
    ORDER BY d.next_attempt_at
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $3)
    FROM due WHERE d.endpoint_id = $1 AND d.event_id = due.event_id
    RETURNING d.event_id, d.attempts
)
SELECT l.event_id, l.attempts, ev.type, ev.body, ev.created_at
FROM leased l JOIN webhook_events ev ON ev.id = l.event_id
ORDER BY ev.created_at, l.event_id
"""
# Every attempt of a batch at once. `attempts = n - 1` makes a late writer (its lease ran
# out and another dispatcher sent it meanwhile) a no-op, and an attempt row is kept only
# for deliveries this writer still owned.
RECORD_ATTEMPTS = """
WITH r AS (
    SELECT * FROM unnest($2::text[], $3::integer[], $4::text[], $5::integer[], $6::text[],
                         $7::timestamptz[], $8::integer[])
        AS r(event_id, attempt, result, response_status, error, next_attempt_at, duration_ms)
), upd AS (
    UPDATE webhook_deliveries d SET
        status = CASE r.result WHEN 'retrying' THEN 'pending' ELSE r.result END,
        attempts = r.attempt,
        next_attempt_at = coalesce(r.next_attempt_at, d.next_attempt_at),
        leased_until = NULL,
        last_status = r.response_status,
        last_error = r.error,
        finished_at = CASE WHEN r.result = 'retrying' THEN NULL ELSE now() END
    FROM r
    WHERE d.endpoint_id = $1 AND d.event_id = r.event_id AND d.status = 'pending'
      AND d.attempts = r.attempt - 1
    RETURNING d.event_id
)
INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, result, response_status, error,
                              duration_ms)
SELECT $1, r.event_id, r.attempt, r.result, r.response_status, r.error, r.duration_ms
FROM r JOIN upd ON upd.event_id = r.event_id
"""
# After a batch: a success stops the failure clock, a failure starts it; 410 (gone) or a
# clock older than the limit disables the endpoint. Returns the reason when this call
# disabled it.
UPDATE_HEALTH = """
WITH cur AS (
    SELECT id, enabled, disabled_reason, failing_since,
           $4 OR coalesce(failing_since <= now() - make_interval(secs => $5), false) AS disable
    FROM (SELECT id, enabled, disabled_reason,
                 CASE WHEN $2 THEN NULL
                      WHEN $3 THEN coalesce(failing_since, now())
                      ELSE failing_since END AS failing_since
          FROM webhook_endpoints WHERE id = $1 FOR UPDATE) e
), upd AS (
    UPDATE webhook_endpoints e SET
        failing_since = cur.failing_since,
        enabled = cur.enabled AND NOT cur.disable,
        disabled_reason = CASE WHEN cur.enabled AND cur.disable
                               THEN CASE WHEN $4 THEN 'gone' ELSE 'failing' END
                               ELSE cur.disabled_reason END,
        updated_at = CASE WHEN cur.enabled AND cur.disable THEN now() ELSE e.updated_at END
    FROM cur WHERE e.id = cur.id
    RETURNING e.enabled AS now_enabled, cur.enabled AS was_enabled, e.disabled_reason
), failed AS (
    UPDATE webhook_deliveries d SET status = 'failed', last_error = 'endpoint disabled',
                                    leased_until = NULL, finished_at = now()
    FROM upd WHERE d.endpoint_id = $1 AND upd.was_enabled AND NOT upd.now_enabled
      AND d.status = 'pending'
)
SELECT CASE WHEN was_enabled AND NOT now_enabled THEN disabled_reason END FROM upd
"""
# The relay: endpoints with deliveries due and not leased.
DUE_ENDPOINTS = """
SELECT DISTINCT d.endpoint_id FROM webhook_deliveries d
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
  AND (d.leased_until IS NULL OR d.leased_until < now())
LIMIT $1
"""
# Retention, a chunk at a time: attempts by age; events by age once none of their deliveries
# is pending (their delivery rows go with them).
PRUNE_ATTEMPTS = """
DELETE FROM webhook_attempts WHERE id IN (
    SELECT id FROM webhook_attempts
    WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)
"""
PRUNE_EVENTS = """
DELETE FROM webhook_events WHERE id IN (
    SELECT ev.id FROM webhook_events ev
    WHERE ev.created_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                      WHERE d.event_id = ev.id AND d.status = 'pending')
    LIMIT $2)
"""
OLDEST_PENDING = """
SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM webhook_deliveries WHERE status = 'pending'
"""


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: str
    attempt: int
    result: str  # delivered | retrying | failed
    response_status: int | None
    error: str | None
    next_attempt_at: datetime | None
    duration_ms: int


async def load_for_delivery(conn: asyncpg.Pool, endpoint_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(LOAD_FOR_DELIVERY, endpoint_id)
    return row


async def claim_due(
    conn: asyncpg.Pool, endpoint_id: str, *, limit: int, lease_seconds: float
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(CLAIM_DUE, endpoint_id, limit, lease_seconds)
    return rows


async def record_attempts(
    conn: asyncpg.Pool,
    endpoint_id: str,
    attempts: list[Attempt],
    *,
    disable_after_seconds: float,
) -> str | None:
    """Write a batch's attempts and the endpoint's health; the reason if it was disabled."""
    if not attempts:
        return None
    succeeded = any(a.result == "delivered" for a in attempts)
    failed = any(a.result != "delivered" for a in attempts)
    gone = any(a.response_status == 410 for a in attempts)
    async with conn.acquire() as c, c.transaction():
        await c.execute(
            RECORD_ATTEMPTS,
            endpoint_id,
            [a.event_id for a in attempts],
            [a.attempt for a in attempts],
            [a.result for a in attempts],
            [a.response_status for a in attempts],
            [a.error for a in attempts],
            [a.next_attempt_at for a in attempts],
            [a.duration_ms for a in attempts],
        )
        reason: str | None = await c.fetchval(
            UPDATE_HEALTH, endpoint_id, succeeded, failed, gone, disable_after_seconds
        )
    return reason


async def due_endpoints(conn: asyncpg.Pool, limit: int) -> list[str]:
    return [r["endpoint_id"] for r in await conn.fetch(DUE_ENDPOINTS, limit)]


async def prune(conn: asyncpg.Pool, older_than_seconds: float, chunk: int = 1000) -> int:
    """Delete one chunk of each; the number of rows deleted (0: nothing left to prune)."""
    deleted = 0
    for statement in (PRUNE_ATTEMPTS, PRUNE_EVENTS):
        status: str = await conn.execute(statement, older_than_seconds, chunk)
        deleted += int(status.split()[-1])
    return deleted


async def oldest_pending_age(conn: asyncpg.Pool) -> float:
    age: float = await conn.fetchval(OLDEST_PENDING)
    return age
