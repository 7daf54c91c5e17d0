"""The controller's Helm chart (charts/rates-controller) against the real tools and API server.

Rendering, linting and the values schema; the rendered manifests validated by kubeconform
and by the API server; install, upgrade and uninstall; and the controller's RBAC proven
with its own ServiceAccount token, first call by call and then by running the real
controller process with the Deployment's own environment until a file's Job has failed and
the file has been set aside (which takes every right the Role grants).

The NetworkPolicies are checked as rendered and as admitted by the API server, and for
what they would allow (tests/support/netpol.py); the test control plane has no network
plugin, so nothing enforces them here.
"""

import base64
import copy
import json
import re
import signal
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from rates_controller import jobs as controller_jobs
from rates_controller import settings as controller_settings
from rates_controller.events import UploadedObject
from rates_controller.settings import JobSettings, Settings
# The controller tests' queue fixtures, shared rather than copied.
from tests.support.uploads import ingest_jobs
from tests.support.images import PodIdentity, service_account_for_container
from tests.support.kube import gone, kubeconform
from tests.support.net import free_port, wait_for_http
from tests.support.netpol import Pod, address, connection_allowed, egress_allowed, ingress_allowed, pod_of, selects
from tests.support.poll import wait_for
from tests.support.proc import stop_process

pytestmark = pytest.mark.kube

CHART = Path(__file__).resolve().parents[2] / "charts" / "rates-controller"
RELEASE = "rates-controller"
ENVIRONMENTS = ["dev", "staging", "prod"]
# What every install passes with --set (account-specific, so in no values file).
REQUIRED = {
    "queue.url": "https://sqs.eu-west-1.amazonaws.com/123456789012/rates-uploads",
    "queue.deadLetterUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/rates-uploads-dead",
    "aws.region": "eu-west-1",
}
# What Terraform's controller_values adds for an environment, whose values file turns on
# IAM authentication (the Jobs' login, no password).
FROM_TERRAFORM = {"database.url": "postgresql://rates_ingest@db.example.internal:5432/rates?sslmode=require",
                  "queue.bucket": "example-rates-prices", "queue.prefix": "prices/"}
# The Secret's URL instead, as a cluster without RDS has it (k8s/local, the tests' own).
FROM_SECRET = {"database.url": None, "database.iamAuth": False}
ROLE_ARNS = {
    "serviceAccount.roleArn": "arn:aws:iam::123456789012:role/rates-controller",
    "jobs.serviceAccount.roleArn": "arn:aws:iam::123456789012:role/rates-ingest",
}
IRSA = "eks.amazonaws.com/role-arn"
CHART_LABEL = "rates-controller-" + yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]


# --- helpers ------------------------------------------------------------------------


def values_args(environment: str | None = None, sets: dict | None = None, json_sets: dict | None = None) -> list[str]:
    """-f for the environment's values file, and --set for REQUIRED (and FROM_TERRAFORM with
    an environment) updated by ``sets`` (a value of None leaves the key out)."""
    args = ["-f", str(CHART / f"values-{environment}.yaml")] if environment else []
    for key, value in {**REQUIRED, **(FROM_TERRAFORM if environment else {}), **(sets or {})}.items():
        if value is not None:
            args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    for key, value in (json_sets or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def render(helm, *args: str, namespace: str = "rates") -> list[dict]:
    out = helm("template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    [found] = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def merged_values(environment: str, chart: Path = CHART) -> dict:
    """``chart``'s values.yaml with the environment's file over it, as helm merges them."""
    def merge(base, over):
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    base = yaml.safe_load((chart / "values.yaml").read_text())
    return merge(base, yaml.safe_load((chart / f"values-{environment}.yaml").read_text()) or {})


_KUBELET_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_env(container: dict, namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it (fieldRef to the namespace only):
    $$ is $, and $(VAR) is an earlier variable's value."""
    env = {}
    for var in container["env"]:
        if "valueFrom" not in var:
            value = var.get("value", "")  # the API server leaves out an empty value
            env[var["name"]] = _KUBELET_REFERENCE.sub(
                lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", var
            env[var["name"]] = namespace
    return env


def setting_names() -> set[str]:
    """Every variable that rates_controller/settings.py documents."""
    names = re.findall(r"^([A-Z]+_[A-Z_]+(?:, [A-Z]+_[A-Z_]+)*)\s", controller_settings.__doc__, re.M)
    return {n for group in names for n in group.split(", ")}


def token_for(kube, namespace: str, service_account: str) -> str:
    return kube.core.create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 600}}).status.token


def status_of(call) -> int:
    try:
        call()
    except ApiException as exc:
        return exc.status
    return 200


def yaml_app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def release_job(helm, namespace: str, *args: str, key: str = "2024/prices.csv", uploaded_by: str | None = None) -> dict:
    """A Job as the controller of the release rendered with ``args`` makes it: the Job
    settings of its Deployment's environment."""
    [deployment] = [d for d in render(helm, *args, namespace=namespace) if d["kind"] == "Deployment"]
    settings = Settings.from_env(container_env(deployment["spec"]["template"]["spec"]["containers"][0], namespace))
    obj = UploadedObject(bucket="rates-uploads", key=key, version_id=None, etag="abc", size=1,
                         uploaded_by=uploaded_by)
    return controller_jobs.manifest(obj, settings.job)


def sample_job(namespace: str, key: str = "2024/prices.csv") -> dict:
    """A Job as the controller makes it with the chart's default Job settings."""
    obj = UploadedObject(bucket="rates-uploads", key=key, version_id=None, etag="abc", size=1)
    return controller_jobs.manifest(obj, JobSettings(namespace=namespace, image=f"rates-ingest:{yaml_app_version()}"))


# --- rendering, lint, schema ------------------------------------------------------------


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_lint_strict_passes(helm, environment):
    proc = helm("lint", "--strict", str(CHART), *values_args(environment, ROLE_ARNS))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


def test_every_value_is_documented_in_the_readme():
    def leaves(values: dict, prefix: str = ""):
        for key, value in values.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    table = {m for m in re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.M)}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    undocumented = [leaf for leaf in leaves(values)
                    if not any(leaf == row or leaf.startswith(row + ".") for row in table)]
    assert undocumented == []


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_rendered_manifests_pass_kubeconform_and_a_server_dry_run(helm, kubectl, kube_tools, schemas,
                                                                  namespace, environment):
    args = values_args(environment, ROLE_ARNS)
    rendered = helm("template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    # Two ServiceAccounts and two NetworkPolicies (controller, Jobs), the test hook's Pod,
    # the two Job policies (what the controller writes, what nobody deletes) and their
    # bindings; and no Secret, ever.
    assert kinds == ["Deployment", "NetworkPolicy", "NetworkPolicy", "Pod", "Role", "RoleBinding", "Service",
                     "ServiceAccount", "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicyBinding"]

    summary = kubeconform(kube_tools["kubeconform"], schemas, rendered)
    assert summary == {"valid": len(kinds), "invalid": 0, "errors": 0, "skipped": 0}, summary

    proc = kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=rendered)
    assert proc.returncode == 0, proc.stderr
    for what in ("deployment.apps/rates-controller", "serviceaccount/rates-controller",
                 "serviceaccount/rates-ingest", "role.rbac.authorization.k8s.io/rates-controller",
                 "rolebinding.rbac.authorization.k8s.io/rates-controller", "service/rates-controller",
                 "pod/rates-controller-test-healthz", "networkpolicy.networking.k8s.io/rates-controller",
                 "networkpolicy.networking.k8s.io/rates-controller-ingest",
                 f"validatingadmissionpolicy.admissionregistration.k8s.io/{namespace}-rates-controller-jobs",
                 f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{namespace}-rates-controller-jobs"):
        assert f"{what} created (server dry run)" in proc.stdout, proc.stdout


@pytest.mark.parametrize("sets, error", [
    pytest.param({"queue.url": None}, "at '/queue/url'", id="no-queue-url"),
    pytest.param({"queue.deadLetterUrl": "sqs://uploads-dead"}, "at '/queue/deadLetterUrl'", id="not-a-queue-url"),
    pytest.param({"controller.maxActiveJobs": 0}, "at '/controller/maxActiveJobs': minimum",
                 id="max-active-jobs-0"),
    pytest.param({"controller.maxActivJobs": 2}, "additional properties 'maxActivJobs' not allowed",
                 id="unknown-key"),
    pytest.param({"replicaCount": 2}, "additional properties 'replicaCount' not allowed", id="unknown-top-level-key"),
    pytest.param({"controller.pollWaitSeconds": 21}, "at '/controller/pollWaitSeconds': maximum",
                 id="poll-wait-over-20"),
    pytest.param({"controller.pollWaitSeconds": 0}, "at '/controller/pollWaitSeconds': minimum", id="poll-wait-0"),
    pytest.param({"controller.visibilityTimeout": 5}, "at '/controller/visibilityTimeout': minimum",
                 id="visibility-timeout-under-10"),
    pytest.param({"controller.maxAttempts": "3"}, "at '/controller/maxAttempts'", id="number-as-string"),
    pytest.param({"metrics.port": 0}, "at '/metrics/port': minimum", id="metrics-off"),
    pytest.param({"controller.logLevel": "TRACE"}, "at '/controller/logLevel'", id="log-level"),
    pytest.param({"jobs.resources.limits.memory": "lots"}, "at '/jobs/resources/limits/memory'",
                 id="bad-quantity"),
    pytest.param({"jobs.env.DATABASE_URL": "postgresql://x"}, "jobs.env may not set DATABASE_URL: the controller sets it",
                 id="reserved-job-env"),
    pytest.param({"jobs.env.LIMIT": 5}, "at '/jobs/env/LIMIT'", id="job-env-not-a-string"),
    pytest.param({"jobs.env.1LIMIT": "5"}, "jobs.env: \"1LIMIT\" is not a name Kubernetes takes", id="job-env-bad-name"),
    pytest.param({"serviceAccount.roleArn": "rates-controller"}, "at '/serviceAccount/roleArn'",
                 id="role-not-an-arn"),
    pytest.param({"database.existingSecret": ""}, "at '/database/existingSecret'", id="no-secret-name"),
    pytest.param({"database.password": "hunter2"}, "additional properties 'password' not allowed",
                 id="no-secret-values"),
    pytest.param({"terminationGracePeriodSeconds": 20},
                 "terminationGracePeriodSeconds (20) must exceed controller.pollWaitSeconds (20)",
                 id="grace-not-above-poll-wait"),
    pytest.param({"serviceAccount.name": "rates-ingest", "jobs.serviceAccount.create": False},
                 "jobs.serviceAccount.name must differ", id="jobs-share-the-controllers-account"),
    pytest.param({"extraEnv[0].value": "x"}, "at '/extraEnv/0': missing property 'name'", id="extra-env-no-name"),
    pytest.param({"extraEnv[0].name": "1X"}, "at '/extraEnv/0/name'", id="extra-env-bad-name"),
    pytest.param({"networkPolicy.database.port": 0}, "at '/networkPolicy/database/port': minimum",
                 id="database-port-0"),
    pytest.param({"networkPolicy.database.port": 65536}, "at '/networkPolicy/database/port': maximum",
                 id="database-port-too-high"),
    pytest.param({"networkPolicy.apiServerPorts[0]": 70000}, "at '/networkPolicy/apiServerPorts/0': maximum",
                 id="api-server-port-too-high"),
    pytest.param({"networkPolicy.apiServerPorts[0]": "https"}, "at '/networkPolicy/apiServerPorts/0'",
                 id="api-server-port-not-a-number"),
    pytest.param({"networkPolicy.database.cidrs[0]": "10.0.0.0"}, "at '/networkPolicy/database/cidrs/0'",
                 id="cidr-without-prefix"),
    pytest.param({"networkPolicy.database.cidrs[0]": "rates-db.internal/32"},
                 "at '/networkPolicy/database/cidrs/0'", id="cidr-a-host-name"),
    pytest.param({"networkPolicy.database.cidrs[0]": "10.0.0.0/33"}, "at '/networkPolicy/database/cidrs/0'",
                 id="cidr-prefix-too-long"),
    pytest.param({"networkPolicy.database.cidrs[0]": "010.0.0.0/16"}, "at '/networkPolicy/database/cidrs/0'",
                 id="cidr-leading-zero"),
    pytest.param({"networkPolicy.extraEgress[0].ports[0].port": 0},
                 "at '/networkPolicy/extraEgress/0/ports/0/port'", id="extra-egress-port-0"),
    pytest.param({"networkPolicy.extraEgress[0].to[0].ipBlock.cidr": "moto"},
                 "at '/networkPolicy/extraEgress/0/to/0/ipBlock/cidr'", id="extra-egress-not-a-cidr"),
    pytest.param({"networkPolicy.ingress": "x"}, "additional properties 'ingress' not allowed",
                 id="network-policy-unknown-key"),
    pytest.param({"jobs.tolerations[0].operator": "Sometimes"}, "at '/jobs/tolerations/0/operator'",
                 id="toleration-operator"),
    pytest.param({"jobs.nodeSelector.workload": 1}, "at '/jobs/nodeSelector/workload'",
                 id="node-selector-not-a-string"),
    pytest.param({"database.url": "postgresql://rates_ingest:secret@db/rates"}, "at '/database/url'",
                 id="database-url-with-a-password"),
    pytest.param({"database.url": "postgresql://rates_ingest@db/rates?password=secret"}, "at '/database/url'",
                 id="database-url-with-a-password-parameter"),
    pytest.param({"database.url": "postgresql://rates_ingest@db/rates?pass%77ord=secret"}, "at '/database/url'",
                 id="database-url-with-a-percent-encoded-password-parameter"),
    pytest.param({"database.url": None, "database.iamAuth": True}, "at '/database/url'", id="iam-auth-without-a-url"),
    # "prices" would let prices-archive/ through
    pytest.param({"queue.prefix": "prices"}, "at '/queue/prefix'", id="prefix-without-a-slash"),
    pytest.param({"jobs.env.DATABASE_IAM_AUTH": "true"}, "jobs.env may not set DATABASE_IAM_AUTH",
                 id="iam-auth-through-job-env"),
    # every Job would name one uploader, whoever sent its file
    pytest.param({"jobs.env.S3_UPLOADED_BY": "AWS:AIDAEXAMPLE"}, "jobs.env may not set S3_UPLOADED_BY",
                 id="uploader-through-job-env"),
])
def test_bad_values_are_refused(helm, sets, error):
    proc = helm("template", RELEASE, str(CHART), *values_args("dev", sets), check=False)
    assert proc.returncode != 0, proc.stdout
    assert error in proc.stderr, proc.stderr


def test_the_queue_urls_and_region_are_required(helm):
    proc = helm("template", RELEASE, str(CHART), check=False)
    assert proc.returncode != 0
    for field in ("/queue/url", "/queue/deadLetterUrl", "/aws/region"):
        assert f"at '{field}'" in proc.stderr, proc.stderr


def test_an_environment_without_terraforms_values_refuses_to_render(helm):
    """Every environment's Jobs log in with IAM tokens: its values file with only the queues
    and region, without the URL Terraform hands it, must fail, not fall back to the
    rates-database Secret (the schema owner's password) for every Job."""
    for environment in ENVIRONMENTS:
        args = values_args(environment, {"database.url": None})
        proc = helm("template", RELEASE, str(CHART), *args, check=False)
        assert proc.returncode != 0 and "at '/database/url'" in proc.stderr, (environment, proc.stderr)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deployment_is_a_valid_controller_configuration(helm, environment):
    values = merged_values(environment)
    docs = render(helm, *values_args(environment, ROLE_ARNS), namespace="rates-" + environment)
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    env = container_env(container, namespace="rates-" + environment)

    # Every setting the controller documents comes from the chart, and the controller
    # accepts them all.
    # (But for the escape hatch of a local S3's fake credentials, given through extraEnv only.)
    documented = setting_names() - {"JOB_ENV_ALLOW_SECRETS"}
    assert documented <= set(env), documented - set(env)
    settings = Settings.from_env(env)
    controller, jobs = values["controller"], values["jobs"]
    assert settings == Settings(
        queue_url=REQUIRED["queue.url"], dead_letter_queue_url=REQUIRED["queue.deadLetterUrl"],
        uploads_bucket="example-rates-prices", uploads_prefix="prices/",
        job=JobSettings(
            namespace="rates-" + environment, image=f"rates-ingest:{yaml_app_version()}",
            service_account="rates-ingest", database_secret="rates-database", database_secret_key="url",
            database_url=FROM_TERRAFORM["database.url"], database_iam_auth=True,
            env={"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"},
            cpu_request=jobs["resources"]["requests"]["cpu"],
            memory_request=jobs["resources"]["requests"]["memory"],
            memory_limit=jobs["resources"]["limits"]["memory"], backoff_limit=jobs["backoffLimit"],
            deadline_seconds=jobs["activeDeadlineSeconds"], ttl_seconds=jobs["ttlSecondsAfterFinished"]),
        max_active_jobs=controller["maxActiveJobs"], max_attempts=controller["maxAttempts"],
        retry_delay_seconds=controller["retryDelaySeconds"], max_receives=controller["maxReceives"],
        poll_wait_seconds=controller["pollWaitSeconds"], visibility_timeout=controller["visibilityTimeout"],
        metrics_port=9090, log_level=controller["logLevel"])
    # boto3 reads only AWS_DEFAULT_REGION
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "eu-west-1"

    # The image's entrypoint runs the controller; the Jobs' account is the chart's.
    assert container["image"] == f"rates-controller:{yaml_app_version()}" and "command" not in container
    job_account = one(docs, "ServiceAccount", env["JOB_SERVICE_ACCOUNT"])
    assert job_account["automountServiceAccountToken"] is False
    assert job_account["metadata"]["annotations"] == {IRSA: ROLE_ARNS["jobs.serviceAccount.roleArn"]}
    account = one(docs, "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["annotations"] == {IRSA: ROLE_ARNS["serviceAccount.roleArn"]}
    assert account["automountServiceAccountToken"] is True and pod["automountServiceAccountToken"] is True

    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (10001, 10001)

    # The probe reaches /healthz on the metrics port, and gives a stalled loop time: the
    # controller itself only answers 503 after 3 long polls plus 3 minutes.
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert probe["timeoutSeconds"] >= 5 and probe["periodSeconds"] * probe["failureThreshold"] >= 60
    assert "readinessProbe" not in container
    assert pod["terminationGracePeriodSeconds"] > settings.poll_wait_seconds
    assert container["resources"] == values["resources"]

    service = one(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for key in ("name", "instance", "version", "component", "managed-by"):
        assert f"app.kubernetes.io/{key}" in deployment["metadata"]["labels"]
    assert deployment["metadata"]["labels"]["helm.sh/chart"] == CHART_LABEL


def test_values_reach_the_controller_unmangled(helm, tmp_path):
    """Large numbers from a values file stay integers (helm reads them as floats, which
    print as 1e+06), and the Jobs' environment is a JSON object of strings that keeps its
    own region."""
    overrides = tmp_path / "values-big.yaml"
    overrides.write_text(yaml.safe_dump({
        "jobs": {"ttlSecondsAfterFinished": 1000000, "activeDeadlineSeconds": 86400, "image": {"tag": "1.2.4"},
                 "env": {"INGEST_WORK_MEM": "128MB", "AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "us-east-2"}},
        "controller": {"retryDelaySeconds": 3600000},
        "image": {"tag": "1.2.3"},
    }))
    docs = render(helm, *values_args("prod"), "-f", str(overrides))
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    settings = Settings.from_env(container_env(container, "rates"))
    assert settings.job.ttl_seconds == 1000000 and settings.job.deadline_seconds == 86400
    assert settings.retry_delay_seconds == 3600000
    assert settings.job.env == {"INGEST_WORK_MEM": "128MB", "AWS_REGION": "us-east-2",
                                "AWS_DEFAULT_REGION": "us-east-2"}
    assert container["image"] == "rates-controller:1.2.3" and settings.job.image == "rates-ingest:1.2.4"


def test_the_jobs_placement_reaches_the_controller(helm, tmp_path):
    placement = {"nodeSelector": {"workload": "batch"},
                 "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                 "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                     {"weight": 1, "preference": {"matchExpressions": [
                         {"key": "capacity", "operator": "In", "values": ["spot"]}]}}]}},
                 "priorityClassName": "batch-low"}
    overrides = tmp_path / "values-placement.yaml"
    overrides.write_text(yaml.safe_dump({"jobs": placement}))
    [container] = one(render(helm, *values_args("prod"), "-f", str(overrides)),
                      "Deployment")["spec"]["template"]["spec"]["containers"]
    assert Settings.from_env(container_env(container, "rates")).job.scheduling == placement
    # and none by default: the Jobs go wherever the scheduler puts them
    [container] = one(render(helm, *values_args("prod")), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert Settings.from_env(container_env(container, "rates")).job.scheduling == {}


def test_the_jobs_database_url_and_iam_authentication_reach_the_jobs(helm):
    url = "postgresql://rates_ingest@rates.abc.eu-west-1.rds.amazonaws.com:5432/rates?sslmode=require"
    [container] = one(render(helm, *values_args("prod", {"database.url": url, "database.iamAuth": True})),
                      "Deployment")["spec"]["template"]["spec"]["containers"]
    job = Settings.from_env(container_env(container, "rates")).job
    env = controller_jobs.manifest(UploadedObject("b", "k.csv", None, "e", 1), job)["spec"]["template"]["spec"][
        "containers"][0]["env"]
    assert {"name": "DATABASE_URL", "value": url} in env and {"name": "DATABASE_IAM_AUTH", "value": "true"} in env


def test_extra_env_is_added_after_the_charts_own(helm):
    default = one(render(helm, *values_args("dev")), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    extra = [{"name": "AWS_ENDPOINT_URL", "value": "http://moto:5000"},
             {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "id"}}}]
    docs = render(helm, *values_args("dev", json_sets={"extraEnv": extra}))
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["env"] == default["env"] + extra
    assert not {v["name"] for v in extra} & {v["name"] for v in default["env"]}


def test_the_service_monitor_scrapes_the_metrics_service(helm):
    assert not [d for d in render(helm, *values_args()) if d["kind"] == "ServiceMonitor"]  # off by default

    docs = render(helm, *values_args(sets={"metrics.serviceMonitor.enabled": True,
                                           "metrics.serviceMonitor.labels.release": "prometheus"}))
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["rates"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"


def test_a_paused_controller_runs_no_pod_and_raises_no_alert(helm):
    # Its uploads wait in the queue; RatesControllerDown would fire for the whole pause.
    watched = {"metrics.serviceMonitor.enabled": True, "metrics.prometheusRule.enabled": True}
    running = render(helm, *values_args("dev", sets=watched))
    assert one(running, "Deployment")["spec"]["replicas"] == 1 and one(running, "PrometheusRule")
    paused = render(helm, *values_args("dev", sets={**watched, "controller.paused": True}))
    assert one(paused, "Deployment")["spec"]["replicas"] == 0
    assert not [d for d in paused if d["kind"] == "PrometheusRule"]


def test_the_helm_test_hook_fails_unless_healthz_answers_200(helm, tmp_path):
    """The hook pod's own script, run here against a server that answers 503, then 200."""
    docs = render(helm, *values_args())
    hook = one(docs, "Pod")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert hook["metadata"]["labels"]["app.kubernetes.io/component"] == "test"  # not behind the Service
    [container] = hook["spec"]["containers"]
    assert container["image"] == one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["args"] == ["http://rates-controller.rates.svc:9090/healthz"]
    assert hook["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert hook["spec"]["automountServiceAccountToken"] is False

    answer = {"status": 503}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answer["status"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        run = [sys.executable, *container["command"][1:], url]
        stalled = subprocess.run(run, capture_output=True, text=True, timeout=30)
        assert stalled.returncode != 0 and f"GET {url}: 503" in stalled.stdout
        answer["status"] = 200
        healthy = subprocess.run(run, capture_output=True, text=True, timeout=30)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    finally:
        server.shutdown()
        server.server_close()


# --- network policies ------------------------------------------------------------------

DNS_EGRESS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
HTTPS_EGRESS = {"ports": [{"port": 443, "protocol": "TCP"}]}


def network_policies(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}


def chart_pods(docs: list[dict], namespace: str = "rates") -> dict[str, dict]:
    """Pod templates by who runs them: the controller, an ingest Job made by the
    controller's own code (its labels are the controller's, not the chart's), the test hook."""
    return {"controller": one(docs, "Deployment")["spec"]["template"],
            "ingest": sample_job(namespace)["spec"]["template"],
            "test": one(docs, "Pod")}


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_the_network_policies_select_the_controller_and_its_jobs(helm, environment):
    docs = render(helm, *values_args(environment, ROLE_ARNS))
    policies = network_policies(docs)
    assert set(policies) == {"rates-controller", "rates-controller-ingest"}
    deployment = one(docs, "Deployment")
    templates = chart_pods(docs)
    pods = {who: pod_of(template, "rates") for who, template in templates.items()}
    controller_policy, jobs_policy = policies["rates-controller"], policies["rates-controller-ingest"]

    # Each selects its own pods and no other; the Jobs' policy the labels of a Job that
    # rates_controller.jobs.manifest() builds.
    assert controller_policy["spec"]["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert jobs_policy["spec"]["podSelector"] == {"matchLabels": controller_jobs.LABELS}
    expected = {"rates-controller": {"controller"}, "rates-controller-ingest": {"ingest"}}
    for name, p in policies.items():
        assert p["metadata"]["namespace"] == "rates"
        selected = {who for who, template in templates.items()
                    if selects(p["spec"]["podSelector"], template["metadata"]["labels"])}
        assert selected == expected[name], name
        labels = p["metadata"]["labels"]
        assert labels["helm.sh/chart"] == CHART_LABEL and labels["app.kubernetes.io/instance"] == RELEASE
        assert p["spec"]["policyTypes"] == ["Ingress", "Egress"], name
    assert jobs_policy["metadata"]["labels"]["app.kubernetes.io/component"] == "ingest"
    # The helm test pod must reach the controller's Service: nothing confines it.
    assert egress_allowed(list(policies.values()), pods["test"], address("203.0.113.7"), 8443)

    # In: the controller on its metrics port only, from anywhere; the Jobs, nothing.
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    metrics = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert controller_policy["spec"]["ingress"] == [{"ports": [{"port": metrics, "protocol": "TCP"}]}]
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    for source in (address("10.0.3.4"), pods["ingest"]):
        assert ingress_allowed(list(policies.values()), pods["controller"], source, metrics)
        assert not ingress_allowed(list(policies.values()), pods["controller"], source, metrics + 1)
    assert connection_allowed(list(policies.values()), pods["test"], pods["controller"], metrics)  # helm test
    assert not jobs_policy["spec"].get("ingress")
    assert not ingress_allowed(list(policies.values()), pods["ingest"], pods["controller"], 8000)

    # Out: DNS, HTTPS (AWS), and the API server's endpoint ports (controller) or
    # PostgreSQL (Jobs); nothing else.
    assert controller_policy["spec"]["egress"] == [
        DNS_EGRESS, HTTPS_EGRESS, {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}]
    assert jobs_policy["spec"]["egress"] == [DNS_EGRESS, HTTPS_EGRESS, {"ports": [{"port": 5432, "protocol": "TCP"}]}]
    allowed = {"controller": {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)},
               "ingest": {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432)}}
    tried = {("UDP", 53), ("TCP", 53), ("TCP", 80), ("TCP", 443), ("TCP", 5432), ("TCP", 6443), ("TCP", 8443),
             ("TCP", 9090)}
    for who in ("controller", "ingest"):
        for protocol, port in tried:
            assert egress_allowed(list(policies.values()), pods[who], address("10.0.1.2"), port, protocol) == (
                (protocol, port) in allowed[who]), (who, protocol, port)


def test_network_policy_values(helm):
    extra = [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "moto"}}}],
              "ports": [{"port": 5000, "protocol": "TCP"}]},
             {"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}], "ports": [{"port": 80, "protocol": "TCP"}]}]
    docs = render(helm, *values_args("prod", json_sets={
        "networkPolicy.database.cidrs": ["10.0.0.0/18", "fd00:10::/64"], "networkPolicy.database.port": 6432,
        "networkPolicy.apiServerPorts": [8443], "networkPolicy.extraEgress": extra}))
    policies = network_policies(docs)
    pods = {who: pod_of(template, "rates") for who, template in chart_pods(docs).items()}
    # The database's CIDRs become ipBlocks of the Jobs' rule; the extra rules come last, as
    # given, in both policies.
    database = {"ports": [{"port": 6432, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "10.0.0.0/18"}}, {"ipBlock": {"cidr": "fd00:10::/64"}}]}
    assert policies["rates-controller-ingest"]["spec"]["egress"] == [DNS_EGRESS, HTTPS_EGRESS, database, *extra]
    assert policies["rates-controller"]["spec"]["egress"] == [
        DNS_EGRESS, HTTPS_EGRESS, {"ports": [{"port": 8443, "protocol": "TCP"}]}, *extra]
    moto = Pod(labels={"app.kubernetes.io/name": "moto"}, namespace="rates")
    everything = list(policies.values())
    for who in ("controller", "ingest"):
        assert egress_allowed(everything, pods[who], moto, 5000)
        assert not egress_allowed(everything, pods[who], moto, 5001)
        assert egress_allowed(everything, pods[who], address("169.254.170.23"), 80)
    assert egress_allowed(everything, pods["ingest"], address("10.0.63.1"), 6432)
    assert egress_allowed(everything, pods["ingest"], address("fd00:10::5"), 6432)
    assert not egress_allowed(everything, pods["ingest"], address("10.0.64.1"), 6432)
    assert not egress_allowed(everything, pods["controller"], address("10.0.63.1"), 6432)

    # No API server ports: no rule at all, never one that allows every port.
    none = network_policies(render(helm, *values_args(json_sets={"networkPolicy.apiServerPorts": []})))
    assert none["rates-controller"]["spec"]["egress"] == [DNS_EGRESS, HTTPS_EGRESS]

    assert network_policies(render(helm, *values_args("prod", {"networkPolicy.enabled": False}))) == {}


# --- on the API server ----------------------------------------------------------------


def test_install_upgrade_and_uninstall(helm, kube, namespace):
    installed = helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace,
                     *values_args("dev", {**ROLE_ARNS, **FROM_SECRET}))
    # NOTES.txt: how to check the Secret the chart does not make, and no warning with both roles set
    assert f"kubectl -n {namespace} get secret rates-database" in installed.stdout, installed.stdout
    assert "WARNING" not in installed.stdout

    deployment = kube.apps.read_namespaced_deployment(RELEASE, namespace)
    assert deployment.spec.replicas == 1 and deployment.spec.strategy.type == "Recreate"
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["MAX_ACTIVE_JOBS"] == "1" and env["JOB_TTL_SECONDS"] == "3600"
    controller_account = kube.core.read_namespaced_service_account(RELEASE, namespace)
    assert controller_account.metadata.annotations[IRSA] == ROLE_ARNS["serviceAccount.roleArn"]
    jobs_account = kube.core.read_namespaced_service_account("rates-ingest", namespace)
    assert jobs_account.automount_service_account_token is False
    role = kube.rbac.read_namespaced_role(RELEASE, namespace)
    assert [(r.api_groups, r.resources, r.verbs) for r in role.rules] == [
        (["batch"], ["jobs"], ["create", "get", "list", "patch"]), ([""], ["pods"], ["list"])]
    binding = kube.rbac.read_namespaced_role_binding(RELEASE, namespace)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", RELEASE)
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [("ServiceAccount", RELEASE, namespace)]
    assert kube.core.read_namespaced_service(RELEASE, namespace).spec.ports[0].name == "metrics"
    networking = client.NetworkingV1Api(kube.api_client)
    admission = client.AdmissionregistrationV1Api(kube.api_client)
    assert sorted(p.metadata.name for p in networking.list_namespaced_network_policy(namespace).items) == [
        RELEASE, f"{RELEASE}-ingest"]
    with pytest.raises(ApiException) as no_secret:  # the chart never makes one
        kube.core.read_namespaced_secret("rates-database", namespace)
    assert no_secret.value.status == 404

    new_role = "arn:aws:iam::123456789012:role/rates-ingest-v2"
    upgraded = helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, *values_args("prod", {
        **ROLE_ARNS, "jobs.serviceAccount.roleArn": new_role, "image.tag": "0.2.0", "database.iamAuth": True,
        "database.url": "postgresql://rates_ingest@db.internal:5432/rates?sslmode=require"}))
    # NOTES.txt: with the URL in the values, no Secret to check, but the API chart goes first.
    assert "get secret" not in upgraded.stdout and "with RDS IAM tokens" in upgraded.stdout
    assert "install that chart first" in upgraded.stdout, upgraded.stdout

    deployment = kube.apps.read_namespaced_deployment(RELEASE, namespace)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["MAX_ACTIVE_JOBS"] == "8" and env["JOB_MEMORY_LIMIT"] == "512Mi"
    assert deployment.spec.template.spec.containers[0].image == "rates-controller:0.2.0"
    jobs_account = kube.core.read_namespaced_service_account("rates-ingest", namespace)
    assert jobs_account.metadata.annotations[IRSA] == new_role
    [release] = json.loads(helm("list", "-n", namespace, "-o", "json").stdout)
    assert (release["name"], release["revision"], release["status"]) == (RELEASE, "2", "deployed")

    helm("uninstall", RELEASE, "-n", namespace)

    wait_for(lambda: gone(lambda: kube.apps.read_namespaced_deployment(RELEASE, namespace)), timeout=30,
             what="helm uninstall to remove the Deployment")
    for read in (lambda: kube.core.read_namespaced_service_account(RELEASE, namespace),
                 lambda: kube.core.read_namespaced_service_account("rates-ingest", namespace),
                 lambda: kube.rbac.read_namespaced_role(RELEASE, namespace),
                 lambda: kube.rbac.read_namespaced_role_binding(RELEASE, namespace),
                 lambda: kube.core.read_namespaced_service(RELEASE, namespace),
                 lambda: networking.read_namespaced_network_policy(RELEASE, namespace),
                 lambda: networking.read_namespaced_network_policy(f"{RELEASE}-ingest", namespace),
                 # cluster-scoped, but the release's all the same
                 lambda: admission.read_validating_admission_policy(f"{namespace}-{RELEASE}-jobs"),
                 lambda: admission.read_validating_admission_policy_binding(f"{namespace}-{RELEASE}-jobs")):
        assert gone(read)
    assert json.loads(helm("list", "-n", namespace, "-o", "json").stdout) == []


@pytest.fixture
def other_namespace(kube):
    name = f"other-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace({"metadata": {"name": name}})
    yield name
    kube.core.delete_namespace(name)


def test_with_iam_authentication_the_job_policy_pins_the_database_url(helm, kube, namespace):
    # With $ in them, as the kubelet would otherwise expand in the controller's own environment.
    url = "postgresql://rates_ingest@db.example:5432/rates?sslmode=require&application_name=a$$b$(AWS_REGION)"
    args = values_args("prod", {"database.url": url, "database.iamAuth": True, "jobs.env.A": "p$$q",
                                "jobs.env.B": "$(AWS_REGION)"})
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, *args)
    batch = client.BatchV1Api(kube.client_for_token(token_for(kube, namespace, RELEASE)))
    ours = release_job(helm, namespace, *args)

    def create(value=None, value_from=None) -> int:
        job = copy.deepcopy(ours)
        if value or value_from:
            [database_url] = [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
                              if e["name"] == "DATABASE_URL"]
            database_url.update({"value": value, "valueFrom": value_from})
        return status_of(lambda: batch.create_namespaced_job(namespace, job, dry_run="All"))

    wait_for(lambda: create(value=url + "&hostaddr=203.0.113.7") == 422, timeout=30,
             what="the Job policy to take effect")
    assert create() == 200
    # Its IAM token, signed for the real host, would go to another address.
    assert create(value=url + "&hostaddr=203.0.113.7") == 422
    assert create(value_from={"secretKeyRef": {"name": "rates-database", "key": "url"}}) == 422


def test_the_job_policies_can_be_left_out(helm):
    # Where the installer may not create cluster-scoped admission policies.
    def policies(**sets) -> list[str]:
        return sorted(d["metadata"]["name"] for d in render(helm, *values_args(sets=sets))
                      if d["kind"] == "ValidatingAdmissionPolicy")

    assert policies() == ["rates-rates-controller-jobs", "rates-rates-controller-unhandled-jobs"]
    assert policies(**{"rbac.jobPolicy": False}) == ["rates-rates-controller-unhandled-jobs"]
    assert policies(**{"rbac.protectUnhandledJobs": False}) == ["rates-rates-controller-jobs"]
    kinds = {d["kind"] for d in render(helm, *values_args(sets={"rbac.jobPolicy": False,
                                                               "rbac.protectUnhandledJobs": False}))}
    assert "Role" in kinds and not {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} & kinds


def test_nobody_deletes_a_job_the_controller_has_not_acted_on(helm, kube, namespace):
    """Its upload message is gone: deleted before the controller acted on it, the Job would
    take its file with it. Handled Jobs (the TTL's), a file dropped knowingly, and the
    namespace's deletion go through."""
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, *values_args("dev", FROM_SECRET))
    made = [kube.batch.create_namespaced_job(namespace, release_job(helm, namespace, *values_args("dev", FROM_SECRET),
                                                                    key=f"2024/{n}.csv")).metadata.name
            for n in ("running", "handled", "dropped")]
    running, handled, dropped = made

    def delete(name: str, **dry_run) -> ApiException | None:
        try:
            kube.batch.delete_namespaced_job(name, namespace, propagation_policy="Background", **dry_run)
        except ApiException as exc:
            return exc
        return None

    # The API server compiles a new policy within moments (a dry run is judged the same).
    wait_for(lambda: delete(running, dry_run="All") is not None, timeout=30, what="the policy to take effect")
    refused = delete(running)
    assert refused.status == 403, refused
    assert f"has not yet acted on Job {running} (file s3://rates-uploads/2024/running.csv)" in refused.body
    assert f"kubectl label job {running} {controller_jobs.HANDLED}=dropped" in refused.body
    assert kube.batch.read_namespaced_job(running, namespace).metadata.deletion_timestamp is None

    # What the controller does once the Job ended, and what an operator does to drop a file.
    for name, how in ((handled, "succeeded"), (dropped, "dropped")):
        kube.batch.patch_namespaced_job(name, namespace, {"metadata": {"labels": {controller_jobs.HANDLED: how}}})
        assert delete(name) is None

    # The namespace controller deletes the unhandled Job with everything else.
    kube.core.delete_namespace(namespace)
    wait_for(lambda: gone(lambda: kube.core.read_namespace(namespace)), timeout=120,
             what="the namespace, unhandled Job and all, to be deleted")


def test_the_controller_account_can_do_what_the_controller_does_and_nothing_else(helm, kube, namespace,
                                                                                 other_namespace):
    installed = helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, *values_args("dev", FROM_SECRET))
    assert installed.stdout.count("roleArn is empty") == 2  # NOTES.txt: no IRSA role for either account
    as_controller = kube.client_for_token(token_for(kube, namespace, RELEASE))
    batch, core, rbac = (client.BatchV1Api(as_controller), client.CoreV1Api(as_controller),
                         client.RbacAuthorizationV1Api(as_controller))
    job = release_job(helm, namespace, *values_args("dev", FROM_SECRET))
    name = job["metadata"]["name"]

    # The calls of rates_controller/kube.py, with the controller's token.
    def created():  # the authorizer's cache catches up with the new RoleBinding within moments
        return status_of(lambda: batch.create_namespaced_job(namespace, job)) != 403

    wait_for(created, timeout=30, what="the chart's RoleBinding to take effect")
    allowed = {
        "check a Job (dry run)": lambda: batch.create_namespaced_job(namespace,
                                                                     release_job(helm, namespace,
                                                                                 *values_args("dev", FROM_SECRET),
                                                                                 key="other.csv"),
                                                                     dry_run="All"),
        "read a Job": lambda: batch.read_namespaced_job(name, namespace),
        "list its Jobs": lambda: batch.list_namespaced_job(namespace, label_selector=controller_jobs.SELECTOR),
        "label a Job and set its TTL": lambda: batch.patch_namespaced_job(
            name, namespace, {"metadata": {"labels": {controller_jobs.HANDLED: "succeeded"}},
                              "spec": {"ttlSecondsAfterFinished": 3600}},
            _content_type="application/merge-patch+json"),
        "list a Job's pods": lambda: core.list_namespaced_pod(namespace, label_selector=f"job-name={name}"),
    }
    assert {what: status_of(call) for what, call in allowed.items()} == {what: 200 for what in allowed}
    assert kube.batch.read_namespaced_job(name, namespace).metadata.labels[controller_jobs.HANDLED] == "succeeded"
    # A second delivery's create is a 409 (the Job exists), which the controller relies on, not a 403.
    assert status_of(lambda: batch.create_namespaced_job(namespace, job)) == 409

    denied = {
        "read the database Secret": lambda: core.read_namespaced_secret("rates-database", namespace),
        "list Secrets": lambda: core.list_namespaced_secret(namespace),
        "delete a Job": lambda: batch.delete_namespaced_job(name, namespace),
        "create a Job in another namespace": lambda: batch.create_namespaced_job(
            other_namespace, sample_job(other_namespace)),
        "list Jobs in another namespace": lambda: batch.list_namespaced_job(other_namespace),
        "list Jobs cluster-wide": lambda: batch.list_job_for_all_namespaces(),
        "create a Pod": lambda: core.create_namespaced_pod(namespace, {
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        "read a Pod": lambda: core.read_namespaced_pod("any", namespace),
        "delete Pods": lambda: core.delete_collection_namespaced_pod(namespace),
        "read its own Role": lambda: rbac.read_namespaced_role(RELEASE, namespace),
        "list ServiceAccounts": lambda: core.list_namespaced_service_account(namespace),
        "list namespaces": lambda: core.list_namespace(),
    }
    assert {what: status_of(call) for what, call in denied.items()} == {what: 403 for what in denied}

    # Jobs it may create, but not these: the admission policy (rbac.jobPolicy) refuses them.
    another = release_job(helm, namespace, *values_args("dev", FROM_SECRET), key="another.csv")

    def job_with(change) -> dict:
        job = copy.deepcopy(another)
        change(job["spec"]["template"]["spec"], job["spec"]["template"]["spec"]["containers"][0],
               job["spec"]["template"]["metadata"]["labels"])
        if change is refused.get("run many pods"):
            job["spec"].update(parallelism=500, completions=500)
        if change is refused.get("run for ever"):
            del job["spec"]["activeDeadlineSeconds"]
        if change is refused.get("annotate its pods"):
            job["spec"]["template"]["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] = "true"
        if change is refused.get("add a pod annotation"):
            job["spec"]["template"]["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/ingest"] = "unconfined"
        if change is refused.get("retry for ever"):  # no failure counts against backoffLimit
            job["spec"]["podFailurePolicy"]["rules"].insert(0, {"action": "Ignore", "onExitCodes": {
                "operator": "NotIn", "values": [0]}})
        if change is refused.get("delete itself with its evidence"):
            job["spec"]["ttlSecondsAfterFinished"] = 0
        if change is refused.get("pick its own pods"):
            # its selector matches every ingest Job's pods: it would adopt and count theirs
            job["spec"].update(manualSelector=True, selector={"matchLabels": job["spec"]["template"]["metadata"]["labels"]})
        return job

    def env_of(c, name) -> dict:
        [var] = [e for e in c["env"] if e["name"] == name]
        return var

    secret_ref = {"name": "X", "valueFrom": {"secretKeyRef": {"name": "rates-api-other", "key": "k"}}}
    refused = {
        "run as the API's ServiceAccount": lambda pod, c, labels: pod.update(serviceAccountName="rates-api"),
        "mount a Kubernetes token": lambda pod, c, labels: pod.update(automountServiceAccountToken=True),
        "read another Secret": lambda pod, c, labels: c["env"].append(secret_ref),
        "read a Secret whole": lambda pod, c, labels: c.update(envFrom=[{"secretRef": {"name": "rates-database"}}]),
        "mount a volume": lambda pod, c, labels: pod.update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
        "run another image": lambda pod, c, labels: c.update(image="busybox"),
        "run another command": lambda pod, c, labels: c.update(command=["sh", "-c", "env"]),
        "add a container": lambda pod, c, labels: pod["containers"].append({**c, "name": "second"}),
        "leave the ingest labels": lambda pod, c, labels: labels.pop("app.kubernetes.io/name"),
        "use the host's network": lambda pod, c, labels: pod.update(hostNetwork=True),
        "run privileged": lambda pod, c, labels: c["securityContext"].update(privileged=True,
                                                                             allowPrivilegeEscalation=True),
        "run as root": lambda pod, c, labels: pod["securityContext"].pop("runAsNonRoot"),
        "run the container as root": lambda pod, c, labels: c["securityContext"].update(runAsUser=0,
                                                                                        runAsNonRoot=False),
        "add a capability": lambda pod, c, labels: c["securityContext"]["capabilities"].update(add=["NET_RAW"]),
        "leave the seccomp profile": lambda pod, c, labels: c["securityContext"].update(
            seccompProfile={"type": "Unconfined"}),
        "take a host port": lambda pod, c, labels: c.update(ports=[{"containerPort": 80, "hostPort": 80}]),
        "pick its node": lambda pod, c, labels: pod.update(nodeName="any"),
        # Python runs $BROWSER at start with this warning filter: a command by another name.
        "set other environment": lambda pod, c, labels: c["env"].extend([
            {"name": "PYTHONWARNINGS", "value": "all:0:antigravity.x:0:0"}, {"name": "BROWSER", "value": "sh"}]),
        # the key would be the Secret's URL, and the job's last log line (its termination message) quotes it
        "expand a variable": lambda pod, c, labels: c["env"][1].update(value="$(DATABASE_URL)"),
        "read another key of the Secret": lambda pod, c, labels: env_of(c, "DATABASE_URL")["valueFrom"][
            "secretKeyRef"].update(key="password"),
        "run a hook": lambda pod, c, labels: c.update(lifecycle={"postStart": {"exec": {"command": ["sh"]}}}),
        "run a probe": lambda pod, c, labels: c.update(livenessProbe={"exec": {"command": ["sh"]}}),
        "look like another registry": lambda pod, c, labels: c.update(image="rates-ingest:5000/evil/shell:latest"),
        "run as the root group": lambda pod, c, labels: pod["securityContext"].update(runAsGroup=0),
        "leave AppArmor": lambda pod, c, labels: c["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
        "set SELinux": lambda pod, c, labels: c["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
        "use a pull secret": lambda pod, c, labels: pod.update(imagePullSecrets=[{"name": "other"}]),
        "run many pods": lambda pod, c, labels: None,  # parallelism, set below on the Job
        "run for ever": lambda pod, c, labels: None,  # no activeDeadlineSeconds, below
        "annotate its pods": lambda pod, c, labels: None,  # evictable by an autoscaler, below
        "add a pod annotation": lambda pod, c, labels: None,  # below
        # the job would sign its IAM token for the real host and send it to another
        "send the database URL's login elsewhere": lambda pod, c, labels: env_of(c, "DATABASE_URL").update(
            {"value": "postgresql://rates_ingest@db:5432/rates?sslmode=require&hostaddr=203.0.113.7",
             "valueFrom": None}),
        "change the region": lambda pod, c, labels: env_of(c, "AWS_REGION").update(value="us-east-1"),
        "ask for more CPU": lambda pod, c, labels: c["resources"]["requests"].update(cpu="64"),
        "ask for a GPU": lambda pod, c, labels: c["resources"]["limits"].update({"nvidia.com/gpu": "1"}),
        "preempt others": lambda pod, c, labels: pod.update(priorityClassName="system-node-critical"),
        "take the root group for files": lambda pod, c, labels: pod["securityContext"].update(fsGroup=0),
        "ask for resources for the pod": lambda pod, c, labels: pod.update(resources={"requests": {"cpu": "64"}}),
        "claim a device": lambda pod, c, labels: pod.update(resourceClaims=[{"name": "gpu",
                                                                             "resourceClaimName": "any"}]),
        "run on the control plane": lambda pod, c, labels: pod.update(
            tolerations=[{"operator": "Exists"}], nodeSelector={"node-role.kubernetes.io/control-plane": ""}),
        "pick its scheduler": lambda pod, c, labels: pod.update(schedulerName="another"),
        # the job would report the Secret's value as its bucket, in the termination message the
        # controller's token can read
        "read a Secret through an S3 variable": lambda pod, c, labels: env_of(c, "S3_BUCKET").update(
            {"value": None, "valueFrom": {"secretKeyRef": {"name": "rates-database", "key": "url"}}}),
        "read a Secret as its uploader": lambda pod, c, labels: c["env"].append(
            {"name": "S3_UPLOADED_BY", "valueFrom": {"secretKeyRef": {"name": "rates-database", "key": "url"}}}),
        "expand a variable as its uploader": lambda pod, c, labels: c["env"].append(
            {"name": "S3_UPLOADED_BY", "value": "$(DATABASE_URL)"}),
        "run an image of that name from another registry": lambda pod, c, labels: c.update(
            image="registry.evil.example/rates-ingest:1"),
        "run without a memory limit": lambda pod, c, labels: c["resources"]["limits"].pop("memory"),
        "retry for ever": lambda pod, c, labels: None,  # a podFailurePolicy rule, below
        "delete itself with its evidence": lambda pod, c, labels: None,  # a TTL of 0, below
        "pick its own pods": lambda pod, c, labels: None,  # manualSelector, below
        # the kubelet would mount the message file over a module of the image
        "write its termination message over its code": lambda pod, c, labels: c.update(
            terminationMessagePath="/usr/local/lib/python3.11/site-packages/rates_ingest/cli.py"),
        "run from another directory": lambda pod, c, labels: c.update(workingDir="/tmp"),
        "share its process namespace": lambda pod, c, labels: pod.update(shareProcessNamespace=True),
    }

    def create(change) -> int:
        return status_of(lambda: batch.create_namespaced_job(namespace, job_with(change), dry_run="All"))

    # The API server compiles a new policy within moments.
    wait_for(lambda: create(refused["run another image"]) == 422, timeout=30, what="the Job policy to take effect")
    statuses = {what: create(change) for what, change in refused.items()}
    assert statuses == {what: 422 for what in refused}
    # What the controller itself writes: a key that looks like a reference arrives escaped ($$).
    assert create(lambda pod, c, labels: c["env"][1].update(value="x$$(S3_BUCKET) $$$$.csv")) == 200
    # And who uploaded the file, when S3's event names them: a role's session name is the uploader's to choose.
    uploaded = release_job(helm, namespace, *values_args("dev", FROM_SECRET), key="uploaded.csv",
                           uploaded_by="AWS:AROAEXAMPLE:jane$(DATABASE_URL)")
    assert status_of(lambda: batch.create_namespaced_job(namespace, uploaded, dry_run="All")) == 200
    # A controller from before the pods' annotations, still running during a rollout.
    bare = job_with(lambda pod, c, labels: None)
    del bare["spec"]["template"]["metadata"]["annotations"]
    assert status_of(lambda: batch.create_namespaced_job(namespace, bare, dry_run="All")) == 200
    # Only the controller's account is held to it.
    assert status_of(lambda: kube.batch.create_namespaced_job(
        namespace, job_with(refused["run as the API's ServiceAccount"]), dry_run="All")) == 200

    # A release with another Job image: the controller still labels the Jobs made before
    # it, and the old pod, still running during the rollout, may still create its own.
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace,
         *values_args("dev", {**FROM_SECRET, "jobs.image.tag": "next"}))
    wait_for(lambda: create(lambda pod, c, labels: c.update(image="rates-ingest:other")) == 200
             and create(lambda pod, c, labels: c.update(image="busybox:next")) == 422,
             timeout=30, what="the new release's Job policy")
    relabel = {"metadata": {"labels": {controller_jobs.HANDLED: "retried"}}}
    assert status_of(lambda: batch.patch_namespaced_job(name, namespace, relabel,
                                                        _content_type="application/merge-patch+json")) == 200
    # But it may change nothing else of its Jobs, nor touch another Job of the namespace.
    assert status_of(lambda: batch.patch_namespaced_job(name, namespace, {"spec": {"activeDeadlineSeconds": 1}},
                                                        _content_type="application/merge-patch+json")) == 422
    foreign = {"metadata": {"name": "migrate"}, "spec": {"suspend": True, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "m", "image": "rates-api:1"}]}}}}
    kube.batch.create_namespaced_job(namespace, foreign)
    assert status_of(lambda: batch.patch_namespaced_job("migrate", namespace, {"spec": {"suspend": False}},
                                                        _content_type="application/merge-patch+json")) == 422

    # The Jobs' own account has no Kubernetes rights at all.
    as_job = kube.client_for_token(token_for(kube, namespace, "rates-ingest"))
    assert status_of(lambda: client.BatchV1Api(as_job).list_namespaced_job(namespace)) == 403
    assert status_of(lambda: client.CoreV1Api(as_job).list_namespaced_pod(namespace)) == 403


def test_the_real_controller_runs_with_the_charts_environment_and_rights(
        helm, kube, namespace, local_node, uploads, sqs, moto_endpoint, tmp_path, images):
    """The controller's image, run as the installed Deployment's pod (its environment, its
    user, a read-only root, in-cluster access with its ServiceAccount's token) and nothing
    else: a file's Job is created, fails (the database is down), and the file is set aside
    with the job's own words, which takes every right in the Role."""
    image = images("controller")
    port = free_port()
    fake_credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, *values_args(
        "dev",
        {"queue.url": sqs.uploads_url, "queue.deadLetterUrl": sqs.dead_url, "aws.region": "us-east-1",
         "metrics.port": port, "controller.pollWaitSeconds": 1, "controller.maxAttempts": 1,
         "jobs.backoffLimit": 0, **FROM_SECRET, "database.existingSecret": "ingest-database",
         "queue.bucket": uploads.name, "queue.prefix": "2024/"},
        {"jobs.env": {**fake_credentials, "AWS_ENDPOINT_URL": moto_endpoint},
         "extraEnv": [{"name": "JOB_ENV_ALLOW_SECRETS", "value": "true"}]}))  # moto's fake credentials
    # The Secret the chart names, made as its README says (an admin's job, not the chart's).
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "ingest-database"}, "data": {
        "url": base64.b64encode(b"postgresql://nobody@127.0.0.1:1/none?connect_timeout=2").decode()}})

    pod = kube.apps.read_namespaced_deployment(RELEASE, namespace).spec.template.spec
    [container] = kube.api_client.sanitize_for_serialization(pod.containers)
    # What the kubelet would hand the pod: its service account's token, and IRSA's credentials.
    cluster_env, files = service_account_for_container(
        tmp_path / "serviceaccount", kube.server, kube.ca_file, token_for(kube, namespace, pod.service_account_name),
        namespace)
    env = {**container_env(container, namespace), **cluster_env, **fake_credentials,
           "AWS_ENDPOINT_URL": moto_endpoint, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    identity = PodIdentity.of(kube.api_client.sanitize_for_serialization(pod), container)
    assert identity.read_only and identity.run_as_non_root and identity.refusal(image) is None
    log = tmp_path / "controller.log"
    with open(log, "wb") as out:
        process = image.start(env=env, files=files, user=identity.user, groups=identity.groups,
                              capabilities=identity.capabilities, writable_tmp=identity.writable_tmp,
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process)
        uploads.put("2024/prices.csv", "orig_code,dest_code,day,price\nCNSHA,NLRTM,2024-01-01,1200\n")

        [dead] = wait_for(sqs.dead_letters, timeout=60, what="the file to be set aside")
        assert dead["reason"].startswith("the file did not load in 1 Jobs (BackoffLimitExceeded"), dead
        assert "; the job said: " in dead["reason"], dead  # read from its pod: Pods list
        # Labelled after the dead letter is sent (a label lost is redone; a message lost is
        # not): the label may land a moment after the message is seen.
        [job] = wait_for(lambda: [job for job in ingest_jobs(kube, namespace)
                                  if (job.metadata.labels or {}).get(controller_jobs.HANDLED)],
                         timeout=60, what="the Job to be labelled")
        assert job.metadata.labels[controller_jobs.HANDLED] == "set-aside"  # Jobs patch
        spec = job.spec.template.spec
        assert spec.service_account_name == "rates-ingest" and spec.automount_service_account_token is False
        [database_url] = [e for e in spec.containers[0].env if e.name == "DATABASE_URL"]
        assert (database_url.value_from.secret_key_ref.name, database_url.value_from.secret_key_ref.key) == (
            "ingest-database", "url")
        assert spec.containers[0].resources.limits == {"memory": "320Mi"}  # values-dev.yaml
        assert job.spec.backoff_limit == 0
        # values-dev.yaml's, from when it was handled: set then, to that plus the time since the Job ended.
        assert 3600 <= job.spec.ttl_seconds_after_finished <= 3600 + 120
        # The installed Jobs' NetworkPolicy selects this Job's pods, and the controller's does not.
        networking = client.NetworkingV1Api(kube.api_client)
        job_pods = {p.metadata.name for p in kube.core.list_namespaced_pod(
            namespace, label_selector=f"job-name={job.metadata.name}").items}
        assert job_pods

        def selected_by(policy_name):
            labels = networking.read_namespaced_network_policy(policy_name, namespace).spec.pod_selector.match_labels
            return {p.metadata.name for p in kube.core.list_namespaced_pod(
                namespace, label_selector=",".join(f"{k}={v}" for k, v in labels.items())).items}

        assert job_pods <= selected_by(f"{RELEASE}-ingest")
        assert not job_pods & selected_by(RELEASE)

        # The helm test hook's script, in its image, pointed at this controller instead of its Service.
        hook = one(render(helm, *values_args()), "Pod")["spec"]["containers"][0]
        probe = image.run(command=[*hook["command"], f"http://127.0.0.1:{port}/healthz"], timeout=30)
        assert probe.returncode == 0, probe.stdout + probe.stderr

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=pod.termination_grace_period_seconds) == 0
    finally:
        stop_process(process)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    # No call failed (a 403 would be a "will retry" warning); setting the file aside is the one warning.
    assert [line["event"] for line in lines if line.get("level") in ("warning", "error")] == ["file set aside"]
