"""A deterministic, realistic demo dataset: a region tree, ports and daily prices.

The same arguments always give the same rows, so benchmarks and demos are repeatable.
Prices are streamed into COPY in batches; nothing holds the whole dataset in memory.
"""

import io
import itertools
import math
import random
import string
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Iterator

from psycopg2 import sql
from psycopg2.extras import execute_values

from rates_core import db

CONTINENTS = [
    ("europe", "Europe", ["NL", "DE", "BE", "FR", "GB", "NO", "SE", "DK", "FI", "PL", "ES", "IT"]),
    ("asia", "Asia", ["CN", "HK", "JP", "KR", "SG", "TW", "VN", "TH", "MY", "IN"]),
    ("north_america", "North America", ["US", "CA", "MX"]),
    ("south_america", "South America", ["BR", "AR", "CL", "PE", "CO"]),
    ("africa", "Africa", ["ZA", "EG", "MA", "NG", "KE"]),
    ("oceania", "Oceania", ["AU", "NZ"]),
]
SUBREGIONS = [("north", "North"), ("south", "South"), ("east", "East"), ("west", "West")]
LEAVES = [("main", "Main"), ("sub", "Sub")]
# Well-known ports placed first so that examples in the docs always exist.
KNOWN_PORTS = [
    ("CNSHA", "Shanghai", "asia_east_main"),
    ("CNNGB", "Ningbo", "asia_east_main"),
    ("HKHKG", "Hong Kong", "asia_south_main"),
    ("SGSIN", "Singapore", "asia_south_sub"),
    ("NLRTM", "Rotterdam", "europe_north_main"),
    ("DEHAM", "Hamburg", "europe_north_main"),
    ("BEANR", "Antwerp", "europe_west_main"),
    ("GBFXT", "Felixstowe", "europe_west_sub"),
    ("NOOSL", "Oslo", "europe_north_main_coast"),
    ("USLAX", "Los Angeles", "north_america_west_main"),
    ("USNYC", "New York", "north_america_east_main"),
    ("BRSSZ", "Santos", "south_america_east_main"),
]


# More than the world's ports, many times over; the codes run out at 37 countries x 26^3
# (650,312), where the loop that draws them would never end.
MAX_PORTS = 100_000


@dataclass(frozen=True)
class Spec:
    prices: int = 200_000
    days: int = 90
    ports: int = 300
    start: date = date(2024, 1, 1)
    seed: int = 42


def regions() -> list[tuple[str, str, str | None]]:
    """Continent > subregion > leaf, plus a fourth level under every '*_main' leaf."""
    rows = []
    for slug, name, _countries in CONTINENTS:
        rows.append((slug, name, None))
        for sub, sub_name in SUBREGIONS:
            sub_slug = f"{slug}_{sub}"
            rows.append((sub_slug, f"{name} {sub_name}", slug))
            for leaf, leaf_name in LEAVES:
                rows.append((f"{sub_slug}_{leaf}", f"{name} {sub_name} {leaf_name}", sub_slug))
            rows.append((f"{sub_slug}_main_coast", f"{name} {sub_name} Main Coast", f"{sub_slug}_main"))
    return rows


def ports(spec: Spec) -> list[tuple[str, str, str]]:
    rng = random.Random(spec.seed)
    tree = regions()
    # Ports sit mostly in leaves, some directly in intermediate regions, as in real data.
    homes = [slug for slug, _n, parent in tree if parent is not None]
    countries = {slug: c for slug, _n, c in CONTINENTS}
    rows = list(KNOWN_PORTS[: spec.ports])
    taken = {code for code, _n, _p in rows}
    while len(rows) < spec.ports:
        home = rng.choice(homes)
        country = rng.choice(countries[_continent(home)])
        code = country + "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
        if code not in taken:
            taken.add(code)
            rows.append((code, f"Port {code[2:].title()}, {country}", home))
    return rows


def _continent(region: str) -> str:
    for slug, _n, _c in CONTINENTS:
        if region == slug or region.startswith(slug + "_"):
            return slug
    raise ValueError(region)


# Lanes between the well-known ports are busy lanes: this many times the quotes of another
# lane, so that (almost) every day of the documented examples has the 3 prices an average needs.
BUSY_LANE_WEIGHT = 8


def lanes(spec: Spec, port_rows) -> list[tuple[str, str, float, int]]:
    """(origin, destination, base price, weight): about 3 quotes per lane and day on average;
    busy lanes take 8 shares each, so the other lanes get fewer (about 1.3 at the defaults)."""
    rng = random.Random(spec.seed + 1)
    count = max(1, min(spec.prices // (spec.days * 3), len(port_rows) * (len(port_rows) - 1)))
    known = port_rows[: len(KNOWN_PORTS)]
    # Lanes between the well-known ports come first, so the documented examples have data.
    pairs = [(a, b) for a in known for b in known if a is not b]
    result, seen = [], set()
    while len(result) < count:
        busy = bool(pairs)
        (o, _on, o_home), (d, _dn, d_home) = pairs.pop(0) if pairs else rng.sample(port_rows, 2)
        if (o, d) in seen:
            continue
        seen.add((o, d))
        # Intercontinental lanes cost more, with a spread per lane.
        base = (1400 if _continent(o_home) != _continent(d_home) else 450) * rng.uniform(0.6, 1.6)
        result.append((o, d, base, BUSY_LANE_WEIGHT if busy else 1))
    return result


def price_rows(spec: Spec, lane_rows) -> Iterator[tuple[str, str, date, int]]:
    """Exactly spec.prices rows, spread over lanes (by weight) and days, in day order."""
    rng = random.Random(spec.seed + 2)
    cumulative = list(itertools.accumulate(weight for *_lane, weight in lane_rows))
    per_day, extra = divmod(spec.prices, spec.days)
    for offset in range(spec.days):
        day = spec.start + timedelta(days=offset)
        season = 1 + 0.15 * math.sin(2 * math.pi * offset / 365)
        count = per_day + (1 if offset < extra else 0)
        for o, d, base, _weight in rng.choices(lane_rows, cum_weights=cumulative, k=count):
            yield o, d, day, max(1, round(base * season * rng.uniform(0.9, 1.1)))


class CsvStream(io.RawIOBase):
    """A read()-able stream of tab-separated rows for COPY, produced on demand."""

    def __init__(self, rows: Iterator[tuple], on_rows=lambda n: None, chunk_rows: int = 5000):
        self._rows, self._on_rows, self._chunk_rows = rows, on_rows, chunk_rows
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            lines = [f"{o}\t{d}\t{day.isoformat()}\t{p}\n" for o, d, day, p in
                     (row for _, row in zip(range(self._chunk_rows), self._rows))]
            if not lines:
                break
            self._on_rows(len(lines))
            self._buffer += "".join(lines).encode()
        if size < 0:
            size = len(self._buffer)
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk


def load(conn, spec: Spec, progress=None, batch_rows: int = 1_000_000) -> int:
    """Insert the whole dataset in one transaction; returns the number of prices."""
    port_rows = ports(spec)
    with conn, conn.cursor() as cur:
        # As the ingest job does: the prices trigger's tuplestore spills to disk less.
        cur.execute("SET LOCAL work_mem = %s", (db.BULK_LOAD_WORK_MEM,))
        # Existing regions and ports are kept, so that --force can add prices to a demo database.
        cur.executemany("INSERT INTO regions (slug, name, parent_slug) VALUES (%s, %s, %s) "
                        "ON CONFLICT (slug) DO NOTHING", regions())
        # One statement a page: executemany's round trip a port took minutes for 100,000.
        execute_values(cur, "INSERT INTO ports (code, name, parent_slug) VALUES %s "
                            "ON CONFLICT (code) DO NOTHING", port_rows, page_size=5000)
        rows = price_rows(spec, lanes(spec, port_rows))
        copy = sql.SQL("COPY prices (orig_code, dest_code, day, price) FROM STDIN")
        remaining = spec.prices
        # Several COPY statements keep each trigger's transition table to a bounded size.
        while remaining > 0:
            batch = min(batch_rows, remaining)
            stream = CsvStream((row for _, row in zip(range(batch), rows)),
                               on_rows=progress or (lambda n: None))
            cur.copy_expert(copy.as_string(conn), stream, size=1 << 16)
            remaining -= batch
    return spec.prices
