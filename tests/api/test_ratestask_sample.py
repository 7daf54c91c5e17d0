"""The real public sample: migrate it as `make migrate` would, then check the original
task's example and compare many answers with the naive query over raw prices."""

import random

import psycopg2
import pytest

from bench import naive
from rates_api import create_app
from rates_api.settings import Settings
from rates_core import migrate
from ratesctl import localdb


@pytest.fixture
def sample_client(empty_dsn, ratestask_sql):
    localdb.psql_file(empty_dsn, ratestask_sql)
    migrate.apply(empty_dsn)
    app = create_app(Settings.from_env({"DATABASE_URL": empty_dsn}))
    yield app.test_client(), empty_dsn
    app.extensions["rates_api"].pool.close()


def test_readme_example(sample_client):
    client, _ = sample_client
    response = client.get("/rates?date_from=2016-01-01&date_to=2016-01-03"
                          "&origin=CNSGH&destination=north_europe_main")
    assert response.status_code == 200
    assert response.get_json() == [
        {"day": "2016-01-01", "average_price": 1112},
        {"day": "2016-01-02", "average_price": 1112},
        {"day": "2016-01-03", "average_price": None},
    ]


def test_answers_equal_the_naive_query_over_raw_prices(sample_client):
    client, dsn = sample_client
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        # Each end is a port of a lane with prices, or one of that port's ancestor regions:
        # most pairs of random places have no prices at all and would compare nothing.
        cur.execute("""WITH RECURSIVE up(code, place) AS (
                           SELECT code, code FROM ports
                           UNION SELECT code, parent_slug FROM ports
                           UNION SELECT u.code, r.parent_slug FROM up u JOIN regions r ON r.slug = u.place
                                 WHERE r.parent_slug IS NOT NULL)
                       SELECT code, array_agg(place ORDER BY place) FROM up GROUP BY code""")
        places = dict(cur.fetchall())
        cur.execute("SELECT DISTINCT orig_code, dest_code FROM prices ORDER BY 1, 2")
        lanes = cur.fetchall()
        rng = random.Random(7)
        priced = 0
        for _ in range(60):
            orig, dest = rng.choice(lanes)
            origin, destination = rng.choice(places[orig]), rng.choice(places[dest])
            first = rng.randint(1, 31)
            date_from, date_to = f"2016-01-{first:02d}", f"2016-01-{rng.randint(first, 31):02d}"
            body = client.get("/rates", query_string=dict(
                date_from=date_from, date_to=date_to, origin=origin, destination=destination)).get_json()
            expected = naive.daily_averages(cur, origin, destination, date_from, date_to)
            assert [(r["day"], r["average_price"]) for r in body] == expected, (origin, destination)
            priced += any(average is not None for _day, average in expected)
    conn.close()
    assert priced >= 30, f"only {priced} of 60 queries had a day with an average"
