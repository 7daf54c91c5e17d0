"""skaffold.yaml and k8s/local/ with the real skaffold (versions.json, built once like the
Kubernetes binaries) and the real API server.

There is no Docker daemon here, so nothing is built or deployed by skaffold itself; what it
does without one is checked for every profile: it parses the configuration (strictly: an
unknown field is an error), lists its modules and artifacts, and renders the manifests it
would deploy, offline and with a fixed tag, which then go through kubeconform -strict and
a server-side dry run in a fresh namespace. The assertions are about what the local
cluster would run: the three images, the database Secret the charts read, the forwarded
port, the locked-down pods, the controller pointed at the moto server whose own setup
(its postStart script, run here against a real moto_server) creates what it names, and
charts' NetworkPolicies that let every local connection through under a network plugin
that enforces them (k3d/k3s do). That last one is worked out from the rendered policies
(tests/support/netpol.py): the test control plane has no network plugin.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from fnmatch import fnmatch
from pathlib import Path

import boto3
import pytest
import yaml

from rates_controller import jobs as controller_jobs
from rates_controller.events import UploadedObject, uploaded_objects
from rates_controller.settings import Settings as ControllerSettings
from tests.support.aws import FAKE_AWS_ENV, start_moto, stop_moto
from tests.support.db import API_USER, INGEST_USER
from tests.support.kube import kubeconform
from tests.support.netpol import Pod, address, connection_allowed, egress_allowed, pod_of

REPO = Path(__file__).resolve().parents[2]
SKAFFOLD_YAML = REPO / "skaffold.yaml"
LOCAL = REPO / "k8s" / "local"
# What skaffold tags a local build with (the image ID: 64 hex digits), so that the charts'
# tag pattern and their 63-character label values are tried with the real thing.
TAG = "3f0c" * 16
PROFILES = [None, "api-only"]
ARTIFACTS = {"rates-api": "api/Dockerfile", "rates-ingest": "ingest-job/Dockerfile",
             "rates-controller": "controller/Dockerfile"}


# --- running skaffold ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def skaffold(kube_tools, tmp_path_factory):
    """run(*args) -> CompletedProcess of the pinned skaffold, in the repository, with a HOME
    of its own (no telemetry, no update check) and the pinned helm and kubectl on PATH."""
    from ratesctl.k8s_tools import ToolsUnavailable, resolve_tools

    try:
        binary = resolve_tools(tools=("skaffold",))["skaffold"].path
    except ToolsUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    home = tmp_path_factory.mktemp("skaffold-home")
    path = os.pathsep.join(dict.fromkeys(
        [str(kube_tools["helm"].parent), str(kube_tools["kubectl"].parent), "/usr/bin", "/bin"]))
    env = {"PATH": path, "HOME": str(home), "SKAFFOLD_UPDATE_CHECK": "false",
           # skaffold reads the kubeconfig even offline; never the developer's own
           "KUBECONFIG": str(home / "no-kubeconfig")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(binary), *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
        if check:
            assert proc.returncode == 0, f"skaffold {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    run("config", "set", "--global", "collect-metrics", "false")
    return run


def profile_args(profile: str | None) -> list[str]:
    return ["--profile", profile] if profile else []


@pytest.fixture(scope="module")
def effective(skaffold):
    """The configuration skaffold would run, per profile: {config name: config}."""
    cache = {}

    def configs(profile: str | None) -> dict[str, dict]:
        if profile not in cache:
            out = skaffold("diagnose", "--yaml-only", *profile_args(profile)).stdout
            cache[profile] = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d}
        return cache[profile]

    return configs


def render(skaffold, profile: str | None, namespace: str) -> str:
    """What `skaffold dev` would deploy, without building (images tagged TAG) or a cluster."""
    return skaffold("render", "--offline", "--digest-source=tag", f"--tag={TAG}", "--namespace", namespace,
                    *profile_args(profile)).stdout


@pytest.fixture(scope="module")
def rendered(skaffold):
    cache = {}

    def docs(profile: str | None) -> list[dict]:
        if profile not in cache:
            cache[profile] = [d for d in yaml.safe_load_all(render(skaffold, profile, "local")) if d]
        return cache[profile]

    return docs


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def one(docs: list[dict], kind: str, name: str) -> dict:
    [found] = find(docs, kind, name)
    return found


def pod_specs(docs: list[dict]) -> dict[tuple[str, str], dict]:
    """Every pod spec the manifests would run: {(kind, name): spec}."""
    specs = {}
    for d in docs:
        if d["kind"] == "Pod":
            specs[("Pod", d["metadata"]["name"])] = d["spec"]
        elif d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            specs[(d["kind"], d["metadata"]["name"])] = d["spec"]["template"]["spec"]
    return specs


def env_of(container: dict) -> dict[str, dict | str]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container.get("env", [])}


def same_server_as(url: str, owner: urllib.parse.SplitResult, user: str) -> bool:
    """``url`` is ``owner``'s server and database as ``user``, with no password."""
    parts = urllib.parse.urlsplit(url)
    return (parts.scheme, parts.hostname, parts.port, parts.path, parts.username, parts.password) == (
        owner.scheme, owner.hostname, owner.port, owner.path, user, None)


def local_manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((LOCAL / name).read_text()) if d]


# --- the configuration ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def latest_schema(skaffold) -> str:
    return skaffold("schema", "list").stdout.split()[-1]


@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_skaffold_accepts_the_configuration(effective, latest_schema, profile):
    configs = effective(profile)
    assert list(configs) == ["local-services", "rates"]
    assert {c["apiVersion"] for c in configs.values()} == {latest_schema}


@pytest.mark.kube
def test_the_services_are_deployed_before_the_charts(skaffold):
    # The services go first: the API chart's migration hook runs inside `helm install` and
    # needs the Secret that local-services creates. (Profiles do not change the order.)
    modules = json.loads(skaffold("inspect", "modules", "list", "--format", "json").stdout)["modules"]
    assert [m["name"] for m in modules] == ["local-services", "rates"]


@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_the_charts_wait_for_the_database_and_outlast_the_migration(effective, rendered, profile):
    configs = effective(profile)
    # PostgreSQL's rollout is awaited after local-services deploys, before the charts.
    [hook] = configs["local-services"]["deploy"]["kubectl"]["hooks"]["after"]
    command = " ".join(hook["host"]["command"])
    postgres = one(rendered(profile), "Deployment", "rates-postgres")
    assert f"rollout status deployment/{postgres['metadata']['name']}" in command
    assert "SKAFFOLD_KUBE_CONTEXT" in command and "SKAFFOLD_NAMESPACES" in command
    # Helm waits longer than the migration hook may run.
    flags = configs["rates"]["deploy"]["helm"]["flags"]
    deadline = one(rendered(profile), "Job", "rates-api-migrate")["spec"]["activeDeadlineSeconds"]
    for phase in ("install", "upgrade"):
        timeout = flags[phase][flags[phase].index("--timeout") + 1]
        assert timeout.endswith("m") and int(timeout[:-1]) * 60 > deadline, (phase, timeout)


@pytest.mark.kube
def test_a_mistyped_field_is_refused(skaffold, tmp_path):
    """skaffold's parsing is strict; the tests above would notice a config it ignores."""
    bad = tmp_path / "skaffold.yaml"
    bad.write_text(SKAFFOLD_YAML.read_text().replace("resourceName: rates-api", "resourceNam: rates-api"))
    proc = skaffold("diagnose", "--yaml-only", "--filename", str(bad), check=False)
    assert proc.returncode != 0 and "field resourceNam not found" in proc.stderr + proc.stdout


@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_the_artifacts_are_the_three_images_built_from_the_repository_root(effective, profile):
    artifacts = effective(profile)["rates"]["build"]["artifacts"]
    expected = {"rates-api"} if profile == "api-only" else set(ARTIFACTS)
    assert {a["image"] for a in artifacts} == expected
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()]
    for artifact in artifacts:
        assert Path(artifact["context"]) == REPO  # the Dockerfiles copy core/ and requirements.txt
        dockerfile = artifact["docker"]["dockerfile"]
        assert dockerfile == ARTIFACTS[artifact["image"]]
        text = re.sub(r"\\\n", " ", (REPO / dockerfile).read_text())
        copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ")]
        sources = [src for args in copies if not any(a.startswith("--from") for a in args)
                   for src in [a for a in args if not a.startswith("--")][:-1]]
        assert sources, dockerfile
        for src in sources:  # in the context, and not left out of it by .dockerignore
            assert (REPO / src).exists(), (dockerfile, src)
            assert not any(fnmatch(src, pattern) or fnmatch(src.split("/")[0], pattern) for pattern in ignored), src
    assert effective(profile)["rates"]["build"]["local"]["push"] is False


@pytest.mark.kube
def test_the_api_only_profile_leaves_out_the_controller_and_moto(rendered):
    full, api_only = rendered(None), rendered("api-only")
    assert {("Deployment", n) for n in ("rates-postgres", "moto", "rates-api", "rates-controller")} <= {
        (d["kind"], d["metadata"]["name"]) for d in full}
    assert {d["metadata"]["name"] for d in find(api_only, "Deployment")} == {"rates-postgres", "rates-api"}
    assert find(api_only, "Secret", "rates-database") and not find(api_only, "Role")


# --- the rendered manifests against the API server ----------------------------------------

@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_the_rendered_manifests_are_valid_for_the_apiserver(skaffold, kubectl, schemas, kube_tools, namespace,
                                                            profile):
    manifest = render(skaffold, profile, namespace)
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    assert all(d["metadata"].get("namespace", namespace) == namespace for d in docs)

    summary = kubeconform(kube_tools["kubeconform"], schemas, manifest)
    assert summary["valid"] == len(docs) and summary["invalid"] == summary["errors"] == 0, summary

    proc = kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=manifest)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(docs), proc.stdout


# --- what a local cluster would run ---------------------------------------------------------

@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_the_workloads_run_the_built_images_or_pinned_ones(rendered, profile):
    docs = rendered(profile)
    images = {(kind, name): [c["image"] for c in spec["containers"]] for (kind, name), spec in pod_specs(docs).items()}
    api = f"rates-api:{TAG}"
    assert images[("Deployment", "rates-api")] == [api]
    assert images[("Job", "rates-api-migrate")] == [api]
    if profile != "api-only":
        assert images[("Deployment", "rates-controller")] == [f"rates-controller:{TAG}"]
        controller = one(docs, "Deployment", "rates-controller")["spec"]["template"]["spec"]["containers"][0]
        assert env_of(controller)["JOB_IMAGE"] == f"rates-ingest:{TAG}"
    # The rest is third-party and pinned to a version, never a moving tag.
    built = {f"{name}:{TAG}" for name in ARTIFACTS}
    for workload, found in images.items():
        for image in found:
            if image not in built:
                name, _, tag = image.rpartition(":")
                assert name in ("postgres", "motoserver/moto"), (workload, image)
                assert re.match(r"\d+\.\d+(\.\d+)?(-\w+)?$", tag), (workload, image)


@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_runs_as_non_root_with_a_read_only_root(rendered, profile):
    for workload, spec in pod_specs(rendered(profile)).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, workload
            assert sc["allowPrivilegeEscalation"] is False, workload
            assert sc["capabilities"]["drop"] == ["ALL"], workload
            assert sc.get("runAsUser", spec["securityContext"].get("runAsUser", 0)) > 0, workload


@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_the_api_and_its_migration_hook_use_the_local_database(rendered, profile):
    docs = rendered(profile)
    secret = one(docs, "Secret", "rates-database")
    url = urllib.parse.urlsplit(secret["stringData"]["url"])
    service = one(docs, "Service", "rates-postgres")
    postgres = one(docs, "Deployment", "rates-postgres")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(postgres)

    # The URL names the Service, its port and the database and user the server creates...
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "rates-postgres", service["spec"]["ports"][0]["port"])
    assert (url.username, url.path.lstrip("/")) == (env["POSTGRES_USER"], env["POSTGRES_DB"])
    [port] = service["spec"]["ports"]
    assert {p["name"]: p["containerPort"] for p in postgres["ports"]}[port["targetPort"]] == 5432
    assert service["spec"]["selector"].items() <= one(docs, "Deployment", "rates-postgres")["spec"]["template"][
        "metadata"]["labels"].items()
    # ...and no password exists anywhere: trust, inside the local cluster only.
    assert url.password is None and "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_HOST_AUTH_METHOD"] == "trust" and service["spec"]["type"] == "ClusterIP"
    assert env["PGDATA"].startswith(postgres["volumeMounts"][0]["mountPath"] + "/")

    # The migrations connect as the owner, through the Secret; the API as its own user of
    # the same server and database, with no password either.
    api = one(docs, "Deployment", "rates-api")["spec"]["template"]["spec"]["containers"][0]
    migrate = one(docs, "Job", "rates-api-migrate")
    assert env_of(migrate["spec"]["template"]["spec"]["containers"][0])["DATABASE_URL"] == {
        "secretKeyRef": {"name": "rates-database", "key": "url"}}
    assert same_server_as(env_of(api)["DATABASE_URL"], url, API_USER)
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert migrate["spec"]["backoffLimit"] >= 3
    assert not find(docs, "Ingress")  # no load balancer controller locally: port-forward


@pytest.mark.kube
def test_port_forward_targets_the_api_service_port(effective, rendered):
    [forward] = effective(None)["rates"]["portForward"]
    service = one(rendered(None), "Service", forward["resourceName"])
    assert forward["resourceType"] == "service"
    [port] = [p for p in service["spec"]["ports"] if p["name"] == "http"]  # (probe is the ServiceMonitor's)
    assert forward["port"] == port["port"] == 80
    api = one(rendered(None), "Deployment", "rates-api")["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in api["ports"]}[port["targetPort"]] == int(env_of(api)["PORT"])
    assert service["spec"]["selector"].items() <= one(rendered(None), "Deployment", "rates-api")["spec"][
        "template"]["metadata"]["labels"].items()
    # The README's kubectl command forwards the same Service and port to the same local port.
    readme = (REPO / "README.md").read_text().split("## Local cluster (skaffold)", 1)[1].split("\n## ", 1)[0]
    assert f"kubectl port-forward svc/{service['metadata']['name']} {forward['localPort']}:{port['port']}" in readme
    assert f"http://127.0.0.1:{forward['localPort']}" in readme


@pytest.mark.kube
def test_the_controller_is_configured_for_the_local_moto_server(rendered):
    docs = rendered(None)
    controller = one(docs, "Deployment", "rates-controller")["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in env_of(controller).items() if isinstance(v, str)}
    settings = ControllerSettings.from_env({**env, "JOB_NAMESPACE": "local"})

    moto = one(docs, "Deployment", "moto")["spec"]["template"]["spec"]["containers"][0]
    moto_env = env_of(moto)
    [port] = one(docs, "Service", "moto")["spec"]["ports"]
    endpoint = f"http://moto:{port['port']}"
    assert {p["name"]: p["containerPort"] for p in moto["ports"]}[port["targetPort"]] == port["port"]
    assert env["AWS_ENDPOINT_URL"] == settings.job.env["AWS_ENDPOINT_URL"] == endpoint
    for variables in (env, settings.job.env):
        assert variables["AWS_DEFAULT_REGION"] == moto_env["AWS_DEFAULT_REGION"]
        assert variables["AWS_ACCESS_KEY_ID"] and variables["AWS_SECRET_ACCESS_KEY"]
    # The queues are those moto's setup creates.
    for url, name in ((settings.queue_url, moto_env["UPLOADS_QUEUE"]),
                      (settings.dead_letter_queue_url, moto_env["DEAD_LETTER_QUEUE"])):
        assert url.startswith(endpoint + "/") and url.rsplit("/", 1)[1] == name
    assert settings.job.image == f"rates-ingest:{TAG}"
    owner_url = urllib.parse.urlsplit(one(docs, "Secret", "rates-database")["stringData"]["url"])
    assert same_server_as(settings.job.database_url, owner_url, INGEST_USER)
    assert not settings.job.database_iam_auth


@pytest.mark.kube
@pytest.mark.parametrize("profile", PROFILES)
def test_the_network_policies_let_the_local_connections_through(rendered, profile):
    """Every connection the local cluster needs, against the rendered NetworkPolicies as
    an enforcing plugin would apply them: to PostgreSQL and moto through their Services'
    target ports, DNS, the API server, the helm tests; and nothing beyond what is needed."""
    docs = rendered(profile)
    policies = find(docs, "NetworkPolicy")
    expected = {"rates-api", "rates-api-migrate"}
    if profile != "api-only":
        expected |= {"rates-controller", "rates-controller-ingest"}
    assert {p["metadata"]["name"] for p in policies} == expected

    def workload(kind, name):
        doc = one(docs, kind, name)
        return pod_of(doc if kind == "Pod" else doc["spec"]["template"], "local")

    def service_target(name, port_name=None):
        """(the pod behind Service ``name``, the port a policy sees after its DNAT): of its
        only port, or of the one named ``port_name``."""
        [port] = [p for p in one(docs, "Service", name)["spec"]["ports"] if port_name in (None, p["name"])]
        [backend] = [d for d in docs if d["kind"] == "Deployment" and one(docs, "Service", name)["spec"][
            "selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        pod = pod_of(backend["spec"]["template"], "local")
        target = port["targetPort"]
        return pod, pod.port_names[target] if isinstance(target, str) else target

    dns = Pod(labels={"k8s-app": "kube-dns"}, namespace="kube-system",
              namespace_labels={"kubernetes.io/metadata.name": "kube-system"}, port_names={"dns": 53})
    postgres, postgres_port = service_target("rates-postgres")
    api, api_port = service_target("rates-api", "http")
    clients = {"api": api, "migrations": workload("Job", "rates-api-migrate")}
    needs = [(clients["api"], postgres, postgres_port), (clients["migrations"], postgres, postgres_port),
             # the helm test, through the Service
             (workload("Pod", "rates-api-test-readyz"), api, api_port)]
    if profile != "api-only":
        moto, moto_port = service_target("moto")
        controller_doc = one(docs, "Deployment", "rates-controller")
        env = {k: v for k, v in env_of(controller_doc["spec"]["template"]["spec"]["containers"][0]).items()
               if isinstance(v, str)}
        settings = ControllerSettings.from_env({**env, "JOB_NAMESPACE": "local"})
        # A Job as the controller makes it, for an upload to the local bucket.
        job = controller_jobs.manifest(UploadedObject(bucket="rates-uploads", key="2024/prices.csv",
                                                      version_id=None, etag="abc", size=1), settings.job)
        clients |= {"controller": workload("Deployment", "rates-controller"),
                    "ingest": pod_of(job["spec"]["template"], "local")}
        controller, metrics_port = service_target("rates-controller")
        needs += [(clients["controller"], moto, moto_port), (clients["ingest"], moto, moto_port),
                  (clients["ingest"], postgres, postgres_port),
                  (workload("Pod", "rates-controller-test-healthz"), controller, metrics_port)]
        # The API server behind the kubernetes Service: a node's 6443 on kind and k3d,
        # 8443 on minikube.
        for port in (6443, 8443):
            assert egress_allowed(policies, clients["controller"], address("172.18.0.2"), port), port
        # Only the controller talks to the API server, and only the Jobs to PostgreSQL.
        assert not egress_allowed(policies, clients["ingest"], address("172.18.0.2"), 6443)
        assert not egress_allowed(policies, clients["controller"], postgres, postgres_port)
        # The Jobs' policy selects them, and only them, by the controller's own labels.
        assert egress_allowed(policies, clients["ingest"], moto, moto_port)
        assert not egress_allowed(policies, clients["ingest"], moto, moto_port + 1)
    for source, destination, port in needs:
        assert connection_allowed(policies, source, destination, port), (source.labels, destination.labels, port)
    for name, client_pod in clients.items():
        for protocol in ("UDP", "TCP"):
            assert egress_allowed(policies, client_pod, dns, 53, protocol), (name, protocol)
        # Not the node's other services, nor the API's neighbours.
        assert not egress_allowed(policies, client_pod, address("172.18.0.2"), 10250), name
    assert not egress_allowed(policies, clients["api"], address("172.18.0.2"), 6443)
    if profile != "api-only":
        assert not egress_allowed(policies, clients["api"], moto, moto_port)


# --- moto's setup, for real -------------------------------------------------------------------

def moto_setup() -> tuple[list[str], dict[str, str]]:
    """The moto container's postStart command and its environment, from k8s/local/moto.yaml."""
    [deployment] = [d for d in local_manifests("moto.yaml") if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container["lifecycle"]["postStart"]["exec"]["command"], {v["name"]: v["value"] for v in container["env"]}


def test_motos_setup_makes_uploads_reach_the_controllers_queue(tmp_path):
    """The postStart script, run twice against a real moto_server: the bucket notifies the
    uploads queue the controller polls, with the event the controller reads."""
    command, env = moto_setup()
    assert command[:2] == ["python", "-c"]
    process, endpoint = start_moto(log_path=tmp_path / "moto.log")
    try:
        run_env = {**os.environ, **FAKE_AWS_ENV, **env, "AWS_ENDPOINT_URL": endpoint}
        for _ in range(2):  # a restarted moto container runs it again; so may a second hook run
            proc = subprocess.run([sys.executable, "-c", command[2]], env=run_env, capture_output=True, text=True,
                                  timeout=90)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"s3://{env['UPLOADS_BUCKET']} notifies" in proc.stdout

        values = yaml.safe_load((LOCAL / "rates-controller-values.yaml").read_text())
        session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                region_name=env["AWS_DEFAULT_REGION"])
        s3, sqs = session.client("s3", endpoint_url=endpoint), session.client("sqs", endpoint_url=endpoint)
        # The controller's URLs, sent to this moto instead of the Service.
        local = {name: values["queue"][name].replace("http://moto:5000", endpoint) for name in ("url", "deadLetterUrl")}
        attributes = sqs.get_queue_attributes(QueueUrl=local["url"], AttributeNames=["All"])["Attributes"]
        dead_arn = sqs.get_queue_attributes(QueueUrl=local["deadLetterUrl"],
                                            AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"] == dead_arn
        bucket = env["UPLOADS_BUCKET"]
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        [config] = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
        assert config["QueueArn"] == attributes["QueueArn"]

        version = s3.put_object(Bucket=bucket, Key="2024/prices.csv", Body=b"orig_code,dest_code,day,price\n")
        objects, deadline = [], time.monotonic() + 15
        while not objects and time.monotonic() < deadline:
            for message in sqs.receive_message(QueueUrl=local["url"], WaitTimeSeconds=1,
                                               MaxNumberOfMessages=10).get("Messages", []):
                objects += uploaded_objects(message["Body"])  # s3:TestEvent gives none
        [uploaded] = objects
        # (moto's events carry no versionId, AWS's do; the controller then goes by the ETag.)
        assert (uploaded.bucket, uploaded.key, uploaded.etag) == (bucket, "2024/prices.csv",
                                                                   version["ETag"].strip('"'))
    finally:
        stop_moto(process)


@pytest.mark.kube  # skaffold
def test_image_tags_never_read_as_numbers(effective):
    # skaffold hands the tag to helm with --set: a short commit of digits only would be a
    # number, which the charts' schemas refuse (about one commit in 27 would not deploy).
    tagger = effective(None)["rates"]["build"]["tagPolicy"]["gitCommit"]
    assert tagger.get("prefix", "")[:1].isalpha()
