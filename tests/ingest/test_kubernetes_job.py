"""The ingest job as a Kubernetes Job: its exit codes drive the real Job controller.

The Job is the one the controller creates (rates_controller.jobs.manifest): the object's
address in S3_BUCKET / S3_OBJECT_KEY, the database URL from a Secret, retries by
backoffLimit, and a podFailurePolicy that fails the Job at once on exit code 2 (the file
is invalid or gone), while exit code 1 is retried. Its Pods run on the test's local node
(the project's virtualenv stands in for the image).
"""

import pytest

from rates_controller import jobs
from rates_controller.events import UploadedObject
from rates_controller.settings import JobSettings
from tests.ingest.conftest import ROWS, as_csv, last_run, prices, runs
from tests.support.aws import FAKE_AWS_ENV
from tests.support.poll import wait_for
from tests.support.uploads import IMAGE, JOB_SERVICE_ACCOUNT

pytestmark = pytest.mark.kube

BACKOFF_LIMIT = 2


def run_on_kubernetes(kube, namespace, job_runtime, dsn, bucket, key, endpoint, name="ingest",
                      backoff_limit=BACKOFF_LIMIT):
    """Point the Jobs' Secret at ``dsn`` and create the Job; wait until it ends;
    (condition, exit codes of its pods)."""
    job_runtime(dsn)
    settings = JobSettings(namespace=namespace, image=IMAGE, service_account=JOB_SERVICE_ACCOUNT,
                           env={**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": endpoint}, backoff_limit=backoff_limit)
    manifest = jobs.manifest(UploadedObject(bucket, key, None, None, None), settings)
    manifest["metadata"]["name"] = name
    kube.batch.create_namespaced_job(namespace, manifest)

    def ended():
        status = kube.batch.read_namespaced_job_status(name, namespace).status
        return next((c for c in status.conditions or []
                     if c.type in ("Complete", "Failed") and c.status == "True"), None)

    condition = wait_for(ended, timeout=120, what=f"Job {name} to end")
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
    codes = sorted(p.status.container_statuses[0].state.terminated.exit_code for p in pods)
    return condition, codes


def test_a_valid_file_completes_the_job(db, s3, moto_endpoint, kube, namespace, job_runtime, local_node):
    dsn, conn = db
    s3.put("uploads/2016 01.csv", as_csv(ROWS))

    condition, codes = run_on_kubernetes(kube, namespace, job_runtime, dsn, s3.name, "uploads/2016 01.csv",
                                         moto_endpoint)

    assert condition.type == "Complete" and codes == [0], local_node.errors
    assert len(prices(conn)) == len(ROWS)
    assert last_run(conn)["status"] == "loaded"


def test_an_invalid_file_fails_the_job_without_a_retry(db, s3, moto_endpoint, kube, namespace, job_runtime,
                                                       local_node):
    dsn, conn = db
    s3.put("bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))

    condition, codes = run_on_kubernetes(kube, namespace, job_runtime, dsn, s3.name, "bad.csv", moto_endpoint)

    assert (condition.type, condition.reason) == ("Failed", "PodFailurePolicy")
    assert codes == [2]
    assert prices(conn) == []
    assert [r["status"] for r in runs(conn)] == ["rejected"]


def test_an_unreachable_database_is_retried_up_to_the_backoff_limit(s3, moto_endpoint, kube, namespace,
                                                                    job_runtime, local_node):
    s3.put("p.csv", as_csv(ROWS))
    unreachable = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"

    # One retry is enough to show it; the Job controller waits 10 s before each.
    condition, codes = run_on_kubernetes(kube, namespace, job_runtime, unreachable, s3.name, "p.csv", moto_endpoint,
                                         backoff_limit=1)

    assert (condition.type, condition.reason) == ("Failed", "BackoffLimitExceeded")
    assert codes == [1, 1]


def test_a_second_job_for_the_same_object_completes_without_loading_again(db, s3, moto_endpoint, kube,
                                                                          namespace, job_runtime, local_node):
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))

    first, _ = run_on_kubernetes(kube, namespace, job_runtime, dsn, s3.name, "p.csv", moto_endpoint, name="first")
    second, codes = run_on_kubernetes(kube, namespace, job_runtime, dsn, s3.name, "p.csv", moto_endpoint,
                                      name="second")

    assert (first.type, second.type, codes) == ("Complete", "Complete", [0])
    assert len(prices(conn)) == len(ROWS)
    assert [r["status"] for r in runs(conn)] == ["loaded", "already_loaded"]
