"""The Kubernetes boundary: its reading of pods (plain fakes: pods with several failed
tries are slow to make on a real cluster), and its calls against servers that misbehave."""

import contextlib
import datetime
import http.server
import threading
from types import SimpleNamespace
from typing import Iterator

import pytest
from kubernetes.config import kube_config

from rates_controller import jobs, kube
from rates_controller.kube import JobsApi
from tests.support.kube import token_kubeconfig
from tests.support.net import SilentServer, answer
from tests.support.poll import wait_for


def pod(finished_minute: int, message: str | None, exit_code: int = 1, container: str = jobs.CONTAINER,
        reason: str = "Error"):
    ended = SimpleNamespace(exit_code=exit_code, reason=reason, message=message, started_at=None,
                            finished_at=datetime.datetime(2026, 1, 1, 0, finished_minute, tzinfo=datetime.timezone.utc))
    status = SimpleNamespace(name=container, state=SimpleNamespace(terminated=ended))
    return SimpleNamespace(status=SimpleNamespace(container_statuses=[status]))


class Pods:
    def __init__(self, *pods):
        self.pods = list(pods)

    def list_namespaced_pod(self, namespace, label_selector, _request_timeout):
        return SimpleNamespace(items=self.pods)


def jobs_api(*pods) -> JobsApi:
    api = JobsApi.__new__(JobsApi)  # no API server: only the pod listing is faked
    api._core, api.namespace = Pods(*pods), "n"
    return api


def test_the_last_failed_try_of_a_job_is_the_one_quoted():
    # With retries inside a Job (backoffLimit > 0) its pods fail one after another.
    api = jobs_api(pod(5, "second try"), pod(1, "first try"), pod(9, "ok", exit_code=0),
                   pod(7, "a sidecar", container="istio-proxy"))
    assert api.termination_message("j") == jobs.Termination("Error", 1, "second try")
    assert jobs_api().termination_message("j") is None


def test_a_try_killed_before_it_logged_anything_is_the_one_quoted_all_the_same():
    # An OOM kill of a pod that had logged nothing leaves no message: its reason is the news.
    api = jobs_api(pod(1, "first try"), pod(5, None, exit_code=137, reason="OOMKilled"))
    assert api.termination_message("j") == jobs.Termination("OOMKilled", 137, "")


def test_a_call_to_a_hung_api_server_is_tried_once(tmp_path, monkeypatch):
    # The control loop retries; urllib3's own retries multiplied each call's timeout.
    with SilentServer() as silent:
        kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{silent.port}")
        # (KUBECONFIG is read when the client is imported)
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        monkeypatch.setattr(kube, "REQUEST_TIMEOUT", (1, 0.2))
        api = JobsApi(kube.api_client(), "n")
        manifest = {"metadata": {"name": "j"}}
        calls = {"get": lambda: api.get("j"), "unhandled": api.unhandled,
                 "termination_message": lambda: api.termination_message("j"),
                 "create": lambda: api.create(manifest), "validate": lambda: api.validate(manifest),
                 "mark_handled": lambda: api.mark_handled("j", "done", 3600)}
        for name, call in calls.items():
            before = len(silent.accepted)
            # Each call gives up after REQUEST_TIMEOUT's 0.2 s; one without it would wait for ever.
            raised = _raised_within(10, call, name)
            # Unreachable: the pass over ended Jobs leaves the rest for later on it.
            assert isinstance(raised, kube.Unreachable) and "unreachable" in str(raised), (name, raised)
            # The server's thread records the connection: it may do so after the call gave up.
            wait_for(lambda: len(silent.accepted) > before, timeout=30, what=f"{name}'s connection")
            assert len(silent.accepted) - before == 1, name


def _raised_within(seconds: float, call, what: str) -> BaseException | None:
    """What ``call()`` raised (None if it returned); fails if it did neither within ``seconds``."""
    raised = []

    def run():
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)
        else:
            raised.append(None)

    thread = threading.Thread(target=run, daemon=True)  # a call that hangs must not hold pytest's exit
    thread.start()
    thread.join(seconds)
    assert raised, f"{what} still waited after {seconds} s"
    return raised[0]


class _Throttling(http.server.BaseHTTPRequestHandler):
    """An API server over its clients' share (API Priority and Fairness): 429 with
    Retry-After to the first ``refusals`` requests, then 201."""

    refusals = 0
    retry_after = "0"
    seen: list[str] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(self.path)
        if len(self.seen) <= self.refusals:
            self.send_response(429)
            self.send_header("Retry-After", self.retry_after)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"kind": "Status", "reason": "TooManyRequests", "message": "too many requests"}')
            return
        answer(self, 201, "application/json", b'{"kind": "Job"}')

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _throttling_api(tmp_path, monkeypatch, **handler_settings) -> Iterator[tuple[JobsApi, type[_Throttling]]]:
    """A JobsApi on a _Throttling server with ``handler_settings``; (api, handler class)."""
    handler = type("Handler", (_Throttling,), {"seen": [], **handler_settings})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        yield JobsApi(kube.api_client(), "n"), handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("refusals, created", [(kube.THROTTLED_TRIES - 1, True), (kube.THROTTLED_TRIES, False)])
def test_a_throttled_create_is_tried_again_inside_the_call(tmp_path, monkeypatch, refusals, created):
    # Otherwise one 429 sent the whole batch of messages back, each delivery counted.
    with _throttling_api(tmp_path, monkeypatch, refusals=refusals) as (api, handler):
        manifest = {"metadata": {"name": "ingest-x-1"}}
        if created:
            assert api.create(manifest) is True
        else:
            with pytest.raises(kube.Throttled, match="429"):
                api.create(manifest)
        assert len(handler.seen) == min(refusals + 1, kube.THROTTLED_TRIES)


def test_a_throttled_call_waits_no_longer_than_throttled_wait_max_s_whatever_retry_after_asks(tmp_path,
                                                                                              monkeypatch):
    # The control loop is one thread: an hour's wait asked for would stall every message.
    with _throttling_api(tmp_path, monkeypatch, refusals=1, retry_after="3600") as (api, handler):
        bound = 3 * kube.THROTTLED_WAIT_MAX_S  # it waits THROTTLED_WAIT_MAX_S, then creates
        assert _raised_within(bound, lambda: api.create({"metadata": {"name": "ingest-x-1"}}), "create") is None
        assert len(handler.seen) == 2
