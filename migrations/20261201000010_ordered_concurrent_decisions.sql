-- Two commits in flight at once in different processes: each asserted its reads against
-- its own statement's snapshot, so a removal and an assignment committing in the same
-- instant could both land (write skew). Now a unit takes transaction-scoped advisory
-- locks first, exclusive on what it writes (streams it appends, access it changes) and
-- shared on what it read, in one pass in key order (so two units never wait on each
-- other in a cycle), and only then looks: each statement of a VOLATILE function sees
-- what committed before it ran, so a decision on something another transaction was
-- writing sees that write, and decides again. docs/adr/0004-decisions-on-current-state.md
DROP FUNCTION assert_current(text[], text[], bigint[], text[], text[], bigint[], uuid[], bigint[]);

CREATE OR REPLACE FUNCTION streams_moved_on(types text[], ids text[], versions bigint[])
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
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

CREATE FUNCTION assert_current(
    exclusive bigint[], shared bigint[],
    own_types text[], own_ids text[], own_versions bigint[],
    read_types text[], read_ids text[], read_versions bigint[],
    users uuid[], user_versions bigint[]
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lock_key bigint;
    writes boolean;
BEGIN
    FOR lock_key, writes IN
        SELECT k, bool_or(x) FROM (SELECT unnest(exclusive) AS k, true AS x
                                   UNION ALL SELECT unnest(shared), false) wanted
        GROUP BY k ORDER BY k
    LOOP
        IF writes THEN
            PERFORM pg_advisory_xact_lock(lock_key);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(lock_key);
        END IF;
    END LOOP;
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
