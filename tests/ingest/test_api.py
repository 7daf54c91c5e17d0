"""What the API serves after an ingest (the API reads the totals the load keeps)."""

from tests.ingest.conftest import as_csv, run_job

DAY = "2016-01-01"


def average(rates) -> int | None:
    """The API's average for DAY from china to north_europe."""
    status, body = rates(date_from=DAY, date_to=DAY, origin="china", destination="north_europe")
    assert status == 200, body
    [row] = body
    return row["average_price"]


def test_the_api_returns_the_new_averages_after_an_ingest(db, s3, rates):
    dsn, _conn = db
    assert average(rates) is None
    s3.enable_versioning()

    s3.put("p.csv", as_csv([("CNSHA", "NLRTM", DAY, 1000), ("CNNGB", "DEHAM", DAY, 1200),
                            ("CNSHA", "DEHAM", DAY, 1400)]))
    assert run_job(dsn, s3.name, "p.csv") == 0
    assert average(rates) == 1200

    s3.put("p.csv", as_csv([("CNSHA", "NLRTM", DAY, 2000), ("CNNGB", "DEHAM", DAY, 2100),
                            ("CNSHA", "DEHAM", DAY, 2200), ("HKHKG", "DEHAM", DAY, 9999)]))
    assert run_job(dsn, s3.name, "p.csv") == 0
    assert average(rates) == 2100  # HKHKG is in asia but not in china
