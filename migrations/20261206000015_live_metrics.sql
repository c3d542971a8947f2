-- The live dashboard (projector `live_metrics`): counters a supervisor's dashboard
-- reads as they are, moved by each event rather than counted per request.

-- What the projector knows of each conversation: enough to move the counters.
CREATE TABLE rm_live_conversations (
    conversation_id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    inbox_id uuid NOT NULL,
    team_id uuid,
    assignee_id uuid,
    status text NOT NULL,
    -- The first public reply was sent.
    replied boolean NOT NULL,
    waiting_since timestamptz
);

-- The oldest wait, found by an index whichever way the dashboard is narrowed; only
-- open conversations that wait are in them.
CREATE INDEX rm_live_conversations_waiting_in_account ON rm_live_conversations (account_id, waiting_since)
    WHERE status = 'open' AND waiting_since IS NOT NULL;
CREATE INDEX rm_live_conversations_waiting_in_inbox ON rm_live_conversations (inbox_id, waiting_since)
    WHERE status = 'open' AND waiting_since IS NOT NULL;
CREATE INDEX rm_live_conversations_waiting_in_team ON rm_live_conversations (team_id, waiting_since)
    WHERE status = 'open' AND waiting_since IS NOT NULL;

-- One row per inbox, team and assignee a conversation of the account is placed at
-- (no team, no assignee: null): every figure of the dashboard, however narrowed, is a
-- sum of these rows.
CREATE TABLE rm_live_counts (
    account_id uuid NOT NULL,
    inbox_id uuid NOT NULL,
    team_id uuid,
    assignee_id uuid,
    open integer NOT NULL,
    -- Open, and not yet answered or waiting for an answer.
    unattended integer NOT NULL,
    pending integer NOT NULL,
    snoozed integer NOT NULL,
    CONSTRAINT rm_live_counts_place UNIQUE NULLS NOT DISTINCT (account_id, inbox_id, team_id, assignee_id)
);
