-- The files withdrawn and still their keys' current ones: their objects must be deleted
-- (or moved out of the prefix) before loading everything again, or they load again; and
-- the record of them is gone once reload_all.sql has run.
--   psql "$DATABASE_URL" -v bucket=B -f runbook/sql/withdrawn.sql
SELECT key, version, withdrawn_at, withdrawn_reason
FROM ingest_files
WHERE bucket = :'bucket' AND withdrawn_at IS NOT NULL AND replaced_at IS NULL
ORDER BY key;
