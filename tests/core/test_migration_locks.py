"""A migration that needs a lock an ingest holds neither stalls the API's reads behind it
nor fails at once: it steps out of the lock queue and tries again until the ingest ends."""

import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import psycopg2
import pytest

from yoyo import get_backend

from rates_core import migrate
from rates_core.env import ConfigError
from rates_core.errors import TemporaryError
from tests.support.db import autocommit, lock_waiters

EXTRA = "9999_needs_prices_to_itself"


@pytest.fixture
def one_more_migration(tmp_path, monkeypatch):
    """The real migrations and one more that needs `prices` exclusively, as a column change does."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, folder)
    (folder / f"{EXTRA}.sql").write_text("ALTER TABLE prices ADD COLUMN note text;\n")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", folder)
    monkeypatch.setattr(migrate, "LOCK_RETRY_PAUSE_S", 0.2)


@contextmanager
def ingest_in_progress(dsn: str):
    """An open transaction that writes `prices`, as a load's does for minutes."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE prices IN ROW EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def has_note_column(dsn: str) -> bool:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'prices' "
                    "AND column_name = 'note'")
        found = cur.fetchone()[0] == 1
    conn.close()
    return found


def test_reads_pass_while_a_migration_waits_for_an_ingest_and_it_applies_when_the_ingest_ends(
        dsn, one_more_migration):
    result = {}
    with ingest_in_progress(dsn):
        worker = threading.Thread(target=lambda: result.update(applied=migrate.apply(dsn, lock_wait_s=120)))
        worker.start()
        with autocommit(dsn) as watcher:
            deadline = time.monotonic() + 30
            while not lock_waiters(watcher) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert lock_waiters(watcher), "the migration never queued for the lock"
        # Queued behind the migration's request, a read waits until the migration gives up
        # its place; without the lock timeout, until the ingest commits: never, here. The
        # read runs under the API's own statement timeout (DB_STATEMENT_TIMEOUT_MS, 5000 by
        # default): a lock timeout the API's reads would not outlast must fail here.
        reader = psycopg2.connect(dsn, options="-c statement_timeout=5000")
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM prices")
            assert cur.fetchone() == (0,)
        reader.close()
        assert worker.is_alive() and not has_note_column(dsn)
    worker.join(60)
    assert result["applied"] == [EXTRA] and has_note_column(dsn)


def test_a_migration_that_never_gets_its_lock_fails_retryably_and_changes_nothing(dsn, one_more_migration):
    with ingest_in_progress(dsn):
        with pytest.raises(TemporaryError, match=r"could not get the locks it needs in 1 s.*lock timeout"):
            migrate.apply(dsn, lock_wait_s=1)
    assert migrate.pending(dsn) == [EXTRA] and not has_note_column(dsn)


def kill_a_migration_queued_on_prices(dsn: str, watcher) -> None:
    """Run the migrations in a process, wait until it queues for its lock on `prices`
    (behind an ingest in progress), and SIGKILL it, as a hook pod's deadline would."""
    script = ("import sys; from pathlib import Path; from rates_core import migrate; "
              "migrate.MIGRATIONS_DIR = Path(sys.argv[1]); migrate.apply(sys.argv[2], 120)")
    killed = subprocess.Popen([sys.executable, "-c", script, str(migrate.MIGRATIONS_DIR), dsn])
    try:
        deadline = time.monotonic() + 60
        while not lock_waiters(watcher, query_prefix="ALTER TABLE prices") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock_waiters(watcher, query_prefix="ALTER TABLE prices"), "the migration never queued"
    finally:
        killed.kill()
        killed.wait()


def test_a_migration_killed_mid_migration_leaves_nothing_that_stops_the_next(dsn, one_more_migration, tmp_path):
    """A hook pod killed while it migrates (its deadline, an eviction, an OOM kill): the
    next migration goes on at once, instead of finding yoyo's lock row for ever."""
    with ingest_in_progress(dsn), autocommit(dsn) as watcher:
        kill_a_migration_queued_on_prices(dsn, watcher)
    assert migrate.apply(dsn, lock_wait_s=30) == [EXTRA] and has_note_column(dsn)


def test_a_killed_migrations_statement_that_waits_without_a_lock_timeout_ends_with_it(dsn, one_more_migration):
    """As a CONCURRENTLY build does (README: it sets lock_timeout = 0): killed while it waits
    for a load, its statement must not go on without it, blocking the next hook."""
    (migrate.MIGRATIONS_DIR / f"{EXTRA}.sql").write_text("SET lock_timeout = 0;\nALTER TABLE prices ADD COLUMN note text;\n")
    with ingest_in_progress(dsn), autocommit(dsn) as watcher:
        kill_a_migration_queued_on_prices(dsn, watcher)
        deadline = time.monotonic() + 10
        while lock_waiters(watcher, query_prefix="ALTER TABLE prices") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not lock_waiters(watcher, query_prefix="ALTER TABLE prices")  # while the load still runs


def test_a_second_migration_waits_for_the_first(dsn, one_more_migration):
    with autocommit(dsn) as first:
        with first.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", migrate.MIGRATION_LOCK)
        with pytest.raises(TemporaryError, match="another migration is running"):
            migrate.apply(dsn, lock_wait_s=1)
        assert migrate.pending(dsn) == [EXTRA]
        result = {}
        second = threading.Thread(target=lambda: result.update(applied=migrate.apply(dsn, lock_wait_s=60)))
        second.start()
        time.sleep(1)
        assert second.is_alive() and not has_note_column(dsn)
        with first.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, %s)", migrate.MIGRATION_LOCK)
        second.join(60)
    assert result["applied"] == [EXTRA] and has_note_column(dsn)


def test_the_lock_timeout_comes_before_the_urls_own_options():
    uri = migrate._yoyo_uri("postgresql://u@db/rates?options=-c%20lock_timeout%3D0&sslmode=require")
    query = parse_qs(urlsplit(uri).query)
    ours, theirs = query["options"][0].split(" -c lock_timeout=0")
    assert theirs == "" and f"-c lock_timeout={migrate.LOCK_TIMEOUT_MS}" in ours  # the URL's last, so it wins
    # The README's figure: a migration statement waits at most 2 s for a lock.
    assert "-c lock_timeout=2000 " in query["options"][0]
    assert query["sslmode"] == ["require"]


def test_the_lock_wait_is_read_from_the_environment():
    assert migrate.lock_wait_from_env({}) == migrate.LOCK_WAIT_S
    assert migrate.lock_wait_from_env({}) == 300  # the README's documented default
    assert migrate.lock_wait_from_env({"MIGRATION_LOCK_WAIT_SECONDS": "0"}) == 0
    with pytest.raises(ConfigError, match="MIGRATION_LOCK_WAIT_SECONDS"):
        migrate.lock_wait_from_env({"MIGRATION_LOCK_WAIT_SECONDS": "-1"})


def test_0009_builds_its_index_once_waiting_for_a_running_load_instead_of_starting_over(
        empty_dsn, tmp_path, monkeypatch):
    # CREATE INDEX CONCURRENTLY waits for every transaction whose snapshot is older than
    # the build, a load's COPY included, without blocking anyone meanwhile. Under the
    # migrations' 2 s lock timeout it would give up, and the build start over, every 2 s.
    before_0009 = tmp_path / "before_0009"
    before_0009.mkdir()
    for path in sorted(migrate.MIGRATIONS_DIR.glob("000[1-8]_*.sql")):
        shutil.copy(path, before_0009)
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "MIGRATIONS_DIR", before_0009)
        migrate.apply(empty_dsn)
    attempts = []
    apply_pending = migrate._apply_pending
    monkeypatch.setattr(migrate, "_apply_pending", lambda *args: attempts.append(1) or apply_pending(*args))
    monkeypatch.setattr(migrate, "LOCK_RETRY_PAUSE_S", 0.2)
    loading = threading.Thread(target=_load_for_5_s, args=(empty_dsn,))
    loading.start()
    try:
        deadline = time.monotonic() + 30
        while not _sleeping(empty_dsn) and time.monotonic() < deadline:
            time.sleep(0.05)
        applied = migrate.apply(empty_dsn, lock_wait_s=120)
    finally:
        loading.join()
    assert applied[0] == "0009_region_totals_covering_key" and len(attempts) == 1


def _load_for_5_s(dsn: str) -> None:
    """A load's transaction, its COPY running for 5 s, then rolled back."""
    load = psycopg2.connect(dsn)
    try:
        with load.cursor() as cur:
            cur.execute("LOCK TABLE prices IN ROW EXCLUSIVE MODE")
            cur.execute("SELECT pg_sleep(5)")
    finally:
        load.rollback()
        load.close()


def _sleeping(dsn: str) -> bool:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' AND state = 'active'"
                    " AND datname = current_database()")
        found = cur.fetchone()[0] == 1
    conn.close()
    return found


def test_a_migrations_session_asks_the_server_for_the_keepalives_as_every_other_does(dsn):
    # A migration holds the strongest locks: a session whose pod vanished with its node
    # must not keep them for the server's two-hour default.
    backend = get_backend(migrate._yoyo_uri(dsn))
    try:
        rows = backend.execute("SELECT name, source FROM pg_settings WHERE name LIKE 'tcp_keepalives_%%' "
                               "ORDER BY name").fetchall()
    finally:
        backend.connection.close()
    assert rows == [("tcp_keepalives_count", "client"), ("tcp_keepalives_idle", "client"),
                    ("tcp_keepalives_interval", "client")]


def test_a_migration_that_deadlocks_with_a_reader_is_tried_again(dsn, tmp_path, monkeypatch):
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, folder)
    (folder / "9999_two_tables.sql").write_text("ALTER TABLE region_totals ADD COLUMN note text;\n"
                                                "ALTER TABLE lane_totals ADD COLUMN note text;\n")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", folder)
    monkeypatch.setattr(migrate, "LOCK_RETRY_PAUSE_S", 0.2)
    reader = psycopg2.connect(dsn)  # a transaction that reads lane_totals, then region_totals
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM lane_totals")
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True

    def read_region_totals_once_the_migration_waits():
        # The migration holds region_totals and waits for lane_totals: the cycle closes here,
        # and the migration, waiting longest, finds it (deadlock_timeout) and is ended.
        time.sleep(0.1)
        while not lock_waiters(watcher, query_prefix="ALTER TABLE lane_totals"):
            time.sleep(0.02)
        try:
            with reader.cursor() as cur:
                cur.execute("SELECT count(*) FROM region_totals")
        finally:
            reader.rollback()

    second = threading.Thread(target=read_region_totals_once_the_migration_waits)
    second.start()
    try:
        assert "9999_two_tables" in migrate.apply(dsn, lock_wait_s=30)
    finally:
        second.join(30)
        reader.close()
        watcher.close()
