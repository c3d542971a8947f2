-- The labels index covers labelled conversations only. Every update of a conversation
-- row (each message moves its last activity) added an entry for an empty array to the
-- GIN index's pending list, which the writing projector then had to merge in one long
-- pause. A label filter states `labels <> '{}'` so the planner can use this index.
DROP INDEX rm_conversations_labels;
CREATE INDEX rm_conversations_labels ON rm_conversations USING gin (labels) WHERE labels <> '{}';
