"""What the controller does when its Jobs end: the Jobs' pods run on the test's local node
(the real ingest job, against a real database and moto's S3), and the real Job controller
turns their exit codes into Complete or Failed."""

import datetime
import json
import time

import pytest
from kubernetes.client.rest import ApiException
from structlog.testing import capture_logs

from rates_controller import controller as controller_module
from rates_controller import events, jobs
from tests.controller.conftest import creates_refused, job_quota, sample, set_aside_reasons
from tests.ingest.conftest import ROWS, as_csv, prices, runs
from tests.support.poll import wait_for
from tests.support.kube import admission_refusal
from tests.support.uploads import ingest_jobs

pytestmark = pytest.mark.kube


def step_until(controller, predicate, timeout=90, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        controller.step()
    return predicate()


def handled(kube, namespace) -> dict[str, str]:
    """{job name: what the controller did} for the Jobs it has acted on."""
    return {j.metadata.name: j.metadata.labels[jobs.HANDLED] for j in ingest_jobs(kube, namespace)
            if jobs.HANDLED in (j.metadata.labels or {})}


def test_a_loaded_file_ends_its_job(dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime,
                                    local_node):
    conn = world
    job_runtime(dsn)
    controller = make_controller()
    uploads.put("2016/jan.csv", as_csv(ROWS))

    step_until(controller, lambda: handled(kube, namespace), what="the Job to end")

    assert list(handled(kube, namespace).values()) == ["succeeded"], local_node.errors
    # From now on: Kubernetes counts it from the Job's end, a moment ago.
    assert 86400 <= ingest_jobs(kube, namespace)[0].spec.ttl_seconds_after_finished <= 86400 + 60
    assert len(prices(conn)) == len(ROWS)
    assert sample(controller.metrics, "rates_controller_jobs_finished_total", result="succeeded") == 1
    assert sqs.dead_letters() == []


def test_a_job_acted_on_hours_after_it_ended_is_kept_for_the_ttl_from_then(
        dsn, world, kube, namespace, uploads, make_controller, job_runtime, local_node, monkeypatch):
    # ttlSecondsAfterFinished counts from the Job's end: as JOB_TTL_SECONDS alone, a Job
    # acted on later than that (a retry not yet due, the controller down) was deleted, with
    # its pods and logs, the moment it was labelled.
    job_runtime(dsn)
    controller = make_controller(job_ttl_seconds=600)
    uploads.put("p.csv", as_csv(ROWS))
    real_now = controller_module._now
    monkeypatch.setattr(controller_module, "_now", lambda: real_now() + datetime.timedelta(hours=2))

    step_until(controller, lambda: handled(kube, namespace), what="the Job to end")

    assert 7200 + 600 <= ingest_jobs(kube, namespace)[0].spec.ttl_seconds_after_finished <= 7200 + 600 + 60


def test_an_invalid_file_is_set_aside_at_once_with_the_jobs_reason(dsn, world, kube, namespace, uploads, sqs,
                                                                   make_controller, job_runtime, local_node):
    conn = world
    job_runtime(dsn)
    controller = make_controller()
    uploads.put("bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))

    step_until(controller, lambda: handled(kube, namespace), what="the Job to end")

    assert list(handled(kube, namespace).values()) == ["set-aside"]  # no second attempt
    [dead] = sqs.dead_letters()
    assert "the ingest job rejected the file (PodFailurePolicy" in dead["reason"]
    # The job's own words, from its last log lines
    assert dead["reason"].endswith("the job said: 1 invalid row(s); the first at line 2: "
                                   "unknown port code 'XXXXX' in dest_code")
    assert json.loads(dead["body"])["Records"][0]["s3"]["object"]["key"] == "bad.csv"
    assert [r["status"] for r in runs(conn)] == ["rejected"]
    assert set_aside_reasons(controller.metrics) == {"invalid_file": 1}

    # SQS delivers the upload's event again (at least once): the file stays set aside, once.
    again = json.loads(dead["body"])
    assert again.pop(events.SET_ASIDE_BY) == ingest_jobs(kube, namespace)[0].metadata.name
    again["Records"][0]["eventVersion"] = "2.1"  # as S3 writes it
    sqs.send(json.dumps(again))
    controller.step()
    assert len(ingest_jobs(kube, namespace)) == 1 and sqs.dead_letters() == []  # none more
    assert sqs.counts()[0] == 0  # deleted, as a duplicate
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="duplicate") == 1


def test_a_lowered_max_attempts_sets_aside_with_the_jobs_the_file_had(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    # As after a rollback to a chart with fewer attempts: a file already past them is set
    # aside when its Job ends, and its reason counts the Jobs it ran, not the setting.
    job_runtime("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")  # down: exit 1
    controller = make_controller(max_attempts=3, retry_delay_seconds=0, job_backoff_limit=0)
    uploads.put("p.csv", as_csv(ROWS))
    step_until(controller, lambda: len(ingest_jobs(kube, namespace)) == 2, what="a second Job")

    lowered = make_controller(max_attempts=1, retry_delay_seconds=0, job_backoff_limit=0)
    step_until(lowered, lambda: len(handled(kube, namespace)) == 2, what="the second Job to end")

    assert len(ingest_jobs(kube, namespace)) == 2
    [dead] = sqs.dead_letters()
    assert dead["reason"].startswith("the file did not load in 2 Jobs (BackoffLimitExceeded"), dead
    assert dead["attempts"] == "2"


def test_a_file_that_keeps_failing_is_retried_set_aside_and_loads_after_a_redrive(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    conn = world
    job_runtime("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")  # down: exit 1
    controller = make_controller(max_attempts=2, retry_delay_seconds=0, job_backoff_limit=0)
    uploads.put("p.csv", as_csv(ROWS))

    step_until(controller, lambda: len(handled(kube, namespace)) == 2, what="two Jobs to end")

    first, second = ingest_jobs(kube, namespace)
    assert [first.metadata.labels[jobs.HANDLED], second.metadata.labels[jobs.HANDLED]] == [
        "retried", "set-aside"]
    assert second.metadata.annotations[jobs.ATTEMPT] == "2"
    [dead] = sqs.dead_letters()
    assert "did not load in 2 Jobs (BackoffLimitExceeded" in dead["reason"]
    assert "the job said: connection to server at" in dead["reason"] and "Connection refused" in dead["reason"]
    assert dead["attempts"] == "2"
    assert set_aside_reasons(controller.metrics) == {"attempts_exhausted": 1}

    # The operator fixes the cause and sends the file back (an SQS redrive does the same).
    job_runtime(dsn)
    sqs.send(dead["body"])
    step_until(controller, lambda: len(handled(kube, namespace)) == 3, what="the third Job to end")

    third = ingest_jobs(kube, namespace)[-1]
    assert (third.metadata.annotations[jobs.ATTEMPT], third.metadata.labels[jobs.HANDLED]) == (
        "3", "succeeded")
    assert len(prices(conn)) == len(ROWS)
    assert sample(controller.metrics, "rates_controller_jobs_finished_total", result="retried") == 1
    created = {kind: sample(controller.metrics, "rates_controller_jobs_created_total", attempt=kind)
               for kind in ("first", "retry")}
    assert created == {"first": 2, "retry": 1}  # the redriven round's first Job is a first


def test_a_key_that_looks_like_a_kubernetes_variable_reference_loads_as_written(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    job_runtime(dsn)
    controller = make_controller()
    key = "2016/x$(S3_BUCKET) $$.csv"  # Kubernetes would expand $(S3_BUCKET) in an env value
    uploads.put(key, as_csv(ROWS))

    step_until(controller, lambda: handled(kube, namespace), what="the Job to end")

    assert list(handled(kube, namespace).values()) == ["succeeded"], sqs.dead_letters()
    assert [r["key"] for r in runs(world)] == [key]


DOWN = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def test_who_uploaded_the_file_reaches_its_run_through_retries_and_a_redrive(
        dsn, world, kube, namespace, s3, sqs, make_controller, job_runtime, local_node):
    conn = world
    job_runtime(DOWN)
    controller = make_controller(max_attempts=2, retry_delay_seconds=0, job_backoff_limit=0)
    etag = s3.put("p.csv", as_csv(ROWS))["ETag"].strip('"')
    uploader = "AWS:AROAEXAMPLEID123456:jane$(HOME)"  # a session name is the uploader's to choose
    # As AWS writes it: moto's events name nobody.
    sqs.send(json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-11-29T04:00:00.123Z",
        "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": uploader},
        "s3": {"bucket": {"name": s3.name}, "object": {"key": "p.csv", "size": 91, "eTag": etag}}}]}))
    step_until(controller, lambda: len(handled(kube, namespace)) == 2, what="two Jobs to end")
    [dead] = sqs.dead_letters()

    job_runtime(dsn)
    sqs.send(dead["body"])  # sent back once the database is up
    step_until(controller, lambda: len(handled(kube, namespace)) == 3, what="the third Job to end")

    assert [j.metadata.annotations[jobs.UPLOADED_BY] for j in ingest_jobs(kube, namespace)] == [uploader] * 3
    # The database was down for the first two: only the third recorded a run.
    with conn.cursor() as cur:
        cur.execute("SELECT status, uploaded_by FROM ingest_runs ORDER BY id")
        assert cur.fetchall() == [("loaded", uploader)]


def test_a_retry_goes_past_an_older_chains_job_of_the_same_name(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    job_runtime(DOWN)
    controller = make_controller(max_attempts=3, retry_delay_seconds=0, job_backoff_limit=0)
    uploads.put("p.csv", as_csv(ROWS))
    step_until(controller, lambda: len(handled(kube, namespace)) == 3, timeout=150, what="the first chain to end")
    [dead] = sqs.dead_letters()
    # Job 1 is gone (its TTL ends first), Jobs 2 and 3 stay; the file is sent back.
    kube.batch.delete_namespaced_job(ingest_jobs(kube, namespace)[0].metadata.name, namespace,
                                     propagation_policy="Background")
    sqs.send(dead["body"])

    # The new chain starts at 1 again; its retry must not take old Job 2 for its own, and
    # the numbers it skips are not Jobs it ran: it still gets three.
    step_until(controller, lambda: sum(v == "set-aside" for v in handled(kube, namespace).values()) == 2,
               timeout=150, what="the second chain to be set aside")

    attempts = sorted(int(j.metadata.annotations[jobs.ATTEMPT]) for j in ingest_jobs(kube, namespace))
    assert attempts == [1, 2, 3, 4, 5]
    assert [d["attempts"] for d in sqs.dead_letters()] == ["3"]  # the first was received above


def first_job_failed(controller, kube, namespace, uploads) -> None:
    """Upload a file whose Job the controller creates and which fails (the database is down)."""
    uploads.put("p.csv", as_csv(ROWS))
    step_until(controller, lambda: ingest_jobs(kube, namespace), what="the first Job")
    # Waited for without a step, or the controller would act on its end itself.
    wait_for(lambda: any(jobs.finished(j) for j in ingest_jobs(kube, namespace)), timeout=60,
             what="the first Job to fail")


def test_a_retry_the_api_server_refuses_sets_the_file_aside_and_the_loop_goes_on(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    job_runtime(DOWN)
    first = make_controller(retry_delay_seconds=0, job_backoff_limit=0)
    first_job_failed(first, kube, namespace, uploads)

    # A rollout with Job settings the API server refuses meets the failed Job's retry.
    broken = make_controller(retry_delay_seconds=0, job_memory_request="512Mi", job_memory_limit="64Mi")
    broken.step()

    assert list(handled(kube, namespace).values()) == ["set-aside"]
    [dead] = sqs.dead_letters()
    assert "its next Job cannot be created" in dead["reason"] and "422" in dead["reason"]
    assert set_aside_reasons(broken.metrics) == {"rejected": 1}


def test_a_file_whose_pod_never_starts_is_set_aside_saying_so(kube, namespace, uploads, sqs, make_controller):
    # No node runs this namespace's pods: they stay Pending until the Job's deadline, as
    # with an image that cannot be pulled; the reason must point there, not at the file.
    controller = make_controller(max_attempts=1, job_deadline_seconds=2)
    uploads.put("p.csv", as_csv(ROWS))
    step_until(controller, lambda: list(handled(kube, namespace).values()) == ["set-aside"], timeout=60,
               what="the Job to be set aside")
    [dead] = sqs.dead_letters()
    assert dead["reason"].startswith("the file did not load in 1 Jobs (DeadlineExceeded"), dead
    assert "it may never have started (an image that cannot be pulled" in dead["reason"], dead


def pod_exited(kube, namespace: str, job_name: str, exit_code: int, reason: str = "Error",
               message: str = "") -> None:
    """The Job's pod ended with ``exit_code``, as a kubelet reports it, written into the
    pod's status (as tests/support/local_node.py writes an exit): for a Job whose pod no
    node runs, so that it stays active until the test ends it."""
    [pod] = wait_for(lambda: kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items,
                     timeout=30, what="the Job's pod")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {
        "phase": "Succeeded" if exit_code == 0 else "Failed", "startTime": now,
        "containerStatuses": [{"name": jobs.CONTAINER, "ready": False, "restartCount": 0, "image": "local",
                               "imageID": "", "state": {"terminated": {
                                   "exitCode": exit_code, "reason": reason, "message": message,
                                   "startedAt": now, "finishedAt": now}}}]}})


def oom_killed(kube, namespace: str, job_name: str, log_tail: str) -> None:
    """The Job's pod ended as a kubelet reports an OOM kill: reason OOMKilled, exit 137 and,
    as the Job's FallbackToLogsOnError has it, the log's tail as the message. No kernel
    here kills."""
    pod_exited(kube, namespace, job_name, 137, "OOMKilled", log_tail)


def test_a_file_whose_pod_ran_out_of_memory_is_set_aside_saying_so(kube, namespace, uploads, sqs, make_controller,
                                                                   job_runtime):
    # The kernel kills the job mid-load, so its log ends at an info line; as "the job said"
    # that line read as the file's error, and the OOM kill was named nowhere.
    controller = make_controller(max_attempts=1, job_backoff_limit=0)
    uploads.put("p.csv", as_csv(ROWS))
    [job] = step_until(controller, lambda: ingest_jobs(kube, namespace), what="the Job")
    started = json.dumps({"service": "rates-ingest", "bucket": uploads.name, "key": "p.csv", "size": 91234567,
                          "format": "csv", "event": "ingest started", "level": "info"})
    oom_killed(kube, namespace, job.metadata.name, started + "\n")

    step_until(controller, lambda: list(handled(kube, namespace).values()) == ["set-aside"], timeout=60,
               what="the Job to be set aside")

    [dead] = sqs.dead_letters()
    assert dead["reason"].startswith("the file did not load in 1 Jobs (BackoffLimitExceeded: "), dead
    assert dead["reason"].endswith(
        "); OOMKilled (exit 137): the ingest pod ran out of memory; raise the Jobs' memory limit "
        "(JOB_MEMORY_LIMIT, the chart's jobs.resources.limits.memory); its last log line: ingest started"), dead
    assert set_aside_reasons(controller.metrics) == {"attempts_exhausted": 1}


def test_a_retry_waits_for_a_free_slot(dsn, world, kube, namespace, uploads, sqs, make_controller,
                                       job_runtime, local_node):
    job_runtime(DOWN)
    controller = make_controller(max_active_jobs=1, max_attempts=2, retry_delay_seconds=0,
                                 job_backoff_limit=0)
    uploads.put("p.csv", as_csv(ROWS))
    uploads.put("q.csv", as_csv(ROWS))
    most = 0

    def all_set_aside():
        nonlocal most
        found = ingest_jobs(kube, namespace)
        most = max(most, sum(jobs.finished(j) is None for j in found))
        return sum(j.metadata.labels.get(jobs.HANDLED) == "set-aside" for j in found) == 2

    step_until(controller, all_set_aside, timeout=120, what="both files to be set aside")

    assert most == 1
    assert len(ingest_jobs(kube, namespace)) == 4


def active_jobs(kube, namespace) -> list[str]:
    return [j.metadata.name for j in ingest_jobs(kube, namespace) if jobs.finished(j) is None]


def test_a_due_retry_waits_while_running_jobs_take_every_slot(kube, namespace, uploads, sqs, make_controller,
                                                              job_runtime):
    # No node runs this namespace's pods: the Jobs stay active until the test ends a pod.
    # Three run, started before a rollout lowered MAX_ACTIVE_JOBS from 3 to 2.
    before = make_controller(max_active_jobs=3, job_backoff_limit=0)
    for key in ("p.csv", "q.csv", "r.csv"):
        uploads.put(key, as_csv(ROWS))
    step_until(before, lambda: len(ingest_jobs(kube, namespace)) == 3, what="three Jobs")
    job_of = {j.metadata.annotations[jobs.KEY]: j.metadata.name for j in ingest_jobs(kube, namespace)}
    controller = make_controller(max_active_jobs=2, retry_delay_seconds=0, job_backoff_limit=0)
    pod_exited(kube, namespace, job_of["p.csv"], 1)
    wait_for(lambda: job_of["p.csv"] not in active_jobs(kube, namespace), timeout=30, what="p.csv's Job to fail")

    # p.csv's retry is due, but q.csv's and r.csv's Jobs take both slots: it waits.
    for _ in range(3):
        controller.step()
        assert sorted(active_jobs(kube, namespace)) == sorted([job_of["q.csv"], job_of["r.csv"]])
    assert handled(kube, namespace) == {}

    # q.csv loads: its slot goes to p.csv's retry, and no more Jobs than that run.
    pod_exited(kube, namespace, job_of["q.csv"], 0)
    most = 0

    def retried():
        nonlocal most
        most = max(most, len(active_jobs(kube, namespace)))
        return handled(kube, namespace) == {job_of["q.csv"]: "succeeded", job_of["p.csv"]: "retried"}

    step_until(controller, retried, timeout=60, what="p.csv's Job to be retried")

    assert most <= 2
    [retry] = [j for j in ingest_jobs(kube, namespace) if j.metadata.name not in job_of.values()]
    assert (retry.metadata.annotations[jobs.KEY], retry.metadata.annotations[jobs.ATTEMPT]) == ("p.csv", "2")
    assert sorted(active_jobs(kube, namespace)) == sorted([job_of["r.csv"], retry.metadata.name])
    assert sqs.dead_letters() == []


def test_the_upload_event_delivered_again_after_its_file_was_set_aside_makes_no_job(
        kube, namespace, sqs, make_controller, job_runtime):
    # No node runs this namespace's pods: the test fails each of them.
    controller = make_controller(max_attempts=2, retry_delay_seconds=0, job_backoff_limit=0)
    event = json.dumps({"Records": [{  # as S3 writes it (eventVersion): not a redrive
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-11-29T04:00:00.123Z",
        "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {
            "key": "p.csv", "size": 91, "eTag": "e", "sequencer": "0A"}}}]})
    sqs.send(event)
    for attempt in (1, 2):
        [job] = step_until(controller, lambda: active_jobs(kube, namespace), what=f"Job {attempt}")
        pod_exited(kube, namespace, job, 1)
        wait_for(lambda: job not in active_jobs(kube, namespace), timeout=30, what=f"Job {attempt} to fail")
    step_until(controller, lambda: len(handled(kube, namespace)) == 2, what="the file to be set aside")
    assert list(handled(kube, namespace).values()) == ["retried", "set-aside"]
    [dead] = sqs.dead_letters()
    assert dead["attempts"] == "2"

    # SQS delivers the upload's event again (at least once): the file stays set aside.
    sqs.send(event)
    with capture_logs() as logged:
        step_until(controller, lambda: sqs.counts() == (0, 0), what="the message to be handled")

    assert len(ingest_jobs(kube, namespace)) == 2
    assert sqs.dead_letters() == []  # none more
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="duplicate") == 1
    assert [(line["outcome"], line["jobs_created"]) for line in logged if line["event"] == "message handled"] == [
        ("duplicate", 0)]


def labelling_refused(kube, namespace: str, job_name: str):
    """While inside, the API server refuses to label this namespace's Jobs as handled (an
    admission policy, as a failing webhook or an outage of etcd writes would)."""
    def refused() -> bool:
        try:
            kube.batch.patch_namespaced_job(job_name, namespace, {"metadata": {"labels": {jobs.HANDLED: "x"}}},
                                            dry_run="All")
        except ApiException as exc:
            return "labelling is down" in str(exc.body)
        return False

    return admission_refusal(kube, namespace, "UPDATE",
                             f"!has(object.metadata.labels) || !('{jobs.HANDLED}' in object.metadata.labels)",
                             "labelling is down", refused)


def test_a_file_set_aside_whose_job_cannot_be_labelled_is_sent_to_the_dead_letter_queue_once(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    job_runtime(dsn)
    controller = make_controller()
    uploads.put("bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))
    [job] = step_until(controller, lambda: ingest_jobs(kube, namespace), what="the Job")
    wait_for(lambda: jobs.finished(ingest_jobs(kube, namespace)[0]), timeout=90, what="the Job to fail")

    with labelling_refused(kube, namespace, job.metadata.name):
        for _ in range(3):  # each pass finds the Job unhandled again
            controller.step()
        assert handled(kube, namespace) == {}
        assert len(sqs.dead_letters()) == 1
    controller.step()

    assert handled(kube, namespace) == {job.metadata.name: "set-aside"}
    assert sqs.dead_letters() == []  # none more
    assert set_aside_reasons(controller.metrics) == {"invalid_file": 1}
    assert sample(controller.metrics, "rates_controller_jobs_finished_total", result="set-aside") == 1


def test_a_retry_the_api_server_keeps_refusing_for_a_while_sets_the_file_aside_in_the_end(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node, monkeypatch):
    job_runtime(DOWN)
    controller = make_controller(retry_delay_seconds=0, job_backoff_limit=0)
    first_job_failed(controller, kube, namespace, uploads)

    # A refusal that may pass (an admission policy, as in a rollout) is retried for a while,
    # counted from the first failure: here the retry is first tried two hours after it was
    # due (the controller was down, or every slot taken), and is not given up at once.
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    monkeypatch.setattr(controller_module, "_now", lambda: later)
    with creates_refused(kube, namespace, controller, "quota of this namespace"):
        controller.step()
        assert handled(kube, namespace) == {} and sqs.dead_letters() == []
        # Counted on the monotonic clock: a step of the time of day (an NTP step, a VM
        # resumed) is not an hour of failures.
        monkeypatch.setattr(controller_module, "_now", lambda: later + datetime.timedelta(hours=2))
        controller.step()
        assert handled(kube, namespace) == {} and sqs.dead_letters() == []
        # ...but not for ever: the failed Job would hold a slot of MAX_ACTIVE_JOBS for good.
        monkeypatch.setattr(controller_module, "RETRY_CREATE_GIVE_UP", datetime.timedelta(0))
        controller.step()

    assert list(handled(kube, namespace).values()) == ["set-aside"]
    [dead] = sqs.dead_letters()
    assert "its next Job could not be created for 0:00:00" in dead["reason"] and "quota of this namespace" in dead["reason"]


def test_a_retry_whose_job_cannot_be_created_yet_keeps_its_slot(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    job_runtime(DOWN)
    controller = make_controller(max_active_jobs=1, retry_delay_seconds=0, job_backoff_limit=0)
    first_job_failed(controller, kube, namespace, uploads)

    with creates_refused(kube, namespace, controller, "not now"):
        uploads.put("q.csv", as_csv(ROWS))
        wait_for(lambda: sqs.counts()[0] == 1, timeout=10, what="q.csv's event")
        controller.step()
        # The retry is due and waits only for the API server: it keeps the one slot, so
        # q.csv's event is not even received.
        assert sqs.counts() == (1, 0)
        assert handled(kube, namespace) == {}
        # No Job runs, and yet the one slot is taken: what the at-capacity alert watches.
        assert sample(controller.metrics, "rates_controller_active_jobs") == 0
        assert sample(controller.metrics, "rates_controller_slots_in_use") == 1


def a_job_whose_retry_a_full_quota_refuses(kube, namespace, uploads, make_controller):
    """A controller, and its Job that failed with its retry due at once, in a namespace whose
    quota that Job fills (ended Jobs count until their TTL)."""
    controller = make_controller(retry_delay_seconds=0, job_backoff_limit=0)
    uploads.put("a.csv", b"x")
    [job] = step_until(controller, lambda: ingest_jobs(kube, namespace), what="the Job")
    job_quota(kube, namespace, 1)  # the one Job fills it, ended too
    pod_exited(kube, namespace, job.metadata.name, 1)
    wait_for(lambda: kube.batch.read_namespaced_job(job.metadata.name, namespace).status.failed, timeout=30,
             what="the Job to fail")
    return controller, job


def test_a_retry_a_full_quota_refuses_is_held_until_it_has_room_not_set_aside(
        kube, namespace, uploads, sqs, make_controller, job_runtime, monkeypatch):
    # Dev's and staging's quota stays full for hours in a backfill (ended Jobs count until
    # their TTL): a file that failed once then waits for room as a held message does,
    # tried again every QUOTA_RECHECK_SECONDS, said and counted once, and not given up.
    controller, job = a_job_whose_retry_a_full_quota_refuses(kube, namespace, uploads, make_controller)
    # The give-up for creates that keep failing (an hour), long passed below: not for a full quota.
    monkeypatch.setattr(controller_module, "RETRY_CREATE_GIVE_UP", datetime.timedelta(seconds=1))
    creates = []
    create = controller.kube.create
    monkeypatch.setattr(controller.kube, "create", lambda manifest: creates.append(1) or create(manifest))

    started = time.monotonic()
    with capture_logs() as logged:
        while time.monotonic() - started < 10:  # some ten passes
            controller.step()

    assert handled(kube, namespace) == {} and sqs.dead_letters() == [] and set_aside_reasons(controller.metrics) == {}
    assert 1 <= len(creates) <= 2, creates  # not at each pass
    warnings = [line["event"] for line in logged if line["log_level"] == "warning"]
    assert warnings == ["retry held: the namespace's quota has no room for its Job"]
    assert sample(controller.metrics, "rates_controller_errors_total", operation="handle_job") == 1
    assert sample(controller.metrics, "rates_controller_messages_held") == 1  # RatesControllerQuotaFull's
    assert sample(controller.metrics, "rates_controller_slots_in_use") == 1  # the retry keeps its slot

    # A restart forgets the wait but not the file: its failed Job, not labelled, still says
    # what to retry, and the new controller holds it in its turn.
    restarted = make_controller(retry_delay_seconds=0, job_backoff_limit=0)
    restarted.step()
    assert handled(kube, namespace) == {} and sqs.dead_letters() == []
    assert sample(restarted.metrics, "rates_controller_messages_held") == 1

    job_quota(kube, namespace, 5)  # as when Jobs reach their TTL
    with capture_logs() as logged:
        step_until(restarted, lambda: len(ingest_jobs(kube, namespace)) == 2, timeout=40, what="the retry")
    assert handled(kube, namespace) == {job.metadata.name: "retried"} and sqs.dead_letters() == []
    assert sample(restarted.metrics, "rates_controller_jobs_created_total", attempt="retry") == 1
    assert sample(restarted.metrics, "rates_controller_messages_held") == 0
    assert [line for line in logged if line["log_level"] == "warning"] == []
    [ended] = [line for line in logged if line["event"] == "job ended"]
    assert ended["result"] == "retried" and ended["held_for_quota_s"] >= 0, ended


def test_a_held_retry_is_tried_each_recheck_said_once_and_held_for_its_whole_wait(
        kube, namespace, uploads, sqs, make_controller, job_runtime, monkeypatch):
    """Over many tries, not only the first two: each try comes QUOTA_RECHECK_SECONDS after the
    last (a try each pass would load the API server for hours in a backfill), the hold is
    said and counted once (else RatesControllerErrors fires for a quota the operators know
    is full), and held_for_quota_s is the whole wait, not the time since the last try. A
    pass takes about a second (the receive's wait), so tries each pass would come closer."""
    recheck = 3
    monkeypatch.setattr(controller_module, "QUOTA_RECHECK_SECONDS", recheck)
    controller, job = a_job_whose_retry_a_full_quota_refuses(kube, namespace, uploads, make_controller)
    tried_at = []
    create = controller.kube.create
    monkeypatch.setattr(controller.kube, "create",
                        lambda manifest: tried_at.append(time.monotonic()) or create(manifest))

    with capture_logs() as logged:
        step_until(controller, lambda: len(tried_at) >= 3, timeout=120, what="three tries")

    assert handled(kube, namespace) == {} and sqs.dead_letters() == []
    gaps = [later - earlier for earlier, later in zip(tried_at, tried_at[1:])]
    assert all(gap >= recheck for gap in gaps), gaps  # the next try is due RECHECK after the last refusal
    warnings = [line["event"] for line in logged if line["log_level"] == "warning"]
    assert warnings == ["retry held: the namespace's quota has no room for its Job"]
    assert sample(controller.metrics, "rates_controller_errors_total", operation="handle_job") == 1

    job_quota(kube, namespace, 5)
    with capture_logs() as logged:
        step_until(controller, lambda: len(ingest_jobs(kube, namespace)) == 2, timeout=60, what="the retry")
    assert len(tried_at) >= 4
    [ended] = [line for line in logged if line["event"] == "job ended"]
    # Held from the first refusal, and each of the 3 or more tries since came RECHECK after the last.
    assert ended["result"] == "retried" and ended["held_for_quota_s"] >= 3 * recheck, ended


def test_the_hold_of_a_retry_whose_job_is_gone_is_forgotten(kube, namespace, uploads, sqs, make_controller,
                                                            job_runtime):
    """Deleted by an operator (or acted on by another controller in a rollout's overlap):
    its hold would keep rates_controller_messages_held, and RatesControllerQuotaFull, up
    until the controller restarts."""
    controller, job = a_job_whose_retry_a_full_quota_refuses(kube, namespace, uploads, make_controller)
    controller.step()
    assert sample(controller.metrics, "rates_controller_messages_held") == 1
    kube.batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")
    wait_for(lambda: not ingest_jobs(kube, namespace), timeout=30, what="the Job to be gone")
    controller.step()
    assert sample(controller.metrics, "rates_controller_messages_held") == 0


def test_a_quota_refusal_restarts_the_give_up_clock_of_a_retry(
        kube, namespace, uploads, sqs, make_controller, job_runtime, monkeypatch):
    """The quota is the API server's last admission check: its refusal says that what
    refused the create before (a policy, a webhook) has passed. A refusal after the hold is
    a new failure, with the whole RETRY_CREATE_GIVE_UP to pass, not the file set aside at
    once for a failure that began before the hold."""
    give_up_s = 5
    monkeypatch.setattr(controller_module, "QUOTA_RECHECK_SECONDS", 0)  # a held retry is tried each pass
    controller = make_controller(retry_delay_seconds=0, job_backoff_limit=0)
    uploads.put("a.csv", b"x")
    [job] = step_until(controller, lambda: ingest_jobs(kube, namespace), what="the Job")
    pod_exited(kube, namespace, job.metadata.name, 1)
    wait_for(lambda: kube.batch.read_namespaced_job(job.metadata.name, namespace).status.failed, timeout=30,
             what="the Job to fail")
    with creates_refused(kube, namespace, controller, "not now"):
        controller.step()  # the give-up clock starts
    first_failure_by = time.monotonic()
    job_quota(kube, namespace, 1)  # the failed Job fills it
    # Until the quota refuses: a policy just removed may still refuse a moment (and
    # RETRY_CREATE_GIVE_UP is an hour until below).
    step_until(controller, lambda: sample(controller.metrics, "rates_controller_messages_held") == 1, timeout=60,
               what="the retry to be held")
    time.sleep(max(0.0, first_failure_by + give_up_s + 1 - time.monotonic()))  # give_up_s since the first failure
    monkeypatch.setattr(controller_module, "RETRY_CREATE_GIVE_UP", datetime.timedelta(seconds=give_up_s))
    errors = sample(controller.metrics, "rates_controller_errors_total", operation="handle_job")
    with creates_refused(kube, namespace, controller, "not now"):
        controller.step()
    assert handled(kube, namespace) == {} and sqs.dead_letters() == []
    # Tried, and refused (not passed over as still held).
    assert sample(controller.metrics, "rates_controller_errors_total", operation="handle_job") == errors + 1


def test_a_redrive_of_a_round_whose_first_job_reused_an_expired_name_starts_a_round(
        dsn, world, kube, namespace, uploads, sqs, make_controller, job_runtime, local_node):
    # Job names are reused once the TTL has deleted the Jobs that held them, so the name of
    # the Job that set a file aside does not tell which round it ended.
    job_runtime(dsn)
    controller = make_controller()
    uploads.put("bad.csv", as_csv([("CNSHA", "XXXXX", "2016-01-01", 5)]))
    step_until(controller, lambda: len(handled(kube, namespace)) == 1, what="the first round to end")

    def send_back_and_wait(rounds: int) -> None:
        [dead] = sqs.dead_letters()
        sqs.send(dead["body"])
        step_until(controller, lambda: list(handled(kube, namespace).values()).count("set-aside") == rounds
                   and sqs.counts() == (0, 0), what=f"round {rounds} to end")

    send_back_and_wait(2)  # its Job is named ...-2 and notes that ...-1 set the file aside
    name_1 = ingest_jobs(kube, namespace)[0].metadata.name
    kube.batch.delete_namespaced_job(name_1, namespace, propagation_policy="Background")  # its TTL
    wait_for(lambda: name_1 not in handled(kube, namespace), timeout=30, what="Job 1 to be gone")
    send_back_and_wait(2)  # a new round whose Job takes the free name ...-1
    [dead] = sqs.dead_letters()
    assert json.loads(dead["body"])[events.SET_ASIDE_BY] == name_1

    # Sent back once more: a new round, not a duplicate of the one that ...-2 began.
    sqs.send(dead["body"])
    step_until(controller, lambda: sqs.counts() == (0, 0), what="the message to be handled")
    assert sample(controller.metrics, "rates_controller_messages_total", outcome="duplicate") == 0
    assert len(ingest_jobs(kube, namespace)) == 3
