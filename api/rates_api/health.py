"""Service identity, liveness, readiness and metrics endpoints."""

from flask import Blueprint, Response, jsonify, request

from rates_core.db import PoolExhausted, RightsMissing, SchemaMissing
from rates_core.errors import TemporaryError

from . import queries
from .runtime import runtime

bp = Blueprint("health", __name__)
# Set in the WSGI environ of the requests the probe port serves (rates_api.probes).
PROBE_PORT = "rates_api.probe_port"


# An absolute-form request line without a path ("GET http://host HTTP/1.1") arrives as an
# empty path, which werkzeug would otherwise answer with an HTML redirect to "/".
@bp.get("/", strict_slashes=False)
def index():
    return jsonify({"service": "rates-api", "version": runtime().settings.app_version,
                    "message": "Hello world!"})


@bp.get("/healthz")
def healthz():
    # Liveness only says the process answers; a DB outage must not restart pods.
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    rt = runtime()
    if rt.draining.is_set():
        return jsonify({"status": "draining"}), 503
    try:
        with rt.readiness_connection(request.environ.get(PROBE_PORT, False)) as conn, conn.cursor() as cur:
            # Not just SELECT 1: pods may start before the migrations have run.
            queries.data_version(cur)
    except PoolExhausted:
        # Busy, not unreachable: taking loaded pods out of rotation would only load the rest more.
        return jsonify({"status": "ok", "database": "busy"})
    except TemporaryError as exc:
        return jsonify({"status": "database unavailable", "error": str(exc)}), 503
    except SchemaMissing as exc:
        return jsonify({"status": "database not migrated", "error": str(exc)}), 503
    except RightsMissing as exc:
        return jsonify({"status": "database refuses access", "error": str(exc)}), 503
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics():
    return Response(runtime().metrics.render(), mimetype="text/plain; version=0.0.4")
