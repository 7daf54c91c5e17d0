-- Take out everything the loads brought, and their records, so that `ratesctl reconcile
-- --send` loads every upload again. Rows from before ingestion (source_id NULL) are in no
-- upload, and stay. One transaction, as the schema's owner:
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -1 -f runbook/sql/reload_all.sql
DELETE FROM prices WHERE source_id IS NOT NULL;
TRUNCATE ingest_runs, ingest_files;
