"""Migrations: they apply to an empty database or to an original ratestask database,
keep every existing row, backfill the derived totals, and change nothing the second time."""

import psycopg2
import pytest

from rates_core import migrate
from ratesctl import localdb
from tests.support.world import PORTS, REGIONS

# The original ratestask layout, without this project's migrations.
ORIGINAL_SCHEMA = """
CREATE TABLE regions (slug text NOT NULL, name text NOT NULL, parent_slug text);
CREATE TABLE ports (code text NOT NULL, name text NOT NULL, parent_slug text NOT NULL);
CREATE TABLE prices (orig_code text NOT NULL, dest_code text NOT NULL, day date NOT NULL, price integer NOT NULL);
ALTER TABLE ONLY ports ADD CONSTRAINT ports_pkey PRIMARY KEY (code);
ALTER TABLE ONLY regions ADD CONSTRAINT regions_pkey PRIMARY KEY (slug);
ALTER TABLE ONLY ports ADD CONSTRAINT ports_parent_slug_fkey FOREIGN KEY (parent_slug) REFERENCES regions(slug);
ALTER TABLE ONLY prices ADD CONSTRAINT prices_dest_code_fkey FOREIGN KEY (dest_code) REFERENCES ports(code);
ALTER TABLE ONLY prices ADD CONSTRAINT prices_orig_code_fkey FOREIGN KEY (orig_code) REFERENCES ports(code);
ALTER TABLE ONLY regions ADD CONSTRAINT regions_parent_slug_fkey FOREIGN KEY (parent_slug) REFERENCES regions(slug);
"""
PRICES = [("CNSHA", "NLRTM", "2024-01-01", 100), ("CNSHA", "NLRTM", "2024-01-01", 300),
          ("NOOSL", "CNNGB", "2024-01-02", 50)]

COLUMNS = {
    "regions": "slug, name, parent_slug",
    "ports": "code, name, parent_slug",
    "prices": "orig_code, dest_code, day, price",
    "lane_totals": "orig_code, dest_code, day, price_sum, price_count",
    "region_totals": "orig_region, dest_region, day, price_sum, price_count",
}


def snapshot(dsn):
    """Everything a migration must not change, plus the schema objects it creates."""
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        result = {}
        for table, columns in COLUMNS.items():
            cur.execute(f"SELECT {columns} FROM {table} ORDER BY {columns}")  # noqa: S608 - fixed names
            result[table] = cur.fetchall()
        cur.execute("SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1")
        result["constraints"] = cur.fetchall()
        cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
        result["indexes"] = cur.fetchall()
        cur.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")
        result["triggers"] = cur.fetchall()
    conn.close()
    return result


def run_sql(dsn, statement, params=None, many=None):
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        if many is not None:
            cur.executemany(statement, many)
        else:
            cur.execute(statement, params)
    conn.close()


def test_fresh_database_gets_the_whole_schema_and_a_second_run_changes_nothing(empty_dsn):
    first = migrate.apply(empty_dsn)
    assert first == sorted(first) and first[0].startswith("0001")
    before = snapshot(empty_dsn)
    assert migrate.apply(empty_dsn) == []
    assert migrate.pending(empty_dsn) == []
    assert snapshot(empty_dsn) == before


def test_existing_ratestask_database_keeps_its_rows_and_gets_totals(empty_dsn):
    run_sql(empty_dsn, ORIGINAL_SCHEMA)
    run_sql(empty_dsn, "INSERT INTO regions VALUES (%s, %s, %s)", many=REGIONS)
    run_sql(empty_dsn, "INSERT INTO ports VALUES (%s, %s, %s)", many=PORTS)
    run_sql(empty_dsn, "INSERT INTO prices VALUES (%s, %s, %s, %s)", many=PRICES)

    migrate.apply(empty_dsn)
    after = snapshot(empty_dsn)
    assert len(after["regions"]) == len(REGIONS) and len(after["ports"]) == len(PORTS)
    assert sorted((o, d, str(day), p) for o, d, day, p in after["prices"]) == sorted(PRICES)
    assert [(o, d, str(day), s, n) for o, d, day, s, n in after["lane_totals"]] == [
        ("CNSHA", "NLRTM", "2024-01-01", 400, 2), ("NOOSL", "CNNGB", "2024-01-02", 50, 1)]
    assert [(o, d, str(day), s, n) for o, d, day, s, n in after["region_totals"]] == [
        ("china", "north_europe", "2024-01-01", 400, 2), ("scandinavia", "china", "2024-01-02", 50, 1)]
    # Its own keys stay; only the per-row price -> port checks are dropped (see 0001).
    names = {name for (name,) in after["constraints"]}
    assert {"ports_pkey", "regions_pkey", "ports_parent_slug_fkey", "regions_parent_slug_fkey"} <= names
    assert not {"prices_orig_code_fkey", "prices_dest_code_fkey"} & names

    assert migrate.apply(empty_dsn) == []
    assert snapshot(empty_dsn) == after


def test_migrate_command_uses_database_url(empty_dsn):
    from click.testing import CliRunner

    from ratesctl.cli import cli

    result = CliRunner().invoke(cli, ["migrate"], env={"DATABASE_URL": empty_dsn})
    assert result.exit_code == 0, result.output
    assert "0002_daily_totals" in result.output
    again = CliRunner().invoke(cli, ["migrate"], env={"DATABASE_URL": empty_dsn})
    assert again.exit_code == 0 and "already current" in again.output


@pytest.mark.usefixtures("ratestask_sql")
def test_the_real_ratestask_dump_migrates_and_keeps_every_row(empty_dsn, ratestask_sql):
    localdb.psql_file(empty_dsn, ratestask_sql)
    run_sql(empty_dsn, "CREATE TABLE before AS SELECT orig_code, dest_code, day, price FROM prices")
    migrate.apply(empty_dsn)
    conn = psycopg2.connect(empty_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM (SELECT * FROM before EXCEPT ALL SELECT orig_code, dest_code, day, price FROM prices) missing")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*), sum(price) FROM prices")
        count, total = cur.fetchone()
        cur.execute("SELECT sum(price_count), sum(price_sum) FROM lane_totals")
        assert cur.fetchone() == (count, total)
        cur.execute("SELECT sum(price_count), sum(price_sum) FROM region_totals")
        assert cur.fetchone() == (count, total)
    conn.close()


def test_the_churning_tables_are_vacuumed_sooner_than_the_default(conn):
    # 0015: at the default fifth of a table dead, the totals' heaps grew to ten times
    # their live rows under months of re-uploads.
    with conn.cursor() as cur:
        cur.execute("""SELECT relname, reloptions FROM pg_class
                       WHERE relname IN ('lane_totals', 'region_totals', 'prices') ORDER BY relname""")
        options = {name: dict(o.split("=") for o in opts) for name, opts in cur.fetchall()}
    assert options["lane_totals"] == {"fillfactor": "70", "autovacuum_vacuum_scale_factor": "0.01",
                                      "autovacuum_vacuum_threshold": "5000"}
    assert options["region_totals"]["autovacuum_vacuum_scale_factor"] == "0.01"
    assert options["prices"]["autovacuum_vacuum_scale_factor"] == "0.02"
