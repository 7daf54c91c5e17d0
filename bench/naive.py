"""The original system's approach: one query over the raw prices table, no derived data.

It is the benchmark's baseline and the tests' reference answer, so it is written for
obviousness, not speed. As in the API, a name that is both a port code and a region slug
is the port (its region subtree is not searched).
"""

# Grouped once over the matching prices, as a careful hand would write it.
NAIVE_GROUPED = """
WITH RECURSIVE
    o_regions(slug) AS (SELECT %(origin)s WHERE NOT EXISTS (SELECT 1 FROM ports WHERE code = %(origin)s)
                         UNION SELECT r.slug FROM regions r JOIN o_regions t ON r.parent_slug = t.slug),
    d_regions(slug) AS (SELECT %(destination)s WHERE NOT EXISTS (SELECT 1 FROM ports WHERE code = %(destination)s)
                         UNION SELECT r.slug FROM regions r JOIN d_regions t ON r.parent_slug = t.slug)
SELECT d::date, t.average
FROM generate_series(%(date_from)s::date, %(date_to)s::date, interval '1 day') AS d
LEFT JOIN (
    SELECT p.day, CASE WHEN count(*) >= 3 THEN round(avg(p.price)) END AS average
    FROM prices p
    JOIN ports po ON po.code = p.orig_code
    JOIN ports pd ON pd.code = p.dest_code
    WHERE (po.code = %(origin)s OR po.parent_slug IN (SELECT slug FROM o_regions))
      AND (pd.code = %(destination)s OR pd.parent_slug IN (SELECT slug FROM d_regions))
      AND p.day BETWEEN %(date_from)s AND %(date_to)s
    GROUP BY p.day
) AS t ON t.day = d::date
ORDER BY 1
"""


def daily_averages(cur, origin, destination, date_from, date_to):
    cur.execute(NAIVE_GROUPED, {"origin": origin, "destination": destination,
                                "date_from": date_from, "date_to": date_to})
    return [(day.isoformat(), None if avg is None else int(avg)) for day, avg in cur.fetchall()]
