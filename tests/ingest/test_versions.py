"""Idempotence: the same object twice loads once; a new version replaces the key's rows."""

import datetime
import os
import subprocess
import sys
import time

import psycopg2
import pytest

from rates_ingest.s3source import ObjectInfo
from tests.ingest.conftest import (ROWS, V2_ROWS, as_csv, as_tuples, encode, expected_totals, last_run, prices,
                                   run_job, runs, totals)
from tests.support.db import lock_waiters
from tests.support.poll import wait_for
from tests.support.world import insert_prices

LEGACY = [("DEHAM", "NLRTM", "2015-12-31", 50)]


def test_an_object_is_its_version_else_its_etag_and_upload_time():
    # What "the same object" means below, without S3: the one S3-backed test of the upload
    # time's part (same bytes, A B A, in one second) depends on the machine's speed.
    at = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    later = at + datetime.timedelta(seconds=1)

    def info(version_id, etag='"e"', last_modified=at):
        return ObjectInfo(version_id=version_id, etag=etag, size=1, last_modified=last_modified)

    # The same bytes uploaded again to an unversioned key, a second later: a new file.
    assert info(None).identity == info(None).identity
    assert info(None).identity != info(None, last_modified=later).identity
    assert info(None).identity != info(None, etag='"f"').identity
    # "null", the version of an object written before versioning was enabled, can be
    # overwritten in place: it names no content, and counts as no version.
    assert not info(None).versioned and not info("null").versioned
    assert info("null").identity == info(None).identity != info("null", last_modified=later).identity
    # A real version id names its content whatever the ETag and time.
    assert info("v1").versioned
    assert info("v1").identity == info("v1", etag='"f"', last_modified=later).identity == "v1"


def test_loading_the_same_object_twice_loads_it_once(db, s3):
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))

    assert run_job(dsn, s3.name, "p.csv") == 0
    assert run_job(dsn, s3.name, "p.csv") == 0

    assert prices(conn) == as_tuples(ROWS)
    assert totals(conn) == expected_totals(ROWS)
    first, second = runs(conn)
    assert (first["status"], second["status"]) == ("loaded", "already_loaded")
    assert second["file_id"] == first["file_id"] and second["rows"] == len(ROWS)


def test_a_new_version_replaces_the_rows_of_the_old_one(db, s3):
    dsn, conn = db
    insert_prices(conn, LEGACY)
    s3.enable_versioning()
    v1 = s3.put("p.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv") == 0
    v2 = s3.put("p.csv", encode("csv", V2_ROWS))["VersionId"]

    assert run_job(dsn, s3.name, "p.csv", version_id=v2) == 0

    assert prices(conn) == as_tuples(V2_ROWS + LEGACY)
    assert totals(conn) == expected_totals(V2_ROWS + LEGACY)
    # A late event for the first version changes nothing: the newer one stays loaded.
    assert run_job(dsn, s3.name, "p.csv", version_id=v1) == 0
    assert prices(conn) == as_tuples(V2_ROWS + LEGACY)
    assert [(r["version_id"], r["status"]) for r in runs(conn)] == [
        (v1, "loaded"), (v2, "loaded"), (v1, "superseded")]


def _upload_versions(s3, *contents) -> dict[str, str]:
    """Upload each content to p.csv in turn: {"v1": its version id, ...}."""
    return {f"v{n}": s3.put("p.csv", content)["VersionId"] for n, content in enumerate(contents, 1)}


def _loaded_later_than(conn, s3, version_id):
    """Date the loaded file an hour after ``version_id``: as a multipart upload's LastModified
    (when it began) can make the key's current object look older than one it replaced."""
    stamp = s3.client.head_object(Bucket=s3.name, Key="p.csv", **({"VersionId": version_id} if version_id else {}))
    with conn.cursor() as cur:
        cur.execute("UPDATE ingest_files SET last_modified = %s + interval '1 hour'", (stamp["LastModified"],))


@pytest.mark.parametrize("loaded, arriving, status", [
    ("v2", "v1", "superseded"),  # an older version, seen for the first time
    ("v1", "v2", "loaded"),  # the key's object now, though the loaded file's time is later
])
def test_the_object_s3_holds_now_is_the_newer_whatever_the_times_say(db, s3, loaded, arriving, status):
    dsn, conn = db
    s3.enable_versioning()
    versions = _upload_versions(s3, as_csv(ROWS), as_csv(V2_ROWS))
    assert run_job(dsn, s3.name, "p.csv", version_id=versions[loaded]) == 0
    _loaded_later_than(conn, s3, versions[arriving])

    assert run_job(dsn, s3.name, "p.csv", version_id=versions[arriving]) == 0

    assert prices(conn) == as_tuples(V2_ROWS)
    assert runs(conn)[-1]["status"] == status


def test_an_overwritten_unversioned_object_loads_whatever_the_times_say(db, s3):
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    s3.put("p.csv", as_csv(V2_ROWS))
    _loaded_later_than(conn, s3, None)

    assert run_job(dsn, s3.name, "p.csv") == 0

    assert prices(conn) == as_tuples(V2_ROWS)
    assert [r["status"] for r in runs(conn)] == ["loaded", "loaded"]


@pytest.mark.parametrize("loaded, arriving, hours, status", [
    ("v2", "v1", 1, "superseded"),  # the loaded file is the later: the arriving one is older
    ("v1", "v2", -1, "loaded"),  # the arriving file is the later: it replaces the loaded one
    # Both uploads in one second, S3's resolution: S3's order of the key's versions decides.
    ("v2", "v1", 0, "superseded"),
    ("v1", "v2", 0, "loaded"),
])
def test_when_s3_holds_neither_the_later_time_wins_and_s3s_order_breaks_a_tie(db, s3, loaded, arriving, hours,
                                                                             status):
    dsn, conn = db
    s3.enable_versioning()
    # v3 came after both (its own event loads it): S3 holds neither of the two compared.
    versions = _upload_versions(s3, as_csv(ROWS), as_csv(V2_ROWS), as_csv(LEGACY))
    assert run_job(dsn, s3.name, "p.csv", version_id=versions[loaded]) == 0
    stamp = s3.client.head_object(Bucket=s3.name, Key="p.csv", VersionId=versions[arriving])["LastModified"]
    with conn.cursor() as cur:
        cur.execute("UPDATE ingest_files SET last_modified = %s + %s * interval '1 hour'", (stamp, hours))

    assert run_job(dsn, s3.name, "p.csv", version_id=versions[arriving]) == 0

    assert prices(conn) == as_tuples(V2_ROWS)
    assert runs(conn)[-1]["status"] == status


def test_an_older_version_that_s3_holds_again_after_a_delete_says_how_to_load_it(db, s3):
    """Deleting the newest version of a key (to roll back) leaves the older one current in
    S3; its event again does not load it a second time (nor set the file aside): the run
    says so, and a copy of the version, a new upload, loads."""
    dsn, conn = db
    s3.enable_versioning()
    v1 = s3.put("p.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv", version_id=v1) == 0
    v2 = s3.put("p.csv", as_csv(V2_ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv", version_id=v2) == 0
    s3.client.delete_object(Bucket=s3.name, Key="p.csv", VersionId=v2)

    assert run_job(dsn, s3.name, "p.csv", version_id=v1) == 0
    run = runs(conn)[-1]
    assert run["status"] == "superseded" and f"loaded version {v2} is newer, though S3 no longer holds it" in \
        run["error"], run
    assert prices(conn) == as_tuples(V2_ROWS)

    v3 = s3.client.copy_object(Bucket=s3.name, Key="p.csv",
                               CopySource={"Bucket": s3.name, "Key": "p.csv", "VersionId": v1})["VersionId"]
    assert run_job(dsn, s3.name, "p.csv", version_id=v3) == 0
    assert prices(conn) == as_tuples(ROWS)


def test_the_null_version_from_before_versioning_loads_after_a_newer_upload(db, s3):
    """An event for the pre-versioning ("null") object, handled after versioning and a new upload."""
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))
    s3.enable_versioning()
    v2 = s3.put("p.csv", as_csv(V2_ROWS))["VersionId"]

    assert run_job(dsn, s3.name, "p.csv", version_id="null") == 0
    assert prices(conn) == as_tuples(ROWS)
    assert run_job(dsn, s3.name, "p.csv", version_id=v2) == 0
    assert prices(conn) == as_tuples(V2_ROWS)
    # Its event again (a redelivery, a redrive): older than what is loaded, and still in
    # S3 as a noncurrent version, so skipped, not refused as a same-second re-upload.
    assert run_job(dsn, s3.name, "p.csv", version_id="null") == 0
    assert prices(conn) == as_tuples(V2_ROWS)
    assert [r["status"] for r in runs(conn)] == ["loaded", "loaded", "superseded"]


def test_an_overwritten_unversioned_object_replaces_its_rows_and_can_come_back(db, s3):
    dsn, conn = db
    s3.put("p.json", encode("json", ROWS))
    assert run_job(dsn, s3.name, "p.json") == 0
    s3.put("p.json", encode("json", V2_ROWS))
    assert run_job(dsn, s3.name, "p.json") == 0
    assert prices(conn) == as_tuples(V2_ROWS)

    s3.put("p.json", encode("json", ROWS))  # the first content again: same ETag, a new upload
    with conn.cursor() as cur:  # uploads within one second share LastModified; age the loaded ones
        cur.execute("UPDATE ingest_files SET last_modified = last_modified - interval '1 hour', "
                    "version = version || '-older'")
    assert run_job(dsn, s3.name, "p.json") == 0

    assert prices(conn) == as_tuples(ROWS)
    assert totals(conn) == expected_totals(ROWS)


def test_other_keys_are_untouched_by_a_replacement(db, s3):
    dsn, conn = db
    s3.put("a.csv", as_csv(ROWS))
    s3.put("b.csv", as_csv(V2_ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    assert run_job(dsn, s3.name, "b.csv") == 0
    s3.put("a.csv", as_csv(ROWS[:1]))

    assert run_job(dsn, s3.name, "a.csv") == 0

    assert prices(conn) == as_tuples(ROWS[:1] + V2_ROWS)


def start_job(dsn: str, bucket: str, key: str, stdout) -> subprocess.Popen:
    """The job as a process of its own, as a Kubernetes Job runs it."""
    return subprocess.Popen([sys.executable, "-m", "rates_ingest", "--bucket", bucket, "--key", key],
                            env={**os.environ, "DATABASE_URL": dsn}, stdout=stdout, stderr=subprocess.STDOUT)


def wait_at_the_end_of_copy(conn, what: str) -> None:
    """Until the job waits for a lock in its COPY: for the totals', at the COPY's end."""
    wait_for(lambda: lock_waiters(conn, application_name="rates-ingest", query_prefix="COPY prices"),
             timeout=30, interval=0.05, what=what)


def test_two_concurrent_runs_for_one_object_load_it_once(db, s3):
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS * 2000))
    both = [start_job(dsn, s3.name, "p.csv", stdout=subprocess.PIPE) for _ in range(2)]
    codes = [p.wait(120) for p in both]
    for p in both:
        p.stdout.close()

    assert codes == [0, 0]
    assert prices(conn) == as_tuples(ROWS * 2000)
    assert totals(conn) == expected_totals(ROWS * 2000)
    assert sorted(r["status"] for r in runs(conn)) == ["already_loaded", "loaded"]


def test_a_replacement_waits_for_the_totals_lock_only_at_the_end_of_its_copy(db, s3):
    """Deleting the replaced rows takes data_version's lock; that must come after the COPY,
    so that another load holding the lock does not hold this whole load up."""
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    s3.put("p.csv", as_csv(V2_ROWS * 500))
    blocker = psycopg2.connect(dsn)  # another writer, between its own writes and its commit
    blocker.cursor().execute("SELECT version FROM data_version FOR UPDATE")
    job = start_job(dsn, s3.name, "p.csv", stdout=subprocess.DEVNULL)
    try:
        wait_at_the_end_of_copy(conn, "the replacement to wait at the end of its COPY")
    finally:
        blocker.close()
        assert job.wait(60) == 0
    assert prices(conn) == as_tuples(V2_ROWS * 500)
    assert totals(conn) == expected_totals(V2_ROWS * 500)


def test_a_load_is_read_committed_whatever_the_database_says(db, s3):
    # Under a default of repeatable read (a parameter group's, a role's) a load's snapshot
    # predates the other loads that commit while it copies, and its update of the totals
    # failed on every such commit: retried, each retry downloading the whole file again.
    dsn, conn = db
    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        cur.execute(f'ALTER DATABASE "{cur.fetchone()[0]}" SET default_transaction_isolation = \'repeatable read\'')
    conn.commit()
    s3.put("p.csv", as_csv(ROWS * 500))
    other_load = psycopg2.connect(dsn)  # holds the totals' lock, then commits a change to them
    other_load.cursor().execute("UPDATE data_version SET version = version + 1")
    job = start_job(dsn, s3.name, "p.csv", stdout=subprocess.PIPE)
    try:
        wait_at_the_end_of_copy(conn, "the load to wait for the totals' lock")
        other_load.commit()
    finally:
        other_load.close()
        output = job.communicate(timeout=60)[0].decode()
    assert job.returncode == 0, output
    assert prices(conn) == as_tuples(ROWS * 500)
    assert totals(conn) == expected_totals(ROWS * 500)


def test_the_replaced_files_bytes_uploaded_again_in_its_second_are_refused_not_skipped(db, s3):
    # In a bucket without versioning a file is its ETag and upload time, to the second. A,
    # then B, then A again within one second: the third is A's identity, a replaced file.
    # Skipped as "superseded" (exit 0), the key would keep B's prices while S3 holds A.
    dsn, conn = db
    a, b = as_csv(ROWS), as_csv(V2_ROWS)
    # The fixture's S3 client: a new one per run takes 0.3-1.6 s on a loaded machine (more
    # than the second), the run itself some 0.1 s.
    def run(key):
        return run_job(dsn, s3.name, key, s3=s3.client)

    for attempt in range(10):  # until the three uploads fall in one second
        key = f"aba-{attempt}.csv"
        while time.time() % 1 > 0.2:
            time.sleep(0.01)
        s3.put(key, a)
        first = s3.client.head_object(Bucket=s3.name, Key=key)["LastModified"]
        assert run(key) == 0
        s3.put(key, b)
        assert run(key) == 0
        s3.put(key, a)
        if s3.client.head_object(Bucket=s3.name, Key=key)["LastModified"] == first:
            break
    else:
        pytest.fail("ten tries never put three uploads in one second")

    assert run_job(dsn, s3.name, key) == 2  # a retry cannot help: told, and set aside
    refused = last_run(conn)
    assert refused["status"] == "rejected" and "upload the file again" in refused["error"], refused
    assert prices_of(conn, key) == sorted(r[3] for r in V2_ROWS)  # as before: nothing half-done
    time.sleep(1.1)
    s3.put(key, a)  # as the error says: a new upload time, a new file
    assert run_job(dsn, s3.name, key) == 0 and last_run(conn)["status"] == "loaded"
    assert prices_of(conn, key) == sorted(r[3] for r in ROWS)


def prices_of(conn, key: str) -> list[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT p.price FROM prices p JOIN ingest_files f ON f.id = p.source_id"
                    " WHERE f.key = %s AND f.replaced_at IS NULL ORDER BY 1", (key,))
        return [price for (price,) in cur]
