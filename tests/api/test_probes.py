"""PROBE_PORT: the probes answered while every thread of every worker is busy, which on
the API's own port they wait behind (rates_api.probes)."""

import contextlib
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import requests

from tests.support.api import gunicorn_server
from tests.support.db import API_USER, as_user, lock_waiters
from tests.support.net import free_ports
from tests.support.poll import wait_for
from tests.support.world import insert_prices

THREADS = 2


@pytest.fixture
def serve(dsn, world, tmp_path):
    """A function that starts gunicorn with ``workers`` and a probe port, for the test."""
    with contextlib.ExitStack() as stack:
        def start(workers: int, drain_s: int = 2):
            port, probe = free_ports(2)  # two free_port calls could both return one port
            process, base = stack.enter_context(gunicorn_server(
                dsn, tmp_path, WEB_CONCURRENCY=str(workers), GUNICORN_THREADS=str(THREADS), PORT=str(port),
                PROBE_PORT=str(probe), DB_STATEMENT_TIMEOUT_MS="60000", SHUTDOWN_DRAIN_SECONDS=str(drain_s)))
            return process, base, f"http://127.0.0.1:{probe}"
        yield start


def test_a_pod_whose_every_thread_is_busy_is_still_ready_on_the_probe_port(serve, world, dsn):
    # One worker: gunicorn's workers take connections unevenly, and this one must be full.
    _, base, probes = serve(workers=1)
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", p) for p in (10, 20, 30)])
    blocker = psycopg2.connect(dsn)  # /rates waits on it for as long as the test likes
    busy = 3 * THREADS  # every thread, and more queued behind them
    try:
        blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
        url = base + "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=CNSHA&destination=NLRTM"
        with ThreadPoolExecutor(busy) as clients:
            held = [clients.submit(requests.get, url, timeout=60) for _ in range(busy)]
            try:
                wait_for(lambda: lock_waiters(world, application_name="rates-api") == THREADS,
                         timeout=20, what="every thread to wait on the lock")
                # While no request can end, the worker answers here, from a connection of its
                # own: one of the pool's could be the one a request was about to need.
                answers = [requests.get(probes + "/readyz", timeout=5) for _ in range(8)]
                assert {a.status_code for a in answers} == {200}
                assert {json.dumps(a.json(), sort_keys=True) for a in answers} == {'{"status": "ok"}'}
                with psycopg2.connect(dsn) as watcher:
                    assert connections_of(watcher) == {"rates-api": THREADS, "rates-api-probe": 1}
                watcher.close()
                assert requests.get(probes + "/healthz", timeout=5).status_code == 200
                assert not [f for f in held if f.done()], "a request ended before the lock was released"
            finally:
                blocker.rollback()
            assert [f.result().status_code for f in held] == [200] * busy
    finally:
        blocker.close()


@contextlib.contextmanager
def every_thread_held(base: str, dsn: str, world, workers: int):
    """Every thread of every worker waits on a lock of the totals (/rates reads them), and
    as many requests again queue behind them; at the end of the block they are all
    released and answered."""
    url = base + "/rates?date_from=2024-03-10&date_to=2024-03-10&origin=CNSHA&destination=NLRTM"
    threads, most = workers * THREADS, 20 * workers * THREADS
    blocker = psycopg2.connect(dsn)
    try:
        blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(most + threads) as clients:
            held = []
            try:
                # One at a time: sent at once, nearly all went to the worker that accepted first.
                while lock_waiters(world, application_name="rates-api") < threads:
                    assert len(held) < most, "the workers took too few of the requests"
                    held.append(clients.submit(requests.get, url, timeout=60))
                    time.sleep(0.1)  # for a worker to take it
                held += [clients.submit(requests.get, url, timeout=60) for _ in range(threads)]  # queued
                yield
                assert not [f for f in held if f.done()], "a request ended before the lock was released"
            finally:
                blocker.rollback()
            assert [f.result().status_code for f in held] == [200] * len(held)
    finally:
        blocker.close()


def test_prometheus_scrapes_a_pod_whose_every_thread_is_busy_on_the_probe_port(serve, world, dsn):
    # On the API's port the scrape queued behind the held requests and timed out: the pod
    # read as down, and the alerts on its requests went blind (a review: 7 of 7 scrapes).
    workers = 2
    _, base, probes = serve(workers=workers)
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-%02d" % day, p) for day in (1, 10) for p in (10, 20, 30)])
    served = 5
    for _ in range(served):
        assert requests.get(base + "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=CNSHA"
                                   "&destination=NLRTM", timeout=10).status_code == 200
    with every_thread_held(base, dsn, world, workers):
        # Whichever worker the kernel hands a scrape to, it reports every worker's requests.
        for _ in range(4 * workers):
            scrape = requests.get(probes + "/metrics", timeout=10)
            assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
            assert f'rates_api_requests_total{{method="GET",route="/rates",status="200"}} {served:.1f}' \
                in scrape.text.splitlines()
            assert "rates_api_request_duration_seconds_bucket" in scrape.text


def test_the_requests_in_progress_and_the_threads_are_counted_over_every_worker(serve, world, dsn):
    # Requests that wait for a thread are timed by no histogram (gunicorn queues them before
    # the app starts its clock): threads busy against threads at all is what shows the wait.
    workers = 2
    _, base, probes = serve(workers=workers)
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-10", p) for p in (10, 20, 30)])

    def gauges() -> dict[str, float]:
        text = requests.get(probes + "/metrics", timeout=10).text
        samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        return {name: float(value) for name, value in samples
                if name in ("rates_api_requests_in_progress", "rates_api_request_threads")}

    idle = {"rates_api_requests_in_progress": 0.0, "rates_api_request_threads": workers * THREADS}
    # Each worker counts its threads once it has booted (the server is ready with the first).
    assert wait_for(lambda: gauges() == idle, timeout=10, what="every worker to boot and count its threads")
    with every_thread_held(base, dsn, world, workers):
        # Each worker's threads, the queued requests not (they have none yet), nor the
        # scrape itself, which the probe port serves from a thread of its own.
        for _ in range(2 * workers):
            assert gauges() == {"rates_api_requests_in_progress": workers * THREADS,
                                "rates_api_request_threads": workers * THREADS}
    assert gauges() == idle  # counted out before each answer was written


def test_the_probe_port_serves_the_probes_only_and_drains_with_the_workers(serve):
    process, base, probes = serve(workers=2, drain_s=5)  # both bind the port; a busy machine is slow to look
    assert requests.get(probes + "/readyz", timeout=5).json() == {"status": "ok"}
    # /metrics on the API's own port as before, for whatever scrapes it there.
    assert "rates_api_build_info" in requests.get(base + "/metrics", timeout=5).text
    refused = requests.get(probes + "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=a&destination=b",
                           timeout=5)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"

    process.send_signal(signal.SIGTERM)
    def draining():
        answer = requests.get(probes + "/readyz", timeout=5)
        return answer.json() if answer.status_code == 503 else None  # (a 503 Response is falsy)
    assert wait_for(draining, timeout=5, what="the probe port to say draining") == {"status": "draining"}
    assert process.wait(timeout=30) == 0
    with pytest.raises(requests.ConnectionError):  # the workers took their sockets with them
        requests.get(probes + "/healthz", timeout=2)


def test_a_probe_port_in_use_stops_the_server(dsn, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(RuntimeError, match="server exited"):  # a worker that cannot bind does not boot
            with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", PROBE_PORT=str(taken.getsockname()[1])):
                pass
    finally:
        taken.close()


def test_idle_connections_to_the_probe_port_hold_a_few_threads_for_seconds_only(serve):
    from rates_api import probes as probe_server

    _, _, probes = serve(workers=1)
    port = int(probes.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(probe_server.MAX_AT_ONCE + 3)]
    try:
        for extra in idle[probe_server.MAX_AT_ONCE:]:
            assert extra.recv(1) == b""  # closed unanswered: every probe thread is taken
        # The held ones time out and the threads come free.
        def answered() -> bool:
            try:
                return requests.get(probes + "/healthz", timeout=5).status_code == 200
            except requests.ConnectionError:  # closed unanswered while they are held
                return False
        wait_for(answered, timeout=3 * probe_server.READ_TIMEOUT_S, what="a probe thread to come free")
    finally:
        for sock in idle:
            sock.close()


def test_probes_that_overlap_take_turns_on_the_database_check(serve, world, dsn):
    # With one connection for the probes, the second of two would have found it taken and
    # answered "busy", 200, while the first was about to fail: each checks in turn.
    _, _, probes = serve(workers=1)
    blocker = psycopg2.connect(dsn)
    try:
        blocker.cursor().execute("LOCK TABLE data_version IN ACCESS EXCLUSIVE MODE")  # /readyz reads it
        with ThreadPoolExecutor(2) as clients:
            first = clients.submit(requests.get, probes + "/readyz", timeout=30)
            wait_for(lambda: lock_waiters(world, application_name="rates-api-probe") == 1, timeout=10,
                     what="the first check to wait on the lock")
            second = clients.submit(requests.get, probes + "/readyz", timeout=30)
            time.sleep(1)
            assert not second.done(), second.result().json()  # it waits its turn: no "busy" meanwhile
            blocker.rollback()
            assert [f.result().json() for f in (first, second)] == [{"status": "ok"}] * 2
    finally:
        blocker.close()


def test_liveness_fails_once_a_request_has_run_far_past_any_budget(dsn, world, make_client):
    from rates_api.settings import Settings
    from tests.support.db import API_USER, as_user

    client = make_client(Settings.from_env({"DATABASE_URL": as_user(dsn, API_USER),
                                            "DB_STATEMENT_TIMEOUT_MS": "60000"}))
    runtime = client.application.extensions["rates_api"]
    assert runtime.hung_after_s == 3 * (5 + 60 + 2)  # three times what a request may give the database
    runtime.hung_after_s = 1.0  # for the test: a request held on a lock for a second has "hung"
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", 10)])
    blocker = psycopg2.connect(dsn)
    try:
        blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(1) as one:
            held = one.submit(client.get, "/rates?date_from=2024-03-01&date_to=2024-03-01"
                                          "&origin=CNSHA&destination=NLRTM")
            wait_for(lambda: lock_waiters(world, application_name="rates-api") == 1, timeout=20,
                     what="the request to wait on the lock")
            hung = wait_for(lambda: _hung(client),
                            timeout=10, what="liveness to fail")
            assert hung["status"] == "hung" and hung["oldest_request_s"] >= 1.0
            blocker.rollback()
            assert held.result(timeout=30).status_code == 200
        # The request that hung has ended: the worker is alive again.
        assert client.get("/healthz").get_json() == {"status": "ok"}
    finally:
        blocker.close()


def _hung(client) -> dict | None:
    answer = client.get("/healthz")
    return answer.get_json() if answer.status_code == 503 else None


def test_a_worker_with_a_hung_request_is_replaced(dsn, world, tmp_path):
    """Liveness alone could not do it: the probe port's kernel spreads the probes over the
    workers, and a pod whose one worker had hung passed about half of them."""
    from tests.support.proc import children

    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", p) for p in (10, 20, 30)])
    url = "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=CNSHA&destination=NLRTM"
    blocker = psycopg2.connect(dsn)  # holds a request for longer than it may take, here 2 s
    try:
        # gunicorn's own timeouts as the chart sets them (30 s each, a 5 s drain): a worker
        # that merely stopped waited for the hung request through them, some 65 s.
        with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS=str(THREADS),
                             HUNG_REQUEST_S="2", DB_STATEMENT_TIMEOUT_MS="60000") as (process, base):
            [first] = wait_for(lambda: children(process.pid), timeout=10, what="the worker")
            blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(1) as one:
                hung = one.submit(requests.get, base + url, timeout=60)
                replaced = wait_for(lambda: [pid for pid in children(process.pid) if pid != first], timeout=45,
                                    what="a new worker")
                blocker.rollback()
                assert first not in children(process.pid)
                with pytest.raises(requests.ConnectionError):  # its worker was ended under it
                    hung.result()
            answer = wait_for(lambda: _answer(base + url), timeout=20, what="the new worker to answer")
            assert answer.json() == [{"day": "2024-03-01", "average_price": 20}] and replaced
    finally:
        blocker.close()


def _answer(url: str):
    try:
        answer = requests.get(url, timeout=5)
    except requests.ConnectionError:
        return None
    return answer if answer.status_code == 200 else None


def test_replacing_a_worker_for_a_hung_request_drops_no_other_request(dsn, world, tmp_path):
    """Its kept-alive clients get "Connection: close", new ones another worker or the next,
    and answers in progress are written whole before it exits."""
    import threading

    from tests.support.proc import children

    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", 10)])
    blocker = psycopg2.connect(dsn)
    try:
        with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS="4", HUNG_REQUEST_S="2",
                             DB_STATEMENT_TIMEOUT_MS="60000") as (process, base):
            [first] = wait_for(lambda: children(process.pid), timeout=10, what="the worker")
            stop, answered, failed = threading.Event(), [], []

            def ask(session):
                while not stop.is_set():
                    try:
                        answered.append(session.get(base + "/", timeout=30).status_code)
                    except requests.RequestException as exc:
                        failed.append(repr(exc))

            blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(6) as clients:
                askers = [clients.submit(ask, requests.Session()) for _ in range(3)]  # kept alive
                askers += [clients.submit(ask, requests) for _ in range(2)]  # a connection each
                hung = clients.submit(requests.get, base + "/rates?date_from=2024-03-01&date_to=2024-03-01"
                                      "&origin=CNSHA&destination=NLRTM", timeout=60)
                wait_for(lambda: first not in children(process.pid), timeout=45, what="the worker to be replaced")
                time.sleep(1)  # and the new worker serves them for a while
                stop.set()
                for asker in askers:
                    asker.result()
                blocker.rollback()
                with pytest.raises(requests.ConnectionError):
                    hung.result()
            assert failed == [] and set(answered) == {200}, failed[:5]
    finally:
        blocker.close()


@contextlib.contextmanager
def limited_api(dsn, world, tmp_path):
    """gunicorn serving the API as its own role, with a probe port, and a function that caps
    the role at the server, as its max_connections would at HPA max (a superuser's
    connections are not capped); yields (limit, base URL, probe URL)."""
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", p) for p in (10, 20, 30)])
    admin = psycopg2.connect(dsn)
    admin.autocommit = True

    def limit(connections: int, end: str | None = None) -> None:
        with admin.cursor() as cur:
            cur.execute(f"ALTER ROLE {API_USER} CONNECTION LIMIT {int(connections)}")
            if end:
                cur.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                               WHERE application_name = %s AND datname = current_database()""", (end,))
        wait_for(lambda: not end or not connections_of(admin).get(end), timeout=10, what=f"{end} to end")
    port, probe = free_ports(2)
    try:
        with gunicorn_server(as_user(dsn, API_USER), tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS="4",
                             PORT=str(port), PROBE_PORT=str(probe)) as (_, base):
            yield limit, base, f"http://127.0.0.1:{probe}"
    finally:
        limit(-1)
        admin.close()


def connections_of(conn) -> dict[str, int]:
    """The API's sessions on ``conn``'s database (the test's), by application name: the
    session's one server also lists those of earlier tests' servers, maybe still closing."""
    with conn.cursor() as cur:
        cur.execute("""SELECT application_name, count(*) FROM pg_stat_activity
                       WHERE application_name LIKE 'rates-api%' AND datname = current_database()
                       GROUP BY 1""")
        return dict(cur.fetchall())


RATES = "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=CNSHA&destination=NLRTM"


def test_a_worker_the_server_gives_no_connection_is_not_ready_until_it_does(dsn, world, tmp_path):
    # At HPA max: the kubelet's probe opened the probe's connection first, and the server
    # then refused the pool's. Every request got a fast 503 while /readyz said ok, so the
    # balancer kept sending the pod its share (a review measured 13733 such 503s in 10 s).
    with limited_api(dsn, world, tmp_path) as (limit, base, probes):
        assert requests.get(probes + "/readyz", timeout=10).status_code == 200
        limit(1, end="rates-api")  # the probe's connection is all the role may have

        assert {requests.get(base + RATES, timeout=10).status_code for _ in range(5)} == {503}
        ready = [requests.get(probes + "/readyz", timeout=10) for _ in range(3)]
        assert {r.status_code for r in ready} == {503}
        assert "connection" in ready[0].json()["error"]

        limit(-1)  # no request reaches an unready pod: its probe tries the pool again
        wait_for(lambda: requests.get(probes + "/readyz", timeout=10).status_code == 200, timeout=10,
                 interval=0.5, what="the worker to be ready once the server gives it connections")
        assert requests.get(base + RATES, timeout=10).status_code == 200


def test_a_worker_whose_probe_connection_is_refused_while_its_pool_serves_stays_ready(dsn, world, tmp_path):
    # The other way round, as when every pod reconnects at once near max_connections: a
    # pod answering every request must not leave the Service for its probe's connection.
    with limited_api(dsn, world, tmp_path) as (limit, base, probes):
        assert requests.get(base + RATES, timeout=10).status_code == 200
        assert requests.get(probes + "/readyz", timeout=10).status_code == 200
        with psycopg2.connect(dsn) as admin:
            pooled = connections_of(admin)["rates-api"]
        admin.close()
        limit(pooled, end="rates-api-probe")

        ready = [requests.get(probes + "/readyz", timeout=10) for _ in range(3)]
        assert [r.status_code for r in ready] == [200] * 3, [r.text for r in ready]
        assert requests.get(base + RATES, timeout=10).status_code == 200
        with psycopg2.connect(dsn) as admin:
            assert "rates-api-probe" not in connections_of(admin)  # it was refused, not reopened
        admin.close()


def test_a_busy_worker_whose_probe_connection_is_refused_stays_ready(dsn, world, tmp_path):
    # Every connection of the pool lent, the probe's refused: busy, as on the API's port,
    # not unavailable (taking loaded pods out of rotation only loads the rest more).
    with limited_api(dsn, world, tmp_path) as (limit, base, probes):
        blocker = psycopg2.connect(dsn)
        try:
            blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(4) as clients:
                held = [clients.submit(requests.get, base + RATES, timeout=60) for _ in range(4)]
                wait_for(lambda: lock_waiters(world, application_name="rates-api") == 4, timeout=20,
                         what="every thread to wait on the lock")
                limit(4, end="rates-api-probe")
                ready = [requests.get(probes + "/readyz", timeout=10) for _ in range(3)]
                blocker.rollback()
                assert [r.status_code for r in ready] == [200] * 3, [r.text for r in ready]
                assert {r.json().get("database") for r in ready} == {"busy"}
                assert [f.result().status_code for f in held] == [200] * 4
        finally:
            blocker.close()
