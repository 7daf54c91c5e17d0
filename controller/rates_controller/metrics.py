"""Prometheus metrics, and the small HTTP server for /metrics and /healthz.

Each controller has its own registry, so that several can live in one process (tests).
The server takes at most MAX_AT_ONCE connections at once, each given READ_TIMEOUT_S in all
to send its request (rates_core.httpserver): with a thread per connection and no limit,
idle connections grew the controller's threads toward its memory limit (a review held 922
in 40 s), and the liveness probe could wait behind them.
"""

import time
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, disable_created_metrics
from prometheus_client import make_wsgi_app

from rates_core import httpserver

# *_created series (one per counter series) double the output and nothing reads them; the
# API leaves them out too.
disable_created_metrics()


# Every reason a file or message is set aside for. Each series exists at 0 from the start:
# an alert on increase() cannot see a counter's first sample, so without this the first
# file set aside for a reason would raise no alert.
SET_ASIDE_REASONS = ("invalid_file", "rejected", "attempts_exhausted", "poison", "undeliverable", "unexpected")
# What the controller does with an ended Job (its rates-platform/handled label), each series
# at 0 from the start for the same reason: RatesControllerJobsRetried counts the retries.
JOB_RESULTS = ("succeeded", "retried", "set-aside")
# Connections handled at once (the kubelet's liveness probe, Prometheus's scrapes); one
# beyond them is closed unanswered.
MAX_AT_ONCE = 8
# Seconds a connection may take to send its request line and headers, in all.
READ_TIMEOUT_S = 5


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_start_time_seconds and friends: RatesControllerRestarting counts restarts by it.
        ProcessCollector(registry=r)
        self.messages = Counter("rates_controller_messages", "SQS messages handled, by outcome",
                                ["outcome"], registry=r)
        self.jobs_created = Counter("rates_controller_jobs_created", "Ingest Jobs created", ["attempt"],
                                    registry=r)
        self.jobs_finished = Counter("rates_controller_jobs_finished",
                                     "Ingest Jobs that ended, by what the controller did next", ["result"],
                                     registry=r)
        for result in JOB_RESULTS:
            self.jobs_finished.labels(result)
        self.set_aside = Counter("rates_controller_files_set_aside",
                                 "Messages and files sent to the dead-letter queue, by reason", ["reason"],
                                 registry=r)
        for reason in SET_ASIDE_REASONS:
            self.set_aside.labels(reason)
        self.errors = Counter("rates_controller_errors", "Calls that failed and will be retried",
                              ["operation"], registry=r)
        self.active_jobs = Gauge("rates_controller_active_jobs", "Ingest Jobs not yet ended", registry=r)
        # What holds uploads back: a failed file waiting for its retry keeps a slot too,
        # with no Job running for it.
        self.slots_in_use = Gauge("rates_controller_slots_in_use",
                                  "Of MAX_ACTIVE_JOBS, the slots taken: running Jobs and retries waiting their turn",
                                  registry=r)
        # A failed file's retry counts too: RatesControllerQuotaFull watches it.
        self.held = Gauge("rates_controller_messages_held",
                          "Messages, and failed files' retries, whose Job the namespace's ResourceQuota "
                          "refused, held until it has room", registry=r)
        self.last_loop = Gauge("rates_controller_last_loop_timestamp_seconds",
                               "When the control loop last completed a pass", registry=r)
        self.loop_completed()

    def loop_completed(self) -> None:
        # The gauge is a time of day; /healthz measures the age on the monotonic clock, so
        # that a clock stepped back cannot hide a stalled loop from the liveness probe.
        self.last_loop_at = time.time()
        self.last_loop_monotonic = time.monotonic()
        self.last_loop.set(self.last_loop_at)


def serve(metrics: Metrics, port: int, stale_after: float, host: str = "") -> WSGIServer:
    """Serve /metrics, and /healthz (503 once the loop has not completed a pass for ``stale_after`` s)."""
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            age = time.monotonic() - metrics.last_loop_monotonic
            healthy = age <= stale_after
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "text/plain")])
            return [b"ok\n" if healthy else f"control loop stalled for {age:.0f} s\n".encode()]
        return prometheus(environ, start_response)

    return httpserver.serve(app, host, port, max_at_once=MAX_AT_ONCE, read_timeout_s=READ_TIMEOUT_S,
                            thread_name="metrics", server_version="rates-controller")
