"""A threaded WSGI server for probes and /metrics that slow or idle clients cannot take over.

wsgiref's server, made threaded with ThreadingMixIn, gives every connection a thread of its
own for as long as the client likes: nothing caps the threads, and the handler's timeout is
a socket timeout, which bounds each recv, not the request. The request line and headers are
read line by line, so a client sending a byte every few seconds was never timed out (a
review held all of an API worker's probe threads with 8 clients dribbling a byte every 4 s:
the kubelet's probes were refused, and the pod restarted over and over; and the
controller's server, with no cap at all, gained a thread per idle connection, ~26 KiB each,
toward its memory limit).

So here at most ``max_at_once`` connections are handled at once, a connection beyond them
being closed unanswered (a probe retries; a thread or a queue for it would let idle
connections pile up), and each must send its request line and headers within
``read_timeout_s`` in all. Every recv and send, the body's included, is given
``read_timeout_s`` too. The server logs no line per request: probes every few seconds
would flood the JSON log.
"""

import io
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer


class _HeadReads(io.RawIOBase):
    """A connection's reads, each given at most what is left of the request head's deadline."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self._sock, self._timeout_s = sock, timeout_s
        self.deadline: float | None = time.monotonic() + timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        timeout = self._timeout_s
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("the request's line and headers took too long")
        self._sock.settimeout(timeout)
        return self._sock.recv_into(buffer)

    def head_read(self) -> None:
        # The body (if the app reads one) and the response have the per-recv timeout only:
        # the deadline is for the head, which every request has.
        self.deadline = None
        self._sock.settimeout(self._timeout_s)


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        self.timeout = self.server.read_timeout_s  # each recv and send, as socketserver sets it
        super().setup()
        self.rfile.close()
        self._reads = _HeadReads(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reads)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._reads.head_read()
        return parsed

    def version_string(self) -> str:
        return self.server.server_version

    def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's name
        pass  # a line per probe would flood the log; the apps log what they need


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a probe in flight must not hold the process's exit
    # socketserver's 5: a burst of probes and scrapes at a worker whose accept loop waits for
    # the GIL overflowed it, and each connection dropped that way waited for the client's SYN
    # retry, 1 s then 3 s, against a readiness probe's 2 s (a review timed 1-3 s to open 19).
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], max_at_once: int, read_timeout_s: float,
                 reuse_port: bool, server_version: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.read_timeout_s, self.reuse_port, self.server_version = read_timeout_s, reuse_port, server_version
        self._slots = threading.BoundedSemaphore(max_at_once)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.reuse_port:  # processes of one user may then share the port
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # closed unanswered: no thread, no queue
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            # No thread (the pod's pids limit): its slot is not taken, or after a few such
            # failures every connection would be closed unanswered for good.
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A client that was too slow or went away is no error of the server's; socketserver
        # would print a traceback to stderr for each.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def serve(app, host: str, port: int, *, max_at_once: int, read_timeout_s: float, thread_name: str,
          server_version: str, reuse_port: bool = False) -> WSGIServer:
    """Serve the WSGI ``app`` on ``host``:``port`` (IPv6 for an address with a colon) from a
    daemon thread named ``thread_name``; the server, for its port and its shutdown().
    ``server_version`` names the server in the few answers it gives itself (400, 414)."""
    server = _Server((host, port), max_at_once, read_timeout_s, reuse_port, server_version)
    server.set_app(app)
    threading.Thread(target=server.serve_forever, name=thread_name, daemon=True).start()
    return server
