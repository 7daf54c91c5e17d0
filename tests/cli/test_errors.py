"""ratesctl failures: one line saying whether a retry can help, and an exit code to match."""

import json

import pytest
from click.testing import CliRunner

from ratesctl.cli import cli
from tests.support.db import API_USER, INGEST_USER, as_user, autocommit


def run(*args, dsn):
    return CliRunner().invoke(cli, list(args), env={"DATABASE_URL": dsn})


def test_an_unreachable_database_exits_1_without_a_traceback():
    for command in ("migrate", "demo-data"):
        result = run(command, dsn="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
        assert result.exit_code == 1, result.output
        assert "Connection refused" in result.output and "may pass on retry" in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output  # libpq's hint line joined


@pytest.mark.parametrize("option, said", [("sslmode=bogus", 'invalid sslmode value: "bogus"'),
                                          ("connect_timeout=abc", 'invalid integer value "abc"')])
def test_an_option_libpq_refuses_exits_2_not_may_pass_on_retry(empty_dsn, option, said):
    for command in ("migrate", "demo-data"):
        result = run(command, dsn=f"{empty_dsn}&{option}")
        assert result.exit_code == 2, result.output
        assert said in result.output and "may pass on retry" not in result.output, result.output


def test_a_migration_that_cannot_apply_exits_2_and_says_why(empty_dsn):
    with autocommit(empty_dsn) as conn:
        with conn.cursor() as cur:  # a table in the way of migration 0002
            cur.execute("CREATE TABLE lane_totals (x int)")
        result = run("migrate", dsn=empty_dsn)
        assert result.exit_code == 2, result.output
        assert 'relation "lane_totals" already exists' in result.output
        assert "may pass on retry" not in result.output and "Traceback" not in result.output
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('region_totals')")
            assert cur.fetchone()[0] is None  # 0002 rolled back whole


def test_a_keyword_dsn_is_refused_with_one_line():
    result = run("migrate", dsn="host=127.0.0.1 port=1 dbname=none")
    assert result.exit_code == 2, result.output
    assert "postgresql://" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("url", ["postgresql://u@127.0.0.1:abc/db", "postgresql://u@[::1/db",
                                 "postgresql://u@127.0.0.1:99999/db"])
@pytest.mark.parametrize("command", ["migrate", "demo-data"])
def test_a_malformed_database_url_is_one_line_and_exit_2(command, url):
    result = run(command, dsn=url)
    assert result.exit_code == 2, result.output
    assert "DATABASE_URL is not a valid URL" in result.output and "Traceback" not in result.output


def test_an_unknown_log_level_is_a_usage_error():
    result = CliRunner().invoke(cli, ["migrate"], env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/db",
                                                       "LOG_LEVEL": "verbose"})
    assert result.exit_code == 2 and "LOG_LEVEL must be one of" in result.output


@pytest.mark.parametrize("user, args, needed", [
    (API_USER, ["migrate"], "this command needs the schema owner's rights: DATABASE_URL as the schema's owner "
                            "(on RDS the master user, rates_admin; under `make up` postgres), not rates_api or "
                            "rates_ingest"),
    (INGEST_USER, ["demo-data", "--force", "--prices", "10"], "this command needs the schema owner's rights"),
    (API_USER, ["reconcile", "--bucket", "b", "--prefix", ""],
     "reconcile needs a user that may read ingest_files and ingest_runs: DATABASE_URL as the schema's owner or "
     "rates_ingest"),
])
def test_a_refusal_of_the_database_says_which_user_the_command_needs(dsn, user, args, needed):
    """"permission denied for table yoyo_lock" left the operator to guess the user to use."""
    result = CliRunner().invoke(cli, args, env={"DATABASE_URL": as_user(dsn, user), "AWS_DEFAULT_REGION": "us-east-1"})
    assert result.exit_code == 2, result.output
    assert "permission denied for table" in result.output and needed in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("command", ["migrate", "demo-data", "up"])
@pytest.mark.parametrize("variable, value", [("MIGRATION_LOCK_WAIT_SECONDS", "abc"), ("LOG_LEVEL", "loud")])
def test_every_command_that_migrates_refuses_a_mistyped_setting(monkeypatch, command, variable, value):
    """demo-data and up migrated with the default lock wait and logs whatever these said."""
    from ratesctl import commands

    def start(pgdata):
        raise AssertionError("started a server")

    monkeypatch.setattr(commands.localdb, "start", start)
    result = CliRunner().invoke(cli, [command], env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/db", variable: value})
    assert result.exit_code == 2, result.output
    assert variable in result.output and "Traceback" not in result.output, result.output


def test_a_message_keeps_its_backslashes_and_escapes_what_a_terminal_would_act_on():
    """Escaped as a key, a Windows path read C:\\Users and a repr() \\\\u202e; a control or
    format character in a message is still escaped."""
    from ratesctl.cli import Failed

    path = r"could not open C:\Users\me\rates.csv"
    assert Failed(path, 2).message == path
    quoted = repr("a\u202eb")  # as ConfigError quotes a setting
    assert Failed(f"got {quoted} at\nC:\\Users", 2).message == r"got 'a\u202eb' at C:\Users"
    assert Failed("a\u202eb\x00", 2).message == r"a\u202eb\u0000"


def test_a_mistyped_setting_is_quoted_as_given():
    value = r"C:\Users\me\wait.txt"
    result = CliRunner().invoke(cli, ["migrate"], env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/db",
                                                       "MIGRATION_LOCK_WAIT_SECONDS": value})
    assert result.exit_code == 2, result.output
    assert result.output.endswith(f"must be an integer, got {value!r}\n"), result.output


def test_demo_data_logs_the_migrations_as_json_lines(empty_dsn):
    """As `migrate` does: a console-formatted line among the JSON ones a log pipeline reads."""
    result = CliRunner().invoke(cli, ["demo-data", "--prices", "10", "--ports", "3", "--days", "1"],
                                env={"DATABASE_URL": empty_dsn, "LOG_LEVEL": "INFO"})
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if "migrations applied" in line]
    assert json.loads(line)["event"] == "migrations applied", line


def test_the_help_says_what_the_exit_statuses_mean():
    # As `python -m rates_ingest --help` does: a script around ratesctl decides on them.
    shown = " ".join(CliRunner().invoke(cli, ["--help"]).output.split())
    assert "Exit status: 0 done, 1 failed and a retry may help" in shown and "2 a retry cannot help" in shown
