"""SIGTERM to gunicorn: /readyz turns 503 first, and every in-flight request finishes."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import requests

from tests.support.api import gunicorn_server
from tests.support.db import lock_waiters
from tests.support.world import insert_prices

IN_FLIGHT = 3


@pytest.fixture
def gunicorn(dsn, world, tmp_path):
    # The held requests wait on a lock for as long as the test takes; on a busy machine
    # that was longer than the default 5 s statement timeout, and they ended early with 503.
    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="2", GUNICORN_THREADS="8", SHUTDOWN_DRAIN_SECONDS="2",
                         DB_STATEMENT_TIMEOUT_MS="60000", APP_VERSION="shutdown-test") as started:
        yield started


def test_sigterm_drains_readiness_first_and_finishes_in_flight_requests(gunicorn, world, dsn):
    process, base = gunicorn
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", p) for p in (10, 20, 30)])
    # Hold a lock that /rates needs, so that requests stay in flight as long as we like;
    # /readyz reads only data_version, so a worker that has not yet seen the signal answers
    # it at once instead of waiting on the lock too.
    blocker = psycopg2.connect(dsn)
    try:
        blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
        url = base + "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=CNSHA&destination=NLRTM"
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(requests.get, url, timeout=30) for _ in range(IN_FLIGHT)]
            try:
                deadline = time.monotonic() + 10
                while lock_waiters(world, application_name="rates-api") < IN_FLIGHT:
                    assert time.monotonic() < deadline, "requests never reached the database"
                    time.sleep(0.05)

                process.send_signal(signal.SIGTERM)
                readiness = []
                for _ in range(20):  # the drain window is 2 s
                    readiness.append(requests.get(base + "/readyz", timeout=5).status_code)
                    if readiness[-1] == 503:
                        break
                    time.sleep(0.05)
                assert readiness[-1] == 503, readiness
                ended = [f.result().status_code if not f.exception() else repr(f.exception())
                         for f in futures if f.done()]
                assert not ended, f"requests ended before the lock was released: {ended}"
            finally:
                # Released whatever happened, or the pool would wait out every request's timeout.
                blocker.rollback()
            responses = [f.result() for f in futures]
    finally:
        blocker.close()
    assert [r.status_code for r in responses] == [200] * IN_FLIGHT
    assert all(r.json() == [{"day": "2024-03-01", "average_price": 20}] for r in responses)
    assert process.wait(timeout=30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/healthz", timeout=2)
