-- transactional: false
-- depends: 0008_truncate_without_blocking_readers
--
-- region_totals' key now carries the sums, so a region query is answered from the index
-- alone (an index-only scan) instead of visiting one heap page per row: a region pair's
-- rows for a year are written by many loads, on pages all over the table. On 10M demo
-- prices a continent-to-continent year went from about 70 ms to 15 ms.
--
-- Built CONCURRENTLY, so reads and loads go on meanwhile (the build waits for loads in
-- progress to end). The swap of the primary key is a short catalog change, but its lock
-- would queue every read behind a load still running: it gives up after 5 s instead, and
-- the migration can simply be run again. So can it after any failure: it starts over.
-- lane_totals keeps its plain key: a port query reads a few dozen rows at most.
-- The build's waits block no one, so they are not cut short by the 2 s lock timeout that
-- rates_core.migrate gives every migration (the build would start over every 2 s).

SET lock_timeout = 0;

DROP INDEX CONCURRENTLY IF EXISTS region_totals_covering;

CREATE UNIQUE INDEX CONCURRENTLY region_totals_covering
    ON region_totals (orig_region, dest_region, day) INCLUDE (price_sum, price_count);

SET lock_timeout = '5s';

ALTER TABLE region_totals
    DROP CONSTRAINT region_totals_pkey,
    ADD CONSTRAINT region_totals_pkey PRIMARY KEY USING INDEX region_totals_covering;

RESET lock_timeout;
