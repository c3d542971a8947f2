-- Who has a conversation open (a subscription to its events), shared by every
-- process: a row per agent and conversation, touched every few seconds while the
-- subscription lives, removed when it ends or claimed by one sweep once it lapses.
CREATE TABLE conversation_viewers (
    conversation_id uuid NOT NULL,
    user_id         uuid NOT NULL,
    account_id      uuid NOT NULL,
    seen_at         timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX conversation_viewers_seen ON conversation_viewers (seen_at);
