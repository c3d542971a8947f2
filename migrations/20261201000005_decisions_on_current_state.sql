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

-- Whether any of the streams has an event after the version given for it. Sequences
-- are contiguous, so "an event at version + 1" is "moved on": one primary-key probe
-- per stream, each a cached plan (a join against `unnest` of the arrays cost about
-- ten times as much per call in the ingest benchmark).
CREATE FUNCTION streams_moved_on(types text[], ids text[], versions bigint[])
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    FOR n IN 1..coalesce(cardinality(ids), 0) LOOP
        IF EXISTS (SELECT 1 FROM events WHERE aggregate_type = types[n] AND aggregate_id = ids[n]
                   AND sequence = versions[n] + 1) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END;
$$;

-- Raises, with a code the server maps, unless:
--   IX000  no stream in `own_*` has moved on since the version the command decided on;
--   IX001  no stream in `read_*` (read for the decision, not appended) has either;
--   IX002  every user's access version is the one the request was authorized with.
CREATE FUNCTION assert_current(
    own_types text[], own_ids text[], own_versions bigint[],
    read_types text[], read_ids text[], read_versions bigint[],
    users uuid[], user_versions bigint[]
) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF streams_moved_on(own_types, own_ids, own_versions) THEN
        RAISE EXCEPTION 'a stream the command decided on has moved on' USING ERRCODE = 'IX000';
    END IF;
    IF streams_moved_on(read_types, read_ids, read_versions) THEN
        RAISE EXCEPTION 'a stream the decision read has moved on' USING ERRCODE = 'IX001';
    END IF;
    FOR n IN 1..coalesce(cardinality(users), 0) LOOP
        IF coalesce((SELECT version FROM access_versions WHERE user_id = users[n]), 0) <> user_versions[n] THEN
            RAISE EXCEPTION 'the caller''s access changed' USING ERRCODE = 'IX002';
        END IF;
    END LOOP;
    RETURN true;
END;
$$;
