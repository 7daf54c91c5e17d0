"""Migration 0010's database users: what the API and the ingest job may do, and no more.

That they may do what they need is shown by the API and ingest suites, which connect as
these users (tests/support/api.py, tests/ingest/conftest.py).
"""

import datetime

import psycopg2.errors
import pytest

from tests.support.db import API_USER, INGEST_USER, as_user, autocommit, migrated_on_rds


def _as(dsn: str, user: str):
    return autocommit(as_user(dsn, user))


def test_the_users_can_log_in_with_no_password_and_no_power(conn):
    with conn.cursor() as cur:
        cur.execute("""SELECT rolname, rolcanlogin, rolpassword IS NULL, rolsuper, rolcreaterole, rolcreatedb,
                              rolbypassrls, rolreplication
                       FROM pg_authid WHERE rolname IN (%s, %s) ORDER BY 1""", (API_USER, INGEST_USER))
        assert cur.fetchall() == [(API_USER, True, True, False, False, False, False, False),
                                  (INGEST_USER, True, True, False, False, False, False, False)]


# The API only reads what it answers from; the ingest job cannot change the region tree,
# the schema or the record of runs.
@pytest.mark.parametrize("user, statement", [
    *((API_USER, statement) for statement in (
        "INSERT INTO prices (orig_code, dest_code, day, price) VALUES ('CNSHA', 'NLRTM', '2016-01-01', 1)",
        "UPDATE data_version SET version = version + 1",
        "DELETE FROM lane_totals",
        "SELECT count(*) FROM prices",
        "SELECT count(*) FROM ingest_runs",
        "UPDATE ports SET name = name",
        "SELECT rates_delete_replaced_file(1)",
    )),
    *((INGEST_USER, statement) for statement in (
        "UPDATE ports SET name = name",
        "DELETE FROM regions",
        "INSERT INTO ports (code, name, parent_slug) VALUES ('XXXXX', 'x', 'china_main')",
        "TRUNCATE prices",
        "DELETE FROM ingest_runs",
        # prices go only as their file is replaced (migration 0011), never those without a file
        "DELETE FROM prices WHERE source_id IS NULL",
        "ALTER TABLE prices ADD COLUMN x int",
        "DROP TABLE lane_totals",
        # the totals follow prices only: the trigger writes them as the schema's owner
        "DELETE FROM lane_totals",
        "INSERT INTO region_totals VALUES ('asia', 'europe', '2016-01-01', 1, 1)",
        "UPDATE data_version SET version = 0",
    )),
])
def test_each_user_is_refused_what_it_does_not_need(world, dsn, user, statement):
    with _as(dsn, user) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(statement)


def _file_with_prices(cur, key: str, version: str, replaced: bool) -> int:
    cur.execute("""INSERT INTO ingest_files (bucket, key, version, rows, bytes, replaced_at)
                   VALUES ('b', %s, %s, 2, 0, CASE WHEN %s THEN now() END) RETURNING id""", (key, version, replaced))
    file_id = cur.fetchone()[0]
    cur.execute("""INSERT INTO prices (orig_code, dest_code, day, price, source_id)
                   VALUES ('CNSHA', 'NLRTM', '2016-01-01', 100, %s), ('CNSHA', 'NLRTM', '2016-01-02', 200, %s)""",
                (file_id, file_id))
    return file_id


def test_the_ingest_user_deletes_a_replaced_file_s_prices_and_no_others(world, dsn):
    with world.cursor() as cur:
        cur.execute("""INSERT INTO prices (orig_code, dest_code, day, price)
                       VALUES ('CNSHA', 'NLRTM', '2016-01-01', 300)""")  # from before ingestion
        replaced = _file_with_prices(cur, "k", "v1", replaced=True)
        current = _file_with_prices(cur, "k", "v2", replaced=False)  # the newer file of the key
        other = _file_with_prices(cur, "other", "v1", replaced=False)
    with _as(dsn, INGEST_USER) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState, match="not replaced by a newer file"):
            cur.execute("SELECT rates_delete_replaced_file(%s)", (current,))
        # The mark alone proves nothing: the ingest user may set it, on any file.
        cur.execute("UPDATE ingest_files SET replaced_at = now() WHERE id = %s", (other,))
        with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState, match="not replaced by a newer file"):
            cur.execute("SELECT rates_delete_replaced_file(%s)", (other,))
        cur.execute("SELECT rates_delete_replaced_file(%s)", (replaced,))
        assert cur.fetchone() == (2,)
    with world.cursor() as cur:
        cur.execute("SELECT source_id, count(*) FROM prices GROUP BY 1 ORDER BY 1 NULLS FIRST")
        assert cur.fetchall() == [(None, 1), (current, 2), (other, 2)]
        # through the trigger, as a plain DELETE would: the totals lost the replaced rows
        cur.execute("SELECT day, sum(price_count) FROM lane_totals GROUP BY 1 HAVING sum(price_count) > 0 "
                    "ORDER BY 1")
        assert cur.fetchall() == [(datetime.date(2016, 1, 1), 3), (datetime.date(2016, 1, 2), 2)]


def test_every_function_fixes_its_search_path(conn):
    # A definer's, or a caller's temporary table (pg_temp is searched first) could stand in
    # for ingest_files or prices inside a function that runs with the owner's rights; and
    # every other's, or pg_dump's empty search_path breaks the triggers (0019).
    with conn.cursor() as cur:
        cur.execute("""SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p
                       JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1""")
        functions = {name: (definer, config or []) for name, definer, config in cur.fetchall()}
    assert {name for name, (definer, _) in functions.items() if definer} == {
        "rates_prices_changed", "rates_delete_replaced_file", "rates_ports_for_load"}
    unfixed = {name: config for name, (_, config) in functions.items()
               if "search_path=public, pg_temp" not in config}
    assert not unfixed and len(functions) >= 9, functions


def test_the_ingest_user_cannot_borrow_the_totals_trigger_for_rows_of_its_own(world, dsn):
    # The trigger function runs as the schema's owner; a trigger on a temporary table
    # would hand it made-up rows.
    with _as(dsn, INGEST_USER) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE fake (orig_code text, dest_code text, day date, price int)")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="rates_prices_changed"):
            cur.execute("""CREATE TRIGGER t AFTER INSERT ON pg_temp.fake REFERENCING NEW TABLE AS new_rows
                           FOR EACH STATEMENT EXECUTE FUNCTION public.rates_prices_changed()""")


def test_rds_iam_is_granted_where_the_server_has_it(admin_conn, empty_dsn):
    assert migrated_on_rds(admin_conn, empty_dsn) == {API_USER, INGEST_USER}


def test_a_load_holds_its_ports_against_deletes_not_moves(world, dsn):
    # The ingest job reads the codes it validates a file against through this (0021): a port
    # deleted while the file loads would leave its rows counted nowhere.
    with _as(dsn, INGEST_USER) as loader, loader.cursor() as load:
        load.execute("BEGIN")
        load.execute("SELECT rates_ports_for_load()")
        assert {code for (code,) in load.fetchall()} == {"NOOSL", "SEGOT", "DEHAM", "NLRTM", "FRLEH", "CNSHA",
                                                          "CNNGB", "HKHKG"}
        with world.cursor() as owner:
            owner.execute("SET lock_timeout = '300ms'")
            owner.execute("UPDATE ports SET parent_slug = 'europe' WHERE code = 'DEHAM'")  # a move does not wait
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                owner.execute("DELETE FROM ports WHERE code = 'FRLEH'")
        load.execute("ROLLBACK")
    with _as(dsn, API_USER) as api, api.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT rates_ports_for_load()")  # it locks rows as the owner: the ingest job's only
