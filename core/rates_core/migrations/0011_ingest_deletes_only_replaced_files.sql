-- The ingest job deletes prices only as the file that loaded them is replaced.
-- depends: 0010_component_roles
--
-- With DELETE on prices, rates_ingest could also remove the rows that predate ingestion
-- (source_id NULL), which no load can bring back. Row-level security would confine it,
-- but PostgreSQL refuses COPY into a table with row-level security, so the delete goes
-- through this function instead, as the schema's owner, and only for a file already
-- marked replaced: a file's rows stay until a newer version of its key has taken over.

CREATE FUNCTION rates_delete_replaced_file(file_id bigint) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    deleted bigint;
BEGIN
    PERFORM FROM ingest_files WHERE id = file_id AND replaced_at IS NOT NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ingest file % is not a replaced file; its prices stay', file_id
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
