-- Platform push notices (deauthorize, data deletion, RISC, TikTok, X): the inbox a receiver
-- writes before it answers, and what the notices are matched on.

-- The platform user who granted the connection, when it is not the connected account itself:
-- the Facebook user behind a Page, the Google account (`sub`) behind a YouTube channel.
-- Issue 13 (connect) adds the same column; both migrations must stay idempotent.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS authorizing_user_id text;

-- A notice names a platform user, never a workspace: it is matched across all of them.
CREATE INDEX IF NOT EXISTS accounts_platform_user ON accounts (platform, platform_user_id)
    WHERE disconnected_at IS NULL;
CREATE INDEX IF NOT EXISTS accounts_authorizing_user ON accounts (platform, authorizing_user_id)
    WHERE disconnected_at IS NULL AND authorizing_user_id IS NOT NULL;

-- Google RISC names a refresh token by `hash_base64_sha512_sha512` or by its first 16
-- characters (`prefix`). Neither is kept in plaintext: the first is the base64 of
-- SHA-512(SHA-512(token)), as Google sends it; the second a SHA-256 of the prefix.
ALTER TABLE account_tokens
    ADD COLUMN IF NOT EXISTS refresh_digest text,
    ADD COLUMN IF NOT EXISTS refresh_prefix_digest bytea;
CREATE INDEX IF NOT EXISTS account_tokens_refresh_digest ON account_tokens (refresh_digest)
    WHERE refresh_digest IS NOT NULL;
CREATE INDEX IF NOT EXISTS account_tokens_refresh_prefix ON account_tokens (refresh_prefix_digest)
    WHERE refresh_prefix_digest IS NOT NULL;

-- One row per distinct notice, written (and committed) before the receiver answers. The id
-- is derived from the notice (RISC jti, X event_uuid, a digest of Meta's signed payload or
-- TikTok's body), so a platform's redelivery finds its row and changes nothing.
CREATE TABLE platform_notices (
    id                 text PRIMARY KEY,
    platform           text NOT NULL,
    event              text NOT NULL,      -- the platform's own name for it
    action             text NOT NULL,      -- revoke | deactivate | delete_data | check
    subject_type       text NOT NULL,      -- user | refresh_digest | refresh_prefix_digest
    subject            text NOT NULL,
    reason             text,
    detail             jsonb,
    confirmation_code  text UNIQUE,        -- data deletion requests only
    status             text NOT NULL DEFAULT 'pending',  -- pending | applied
    matched            integer,
    received_at        timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    applied_at         timestamptz
);
CREATE INDEX platform_notices_pending ON platform_notices (received_at, id)
    WHERE status = 'pending';
