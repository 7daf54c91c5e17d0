"""A database that stalls while its host still acknowledges (a storage stall, a frozen
process) holds no gunicorn thread for longer than a statement may take."""

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import requests

from tests.support.api import gunicorn_server
from tests.support.poll import wait_for
from tests.support.world import insert_prices

THREADS = 2


@pytest.fixture
def gunicorn(dsn, world, tmp_path):
    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS=str(THREADS),
                         DB_STATEMENT_TIMEOUT_MS="1000", SHUTDOWN_DRAIN_SECONDS="0") as (_, base):
        yield base


def _api_backends(conn) -> list[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'rates-api' "
                    "AND datname = current_database()")
        return [pid for (pid,) in cur]


def test_statements_on_a_stalled_server_give_up_and_healthz_keeps_answering(gunicorn, world, dsn):
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", p) for p in (10, 20, 30)])
    url = gunicorn + "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=CNSHA&destination=NLRTM"
    assert requests.get(url, timeout=10).status_code == 200

    def whole_pool() -> list[int]:
        # The pool opens a connection when a thread first needs one: requests at once until
        # each thread has needed its own.
        with ThreadPoolExecutor(THREADS) as burst:
            list(burst.map(lambda _: requests.get(url, timeout=10), range(4 * THREADS)))
        with psycopg2.connect(dsn) as conn:
            backends = _api_backends(conn)
        conn.close()
        return backends if len(backends) == THREADS else []
    stalled = wait_for(whole_pool, timeout=30, what="the worker's whole pool to be open")
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)  # their sockets stay open: the kernel still acknowledges
    try:
        with ThreadPoolExecutor(THREADS + 1) as pool:
            held = [pool.submit(requests.get, url, timeout=20) for _ in range(THREADS)]
            # Behind them, for a free thread: the liveness probe's path.
            health = pool.submit(requests.get, gunicorn + "/healthz", timeout=20)
            answers = [future.result() for future in held]  # a requests timeout fails the test
            assert health.result().status_code == 200
        assert [answer.status_code for answer in answers] == [503] * THREADS
        assert all(answer.json()["error"]["code"] == "unavailable" and answer.headers["Retry-After"]
                   for answer in answers)
        # The stalled connections were dropped: new ones answer while the old stay frozen.
        assert requests.get(url, timeout=10).json() == [{"day": "2024-03-01", "average_price": 20}]
    finally:
        for pid in stalled:
            os.kill(pid, signal.SIGCONT)
