"""The ingest job's image, built from ingest-job/Dockerfile (tests/support/images.py) and
run as the controller's Jobs run it: its ENTRYPOINT with the file's bucket and key, as
the non-root USER on a read-only root filesystem, with only /tmp and /dev/shm writable."""

import json

import pytest

from tests.ingest.conftest import ROWS, as_csv, encode, last_run, prices
from tests.support.aws import FAKE_AWS_ENV
from tests.support.db import INGEST_USER, as_user
from tests.support.images import postgres_socket


@pytest.fixture
def run_image(images, db, s3, moto_endpoint):
    """run_image(key) -> the finished container, loading s3's ``key`` into the test's database."""
    image = images("ingest-job")
    url = as_user(db[0], INGEST_USER)
    files = postgres_socket(url)
    env = {**FAKE_AWS_ENV, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_ENDPOINT_URL": moto_endpoint, "DATABASE_URL": url}

    def run(key: str):
        return image.run(["--bucket", s3.name, "--key", key], env=env, files=files)
    return run


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
