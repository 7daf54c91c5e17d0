"""pytest fixtures for the API: Flask test clients of apps on the test's database.

* ``settings``     the API settings for this test's database
* ``make_client``  make(settings) -> a test client; the apps' pools close after the test
* ``client``       a test client of an app on this test's database
* ``rates``        GET /rates with the given parameters -> (status, json)

``gunicorn_server`` runs the API as the image does, under gunicorn, in a process of its own.
"""

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from rates_api import create_app
from rates_api.settings import Settings
from ratesctl.commands import gunicorn_argv
from tests.support.db import API_USER, as_user
from tests.support.net import free_port, listens, wait_for_http
from tests.support.poll import wait_for
from tests.support.proc import stop_process


@contextmanager
def gunicorn_server(dsn: str, tmp_path: Path, *, output: Path | None = None,
                    **env: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """(process, base URL) of gunicorn serving the API on ``dsn`` until the block ends,
    ready; ``env`` adds to or overrides the environment (PORT too: a test that needs another
    port as well, the probes', takes both from one free_ports call, which can't repeat one).
    Its stdout and stderr go to the file ``output``, if given."""
    port = int(env["PORT"]) if "PORT" in env else free_port()
    environ = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "HOST": "127.0.0.1",
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), **env}
    if output is None:
        process = subprocess.Popen(gunicorn_argv(), env=environ, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        with open(output, "wb") as out:
            process = subprocess.Popen(gunicorn_argv(), env=environ, cwd=tmp_path,
                                       stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        # Another process (the other test worker's) may have taken the port since free_port():
        # answers count once ours holds it, or it would be another server that answered.
        wait_for(lambda: listens(process.pid, port) or process.poll() is not None, timeout=30,
                 what=f"gunicorn to listen on port {port}")
        wait_for_http(base + "/readyz", process=process)
        yield process, base
    finally:
        stop_process(process)


@pytest.fixture
def settings(dsn) -> Settings:
    # As the API's own read-only user, as deployed: a grant it lacks fails the tests.
    return Settings.from_env({"DATABASE_URL": as_user(dsn, API_USER), "APP_VERSION": "test-1"})


@pytest.fixture
def make_client():
    """Make Flask test clients of apps with the given settings; their pools close after the test."""
    apps = []

    def make(settings: Settings):
        apps.append(create_app(settings))
        return apps[-1].test_client()

    yield make
    for app in apps:
        app.extensions["rates_api"].pool.close()


@pytest.fixture
def client(settings, make_client):
    """A Flask test client of an app on this test's database."""
    return make_client(settings)


@pytest.fixture
def rates(client):
    """GET /rates with the given parameters; returns (status, json)."""
    def get(**params):
        response = client.get("/rates", query_string=params)
        return response.status_code, response.get_json()
    return get
