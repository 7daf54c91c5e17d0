"""A file already loaded under another key is not loaded again (migration 0016).

S3 makes a move, a rename or a copy within the prefix a new upload under the new key, and a
delete takes nothing out: loaded again, the file's prices would count twice.
"""

import subprocess

from tests.ingest.conftest import ROWS, V2_ROWS, as_csv, as_tuples, encode, expected_totals, prices, run_job, runs, totals
from tests.ingest.test_versions import start_job


def test_a_file_moved_within_the_prefix_keeps_its_prices_once(db, s3):
    dsn, conn = db
    s3.put("prices/2025-08.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "prices/2025-08.csv") == 0
    # `aws s3 mv`: a copy, then a delete (whose event nothing follows)
    s3.client.copy_object(Bucket=s3.name, Key="prices/done/2025-08.csv",
                          CopySource={"Bucket": s3.name, "Key": "prices/2025-08.csv"})
    s3.client.delete_object(Bucket=s3.name, Key="prices/2025-08.csv")

    assert run_job(dsn, s3.name, "prices/done/2025-08.csv") == 0

    assert prices(conn) == as_tuples(ROWS)
    assert totals(conn) == expected_totals(ROWS)
    first, moved = runs(conn)
    assert (moved["key"], moved["status"], moved["file_id"]) == ("prices/done/2025-08.csv", "already_loaded",
                                                                 first["file_id"])
    assert "is loaded as s3://" in moved["error"] and moved["error"].endswith(
        "prices/2025-08.csv: not loaded again (a move, rename or copy within the prefix)")


def test_the_same_rows_in_other_bytes_are_another_file(db, s3):
    # Only the bytes as stored are compared: the same quotes gzipped, or in JSON, load.
    dsn, conn = db
    s3.put("a.csv", as_csv(ROWS))
    s3.put("a.csv.gz", encode("csv.gz", ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    assert run_job(dsn, s3.name, "a.csv.gz") == 0
    assert prices(conn) == as_tuples(ROWS * 2)


def test_another_files_bytes_over_a_key_with_a_file_of_its_own_are_refused(db, s3):
    dsn, conn = db
    s3.put("a.csv", as_csv(ROWS))
    s3.put("b.csv", as_csv(V2_ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    assert run_job(dsn, s3.name, "b.csv") == 0
    s3.put("b.csv", as_csv(ROWS))  # a's file copied over b

    assert run_job(dsn, s3.name, "b.csv") == 2

    assert prices(conn) == sorted(as_tuples(ROWS) + as_tuples(V2_ROWS))  # b keeps its own file's
    refused = runs(conn)[-1]
    assert refused["status"] == "rejected" and "this key already has a file of its own" in refused["error"]


def test_a_key_uploaded_again_with_the_same_bytes_replaces_itself(db, s3):
    dsn, conn = db
    s3.enable_versioning()
    s3.put("a.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    s3.put("a.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    assert prices(conn) == as_tuples(ROWS)
    assert [r["status"] for r in runs(conn)] == ["loaded", "loaded"]


def test_once_the_other_key_has_another_file_the_copy_loads(db, s3):
    dsn, conn = db
    s3.put("a.csv", as_csv(ROWS))
    s3.put("archive/a.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    assert run_job(dsn, s3.name, "archive/a.csv") == 0  # already loaded, as a.csv
    s3.put("a.csv", as_csv(V2_ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0

    assert run_job(dsn, s3.name, "archive/a.csv") == 0  # now its bytes are nowhere else

    assert prices(conn) == sorted(as_tuples(ROWS) + as_tuples(V2_ROWS))
    assert [r["status"] for r in runs(conn)] == ["loaded", "already_loaded", "loaded", "loaded"]


def test_two_keys_with_the_same_bytes_loaded_at_once_count_them_once(db, s3):
    dsn, conn = db
    body = as_csv(ROWS * 2000)
    s3.put("a.csv", body)
    s3.put("b.csv", body)
    both = [start_job(dsn, s3.name, key, stdout=subprocess.PIPE) for key in ("a.csv", "b.csv")]
    codes = [p.wait(120) for p in both]
    for p in both:
        p.stdout.close()

    assert codes == [0, 0]
    assert prices(conn) == as_tuples(ROWS * 2000)
    assert totals(conn) == expected_totals(ROWS * 2000)
    assert sorted(r["status"] for r in runs(conn)) == ["already_loaded", "loaded"]
