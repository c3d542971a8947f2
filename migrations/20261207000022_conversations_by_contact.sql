-- The conversations of a contact: which inboxes a contact wrote to (what an agent may
-- see of a customer: the live feed's pushes, the agent's contact list) is read by
-- contact, and without this index each read scanned every conversation.
CREATE INDEX rm_conversations_contact ON rm_conversations (contact_id, inbox_id);
