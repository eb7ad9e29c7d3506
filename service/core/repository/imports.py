"""Batched writes for account imports and connects (and reconnects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.core.repository.webhooks import TrailEvent, record_account_events

LOCK_WORKSPACE_IMPORTS = "SELECT pg_advisory_xact_lock(hashtextextended('import', $1))"

LIVE_IDS_BY_IDENTITY = """
SELECT a.id, a.platform, a.platform_user_id
FROM accounts a
JOIN unnest($2::text[], $3::text[]) AS u(platform, platform_user_id)
  ON a.platform = u.platform AND a.platform_user_id = u.platform_user_id
WHERE a.workspace_id = $1 AND a.disconnected_at IS NULL
"""

IDS_TAKEN = "SELECT id FROM accounts WHERE id = ANY($1::text[])"

# A reconnect keeps the id and connected_at, takes the new profile fields, and clears the
# health state so the account is active and checked again soon.
UPSERT_ACCOUNTS = """
INSERT INTO accounts (id, workspace_id, platform, platform_user_id, username, display_name,
                      avatar_url, instance_url, is_active, connected_at, last_used_at,
                      authorizing_user_id)
SELECT u.id, $1, u.platform, u.platform_user_id, u.username, u.display_name, u.avatar_url,
       u.instance_url, u.is_active, coalesce(u.connected_at, now()), u.last_used_at,
       u.authorizing_user_id
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::boolean[], $10::timestamptz[], $11::timestamptz[], $12::text[])
     AS u(id, platform, platform_user_id, username, display_name, avatar_url, instance_url,
          is_active, connected_at, last_used_at, authorizing_user_id)
ON CONFLICT (workspace_id, platform, platform_user_id) WHERE disconnected_at IS NULL
DO UPDATE SET
    username = EXCLUDED.username,
    display_name = EXCLUDED.display_name,
    avatar_url = EXCLUDED.avatar_url,
    instance_url = EXCLUDED.instance_url,
    is_active = EXCLUDED.is_active,
    authorizing_user_id = coalesce(EXCLUDED.authorizing_user_id, accounts.authorizing_user_id),
    last_used_at = coalesce(EXCLUDED.last_used_at, accounts.last_used_at),
    health_status = 'unchecked',
    health_reason = NULL,
    health_error_code = NULL,
    last_checked_at = NULL,
    next_check_at = now(),
    transient_failures = 0
RETURNING id
"""

UPSERT_TOKENS = """
INSERT INTO account_tokens (account_id, key_id, sealed, has_refresh, access_expires_at,
                            refresh_expires_at, scopes, refresh_digest, refresh_prefix_digest)
SELECT u.account_id, u.key_id, u.sealed, u.has_refresh, u.access_expires_at,
       u.refresh_expires_at, string_to_array(u.scopes, ' '), u.refresh_digest,
       u.refresh_prefix_digest
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::boolean[], $5::timestamptz[],
            $6::timestamptz[], $7::text[], $8::text[], $9::bytea[])
     AS u(account_id, key_id, sealed, has_refresh, access_expires_at, refresh_expires_at,
          scopes, refresh_digest, refresh_prefix_digest)
ON CONFLICT (account_id) DO UPDATE SET
    key_id = EXCLUDED.key_id,
    sealed = EXCLUDED.sealed,
    has_refresh = EXCLUDED.has_refresh,
    access_expires_at = EXCLUDED.access_expires_at,
    refresh_expires_at = EXCLUDED.refresh_expires_at,
    scopes = EXCLUDED.scopes,
    refresh_digest = EXCLUDED.refresh_digest,
    refresh_prefix_digest = EXCLUDED.refresh_prefix_digest,
    generation = account_tokens.generation + 1,
    updated_at = now()
"""

# A reconnect whose new tokens carry no refresh token keeps the stored one (Google sends
# one only on consent, LinkedIn only to partners): read under a row lock, so a refresh in a
# worker cannot rotate it between this read and the write.
STORED_REFRESH = """
SELECT account_id, key_id, sealed, refresh_expires_at FROM account_tokens
WHERE account_id = ANY($1::text[]) AND has_refresh
FOR UPDATE
"""


@dataclass(frozen=True, slots=True)
class ImportRow:
    id: str
    platform: str
    platform_user_id: str
    username: str
    display_name: str
    avatar_url: str | None
    instance_url: str | None
    is_active: bool
    connected_at: datetime | None
    last_used_at: datetime | None
    key_id: str
    sealed: bytes
    has_refresh: bool
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    scopes: list[str]
    reconnect: bool
    authorizing_user_id: str | None = None
    refresh_digest: str | None = None
    refresh_prefix_digest: bytes | None = None


async def lock_workspace(conn: asyncpg.Connection, workspace_id: int) -> None:
    await conn.execute(LOCK_WORKSPACE_IMPORTS, workspace_id)


async def live_ids_by_identity(
    conn: asyncpg.Connection, workspace_id: int, platforms: list[str], user_ids: list[str]
) -> dict[tuple[str, str], str]:
    rows = await conn.fetch(LIVE_IDS_BY_IDENTITY, workspace_id, platforms, user_ids)
    return {(r["platform"], r["platform_user_id"]): r["id"] for r in rows}


async def ids_taken(conn: asyncpg.Connection, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    return {r["id"] for r in await conn.fetch(IDS_TAKEN, ids)}


async def stored_refresh(conn: asyncpg.Connection, ids: list[str]) -> list[asyncpg.Record]:
    if not ids:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(STORED_REFRESH, ids)
    return rows


async def upsert_accounts(
    conn: asyncpg.Connection, workspace_id: int, rows: list[ImportRow]
) -> None:
    returned = await conn.fetch(
        UPSERT_ACCOUNTS,
        workspace_id,
        [r.id for r in rows],
        [r.platform for r in rows],
        [r.platform_user_id for r in rows],
        [r.username for r in rows],
        [r.display_name for r in rows],
        [r.avatar_url for r in rows],
        [r.instance_url for r in rows],
        [r.is_active for r in rows],
        [r.connected_at for r in rows],
        [r.last_used_at for r in rows],
        [r.authorizing_user_id for r in rows],
    )
    # The workspace lock makes this impossible; if it ever happened the sealed tokens
    # would be bound to the wrong id, so refuse rather than write them.
    if sorted(r["id"] for r in returned) != sorted(r.id for r in rows):
        raise RuntimeError("account ids changed during import")
    await conn.execute(
        UPSERT_TOKENS,
        [r.id for r in rows],
        [r.key_id for r in rows],
        [r.sealed for r in rows],
        [r.has_refresh for r in rows],
        [r.access_expires_at for r in rows],
        [r.refresh_expires_at for r in rows],
        [" ".join(r.scopes) for r in rows],
        [r.refresh_digest for r in rows],
        [r.refresh_prefix_digest for r in rows],
    )
    # the trail and the webhook outbox, in the import's transaction
    await record_account_events(
        conn,
        [TrailEvent(r.id, "reconnected" if r.reconnect else "connected") for r in rows],
    )
