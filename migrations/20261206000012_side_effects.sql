-- The runtime for side effects: policies (feed consumers that act) and durable jobs.
-- docs/adr/0007-side-effects.md

-- One row per policy: how far it has reacted. A policy registered on a database that
-- already has events starts at the head (it reacts to what happens from then on,
-- never to history); `rebuild` never touches these rows.
CREATE TABLE policy_checkpoints (
    policy        text PRIMARY KEY,
    last_txid     xid8 NOT NULL DEFAULT '0',
    last_position bigint NOT NULL DEFAULT 0,
    -- While the policy is retrying an event that failed: why, and since when.
    error         text,
    failing_since timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Durable jobs. A job is enqueued in the transaction of what causes it; `job_key`
-- (the causing event's identity and what the job does about it) makes enqueueing
-- idempotent. Workers claim due jobs with FOR UPDATE SKIP LOCKED and a lease: a job
-- whose worker died runs again once its lease has passed.
CREATE TABLE jobs (
    job_id       uuid PRIMARY KEY,
    kind         text NOT NULL,
    account_id   uuid,
    job_key      text NOT NULL UNIQUE,
    payload      jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'dead')),
    run_at       timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL CHECK (max_attempts > 0),
    leased_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 'pending';
CREATE INDEX jobs_leased ON jobs (leased_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('done', 'dead');

-- Outgoing webhooks: each webhook's settings, written with its events. The URL (often
-- carrying a token) and the signing secret are sealed with a key derived from the
-- master key and bound to the row; the log records only the URL's host.
CREATE TABLE webhooks (
    webhook_id      uuid PRIMARY KEY,
    account_id      uuid NOT NULL,
    name            text NOT NULL,
    url_sealed      bytea NOT NULL,
    secret_sealed   bytea NOT NULL,
    events          text[] NOT NULL,
    active          boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX webhooks_by_account ON webhooks (account_id) WHERE deleted_at IS NULL;

-- One delivery per webhook and public event, enqueued with its job by the webhooks
-- policy; its id is the `webhook-id` header, the same on every attempt.
CREATE TABLE webhook_deliveries (
    delivery_id      uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL,
    account_id       uuid NOT NULL,
    event_name       text NOT NULL,
    -- The causing event (`<type>/<id>/<sequence>`), or `test/<id>` for a test.
    event_ref        text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    next_attempt_at  timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, delivery_id DESC);

-- Every attempt of every delivery, as it ended.
CREATE TABLE webhook_delivery_attempts (
    delivery_id uuid NOT NULL,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer,
    error       text,
    duration_ms integer NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
