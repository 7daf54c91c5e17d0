-- Which files the API's answer for one day counts: the prices between :'origin' and
-- :'destination' (port codes or region slugs; a name that is both is the port, as for the
-- API) on :'day', by the file that loaded them. A NULL key is rows from before ingestion.
-- sum(price_sum) / sum(prices) over all rows is the day's average (the API needs three
-- prices a day to give one).
--   psql "$DATABASE_URL" -v origin=china -v destination=north_europe -v day=2016-01-01 \
--        -f runbook/sql/answer_sources.sql
-- As the schema's owner: the API's user may not read prices, the ingest user not regions.
WITH RECURSIVE tree (root, slug) AS (
        SELECT slug, slug FROM regions WHERE slug IN (:'origin', :'destination')
    UNION
        SELECT t.root, r.slug FROM regions r JOIN tree t ON r.parent_slug = t.slug
), place (name, code) AS (
        SELECT code, code FROM ports WHERE code IN (:'origin', :'destination')
    UNION
        SELECT t.root, p.code FROM tree t JOIN ports p ON p.parent_slug = t.slug
        WHERE NOT EXISTS (SELECT 1 FROM ports WHERE code = t.root)
)
SELECT f.key, f.version, f.loaded_at, count(*) AS prices, sum(p.price) AS price_sum
FROM prices p
LEFT JOIN ingest_files f ON f.id = p.source_id
WHERE p.day = :'day'::date
  AND p.orig_code IN (SELECT code FROM place WHERE name = :'origin')
  AND p.dest_code IN (SELECT code FROM place WHERE name = :'destination')
GROUP BY f.key, f.version, f.loaded_at
ORDER BY f.key NULLS FIRST;
