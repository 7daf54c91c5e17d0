"""pytest fixtures for tests against a real Kubernetes control plane.

* ``kube_tools``          (session) paths of the pinned tools, built once if needed
* ``kube_control_plane``  (session) a running :class:`~tests.support.control_plane.ControlPlane`
* ``kubeconfig``          (session) path of its admin kubeconfig
* ``kube``                (session) :class:`Kube`: a ``kubernetes`` ApiClient plus core,
  batch, apps and rbac APIs, authenticated as cluster admin
* ``namespace``           (function) a fresh namespace, deleted after the test
* ``local_node``          (function) a :class:`~tests.support.local_node.LocalNode` that runs
  the Pods of ``namespace`` as local processes, this project's images as those images
* ``pod_images``          (session) pod -> the project's built Image it names, or None
* ``needs_images``        (function) skips the test where images cannot run
* ``helm``                (session) ``helm(*args, check=True)``: the pinned helm with a HOME
  of its own (no developer configuration leaks in), against the control plane
* ``kubectl``             (session) ``kubectl(*args, input=None)``: the pinned kubectl, likewise
* ``schemas``             (session) kubeconform schemas exported from this API server

Helpers: :func:`kubeconform` validates manifests offline, :func:`gone` tells a 404,
:func:`token_kubeconfig` points a client at a server that is not the control plane.

The tools are provided once per run, before the first test, when any ``kube``-marked test is
selected (see ``ratesctl k8s-tools``; a cold build is not counted against the per-test
timeout); if they cannot be, those tests fail with the reason - they are never skipped.
"""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from tests.support.poll import wait_for

# kubernetes, cryptography & co. are imported on first use: this plugin is loaded for the
# whole suite, most of which never talks to Kubernetes.
if TYPE_CHECKING:
    from kubernetes import client

    from tests.support.control_plane import ControlPlane
    from tests.support.local_node import LocalNode


@dataclass
class Kube:
    api_client: client.ApiClient
    core: client.CoreV1Api
    batch: client.BatchV1Api
    apps: client.AppsV1Api
    rbac: client.RbacAuthorizationV1Api
    kubeconfig: Path
    server: str
    ca_file: Path

    @classmethod
    def from_kubeconfig(cls, path: Path, server: str, ca_file: Path) -> "Kube":
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=cfg)
        api = client.ApiClient(cfg)
        return cls(api, client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api),
                   client.RbacAuthorizationV1Api(api), path, server, ca_file)

    def client_for_token(self, token: str) -> client.ApiClient:
        """An ApiClient that authenticates with a bearer token (e.g. from TokenRequest)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = str(self.ca_file)
        # "BearerToken" since kubernetes 36, "authorization" before; the prefix lookup
        # differs between them, so the value carries it
        cfg.api_key = {"BearerToken": f"Bearer {token}", "authorization": f"Bearer {token}"}
        return client.ApiClient(cfg)


_OPEN_TYPES = {  # openapi v2 spells these as strings; JSON allows either
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "oneOf": [{"type": "string"}, {"type": "integer"}]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "oneOf": [{"type": "string"}, {"type": "number"}]},
}


def export_json_schemas(kube: Kube, directory: Path, strict: bool = True) -> Path:
    """Write kubeconform-style JSON schemas (``<kind>[-<group>]-<version>.json``) for every
    kind this apiserver serves, from its own OpenAPI v2 document, into ``directory``.

    With ``strict`` objects reject unknown fields (``additionalProperties: false``), like
    kubeconform's ``-strict`` schemas. Use with
    ``kubeconform -strict -schema-location '<directory>/{{ .ResourceKind }}{{ .KindSuffix }}.json'``.
    """
    import json
    import re

    resp = kube.api_client.call_api("/openapi/v2", "GET", auth_settings=["BearerToken"],
                                    _preload_content=False, _return_http_data_only=True)
    definitions = json.loads(resp.data)["definitions"]
    for name, schema in definitions.items():
        if name in _OPEN_TYPES:
            definitions[name] = _OPEN_TYPES[name]
        elif strict and "properties" in schema:
            schema["additionalProperties"] = False
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            reachable, todo = {}, [name]
            while todo:  # only the definitions this kind refers to
                current = todo.pop()
                if current not in reachable:
                    reachable[current] = definitions[current]
                    todo += re.findall(r'"#/definitions/([^"]+)"',
                                       json.dumps(definitions[current]))
            suffix = f"-{group.split('.')[0]}" if group else ""
            (directory / f"{kind.lower()}{suffix}-{version}.json").write_text(json.dumps(
                {"allOf": [{"$ref": f"#/definitions/{name}"}], "definitions": reachable}
            ))
    return directory


def kubeconform(tool: Path, schemas: Path, manifests: str) -> dict:
    """``kubeconform -strict`` of ``manifests`` against ``schemas`` (export_json_schemas);
    its summary, e.g. {"valid": 7, "invalid": 0, "errors": 0, "skipped": 0}."""
    import json
    import subprocess

    proc = subprocess.run(
        [str(tool), "-strict", "-summary", "-output", "json",
         "-schema-location", str(schemas) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json"],
        input=manifests, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["summary"]


def gone(read) -> bool:
    """Whether ``read()`` (e.g. ``lambda: kube.apps.read_namespaced_deployment(...)``) answers 404."""
    from kubernetes.client.rest import ApiException

    try:
        read()
    except ApiException as exc:
        return exc.status == 404
    return False


_TOOLS = pytest.StashKey[object]()
# Pinned tools outside the Kubernetes set, each needed through a fixture of its own name: provided before
# the first test, only when a selected test uses that fixture (kube marker or not).
_FIXTURE_TOOLS = ("skaffold",  # tests/charts/test_skaffold.py
                  "promtool",  # tests/charts/test_alerts.py
                  "helm4",  # tests/charts/test_helm4.py
                  "terraform", "tflint")  # tests/terraform


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Provide the tools before the first test that needs them: a cold build takes far
    longer than the per-test timeout, which would otherwise include it. The Kubernetes set
    when `kube` tests are selected; the others when a selected test uses their fixture."""
    if config.option.collectonly:
        return
    from ratesctl.k8s_tools import ALL_TOOLS, ToolsUnavailable, ensure_tools

    kube = any(i.get_closest_marker("kube") for i in items)
    extra = tuple(tool for tool in _FIXTURE_TOOLS if any(tool in getattr(i, "fixturenames", ()) for i in items))
    if not (kube or extra):
        return
    try:  # in one call, so that a cold cache builds them side by side
        tools = ensure_tools(tools=(*(ALL_TOOLS if kube else ()), *extra))
    except ToolsUnavailable:
        pass  # one of them could not be had: the calls below say which, and to whom
    else:
        if kube:
            config.stash[_TOOLS] = {name: tools[name] for name in ALL_TOOLS}
        return
    if kube:
        try:
            config.stash[_TOOLS] = ensure_tools()
        except ToolsUnavailable as exc:
            config.stash[_TOOLS] = exc  # each kube test fails with the reason, others run
    if extra:
        try:
            ensure_tools(tools=extra)
        except ToolsUnavailable:
            pass  # the fixture asks again and fails its tests with the reason


@pytest.fixture(scope="session")
def kube_tools(pytestconfig: pytest.Config) -> dict[str, Path]:
    from ratesctl.k8s_tools import ToolsUnavailable, ensure_tools

    tools = pytestconfig.stash.get(_TOOLS, None)
    if tools is None:
        try:
            tools = ensure_tools()
        except ToolsUnavailable as exc:
            tools = exc
    if isinstance(tools, ToolsUnavailable):
        pytest.fail(str(tools), pytrace=False)
    return tools


@pytest.fixture(scope="session")
def kube_control_plane(kube_tools: dict[str, Path]) -> Iterator[ControlPlane]:
    from tests.support.control_plane import ControlPlane

    cp = ControlPlane(kube_tools)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(kube_control_plane: ControlPlane) -> Path:
    return kube_control_plane.kubeconfig


@pytest.fixture(scope="session")
def kube(kube_control_plane: ControlPlane) -> Iterator[Kube]:
    k = Kube.from_kubeconfig(kube_control_plane.kubeconfig, kube_control_plane.server,
                             kube_control_plane.ca_file)
    yield k
    k.api_client.close()


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    base = request.node.name.lower()
    base = "".join(c if c.isalnum() else "-" for c in base).strip("-")[:40].strip("-")
    name = f"{base or 'test'}-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_sa():  # Pod admission needs it; the serviceaccount controller makes it
        try:
            return kube.core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    wait_for(default_sa, timeout=30, interval=0.05, what=f"default ServiceAccount in {name}")
    yield name
    try:
        kube.core.delete_namespace(name)  # the namespace controller finishes it in background
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="session")
def pod_images():
    """pod -> the project's Image its container names (all built now, before any pod waits
    for one), or None; None in all when images cannot run here (see images.can_run_images)."""
    from tests.support import images

    if images.can_run_images():
        return None
    built = {folder: images.build(folder) for folder in images.IMAGE_FOLDERS.values()}
    return lambda pod: built.get(images.folder_of(pod.spec.containers[0].image))


@pytest.fixture
def needs_images(pod_images) -> None:
    """Skips the test where images cannot run (see images.can_run_images)."""
    from tests.support import images

    if pod_images is None:
        pytest.skip(images.can_run_images())


@pytest.fixture
def local_node(kube: Kube, namespace: str, tmp_path: Path, pod_images, pg_server) -> Iterator[LocalNode]:
    from tests.support.images import postgres_socket
    from tests.support.local_node import LocalNode

    with LocalNode(kube.api_client, name=f"node-{namespace}"[:63], namespaces=[namespace],
                   logdir=tmp_path / "local-node-logs", images=pod_images,
                   files=postgres_socket(pg_server.get_uri("postgres"))) as node:
        yield node


def helm_runner(binary: Path, kubeconfig: Path, home: Path):
    """run(*args, check=True): ``binary`` (a helm) against ``kubeconfig``, with a home of its
    own (no user's repositories, plugins or cache)."""
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data"),
           "KUBECONFIG": str(kubeconfig)}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(binary), *args], cwd=home, env=env,
                              capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    return run


@pytest.fixture(scope="session")
def helm(kube_tools: dict[str, Path], kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory):
    return helm_runner(kube_tools["helm"], kubeconfig, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def kubectl(kube_tools: dict[str, Path], kubeconfig: Path):
    import subprocess

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(kube_tools["kubectl"]), "--kubeconfig", str(kubeconfig), *args],
                              input=input, capture_output=True, text=True, timeout=60)

    return run


@pytest.fixture(scope="session")
def schemas(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_json_schemas(kube, tmp_path_factory.mktemp("schemas"))


@contextmanager
def admission_refusal(kube: Kube, namespace: str, operation: str, expression: str, message: str,
                      in_force) -> Iterator[None]:
    """While inside, a ValidatingAdmissionPolicy refuses ``operation``s on Jobs in
    ``namespace`` for which ``expression`` (CEL) is false, saying ``message``. The API
    server takes a moment to apply a policy, and to drop it: ``in_force()`` says whether
    it applies."""
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(kube.api_client)
    name = f"refuse-{operation.lower()}-{namespace}"[:63]
    admission.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                         "operations": [operation], "resources": ["jobs"]}]},
                 "validations": [{"expression": expression, "message": message}]}})
    admission.create_validating_admission_policy_binding({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    try:
        wait_for(in_force, timeout=30, what="the admission policy to apply")
        yield
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)
        wait_for(lambda: not in_force(), timeout=30, what="the admission policy to go")


@contextmanager
def webhook_refusal(kube: Kube, namespace: str, message: str, in_force) -> Iterator[None]:
    """While inside, a validating admission webhook (a local HTTPS server, as Kyverno or a
    hand-written one would answer) refuses every Job create in ``namespace`` with
    ``message`` and no status code of its own: the API server then answers 400."""
    import base64
    import http.server
    import ssl
    import tempfile
    import threading

    from kubernetes import client

    from tests.support.control_plane import CA
    from tests.support.net import answer

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                "uid": review["request"]["uid"], "allowed": False, "status": {"message": message}}}).encode()
            answer(self, 200, "application/json", body)

        def log_message(self, *args):
            pass

    ca = CA()
    cert, key = ca.issue("webhook", server=True, ips=("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as work:
        Path(work, "cert.pem").write_bytes(cert)
        Path(work, "key.pem").write_bytes(key)
        context.load_cert_chain(Path(work, "cert.pem"), Path(work, "key.pem"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    admission = client.AdmissionregistrationV1Api(kube.api_client)
    name = f"refuse-webhook-{namespace}"[:63]
    admission.create_validating_webhook_configuration({"metadata": {"name": name}, "webhooks": [{
        "name": "refuse.rates.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Fail",
        "clientConfig": {"url": f"https://127.0.0.1:{server.server_address[1]}/",
                         "caBundle": base64.b64encode(ca.pem).decode()},
        "rules": [{"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["jobs"]}],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]})
    try:
        wait_for(in_force, timeout=30, what="the admission webhook to apply")
        yield
    finally:
        admission.delete_validating_webhook_configuration(name)
        wait_for(lambda: not in_force(), timeout=30, what="the admission webhook to go")
        server.shutdown()
        server.server_close()


def token_kubeconfig(path: Path, server: str) -> Path:
    """Write a kubeconfig for ``server`` with a made-up token (for a server that is no API
    server, or none at all) to ``path``; returns it."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path
