"""PROBE_PORT's own limits, as the README gives them (at most 8 probes at once per worker,
each given 5 s to send its request), and its address family: rates_api.probes under
gunicorn, as the image runs it."""

import socket

import pytest
import requests

from rates_api import probes
from tests.support.api import gunicorn_server
from tests.support.net import free_port

# The README's figures: a probe port that held more connections, or held them longer,
# would let idle ones pile threads up in every worker.
DOCUMENTED_AT_ONCE_AT_MOST = 16  # (the README says 8; room to tune, not to lose the bound)
DOCUMENTED_READ_S = 5


def test_the_probe_port_s_limits_are_within_the_documented_ones():
    assert probes.MAX_AT_ONCE <= DOCUMENTED_AT_ONCE_AT_MOST
    assert probes.READ_TIMEOUT_S <= DOCUMENTED_READ_S


def test_connections_past_the_limit_are_closed_at_once_and_the_held_ones_within_seconds(dsn, tmp_path):
    probe = free_port()
    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", PROBE_PORT=str(probe)):
        # Not probes.MAX_AT_ONCE of them: a limit raised far past the documented one would
        # then be met exactly, and look kept.
        idle = [socket.create_connection(("127.0.0.1", probe), timeout=10)
                for _ in range(DOCUMENTED_AT_ONCE_AT_MOST + 3)]
        try:
            for extra in idle[DOCUMENTED_AT_ONCE_AT_MOST:]:
                # Closed unanswered, before a held connection's time to send its request is
                # up: not given a thread (or a wait for one) and the read timeout.
                extra.settimeout(DOCUMENTED_READ_S)
                assert extra.recv(1) == b""
            held = [sock for sock in idle[:DOCUMENTED_AT_ONCE_AT_MOST] if _open(sock)]
            assert len(held) == probes.MAX_AT_ONCE, "the held connections were closed with the extras"
            for sock in held:
                sock.settimeout(3 * DOCUMENTED_READ_S)  # they time out, and their threads come free
                assert sock.recv(1) == b""
        finally:
            for sock in idle:
                sock.close()


def _open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock`` (to which nothing was sent)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_the_probe_port_of_a_dual_stack_pod_answers_over_ipv6(dsn, tmp_path):
    # HOST=:: (a dual-stack pod): the kubelet may probe the pod's IPv6 address.
    probe = free_port()
    with gunicorn_server(dsn, tmp_path, HOST="::", WEB_CONCURRENCY="1", PROBE_PORT=str(probe)):
        assert requests.get(f"http://[::1]:{probe}/healthz", timeout=5).status_code == 200
