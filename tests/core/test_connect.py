"""rates_core.db.connect: the options every component's connections carry."""

import subprocess
import sys

from rates_core import db


def test_tcp_timeouts_default_on_and_the_dsn_wins(dsn):
    conn = db.connect(dsn, application_name="connect-test", statement_timeout_ms=1234)
    try:
        params = conn.get_dsn_parameters()
        assert params["tcp_user_timeout"] == "15000" and params["keepalives_idle"] == "30"
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] == "1234ms"
    finally:
        conn.close()
    conn = db.connect(dsn, application_name="connect-test", tcp_user_timeout_ms=120_000)  # a bulk load's
    try:
        assert conn.get_dsn_parameters()["tcp_user_timeout"] == "120000"
    finally:
        conn.close()
    separator = "&" if "?" in dsn else "?"
    conn = db.connect(f"{dsn}{separator}tcp_user_timeout=2500", application_name="connect-test",
                      tcp_user_timeout_ms=120_000)
    try:
        params = conn.get_dsn_parameters()
        assert params["tcp_user_timeout"] == "2500" and params["keepalives_count"] == "3"
    finally:
        conn.close()


def test_options_in_the_dsn_are_kept_beside_the_statement_timeout(dsn):
    separator = "&" if "?" in dsn else "?"
    conn = db.connect(f"{dsn}{separator}options=-c%20search_path%3Dpg_catalog", application_name="connect-test",
                      statement_timeout_ms=4321)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('search_path'), current_setting('statement_timeout')")
            assert cur.fetchone() == ("pg_catalog", "4321ms")
    finally:
        conn.close()



def test_the_server_is_asked_to_find_a_vanished_client_as_soon_as_the_client_a_vanished_server(dsn):
    # A client gone without closing its socket (its node lost) holds its locks until the
    # server's keepalives give up on it. This test server listens on a Unix socket only,
    # where the values read 0; that the server took them from the client is what shows.
    separator = "&" if "?" in dsn else "?"
    for url, last in ((dsn, "-c tcp_keepalives_count=3"),
                      (f"{dsn}{separator}options=-c%20tcp_keepalives_idle%3D45", "-c tcp_keepalives_idle=45")):
        conn = db.connect(url, application_name="connect-test")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT name, source FROM pg_settings WHERE name LIKE 'tcp_keepalives_%' ORDER BY name")
                assert cur.fetchall() == [("tcp_keepalives_count", "client"), ("tcp_keepalives_idle", "client"),
                                          ("tcp_keepalives_interval", "client")]
            options = conn.get_dsn_parameters()["options"]
        finally:
            conn.close()
        # The DSN's own options come after, so that they win.
        assert options.startswith("-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
                                  "-c tcp_keepalives_count=3 ") and last in options, options


# In a process of its own: the wait callback applies to the whole process.
_SILENT_SERVER = """
import socket, sys, psycopg2
from rates_core import db
db.give_up_on_silence(connect_timeout_s=1, statement_timeout_ms=500)
silent = socket.create_server(("127.0.0.1", 0))  # accepts, and never says a word
for dsn in (f"postgresql://x@127.0.0.1:{silent.getsockname()[1]}/db", sys.argv[1]):
    try:
        conn = psycopg2.connect(dsn)
        conn.cursor().execute("SELECT pg_sleep(0.2)")  # within the limit: answered
        conn.cursor().execute("SET statement_timeout = 0; SELECT pg_sleep(10)")  # past it
    except psycopg2.OperationalError as exc:
        print(exc)
"""


def test_a_process_that_gives_up_on_silence_does_so_connecting_and_waiting_for_a_statement(dsn):
    out = subprocess.run([sys.executable, "-c", _SILENT_SERVER, dsn], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out == ["the database sent nothing while connecting in 1 s; given up",
                   "the database sent nothing for a statement in 2.5 s; given up"]


_LARGEST_LIMITS = """
import sys, psycopg2
from rates_core import db
db.give_up_on_silence(connect_timeout_s=2**31 - 1, statement_timeout_ms=2**31 - 1)
conn = psycopg2.connect(sys.argv[1])
with conn.cursor() as cur:
    cur.execute("SELECT 1")
    print(cur.fetchone()[0])
"""


def test_the_largest_timeouts_the_settings_accept_still_let_statements_run(dsn):
    # poll() takes at most 2**31 - 1 ms; beyond it, every statement failed with OverflowError.
    done = subprocess.run([sys.executable, "-c", _LARGEST_LIMITS, dsn], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr
