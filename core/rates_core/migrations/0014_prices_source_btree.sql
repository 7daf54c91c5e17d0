-- transactional: false
-- depends: 0013_region_tree_without_cycles
--
-- prices.source_id gets its B-tree back (0003's, partial), in place of 0006's BRIN.
--
-- 0006 counted on a load appending its rows in one run of pages. Once vacuum frees the
-- space of replaced files, loads fill holes all over the table, and a block range's
-- summary only ever widens: after a few rounds of re-uploads, deleting a replaced file
-- read 75 % to all of the table (2M prices: 74-88 ms and more, against 3-4 ms fresh),
-- and it does so inside the totals' lock that every other load waits for. The B-tree
-- costs about 0.5 µs per loaded row, during the COPY, outside that lock.
--
-- Built CONCURRENTLY, as 0009 is (see there): reads and loads go on meanwhile, and after
-- a failure the migration starts over.

SET lock_timeout = 0;

DROP INDEX CONCURRENTLY IF EXISTS prices_source_id_idx;

CREATE INDEX CONCURRENTLY prices_source_id_idx ON prices (source_id) WHERE source_id IS NOT NULL;

DROP INDEX CONCURRENTLY IF EXISTS prices_source_id_brin;

RESET lock_timeout;
