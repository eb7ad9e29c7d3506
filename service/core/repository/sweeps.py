"""Token-health SQL: claiming due accounts, loading them with their sealed tokens, writing
outcomes in batches, storing refreshed tokens, and sweep bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# --- sweeps -------------------------------------------------------------------------------

CREATE_SWEEP = """
INSERT INTO sweeps (trigger, platform, account_id) VALUES ($1, $2, $3) RETURNING id
"""
START_SWEEP = """
UPDATE sweeps SET status = 'claiming', started_at = coalesce(started_at, now())
WHERE id = $1 AND status IN ('queued', 'claiming')
RETURNING trigger, platform, account_id
"""
END_CLAIMING = "UPDATE sweeps SET status = 'running' WHERE id = $1 AND status = 'claiming'"
# A sweep is over when no live account still holds its lease: checked, skipped, disconnected
# meanwhile, or re-claimed by a later sweep after the lease ran out all count as over.
FINISH_IF_IDLE = """
UPDATE sweeps SET status = 'done', finished_at = now()
WHERE id = $1 AND status = 'running'
  AND NOT EXISTS (SELECT 1 FROM accounts
                  WHERE lease_sweep_id = $1 AND disconnected_at IS NULL)
RETURNING id
"""
# The same for every running sweep: catches the one whose last batch never reported (its
# check job timed out or used up its tries) once its accounts' leases have been taken over.
FINISH_IDLE_SWEEPS = """
UPDATE sweeps s SET status = 'done', finished_at = now()
WHERE s.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM accounts a
                  WHERE a.lease_sweep_id = s.id AND a.disconnected_at IS NULL)
RETURNING s.id
"""
GET_SWEEP = "SELECT * FROM sweeps WHERE id = $1"
LIST_SWEEPS = "SELECT * FROM sweeps ORDER BY id DESC LIMIT $1"

# Every claim is one statement (no BEGIN/COMMIT around it): take up to $limit accounts with
# FOR UPDATE SKIP LOCKED, lease them (next_check_at pushed forward, lease_sweep_id set), and
# add them to the sweep row's `claimed` in the same transaction. A lease keeps other sweeps
# off the account until the check is written or the lease runs out. Each returns the ids
# and, on every row, how many accounts the sweep has claimed but not yet reported, so the
# claimer knows whether it runs too far ahead without reading the sweep row again.
# `a.id = ANY(ARRAY(SELECT id FROM due))`, not `FROM due WHERE a.id = due.id`: the generic
# plan of a prepared statement cannot see the LIMIT's value, guesses a tenth of the table,
# and joins by hash over a sequential scan of every account; the array keeps it on the key.
#
# Scheduled sweeps take what is due, oldest first: the claimed rows move to the far end of
# accounts_due, so the next claim starts on fresh ones.
CLAIM_DUE = """
WITH due AS (
    SELECT id FROM accounts
    WHERE disconnected_at IS NULL AND next_check_at <= now()
    ORDER BY next_check_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE accounts a
    SET next_check_at = now() + make_interval(secs => $3),
        last_sweep_id = $1,
        lease_sweep_id = $1
    WHERE a.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING a.id
), counted AS (
    UPDATE sweeps SET claimed = claimed + (SELECT count(*) FROM leased)
    WHERE id = $1
    RETURNING claimed - checked - skipped AS ahead
)
SELECT leased.id, counted.ahead FROM leased, counted
"""
# A manual sweep takes every account in its scope, due or not, in primary-key order from
# its resume key (`claim_cursor`: the largest id it has claimed, stored by the same
# statement), so each claim reads only accounts the sweep has not passed yet: the plan is a
# range scan of accounts_pkey at every size. An account leased to another sweep whose lease
# still runs is passed over (that sweep is checking it now); so is one another transaction
# holds locked at that instant (SKIP LOCKED: an import or reconnect, which makes it due for
# the next scheduled sweep, a disconnect, or another sweep's claim or outcome). One
# platform's sweep reads the other platforms' rows on the way (nine platforms: about nine
# rows read per account claimed), once each.
CLAIM_SCOPE = """
WITH due AS (
    SELECT id FROM accounts
    WHERE id > coalesce((SELECT claim_cursor FROM sweeps WHERE id = $1), '')
      AND disconnected_at IS NULL
      AND ($2::text IS NULL OR platform = $2)
      AND (lease_sweep_id IS NULL OR next_check_at <= now())
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE accounts a
    SET next_check_at = now() + make_interval(secs => $4),
        last_sweep_id = $1,
        lease_sweep_id = $1
    WHERE a.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING a.id
), counted AS (
    UPDATE sweeps SET claimed = claimed + (SELECT count(*) FROM leased),
                      claim_cursor = coalesce((SELECT max(id) FROM leased), claim_cursor)
    WHERE id = $1
    RETURNING claimed - checked - skipped AS ahead
)
SELECT leased.id, counted.ahead FROM leased, counted
"""
# A one-account sweep: the key alone; taken once (the cursor then passes it).
CLAIM_ONE = """
WITH due AS (
    SELECT id FROM accounts
    WHERE id = $2
      AND id > coalesce((SELECT claim_cursor FROM sweeps WHERE id = $1), '')
      AND disconnected_at IS NULL
      AND (lease_sweep_id IS NULL OR next_check_at <= now())
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE accounts a
    SET next_check_at = now() + make_interval(secs => $3),
        last_sweep_id = $1,
        lease_sweep_id = $1
    WHERE a.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING a.id
), counted AS (
    UPDATE sweeps SET claimed = claimed + (SELECT count(*) FROM leased),
                      claim_cursor = coalesce((SELECT max(id) FROM leased), claim_cursor)
    WHERE id = $1
    RETURNING claimed - checked - skipped AS ahead
)
SELECT leased.id, counted.ahead FROM leased, counted
"""
# How far ahead of its checkers a sweep is (claimed, not yet reported).
SWEEP_AHEAD = "SELECT claimed - checked - skipped FROM sweeps WHERE id = $1"

# Everything a check needs, for one batch, in one round trip. Rows whose lease this sweep
# no longer holds (finished by an earlier try of the batch, re-claimed after the lease ran
# out, disconnected) are not returned, so nothing is checked twice.
# `IS NOT DISTINCT FROM` (the same as `=` for a sweep id) keeps the planner off the
# accounts_in_flight index: it estimates one row per sweep there and would otherwise read
# every account the sweep has in flight (up to sweep_max_ahead) for each batch of 250.
LOAD_BATCH = """
SELECT a.id, a.platform, a.platform_user_id, a.instance_url, a.is_active, a.health_status,
       a.transient_failures,
       t.key_id, t.sealed, t.has_refresh, t.access_expires_at, t.refresh_expires_at,
       t.scopes, t.generation
FROM accounts a LEFT JOIN account_tokens t ON t.account_id = a.id
WHERE a.id = ANY($1::text[]) AND a.lease_sweep_id IS NOT DISTINCT FROM $2
  AND a.disconnected_at IS NULL
"""

# One statement writes every outcome of a batch, releases the leases, records the events
# and adds the counts to the sweep. `WHERE lease_sweep_id = $sweep` makes a late writer
# (its lease expired and another sweep re-claimed) a no-op, and a disconnected account is
# never written back to life.
APPLY_OUTCOMES = """
WITH o AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],
                         $7::timestamptz[], $8::integer[], $9::text[], $10::text[], $12::text[])
        AS o(id, outcome, status, reason, is_active, next_check_at, transient_failures,
             error_code, event, source)
), upd AS (
    UPDATE accounts a SET
        health_status = o.status,
        health_reason = o.reason,
        health_error_code = o.error_code,
        is_active = coalesce(o.is_active, a.is_active),
        last_checked_at = CASE WHEN o.outcome = 'skipped' THEN a.last_checked_at ELSE now() END,
        next_check_at = o.next_check_at,
        transient_failures = o.transient_failures,
        lease_sweep_id = NULL
    FROM o
    -- coalesce: the same test for a sweep id (never 0), but one the statistics cannot
    -- judge. Right after an import they say no account is leased, so the lease test
    -- (`IS NOT DISTINCT FROM`, see LOAD_BATCH) was estimated at one row: a sequential scan,
    -- then o re-read for every row it kept (quadratic in the batch size; PostgreSQL pegged
    -- through the whole first sweep; the figures are in the commit that added this).
    WHERE a.id = o.id AND coalesce(a.lease_sweep_id, 0) = $1
      AND a.disconnected_at IS NULL
    RETURNING a.id, o.outcome, o.event, o.reason, o.error_code, o.source
), ev AS (
    -- the trail, and through its trigger the webhook outbox (sql/0006_webhooks.sql); a
    -- check the publisher's auth_failed report asked for (trigger 'report') says so
    INSERT INTO account_events (account_id, kind, reason, detail)
    SELECT id, event, reason,
           CASE WHEN error_code IS NULL AND source IS NULL THEN NULL
                ELSE jsonb_strip_nulls(jsonb_build_object(
                    'error_code', error_code,
                    'source', CASE WHEN source = 'check'
                                    AND (SELECT trigger FROM sweeps WHERE id = $1) = 'report'
                                   THEN 'publish_report' ELSE source END)) END
    FROM upd WHERE event IS NOT NULL
), counts AS (
    SELECT count(*) FILTER (WHERE outcome <> 'skipped') AS checked,
           count(*) FILTER (WHERE outcome = 'valid') AS healthy,
           count(*) FILTER (WHERE outcome = 'dead') AS deactivated,
           count(*) FILTER (WHERE outcome = 'transient') AS transient,
           count(*) FILTER (WHERE outcome = 'unknown') AS unknown,
           count(*) FILTER (WHERE outcome = 'skipped') AS skipped
    FROM upd
)
UPDATE sweeps s SET
    checked = s.checked + c.checked,
    healthy = s.healthy + c.healthy,
    deactivated = s.deactivated + c.deactivated,
    transient = s.transient + c.transient,
    unknown = s.unknown + c.unknown,
    skipped = s.skipped + c.skipped,
    refreshed = s.refreshed + $11
FROM counts c
WHERE s.id = $1
RETURNING c.checked, c.skipped, s.status
"""

# --- tokens during checks --------------------------------------------------------------------

READ_TOKENS = """
SELECT key_id, sealed, has_refresh, access_expires_at, refresh_expires_at, scopes, generation
FROM account_tokens WHERE account_id = $1
"""
# Compare-and-swap on the generation: a refresh that lost a race (or whose account was
# disconnected meanwhile, which deletes the row) writes nothing.
STORE_REFRESHED = """
UPDATE account_tokens SET
    key_id = $3, sealed = $4, has_refresh = $5, access_expires_at = $6,
    refresh_expires_at = coalesce($7, refresh_expires_at),
    scopes = coalesce($8, scopes), refresh_digest = $9, refresh_prefix_digest = $10,
    generation = generation + 1, updated_at = now()
WHERE account_id = $1 AND generation = $2
RETURNING generation
"""
COUNT_BY_STATUS = """
SELECT platform, health_status, count(*) AS n FROM accounts
WHERE disconnected_at IS NULL GROUP BY platform, health_status
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    account_id: str
    outcome: str  # valid | dead | transient | unknown | skipped
    status: str
    reason: str | None
    is_active: bool | None
    next_check_at: datetime
    transient_failures: int
    error_code: str | None
    event: str | None
    # which call found a dead token (check | refresh); the account.deactivated webhook says
    source: str | None = None


async def create_sweep(
    conn: asyncpg.Connection | asyncpg.Pool,
    trigger: str,
    platform: str | None = None,
    account_id: str | None = None,
) -> int:
    sweep_id: int = await conn.fetchval(CREATE_SWEEP, trigger, platform, account_id)
    return sweep_id


async def start_sweep(conn: asyncpg.Pool, sweep_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(START_SWEEP, sweep_id)
    return row


@dataclass(frozen=True, slots=True)
class Claimed:
    ids: list[str]
    ahead: int  # accounts the sweep has claimed and not yet reported, these included


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool,
    sweep_id: int,
    *,
    manual: bool,
    platform: str | None,
    account_id: str | None,
    limit: int,
    lease_seconds: float,
) -> Claimed:
    """Lease the sweep's next batch and count it on the sweep row, in one statement."""
    if not manual:
        rows = await conn.fetch(CLAIM_DUE, sweep_id, limit, lease_seconds)
    elif account_id is not None:
        rows = await conn.fetch(CLAIM_ONE, sweep_id, account_id, lease_seconds)
    else:
        rows = await conn.fetch(CLAIM_SCOPE, sweep_id, platform, limit, lease_seconds)
    return Claimed([r["id"] for r in rows], int(rows[0]["ahead"]) if rows else 0)


async def sweep_ahead(conn: asyncpg.Connection | asyncpg.Pool, sweep_id: int) -> int:
    return int(await conn.fetchval(SWEEP_AHEAD, sweep_id) or 0)


async def end_claiming(conn: asyncpg.Pool, sweep_id: int) -> None:
    await conn.execute(END_CLAIMING, sweep_id)


async def finish_if_idle(conn: asyncpg.Pool, sweep_id: int) -> bool:
    return await conn.fetchval(FINISH_IF_IDLE, sweep_id) is not None


async def finish_idle_sweeps(conn: asyncpg.Pool) -> list[int]:
    return [r["id"] for r in await conn.fetch(FINISH_IDLE_SWEEPS)]


async def get_sweep(
    conn: asyncpg.Connection | asyncpg.Pool, sweep_id: int
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(GET_SWEEP, sweep_id)
    return row


async def list_sweeps(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LIST_SWEEPS, limit)
    return rows


async def load_batch(conn: asyncpg.Pool, sweep_id: int, ids: list[str]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LOAD_BATCH, ids, sweep_id)
    return rows


@dataclass(frozen=True, slots=True)
class Applied:
    checked: int
    skipped: int
    claiming: bool  # the sweep is still claiming: its claimer will close it, not this batch


async def apply_outcomes(
    conn: asyncpg.Pool, sweep_id: int, outcomes: list[Outcome], refreshed: int
) -> Applied:
    if not outcomes:
        return Applied(0, 0, False)
    row = await conn.fetchrow(
        APPLY_OUTCOMES,
        sweep_id,
        [o.account_id for o in outcomes],
        [o.outcome for o in outcomes],
        [o.status for o in outcomes],
        [o.reason for o in outcomes],
        [o.is_active for o in outcomes],
        [o.next_check_at for o in outcomes],
        [o.transient_failures for o in outcomes],
        [o.error_code for o in outcomes],
        [o.event for o in outcomes],
        refreshed,
        [o.source for o in outcomes],
    )
    if row is None:  # the sweep row is gone; the accounts were still written
        return Applied(0, 0, False)
    return Applied(int(row["checked"]), int(row["skipped"]), row["status"] == "claiming")


async def read_tokens(conn: asyncpg.Pool, account_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(READ_TOKENS, account_id)
    return row


async def store_refreshed(
    conn: asyncpg.Pool,
    account_id: str,
    generation: int,
    *,
    key_id: str,
    sealed: bytes,
    has_refresh: bool,
    access_expires_at: datetime | None,
    refresh_expires_at: datetime | None,
    scopes: list[str] | None,
    refresh_digest: str | None,
    refresh_prefix_digest: bytes | None,
) -> int | None:
    new_generation: int | None = await conn.fetchval(
        STORE_REFRESHED,
        account_id,
        generation,
        key_id,
        sealed,
        has_refresh,
        access_expires_at,
        refresh_expires_at,
        scopes,
        refresh_digest,
        refresh_prefix_digest,
    )
    return new_generation


async def count_by_status(conn: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(COUNT_BY_STATUS)]
