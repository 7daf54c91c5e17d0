"""checkov, a standard misconfiguration scanner, over what is deployed: the three
Dockerfiles and every environment's rendered charts. Every check it runs must pass or be
excepted here, by name, with the reason."""

import fnmatch
import json

import pytest

from tests.charts.test_api_chart import FROM_TERRAFORM as API_FROM_TERRAFORM
from tests.charts.test_controller_chart import CHART, ENVIRONMENTS, RELEASE, values_args
from tests.support.infra import REPO_ROOT, run

DOCKERFILES = ["api/Dockerfile", "ingest-job/Dockerfile", "controller/Dockerfile"]

DOCKERFILE_SKIPS = {
    "CKV_DOCKER_2": "no HEALTHCHECK: Kubernetes ignores it; the API chart's probes and the Jobs' exit codes "
                    "say whether a container is well",
}


def scan(checkov, framework: str, files: list, skips: dict[str, str]) -> dict:
    args = [checkov, "--framework", framework, "--output", "json", "--skip-download"]
    for path in files:
        args += ["--file", path]
    if skips:
        args += ["--skip-check", ",".join(skips)]
    result = run(args, REPO_ROOT, timeout=600)
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def failures(report: dict) -> list[str]:
    return [f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}"
            for c in report["results"]["failed_checks"]]


def test_the_dockerfiles_pass_checkov(checkov):
    report = scan(checkov, "dockerfile", DOCKERFILES, DOCKERFILE_SKIPS)
    assert failures(report) == []
    # Each file was read, and the checks that matter here ran and passed on each.
    passed = {(c["file_path"].lstrip("/"), c["check_id"]) for c in report["results"]["passed_checks"]}
    for dockerfile in DOCKERFILES:
        assert (dockerfile, "CKV_DOCKER_3") in passed  # a USER, so not root
        assert (dockerfile, "CKV_DOCKER_8") in passed  # the last USER is not root


# What checkov reports on the rendered charts that is so on purpose: (check, resource
# pattern "Kind.namespace.name") -> why. Anything else it reports fails the test.
CHART_EXCEPTIONS = {
    ("CKV_K8S_43", "*"): "images by tag, not digest: the repositories' tags are immutable (terraform-eks ECR), "
                         "and image.digest is there for who wants digests",
    ("CKV_K8S_15", "*"): "imagePullPolicy IfNotPresent: with immutable tags Always only adds a registry round trip "
                         "to every pod start",
    ("CKV_K8S_11", "*"): "no CPU limits: requests reserve CPU and drive the HPA; a limit only throttles a busy "
                         "pod while the node has CPU to spare",
    # (the API itself reads no Secret: every environment logs it in with IAM tokens)
    ("CKV_K8S_35", "Job.*.rates-api-migrate"): "DATABASE_URL from a secretKeyRef env var: the migration hook "
                                               "reads its settings from the environment",
    ("CKV_K8S_38", "Deployment.*.rates-controller"): "the controller mounts its token: it creates Jobs",
    ("CKV_K8S_9", "Deployment.*.rates-controller"): "no readiness probe: the controller serves no traffic; its "
                                                    "liveness probe restarts a stuck loop",
    ("CKV_K8S_8", "Pod.*-test-*"): "helm test pods run one request and exit",
    ("CKV_K8S_9", "Pod.*-test-*"): "helm test pods run one request and exit",
    ("CKV2_K8S_6", "Pod.*-test-*"): "helm test pods are left out of the NetworkPolicies so that they can "
                                    "reach the Service they test",
}


@pytest.fixture(scope="module")
def rendered_charts(helm, tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    api = REPO_ROOT / "charts" / "rates-api"
    for env in ENVIRONMENTS:
        (out / f"rates-api-{env}.yaml").write_text(helm(
            "template", "rates-api", str(api), "--namespace", env, "-f", str(api / f"values-{env}.yaml"),
            *API_FROM_TERRAFORM).stdout)
        (out / f"rates-controller-{env}.yaml").write_text(helm(
            "template", RELEASE, str(CHART), "--namespace", env, *values_args(env)).stdout)
    return out


def _excused(check: dict) -> bool:
    return any(check["check_id"] == check_id and fnmatch.fnmatch(check["resource"], pattern)
               for check_id, pattern in CHART_EXCEPTIONS)


@pytest.mark.kube  # helm
def test_every_environment_s_charts_pass_checkov_but_for_named_exceptions(checkov, rendered_charts):
    files = sorted(rendered_charts.glob("*.yaml"))
    report = scan(checkov, "kubernetes", files, {})
    unexcused = [c for c in report["results"]["failed_checks"] if not _excused(c)]
    assert [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in unexcused] == []
    # Every exception still has something to excuse, and what matters most passed everywhere.
    failed = report["results"]["failed_checks"]
    for check_id, pattern in CHART_EXCEPTIONS:
        assert any(c["check_id"] == check_id and fnmatch.fnmatch(c["resource"], pattern) for c in failed), \
            f"{check_id} {pattern} no longer needs its exception"
    passed = {(c["check_id"], c["resource"]) for c in report["results"]["passed_checks"]}
    for env in ENVIRONMENTS:
        for kind, name in (("Deployment", "rates-api"), ("Deployment", "rates-controller"), ("Job", "rates-api-migrate")):
            for check_id in ("CKV_K8S_22",   # read-only root filesystem
                             "CKV_K8S_23",   # runAsNonRoot
                             "CKV_K8S_20",   # no privilege escalation
                             "CKV_K8S_37"):  # capabilities dropped
                assert (check_id, f"{kind}.{env}.{name}") in passed, (check_id, kind, env, name)
            # A NetworkPolicy selects its pods (this graph check names a pod by its labels too).
            assert any(check_id == "CKV2_K8S_6" and resource.startswith(f"Pod.{env}.{name}.")
                       for check_id, resource in passed), (env, name)
