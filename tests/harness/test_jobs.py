"""Jobs run through the real job controller; their Pods run on the local node."""

import json
import sys

import pytest

from tests.support.kube import gone
from tests.support.poll import wait_for

pytestmark = pytest.mark.kube


def job(name: str, exit_code: int, **spec) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "ignored.invalid/python:3.11",
                    "command": ["python", "-c", f"import sys; sys.exit({exit_code})"],
                }],
            }},
        },
    }


def finished(kube, namespace, name):
    def check():
        status = kube.batch.read_namespaced_job_status(name, namespace).status
        for cond in status.conditions or []:
            if cond.type in ("Complete", "Failed") and cond.status == "True":
                return status, cond
        return None

    return wait_for(check, timeout=90, what=f"Job {name} to finish")


def pods_of(kube, namespace, name):
    return kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items


def test_job_completes(kube, namespace, local_node):
    kube.batch.create_namespaced_job(namespace, job("ok", 0))
    status, cond = finished(kube, namespace, "ok")
    assert cond.type == "Complete", local_node.errors
    assert status.succeeded == 1
    [pod] = pods_of(kube, namespace, "ok")
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_job_fails_after_backoff_limit(kube, namespace, local_node):
    kube.batch.create_namespaced_job(namespace, job("bad", 1, backoffLimit=1))
    status, cond = finished(kube, namespace, "bad")
    assert (cond.type, cond.reason) == ("Failed", "BackoffLimitExceeded")
    assert status.failed == 2
    pods = pods_of(kube, namespace, "bad")
    assert len(pods) == 2
    assert {p.status.container_statuses[0].state.terminated.exit_code for p in pods} == {1}


def test_pod_failure_policy_fails_job_on_exit_code(kube, namespace, local_node):
    policy = {"rules": [{"action": "FailJob",
                         "onExitCodes": {"containerName": "main", "operator": "In",
                                         "values": [2]}}]}
    kube.batch.create_namespaced_job(
        namespace, job("fatal", 2, backoffLimit=6, podFailurePolicy=policy)
    )
    status, cond = finished(kube, namespace, "fatal")
    assert (cond.type, cond.reason) == ("Failed", "PodFailurePolicy")
    assert status.failed == 1
    assert len(pods_of(kube, namespace, "fatal")) == 1


def test_ttl_after_finished_deletes_job(kube, namespace, local_node):
    kube.batch.create_namespaced_job(namespace, job("short-lived", 0, ttlSecondsAfterFinished=0))

    wait_for(lambda: gone(lambda: kube.batch.read_namespaced_job("short-lived", namespace)), timeout=90, what="the TTL controller to delete the finished Job")


def test_local_node_runs_pods_from_the_venv_with_their_env(kube, namespace, local_node):
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"},
                                                   "stringData": {"password": "s3cret"}})
    body = job("env", 0)
    body["spec"]["template"]["spec"]["containers"][0].update(
        command=["python", "-c"],
        args=["import os, sys; print(sys.prefix, os.environ['GREETING'], "
              "os.environ['PASSWORD'], os.environ['POD_NAMESPACE'])"],
        env=[
            {"name": "GREETING", "value": "hello"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                "key": "password"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.namespace"}}},
        ],
    )
    kube.batch.create_namespaced_job(namespace, body)
    _, cond = finished(kube, namespace, "env")
    assert cond.type == "Complete", local_node.errors
    [pod] = pods_of(kube, namespace, "env")
    assert local_node.logs(namespace, pod.metadata.name).split() == [
        sys.prefix, "hello", "s3cret", namespace
    ]


WHO_AM_I = ("import json, os, sys\n"
            "try:\n    open('/opt/venv/x', 'w').close(); wrote = True\nexcept OSError as e:\n    wrote = e.strerror\n"
            "print(json.dumps({'uid': os.getuid(), 'prefix': sys.prefix, 'wrote': wrote, 'argv': sys.argv[1:]}))")


@pytest.mark.parametrize("security, expected", [
    ({"runAsUser": 12345, "runAsGroup": 12345, "readOnlyRootFilesystem": True},
     {"uid": 12345, "prefix": "/opt/venv", "wrote": "Read-only file system"}),
    ({"runAsUser": 0}, {"uid": 0, "prefix": "/opt/venv", "wrote": True}),  # the image's copy, not the cache's
])
def test_a_pod_of_one_of_our_images_runs_as_that_image_with_its_security_context(
        kube, namespace, local_node, pod_images, needs_images, security, expected):
    manifest = job("ours", 0)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container.update(image="registry.invalid/team/rates-ingest:1.2.3@sha256:" + "0" * 64, securityContext=security,
                     command=["python", "-c", WHO_AM_I], args=["$(GREETING)"], env=[{"name": "GREETING", "value": "hi"}])
    kube.batch.create_namespaced_job(namespace, manifest)
    _status, cond = finished(kube, namespace, "ours")
    [pod] = pods_of(kube, namespace, "ours")
    log = local_node.logs(namespace, pod.metadata.name)
    assert cond.type == "Complete", log
    assert json.loads(log.strip().splitlines()[-1]) == {**expected, "argv": ["hi"]}
    assert not (pod_images(pod).rootfs / "opt" / "venv" / "x").exists()  # the built image is as it was


def test_a_root_user_under_run_as_non_root_is_refused(kube, namespace, local_node, needs_images):
    manifest = job("root", 0)
    manifest["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    manifest["spec"]["template"]["spec"]["containers"][0].update(
        image="rates-ingest:1", securityContext={"runAsUser": 0})
    kube.batch.create_namespaced_job(namespace, manifest)

    def waiting():
        pods = pods_of(kube, namespace, "root")
        statuses = pods[0].status.container_statuses if pods else None
        return statuses and statuses[0].state.waiting

    state = wait_for(waiting, timeout=30, what="the container to be refused")
    assert state.reason == "CreateContainerConfigError"
    assert state.message == "container has runAsNonRoot and image will run as root"
    [pod] = pods_of(kube, namespace, "root")
    assert pod.status.phase == "Pending"  # as the kubelet leaves it: the Job neither fails nor retries


def test_a_pod_of_another_image_runs_from_the_virtualenv(kube, namespace, local_node):
    manifest = job("theirs", 0)
    manifest["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "python", "-c", "import sys; print(sys.prefix)"]
    kube.batch.create_namespaced_job(namespace, manifest)
    _status, cond = finished(kube, namespace, "theirs")
    [pod] = pods_of(kube, namespace, "theirs")
    assert local_node.logs(namespace, pod.metadata.name).strip() == sys.prefix
