-- depends: 0017_withdrawn_files
--
-- Adding a port no longer reads all of lane_totals.
--
-- rates_ports_changed (0004) asks whether an edited port has lanes before it rebuilds the
-- region totals. It asked with `orig_code IN (...) OR dest_code IN (...)`, which only a
-- sequential scan answers: 2.4 s at five years of history (9M lane-days) for a port that
-- has no prices at all, the runbook's usual edit, all of it holding the totals' lock that
-- every load's commit waits for. Now each side is probed through the primary key
-- (orig_code, dest_code, day): the origin directly, the destination once per distinct
-- origin, which a recursive query walks in the key's order (a loose index scan: one
-- descent per port that has lanes, milliseconds for a thousand ports).
--
-- Not an index on dest_code: it made every load's COPY 1.22x slower where each price is a
-- lane-day of its own (bench/README.md), to save seconds on a rare edit.
--
-- The probes run with sequential scans off: the planner costs an EXISTS as if a match came
-- early, and chose to scan for a port that has no lanes, which is exactly when a scan reads
-- the whole table. Only the probes: the rebuild wants its scans.
--
-- A port with lanes that moves, goes or comes back still rebuilds the region totals:
-- a rebuild is right whichever of two triggers in one statement runs first (a statement
-- may write prices and ports together), and it costs minutes at years of history (see the
-- README: pause ingest first).

CREATE OR REPLACE FUNCTION rates_ports_have_lanes(codes text[]) RETURNS boolean
LANGUAGE sql STABLE SET enable_seqscan = off AS $$
    WITH RECURSIVE origins (code) AS (
            (SELECT orig_code FROM lane_totals ORDER BY orig_code LIMIT 1)
        UNION ALL
            SELECT (SELECT l.orig_code FROM lane_totals l WHERE l.orig_code > o.code ORDER BY l.orig_code LIMIT 1)
            FROM origins o WHERE o.code IS NOT NULL
    )
    SELECT EXISTS (SELECT 1 FROM lane_totals WHERE orig_code = ANY (codes))
        OR EXISTS (SELECT 1 FROM origins o
                   WHERE EXISTS (SELECT 1 FROM lane_totals l WHERE l.orig_code = o.code AND l.dest_code = ANY (codes)))
$$;

CREATE OR REPLACE FUNCTION rates_ports_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
    codes text[];
BEGIN
    UPDATE data_version SET version = version + 1;
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM rates_rebuild_region_totals();
        RETURN NULL;
    END IF;
    changed := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT code FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT code FROM old_rows'
        ELSE 'SELECT code FROM ((SELECT code, parent_slug FROM new_rows EXCEPT SELECT code, parent_slug FROM old_rows)'
             ' UNION ALL (SELECT code, parent_slug FROM old_rows EXCEPT SELECT code, parent_slug FROM new_rows)) c'
    END;
    -- Transition tables are visible only to statements that this function runs itself.
    EXECUTE format('SELECT array_agg(code) FROM (%s) c', changed) INTO codes;
    IF rates_ports_have_lanes(codes) THEN
        PERFORM rates_rebuild_region_totals();
    END IF;
    RETURN NULL;
END
$$;
