-- depends: 0018_port_edits_probe_lanes
--
-- Every function of the schema finds its tables in public, whatever the caller's
-- search_path.
--
-- The definer functions fixed theirs (0010-0013); these others took the caller's. pg_dump
-- and pg_restore set an empty search_path, so loading a data-only dump of regions and
-- ports (the README's way to bring the reference data back after a rebuild) failed in
-- their triggers: `relation "data_version" does not exist`, then the ports' foreign key,
-- and nothing loaded. Without a superuser (RDS has none) the triggers cannot be turned off
-- for the load, and the totals must follow it anyway.
--
-- ALTER ... SET replaces only search_path: enable_seqscan=off of the two probes stays.
-- All of them are statement-level, or called once per statement, so the setting's cost is
-- once per statement, not per row.

ALTER FUNCTION rates_bump_data_version() SET search_path = public, pg_temp;
ALTER FUNCTION rates_ports_changed() SET search_path = public, pg_temp;
ALTER FUNCTION rates_prices_truncated() SET search_path = public, pg_temp;
ALTER FUNCTION rates_rebuild_region_totals() SET search_path = public, pg_temp;
ALTER FUNCTION rates_ports_have_lanes(text[]) SET search_path = public, pg_temp;
ALTER FUNCTION rates_refresh_region_totals(text[], text[]) SET search_path = public, pg_temp;
