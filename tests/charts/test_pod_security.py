"""Every pod the platform runs meets the `restricted` Pod Security Standard, as the API
server's own PodSecurity admission judges it: a namespace labelled to enforce it admits
them all. That is the API's pods, its migration hook and `helm test` pod, the controller,
and the ingest Jobs the controller makes, in every environment; so a platform team can
label its namespaces `pod-security.kubernetes.io/enforce=restricted` (charts' READMEs).

Each pod template is created as a bare Pod with a server-side dry run: PodSecurity only
warns about the templates of Deployments and Jobs, but refuses a Pod outright.
"""

import copy

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.charts import test_api_chart as api_chart
from tests.charts import test_controller_chart as controller_chart

pytestmark = pytest.mark.kube

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture
def restricted(kube, namespace) -> str:
    """The test's namespace, enforcing the restricted standard."""
    kube.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    return namespace


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    """The pod template of each workload in ``docs``, by kind and name."""
    templates = {}
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            templates[where] = doc["spec"]["template"]
        elif doc["kind"] == "Pod":
            templates[where] = doc
    return templates


def refusal(kube, namespace: str, template: dict) -> str | None:
    """Why the API server refuses ``template`` as a Pod in ``namespace``; None if it admits it."""
    spec = template["spec"]
    account = spec.get("serviceAccountName")
    if account:  # the ServiceAccount admission plugin wants it to exist
        try:
            kube.core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account)))
        except ApiException as exc:
            if exc.status != 409:
                raise
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "psa-"}, "spec": spec}
    try:
        kube.core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as exc:
        return f"{exc.status}: {exc.body}"
    return None


def api_pods(helm, namespace: str, env: str) -> dict[str, dict]:
    out = helm("template", api_chart.RELEASE, str(api_chart.CHART), "-n", namespace,
               *api_chart.values_args(env)).stdout
    return pod_templates([d for d in yaml.safe_load_all(out) if d])


def controller_pods(helm, namespace: str, env: str) -> dict[str, dict]:
    args = controller_chart.values_args(env, controller_chart.ROLE_ARNS)
    templates = pod_templates(controller_chart.render(helm, *args, namespace=namespace))
    job = controller_chart.release_job(helm, namespace, *args)
    templates[f"ingest Job {job['metadata']['name']}"] = job["spec"]["template"]
    return templates


@pytest.mark.parametrize("env", api_chart.ENVS)
def test_every_pod_meets_the_restricted_standard(kube, helm, restricted, env):
    templates = {**api_pods(helm, restricted, env), **controller_pods(helm, restricted, env)}
    assert {where.split()[0] for where in templates} == {"Deployment", "Job", "Pod", "ingest"}, templates.keys()

    refused = {where: why for where, template in templates.items() if (why := refusal(kube, restricted, template))}

    assert refused == {}


def test_the_namespace_does_enforce_it(kube, helm, restricted):
    # Without this, the test above would pass in a namespace that enforces nothing.
    [deployment] = [t for where, t in api_pods(helm, restricted, "prod").items() if where.startswith("Deployment")]
    lax = copy.deepcopy(deployment)
    lax["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True

    why = refusal(kube, restricted, lax)

    assert why is not None and "violates PodSecurity" in why and "allowPrivilegeEscalation" in why, why
