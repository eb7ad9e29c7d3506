"""Connect sessions and the Mastodon apps registered per instance."""

from __future__ import annotations

import asyncpg

INSERT_SESSION = """
INSERT INTO connect_sessions (id, workspace_id, platform, state_hash, redirect_url, account_id,
                              instance, page_id, key_id, sealed_verifier, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))
RETURNING created_at, expires_at
"""
# Bluesky connects within the request: its session is born finished.
INSERT_FINISHED_SESSION = """
INSERT INTO connect_sessions (id, workspace_id, platform, redirect_url, account_id, status,
                              account_ids, expires_at, consumed_at, completed_at)
VALUES ($1, $2, $3, $4, $5, 'connected', $6, now(), now(), now())
RETURNING created_at, expires_at
"""
# The one statement that makes a state single use: whoever claims it first owns the session.
CLAIM_BY_STATE = """
UPDATE connect_sessions SET consumed_at = now()
WHERE state_hash = $1 AND consumed_at IS NULL
RETURNING id, workspace_id, platform, redirect_url, account_id, instance, page_id, key_id,
          sealed_verifier, expires_at <= now() AS expired
"""
FINISH_SESSION = """
UPDATE connect_sessions
SET status = $2, error = $3, account_ids = $4, completed_at = now(), sealed_verifier = NULL
WHERE id = $1
"""
GET_SESSION = """
SELECT s.id, s.platform, w.name AS workspace, s.status, s.error, s.account_ids, s.created_at,
       s.expires_at, s.completed_at, s.status = 'pending' AND s.expires_at <= now() AS expired
FROM connect_sessions s JOIN workspaces w ON w.id = s.workspace_id
WHERE s.id = $1
"""
LIVE_ACCOUNT = """
SELECT id, platform, platform_user_id, instance_url FROM accounts
WHERE id = $1 AND workspace_id = $2 AND disconnected_at IS NULL
"""

LOCK_MASTODON_INSTANCE = "SELECT pg_advisory_xact_lock(hashtextextended('mastodon-app:' || $1, 0))"
GET_MASTODON_APP = """
SELECT instance, client_id, key_id, sealed_secret, redirect_uri FROM mastodon_apps
WHERE instance = $1
"""
PUT_MASTODON_APP = """
INSERT INTO mastodon_apps (instance, client_id, key_id, sealed_secret, redirect_uri)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (instance) DO UPDATE SET
    client_id = EXCLUDED.client_id,
    key_id = EXCLUDED.key_id,
    sealed_secret = EXCLUDED.sealed_secret,
    redirect_uri = EXCLUDED.redirect_uri,
    created_at = now()
"""


async def insert_session(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: str,
    workspace_id: int,
    platform: str,
    state_hash: bytes,
    redirect_url: str,
    account_id: str | None,
    instance: str | None,
    page_id: str | None,
    key_id: str | None,
    sealed_verifier: bytes | None,
    lifetime_seconds: float,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        INSERT_SESSION,
        session_id,
        workspace_id,
        platform,
        state_hash,
        redirect_url,
        account_id,
        instance,
        page_id,
        key_id,
        sealed_verifier,
        lifetime_seconds,
    )
    return row


async def insert_finished_session(
    conn: asyncpg.Connection,
    session_id: str,
    workspace_id: int,
    platform: str,
    redirect_url: str,
    account_id: str | None,
    account_ids: list[str],
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        INSERT_FINISHED_SESSION,
        session_id,
        workspace_id,
        platform,
        redirect_url,
        account_id,
        account_ids,
    )
    return row


async def claim_by_state(conn: asyncpg.Pool, state_hash: bytes) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(CLAIM_BY_STATE, state_hash)
    return row


async def finish_session(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: str,
    status: str,
    error: str | None,
    account_ids: list[str],
) -> None:
    await conn.execute(FINISH_SESSION, session_id, status, error, account_ids)


async def get_session(conn: asyncpg.Pool, session_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(GET_SESSION, session_id)
    return row


async def live_account(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, workspace_id: int
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(LIVE_ACCOUNT, account_id, workspace_id)
    return row


async def lock_mastodon_instance(conn: asyncpg.Connection, instance: str) -> None:
    await conn.execute(LOCK_MASTODON_INSTANCE, instance)


async def get_mastodon_app(
    conn: asyncpg.Connection | asyncpg.Pool, instance: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(GET_MASTODON_APP, instance)
    return row


async def put_mastodon_app(
    conn: asyncpg.Connection,
    instance: str,
    client_id: str,
    key_id: str,
    sealed_secret: bytes,
    redirect_uri: str,
) -> None:
    await conn.execute(PUT_MASTODON_APP, instance, client_id, key_id, sealed_secret, redirect_uri)
