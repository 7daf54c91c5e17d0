"""rates_core.db.Pool against a real server, and against one that never answers."""

import threading

import psycopg2.extensions
import pytest
from psycopg2 import sql

from rates_core.db import Pool, PoolExhausted
from rates_core.errors import TemporaryError
from tests.support.db import as_user, autocommit
from tests.support.net import SilentServer
from tests.support.poll import wait_for

APP = "pool-test"


def _backend_pids(conn) -> set[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                    (APP,))
        return {pid for (pid,) in cur.fetchall()}


def _select_pid(pool: Pool) -> int:
    with pool.connection() as lent, lent.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def test_connections_the_server_closed_are_replaced_not_failed(dsn, conn):
    pool = Pool(dsn, size=3, application_name=APP, statement_timeout_ms=0)
    try:
        with pool.connection(), pool.connection(), pool.connection():
            pass
        old = _backend_pids(conn)
        assert len(old) == 3
        with conn.cursor() as cur:  # what a database restart or failover does to them
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s AND datname = current_database()", (APP,))
        wait_for(lambda: not _backend_pids(conn) & old, timeout=10, what="the backends to end")
        used = {_select_pid(pool) for _ in range(6)}
        assert not used & old
    finally:
        pool.close()


def _allow_connections(admin_dsn: str, name: str, allow: bool) -> None:
    with autocommit(admin_dsn) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.Literal(allow)))


def test_a_database_refusing_connections_fails_fast_then_recovers(dsn, conn, admin_dsn):
    pool = Pool(dsn, size=2, application_name=APP, statement_timeout_ms=0, retry_after_s=0.5)
    name = conn.info.dbname
    try:
        old = {_select_pid(pool)}
        _allow_connections(admin_dsn, name, False)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s AND datname = current_database()", (APP,))
        wait_for(lambda: not _backend_pids(conn), timeout=10, what="the backends to end")
        with pytest.raises(TemporaryError, match="not currently accepting connections"):
            _select_pid(pool)  # both pooled connections are dead; the replacement is refused
        with pytest.raises(TemporaryError, match="unreachable"):
            _select_pid(pool)
        _allow_connections(admin_dsn, name, True)
        new = wait_for(lambda: _pid_or_none(pool), timeout=10, what="the pool to reconnect")
        assert new not in old
    finally:
        _allow_connections(admin_dsn, name, True)
        pool.close()


def _pid_or_none(pool: Pool) -> int | None:
    try:
        return _select_pid(pool)
    except TemporaryError:
        return None


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def _hung_pool(silent: SilentServer) -> Pool:
    # (No connection ever opens, so the pool holds nothing to close.)
    # sslmode and gssencmode off: libpq would otherwise try a second connection per attempt.
    dsn = f"postgresql://nobody@127.0.0.1:{silent.port}/none?sslmode=disable&gssencmode=disable"
    return Pool(dsn, size=2, application_name=APP, statement_timeout_ms=0, connect_timeout_s=1,
                retry_after_s=600)


def test_after_a_failed_opening_requests_fail_at_once(silent):
    pool = _hung_pool(silent)
    with pytest.raises(TemporaryError, match="timeout"):
        _select_pid(pool)
    assert len(silent.accepted) == 1
    for _ in range(4):
        with pytest.raises(TemporaryError, match="unreachable"):
            _select_pid(pool)
    assert len(silent.accepted) == 1


def test_concurrent_requests_do_not_queue_behind_each_others_timeouts(silent):
    pool = _hung_pool(silent)
    errors = []

    def request():
        try:
            _select_pid(pool)
        except TemporaryError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(errors) == 3
    # One thread tried; the others gave up waiting for it or saw its failure.
    assert len(silent.accepted) == 1


def test_while_the_database_is_down_one_thread_tries_it_and_the_others_answer_at_once(silent):
    # Otherwise, each time the pool tries again, every thread of a worker queues for a
    # connect timeout, /healthz with them, and the liveness probe restarts healthy pods.
    dsn = f"postgresql://nobody@127.0.0.1:{silent.port}/none?sslmode=disable&gssencmode=disable"
    pool = Pool(dsn, size=2, application_name=APP, statement_timeout_ms=0, connect_timeout_s=4,
                retry_after_s=0.2)
    with pytest.raises(TemporaryError, match="timeout"):
        _select_pid(pool)
    wait_for(lambda: _tried_again(pool, silent), timeout=10, interval=0.05, what="a thread trying again")
    with pytest.raises(TemporaryError, match="being tried again"):
        _select_pid(pool)


def _tried_again(pool: Pool, silent: SilentServer) -> bool:
    """Start a request that tries the database again; True once it is connecting."""
    if not any(t.name == "trying-again" for t in threading.enumerate()):
        threading.Thread(target=_pid_or_none, args=(pool,), name="trying-again", daemon=True).start()
    return len(silent.accepted) == 2


def test_a_statement_timeout_keeps_the_connection(dsn, conn):
    pool = Pool(dsn, size=1, application_name=APP, statement_timeout_ms=100)
    try:
        before = _select_pid(pool)
        with pytest.raises(TemporaryError, match="statement timeout"):
            with pool.connection() as lent, lent.cursor() as cur:
                cur.execute("SELECT pg_sleep(2)")
        assert _select_pid(pool) == before
    finally:
        pool.close()


def test_returning_a_connection_after_the_pool_closed_does_not_raise(dsn):
    # psycopg2's putconn() on a closed pool raises PoolError, which a request would turn into a 500.
    pool = Pool(dsn, size=1, application_name=APP, statement_timeout_ms=0)
    with pool.connection():
        pool.close()


def test_a_pool_that_was_merely_busy_lends_again_at_once(dsn):
    # Exhaustion is not an outage: the next checkout must not answer "unreachable".
    pool = Pool(dsn, size=1, application_name=APP, statement_timeout_ms=0, retry_after_s=60)
    try:
        with pool.connection():
            with pytest.raises(PoolExhausted):
                with pool.connection():
                    pass
        assert _select_pid(pool)
    finally:
        pool.close()


def test_a_thread_waits_at_most_one_connect_timeout_for_another_ones_opening(dsn):
    # An opening held up (here by a slow IAM token) must not hold every thread behind it.
    opening = threading.Event()

    def slow_password() -> str:
        opening.set()
        threading.Event().wait(4)
        return "unused"  # the test server trusts local connections

    pool = Pool(dsn, size=2, application_name=APP, statement_timeout_ms=0, connect_timeout_s=1,
                password=slow_password)
    first = threading.Thread(target=_select_pid, args=(pool,))
    first.start()
    try:
        assert opening.wait(10)
        with pytest.raises(TemporaryError, match="still being opened"):
            _select_pid(pool)
    finally:
        first.join(timeout=30)
    pool.close()


def test_a_transaction_left_open_is_ended_when_the_connection_comes_back(dsn, conn):
    # The connections are in autocommit, where psycopg2's rollback() sends nothing; a
    # borrower's own BEGIN must not keep its snapshot (and its stale answers) in the pool.
    pool = Pool(dsn, size=1, application_name=APP, statement_timeout_ms=0)
    try:
        with pool.connection() as lent, lent.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
            first = lent.get_backend_pid()
        with pool.connection() as lent, lent.cursor() as cur:
            assert lent.get_backend_pid() == first  # the same connection, not a new one
            cur.execute("SELECT now() = statement_timestamp()")  # true only outside a transaction block
            assert cur.fetchone()[0] is True
    finally:
        pool.close()


def test_a_pool_near_the_server_s_connection_limit_lends_what_it_could_open(dsn, admin_conn):
    # As near max_connections: the role may hold one connection. A pool that opened all of
    # its connections at once or none answered every request with an error.
    with admin_conn.cursor() as cur:
        cur.execute("CREATE ROLE pool_limited LOGIN CONNECTION LIMIT 1")
        cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO pool_limited").format(
            sql.Identifier(psycopg2.extensions.parse_dsn(dsn)["dbname"])))
    pool = Pool(as_user(dsn, "pool_limited"), size=3, application_name=APP, statement_timeout_ms=0,
                retry_after_s=0.2)
    try:
        with pool.connection() as lent, lent.cursor() as cur:
            cur.execute("SELECT 1")
            with pytest.raises(TemporaryError, match="too many connections"):
                with pool.connection():
                    pass
        assert _select_pid(pool)  # at once: an idle connection is lent while openings are refused
    finally:
        pool.close()
        with admin_conn.cursor() as cur:
            cur.execute("DROP OWNED BY pool_limited")
            cur.execute("DROP ROLE pool_limited")
