"""Upgrades of databases that applied a migration's earlier text.

yoyo knows a migration by its id, so a database keeps whatever text of it it applied.
0010 and 0011 changed after some databases had applied them; migration 0012 brings those
to the state their texts of today give, and changes nothing elsewhere. From 0012 on,
test_every_migration_keeps_the_text_it_shipped_with
makes sure that no shipped migration changes again.
"""

import hashlib

import pytest
from yoyo import get_backend, read_migrations

from rates_core import migrate
from rates_core.errors import PermanentError
from ratesctl import localdb
from tests.support.db import INGEST_USER, as_user, autocommit, create_database

# What each earlier text of 0010 and 0011 left behind, against their texts of today.
EARLIER_TEXTS = {
    # 0010 as first shipped: the trigger ran as the loading user, who kept the totals itself.
    "0010 before the definer trigger": f"""
        GRANT SELECT, INSERT, UPDATE, DELETE ON lane_totals, region_totals TO {INGEST_USER};
        GRANT SELECT, UPDATE ON data_version TO {INGEST_USER};
        ALTER FUNCTION rates_prices_changed() SECURITY INVOKER RESET search_path;
        GRANT EXECUTE ON FUNCTION rates_prices_changed() TO PUBLIC;
    """,
    # 0010's second text: the trigger ran as the owner, but anyone could attach it.
    "0010 before the revoke": "GRANT EXECUTE ON FUNCTION rates_prices_changed() TO PUBLIC;",
    # 0011 as first shipped: a replaced mark alone let the ingest user delete a file's rows.
    "0011 before the newer-file check": """
        CREATE OR REPLACE FUNCTION rates_delete_replaced_file(file_id bigint) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        DECLARE
            deleted bigint;
        BEGIN
            PERFORM FROM ingest_files WHERE id = file_id AND replaced_at IS NOT NULL;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'ingest file % is not a replaced file; its prices stay', file_id
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            DELETE FROM prices WHERE source_id = file_id;
            GET DIAGNOSTICS deleted = ROW_COUNT;
            RETURN deleted;
        END
        $$;
    """,
}


def rights(dsn: str) -> dict:
    """Who may do what to the schema's tables and functions, and how its functions run."""
    with autocommit(dsn) as conn, conn.cursor() as cur:
        cur.execute("""SELECT relname, relacl::text FROM pg_class
                       WHERE relnamespace = 'public'::regnamespace ORDER BY 1""")
        tables = cur.fetchall()
        cur.execute("""SELECT proname, prosecdef, proconfig, proacl::text, prosrc FROM pg_proc
                       WHERE pronamespace = 'public'::regnamespace ORDER BY 1""")
        return {"tables": tables, "functions": cur.fetchall()}


def _apply_through(dsn: str, last: str) -> list[str]:
    """Apply the migrations up to ``last``; the ids applied. Not the post-apply hook, which
    is written for the schema of today (``migrate.apply`` runs it)."""
    backend = get_backend(dsn)
    migrations = read_migrations(str(migrate.MIGRATIONS_DIR)).filter(lambda m: m.id <= last)
    with backend.lock():
        todo = backend.to_apply(migrations)
        backend.apply_migrations_only(todo)
    return [m.id for m in todo]


@pytest.fixture
def through_0011(pg_server, admin_dsn):
    """A database migrated up to 0011 with its text of today, and its rights then."""
    name = create_database(admin_dsn)
    dsn = pg_server.get_uri(name)
    _apply_through(dsn, "0011_ingest_deletes_only_replaced_files")
    yield dsn, rights(dsn)
    localdb.drop_database(admin_dsn, name)


def test_0012_changes_nothing_where_today_s_texts_were_applied(through_0011):
    dsn, before = through_0011
    assert _apply_through(dsn, "0012_reassert_component_rights") == ["0012_reassert_component_rights"]
    assert rights(dsn) == before


@pytest.mark.parametrize("earlier", EARLIER_TEXTS)
def test_a_database_that_applied_an_earlier_text_ends_as_if_it_had_applied_today_s(empty_dsn, through_0011,
                                                                                   earlier):
    _, today = through_0011
    _apply_through(empty_dsn, "0011_ingest_deletes_only_replaced_files")
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute(EARLIER_TEXTS[earlier])
    assert rights(empty_dsn) != today  # the state it must leave

    assert _apply_through(empty_dsn, "0012_reassert_component_rights") == ["0012_reassert_component_rights"]
    assert rights(empty_dsn) == today


def test_0013_refuses_a_database_whose_regions_already_form_a_cycle(empty_dsn):
    # While a cycle is there the answers of every region above it lack its ports; 0013's
    # trigger would notice only once a row of it is edited.
    _apply_through(empty_dsn, "0012_reassert_component_rights")
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO regions VALUES ('world', 'World', NULL), ('a', 'A', 'world'), ('b', 'B', 'a'),
                                                  ('c', 'C', 'b'), ('d', 'D', 'd'), ('below', 'Below', 'c')""")
        cur.execute("UPDATE regions SET parent_slug = 'c' WHERE slug = 'a'")
    with pytest.raises(PermanentError, match=r"the regions a, b, c, d are each below themselves"):
        migrate.apply(empty_dsn)
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE regions SET parent_slug = 'world' WHERE slug IN ('a', 'd')")
    assert migrate.apply(empty_dsn)[0] == "0013_region_tree_without_cycles"


def test_0017_keeps_every_run_and_can_run_again_after_stopping_part_way(empty_dsn):
    _apply_through(empty_dsn, "0016_ingest_files_content")
    old = ["running", "loaded", "already_loaded", "superseded", "rejected", "failed"]
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO ingest_runs (bucket, key, status) VALUES ('b', 'k', %s)", [(s,) for s in old])
    assert _apply_through(empty_dsn, "0017_withdrawn_files") == ["0017_withdrawn_files"]
    text = (migrate.MIGRATIONS_DIR / "0017_withdrawn_files.sql").read_text()
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute(text)  # each statement again, as a retry after a failure between two would
        cur.execute("""SELECT convalidated, pg_get_constraintdef(oid) FROM pg_constraint
                       WHERE conrelid = 'ingest_runs'::regclass AND contype = 'c'""")
        [(validated, definition)] = cur.fetchall()
        assert validated and "'withdrawn'" in definition
        cur.execute("INSERT INTO ingest_runs (bucket, key, status) VALUES ('b', 'k', 'withdrawn')")
        cur.execute("SELECT status FROM ingest_runs ORDER BY id")
        assert [s for (s,) in cur.fetchall()] == old + ["withdrawn"]


def test_0022_keeps_every_run_as_naming_no_uploader_and_the_runs_of_older_jobs_go_on(empty_dsn):
    _apply_through(empty_dsn, "0021_loads_hold_their_ports")
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO ingest_runs (bucket, key, status) VALUES ('b', 'old.csv', 'loaded')")
    assert _apply_through(empty_dsn, "0022_ingest_runs_uploaded_by") == ["0022_ingest_runs_uploaded_by"]
    # The ingest user writes it with the table's rights; a job of the release before names no column of it.
    with autocommit(as_user(empty_dsn, INGEST_USER)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO ingest_runs (bucket, key, version_id) VALUES ('b', 'older-job.csv', NULL)")
        cur.execute("INSERT INTO ingest_runs (bucket, key, uploaded_by) VALUES ('b', 'new.csv', 'AWS:AIDAEXAMPLE')")
        cur.execute("SELECT key, uploaded_by FROM ingest_runs ORDER BY id")
        assert cur.fetchall() == [("old.csv", None), ("older-job.csv", None), ("new.csv", "AWS:AIDAEXAMPLE")]


# The text of every migration as it shipped. A database keeps the text it applied, so a
# change to a shipped migration reaches only new databases: write a new migration instead.
# A new migration is pinned here once it is final.
SHIPPED = {
    "0001_base_tables.sql": "6afbb6558fcadc6a79c5c7c14543e308aa5f9fb2eee7c68f4e7648baa21e298a",
    "0002_daily_totals.sql": "d30217042401f73ad78a1e0bae3f802cacd903ac1ffd33b3a021ae71fcd95e94",
    "0003_ingest.sql": "f568b793b9410b1a8072ac55b41fa2e248d45c84f124a08928b67652914dd841",
    "0004_totals_lock_order.sql": "0ab3b29d3d7960880b8ea78cf31f3515d5a8527e5cb63a4eb51393e1dee75189",
    "0005_totals_single_pass.sql": "8cee42f6492a2e995ba81a513874f504beb9740986a84c1112542c33438e5c6a",
    "0006_prices_source_brin.sql": "6abf6b214e062bc9510fc0fa19088d3c52e37afb9aaa6483bda299e0b1079b29",
    "0007_ingest_runs_running.sql": "6b2e5f9c044db23598484e056a06f0fe4646e90460170b573836913ee44555e3",
    "0008_truncate_without_blocking_readers.sql": "a2428b1e2d2ef4ed39d134bb60ee3b72afb62ac4927fa75ad2c6c64da6bc2448",
    "0009_region_totals_covering_key.sql": "09f58207d6a7c355b2a434b328afa7f9e92dc28f0b52dc66584a8a2a29ebff8d",
    "0010_component_roles.sql": "feb094b8413e35158d54a58f6fa6b3cc2806847df066ff7498a54a0a5e6d7cf0",
    "0011_ingest_deletes_only_replaced_files.sql": "8a2f5ef017a8f762d7f37152b3c27af8650cc5aba1a09f4f8e64077b3065400b",
    "0012_reassert_component_rights.sql": "6a26237cd6146b5135540d4d6c065ef570f65cd87d2228a31b3bd50942dec2e6",
    "0013_region_tree_without_cycles.sql": "8a02b7c1338ac2d7a8659323c19bb878670ebbbfc125bd8013b36563b40936cc",
    "0014_prices_source_btree.sql": "e6d02694e19d2df1d477050b451a39efc2f11c0faf4d08c8109ca903e4484b99",
    "0015_totals_vacuum_settings.sql": "b81c04b563cd39ec0914a6505ccaae68145a07d228e41ae88672654f4024d004",
    "0016_ingest_files_content.sql": "590d550227bd7995898aaed515867ab658aabfe6802de21f49847a8b794e3253",
    "0017_withdrawn_files.sql": "3f5f9ba27a59ef245f500429b68eb6b71c1ec3892d65bd95f7467821b7171b1c",
    "0018_port_edits_probe_lanes.sql": "a5531b9e11a8514f10459acbab87dad26a54e6e3be0e3d2131453782a54472f9",
    "0019_functions_fix_search_path.sql": "914e6adb59e5b8262768ef03f11824560f9a52f25b3e5b74395914401d038d83",
    "0020_ports_keep_their_code.sql": "4b8da07bbe904a3ccdde10c22c18798ba6586fa7e23dd0c82dfb9abe16920738",
    "0021_loads_hold_their_ports.sql": "43858b9cd4877e17306711de8dc7f3f509084a0cabc24190ed5622a197692521",
    "0022_ingest_runs_uploaded_by.sql": "9aa58e3932648e57fd38abcac0b11b59af2011fa868c5d31697366565359c2c4",
}


def test_every_migration_keeps_the_text_it_shipped_with():
    found = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
             for path in sorted(migrate.MIGRATIONS_DIR.glob("[0-9]*.sql"))}
    changed = [name for name, digest in found.items() if SHIPPED.get(name, digest) != digest]
    assert not changed, f"shipped migrations changed: {changed}; put the change in a new migration"
    unpinned = sorted(found.keys() - SHIPPED.keys())
    assert not unpinned, f"pin {unpinned} in SHIPPED once final (sha256 of the file)"
    assert not SHIPPED.keys() - found.keys(), "a shipped migration is gone"
