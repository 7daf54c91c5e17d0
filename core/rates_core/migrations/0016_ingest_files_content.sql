-- transactional: false
-- depends: 0015_totals_vacuum_settings
--
-- Each loaded file's SHA-256 (of its bytes as stored in S3), so that a load can say that the
-- same file is loaded under another key. S3 makes a move, a rename or a copy within the
-- prefix a new upload under the new key, and deleting the old key takes nothing out: the
-- file's prices count twice, and nothing said so. Files loaded before this have none.
--
-- The column is nullable without a default, so adding it rewrites nothing; the index is
-- built CONCURRENTLY (loads go on meanwhile), as 0014's is, and started over after a failure.

ALTER TABLE ingest_files ADD COLUMN IF NOT EXISTS sha256 bytea;

SET lock_timeout = 0;

DROP INDEX CONCURRENTLY IF EXISTS ingest_files_current_sha256_idx;

-- The loaded file with these bytes, if any, asked by every load.
CREATE INDEX CONCURRENTLY ingest_files_current_sha256_idx ON ingest_files (bucket, sha256)
    WHERE replaced_at IS NULL AND sha256 IS NOT NULL;

RESET lock_timeout;
