"""GET /rates on hand-built data. Every expected value is worked out here by hand."""

from dataclasses import replace

import psycopg2

from bench import naive
from rates_api import queries
from ratesctl import localdb
from tests.support.db import TEMPLATE, autocommit, create_database
from tests.support.world import insert_prices, insert_world

D1, D2, D3 = "2024-03-01", "2024-03-02", "2024-03-03"


def averages(body):
    return [(row["day"], row["average_price"]) for row in body]


def cache_hits(client) -> float:
    """rates_api_cache_hits_total as /metrics reports it: how many answers the cache gave."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("rates_api_cache_hits_total "):
            return float(line.split()[1])
    raise AssertionError("no rates_api_cache_hits_total in /metrics")


def test_three_level_nesting_covers_every_port_below_a_region(world, rates):
    insert_prices(world, [
        ("CNSHA", "NOOSL", D1, 100),  # china -> scandinavia (europe > north_europe > scandinavia)
        ("CNNGB", "DEHAM", D1, 200),  # china -> north_europe
        ("HKHKG", "FRLEH", D1, 300),  # asia -> europe
        ("CNSHA", "NLRTM", D1, 400),  # china -> north_europe
    ])
    # asia covers china's ports and HKHKG; europe covers all four European destinations.
    assert averages(rates(date_from=D1, date_to=D1, origin="asia", destination="europe")[1]) == [(D1, 250)]
    # HKHKG -> FRLEH is outside china -> north_europe: (100 + 200 + 400) / 3 = 233.3
    assert averages(rates(date_from=D1, date_to=D1, origin="china", destination="north_europe")[1]) == [(D1, 233)]
    assert averages(rates(date_from=D1, date_to=D1, origin="world", destination="world")[1]) == [(D1, 250)]
    # Only one price reaches scandinavia.
    assert averages(rates(date_from=D1, date_to=D1, origin="china", destination="scandinavia")[1]) == [(D1, None)]


def test_a_region_covers_ports_eight_levels_below_it(world, rates):
    # world > europe > deep1 > ... > deep7, with NLRTM moved to the bottom.
    chain = [f"deep{n}" for n in range(1, 8)]
    with world.cursor() as cur:
        for parent, slug in zip(["europe", *chain], chain):
            cur.execute("INSERT INTO regions (slug, name, parent_slug) VALUES (%s, %s, %s)", (slug, slug, parent))
        cur.execute("UPDATE ports SET parent_slug = 'deep7' WHERE code = 'NLRTM'")
    world.commit()
    insert_prices(world, [("CNSHA", "NLRTM", D1, p) for p in (100, 200, 600)])

    for top in ("world", "europe", "deep1", "deep4", "deep7"):
        assert averages(rates(date_from=D1, date_to=D1, origin="CNSHA", destination=top)[1]) == [(D1, 300)], top
        assert averages(rates(date_from=D1, date_to=D1, origin="china", destination=top)[1]) == [(D1, 300)], top
        assert averages(rates(date_from=D1, date_to=D1, origin=top, destination="CNSHA")[1]) == [(D1, None)], top
    # A region beside the chain covers none of it.
    assert averages(rates(date_from=D1, date_to=D1, origin="CNSHA", destination="north_europe")[1]) == [(D1, None)]


def test_two_prices_give_null_and_three_give_an_average(world, rates):
    insert_prices(world, [
        ("CNSHA", "NLRTM", D1, 1000), ("CNSHA", "NLRTM", D1, 2000),
        ("CNSHA", "NLRTM", D2, 1000), ("CNSHA", "NLRTM", D2, 2000), ("CNSHA", "NLRTM", D2, 3001),
    ])
    status, body = rates(date_from=D1, date_to=D2, origin="CNSHA", destination="NLRTM")
    assert status == 200
    assert averages(body) == [(D1, None), (D2, 2000)]  # 6001 / 3 = 2000.33


def test_an_average_of_exactly_half_rounds_away_from_zero(world, rates):
    insert_prices(world, [
        # 2.5 -> 3 (banker's rounding would give 2) and 10.5 -> 11.
        ("CNSHA", "NLRTM", D1, 2), ("CNSHA", "NLRTM", D1, 2), ("CNSHA", "NLRTM", D1, 3), ("CNSHA", "NLRTM", D1, 3),
        ("CNSHA", "NLRTM", D2, 10), ("CNSHA", "NLRTM", D2, 10), ("CNSHA", "NLRTM", D2, 11), ("CNSHA", "NLRTM", D2, 11),
    ])
    assert averages(rates(date_from=D1, date_to=D2, origin="CNSHA", destination="NLRTM")[1]) == [(D1, 3), (D2, 11)]


def test_every_day_is_listed_in_order_even_without_prices(world, rates):
    insert_prices(world, [("CNSHA", "NLRTM", D3, p) for p in (10, 20, 30)])
    status, body = rates(date_from="2024-02-28", date_to=D3, origin="CNSHA", destination="NLRTM")
    assert status == 200
    assert averages(body) == [("2024-02-28", None), ("2024-02-29", None), (D1, None), (D2, None), (D3, 20)]


def test_every_day_is_listed_whatever_the_database_time_zone(world, dsn, settings, make_client):
    """Santiago's daylight saving starts at midnight (2024-09-08): no day may go missing."""
    with world.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{world.info.dbname}" SET timezone = %s', ("America/Santiago",))
    client = make_client(settings)  # new connections, in that time zone
    body = client.get("/rates", query_string=dict(date_from="2024-09-05", date_to="2024-09-10",
                                                  origin="CNSHA", destination="NLRTM")).get_json()
    assert [row["day"] for row in body] == [f"2024-09-{d:02d}" for d in range(5, 11)]


def test_origin_region_that_contains_the_destination(world, rates):
    insert_prices(world, [
        ("NOOSL", "NLRTM", D1, 100),   # scandinavia -> NLRTM, inside europe
        ("DEHAM", "NLRTM", D1, 200),
        ("NLRTM", "NLRTM", D1, 400),   # NLRTM itself is in europe too
        ("CNSHA", "NLRTM", D1, 9999),  # not from europe
        ("FRLEH", "DEHAM", D1, 9999),  # not to NLRTM
    ])
    assert averages(rates(date_from=D1, date_to=D1, origin="europe", destination="NLRTM")[1]) == [(D1, 233)]


def test_port_to_region_and_region_to_port(world, rates):
    insert_prices(world, [("CNSHA", "DEHAM", D1, 10), ("CNSHA", "NOOSL", D1, 20), ("CNSHA", "FRLEH", D1, 30),
                          ("CNNGB", "DEHAM", D1, 1000)])
    assert averages(rates(date_from=D1, date_to=D1, origin="CNSHA", destination="europe")[1]) == [(D1, 20)]
    assert averages(rates(date_from=D1, date_to=D1, origin="china", destination="DEHAM")[1]) == [(D1, None)]


def test_a_name_that_is_a_port_and_a_region_means_the_port_in_the_api_and_the_reference(world, rates):
    with world.cursor() as cur:
        cur.execute("INSERT INTO regions VALUES ('NLRTM', 'Rotterdam area', 'europe')")
        cur.execute("UPDATE ports SET parent_slug = 'NLRTM' WHERE code = 'DEHAM'")
    insert_prices(world, [("CNSHA", "NLRTM", D1, 100)] * 3 + [("CNSHA", "DEHAM", D1, 400)] * 3)

    status, body = rates(date_from=D1, date_to=D1, origin="CNSHA", destination="NLRTM")

    with world.cursor() as cur:
        reference = naive.daily_averages(cur, "CNSHA", "NLRTM", D1, D1)
    assert status == 200 and averages(body) == reference == [(D1, 100)]


def test_aliases_orig_code_and_dest_code(world, rates):
    insert_prices(world, [("CNSHA", "NLRTM", D1, p) for p in (100, 200, 600)])
    expected = [(D1, 300)]
    assert averages(rates(date_from=D1, date_to=D1, orig_code="CNSHA", dest_code="NLRTM")[1]) == expected
    assert averages(rates(date_from=D1, date_to=D1, orig_code="china", destination="north_europe")[1]) == expected
    assert averages(rates(date_from=D1, date_to=D1, origin="CNSHA", dest_code="NLRTM")[1]) == expected


def test_a_write_is_visible_to_the_next_request(world, rates, client):
    """The response cache must never serve an answer older than the latest commit."""
    insert_prices(world, [("CNSHA", "NLRTM", D1, p) for p in (100, 200, 300)])
    query = dict(date_from=D1, date_to=D1, origin="china", destination="europe")
    assert averages(rates(**query)[1]) == [(D1, 200)]
    assert averages(rates(**query)[1]) == [(D1, 200)]  # now cached
    # Served from the cache indeed: otherwise the rest proves nothing about it.
    assert cache_hits(client) == 1
    insert_prices(world, [("CNNGB", "DEHAM", D1, 1000)])
    assert averages(rates(**query)[1]) == [(D1, 400)]
    with world.cursor() as cur:
        cur.execute("UPDATE ports SET parent_slug = 'asia' WHERE code = 'DEHAM'")
    assert averages(rates(**query)[1]) == [(D1, 200)]
    assert cache_hits(client) == 1  # both computed anew


def test_answers_of_different_ranges_are_cached_apart(world, rates, client):
    insert_prices(world, [(o, "NLRTM", d, p) for d in (D1, D2) for o, p in (("CNSHA", 100), ("CNNGB", 200),
                                                                              ("CNSHA", 300))])
    query = dict(date_from=D1, origin="china", destination="NLRTM")
    assert averages(rates(**query, date_to=D1)[1]) == [(D1, 200)]
    assert averages(rates(**query, date_to=D2)[1]) == [(D1, 200), (D2, 200)]
    assert averages(rates(**{**query, "date_from": D2}, date_to=D2)[1]) == [(D2, 200)]
    assert cache_hits(client) == 0  # three ranges, three answers
    assert averages(rates(**query, date_to=D1)[1]) == [(D1, 200)]
    assert cache_hits(client) == 1  # the first range's, kept beside the others


def test_a_commit_during_a_computation_is_seen_by_the_next_request(world, rates, client, monkeypatch):
    """The version is read before the answer: an answer computed while a write commits is
    stored under the older version, so the next request recomputes it."""
    from rates_api import queries

    insert_prices(world, [("CNSHA", "NLRTM", D1, p) for p in (100, 200, 300)])
    compute = queries.daily_averages

    def with_a_write_meanwhile(cur, *args):
        rows = compute(cur, *args)
        monkeypatch.setattr(queries, "daily_averages", compute)  # once
        insert_prices(world, [("CNSHA", "NLRTM", D1, 1000)])
        return rows

    monkeypatch.setattr(queries, "daily_averages", with_a_write_meanwhile)
    query = dict(date_from=D1, date_to=D1, origin="CNSHA", destination="NLRTM")
    assert averages(rates(**query)[1]) == [(D1, 200)]
    assert averages(rates(**query)[1]) == [(D1, 400)]
    # The cache is in use (the next request is served from it), so the second request
    # recomputed because of the version, not because nothing is ever cached.
    assert averages(rates(**query)[1]) == [(D1, 400)]
    assert cache_hits(client) == 1


def test_the_same_database_after_a_server_restart_is_a_new_epoch(world, settings, make_client):
    """A database restored onto another server may keep its OID and data_version; the
    server's start time tells them apart."""
    client = make_client(settings)
    rt = client.application.extensions["rates_api"]

    class Restored:
        def __init__(self, start):
            self.start, self.row = start, None

        def execute(self, sql, *_):
            self.row = (16384, self.start) if "pg_postmaster_start_time" in sql else (7, "{1,2,3,4}")

        def fetchone(self):
            return self.row

    class Connection:  # one per server; the runtime keeps its epoch by connection
        pass

    before, after = Restored("2026-01-01 00:00"), Restored("2026-02-01 00:00")
    assert rt.data_state(Connection(), before, files=False)[0] != rt.data_state(Connection(), after, files=False)[0]


def _seed(dsn: str, price: int, version: int | None = None) -> int:
    with autocommit(dsn) as conn:
        insert_world(conn)
        insert_prices(conn, [("CNSHA", "NLRTM", D1, price)] * 3)
        with conn.cursor() as cur:
            if version is not None:
                cur.execute("UPDATE data_version SET version = %s", (version,))
            cur.execute("SELECT version FROM data_version")
            return cur.fetchone()[0]


def test_a_recreated_database_counting_to_the_same_version_is_not_served_from_the_cache(
        pg_server, admin_dsn, settings, make_client):
    name = create_database(admin_dsn, TEMPLATE)
    dsn = pg_server.get_uri(name)
    query = dict(date_from=D1, date_to=D1, origin="CNSHA", destination="NLRTM")
    try:
        client = make_client(replace(settings, database_url=dsn))
        version = _seed(dsn, 100)
        assert client.get("/rates", query_string=query).get_json()[0]["average_price"] == 100
        # The answer is cached: asked again, the cache gives it.
        assert client.get("/rates", query_string=query).get_json()[0]["average_price"] == 100
        assert cache_hits(client) == 1
        localdb.drop_database(admin_dsn, name)  # a reset staging database, say
        localdb.create_database(admin_dsn, name, TEMPLATE)
        assert _seed(dsn, 500, version=version) == version
        assert client.get("/rates", query_string=query).get_json()[0]["average_price"] == 500
        assert cache_hits(client) == 1
    finally:
        localdb.drop_database(admin_dsn, name)


def test_an_answer_is_of_one_state_of_the_data(world, dsn, rates, client, monkeypatch):
    # A write commits between resolving the places and reading their totals: a port added
    # to china along with its prices and more prices for an old port. Before it there is
    # no price (null); after it, 250. The old list of ports with the new totals gives 100.
    writer = psycopg2.connect(dsn)
    with writer.cursor() as cur:
        cur.execute("INSERT INTO ports (code, name, parent_slug) VALUES ('CNXMN', 'Xiamen', 'china')")
        cur.executemany("INSERT INTO prices (orig_code, dest_code, day, price) VALUES (%s, 'NLRTM', %s, %s)",
                        [("CNSHA", D1, 100)] * 3 + [("CNXMN", D1, 400)] * 3)
    real_daily_averages = queries.daily_averages

    def once_the_write_is_committed(*args, **kwargs):
        writer.commit()
        return real_daily_averages(*args, **kwargs)

    monkeypatch.setattr(queries, "daily_averages", once_the_write_is_committed)
    try:
        during = rates(date_from=D1, date_to=D1, origin="china", destination="NLRTM")
    finally:
        writer.close()
    monkeypatch.undo()
    after = rates(date_from=D1, date_to=D1, origin="china", destination="NLRTM")

    assert averages(during[1]) == [(D1, None)]
    assert averages(after[1]) == [(D1, 250)]  # computed anew: the cache holds the answer under the old version
    # The cache is in use, so it was the version that kept `during` from being served again.
    assert averages(rates(date_from=D1, date_to=D1, origin="china", destination="NLRTM")[1]) == [(D1, 250)]
    assert cache_hits(client) == 1


def test_a_region_of_any_printable_name_can_be_asked_for(world, rates):
    # The tables take any text, and someone named these regions so.
    names = ["göteborg_area", "u.s._east", "x" * 128]
    with world.cursor() as cur:
        for name in names:
            cur.execute("INSERT INTO regions (slug, name, parent_slug) VALUES (%s, 'Odd', 'europe')", (name,))
        cur.execute("UPDATE ports SET parent_slug = %s WHERE code = 'NLRTM'", (names[0],))
    world.commit()
    insert_prices(world, [("CNSHA", "NLRTM", D1, p) for p in (100, 200, 300)])

    assert averages(rates(date_from=D1, date_to=D1, origin="china", destination=names[0])[1]) == [(D1, 200)]
    for name in names[1:]:
        assert averages(rates(date_from=D1, date_to=D1, origin="china", destination=name)[1]) == [(D1, None)]
    assert rates(date_from=D1, date_to=D1, origin="china", destination="no such place")[0] == 404
