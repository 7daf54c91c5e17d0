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

The port takes at most MAX_AT_ONCE connections at once, each given READ_TIMEOUT_S in all to
send its request (rates_core.httpserver), so that idle or dribbling clients cannot hold its
threads and fail the pod's probes.
"""

from wsgiref.simple_server import WSGIServer

from rates_core import httpserver

from .health import PROBE_PORT

PATHS = frozenset({"/readyz", "/healthz", "/metrics"})
_NOT_HERE = b'{"error": {"code": "not_found", "message": "this port serves /readyz, /healthz and /metrics only"}}\n'
# Probes at once per worker (the kubelet's, the ALB nodes', Prometheus's scrapes); a
# connection beyond them is closed unanswered, so that idle connections cannot pile threads
# up in the worker.
MAX_AT_ONCE = 8
# Seconds a connection may take to send its request line and headers, in all.
READ_TIMEOUT_S = 5


def serve(app, host: str, port: int) -> WSGIServer:
    """Serve ``app``'s probe paths and /metrics on ``host``:``port`` from a daemon thread; the server."""
    def probes_only(environ, start_response):
        if environ.get("PATH_INFO") not in PATHS:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [_NOT_HERE]
        environ[PROBE_PORT] = True  # /readyz then checks on a connection of its own
        return app(environ, start_response)

    # Every worker of the pod binds the port (SO_REUSEPORT); the app writes a JSON line per
    # request itself.
    return httpserver.serve(probes_only, host, port, max_at_once=MAX_AT_ONCE, read_timeout_s=READ_TIMEOUT_S,
                            thread_name="probes", server_version="rates-api-probes", reuse_port=True)
