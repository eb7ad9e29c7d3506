-- Service keys: what other Octopost services (the publisher, the connect flow) present on
-- the internal listener. Apart from customer keys: they belong to no workspace, and what
-- they may do is their scopes. Only a SHA-256 of each key is kept, as for api_keys.
CREATE TABLE service_keys (
    id            text PRIMARY KEY,
    name          text NOT NULL,   -- who holds it; audited on every credentials issuance
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    scopes        text[] NOT NULL CHECK (cardinality(scopes) > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX service_keys_prefix ON service_keys (prefix);
