"""ratesctl reconcile: the uploads S3 holds that the database has not loaded, sent again."""

import datetime
import json
import os
import subprocess
import sys
import time

import botocore.exceptions
import pytest
from click.testing import CliRunner

from rates_controller import events
from rates_core.errors import PermanentError, RatesError, TemporaryError
from rates_ingest import s3source
from rates_ingest.s3source import ObjectInfo, ObjectRef
from ratesctl import reconcile as reconcile_module
from ratesctl.cli import cli
from ratesctl.terminal import shown
from tests.ingest.conftest import ROWS, V2_ROWS, as_csv, as_tuples, prices, run_job
from tests.support.uploads import Queues, new_queues

pytestmark = pytest.mark.usefixtures("moto_endpoint")


@pytest.fixture
def queue(moto_endpoint) -> Queues:
    import boto3

    return new_queues(boto3.client("sqs", endpoint_url=moto_endpoint))


def reconcile(dsn, *args):
    result = CliRunner().invoke(cli, ["reconcile", *args], env={"DATABASE_URL": dsn})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def sent(queue: Queues) -> list[events.UploadedObject]:
    """The uploads that the queue's messages announce, read as the controller reads them."""
    found = []
    while messages := queue.client.receive_message(QueueUrl=queue.uploads_url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=0).get("Messages"):
        for message in messages:
            found += events.uploaded_objects(message["Body"])
            queue.client.delete_message(QueueUrl=queue.uploads_url, ReceiptHandle=message["ReceiptHandle"])
    return sorted(found, key=lambda obj: obj.key)


def test_it_lists_what_s3_holds_and_the_database_does_not_and_sends_it_again(dsn, world, s3, queue):
    # As after a restore to an earlier time: the database never saw some uploads, or an
    # older version of them, and nothing else tells.
    conn = world
    s3.enable_versioning()
    s3.put("in/a.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "in/a.csv") == 0
    newer_a = s3.put("in/a.csv", as_csv(V2_ROWS))["VersionId"]
    odd_key = "in/b c+d é.csv"  # S3 writes keys URL-encoded into events
    b = s3.put(odd_key, as_csv(ROWS[:1]))["VersionId"]
    s3.put("in/c.csv", as_csv(ROWS[:2]))
    assert run_job(dsn, s3.name, "in/c.csv") == 0
    s3.put("in/bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))
    assert run_job(dsn, s3.name, "in/bad.csv") == 2
    s3.put("in/gone.csv", as_csv(ROWS))
    s3.client.delete_object(Bucket=s3.name, Key="in/gone.csv")  # a delete marker: its prices stay
    s3.put("elsewhere/d.csv", as_csv(ROWS))

    *listed, summary = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/")
    assert [line.split("  ")[0] for line in listed] == [
        f"s3://{s3.name}/in/a.csv", f"s3://{s3.name}/{odd_key}", f"s3://{s3.name}/in/bad.csv"]
    assert "another file is loaded" in listed[0] and newer_a in listed[0]
    assert listed[1].endswith("not loaded") and "rejected: 1 invalid row(s)" in listed[2]
    assert summary.startswith("3 upload(s) of the 4 under") and "1 rejected, not sent" in summary
    assert sent(queue) == []  # only listed

    reconcile(dsn, "--bucket", s3.name, "--prefix", "in/", "--send", "--queue-url", queue.uploads_url)
    again = sent(queue)
    assert [(obj.key, obj.version_id, obj.redriven) for obj in again] == [
        ("in/a.csv", newer_a, False), (odd_key, b, False)]
    assert all(obj.sequencer.startswith("reconcile-") for obj in again)  # a new Job, not a duplicate event

    for obj in again:  # as the controller's Jobs would
        assert run_job(dsn, obj.bucket, obj.key, obj.version_id) == 0
    assert prices(conn) == sorted(as_tuples(V2_ROWS + ROWS[:1] + ROWS[:2]))
    assert reconcile(dsn, "--bucket", s3.name, "--prefix", "in/")[:-1] == [listed[2]]


def test_in_a_bucket_without_versioning_an_overwritten_object_is_found_by_its_etag_and_time(dsn, world, s3, queue):
    conn = world
    s3.put("p.csv", as_csv(ROWS))
    assert run_job(dsn, s3.name, "p.csv") == 0
    assert reconcile(dsn, "--bucket", s3.name, "--prefix", "") == [
        f"0 upload(s) of the 1 under s3://{s3.name}/ not loaded as S3 holds them"]
    s3.put("p.csv", as_csv(V2_ROWS))
    # Refused by its name before the job reads it, so its run names no ETag to find it by.
    s3.put("notes.txt", b"not prices")
    assert run_job(dsn, s3.name, "notes.txt") == 2
    s3.put("bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))  # its run is found by its ETag
    assert run_job(dsn, s3.name, "bad.csv") == 2

    *listed, summary = reconcile(dsn, "--bucket", s3.name, "--prefix", "", "--send", "--queue-url",
                                 queue.uploads_url)
    assert "rejected: 1 invalid row(s)" in listed[0] and "rejected: unknown file extension" in listed[1]
    assert "1 rejected, not sent" in summary and "1 never sent: no price file by the name" in summary
    [obj] = sent(queue)
    assert obj.version_id is None and obj.etag
    assert run_job(dsn, obj.bucket, obj.key, obj.version_id) == 0
    assert prices(conn) == as_tuples(V2_ROWS)


def test_send_without_a_queue_is_refused_and_a_missing_bucket_is_one_line(dsn, world, s3):
    def run(*args, **env):
        return CliRunner().invoke(cli, ["reconcile", "--prefix", "", *args], env={"DATABASE_URL": dsn, **env})

    refused = run("--bucket", s3.name, "--send", QUEUE_URL="")
    assert refused.exit_code == 2 and "--send needs --queue-url" in refused.output
    missing = run("--bucket", "no-such-bucket-here")
    assert missing.exit_code == 2 and "NoSuchBucket" in missing.output
    assert len(missing.output.strip().splitlines()) == 1, missing.output
    s3.put("p.csv", as_csv(ROWS))
    no_region = run("--bucket", s3.name, "--send", "--queue-url", "http://127.0.0.1:1/q", AWS_REGION=None,
                    AWS_DEFAULT_REGION=None)
    assert no_region.exit_code == 2 and no_region.output.splitlines()[-1] == (
        "Error: no AWS region for the uploads queue: set AWS_DEFAULT_REGION"), no_region.output
    no_credentials = run("--bucket", s3.name, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None,
                         AWS_SESSION_TOKEN=None, AWS_PROFILE=None, AWS_EC2_METADATA_DISABLED="true",
                         AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent")
    assert no_credentials.exit_code == 2 and "Unable to locate credentials" in no_credentials.output, \
        no_credentials.output  # not "may pass on retry"
    # Without a prefix, every key of the bucket would be sent, which the controller refuses.
    assert "Missing option '--prefix'" in CliRunner().invoke(cli, ["reconcile", "--bucket", s3.name]).output


def test_send_checks_the_region_and_the_queue_before_listing(dsn, world, s3, queue, monkeypatch):
    """Both were found out only when sending, after a listing that takes minutes on a big
    bucket."""
    def listing(*args):
        raise AssertionError("listed the bucket")

    monkeypatch.setattr(reconcile_module, "missing", listing)

    def run(queue_url, **env):
        return CliRunner().invoke(cli, ["reconcile", "--bucket", s3.name, "--prefix", "", "--send", "--queue-url",
                                        queue_url], env={"DATABASE_URL": dsn, **env})

    no_region = run(queue.uploads_url, AWS_REGION=None, AWS_DEFAULT_REGION=None)
    assert no_region.exit_code == 2, no_region.output
    assert no_region.output == "Error: no AWS region for the uploads queue: set AWS_DEFAULT_REGION\n"
    wrong = run(queue.uploads_url + "-mistyped")
    assert wrong.exit_code == 2, wrong.output
    assert wrong.output.startswith(f"Error: checking the uploads queue {queue.uploads_url}-mistyped: "), wrong.output
    assert "NonExistentQueue" in wrong.output and "may pass on retry" not in wrong.output, wrong.output


class PartlyRefusing:
    """An SQS client that refuses the fourth event of the second batch."""

    def __init__(self):
        self.batches = []

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's names
        self.batches.append(Entries)
        failed = [e for e in Entries if len(self.batches) == 2 and e["Id"] == "3"]
        return {"Successful": [{"Id": e["Id"]} for e in Entries if e not in failed],
                "Failed": [{"Id": e["Id"], "Code": "X", "Message": "refused", "SenderFault": False} for e in failed]}


def test_a_batch_refused_in_part_says_which_and_how_many_were_sent():
    uploads = [reconcile_module.Upload(f"k{n}.csv", ObjectInfo("v", '"e"', 1, datetime.datetime(2026, 1, 1)),
                                       None, None) for n in range(15)]
    with pytest.raises(TemporaryError, match=r"refused the events of k13.csv \(refused\); 14 of 15 sent"):
        reconcile_module.send(PartlyRefusing(), "q", "b", uploads)


class Refusing:
    """An SQS client that has the queue and refuses every event."""

    def get_queue_attributes(self, QueueUrl, AttributeNames):  # noqa: N803 - boto3's names
        return {"Attributes": {"QueueArn": "arn:aws:sqs:eu-west-1:123456789012:uploads"}}

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's names
        return {"Successful": [],
                "Failed": [{"Id": e["Id"], "Code": "X", "Message": "refused", "SenderFault": False} for e in Entries]}


def test_a_refused_key_is_shown_escaped_once(dsn, world, s3, monkeypatch):
    """The error named the keys as a list's repr, which the CLI's escaping then escaped
    again: ['in/jan-\\\\u202evsc.csv']. The key is shown as the listing shows it."""
    key = "in/jan-\u202evsc.csv"
    s3.put(key, as_csv(ROWS))
    monkeypatch.setattr(reconcile_module, "sqs_client", Refusing)
    result = CliRunner().invoke(cli, ["reconcile", "--bucket", s3.name, "--prefix", "in/", "--send",
                                      "--queue-url", "q"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: the uploads queue refused the events of {shown(key)} (refused); 0 of 1 sent, which load as usual; "
        "run reconcile without --send to see what is left (this may pass on retry)")
    assert shown(key) == "in/jan-\\u202evsc.csv"


class FailingSecondBatch:
    """An SQS client whose second batch fails whole, with the given HTTP status."""

    def __init__(self, status: int):
        self.status, self.batches = status, 0

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's names
        import botocore.exceptions

        self.batches += 1
        if self.batches == 2:
            raise botocore.exceptions.ClientError({"Error": {"Code": "X", "Message": "no"},
                                                   "ResponseMetadata": {"HTTPStatusCode": self.status}},
                                                  "SendMessageBatch")
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


@pytest.mark.parametrize("status, error", [(500, TemporaryError), (403, PermanentError)])
def test_a_send_that_fails_partway_says_how_many_were_sent(status, error):
    """An operator who ran --send again, not knowing that some went, started second Jobs."""
    uploads = [reconcile_module.Upload(f"k{n}.csv", ObjectInfo("v", '"e"', 1, datetime.datetime(2026, 1, 1)),
                                       None, None) for n in range(25)]
    with pytest.raises(RatesError) as failed:
        reconcile_module.send(FailingSecondBatch(status), "q", "b", uploads)
    assert type(failed.value) is error  # whether a retry helps, as before
    assert str(failed.value) == ("sending to the uploads queue: X: no; 10 of 25 sent, which load as usual; "
                                 "run reconcile without --send to see what is left")


def test_the_controllers_own_set_aside_messages_are_unchanged_by_the_shared_builder():
    # The controller's dead-letter messages and reconcile's events come from one builder.
    from rates_controller.controller import notification

    body = json.loads(notification(events.UploadedObject("b", "a b+c.csv", "v1", '"e"', 5, "s1"), "ingest-x-1",
                                   "uid-1"))
    assert body == {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "b"}, "object": {"key": "a+b%2Bc.csv", "versionId": "v1", "eTag": '"e"',
                                            "sequencer": "s1"}}}],
        events.SET_ASIDE_BY: "ingest-x-1", events.SET_ASIDE_UID: "uid-1"}


def test_a_listing_longer_than_the_idle_transaction_timeout_does_not_end_the_session(dsn, world, s3,
                                                                                     monkeypatch):
    # RDS ends a session idle in a transaction after 10 minutes (the Terraform's parameter
    # group); listing a year's bucket takes longer than that.
    with world.cursor() as cur:
        cur.execute("SELECT current_database()")
        cur.execute(f'ALTER DATABASE "{cur.fetchone()[0]}" SET idle_in_transaction_session_timeout = \'1s\'')
    s3.put("p.csv", as_csv(ROWS))
    listed = reconcile_module._versions

    def slow_listing(*args):
        time.sleep(1.5)
        yield from listed(*args)

    monkeypatch.setattr(reconcile_module, "_versions", slow_listing)
    assert reconcile(dsn, "--bucket", s3.name, "--prefix", "")[-1].startswith("1 upload(s)")


def test_a_key_no_job_can_load_is_never_sent(dsn, world, s3, queue):
    s3.enable_versioning()
    s3.put("in/bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))
    assert run_job(dsn, s3.name, "in/bad.csv") == 2
    s3.put("in/readme.txt", b"notes")  # refused by its name: it would only be set aside
    *_, summary = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/", "--send", "--include-rejected",
                            "--queue-url", queue.uploads_url)
    assert [obj.key for obj in sent(queue)] == ["in/bad.csv"]
    # --include-rejected was given, and could not send it: the summary does not suggest it.
    assert "1 sent" in summary and "rejected, not sent" not in summary and "--include-rejected" not in summary
    assert "1 never sent: no price file by the name" in summary


def test_a_prefix_with_nothing_under_it_says_so(dsn, world, s3):
    s3.put("prices/p.csv", as_csv(ROWS))
    result = CliRunner().invoke(cli, ["reconcile", "--bucket", s3.name, "--prefix", "Prices/"],
                                env={"DATABASE_URL": dsn})
    assert result.exit_code == 0
    assert "0 upload(s) of the 0 under" in result.output and "S3 holds no object under" in result.output


def test_a_listing_whose_reader_has_gone_still_sends(dsn, world, s3, queue):
    # `ratesctl reconcile --send ... | head`: the sends must not die with the pipe.
    for n in range(3):
        s3.put(f"in/{n}.csv", as_csv(ROWS))
    proc = subprocess.Popen([sys.executable, "-m", "ratesctl.cli", "reconcile", "--bucket", s3.name, "--prefix", "in/",
                             "--send", "--queue-url", queue.uploads_url],
                            env={**os.environ, "DATABASE_URL": dsn}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader gone before the first line
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "3 sent to the uploads queue" in err.decode()
    assert len(sent(queue)) == 3


@pytest.mark.timeout(60)  # botocore's defaults would hold an operator's --send for minutes
def test_a_silent_sts_stops_send_in_seconds(aws_env, tmp_path):
    from tests.support.aws import silent_sts

    with silent_sts(aws_env, tmp_path / "token", "rates-prod-operator") as sts:
        upload = reconcile_module.Upload("prices/a.csv", ObjectInfo(version_id="v1", etag='"e"', size=1,
                                                                    last_modified=None), None, None)
        with pytest.raises(TemporaryError, match="sending to the uploads queue: "):
            reconcile_module.send(reconcile_module.sqs_client(),
                                  "https://sqs.eu-west-1.amazonaws.com/123456789012/uploads", "b", [upload])
        assert len(sts.accepted) == 2  # it did ask STS, and tried once more only


def test_keys_are_listed_with_control_and_format_characters_escaped(dsn, world, s3):
    # An uploader names the key: a right-to-left override would reverse the rest of the
    # operator's line. (moto refuses a newline in a key, which S3 takes.)
    s3.put("in/jan-\u202evsc.2024.csv", as_csv(ROWS))
    s3.put("in/a\tb.csv", as_csv(ROWS))
    s3.put("in/c\\u202ed \U000e0041 é.csv", as_csv(ROWS))  # the escape's own text, a tag character
    s3.put("in/win\\2016.csv", as_csv(ROWS))  # a Windows path: shown as it is, to paste back
    *listed, _ = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/")
    assert sorted(line.split("  ")[0] for line in listed) == [
        f"s3://{s3.name}/in/a\\u0009b.csv", f"s3://{s3.name}/in/c\\\\u202ed \\U000e0041 é.csv",
        f"s3://{s3.name}/in/jan-\\u202evsc.2024.csv", f"s3://{s3.name}/in/win\\2016.csv"]


def test_a_runs_error_that_quotes_the_key_raw_is_listed_escaped(dsn, world, s3):
    # The job's error for an S3 refusal names the object with its key as S3 gave it.
    key = "in/q1-\u202evsc.\u009b2Jprices.csv"  # a right-to-left override and a C1 CSI
    s3.put(key, as_csv(ROWS))
    denied = botocore.exceptions.ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "HeadObject")
    with pytest.raises(TemporaryError) as caught, s3source.mapped_errors(ObjectRef(s3.name, key, None)):
        raise denied
    assert key in str(caught.value)  # or the test would prove nothing
    with world.cursor() as cur:
        cur.execute("INSERT INTO ingest_runs (bucket, key, status, error, etag, finished_at) "
                    "VALUES (%s, %s, 'failed', %s, %s, now())",
                    (s3.name, key, str(caught.value), s3.client.head_object(Bucket=s3.name, Key=key)["ETag"]))
    world.commit()
    [line, _] = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/")
    assert "\u202e" not in line and "\u009b" not in line
    assert "last run failed: S3 error for s3://" in line and "q1-\\u202evsc.\\u009b2Jprices.csv" in line


BAD = as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)])  # rejected: an unknown port


def loaded(conn) -> tuple[list, list]:
    """The keys' current files (key, version), and each loaded price with its key."""
    with conn.cursor() as cur:
        cur.execute("SELECT key, version FROM ingest_files WHERE replaced_at IS NULL ORDER BY key")
        files = cur.fetchall()
        cur.execute("""SELECT f.key, p.orig_code, p.dest_code, p.day::text, p.price FROM prices p
                       JOIN ingest_files f ON f.id = p.source_id ORDER BY 1, 2, 3, 4, 5""")
        return files, cur.fetchall()


def test_loading_everything_again_keeps_the_older_file_of_a_key_whose_newest_upload_was_rejected(dsn, world, s3,
                                                                                                queue):
    # The runbook's "Loading everything again". A rejected upload does not replace its key's
    # file, so in/kept.csv kept its first version; the latest alone would be rejected again
    # after the reload, and the first version's prices would be gone for good.
    from tests.runbook.test_runbook import psql

    s3.enable_versioning()
    kept = s3.put("in/kept.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "in/kept.csv") == 0
    rejected = s3.put("in/kept.csv", BAD)["VersionId"]
    assert run_job(dsn, s3.name, "in/kept.csv") == 2
    first = s3.put("in/replaced.csv", as_csv(ROWS[:1]))["VersionId"]
    assert run_job(dsn, s3.name, "in/replaced.csv") == 0
    newest = s3.put("in/replaced.csv", as_csv(V2_ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "in/replaced.csv") == 0
    before = loaded(world)
    assert before[0] == [("in/kept.csv", kept), ("in/replaced.csv", newest)]
    newest_first = [rejected, kept, newest, first]

    for order in (1, -1):  # the Jobs run in either order: the newest first, or the oldest
        psql(dsn, "reload_all.sql")
        assert loaded(world) == ([], [])
        *listed, summary = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/", "--send", "--queue-url",
                                     queue.uploads_url)
        again = sent(queue)
        for obj in sorted(again, key=lambda obj: (obj.key, order * newest_first.index(obj.version_id))):
            assert run_job(dsn, obj.bucket, obj.key, obj.version_id) == (2 if obj.version_id == rejected else 0)
        assert loaded(world) == before, order
        assert sorted((obj.key, obj.version_id) for obj in again) == sorted(
            [("in/kept.csv", rejected), ("in/kept.csv", kept), ("in/replaced.csv", newest), ("in/replaced.csv", first)])
        # Listed as sent: each key's latest, then its earlier versions, newest first.
        assert [line.split("  ")[1] for line in listed] == newest_first
        assert listed[1].endswith("older version, newer than the key's file, sent in case the newer does not load")
        assert summary.startswith("4 upload(s) of the 2 under") and "(2 of them earlier versions" in summary
        # The runbook's last check: nothing but the rejected file, now beside a loaded one.
        [left] = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/")[:-1]
        assert left.startswith(f"s3://{s3.name}/in/kept.csv  {rejected}  rejected: 1 invalid row(s)"), left


def test_earlier_versions_are_listed_only_for_a_key_with_no_file_and_never_behind_a_delete_marker(dsn, world, s3,
                                                                                                   queue):
    s3.enable_versioning()
    for rows in (ROWS, ROWS[:1]):
        s3.put("in/loaded.csv", as_csv(rows))
        assert run_job(dsn, s3.name, "in/loaded.csv") == 0
    pending = s3.put("in/loaded.csv", as_csv(V2_ROWS))["VersionId"]  # its event lost: only it is sent
    s3.put("in/deleted.csv", as_csv(ROWS))
    s3.client.delete_object(Bucket=s3.name, Key="in/deleted.csv")  # nothing of it: a delete marker is its latest
    lost = [s3.put("in/lost.csv", as_csv(rows))["VersionId"] for rows in (ROWS, V2_ROWS)]  # no event came
    bad = []
    for _ in range(2):
        bad.append(s3.put("in/bad.csv", BAD)["VersionId"])
        assert run_job(dsn, s3.name, "in/bad.csv") == 2
    s3.put("in/notes.txt", b"a")  # refused by its name, every version alike: listed once
    s3.put("in/notes.txt", b"b")

    found, examined = reconcile_module.missing(s3.client, world, s3.name, "in/")
    assert [(u.key, u.info.version_id) for u in found] == [
        ("in/bad.csv", bad[1]), ("in/bad.csv", bad[0]), ("in/loaded.csv", pending), ("in/lost.csv", lost[1]),
        ("in/lost.csv", lost[0]), ("in/notes.txt", found[-1].info.version_id)]
    assert [u.older for u in found] == [False, True, False, False, True, False] and examined == 4

    class PagesOfOne:
        """S3's listing one entry a page: a key's versions and delete markers on pages of their own."""

        def get_paginator(self, name):
            paginator = s3.client.get_paginator(name)
            return type("P", (), {"paginate": lambda _, **kw: paginator.paginate(**kw, PaginationConfig={
                "PageSize": 1})})()

    assert reconcile_module.missing(PagesOfOne(), world, s3.name, "in/") == (found, examined)

    *listed, summary = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/", "--send", "--queue-url",
                                 queue.uploads_url)
    assert "rejected (an older version, newer than the key's file): 1 invalid row(s)" in listed[1]
    assert sorted((obj.key, obj.version_id) for obj in sent(queue)) == sorted(
        [("in/loaded.csv", pending), ("in/lost.csv", lost[1]), ("in/lost.csv", lost[0])])
    assert "3 sent" in summary and "2 rejected, not sent" in summary and "1 never sent" in summary
    reconcile(dsn, "--bucket", s3.name, "--prefix", "in/", "--send", "--include-rejected", "--queue-url",
              queue.uploads_url)
    assert [obj.version_id for obj in sent(queue) if obj.key == "in/bad.csv"] == bad[::-1]


def test_a_version_between_the_keys_file_and_a_rejected_latest_is_sent(dsn, world, s3, queue):
    # A lost event (or a restore to before it loaded): the key's file is its first version,
    # its second never ran, and its third was rejected. Listed alone, the rejected latest
    # was held back, the second never showed, and the key kept the first's older prices
    # with the runbook's last check passing (last-commits review).
    s3.enable_versioning()
    first = s3.put("in/k.csv", as_csv(ROWS[:1]))["VersionId"]
    assert run_job(dsn, s3.name, "in/k.csv") == 0
    middle = s3.put("in/k.csv", as_csv(V2_ROWS))["VersionId"]  # its event lost
    rejected = s3.put("in/k.csv", BAD)["VersionId"]
    assert run_job(dsn, s3.name, "in/k.csv") == 2
    assert loaded(world)[0] == [("in/k.csv", first)]

    *listed, summary = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/", "--send", "--queue-url",
                                 queue.uploads_url)
    assert [line.split("  ")[1] for line in listed] == [rejected, middle]  # not the key's file, nor older
    assert [(obj.key, obj.version_id) for obj in sent(queue)] == [("in/k.csv", middle)]
    assert run_job(dsn, s3.name, "in/k.csv", middle) == 0

    assert loaded(world)[0] == [("in/k.csv", middle)]
    [left] = reconcile(dsn, "--bucket", s3.name, "--prefix", "in/")[:-1]
    assert left.startswith(f"s3://{s3.name}/in/k.csv  {rejected}  rejected: "), left


def test_a_rebuild_loads_no_version_behind_a_delete_marker_so_a_deleted_withdrawn_file_stays_out(dsn, world, s3,
                                                                                                  queue):
    # The README: withdraw a file, then delete its object, or a rebuild loads it again. An
    # upload to the key since, rejected, leaves the withdrawn file the key's: its earlier
    # versions sent after the reload would bring the withdrawn prices back.
    from tests.runbook.test_runbook import psql

    s3.enable_versioning()
    withdrawn = s3.put("in/withdrawn.csv", as_csv(ROWS))["VersionId"]
    assert run_job(dsn, s3.name, "in/withdrawn.csv") == 0
    result = CliRunner().invoke(cli, ["withdraw", "--bucket", s3.name, "--key", "in/withdrawn.csv", "--version",
                                      withdrawn, "--reason", "wrong month"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 0, result.output
    s3.client.delete_object(Bucket=s3.name, Key="in/withdrawn.csv")
    # A key deleted, then uploaded to again: the versions since the delete marker count.
    s3.put("in/again.csv", as_csv(V2_ROWS))
    assert run_job(dsn, s3.name, "in/again.csv") == 0
    s3.client.delete_object(Bucket=s3.name, Key="in/again.csv")
    time.sleep(1.1)  # S3's times are to the second: a version of the delete's second counts as behind it
    s3.put("in/withdrawn.csv", BAD)
    assert run_job(dsn, s3.name, "in/withdrawn.csv") == 2
    kept = s3.put("in/again.csv", as_csv(ROWS[:2]))["VersionId"]
    assert run_job(dsn, s3.name, "in/again.csv") == 0
    s3.put("in/again.csv", BAD)
    assert run_job(dsn, s3.name, "in/again.csv") == 2
    _, prices_before = loaded(world)
    assert {key for key, *_ in prices_before} == {"in/again.csv"}

    psql(dsn, "reload_all.sql")
    reconcile(dsn, "--bucket", s3.name, "--prefix", "in/", "--send", "--queue-url", queue.uploads_url)
    again = sent(queue)
    assert sorted((obj.key, obj.version_id == kept) for obj in again) == [
        ("in/again.csv", False), ("in/again.csv", True), ("in/withdrawn.csv", False)]
    for obj in again:
        run_job(dsn, obj.bucket, obj.key, obj.version_id)
    assert loaded(world) == ([("in/again.csv", kept)], prices_before)
