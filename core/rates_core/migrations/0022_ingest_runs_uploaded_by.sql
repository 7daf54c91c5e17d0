-- depends: 0021_loads_hold_their_ports
--
-- Each run records who uploaded its file.
--
-- Nothing did: the controller dropped the uploader that S3's event names, so a security
-- review could not tell which uploader sent a file. Now the controller hands the job S3's
-- userIdentity.principalId (AWS:AIDAEXAMPLE for an IAM user, AWS:AROAEXAMPLE:session-name
-- for a role's session) as S3_UPLOADED_BY, and the job records it as its run starts. NULL
-- where the event names nobody (ratesctl reconcile's, a file set aside before this), and
-- for the runs recorded before it.
--
-- The column is nullable without a default, so adding it rewrites nothing: the lock it
-- takes waits only for the runs' short writes. The ingest user's rights on ingest_runs are
-- the table's (0010), so they cover the new column: no grant, and post-apply.sql is unchanged.

ALTER TABLE ingest_runs ADD COLUMN IF NOT EXISTS uploaded_by text;
