"""The whole path, with every part real: a file uploaded to S3 (moto) notifies SQS, the
controller (its own process) creates a Job on the real control plane, the Job's pod (the
ingest job, on the local node) loads PostgreSQL, and the API answers the new averages.
A bad file ends in the dead-letter queue with its reason and changes nothing."""

import pytest

from tests.controller.conftest import ingest_jobs
from tests.ingest.conftest import as_csv
from tests.support.poll import wait_for

rates_api = pytest.importorskip("rates_api")
from rates_api.settings import Settings  # noqa: E402

pytestmark = pytest.mark.kube

DAY = "2016-01-01"
QUERY = {"date_from": DAY, "date_to": DAY, "origin": "china", "destination": "north_europe"}


@pytest.fixture
def api(dsn):
    app = rates_api.create_app(Settings.from_env({"DATABASE_URL": dsn}))
    yield app.test_client()
    app.extensions["rates_api"].pool.close()


def average(api):
    response = api.get("/rates", query_string=QUERY)
    assert response.status_code == 200, response.get_json()
    return response.get_json()[0]["average_price"]


def test_an_uploaded_file_reaches_the_api_and_a_bad_one_is_set_aside(
        dsn, world, api, kube, namespace, uploads, sqs, job_runtime, controller_process, local_node):
    job_runtime(dsn)
    controller_process(RETRY_DELAY_SECONDS="0")
    assert average(api) is None

    # Three prices: the API gives no average for a day with fewer.
    uploads.put("2016/01/prices.csv", as_csv([("CNSHA", "NLRTM", DAY, 1000), ("CNNGB", "DEHAM", DAY, 1400),
                                              ("CNSHA", "SEGOT", DAY, 1200)]))
    wait_for(lambda: average(api) is not None, timeout=90, what="the upload's prices to reach the API")
    assert average(api) == 1200

    uploads.put("2016/01/typo.csv", as_csv([("CNSHA", "NLRTMX", DAY, 99999)]))
    [dead] = wait_for(sqs.dead_letters, timeout=90, what="the bad file to be set aside")

    assert "unknown port code 'NLRTMX'" in dead["reason"]
    assert average(api) == 1200
    assert len(ingest_jobs(kube, namespace)) == 2, local_node.errors
