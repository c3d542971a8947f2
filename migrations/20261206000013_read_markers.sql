-- Read markers: how much of a conversation each agent has read, for their unread
-- counts. Kept by the inbox_list projector from `ConversationRead` events.

-- The contact's messages in each conversation (counted from the timeline for the
-- conversations projected before this column existed).
ALTER TABLE rm_conversations ADD COLUMN messages_received integer NOT NULL DEFAULT 0;
UPDATE rm_conversations c SET messages_received = m.received
  FROM (SELECT conversation_id, count(*)::int AS received FROM rm_messages
        WHERE message_type = 'incoming' GROUP BY conversation_id) m
 WHERE m.conversation_id = c.conversation_id;

-- The first `messages_read` of the contact's messages are read by the agent.
CREATE TABLE rm_conversation_reads (
    conversation_id uuid NOT NULL,
    user_id         uuid NOT NULL,
    messages_read   integer NOT NULL,
    read_at         timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
