"""The job as Kubernetes runs it: a subprocess configured by the environment."""

import json
import os
import subprocess
import sys

import psycopg2
import pytest

from rates_ingest.runs import ABANDONED, RunLog
from rates_ingest import s3source
from rates_ingest.formats import FileRejected
from rates_ingest.s3source import ObjectRef
from tests.ingest.conftest import ROWS, as_csv, as_tuples, last_run, prices, run_cli, run_job, runs
from tests.support.db import INGEST_USER, as_user, lock_waiters, sessions
from tests.support.net import free_port
from tests.support.poll import wait_for

UNREACHABLE_DB = "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2"


def log_lines(stdout: str) -> list[dict]:
    """Every line of the job's output, which must each be a JSON object (libraries' lines too)."""
    return [json.loads(line) for line in stdout.splitlines()]


def test_loads_from_environment_variables_with_boto3_reading_the_endpoint_itself(db, s3, moto_endpoint):
    dsn, conn = db
    s3.put("in/p.csv", as_csv(ROWS))

    # No endpoint is passed to the job: boto3 reads AWS_ENDPOINT_URL from the environment.
    result = run_cli(dsn, env={"S3_BUCKET": s3.name, "S3_OBJECT_KEY": "in/p.csv", "AWS_ENDPOINT_URL": moto_endpoint})

    assert result.returncode == 0, result.stdout + result.stderr
    assert prices(conn) == as_tuples(ROWS)
    lines = log_lines(result.stdout)
    assert any(line.get("logger", "").startswith("botocore") for line in lines)  # boto3's own, as JSON
    finished = [line for line in lines if line["event"] == "ingest finished"]
    assert finished and finished[0]["rows"] == len(ROWS) and finished[0]["run_id"] == last_run(conn)["id"]
    assert {"bucket", "key", "duration_s", "timestamp"} <= finished[0].keys()
    assert {line.get("service") for line in lines} == {"rates-ingest"}  # libraries' lines too


def test_the_run_records_who_uploaded_the_file_from_the_environment_or_the_option(db, s3, moto_endpoint):
    dsn, conn = db
    s3.put("in/p.csv", as_csv(ROWS))
    env = {"S3_BUCKET": s3.name, "S3_OBJECT_KEY": "in/p.csv", "AWS_ENDPOINT_URL": moto_endpoint}

    # As the controller's Job passes it; then by hand, as a second run for the same file.
    by_env = run_cli(dsn, env={**env, "S3_UPLOADED_BY": "AWS:AROAEXAMPLE:jane@example.com"})
    by_option = run_cli(dsn, "--uploaded-by", "AWS:AIDAEXAMPLE", env=env)
    nobody = run_cli(dsn, env=env)  # ratesctl reconcile's events name nobody

    assert [r.returncode for r in (by_env, by_option, nobody)] == [0, 0, 0], by_env.stdout + by_option.stdout
    with conn.cursor() as cur:
        cur.execute("SELECT status, uploaded_by FROM ingest_runs ORDER BY id")
        assert cur.fetchall() == [("loaded", "AWS:AROAEXAMPLE:jane@example.com"),
                                  ("already_loaded", "AWS:AIDAEXAMPLE"), ("already_loaded", None)]


def test_a_missing_object_exits_2(db, s3):
    dsn, conn = db
    result = run_cli(dsn, "--bucket", s3.name, "--key", "nothing-here.csv")

    assert result.returncode == 2, result.stdout + result.stderr
    run = last_run(conn)
    assert run["status"] == "rejected" and "gone" in run["error"]


def test_an_archived_object_exits_2_and_says_to_restore_it(db, s3):
    # S3 keeps it, but answers a GET with InvalidObjectState until it is restored, which
    # takes hours: more than a Job's retries, so it is set aside with what to do.
    dsn, conn = db
    s3.client.put_object(Bucket=s3.name, Key="old/p.csv", Body=as_csv(ROWS), StorageClass="GLACIER")
    result = run_cli(dsn, "--bucket", s3.name, "--key", "old/p.csv")

    assert result.returncode == 2, result.stdout + result.stderr
    run = last_run(conn)
    assert run["status"] == "rejected" and "is archived (InvalidObjectState): restore it" in run["error"]
    assert prices(conn) == []


def test_a_bucket_name_s3_cannot_have_exits_2(db, s3):
    # botocore refuses it before sending anything; no retry can change that.
    dsn, conn = db
    result = run_cli(dsn, "--bucket", "Bad_Bucket!!", "--key", "p.csv")

    assert result.returncode == 2, result.stdout + result.stderr
    run = last_run(conn)
    assert run["status"] == "rejected" and "cannot name an S3 object" in run["error"]


def test_a_missing_version_exits_2(db, s3):
    dsn, conn = db
    s3.enable_versioning()
    s3.put("p.csv", as_csv(ROWS))

    result = run_cli(dsn, "--bucket", s3.name, "--key", "p.csv", "--version-id", "no-such-version")

    assert result.returncode == 2, result.stdout + result.stderr
    assert prices(conn) == []
    run = last_run(conn)
    assert run["status"] == "rejected" and "is gone" in run["error"] and "no-such-version" in run["error"]


@pytest.mark.parametrize("version", [[], ["--version-id", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"]], ids=["key", "version"])
def test_a_missing_bucket_exits_2_saying_so(db, s3, version):
    # HEAD has no error body: S3 answers a missing bucket with the bare 404 of a missing
    # key, and the reason said "is gone: 404", as if the key were mistyped.
    dsn, conn = db
    bucket = s3.name + "-nosuch"

    result = run_cli(dsn, "--bucket", bucket, "--key", "p.csv", *version)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the bucket {bucket} does not exist" in last_run(conn)["error"], last_run(conn)


def test_a_bucket_gone_after_the_head_is_named_too(s3):
    # A GET's error has a body: NoSuchBucket, said as the HEAD's is.
    ref = ObjectRef(s3.name + "-nosuch", "p.csv")
    with pytest.raises(FileRejected, match=f"the bucket {ref.bucket} does not exist"):
        with s3source.mapped_errors(ref):
            s3.client.get_object(Bucket=ref.bucket, Key=ref.key)


def test_a_missing_key_still_says_only_that_it_is_gone(s3):
    with pytest.raises(FileRejected) as rejected:
        s3source.head(s3.client, ObjectRef(s3.name, "no/such.csv"))
    assert str(rejected.value) == f"s3://{s3.name}/no/such.csv is gone: 404"


def test_a_version_id_that_s3_answers_400_to_exits_2(db, s3):
    # HEAD has no error body: S3 answers a version id that cannot exist (any id on an
    # unversioned bucket, a malformed one on a versioned bucket) with a bare 400.
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))

    result = run_cli(dsn, "--bucket", s3.name, "--key", "p.csv", "--version-id", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")

    assert result.returncode == 2, result.stdout + result.stderr
    assert prices(conn) == []
    run = last_run(conn)
    assert run["status"] == "rejected" and "is gone" in run["error"]


def test_an_invalid_file_exits_2(db, s3):
    dsn, conn = db
    s3.put("p.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))

    result = run_cli(dsn, "--bucket", s3.name, "--key", "p.csv")

    assert result.returncode == 2
    assert last_run(conn)["bad_rows"] == [{"line": 2, "error": "unknown port code 'XXXXX' in dest_code",
                                           "text": "CNSHA,XXXXX,2016-01-01,5"}]


def test_an_unreachable_database_exits_1(s3):
    s3.put("p.csv", as_csv(ROWS))

    result = run_cli(UNREACHABLE_DB, "--bucket", s3.name, "--key", "p.csv")

    assert result.returncode == 1
    last = log_lines(result.stdout)[-1]
    assert last["event"] == "ingest failed before it could be recorded" and last["level"] == "error"
    # The fields of every run's last line (README, "Logs"), for the searches and dashboards on them.
    assert {k: last[k] for k in ("bucket", "key", "status", "rows", "bytes", "exit_code", "recorded")} == {
        "bucket": s3.name, "key": "p.csv", "status": "failed", "rows": None, "bytes": None, "exit_code": 1,
        "recorded": False}
    assert isinstance(last["duration_s"], float) and "127.0.0.1" in last["error"]


def test_without_an_iam_role_there_is_no_database_token_and_the_job_exits_1(s3):
    s3.put("p.csv", as_csv(ROWS))
    env = {"DATABASE_IAM_AUTH": "true", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SESSION_TOKEN": "", "AWS_EC2_METADATA_DISABLED": "true"}

    result = run_cli("postgresql://rates_ingest@127.0.0.1:1/rates?sslmode=require",
                     "--bucket", s3.name, "--key", "p.csv", env=env)

    assert result.returncode == 1
    [line] = [line for line in log_lines(result.stdout) if line["event"] == "ingest failed before it could be recorded"]
    assert "no RDS IAM token for rates_ingest@127.0.0.1" in line["error"]


def test_an_unreachable_s3_exits_1_and_is_recorded(db, s3):
    dsn, conn = db
    result = run_cli(dsn, "--bucket", s3.name, "--key", "p.csv",
                     env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"})

    assert result.returncode == 1
    run = last_run(conn)
    assert run["status"] == "failed" and "S3 unavailable" in run["error"]
    # An outage the job knows is no bug: no traceback at the default level.
    assert not [line for line in log_lines(result.stdout) if "exception" in line]


def test_a_database_error_outside_the_copy_is_not_blamed_on_the_file(db, s3):
    """work_mem out of PostgreSQL's range is a class-22 error, but of the setup, not of the file."""
    from rates_ingest import job
    from rates_ingest.settings import Settings

    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))
    code = job.run(Settings(database_url=as_user(dsn, INGEST_USER), bucket=s3.name, key="p.csv", work_mem="1kB"))
    run = last_run(conn)
    assert code == 1 and run["status"] == "failed" and "work_mem" in run["error"]


def test_content_that_only_the_server_refuses_is_a_rejected_file(db, s3, monkeypatch):
    """Were validation to miss something, COPY's data exception still rejects the file (exit 2)."""
    from rates_ingest import formats

    dsn, conn = db
    monkeypatch.setattr(formats.CsvParser, "_first_bad", lambda self, lines, start: -1)  # validation off
    s3.put("p.csv", as_csv([ROWS[0], ("CNSHA", "NLRTM", "2016-01-01", 99_999_999_999)]))
    assert run_job(dsn, s3.name, "p.csv") == 2
    run = last_run(conn)
    assert run["status"] == "rejected" and "refused the file's content" in run["error"]
    assert "out of range" in run["error"] and prices(conn) == []


def test_missing_configuration_exits_1(s3):
    result = run_cli("", "--bucket", s3.name, "--key", "p.csv")
    assert result.returncode == 1
    [line] = log_lines(result.stdout)
    assert "DATABASE_URL" in line["error"] and line["service"] == "rates-ingest"


def test_an_unknown_log_level_is_a_configuration_error(db, s3):
    dsn, _ = db
    result = run_cli(dsn, "--bucket", s3.name, "--key", "p.csv", env={"LOG_LEVEL": "verbose"})

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'verbose'" in result.stdout


def test_a_key_that_is_not_utf8_is_a_configuration_error(db, s3):
    dsn, _ = db
    result = run_cli(dsn, "--bucket", s3.name, "--key", b"bad\xff.csv")  # bytes, as a shell can pass them

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    [line] = log_lines(result.stdout)
    assert line["error"].startswith("S3_OBJECT_KEY is not valid UTF-8")
    with psycopg2.connect(dsn) as conn:
        assert runs(conn) == []  # nothing recorded for a run that never began


def test_a_killed_run_is_marked_failed_by_the_next_run(db, s3):
    dsn, conn = db
    s3.put("in/killed.csv", as_csv(ROWS))
    # Holding the object's load lock makes the job wait inside its load, recorded as running.
    blocker = psycopg2.connect(dsn)
    with blocker.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{s3.name}/in/killed.csv",))
    job = subprocess.Popen([sys.executable, "-m", "rates_ingest", "--bucket", s3.name, "--key", "in/killed.csv"],
                           env={**os.environ, "DATABASE_URL": dsn}, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: lock_waiters(conn, application_name="rates-ingest") == 1, timeout=60,
                 what="the job to wait for the object's lock")
        assert last_run(conn)["status"] == "running"
        job.kill()
        job.wait(10)
    finally:
        blocker.close()
    wait_for(lambda: sessions(conn, "rates-ingest") == 0, timeout=10, interval=0.05,
             what="the killed job's sessions to end")
    killed = last_run(conn)
    assert killed["status"] == "running"  # nobody could record its end

    assert run_cli(dsn, "--bucket", s3.name, "--key", "in/killed.csv").returncode == 0
    swept, retried = runs(conn)[-2:]
    assert swept["id"] == killed["id"] and swept["status"] == "failed"
    assert swept["error"].startswith("abandoned") and swept["finished_at"] is not None
    assert retried["status"] == "loaded" and prices(conn) == as_tuples(ROWS)


def test_a_live_run_is_not_swept(db):
    dsn, conn = db
    alive, other = RunLog(dsn), RunLog(dsn)
    try:
        run_id = alive.start(ObjectRef("b", "k"))
        assert other.sweep() == []
        assert last_run(conn)["status"] == "running"
        alive.close()  # what a killed process's session does
        # The server frees the run's lock only once the session has ended, a moment later.
        wait_for(lambda: sessions(conn, "rates-ingest-runs") == 1, timeout=10, interval=0.05,
                 what="the closed run's session to end")
        assert other.sweep() == [run_id]
        assert last_run(conn)["error"] == ABANDONED
    finally:
        alive.close()
        other.close()


def test_the_controller_reads_the_reason_from_the_log_tail_a_kubelet_keeps(db, s3):
    """A long key makes the last line longer than the 2 KiB a kubelet keeps of a failed
    pod's log; the reason the controller quotes when it sets the file aside must survive."""
    from rates_controller.jobs import last_words

    dsn, conn = db
    key = "prices/" + "long-name-" * 100 + ".csv"
    result = run_cli(dsn, "--bucket", s3.name, "--key", key)

    assert result.returncode == 2, result.stdout + result.stderr
    last_line = result.stdout.encode().splitlines()[-1]
    tail = result.stdout.encode()[-2048:].decode(errors="replace")  # as a kubelet keeps it
    assert len(last_line) > 2048 and not tail.startswith("{")
    reason = last_words(tail)
    assert reason == json.loads(last_line)["error"] and reason.startswith(f"s3://{s3.name}/prices/long-name-")
    assert last_run(conn)["error"] == f"s3://{s3.name}/{key} is gone: 404"  # the record keeps it whole


def test_an_error_too_long_for_the_tail_is_cut_in_the_log_line_only():
    from rates_ingest.job import BRIEF_ERROR_CHARS, _brief

    assert _brief("short") == "short" and _brief(None) is None
    brief = _brief("x" * 5000)
    assert brief.startswith("x" * BRIEF_ERROR_CHARS) and brief.endswith("(cut; the whole error is in ingest_runs)")
    assert len(brief.encode()) + 1000 < 2048  # room for the rest of the line, a long key's excepted


# Runs the job with a bug in the load: a KeyError out of loader.load.
_BUG_IN_THE_LOAD = """
import sys
from rates_ingest import cli, job

def load(*args, **kwargs):
    raise KeyError("x")

job.loader.load = load
sys.exit(cli.main())
"""


def test_a_bug_in_the_load_logs_its_traceback_before_the_last_line(db, s3):
    # At the default level: the run is retried and set aside, and only the traceback tells
    # a bug from an outage.
    dsn, conn = db
    s3.put("p.csv", as_csv(ROWS))
    result = subprocess.run([sys.executable, "-c", _BUG_IN_THE_LOAD, "--bucket", s3.name, "--key", "p.csv"],
                            env={**os.environ, "DATABASE_URL": as_user(dsn, INGEST_USER)}, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = log_lines(result.stdout)
    [bug] = [line for line in lines if line["event"] == "unexpected error"]
    assert bug["level"] == "error" and bug["key"] == "p.csv" and "run_id" in bug
    assert "Traceback" in bug["exception"] and "KeyError: 'x'" in bug["exception"]
    # The controller reads the reason from the last line.
    assert (lines[-1]["event"], lines[-1]["error"]) == ("ingest finished", "KeyError: 'x'")
    assert last_run(conn)["error"] == "KeyError: 'x'"


# A bug outside the run's own handling: job.run itself raises.
_BUG_OUTSIDE_THE_RUN = """
import sys
from rates_ingest import cli, job

def run(settings):
    raise KeyError("x")

job.run = run
sys.exit(cli.main())
"""


def test_a_bug_outside_the_run_is_one_json_line_with_its_traceback_and_exit_1(s3):
    # Python's plain-text traceback on stderr would be split into an event per line.
    result = subprocess.run([sys.executable, "-c", _BUG_OUTSIDE_THE_RUN, "--bucket", s3.name, "--key", "p.csv"],
                            env={**os.environ, "DATABASE_URL": UNREACHABLE_DB}, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 1 and result.stderr == "", result.stderr
    [line] = log_lines(result.stdout)
    assert (line["event"], line["level"], line["error"], line["service"]) == (
        "unexpected error", "error", "KeyError: 'x'", "rates-ingest")
    assert "Traceback" in line["exception"] and line["exception"].rstrip().endswith("KeyError: 'x'")
