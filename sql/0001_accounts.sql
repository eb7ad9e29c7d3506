-- Workspaces, API keys, accounts with their health, encrypted tokens, the event trail and
-- the revocation outbox.

CREATE TABLE workspaces (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each key is kept; `prefix` is the first characters, for display.
CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces (id),
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);

CREATE TABLE accounts (
    id                  text PRIMARY KEY,
    workspace_id        bigint NOT NULL REFERENCES workspaces (id),
    platform            text NOT NULL CHECK (platform IN ('twitter', 'bluesky', 'mastodon',
                            'linkedin', 'threads', 'instagram', 'facebook', 'tiktok', 'youtube')),
    platform_user_id    text NOT NULL,
    username            text NOT NULL,
    display_name        text NOT NULL,
    avatar_url          text,
    instance_url        text,
    is_active           boolean NOT NULL DEFAULT true,
    connected_at        timestamptz NOT NULL DEFAULT now(),
    last_used_at        timestamptz,
    disconnected_at     timestamptz,
    -- health, kept by the worker
    health_status       text NOT NULL DEFAULT 'unchecked',
    health_reason       text,
    health_error_code   text,
    last_checked_at     timestamptz,
    next_check_at       timestamptz NOT NULL DEFAULT now(),
    transient_failures  integer NOT NULL DEFAULT 0
);
-- One live connection per platform identity in a workspace; a reconnect reuses it.
CREATE UNIQUE INDEX accounts_identity ON accounts (workspace_id, platform, platform_user_id)
    WHERE disconnected_at IS NULL;
CREATE INDEX accounts_listing ON accounts (workspace_id, connected_at, id)
    WHERE disconnected_at IS NULL;
CREATE INDEX accounts_due ON accounts (next_check_at)
    WHERE disconnected_at IS NULL;

-- Secrets live apart from the account row and are never selected by the read path.
-- `sealed` is AES-GCM over {"a": access, "r": refresh} with the account id as associated data.
CREATE TABLE account_tokens (
    account_id          text PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    key_id              text NOT NULL,
    sealed              bytea NOT NULL,
    has_refresh         boolean NOT NULL,
    access_expires_at   timestamptz,
    refresh_expires_at  timestamptz,
    scopes              text[] NOT NULL DEFAULT '{}',
    generation          integer NOT NULL DEFAULT 1,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_tokens_key_id ON account_tokens (key_id);

CREATE TABLE account_events (
    id            bigserial PRIMARY KEY,
    account_id    text NOT NULL REFERENCES accounts (id),
    kind          text NOT NULL,
    reason        text,
    detail        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_events_account ON account_events (account_id, id);

-- The outbox a disconnect writes in its own transaction. `sealed` carries what the revoke
-- call needs until the platform has answered (or attempts ran out), then it is erased.
CREATE TABLE revocations (
    id               text PRIMARY KEY,
    account_id       text NOT NULL REFERENCES accounts (id),
    platform         text NOT NULL,
    key_id           text,
    sealed           bytea,
    status           text NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX revocations_pending ON revocations (created_at) WHERE status = 'pending';
