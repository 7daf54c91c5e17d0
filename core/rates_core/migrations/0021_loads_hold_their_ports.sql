-- depends: 0020_ports_keep_their_code
--
-- A load holds the ports it validated its file against until it commits.
--
-- The ingest job read the known codes with a plain SELECT before its COPY. A port deleted
-- (or, before 0020, given another code) while a file naming it loaded left the file
-- "loaded", its rows under a code no port has: counted nowhere, though the file should
-- have been rejected for an unknown port (a review reproduced it 3 times in 3). Now the
-- codes are read with FOR KEY SHARE: a DELETE of a port, or a change of its code, waits
-- for the loads in progress, and a load that starts after it finds the port gone. Moving
-- a port (parent_slug) takes a weaker row lock, which KEY SHARE does not block.
--
-- Through a function that runs as the owner, since a row lock needs UPDATE on the table,
-- which rates_ingest must not have; only it may run it.

CREATE FUNCTION rates_ports_for_load() RETURNS SETOF text
    LANGUAGE sql
    SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
    SELECT code FROM ports FOR KEY SHARE
$$;

REVOKE EXECUTE ON FUNCTION rates_ports_for_load() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rates_ports_for_load() TO rates_ingest;
