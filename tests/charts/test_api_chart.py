"""The rates-api Helm chart (charts/rates-api): lint, schema, validity for the test apiserver,
the zero-downtime rollout arithmetic, the API settings it renders, its NetworkPolicies, and
a real install, upgrade and uninstall whose migration hook runs on a local node against a
real database.

The test control plane has no network plugin, so nothing enforces the NetworkPolicies
here: the tests check what they render, that the API server admits them, what they would
allow (tests/support/netpol.py works that out from the manifests) and how Helm creates and
deletes the migration hook's policy, not packets.
"""

import base64
import http.server
import json
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
import requests
import yaml
from kubernetes import client

from rates_api import create_app, openapi
from rates_api.settings import MAX_RANGE_DAYS_LIMIT, Settings
from rates_core import migrate
from rates_core.env import ConfigError
from tests.support.db import autocommit
from tests.support.images import postgres_socket
from tests.support.kube import gone, kubeconform
from tests.support.local_node import LocalNode
from tests.support.net import free_ports, wait_for_http
from tests.support.netpol import Pod, address, connection_allowed, egress_allowed, ingress_allowed, pod_of, selects
from tests.support.poll import wait_for
from tests.support.world import insert_prices, insert_world

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "rates-api"
ENVS = ("dev", "staging", "prod")
RELEASE = "rates-api"
DUMMY_DSN = "postgresql://rates@db.invalid:5432/rates"
CHART_LABEL = "rates-api-" + yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]


# --- helpers -------------------------------------------------------------------------------

def values_args(env: str | None) -> list[str]:
    """An environment's values file with what Terraform's api_values hands it, as the
    documented install gives both (the file alone refuses to render: see below)."""
    return ["-f", str(CHART / f"values-{env}.yaml"), *FROM_TERRAFORM] if env else []


def sets(*assignments: str) -> list[str]:
    return [arg for a in assignments for arg in ("--set", a)]


@pytest.fixture(scope="module")
def render(helm):
    """`helm template` of the chart as {(kind, name): manifest}; cached per arguments."""
    cache: dict[tuple, dict] = {}

    def rendered(env: str | None = None, *extra: str) -> dict:
        key = (env, extra)
        if key not in cache:
            out = helm("template", RELEASE, str(CHART), *values_args(env), *extra).stdout
            docs = [d for d in yaml.safe_load_all(out) if d]
            cache[key] = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        return cache[key]

    return rendered


def one(docs: dict, kind: str) -> dict:
    found = [d for (k, _), d in docs.items() if k == kind]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return found[0]


def api_ingress(docs: dict) -> dict:
    """The API's Ingress (in a shared IngressGroup the JSON 404 has one of its own)."""
    return docs[("Ingress", RELEASE)]


def kinds(docs: dict) -> set[str]:
    return {k for k, _ in docs}


IAM_URL = "postgresql://rates_api@rates.abc.eu-west-1.rds.amazonaws.com:5432/rates?sslmode=require"
FROM_TERRAFORM = ["--set", f"database.url={IAM_URL}", "--set", "aws.region=eu-west-1",
                  "--set", "serviceAccount.iamRoleArn=arn:aws:iam::123456789012:role/rates-test-api"]
# The tests' own database, as k8s/local/rates-api-values.yaml has it: no IAM tokens.
LOCAL_DATABASE = ["--set", "database.iamAuth=false"]


def api_container(docs: dict) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def plain_env(container: dict, database_url: str = DUMMY_DSN) -> dict[str, str]:
    """The container's environment as the process would see it, DATABASE_URL from its Secret."""
    env = {}
    for var in container["env"]:
        if "valueFrom" in var:
            assert var["name"] == "DATABASE_URL", var
            env[var["name"]] = database_url
        else:
            env[var["name"]] = var["value"]
    return env


def gunicorn_config(env: dict[str, str]) -> dict:
    """What api/gunicorn.conf.py itself makes of this environment (it reads os.environ)."""
    code = ("import json, runpy; c = runpy.run_path('api/gunicorn.conf.py'); "
            "print(json.dumps({k: c[k] for k in ('bind', 'workers', 'threads', 'keepalive', "
            "'timeout', 'graceful_timeout', 'drain_seconds', 'loglevel', 'probe_port')}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def documented_api_variables() -> set[str]:
    """The variables of the README's "API configuration" table."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### API configuration", 1)[1].split("\n#", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z_]+)`", line.split("|")[1]))
    assert len(names) > 10, names
    return names


# --- lint, schema, validity -----------------------------------------------------------------

@pytest.mark.parametrize("env", [None, *ENVS])
def test_lint_strict(helm, env):
    proc = helm("lint", "--strict", str(CHART), *values_args(env))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("assignment, error", [
    ("database.existingSecret=null", "missing property 'existingSecret'"),
    ("database.existingSecret=", "/database/existingSecret"),
    ("database.secretKey=null", "missing property 'secretKey'"),
    ("replicaCount=-1", "/replicaCount"),
    ("replicas=3", "additional properties 'replicas' not allowed"),
    ("config.workers=3", "additional properties 'workers' not allowed"),
    ("config.logLevel=TRACE", "/config/logLevel"),
    ("rollingUpdate.maxSurge=0", "/rollingUpdate/maxSurge"),
    ("autoscaling.minReplicas=0", "/autoscaling/minReplicas"),
    ("ingress.scheme=public", "/ingress/scheme"),
    ("networkPolicy.database.port=0", "/networkPolicy/database/port"),
    ("networkPolicy.database.port=65536", "/networkPolicy/database/port"),
    ("networkPolicy.database.cidrs[0]=10.0.0.0", "/networkPolicy/database/cidrs/0"),
    ("networkPolicy.database.cidrs[0]=10.0.0.300/16", "/networkPolicy/database/cidrs/0"),
    ("networkPolicy.database.cidrs[0]=010.0.0.0/16", "/networkPolicy/database/cidrs/0"),
    ("networkPolicy.database.cidrs[0]=rates.example.internal/32", "/networkPolicy/database/cidrs/0"),
    ("networkPolicy.database.cidrs[0]=fd00::/129", "/networkPolicy/database/cidrs/0"),
    ("networkPolicy.extraEgress[0].ports[0].port=70000", "/networkPolicy/extraEgress/0/ports/0/port"),
    ("networkPolicy.extraEgress[0].too=x", "additional properties 'too' not allowed"),
    ("networkPolicy.ingress=x", "additional properties 'ingress' not allowed"),
    ("database.url=postgresql://rates_api:secret@db/rates", "/database/url"),
    ("database.url=postgresql://rates_api@db/rates?sslmode=require&password=secret", "/database/url"),
    ("database.url=postgresql://rates_api@db/rates?pass%77ord=secret", "/database/url"),  # libpq decodes keys
    ("database.url=host=db user=rates_api", "/database/url"),
    ("database.iamAuth=true", "/database/url"),
    ("aws.region=Ireland", "/aws/region"),
    ("serviceAccount.iamRoleArn=rates-api", "/serviceAccount/iamRoleArn"),
    ("serviceAccount.iamRoleArn=arn:aws:iam::123:role/x", "/serviceAccount/iamRoleArn"),
    ("image.tag=v1 or latest", "/image/tag"),
    ("image.tag=-rc1", "/image/tag"),
    ("containerPort=80", "/containerPort"),  # below 1024: a non-root process cannot bind it
    # PostgreSQL and libpq take 32-bit integers; the API would refuse to start
    ("config.dbStatementTimeoutMs=2147483648", "/config/dbStatementTimeoutMs"),
    ("config.dbConnectTimeoutSeconds=2147483648", "/config/dbConnectTimeoutSeconds"),
])
def test_schema_rejects_bad_values(helm, assignment, error):
    proc = helm("template", RELEASE, str(CHART), "--set", assignment, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert error in proc.stderr, proc.stderr


def test_max_range_days_stops_where_the_api_does(render, helm):
    # The API refuses to start above its limit: helm refuses first, not a crash-looping rollout.
    env = plain_env(api_container(render(None, *sets(f"config.maxRangeDays={MAX_RANGE_DAYS_LIMIT}"))))
    assert Settings.from_env(env).max_range_days == MAX_RANGE_DAYS_LIMIT == 3660
    with pytest.raises(ConfigError, match="MAX_RANGE_DAYS must be <= 3660"):
        Settings.from_env({**env, "MAX_RANGE_DAYS": str(MAX_RANGE_DAYS_LIMIT + 1)})
    proc = helm("template", RELEASE, str(CHART), *sets(f"config.maxRangeDays={MAX_RANGE_DAYS_LIMIT + 1}"),
                check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert "/config/maxRangeDays" in proc.stderr, proc.stderr

@pytest.mark.parametrize("limit, cache_mib", [("0.5Gi", 96), (".5Gi", 96), ("402653184", 64), ("1Gi", 224),
                                              (" 1Gi ", 224), ("1073741824000m", 224), ("537e6", 96)])
def test_caches_within_half_the_memory_limit_render(helm, limit, cache_mib):
    helm("template", RELEASE, str(CHART), "--set-string", f"resources.limits.memory={limit}",
         "--set-json", f"config.responseCacheMiB={cache_mib}")


def test_a_cache_turned_off_holds_no_memory(helm):
    # 2 workers x 200 MiB would be refused against half of 384 MiB, were the cache on.
    helm("template", RELEASE, str(CHART), "--set-json", "config.responseCacheMiB=200",
         "--set-json", "config.responseCacheSize=0")


def test_a_byte_count_unquoted_in_a_values_file_is_read_as_bytes(helm, tmp_path):
    # YAML makes it a float, which Go prints as 1.073741824e+09.
    values = tmp_path / "memory.yaml"
    values.write_text("resources:\n  limits:\n    memory: 1073741824\nconfig:\n  responseCacheMiB: 224\n")
    helm("template", RELEASE, str(CHART), "-f", str(values))
    values.write_text("resources:\n  limits:\n    memory: 1073741824\nconfig:\n  responseCacheMiB: 225\n")
    refused = helm("template", RELEASE, str(CHART), "-f", str(values), check=False)
    assert refused.returncode != 0 and "(514.0 MiB) must be at most half of resources.limits.memory (1024.0 MiB)" in (
        refused.stderr), refused.stderr


def test_schema_rejects_a_string_where_a_number_belongs(helm):
    proc = helm("template", RELEASE, str(CHART), "--set-string", "config.webConcurrency=2",
                check=False)
    assert proc.returncode != 0 and "/config/webConcurrency" in proc.stderr, proc.stderr


@pytest.mark.parametrize("assignments, error", [
    # 30 s preStop + 5 s drain + 30 s graceful = 65 s: the kubelet would kill at 65
    (["shutdown.terminationGracePeriodSeconds=65"], "terminationGracePeriodSeconds (65) must exceed"),
    (["shutdown.drainSeconds=5.5", "shutdown.terminationGracePeriodSeconds=66"], "(66) must exceed"),
    (["ingress.deregistrationDelaySeconds=65"], "deregistrationDelaySeconds (65) must be below"),
    (["config.gunicornKeepalive=60"], "gunicornKeepalive (60) must exceed"),
    (["autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=4"],
     "minReplicas must not exceed"),
    (["autoscaling.enabled=true", "resources.requests.cpu=null"], "needs resources.requests.cpu"),
    (["migrations.lockWaitSeconds=600"], "lockWaitSeconds (600) must be below migrations.activeDeadlineSeconds (600)"),
    # 5 s to connect + 23.001 s + 2 s of silence, rounded up: 31 s against 30
    (["config.dbStatementTimeoutMs=23001"], "(31 s, a request held to its timeouts) must be below shutdown.gracefulTimeoutSeconds (30)"),
    (["config.dbStatementTimeoutMs=120000", "shutdown.gracefulTimeoutSeconds=200",
      "shutdown.terminationGracePeriodSeconds=300", "config.gunicornKeepalive=250", "ingress.idleTimeoutSeconds=200"],
     "(127 s, a request held to its timeouts) must be below ingress.deregistrationDelaySeconds (30)"),
    (["config.dbConnectTimeoutSeconds=20", "ingress.deregistrationDelaySeconds=40", "ingress.idleTimeoutSeconds=25",
      "config.gunicornKeepalive=30"], "(27 s, a request held to its timeouts) must be below ingress.idleTimeoutSeconds (25)"),
    # 2 workers x 65 MiB of cache + 64 MiB of /dev/shm against half of 384 MiB
    (["config.responseCacheMiB=65"], "(194.0 MiB) must be at most half of resources.limits.memory (384.0 MiB)"),
    (['resources.limits.memory="400M"'], "(192.0 MiB) must be at most half of resources.limits.memory (381.5 MiB)"),
    (['resources.limits.memory="384Xi"'], '"384Xi" is not a memory quantity this chart reads'),
    # 5 workers x (16 MiB of cache + 45 of their own) + 32 + 64 of /dev/shm: under half of the
    # limit by the check above, yet more than all of it
    (["config.webConcurrency=5", "config.responseCacheMiB=16"],
     "+ shmSizeLimit (401.0 MiB) must fit resources.limits.memory (384.0 MiB)"),
    # A budget that lets no pod go at the fewest holds every node drain (an EKS node group
    # update fails after 15 minutes), as maxUnavailable 0 would, which the schema refuses.
    (["replicaCount=2", "podDisruptionBudget.minAvailable=2"], "minAvailable: 2 of 2 pods (the fewest) keeps 2 up"),
    (["autoscaling.enabled=true", "autoscaling.minReplicas=3", "autoscaling.maxReplicas=20",
      'podDisruptionBudget.minAvailable="3"'], "minAvailable: 3 of 3 pods (the fewest) keeps 3 up"),
    (["replicaCount=3", 'podDisruptionBudget.minAvailable="100%"'], "minAvailable: 100% of 3 pods (the fewest) keeps 3"),
    # Kubernetes rounds a share up: 67 % of 3 pods is 3, and 50 % of an HPA's 1 is 1.
    (["replicaCount=3", 'podDisruptionBudget.minAvailable="67%"'], "minAvailable: 67% of 3 pods (the fewest) keeps 3"),
    (["autoscaling.enabled=true", "autoscaling.minReplicas=1", "autoscaling.maxReplicas=5",
      'podDisruptionBudget.minAvailable="50%"'], "minAvailable: 50% of 1 pods (the fewest) keeps 1"),
    # Read as octal by sprig's int, and as 100 % by Kubernetes.
    (["replicaCount=2", 'podDisruptionBudget.minAvailable="0100%"'], "/podDisruptionBudget/minAvailable"),
])
def test_timings_that_would_drop_requests_are_refused(helm, assignments, error):
    # --set-json: plain --set makes 5.5 a string
    proc = helm("template", RELEASE, str(CHART), *[arg for a in assignments for arg in ("--set-json", a)],
                check=False)
    assert proc.returncode != 0 and error in proc.stderr, proc.stderr


@pytest.mark.parametrize("env", ENVS)
def test_rendering_is_valid_for_the_apiserver(helm, kubectl, schemas, kube_tools, namespace, env):
    manifest = helm("template", RELEASE, str(CHART), "-n", namespace, *values_args(env)).stdout
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    count = len(docs)
    # Two NetworkPolicies: the API's and the migration hook's.
    expected = ["Deployment", "Ingress", "Job", "NetworkPolicy", "NetworkPolicy", "Pod", "Service",
                "ServiceAccount"]
    if env == "prod":
        expected = sorted([*expected, "HorizontalPodAutoscaler", "PodDisruptionBudget"])
    else:  # dev and staging share an ALB: the JSON 404's Ingress is last in its group
        expected = sorted([*expected, "Ingress"])
    assert sorted(d["kind"] for d in docs) == expected

    summary = kubeconform(kube_tools["kubeconform"], schemas, manifest)
    assert summary["valid"] == count and summary["invalid"] == summary["errors"] == 0, summary

    proc = kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=manifest)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == count, proc.stdout
    for name in ("rates-api", "rates-api-migrate"):
        assert f"networkpolicy.networking.k8s.io/{name} created (server dry run)" in proc.stdout, proc.stdout


_DOCUMENTED = [REPO / "README.md", CHART / "README.md", REPO / "terraform-eks/README.md",
               *sorted(CHART.glob("values-*.yaml"))]


def test_every_documented_install_waits_longer_than_the_migration_may_take():
    # helm gives up after --timeout (default 5m) while the hook's Job may still run, and its
    # hook policy with it; the next attempt would then replace the running Job.
    deadline = yaml.safe_load((CHART / "values.yaml").read_text())["migrations"]["activeDeadlineSeconds"]
    found = 0
    for path in _DOCUMENTED:
        text = re.sub(r"\\\n[#\s]*", " ", path.read_text())  # join continued lines, commented or not
        for command in re.findall(r"helm upgrade --install rates-api .*", text):
            found += 1
            timeout = re.search(r"--timeout (\d+)m\b", command)
            assert timeout and int(timeout.group(1)) * 60 > deadline, f"{path.name}: {command}"
    assert found >= 6


def test_a_long_image_tag_still_makes_valid_labels(helm, kubectl, namespace):
    # The schema takes tags of up to 128 characters; cut at 63 for the version label, this
    # one would end in "." and the API server would refuse every object of the release.
    tag = "release-2024.06.01-build." + "a" * 37 + "." + "b" * 10
    manifest = helm("template", RELEASE, str(CHART), "-n", namespace, "--set", f"image.tag={tag}").stdout
    versions = {d["metadata"]["labels"]["app.kubernetes.io/version"] for d in yaml.safe_load_all(manifest) if d}
    assert versions == {tag[:62]}
    proc = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest)
    assert proc.returncode == 0, proc.stderr


# --- what the rendering says ----------------------------------------------------------------

@pytest.mark.parametrize("env", ENVS)
def test_rollout_drops_no_request(render, env):
    docs = render(env)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = api_container(docs)

    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] not in (0, "0%")

    # The pod keeps serving for the preStop sleep, then gunicorn's own graceful_timeout
    # (computed by gunicorn.conf.py from the env the chart sets); only then may it be killed.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep"
    pre_stop = int(command[1])
    assert pre_stop >= 5
    gunicorn = gunicorn_config(plain_env(container))
    serving = pre_stop + gunicorn["graceful_timeout"]
    assert pod["terminationGracePeriodSeconds"] > serving

    # The ALB is done with a deregistered pod while it still serves, and always closes idle
    # connections before gunicorn does.
    annotations = api_ingress(docs)["metadata"]["annotations"]
    attributes = dict(a.split("=") for a in
                      annotations["alb.ingress.kubernetes.io/target-group-attributes"].split(","))
    delay = int(attributes["deregistration_delay.timeout_seconds"])
    assert delay < serving < pre_stop + pod["terminationGracePeriodSeconds"]
    idle = annotations["alb.ingress.kubernetes.io/load-balancer-attributes"]
    assert int(idle.removeprefix("idle_timeout.timeout_seconds=")) < gunicorn["keepalive"]

    # Probes: readiness is the database check, liveness and startup never touch it.
    port, probe = container["ports"]
    assert port["name"] == "http" and str(port["containerPort"]) == plain_env(container)["PORT"]
    assert gunicorn["bind"].endswith(f":{port['containerPort']}")
    # Readiness on the workers' probe threads, which no request queues before (rates_api.probes).
    assert probe["name"] == "probe" and str(probe["containerPort"]) == plain_env(container)["PROBE_PORT"]
    assert gunicorn["probe_port"] == probe["containerPort"] != port["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probe"}
    # Liveness too: on http it queued behind the requests (rates_api.health.healthz).
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probe"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    assert annotations["alb.ingress.kubernetes.io/healthcheck-port"] == str(probe["containerPort"])
    assert annotations["alb.ingress.kubernetes.io/target-type"] == "ip"

    # With the HPA on, the Deployment leaves replicas alone; a PDB only where it can help.
    hpa = [d for (k, _), d in docs.items() if k == "HorizontalPodAutoscaler"]
    if hpa:
        assert "replicas" not in deployment["spec"]
        assert hpa[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert hpa[0]["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
        assert hpa[0]["spec"]["maxReplicas"] > 1
        assert container["resources"]["requests"]["cpu"]
    else:
        assert deployment["spec"]["replicas"] == 1
    assert ("PodDisruptionBudget" in kinds(docs)) == bool(hpa)


def test_hpa_and_pdb_follow_the_values(render):
    on = render(None, *sets("autoscaling.enabled=true", "autoscaling.minReplicas=4",
                            "autoscaling.maxReplicas=9", "autoscaling.targetCPUUtilizationPercentage=60"))
    assert "replicas" not in one(on, "Deployment")["spec"]
    hpa = one(on, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 9)
    assert hpa["metrics"][0]["resource"] == {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}

    off = render(None, *sets("replicaCount=3"))
    assert one(off, "Deployment")["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in kinds(off)
    assert one(off, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    min_available = render(None, *sets("replicaCount=3", "podDisruptionBudget.minAvailable=2"))
    assert "maxUnavailable" not in one(min_available, "PodDisruptionBudget")["spec"]
    assert one(min_available, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    half = render(None, *sets("replicaCount=3", "podDisruptionBudget.minAvailable=50%"))  # 2 of 3
    assert one(half, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"

    # One pod, or an HPA that can never go above one: a PDB could only block node drains.
    assert "PodDisruptionBudget" not in kinds(render(None, *sets("replicaCount=1")))
    watched = ("metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
    assert "PrometheusRule" in kinds(render("staging", *sets(*watched)))
    parked = render("staging", *sets("replicaCount=0", *watched))  # runbook, "Parking dev and staging"
    assert one(parked, "Deployment")["spec"]["replicas"] == 0 and "PodDisruptionBudget" not in kinds(parked)
    assert "PrometheusRule" not in kinds(parked)  # RatesApiDown would fire all night
    assert "PodDisruptionBudget" not in kinds(render(None, *sets(
        "autoscaling.enabled=true", "autoscaling.minReplicas=1", "autoscaling.maxReplicas=1")))


def test_pdb_evicts_unready_pods_and_scale_up_is_immediate(render):
    docs = render(None, *sets("autoscaling.enabled=true", "autoscaling.minReplicas=2"))
    # A crash-looping pod must not block node drains by counting against the budget.
    assert one(docs, "PodDisruptionBudget")["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # Traffic spikes are met at once; only scaling down waits for the load to settle.
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    # A rollout's new pods are spread among themselves, not counted with the old ones.
    spread = one(docs, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread and all(c["matchLabelKeys"] == ["pod-template-hash"] for c in spread)


def test_probe_and_shutdown_timings_are_the_values_given(render):
    timings = {"startup": (3, 4, 50), "readiness": (6, 2, 3), "liveness": (20, 7, 4)}
    assignments = [f"probes.{probe}.{field}={value}" for probe, values in timings.items()
                   for field, value in zip(("periodSeconds", "timeoutSeconds", "failureThreshold"), values)]
    container = api_container(render(None, *sets(*assignments, "shutdown.preStopSleepSeconds=12")))
    for probe, values in timings.items():
        rendered = container[f"{probe}Probe"]
        assert (rendered["periodSeconds"], rendered["timeoutSeconds"], rendered["failureThreshold"]) == values
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sleep", "12"]


@pytest.mark.parametrize("env", ENVS)
def test_rendered_env_is_a_valid_api_configuration(render, env):
    container = api_container(render(env))
    env_vars = plain_env(container)
    assert len(env_vars) == len(container["env"]), "a variable is set twice"

    # Every variable is one the API reads (a typo would be ignored silently), and every one
    # it reads is set, except DB_POOL_SIZE, which defaults to one connection per thread.
    assert set(env_vars) == documented_api_variables() - {"DB_POOL_SIZE"}

    settings = Settings.from_env(env_vars)
    values = yaml.safe_load((CHART / f"values-{env}.yaml").read_text())
    # Every environment logs in as the read-only user with IAM tokens, never with the Secret.
    assert settings.database_url == IAM_URL and settings.database_iam_auth
    assert settings.db_pool_size == values["config"]["gunicornThreads"]
    assert settings.log_level == values["config"]["logLevel"]
    assert settings.app_version == yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

    gunicorn = gunicorn_config(env_vars)
    assert gunicorn["workers"] == values["config"]["webConcurrency"]
    assert gunicorn["threads"] == values["config"]["gunicornThreads"]
    assert gunicorn["loglevel"] == values["config"]["logLevel"].lower()
    # The metrics directory lives in the memory-backed volume, not the read-only root.
    assert env_vars["PROMETHEUS_MULTIPROC_DIR"].startswith("/dev/shm/")


def test_every_api_setting_reaches_the_api(render):
    container = api_container(render(None, *sets(
        "config.dbPoolSize=2", "config.gunicornThreads=6", "config.dbStatementTimeoutMs=1500",
        "config.dbConnectTimeoutSeconds=3", "config.maxRangeDays=31", "config.logLevel=WARNING",
        "config.hungRequestSeconds=90",
        "image.tag=abc123", "config.host=::", "containerPort=8080", "database.iamAuth=true",
        f"database.url={IAM_URL}", "aws.region=eu-west-1"),
        # JSON numbers are floats, like every number from a values file: 1e+06 must not show
        "--set-json", "config.responseCacheSize=1000000", "--set-json", "config.responseCacheMiB=48",
        "--set-json", "shutdown.drainSeconds=2.5"))
    env_vars = plain_env(container)
    assert set(env_vars) == documented_api_variables()
    assert env_vars["AWS_REGION"] == env_vars["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert Settings.from_env(env_vars) == Settings(
        database_url=IAM_URL, database_iam_auth=True, db_pool_size=2, gunicorn_threads=6,
        db_statement_timeout_ms=1500, db_connect_timeout_s=3, max_range_days=31, response_cache_size=1_000_000,
        response_cache_mib=48, app_version="abc123", log_level="WARNING", hung_request_s=90)
    gunicorn = gunicorn_config(env_vars)
    assert gunicorn["bind"] == "[::]:8080" and gunicorn["threads"] == 6
    assert gunicorn["drain_seconds"] == 2.5 and gunicorn["graceful_timeout"] == 3 + 30
    assert container["image"] == "rates-api:abc123"


@pytest.mark.parametrize("env", ENVS)
def test_pods_run_locked_down(render, env):
    docs = render(env)
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "api" / "Dockerfile").read_text(), re.M)
    uid, gid = int(user[1]), int(user[2])
    deployment_pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    pods = {"Deployment": deployment_pod,
            "Job": one(docs, "Job")["spec"]["template"]["spec"],
            "Pod": one(docs, "Pod")["spec"]}
    for kind, pod in pods.items():
        assert pod["automountServiceAccountToken"] is False, kind
        assert pod["securityContext"]["runAsNonRoot"] is True, kind
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid), kind
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, kind
        assert sc["capabilities"] == {"drop": ["ALL"]}, kind
        assert container["image"] == api_container(docs)["image"], kind

    # The only places gunicorn writes (api/gunicorn.conf.py) are writable, in memory.
    volumes = {v["name"]: v for v in deployment_pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in api_container(docs)["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"]

    sa = one(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert deployment_pod["serviceAccountName"] == sa["metadata"]["name"]
    spread = deployment_pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread)


def test_labels_and_selectors_agree(render):
    docs = render("prod")
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "rates-api", "app.kubernetes.io/instance": RELEASE,
                        "app.kubernetes.io/component": "api"}
    for (kind, _), doc in docs.items():
        labels = doc["metadata"]["labels"]
        for key in ("name", "instance", "version", "component", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, (kind, key)
        assert labels["helm.sh/chart"] == CHART_LABEL, kind
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert one(docs, "Service")["spec"]["selector"] == selector
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert spread["labelSelector"]["matchLabels"] == selector
    # The hook pods must not become endpoints of the Service.
    job_labels = one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items()
    assert not selector.items() <= one(docs, "Pod")["metadata"]["labels"].items()

    service = one(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                                        {"name": "probe", "port": 8081, "targetPort": "probe", "protocol": "TCP"}]
    ingress = api_ingress(docs)
    assert ingress["spec"]["ingressClassName"] == "alb"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "rates-api.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": service["metadata"]["name"], "port": {"name": "http"}}


def test_ingress_annotations(render):
    plain = api_ingress(render(None))["metadata"]["annotations"]
    assert plain["alb.ingress.kubernetes.io/listen-ports"] == '[{"HTTP": 80}]'
    assert "alb.ingress.kubernetes.io/ssl-redirect" not in plain
    assert "alb.ingress.kubernetes.io/certificate-arn" not in plain
    assert "alb.ingress.kubernetes.io/ssl-policy" not in plain
    assert api_ingress(render(None))["spec"]["rules"][0].get("host") is None

    arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
    https = api_ingress(render(None, *sets("ingress.https=true", f"ingress.certificateArn={arn}",
                                           "ingress.scheme=internal", "ingress.groupName=shared",
                                           "ingress.hosts={api.example.com}",
                                           "ingress.annotations.alb\\.ingress\\.kubernetes\\.io/success-codes=200-299"))
                        )["metadata"]["annotations"]
    assert json.loads(https["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert https["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert https["alb.ingress.kubernetes.io/certificate-arn"] == arn
    # TLS 1.2 and 1.3 only, not the controller's default policy, which takes TLS 1.0
    assert https["alb.ingress.kubernetes.io/ssl-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["alb.ingress.kubernetes.io/scheme"] == "internal"
    assert https["alb.ingress.kubernetes.io/group.name"] == "shared"
    assert https["alb.ingress.kubernetes.io/success-codes"] == "200-299"  # values win

    assert "Ingress" not in kinds(render(None, *sets("ingress.enabled=false")))
    sa = one(render(None, *sets("serviceAccount.iamRoleArn=arn:aws:iam::123456789012:role/rates-api")),
             "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/rates-api"}


def test_the_service_monitor_scrapes_every_api_pod(render):
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds(render("prod"))  # off by default
    docs = render("prod", *sets("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kps"))
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    # On the probe port, where each worker answers beside gunicorn's threads: on http the
    # scrapes of a pod whose threads were all busy queued behind its requests and timed out.
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    container = api_container(docs)
    assert port["targetPort"] == "probe" == container["readinessProbe"]["httpGet"]["port"]
    probe = {p["name"]: p["containerPort"] for p in container["ports"]}["probe"]
    assert port["port"] == probe and plain_env(container)["PROBE_PORT"] == str(probe)
    # Prometheus, in a namespace of its own, may connect there.
    prometheus = Pod(labels={"app.kubernetes.io/name": "prometheus"}, namespace="monitoring",
                     namespace_labels={"kubernetes.io/metadata.name": "monitoring"})
    policies = [d for (k, _), d in docs.items() if k == "NetworkPolicy"]
    assert ingress_allowed(policies, pod_of(one(docs, "Deployment")["spec"]["template"]), prometheus, probe)
    # The load balancer still forwards to http only.
    [backend_port] = {path["backend"]["service"]["port"]["name"] for rule in api_ingress(docs)["spec"]["rules"]
                      for path in rule["http"]["paths"] if path["backend"]["service"]["name"] == RELEASE}
    assert backend_port == "http"


@pytest.mark.parametrize("env", ENVS)
def test_the_load_balancer_forwards_the_public_routes_only(render, env):
    app = create_app(Settings.from_env({"DATABASE_URL": DUMMY_DSN}))  # the pool opens on first use only
    routes = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    # What the API's own document calls in-cluster only (tests/api checks it covers every route).
    paths = openapi.document("test")["paths"]
    internal = {path for path, item in paths.items() if openapi.INTERNAL in item["get"].get("tags", ())}
    assert internal < routes
    for rule in api_ingress(render(env))["spec"]["rules"]:
        forwarded = [p for p in rule["http"]["paths"] if p["backend"]["service"]["name"] == RELEASE]
        assert {p["path"] for p in forwarded} == routes - internal
        assert {p["pathType"] for p in forwarded} == {"Exact"}


ACTION = "alb.ingress.kubernetes.io/actions.json-not-found"
CATCH_ALL = {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "json-not-found", "port": {"name": "use-annotation"}}}}


@pytest.mark.parametrize("env", ENVS)
def test_the_load_balancer_answers_other_paths_with_the_apis_json_404(render, env):
    docs = render(env)
    api = api_ingress(docs)
    own = docs.get(("Ingress", RELEASE + "-not-found"))
    holder = own or api
    action = json.loads(holder["metadata"]["annotations"][ACTION])
    assert action["type"] == "fixed-response"
    config = action["fixedResponseConfig"]
    assert (config["statusCode"], config["contentType"]) == ("404", "application/json")
    assert len(config["messageBody"]) <= 1024  # the ALB's limit for a fixed response
    # The same body as the API's own 404 for a path it does not know.
    app = create_app(Settings.from_env({"DATABASE_URL": DUMMY_DSN}))
    answer = app.test_client().get("/no-such-path")
    assert answer.status_code == 404 and json.loads(config["messageBody"]) == answer.get_json()

    notes = api["metadata"]["annotations"]
    if "alb.ingress.kubernetes.io/group.name" not in notes:  # its own ALB (prod)
        # One Ingress: the controller puts its Exact paths before the Prefix one.
        assert own is None
        for rule in api["spec"]["rules"]:
            assert [p for p in rule["http"]["paths"] if p["pathType"] == "Prefix"] == [CATCH_ALL]
        return
    # A shared ALB (dev and staging): the group orders Ingresses by group.order, then by
    # name, so the catch-all is an Ingress of its own, last in the group, for the API's hosts.
    assert ACTION not in notes and all(CATCH_ALL not in r["http"]["paths"] for r in api["spec"]["rules"])
    assert own["metadata"]["annotations"].pop("alb.ingress.kubernetes.io/group.order") == "1000"
    del own["metadata"]["annotations"][ACTION]
    assert own["metadata"]["annotations"] == notes  # the group's listener settings must agree
    assert [r["host"] for r in own["spec"]["rules"]] == [r["host"] for r in api["spec"]["rules"]]
    assert all(r["http"]["paths"] == [CATCH_ALL] for r in own["spec"]["rules"])


def test_the_json_404_can_be_left_to_the_alb_and_never_catches_a_shared_groups_hosts(render, helm):
    off = render(None, *sets("ingress.jsonNotFound=false"))
    assert [name for kind, name in off if kind == "Ingress"] == [RELEASE]
    assert not any(k.startswith("alb.ingress.kubernetes.io/actions.") for k in api_ingress(off)["metadata"]["annotations"])
    assert all(p["backend"]["service"]["name"] == RELEASE for p in api_ingress(off)["spec"]["rules"][0]["http"]["paths"])
    # In a shared IngressGroup a catch-all for every host would answer for the other Ingresses.
    proc = helm("template", RELEASE, str(CHART), *sets("ingress.groupName=shared"), check=False)
    assert proc.returncode != 0 and "ingress.jsonNotFound with ingress.groupName needs ingress.hosts" in proc.stderr
    # A group the chart cannot see, it cannot place the catch-all in.
    proc = helm("template", RELEASE, str(CHART), "--set",
                "ingress.hosts={a.example.com}", "--set",
                "ingress.annotations.alb\\.ingress\\.kubernetes\\.io/group\\.name=shared", check=False)
    assert proc.returncode != 0 and "give the IngressGroup as ingress.groupName" in proc.stderr


def test_a_release_that_would_change_its_groups_shared_settings_is_refused(helm, kube, kubectl, namespace):
    # dev and staging share one ALB, which takes these settings from all of the group's
    # Ingresses as one: staging's HTTPS redirect would send dev's HTTP traffic away, and two
    # idle timeouts stop the load balancer controller from reconciling the group at all.
    from kubernetes import client

    staging = f"staging-{namespace}"[:63]
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=staging)))
    try:
        kubectl("apply", "-n", staging, "-f", "-", input=helm(
            "template", RELEASE, str(CHART), "-n", staging, *values_args("staging"),
            "--show-only", "templates/ingress.yaml").stdout)

        def install_dev(*extra):
            return helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "--dry-run=server",
                        *values_args("dev"), *extra, check=False)

        assert install_dev().returncode == 0, install_dev().stderr
        for change, setting in [(sets("ingress.https=true"), "listen-ports"),
                                (sets("ingress.idleTimeoutSeconds=120", "config.gunicornKeepalive=150"),
                                 "load-balancer-attributes"),
                                (sets("ingress.scheme=internet-facing"), "scheme")]:
            refused = install_dev(*change)
            assert refused.returncode != 0, change
            assert f"the Ingress {staging}/rates-api of the IngressGroup rates-nonprod has " \
                   f"alb.ingress.kubernetes.io/{setting}" in refused.stderr, refused.stderr
        assert install_dev(*sets("ingress.https=true", "ingress.checkGroupSettings=false")).returncode == 0
    finally:
        kube.core.delete_namespace(staging)


SCHEME = "alb.ingress.kubernetes.io/scheme"


def deploy_ingress(helm, namespace, *extra: str, check: bool = True):
    """A real install or upgrade of the chart's defaults, without the migration hook (no
    database here): the Ingress lands in the API server, where the next upgrade's lookup
    finds it. No --wait: the pods never run, and the Ingress is all these tests read."""
    return helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace,
                *sets("migrations.enabled=false"), *extra, check=check)


def live_scheme(kube, namespace) -> str:
    return client.NetworkingV1Api(kube.api_client).read_namespaced_ingress(
        RELEASE, namespace).metadata.annotations[SCHEME]


def revisions(helm, namespace) -> list[tuple[int, str]]:
    return [(r["revision"], r["status"])
            for r in json.loads(helm("history", RELEASE, "-n", namespace, "-o", "json").stdout)]


def api_ingress_of(manifests: str) -> dict:
    [ingress] = [d for d in yaml.safe_load_all(manifests) if d and d["kind"] == "Ingress"
                 and d["metadata"]["name"] == RELEASE]
    return ingress


def test_a_fresh_install_makes_an_internal_alb(helm, kube, namespace):
    # Private unless asked: values-prod.yaml says internet-facing itself.
    deploy_ingress(helm, namespace)
    assert live_scheme(kube, namespace) == "internal"
    assert api_ingress_of(helm("template", RELEASE, str(CHART)).stdout)["metadata"]["annotations"][SCHEME] \
        == "internal"


def test_an_upgrade_that_would_change_the_alb_scheme_is_refused(helm, kube, namespace):
    """Another scheme makes the load balancer controller replace the ALB (a new DNS name,
    the old one's connections dropped): an upgrade that changes it is refused, the live
    Ingress untouched, unless ingress.allowSchemeChange says it is meant."""
    deploy_ingress(helm, namespace, *sets("ingress.scheme=internet-facing"))  # as the old default made it
    deploy_ingress(helm, namespace, *sets("ingress.scheme=internet-facing", "image.tag=v2"))  # kept: prod's path
    refused = deploy_ingress(helm, namespace, check=False)  # the new default, internal
    assert refused.returncode != 0
    assert 'has scheme "internet-facing"' in refused.stderr and 'renders "internal"' in refused.stderr, refused.stderr
    assert "ingress.scheme=internet-facing" in refused.stderr and "ingress.allowSchemeChange=true" in refused.stderr
    assert live_scheme(kube, namespace) == "internet-facing"
    assert revisions(helm, namespace) == [(1, "superseded"), (2, "deployed")]
    # helm template cannot see the cluster: nothing to compare with, nothing refused.
    assert api_ingress_of(helm("template", RELEASE, str(CHART), "-n", namespace).stdout)[
        "metadata"]["annotations"][SCHEME] == "internal"

    deploy_ingress(helm, namespace, *sets("ingress.allowSchemeChange=true"))
    assert live_scheme(kube, namespace) == "internal"
    assert revisions(helm, namespace)[-1] == (3, "deployed")
    deploy_ingress(helm, namespace)  # the scheme is now the live one: no need to allow anything
    assert revisions(helm, namespace)[-1] == (4, "deployed")


def test_an_upgrade_that_keeps_the_alb_scheme_passes(helm, kube, namespace):
    deploy_ingress(helm, namespace)
    deploy_ingress(helm, namespace, *sets("image.tag=v2", "ingress.hosts={api.example.com}"))
    assert live_scheme(kube, namespace) == "internal"
    assert revisions(helm, namespace) == [(1, "superseded"), (2, "deployed")]


def test_an_ingress_in_a_group_needs_hosts_whatever_else_is_set(helm):
    # Hostless, its paths would take every host's, another environment's too.
    for extra in (sets("ingress.groupName=shared", "ingress.jsonNotFound=false"),
                  ["--set", "ingress.jsonNotFound=false", "--set",
                   "ingress.annotations.alb\\.ingress\\.kubernetes\\.io/group\\.name=shared"]):
        proc = helm("template", RELEASE, str(CHART), *extra, check=False)
        assert proc.returncode != 0 and "an Ingress in an IngressGroup needs ingress.hosts" in proc.stderr


def test_environments_differ_where_they_should(render):
    dev, staging, prod = (one(render(e), "Deployment") for e in ENVS)
    assert dev["spec"]["replicas"] == staging["spec"]["replicas"] == 1
    for env in ("dev", "staging"):
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"}.isdisjoint(kinds(render(env)))
    hpa = one(render("prod"), "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    # As the README's table says: at 70 % CPU, and a drain takes one pod of the three at a time.
    [metric] = hpa["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert one(render("prod"), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1

    def memory(d):
        value = d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
        return int(value.removesuffix("Mi"))

    assert memory(dev) < memory(staging) < memory(prod)
    prod_ingress = api_ingress(render("prod"))["metadata"]["annotations"]
    assert prod_ingress["alb.ingress.kubernetes.io/ssl-redirect"] == "443"


# --- network policies ---------------------------------------------------------------------

DNS_EGRESS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}


def policy(docs: dict, name: str) -> dict:
    return docs[("NetworkPolicy", name)]


def pods_of(docs: dict) -> dict[str, dict]:
    """The chart's pods by component, as templates: the API's, the migration's, the test's."""
    return {"api": one(docs, "Deployment")["spec"]["template"],
            "migrations": one(docs, "Job")["spec"]["template"],
            "test": one(docs, "Pod")}


def hook_weight(doc: dict) -> int:
    return int(doc["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))


@pytest.mark.parametrize("env", [None, *ENVS])
def test_network_policies_select_the_api_and_migration_pods(render, env):
    docs = render(env)
    policies = [d for (k, _), d in docs.items() if k == "NetworkPolicy"]
    api_policy, migrate_policy = policy(docs, "rates-api"), policy(docs, "rates-api-migrate")
    deployment = one(docs, "Deployment")
    templates = pods_of(docs)
    pods = {component: pod_of(template) for component, template in templates.items()}

    # Each selects its own pods and no other: the API's exactly the Deployment's selector.
    assert api_policy["spec"]["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    expected = {"rates-api": {"api"}, "rates-api-migrate": {"migrations"}}
    for p in policies:
        selected = {c for c, template in templates.items()
                    if selects(p["spec"]["podSelector"], template["metadata"]["labels"])}
        assert selected == expected[p["metadata"]["name"]], p["metadata"]["name"]
    # The helm test pod must reach the API through its Service: nothing confines it.
    assert egress_allowed(policies, pods["test"], address("203.0.113.7"), 8443)

    # The API: in on the container ports named http and probe only, from anywhere (the ALB,
    # in-cluster clients, the kubelet's probes); the migration pods: nothing in at all.
    assert api_policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    container = api_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    http, probe = ports["http"], ports["probe"]
    assert api_policy["spec"]["ingress"] == [{"ports": [{"port": http, "protocol": "TCP"},
                                                         {"port": probe, "protocol": "TCP"}]}]
    assert container["readinessProbe"]["httpGet"]["port"] == "probe"
    for source in (address("10.0.3.4"), pods["test"], pods["migrations"]):
        for allowed in (http, probe):
            assert ingress_allowed(policies, pods["api"], source, allowed)
            assert not ingress_allowed(policies, pods["api"], source, allowed, "UDP")
        assert not ingress_allowed(policies, pods["api"], source, http + 1)
    assert connection_allowed(policies, pods["test"], pods["api"], http)  # the helm test
    assert migrate_policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert not migrate_policy["spec"].get("ingress")
    assert not ingress_allowed(policies, pods["migrations"], pods["api"], 8000)

    # Out: DNS and PostgreSQL, nothing else; and for the API, where it signs IAM tokens
    # (every environment, with Terraform's values), HTTPS to STS.
    database = {"ports": [{"port": 5432, "protocol": "TCP"}]}
    sts = [{"ports": [{"port": 443, "protocol": "TCP"}]}] if env else []
    assert api_policy["spec"]["egress"] == [DNS_EGRESS, database, *sts]
    assert migrate_policy["spec"]["egress"] == [DNS_EGRESS, database]
    rds = address("10.0.20.30")
    for component in ("api", "migrations"):
        assert egress_allowed(policies, pods[component], rds, 5432)
        assert egress_allowed(policies, pods[component], address("172.20.0.10"), 53, "UDP")
        assert egress_allowed(policies, pods[component], rds, 443) == bool(component == "api" and sts)
        for port in (80, 6443, 5433):
            assert not egress_allowed(policies, pods[component], rds, port), (component, port)
        assert not egress_allowed(policies, pods[component], address("169.254.169.254"), 80)  # no IMDS


@pytest.mark.parametrize("env", [None, *ENVS])
def test_the_migration_policy_is_a_hook_in_place_before_the_job(render, env):
    """Hooks run before the release's ordinary resources exist: the migration pods' policy
    is a hook of the same events, weighted before the Job, deleted with the succeeded hooks."""
    docs = render(env)
    migrate_policy, job = policy(docs, "rates-api-migrate"), one(docs, "Job")
    hook, job_hook = migrate_policy["metadata"]["annotations"], job["metadata"]["annotations"]
    assert set(hook["helm.sh/hook"].split(",")) == set(job_hook["helm.sh/hook"].split(",")) == {
        "pre-install", "pre-upgrade"}
    assert hook_weight(migrate_policy) < hook_weight(job)
    assert set(hook["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}
    # The API's own policy is an ordinary resource of the release.
    assert "helm.sh/hook" not in (policy(docs, "rates-api")["metadata"].get("annotations") or {})
    for p in (migrate_policy, policy(docs, "rates-api")):
        labels = p["metadata"]["labels"]
        assert labels["helm.sh/chart"] == CHART_LABEL and labels["app.kubernetes.io/part-of"] == "rates-platform"
    assert migrate_policy["metadata"]["labels"]["app.kubernetes.io/component"] == "migrations"


def test_network_policy_values(render):
    extra = [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                      "podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}}],
              "ports": [{"port": 4317, "protocol": "TCP"}]},
             {"to": [{"ipBlock": {"cidr": "10.9.0.0/16", "except": ["10.9.9.0/24"]}}]}]
    docs = render(None, "--set-json", 'networkPolicy.database.cidrs=["10.0.0.0/18","10.0.64.0/18"]',
                  "--set-json", "networkPolicy.database.port=6432",
                  "--set-json", f"networkPolicy.extraEgress={json.dumps(extra)}")
    policies = [d for (k, _), d in docs.items() if k == "NetworkPolicy"]
    database = {"ports": [{"port": 6432, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "10.0.0.0/18"}}, {"ipBlock": {"cidr": "10.0.64.0/18"}}]}
    pods = {component: pod_of(template) for component, template in pods_of(docs).items()}
    for name in ("rates-api", "rates-api-migrate"):
        # The database rule goes to the CIDRs as ipBlocks; the extra rules come last, as given.
        assert policy(docs, name)["spec"]["egress"] == [DNS_EGRESS, database, *extra], name
    for component in ("api", "migrations"):
        assert egress_allowed(policies, pods[component], address("10.0.70.1"), 6432)
        assert not egress_allowed(policies, pods[component], address("10.0.128.1"), 6432)
        assert not egress_allowed(policies, pods[component], address("10.0.70.1"), 5432)
        assert egress_allowed(policies, pods[component], address("10.9.1.1"), 9999)
        assert not egress_allowed(policies, pods[component], address("10.9.9.1"), 9999)

    assert "NetworkPolicy" not in kinds(render(None, *sets("networkPolicy.enabled=false")))
    assert "NetworkPolicy" not in kinds(render("prod", *sets("networkPolicy.enabled=false")))
    # No migration Job, no policy for its pods.
    no_migrations = render(None, *sets("migrations.enabled=false"))
    assert [n for k, n in no_migrations if k == "NetworkPolicy"] == ["rates-api"]


def test_iam_authentication_opens_https_for_the_api_pods_only(render):
    https_anywhere = [address("52.94.0.1"), 443]
    docs = render("prod", *sets("database.iamAuth=true", f"database.url={IAM_URL}"))
    policies = [d for (k, _), d in docs.items() if k == "NetworkPolicy"]
    pods = {component: pod_of(template) for component, template in pods_of(docs).items()}
    assert egress_allowed(policies, pods["api"], *https_anywhere)
    assert not egress_allowed(policies, pods["migrations"], *https_anywhere)
    # The migration hook still connects as the owner, with the Secret's URL.
    [migration_url] = [e for e in pods_of(docs)["migrations"]["spec"]["containers"][0]["env"]
                       if e["name"] == "DATABASE_URL"]
    assert migration_url["valueFrom"]["secretKeyRef"] == {"name": "rates-database", "key": "url"}

    docs = render("prod", *LOCAL_DATABASE)
    policies = [d for (k, _), d in docs.items() if k == "NetworkPolicy"]
    assert not egress_allowed(policies, pod_of(pods_of(docs)["api"]), *https_anywhere)


def test_an_environment_without_terraforms_values_refuses_to_render(helm):
    """Every environment's API logs in with IAM tokens: its values file alone, without the
    URL Terraform hands it, must fail, not fall back to the Secret's owner URL."""
    for env in ENVS:
        proc = helm("template", RELEASE, str(CHART), "-f", str(CHART / f"values-{env}.yaml"), check=False)
        assert proc.returncode != 0 and "/database/url" in proc.stderr, (env, proc.stderr)


def test_https_for_sts_can_be_pinned_to_the_vpc(render):
    # Where an STS interface endpoint answers in the VPC, the API's HTTPS goes there only.
    docs = render("prod", *sets("database.iamAuth=true", f"database.url={IAM_URL}",
                                "networkPolicy.sts.cidrs={10.40.0.0/16}"))
    policies = [d for (k, _), d in docs.items() if k == "NetworkPolicy"]
    api = pod_of(pods_of(docs)["api"])
    assert egress_allowed(policies, api, address("10.40.12.34"), 443)
    assert not egress_allowed(policies, api, address("52.94.0.1"), 443)
    assert not egress_allowed(policies, api, address("10.40.12.34"), 80)
    # The database's rule is its own: pinning STS leaves PostgreSQL as it was.
    assert egress_allowed(policies, api, address("52.94.0.1"), 5432)


def test_readme_documents_every_value():
    def leaves(values, prefix=""):
        for key, value in values.items():
            # objects passed through to Kubernetes are documented as a whole
            if isinstance(value, dict) and value and key not in (
                    "podSecurityContext", "securityContext", "resources"):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", readme, re.M))
    assert set(leaves(values)) == documented
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"])


# --- the hooks ------------------------------------------------------------------------------

class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "test"}')

    def log_message(self, *args):
        pass


def test_helm_test_pod_checks_readyz(render):
    docs = render("prod")
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"][:2] == ["python", "-c"]
    service = one(docs, "Service")
    url = container["env"][0]
    assert url == {"name": "READYZ_URL",
                   "value": f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz"}

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    local = f"http://127.0.0.1:{server.server_address[1]}/readyz"

    def check(target_url):
        return subprocess.run([sys.executable, "-c", container["command"][2]], env={"READYZ_URL": target_url},
                              capture_output=True, text=True, timeout=30)

    try:
        assert check(local).returncode == 0
        _Readyz.status = 503
        failed = check(local)
        assert failed.returncode == 1 and "503" in failed.stdout
    finally:
        _Readyz.status = 200
        server.shutdown()
        server.server_close()
    refused = check(local)  # nothing listens any more
    assert refused.returncode == 1 and "failed" in refused.stderr


def test_migration_hook_runs_before_the_release(render):
    job = one(render("prod"), "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert {"action": "FailJob", "onExitCodes": {"containerName": "migrate", "operator": "In", "values": [2]}} \
        in job["spec"]["podFailurePolicy"]["rules"]
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "rates-database", "key": "url"}
    assert {"name": "MIGRATION_LOCK_WAIT_SECONDS", "value": "120"} in env
    assert "Job" not in kinds(render("prod", *sets("migrations.enabled=false")))


# --- against the API server -----------------------------------------------------------------

def network_policies(networking, namespace) -> list[str]:
    return sorted(p.metadata.name for p in networking.list_namespaced_network_policy(namespace).items)


def assert_policy_was_in_place_before_the_job(helm, namespace):
    """Helm's record of the last hook run: the migration pods' NetworkPolicy was created
    (and done) before the Job was started."""
    status = json.loads(helm("status", RELEASE, "-n", namespace, "-o", "json").stdout)
    runs = {(h["kind"], h["name"]): h["last_run"] for h in status["hooks"]}
    network_policy, job = runs[("NetworkPolicy", "rates-api-migrate")], runs[("Job", "rates-api-migrate")]
    assert network_policy["phase"] == "Succeeded", network_policy
    def instant(value: str) -> tuple[int, int]:
        """(seconds, nanoseconds) of Go's RFC 3339 with nanoseconds (no fraction when 0)."""
        whole, fraction, zone = re.fullmatch(r"([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value).groups()
        seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
        return int(seconds), int((fraction or "").ljust(9, "0"))

    assert instant(network_policy["completed_at"]) <= instant(job["started_at"]), (network_policy, job)


def create_database_secret(kube, namespace, dsn):
    kube.core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rates-database"},
        "data": {"url": base64.b64encode(dsn.encode()).decode()}})


def test_install_upgrade_uninstall(helm, kube, namespace, empty_dsn, tmp_path, pod_images):
    """A real release: the migration hook migrates an empty database (its pod run as the
    API image, as the hook's securityContext says, where a local node can), then an upgrade
    switches on the HPA."""
    create_database_secret(kube, namespace, empty_dsn)
    networking = client.NetworkingV1Api(kube.api_client)
    autoscaling = client.AutoscalingV2Api(kube.api_client)
    policy = client.PolicyV1Api(kube.api_client)
    cluster = ["-n", namespace]
    upgrade = ["upgrade", "--install", RELEASE, str(CHART), *cluster, "-f", str(CHART / "values-dev.yaml"),
               *LOCAL_DATABASE, "--timeout", "90s"]
    assert migrate.pending(empty_dsn)

    # Only while helm waits for the hook, and only the hook's pod: the API's own pods would
    # all listen on the same port here (any the node meets meanwhile fail at once, harmlessly).
    def hook_image(pod):
        is_hook = pod.metadata.labels.get("app.kubernetes.io/component") == "migrations"
        return pod_images(pod) if pod_images and is_hook else None

    with LocalNode(kube.api_client, name=f"node-{namespace}"[:63], namespaces=[namespace],
                   logdir=tmp_path / "node-logs", images=hook_image, files=postgres_socket(empty_dsn)) as node:
        installed = helm(*upgrade)
        [hook_log] = [path.read_text() for path in node.logdir.glob("*migrat*.log")]
    assert migrate.pending(empty_dsn) == []
    if pod_images:  # applied by the image's numeric user, which has no passwd entry
        with autocommit(empty_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT DISTINCT username FROM _yoyo_log")
            assert cur.fetchall() == [("uid-10001",)], hook_log
    assert "rollout status deployment/rates-api" in installed.stdout
    assert "WARNING: namespace" in installed.stdout  # no readiness gate label yet

    deployment = kube.apps.read_namespaced_deployment("rates-api", namespace)
    assert deployment.spec.replicas == 1
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    assert kube.core.read_namespaced_service("rates-api", namespace).spec.ports[0].target_port == "http"
    assert kube.core.read_namespaced_service_account("rates-api", namespace).automount_service_account_token is False
    assert networking.read_namespaced_ingress("rates-api", namespace).spec.ingress_class_name == "alb"
    assert autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items == []
    assert policy.list_namespaced_pod_disruption_budget(namespace).items == []
    # The successful hook Job is removed, so nothing outlives the release; so is its pods'
    # NetworkPolicy, a hook too. The API's is the release's own.
    wait_for(lambda: not kube.batch.list_namespaced_job(namespace).items, timeout=30,
             what="the succeeded migration Job to be removed")
    assert network_policies(networking, namespace) == ["rates-api"]
    assert_policy_was_in_place_before_the_job(helm, namespace)

    kube.core.patch_namespace(namespace, {"metadata": {"labels": {
        "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}}})
    with LocalNode(kube.api_client, name=f"node-{namespace}"[:63], namespaces=[namespace],
                   logdir=tmp_path / "node-logs-2"):
        upgraded = helm(*upgrade, *sets("image.tag=v2", "config.logLevel=WARNING", "autoscaling.enabled=true",
                                        "autoscaling.minReplicas=2", "autoscaling.maxReplicas=4"))
    assert "WARNING" not in upgraded.stdout
    releases = json.loads(helm("list", *cluster, "-o", "json").stdout)
    assert [(r["name"], r["revision"], r["status"]) for r in releases] == [(RELEASE, "2", "deployed")]
    container = kube.apps.read_namespaced_deployment("rates-api", namespace).spec.template.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    assert (container.image, env["APP_VERSION"], env["LOG_LEVEL"]) == ("rates-api:v2", "v2", "WARNING")
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("rates-api", namespace)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 4)
    assert policy.read_namespaced_pod_disruption_budget("rates-api", namespace).spec.max_unavailable == 1
    assert network_policies(networking, namespace) == ["rates-api"]
    assert_policy_was_in_place_before_the_job(helm, namespace)

    helm("uninstall", RELEASE, *cluster)
    wait_for(lambda: gone(lambda: kube.apps.read_namespaced_deployment("rates-api", namespace)),
             timeout=30, what="helm uninstall to remove the Deployment")
    for read in (lambda: kube.core.read_namespaced_service("rates-api", namespace),
                 lambda: kube.core.read_namespaced_service_account("rates-api", namespace),
                 lambda: networking.read_namespaced_ingress("rates-api", namespace),
                 lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler("rates-api", namespace),
                 lambda: policy.read_namespaced_pod_disruption_budget("rates-api", namespace),
                 lambda: networking.read_namespaced_network_policy("rates-api", namespace)):
        assert gone(read)
    assert network_policies(networking, namespace) == []  # no hook's left behind either
    assert kube.batch.list_namespaced_job(namespace).items == []
    assert json.loads(helm("list", *cluster, "-o", "json").stdout) == []


def create_stand_in(kube, namespace, replicas: int, container: dict, name: str = RELEASE,
                    strategy: dict | None = None) -> None:
    """A Deployment as a release of the chart leaves it (Helm's label and annotations), for
    the lookups of an upgrade to find. The control plane's controllers make its ReplicaSets
    and pods; with no node here, the pods never run, so a rolling update never finishes."""
    labels = {"app": f"stand-in-{name}"}
    kube.apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": name, "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": namespace}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 **({"strategy": strategy} if strategy else {}),
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}})


def test_turning_autoscaling_on_keeps_the_running_pods(helm, kube, namespace):
    """Without a count in the manifest, Helm would remove the field and Kubernetes would
    scale the release down to 1 pod until the HPA caught up; the live count is kept."""
    create_stand_in(kube, namespace, 3, {"name": "c", "image": "none"})

    def replicas(*extra):  # as the upgrade would send them: lookups see the cluster
        out = helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "--dry-run=server",
                   "-f", str(CHART / "values-dev.yaml"), *LOCAL_DATABASE, *extra).stdout
        [deployment] = [d for d in yaml.safe_load_all(out.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0])
                        if d and d["kind"] == "Deployment"]
        return deployment["spec"].get("replicas")

    assert replicas(*sets("autoscaling.enabled=true", "autoscaling.minReplicas=2")) == 3
    assert replicas() == 1  # autoscaling off: values-dev's replicaCount
    # Scaled to zero for a weekend: a deploy meanwhile leaves it there, not at Kubernetes' 1.
    kube.apps.patch_namespaced_deployment_scale("rates-api", namespace, {"spec": {"replicas": 0}})
    assert replicas(*sets("autoscaling.enabled=true", "autoscaling.minReplicas=2")) == 0
    kube.apps.delete_namespaced_deployment("rates-api", namespace)
    wait_for(lambda: gone(lambda: kube.apps.read_namespaced_deployment("rates-api", namespace)), timeout=30,
             what="the stand-in Deployment to go")
    assert replicas(*sets("autoscaling.enabled=true", "autoscaling.minReplicas=2")) is None  # a new release


HEALTHCHECK_PORT = "alb.ingress.kubernetes.io/healthcheck-port"


def healthcheck_port(helm, namespace, *extra: str) -> tuple[str, bool]:
    """The API Ingress's health-check port as an upgrade would send it (lookups see the
    cluster), and whether NOTES.txt explains traffic-port."""
    out = helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "--dry-run=server",
               "-f", str(CHART / "values-dev.yaml"), *LOCAL_DATABASE, *extra).stdout
    manifest, notes = out.split("MANIFEST:", 1)[1].split("NOTES:", 1)
    [ingress] = [d for d in yaml.safe_load_all(manifest)
                 if d and d["kind"] == "Ingress" and d["metadata"]["name"] == RELEASE]
    return ingress["metadata"]["annotations"][HEALTHCHECK_PORT], "traffic-port" in notes


def api_ports(kube, namespace, ports) -> None:
    """Changes the stand-in's api container ports, as an upgrade's template would."""
    kube.apps.patch_namespaced_deployment(RELEASE, namespace, [  # a list: a JSON patch
        {"op": "replace", "path": "/spec/template/spec/containers/0/ports",
         "value": [{"name": name, "containerPort": number} for name, number in ports]}])


def replica_sets(kube, namespace) -> list[tuple[list[int], int, int]]:
    """The stand-in's ReplicaSets: their api container's port numbers, spec.replicas and
    status.replicas, sorted."""
    deployment = kube.apps.read_namespaced_deployment(RELEASE, namespace)
    return sorted(
        ([p.container_port for p in rs.spec.template.spec.containers[0].ports or []],
         rs.spec.replicas, rs.status.replicas or 0)
        for rs in kube.apps.list_namespaced_replica_set(namespace).items
        if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or []))


def test_an_upgrade_from_pods_without_the_probe_port_health_checks_the_http_port(helm, kube, namespace):
    """The ALB health-checks every target on one port. Moved to probePort while the running
    pods (rates-api 0.14.x or earlier, or another probePort) do not listen there, it would
    fail every old pod during the rollout, and only the surge's pods would get traffic: the
    upgrade keeps it on the http port, where every image answers /readyz, and says so."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    http, probe = defaults["containerPort"], defaults["probePort"]

    assert healthcheck_port(helm, namespace) == (str(probe), False)  # a new release: its pods will have the port
    # Recreate: a template change empties the old ReplicaSet at once (its pods, never
    # scheduled, go at once), as a finished rollout leaves it.
    create_stand_in(kube, namespace, 2, {"name": "api", "image": "none", "ports": [
        {"name": "http", "containerPort": http}]}, strategy={"type": "Recreate"})

    # As rates-api 0.14.x left it: the http port only.
    assert healthcheck_port(helm, namespace) == ("traffic-port", True)
    # A user's own annotation still wins, and then there is nothing to say.
    own = f"ingress.annotations.{HEALTHCHECK_PORT.replace('.', chr(92) + '.')}={probe}"
    assert healthcheck_port(helm, namespace, "--set-string", own) == (str(probe), False)
    # The pods listen on the probe port: the check moves there.
    api_ports(kube, namespace, [("http", http), ("probe", probe)])
    wait_for(lambda: replica_sets(kube, namespace) == [([http], 0, 0), ([http, probe], 2, 2)], timeout=30,
             what="the rollout to the probe port to empty the old ReplicaSet")
    assert healthcheck_port(helm, namespace) == (str(probe), False)
    # probePort changed: the running pods listen on the old one only.
    assert healthcheck_port(helm, namespace, *sets(f"probePort={probe + 10}")) == ("traffic-port", True)


def test_an_unfinished_rollout_from_pods_without_the_probe_port_health_checks_the_http_port(
        helm, kube, namespace):
    """An upgrade from 0.14.x that timed out under --wait leaves the Deployment's template
    with the probe port while the old ReplicaSet's pods, without it, still serve: the next
    upgrade keeps the check on the http port until no ReplicaSet of the Deployment with
    pods lacks the probe port. Another Deployment's ReplicaSets do not count."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    http, probe = defaults["containerPort"], defaults["probePort"]
    create_stand_in(kube, namespace, 1, {"name": "api", "image": "none", "ports": [
        {"name": "http", "containerPort": http}]}, name="rates-controller")
    # The default rolling update (maxSurge 1 of 2, maxUnavailable 0) with pods that never
    # get ready: the surge's pod is made and the old two stay, as a timed-out rollout.
    create_stand_in(kube, namespace, 2, {"name": "api", "image": "none", "ports": [
        {"name": "http", "containerPort": http}]})
    wait_for(lambda: replica_sets(kube, namespace) == [([http], 2, 2)], timeout=30,
             what="the stand-in's pods")
    api_ports(kube, namespace, [("http", http), ("probe", probe)])
    wait_for(lambda: replica_sets(kube, namespace) == [([http], 2, 2), ([http, probe], 1, 1)], timeout=30,
             what="the rollout to the probe port to start")
    assert healthcheck_port(helm, namespace) == ("traffic-port", True)

    # The rollout finishes (here by letting every old pod go at once): the check moves.
    kube.apps.patch_namespaced_deployment(RELEASE, namespace, {"spec": {"strategy": {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "100%"}}}})
    wait_for(lambda: replica_sets(kube, namespace) == [([http], 0, 0), ([http, probe], 2, 2)], timeout=30,
             what="the rollout to the probe port to empty the old ReplicaSet")
    assert healthcheck_port(helm, namespace) == (str(probe), False)


def test_a_failing_migration_fails_the_release_without_retries(helm, kube, namespace, local_node):
    """Exit 2 (a migration that cannot pass on retry) fails the hook Job at once, so helm
    stops before any new pod exists; the failed Job stays for its logs."""
    create_database_secret(kube, namespace, "host=db.invalid dbname=rates")  # not a URL: permanent
    proc = helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "-f", str(CHART / "values-dev.yaml"),
                *LOCAL_DATABASE, "--timeout", "60s", check=False)
    (job,) = kube.batch.list_namespaced_job(namespace).items
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={job.metadata.name}").items
    log = local_node.logs(namespace, pods[0].metadata.name)
    assert proc.returncode != 0 and "pre-install" in proc.stderr, proc.stderr
    assert [c.reason for c in job.status.conditions if c.type == "Failed"] == ["PodFailurePolicy"]
    assert len(pods) == 1 and pods[0].status.container_statuses[0].state.terminated.exit_code == 2
    assert "DATABASE_URL as a URL" in log
    assert gone(lambda: kube.apps.read_namespaced_deployment("rates-api", namespace))
    # The failed Job stays for its logs; its pods' policy, a hook that succeeded, does not
    # (helm deletes the succeeded hooks when a later one fails), and it was in place first.
    assert network_policies(client.NetworkingV1Api(kube.api_client), namespace) == []
    assert_policy_was_in_place_before_the_job(helm, namespace)
    # The policy the release ran (its hook manifest) selected the migration's pod.
    status = json.loads(helm("status", RELEASE, "-n", namespace, "-o", "json").stdout)
    [hook] = [yaml.safe_load(h["manifest"]) for h in status["hooks"] if h["kind"] == "NetworkPolicy"]
    selector = ",".join(f"{k}={v}" for k, v in hook["spec"]["podSelector"]["matchLabels"].items())
    assert [p.metadata.name for p in kube.core.list_namespaced_pod(namespace, label_selector=selector).items] == [
        pods[0].metadata.name]


def test_the_installed_release_serves_from_its_image(helm, kube, namespace, empty_dsn, local_node,
                                                     needs_images):
    """The whole release as a cluster runs it, where images can run here: the hook migrates
    the empty database and the Deployment's pod serves, both as the API image with the
    chart's environment and securityContext."""
    create_database_secret(kube, namespace, empty_dsn)
    port, probe = free_ports(2)  # two free_port calls could both return one port
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "-f", str(CHART / "values-dev.yaml"),
         *LOCAL_DATABASE, *sets(f"containerPort={port}", f"probePort={probe}", "image.tag=v7"),
         "--wait", "--timeout", "120s")
    [pod] = kube.core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=api").items
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/readyz", timeout=60)
    wait_for_http(f"http://127.0.0.1:{probe}/readyz", timeout=10)  # the readiness probe's own port
    with autocommit(empty_dsn) as conn:
        insert_world(conn)
        insert_prices(conn, [("CNSHA", "NLRTM", "2016-01-05", 1000), ("CNNGB", "DEHAM", "2016-01-05", 1400),
                             ("HKHKG", "NOOSL", "2016-01-05", 1200)])
    answer = requests.get(f"{base}/rates", params={"date_from": "2016-01-05", "date_to": "2016-01-05",
                                                   "origin": "asia", "destination": "europe"}, timeout=10)
    assert answer.json() == [{"day": "2016-01-05", "average_price": 1200}], answer.text
    assert requests.get(base, timeout=10).json()["version"] == "v7"  # APP_VERSION from the chart
    log = local_node.logs(namespace, pod.metadata.name)
    assert '"service": "rates-api"' in log and '"level": "error"' not in log, log[-3000:]
