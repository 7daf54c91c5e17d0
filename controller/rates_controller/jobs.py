"""The ingest Job for one uploaded object, and what a finished Job says.

A Job's name is derived from the object (bucket, key, version or ETag) and the attempt,
so that a message delivered twice, or handled by two controllers, makes one Job: the
second create answers 409. The object's address and the attempt are kept on the Job
itself, so the controller holds no state of its own and can restart at any time.
"""

import hashlib
import json
from dataclasses import dataclass

from rates_core.errors import EXIT_PERMANENT

from .events import UploadedObject
from .settings import JobSettings

CONTAINER = "ingest"
MANAGED_BY = "rates-controller"
# Exit code of the ingest job for "the file is invalid or gone": retrying cannot help.
EXIT_INVALID = EXIT_PERMANENT

PREFIX = "rates-platform/"
BUCKET, KEY, VERSION_ID, ETAG, SEQUENCER = (
    PREFIX + n for n in ("bucket", "key", "version-id", "etag", "sequencer"))
ATTEMPT = PREFIX + "attempt"
# The attempt that began this round of Jobs: a file set aside and then sent again (a
# redrive from the dead-letter queue) gets MAX_ATTEMPTS more, under new names.
ROUND_START = PREFIX + "round-start"
# How many Jobs of its round this one is (1 for the round's first). Not attempt minus
# round-start: a retry skips numbers that an older round's Jobs still hold.
ROUND_JOB = PREFIX + "round-job"
# The UID of the failed Job that this one retries: what tells a retry that was created
# (by a pass that stopped before it could note it) from an older chain's Job of that name.
PREVIOUS = PREFIX + "retry-of"
# On the first Job of a round begun by a file sent back from the dead-letter queue: the
# UID of the Job that had set it aside (a name is reused once the TTL deleted its Job). A
# second delivery of that notification, or a second copy of it in the dead-letter queue,
# finds its round begun, even once the round has ended.
REDRIVE_OF = PREFIX + "redrive-of"
# Who uploaded the file, as S3's event names them (events.UploadedObject.uploaded_by); the
# job records it in the run's row too. Kept on the Job so that its retries carry it on.
UPLOADED_BY = PREFIX + "uploaded-by"
# A label set once the controller has acted on an ended Job (succeeded, retried, set
# aside), so that it acts once, and lists only the Jobs it has not acted on yet.
HANDLED = PREFIX + "handled"
# A token per create call: after a create whose answer was lost, the Job found under its
# name is the one that call made only if it carries the call's token (an older round's
# Job of that name can carry every other annotation of ours).
CREATE_ID = PREFIX + "create-id"

LABELS = {"app.kubernetes.io/name": "rates-ingest", "app.kubernetes.io/component": "ingest",
          "app.kubernetes.io/managed-by": MANAGED_BY}
SELECTOR = ",".join(f"{k}={v}" for k, v in LABELS.items())
UNHANDLED = f"{SELECTOR},!{HANDLED}"
# A node autoscaler (Karpenter, Cluster Autoscaler) would otherwise evict a running load to
# pack nodes tighter: the load rolls back and starts over while its deadline runs on. A
# drain still evicts it (a node must be able to go), and that retry does not count.
POD_ANNOTATIONS = {"karpenter.sh/do-not-disrupt": "true",
                   "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


def job_name(obj: UploadedObject, attempt: int) -> str:
    """``ingest-<hash>-<attempt>``: stable for one object, at most 63 characters (a label value)."""
    identity = "\0".join([obj.bucket, obj.key, obj.version_id or "", obj.etag or "", obj.sequencer or ""])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return f"ingest-{digest}-{attempt}"


def manifest(obj: UploadedObject, settings: JobSettings, attempt: int = 1, round_start: int = 1,
             previous: str | None = None, round_job: int = 1) -> dict:
    annotations = {BUCKET: obj.bucket, KEY: obj.key, ATTEMPT: str(attempt), ROUND_START: str(round_start),
                   ROUND_JOB: str(round_job), PREVIOUS: previous, VERSION_ID: obj.version_id, ETAG: obj.etag,
                   SEQUENCER: obj.sequencer, REDRIVE_OF: obj.set_aside_uid, UPLOADED_BY: obj.uploaded_by}
    annotations = {name: value for name, value in annotations.items() if value}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(obj, attempt), "labels": dict(LABELS), "annotations": annotations},
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.deadline_seconds,
            # No ttlSecondsAfterFinished yet: a failed Job must outlive its retry delay, so
            # the controller sets the TTL once it has acted on the ended Job.
            "podFailurePolicy": {"rules": [
                {"action": "FailJob",
                 "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_INVALID]}},
                # A drained node or a preempted pod is not the file's fault: retry without counting.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {
                "metadata": {"labels": dict(LABELS), "annotations": dict(POD_ANNOTATIONS)},
                "spec": _pod_spec(obj, settings),
            },
        },
    }


def _literal(value: str) -> str:
    """``value`` safe from Kubernetes' $(VAR) expansion of env values: a key such as
    ``a$(S3_BUCKET).csv`` must reach the job as written. ``$$`` stands for one ``$``."""
    return value.replace("$", "$$")


def _pod_spec(obj: UploadedObject, settings: JobSettings) -> dict:
    env = [{"name": "S3_BUCKET", "value": _literal(obj.bucket)},
           {"name": "S3_OBJECT_KEY", "value": _literal(obj.key)}]
    if obj.version_id:
        env.append({"name": "S3_VERSION_ID", "value": _literal(obj.version_id)})
    if obj.uploaded_by:
        env.append({"name": "S3_UPLOADED_BY", "value": _literal(obj.uploaded_by)})
    if settings.database_url:
        env.append({"name": "DATABASE_URL", "value": _literal(settings.database_url)})
    else:
        env.append({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {
            "name": settings.database_secret, "key": settings.database_secret_key}}})
    if settings.database_iam_auth:
        env.append({"name": "DATABASE_IAM_AUTH", "value": "true"})
    env += [{"name": k, "value": _literal(v)} for k, v in sorted(settings.env.items())]
    return {
        **settings.scheduling,
        "restartPolicy": "Never",
        "serviceAccountName": settings.service_account,
        # IRSA mounts its own web-identity token; the job never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER,
            "image": settings.image,
            "command": ["python", "-m", "rates_ingest"],
            "env": env,
            "resources": {"requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
                          "limits": {"memory": settings.memory_limit}},
            # The job writes no message file: a failed pod's message is then its log's tail,
            # whose last JSON line with an error the controller quotes when it sets a file
            # aside (pod_words).
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    }


@dataclass(frozen=True)
class Finished:
    """A Job that has ended: how, and which object it was for."""

    name: str
    uid: str
    obj: UploadedObject
    attempt: int
    round_start: int
    round_job: int
    succeeded: bool
    reason: str  # the Job's Complete/Failed condition reason, e.g. BackoffLimitExceeded
    message: str
    ended_at: object  # datetime of the condition
    # As listed: the label lands only on this version, so that of two controllers that
    # both saw the Job ended and unlabelled, one labels it.
    resource_version: str | None = None

    @property
    def file_is_invalid(self) -> bool:
        # The podFailurePolicy rule for exit code 2 is the only way a Job fails this way.
        return self.reason == "PodFailurePolicy"


def finished(job) -> Finished | None:
    """A :class:`Finished` for a kubernetes ``V1Job`` that has ended; None while it runs."""
    condition = next((c for c in job.status.conditions or []
                      if c.type in ("Complete", "Failed") and c.status == "True"), None)
    if condition is None:
        return None
    notes = job.metadata.annotations or {}
    obj = UploadedObject(bucket=notes.get(BUCKET, ""), key=notes.get(KEY, ""),
                         version_id=notes.get(VERSION_ID), etag=notes.get(ETAG), size=None,
                         sequencer=notes.get(SEQUENCER), uploaded_by=notes.get(UPLOADED_BY))
    attempt = _int(notes.get(ATTEMPT), 1)
    round_start = min(_int(notes.get(ROUND_START), 1), attempt)
    # Jobs made before ROUND_JOB existed: their round had no gaps, or was counted this way.
    round_job = max(_int(notes.get(ROUND_JOB), attempt - round_start + 1), 1)
    return Finished(name=job.metadata.name, uid=job.metadata.uid, obj=obj, attempt=attempt,
                    round_start=round_start, round_job=round_job,
                    succeeded=condition.type == "Complete", reason=condition.reason or condition.type,
                    message=condition.message or "", ended_at=condition.last_transition_time,
                    resource_version=job.metadata.resource_version)


@dataclass(frozen=True)
class Termination:
    """How the ingest container of a Job's failed pod ended, as its kubelet wrote it."""

    reason: str  # "Error" when the job exited by itself; "OOMKilled", say, when it was ended
    exit_code: int
    # The job writes no message file, so with FallbackToLogsOnError: its log's tail (80
    # lines, 2 KiB at most).
    message: str


# The kubelet's reasons for a container that exited by itself. Any other ended it from
# outside (the kernel's OOM killer, a runtime that could not start it), before the job
# could log why, so the reason must come from the kubelet.
_OWN_EXITS = ("", "Completed", "Error")
_WHAT_TO_DO = {
    "OOMKilled": "the ingest pod ran out of memory; raise the Jobs' memory limit (JOB_MEMORY_LIMIT, the "
                 "chart's jobs.resources.limits.memory)",
}
_LAST_LINE_CHARS = 200


def pod_words(end: Termination | None) -> str:
    """What a failed pod's end says went wrong, for a set-aside reason: the kubelet's reason
    if something else ended it (e.g. ``OOMKilled (exit 137): ...``), then the job's error,
    else what its last log line was; '' if there is nothing to say."""
    if end is None:
        return ""
    words = []
    ended_from_outside = end.reason not in _OWN_EXITS
    if ended_from_outside:
        what_to_do = _WHAT_TO_DO.get(end.reason)
        words.append(f"{end.reason} (exit {end.exit_code})" + (f": {what_to_do}" if what_to_do else ""))
    # Stopped from outside, the job never logged its error: an earlier line's error is a
    # warning it had gone on from.
    error = "" if ended_from_outside else last_words(end.message)
    if error:
        words.append(f"the job said: {error}")
    elif last := _last_line(end.message):
        words.append(f"its last log line: {last}")
    return "; ".join(words)


def last_words(termination_message: str) -> str:
    """What a failed pod's termination message (its log's tail) says went wrong: the
    ``error`` of its last JSON log line that has one; '' if none has (a line without one
    is not the job's error, however last it is)."""
    lines = [line.strip() for line in termination_message.splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            error = json.loads(line).get("error")
        except (ValueError, AttributeError):
            error = _error_of_a_cut_line(line)
        if isinstance(error, str) and error:
            return error
    return ""


def _last_line(termination_message: str) -> str:
    """The log tail's last line, briefly: a JSON line's event, else the line, cut."""
    lines = [line.strip() for line in termination_message.splitlines() if line.strip()]
    if not lines:
        return ""
    try:
        event = json.loads(lines[-1]).get("event")
    except (ValueError, AttributeError):
        event = None
    line = event if isinstance(event, str) and event else lines[-1]
    return line if len(line) <= _LAST_LINE_CHARS else line[:_LAST_LINE_CHARS] + "…"


_ERROR_FIELD = '"error": '


def _error_of_a_cut_line(line: str) -> str | None:
    """The error of a JSON log line whose start the 2 KiB tail cut off (a long S3 key, say):
    the field comes late in the job's line, so it is often whole. Inside a JSON string a
    quote is escaped, so the field's name cannot be confused with text."""
    at = line.rfind(_ERROR_FIELD)
    if at < 0:
        return None
    try:
        error, _end = json.JSONDecoder().raw_decode(line, at + len(_ERROR_FIELD))
    except ValueError:
        return None
    return error if isinstance(error, str) else None


def _int(text: str | None, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default
