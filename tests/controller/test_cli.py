"""``python -m rates_controller`` as the chart runs it: configured by the environment,
serving /metrics and /healthz, stopping cleanly on SIGTERM."""

import json
import signal
import subprocess
import sys

import pytest
import requests

from tests.controller.conftest import ingest_jobs
from tests.support.poll import wait_for


def test_a_missing_setting_is_one_line_and_exit_2():
    env = {"PATH": "/usr/bin:/bin", "JOB_IMAGE": "i", "JOB_NAMESPACE": "n"}
    result = subprocess.run([sys.executable, "-m", "rates_controller"], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 2
    [line] = result.stdout.splitlines()
    assert json.loads(line)["error"] == "environment variable QUEUE_URL is required"


@pytest.mark.kube
def test_it_creates_jobs_reports_metrics_and_stops_on_sigterm(kube, namespace, uploads, sqs,
                                                              controller_process, tmp_path):
    process, url = controller_process()
    uploads.put("p.csv", b"x")

    wait_for(lambda: ingest_jobs(kube, namespace), timeout=30, what="the controller to create a Job")

    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'rates_controller_jobs_created_total{attempt="1"} 1.0' in metrics
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    wait_for(lambda: sqs.counts() == (0, 0), timeout=10, what="the message to be deleted")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0  # within one long poll, well inside a pod's grace period
    lines = [json.loads(line) for line in (tmp_path / "controller.log").read_text().splitlines()]
    ours = [line["event"] for line in lines if "logger" not in line]  # libraries' lines name their logger
    assert ours[0] == "started" and ours[-1] == "stopped"
