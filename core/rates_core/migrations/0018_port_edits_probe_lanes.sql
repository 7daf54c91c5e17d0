-- transactional: false
-- depends: 0017_withdrawn_files
--
-- Adding a port no longer reads all of lane_totals.
--
-- rates_ports_changed (0004) asks whether an edited port has lanes before it rebuilds the
-- region totals. It asked with `orig_code IN (...) OR dest_code IN (...)`, which only a
-- sequential scan answers: 2.4 s at five years of history (9M lane-days) for a port that
-- has no prices at all, the runbook's usual edit, all of it holding the totals' lock that
-- every load's commit waits for. Two probes now, each by an index: the primary key for
-- the origin, a new index on dest_code for the destination. B-tree deduplication keeps it
-- small (a port's code is stored once per leaf page), and a load adds to it only for
-- lane-days new to lane_totals.
--
-- A port with lanes that moves, goes or comes back still rebuilds the region totals:
-- a rebuild is right whichever of two triggers in one statement runs first (a statement
-- may write prices and ports together), and it costs minutes at years of history (see the
-- README: pause ingest first).
--
-- The probes run with sequential scans off: the planner costs an EXISTS as if a match came
-- early, and chose to scan for a port that has no lanes, which is exactly when a scan reads
-- the whole table. Only the probes: the rebuild wants its scans.
--
-- The index is built CONCURRENTLY, as 0014's is: loads go on meanwhile, and after a
-- failure the migration starts over. The function is replaced after it, in a statement
-- of its own.

SET lock_timeout = 0;

DROP INDEX CONCURRENTLY IF EXISTS lane_totals_dest_code_idx;

CREATE INDEX CONCURRENTLY lane_totals_dest_code_idx ON lane_totals (dest_code);

RESET lock_timeout;

CREATE OR REPLACE FUNCTION rates_ports_have_lanes(codes text[]) RETURNS boolean
LANGUAGE sql STABLE SET enable_seqscan = off AS $$
    SELECT EXISTS (SELECT 1 FROM lane_totals WHERE orig_code = ANY (codes))
        OR EXISTS (SELECT 1 FROM lane_totals WHERE dest_code = ANY (codes))
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
