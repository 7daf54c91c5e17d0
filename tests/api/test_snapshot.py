"""An answer reads one state of the data, also across a TRUNCATE or a table rewrite.

TRUNCATE and a rewriting ALTER TABLE are not MVCC-safe: a transaction whose snapshot
predates their commit, and that first touches the table after it, sees the table empty.
A migration that refills the totals, or an owner reseeding ports, committed while a
request was between its first statement and its totals read, made that request answer
nulls (or 404), and the null answer stayed cached when nothing bumped data_version.
"""

import threading

import psycopg2
import pytest

from tests.support.db import lock_waiters
from tests.support.world import insert_prices
from tests.support.poll import wait_for

DAY = "2016-01-01"
# china -> north_europe 100 (x3) and hongkong -> north_europe 400 (x3): asia averages 250.
PRICES = [("CNSHA", "NLRTM", DAY, 100)] * 3 + [("HKHKG", "NLRTM", DAY, 400)] * 3
ASIA = {"origin": "asia", "destination": "north_europe", "date_from": DAY, "date_to": DAY}
PORTS = {"origin": "CNSHA", "destination": "NLRTM", "date_from": DAY, "date_to": DAY}


def answer_across(dsn, watcher, client, query, statements):
    """The answer to ``query`` when ``statements`` (one transaction of the owner's) commit
    while the request waits for their locks."""
    owner = psycopg2.connect(dsn)
    with owner.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    # The owner's locks are held: the request blocks on them (after its first statement,
    # when they are on the totals, which it reads second).
    result = {}
    request = threading.Thread(target=lambda: result.update(response=client.get("/rates", query_string=query)))
    request.start()
    wait_for(lambda: lock_waiters(watcher) > 0, timeout=10, what="the request to wait for the owner's locks")
    owner.commit()
    owner.close()
    request.join(timeout=30)
    response = result["response"]
    return response.status_code, response.get_json()


@pytest.fixture
def loaded(world):
    insert_prices(world, PRICES)
    return world


REFILL_TOTALS = ["CREATE TEMP TABLE kept AS SELECT * FROM region_totals",
                 "TRUNCATE region_totals", "INSERT INTO region_totals SELECT * FROM kept"]
REWRITE_TOTALS = ["ALTER TABLE region_totals ALTER COLUMN price_count TYPE bigint"]
RESEED_PORTS = ["CREATE TEMP TABLE kept AS SELECT * FROM ports", "TRUNCATE ports", "INSERT INTO ports SELECT * FROM kept"]


@pytest.mark.parametrize("statements", [REFILL_TOTALS, REWRITE_TOTALS], ids=["truncate and refill", "alter type"])
def test_a_rewrite_of_the_totals_during_a_request_is_not_read_as_empty(dsn, loaded, client, statements):
    assert answer_across(dsn, loaded, client, ASIA, statements) == (200, [{"day": DAY, "average_price": 250}])
    # Nothing bumped data_version: whatever that request cached is what the next one gets.
    response = client.get("/rates", query_string=ASIA)
    assert response.get_json() == [{"day": DAY, "average_price": 250}]


def test_ports_reseeded_during_a_request_are_still_known(dsn, loaded, client):
    status, body = answer_across(dsn, loaded, client, PORTS, RESEED_PORTS)
    assert (status, body) == (200, [{"day": DAY, "average_price": 100}])
