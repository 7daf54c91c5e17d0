"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR
and /metrics aggregates all workers; without it, each app has its own registry."""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import disable_created_metrics, multiprocess

# *_created series double the output and nothing here reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The route label of what gunicorn answers itself (a URL too long, a request it cannot parse).
GUNICORN_ROUTE = "<gunicorn>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self, version: str):
        # A private registry per app, so that several apps (tests) never clash.
        self.registry = CollectorRegistry()
        self.requests = Counter("rates_api_requests_total", "HTTP requests handled",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("rates_api_request_duration_seconds", "HTTP request latency",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.pool_in_use = Gauge("rates_api_db_pool_in_use", "DB connections lent out",
                                 multiprocess_mode="livesum", registry=self.registry)
        self.pool_size = Gauge("rates_api_db_pool_size", "DB pool capacity",
                               multiprocess_mode="livesum", registry=self.registry)
        # A request waits for a free thread unseen: gunicorn queues it before the app starts
        # its clock, so the latency histogram leaves that wait out. Threads all busy, for
        # long, is that wait (RatesApiSaturated). The probe port's requests have threads of
        # their own and are not counted.
        self.in_progress = Gauge("rates_api_requests_in_progress",
                                 "Requests being served by gunicorn's threads",
                                 multiprocess_mode="livesum", registry=self.registry)
        self.threads = Gauge("rates_api_request_threads",
                             "gunicorn threads that serve requests (GUNICORN_THREADS a worker)",
                             multiprocess_mode="livesum", registry=self.registry)
        # Connections that held a thread without sending a request's line and headers in
        # time, closed by the worker (rates_api.worker): never requests, so not counted above.
        self.header_timeouts = Counter("rates_api_header_timeouts_total",
                                       "Connections closed for not sending a request's line and headers in time",
                                       registry=self.registry)
        self.cache_hits = Counter("rates_api_cache_hits_total", "Responses served from the cache",
                                  registry=self.registry)
        self.build_info = Gauge("rates_api_build_info", "Build information", ["version"],
                                multiprocess_mode="max", registry=self.registry)
        self.build_info.labels(version=version).set(1)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # Clients choose the method; any string would otherwise become a new series.
        method = method if method in _METHODS else "other"
        labels = {"route": route, "method": method, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.latency.labels(**labels).observe(seconds)

    def answered_by_gunicorn(self, status: int) -> None:
        """A request gunicorn refused itself, before the app (and its timing) saw it."""
        self.requests.labels(route=GUNICORN_ROUTE, method="other", status=str(status)).inc()

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
