-- A command decides on state it loaded, often from a process's cache; another process
-- may have moved that state on meanwhile. Every commit (and every answer that writes
-- nothing) asserts, in the same statement, that what the decision read is still the
-- head of the log, and that the caller's access is what it was when resolved.
-- docs/adr/0004-decisions-on-current-state.md

-- Moves on in the same transaction as every change to a user's credentials, roles or
-- memberships; a resolved principal carries the version it saw.
CREATE TABLE access_versions (
    user_id uuid   PRIMARY KEY,
    version bigint NOT NULL
);

-- Raises, with a code the server maps, unless:
--   IX000  no stream in `own_*` has an event after the version the command decided on;
--   IX001  no stream in `read_*` (read for the decision, not appended) has one either;
--   IX002  every user's access version is the one the request was authorized with.
-- Sequences are contiguous, so "an event at version + 1" is "moved on": one index probe.
CREATE FUNCTION assert_current(
    own_types text[], own_ids text[], own_versions bigint[],
    read_types text[], read_ids text[], read_versions bigint[],
    users uuid[], user_versions bigint[]
) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(own_types, own_ids, own_versions) AS h(t, i, v)
               JOIN events e ON e.aggregate_type = h.t AND e.aggregate_id = h.i AND e.sequence = h.v + 1) THEN
        RAISE EXCEPTION 'a stream the command decided on has moved on' USING ERRCODE = 'IX000';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(read_types, read_ids, read_versions) AS h(t, i, v)
               JOIN events e ON e.aggregate_type = h.t AND e.aggregate_id = h.i AND e.sequence = h.v + 1) THEN
        RAISE EXCEPTION 'a stream the decision read has moved on' USING ERRCODE = 'IX001';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(users, user_versions) AS a(u, v)
               WHERE coalesce((SELECT version FROM access_versions WHERE user_id = a.u), 0) <> a.v) THEN
        RAISE EXCEPTION 'the caller''s access changed' USING ERRCODE = 'IX002';
    END IF;
    RETURN true;
END;
$$;
