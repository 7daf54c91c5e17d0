"""PostgreSQL connections and the one place where psycopg2 errors are classified."""

import re
import select
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

import psycopg2
import psycopg2.errors
import psycopg2.pool

from .errors import PermanentError, TemporaryError

# The database users of migration 0010: the API's (read-only) and the ingest job's.
API_USER, INGEST_USER = "rates_api", "rates_ingest"

# The largest value of PostgreSQL's (and libpq's) integer settings.
PG_INT_MAX = 2**31 - 1

# SQLSTATE classes after which the same statement may succeed on a new try:
# connection loss, serialization/deadlock, resources, shutdown/cancel, system and
# internal errors. Of class 55 only these two: the rest of it (55000, 55P02, 55P04) is
# a statement that is wrong in its context and fails the same way every time.
_RETRYABLE_CLASSES = {"08", "40", "53", "57", "58", "XX"}
# And a read-only transaction: a failover, while the writer's name still leads to the old
# primary, or a switchover's moment of read-only.
_RETRYABLE_CODES = {"55P03", "55006", "25006"}  # lock not available, object in use, read-only

# libpq's own refusals of a connection option (a URL's ?sslmode=bogus, ?connect_timeout=abc,
# a port above 65535), made before it sends anything: the same every time, so not
# temporary as a refused login is. Those it checks per host follow "connection to server
# ... failed: ", where the server's own refusals say "FATAL:". (Matched in English: a
# libpq that translates its messages leaves them temporary.)
_LIBPQ_OPTION_ERROR = re.compile(r"(connection to server .*? failed: )?"
                                 r"(invalid (\w+ value|port number|connection option)\b"
                                 r"|could not match \d+ \w+ \w+ to \d+|could not parse network address)")


def classify(exc: BaseException) -> Exception:
    """Return a TemporaryError or PermanentError that wraps a psycopg2 error."""
    if isinstance(exc, (TemporaryError, PermanentError)):
        return exc
    code = getattr(exc, "pgcode", None)
    if code:
        retryable = code[:2] in _RETRYABLE_CLASSES or code in _RETRYABLE_CODES
    else:
        # No SQLSTATE: the connection was lost, could not be made, or the server refused
        # it (libpq gives a FATAL at login no SQLSTATE). A refused login stays temporary on
        # purpose: an IAM token or a role the migration hook is creating may be valid a
        # moment later, and exit 2 would set an ingest Job's file aside for a fault of
        # the platform, not of the file.
        retryable = isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
    message = str(exc).strip() or type(exc).__name__
    if not code and retryable and _LIBPQ_OPTION_ERROR.match(message):
        wrapped = SettingsRefused(message)
    elif code in SCHEMA_MISSING:
        wrapped = SchemaMissing(message)
    elif code == INSUFFICIENT_PRIVILEGE:
        wrapped = RightsMissing(message)
    else:
        wrapped = (TemporaryError if retryable else PermanentError)(message)
    wrapped.pgcode = code
    return wrapped


@contextmanager
def classified() -> Iterator[None]:
    """Re-raise psycopg2 errors as TemporaryError/PermanentError."""
    try:
        yield
    except psycopg2.Error as exc:
        raise classify(exc) from exc


class PoolExhausted(TemporaryError):
    """Every connection of the pool is lent out: the database is reachable but busy here."""


# SQLSTATEs of a schema older than the code: a table, column or function is missing
# because the migrations have not run yet (a new database, or a deploy ahead of them).
SCHEMA_MISSING = frozenset({"42P01", "42703", "42883"})


class SchemaMissing(PermanentError):
    """The schema is older than the code (SCHEMA_MISSING). Permanent for the statement,
    so a failing migration still exits 2; a server may report it as "not migrated yet"."""


INSUFFICIENT_PRIVILEGE = "42501"


class RightsMissing(PermanentError):
    """The database refused the statement to this user (42501): a wrong user, or a
    database restored without the users' rights, which the next migration gives back. A
    server is then unavailable, not broken, and says so."""


class SettingsRefused(PermanentError):
    """libpq refused an option of the connection's settings (_LIBPQ_OPTION_ERROR) before
    connecting: a mistyped DATABASE_URL, the same at every try. A server is then
    unavailable until its settings are mended, not broken by the request, and says so."""


# work_mem for a bulk load into prices: the statement trigger keeps the statement's rows
# in a tuplestore of this size before spilling them to disk (about 15 % faster than 4MB).
BULK_LOAD_WORK_MEM = "64MB"


def in_utc(when: datetime) -> str:
    """A timestamptz read from the database, as messages show it: in UTC, to the minute
    ("2026-12-01 01:12 UTC"). psycopg2 gives it in the session's time zone, which may be
    any (the server's, the database's or the user's setting, PGTZ)."""
    return f"{when.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


# When the database host vanishes without closing its sockets (a failover, a lost zone),
# Linux would keep a TCP connection up for about 15 minutes. With these, an idle pooled
# connection is found dead within a minute, and a request whose bytes go unacknowledged
# fails after tcp_user_timeout. Linux also ends a connection whose live peer keeps its
# window shut that long, so a bulk load, which a busy server may stop reading for a
# while, passes a longer one. Settings given in the DSN itself win.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
TCP_USER_TIMEOUT_MS = 15_000
# The server's side of the same: a session whose client vanished without closing its socket
# (a pod on a lost node) ends as soon, and its locks with it (an ingest's lock on its file,
# which a retry waits for), not after the server's default of two hours.
SERVER_KEEPALIVES = " ".join(f"-c tcp_{name}={_KEEPALIVES[name]}"
                             for name in ("keepalives_idle", "keepalives_interval", "keepalives_count"))


# Gives the password of each new connection (an RDS IAM token, see rds_auth); None: the DSN's.
PasswordSource = Callable[[], str] | None


def connect(dsn: str, *, application_name: str, statement_timeout_ms: int = 0,
            connect_timeout_s: int = 5, autocommit: bool = False, client_check_interval_ms: int = 0,
            tcp_user_timeout_ms: int = TCP_USER_TIMEOUT_MS, password: PasswordSource = None):
    """Open one connection with the options every component wants.

    client_check_interval_ms > 0 makes the server check, that often during a long
    statement, that the client is still there (client_connection_check_interval).
    """
    args = _connect_args(dsn, application_name, statement_timeout_ms, connect_timeout_s,
                         client_check_interval_ms, tcp_user_timeout_ms)
    if password is not None:
        args["password"] = password()
    with classified():
        conn = psycopg2.connect(**args)
    conn.autocommit = autocommit
    return conn


def _connect_args(dsn: str, application_name: str, statement_timeout_ms: int, connect_timeout_s: int,
                  client_check_interval_ms: int = 0, tcp_user_timeout_ms: int = TCP_USER_TIMEOUT_MS) -> dict:
    options = f"-c statement_timeout={int(statement_timeout_ms)}"
    if client_check_interval_ms:
        options += f" -c client_connection_check_interval={int(client_check_interval_ms)}"
    try:
        given = parse_url(dsn)
    except PermanentError as exc:
        raise PermanentError(f"not a valid libpq URL: {exc}") from None
    # The keyword replaces the DSN's own options (a search_path, say); keep both, the DSN's
    # after the server keepalives, which it may set otherwise.
    options = " ".join(filter(None, [SERVER_KEEPALIVES, given.get("options"), options]))
    return dict(dsn=dsn, application_name=application_name, connect_timeout=connect_timeout_s, options=options,
                **tcp_settings(given, tcp_user_timeout_ms))


def tcp_settings(given: dict, tcp_user_timeout_ms: int = TCP_USER_TIMEOUT_MS) -> dict:
    """The keepalives and tcp_user_timeout, except those the parsed DSN ``given`` sets itself."""
    wanted = {**_KEEPALIVES, "tcp_user_timeout": tcp_user_timeout_ms}
    return {name: value for name, value in wanted.items() if name not in given}


def parse_url(dsn: str) -> dict:
    """libpq's reading of a database URL; PermanentError saying why it cannot be read.

    The reason never quotes the URL: with a %, / or @ left unencoded in the password,
    the part that libpq or urllib stumble on is a piece of the password. A host with an @
    or a port that is no number reads fine but fails to connect, quoting it then.
    """
    try:
        given = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise PermanentError(url_error(exc)) from None
    # A host may start with @ (an abstract Unix socket), but no @ further on. Ports in
    # ASCII digits only: \d takes any script's digits, which libpq refuses, quoting them.
    hosts = given.get("host", "").split(",")
    bad_port = not re.fullmatch(r"[0-9]*(,[0-9]*)*", given.get("port", ""))
    if any("@" in host[1:] for host in hosts) or bad_port or _at_in_path(dsn):
        raise PermanentError("a host with an @, a port that is not a number or an @ after the "
                             f"host ({URL_HINT} An @ in a database name is written %40)")
    return given


def _at_in_path(dsn: str) -> bool:
    """An unencoded @ in a URL's path: a / in the password ended the host early, and the
    rest of the password became the database name, which the server would quote back."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return False
    path = rest.partition("?")[0].partition("/")[2]
    return "@" in path


# What most often breaks a URL that a person wrote: a generated password (RDS's, a secret
# manager's) with a character the URL syntax gives a meaning to.
URL_HINT = "is a #, ?, /, %, @ or : in the password not percent-encoded?"


def url_error(exc: Exception) -> str:
    """A URL parser's error up to its first quote (what follows quotes the URL), and the
    likeliest cause."""
    text = str(exc).strip()
    quotes = [i for i in (text.find('"'), text.find("'")) if i >= 0]
    if quotes:
        text = (text[:min(quotes)].rstrip(": ") or "unreadable") + " (the rest is not shown: it may hold the password)"
    return f"{text}; {URL_HINT}"


class Pool:
    """A thread-safe connection pool; each connection is opened when a thread first needs
    it and kept open afterwards.

    Opening lazily lets a process start (and report itself unready) while the database
    is down; keeping the connections open avoids a new connection per request.
    Connections are in autocommit mode: the API only reads, and an explicit transaction
    would cost a BEGIN and a ROLLBACK round trip per request. The one read of several
    statements that must share a snapshot (a /rates cache miss) opens its own.

    While the database is unreachable, requests must not queue behind each other's
    connect timeouts, or every thread of a worker ends up waiting (and /healthz with
    them). So a thread waits at most one connect timeout for another that is opening a
    connection, and after a failed opening the pool answers at once for ``retry_after_s``;
    after that, one thread tries again while the others answer at once, until an opening
    succeeds.
    """

    def __init__(self, dsn: str, *, size: int, application_name: str,
                 statement_timeout_ms: int, connect_timeout_s: int = 5, retry_after_s: float = 1.0,
                 password: PasswordSource = None):
        self.size = size
        self._password = password
        self._connect_args = _connect_args(dsn, application_name, statement_timeout_ms, connect_timeout_s)
        self._connect_timeout_s = connect_timeout_s
        self._retry_after_s = retry_after_s
        self._pool = None
        self._lock = threading.Lock()
        self._failed_at = float("-inf")
        self._failure = ""
        # False from a failed opening until a checkout succeeds: the database is likely down.
        self._reachable = True

    def _checkout(self) -> tuple[psycopg2.pool.ThreadedConnectionPool, "psycopg2.extensions.connection"]:
        # Under the lock because getconn() may open a connection (the first time, or to
        # replace a closed one), and those openings are what must not queue up.
        reachable = self._reachable  # read once: another thread may change it meanwhile
        if not self._lock.acquire(timeout=self._connect_timeout_s if reachable else 0):
            if not reachable:
                raise TemporaryError(f"the database was unreachable and is being tried again: {self._failure}")
            raise TemporaryError("the database is not answering; connections are still being opened")
        try:
            waited = time.monotonic() - self._failed_at
            # An idle connection is lent all the same: the opening that failed may have been
            # one more than the server allows (max_connections), not an outage.
            if waited < self._retry_after_s and not (self._pool and self._pool.idle()):
                raise TemporaryError(f"the database was unreachable {waited:.1f}s ago: {self._failure}")
            try:
                if self._pool is None:
                    self._pool = _ThreadedPool(self.size, self._password, **self._connect_args)
                checkout = self._pool, self._live_connection(self._pool)
                self._reachable = True
                return checkout
            except PoolExhausted:
                raise  # busy, not unreachable: the next checkout may find a connection free
            except (psycopg2.OperationalError, TemporaryError) as exc:  # unreachable, or no IAM token
                self._failed_at, self._failure = time.monotonic(), str(exc).strip()
                self._reachable = False
                raise
        finally:
            self._lock.release()

    def _live_connection(self, pool) -> "psycopg2.extensions.connection":
        # A connection that the server closed while it sat in the pool (a restart, a
        # failover, an idle timeout) is replaced here instead of failing a request.
        for _ in range(self.size + 1):
            try:
                conn = pool.getconn()
            except psycopg2.pool.PoolError as exc:
                raise PoolExhausted(f"database pool exhausted: {exc}") from exc
            if not _closed_by_server(conn):
                if not conn.autocommit:
                    conn.autocommit = True
                return conn
            pool.putconn(conn, close=True)
        raise TemporaryError("the database keeps closing new connections")

    @contextmanager
    def connection(self) -> Iterator["psycopg2.extensions.connection"]:
        """Lend an autocommit connection for one unit of work; a transaction left open is rolled back."""
        with classified():
            pool, conn = self._checkout()
        broken = False
        try:
            yield conn
        except psycopg2.Error as exc:
            # A statement timeout (QueryCanceled) is an OperationalError too, but leaves
            # the connection as good as before.
            lost = isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
            broken = conn.closed != 0 or (lost and not isinstance(exc, psycopg2.errors.QueryCanceled))
            raise classify(exc) from exc
        finally:
            if not broken and not conn.closed:
                try:
                    conn.rollback()
                    # In autocommit, rollback() sends nothing: a transaction the borrower
                    # began itself (BEGIN) and left open would hold its snapshot for ever.
                    if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                        conn.cursor().execute("ROLLBACK")
                except psycopg2.Error:
                    broken = True
            if pool.closed:  # close() ran while this connection was lent
                conn.close()
            else:
                pool.putconn(conn, close=broken or bool(conn.closed))

    def opened_none(self) -> bool:
        """Whether the pool holds no connection and its last opening failed: every borrower
        fails, though another pool of the process (the API's probe's) may open. Read
        without the lock, which an opening holds for up to its connect timeout."""
        pool = self._pool
        return not self._reachable and (pool is None or pool.opened() == 0)

    def lends_all(self) -> bool:
        """Whether every connection the pool holds is lent (and it holds some)."""
        pool = self._pool
        return pool is not None and pool.opened() > 0 and pool.idle() == 0

    def holds_connections(self) -> bool:
        """Whether the pool holds open connections, lent or idle (whether or not its last
        opening failed: near max_connections some open and the next is refused)."""
        pool = self._pool
        return pool is not None and pool.opened() > 0

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


class _ThreadedPool(psycopg2.pool.ThreadedConnectionPool):
    """psycopg2's pool, asking ``password`` anew for every connection it opens: a pool
    refills itself long after it started, when the first token has expired."""

    def __init__(self, size: int, password: PasswordSource, **connect_args):
        self._password = password
        # Opened one by one as threads need them, not all at once: near the server's
        # max_connections a worker that could open 3 of 4 opened none, and answered 503 to
        # everything, fast, so it took most of the pod's traffic. psycopg2 closes returned
        # connections beyond minconn, so minconn is raised to maxconn once none are opened.
        super().__init__(0, size, **connect_args)
        self.minconn = size

    def idle(self) -> int:
        """How many opened connections wait to be lent."""
        return len(self._pool)

    def opened(self) -> int:
        """How many connections are open, lent or idle."""
        return len(self._pool) + len(self._used)

    def _connect(self, key=None):
        if self._password is not None:
            self._kwargs["password"] = self._password()
        return super()._connect(key)


def _closed_by_server(conn) -> bool:
    """True if an idle connection is closed, or has unread input, which on an idle
    connection means the server's goodbye (an error message, then end of stream)."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


# How much longer than its statement timeout a server may stay silent before a client
# that waits through give_up_on_silence() gives up on it.
SILENCE_GRACE_S = 2.0
# The longest wait poll() takes (a C int of milliseconds, about 24.8 days).
_POLL_MAX_MS = 2**31 - 1


def give_up_on_silence(connect_timeout_s: float, statement_timeout_ms: int) -> None:
    """Have every connection of this process give up on a server that has sent nothing
    for longer than it should: a statement's timeout plus SILENCE_GRACE_S, or, while
    connecting, ``connect_timeout_s`` (libpq applies connect_timeout to blocking connects
    only, and these no longer block).

    statement_timeout is the server's to enforce, and tcp_user_timeout ends only a
    connection whose bytes go unacknowledged. A server that stalls while its host's kernel
    still acknowledges (a storage stall, a frozen process) holds each statement sent to it
    for as long as the stall lasts: in the API every worker thread ends up waiting, and
    /healthz behind them, until the liveness probe restarts every pod. Past the limit the
    statement fails with OperationalError (a pool drops the connection; the API answers 503).

    It is psycopg2's wait callback, so it applies to the whole process, and psycopg2
    refuses COPY on connections that wait this way: for the API's workers only.
    """
    statement_limit_s = statement_timeout_ms / 1000 + SILENCE_GRACE_S if statement_timeout_ms > 0 else None

    def wait(conn) -> None:
        connecting = conn.status == psycopg2.extensions.STATUS_SETUP
        limit_s = connect_timeout_s if connecting else statement_limit_s
        while (state := conn.poll()) != psycopg2.extensions.POLL_OK:
            poller = select.poll()  # anew each time: libpq may move to another socket while connecting
            poller.register(conn.fileno(), select.POLLIN if state == psycopg2.extensions.POLL_READ else select.POLLOUT)
            if not poller.poll(None if limit_s is None else min(limit_s * 1000, _POLL_MAX_MS)):
                what = "while connecting" if connecting else "for a statement"
                raise psycopg2.OperationalError(f"the database sent nothing {what} in {limit_s:g} s; given up")

    psycopg2.extensions.set_wait_callback(wait)
