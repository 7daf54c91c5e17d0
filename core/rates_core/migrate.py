"""Schema migrations (yoyo, plain SQL files in ``migrations/``)."""

import getpass
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2.errors
from yoyo import get_backend, read_migrations
from yoyo.exceptions import BadMigration, LockTimeout

from . import db
from .env import env_int
from .errors import EXIT_OK, EXIT_PERMANENT, EXIT_TEMPORARY, PermanentError, TemporaryError
from .logs import get_logger

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT_S = 10
# A migration that needs a lock an open transaction holds (an ingest's, for minutes) waits
# in PostgreSQL's lock queue, and every later query on that table waits behind it: the
# API's reads would stall until the ingest committed. So a statement waits for a lock at
# most LOCK_TIMEOUT_MS (below the API's 5 s statement timeout); the migration then rolls
# back, steps out of the queue so that the reads behind it pass, and is tried again after
# LOCK_RETRY_PAUSE_S, for up to MIGRATION_LOCK_WAIT_SECONDS in all.
LOCK_TIMEOUT_MS = 2000
CLIENT_CHECK_MS = 1000
LOCK_RETRY_PAUSE_S = 3.0
LOCK_WAIT_S = 300
LOCK_NOT_AVAILABLE = "55P03"
# A migration that locks two tables can deadlock with a transaction that reads both (an
# API request, a report); PostgreSQL ends one of the two, and the migration is then tried
# again as after a lock timeout.
DEADLOCK_DETECTED = "40P01"
# Every migrator holds this session-level advisory lock while it runs (two keys, a space
# apart from the ingest job's locks). The server lets go of it when the session ends, also
# when the process is killed (a hook pod's deadline, an eviction, an OOM kill), unlike
# yoyo's lock, a row that only yoyo's own `finally` deletes: a killed migration left it,
# and every later one, each deploy's hook, failed until someone ran `yoyo break-lock`.
MIGRATION_LOCK = (7_201_602, 1)
LOCK_APPLICATION = "rates-migrate-lock"  # the sessions that hold or wait for it
log = get_logger(__name__)


def _yoyo_uri(dsn: str) -> str:
    # yoyo picks its driver from the scheme; plain postgres:// means psycopg2 to us.
    if dsn.startswith("postgres://"):
        dsn = "postgresql://" + dsn[len("postgres://"):]
    if not dsn.startswith("postgresql://"):
        raise PermanentError("migrations need DATABASE_URL as a URL, postgresql://user@host:port/db, "
                             "not libpq keywords")
    try:
        given = db.parse_url(dsn)  # libpq's reading
        if "," in given.get("host", ""):
            raise PermanentError("yoyo, which applies the migrations, takes one host")
        parts = urllib.parse.urlsplit(dsn)
        parts.port  # yoyo's, which is stricter about the port
    except PermanentError as exc:
        raise PermanentError(f"DATABASE_URL is not a valid URL: {exc}") from None
    except ValueError as exc:
        raise PermanentError(f"DATABASE_URL is not a valid URL: {db.url_error(exc)}") from None
    # yoyo hands the query's parameters to psycopg2.connect: the timeouts and keepalives of
    # every other connection (rates_core.db), so that an unreachable database fails the
    # migration in seconds (exit 1) and a vanished one is noticed during a long statement.
    added = db.tcp_settings(given)
    if "connect_timeout" not in given:
        added = {"connect_timeout": CONNECT_TIMEOUT_S, **added}
    # Every connection yoyo opens (one per migration) reads the URL: the server keepalives
    # of every connection (rates_core.db) and the lock timeout go there, ahead of the URL's
    # own options, which may set others.
    own = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    # The client check ends a killed hook's statement within a second: a CONCURRENTLY
    # build waiting for a load with no lock timeout would otherwise go on without it,
    # holding the next hook up ("another migration holds yoyo's lock") and leaving an
    # index it never records.
    options = " ".join(filter(None, [db.SERVER_KEEPALIVES, f"-c lock_timeout={LOCK_TIMEOUT_MS}",
                                     f"-c client_connection_check_interval={CLIENT_CHECK_MS}",
                                     given.get("options", "")]))
    query = urllib.parse.urlencode([*own, *added.items(), ("options", options)])
    return urllib.parse.urlunsplit(parts._replace(query=query))


def pending(dsn: str) -> list[str]:
    with db.classified():
        backend = get_backend(_yoyo_uri(dsn))
        try:
            return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
        finally:
            backend.connection.close()


def apply(dsn: str, lock_wait_s: float = LOCK_WAIT_S) -> list[str]:
    """Apply every migration not yet applied; return the ids applied now.

    The migration lock (MIGRATION_LOCK) makes two migrators at once safe: the second waits
    for the first, up to ``lock_wait_s``. Errors are TemporaryError (unreachable, locked:
    retry) or PermanentError (a failing migration). A migration that cannot get a table's
    lock within LOCK_TIMEOUT_MS is tried again until ``lock_wait_s`` has passed (see
    LOCK_TIMEOUT_MS).
    """
    _yoyo_uri(dsn)  # a URL yoyo takes, before any connection
    deadline = time.monotonic() + lock_wait_s
    with _migration_lock(dsn, deadline):
        return _apply_until(dsn, deadline, lock_wait_s)


@contextmanager
def _migration_lock(dsn: str, deadline: float) -> Iterator[None]:
    """Hold MIGRATION_LOCK on a connection of its own for the block; wait for another
    migrator's until ``deadline``."""
    conn = db.connect(dsn, application_name=LOCK_APPLICATION, autocommit=True,
                      connect_timeout_s=CONNECT_TIMEOUT_S)
    try:
        with db.classified(), conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", MIGRATION_LOCK)
                if cur.fetchone()[0]:
                    break
                _pause_or_give_up(deadline, "another migration is running and did not end in time; try again "
                                  "once it has", log.info, "another migration is running; waiting for it to end")
        yield
    finally:
        conn.close()


def _apply_until(dsn: str, deadline: float, lock_wait_s: float) -> list[str]:
    applied: dict[str, None] = {}  # ordered: the ids each attempt set out to apply
    while True:
        try:
            _apply_pending(dsn, applied, deadline)
            break
        except TemporaryError as exc:
            if getattr(exc, "pgcode", None) not in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED):
                raise
            _pause_or_give_up(deadline, f"a migration could not get the locks it needs in {lock_wait_s:g} s: other "
                              f"transactions hold them (an ingest in progress?): {exc}", log.warning,
                              "a migration waits for a lock another transaction holds; trying again",
                              error=str(exc))
    log.info("migrations applied", applied=list(applied))
    return list(applied)


def lock_wait_from_env(environ=None) -> int:
    """MIGRATION_LOCK_WAIT_SECONDS: how long ``apply`` tries again for the locks it needs."""
    return env_int("MIGRATION_LOCK_WAIT_SECONDS", LOCK_WAIT_S, minimum=0, maximum=86400, environ=environ)


def _name_the_os_user() -> None:
    """yoyo records who applied each migration with ``getpass.getuser()``, which raises
    when no LOGNAME or USER is set and the uid has no passwd entry: in a container that
    runs as a numeric user (the image's USER, a pod's runAsUser), every migration failed
    after it ran and was rolled back."""
    try:
        getpass.getuser()
    except (KeyError, OSError):
        os.environ["LOGNAME"] = f"uid-{os.getuid()}"


def _warn_if_schema_is_newer(backend, migrations) -> None:
    """The database has migrations that this code has no file for: an older image runs
    against a newer schema (a rollback, or an old migration Job). That is not an error,
    since a migration must stay compatible with the release before it, but it is worth
    saying instead of "already current"."""
    known = {m.hash for m in migrations}
    rows = backend.execute(f"SELECT migration_id, migration_hash FROM {backend.migration_table_quoted}").fetchall()
    newer = sorted(migration_id for migration_id, digest in rows if digest not in known)
    if newer:
        log.warning("the database has migrations this code does not know: the schema is newer than this code",
                    unknown_migrations=newer)


def _apply_pending(dsn: str, applied: dict[str, None], deadline: float) -> None:
    """One attempt; ``applied`` gets the ids it sets out to apply, in order. A failed
    attempt has applied those before the failing one, and the next attempt goes on."""
    _name_the_os_user()
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with db.classified():
        backend = get_backend(_yoyo_uri(dsn))
        try:
            _wait_for_yoyo_lock(backend, deadline)
            with backend.lock():
                todo = backend.to_apply(migrations)
                _warn_if_schema_is_newer(backend, migrations)
                applied.update(dict.fromkeys(m.id for m in todo))
                _apply_each(backend, todo)
        except LockTimeout as exc:  # taken since the wait above, by a migrator without MIGRATION_LOCK
            raise TemporaryError(f"another migration took yoyo's lock ({exc}): one of a release before this "
                                 "one, or yoyo run by hand; try again once it has ended") from exc
        finally:
            backend.connection.close()


# post-apply.sql's own test of whether it has anything to do, for the log.
_USERS_HOLD_THEIR_RIGHTS = """
    SELECT CASE WHEN (SELECT count(*) FROM pg_roles WHERE rolname IN ('rates_api', 'rates_ingest')) = 2
                THEN has_table_privilege('rates_api', 'public.data_version', 'SELECT')
                     AND has_table_privilege('rates_ingest', 'public.ingest_runs', 'INSERT')
                ELSE false END"""


def _apply_each(backend, todo) -> None:
    """yoyo's apply_migrations, each migration inside _one_migration: yoyo commits a
    migration on a connection of its own, then records it on another, and a process that
    ended between the two would leave it applied but not recorded, to fail every later run."""
    for migration in todo:
        with _one_migration():
            try:
                backend.apply_one(migration)
            except BadMigration:  # as yoyo's own loop: a migration it cannot read is passed over
                continue
    with _one_migration():
        if not backend.execute(_USERS_HOLD_THEIR_RIGHTS).fetchone()[0]:
            log.warning("the database users are missing or have lost their rights (a restore from a logical "
                        "dump?): migrations/post-apply.sql makes and grants them again")
        backend.run_post_apply(todo)


# Held while a migration is applied and recorded; a termination waits for it, and once
# it is stopping no next migration starts (see stop_on_termination).
_MIGRATING = threading.Lock()
_STOPPING = threading.Event()


@contextmanager
def _one_migration() -> Iterator[None]:
    _MIGRATING.acquire()
    if _STOPPING.is_set():  # checked holding the lock: a Lock is not fair to its waiter
        _MIGRATING.release()
        threading.Event().wait()  # for the watcher to end the process
    try:
        yield
    finally:
        _MIGRATING.release()


def _wait_for_yoyo_lock(backend, deadline: float) -> None:
    """Wait until yoyo's lock row is free, or provably left behind, and clear it then.

    A migrator without MIGRATION_LOCK (a release before it, yoyo run by hand) may hold the
    row: it keeps a session open while it runs, as the same user as this one. A row while
    no other session of that user is connected is one a killed run left: yoyo deletes its
    row only in its own `finally`, so it stayed, and failed every later migration."""
    _prepare_yoyo_lock(backend)
    while True:
        with backend.transaction():
            row = backend.execute(f"SELECT pid, ctime FROM {backend.lock_table_quoted}").fetchone()
            others = backend.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = current_user"
                " AND pid <> pg_backend_pid() AND application_name <> :ours", {"ours": LOCK_APPLICATION}).fetchone()[0]
            if row and not others:
                backend.execute(f"DELETE FROM {backend.lock_table_quoted}")
        if row is None:
            return
        held = {"locked_by_pid": row[0], "locked_at": row[1].isoformat()}
        if not others:
            log.warning("cleared yoyo's lock, which a killed migration left behind", **held)
            return
        _pause_or_give_up(deadline, f"another migration holds yoyo's lock (process {row[0]}, since "
                          f"{row[1]:%H:%M:%S} UTC) and has not ended: one of a release before this one, or yoyo run "
                          f"by hand. If none runs, end the other sessions of this user ({others})",
                          log.info, "another migration holds yoyo's lock; waiting for it to end", sessions=others,
                          **held)


def _prepare_yoyo_lock(backend) -> None:
    """Create yoyo's lock table as its lock() would, and write a lock row once, rolled back.

    yoyo ignores any error creating the table and retries any inserting its row for 10 s:
    a read-only database (a failover) or a user without CREATE came out as a missing table
    (exit 2) or as a lock that another migration holds. Here the error is itself."""
    lock_table = backend.lock_table_quoted
    with backend.transaction():
        exists = backend.execute("SELECT to_regclass(:name) IS NOT NULL", {"name": lock_table}).fetchone()[0]
    if not exists:
        try:
            with backend.transaction():
                backend.execute(backend.format_sql(backend.create_lock_table_sql))
        except psycopg2.errors.DuplicateTable:  # made meanwhile, by a migrator of a release before this one
            pass
    with backend.transaction(rollback_on_exit=True):
        backend.execute(f"INSERT INTO {lock_table} (locked, ctime, pid) VALUES (1, now(), 0) ON CONFLICT DO NOTHING")


def _pause_or_give_up(deadline: float, give_up: str, level, event: str, **fields) -> None:
    """Before the next try of a wait: sleep LOCK_RETRY_PAUSE_S, saying why at ``level``, or
    raise TemporaryError(``give_up``) if that would pass ``deadline``."""
    if time.monotonic() + LOCK_RETRY_PAUSE_S > deadline:
        raise TemporaryError(give_up)
    level(event, retry_in_s=LOCK_RETRY_PAUSE_S, **fields)
    time.sleep(LOCK_RETRY_PAUSE_S)


def main(argv: list[str] | None = None) -> int:
    """``python -m rates_core.migrate``: apply the migrations to $DATABASE_URL, as the
    API chart's pre-upgrade hook does (the API image has no ratesctl). Exit codes: 0 done,
    1 may pass on retry, 2 cannot (a failing migration, bad config: the hook fails the
    release instead of retrying)."""
    import argparse

    from . import logs
    from .env import ConfigError, env_bool, env_choice, env_str

    # No arguments: a stray one (a typo'd flag) must not apply the migrations unasked.
    argparse.ArgumentParser(
        prog="python -m rates_core.migrate",
        description="Apply the schema migrations to $DATABASE_URL. Exit status: 0 done, 1 may pass"
                    " on retry, 2 cannot.",
        epilog="Settings: DATABASE_URL (the schema owner's, with its password), MIGRATION_LOCK_WAIT_SECONDS,"
               " LOG_LEVEL.",
    ).parse_args(argv)
    try:
        logs.configure(env_choice("LOG_LEVEL", "INFO", logs.LEVELS), service="rates-migrate")
        if env_bool("DATABASE_IAM_AUTH", False):
            # The owner logs in with a password (README, "Database users"); ignoring the
            # setting would try the URL without one and fail as a login error instead.
            raise ConfigError("DATABASE_IAM_AUTH=true is for the API and the ingest job; the migrations "
                              "log in as the schema owner, with the password in DATABASE_URL")
        apply(env_str("DATABASE_URL"), lock_wait_from_env())
    except ConfigError as exc:
        logs.configure(service="rates-migrate")
        log.error("configuration error", error=str(exc))
        return EXIT_PERMANENT
    except TemporaryError as exc:
        log.error("migrations failed; this may pass on retry", error=str(exc))
        return EXIT_TEMPORARY
    except PermanentError as exc:
        log.error("migrations failed", error=str(exc))
        return EXIT_PERMANENT
    return EXIT_OK


def stop_on_termination() -> None:
    """SIGTERM (a hook's deadline, a drain) ends the process as soon as no migration is
    being applied: at once while it waits for a lock, else once the migration in progress
    is applied and recorded. The hook's grace period bounds that wait (a SIGKILL then).

    As a pod's first process, Python would never even see a signal it has no handler for.
    For the process as a whole: call it once, from the main thread, as ``__main__`` does.
    """
    import signal
    import sys

    from . import signals

    def stop(signum: int) -> None:
        log.warning("terminated; stopping once no migration is being applied", signal=signal.Signals(signum).name)
        _STOPPING.set()
        _MIGRATING.acquire()
        log.warning("stopped: the migrations not yet applied are applied by the next run")
        sys.stdout.flush()
        os._exit(EXIT_TEMPORARY)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)  # the watcher below acts on it
    signals.watch((signal.SIGTERM, signal.SIGINT), stop, name="migrate-termination")


if __name__ == "__main__":
    import sys

    stop_on_termination()
    sys.exit(main())
