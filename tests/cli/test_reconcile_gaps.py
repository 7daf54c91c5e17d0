"""reconcile: what the earlier versions of a key leave out (mutation-testing gaps)."""

import pytest

from ratesctl import reconcile as reconcile_module
from tests.cli.test_reconcile import BAD
from tests.ingest.conftest import ROWS, as_csv, run_job

pytestmark = pytest.mark.usefixtures("moto_endpoint")


def test_an_earlier_null_version_is_not_listed_as_it_cannot_be_named(dsn, world, s3):
    # Written before versioning was enabled: an event naming "null" would load the latest.
    s3.put("in/k.csv", as_csv(ROWS))
    s3.enable_versioning()
    latest = s3.put("in/k.csv", as_csv(ROWS[:1]))["VersionId"]
    found, examined = reconcile_module.missing(s3.client, world, s3.name, "in/")
    assert [(u.key, u.info.version_id, u.older) for u in found] == [("in/k.csv", latest, False)] and examined == 1


def test_a_version_s_last_run_is_its_newest_finished_one(dsn, world, s3):
    s3.enable_versioning()
    version = s3.put("in/k.csv", BAD)["VersionId"]
    assert run_job(dsn, s3.name, "in/k.csv") == 2
    with world.cursor() as cur:  # a run of it since: failed first, then one still running (a Job in flight)
        for status in ("failed", "running"):
            cur.execute("""INSERT INTO ingest_runs (bucket, key, version_id, status, error, finished_at)
                           VALUES (%s, 'in/k.csv', %s, %s, %s, CASE WHEN %s <> 'running' THEN now() END)""",
                        (s3.name, version, status, f"{status} later", status))
    world.commit()
    [upload] = reconcile_module.missing(s3.client, world, s3.name, "in/")[0]
    assert upload.last_run == ("failed", "failed later")
