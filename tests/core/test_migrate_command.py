"""``python -m rates_core.migrate``, which the API chart's migration hook runs."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest
from yoyo import get_backend

from rates_core import migrate
from tests.support.db import as_user, autocommit
from tests.support.net import SilentServer


def run(env: dict) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | env
    return subprocess.run([sys.executable, "-m", "rates_core.migrate"], env=environ, capture_output=True,
                          text=True, timeout=120)


def test_it_migrates_an_empty_database_and_a_second_run_changes_nothing(empty_dsn):
    assert run({"DATABASE_URL": empty_dsn}).returncode == 0
    assert migrate.pending(empty_dsn) == []
    assert run({"DATABASE_URL": empty_dsn}).returncode == 0


def test_an_unreachable_database_may_pass_on_retry():
    result = run({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"})
    assert result.returncode == 1, result.stdout + result.stderr


@pytest.mark.parametrize("option", ["sslmode=bogus", "connect_timeout=abc"])
def test_an_option_libpq_refuses_is_exit_2_not_a_retry(empty_dsn, option):
    # Refused by libpq before it connects, the same on every try of the hook.
    result = run({"DATABASE_URL": f"{empty_dsn}&{option}"})
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = [json.loads(line) for line in result.stdout.splitlines() if '"error"' in line]
    assert option.split("=")[1] in line["error"] and "retry" not in line["event"], line
    assert len(migrate.pending(empty_dsn)) == len(list(migrate.MIGRATIONS_DIR.glob("[0-9]*.sql")))  # none applied


def test_a_missing_database_url_is_one_line_and_exit_2():
    result = run({})
    assert result.returncode == 2
    assert json.loads(result.stdout.splitlines()[-1])["error"] == "environment variable DATABASE_URL is required"


def test_iam_authentication_is_refused_in_one_line_not_ignored(empty_dsn):
    result = run({"DATABASE_URL": empty_dsn, "DATABASE_IAM_AUTH": "true"})
    assert result.returncode == 2
    assert "the migrations log in as the schema owner" in json.loads(result.stdout.splitlines()[-1])["error"]
    assert len(migrate.pending(empty_dsn)) == len(list(migrate.MIGRATIONS_DIR.glob("[0-9]*.sql")))  # none applied
    assert run({"DATABASE_URL": empty_dsn, "DATABASE_IAM_AUTH": "false"}).returncode == 0


def test_a_database_that_never_answers_fails_the_migration_in_seconds():
    # A host that takes the connection and then says nothing (a black-holed address): without
    # a connect timeout the migration hook would hang until helm gave up on it.
    with SilentServer() as silent:
        dsn = f"postgresql://nobody@127.0.0.1:{silent.port}/none?sslmode=disable&gssencmode=disable"
        started = time.monotonic()
        result = run({"DATABASE_URL": dsn})
    assert result.returncode == 1, result.stdout + result.stderr  # may pass on retry
    assert "timeout expired" in result.stdout
    assert time.monotonic() - started < 60  # migrate.CONNECT_TIMEOUT_S (10 s), not the 120 s of run()


def test_the_migrations_connect_with_the_timeouts_and_keepalives_of_every_connection():
    uri = urllib.parse.urlsplit(migrate._yoyo_uri("postgresql://u@db:5432/rates?tcp_user_timeout=2500"))
    query = urllib.parse.parse_qs(uri.query)
    assert query["tcp_user_timeout"] == ["2500"]  # the URL's own value wins
    assert query["keepalives_idle"] == ["30"] and query["connect_timeout"] == [str(migrate.CONNECT_TIMEOUT_S)]


HOLD_YOYOS_LOCK = """
import sys, time
from yoyo import get_backend
from rates_core import migrate
backend = get_backend(migrate._yoyo_uri(sys.argv[1]))
with backend.lock():
    print("locked", flush=True)
    time.sleep(600)
"""


def test_yoyos_lock_row_left_by_a_killed_migration_is_cleared_and_said(empty_dsn):
    # What a hook killed mid-migration by an earlier release left: yoyo's row, which used to
    # fail every later hook (exit 1, retried, then the release) until cleared by hand.
    killed = subprocess.Popen([sys.executable, "-c", HOLD_YOYOS_LOCK, empty_dsn], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline() == "locked\n"
    killed.kill()
    killed.wait()
    result = run({"DATABASE_URL": empty_dsn})
    assert result.returncode == 0, result.stdout + result.stderr
    [cleared] = [line for line in map(json.loads, result.stdout.splitlines()) if "cleared" in line["event"]]
    assert cleared["locked_by_pid"] == killed.pid, cleared
    assert migrate.pending(empty_dsn) == []


def test_a_running_migration_of_an_older_release_is_waited_for_not_run_beside(empty_dsn):
    # An earlier release's migrator (or yoyo by hand) holds yoyo's lock, not the migration
    # lock: its row is live while its session is, and must not be taken from it.
    backend = get_backend(migrate._yoyo_uri(empty_dsn))
    try:
        with backend.lock():
            result = run({"DATABASE_URL": empty_dsn, "MIGRATION_LOCK_WAIT_SECONDS": "2"})
            assert result.returncode == 1, result.stdout + result.stderr  # may pass on retry
            assert "another migration holds yoyo's lock (process %d" % os.getpid() in result.stdout
            with backend.transaction():
                assert backend.execute(f"SELECT pid FROM {backend.lock_table_quoted}").fetchall() == [(os.getpid(),)]
    finally:
        backend.connection.close()
    assert migrate.pending(empty_dsn) != []
    assert run({"DATABASE_URL": empty_dsn}).returncode == 0 and migrate.pending(empty_dsn) == []


def test_a_schema_newer_than_the_code_is_said_and_is_not_an_error(empty_dsn):
    # As after a rollback: the database was migrated by a release whose migrations this one lacks.
    first = run({"DATABASE_URL": empty_dsn})
    assert first.returncode == 0 and "unknown_migrations" not in first.stdout
    backend = get_backend(migrate._yoyo_uri(empty_dsn))
    try:
        with backend.transaction():
            backend.execute(f"INSERT INTO {backend.migration_table_quoted} (migration_hash, migration_id, applied_at_utc)"
                            " VALUES (repeat('f', 64), '9999_from_a_later_release', now())")
    finally:
        backend.connection.close()
    result = run({"DATABASE_URL": empty_dsn})
    assert result.returncode == 0, result.stdout + result.stderr
    [warning] = [json.loads(line) for line in result.stdout.splitlines() if '"warning"' in line]
    assert warning["unknown_migrations"] == ["9999_from_a_later_release"]


def test_arguments_are_refused_and_help_applies_nothing(empty_dsn):
    # The hook's command takes none: a typo'd flag must not apply the migrations unasked.
    refused = subprocess.run([sys.executable, "-m", "rates_core.migrate", "--dry-run"], capture_output=True, text=True,
                             env=os.environ | {"DATABASE_URL": empty_dsn}, timeout=60)
    assert refused.returncode == 2 and "unrecognized arguments: --dry-run" in refused.stderr
    helped = subprocess.run([sys.executable, "-m", "rates_core.migrate", "--help"], capture_output=True, text=True,
                            env=os.environ | {"DATABASE_URL": empty_dsn}, timeout=60)
    assert helped.returncode == 0 and "DATABASE_URL" in helped.stdout
    assert len(migrate.pending(empty_dsn)) == len(list(migrate.MIGRATIONS_DIR.glob("[0-9]*.sql")))  # none applied


# The hook's command, with yoyo's recording of each applied migration slowed down, so that
# a SIGTERM lands between the migration's commit and its record.
_SLOW_RECORD = """
import runpy, sys, time
import yoyo.backends.base as base
record = base.DatabaseBackend.mark_one
def slow(self, migration, log=True):
    print("RECORDING", migration.id, flush=True)
    time.sleep(2)
    return record(self, migration, log)
base.DatabaseBackend.mark_one = slow
sys.argv = ["rates_core.migrate"]
runpy.run_module("rates_core.migrate", run_name="__main__", alter_sys=True)
"""


_SLOW_RECORD_RATESCTL = _SLOW_RECORD.replace('sys.argv = ["rates_core.migrate"]', 'sys.argv = ["ratesctl", "migrate"]') \
    .replace('run_module("rates_core.migrate"', 'run_module("ratesctl.cli"')


@pytest.mark.parametrize("command, signum", [(_SLOW_RECORD, signal.SIGTERM),
                                             (_SLOW_RECORD_RATESCTL, signal.SIGINT)], ids=["hook", "ratesctl"])
def test_a_signal_lets_the_migration_in_progress_be_recorded_before_it_stops(empty_dsn, command, signum):
    # yoyo commits a migration, then records it on another connection: stopped between the
    # two, the migration would be applied but not recorded, and every later run would fail
    # on it ("relation already exists"), exit 2, until someone marked it by hand.
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": empty_dsn}
    hook = subprocess.Popen([sys.executable, "-c", command], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in hook.stdout:
            if line.startswith("RECORDING"):
                first = line.split()[1]
                hook.send_signal(signum)  # a Ctrl-C, for ratesctl
                break
        rest = hook.stdout.read()
        assert hook.wait(timeout=60) == 1, rest  # may pass on retry
    finally:
        hook.kill()
        hook.wait()
    assert first not in migrate.pending(empty_dsn)  # recorded: it was applied
    assert len(migrate.pending(empty_dsn)) == len(list(migrate.MIGRATIONS_DIR.glob("[0-9]*.sql"))) - 1  # none after it
    assert run({"DATABASE_URL": empty_dsn}).returncode == 0 and migrate.pending(empty_dsn) == []


def last_error(result: subprocess.CompletedProcess) -> str:
    return json.loads(result.stdout.splitlines()[-1])["error"]


def test_a_read_only_database_is_said_as_such_and_may_pass_on_retry(empty_dsn, admin_dsn):
    # As during a failover, while the writer endpoint still points at the old primary. yoyo
    # ignores any error creating its lock table and retries any inserting its row, so this
    # came out as a missing table (exit 2: the hook's Job failed for good) on a new
    # database, and as a lock another migration held (after 10 s) on a migrated one.
    name = urllib.parse.urlsplit(empty_dsn).path.lstrip("/")
    with autocommit(admin_dsn) as conn, conn.cursor() as cur:
        for migrated in (False, True):
            if migrated:
                cur.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
                assert run({"DATABASE_URL": empty_dsn}).returncode == 0
            cur.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            result = run({"DATABASE_URL": empty_dsn})
            assert result.returncode == 1, result.stdout + result.stderr
            # Not a lock another migration held, after yoyo's tries: the cause itself.
            assert "read-only transaction" in last_error(result), result.stdout


def test_a_user_who_may_not_create_tables_is_told_so(empty_dsn, admin_dsn):
    # PostgreSQL 15 and later give PUBLIC no CREATE on schema public.
    with autocommit(admin_dsn) as conn, conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS rates_no_create; CREATE ROLE rates_no_create LOGIN")
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        result = run({"DATABASE_URL": as_user(empty_dsn, "rates_no_create")})
        assert result.returncode == 2, result.stdout + result.stderr  # a retry cannot help
        assert "permission denied for schema public" in last_error(result), result.stdout
    finally:
        with autocommit(admin_dsn) as conn, conn.cursor() as cur:
            cur.execute("DROP ROLE rates_no_create")
