"""The controller's metrics as Prometheus reads them."""

import re
import socket
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
import requests
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from rates_controller.controller import Controller
from rates_controller.metrics import SET_ASIDE_REASONS, Metrics, serve
from rates_core import logs
from rates_core.errors import TemporaryError
from tests.support.net import free_port
from tests.support.poll import wait_for

# The README's figures for the server: one that held more connections, or held them
# longer, would let idle ones pile threads up in the controller.
DOCUMENTED_AT_ONCE_AT_MOST = 8
DOCUMENTED_READ_S = 5


def test_every_set_aside_reason_is_exported_at_zero_before_it_happens():
    # increase() needs a sample before the first set-aside, or that file raises no alert.
    exported = generate_latest(Metrics().registry).decode()
    for reason in SET_ASIDE_REASONS:
        assert f'rates_controller_files_set_aside_total{{reason="{reason}"}} 0.0' in exported


def test_every_job_result_is_exported_at_zero_before_it_happens():
    # The same for the retries: RatesControllerJobsRetried would not see a pod's first.
    exported = generate_latest(Metrics().registry).decode()
    for result in ("succeeded", "retried", "set-aside"):  # the Jobs' rates-platform/handled labels
        assert f'rates_controller_jobs_finished_total{{result="{result}"}} 0.0' in exported


def test_no_created_series_are_exported():
    # In a process of its own: the API's module turns them off for the whole process too.
    script = ("from prometheus_client import generate_latest; from rates_controller.metrics import Metrics;"
              "m = Metrics(); m.jobs_created.labels('first').inc(); print(generate_latest(m.registry).decode())")
    exported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert 'rates_controller_jobs_created_total{attempt="first"} 1.0' in exported
    assert "_created" not in exported.replace("jobs_created", "")


def test_the_process_start_time_is_exported_for_the_restart_alert():
    exported = generate_latest(Metrics().registry).decode()
    assert "\nprocess_start_time_seconds " in exported


def test_healthz_fails_once_the_loop_has_not_completed_a_pass_for_too_long():
    # The liveness probe's only signal: a stalled loop must answer 503, so the pod restarts.
    metrics = Metrics()
    server = serve(metrics, free_port(), stale_after=60, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        assert requests.get(url, timeout=5).status_code == 200
        metrics.last_loop_monotonic -= 61  # the time of day says nothing: a clock step back must not hide a stall
        stalled = requests.get(url, timeout=5)
        assert stalled.status_code == 503 and re.fullmatch(r"control loop stalled for 6\d s\n", stalled.text)
        metrics.loop_completed()
        assert requests.get(url, timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_idle_connections_hold_a_few_threads_for_seconds_only_and_the_probes_still_answer():
    # With a thread per connection and no limit, a review held 922 idle connections in 40 s,
    # each a thread, toward the pod's memory limit.
    server = serve(Metrics(), free_port(), stale_after=60, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_port}"
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.server_port), timeout=3 * DOCUMENTED_READ_S)
            for _ in range(3 * DOCUMENTED_AT_ONCE_AT_MOST)]
    try:
        # The last one is accepted after all the others; past the limit, it is closed.
        assert _closed(idle[-1])
        assert threading.active_count() <= threads + DOCUMENTED_AT_ONCE_AT_MOST
        for sock in idle:  # those held are closed at the deadline for a request
            assert _closed(sock)
        for path in ("/healthz", "/metrics"):
            wait_for(lambda: _status(base + path) == 200, timeout=3 * DOCUMENTED_READ_S, what=path)
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


def _closed(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` within its timeout, answering nothing."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.ConnectionError:  # closed unanswered while every thread is taken
        return None


class DownPass(Controller):
    """A controller whose every pass fails as when SQS or the API server is down."""

    def step(self) -> None:
        self.passes += 1
        if self.passes == 2:
            self.stopping.set()
        raise TemporaryError("the API server is down")


def test_a_pass_that_fails_for_a_service_outage_still_counts_as_alive(monkeypatch):
    # Restarting the controller would not bring SQS or the API server back.
    controller = DownPass(SimpleNamespace(), kube=None, uploads=None, dead_letters=None, metrics=Metrics(),
                          log=logs.get_logger("test"))
    controller.passes = 0
    controller.metrics.last_loop_at = 0.0
    monkeypatch.setattr(controller.stopping, "wait", lambda seconds: None)
    controller.run()
    assert controller.passes == 2 and controller.metrics.last_loop_at > 0


class DownService:
    """The API server's Jobs list, or SQS's receive, as when the service is down."""

    def unhandled(self):
        raise TemporaryError("the API server is down")

    def receive(self, *args):
        raise TemporaryError("SQS is down")


@pytest.mark.parametrize("kube, uploads, operation, error", [
    (DownService(), None, "list_jobs", "the API server is down"),
    (SimpleNamespace(unhandled=lambda: []), DownService(), "receive", "SQS is down"),
])
def test_a_pass_that_fails_says_will_retry_with_the_operation_the_errors_metric_counts(
        monkeypatch, kube, uploads, operation, error):
    # RatesControllerErrors and the runbook send operators to the "will retry" lines.
    settings = SimpleNamespace(max_active_jobs=4, poll_wait_seconds=1, visibility_timeout=30)
    controller = Controller(settings, kube=kube, uploads=uploads, dead_letters=None, metrics=Metrics(),
                            log=logs.get_logger("test"))
    monkeypatch.setattr(controller.stopping, "wait", lambda seconds: controller.stopping.set())
    with capture_logs() as logged:
        controller.run()
    assert [line for line in logged if line["log_level"] == "warning"] == [
        {"event": "will retry", "operation": operation, "error": error, "log_level": "warning"}]
    assert controller.metrics.registry.get_sample_value("rates_controller_errors_total",
                                                        {"operation": operation}) == 1
