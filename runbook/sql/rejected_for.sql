-- The keys whose latest run was rejected naming :'code' (an unknown port, say) in its error
-- or in any of its first offending rows, to load again once the cause is fixed.
--   psql "$DATABASE_URL" -v bucket=B -v code=ZZZZZ -f runbook/sql/rejected_for.sql
SELECT key, version_id, finished_at, error
FROM (SELECT DISTINCT ON (key) key, version_id, status, finished_at, error, bad_rows
      FROM ingest_runs
      WHERE bucket = :'bucket' AND status <> 'running'
      ORDER BY key, id DESC) AS latest
WHERE status = 'rejected' AND strpos(error || coalesce(bad_rows::text, ''), :'code') > 0
ORDER BY key;
