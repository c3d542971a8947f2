-- WhatsApp and Messenger inboxes (issue 13): where each provider addresses an inbox,
-- and the channel's secrets, sealed, outside the log.

-- One row per provider inbox, written with the event that configures it. A provider
-- id routes to one inbox only: Meta's ids are global.
CREATE TABLE inbox_channels (
    inbox_id   uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    channel    text NOT NULL,
    routing_id text NOT NULL,
    CONSTRAINT inbox_channels_routing UNIQUE (channel, routing_id)
);

-- A channel's secrets, each sealed with the settings key and bound to its row
-- (`inbox/<id>/<name>`). The verify token also has a keyed hash, so the app-level
-- handshake finds the inboxes it names without opening every secret.
CREATE TABLE inbox_channel_secrets (
    inbox_id    uuid NOT NULL REFERENCES inbox_channels ON DELETE CASCADE,
    name        text NOT NULL,
    sealed      bytea NOT NULL,
    lookup_hash text,
    PRIMARY KEY (inbox_id, name)
);
CREATE INDEX inbox_channel_secrets_lookup ON inbox_channel_secrets (lookup_hash) WHERE lookup_hash IS NOT NULL;

-- The directory shows a provider inbox's address and which secrets are set.
ALTER TABLE rm_inboxes
    ADD COLUMN address jsonb,
    ADD COLUMN secrets_set text[] NOT NULL DEFAULT '{}';

-- Providers' callbacks about our messages, kept as they arrive (in any order, maybe
-- before the send they are about is recorded): each is applied to its message when
-- both are known, and never twice.
CREATE TABLE channel_statuses (
    inbox_id            uuid NOT NULL,
    provider_message_id text NOT NULL,
    -- 1 sent, 2 delivered, 3 read, 9 failed
    status              smallint NOT NULL,
    error_code          text,
    error_title         text,
    at                  timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (inbox_id, provider_message_id, status)
);

-- Messenger's watermarks: every outgoing message to the recipient before `up_to` was
-- delivered (or read). Only the latest matters.
CREATE TABLE channel_watermarks (
    inbox_id  uuid NOT NULL,
    recipient text NOT NULL,
    -- 2 delivered, 3 read
    status    smallint NOT NULL,
    up_to     timestamptz NOT NULL,
    PRIMARY KEY (inbox_id, recipient, status)
);

-- A message's delivery by its provider (null: incoming, private, or not delivered by
-- a provider), and the provider's error when it failed.
ALTER TABLE rm_messages
    ADD COLUMN status text,
    ADD COLUMN status_error text;

-- Our messages a provider accepted, by the provider's id: callbacks find their
-- message here. Written with `MessageAcceptedByProvider`. `recipient` is a keyed
-- hash of the contact's id on the channel (Messenger's watermarks name the contact).
CREATE TABLE channel_messages (
    inbox_id            uuid NOT NULL,
    provider_message_id text NOT NULL,
    conversation_id     uuid NOT NULL,
    message_id          uuid NOT NULL,
    recipient           text NOT NULL,
    accepted_at         timestamptz NOT NULL,
    PRIMARY KEY (inbox_id, provider_message_id)
);
CREATE INDEX channel_messages_recipient ON channel_messages (inbox_id, recipient, accepted_at);

-- When the contact last wrote, by the provider's clock: `Conversation.canReply` and
-- `replyWindowClosesAt` are read from it with the inbox's channel.
ALTER TABLE rm_conversations ADD COLUMN last_received_at timestamptz;

-- A WhatsApp inbox's message templates as the provider lists them, replaced whole by
-- each sync (on creation, and `syncMessageTemplates`).
CREATE TABLE message_templates (
    inbox_id   uuid NOT NULL,
    name       text NOT NULL,
    language   text NOT NULL,
    category   text NOT NULL,
    status     text NOT NULL,
    components jsonb NOT NULL,
    synced_at  timestamptz NOT NULL,
    PRIMARY KEY (inbox_id, name, language)
);

-- Files of messages kept in the attachment store (sealed with the contact's key).
CREATE TABLE attachment_files (
    attachment_id uuid PRIMARY KEY,
    account_id    uuid NOT NULL,
    contact_id    uuid NOT NULL,
    mime_type     text NOT NULL,
    file_size     bigint NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT now()
);

-- The files a message carries, as the timeline shows them (id, type, MIME type, name).
ALTER TABLE rm_messages ADD COLUMN attachments jsonb;
