-- Autovacuum keeps up with the totals' churn.
-- depends: 0014_prices_source_btree
--
-- Every load rewrites each lane-day and region-day total its file touches, and a
-- replacement does so twice (its rows out, the new rows in). With the default settings
-- (vacuum once a fifth of a table is dead) a review that replayed months of re-uploads
-- measured the totals' heaps at 10 times their live size, bounded but mostly dead space
-- that the API's index-only scans step over until a vacuum; vacuumed promptly they stayed
-- at 1.1-1.5 times. So: vacuum after 1 % (plus a floor), and room on lane_totals' pages
-- for an update to stay on its page (a HOT update, no new index entry). region_totals'
-- key carries the sums (0009), so its updates are never HOT: no fillfactor there.

ALTER TABLE lane_totals SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
                             autovacuum_vacuum_threshold = 5000);
ALTER TABLE region_totals SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 5000);
ALTER TABLE prices SET (autovacuum_vacuum_scale_factor = 0.02);
