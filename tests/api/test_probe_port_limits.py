"""PROBE_PORT's own limits, as the README gives them (at most 8 probes at once per worker,
each given 5 s to send its request), and its address family: rates_api.probes under
gunicorn, as the image runs it."""

import socket
import threading

import pytest
import requests

from rates_api import probes
from tests.support.api import gunicorn_server
from tests.support.net import free_ports
from tests.support.poll import wait_for

# The README's figures: a probe port that held more connections, or held them longer,
# would let idle ones pile threads up in every worker.
DOCUMENTED_AT_ONCE_AT_MOST = 16  # (the README says 8; room to tune, not to lose the bound)
DOCUMENTED_READ_S = 5


def test_the_probe_port_s_limits_are_within_the_documented_ones():
    assert probes.MAX_AT_ONCE <= DOCUMENTED_AT_ONCE_AT_MOST
    assert probes.READ_TIMEOUT_S <= DOCUMENTED_READ_S


def test_connections_past_the_limit_are_closed_at_once_and_the_held_ones_within_seconds(dsn, tmp_path):
    port, probe = free_ports(2)  # one call: two could give the same port
    with gunicorn_server(dsn, tmp_path, PORT=str(port), WEB_CONCURRENCY="1", PROBE_PORT=str(probe)):
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


def test_clients_sending_their_request_a_byte_at_a_time_are_closed_and_the_probes_answered(dsn, tmp_path):
    # Each byte within the time a recv is given: only a deadline for the whole request ends
    # them. Without one, they held every probe thread of the worker for as long as they
    # liked, and the kubelet's probes were closed unanswered (security review).
    port, probe = free_ports(2)  # one call: two could give the same port
    with gunicorn_server(dsn, tmp_path, PORT=str(port), WEB_CONCURRENCY="1", PROBE_PORT=str(probe)):
        dribbling = [socket.create_connection(("127.0.0.1", probe), timeout=10)
                     for _ in range(probes.MAX_AT_ONCE)]
        stop = threading.Event()
        every_s = probes.READ_TIMEOUT_S - 1
        dribbler = threading.Thread(target=_dribble, args=(dribbling, every_s, stop), daemon=True)
        dribbler.start()
        try:
            for sock in dribbling:
                sock.settimeout(3 * DOCUMENTED_READ_S)  # the deadline, and room for a loaded machine
                assert _closed(sock), "a client sending a byte at a time was answered"
            wait_for(lambda: _healthz(probe) == 200, timeout=3 * DOCUMENTED_READ_S,
                     what="/healthz on the probe port")
        finally:
            stop.set()
            dribbler.join()
            for sock in dribbling:
                sock.close()


def _dribble(socks: list[socket.socket], every_s: float, stop: threading.Event) -> None:
    """Send each of ``socks`` its request a byte at a time, a byte every ``every_s``."""
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
        for sock in socks:
            try:
                sock.send(bytes([byte]))
            except OSError:  # closed by the server
                pass
        if stop.wait(every_s):
            return


def _closed(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` within its timeout, answering nothing."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:  # closed with a byte sent unread
        return True


def _healthz(port: int) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
    except requests.ConnectionError:  # closed unanswered while every probe thread is taken
        return None


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
    port, probe = free_ports(2)  # one call: two could give the same port
    with gunicorn_server(dsn, tmp_path, HOST="::", WEB_CONCURRENCY="1", PORT=str(port), PROBE_PORT=str(probe)):
        assert requests.get(f"http://[::1]:{probe}/healthz", timeout=5).status_code == 200
