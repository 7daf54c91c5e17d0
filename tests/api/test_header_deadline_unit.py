"""rates_api.worker's deadline bookkeeping without a gunicorn: which connections the
watchdog cuts, how often it counts each, what it says, and that it outlives a failing round
(tests/api/test_header_deadline.py runs it in a real worker)."""

import socket
import threading
from pathlib import Path
from unittest import mock

from gunicorn.workers.gthread import ThreadWorker

from rates_api import worker as worker_module
from rates_api.worker import HEADER_TIMEOUT_S, HeaderDeadlineWorker, _address
from tests.support.poll import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _worker() -> HeaderDeadlineWorker:
    """The worker's deadline state and nothing else (no arbiter, no sockets); its log and
    its counter are mocks."""
    worker = HeaderDeadlineWorker.__new__(HeaderDeadlineWorker)
    worker._reading, worker._reading_lock, worker._stopped = {}, threading.Lock(), threading.Event()
    worker.log, worker.on_header_timeout = mock.Mock(), mock.Mock()
    return worker


def _connection():
    return mock.Mock(client=("10.0.0.7", 4242), sock=mock.Mock(spec=socket.socket))


def _reading(worker: HeaderDeadlineWorker, conn, deadline: float) -> None:
    with worker._reading_lock:  # as handle() does: the watchdog reads the dict under it
        worker._reading[conn] = deadline


def test_a_connection_is_cut_at_its_deadline_counted_once_and_never_served(monkeypatch):
    """Its reading thread sees the shutdown only later, so the watchdog finds it again in
    the next rounds: cut and counted again, the counter (and RatesApiSlowClients) would
    count one client many times. And headers that came just as it was cut are not served:
    the socket is shut, no answer could be written."""
    worker, conn = _worker(), _connection()
    _reading(worker, conn, 100.0)
    worker._cut(99.0)
    assert worker.on_header_timeout.call_count == 0 and conn.sock.shutdown.call_count == 0
    worker._cut(100.0)  # at the deadline, not a round later
    assert worker.on_header_timeout.call_count == 1 and conn.sock.shutdown.call_count == 1
    worker._cut(101.0)  # the reading thread has not returned yet
    assert worker.on_header_timeout.call_count == 1 and conn.sock.shutdown.call_count == 1
    served = []
    monkeypatch.setattr(ThreadWorker, "handle_request", lambda self, req, c: served.append(c) or True)
    assert worker.handle_request(mock.Mock(), conn) is False and served == []


def test_a_round_that_fails_does_not_stop_the_watchdog(monkeypatch):
    """One thread per worker cuts every connection: if an error (the counter's metrics
    file, say) ended it, no connection would be cut again, and the worker's threads could be
    held for good, as before the deadline."""
    monkeypatch.setattr(worker_module, "CHECK_EVERY_S", 0.02)
    worker = _worker()
    worker.on_header_timeout.side_effect = [RuntimeError("the metrics file"), None]
    watchdog = threading.Thread(target=worker._cut_overdue, daemon=True)
    watchdog.start()
    try:
        _reading(worker, _connection(), 0.0)
        wait_for(lambda: worker.on_header_timeout.call_count == 1, timeout=30, what="the first cut")
        _reading(worker, _connection(), 0.0)
        wait_for(lambda: worker.on_header_timeout.call_count == 2, timeout=30, what="a later round's cut")
    finally:
        worker._stopped.set()
        watchdog.join(timeout=30)
    worker.log.exception.assert_called_once()


def test_the_warning_names_the_client_as_host_and_port_an_ipv6_one_bracketed():
    # Without brackets an IPv6 address runs into its port, and the runbook's lookup of
    # the pod by its IP ("without the port") goes wrong.
    assert _address(("10.0.0.7", 4242)) == "10.0.0.7:4242"
    assert _address(("fd00::7", 4242, 0, 0)) == "[fd00::7]:4242"
    assert _address("") == "(unix socket)"


def test_the_alert_and_the_runbook_state_the_deadline_the_worker_has():
    """RatesApiSlowClients' text and the runbook tell operators how long each such
    connection holds a thread: a HEADER_TIMEOUT_S changed alone would make them wrong."""
    said = f"{HEADER_TIMEOUT_S} s"
    rule = (ROOT / "charts/rates-api/templates/prometheusrule.yaml").read_text()
    assert f"request line and headers within {said}; each held a request thread for those {said}" in rule
    assert f"holds one of a pod's request threads for {said}" in (ROOT / "runbook/README.md").read_text()
