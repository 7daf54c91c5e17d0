-- The database users and their rights, made again where a database has lost them.
--
-- yoyo runs this after every `migrate`, also when no migration is pending (its post-apply
-- hook); it is recorded nowhere and may change from release to release.
--
-- Roles belong to the server, not to a database, so a logical dump carries neither them
-- nor, once they are missing, a single grant to them. Restored into a new server (a new
-- RDS instance), pg_restore failed every GRANT, the REVOKE from PUBLIC beside one with it,
-- and `migrate` had nothing to apply: the API could not log in, and once its user was
-- made by hand every query was refused. Now the next `migrate` (each deploy's hook) makes
-- the users and gives them the rights the migrations gave (0010-0012, 0021); the runbook's
-- restore procedure ends with it.
--
-- Where the users hold their rights (every database but a restored one) it grants nothing:
-- only when one of them lacks its first right (the API's SELECT on data_version, the
-- ingest job's INSERT on ingest_runs, both from 0010 and never taken back). An older
-- release's text, run against a newer schema, thus never gives back a right a newer
-- migration took away. A migration that changes a right changes it here too:
-- tests/schema/test_restore.py compares a restored database with a migrated one.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_api') THEN
        CREATE ROLE rates_api LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_ingest') THEN
        CREATE ROLE rates_ingest LOGIN;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam')
       AND NOT (pg_has_role('rates_api', 'rds_iam', 'MEMBER') AND pg_has_role('rates_ingest', 'rds_iam', 'MEMBER')) THEN
        GRANT rds_iam TO rates_api, rates_ingest;
    END IF;
    IF has_table_privilege('rates_api', 'public.data_version', 'SELECT')
       AND has_table_privilege('rates_ingest', 'public.ingest_runs', 'INSERT') THEN
        RETURN;
    END IF;
    -- (rates_core.migrate logs that it comes to this: a notice here would reach no log.)

    GRANT USAGE ON SCHEMA public TO rates_api, rates_ingest;
    GRANT SELECT ON regions, ports, lane_totals, region_totals, data_version TO rates_api;
    GRANT SELECT ON ports TO rates_ingest;
    GRANT SELECT, INSERT ON prices TO rates_ingest;
    GRANT SELECT, INSERT, UPDATE ON ingest_files, ingest_runs TO rates_ingest;
    GRANT USAGE ON SEQUENCE ingest_files_id_seq, ingest_runs_id_seq TO rates_ingest;
    REVOKE EXECUTE ON FUNCTION rates_prices_changed() FROM PUBLIC;
    REVOKE EXECUTE ON FUNCTION rates_delete_replaced_file(bigint) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION rates_delete_replaced_file(bigint) TO rates_ingest;
    REVOKE EXECUTE ON FUNCTION rates_ports_for_load() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION rates_ports_for_load() TO rates_ingest;
END
$$;
