"""Starting and stopping the control plane leaves no processes or ports behind."""

import psutil
import pytest
from kubernetes import client

from ratesctl.k8s_tools import load_versions
from tests.support.control_plane import ControlPlane
from tests.support.kube import Kube

pytestmark = pytest.mark.kube


def listening_ports(pids: set[int]) -> set[int]:
    """The ports that processes ``pids`` listen on. Only theirs: another test worker's
    servers may take a port this control plane has just let go."""
    return {c.laddr.port for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def ours(me: psutil.Process, pids: list[int]) -> set[int]:
    return {me.pid, *pids, *(p.pid for p in me.children(recursive=True))}


def test_two_control_planes_in_a_row_leave_nothing_behind(kube_tools):
    pinned = load_versions()["kubernetes"]
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    for _ in range(2):
        cp = ControlPlane(kube_tools)
        with cp:
            pids, ports, workdir = list(cp.pids), dict(cp.ports), cp.workdir
            assert len(pids) == 3
            assert {ports["apiserver"], ports["etcd-client"]} <= listening_ports(set(pids))
            k = Kube.from_kubeconfig(cp.kubeconfig, cp.server, cp.ca_file)
            assert client.VersionApi(k.api_client).get_code().git_version == f"v{pinned}"
            k.api_client.close()
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not set(ports.values()) & listening_ports(ours(me, pids))
        assert not workdir.exists()
    leftovers = [p for p in me.children(recursive=True) if p.pid not in children_before]
    assert leftovers == []
