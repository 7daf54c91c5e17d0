-- Files loaded by the ingest job, the prices each one brought, and a record of every run.
-- depends: 0002_daily_totals
--
-- A file (one S3 object version) is the unit of truth: loading a new version of a key
-- replaces the prices of the key's earlier version. prices.source_id says which file a
-- row came from; rows that predate ingestion keep it NULL and no load ever touches them.

CREATE TABLE ingest_files (
    id            bigserial   PRIMARY KEY,
    bucket        text        NOT NULL,
    key           text        NOT NULL,
    -- The S3 version id, or the ETag when the bucket is not versioned.
    version       text        NOT NULL,
    last_modified timestamptz,
    rows          bigint      NOT NULL,
    bytes         bigint      NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer version of the key replaced this file's prices.
    replaced_at   timestamptz,
    UNIQUE (bucket, key, version)
);

-- At most one version of a key has its prices in the prices table.
CREATE UNIQUE INDEX ingest_files_current_idx ON ingest_files (bucket, key) WHERE replaced_at IS NULL;

-- Nullable without a default: adding it rewrites nothing. No foreign key, for the same
-- reason that prices has none to ports (per-row checks would slow COPY down); the job
-- writes both rows in one transaction.
ALTER TABLE prices ADD COLUMN source_id bigint;
-- Replacing a file deletes its rows by source_id; rows without a source are not indexed.
CREATE INDEX prices_source_id_idx ON prices (source_id) WHERE source_id IS NOT NULL;

CREATE TABLE ingest_runs (
    id          bigserial   PRIMARY KEY,
    bucket      text        NOT NULL,
    key         text        NOT NULL,
    -- As requested (may be NULL), then as found: the version id and ETag read from S3.
    version_id  text,
    etag        text,
    status      text        NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'loaded', 'already_loaded', 'superseded', 'rejected', 'failed')),
    file_id     bigint      REFERENCES ingest_files (id),
    rows        bigint,
    bytes       bigint,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    error       text,
    -- The first offending rows of a rejected file: [{"line"|"element", "error", "text"}].
    bad_rows    jsonb
);

CREATE INDEX ingest_runs_object_idx ON ingest_runs (bucket, key, started_at DESC);
