-- Access control: sessions beside API tokens, invitations, custom roles, inbox
-- membership as the write side knows it, and the tables erasure empties.

-- Bearer credentials of both kinds are checked the same way on every request: a
-- personal API token (pinned to one account) or a login session (its account may be
-- switched by header to another the user belongs to).
ALTER TABLE api_tokens RENAME TO access_tokens;
ALTER TABLE access_tokens RENAME CONSTRAINT api_tokens_pkey TO access_tokens_pkey;
ALTER TABLE access_tokens RENAME CONSTRAINT api_tokens_token_hash_key TO access_tokens_token_hash_key;
ALTER TABLE access_tokens ADD COLUMN kind text NOT NULL DEFAULT 'api' CHECK (kind IN ('api', 'session'));
ALTER TABLE access_tokens ADD COLUMN expires_at timestamptz;
CREATE INDEX access_tokens_user ON access_tokens (user_id) WHERE revoked_at IS NULL;

-- An invited agent has no password until they accept the invitation.
ALTER TABLE user_credentials ALTER COLUMN password_hash DROP NOT NULL;
CREATE TABLE invitations (
    token_hash  bytea       PRIMARY KEY,
    user_id     uuid        NOT NULL,
    account_id  uuid        NOT NULL,
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz
);

-- Custom roles narrow what an agent may do (permissions as named in the product).
CREATE TABLE custom_roles (
    role_id     uuid   PRIMARY KEY,
    account_id  uuid   NOT NULL,
    name        text   NOT NULL,
    permissions text[] NOT NULL
);
ALTER TABLE account_memberships ADD COLUMN custom_role_id uuid REFERENCES custom_roles (role_id);

-- Which inboxes an agent works in, written with the membership events and read on
-- each request, so a removal takes effect at once (the read model may lag).
CREATE TABLE inbox_memberships (
    account_id uuid NOT NULL,
    inbox_id   uuid NOT NULL,
    user_id    uuid NOT NULL,
    PRIMARY KEY (inbox_id, user_id)
);
CREATE INDEX inbox_memberships_user ON inbox_memberships (account_id, user_id);

-- Memberships recorded before this table existed: the last event per (inbox, user) wins.
INSERT INTO inbox_memberships (account_id, inbox_id, user_id)
SELECT account_id, inbox_id, user_id
FROM (
    SELECT DISTINCT ON (aggregate_id, payload -> event_type ->> 'user_id')
           (payload -> event_type ->> 'account_id')::uuid AS account_id,
           aggregate_id::uuid AS inbox_id,
           (payload -> event_type ->> 'user_id')::uuid AS user_id,
           event_type
    FROM events
    WHERE aggregate_type = 'inbox' AND event_type IN ('InboxMemberAdded', 'InboxMemberRemoved')
    ORDER BY aggregate_id, payload -> event_type ->> 'user_id', sequence DESC
) latest
WHERE event_type = 'InboxMemberAdded';

ALTER TABLE rm_agents ADD COLUMN custom_role_id uuid;
