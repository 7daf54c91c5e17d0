-- The prices trigger aggregates a statement's rows once, by lane and day, and derives the
-- region totals from that aggregate instead of from the rows.
-- depends: 0004_totals_lock_order
--
-- Before, each total scanned the transition tables itself, and the region upsert joined
-- every row to ports twice. A file of 1M prices over 75k lanes and days now joins 75k
-- aggregated rows instead of 1M. The data-modifying CTEs run once, in one snapshot, and
-- the version bump still comes first, so the lock order of 0004 is kept.

CREATE OR REPLACE FUNCTION rates_prices_changed() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    added   constant text := 'SELECT orig_code, dest_code, day, price::bigint AS price, 1 AS n FROM new_rows';
    removed constant text := 'SELECT orig_code, dest_code, day, -price::bigint AS price, -1 AS n FROM old_rows';
    delta text;
BEGIN
    UPDATE data_version SET version = version + 1;
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE lane_totals, region_totals;
        RETURN NULL;
    END IF;
    delta := CASE TG_OP WHEN 'INSERT' THEN added
                        WHEN 'DELETE' THEN removed
                        ELSE added || ' UNION ALL ' || removed END;
    -- Transition tables are visible only to statements that this function runs itself.
    EXECUTE format($q$
        WITH lanes AS MATERIALIZED (
            SELECT orig_code, dest_code, day, sum(price)::bigint AS price_sum, sum(n)::integer AS price_count
            FROM (%s) d GROUP BY 1, 2, 3
        ), lane_upsert AS (
            INSERT INTO lane_totals AS t (orig_code, dest_code, day, price_sum, price_count)
            SELECT orig_code, dest_code, day, price_sum, price_count FROM lanes
            ON CONFLICT (orig_code, dest_code, day) DO UPDATE
            SET price_sum = t.price_sum + EXCLUDED.price_sum,
                price_count = t.price_count + EXCLUDED.price_count
        )
        INSERT INTO region_totals AS t (orig_region, dest_region, day, price_sum, price_count)
        SELECT po.parent_slug, pd.parent_slug, l.day, sum(l.price_sum)::bigint, sum(l.price_count)::integer
        FROM lanes l
        JOIN ports po ON po.code = l.orig_code
        JOIN ports pd ON pd.code = l.dest_code
        GROUP BY 1, 2, 3
        ON CONFLICT (orig_region, dest_region, day) DO UPDATE
        SET price_sum = t.price_sum + EXCLUDED.price_sum,
            price_count = t.price_count + EXCLUDED.price_count
    $q$, delta);
    IF TG_OP <> 'INSERT' THEN
        -- A separate statement: it must see the counts that the upserts above left at zero.
        EXECUTE format($q$
            DELETE FROM lane_totals t USING (SELECT DISTINCT orig_code, dest_code, day FROM (%s) d) k
            WHERE t.price_count = 0
              AND (t.orig_code, t.dest_code, t.day) = (k.orig_code, k.dest_code, k.day)
        $q$, removed);
        EXECUTE format($q$
            DELETE FROM region_totals t
            USING (SELECT DISTINCT po.parent_slug AS o, pd.parent_slug AS d, r.day
                   FROM (%s) r JOIN ports po ON po.code = r.orig_code JOIN ports pd ON pd.code = r.dest_code) k
            WHERE t.price_count = 0 AND (t.orig_region, t.dest_region, t.day) = (k.o, k.d, k.day)
        $q$, removed);
    END IF;
    RETURN NULL;
END
$fn$;
