"""The Kubernetes versions the charts claim (Chart.yaml's kubeVersion) serve everything they
render. Helm's check of kubeVersion is all that stands between an older cluster and an
install that fails half way (a kind the server does not know), or one that quietly loses a
field (an older server drops the fields it does not know from a Job or a PodDisruptionBudget).

The tests run one Kubernetes (versions.json), so what older ones serve is a table here: the
first minor that serves each kind at the version rendered, and each newer field on by
default. A kind or field the charts start to render must be added to it.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.charts import test_api_chart as api_chart
from tests.charts import test_controller_chart as controller_chart
from tests.support.infra import TERRAFORM_ROOT, parse_hcl

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]

# (apiVersion, kind) -> the first minor that serves it; None for a custom resource, which
# the cluster's add-ons serve (Prometheus Operator), whatever its Kubernetes.
KINDS = {
    ("v1", "ConfigMap"): (1, 0), ("v1", "Secret"): (1, 0), ("v1", "Service"): (1, 0),
    ("v1", "ServiceAccount"): (1, 0), ("v1", "Pod"): (1, 0),
    ("apps/v1", "Deployment"): (1, 9),
    ("batch/v1", "Job"): (1, 2),
    ("rbac.authorization.k8s.io/v1", "Role"): (1, 8),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (1, 8),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): (1, 8),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (1, 8),
    ("networking.k8s.io/v1", "NetworkPolicy"): (1, 7),
    ("networking.k8s.io/v1", "Ingress"): (1, 19),
    ("policy/v1", "PodDisruptionBudget"): (1, 21),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (1, 23),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): (1, 30),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): (1, 30),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): None,
    ("monitoring.coreos.com/v1", "PrometheusRule"): None,
}
# Field names -> the first minor whose API server keeps them by default (beta on by default,
# or GA); one that an older server would drop without a word.
FIELDS = {
    "ttlSecondsAfterFinished": (1, 23),
    "podFailurePolicy": (1, 26),
    "unhealthyPodEvictionPolicy": (1, 27),
    "matchLabelKeys": (1, 27),
    "appArmorProfile": (1, 30),
    "backoffLimitPerIndex": (1, 29),
    "managedBy": (1, 32),
    "successPolicy": (1, 31),
    "podReplacementPolicy": (1, 29),
}
# What is free text rather than API fields: names in there are not the server's.
_NOT_FIELDS = {"annotations", "labels", "data", "stringData", "matchLabels", "selector"}


def lower_bound(chart: Path) -> tuple[int, int]:
    constraint = yaml.safe_load((chart / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.0-0", constraint)
    assert match, f"{chart.name}: kubeVersion {constraint!r} is not of the form >=1.N.0-0"
    return int(match.group(1)), int(match.group(2))


def field_names(node, seen: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            seen.add(key)
            if key not in _NOT_FIELDS:
                field_names(value, seen)
    elif isinstance(node, list):
        for item in node:
            field_names(item, seen)
    return seen


def api_docs(helm, kube_version: str) -> list[dict]:
    docs = []
    for env in api_chart.ENVS:
        out = helm("template", api_chart.RELEASE, str(api_chart.CHART), *api_chart.values_args(env),
                   "--kube-version", kube_version).stdout
        docs += [d for d in yaml.safe_load_all(out) if d]
    return docs


def controller_docs(helm, kube_version: str) -> list[dict]:
    docs = []
    for env in controller_chart.ENVIRONMENTS:
        args = [*controller_chart.values_args(env, controller_chart.ROLE_ARNS), "--kube-version", kube_version]
        docs += controller_chart.render(helm, *args)
        docs.append(controller_chart.release_job(helm, "rates", *args))  # what the controller creates
    return docs


CHARTS = {"rates-api": (api_chart.CHART, api_docs), "rates-controller": (controller_chart.CHART, controller_docs)}


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_the_oldest_kubernetes_a_chart_admits_serves_all_it_renders(helm, name):
    chart, docs_of = CHARTS[name]
    major, minor = lower_bound(chart)
    needs = {}
    for doc in docs_of(helm, f"{major}.{minor}.0"):
        key = (doc["apiVersion"], doc["kind"])
        assert key in KINDS, f"{name} renders {key}: add the first Kubernetes that serves it to KINDS"
        if KINDS[key]:
            needs[f"{key[0]} {key[1]}"] = KINDS[key]
        for field in field_names(doc, set()) & FIELDS.keys():
            needs[f"{doc['kind']} field {field}"] = FIELDS[field]
    newer = {what: f"1.{v[1]}" for what, v in needs.items() if v > (major, minor)}
    assert not newer, f"{name} admits Kubernetes {major}.{minor} but renders what needs newer: {newer}"


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_an_older_kubernetes_is_refused_before_anything_is_installed(helm, name):
    chart, _ = CHARTS[name]
    major, minor = lower_bound(chart)
    args = (api_chart.values_args("dev") if name == "rates-api"
            else controller_chart.values_args("dev", controller_chart.ROLE_ARNS))
    result = helm("template", name, str(chart), *args, "--kube-version", f"{major}.{minor - 1}.9", check=False)
    assert result.returncode != 0
    assert "incompatible with Kubernetes" in result.stderr, result.stderr


def test_terraform_s_default_kubernetes_is_the_one_the_tests_run():
    """The clusters Terraform makes by default run the Kubernetes minor the tests run, and one
    that both charts admit."""
    tested = json.loads((REPO / "versions.json").read_text())
    assert tested["kubernetes"].startswith(tested["kubernetes_minor"] + ".")
    for stack in ("cluster", "modules/eks"):
        variables = parse_hcl((TERRAFORM_ROOT / stack / "variables.tf").read_text())["variable"]
        [default] = [v["kubernetes_version"]["default"] for v in variables if "kubernetes_version" in v]
        assert default == tested["kubernetes_minor"], f"terraform-eks/{stack}: {default}"
    minor = tuple(int(p) for p in tested["kubernetes_minor"].split("."))
    for name, (chart, _) in CHARTS.items():
        assert lower_bound(chart) <= minor, name
