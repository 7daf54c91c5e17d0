"""The demo dataset: deterministic, realistic in shape, exactly the size asked for."""

import psycopg2

from ratesctl import demodata

SPEC = demodata.Spec(prices=20_000, days=10, ports=120, seed=5)


def depth(regions):
    parent = {slug: p for slug, _n, p in regions}

    def level(slug):
        return 1 if parent[slug] is None else 1 + level(parent[slug])

    return max(level(slug) for slug in parent)


def test_region_tree_is_several_levels_deep_and_ports_are_unique():
    regions = demodata.regions()
    assert depth(regions) >= 4
    ports = demodata.ports(SPEC)
    assert len(ports) == SPEC.ports == len({code for code, _n, _p in ports})
    slugs = {slug for slug, _n, _p in regions}
    assert all(len(code) == 5 and home in slugs for code, _n, home in ports)


def test_same_spec_gives_the_same_rows_and_another_seed_does_not():
    def rows(spec):
        return list(demodata.price_rows(spec, demodata.lanes(spec, demodata.ports(spec))))

    first = rows(SPEC)
    assert len(first) == SPEC.prices
    assert first == rows(SPEC)
    assert first != rows(demodata.Spec(**{**SPEC.__dict__, "seed": 6}))
    days = {day for _o, _d, day, _p in first}
    assert len(days) == SPEC.days and all(p > 0 for *_x, p in first)


def test_load_copies_every_price_and_the_totals_follow(dsn):
    conn = psycopg2.connect(dsn)
    seen = []
    assert demodata.load(conn, SPEC, progress=seen.append, batch_rows=7_000) == SPEC.prices
    assert sum(seen) == SPEC.prices
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(price) FROM prices")
        count, total = cur.fetchone()
        cur.execute("SELECT sum(price_count), sum(price_sum) FROM region_totals")
        assert (count, total) == cur.fetchone() and count == SPEC.prices
    conn.close()
