"""ratesctl withdraw: a loaded file's prices taken out, and what its key's events do after."""

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from click.testing import CliRunner

from rates_core import db
from rates_core.errors import PermanentError
from rates_ingest.loader import lock_key
from ratesctl import commands
from ratesctl import withdraw as withdraw_module
from ratesctl.cli import cli
from ratesctl.terminal import shown
from tests.ingest.conftest import (ROWS, V2_ROWS, as_csv, as_tuples, expected_totals, last_run, prices, run_job,
                                   runs, totals)
from tests.support.db import INGEST_USER, as_user
from tests.support.poll import wait_for

pytestmark = pytest.mark.usefixtures("moto_endpoint")

DAY = "2016-01-01"
# Three china -> north_europe quotes on DAY (the API averages from three on), and one more.
LANE_ROWS = [("CNSHA", "NLRTM", DAY, 1000), ("CNNGB", "DEHAM", DAY, 1200), ("CNSHA", "DEHAM", DAY, 1400)]


def ctrl_c_acts() -> None:
    # A background job's shell starts its children with SIGINT ignored (CI may run so),
    # and Python then leaves it ignored: the test's Ctrl-C would do nothing.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def withdraw(dsn, *args):
    return CliRunner().invoke(cli, ["withdraw", *args], env={"DATABASE_URL": dsn})


def loaded_version(dsn, bucket, key) -> str:
    """The version `ratesctl withdraw` shows for the key, read from its suggested command."""
    shown = withdraw(dsn, "--bucket", bucket, "--key", key)
    assert shown.exit_code == 0, shown.output
    suggested = shown.output.splitlines()[-1]
    return suggested.split(" --version ")[1].split(" --reason ")[0].strip("'")


def average(rates):
    status, body = rates(date_from=DAY, date_to=DAY, origin="china", destination="north_europe")
    assert status == 200, body
    return body[0]["average_price"]


def test_withdrawing_takes_a_files_prices_out_and_its_events_no_longer_load_it(dsn, world, s3, rates):
    conn = world
    s3.enable_versioning()
    s3.put("in/good.csv", as_csv(LANE_ROWS))
    assert run_job(dsn, s3.name, "in/good.csv") == 0
    wrong = s3.put("in/wrong month.csv", as_csv([("CNSHA", "NLRTM", DAY, 9000)] + ROWS[2:]))["VersionId"]
    assert run_job(dsn, s3.name, "in/wrong month.csv") == 0
    assert average(rates) == 3150

    shown = withdraw(dsn, "--bucket", s3.name, "--key", "in/wrong month.csv")
    assert f"version {wrong}, 3 price(s)" in shown.output
    assert "--key 'in/wrong month.csv'" in shown.output  # a command to paste
    assert loaded_version(dsn, s3.name, "in/wrong month.csv") == wrong
    done = withdraw(dsn, "--bucket", s3.name, "--key", "in/wrong month.csv", "--version", wrong,
                    "--reason", "December's prices under January's name")
    assert done.exit_code == 0, done.output
    assert "3 price(s) deleted" in done.output
    assert prices(conn) == as_tuples(LANE_ROWS)
    assert totals(conn) == expected_totals(LANE_ROWS)  # the triggers took its rows out of the totals
    assert average(rates) == 1200  # and the API's answers, cached ones included, follow
    record = last_run(conn)
    assert (record["status"], record["rows"], record["error"], record["version_id"], record["etag"]) == (
        "withdrawn", 3, "December's prices under January's name", wrong, None)

    # The event delivered again (or reconcile after a restore that kept the withdrawal): skipped.
    assert run_job(dsn, s3.name, "in/wrong month.csv", wrong) == 0
    skipped = last_run(conn)
    assert skipped["status"] == "superseded"
    assert "this file's prices were withdrawn" in skipped["error"]
    assert "December's prices under January's name" in skipped["error"]
    assert prices(conn) == as_tuples(LANE_ROWS)
    again = withdraw(dsn, "--bucket", s3.name, "--key", "in/wrong month.csv", "--version", wrong, "--reason", "x")
    assert again.exit_code == 0 and "withdrawn before" in again.output

    # The key's next upload is a new file, and loads as any replacement does.
    s3.put("in/wrong month.csv", as_csv(V2_ROWS))
    assert run_job(dsn, s3.name, "in/wrong month.csv") == 0
    assert last_run(conn)["status"] == "loaded"
    assert prices(conn) == as_tuples(LANE_ROWS + V2_ROWS)
    assert totals(conn) == expected_totals(LANE_ROWS + V2_ROWS)


def test_a_copy_in_place_of_a_withdrawn_file_keeps_its_prices_out(dsn, world, s3):
    """An edit of the object's storage class (or encryption, or metadata) copies it onto
    itself: a new version with an ObjectCreated event, and the same bytes."""
    conn = world
    first = loaded_then_withdrawn(dsn, s3, "in/jan.csv", "quoted in the wrong currency")

    copied = s3.client.copy_object(Bucket=s3.name, Key="in/jan.csv", StorageClass="STANDARD_IA",
                                   CopySource={"Bucket": s3.name, "Key": "in/jan.csv", "VersionId": first})
    assert run_job(dsn, s3.name, "in/jan.csv", copied["VersionId"]) == 0

    skipped = last_run(conn)
    assert skipped["status"] == "superseded", skipped
    assert f"the same bytes as this key's version {first}" in skipped["error"]
    assert "quoted in the wrong currency" in skipped["error"]
    assert prices(conn) == []
    assert totals(conn) == expected_totals([])
    # The copy is the key's file now, withdrawn as its twin: what S3 holds, so reconcile
    # has nothing to send again.
    assert key_files(conn, "in/jan.csv") == [(first, True, False), (copied["VersionId"], True, True)]
    *listed, summary = reconcile_lines(dsn, s3.name)
    assert listed == [] and summary.startswith("0 upload(s)"), summary
    # A copy of the copy still names the file that was withdrawn, and its reason once.
    again = s3.client.copy_object(Bucket=s3.name, Key="in/jan.csv", StorageClass="STANDARD",
                                  CopySource={"Bucket": s3.name, "Key": "in/jan.csv"})
    assert run_job(dsn, s3.name, "in/jan.csv", again["VersionId"]) == 0
    assert f"the same bytes as this key's version {first}" in last_run(conn)["error"]
    with conn.cursor() as cur:
        cur.execute("SELECT withdrawn_reason FROM ingest_files WHERE version = %s", (again["VersionId"],))
        assert cur.fetchone()[0] == f"the same bytes as version {first}, withdrawn: quoted in the wrong currency"
    assert run_job(dsn, s3.name, "in/jan.csv", again["VersionId"]) == 0  # its event again
    assert "this file, the bytes of a withdrawn one, was kept out" in last_run(conn)["error"]

    # A changed file loads as the key's next upload.
    s3.put("in/jan.csv", as_csv(LANE_ROWS[:2]))
    assert run_job(dsn, s3.name, "in/jan.csv") == 0
    assert prices(conn) == as_tuples(LANE_ROWS[:2])


def test_a_withdrawn_version_restored_over_a_newer_one_stays_out(dsn, world, s3):
    """The S3 console restores an older version by copying it over the key: its bytes were
    withdrawn, so the key holds no prices after it, as after any upload of those bytes."""
    conn = world
    first = loaded_then_withdrawn(dsn, s3, "in/jan.csv", "wrong month")
    s3.put("in/jan.csv", as_csv(V2_ROWS))
    assert run_job(dsn, s3.name, "in/jan.csv") == 0
    assert prices(conn) == as_tuples(V2_ROWS)

    restored = s3.client.copy_object(Bucket=s3.name, Key="in/jan.csv",
                                     CopySource={"Bucket": s3.name, "Key": "in/jan.csv", "VersionId": first})
    assert run_job(dsn, s3.name, "in/jan.csv", restored["VersionId"]) == 0

    run = last_run(conn)
    assert run["status"] == "superseded" and "wrong month" in run["error"], run
    assert f"the {len(V2_ROWS)} price(s) of the key's previous file were taken out" in run["error"]
    assert prices(conn) == [] and totals(conn) == expected_totals([])
    assert key_files(conn, "in/jan.csv")[-1] == (restored["VersionId"], True, True)


def loaded_then_withdrawn(dsn, s3, key: str, reason: str) -> str:
    """Upload LANE_ROWS to ``key`` of a versioned bucket, load and withdraw them; the version."""
    s3.enable_versioning()
    version = s3.put(key, as_csv(LANE_ROWS))["VersionId"]
    assert run_job(dsn, s3.name, key) == 0
    assert withdraw(dsn, "--bucket", s3.name, "--key", key, "--version", version, "--reason", reason).exit_code == 0
    return version


def key_files(conn, key: str) -> list[tuple]:
    """(version, withdrawn, current) of the key's files, in the order they were recorded."""
    with conn.cursor() as cur:
        cur.execute("""SELECT version, withdrawn_at IS NOT NULL, replaced_at IS NULL FROM ingest_files
                       WHERE key = %s ORDER BY id""", (key,))
        return cur.fetchall()


def reconcile_lines(dsn, bucket: str) -> list[str]:
    done = CliRunner().invoke(cli, ["reconcile", "--bucket", bucket, "--prefix", "in/"], env={"DATABASE_URL": dsn})
    assert done.exit_code == 0, done.output
    return done.output.splitlines()


def test_times_are_shown_in_utc_whatever_the_sessions_time_zone(dsn, world, s3):
    """As the runs' messages and S3's times are: psycopg2 gave them in the session's time
    zone, "2026-11-30 21:42:18.764816-03:30" beside a message's "2026-12-01 01:12 UTC"."""
    conn = world
    s3.enable_versioning()
    version = s3.put("p.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv") == 0
    env = {"DATABASE_URL": dsn, "PGTZ": "America/St_Johns"}  # UTC-03:30 or -02:30, never UTC

    def utc(column: str) -> str:
        with conn.cursor() as cur:
            cur.execute(f"SELECT to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM ingest_files")
            return cur.fetchone()[0] + " UTC"

    shown = CliRunner().invoke(cli, ["withdraw", "--bucket", s3.name, "--key", "p.csv"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"price(s), loaded at {utc('loaded_at')}\n" in shown.output
    args = ["withdraw", "--bucket", s3.name, "--key", "p.csv", "--version", version, "--reason", "wrong"]
    assert CliRunner().invoke(cli, args, env=env).exit_code == 0
    shown = CliRunner().invoke(cli, ["withdraw", "--bucket", s3.name, "--key", "p.csv"], env=env)
    assert shown.output == (f"s3://{s3.name}/p.csv: version {version}, loaded at {utc('loaded_at')} with "
                            f"{len(ROWS)} price(s), withdrawn at {utc('withdrawn_at')}\n")
    again = CliRunner().invoke(cli, args, env=env)
    assert again.output == f"s3://{s3.name}/p.csv version {version} was withdrawn before, at {utc('withdrawn_at')}\n"


def test_an_older_version_arriving_after_a_withdrawal_stays_out(dsn, world, s3):
    conn = world
    s3.enable_versioning()
    older = s3.put("p.csv", as_csv(ROWS))["VersionId"]
    newer = s3.put("p.csv", as_csv(V2_ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv", newer) == 0
    assert withdraw(dsn, "--bucket", s3.name, "--key", "p.csv", "--version", newer, "--reason", "bad").exit_code == 0

    assert run_job(dsn, s3.name, "p.csv", older) == 0  # its event came late
    late = last_run(conn)
    assert late["status"] == "superseded"
    assert "a newer version of this key was loaded, and its prices withdrawn" in late["error"]
    assert prices(conn) == []


def test_a_version_loaded_and_replaced_before_the_withdrawal_quotes_its_reason(dsn, world, s3):
    conn = world
    s3.enable_versioning()
    older = s3.put("p.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv", older) == 0
    newer = s3.put("p.csv", as_csv(V2_ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv", newer) == 0
    assert withdraw(dsn, "--bucket", s3.name, "--key", "p.csv", "--version", newer,
                    "--reason", "sent twice").exit_code == 0

    assert run_job(dsn, s3.name, "p.csv", older) == 0  # its event delivered again
    again = last_run(conn)
    assert again["status"] == "superseded"
    assert "its prices withdrawn" in again["error"] and "sent twice" in again["error"]
    assert prices(conn) == []


def test_a_withdrawn_file_is_not_named_as_the_one_a_copy_duplicates(dsn, world, s3):
    conn = world
    s3.put("a.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "a.csv") == 0
    version = loaded_version(dsn, s3.name, "a.csv")
    assert withdraw(dsn, "--bucket", s3.name, "--key", "a.csv", "--version", version,
                    "--reason", "moved to b.csv").exit_code == 0
    record = last_run(conn)  # without versioning, the run names the file by its ETag, as a load's does
    assert record["version_id"] is None and record["etag"] == runs(conn)[0]["etag"]
    s3.put("b.csv", as_csv(ROWS))  # its prices count once: a.csv's are out
    assert run_job(dsn, s3.name, "b.csv") == 0
    assert last_run(conn)["error"] is None
    assert prices(conn) == as_tuples(ROWS)


def test_a_withdrawn_key_is_not_listed_by_reconcile_until_it_has_a_new_upload(dsn, world, s3):
    s3.enable_versioning()
    first = s3.put("in/a.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "in/a.csv") == 0
    assert withdraw(dsn, "--bucket", s3.name, "--key", "in/a.csv", "--version", first,
                    "--reason", "wrong").exit_code == 0

    def listed():
        result = CliRunner().invoke(cli, ["reconcile", "--bucket", s3.name, "--prefix", "in/"],
                                    env={"DATABASE_URL": dsn})
        assert result.exit_code == 0, result.output
        return result.output.splitlines()[:-1]

    assert listed() == []  # taken out on purpose: sending it again would undo the withdrawal
    newer = s3.put("in/a.csv", as_csv(V2_ROWS))["VersionId"]  # and its event lost
    [line] = listed()
    assert newer in line and f"another file was loaded ({first}) and withdrawn" in line


def test_nothing_is_withdrawn_on_a_wrong_version_a_missing_key_or_without_the_owners_rights(dsn, world, s3):
    conn = world
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    version = loaded_version(dsn, s3.name, "p.csv")
    before = runs(conn)

    stale = withdraw(dsn, "--bucket", s3.name, "--key", "p.csv", "--version", "an-older-one", "--reason", "r")
    assert stale.exit_code == 2
    assert f"the file loaded for s3://{s3.name}/p.csv is version {version}, not an-older-one" in stale.output
    missing = withdraw(dsn, "--bucket", s3.name, "--key", "q.csv", "--version", version, "--reason", "r")
    assert missing.exit_code == 2 and f"no file is loaded for s3://{s3.name}/q.csv" in missing.output
    # An uploader's key is escaped where the message names it, once (a \u202e reverses the line).
    odd_key = "q\u202e\\u.csv"
    for args in (["--version", version, "--reason", "r"], []):  # withdrawing, and showing what is loaded
        odd = withdraw(dsn, "--bucket", s3.name, "--key", odd_key, *args)
        assert odd.exit_code == 2 and odd.output == (
            f"Error: no file is loaded for s3://{s3.name}/{shown(odd_key)}\n"), odd.output
    # The ingest job's user deletes only replaced files' prices (migration 0011).
    ingest = withdraw(as_user(dsn, INGEST_USER), "--bucket", s3.name, "--key", "p.csv", "--version", version,
                      "--reason", "r")
    assert ingest.exit_code == 2 and "permission denied" in ingest.output
    assert "(this command needs the schema owner's rights: DATABASE_URL as the schema's owner" in ingest.output
    for half in (["--version", version], ["--reason", "r"], ["--version", version, "--reason", " "]):
        refused = withdraw(dsn, "--bucket", s3.name, "--key", "p.csv", *half)
        assert refused.exit_code == 2 and "give both --version and a --reason" in refused.output

    assert prices(conn) == as_tuples(ROWS)
    assert runs(conn) == before


def test_the_reason_outlives_the_runs_pruned_by_the_retention_advice(dsn, world, s3):
    conn = world
    s3.enable_versioning()
    version = s3.put("p.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "p.csv") == 0
    assert withdraw(dsn, "--bucket", s3.name, "--key", "p.csv", "--version", version,
                    "--reason", "ticket 9").exit_code == 0
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ingest_runs")  # as the README's monthly prune would, in time
    assert run_job(dsn, s3.name, "p.csv", version) == 0
    assert "(ticket 9)" in last_run(conn)["error"]


def test_a_withdrawal_that_waits_for_a_load_withdraws_nothing_if_the_load_replaced_the_file(dsn, world, s3):
    # Whatever the database's default isolation: under repeatable read the snapshot would be
    # from before the wait, and the withdrawal would fail on the file the load replaced.
    conn = world
    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        cur.execute(f"ALTER DATABASE {cur.fetchone()[0]} SET default_transaction_isolation = 'repeatable read'")
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    first = loaded_version(dsn, s3.name, "p.csv")
    load = psycopg2.connect(dsn)  # stands in for a load of a newer file, holding the key's lock
    with load.cursor() as cur:
        lock_key(cur, s3.name, "p.csv")
        cur.execute("UPDATE ingest_files SET replaced_at = now() WHERE key = 'p.csv'")
        cur.execute("""INSERT INTO ingest_files (bucket, key, version, rows, bytes)
                       VALUES (%s, 'p.csv', 'newer', 0, 0)""", (s3.name,))
    waited, outcome = threading.Event(), {}

    def run():
        owner = db.connect(dsn, application_name="test-withdraw")
        try:
            withdraw_module.withdraw(owner, s3.name, "p.csv", first, "wrong", waiting=waited.set)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc
        finally:
            owner.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert waited.wait(10)
    load.commit()
    load.close()
    thread.join(30)
    assert isinstance(outcome.get("error"), PermanentError), outcome
    assert "is version newer, not" in str(outcome["error"]) and "look again" in str(outcome["error"])
    assert prices(conn) == as_tuples(ROWS)


def test_a_withdrawn_mark_alone_keeps_no_prices_in(dsn, world, s3):
    # The ingest user records files, so it can write the mark; a real withdrawal still deletes.
    conn = world
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    version = loaded_version(dsn, s3.name, "p.csv")
    with psycopg2.connect(as_user(dsn, INGEST_USER)) as ingest, ingest.cursor() as cur:
        cur.execute("UPDATE ingest_files SET withdrawn_at = now() WHERE key = 'p.csv'")
    done = withdraw(dsn, "--bucket", s3.name, "--key", "p.csv", "--version", version, "--reason", "for real")
    assert done.exit_code == 0 and "4 price(s) deleted" in done.output, done.output
    assert prices(conn) == [] and last_run(conn)["status"] == "withdrawn"


def test_a_ctrl_c_while_waiting_for_a_load_stops_the_withdrawal_at_once(dsn, world, s3):
    conn = world
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    version = loaded_version(dsn, s3.name, "p.csv")
    load = psycopg2.connect(dsn)  # stands in for a load of the key, holding its lock throughout
    try:
        with load.cursor() as cur:
            lock_key(cur, s3.name, "p.csv")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ratesctl.cli", "withdraw", "--bucket", s3.name, "--key", "p.csv",
             "--version", version, "--reason", "r"],
            env={**os.environ, "DATABASE_URL": dsn}, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_acts)
        assert "waiting for it to commit" in proc.stderr.readline()
        time.sleep(1)  # into the wait itself, past the message
        proc.send_signal(signal.SIGINT)
        # The lock is still held: an exit now is the Ctrl-C's, not the load's commit.
        assert proc.wait(timeout=60) != 0
    finally:
        load.close()
    assert prices(conn) == as_tuples(ROWS)
    assert last_run(conn)["status"] == "loaded"


def test_looking_then_withdrawing_on_one_connection(dsn, world, s3):
    # As a script (or the benchmark) would: look up the version, then withdraw it.
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    owner = db.connect(dsn, application_name="test-withdraw")
    try:
        found = withdraw_module.loaded_file(owner, s3.name, "p.csv")
        assert withdraw_module.withdraw(owner, s3.name, "p.csv", found.version, "scripted")[1] == len(ROWS)
    finally:
        owner.close()
    assert prices(world) == []


def test_a_database_without_the_schema_is_told_to_migrate(empty_dsn):
    result = withdraw(empty_dsn, "--bucket", "b", "--key", "k")
    assert result.exit_code == 2 and "apply the migrations" in result.output, result.output


def test_a_ctrl_c_during_the_delete_cancels_it(dsn, world, s3):
    # A big file's DELETE takes minutes; here one waits on a row another transaction holds.
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    version = loaded_version(dsn, s3.name, "p.csv")
    holder = psycopg2.connect(dsn)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM prices FOR UPDATE")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ratesctl.cli", "withdraw", "--bucket", s3.name, "--key", "p.csv",
             "--version", version, "--reason", "r"],
            env={**os.environ, "DATABASE_URL": dsn}, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_acts)
        with world.cursor() as cur:
            def deleting() -> bool:
                cur.execute("""SELECT 1 FROM pg_stat_activity WHERE application_name = %s
                               AND datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM prices%%'""",
                            (withdraw_module.APPLICATION_NAME,))
                return cur.fetchone() is not None
            wait_for(deleting, timeout=30, interval=0.1, what="the withdrawal's DELETE to wait")
        proc.send_signal(signal.SIGINT)
        # The row is still held: an exit now is the Ctrl-C's.
        assert proc.wait(timeout=60) != 0
        assert "Aborted!" in proc.stderr.read()
    finally:
        holder.close()
    assert prices(world) == as_tuples(ROWS)
    assert last_run(world)["status"] == "loaded"


def test_from_the_commit_on_a_ctrl_c_is_ignored_until_the_command_has_said_what_it_did(dsn, world, s3):
    # A COMMIT under way commits whatever a cancel says: "Aborted!" would then be false.
    default = signal.getsignal(signal.SIGINT)
    with commands._ctrl_c_cancels_statements() as committing:
        assert psycopg2.extensions.get_wait_callback() is commands._wait_cancelling
        committing()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert psycopg2.extensions.get_wait_callback() is None  # the COMMIT waits in libpq
    signal.signal(signal.SIGINT, default)
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    done = withdraw(dsn, "--bucket", s3.name, "--key", "p.csv", "--version", loaded_version(dsn, s3.name, "p.csv"),
                    "--reason", "r")
    assert done.exit_code == 0 and "price(s) deleted" in done.output
    assert signal.getsignal(signal.SIGINT) is default  # given back once said


def test_keys_are_shown_escaped_and_the_suggested_command_gives_the_key_back(dsn, world, s3):
    """reconcile escaped an uploader's \\u202e, withdraw printed it raw: it reversed the rest
    of the line, the suggested command's arguments included."""
    key = "in/jan-\u202evsc.2024 it's\\u.csv"
    s3.put(key, as_csv(ROWS))
    assert run_job(dsn, s3.name, key) == 0
    shown = withdraw(dsn, "--bucket", s3.name, "--key", key)
    assert shown.exit_code == 0, shown.output
    *_, suggested = shown.output.splitlines()
    version = loaded_version(dsn, s3.name, key)
    done = withdraw(dsn, "--bucket", s3.name, "--key", key, "--version", version, "--reason", "r")
    again = withdraw(dsn, "--bucket", s3.name, "--key", key, "--version", version, "--reason", "r")
    missing = withdraw(dsn, "--bucket", s3.name, "--key", key + "\u202e", "--version", version, "--reason", "r")
    assert [done.exit_code, again.exit_code, missing.exit_code] == [0, 0, 2], missing.output
    for output in (shown.output, done.output, again.output, missing.output):
        assert all(line.isprintable() for line in output.splitlines()), output
    assert f"s3://{s3.name}/in/jan-\\u202evsc.2024 it's\\\\u.csv: version {version}" in shown.output
    assert "was withdrawn before" in again.output and "\\u202e" in missing.output
    # Pasted into a shell, the suggested command names the key itself.
    words = suggested.split("to take its prices out: ", 1)[1].removesuffix(" --reason '...'")
    argv = subprocess.run(["bash", "-c", f'printf "%s\\0" {words}'], capture_output=True, check=True).stdout
    assert argv.decode().split("\0")[:-1] == ["ratesctl", "withdraw", "--bucket", s3.name, "--key", key,
                                              "--version", version]
