-- When an agent's upload was first sent with a message (in the message's transaction):
-- uploads never sent are removed after a week (`Attachments::sweep_unsent`).
ALTER TABLE attachment_files ADD COLUMN sent_at timestamptz;
CREATE INDEX attachment_files_unsent ON attachment_files (stored_at)
    WHERE conversation_id IS NOT NULL AND sent_at IS NULL;
