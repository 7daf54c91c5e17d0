"""`make api` runs `ratesctl serve`: gunicorn on $HOST:$PORT against $DATABASE_URL."""

import os
import signal
import subprocess
import sys

import requests

from tests.support.net import free_port, wait_for_http
from tests.support.proc import stop_process


def test_ratesctl_serve_binds_port_and_reports_version(dsn, tmp_path):
    port = free_port()
    # A metrics directory of the test's own: gunicorn would make one in /dev/shm and
    # leave it behind if the test has to kill it.
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "APP_VERSION": "9.9.9",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
           "WEB_CONCURRENCY": "1", "SHUTDOWN_DRAIN_SECONDS": "0"}
    env.pop("HOST", None)
    process = subprocess.Popen([sys.executable, "-m", "ratesctl.cli", "serve"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", process=process)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()["version"] == "9.9.9"
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'rates_api_requests_total{method="GET",route="/",status="200"} 1.0' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        stop_process(process)
