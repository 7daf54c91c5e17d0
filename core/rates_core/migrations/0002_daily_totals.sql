-- Derived daily totals that the API reads instead of scanning prices.
-- depends: 0001_base_tables
--
-- lane_totals:   one row per (origin port, destination port, day).
-- region_totals: one row per (origin port's region, destination port's region, day);
--                a region query sums the rows of every region in the two subtrees.
-- Statement-level triggers with transition tables keep both exact for every write
-- to prices (INSERT, COPY, UPDATE, DELETE, TRUNCATE) inside the writing transaction.
-- data_version counts committed writes, so a cache can tell whether it is stale.

LOCK TABLE prices, ports, regions IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE data_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint  NOT NULL
);
INSERT INTO data_version (singleton, version) VALUES (true, 1);

CREATE TABLE lane_totals (
    orig_code   text    NOT NULL,
    dest_code   text    NOT NULL,
    day         date    NOT NULL,
    price_sum   bigint  NOT NULL,
    price_count integer NOT NULL,
    PRIMARY KEY (orig_code, dest_code, day)
);

CREATE TABLE region_totals (
    orig_region text    NOT NULL,
    dest_region text    NOT NULL,
    day         date    NOT NULL,
    price_sum   bigint  NOT NULL,
    price_count integer NOT NULL,
    PRIMARY KEY (orig_region, dest_region, day)
);

CREATE FUNCTION rates_rebuild_region_totals() RETURNS void LANGUAGE sql AS $$
    DELETE FROM region_totals;
    INSERT INTO region_totals (orig_region, dest_region, day, price_sum, price_count)
    SELECT po.parent_slug, pd.parent_slug, l.day, sum(l.price_sum)::bigint, sum(l.price_count)::integer
    FROM lane_totals l
    JOIN ports po ON po.code = l.orig_code
    JOIN ports pd ON pd.code = l.dest_code
    GROUP BY 1, 2, 3;
$$;

CREATE FUNCTION rates_bump_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE data_version SET version = version + 1;
    RETURN NULL;
END
$$;

-- Adds the signed rows of the statement's transition tables to both totals. The
-- statements must run in the trigger function itself: transition tables are not
-- visible to functions that it calls. Rows are sorted before the upsert so that
-- concurrent writers lock totals in one order.
CREATE FUNCTION rates_prices_changed() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    added   constant text := 'SELECT orig_code, dest_code, day, price::bigint AS price, 1 AS n FROM new_rows';
    removed constant text := 'SELECT orig_code, dest_code, day, -price::bigint AS price, -1 AS n FROM old_rows';
    delta text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE lane_totals, region_totals;
        UPDATE data_version SET version = version + 1;
        RETURN NULL;
    END IF;
    delta := CASE TG_OP WHEN 'INSERT' THEN added
                        WHEN 'DELETE' THEN removed
                        ELSE added || ' UNION ALL ' || removed END;
    EXECUTE format($q$
        INSERT INTO lane_totals AS t (orig_code, dest_code, day, price_sum, price_count)
        SELECT orig_code, dest_code, day, sum(price)::bigint, sum(n)::integer
        FROM (%s) d GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
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
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
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
    UPDATE data_version SET version = version + 1;
    RETURN NULL;
END
$fn$;

-- Region totals are keyed by each port's parent region: when a port that has prices
-- appears, moves or goes, they are rebuilt from lane_totals (a rare, administrative write).
CREATE FUNCTION rates_ports_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
    affected boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        changed := 'SELECT code FROM new_rows';
    ELSIF TG_OP = 'DELETE' THEN
        changed := 'SELECT code FROM old_rows';
    ELSIF TG_OP = 'UPDATE' THEN
        changed := '(SELECT code, parent_slug FROM new_rows EXCEPT SELECT code, parent_slug FROM old_rows)'
                   ' UNION ALL (SELECT code, parent_slug FROM old_rows EXCEPT SELECT code, parent_slug FROM new_rows)';
        changed := 'SELECT code FROM (' || changed || ') c';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        affected := true;
    ELSE
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM lane_totals WHERE orig_code IN (%1$s) OR dest_code IN (%1$s))',
                       changed) INTO affected;
    END IF;
    IF affected THEN
        PERFORM rates_rebuild_region_totals();
    END IF;
    UPDATE data_version SET version = version + 1;
    RETURN NULL;
END
$$;

-- Backfill from the rows already there (an existing ratestask database keeps them).
INSERT INTO lane_totals (orig_code, dest_code, day, price_sum, price_count)
SELECT orig_code, dest_code, day, sum(price)::bigint, count(*)::integer
FROM prices GROUP BY 1, 2, 3;
DO $$ BEGIN PERFORM rates_rebuild_region_totals(); END $$;

CREATE TRIGGER prices_totals_insert AFTER INSERT ON prices
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rates_prices_changed();
CREATE TRIGGER prices_totals_update AFTER UPDATE ON prices
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rates_prices_changed();
CREATE TRIGGER prices_totals_delete AFTER DELETE ON prices
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rates_prices_changed();
CREATE TRIGGER prices_totals_truncate AFTER TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION rates_prices_changed();

CREATE TRIGGER ports_totals_insert AFTER INSERT ON ports
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rates_ports_changed();
CREATE TRIGGER ports_totals_update AFTER UPDATE ON ports
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rates_ports_changed();
CREATE TRIGGER ports_totals_delete AFTER DELETE ON ports
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rates_ports_changed();
CREATE TRIGGER ports_totals_truncate AFTER TRUNCATE ON ports
    FOR EACH STATEMENT EXECUTE FUNCTION rates_ports_changed();

-- The region tree itself is read at query time; a change only makes cached answers stale.
CREATE TRIGGER regions_data_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON regions
    FOR EACH STATEMENT EXECUTE FUNCTION rates_bump_data_version();
