-- The database users' rights and the definer functions as 0010 and 0011 now leave them,
-- also where earlier texts of those two migrations were applied.
-- depends: 0011_ingest_deletes_only_replaced_files
--
-- 0010 and 0011 were changed after some databases had applied them, and yoyo knows a
-- migration by its id, not its text: such a database kept the earlier state. Depending on
-- which text it met, rates_ingest could still write the totals and data_version itself,
-- any user could attach the definer trigger function to a table of its own, or the
-- delete function asked only for a replaced mark. Everything here is a no-op on a database
-- that applied the texts as they are now. tests/schema/test_upgrades.py pins every
-- migration's text from now on, so that none is changed after it ships again.

REVOKE ALL ON lane_totals, region_totals, data_version FROM rates_ingest;

ALTER FUNCTION rates_prices_changed() SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION rates_prices_changed() FROM PUBLIC;

CREATE OR REPLACE FUNCTION rates_delete_replaced_file(file_id bigint) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    deleted bigint;
BEGIN
    PERFORM FROM ingest_files old JOIN ingest_files newer USING (bucket, key)
    WHERE old.id = file_id AND old.replaced_at IS NOT NULL
      AND newer.replaced_at IS NULL AND newer.id > old.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ingest file % is not replaced by a newer file of its key; its prices stay', file_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM prices WHERE source_id = file_id;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

REVOKE EXECUTE ON FUNCTION rates_delete_replaced_file(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rates_delete_replaced_file(bigint) TO rates_ingest;
REVOKE DELETE ON prices FROM rates_ingest;
