"""Another local user can connect to the control plane's loopback ports, but gets nothing
without the session's certificates, which only the session's user can read."""

import base64
import json
import ssl
import stat
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.kube


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcd_keys(url: str, context: ssl.SSLContext | None = None) -> int:
    """How many keys etcd holds under /registry/ (read through its JSON gateway)."""
    body = json.dumps({"key": _b64("/registry/"), "range_end": _b64("/registry0"), "count_only": True})
    request = urllib.request.Request(f"{url}/v3/kv/range", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        return int(json.load(resp).get("count", 0))


def status(url: str, context: ssl.SSLContext) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_etcd_answers_only_clients_with_a_certificate_from_its_ca(kube_control_plane):
    cp = kube_control_plane
    port = cp.ports["etcd-client"]
    # urllib's errors, TLS alerts and resets are all OSErrors
    with pytest.raises(OSError):
        etcd_keys(f"http://127.0.0.1:{port}")
    verify_only = ssl.create_default_context(cafile=cp.etcd_ca_file)
    with_admin_cert = ssl.create_default_context(cafile=cp.etcd_ca_file)  # the apiserver's CA
    with_admin_cert.load_cert_chain(cp.pki / "admin.crt", cp.pki / "admin.key")
    with pytest.raises(OSError):
        etcd_keys(f"https://127.0.0.1:{port}", verify_only)
    with pytest.raises(OSError):
        etcd_keys(f"https://127.0.0.1:{port}", with_admin_cert)
    # and the request itself is right: the apiserver's certificate reads
    assert etcd_keys(cp.etcd_url, cp.etcd_client_context()) > 0


def test_the_apiserver_refuses_anonymous_requests(kube_control_plane):
    cp = kube_control_plane
    anonymous = ssl.create_default_context(cafile=cp.ca_file)
    # /version and /readyz are every authenticated user's, and were system:anonymous's
    for path in ("/version", "/readyz", "/api/v1/namespaces/kube-system/secrets"):
        assert status(cp.server + path, anonymous) == 401, path
    assert status(cp.server + "/version", cp.admin_context()) == 200


def test_the_certificates_keys_are_the_sessions_users_only(kube_control_plane):
    # 0700 on the work directory keeps every key, kubeconfig and etcd's data from others
    assert stat.S_IMODE(kube_control_plane.workdir.stat().st_mode) & 0o077 == 0
    for key in (kube_control_plane.workdir / "pki").glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) & 0o077 == 0, key
