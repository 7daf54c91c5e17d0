"""helm and the manifest validators work against the test control plane."""

import json
import subprocess

import pytest
from kubernetes.client.rest import ApiException

from tests.support.kube import export_json_schemas
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

    def removed():
        try:
            kube.apps.read_namespaced_deployment("rel-demo", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(removed, timeout=30, what="helm uninstall to remove the Deployment")
    with pytest.raises(ApiException) as gone:
        kube.core.read_namespaced_service("rel-demo", namespace)
    assert gone.value.status == 404


def test_rendered_chart_is_valid_for_this_apiserver(helm, chart, kube_tools, kubeconfig,
                                                     namespace):
    """Strict validation of `helm template` output.

    kubeconform fetches its schemas from the internet by default, which tests cannot reach,
    so the manifests are validated by our own apiserver: `kubectl apply --dry-run=server
    --validate=strict` checks them against the apiserver's OpenAPI schema (unknown or
    duplicate fields are errors) and runs admission, without persisting anything.
    kubeconform itself is checked offline against schemas exported from the same apiserver
    (see test_kubeconform_offline_with_schemas_from_this_apiserver).
    """
    rendered = helm("template", "rel", str(chart), "--namespace", namespace).stdout
    kubectl = [str(kube_tools["kubectl"]), "--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-"],
        input=rendered, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "deployment.apps/rel-demo created (server dry run)" in proc.stdout

    broken = rendered.replace("replicas: 1", "replicas: 1\n  replicaz: 2", 1)
    proc = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-"],
        input=broken, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "replicaz" in proc.stderr


def test_kubeconform_offline_with_schemas_from_this_apiserver(helm, chart, kube, kube_tools,
                                                               tmp_path):
    schemas = export_json_schemas(kube, tmp_path / "schemas")
    rendered = helm("template", "rel", str(chart)).stdout
    kubeconform = [
        str(kube_tools["kubeconform"]), "-strict", "-summary", "-output", "json",
        "-schema-location", str(schemas) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
    ]
    proc = subprocess.run(kubeconform, input=rendered, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)["summary"]
    assert summary["valid"] >= 4 and summary["invalid"] == summary["errors"] == 0, summary

    broken = rendered.replace("replicas: 1", "replicas: 1\n  replicaz: 2", 1)
    proc = subprocess.run(kubeconform, input=broken, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "replicaz" in proc.stdout, proc.stdout
