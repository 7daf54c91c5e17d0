"""The Job manifest and what a finished Job says (pure functions; the API server's view
of the manifest is in test_controller.py)."""

import json
from dataclasses import replace
from types import SimpleNamespace

from rates_controller import jobs
from rates_controller.events import UploadedObject
from rates_controller.settings import JobSettings
from tests.support import local_node

OBJ = UploadedObject(bucket="uploads", key="2016/jan.csv", version_id=None, etag="abc", size=10)
SETTINGS = JobSettings(namespace="prod", image="registry.invalid/rates-ingest:1.2.3")


def test_names_are_stable_per_object_and_attempt_and_fit_a_label_value():
    name = jobs.job_name(OBJ, 1)
    assert name == jobs.job_name(UploadedObject("uploads", "2016/jan.csv", None, "abc", 999), 1)
    others = {jobs.job_name(OBJ, 2), jobs.job_name(UploadedObject("uploads", "2016/jan.csv", "v2", "abc", 10), 1),
              jobs.job_name(UploadedObject("uploads", "2016/feb.csv", None, "abc", 10), 1),
              jobs.job_name(UploadedObject("other", "2016/jan.csv", None, "abc", 10), 1),
              jobs.job_name(UploadedObject("uploads", "2016/jan.csv", None, "abd", 10), 1),
              # the same content uploaded again, in an unversioned bucket: a new load
              jobs.job_name(UploadedObject("uploads", "2016/jan.csv", None, "abc", 10, sequencer="0055AED6"), 1)}
    assert name not in others and len(others) == 6
    long_key = UploadedObject("b" * 63, "k" * 1024, "v" * 100, "e" * 40, 1)
    assert len(jobs.job_name(long_key, 10**6)) <= 63


def test_the_pod_runs_as_a_non_root_user_with_a_read_only_root_and_no_api_token():
    spec = jobs.manifest(OBJ, SETTINGS)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["resources"]["limits"] == {"memory": "384Mi"}


def test_only_exit_code_2_fails_the_job_at_once_and_disruptions_do_not_count():
    rules = jobs.manifest(OBJ, SETTINGS)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "ingest", "operator": "In",
                                                             "values": [2]}}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}


def test_node_autoscalers_leave_a_running_load_alone():
    metadata = jobs.manifest(OBJ, SETTINGS)["spec"]["template"]["metadata"]
    assert metadata["annotations"] == {"karpenter.sh/do-not-disrupt": "true",
                                       "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


def test_extra_environment_follows_the_objects_address():
    settings = JobSettings(namespace="prod", image="i", env={"AWS_REGION": "eu-west-1"})
    env = jobs.manifest(OBJ, settings)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["S3_BUCKET", "S3_OBJECT_KEY", "DATABASE_URL", "AWS_REGION"]


def test_who_uploaded_the_file_is_on_the_job_and_in_the_jobs_environment_as_written():
    uploader = "AWS:AROAEXAMPLE:$(DATABASE_URL) $$"  # a session name is the uploader's to choose
    manifest = jobs.manifest(replace(OBJ, uploaded_by=uploader), SETTINGS)
    assert manifest["metadata"]["annotations"][jobs.UPLOADED_BY] == uploader
    seen: dict[str, str] = {}
    for var in manifest["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            seen[var["name"]] = local_node._expand(var["value"], seen)
    assert seen["S3_UPLOADED_BY"] == uploader
    # A retry is made from the ended Job: it says so too.
    assert jobs.finished(_ended(manifest["metadata"]["annotations"])).obj.uploaded_by == uploader
    # An event that names nobody (ratesctl reconcile's): neither.
    plain = jobs.manifest(OBJ, SETTINGS)
    assert jobs.UPLOADED_BY not in plain["metadata"]["annotations"]
    assert "S3_UPLOADED_BY" not in {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert jobs.finished(_ended(plain["metadata"]["annotations"])).obj.uploaded_by is None


def test_the_pod_gets_the_extra_environment_as_written():
    # The kubelet expands $(VAR) and $$ in env values, in order (tests/support/local_node).
    written = {"HTTPS_PROXY": "http://u:pa$$w0rd@proxy:3128", "NOTE": "cost $(S3_BUCKET)", "PLAIN": "x"}
    settings = JobSettings(namespace="prod", image="i", env=written)
    seen: dict[str, str] = {}
    for var in jobs.manifest(OBJ, settings)["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            seen[var["name"]] = local_node._expand(var["value"], seen)
    assert {name: seen[name] for name in written} == written


def test_the_database_url_comes_from_the_secret_unless_one_without_a_password_is_given():
    def database_env(settings):
        env = jobs.manifest(OBJ, settings)["spec"]["template"]["spec"]["containers"][0]["env"]
        return [e for e in env if e["name"].startswith("DATABASE_")]

    assert database_env(JobSettings(namespace="prod", image="i", database_secret="db", database_secret_key="k")) == [
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]
    url = "postgresql://rates_ingest@db.internal:5432/rates?sslmode=require&options=-c%20x%3D$HOME"
    assert database_env(JobSettings(namespace="prod", image="i", database_url=url, database_iam_auth=True)) == [
        {"name": "DATABASE_URL", "value": url.replace("$", "$$")},
        {"name": "DATABASE_IAM_AUTH", "value": "true"}]


def test_scheduling_places_the_pod_and_changes_nothing_else():
    scheduling = {"nodeSelector": {"workload": "batch"},
                  "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                  "affinity": {"nodeAffinity": {}}, "priorityClassName": "batch-low"}
    placed = jobs.manifest(OBJ, JobSettings(namespace="prod", image="registry.invalid/rates-ingest:1.2.3",
                                            scheduling=scheduling))["spec"]["template"]["spec"]
    plain = jobs.manifest(OBJ, SETTINGS)["spec"]["template"]["spec"]
    # Also: nothing the Job sets itself is replaced (plain would have a key the left lacks).
    assert {k: v for k, v in placed.items() if k not in scheduling} == plain
    assert {k: placed[k] for k in scheduling} == scheduling


def test_last_words_are_the_error_of_the_last_json_line_that_has_one():
    log = "\n".join([
        json.dumps({"event": "s3 stream cut; resuming", "error": "ReadTimeoutError", "level": "warning"}),
        "Found credentials in environment variables.",
        json.dumps({"event": "ingest finished", "error": "unknown port code 'XX'", "level": "error"}),
        json.dumps({"event": "bye", "level": "info"}),
    ])
    assert jobs.last_words(log) == "unknown port code 'XX'"
    # A line without an error is not passed off as the job's error, however last it is.
    assert jobs.last_words("plain text\nTraceback ...\nKeyError: 'x'\n") == ""
    assert jobs.last_words(json.dumps({"event": "ingest started", "level": "info"})) == ""
    assert jobs.last_words("") == ""


INGEST_STARTED = json.dumps({"service": "rates-ingest", "bucket": "uploads", "key": "2016/jan.csv",
                             "etag": "abc", "size": 91234567, "format": "csv", "event": "ingest started",
                             "level": "info", "timestamp": "2026-11-30T10:00:00Z"})
STREAM_CUT = json.dumps({"service": "rates-ingest", "event": "s3 stream cut; resuming", "at_byte": 1024,
                         "error": "ReadTimeoutError: Read timed out.", "level": "warning"})
FAILED = json.dumps({"service": "rates-ingest", "event": "ingest finished", "status": "failed",
                     "error": "connection to server at 10.0.0.5 port 5432 failed: Connection refused",
                     "level": "error"})


def test_a_pod_the_kernel_killed_for_memory_is_named_with_what_to_do():
    # FallbackToLogsOnError: the message is the log's tail, which an OOM kill cut off at
    # an info line (or at a warning the job had gone on from).
    said = jobs.pod_words(jobs.Termination("OOMKilled", 137, INGEST_STARTED))
    assert said == ("OOMKilled (exit 137): the ingest pod ran out of memory; raise the Jobs' memory limit "
                    "(JOB_MEMORY_LIMIT, the chart's jobs.resources.limits.memory); its last log line: ingest started")
    said = jobs.pod_words(jobs.Termination("OOMKilled", 137, INGEST_STARTED + "\n" + STREAM_CUT))
    assert said.endswith("; its last log line: s3 stream cut; resuming") and "the job said" not in said
    assert jobs.pod_words(jobs.Termination("OOMKilled", 137, "")).startswith("OOMKilled (exit 137): the ingest pod")
    # Another end from outside is named as the kubelet names it.
    assert jobs.pod_words(jobs.Termination("ContainerCannotRun", 128, "")) == "ContainerCannotRun (exit 128)"


def test_a_pod_that_exited_by_itself_is_quoted_by_its_error_else_by_its_last_line():
    assert jobs.pod_words(jobs.Termination("Error", 1, INGEST_STARTED + "\n" + FAILED)) == (
        "the job said: connection to server at 10.0.0.5 port 5432 failed: Connection refused")
    assert jobs.pod_words(jobs.Termination("Error", 1, INGEST_STARTED)) == "its last log line: ingest started"
    assert jobs.pod_words(jobs.Termination("Error", 1, "Traceback ...\nKeyError: 'x'")) == (
        "its last log line: KeyError: 'x'")
    cut = jobs.pod_words(jobs.Termination("Error", 1, "x" * 2000))
    assert cut == "its last log line: " + "x" * 200 + "…"
    assert jobs.pod_words(jobs.Termination("Error", 1, "")) == ""
    assert jobs.pod_words(None) == ""


def _ended(annotations: dict):
    condition = SimpleNamespace(type="Failed", status="True", reason="BackoffLimitExceeded", message="",
                                last_transition_time=None)
    return SimpleNamespace(metadata=SimpleNamespace(name="j", uid="u", resource_version="1", annotations=annotations),
                           status=SimpleNamespace(conditions=[condition]))


def test_a_job_knows_how_many_of_its_round_it_is_even_past_skipped_numbers():
    retry = jobs.manifest(OBJ, SETTINGS, attempt=4, round_start=1, round_job=2)
    assert jobs.finished(_ended(retry["metadata"]["annotations"])).round_job == 2
    # Jobs made before the count was kept: their numbers in the round had no gaps.
    legacy = {jobs.ATTEMPT: "6", jobs.ROUND_START: "4"}
    assert jobs.finished(_ended(legacy)).round_job == 3
    assert jobs.finished(_ended({})).round_job == 1
