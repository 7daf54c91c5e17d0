"""A connection gets HEADER_TIMEOUT_S to send its request line and headers (rates_api.worker).

gunicorn's gthread worker reads them in one of its threads, blocking and without a limit:
a client that sent part of its headers and then nothing held the thread for good, and a
few such connections held every thread of a worker, unseen (they never reach the app, so
neither the hung-request watchdog nor /readyz saw them).
"""

import json
import socket
import subprocess
import sys
import threading
import time

import psycopg2
import requests

from rates_api.worker import HEADER_TIMEOUT_S
from tests.support.api import gunicorn_server
from tests.support.db import lock_waiters
from tests.support.poll import wait_for
from tests.support.world import insert_prices

THREADS = 2
STALLED = b"GET / HTTP/1.1\r\nHost: x\r\nX-a: a"  # and then nothing


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _cut_count(base: str) -> float:
    for line in requests.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith("rates_api_header_timeouts_total "):
            return float(line.split()[1])
    return 0.0


def _read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, headers, body)."""
    reader = sock.makefile("rb")
    status = int(reader.readline().split()[1])
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers["content-length"]))
    return status, headers, body


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(60)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_connections_stalled_in_their_headers_are_closed_and_the_threads_serve_again(dsn, tmp_path):
    log = tmp_path / "gunicorn.log"
    with gunicorn_server(dsn, tmp_path, output=log, WEB_CONCURRENCY="1", GUNICORN_THREADS=str(THREADS),
                         SHUTDOWN_DRAIN_SECONDS="0") as (_, base):
        # One more than the worker has threads: the last waits for a thread, and gets its
        # own deadline once it has one.
        stalled = [socket.create_connection(("127.0.0.1", _port(base)), timeout=10) for _ in range(THREADS + 1)]
        try:
            for sock in stalled:
                sock.sendall(STALLED)
            # Queued behind them; before, it was never answered.
            assert requests.get(base + "/", timeout=120).status_code == 200
            assert all(_closed_by_server(sock) for sock in stalled)
        finally:
            for sock in stalled:
                sock.close()
        wait_for(lambda: _cut_count(base) == THREADS + 1, timeout=30, what="the cut connections to be counted")
        # Closed, not answered: nothing counted as a request gunicorn refused (a 400).
        assert 'route="<gunicorn>"' not in requests.get(base + "/metrics", timeout=10).text
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    cut = [line for line in lines if "did not send its request line and headers" in line.get("event", "")]
    assert len(cut) == THREADS + 1, cut
    assert all(line["level"] == "warning" and "127.0.0.1:" in line["event"] for line in cut), cut


def test_a_slow_client_that_sends_its_headers_in_time_is_served(dsn, tmp_path):
    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS="1",
                         SHUTDOWN_DRAIN_SECONDS="0") as (_, base):
        with socket.create_connection(("127.0.0.1", _port(base)), timeout=30) as sock:
            for piece in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"Accept: application/json\r\n",
                          b"Connection: close\r\n"):
                sock.sendall(piece)
                time.sleep(HEADER_TIMEOUT_S / 10)
            sock.sendall(b"\r\n")
            status, headers, body = _read_response(sock)
    assert status == 200 and json.loads(body)["version"], (status, headers, body)


def test_a_kept_alive_connection_may_idle_past_the_deadline_between_requests(dsn, tmp_path):
    # The deadline starts when a request's bytes come; an idle connection waits in the
    # worker's poller, without a thread, for as long as GUNICORN_KEEPALIVE (75 s).
    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS="1",
                         SHUTDOWN_DRAIN_SECONDS="0") as (_, base):
        with socket.create_connection(("127.0.0.1", _port(base)), timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock)[0] == 200
            time.sleep(HEADER_TIMEOUT_S + 3)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_response(sock)[0] == 200
        assert _cut_count(base) == 0


def test_a_request_the_app_takes_longer_than_the_deadline_to_answer_is_not_cut(dsn, world, tmp_path):
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", 10)])
    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS="2", SHUTDOWN_DRAIN_SECONDS="0",
                         DB_STATEMENT_TIMEOUT_MS="120000") as (_, base):
        url = base + "/rates?date_from=2024-03-01&date_to=2024-03-01&origin=CNSHA&destination=NLRTM"
        blocker = psycopg2.connect(dsn)
        answers = []
        try:
            blocker.cursor().execute("LOCK TABLE lane_totals IN ACCESS EXCLUSIVE MODE")
            request = threading.Thread(target=lambda: answers.append(requests.get(url, timeout=120)))
            request.start()
            wait_for(lambda: lock_waiters(world, application_name="rates-api") == 1, timeout=60,
                     what="the request to wait on the lock")
            time.sleep(HEADER_TIMEOUT_S + 3)
        finally:
            blocker.rollback()
            blocker.close()
        request.join(timeout=120)
        assert [answer.status_code for answer in answers] == [200]
        assert _cut_count(base) == 0


def test_the_worker_module_imports_neither_flask_nor_prometheus_client():
    # gunicorn's master imports the worker class before it sets PROMETHEUS_MULTIPROC_DIR
    # (gunicorn.conf.py's when_ready): prometheus_client imported then would keep every
    # forked worker's metrics in its own memory, and /metrics would show none of them.
    code = ("import sys, rates_api.worker; "
            "print(sorted(m for m in ('flask', 'prometheus_client', 'rates_api.app') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
