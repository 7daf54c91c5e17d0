"""RBAC is enforced for ServiceAccount tokens from the TokenRequest API."""

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.poll import wait_for

pytestmark = pytest.mark.kube

JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "from-sa"},
    "spec": {"template": {"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "x", "command": ["true"]}],
    }}},
}


def test_service_account_needs_a_role_to_create_jobs(kube, namespace):
    kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "runner"}})
    token = kube.core.create_namespaced_service_account_token(
        "runner", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    as_runner = client.BatchV1Api(kube.client_for_token(token))

    with pytest.raises(ApiException) as denied:
        as_runner.create_namespaced_job(namespace, JOB)
    assert denied.value.status == 403
    message = json.loads(denied.value.body)["message"]
    assert f'User "system:serviceaccount:{namespace}:runner" cannot create' in message

    kube.rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "job-creator"},
        "rules": [{"apiGroups": ["batch"], "resources": ["jobs"],
                   "verbs": ["create", "get", "list"]}],
    })
    kube.rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "runner-job-creator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "job-creator"},
        "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}],
    })

    def allowed():  # the authorizer's informer cache catches up within moments
        try:
            return as_runner.create_namespaced_job(namespace, JOB)
        except ApiException as exc:
            if exc.status == 403:
                return None
            raise

    created = wait_for(allowed, timeout=30, what="the RoleBinding to take effect")
    assert created.metadata.name == "from-sa"
    with pytest.raises(ApiException) as still_denied:  # the Role grants nothing else
        client.CoreV1Api(as_runner.api_client).list_namespaced_secret(namespace)
    assert still_denied.value.status == 403
