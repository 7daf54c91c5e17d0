"""rates_core.httpserver: the probes' and /metrics' server, which slow or idle clients must
not take over (a cap on connections at once, a deadline for each request's head)."""

import contextlib
import socket
import threading
import time

import pytest
import requests

from rates_core import httpserver
from tests.support.poll import wait_for

AT_ONCE = 2
READ_S = 1.0
# Time enough, on a loaded machine, for what takes READ_S or less on an idle one.
GENEROUS_S = 15 * READ_S


def _hello(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + body]


@pytest.fixture
def read_timeout_s() -> float:
    """The server's read_timeout_s; a test parametrizes it to change it."""
    return READ_S


@pytest.fixture
def server(read_timeout_s):
    server = httpserver.serve(_hello, "127.0.0.1", 0, max_at_once=AT_ONCE, read_timeout_s=read_timeout_s,
                              thread_name="test-http", server_version="test")
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def connect(server):
    """Open a connection to the server; all are closed after the test."""
    with contextlib.ExitStack() as stack:
        def open_one() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=GENEROUS_S)
            return stack.enter_context(sock)
        yield open_one


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (waiting for it at most the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:  # closed with a dribbled byte unread
        return True


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_port}/"


def test_it_answers_a_request(server):
    answer = requests.post(_url(server), data=b"world", timeout=GENEROUS_S)
    assert (answer.status_code, answer.content) == (200, b"hello world")


def test_a_client_sending_its_head_a_byte_at_a_time_is_closed_at_the_deadline(server, connect):
    # Each byte well within the per-recv timeout: only a deadline for the whole head ends it.
    sock = connect()
    stop = threading.Event()

    def dribble():
        for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(READ_S / 4):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:  # closed by the server
                return

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        assert _closed(sock)
    finally:
        stop.set()
        dribbler.join()
    assert requests.get(_url(server), timeout=GENEROUS_S).status_code == 200


def test_connections_past_the_cap_are_closed_at_once_and_take_no_thread(server, connect):
    threads = threading.active_count()
    held = [connect() for _ in range(AT_ONCE)]
    extras = [connect() for _ in range(3)]
    for extra in extras:  # accepted after the held ones: then every connection has been
        assert _closed(extra)
    assert threading.active_count() <= threads + AT_ONCE
    for sock in held:  # idle: closed at the deadline, and their threads come free
        assert _closed(sock)
    wait_for(lambda: threading.active_count() <= threads, timeout=GENEROUS_S, what="the threads to end")
    assert requests.get(_url(server), timeout=GENEROUS_S).status_code == 200


def _handler_threads(server) -> int:
    return sum(getattr(t, "_target", None) == server.process_request_thread for t in threading.enumerate())


@pytest.mark.parametrize("read_timeout_s", [4 * GENEROUS_S])
def test_a_connection_past_the_cap_is_closed_while_the_held_ones_are_still_held(server, connect):
    """Closed at once, not queued for a slot: a queued probe would wait for a held
    connection's deadline (here 4 * GENEROUS_S, which the wait for the close stays far
    below), and idle connections would pile up in the queue. The cap is exactly AT_ONCE:
    each held connection has a thread, and is served once it sends its request."""
    held = [connect() for _ in range(AT_ONCE)]
    # Each held one taken by a thread first: the next connection is the one past the cap.
    wait_for(lambda: _handler_threads(server) == AT_ONCE, timeout=GENEROUS_S, what="a thread per held connection")
    assert _closed(connect())  # within the socket's timeout, GENEROUS_S
    assert _handler_threads(server) == AT_ONCE
    for sock in held:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.makefile("rb").read().endswith(b"\r\n\r\nhello ")


def test_the_deadline_is_for_the_head_only_a_body_may_take_longer():
    # Each part of the body well within the per-recv timeout, the whole past the deadline.
    read_s = 3.0
    server = httpserver.serve(_hello, "127.0.0.1", 0, max_at_once=AT_ONCE, read_timeout_s=read_s,
                              thread_name="test-http-body", server_version="test")
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=GENEROUS_S) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
            for part in (b"ab", b"cd", b"ef", b"gh"):
                time.sleep(read_s / 3)
                sock.sendall(part)
            answer = sock.makefile("rb").read()
    finally:
        server.shutdown()
        server.server_close()
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and answer.endswith(b"hello abcdefgh")


def test_a_body_that_stops_coming_is_closed_not_held(server, connect):
    """Past the head the deadline is off, but each recv still has read_timeout_s: a client
    that stops mid-body holds its slot that long, not for ever. (How long is not asserted:
    no timing bound holds on a loaded machine; GENEROUS_S is the socket's wait.)"""
    sock = connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nab")
    sock.makefile("rb").read()  # to the close (wsgiref's 500 for the failed read, or nothing)


def test_timed_out_clients_leave_no_traceback_in_the_log(server, connect, capfd):
    # socketserver prints one to stderr for every connection that fails.
    sock = connect()
    sock.sendall(b"GET / HT")
    assert _closed(sock)
    sock = connect()
    sock.sendall(b"GET / HTTP/1.1\r\n")
    sock.close()  # gone mid-head
    assert requests.get(_url(server), timeout=GENEROUS_S).status_code == 200
    assert capfd.readouterr().err == ""


def test_processes_may_share_the_port_only_when_asked_to(server):
    # The API's workers all bind PROBE_PORT; elsewhere a port taken is an error.
    port = server.server_port
    with pytest.raises(OSError):
        httpserver.serve(_hello, "127.0.0.1", port, max_at_once=1, read_timeout_s=READ_S,
                         thread_name="test-http-2", server_version="test")
    shared = [httpserver.serve(_hello, "127.0.0.1", 0, max_at_once=1, read_timeout_s=READ_S,
                               thread_name="test-http-3", server_version="test", reuse_port=True)]
    try:
        shared.append(httpserver.serve(_hello, "127.0.0.1", shared[0].server_port, max_at_once=1,
                                       read_timeout_s=READ_S, thread_name="test-http-4",
                                       server_version="test", reuse_port=True))
        assert requests.get(f"http://127.0.0.1:{shared[0].server_port}/", timeout=GENEROUS_S).ok
    finally:
        for one in shared:
            one.shutdown()
            one.server_close()


def test_a_burst_of_connections_waits_in_the_listen_queue_while_the_server_is_busy():
    # A server not accepting for the moment (its thread waiting for the GIL) keeps the burst
    # queued; past a full queue the kernel drops the SYN, and the client waits 1, 3, 7 s.
    server = httpserver._Server(("127.0.0.1", 0), AT_ONCE, READ_S, False, "test")  # not serving yet
    try:
        with contextlib.ExitStack() as stack:
            for _ in range(32):
                stack.enter_context(socket.create_connection(server.server_address, timeout=5))
    finally:
        server.server_close()


def test_a_connection_whose_thread_could_not_start_gives_its_slot_back(server, connect, monkeypatch):
    # A pod at its pids limit: the connection is closed, and once threads start again the
    # server answers. (With the slot kept, AT_ONCE such failures closed every connection.)
    start = threading.Thread.start
    failed = []

    def start_unless_a_handler(thread):
        if getattr(thread, "_target", None) == server.process_request_thread:
            failed.append(thread)
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_unless_a_handler)
    for _ in range(AT_ONCE):
        sock = connect()
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert _closed(sock)
    assert len(failed) == AT_ONCE
    monkeypatch.setattr(threading.Thread, "start", start)
    assert requests.get(_url(server), timeout=GENEROUS_S).status_code == 200


def test_a_read_once_the_head_deadline_has_passed_is_a_timeout_even_with_bytes_waiting():
    """A client still sending gets no read past the deadline. Refused before the recv, as a
    TimeoutError (an OSError: no traceback in the log), not a socket timeout of what is left
    of the deadline, which is negative then (a ValueError, and a traceback)."""
    left, right = socket.socketpair()
    with left, right:
        reads = httpserver._HeadReads(left, READ_S)
        right.sendall(b"x")
        reads.deadline = time.monotonic() - READ_S / 10
        with pytest.raises(TimeoutError):
            reads.readinto(bytearray(1))
