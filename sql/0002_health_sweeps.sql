-- Token-health sweeps: who holds an account's check lease, and one row per sweep run.

ALTER TABLE accounts
    ADD COLUMN last_sweep_id bigint,   -- the sweep that last claimed it (never cleared)
    ADD COLUMN lease_sweep_id bigint;  -- the sweep whose check is in flight (NULL when done)

CREATE TABLE sweeps (
    id            bigserial PRIMARY KEY,
    trigger       text NOT NULL,            -- schedule | manual
    platform      text,
    account_id    text,
    status        text NOT NULL DEFAULT 'queued',  -- queued | claiming | running | done
    claimed       integer NOT NULL DEFAULT 0,
    checked       integer NOT NULL DEFAULT 0,
    healthy       integer NOT NULL DEFAULT 0,
    deactivated   integer NOT NULL DEFAULT 0,
    refreshed     integer NOT NULL DEFAULT 0,
    transient     integer NOT NULL DEFAULT 0,
    unknown       integer NOT NULL DEFAULT 0,
    skipped       integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);
CREATE INDEX sweeps_recent ON sweeps (id DESC);
-- Small: only accounts whose check is in flight.
CREATE INDEX accounts_in_flight ON accounts (lease_sweep_id) WHERE lease_sweep_id IS NOT NULL;
