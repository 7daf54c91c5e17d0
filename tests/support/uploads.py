"""pytest fixtures for what surrounds the controller: real queues fed by real S3
notifications (moto_server), what the Jobs' pods need in the namespace, and the controller
as its own process.

* ``sqs``                 a fresh uploads queue with its dead-letter queue (:class:`Queues`;
                          ``new_queues(client)`` makes more)
* ``uploads``             the test's bucket (``s3``), notifying the uploads queue
* ``job_runtime``         the Jobs' ServiceAccount; returns set_database_url(url) for their Secret
* ``controller_process``  start(**env) -> (process, metrics URL) of ``python -m rates_controller``
"""

import base64
import json
from dataclasses import dataclass

import boto3
import pytest

from tests.support.aws import FAKE_AWS_ENV, unique_name

# The local node runs Pods from this virtualenv; the image name is only recorded.
IMAGE = "rates-ingest:test"
JOB_SERVICE_ACCOUNT = "rates-ingest"


@dataclass
class Queues:
    """A fresh uploads queue with its dead-letter queue."""

    client: object
    uploads_url: str
    uploads_arn: str
    dead_url: str

    def send(self, body: str) -> None:
        self.client.send_message(QueueUrl=self.uploads_url, MessageBody=body)

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the uploads queue, or of ``url``."""
        attrs = self.client.get_queue_attributes(
            QueueUrl=url or self.uploads_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def dead_letters(self) -> list[dict]:
        """Take every message of the dead-letter queue: [{"body", "reason", ...attributes}]."""
        taken = []
        while True:
            got = self.client.receive_message(QueueUrl=self.dead_url, MaxNumberOfMessages=10,
                                              MessageAttributeNames=["All"]).get("Messages", [])
            if not got:
                return taken
            for m in got:
                attrs = {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
                taken.append({"body": m["Body"], **attrs})
                self.client.delete_message(QueueUrl=self.dead_url, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def sqs(moto_endpoint) -> Queues:
    return new_queues(boto3.client("sqs", endpoint_url=moto_endpoint))


def new_queues(client) -> Queues:
    """A fresh uploads queue with its dead-letter queue, for a test that needs several pairs."""
    dead_url = client.create_queue(QueueName=unique_name("dead"))["QueueUrl"]
    dead_arn = _arn(client, dead_url)
    # The redrive policy is the backstop for a message the controller itself cannot get past.
    uploads_url = client.create_queue(QueueName=unique_name("uploads"), Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "20"})})["QueueUrl"]
    return Queues(client, uploads_url, _arn(client, uploads_url), dead_url)


def _arn(client, url: str) -> str:
    return client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


@pytest.fixture
def uploads(s3, sqs):
    """The test's bucket, sending its ObjectCreated events to the uploads queue."""
    s3.client.put_bucket_notification_configuration(Bucket=s3.name, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": sqs.uploads_arn, "Events": ["s3:ObjectCreated:*"]}]})
    return s3


def ingest_jobs(kube, namespace) -> list:
    """The controller's Jobs in ``namespace``, oldest first."""
    from rates_controller.jobs import SELECTOR

    found = kube.batch.list_namespaced_job(namespace, label_selector=SELECTOR).items
    return sorted(found, key=lambda j: (j.metadata.creation_timestamp, j.metadata.name))


@pytest.fixture
def job_runtime(kube, namespace):
    """What the Jobs' pods need in the namespace: their ServiceAccount and the database Secret.
    Returns set_database_url(url), which (re)writes the Secret."""
    from kubernetes import client

    kube.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=JOB_SERVICE_ACCOUNT)))

    def set_database_url(url: str) -> None:
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rates-database"},
                "data": {"url": base64.b64encode(url.encode()).decode()}}
        replace_or_create(kube.core.replace_namespaced_secret, kube.core.create_namespaced_secret,
                          "rates-database", namespace, body)

    return set_database_url


def controller_env(sqs: Queues, namespace: str, moto_endpoint: str, kubeconfig, metrics_port: int) -> dict:
    """The environment of ``python -m rates_controller`` for this test's queues and namespace."""
    import os

    return {**os.environ, "QUEUE_URL": sqs.uploads_url, "DEAD_LETTER_QUEUE_URL": sqs.dead_url,
            "JOB_IMAGE": IMAGE, "JOB_NAMESPACE": namespace, "JOB_SERVICE_ACCOUNT": JOB_SERVICE_ACCOUNT,
            "JOB_ENV": json.dumps({**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}),
            "JOB_ENV_ALLOW_SECRETS": "true",  # moto's fake credentials
            "KUBECONFIG": str(kubeconfig), "METRICS_PORT": str(metrics_port), "POLL_WAIT_SECONDS": "1"}


@pytest.fixture
def controller_process(sqs, namespace, moto_endpoint, kubeconfig, tmp_path):
    """start(**extra env) -> (process, metrics URL): the controller as its own process,
    stopped (SIGTERM, then SIGKILL) after the test; its output is in tmp_path/controller.log."""
    import subprocess
    import sys

    from tests.support.net import free_port, wait_for_http
    from tests.support.proc import stop_process

    started = []

    def start(**extra):
        port = free_port()
        env = {**controller_env(sqs, namespace, moto_endpoint, kubeconfig, port), **extra}
        with open(tmp_path / "controller.log", "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "rates_controller"], env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", process=process)
        return process, url

    yield start
    for process in started:
        stop_process(process)


def replace_or_create(replace, create, name: str, namespace: str, body) -> None:
    """``replace(name, namespace, body)``, or ``create(namespace, body)`` if there is none yet."""
    from kubernetes import client

    try:
        replace(name, namespace, body)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        create(namespace, body)
