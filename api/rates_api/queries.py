"""The SQL behind /rates. Every statement is parameterised.

Both ends are first resolved to sets: a port is itself, a region is every region of
its subtree (and, when the other end is a port, every port in that subtree). The
daily sums and counts then come from the derived totals that triggers keep exact:
region_totals when both ends are regions, lane_totals otherwise.
"""

from dataclasses import dataclass
from datetime import date

_RESOLVE = """
WITH RECURSIVE tree(root, slug) AS (
        SELECT slug, slug FROM regions WHERE slug IN (%(origin)s, %(destination)s)
    UNION
        SELECT t.root, r.slug FROM regions r JOIN tree t ON r.parent_slug = t.slug
)
SELECT n.name,
       EXISTS (SELECT 1 FROM ports WHERE code = n.name),
       (SELECT array_agg(slug) FROM tree WHERE root = n.name),
       (SELECT array_agg(p.code) FROM tree t JOIN ports p ON p.parent_slug = t.slug WHERE t.root = n.name)
FROM unnest(ARRAY[%(origin)s, %(destination)s]::text[]) AS n(name)
"""

# The storage files of the tables an answer reads. A TRUNCATE or a table-rewriting ALTER
# (a migration refilling the totals, an owner reseeding ports) gives a table new ones, and
# is not MVCC-safe: a snapshot from before its commit reads the new files as empty. Read
# before the snapshot and after the answer, they tell such an answer (see rates._compute).
# Locking the tables first instead would queue every request behind any pending ACCESS
# EXCLUSIVE lock on any of them, even one the request does not read.
_FILES = ("ARRAY[pg_relation_filenode('regions'), pg_relation_filenode('ports'),"
          " pg_relation_filenode('lane_totals'), pg_relation_filenode('region_totals')]::text")

# The days are date + integer: generate_series over dates would step in timestamptz, so in
# a session time zone whose daylight saving starts at midnight the last day would be lost.
_DAILY = """
SELECT d, CASE WHEN t.n >= %(min_prices)s THEN round(t.s / t.n) END
FROM (SELECT %(date_from)s::date + i AS d
      FROM generate_series(0, %(date_to)s::date - %(date_from)s::date) AS i) AS days
LEFT JOIN (
    SELECT day, sum(price_sum)::numeric AS s, sum(price_count) AS n
    FROM {table}
    WHERE {orig} = ANY(%(origins)s) AND {dest} = ANY(%(destinations)s)
      AND day BETWEEN %(date_from)s AND %(date_to)s
    GROUP BY day
) AS t ON t.day = days.d
ORDER BY 1
"""
DAILY_BY_LANE = _DAILY.format(table="lane_totals", orig="orig_code", dest="dest_code")
DAILY_BY_REGION = _DAILY.format(table="region_totals", orig="orig_region", dest="dest_region")

# Fewer prices than this on a day make its average meaningless, so it is null.
MIN_PRICES = 3


@dataclass(frozen=True)
class Place:
    name: str
    is_port: bool
    regions: tuple[str, ...]  # the region and all its descendants (empty for a port)
    ports: tuple[str, ...]    # every port in those regions (or the port itself)

    @property
    def known(self) -> bool:
        return self.is_port or bool(self.regions)


def data_state(cur, files: bool) -> tuple[int, str | None]:
    """data_version, and with ``files`` the tables' files (see _FILES), in one statement."""
    cur.execute(f"SELECT version, {_FILES if files else 'NULL'} FROM data_version")
    return cur.fetchone()


def table_files(cur) -> str:
    cur.execute(f"SELECT {_FILES}")
    return cur.fetchone()[0]


def end_snapshot(cur) -> str:
    """End the read-only transaction; the tables' files as they are now."""
    cur.execute(f"ROLLBACK; SELECT {_FILES}")
    return cur.fetchone()[0]


def data_version(cur) -> int:
    cur.execute("SELECT version FROM data_version")
    return cur.fetchone()[0]


def database_epoch(cur) -> tuple:
    """What tells this database apart from one recreated or restored under the same name,
    whose data_version may reach the same numbers with other data."""
    cur.execute("SELECT (SELECT oid FROM pg_database WHERE datname = current_database()),"
                " pg_postmaster_start_time()")
    return cur.fetchone()


def resolve(cur, origin: str, destination: str, begin_snapshot: bool = False) -> tuple[Place, Place]:
    """Both ends as Places; ``begin_snapshot`` first begins a read-only transaction whose
    statements share one snapshot, in the same round trip."""
    begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;" if begin_snapshot else ""
    cur.execute(begin + _RESOLVE, {"origin": origin, "destination": destination})
    places = {}
    for name, is_port, regions, ports in cur.fetchall():
        # A name that is both a port code and a region slug is taken as the port.
        places[name] = Place(name, is_port, () if is_port else tuple(regions or ()),
                             (name,) if is_port else tuple(ports or ()))
    return places[origin], places[destination]


def daily_averages(cur, origin: Place, destination: Place,
                   date_from: date, date_to: date) -> list[tuple[date, int | None]]:
    params = {"date_from": date_from, "date_to": date_to, "min_prices": MIN_PRICES}
    if origin.is_port or destination.is_port:
        statement = DAILY_BY_LANE
        params.update(origins=list(origin.ports), destinations=list(destination.ports))
    else:
        statement = DAILY_BY_REGION
        params.update(origins=list(origin.regions), destinations=list(destination.regions))
    cur.execute(statement, params)
    return [(day, None if avg is None else int(avg)) for day, avg in cur.fetchall()]
