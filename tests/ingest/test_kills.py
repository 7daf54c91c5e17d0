"""The job SIGKILLed at each stage of a load, then run again as the Job's retry would.

A killed job runs no handler and closes no connection politely: what it leaves behind is
what the server makes of its sockets closing. Each stage is reached by holding what the
job needs next (S3's bytes, through a proxy; a lock it must take) and polling what the
server shows (pg_stat_activity, pg_stat_progress_copy), never by sleeping. The killed
job's sessions must then end on their own while the holds are still in place: that is
what shows that no lock outlives the process.
"""

import os
import subprocess
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import psycopg2
import pytest

from rates_ingest.s3source import CHUNK_BYTES
from tests.ingest.conftest import ROWS, V2_ROWS, as_csv, as_tuples, expected_totals, prices, run_cli, run_job, runs, totals
from tests.support.aws import Bucket
from tests.support.db import INGEST_USER, as_user, lock_waiters
from tests.support.faults import CuttingProxy
from tests.support.poll import wait_for
from tests.support.world import PORTS

# The server takes in a chunk (one COPY message) only once the next one pushes out the tail
# that libpq keeps back, so the download is held in the third chunk.
HOLD_AT = CHUNK_BYTES * 5 // 2
REGION = {code: parent for code, _name, parent in PORTS}


@dataclass
class Target:
    """One object to load and what a stage needs to get a job for it there."""

    dsn: str
    conn: object
    s3: Bucket
    moto: str
    key: str
    size: int
    version_id: str | None = None

    def args(self) -> list[str]:
        return ["--bucket", self.s3.name, "--key", self.key] + (
            ["--version-id", self.version_id] if self.version_id else [])

    def start(self, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "rates_ingest", *self.args()],
                                env={**os.environ, "DATABASE_URL": as_user(self.dsn, INGEST_USER), **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def proxy(self, hold_after: int) -> CuttingProxy:
        target = urlsplit(self.moto)
        return CuttingProxy((target.hostname, target.port), hold_after=hold_after)


def wait_until(job: subprocess.Popen, predicate: Callable[[], object], what: str) -> None:
    def reached():
        if job.poll() is not None:
            pytest.fail(f"the job exited ({job.returncode}) before {what}: {job.stdout.read()}")
        return predicate()
    wait_for(reached, timeout=30, interval=0.05, what=what)


def hold(holds: ExitStack, dsn: str, statement: str, params=()) -> "psycopg2.extensions.connection":
    """A connection, closed with ``holds``, whose open transaction holds what ``statement`` locks."""
    conn = psycopg2.connect(dsn)
    holds.callback(conn.close)
    conn.cursor().execute(statement, params)
    return conn


def stop(job: subprocess.Popen) -> None:
    if job.poll() is None:
        job.kill()
        job.wait(10)
    if not job.stdout.closed:
        job.stdout.close()


def newest_run(conn) -> int:
    return runs(conn)[-1]["id"]


def job_sessions(conn) -> set[int]:
    """Backend pids of every session the ingest job has open in this test's database."""
    with conn.cursor() as cur:
        cur.execute("""SELECT pid FROM pg_stat_activity
                       WHERE datname = current_database() AND starts_with(application_name, 'rates-ingest')""")
        return {pid for (pid,) in cur}


def rows_copied(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("""SELECT coalesce(sum(p.tuples_processed), 0) FROM pg_stat_progress_copy p
                       JOIN pg_stat_activity a USING (pid)
                       WHERE p.datname = current_database() AND a.application_name = 'rates-ingest'""")
        return cur.fetchone()[0]


def advisory_locks(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("""SELECT count(*) FROM pg_locks
                       WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database
                                                                   WHERE datname = current_database())""")
        return cur.fetchone()[0]


def region_totals(conn) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute("SELECT orig_region, dest_region, day::text, price_sum, price_count FROM region_totals")
        return sorted(cur.fetchall())


def expected_region_totals(rows) -> list[tuple]:
    return expected_totals([(REGION[orig], REGION[dest], day, price) for orig, dest, day, price in rows])


def assert_holds_exactly(conn, rows) -> None:
    """prices are ``rows``, once, and both derived totals agree with them."""
    assert prices(conn) == as_tuples(rows)
    assert totals(conn) == expected_totals(rows)
    assert region_totals(conn) == expected_region_totals(rows)


def kill(conn, job: subprocess.Popen, pids: set[int] | None = None) -> None:
    """SIGKILL ``job``; return once the server has ended every session it had (``pids``:
    by default, every session of the ingest job there is)."""
    pids = pids or job_sessions(conn)
    assert pids, "the job has no session to leave behind"
    job.kill()
    job.wait(10)
    job.stdout.close()
    # The holds that keep the job where it was are still in place: the sessions must end
    # because their client is gone, not because their statements could finish.
    wait_for(lambda: not pids & job_sessions(conn), timeout=15, interval=0.05,
             what="the killed job's sessions to end")


# The stages. Each starts a job for the target and returns it at its point; ``holds``
# keeps it there until the test closes it (killing the job first, if the test has not).

def waiting_for_s3(t: Target, holds: ExitStack) -> subprocess.Popen:
    """The run is recorded and its first request to S3 is out; S3's answer is held."""
    proxy = t.proxy(hold_after=0)
    holds.callback(proxy.close)
    job = t.start({"AWS_ENDPOINT_URL": proxy.url})
    holds.callback(stop, job)
    wait_until(job, proxy.held.is_set, "the job's first S3 answer to be held")
    return job


def copying_mid_file(t: Target, holds: ExitStack) -> subprocess.Popen:
    """Inside the COPY with rows written, the rest of the file held back in S3's stream."""
    assert t.size > HOLD_AT + CHUNK_BYTES // 2
    proxy = t.proxy(hold_after=HOLD_AT)
    holds.callback(proxy.close)
    job = t.start({"AWS_ENDPOINT_URL": proxy.url})
    holds.callback(stop, job)
    wait_until(job, lambda: proxy.held.is_set() and rows_copied(t.conn) > 0,
               "the COPY to have rows while the download is held mid-file")
    return job


def _copied(t: Target, holds: ExitStack) -> tuple[subprocess.Popen, "psycopg2.extensions.connection"]:
    totals_lock = hold(holds, t.dsn, "SELECT version FROM data_version FOR UPDATE")
    job = t.start()
    holds.callback(stop, job)
    wait_until(job, lambda: lock_waiters(t.conn, application_name="rates-ingest", query_prefix="COPY prices"),
               "the COPY to wait for the totals' lock")
    return job, totals_lock


def copied(t: Target, holds: ExitStack) -> subprocess.Popen:
    """Every row copied; the COPY's totals trigger waits for data_version's row."""
    return _copied(t, holds)[0]


def _committing(t: Target, holds: ExitStack) -> tuple[subprocess.Popen, "psycopg2.extensions.connection"]:
    job, totals_lock = _copied(t, holds)
    record_lock = hold(holds, t.dsn, "SELECT FROM ingest_runs WHERE id = %s FOR UPDATE", (newest_run(t.conn),))
    totals_lock.rollback()
    wait_until(job, lambda: lock_waiters(t.conn, application_name="rates-ingest", query_prefix="UPDATE ingest_runs"),
               "the load to wait to record its outcome")
    return job, record_lock


def committing(t: Target, holds: ExitStack) -> subprocess.Popen:
    """Rows, totals and the replaced version's deletion done; the load waits to write its
    outcome into the run record, its last statement before COMMIT."""
    return _committing(t, holds)[0]


def committed(t: Target, holds: ExitStack) -> subprocess.Popen:
    """The load committed; the run's own connection waits to record the end.

    A SHARE lock on ingest_runs is queued behind the load's ROW EXCLUSIVE (taken by its
    outcome's UPDATE, which waits at ``committing``'s hold): the server grants it as the
    load's COMMIT releases its locks, before the job hears of the commit, so the job's next
    UPDATE of ingest_runs, the end of the run on its own connection, is certain to wait.
    """
    job, record_lock = _committing(t, holds)
    table_lock = psycopg2.connect(t.dsn)
    queued = threading.Thread(target=table_lock.cursor().execute, args=("LOCK ingest_runs IN SHARE MODE",))
    queued.start()

    def release():
        stop(job)
        record_lock.rollback()
        queued.join(30)
        table_lock.close()
    holds.callback(release)
    wait_until(job, lambda: lock_waiters(t.conn, pid=table_lock.get_backend_pid()),
               "the SHARE lock to queue behind the load")
    record_lock.rollback()
    wait_until(job, lambda: lock_waiters(t.conn, application_name="rates-ingest-runs",
                                         query_prefix="UPDATE ingest_runs"),
               "the committed run to wait to record its end")
    return job


PRE_COMMIT = [waiting_for_s3, copying_mid_file, copied, committing]


def stage_id(stage) -> str:
    return stage.__name__


def target(db, s3, moto_endpoint, key: str, body: bytes, version_id: str | None = None) -> Target:
    dsn, conn = db
    return Target(dsn, conn, s3, moto_endpoint, key, len(body), version_id)


def many(rows) -> list:
    """Copies of ``rows`` for a file of three and a half chunks: one to hold mid-stream."""
    return rows * (CHUNK_BYTES * 7 // 2 // len(as_csv(rows, header=None)))


def file_for(stage, rows) -> tuple[list, bytes]:
    """The rows (many more, when the stage holds the download mid-file) and their file."""
    rows = many(rows) if stage is copying_mid_file else rows
    return rows, as_csv(rows)


def assert_abandoned(run: dict) -> None:
    assert run["status"] == "failed" and run["error"].startswith("abandoned:"), run
    assert run["finished_at"] is not None and run["file_id"] is None and run["rows"] is None, run


def retry(t: Target, exit_code: int = 0) -> None:
    """The Job's next pod: the same command, to S3 directly."""
    done = run_cli(t.dsn, *t.args())
    assert done.returncode == exit_code, done.stdout + done.stderr


@pytest.mark.parametrize("stage", [*PRE_COMMIT, committed], ids=stage_id)
def test_a_load_killed_at_any_stage_is_loaded_once_by_the_retry(db, s3, moto_endpoint, stage):
    dsn, conn = db
    rows, body = file_for(stage, ROWS)
    s3.put("p.csv", body)
    t = target(db, s3, moto_endpoint, "p.csv", body)
    with ExitStack() as holds:
        kill(conn, stage(t, holds))

    assert advisory_locks(conn) == 0
    assert_holds_exactly(conn, rows if stage is committed else [])
    # Nothing can tell a killed run from a live one but its lock, which only the next run checks.
    assert runs(conn)[-1]["status"] == ("loaded" if stage is committed else "running")
    retry(t)
    # A third run is not held up by anything the killed one left, and finds the file loaded.
    assert run_job(dsn, s3.name, "p.csv") == 0

    assert_holds_exactly(conn, rows)
    killed, retried, third = runs(conn)
    if stage is committed:
        # The outcome was written inside the load's transaction, so it committed with it.
        assert (killed["status"], killed["rows"], killed["error"]) == ("loaded", len(rows), None), killed
        assert killed["finished_at"] is not None and killed["file_id"] is not None
        assert (retried["status"], retried["file_id"]) == ("already_loaded", killed["file_id"]), retried
    else:
        # The retry's sweep found the killed run's lock free and said what happened to it.
        assert_abandoned(killed)
        assert (retried["status"], retried["rows"], retried["bytes"]) == ("loaded", len(rows), len(body)), retried
        assert retried["error"] is None and retried["finished_at"] is not None
    assert (third["status"], third["file_id"]) == ("already_loaded", retried["file_id"]), third


@pytest.mark.parametrize("stage", [copying_mid_file, copied, committing], ids=stage_id)
def test_a_new_version_killed_mid_load_leaves_the_old_one_until_the_retry_replaces_it(db, s3, moto_endpoint, stage):
    dsn, conn = db
    s3.enable_versioning()
    v1 = s3.put("p.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv", version_id=v1) == 0
    rows, body = file_for(stage, V2_ROWS)
    v2 = s3.put("p.csv", body)["VersionId"]
    t = target(db, s3, moto_endpoint, "p.csv", body, version_id=v2)
    with ExitStack() as holds:
        kill(conn, stage(t, holds))

    # At ``committing`` the new version's transaction had deleted these rows already.
    assert_holds_exactly(conn, ROWS)
    with conn.cursor() as cur:
        cur.execute("SELECT version, replaced_at IS NULL FROM ingest_files")
        assert cur.fetchall() == [(v1, True)]
    retry(t)
    assert run_job(dsn, s3.name, "p.csv", version_id=v2) == 0

    assert_holds_exactly(conn, rows)
    first, killed, retried, third = runs(conn)
    assert first["status"] == "loaded"
    assert_abandoned(killed)
    assert [(r["version_id"], r["status"]) for r in (retried, third)] == [(v2, "loaded"), (v2, "already_loaded")]


def test_an_invalid_file_killed_mid_load_loads_nothing_and_its_retry_rejects_it(db, s3, moto_endpoint):
    dsn, conn = db
    # The bad row is last, so the killed job was copying rows that looked fine.
    rows = many(ROWS) + [("CNSHA", "XXXXX", "2016-01-01", 5)]
    body = as_csv(rows)
    s3.put("bad.csv", body)
    t = target(db, s3, moto_endpoint, "bad.csv", body)
    with ExitStack() as holds:
        kill(conn, copying_mid_file(t, holds))

    retry(t, exit_code=2)
    assert run_job(dsn, s3.name, "bad.csv") == 2

    assert_holds_exactly(conn, [])
    killed, retried, third = runs(conn)
    assert_abandoned(killed)
    assert (retried["status"], third["status"]) == ("rejected", "rejected")
    assert [(bad["line"], bad["text"]) for bad in retried["bad_rows"]] == [(len(rows) + 1, "CNSHA,XXXXX,2016-01-01,5")]


@pytest.mark.parametrize("killed", ["holder", "waiter"])
def test_a_kill_while_a_second_run_waits_for_the_key_leaves_one_load(db, s3, moto_endpoint, killed):
    dsn, conn = db
    body = as_csv(ROWS)
    s3.put("p.csv", body)
    t = target(db, s3, moto_endpoint, "p.csv", body)
    with ExitStack() as holds:
        holder, totals_lock = _copied(t, holds)
        holder_run, holder_sessions = newest_run(conn), job_sessions(conn)
        waiter = t.start()
        holds.callback(stop, waiter)
        wait_until(waiter, lambda: lock_waiters(conn, application_name="rates-ingest",
                                                query_prefix="SELECT pg_advisory_xact_lock"),
                   "the second run to wait for the key's lock")
        waiter_run, waiter_sessions = newest_run(conn), job_sessions(conn) - holder_sessions
        if killed == "holder":
            kill(conn, holder, holder_sessions)
            # With the totals' lock still held: the key's lock went with the killed session.
            wait_until(waiter, lambda: lock_waiters(conn, application_name="rates-ingest", query_prefix="COPY prices"),
                       "the second run to take the key's lock and copy")
            survivor, victim_run, survivor_run = waiter, holder_run, waiter_run
        else:
            kill(conn, waiter, waiter_sessions)
            survivor, victim_run, survivor_run = holder, waiter_run, holder_run
        totals_lock.rollback()
        output, _ = survivor.communicate(timeout=60)
        assert survivor.returncode == 0, output

    assert_holds_exactly(conn, ROWS)
    recorded = {run["id"]: run for run in runs(conn)}
    assert recorded[survivor_run]["status"] == "loaded"
    # The survivor's sweep came before the kill; only a run that starts after it can tell.
    assert recorded[victim_run]["status"] == "running"
    retry(t)
    recorded = {run["id"]: run for run in runs(conn)}
    assert_abandoned(recorded[victim_run])
    assert recorded[max(recorded)]["status"] == "already_loaded"
    assert_holds_exactly(conn, ROWS)


def test_a_load_mid_copy_holds_the_ports_it_validated_against(db, s3, moto_endpoint):
    """0021 through the loader itself: a port deleted while a file that may name it loads
    would leave its rows counted nowhere. Held mid-COPY, before its totals take any lock a
    port's delete also needs (a test of the function alone passed with a loader that read
    the ports without it)."""
    dsn, conn = db
    _, body = file_for(copying_mid_file, ROWS)
    s3.put("p.csv", body)
    t = target(db, s3, moto_endpoint, "p.csv", body)
    with ExitStack() as holds:
        copying_mid_file(t, holds)
        with conn.cursor() as owner:
            owner.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                owner.execute("DELETE FROM ports WHERE code = 'HKHKG'")  # no price names it
            owner.execute("RESET lock_timeout")
