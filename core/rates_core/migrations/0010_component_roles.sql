-- Database users of their own for the API (read-only) and the ingest job, so that
-- neither connects as the owner of the schema.
-- depends: 0009_region_totals_covering_key
--
-- Roles belong to the server, not to one database, so another database there may have
-- made them already. They have no password: on RDS they log in with IAM tokens (the
-- rds_iam role, granted where it exists, which is only on RDS); elsewhere as pg_hba.conf
-- allows (trust or peer on a developer's machine, where nothing else is needed).
-- A later migration that adds a table grants it to whichever of them needs it; the test
-- suites run the API and the ingest job as these users, so a missing grant fails them.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_api') THEN
        CREATE ROLE rates_api LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rates_ingest') THEN
        CREATE ROLE rates_ingest LOGIN;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO rates_api, rates_ingest;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO rates_api, rates_ingest;

-- The API answers from the region tree and the derived totals; data_version keys its cache.
GRANT SELECT ON regions, ports, lane_totals, region_totals, data_version TO rates_api;

-- The ingest job validates codes against ports, records files and runs, and writes and
-- deletes (on replacement) a file's prices; it never changes ports or regions.
GRANT SELECT ON ports TO rates_ingest;
GRANT SELECT, INSERT, DELETE ON prices TO rates_ingest;
GRANT SELECT, INSERT, UPDATE ON ingest_files, ingest_runs TO rates_ingest;
GRANT USAGE ON SEQUENCE ingest_files_id_seq, ingest_runs_id_seq TO rates_ingest;

-- The prices trigger keeps the totals and data_version as the schema's owner, so the
-- ingest job has no right on them: it can change what the API serves only through
-- prices, the way the totals follow. A definer's function gets a fixed search_path, with
-- pg_temp last, so that no caller's temporary table can stand in for one of its tables.
ALTER FUNCTION rates_prices_changed() SECURITY DEFINER SET search_path = public, pg_temp;
-- And only prices' own triggers may run it: EXECUTE is checked when a trigger is made, so
-- without this revoke any user could attach it to a temporary table of its own and feed
-- it rows that exist nowhere, as the owner.
REVOKE EXECUTE ON FUNCTION rates_prices_changed() FROM PUBLIC;
