"""What the API serves after an ingest (the API reads the totals the load keeps)."""

import pytest

from tests.ingest.conftest import as_csv, run_job

rates_api = pytest.importorskip("rates_api")
from rates_api.settings import Settings  # noqa: E402

DAY = "2016-01-01"
QUERY = {"date_from": DAY, "date_to": DAY, "origin": "china", "destination": "north_europe"}


@pytest.fixture
def api(dsn):
    app = rates_api.create_app(Settings.from_env({"DATABASE_URL": dsn}))
    yield app.test_client()
    app.extensions["rates_api"].pool.close()


def average(api) -> int | None:
    response = api.get("/rates", query_string=QUERY)
    assert response.status_code == 200
    [row] = response.get_json()
    return row["average_price"]


def test_the_api_returns_the_new_averages_after_an_ingest(db, s3, api):
    dsn, _conn = db
    assert average(api) is None
    s3.enable_versioning()

    s3.put("p.csv", as_csv([("CNSHA", "NLRTM", DAY, 1000), ("CNNGB", "DEHAM", DAY, 1200),
                            ("CNSHA", "DEHAM", DAY, 1400)]))
    assert run_job(dsn, s3.name, "p.csv") == 0
    assert average(api) == 1200

    s3.put("p.csv", as_csv([("CNSHA", "NLRTM", DAY, 2000), ("CNNGB", "DEHAM", DAY, 2100),
                            ("CNSHA", "DEHAM", DAY, 2200), ("HKHKG", "DEHAM", DAY, 9999)]))
    assert run_job(dsn, s3.name, "p.csv") == 0
    assert average(api) == 2100  # HKHKG is in asia but not in china
