-- A key's ingest runs, newest first: what each did, and why it did not load.
--   psql "$DATABASE_URL" -v bucket=B -v key='prices/2016/jan.csv' -f runbook/sql/key_runs.sql
-- As the schema's owner or the ingest user (the API's user may not read the runs).
SELECT id, status, version_id, rows, started_at, finished_at, error, bad_rows
FROM ingest_runs
WHERE bucket = :'bucket' AND key = :'key'
ORDER BY started_at DESC
LIMIT 20;
