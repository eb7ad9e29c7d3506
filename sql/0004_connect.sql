-- Connecting accounts through each platform's authorization flow.

-- The person who authorized an account when that is not the account itself (the Facebook
-- user behind a Page, the Google account behind a channel): push revocations name them.
-- Added idempotently: the push-revocation migration adds the same column.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS authorizing_user_id text;

-- One authorization attempt. The state travels through the browser, so only its SHA-256 is
-- kept; the PKCE verifier is sealed (AES-GCM, the session id as associated data).
-- `consumed_at` makes a state single use: the callback claims it with one UPDATE.
CREATE TABLE connect_sessions (
    id              text PRIMARY KEY,
    workspace_id    bigint NOT NULL REFERENCES workspaces (id),
    platform        text NOT NULL,
    state_hash      bytea UNIQUE,
    redirect_url    text NOT NULL,
    account_id      text REFERENCES accounts (id),   -- reconnect exactly this account
    instance        text,                            -- mastodon: the instance host
    page_id         text,                            -- facebook: only this Page
    key_id          text,
    sealed_verifier bytea,
    status          text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'connected', 'failed')),
    error           text,
    account_ids     text[] NOT NULL DEFAULT '{}',    -- what the session connected
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    consumed_at     timestamptz,
    completed_at    timestamptz
);
CREATE INDEX connect_sessions_expiry ON connect_sessions (expires_at) WHERE status = 'pending';

-- The OAuth app registered on each Mastodon instance (apps are per instance): registered
-- once, reused by every later connect there. The secret is sealed like tokens.
CREATE TABLE mastodon_apps (
    instance       text PRIMARY KEY,
    client_id      text NOT NULL,
    key_id         text NOT NULL,
    sealed_secret  bytea NOT NULL,
    redirect_uri   text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
