-- The keys whose latest run was rejected naming :'code' (an unknown port, say) in its error
-- or in any of its first offending rows, to load again once the cause is fixed.
--   psql "$DATABASE_URL" -v bucket=B -v code=ZZZZZ -f runbook/sql/rejected_for.sql
-- From the rejected runs that name it, each kept if no run of its key finished after it:
-- the runs of every key, in order, would be read otherwise (13 s at 1.9M runs).
SELECT r.key, r.version_id, r.finished_at, r.error
FROM ingest_runs r
WHERE r.bucket = :'bucket' AND r.status = 'rejected'
  AND strpos(r.error || coalesce(r.bad_rows::text, ''), :'code') > 0
  AND NOT EXISTS (SELECT 1 FROM ingest_runs later
                  WHERE later.bucket = r.bucket AND later.key = r.key AND later.id > r.id
                    AND later.status <> 'running')
ORDER BY r.key;
