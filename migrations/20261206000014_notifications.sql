-- Notifications: docs/adr/0009-notifications.md

-- The notifications projector's read model: one row per notification and recipient.
-- A recipient who turned every channel of a type off gets no row; one who turned only
-- in-app off gets a row kept for e-mail and push (`in_app` false), never listed.
-- `source_event` names the causing event (`<type>/<id>/<sequence>`) and `txid`,
-- `position` its place in the feed, the order `notificationCreated` pushes in.
CREATE TABLE rm_notifications (
    notification_id uuid PRIMARY KEY,
    account_id      uuid NOT NULL,
    user_id         uuid NOT NULL,
    type            text NOT NULL,
    conversation_id uuid NOT NULL,
    -- The message it is about (new messages and mentions).
    message_id      uuid,
    actor           text NOT NULL,
    source_event    text NOT NULL,
    txid            bigint NOT NULL,
    position        bigint NOT NULL,
    in_app          boolean NOT NULL,
    email           boolean NOT NULL,
    push            boolean NOT NULL,
    created_at      timestamptz NOT NULL,
    read_at         timestamptz,
    snoozed_until   timestamptz
);
CREATE INDEX rm_notifications_listed ON rm_notifications (account_id, user_id, created_at DESC, notification_id DESC)
    WHERE in_app;
CREATE INDEX rm_notifications_in_feed ON rm_notifications (account_id, user_id, txid, position) WHERE in_app;
CREATE INDEX rm_notifications_by_source ON rm_notifications (source_event);
CREATE INDEX rm_notifications_by_conversation ON rm_notifications (conversation_id);

-- What the projector decides recipients from, as of the event it applies (its own
-- copy, so a replay decides as the live run did): settings changed from the defaults,
-- the account's members, inboxes' members, conversations' inbox and assignee, and
-- the agents who wrote in a conversation.
CREATE TABLE rm_notification_settings (
    account_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    type       text NOT NULL,
    in_app     boolean NOT NULL,
    email      boolean NOT NULL,
    push       boolean NOT NULL,
    PRIMARY KEY (account_id, user_id, type)
);
CREATE TABLE rm_notification_members (
    account_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE TABLE rm_notification_inbox_members (
    inbox_id uuid NOT NULL,
    user_id  uuid NOT NULL,
    PRIMARY KEY (inbox_id, user_id)
);
CREATE TABLE rm_notification_conversations (
    conversation_id uuid PRIMARY KEY,
    account_id      uuid NOT NULL,
    inbox_id        uuid NOT NULL,
    assignee_id     uuid
);
CREATE TABLE rm_notification_participants (
    conversation_id uuid NOT NULL,
    user_id         uuid NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

-- Browsers registered for web push, written with their `PushSubscriptionRegistered`
-- event: the endpoint and keys sealed with a key derived from the master key, bound
-- to the row (the endpoint is a capability: whoever has it can push to the browser).
CREATE TABLE push_subscriptions (
    subscription_id uuid PRIMARY KEY,
    account_id      uuid NOT NULL,
    user_id         uuid NOT NULL,
    sealed          bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (account_id, user_id);
