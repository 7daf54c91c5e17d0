"""Controllers in the test process, wired to the test's queues (``sqs``, see
tests/support/uploads.py) and namespace of the real control plane."""

from dataclasses import replace

import boto3
import pytest
from kubernetes.client.rest import ApiException

from rates_controller import events, jobs
from rates_controller import kube as kube_boundary
from rates_controller.controller import Controller
from rates_controller.metrics import Metrics
from rates_controller.queue import Queue
from rates_controller.settings import JobSettings, Settings
from rates_core import logs
from tests.support.aws import FAKE_AWS_ENV
from tests.support.kube import admission_refusal
from tests.support.uploads import IMAGE, JOB_SERVICE_ACCOUNT, Queues


def settings_for(sqs: Queues, namespace: str, moto_endpoint: str, **overrides) -> Settings:
    job_overrides = {k[4:]: overrides.pop(k) for k in list(overrides) if k.startswith("job_")}
    job = JobSettings(namespace=namespace, image=IMAGE, service_account=JOB_SERVICE_ACCOUNT,
                      env={**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint})
    defaults = dict(queue_url=sqs.uploads_url, dead_letter_queue_url=sqs.dead_url, job=replace(job, **job_overrides),
                    poll_wait_seconds=1, visibility_timeout=30, metrics_port=0)
    return Settings(**{**defaults, **overrides})


@pytest.fixture
def make_controller(kube, namespace, sqs, moto_endpoint):
    """make(**settings overrides) -> a Controller for this test's queues and namespace
    (``job_*`` overrides go to the Job settings, e.g. job_backoff_limit=0)."""
    logs.configure("INFO", component="controller-test")
    client = boto3.client("sqs", endpoint_url=moto_endpoint)

    def make(**overrides) -> Controller:
        settings = settings_for(sqs, namespace, moto_endpoint, **overrides)
        jobs_api = kube_boundary.JobsApi(kube.api_client, settings.job.namespace)
        return Controller(settings, jobs_api, Queue(client, settings.queue_url),
                          Queue(client, settings.dead_letter_queue_url), Metrics(),
                          logs.get_logger("rates_controller"))

    return make


def env_of(job) -> dict:
    return {e.name: e.value for e in job.spec.template.spec.containers[0].env if e.value is not None}


def sample(metrics: Metrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def creates_refused(kube, namespace: str, controller, message: str):
    """While inside, the API server refuses every Job create in this namespace with
    ``message`` (an admission policy, as a rollout's new Job policy or a full quota would)."""
    def in_force() -> bool:
        probe = jobs.manifest(events.UploadedObject("b", "probe.csv", None, None, None), controller.settings.job)
        try:
            kube.batch.create_namespaced_job(namespace, probe, dry_run="All")
        except ApiException as exc:
            return message in str(exc.body)
        return False

    return admission_refusal(kube, namespace, "CREATE", "false", message, in_force)
