"""The charts under Helm 4, whose releases are applied server-side unless installed
otherwise, on the real API server.

Under server-side apply, whoever last set a field owns it: the HPA (kube-controller-manager,
through the scale subresource) owns the API's replica count once it has scaled. The API chart
renders the live count (its `lookup`, so that turning autoscaling on never drops a release to
one pod), and Helm 4 then refuses to apply it over the HPA's. A release first installed with
`--server-side=false` stays client-side for every later upgrade and rollback, as under Helm
3, and goes through: what the READMEs say.
"""

import subprocess

import pytest
from kubernetes.client.rest import ApiException

from tests.charts import test_api_chart as api_chart
from tests.charts import test_controller_chart as controller_chart
from tests.support.infra import pinned_tool
from tests.support.kube import helm_runner

pytestmark = pytest.mark.kube

CONFLICT = 'conflict with "kube-controller-manager" with subresource "scale"'


@pytest.fixture(scope="module")
def helm4(kubeconfig, tmp_path_factory):
    run = helm_runner(pinned_tool("helm4"), kubeconfig, tmp_path_factory.mktemp("helm4-home"))
    return lambda *args: run(*args, check=False)


def scale_as(kube, namespace: str, name: str, replicas: int, manager: str) -> None:
    """What the HPA (or `kubectl scale`) does: a write of the Deployment's scale subresource."""
    for _ in range(20):
        scale = kube.apps.read_namespaced_deployment_scale(name, namespace)
        scale.spec.replicas = replicas
        try:
            kube.apps.replace_namespaced_deployment_scale(name, namespace, scale, field_manager=manager)
            return
        except ApiException as exc:
            if exc.status != 409:  # a concurrent write: read again
                raise


def api_releases(helm4, kube, namespace: str, first_install: list[str]) -> subprocess.CompletedProcess:
    """Three prod revisions with the HPA scaling between them, then a rollback to the second;
    the rollback's outcome."""
    api_chart.create_database_secret(kube, namespace, "postgresql://rates_api@db.invalid/rates")
    upgrade = ["upgrade", "--install", api_chart.RELEASE, str(api_chart.CHART), "-n", namespace,
               "-f", str(api_chart.CHART / "values-prod.yaml"), *api_chart.LOCAL_DATABASE, "--no-hooks",
               *api_chart.sets("ingress.checkGroupSettings=false")]
    for revision, (tag, replicas) in enumerate((("v1", 4), ("v2", 6), ("v3", 3))):
        done = helm4(*upgrade, *(first_install if revision == 0 else []), "--set-string", f"image.tag={tag}")
        assert done.returncode == 0, done.stderr
        scale_as(kube, namespace, api_chart.RELEASE, replicas, "kube-controller-manager")
    return helm4("rollback", api_chart.RELEASE, "2", "-n", namespace)


def test_a_release_installed_client_side_rolls_back_past_the_hpa(helm4, kube, namespace):
    rolled = api_releases(helm4, kube, namespace, ["--server-side=false"])
    assert rolled.returncode == 0, rolled.stderr
    # The count live when revision 2 was rendered, until the HPA corrects it.
    assert kube.apps.read_namespaced_deployment(api_chart.RELEASE, namespace).spec.replicas == 4


def test_helm_4s_default_server_side_apply_refuses_a_rollback_once_the_hpa_has_scaled(helm4, kube, namespace):
    # Why the READMEs ask for --server-side=false: should a Helm release stop refusing this,
    # the advice can go.
    rolled = api_releases(helm4, kube, namespace, [])
    assert rolled.returncode != 0 and CONFLICT in rolled.stderr, rolled.stderr


@pytest.mark.parametrize("first_install", [[], ["--server-side=false"]], ids=["server-side", "client-side"])
def test_the_controller_stopped_for_a_deploy_is_upgraded(helm4, kube, namespace, first_install):
    # README, "Database migrations": `kubectl scale --replicas=0` before a deploy.
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "rates-database"},
                                                   "stringData": {"url": "postgresql://rates_ingest@db.invalid/rates"}})
    upgrade = ["upgrade", "--install", controller_chart.RELEASE, str(controller_chart.CHART), "-n", namespace,
               *controller_chart.values_args("dev", controller_chart.FROM_SECRET)]
    installed = helm4(*upgrade, *first_install)
    assert installed.returncode == 0, installed.stderr
    scale_as(kube, namespace, controller_chart.RELEASE, 0, "kubectl")
    upgraded = helm4(*upgrade, "--set-string", "image.tag=v2")
    assert upgraded.returncode == 0, upgraded.stderr
    deployment = kube.apps.read_namespaced_deployment(controller_chart.RELEASE, namespace)
    assert deployment.spec.template.spec.containers[0].image.endswith(":v2")
