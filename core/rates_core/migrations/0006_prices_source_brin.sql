-- prices.source_id gets a BRIN index instead of a B-tree.
-- depends: 0003_ingest
--
-- The B-tree cost as much per loaded row as the heap itself (about 0.7 s per 1M rows
-- here), only so that replacing a file can find its rows. A load appends its rows in
-- one run of pages, so a block-range index finds them almost as well, at a cost per row
-- that does not show in a load. autosummarize lets autovacuum summarise new ranges;
-- until it does, a replacement also scans the ranges not yet summarised, which is
-- slower but still correct.

CREATE INDEX prices_source_id_brin ON prices USING brin (source_id) WITH (autosummarize = on);
DROP INDEX prices_source_id_idx;
