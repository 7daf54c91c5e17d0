-- transactional: false
-- depends: 0016_ingest_files_content
--
-- A loaded file whose prices the schema's owner took out (`ratesctl withdraw`).
--
-- Deleting an object takes nothing out (the uploads queue gets ObjectCreated events only),
-- and no upload can empty a key, so a file that should never have loaded stayed counted.
-- A withdrawn file stays its key's current file, without prices: a redelivered or late
-- event for it, or for an older version, is still skipped rather than loaded again, and
-- the key's next upload replaces it as any file is replaced. The withdrawal is a run of
-- its own in ingest_runs (status 'withdrawn', the reason in `error`), beside the key's loads;
-- the file keeps the reason too, for the runs that skip it (old runs may be pruned).
--
-- Not one transaction, so that checking ingest_runs' rows against the new constraint (a
-- scan) does not hold the lock that adding it takes: loads go on recording their runs.
-- Each statement can run again after a failure.

ALTER TABLE ingest_files ADD COLUMN IF NOT EXISTS withdrawn_at timestamptz,
                         ADD COLUMN IF NOT EXISTS withdrawn_reason text;

ALTER TABLE ingest_runs
    DROP CONSTRAINT IF EXISTS ingest_runs_status_check,
    ADD CONSTRAINT ingest_runs_status_check
        CHECK (status IN ('running', 'loaded', 'already_loaded', 'superseded', 'rejected', 'failed', 'withdrawn'))
        NOT VALID;

ALTER TABLE ingest_runs VALIDATE CONSTRAINT ingest_runs_status_check;
