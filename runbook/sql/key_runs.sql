-- A key's ingest runs, newest first: what each did, and why it did not load.
--   IFS= read -r KEY    # the key, pasted: an uploader chose it, and it may hold quotes
--   psql "$DATABASE_URL" -v bucket="$BUCKET" -v key="$KEY" -f runbook/sql/key_runs.sql
-- As the schema's owner or the ingest user (the API's user may not read the runs).
SELECT id, status, version_id, uploaded_by, rows, started_at, finished_at, error, bad_rows
FROM ingest_runs
WHERE bucket = :'bucket' AND key = :'key'
ORDER BY started_at DESC
LIMIT 20;
