"""rates_core.db.connect: the options every component's connections carry."""

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
