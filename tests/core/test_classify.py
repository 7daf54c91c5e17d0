"""rates_core.db.classify: which errors a real server raises may pass on a retry.

Every component decides on this alone whether to answer 503 or 4xx, exit 1 or 2."""

import psycopg2
import psycopg2.extensions
import pytest

from rates_core import db
from rates_core.errors import PermanentError, TemporaryError


def _raised(dsn, sqlstate: str) -> psycopg2.Error:
    conn = db.connect(dsn, application_name="classify-test")
    try:
        with conn.cursor() as cur:
            cur.execute(f"DO $$BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END$$")
    except psycopg2.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{sqlstate} was not raised")


@pytest.mark.parametrize("sqlstate, kind", [
    ("40001", TemporaryError),   # serialization failure
    ("40P01", TemporaryError),   # deadlock
    ("53300", TemporaryError),   # too many connections
    ("55P03", TemporaryError),   # lock not available
    ("55006", TemporaryError),   # object in use
    ("25006", TemporaryError),   # read-only transaction (a failover under way)
    ("25P02", PermanentError),   # in failed transaction: a statement after an error
    ("55000", PermanentError),   # object not in prerequisite state (e.g. currval before nextval)
    ("55P04", PermanentError),   # unsafe use of a new enum value
    ("57014", TemporaryError),   # statement timeout
    ("57P01", TemporaryError),   # admin shutdown
    ("58030", TemporaryError),   # I/O error
    ("XX000", TemporaryError),   # internal error
    ("23505", PermanentError),   # unique violation
    ("22P02", PermanentError),   # invalid text representation
    ("42501", db.RightsMissing),  # insufficient privilege (a PermanentError)
    ("42P01", db.SchemaMissing),  # undefined table
    ("42703", db.SchemaMissing),  # undefined column
    ("42883", db.SchemaMissing),  # undefined function
])
def test_sqlstates_of_a_real_server_are_classified(dsn, sqlstate, kind):
    wrapped = db.classify(_raised(dsn, sqlstate))
    assert type(wrapped) is kind
    assert wrapped.pgcode == sqlstate


def test_a_connection_lost_without_a_sqlstate_is_temporary(dsn):
    conn = db.connect(dsn, application_name="classify-test")
    conn.close()
    with pytest.raises(psycopg2.InterfaceError) as lost:
        conn.cursor()
    assert lost.value.pgcode is None
    assert type(db.classify(lost.value)) is TemporaryError


def test_a_login_the_server_refuses_is_temporary(dsn):
    # Without a SQLSTATE from libpq; see classify for why a retry is allowed.
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(dsn, dbname="no_such_database")
    assert refused.value.pgcode is None
    assert type(db.classify(refused.value)) is TemporaryError


@pytest.mark.parametrize("option, said", [
    ({"sslmode": "bogus"}, 'invalid sslmode value: "bogus"'),
    ({"target_session_attrs": "primary-ish"}, "invalid target_session_attrs value"),
    ({"connect_timeout": "abc"}, 'invalid integer value "abc" for connection option "connect_timeout"'),
    ({"port": "99999"}, "invalid port number"),
    ({"hostaddr": "db.example"}, "could not parse network address"),  # a number, never a name
])
def test_an_option_libpq_refuses_before_connecting_is_permanent(dsn, option, said):
    # The same every time: exit 2, not "this may pass on retry" for a mistyped URL.
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(psycopg2.extensions.make_dsn(dsn, **option))
    assert refused.value.pgcode is None and said in str(refused.value)
    assert type(db.classify(refused.value)) is db.SettingsRefused  # a PermanentError


def test_a_server_that_is_not_there_stays_temporary(dsn):
    # libpq's "connection to server ... failed": it may be starting, or failing over.
    with pytest.raises(psycopg2.OperationalError) as unreachable:
        psycopg2.connect(psycopg2.extensions.make_dsn(dsn, host="127.0.0.1", port="1", connect_timeout="2"))
    assert type(db.classify(unreachable.value)) is TemporaryError
