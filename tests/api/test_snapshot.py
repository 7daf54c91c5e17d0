"""An answer reads one state of the data, also across a TRUNCATE or a table rewrite.

TRUNCATE and a rewriting ALTER TABLE are not MVCC-safe: a transaction whose snapshot
predates their commit, and that first touches the table after it, sees the table empty.
A migration that refills the totals, or an owner reseeding ports, committed while a
request was between its first statement and its totals read, made that request answer
nulls (or 404), and the null answer stayed cached when nothing bumped data_version. Such an
answer is now read again (the tables' storage files changed under it).
"""

import threading
from dataclasses import replace

import psycopg2
import pytest

from rates_api import queries
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
def patient_client(settings, make_client):
    """A client whose requests wait for locks as long as answer_across takes to see the wait
    and commit: on a busy machine that was longer than the default 5 s statement timeout,
    and the request ended early with 503."""
    return make_client(replace(settings, db_statement_timeout_ms=60000))


@pytest.fixture
def loaded(world):
    insert_prices(world, PRICES)
    return world


REFILL_TOTALS = ["CREATE TEMP TABLE kept AS SELECT * FROM region_totals",
                 "TRUNCATE region_totals", "INSERT INTO region_totals SELECT * FROM kept"]
REWRITE_TOTALS = ["ALTER TABLE region_totals ALTER COLUMN price_count TYPE bigint"]
RESEED_PORTS = ["CREATE TEMP TABLE kept AS SELECT * FROM ports", "TRUNCATE ports", "INSERT INTO ports SELECT * FROM kept"]


@pytest.mark.parametrize("statements", [REFILL_TOTALS, REWRITE_TOTALS], ids=["truncate and refill", "alter type"])
def test_a_rewrite_of_the_totals_during_a_request_is_not_read_as_empty(dsn, loaded, patient_client, statements):
    assert answer_across(dsn, loaded, patient_client, ASIA, statements) == (200, [{"day": DAY, "average_price": 250}])
    # Nothing bumped data_version: whatever that request cached is what the next one gets.
    response = patient_client.get("/rates", query_string=ASIA)
    assert response.get_json() == [{"day": DAY, "average_price": 250}]


def test_ports_reseeded_during_a_request_are_still_known(dsn, loaded, patient_client):
    status, body = answer_across(dsn, loaded, patient_client, PORTS, RESEED_PORTS)
    assert (status, body) == (200, [{"day": DAY, "average_price": 100}])


def test_a_migration_waiting_for_region_totals_does_not_hold_back_port_answers(dsn, loaded, client):
    # Locking every table an answer might read up front made every request queue behind
    # any pending ACCESS EXCLUSIVE lock, and could deadlock a migration taking two.
    reader = psycopg2.connect(dsn)  # a long report, or a load's last phase, on region_totals
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM region_totals")
    migration = psycopg2.connect(dsn)
    alter = threading.Thread(target=lambda: migration.cursor().execute(
        "ALTER TABLE region_totals ADD COLUMN note text"))
    alter.start()
    try:
        wait_for(lambda: lock_waiters(loaded) > 0, timeout=10, what="the ALTER to queue for its lock")
        response = client.get("/rates", query_string=PORTS)
        assert response.status_code == 200 and response.get_json() == [{"day": DAY, "average_price": 100}]
    finally:
        reader.rollback()
        alter.join(30)
        migration.rollback()
        reader.close()
        migration.close()


def test_an_answer_rewritten_under_it_every_time_is_a_503_not_a_guess(loaded, client, monkeypatch):
    files = iter(range(100))
    monkeypatch.setattr(queries, "end_snapshot", lambda cur: (cur.execute("ROLLBACK"), str(next(files)))[1])
    response = client.get("/rates", query_string=ASIA)
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "unavailable"
    assert next(files) == 3  # read three times, then given up


def test_a_stale_cached_answer_is_recomputed_as_safely(dsn, loaded, patient_client):
    assert patient_client.get("/rates", query_string=ASIA).status_code == 200  # cached
    insert_prices(loaded, [("CNSHA", "NLRTM", DAY, 100)])  # a write: the entry is stale
    answer = answer_across(dsn, loaded, patient_client, ASIA, REFILL_TOTALS)
    assert answer == (200, [{"day": DAY, "average_price": 229}])
