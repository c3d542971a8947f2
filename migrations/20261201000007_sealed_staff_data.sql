-- The people who work in an account are data subjects too: a member's and a login's
-- name and e-mail are sealed in the log with their own data key, as a contact's
-- details are, so erasing a former agent shreds them. Data keys are one table for
-- every kind of subject.
ALTER TABLE contact_keys RENAME TO data_keys;
ALTER TABLE data_keys RENAME COLUMN contact_id TO subject_id;
ALTER TABLE data_keys RENAME CONSTRAINT contact_keys_pkey TO data_keys_pkey;

-- Activity lines name people by id; the timeline stores the line's structure and it
-- is rendered, when read, with the names below. Lines recorded before keep their text.
ALTER TABLE rm_messages ADD COLUMN activity jsonb;

-- Projector `directory`: the name each person had in each account they worked in,
-- kept after they leave (their lines still name them) and dropped when erased.
CREATE TABLE rm_people (
    account_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    name       text NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
INSERT INTO rm_people (account_id, user_id, name) SELECT account_id, user_id, name FROM rm_agents;
