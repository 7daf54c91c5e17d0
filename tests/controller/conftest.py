"""Controllers in the test process, wired to the test's queues (``sqs``, see
tests/support/uploads.py) and namespace of the real control plane; and worlds of their own
(``new_world``, see worlds.py) whose Jobs' pods run a stand-in that ends when told."""

from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from rates_controller import events, jobs
from rates_controller import kube as kube_boundary
from rates_controller.controller import Controller
from rates_controller.metrics import SET_ASIDE_REASONS, Metrics
from rates_controller.queue import Queue
from rates_controller.settings import JobSettings, Settings
from rates_core import logs
from tests.controller.worlds import STAND_IN, Scenario, SharedNode, World
from tests.support.aws import FAKE_AWS_ENV, unique_name
from tests.support.kube import admission_refusal, webhook_refusal
from tests.support.poll import wait_for
from tests.support.uploads import IMAGE, JOB_SERVICE_ACCOUNT, Queues, new_queues, replace_or_create


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


def set_aside_reasons(metrics: Metrics) -> dict[str, float]:
    """{reason: count} of rates_controller_files_set_aside_total, the reasons counted only."""
    counts = {reason: sample(metrics, "rates_controller_files_set_aside_total", reason=reason)
              for reason in SET_ASIDE_REASONS}
    return {reason: count for reason, count in counts.items() if count}


def creates_refused(kube, namespace: str, controller, message: str, *, webhook: bool = False):
    """While inside, the API server refuses every Job create in this namespace with
    ``message``: an admission policy's (as a rollout's new Job policy or a full quota would),
    or with ``webhook`` an admission webhook's."""
    def in_force() -> bool:
        probe = jobs.manifest(events.UploadedObject("b", "probe.csv", None, None, None), controller.settings.job)
        try:
            kube.batch.create_namespaced_job(namespace, probe, dry_run="All")
        except ApiException as exc:
            return message in str(exc.body)
        return False

    if webhook:
        return webhook_refusal(kube, namespace, message, in_force)
    return admission_refusal(kube, namespace, "CREATE", "false", message, in_force)


def job_quota(kube, namespace: str, jobs_allowed: int) -> None:
    """The namespace's count/jobs.batch quota, as dev and staging have one, in force."""
    body = client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="jobs"),
                                  spec=client.V1ResourceQuotaSpec(hard={"count/jobs.batch": str(jobs_allowed)}))
    replace_or_create(kube.core.replace_namespaced_resource_quota, kube.core.create_namespaced_resource_quota,
                      "jobs", namespace, body)
    wait_for(lambda: (kube.core.read_namespaced_resource_quota("jobs", namespace).status.hard or {})
             .get("count/jobs.batch") == str(jobs_allowed), timeout=30, interval=0.2, what="the quota to count")


@pytest.fixture(scope="session")
def node(kube, tmp_path_factory):
    with SharedNode(kube.api_client, name=unique_name("worlds"), logdir=tmp_path_factory.mktemp("pods")) as node:
        yield node


@pytest.fixture(scope="session")
def stand_in(tmp_path_factory) -> Path:
    """A directory that, first on PYTHONPATH, makes ``python -m rates_ingest`` the stand-in."""
    root = tmp_path_factory.mktemp("stand-in")
    (root / "rates_ingest").mkdir()
    (root / "rates_ingest" / "__init__.py").write_text("")
    (root / "rates_ingest" / "__main__.py").write_text(STAND_IN)
    return root


@pytest.fixture
def new_world(kube, node, stand_in, moto_endpoint, tmp_path):
    """new_world(scenario, **settings overrides) -> a World in a namespace of its own,
    deleted after the test. Messages in flight come back after 2 s unless overridden."""
    logs.configure("INFO", component="controller-test")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    made = []

    def make(scenario: Scenario, **overrides) -> World:
        namespace = unique_name("world")
        kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        made.append(namespace)
        kube.core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=JOB_SERVICE_ACCOUNT)))
        node.namespaces.add(namespace)
        gates = tmp_path / namespace
        gates.mkdir()
        queues = new_queues(sqs)
        # Short, so that a dead controller's messages come back soon (moto honours it), and
        # still far more than a pass takes to delete them.
        defaults = dict(max_attempts=scenario.max_attempts, retry_delay_seconds=0, visibility_timeout=2,
                        poll_wait_seconds=0, job_backoff_limit=0,
                        job_database_url="postgresql://stand-in@127.0.0.1/none",
                        job_env={"PYTHONPATH": str(stand_in), "STAND_IN_GATES": str(gates)})
        settings = settings_for(queues, namespace, moto_endpoint, **{**defaults, **overrides})
        return World(kube, namespace, queues, gates, settings, scenario.exit_code)

    yield make
    for namespace in made:
        kube.core.delete_namespace(namespace)  # the node goes on confirming its pods' deletion
