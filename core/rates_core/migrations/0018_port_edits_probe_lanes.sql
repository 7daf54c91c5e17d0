-- depends: 0017_withdrawn_files
--
-- Editing a port costs what the edit touches, not the whole history.
--
-- rates_ports_changed (0004) asked whether an edited port has lanes with
-- `orig_code IN (...) OR dest_code IN (...)`, which only a sequential scan answers, and if
-- so rebuilt all of region_totals. At five years of history (18M prices, 9M lane-days,
-- 6.8M region totals) adding a port with no prices, the runbook's usual edit, took 2.4 s,
-- and moving a port with prices 5.6 min, all of it holding the totals' lock that every
-- load's commit waits for.
--
-- Whether a port has lanes: each side is probed through the primary key (orig_code,
-- dest_code, day), the origin directly, the destination once per distinct origin, which a
-- recursive query walks in the key's order (a loose index scan: one descent per port that
-- has lanes, milliseconds for a thousand ports). Not an index on dest_code: it made a
-- sparse load's COPY 1.22x slower (bench/README.md), to save seconds on a rare edit. The
-- probes run with sequential scans off: the planner costs an EXISTS as if a match came
-- early, and chose to scan for a port that has no lanes, exactly when a scan reads the
-- whole table. A port with no lanes then only bumps data_version.
--
-- A port with lanes that moves, goes or comes back: with C the edited codes and R the
-- regions they left or joined (old_rows' parents and the current parents of C), every
-- region total with a region of R on either side is computed again from the lanes of the
-- ports now in R (and of C), and written only where its value changed; the others are
-- left alone. The cost follows the lanes of the two regions, not the whole history.
-- Measured on one database each, the rebuild against this (medians of 3, on a busy 2-core
-- machine): with the bench's world of 10 regions (1M prices, 1M lane-days, 36k region
-- totals; R holds a fifth of the ports and 36% of the lanes), 0.71 s -> 0.38 s; with 100
-- regions (3M prices over 1,000 ports, 3M lane-days, 2M region totals, about as many
-- region totals per lane-day as at five years), 50 s -> 2.8 s: 2M rows deleted and
-- inserted before, 11k written now. Not measured at five years.
--
-- Why a recomputation of R's totals and not a delta of C's lanes (subtract them from the
-- old parents, add them to the new): one statement may write ports and prices together
-- (data-modifying CTEs), and the prices trigger may run first. It has then added its
-- delta under the new parents already, and deleted the lanes it brought to zero, so a
-- delta from the lanes left would count those prices twice or miss them. A recomputation
-- is right in either order:
--   - A total with no region of R on either side: the ports under its two regions are
--     the same before and after (every port that changed region is in C, and both its
--     regions are in R), so it was right and the prices trigger keeps it so, whichever
--     runs first.
--   - A total (a, b, day) with a or b in R: every lane that adds to it has an end in a
--     port whose parent is now in R, so it is in the lanes read, which are read after
--     every change of the statement to ports and, if the prices trigger ran first, to
--     lane_totals. If it runs after, it adds its delta under the same, current, parents.
--   - A row of R that should go (no lane adds to it any more) is found from region_totals
--     itself, not from the lanes: the prices trigger may have deleted the lane that made
--     it, and left a row at (old parent, ...) and a negative one at (new parent, ...).
--     Rows with orig_region in R are read by the primary key's prefix; rows with
--     dest_region in R by the key's first two columns, one probe for each region of
--     regions with each of R. A row's orig_region is the parent of a port under the old
--     or the new ports: a region still in regions (ports' foreign key), or else one that
--     a port of C left, which is in R and read by the prefix. No index is added: the
--     lanes to the ports in R are found as the probe finds them, by walking the origins,
--     and the refresh, too, runs with sequential scans off.
-- The upsert and the delete run in one statement on disjoint keys (the delete takes only
-- keys not computed again), so no key is deleted and inserted by one statement.
--
-- TRUNCATE ports still rebuilds. The lock order of 0004 is kept: data_version's row
-- first, then the totals.
-- A known limit, as before 0018: one statement that edits a port and leaves it no lanes
-- (deletes every price of it, or points them at another code, as it moves or goes), with
-- the prices trigger running first, leaves the probe no lanes to find, and the totals of
-- the port's old region stale (tests/schema/test_totals_property.py does not generate it;
-- edit ports and prices in separate statements).

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

-- Computes again every region total with a region of `touched` on either side, given that
-- the ports that left or joined them are among `codes`; writes only what changed.
CREATE FUNCTION rates_refresh_region_totals(codes text[], touched text[]) RETURNS void
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    under text[];  -- the ports whose lanes make every total of the regions touched
BEGIN
    SELECT array_agg(code) INTO under
    FROM (SELECT code FROM ports WHERE parent_slug = ANY (touched) UNION SELECT unnest(codes)) p;
    WITH RECURSIVE origins (code) AS (  -- every origin of a lane, by the key (see above)
            (SELECT orig_code FROM lane_totals ORDER BY orig_code LIMIT 1)
        UNION ALL
            SELECT (SELECT l.orig_code FROM lane_totals l WHERE l.orig_code > o.code ORDER BY l.orig_code LIMIT 1)
            FROM origins o WHERE o.code IS NOT NULL
    ), lanes AS (
        SELECT * FROM lane_totals WHERE orig_code = ANY (under)
        UNION ALL
        SELECT l.* FROM origins o JOIN lane_totals l ON l.orig_code = o.code AND l.dest_code = ANY (under)
        WHERE NOT o.code = ANY (under)
    ), fresh AS MATERIALIZED (  -- each has a region touched on one side: a lane's end in `under`
                                -- is now under one, or no longer a port and joins nothing
        SELECT po.parent_slug AS orig_region, pd.parent_slug AS dest_region, l.day,
               sum(l.price_sum)::bigint AS price_sum, sum(l.price_count)::integer AS price_count
        FROM lanes l
        JOIN ports po ON po.code = l.orig_code
        JOIN ports pd ON pd.code = l.dest_code
        GROUP BY 1, 2, 3
    ), stored AS (  -- the rows there now with a region touched, by the primary key
        SELECT orig_region, dest_region, day FROM region_totals WHERE orig_region = ANY (touched)
        UNION
        SELECT orig_region, dest_region, day FROM region_totals
        WHERE orig_region = ANY (ARRAY(SELECT slug FROM regions)) AND dest_region = ANY (touched)
    ), gone AS (
        DELETE FROM region_totals t
        USING (SELECT * FROM stored EXCEPT SELECT orig_region, dest_region, day FROM fresh) s
        WHERE (t.orig_region, t.dest_region, t.day) = (s.orig_region, s.dest_region, s.day)
    )
    INSERT INTO region_totals AS t (orig_region, dest_region, day, price_sum, price_count)
    SELECT * FROM fresh
    ON CONFLICT (orig_region, dest_region, day) DO UPDATE
    SET price_sum = EXCLUDED.price_sum, price_count = EXCLUDED.price_count
    WHERE (t.price_sum, t.price_count) IS DISTINCT FROM (EXCLUDED.price_sum, EXCLUDED.price_count);
END
$$;

CREATE OR REPLACE FUNCTION rates_ports_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;  -- (code, parent_slug) of the rows the statement added, changed or took away
    codes text[];
    touched text[];
BEGIN
    UPDATE data_version SET version = version + 1;
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM rates_rebuild_region_totals();
        RETURN NULL;
    END IF;
    changed := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT code, parent_slug FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT code, parent_slug FROM old_rows'
        ELSE '(SELECT code, parent_slug FROM new_rows EXCEPT SELECT code, parent_slug FROM old_rows)'
             ' UNION ALL (SELECT code, parent_slug FROM old_rows EXCEPT SELECT code, parent_slug FROM new_rows)'
    END;
    -- Transition tables are visible only to statements that this function runs itself.
    EXECUTE format('SELECT array_agg(DISTINCT code), array_agg(DISTINCT parent_slug) FROM (%s) c', changed)
        INTO codes, touched;
    IF rates_ports_have_lanes(codes) THEN
        -- The regions left (above) and joined: the current parents of the codes.
        SELECT array_agg(DISTINCT r) INTO touched
        FROM (SELECT unnest(touched) UNION SELECT parent_slug FROM ports WHERE code = ANY (codes)) t(r);
        PERFORM rates_refresh_region_totals(codes, touched);
    END IF;
    RETURN NULL;
END
$$;
