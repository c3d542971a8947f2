-- The event store: postgres-es's `events` layout, extended into the global log.
--
-- Columns postgres-es writes (aggregate_type .. metadata) keep their names and types so
-- the plain library can append to the same table; the extra columns are filled by
-- PostgreSQL defaults:
--   global_position  total order of inserts (not commit order: see transaction_id);
--   transaction_id   the writing transaction, for gap-free catch-up below the xmin
--                    watermark (a reader orders by (transaction_id, global_position));
--   recorded_at      when the row was written;
--   account_id       the tenant, so an account's analysts read only their own log
--                    (null only for rows written by the plain library in benchmarks);
--   hash             per-stream hash chain: sha256(previous hash || this event), so an
--                    auditor can tell whether a timeline was altered.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    account_id      uuid,
    hash            bytea,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- The feed order every projector and the `events` query read in.
CREATE UNIQUE INDEX events_feed_order ON events (transaction_id, global_position);
CREATE INDEX events_account_feed_order ON events (account_id, transaction_id, global_position);

-- The log is immutable: corrections are new events, erasure is crypto-shredding.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Per-contact data keys (AES-256-GCM), wrapped by the master key. Deleting a row
-- shreds every sealed field of that contact in the log.
CREATE TABLE contact_keys (
    contact_id  uuid        PRIMARY KEY,
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Channel identities (inbox + the channel's contact id) map to their routing stream
-- through a keyed hash, so no phone number, e-mail or PSID appears in an aggregate id.
-- This table lets an operator find a contact's routes for erasure.
CREATE TABLE channel_identities (
    identity_hash text        PRIMARY KEY,
    account_id    uuid        NOT NULL,
    inbox_id      uuid        NOT NULL,
    contact_id    uuid        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channel_identities_contact ON channel_identities (contact_id);

-- Per-account conversation numbers (display_id 1, 2, 3…): a counter row per account,
-- bumped in its own short statement so no aggregate sits on every new conversation.
CREATE TABLE account_sequences (
    account_id           uuid   PRIMARY KEY,
    last_conversation_no bigint NOT NULL DEFAULT 0
);

-- Credentials are not events: a password hash or token must never be frozen in the log.
CREATE TABLE user_credentials (
    user_id       uuid        PRIMARY KEY,
    email         text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    token_id    uuid        PRIMARY KEY,
    token_hash  bytea       NOT NULL UNIQUE,
    user_id     uuid        NOT NULL,
    account_id  uuid        NOT NULL,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Who may act in which account, with which role: the write side's own table, read on
-- every request, so a role change or removal takes effect at once.
CREATE TABLE account_memberships (
    account_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    role       text NOT NULL CHECK (role IN ('administrator', 'agent')),
    PRIMARY KEY (account_id, user_id)
);
