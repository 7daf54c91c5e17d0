"""The API's image, built from api/Dockerfile (tests/support/images.py) and run as its
pods run it: as the image's non-root USER on a read-only root filesystem, with only /tmp
(the chart's emptyDir) and /dev/shm writable. The same image migrates the database, as the
chart's hook Job does, with /tmp read-only: the hook mounts nothing there."""

import json
import signal

import pytest
import requests
from yoyo import read_migrations

from rates_core import migrate

from tests.support.db import API_USER, as_user, autocommit
from tests.support.images import container_pid, postgres_socket
from tests.support.net import free_port, wait_for_http
from tests.support.poll import wait_for
from tests.support.proc import stop_process
from tests.support.world import insert_prices, insert_world

# charts/rates-api/templates/migrations-job.yaml
MIGRATE = ["python", "-m", "rates_core.migrate"]
DAY = "2016-01-05"


@pytest.fixture
def api_image(images):
    return images("api")


def test_the_image_migrates_an_empty_database(api_image, empty_dsn):
    files = postgres_socket(empty_dsn)
    done = api_image.run(command=MIGRATE, env={"DATABASE_URL": empty_dsn}, files=files)
    assert done.returncode == 0, done.stdout + done.stderr
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT migration_id, username FROM _yoyo_log WHERE operation = 'apply' ORDER BY created_at_utc")
        log = cur.fetchall()
    # Each migration, then the hook that makes the users' rights good (it runs every time).
    assert [m for m, _ in log] == [m.id for m in read_migrations(str(migrate.MIGRATIONS_DIR))] + ["post-apply"]
    assert {user for _, user in log} == {"uid-10001"}  # the image's numeric user has no passwd entry
    again = api_image.run(command=MIGRATE, env={"DATABASE_URL": empty_dsn}, files=files)
    assert again.returncode == 0, again.stderr


def test_the_migration_ends_on_sigterm_as_the_hook_pods_first_process(api_image, empty_dsn, tmp_path):
    """A hook pod is stopped with SIGTERM (its deadline, a drain). A container's first
    process never even sees a signal it has no handler for: the migration would go on until
    the SIGKILL 30 s later, and might commit after helm had called the release failed."""
    files = postgres_socket(empty_dsn)
    output = tmp_path / "migrate.log"
    with autocommit(empty_dsn) as other, other.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, %s)", migrate.MIGRATION_LOCK)  # a migration in progress
        with open(output, "wb") as log:
            hook = api_image.start(command=MIGRATE, env={"DATABASE_URL": empty_dsn, "MIGRATION_LOCK_WAIT_SECONDS": "120"},
                                   files=files, stdout=log, stderr=log)
        try:
            wait_for(lambda: "another migration is running" in output.read_text(), timeout=60,
                     what="the migration to wait for the other one")
            hook.send_signal(signal.SIGTERM)
            code = hook.wait(timeout=15)
        finally:
            stop_process(hook)
    said = [json.loads(line) for line in output.read_text().splitlines()]
    assert code == 1, output.read_text()  # may pass on retry
    assert said[-2]["event"].startswith("terminated") and said[-2]["signal"] == "SIGTERM"
    assert said[-1]["event"].startswith("stopped")


def test_the_image_serves_rates_and_metrics_and_stops_cleanly_on_sigterm(api_image, dsn, conn, tmp_path):
    insert_world(conn)
    insert_prices(conn, [("CNSHA", "NLRTM", DAY, 1000), ("CNNGB", "DEHAM", DAY, 1300), ("CNSHA", "SEGOT", DAY, 1600)])
    url = as_user(dsn, API_USER)
    files = postgres_socket(url)
    port = free_port()
    with open(tmp_path / "api.log", "wb") as log:
        server = api_image.start(env={"DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(port),
                                      "SHUTDOWN_DRAIN_SECONDS": "0.5"}, files=files, stdout=log, stderr=log,
                                 writable_tmp=True)  # the chart's /tmp emptyDir
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/readyz", process=server, timeout=60)
        answer = requests.get(f"{base}/rates", params={"date_from": DAY, "date_to": DAY, "origin": "china",
                                                       "destination": "north_europe"}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == [{"day": DAY, "average_price": 1300}]
        # Counted across the workers, in files under /dev/shm.
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'rates_api_request_duration_seconds_count{method="GET",route="/rates",status="200"} 1.0' in metrics
        assert server_user(container_pid(server)) == 10001
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        finally:
            stop_process(server)
    logged = [json.loads(line) for line in (tmp_path / "api.log").read_text().splitlines() if line.startswith("{")]
    assert code == 0, (tmp_path / "api.log").read_text()[-3000:]
    assert not [line for line in logged if line.get("level") in ("error", "critical")], logged


def server_user(pid: int) -> int:
    """The real uid of process ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Uid:")).split()[1])
