"""Sealed tokens: the only module that reads or writes account_tokens and revocation blobs
(and, for key rotation, webhook endpoint secrets)."""

from __future__ import annotations

import asyncpg

# Key rotation walks every sealed blob not under the current key, in id order, and swaps
# each only if it is still the blob it read (a refresh may have replaced it meanwhile).
TOKENS_NOT_UNDER_KEY = """
SELECT account_id AS id, key_id, sealed FROM account_tokens
WHERE key_id <> $1 AND account_id > $2
ORDER BY account_id LIMIT $3
"""
RESEAL_TOKENS = """
UPDATE account_tokens t SET key_id = u.key_id, sealed = u.sealed
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[]) AS u(id, key_id, sealed, old)
WHERE t.account_id = u.id AND t.sealed = u.old
"""
REVOCATIONS_NOT_UNDER_KEY = """
SELECT r.account_id AS id, r.key_id, r.sealed, r.id AS revocation_id FROM revocations r
WHERE r.sealed IS NOT NULL AND r.key_id <> $1 AND r.id > $2
ORDER BY r.id LIMIT $3
"""
RESEAL_REVOCATIONS = """
UPDATE revocations r SET key_id = u.key_id, sealed = u.sealed
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[]) AS u(id, key_id, sealed, old)
WHERE r.id = u.id AND r.sealed = u.old
"""
# Webhook endpoint secrets (the endpoint id is their associated data), current and previous.
WEBHOOK_SECRETS_NOT_UNDER_KEY = """
SELECT id, key_id, sealed FROM webhook_endpoints
WHERE key_id <> $1 AND id > $2
ORDER BY id LIMIT $3
"""
RESEAL_WEBHOOK_SECRETS = """
UPDATE webhook_endpoints e SET key_id = u.key_id, sealed = u.sealed
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[]) AS u(id, key_id, sealed, old)
WHERE e.id = u.id AND e.sealed = u.old
"""
WEBHOOK_PREVIOUS_NOT_UNDER_KEY = """
SELECT id, previous_key_id AS key_id, previous_sealed AS sealed FROM webhook_endpoints
WHERE previous_sealed IS NOT NULL AND previous_key_id <> $1 AND id > $2
ORDER BY id LIMIT $3
"""
RESEAL_WEBHOOK_PREVIOUS = """
UPDATE webhook_endpoints e SET previous_key_id = u.key_id, previous_sealed = u.sealed
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[]) AS u(id, key_id, sealed, old)
WHERE e.id = u.id AND e.previous_sealed = u.old
"""
COUNT_BY_KEY = """
SELECT key_id, count(*) AS n FROM (
    SELECT key_id FROM account_tokens
    UNION ALL SELECT key_id FROM revocations WHERE sealed IS NOT NULL
    UNION ALL SELECT key_id FROM webhook_endpoints
    UNION ALL SELECT previous_key_id FROM webhook_endpoints WHERE previous_sealed IS NOT NULL
) s GROUP BY key_id ORDER BY key_id
"""
_RESEAL = {
    "tokens": RESEAL_TOKENS,
    "revocations": RESEAL_REVOCATIONS,
    "webhook secrets": RESEAL_WEBHOOK_SECRETS,
    "previous webhook secrets": RESEAL_WEBHOOK_PREVIOUS,
}


async def tokens_not_under_key(
    conn: asyncpg.Connection, key_id: str, after: str, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(TOKENS_NOT_UNDER_KEY, key_id, after, limit)
    return rows


async def revocations_not_under_key(
    conn: asyncpg.Connection, key_id: str, after: str, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(REVOCATIONS_NOT_UNDER_KEY, key_id, after, limit)
    return rows


async def webhook_secrets_not_under_key(
    conn: asyncpg.Connection, key_id: str, after: str, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        WEBHOOK_SECRETS_NOT_UNDER_KEY, key_id, after, limit
    )
    return rows


async def previous_webhook_secrets_not_under_key(
    conn: asyncpg.Connection, key_id: str, after: str, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        WEBHOOK_PREVIOUS_NOT_UNDER_KEY, key_id, after, limit
    )
    return rows


async def reseal(
    conn: asyncpg.Connection,
    table: str,
    ids: list[str],
    key_ids: list[str],
    blobs: list[bytes],
    old: list[bytes],
) -> None:
    await conn.execute(_RESEAL[table], ids, key_ids, blobs, old)


async def count_by_key(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(COUNT_BY_KEY)
    return rows
