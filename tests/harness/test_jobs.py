"""Jobs run through the real job controller; their Pods run on the local node."""

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
