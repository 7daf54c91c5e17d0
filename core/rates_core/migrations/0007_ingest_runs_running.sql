-- Finds the runs still marked running, which each new run checks for abandoned ones.
-- depends: 0003_ingest

CREATE INDEX ingest_runs_running_idx ON ingest_runs (id) WHERE status = 'running';
