-- TRUNCATE prices empties the totals with DELETE, so readers are not blocked.
-- depends: 0005_totals_single_pass 0007_ingest_runs_running
--
-- The trigger used to TRUNCATE lane_totals and region_totals, which holds an ACCESS
-- EXCLUSIVE lock on both until commit: an administrator's "TRUNCATE prices, then reload"
-- in one transaction stopped every API read for the whole reload. With DELETE, readers
-- keep seeing the committed totals until the new ones commit. The version bump still
-- comes first, in the lock order of 0004. (The TRUNCATE branch of rates_prices_changed
-- is no longer reached.)

CREATE FUNCTION rates_prices_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE data_version SET version = version + 1;
    DELETE FROM lane_totals;
    DELETE FROM region_totals;
    RETURN NULL;
END
$$;

DROP TRIGGER prices_totals_truncate ON prices;
CREATE TRIGGER prices_totals_truncate AFTER TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION rates_prices_truncated();
