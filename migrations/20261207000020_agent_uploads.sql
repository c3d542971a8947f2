-- Files agents upload to a conversation, to send with a reply (`uploadAttachment`,
-- then `sendMessage(attachmentIds)`): kept like a contact's files, sealed with the
-- contact's key, and named to the conversation they may be sent in.
ALTER TABLE attachment_files
    ADD COLUMN conversation_id uuid,
    ADD COLUMN uploaded_by     uuid,
    ADD COLUMN file_type       text,
    -- The file's name as uploaded, sealed with the contact's key (it may name them).
    ADD COLUMN file_name       bytea;
