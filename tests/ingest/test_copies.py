"""A file loaded under a second key is said, not skipped (migration 0016's SHA-256s).

S3 makes a move, a rename or a copy within the prefix a new upload under the new key, and a
delete takes nothing out, so the file's prices count twice. Each key stays its own file's
truth: skipped, a copy would count nowhere once the first key got another file.
"""

from tests.ingest.conftest import ROWS, V2_ROWS, as_csv, as_tuples, encode, prices, run_job, runs


def test_a_file_moved_within_the_prefix_loads_again_and_its_run_says_so(db, s3):
    dsn, conn = db
    s3.put("prices/2025-08.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "prices/2025-08.csv") == 0
    # `aws s3 mv`: a copy, then a delete (whose event nothing follows)
    s3.client.copy_object(Bucket=s3.name, Key="prices/done/2025-08.csv",
                          CopySource={"Bucket": s3.name, "Key": "prices/2025-08.csv"})
    s3.client.delete_object(Bucket=s3.name, Key="prices/2025-08.csv")

    assert run_job(dsn, s3.name, "prices/done/2025-08.csv") == 0

    assert prices(conn) == as_tuples(ROWS * 2)
    first, moved = runs(conn)
    assert first["error"] is None
    assert moved["status"] == "loaded" and moved["error"] == (
        f"the same file ({len(as_csv(ROWS))} bytes) is also loaded as s3://{s3.name}/prices/2025-08.csv, so its "
        "prices count twice: a move, rename or copy within the prefix loads a file again")


def test_the_copy_keeps_its_prices_when_the_first_key_gets_another_file(db, s3):
    dsn, conn = db
    s3.put("a.csv", as_csv(ROWS))
    s3.put("archive/a.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    assert run_job(dsn, s3.name, "archive/a.csv") == 0
    s3.put("a.csv", as_csv(V2_ROWS))

    assert run_job(dsn, s3.name, "a.csv") == 0

    assert prices(conn) == sorted(as_tuples(ROWS) + as_tuples(V2_ROWS))
    assert runs(conn)[-1]["error"] is None  # a.csv's new file is its own


def test_only_the_bytes_as_stored_are_compared(db, s3):
    # The same quotes gzipped are other bytes; a key's own earlier file is not another key's.
    dsn, conn = db
    s3.enable_versioning()
    s3.put("a.csv", as_csv(ROWS))
    s3.put("a.csv.gz", encode("csv.gz", ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    assert run_job(dsn, s3.name, "a.csv.gz") == 0
    s3.put("a.csv", as_csv(ROWS))  # the same bytes again, a new version of the same key
    assert run_job(dsn, s3.name, "a.csv") == 0

    assert prices(conn) == as_tuples(ROWS * 2)
    assert [(r["status"], r["error"]) for r in runs(conn)] == [("loaded", None)] * 3
    with conn.cursor() as cur:
        cur.execute("SELECT key, sha256 IS NOT NULL FROM ingest_files WHERE replaced_at IS NULL ORDER BY key")
        assert cur.fetchall() == [("a.csv", True), ("a.csv.gz", True)]
