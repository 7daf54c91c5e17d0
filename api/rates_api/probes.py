"""The probes' own port: /readyz, /healthz and /metrics answered outside gunicorn's thread pool.

gunicorn's gthread worker hands each connection to its threads in arrival order, so on
the API's port a probe waits behind every request the worker has taken. A pod whose
threads were all busy answered its readiness probe late, failed it and left the Service
while it was serving; its load then went to the others, which left in turn (a review
measured 5 of 10 probes failing under load). Each worker also serves the two probe paths
on PROBE_PORT from a thread of its own, where /readyz checks the database on a connection
of its own (Runtime.check_database), so a pod whose threads are all busy reads as
ready. The workers share the port (SO_REUSEPORT): the kernel spreads the probes over
them, and a worker that has gone takes its socket with it.

Prometheus scrapes /metrics here too, for the same reason: on the API's port a scrape
queued behind the requests of a saturated pod and timed out (a review saw 7 of 7 time out
at 10 s with every thread held on a lock), so the pod read as down, and the alerts on its
requests and its pool went blind just when they were needed. Any worker can answer: the
multiprocess collector reads every worker's files.
"""

import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .health import PROBE_PORT

PATHS = frozenset({"/readyz", "/healthz", "/metrics"})
_NOT_HERE = b'{"error": {"code": "not_found", "message": "this port serves /readyz, /healthz and /metrics only"}}\n'
# Probes at once per worker (the kubelet's, the ALB nodes', Prometheus's scrapes); a
# connection beyond them is closed unanswered, so that idle connections cannot pile threads
# up in the worker.
MAX_AT_ONCE = 8
# Seconds a connection may take to send its request.
READ_TIMEOUT_S = 5


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a probe in flight must not hold the worker's exit

    def server_bind(self):
        # Every worker of the pod binds the same port; only processes of one user may share it.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
        self._slots = threading.BoundedSemaphore(MAX_AT_ONCE)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(WSGIRequestHandler):
    timeout = READ_TIMEOUT_S
    server_version, sys_version = "rates-api-probes", ""

    def log_message(self, format, *args):  # noqa: A002 - http.server's name
        pass  # the app writes a JSON line per request itself


def serve(app, host: str, port: int) -> WSGIServer:
    """Serve ``app``'s probe paths and /metrics on ``host``:``port`` from a daemon thread; the server."""
    def probes_only(environ, start_response):
        if environ.get("PATH_INFO") not in PATHS:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [_NOT_HERE]
        environ[PROBE_PORT] = True  # /readyz then checks on a connection of its own
        return app(environ, start_response)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("ProbeServer", (_Server,), {"address_family": family})
    server = server_class((host, port), _Handler)
    server.set_app(probes_only)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
