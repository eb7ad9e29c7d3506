-- Outgoing account webhooks: endpoints, the event outbox, one delivery row per endpoint and
-- event, and every attempt made.
--
-- The outbox is written by the trail: every row added to account_events (by the sweep's
-- outcome statement, the DELETE, an import or reconnect, a revocation's end, or any later
-- writer such as connect sessions) goes through emit_account_webhooks() in the same
-- statement, so a change is never reported without having happened and never happens
-- without being reported. The NOTIFY it sends reaches the worker's dispatcher only when
-- the transaction commits.

CREATE TABLE webhook_endpoints (
    id                   text PRIMARY KEY,
    workspace_id         bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url                  text NOT NULL,
    events               text[] NOT NULL,
    description          text NOT NULL DEFAULT '',
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text,              -- gone (410) | failing (N days) | api
    -- the signing secret (whsec_...), sealed by the vault with the endpoint id bound in
    key_id               text NOT NULL,
    sealed               bytea NOT NULL,
    -- the secret before the last rotation, still signed with until it expires
    previous_key_id      text,
    previous_sealed      bytea,
    previous_expires_at  timestamptz,
    -- the first failed attempt since the last success (NULL: not failing)
    failing_since        timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id, created_at, id);

CREATE TABLE webhook_events (
    id            text PRIMARY KEY,          -- evt_..., the webhook-id of every attempt
    workspace_id  bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    type          text NOT NULL,
    account_id    text,
    body          text NOT NULL,             -- the exact bytes every attempt sends
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending',   -- pending | delivered | failed
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    leased_until     timestamptz,            -- a dispatcher is sending it until then
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_oldest ON webhook_deliveries (created_at)
    WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id               bigserial PRIMARY KEY,
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         text NOT NULL,
    attempt          integer NOT NULL,       -- 0: not sent (the endpoint was disabled)
    result           text NOT NULL,          -- delivered | retrying | failed
    response_status  integer,
    error            text,
    duration_ms      integer,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);
CREATE INDEX webhook_attempts_age ON webhook_attempts (created_at);
CREATE INDEX webhook_events_age ON webhook_events (created_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- The seed's Account object, field for field, timestamps as the API writes them.
CREATE FUNCTION webhook_timestamp(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

CREATE FUNCTION webhook_account(a accounts) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'id', a.id, 'platform', a.platform, 'platform_user_id', a.platform_user_id,
        'username', a.username, 'display_name', a.display_name, 'avatar_url', a.avatar_url,
        'is_active', a.is_active, 'connected_at', webhook_timestamp(a.connected_at),
        'last_used_at', webhook_timestamp(a.last_used_at))
$$;

-- Events for the endpoints of a workspace: one webhook_events row (when at least one endpoint
-- takes the type), a delivery per endpoint (pending, or failed at once for a disabled
-- endpoint, shown as an attempt 0), and a NOTIFY per endpoint with work, sent at commit.
-- `data` is each event's data object; `only_endpoint` restricts the fan-out to one endpoint
-- (webhook.test). Returns the event ids, in input order, NULL where nobody listens.
CREATE FUNCTION emit_webhook_events(
    p_workspace_ids bigint[], p_types text[], p_account_ids text[], p_data json[],
    p_only_endpoint text DEFAULT NULL
) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    woken text[];
    ids text[];
BEGIN
    WITH src AS (
        SELECT u.workspace_id, u.type, u.account_id, u.data, u.n,
               'evt_' || replace(gen_random_uuid()::text, '-', '') AS event_id,
               now() AS created_at
        FROM unnest(p_workspace_ids, p_types, p_account_ids, p_data)
             WITH ORDINALITY AS u(workspace_id, type, account_id, data, n)
    ), targets AS (
        SELECT s.event_id, e.id AS endpoint_id, e.enabled
        FROM src s
        JOIN webhook_endpoints e ON e.workspace_id = s.workspace_id
        WHERE (p_only_endpoint IS NULL AND s.type = ANY (e.events)) OR e.id = p_only_endpoint
    ), ev AS (
        INSERT INTO webhook_events (id, workspace_id, type, account_id, body, created_at)
        SELECT s.event_id, s.workspace_id, s.type, s.account_id,
               -- json, not jsonb: the keys stay in the documented order
               json_build_object('id', s.event_id, 'type', s.type,
                                 'created_at', webhook_timestamp(s.created_at),
                                 'data', s.data)::text,
               s.created_at
        FROM src s WHERE EXISTS (SELECT 1 FROM targets t WHERE t.event_id = s.event_id)
        RETURNING id
    ), del AS (
        INSERT INTO webhook_deliveries (endpoint_id, event_id, status, last_error, finished_at)
        SELECT t.endpoint_id, t.event_id,
               CASE WHEN t.enabled THEN 'pending' ELSE 'failed' END,
               CASE WHEN t.enabled THEN NULL ELSE 'endpoint disabled' END,
               CASE WHEN t.enabled THEN NULL ELSE now() END
        FROM targets t JOIN ev ON ev.id = t.event_id
        RETURNING endpoint_id, event_id, status
    ), skipped AS (
        INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, result, error)
        SELECT endpoint_id, event_id, 0, 'failed', 'endpoint disabled'
        FROM del WHERE status = 'failed'
    )
    SELECT (SELECT array_agg(DISTINCT endpoint_id) FROM del WHERE status = 'pending'),
           (SELECT array_agg(CASE WHEN EXISTS (SELECT 1 FROM ev WHERE ev.id = s.event_id)
                                  THEN s.event_id END ORDER BY s.n) FROM src s)
    INTO woken, ids;
    PERFORM pg_notify('octopost_webhooks', w) FROM unnest(woken) AS w;
    RETURN ids;
END
$$;

-- The trail's transitions as webhook events, built from the account as it is after the
-- statement (AFTER triggers see every change the statement made).
CREATE FUNCTION emit_account_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM emit_webhook_events(
        array_agg(x.workspace_id ORDER BY x.id), array_agg(x.type ORDER BY x.id),
        array_agg(x.account_id ORDER BY x.id), array_agg(x.data ORDER BY x.id))
    FROM (
        SELECT n.id, a.workspace_id, a.id AS account_id, t.type,
               CASE n.kind
                    WHEN 'deactivated' THEN json_build_object(
                        'account', webhook_account(a),
                        'status', a.health_status,
                        'reason', coalesce(n.reason, a.health_reason),
                        'source', coalesce(n.detail ->> 'source', 'check'))
                    WHEN 'disconnected' THEN json_build_object(
                        'account', webhook_account(a),
                        'initiator', coalesce(n.reason, 'api'))
                    WHEN 'revoke_failed' THEN json_build_object(
                        'account', webhook_account(a),
                        'reason', n.reason, 'error', n.detail ->> 'error')
                    ELSE json_build_object('account', webhook_account(a))
                  END AS data
        FROM new_events n
        JOIN accounts a ON a.id = n.account_id
        CROSS JOIN LATERAL (SELECT CASE n.kind
            WHEN 'connected' THEN 'account.connected'
            WHEN 'reconnected' THEN 'account.reconnected'
            WHEN 'deactivated' THEN 'account.deactivated'
            WHEN 'reactivated' THEN 'account.reactivated'
            WHEN 'disconnected' THEN 'account.disconnected'
            WHEN 'revoke_failed' THEN 'account.revocation_failed'
          END AS type) t
        WHERE t.type IS NOT NULL
          -- a workspace without endpoints pays one index probe and writes nothing
          AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.workspace_id = a.workspace_id)
    ) x
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER account_events_webhooks
    AFTER INSERT ON account_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION emit_account_webhooks();
