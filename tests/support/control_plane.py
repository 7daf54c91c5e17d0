"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) run as
plain local processes for tests.

Everything listens on free 127.0.0.1 ports and lives in one temporary directory (mode 0700):
certificates (a throwaway CA, the apiserver serving certificate, client certificates for
the admin and the controller manager; a second throwaway CA for etcd, its serving
certificate and the apiserver's client certificate for it), the service-account signing
key, etcd's data and one log file per component.

Loopback ports are open to every local user, and the machine may be shared: etcd takes
only clients with a certificate from its own CA (whoever reads etcd reads every Secret,
and writes bypass RBAC), and the apiserver takes no anonymous requests. The binaries come
from :func:`ratesctl.k8s_tools.ensure_tools`.

There is no scheduler and no kubelet: :mod:`tests.support.local_node` plays both for tests
whose Pods must run.

Usage outside pytest::

    with ControlPlane() as cp:
        print(cp.kubeconfig)
"""

from __future__ import annotations

import atexit
import base64
import datetime
import ipaddress
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.net import free_ports
from tests.support.proc import die_with_parent, stop_process

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Controllers started by kube-controller-manager. Node, volume, endpoint and autoscaling
# controllers are left out: there are no real nodes or volumes here.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "deployment-controller",
    "replicaset-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    # Counts what a ResourceQuota has used, without which admission refuses everything
    # the quota covers (the dev and staging Job quotas).
    "resourcequota-controller",
)

STARTUP_TIMEOUT = 90.0



def _certificate(subject, issuer, public_key) -> "x509.CertificateBuilder":
    """A builder valid from an hour ago for two days: long enough for any test session."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )

class ControlPlaneError(RuntimeError):
    pass


# --- helpers -----------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class CA:
    def __init__(self, name: str = "rates-test-ca") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            _certificate(name, name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return _pem_cert(self.cert)

    def issue(
        self, common_name: str, *, orgs: tuple[str, ...] = (), server: bool = False,
        peer: bool = False, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
    ) -> tuple[bytes, bytes]:
        """(certificate, key) as PEM: a client certificate, or with ``server`` a serving
        one, or with ``peer`` one for both (an etcd member's: it serves its peers and
        connects to them)."""
        key = ec.generate_private_key(ec.SECP256R1())
        if peer:
            usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        else:
            usages = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            _certificate(x509.Name(attrs), self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _pem_cert(builder.sign(self.key, hashes.SHA256())), _pem_key(key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    # JSON is valid YAML; no yaml dependency needed to write it.
    import json

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": server, "certificate-authority-data": _b64(ca)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        },
        indent=2,
    )


_live: "weakref.WeakSet[ControlPlane]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # backstop if a test run dies without teardown
    for cp in list(_live):
        cp.stop()


# --- the control plane -----------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback."""

    def __init__(self, tools: dict[str, Path] | None = None, workdir: Path | None = None):
        if tools is None:
            from ratesctl.k8s_tools import ensure_tools

            tools = ensure_tools()
        self.tools = tools
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kube-control-plane-"))
        self.logdir = self.workdir / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.server = ""
        self.pki = self.workdir / "pki"
        self.ca_file = self.pki / "ca.crt"
        self.etcd_url = ""
        self.etcd_ca_file = self.pki / "etcd-ca.crt"

    # context manager ---------------------------------------------------------------------
    def __enter__(self) -> "ControlPlane":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ControlPlane":
        _live.add(self)
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._wait_for_default_service_account()
        except BaseException as exc:
            logs = self.logs_summary()
            self.stop(keep_workdir=True)
            if isinstance(exc, ControlPlaneError):
                raise ControlPlaneError(f"{exc}\n{logs}") from None
            print(logs, file=sys.stderr)
            raise
        return self

    def stop(self, keep_workdir: bool = False) -> None:
        """Stop all components (controller manager first), then remove the work dir."""
        for name in reversed(list(self.procs)):
            stop_process(self.procs[name], group=True)
        self.procs.clear()
        _live.discard(self)
        if self._own_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def log_path(self, component: str) -> Path:
        return self.logdir / f"{component}.log"

    def logs_summary(self, lines: int = 40) -> str:
        parts = [f"control plane logs in {self.logdir}:"]
        for component in ("etcd", "kube-apiserver", "kube-controller-manager"):
            path = self.log_path(component)
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {component} (last {len(tail)} lines) ---")
                parts.extend(tail)
        return "\n".join(parts)

    # pieces -------------------------------------------------------------------------------
    def _write_pki(self) -> None:
        pki = self.pki
        pki.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        ca = CA()
        # etcd trusts a CA of its own, as kubeadm's clusters do: the admin's and the
        # controller manager's certificates (and any the controller manager signs with
        # the cluster CA) authenticate to the apiserver, never to etcd.
        etcd_ca = CA("rates-test-etcd-ca")
        self.ca_pem = ca.pem
        service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        serving = ca.issue(
            "kube-apiserver", server=True,
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"),
            ips=("127.0.0.1", service_ip),
        )
        admin = ca.issue("rates-test-admin", orgs=("system:masters",))
        kcm = ca.issue("system:kube-controller-manager")
        etcd = etcd_ca.issue("etcd", peer=True, dns=("localhost",), ips=("127.0.0.1",))
        etcd_client = etcd_ca.issue("kube-apiserver-etcd-client")
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": self.ca_pem,
            "ca.key": _pem_key(ca.key),
            "apiserver.crt": serving[0],
            "apiserver.key": serving[1],
            "admin.crt": admin[0],
            "admin.key": admin[1],
            "etcd-ca.crt": etcd_ca.pem,  # its key is not kept: nothing more is signed with it
            "etcd.crt": etcd[0],
            "etcd.key": etcd[1],
            "etcd-client.crt": etcd_client[0],
            "etcd-client.key": etcd_client[1],
            "sa.key": _pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            (pki / name).write_bytes(data)
            (pki / name).chmod(0o600)
        names = ("etcd-client", "etcd-peer", "apiserver", "kcm")
        self.ports.update(zip(names, free_ports(len(names))))
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.etcd_url = f"https://127.0.0.1:{self.ports['etcd-client']}"
        self.kubeconfig.write_text(
            _kubeconfig(self.server, self.ca_pem, *admin, user="admin")
        )
        (self.workdir / "kcm.kubeconfig").write_text(
            _kubeconfig(self.server, self.ca_pem, *kcm, user="kube-controller-manager")
        )

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.log_path(name).open("ab")
        proc = subprocess.Popen(
            [str(self.tools[name]), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True,  # own process group, see _terminate
            preexec_fn=die_with_parent,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def _start_etcd(self) -> None:
        pki = self.pki
        client = self.etcd_url
        peer = f"https://127.0.0.1:{self.ports['etcd-peer']}"
        proc = self._spawn("etcd", [
            "--name=rates-test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=rates-test={peer}",
            # TLS with client certificates from etcd's CA only, on both ports.
            f"--cert-file={pki / 'etcd.crt'}",
            f"--key-file={pki / 'etcd.key'}",
            f"--trusted-ca-file={pki / 'etcd-ca.crt'}",
            "--client-cert-auth=true",
            f"--peer-cert-file={pki / 'etcd.crt'}",
            f"--peer-key-file={pki / 'etcd.key'}",
            f"--peer-trusted-ca-file={pki / 'etcd-ca.crt'}",
            "--peer-client-cert-auth=true",
            "--unsafe-no-fsync=true",  # test data only
            "--log-level=warn",
        ])
        self._wait_http("etcd", proc, f"{client}/health", self.etcd_client_context())

    def _start_apiserver(self) -> None:
        pki = self.pki
        proc = self._spawn("kube-apiserver", [
            f"--etcd-servers={self.etcd_url}",
            f"--etcd-cafile={pki / 'etcd-ca.crt'}",
            f"--etcd-certfile={pki / 'etcd-client.crt'}",
            f"--etcd-keyfile={pki / 'etcd-client.key'}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            # Every client here has a certificate or a token; without this, any local user
            # could read /version, /healthz and whatever RBAC grants system:anonymous.
            "--anonymous-auth=false",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ])
        self._wait_http("kube-apiserver", proc, f"{self.server}/readyz", self.admin_context())

    def _start_controller_manager(self) -> None:
        pki = self.pki
        kcm_kubeconfig = self.workdir / "kcm.kubeconfig"
        proc = self._spawn("kube-controller-manager", [
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kcm']}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # kcm serves a self-signed cert; health only
        self._wait_http(
            "kube-controller-manager", proc, f"https://127.0.0.1:{self.ports['kcm']}/healthz",
            insecure,
        )

    def _wait_for_default_service_account(self) -> None:
        # Proves the controllers run and makes Pod admission work right away.
        url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        self._wait_http("kube-controller-manager", self.procs["kube-controller-manager"], url,
                        self.admin_context())

    def admin_context(self) -> ssl.SSLContext:
        """For the apiserver, as the admin."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return ctx

    def etcd_client_context(self) -> ssl.SSLContext:
        """For etcd, with the apiserver's client certificate."""
        ctx = ssl.create_default_context(cafile=self.etcd_ca_file)
        ctx.load_cert_chain(self.pki / "etcd-client.crt", self.pki / "etcd-client.key")
        return ctx

    def _wait_http(self, name: str, proc: subprocess.Popen, url: str,
                   ctx: ssl.SSLContext | None, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with code {proc.returncode} at startup")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ControlPlaneError(f"{name} not ready at {url} after {timeout:.0f}s ({last})")
