"""The example requests of `up`'s banner, from the data the database holds (whatever
--ports, --days and --start said, and whether or not `up` loaded it): the busiest lane
over up to a week from its first day with an average, and the same days between regions
above its two ports."""

from urllib.parse import urlencode

from rates_api.queries import MIN_PRICES
from rates_core import db

# The days of an example request, at most.
EXAMPLE_DAYS = 7

# The lane between two known ports (a code with no port answers unknown_location) with the
# most days that have an average, then the most prices; its first day with an average (or
# with prices, on a lane with no average anywhere).
_BUSIEST_LANE = """
SELECT l.orig_code, l.dest_code,
       coalesce(min(l.day) FILTER (WHERE l.price_count >= %(min_prices)s), min(l.day))
FROM lane_totals l
JOIN ports po ON po.code = l.orig_code
JOIN ports pd ON pd.code = l.dest_code
GROUP BY l.orig_code, l.dest_code
ORDER BY count(*) FILTER (WHERE l.price_count >= %(min_prices)s) DESC, sum(l.price_count) DESC,
         l.orig_code, l.dest_code
LIMIT 1
"""

# The lane's last day with prices within the example's days from the first.
_LAST_DAY = """
SELECT max(day) FROM lane_totals
WHERE orig_code = %(orig)s AND dest_code = %(dest)s AND day BETWEEN %(first)s AND %(first)s::date + %(span)s
"""

# For each of the two ports, the regions above it, its own first.
_REGIONS_ABOVE = """
WITH RECURSIVE above(code, slug, parent_slug, depth) AS (
        SELECT p.code, r.slug, r.parent_slug, 0
        FROM ports p JOIN regions r ON r.slug = p.parent_slug
        WHERE p.code IN (%(orig)s, %(dest)s)
    UNION ALL
        SELECT a.code, r.slug, r.parent_slug, a.depth + 1
        FROM above a JOIN regions r ON r.slug = a.parent_slug
        WHERE a.depth < 1000  -- (migration 0013 refuses a cycle; this would end one anyway)
)
SELECT code, array_agg(slug ORDER BY depth) FROM above GROUP BY code
"""


def requests(dsn: str) -> list[str]:
    """The query strings of /rates to show: a lane's and its regions', or none if no prices
    between known ports are loaded."""
    conn = db.connect(dsn, application_name="ratesctl")
    try:
        with db.classified(), conn, conn.cursor() as cur:
            cur.execute(_BUSIEST_LANE, {"min_prices": MIN_PRICES})
            lane = cur.fetchone()
            if lane is None:
                return []
            orig, dest, first = lane
            cur.execute(_LAST_DAY, {"orig": orig, "dest": dest, "first": first, "span": EXAMPLE_DAYS - 1})
            days = {"date_from": first, "date_to": cur.fetchone()[0]}
            cur.execute(_REGIONS_ABOVE, {"orig": orig, "dest": dest})
            above = dict(cur.fetchall())
    finally:
        conn.close()
    return [urlencode({**days, "origin": orig, "destination": dest}),
            urlencode({**days, "origin": _apart(above[orig], above[dest]),
                       "destination": _apart(above[dest], above[orig])})]


def _apart(regions: list[str], others: list[str]) -> str:
    """The highest of ``regions`` (a port's, its own first) that is not above the other port
    too (asia and europe, not the world above both); the port's own region if there is none.
    Either covers the port, so a region request has prices on every day the lane has."""
    apart = [region for region in regions if region not in others]
    return apart[-1] if apart else regions[0]
