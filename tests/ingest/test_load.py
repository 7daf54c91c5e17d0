"""Loading valid files: every format, with and without gzip, keys of every shape."""

import pytest

from tests.ingest.conftest import ROWS, as_tuples, encode, expected_totals, last_run, prices, run_job, totals


@pytest.mark.parametrize("extension", ["csv", "json", "ndjson", "jsonl",
                                       "csv.gz", "json.gz", "ndjson.gz", "jsonl.gz"])
def test_each_format_loads(db, s3, extension):
    dsn, conn = db
    body = encode(extension, ROWS)
    s3.put(f"prices.{extension}", body)

    assert run_job(dsn, s3.name, f"prices.{extension}") == 0

    assert prices(conn) == as_tuples(ROWS)
    assert totals(conn) == expected_totals(ROWS)
    run = last_run(conn)
    assert run["status"] == "loaded"
    assert (run["rows"], run["bytes"]) == (len(ROWS), len(body))
    assert run["etag"] and run["finished_at"] >= run["started_at"] and run["error"] is None
    # The load's transaction records the end as it commits: the time then, not the time the
    # transaction began, which its own ingest_files row holds (loaded_at, now() at the INSERT).
    with conn.cursor() as cur:
        cur.execute("SELECT loaded_at FROM ingest_files WHERE id = %s", (run["file_id"],))
        assert run["finished_at"] > cur.fetchone()[0]


@pytest.mark.parametrize("key", [
    "with space/price list 2016.csv",
    "plus+sign/a+b.csv",
    "ünïcødé/価格/файл.csv",
    "deeply/nested/prefix/of/many/levels/p.ndjson.gz",
    "percent%20not-decoded-again.csv",
])
def test_keys_of_every_shape(db, s3, key):
    """The job takes the decoded key (the controller decodes S3 event keys) and uses it as is."""
    dsn, conn = db
    s3.put(key, encode(key.split(".", 1)[1], ROWS))

    assert run_job(dsn, s3.name, key) == 0

    assert prices(conn) == as_tuples(ROWS)
    assert last_run(conn)["key"] == key
