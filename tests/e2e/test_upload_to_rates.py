"""The whole path, with every part real: a file uploaded to S3 (moto) notifies SQS, the
controller (its own process) creates a Job on the real control plane, the Job's pod (the
ingest job, on the local node) loads PostgreSQL, and the API answers the new averages.
A bad file ends in the dead-letter queue with its reason and changes nothing."""

import json

import pytest

from tests.support.db import INGEST_USER, as_user
from tests.support.uploads import ingest_jobs
from tests.ingest.conftest import as_csv
from tests.ingest.test_api import DAY, average
from tests.support.poll import wait_for

pytestmark = pytest.mark.kube


def test_an_uploaded_file_reaches_the_api_and_a_bad_one_is_set_aside(
        dsn, world, rates, kube, namespace, uploads, sqs, job_runtime, controller_process, local_node):
    job_runtime(dsn)  # the Jobs' ServiceAccount; the Secret it also writes goes unused:
    # the Jobs connect as the ingest job's own user, with the URL the controller hands them.
    controller_process(RETRY_DELAY_SECONDS="0", JOB_DATABASE_URL=as_user(dsn, INGEST_USER))
    assert average(rates) is None

    # Three prices: the API gives no average for a day with fewer.
    uploads.put("2016/01/prices.csv", as_csv([("CNSHA", "NLRTM", DAY, 1000), ("CNNGB", "DEHAM", DAY, 1400),
                                              ("CNSHA", "SEGOT", DAY, 1200)]))
    wait_for(lambda: average(rates) is not None, timeout=90, what="the upload's prices to reach the API")
    assert average(rates) == 1200

    uploads.put("2016/01/typo.csv", as_csv([("CNSHA", "NLRTMX", DAY, 99999)]))
    [dead] = wait_for(sqs.dead_letters, timeout=90, what="the bad file to be set aside")

    assert "unknown port code 'NLRTMX'" in dead["reason"]
    assert average(rates) == 1200
    jobs = ingest_jobs(kube, namespace)
    assert len(jobs) == 2, local_node.errors
    for job in jobs:
        [url] = [e.value for e in job.spec.template.spec.containers[0].env if e.name == "DATABASE_URL"]
        assert url.startswith(f"postgresql://{INGEST_USER}@")


def _created_event(bucket: str, key: str, put: dict) -> str:
    # As S3 sends it; moto's events carry no versionId, so every Job of theirs loads the latest.
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket},
        "object": {"key": key, "eTag": put["ETag"].strip('"'), "versionId": put["VersionId"]}}}]})


def test_the_newest_version_of_a_key_wins_whatever_order_its_events_come_in(
        dsn, world, rates, kube, namespace, s3, sqs, job_runtime, controller_process, local_node):
    job_runtime(dsn)
    controller_process(RETRY_DELAY_SECONDS="0", JOB_DATABASE_URL=as_user(dsn, INGEST_USER))
    s3.enable_versioning()  # the Terraform's buckets are versioned
    key = "2016/01/prices.csv"
    older = s3.put(key, as_csv([("CNSHA", "NLRTM", DAY, p) for p in (900, 1000, 1100)]))
    newer = s3.put(key, as_csv([("CNSHA", "NLRTM", DAY, p) for p in (1900, 2000, 2100)]))

    # The newer version's event first: the older one's Job must not take its place.
    sqs.send(_created_event(s3.name, key, newer))
    wait_for(lambda: average(rates) == 2000, timeout=90, what="the newer version to reach the API")
    sqs.send(_created_event(s3.name, key, older))
    wait_for(lambda: len(ingest_jobs(kube, namespace)) == 2 and all(
        job.status.succeeded for job in ingest_jobs(kube, namespace)), timeout=90, what="both Jobs to succeed")

    assert average(rates) == 2000
    with world.cursor() as cur:
        cur.execute("SELECT version_id, status FROM ingest_runs ORDER BY id")
        assert cur.fetchall() == [(newer["VersionId"], "loaded"), (older["VersionId"], "superseded")]
    assert sqs.dead_letters() == [], local_node.errors
