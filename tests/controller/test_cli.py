"""``python -m rates_controller`` as the chart runs it: configured by the environment,
serving /metrics and /healthz, stopping cleanly on SIGTERM."""

import json
import signal
import subprocess
import sys

import pytest
import requests

from tests.support.kube import token_kubeconfig
from tests.support.uploads import ingest_jobs
from tests.support.poll import wait_for


def test_a_missing_setting_is_one_line_and_exit_2():
    env = {"PATH": "/usr/bin:/bin", "JOB_IMAGE": "i", "JOB_NAMESPACE": "n"}
    result = subprocess.run([sys.executable, "-m", "rates_controller"], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 2
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["error"] == "environment variable QUEUE_URL is required"
    assert line["service"] == "rates-controller"  # as on every other line it writes


@pytest.mark.kube
def test_it_creates_jobs_reports_metrics_and_stops_on_sigterm(kube, namespace, uploads, sqs,
                                                              controller_process, tmp_path):
    process, url = controller_process()
    uploads.put("p.csv", b"x")

    wait_for(lambda: ingest_jobs(kube, namespace), timeout=30, what="the controller to create a Job")

    # Counted once the create's answer is read, which may come just after the Job shows.
    wait_for(lambda: 'rates_controller_jobs_created_total{attempt="first"} 1.0'
             in requests.get(f"{url}/metrics", timeout=5).text, timeout=10, what="the Job to be counted")
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    wait_for(lambda: sqs.counts() == (0, 0), timeout=10, what="the message to be deleted")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0  # within one long poll, well inside a pod's grace period
    lines = [json.loads(line) for line in (tmp_path / "controller.log").read_text().splitlines()]
    ours = [line["event"] for line in lines if "logger" not in line]  # libraries' lines name their logger
    assert ours[0] == "started" and ours[-1] == "stopped"
    assert {line.get("service") for line in lines} == {"rates-controller"}


@pytest.fixture
def refused_at_start(sqs, namespace, moto_endpoint, kubeconfig):
    """start(**settings) -> the one-line error of a controller that exits 2 at startup."""
    from tests.support.uploads import controller_env

    def start(**settings) -> str:
        env = {**controller_env(sqs, namespace, moto_endpoint, kubeconfig, 0), **settings}
        result = subprocess.run([sys.executable, "-m", "rates_controller"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        return json.loads(result.stdout.splitlines()[-1])["error"]

    return start


@pytest.mark.kube
def test_job_settings_the_api_server_refuses_stop_it_at_start(refused_at_start):
    error = refused_at_start(JOB_MEMORY_REQUEST="512Mi", JOB_MEMORY_LIMIT="64Mi")
    assert "the API server refuses the Jobs these settings make" in error and "memory" in error


@pytest.mark.kube
def test_a_placement_the_api_server_refuses_stops_it_at_start(refused_at_start):
    scheduling = {"tolerations": [{"key": "spot", "operator": "Sometimes", "effect": "NoSchedule"}]}
    error = refused_at_start(JOB_SCHEDULING=json.dumps(scheduling))
    assert "the API server refuses the Jobs these settings make" in error and "operator" in error


@pytest.mark.kube
def test_its_jobs_are_placed_as_configured(kube, namespace, uploads, controller_process):
    scheduling = {"nodeSelector": {"workload": "batch"},
                  "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]}
    controller_process(JOB_SCHEDULING=json.dumps(scheduling))
    uploads.put("p.csv", b"x")

    [job] = wait_for(lambda: ingest_jobs(kube, namespace), timeout=30, what="the controller to create a Job")
    pod = job.spec.template.spec
    assert pod.node_selector == {"workload": "batch"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("spot", "Exists", "NoSchedule")]


@pytest.mark.kube
def test_a_metrics_port_in_use_is_a_configuration_error(refused_at_start):
    import socket

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        error = refused_at_start(METRICS_PORT=str(taken.getsockname()[1]))

    assert "Address already in use" in error


def test_no_aws_region_is_a_configuration_error(tmp_path):
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1")
    env = {"PATH": "/usr/bin:/bin", "QUEUE_URL": "http://127.0.0.1:1/q", "DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:1/d",
           "JOB_IMAGE": "i", "JOB_NAMESPACE": "n", "KUBECONFIG": str(kubeconfig), "METRICS_PORT": "0",
           "AWS_REGION": "eu-west-1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    result = subprocess.run([sys.executable, "-m", "rates_controller"], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "set AWS_DEFAULT_REGION" in json.loads(result.stdout.splitlines()[-1])["error"]



@pytest.mark.parametrize("text", ["a: [\n", "garbage\n", "users: 3\n"], ids=["not-yaml", "a-string", "wrong-shape"])
def test_a_malformed_kubeconfig_is_a_configuration_error(tmp_path, text):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "QUEUE_URL": "http://127.0.0.1:1/q", "DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:1/d",
           "JOB_IMAGE": "i", "JOB_NAMESPACE": "n", "KUBECONFIG": str(kubeconfig), "METRICS_PORT": "0",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    result = subprocess.run([sys.executable, "-m", "rates_controller"], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 2, result.stdout + result.stderr
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert "no usable KUBECONFIG" in line["error"] and "exception" not in line, line

# The control loop logs on the main thread, where signal handlers run too.
_LOGGING_WHEN_SIGNALLED = """
import os, signal, threading, time
from types import SimpleNamespace
from rates_core import logs
from rates_controller.cli import stop_on_signals

logs.configure("INFO")
log = logs.get_logger("rates_controller")
controller = SimpleNamespace(stopping=threading.Event())
received = stop_on_signals(controller)
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
line = "x" * 200_000  # long writes: the signal lands inside one
while not controller.stopping.is_set():
    log.info("job created", detail=line)
log.info("stopped", signal=received[0])
"""


def test_a_signal_in_the_middle_of_a_log_line_stops_the_loop():
    result = subprocess.run([sys.executable, "-c", _LOGGING_WHEN_SIGNALLED], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=30)  # hung: TimeoutExpired
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert (last["event"], last["signal"]) == ("stopped", signal.SIGTERM)


# The handler may also land inside the stop event's own wait, which holds the event's lock.
_SIGNALLED_INSIDE_THE_EVENTS_WAIT = """
import os, signal, threading, time
from types import SimpleNamespace
from rates_controller.cli import stop_on_signals

controller = SimpleNamespace(stopping=threading.Event())
received = stop_on_signals(controller)
with controller.stopping._cond:  # as Event.wait() holds it, between its checks
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # the handler has run by now, on this thread
print(controller.stopping.wait(10), received)
"""


def test_a_signal_inside_the_stop_events_wait_stops_the_loop():
    result = subprocess.run([sys.executable, "-c", _SIGNALLED_INSIDE_THE_EVENTS_WAIT], capture_output=True,
                            text=True, timeout=30)  # hung: TimeoutExpired
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", f"[{int(signal.SIGTERM)}]"]


def _env_without_a_cluster(tmp_path, **settings) -> dict:
    """A controller's environment whose API server and SQS are not there (connections refused)."""
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1")
    return {"PATH": "/usr/bin:/bin", "QUEUE_URL": "http://127.0.0.1:1/q", "DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:1/d",
            "JOB_IMAGE": "i", "JOB_NAMESPACE": "n", "KUBECONFIG": str(kubeconfig), "METRICS_PORT": "0",
            "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", **settings}


# A bug in the control loop: an exception that is no TemporaryError escapes it.
_BUG_IN_THE_LOOP = """
import sys
from rates_controller import cli
from rates_controller.controller import Controller

def run(self):
    raise KeyError("x")

Controller.run = run
sys.exit(cli.main())
"""


def test_a_bug_is_one_json_line_with_its_traceback_and_exit_1(tmp_path):
    # Python's plain-text traceback on stderr would be split into an event per line.
    result = subprocess.run([sys.executable, "-c", _BUG_IN_THE_LOOP], env=_env_without_a_cluster(tmp_path),
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 1 and result.stderr == "", result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # every one of them JSON
    last = lines[-1]
    assert lines[-2]["event"] == "started"
    assert (last["event"], last["level"], last["error"], last["service"]) == (
        "unexpected error", "error", "KeyError: 'x'", "rates-controller")
    assert "Traceback" in last["exception"] and last["exception"].rstrip().endswith("KeyError: 'x'")


def test_a_metrics_port_in_use_is_a_configuration_error_that_names_it(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "rates_controller"],
                                env=_env_without_a_cluster(tmp_path, METRICS_PORT=str(port)),
                                capture_output=True, text=True, timeout=60)

    assert result.returncode == 2, result.stdout + result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "configuration error"
    assert last["error"] == f"METRICS_PORT {port}: [Errno 98] Address already in use"  # which port, which variable
