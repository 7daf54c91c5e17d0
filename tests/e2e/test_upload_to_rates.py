"""The whole path, with every part real: a file uploaded to S3 (moto) notifies SQS, the
controller (its own process) creates a Job on the real control plane, the Job's pod (the
ingest job, on the local node) loads PostgreSQL, and the API answers the new averages.
A bad file ends in the dead-letter queue with its reason and changes nothing."""

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
