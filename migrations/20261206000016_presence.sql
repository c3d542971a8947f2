-- Presence and availability (docs/adr/0008-subscriptions.md).

-- Who is present, when Redis is not configured: one row per agent seen in the last
-- few seconds (a socket open, or a heartbeat). A row older than the lapse is claimed
-- by exactly one process's sweeper (DELETE … RETURNING), which records the lapse.
CREATE TABLE presence (
    user_id    uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    seen_at    timestamptz NOT NULL
);
CREATE INDEX presence_seen ON presence (seen_at);

-- Kept by the availability projector: each agent's chosen and effective status.
CREATE TABLE rm_agent_availability (
    user_id    uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    chosen     text NOT NULL,
    status     text NOT NULL,
    since      timestamptz NOT NULL
);
CREATE INDEX rm_agent_availability_account ON rm_agent_availability (account_id);
