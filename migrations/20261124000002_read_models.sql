-- Read models: every table here is owned by exactly one projector, rebuilt from the
-- log by `rebuild`, and carries account_id so every query is scoped by tenant.

-- One row per projector: how far it has applied the feed, advanced in the same
-- transaction as its writes; `error` holds why it stopped, for /readyz.
CREATE TABLE projector_checkpoints (
    projector     text        PRIMARY KEY,
    last_txid     xid8        NOT NULL DEFAULT '0',
    last_position bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    error         text
);

-- Projector `directory`: accounts, agents, inboxes, members, teams, labels, contacts.
CREATE TABLE rm_accounts (
    account_id uuid PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE rm_agents (
    account_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    name       text NOT NULL,
    email      text NOT NULL,
    role       text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, user_id)
);

CREATE TABLE rm_inboxes (
    inbox_id   uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    name       text NOT NULL,
    channel    text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX rm_inboxes_account ON rm_inboxes (account_id, created_at, inbox_id);

CREATE TABLE rm_inbox_members (
    inbox_id   uuid NOT NULL,
    user_id    uuid NOT NULL,
    account_id uuid NOT NULL,
    PRIMARY KEY (inbox_id, user_id)
);

CREATE TABLE rm_teams (
    team_id    uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE rm_team_members (
    team_id    uuid NOT NULL,
    user_id    uuid NOT NULL,
    account_id uuid NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE rm_labels (
    label_id   uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    title      text NOT NULL,
    color      text NOT NULL,
    UNIQUE (account_id, title)
);

CREATE TABLE rm_contacts (
    contact_id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    name       text,
    email      text,
    phone      text,
    created_at timestamptz NOT NULL
);
CREATE INDEX rm_contacts_account ON rm_contacts (account_id, created_at, contact_id);

-- Projector `inbox_list`: one row per conversation, shaped for the agent's inbox.
-- priority_rank orders none < low < medium < high < urgent.
CREATE TABLE rm_conversations (
    conversation_id  uuid PRIMARY KEY,
    account_id       uuid NOT NULL,
    display_id       bigint NOT NULL,
    inbox_id         uuid NOT NULL,
    contact_id       uuid NOT NULL,
    contact_name     text,
    status           text NOT NULL,
    priority         text NOT NULL,
    priority_rank    smallint NOT NULL,
    assignee_id      uuid,
    team_id          uuid,
    labels           text[] NOT NULL DEFAULT '{}',
    snoozed_until    timestamptz,
    waiting_since    timestamptz,
    first_reply_at   timestamptz,
    muted            boolean NOT NULL DEFAULT false,
    -- null once the contact is erased (the attributes were sealed with its key)
    custom_attributes jsonb DEFAULT '{}',
    messages_count   integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL,
    UNIQUE (account_id, display_id)
);
-- The default inbox view: status within account, newest activity first; keyset on id.
CREATE INDEX rm_conversations_status_activity
    ON rm_conversations (account_id, status, last_activity_at DESC, conversation_id DESC);
CREATE INDEX rm_conversations_assignee_activity
    ON rm_conversations (account_id, assignee_id, status, last_activity_at DESC, conversation_id DESC);
CREATE INDEX rm_conversations_labels ON rm_conversations USING gin (labels);

-- Projector `timeline`: messages and activities of each conversation, in order.
CREATE TABLE rm_messages (
    message_id      uuid PRIMARY KEY,
    conversation_id uuid NOT NULL,
    account_id      uuid NOT NULL,
    seq             bigint NOT NULL,
    message_type    text NOT NULL,
    private         boolean NOT NULL,
    content         text,
    sender          text NOT NULL,
    created_at      timestamptz NOT NULL,
    UNIQUE (conversation_id, seq)
);
