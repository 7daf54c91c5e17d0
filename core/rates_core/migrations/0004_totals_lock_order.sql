-- Writers of prices or ports take the data_version row lock before touching any total.
-- depends: 0002_daily_totals
--
-- The lock is held until commit, so concurrent writers (two ingest jobs, say) update
-- totals one after the other instead of deadlocking on them in different orders, and
-- the upserts no longer sort their keys. Writers were already serialised at the version
-- bump at the end; taking it first only moves the wait ahead of the work.

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
        INSERT INTO lane_totals AS t (orig_code, dest_code, day, price_sum, price_count)
        SELECT orig_code, dest_code, day, sum(price)::bigint, sum(n)::integer
        FROM (%s) d GROUP BY 1, 2, 3
        ON CONFLICT (orig_code, dest_code, day) DO UPDATE
        SET price_sum = t.price_sum + EXCLUDED.price_sum,
            price_count = t.price_count + EXCLUDED.price_count
    $q$, delta);
    EXECUTE format($q$
        INSERT INTO region_totals AS t (orig_region, dest_region, day, price_sum, price_count)
        SELECT po.parent_slug, pd.parent_slug, d.day, sum(d.price)::bigint, sum(d.n)::integer
        FROM (%s) d
        JOIN ports po ON po.code = d.orig_code
        JOIN ports pd ON pd.code = d.dest_code
        GROUP BY 1, 2, 3
        ON CONFLICT (orig_region, dest_region, day) DO UPDATE
        SET price_sum = t.price_sum + EXCLUDED.price_sum,
            price_count = t.price_count + EXCLUDED.price_count
    $q$, delta);
    IF TG_OP <> 'INSERT' THEN
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

CREATE OR REPLACE FUNCTION rates_ports_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
    affected boolean;
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
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM lane_totals WHERE orig_code IN (%1$s) OR dest_code IN (%1$s))',
                   changed) INTO affected;
    IF affected THEN
        PERFORM rates_rebuild_region_totals();
    END IF;
    RETURN NULL;
END
$$;
