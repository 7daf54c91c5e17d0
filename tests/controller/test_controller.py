"""The controller against moto's SQS (fed by real S3 notifications) and the real API server.

No node runs here, so the Jobs stay active: these tests are about what the controller
creates and what it does with messages. test_job_outcomes.py runs the Jobs.
"""

import json

import pytest
import structlog
from click.testing import CliRunner
from kubernetes import client
from structlog.testing import capture_logs

from rates_controller import controller as controller_module
from rates_controller import jobs
from rates_core.errors import TemporaryError
from ratesctl.cli import cli
from tests.controller.conftest import creates_refused, env_of, job_quota, sample, set_aside_reasons
from tests.support.aws import unique_name
from tests.support.poll import wait_for
from tests.ingest.conftest import ROWS, as_csv
from tests.support.uploads import IMAGE, ingest_jobs

pytestmark = pytest.mark.kube


def test_an_upload_gets_one_job_and_its_message_is_deleted(kube, namespace, uploads, sqs, make_controller):
    controller = make_controller()
    uploads.put("2016/jan prices+1 å.csv", b"orig_code,dest_code,day,price\n")

    controller.step()

    [job] = ingest_jobs(kube, namespace)
    assert env_of(job) | {"S3_BUCKET": uploads.name, "S3_OBJECT_KEY": "2016/jan prices+1 å.csv"} == env_of(job)
    [secret_env] = [e for e in job.spec.template.spec.containers[0].env if e.name == "DATABASE_URL"]
    assert (secret_env.value_from.secret_key_ref.name, secret_env.value_from.secret_key_ref.key) == (
        "rates-database", "url")
    assert job.metadata.annotations[jobs.KEY] == "2016/jan prices+1 å.csv"
    assert job.spec.template.spec.containers[0].image == IMAGE
    assert [r.action for r in job.spec.pod_failure_policy.rules] == ["FailJob", "Ignore"]
    assert sqs.counts() == (0, 0)
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="jobs_created") == 1
    assert sample(controller.metrics, "rates_controller_jobs_created_total", attempt="first") == 1
    assert job.spec.ttl_seconds_after_finished is None  # set once the controller has acted on its end


def test_a_message_delivered_twice_makes_one_job(kube, namespace, uploads, sqs, make_controller):
    uploads.put("p.csv", b"x")
    [delivery] = sqs.client.receive_message(QueueUrl=sqs.uploads_url)["Messages"]
    sqs.send(delivery["Body"])  # SQS delivers at least once: the same event again
    sqs.client.change_message_visibility(QueueUrl=sqs.uploads_url, ReceiptHandle=delivery["ReceiptHandle"],
                                         VisibilityTimeout=0)

    make_controller().step()
    make_controller().step()  # a second controller (or a restart) sees nothing new either

    assert len(ingest_jobs(kube, namespace)) == 1
    assert sqs.counts() == (0, 0)


def test_a_duplicate_delivery_is_counted_as_one(kube, namespace, sqs, make_controller):
    event = json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "b"}, "object": {"key": "p.csv", "eTag": "e", "sequencer": "01"}}}]})
    sqs.send(event)
    sqs.send(event)
    controller = make_controller()

    controller.step()

    assert len(ingest_jobs(kube, namespace)) == 1
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="jobs_created") == 1
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="duplicate") == 1


def test_the_same_content_uploaded_again_is_loaded_again(kube, namespace, uploads, make_controller):
    # A, then B, then A again in an unversioned bucket: the third upload has A's ETag, but
    # it is a new upload the database must get (the key's rows are B's until then).
    for body in (b"A", b"B", b"A"):
        uploads.put("p.csv", body)

    make_controller().step()

    assert len(ingest_jobs(kube, namespace)) == 3


def test_each_version_of_a_key_gets_its_own_job(kube, namespace, uploads, make_controller):
    uploads.enable_versioning()
    etags = [uploads.put("p.csv", body)["ETag"].strip('"') for body in (b"one", b"two")]

    make_controller().step()

    # moto's events carry no versionId (AWS's do, below); the ETag tells the versions apart.
    assert sorted(j.metadata.annotations[jobs.ETAG] for j in ingest_jobs(kube, namespace)) == sorted(etags)


def test_the_events_version_id_is_the_version_the_job_loads(kube, namespace, sqs, make_controller):
    for version in ("v1", "v2"):
        sqs.send(json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": "b"}, "object": {"key": "p.csv", "eTag": "same", "versionId": version}}}]}))

    make_controller().step()

    assert sorted(env_of(j)["S3_VERSION_ID"] for j in ingest_jobs(kube, namespace)) == ["v1", "v2"]


def test_who_uploaded_the_file_is_on_its_job_and_in_the_jobs_environment(kube, namespace, sqs, make_controller):
    # As AWS writes it (moto's events name nobody): an IAM role's session, here one whose
    # name looks like a variable reference, which must reach the job as written.
    uploader = "AWS:AROAEXAMPLEID123456:jane$(S3_BUCKET)"
    sqs.send(json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
        "eventTime": "2026-11-29T04:00:00.123Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": uploader}, "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
               "object": {"key": "p.csv", "size": 5, "eTag": "e", "versionId": "v1", "sequencer": "01"}}}]}))
    sqs.send(json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "b"}, "object": {"key": "q.csv", "eTag": "e", "sequencer": "02"}}}]}))

    make_controller().step()

    by_key = {j.metadata.annotations[jobs.KEY]: j for j in ingest_jobs(kube, namespace)}
    assert by_key["p.csv"].metadata.annotations[jobs.UPLOADED_BY] == uploader
    assert env_of(by_key["p.csv"])["S3_UPLOADED_BY"] == uploader.replace("$", "$$")  # the kubelet reads one $
    # A message that names nobody (ratesctl reconcile's): neither.
    assert jobs.UPLOADED_BY not in by_key["q.csv"].metadata.annotations
    assert "S3_UPLOADED_BY" not in env_of(by_key["q.csv"])


def test_a_poison_message_is_set_aside_with_its_reason_and_blocks_nothing(kube, namespace, uploads, sqs,
                                                                          make_controller):
    sqs.send("this is not an S3 event")
    uploads.put("after.csv", b"x")
    controller = make_controller()

    controller.step()

    [dead] = sqs.dead_letters()
    assert dead["body"] == "this is not an S3 event"
    assert "not JSON" in dead["reason"]
    assert [j.metadata.annotations[jobs.KEY] for j in ingest_jobs(kube, namespace)] == ["after.csv"]
    assert sqs.counts() == (0, 0)
    assert set_aside_reasons(controller.metrics) == {"poison": 1}


@pytest.mark.parametrize("etag, reason", [
    ("\ud800", "an ObjectCreated record's s3.object.eTag is not valid UTF-8"),
    ("a\x00b", "an ObjectCreated record's s3.object.eTag holds a NUL character"),
])
def test_an_event_whose_etag_no_job_can_hold_is_set_aside_as_poison(kube, namespace, sqs, make_controller,
                                                                     etag, reason):
    # The ETag is hashed into the Job's name and written in its annotations: a lone
    # surrogate (a \ud800 escape in the JSON) failed the hash, and the message was set
    # aside as the controller's own failure, with a traceback.
    sqs.send(json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "b"}, "object": {"key": "p.csv", "eTag": etag}}}]}))
    controller = make_controller()

    controller.step()

    [dead] = sqs.dead_letters()
    assert dead["reason"] == reason
    assert set_aside_reasons(controller.metrics) == {"poison": 1}
    assert ingest_jobs(kube, namespace) == [] and sqs.counts() == (0, 0)


def test_an_upload_from_elsewhere_than_its_bucket_and_prefix_is_set_aside_as_poison(
        kube, namespace, s3, uploads, sqs, make_controller):
    # The queue takes any sender its policy allows; the Jobs' role reads only the prices
    # prefix of its bucket, so such a Job could only fail, three times, before a set-aside.
    uploads.put("prices/jan.csv", b"x")
    uploads.put("elsewhere/feb.csv", b"x")
    controller = make_controller(uploads_bucket=s3.name, uploads_prefix="prices/")
    for _ in range(3):  # the first pass also takes S3's test event
        controller.step()
    assert [j.metadata.annotations[jobs.KEY] for j in ingest_jobs(kube, namespace)] == ["prices/jan.csv"]
    [dead] = sqs.dead_letters()
    assert dead["reason"] == (f"an upload to s3://{s3.name}/elsewhere/feb.csv, outside this controller's "
                              "prefix prices/")

    uploads.put("prices/mar.csv", b"x")
    other = make_controller(uploads_bucket="another-bucket")
    for _ in range(3):
        other.step()
    assert len(ingest_jobs(kube, namespace)) == 1
    [dead] = sqs.dead_letters()  # the one before has been taken
    assert dead["reason"] == f"an upload to s3://{s3.name}/prices/mar.csv, not to this controller's bucket another-bucket"
    assert set_aside_reasons(other.metrics) == {"poison": 1} and sqs.counts() == (0, 0)


def test_a_message_the_controller_fails_on_is_set_aside_and_the_loop_goes_on(kube, namespace, uploads, sqs,
                                                                               make_controller, monkeypatch):
    from rates_controller import events

    parse = events.announcement

    def fails_on_one(body):  # stands for a bug that only one odd message meets
        if "odd.csv" in body:
            raise ValueError("a bug")
        return parse(body)

    monkeypatch.setattr(events, "announcement", fails_on_one)
    uploads.put("odd.csv", b"x")
    uploads.put("fine.csv", b"x")
    controller = make_controller()

    controller.step()

    [dead] = sqs.dead_letters()
    assert "odd.csv" in dead["body"] and "the controller failed on this message" in dead["reason"]
    assert set_aside_reasons(controller.metrics) == {"unexpected": 1}
    assert [j.metadata.annotations[jobs.KEY] for j in ingest_jobs(kube, namespace)] == ["fine.csv"]
    assert sqs.counts() == (0, 0)


def test_test_events_and_removals_are_deleted_without_a_job_and_the_log_says_why(kube, namespace, sqs,
                                                                               make_controller):
    sqs.send(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}))
    sqs.send(json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
                                      "s3": {"bucket": {"name": "b"}, "object": {"key": "gone.csv"}}}]}))
    sqs.send(json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                      "s3": {"bucket": {"name": "b"}, "object": {"key": "2016/", "size": 0}}}]}))
    wait_for(lambda: sqs.counts() == (3, 0), timeout=10, interval=0.2, what="the three messages")

    with capture_logs() as logged:
        make_controller().step()

    assert ingest_jobs(kube, namespace) == []
    assert sqs.counts() == (0, 0)
    # An operator looking for an upload's Job finds why there is none, as the metric counts it.
    said = sorted(({k: v for k, v in line.items() if k not in ("event", "log_level")}
                   for line in logged if line["event"] == "message handled"), key=str)
    assert said == sorted([
        {"objects": 0, "jobs_created": 0, "outcome": "ignored", "test_event": True},
        {"objects": 0, "jobs_created": 0, "outcome": "ignored", "skipped": ["ObjectRemoved:Delete"]},
        {"objects": 0, "jobs_created": 0, "outcome": "ignored", "skipped": ["ObjectCreated:Put (a folder)"]},
    ], key=str)


def test_no_message_is_taken_while_max_active_jobs_run(kube, namespace, uploads, sqs, make_controller):
    controller = make_controller(max_active_jobs=2)
    for name in ("a.csv", "b.csv", "c.csv"):
        uploads.put(name, b"x")

    for _ in range(3):  # the first pass also takes S3's test event
        controller.step()

    assert len(ingest_jobs(kube, namespace)) == 2
    assert sqs.counts() == (1, 0)  # the third waits in the queue, not in flight
    assert sample(controller.metrics, "rates_controller_active_jobs") == 2

    kube.batch.delete_namespaced_job(ingest_jobs(kube, namespace)[0].metadata.name, namespace,
                                     propagation_policy="Background")
    wait_for(lambda: len(ingest_jobs(kube, namespace)) == 1, timeout=10, what="the Job to be deleted")
    controller.step()

    assert len(ingest_jobs(kube, namespace)) == 2
    assert sqs.counts() == (0, 0)


def test_a_job_that_cannot_be_created_waits_and_is_created_later(kube, namespace, uploads, sqs,
                                                                 make_controller, monkeypatch):
    # Long enough that the message is still hidden when counted, on a slow machine too.
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (3, 3))
    missing = unique_name("not-yet")
    controller = make_controller(job_namespace=missing)
    uploads.put("p.csv", b"x")

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logged:
        controller.step()  # the namespace does not exist: 404 is not the file's fault

    assert sqs.counts() == (0, 1)  # hidden for the backoff, not deleted
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="retry_later") == 1
    # What RatesControllerErrors reads: a failing first create is a failing call too.
    assert sample(controller.metrics, "rates_controller_errors_total", operation="create_job") == 1
    # The line says which upload waits, so a search by key finds it.
    [retried] = [line for line in logged if line["event"] == "message will be retried"]
    assert retried["keys"] == [f"s3://{uploads.name}/p.csv"] and retried["message_id"]
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=missing)))
    try:
        wait_visible(sqs)
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logged:
            controller.step()
        assert len(ingest_jobs(kube, missing)) == 1
        assert sqs.counts() == (0, 0)
        # The Job's line names the notification it came from.
        [created] = [line for line in logged if line["event"] == "job created"]
        assert created["message_id"] == retried["message_id"] and created["key"] == "p.csv"
    finally:
        kube.core.delete_namespace(missing)


def test_a_message_whose_job_never_can_be_created_is_set_aside(uploads, sqs, make_controller, monkeypatch):
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    controller = make_controller(job_namespace=unique_name("never"), max_receives=2)
    uploads.put("p.csv", b"x")

    controller.step()
    wait_visible(sqs)
    controller.step()

    [dead] = sqs.dead_letters()
    assert "no Job could be created in 2 deliveries" in dead["reason"] and "404" in dead["reason"]
    assert set_aside_reasons(controller.metrics) == {"undeliverable": 1}
    assert json.loads(dead["body"])["Records"][0]["s3"]["object"]["key"] == "p.csv"
    assert sqs.counts() == (0, 0)


def test_once_a_create_fails_the_rest_of_the_batch_waits_its_backoff_untried(kube, uploads, sqs,
                                                                             make_controller, monkeypatch):
    # Against a hung API server each try takes the read timeout: ten of them would
    # outlast the batch's visibility timeout, and the backoff of the messages with it.
    # Long enough that the message is still hidden when counted, on a slow machine too.
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (3, 3))
    missing = unique_name("not-yet")
    controller = make_controller(job_namespace=missing)
    creates = []
    real_create = controller.kube.create
    controller.kube.create = lambda manifest: creates.append(manifest) or real_create(manifest)
    for key in ("a.csv", "b.csv", "c.csv"):
        uploads.put(key, b"x")
    # And S3's test event, sent when the bucket's notifications were set: nothing to create.
    wait_for(lambda: sqs.counts() == (4, 0), timeout=10, what="the four notifications")

    controller.step()

    assert len(creates) == 1
    assert sqs.counts() == (0, 3)  # each hidden for its backoff
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="retry_later") == 3
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=missing)))
    try:
        wait_for(lambda: sqs.counts() == (3, 0), timeout=10, what="the messages to be visible again")
        controller.step()
        assert len(ingest_jobs(kube, missing)) == 3 and sqs.counts() == (0, 0)
    finally:
        kube.core.delete_namespace(missing)


def b_behind_a_refused(controller, uploads, sqs) -> None:
    """a.csv and b.csv uploaded in that order, and ``controller``'s Job creates for a.csv
    failing, as a webhook refusing it would."""
    real_create = controller.kube.create

    def create(manifest):
        if manifest["metadata"]["annotations"][jobs.KEY] == "a.csv":
            raise TemporaryError("a webhook refused it")
        return real_create(manifest)

    controller.kube.create = create
    uploads.put("a.csv", b"x")
    uploads.put("b.csv", b"x")
    wait_for(lambda: sqs.counts() == (3, 0), timeout=10, what="the notifications and S3's test event")


def only_b_loaded_and_a_set_aside(kube, namespace, sqs) -> None:
    assert [job.metadata.annotations[jobs.KEY] for job in ingest_jobs(kube, namespace)] == ["b.csv"]
    [dead] = sqs.dead_letters()
    assert "a webhook refused it" in dead["reason"] and "a.csv" in dead["body"]
    assert sqs.counts() == (0, 0)


def test_a_message_on_its_last_delivery_is_tried_whatever_failed_before_it(kube, namespace, uploads, sqs,
                                                                           make_controller, monkeypatch):
    # One file's Job cannot be created: the other file, which arrived with it and so comes
    # back with it, must not be set aside untried.
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    # Long enough for a create and the read that checks it (2 x 20 s) begun after a.csv's.
    controller = make_controller(max_receives=2, visibility_timeout=60)
    b_behind_a_refused(controller, uploads, sqs)
    controller.step()
    assert ingest_jobs(kube, namespace) == []  # b.csv came after a.csv in the batch: not tried
    wait_for(lambda: sqs.counts() == (2, 0), timeout=10, what="the messages to be visible again")

    controller.step()

    only_b_loaded_and_a_set_aside(kube, namespace, sqs)


# Shorter than a create and the read that checks it may take (2 x 20 s): 30 s would fit
# the create alone.
@pytest.mark.parametrize("visibility_timeout", [10, 30])
def test_a_last_delivery_too_late_in_its_batch_to_try_is_sent_back_not_set_aside(kube, namespace, uploads, sqs,
                                                                                 make_controller, monkeypatch,
                                                                                 visibility_timeout):
    # With a visibility timeout shorter than one create may take, no create begun after a
    # failed one could end in time: b.csv is sent back, and tried once a.csv is gone.
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    controller = make_controller(max_receives=2, visibility_timeout=visibility_timeout)
    b_behind_a_refused(controller, uploads, sqs)
    for _ in range(2):
        controller.step()
        wait_for(lambda: sqs.counts()[1] == 0, timeout=15, what="the messages to be visible again")
    assert ingest_jobs(kube, namespace) == [] and sqs.counts() == (1, 0)  # a.csv set aside, b.csv back

    controller.step()

    only_b_loaded_and_a_set_aside(kube, namespace, sqs)


def test_a_message_held_with_the_longest_visibility_timeout_stays_held(kube, namespace, uploads, sqs,
                                                                       make_controller, monkeypatch):
    # SQS hides a message 12 h after its receive at most, and refuses a longer extension:
    # the refusal dropped the message from the held ones, to wait out the 12 hours after
    # the quota had room again.
    monkeypatch.setattr(controller_module, "QUOTA_RECHECK_SECONDS", 0)
    job_quota(kube, namespace, 0)
    controller = make_controller(visibility_timeout=43200)
    uploads.put("a.csv", b"x")
    wait_for(lambda: sqs.counts() == (2, 0), timeout=10, interval=0.2, what="the notification and S3's test event")

    controller.step()
    controller.step()
    assert sample(controller.metrics, "rates_controller_messages_held") == 1
    job_quota(kube, namespace, 5)
    controller.step()

    assert len(ingest_jobs(kube, namespace)) == 1 and sqs.counts() == (0, 0) and sqs.dead_letters() == []


def test_a_message_held_for_sqs_longest_is_let_go_and_held_again(kube, namespace, uploads, sqs,
                                                                 make_controller, monkeypatch):
    # 12 hours of a full quota, here 3 s: the message is let go before SQS would refuse to
    # hide it longer, comes back, and is held again, not set aside.
    monkeypatch.setattr(controller_module, "QUOTA_RECHECK_SECONDS", 0)
    monkeypatch.setattr(controller_module, "MAX_HIDDEN_S", controller_module.HIDDEN_MARGIN_S + 3)
    job_quota(kube, namespace, 0)
    controller = make_controller(max_receives=1, visibility_timeout=10)
    uploads.put("a.csv", b"x")
    wait_for(lambda: sqs.counts() == (2, 0), timeout=10, interval=0.2, what="the notification and S3's test event")

    with capture_logs() as logged:
        controller.step()
        assert sqs.counts() == (0, 1) and sample(controller.metrics, "rates_controller_messages_held") == 1
        wait_for(lambda: controller.step() or sqs.counts() == (1, 0), timeout=20, interval=0.5,
                 what="the message to come back after 3 s, not the visibility timeout's 10")
        controller.step()
    assert [line for line in logged if line["event"].startswith("held message let go")]
    assert sqs.counts() == (0, 1) and sample(controller.metrics, "rates_controller_messages_held") == 1
    assert sqs.dead_letters() == []
    job_quota(kube, namespace, 5)
    controller.step()

    assert len(ingest_jobs(kube, namespace)) == 1 and sqs.counts() == (0, 0) and sqs.dead_letters() == []


def test_a_message_held_back_is_not_set_aside_when_sqs_fails_to_hide_it(kube, namespace, uploads, sqs,
                                                                         make_controller, monkeypatch):
    # Every delivery is the last (max_receives=1), and too late to try after a.csv's failed
    # create: b.csv is only to be hidden for its backoff. SQS failing that must leave it to
    # come back, not set it aside.
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    controller = make_controller(max_receives=1, visibility_timeout=10)

    def sqs_down(message, seconds):
        raise TemporaryError("SQS change visibility: ServiceUnavailable")

    controller.uploads.retry_later = sqs_down
    b_behind_a_refused(controller, uploads, sqs)
    controller.step()
    wait_for(lambda: sqs.counts() == (1, 0), timeout=20, what="b.csv's message to come back")

    controller.step()

    only_b_loaded_and_a_set_aside(kube, namespace, sqs)


@pytest.mark.parametrize("webhook", [False, True], ids=["policy", "webhook"])
def test_a_job_an_admission_policy_refuses_waits_and_is_created_later(kube, namespace, uploads, sqs,
                                                                     make_controller, monkeypatch, webhook):
    # As in a rollout: the new release's Job policy refuses what the old pod still makes.
    # A webhook's refusal (Kyverno's, say) comes as a 400 like an invalid Job's.
    # Long enough that the message is still hidden when counted, on a slow machine too.
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (3, 3))
    controller = make_controller()

    with creates_refused(kube, namespace, controller, "not now", webhook=webhook):
        uploads.put("p.csv", b"x")
        controller.step()
        assert sqs.counts() == (0, 1)  # hidden for the backoff, not set aside
        assert sample(controller.metrics, "rates_controller_messages_total", outcome="retry_later") == 1
    wait_visible(sqs)
    controller.step()
    assert len(ingest_jobs(kube, namespace)) == 1 and sqs.counts() == (0, 0)
    assert sqs.dead_letters() == []


def test_a_job_the_api_server_refuses_is_set_aside(uploads, sqs, make_controller):
    # An invalid Job cannot be fixed by retrying: a memory limit below its request (422),
    # a quantity the API server cannot even decode (400).
    controller = make_controller(job_memory_request="512Mi", job_memory_limit="64Mi")
    uploads.put("p.csv", b"x")
    controller.step()
    [dead] = sqs.dead_letters()
    assert "422" in dead["reason"] and "must be less than or equal to memory limit" in dead["reason"]
    assert set_aside_reasons(controller.metrics) == {"rejected": 1}

    uploads.put("q.csv", b"x")
    make_controller(job_cpu_request="lots").step()
    [dead] = sqs.dead_letters()
    assert "400" in dead["reason"] and "quantities must match" in dead["reason"]
    assert sqs.counts() == (0, 0)


def test_more_active_jobs_than_one_receive_takes_still_receives(kube, namespace, uploads, make_controller):
    # SQS takes at most 10 messages a receive, and refuses a receive that asks for more.
    controller = make_controller(max_active_jobs=11)
    uploads.put("p.csv", b"x")
    for _ in range(2):  # the first pass may take S3's test event alone
        controller.step()
    assert len(ingest_jobs(kube, namespace)) == 1


def wait_visible(sqs):
    wait_for(lambda: sqs.counts()[0] == 1, timeout=10, interval=0.2, what="the message to be visible again")


def test_the_controller_starts_a_job_for_a_sent_upload_whose_first_job_is_still_kept(
        dsn, world, kube, namespace, uploads, sqs, make_controller):
    # The first event's Job is kept (once ended, for the TTL: a week in prod) when the
    # database loses the file (a restore to an earlier time). The same event sent again is
    # a duplicate delivery, which changes nothing while that Job is kept; reconcile's is not.
    controller = make_controller()
    uploads.put("p.csv", as_csv(ROWS))
    controller.step()
    controller.step()  # the first pass may take S3's test event alone
    assert len(ingest_jobs(kube, namespace)) == 1

    for _ in range(2):  # and each reconcile's anew, as the first Job it made is kept too
        sent = CliRunner().invoke(cli, ["reconcile", "--bucket", uploads.name, "--prefix", "", "--send",
                                        "--queue-url", sqs.uploads_url], env={"DATABASE_URL": dsn})
        assert sent.exit_code == 0 and "1 sent" in sent.output, sent.output
        controller.step()

    assert len({job.metadata.name for job in ingest_jobs(kube, namespace)}) == 3
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="duplicate") == 0


def test_messages_whose_jobs_a_full_quota_refuses_are_held_not_received_again(kube, namespace, uploads, sqs,
                                                                              make_controller, monkeypatch):
    # A backfill fills dev's Job quota for hours (Jobs go at their TTL): sent back, every
    # waiting file would be received again and again, and set aside for it.
    monkeypatch.setattr(controller_module, "QUOTA_RECHECK_SECONDS", 0)
    job_quota(kube, namespace, 0)
    controller = make_controller(max_receives=2)
    receives = []
    receive = controller.uploads.receive
    monkeypatch.setattr(controller.uploads, "receive", lambda *a: receives.append(1) or receive(*a))
    uploads.put("a.csv", b"x")
    uploads.put("b.csv", b"x")
    wait_for(lambda: sqs.counts() == (3, 0), timeout=10, interval=0.2, what="the notifications and S3's test event")

    for _ in range(4):  # more passes than max_receives: nothing is set aside
        controller.step()
    assert len(receives) == 1  # both came in one receive, and were never received again
    assert sqs.counts() == (0, 2) and sqs.dead_letters() == [] and ingest_jobs(kube, namespace) == []
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="held") == 2
    assert sample(controller.metrics, "rates_controller_slots_in_use") == 0
    assert sample(controller.metrics, "rates_controller_messages_held") == 2  # RatesControllerQuotaFull's

    job_quota(kube, namespace, 5)  # as when Jobs reach their TTL
    controller.step()
    assert len(ingest_jobs(kube, namespace)) == 2 and sqs.counts() == (0, 0) and sqs.dead_letters() == []
    assert sample(controller.metrics, "rates_controller_slots_in_use") == 2  # counted once created
    assert sample(controller.metrics, "rates_controller_messages_held") == 0
