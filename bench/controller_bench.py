"""Controller benchmark: how fast uploads become Jobs, against the API server's own limit.

    make bench-controller BENCH_ARGS="--files 300 --rounds 3"

Starts moto_server and a real control plane (etcd, kube-apiserver, kube-controller-manager;
the pinned binaries, built once), uploads ``--files`` objects to a bucket that notifies an
SQS queue, and measures side by side, alternating, in fresh namespaces:

1. **raw create**: the same Job manifests created in a loop with the kubernetes client,
   nothing else: the API server's limit on this machine;
2. **controller**: ``Controller.step()`` from a full queue until every upload has its Job
   (receive, parse, create, delete the message), with MAX_ACTIVE_JOBS above the file count
   so capacity never holds it back.

It prints Jobs/s for each, the ratio controller / raw (medians over the rounds), and the
controller's cost per file. No pod runs: Jobs are created, not executed.
"""

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client  # noqa: E402

from rates_controller import jobs  # noqa: E402
from rates_controller.controller import Controller  # noqa: E402
from rates_controller.events import UploadedObject  # noqa: E402
from rates_controller.kube import JobsApi  # noqa: E402
from rates_controller.metrics import Metrics  # noqa: E402
from rates_controller.queue import Queue  # noqa: E402
from rates_controller.settings import JobSettings, Settings  # noqa: E402
from rates_core import logs  # noqa: E402
from ratesctl.k8s_tools import ensure_tools  # noqa: E402
from tests.support.aws import FAKE_AWS_ENV, start_moto, stop_moto  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.kube import Kube  # noqa: E402


def fresh_namespace(kube: Kube) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def fill_queue(s3, sqs, files: int) -> tuple[str, str]:
    """A bucket notifying a fresh queue, with ``files`` uploads in it; (queue URL, DLQ URL)."""
    tag = uuid.uuid4().hex[:8]
    queue = sqs.create_queue(QueueName=f"uploads-{tag}")["QueueUrl"]
    dead = sqs.create_queue(QueueName=f"dead-{tag}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bucket = f"bench-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    for i in range(files):
        s3.put_object(Bucket=bucket, Key=f"2026/11/prices-{i:05d}.csv", Body=b"orig_code,dest_code,day,price\n")
    return queue, dead


def raw_create(kube: Kube, files: int) -> float:
    namespace = fresh_namespace(kube)
    settings = JobSettings(namespace=namespace, image="rates-ingest:bench")
    manifests = [jobs.manifest(UploadedObject("b", f"k{i}.csv", None, f"e{i}", 1), settings) for i in range(files)]
    started = time.perf_counter()
    for manifest in manifests:
        kube.batch.create_namespaced_job(namespace, manifest)
    return time.perf_counter() - started


def controller_run(kube: Kube, s3, sqs, files: int, log) -> float:
    namespace = fresh_namespace(kube)
    queue_url, dead_url = fill_queue(s3, sqs, files)
    settings = Settings(queue_url=queue_url, dead_letter_queue_url=dead_url,
                        job=JobSettings(namespace=namespace, image="rates-ingest:bench"),
                        max_active_jobs=files + 10, poll_wait_seconds=1, metrics_port=0)
    controller = Controller(settings, JobsApi(kube.api_client, namespace), Queue(sqs, queue_url),
                            Queue(sqs, dead_url), Metrics(), log)
    started = time.perf_counter()
    created = 0
    while created < files:
        controller.step()
        created = controller.metrics.registry.get_sample_value(
            "rates_controller_jobs_created_total", {"attempt": "first"}) or 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="uploads per measurement (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians reported")
    args = parser.parse_args()

    logs.configure("WARNING")
    log = logs.get_logger("bench")
    import os

    os.environ.update(FAKE_AWS_ENV)
    moto, endpoint = start_moto()
    plane = ControlPlane(ensure_tools()).start()
    try:
        kube = Kube.from_kubeconfig(plane.kubeconfig, plane.server, plane.ca_file)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        sqs = boto3.client("sqs", endpoint_url=endpoint)
        raw, ours = [], []
        for round_ in range(1, args.rounds + 1):
            raw.append(raw_create(kube, args.files))
            ours.append(controller_run(kube, s3, sqs, args.files, log))
            print(f"round {round_}: raw create {args.files / raw[-1]:.0f} Jobs/s, "
                  f"controller {args.files / ours[-1]:.0f} Jobs/s", flush=True)
        raw_s, ours_s = statistics.median(raw), statistics.median(ours)
        print(f"\n{args.files} uploads, medians of {args.rounds} rounds:")
        print(f"  raw create   {args.files / raw_s:7.0f} Jobs/s  ({raw_s * 1000 / args.files:.1f} ms per Job)")
        print(f"  controller   {args.files / ours_s:7.0f} Jobs/s  ({ours_s * 1000 / args.files:.1f} ms per file)")
        print(f"  controller / raw create: {raw_s / ours_s:.2f}x the rate")
    finally:
        plane.stop()
        stop_moto(moto)


if __name__ == "__main__":
    main()
