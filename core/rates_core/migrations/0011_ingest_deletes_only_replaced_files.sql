-- The ingest job deletes prices only as the file that loaded them is replaced.
-- depends: 0010_component_roles
--
-- With DELETE on prices, rates_ingest could also remove the rows that predate ingestion
-- (source_id NULL), which no load can bring back. Row-level security would confine it,
-- but PostgreSQL refuses COPY into a table with row-level security, so the delete goes
-- through this function instead, as the schema's owner: only a loaded file's rows, and only
-- once a newer file of the same key is recorded as current. (rates_ingest records files
-- itself, so that check keeps the loader honest rather than bounding the user; the bound
-- is that rows without a file are out of its reach.)

CREATE FUNCTION rates_delete_replaced_file(file_id bigint) RETURNS bigint
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
