"""The ingest job's image, built from ingest-job/Dockerfile (tests/support/images.py) and
run as the controller's Jobs run it: its ENTRYPOINT with the file's bucket and key, as
the non-root USER on a read-only root filesystem, with only /tmp and /dev/shm writable."""

import json
import signal
import subprocess

import psycopg2
import pytest

from tests.ingest.conftest import ROWS, as_csv, encode, last_run, prices
from tests.support.aws import FAKE_AWS_ENV
from tests.support.db import INGEST_USER, as_user, lock_waiters
from tests.support.images import postgres_socket
from tests.support.poll import wait_for


@pytest.fixture
def job_options(images, db, s3, moto_endpoint) -> dict:
    """Image.start/run options that load s3's ``key`` into the test's database: call with key=."""
    url = as_user(db[0], INGEST_USER)
    env = {**FAKE_AWS_ENV, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_ENDPOINT_URL": moto_endpoint, "DATABASE_URL": url}
    return lambda key: {"args": ["--bucket", s3.name, "--key", key], "env": env, "files": postgres_socket(url)}


@pytest.fixture
def run_image(images, job_options):
    """run_image(key) -> the finished container, loading s3's ``key`` into the test's database."""
    return lambda key: images("ingest-job").run(**job_options(key))


def test_the_image_loads_a_gzip_file(run_image, db, s3):
    _dsn, conn = db
    s3.put("prices/2016/01/week 1.csv.gz", encode("csv.gz", ROWS))
    done = run_image("prices/2016/01/week 1.csv.gz")
    assert done.returncode == 0, done.stdout + done.stderr
    assert prices(conn) == sorted((o, d, day, p) for o, d, day, p in ROWS)
    assert last_run(conn)["status"] == "loaded"
    [finished] = [json.loads(line) for line in done.stdout.splitlines() if '"rows"' in line][-1:]
    assert finished["rows"] == len(ROWS)


def test_the_image_rejects_a_bad_file_with_exit_2(run_image, db, s3):
    _dsn, conn = db
    s3.put("prices/bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 10)]))
    done = run_image("prices/bad.csv")
    assert done.returncode == 2, done.stdout + done.stderr
    assert prices(conn) == []
    assert last_run(conn)["status"] == "rejected" and "XXXXX" in last_run(conn)["error"]


def test_sigterm_to_the_image_mid_load_ends_it_at_once_and_commits_nothing(images, job_options, db, s3):
    # In its pod the job is PID 1, which gets only the signals it handles: it must handle SIGTERM
    # (a Job's deadline, a node drain) itself, or it would wait for SIGKILL at the grace period's end.
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS * 500))
    blocker = psycopg2.connect(dsn)  # holds data_version: the load waits inside its COPY's trigger
    blocker.cursor().execute("SELECT version FROM data_version FOR UPDATE")
    job = images("ingest-job").start(**job_options("p.csv"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
    try:
        wait_for(lambda: lock_waiters(conn, application_name="rates-ingest", query_prefix="COPY prices"),
                 timeout=60, interval=0.05, what="the loader to wait inside its COPY")
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=30)  # while the blocker still holds its lock
    finally:
        job.kill()
        job.wait()
        blocker.close()
    assert job.returncode == 1, output
    assert prices(conn) == []
    assert "terminated by signal 15" in last_run(conn)["error"]
