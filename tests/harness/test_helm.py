"""helm and the manifest validators work against the test control plane."""

import json
import subprocess

import pytest
from kubernetes.client.rest import ApiException

from tests.support.kube import gone, kubeconform
from tests.support.poll import wait_for

pytestmark = pytest.mark.kube


@pytest.fixture
def chart(helm, tmp_path):
    helm("create", str(tmp_path / "demo"))
    return tmp_path / "demo"


def test_helm_lint_template_install_uninstall(helm, chart, kube, namespace):
    helm("lint", str(chart))
    rendered = helm("template", "rel", str(chart), "--namespace", namespace).stdout
    assert "kind: Deployment" in rendered

    helm("install", "rel", str(chart), "--namespace", namespace, "--kubeconfig",
         str(kube.kubeconfig))
    assert kube.apps.read_namespaced_deployment("rel-demo", namespace).spec.replicas == 1
    assert kube.core.read_namespaced_service("rel-demo", namespace).spec.cluster_ip
    kube.core.read_namespaced_service_account("rel-demo", namespace)
    releases = json.loads(helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("rel", "deployed")]

    helm("uninstall", "rel", "--namespace", namespace, "--kubeconfig", str(kube.kubeconfig))

    wait_for(lambda: gone(lambda: kube.apps.read_namespaced_deployment("rel-demo", namespace)), timeout=30, what="helm uninstall to remove the Deployment")
    with pytest.raises(ApiException) as missing:
        kube.core.read_namespaced_service("rel-demo", namespace)
    assert missing.value.status == 404


def test_rendered_chart_is_valid_for_this_apiserver(helm, kubectl, chart, namespace):
    """Strict validation of `helm template` output.

    kubeconform fetches its schemas from the internet by default, which tests cannot reach,
    so the manifests are validated by our own apiserver: `kubectl apply --dry-run=server
    --validate=strict` checks them against the apiserver's OpenAPI schema (unknown or
    duplicate fields are errors) and runs admission, without persisting anything.
    kubeconform itself is checked offline against schemas exported from the same apiserver
    (see test_kubeconform_offline_with_schemas_from_this_apiserver).
    """
    rendered = helm("template", "rel", str(chart), "--namespace", namespace).stdout
    proc = kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=rendered)
    assert proc.returncode == 0, proc.stderr
    assert "deployment.apps/rel-demo created (server dry run)" in proc.stdout

    broken = rendered.replace("replicas: 1", "replicas: 1\n  replicaz: 2", 1)
    proc = kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=broken)
    assert proc.returncode != 0 and "replicaz" in proc.stderr


def test_kubeconform_offline_with_schemas_from_this_apiserver(helm, chart, kube_tools, schemas):
    rendered = helm("template", "rel", str(chart)).stdout
    summary = kubeconform(kube_tools["kubeconform"], schemas, rendered)
    assert summary["valid"] >= 4 and summary["invalid"] == summary["errors"] == 0, summary

    # The helper asserts success, so the failing case runs kubeconform itself.
    broken = rendered.replace("replicas: 1", "replicas: 1\n  replicaz: 2", 1)
    proc = subprocess.run(
        [str(kube_tools["kubeconform"]), "-strict", "-schema-location",
         str(schemas) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json"],
        input=broken, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "replicaz" in proc.stdout, proc.stdout
