"""The Kubernetes API, seen from the controller: its Jobs in one namespace.

``ApiException`` and connection errors are mapped here, once: 409 is AlreadyExists (on
create: a duplicate delivery) or Conflict (on a write that names the version it read:
the object changed since), 404 NotFound, 400/422 mean the Job itself is unacceptable
(retrying cannot help) unless an admission policy or webhook said so, a 403 that says
"exceeded quota" is QuotaFull, 429 is Throttled (tried again inside the call, as client-go
does), and everything else - other 403s included - may pass on retry.
"""

import contextlib
import json
import time

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from rates_core.env import ConfigError
from rates_core.errors import PermanentError, TemporaryError

from . import jobs

# A call gives up on connecting after 5 s, and on an answer that stops for 15 s, so a hung
# API server cannot stall the loop. (An answer that trickles a byte at a time can: only the
# liveness probe, on a loop that has not ended a pass, ends that.) One try each
# (api_client): the loop tries again itself, except when throttled.
REQUEST_TIMEOUT = (5, 15)
# API Priority and Fairness answers 429, with Retry-After (usually 1 s), to a client over
# its share: the call is tried again after that wait, up to this many times, so that one
# refusal does not send a whole batch of messages back, each delivery counted.
THROTTLED_TRIES = 4
THROTTLED_WAIT_MAX_S = 5
_MERGE_PATCH = "application/merge-patch+json"


def api_client() -> client.ApiClient:
    """In a pod, its service account; elsewhere KUBECONFIG (or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError, yaml.YAMLError, TypeError, ValueError, AttributeError) as exc:
            # The client reads the file as YAML and walks it without checking its shape: a
            # file that is not a kubeconfig fails with whatever the walk meets first.
            raise ConfigError(f"no Kubernetes configuration: not in a pod, and no usable KUBECONFIG: "
                              f"{type(exc).__name__}: {exc}") from None
    # urllib3 would try a GET or LIST up to four times, each for the whole REQUEST_TIMEOUT:
    # against a hung API server one pass over a few ended Jobs took minutes.
    configuration.retries = 0
    return client.ApiClient(configuration)


class AlreadyExists(TemporaryError):
    """409: the object exists (for a Job: a duplicate delivery, not a failure)."""


class Conflict(TemporaryError):
    """409 on a write made on a version that is no longer the object's (e.g. another
    controller labelled the Job since it was listed)."""


class NotFound(TemporaryError):
    """404: the object, or its namespace, does not exist (yet)."""


# An admission refusal can pass: during a rollout the old pod still makes Jobs with the
# settings that the new release's policy (the chart's rbac.jobPolicy) refuses, and a
# webhook's policy (Kyverno's, say) may be mended. The API server words a webhook's
# refusal as below, and answers it 400 unless the webhook gave a code.
_ADMISSION_REFUSALS = ("ValidatingAdmissionPolicy", 'admission webhook "')


class Throttled(TemporaryError):
    """429: the API server asks the client to slow down and try again after ``retry_after``."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class Unreachable(TemporaryError):
    """No answer: the connection was refused or cut, or timed out. Whatever the next call
    is, it would most likely wait as long for nothing."""


class QuotaFull(TemporaryError):
    """A ResourceQuota of the namespace has no room for another Job (count/jobs.batch, which
    counts ended Jobs too): it passes once Jobs go, at their TTL. Quotas on pods are met by
    the Job controller when it makes the pod, not here."""


@contextlib.contextmanager
def classified(what: str):
    try:
        yield
    except ApiException as exc:
        detail = f"{what}: {exc.status} {exc.reason}: {_message(exc)}"
        if exc.status in (400, 422) and not any(marker in detail for marker in _ADMISSION_REFUSALS):
            raise PermanentError(detail) from exc
        if exc.status == 409:
            raise (Conflict if _reason(exc) == "Conflict" else AlreadyExists)(detail) from exc
        if exc.status == 403 and "exceeded quota" in detail:
            raise QuotaFull(detail) from exc
        if exc.status == 429:
            raise Throttled(detail, _retry_after(exc)) from exc
        raise (NotFound if exc.status == 404 else TemporaryError)(detail) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Unreachable(f"{what}: Kubernetes API unreachable: {type(exc).__name__}: {exc}") from exc


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.body or "")[:300]


def _retry_after(exc: ApiException) -> float:
    try:
        return min(max(float((exc.headers or {}).get("Retry-After", 1)), 0.0), THROTTLED_WAIT_MAX_S)
    except (TypeError, ValueError):  # an HTTP date, which the API server does not send
        return 1.0


def _reason(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["reason"]
    except (TypeError, ValueError, KeyError):
        return ""


class JobsApi:
    """The controller's Jobs (those with its labels) in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self.namespace = namespace

    def _call(self, what: str, call):
        """``call()``, classified; a throttled call is tried again after the wait asked for.
        (A 429 means the request was not acted on, so a create is tried again safely.)"""
        for tried in range(1, THROTTLED_TRIES + 1):
            try:
                with classified(what):
                    return call()
            except Throttled as exc:
                if tried == THROTTLED_TRIES:
                    raise
                time.sleep(exc.retry_after)

    def create(self, manifest: dict) -> bool:
        """Create the Job; False if a Job of that name already exists."""
        name = manifest["metadata"]["name"]

        def create():
            # The created Job is read but not turned into objects, which costs more than the call.
            response = self._batch.create_namespaced_job(self.namespace, manifest, _preload_content=False,
                                                         _request_timeout=REQUEST_TIMEOUT)
            response.read()
            response.release_conn()
        try:
            self._call(f"creating Job {name}", create)
        except AlreadyExists:
            return False
        return True

    def get(self, name: str):
        """The Job called ``name``, or None."""
        try:
            return self._call(f"reading Job {name}", lambda: self._batch.read_namespaced_job(
                name, self.namespace, _request_timeout=REQUEST_TIMEOUT))
        except NotFound:
            return None

    def validate(self, manifest: dict) -> None:
        """Let the API server check a Job without creating it (PermanentError if invalid)."""
        self._call("checking the Job settings", lambda: self._batch.create_namespaced_job(
            self.namespace, manifest, dry_run="All", _request_timeout=REQUEST_TIMEOUT))

    def unhandled(self) -> list:
        """The controller's Jobs that it has not acted on since they ended (or that still run)."""
        return self._call("listing Jobs", lambda: self._batch.list_namespaced_job(
            self.namespace, label_selector=jobs.UNHANDLED, _request_timeout=REQUEST_TIMEOUT).items)

    def mark_handled(self, name: str, how: str, ttl_seconds: int, resource_version: str | None = None) -> None:
        """Label the Job with what was done, and let the TTL controller delete it from now on;
        with ``resource_version``, only if the Job is still at that version (else Conflict)."""
        metadata = {"labels": {jobs.HANDLED: how}}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        body = {"metadata": metadata, "spec": {"ttlSecondsAfterFinished": ttl_seconds}}
        self._call(f"labelling Job {name}", lambda: self._batch.patch_namespaced_job(
            name, self.namespace, body, _content_type=_MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT))

    def termination_message(self, job_name: str) -> jobs.Termination | None:
        """How the Job's last failed pod ended: the kubelet's reason, the exit code and the
        termination message (its last log lines); None if no pod of it is left that failed.
        (Named for the message, which was all it gave once; the fault tests name it so.)"""
        pods = self._call(f"listing the pods of Job {job_name}", lambda: self._core.list_namespaced_pod(
            self.namespace, label_selector=f"job-name={job_name}", _request_timeout=REQUEST_TIMEOUT).items)
        ends = []
        for pod in pods:
            for status in pod.status.container_statuses or []:
                ended = status.state and status.state.terminated
                # Also without a message: an OOM kill of a pod that had logged nothing.
                if status.name == jobs.CONTAINER and ended and ended.exit_code:
                    ends.append((ended.finished_at or ended.started_at,
                                 jobs.Termination(reason=ended.reason or "", exit_code=ended.exit_code,
                                                  message=(ended.message or "").strip())))
        return max(ends, key=lambda e: e[0].timestamp() if e[0] else 0)[1] if ends else None
