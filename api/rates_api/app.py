"""Application factory: wires settings, the DB pool, metrics, logging and routes."""

import re
import time
import uuid

import structlog
from flask import Flask, g, request

from rates_core import logs

from . import errors, health, openapi, rates
from .runtime import Runtime, runtime
from .settings import Settings

log = logs.get_logger("rates_api.access")
_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, service="rates-api", version=settings.app_version)
    app = Flask(__name__)
    # OPTIONS gets the JSON 405 (with Allow) of any other method: no browser calls this API
    # across origins, and Flask's automatic answer is an empty text/html page.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json.sort_keys = False
    app.extensions["rates_api"] = Runtime(settings)
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(rates.bp)
    app.register_blueprint(openapi.bp)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    return app


_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def _start_request() -> None:
    g.started = time.perf_counter()
    rt = runtime()
    g.in_flight = rt.in_flight.start()
    if not request.environ.get(health.PROBE_PORT):  # not one of gunicorn's threads
        rt.metrics.in_progress.inc()
        g.in_progress = True
    given = request.headers.get("X-Request-ID", "")
    # A client's id is echoed and put on every log line of its request: a bounded token
    # only, or a client could write 8 KB into each line (and into the answer's headers).
    g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=g.request_id)


def _finish_request(response):
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule else "<unmatched>"
    runtime().metrics.observe(route, request.method, response.status_code, elapsed)
    response.headers["X-Request-ID"] = g.get("request_id", "")
    # Error answers quote the client's input (a 404's path): a browser must not read that
    # as HTML or script because of what it contains.
    response.headers["X-Content-Type-Options"] = "nosniff"
    # A failure of ours (the database, a bug) is a warning, so a filter on level finds it.
    # The probes' and Prometheus's answers come every few seconds from each of them: at
    # INFO they were most of a quiet pod's lines (about 45,000 a day).
    if response.status_code >= 500:
        write = log.warning
    elif route in _QUIET_ROUTES and response.status_code < 400:
        write = log.debug
    else:
        write = log.info
    write("request", method=request.method, path=request.path, route=route,
          query=request.query_string.decode("latin-1")[:512],
          status=response.status_code, duration_ms=round(elapsed * 1000, 2))
    structlog.contextvars.clear_contextvars()
    return response


def _end_request(_error) -> None:
    # Before the server writes the body: a slow reader is gunicorn's business, not a hang.
    rt = runtime()
    rt.in_flight.end(g.pop("in_flight", None))
    if g.pop("in_progress", False):
        rt.metrics.in_progress.dec()
