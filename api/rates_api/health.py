"""Service identity, liveness, readiness and metrics endpoints."""

from flask import Blueprint, Response, jsonify, request

from rates_core.db import PoolExhausted, RightsMissing, SchemaMissing, SettingsRefused
from rates_core.errors import TemporaryError

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
    # Liveness: the worker answers (on the probe port even while its threads are all busy)
    # and none of its requests has hung. Never the database: an outage must not restart
    # pods, and every request gives up on the database within its budget, so a request
    # this old is a thread that will not come back.
    rt = runtime()
    age = rt.in_flight.oldest_age()
    if age > rt.hung_after_s:
        return jsonify({"status": "hung", "oldest_request_s": round(age, 1)}), 503
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    rt = runtime()
    if rt.draining.is_set():
        return jsonify({"status": "draining"}), 503
    try:
        rt.check_database(request.environ.get(PROBE_PORT, False))
    except PoolExhausted:
        # Busy, not unreachable: taking loaded pods out of rotation would only load the rest more.
        return jsonify({"status": "ok", "database": "busy"})
    except TemporaryError as exc:
        return jsonify({"status": "database unavailable", "error": str(exc)}), 503
    except SchemaMissing as exc:
        return jsonify({"status": "database not migrated", "error": str(exc)}), 503
    except RightsMissing as exc:
        return jsonify({"status": "database refuses access", "error": str(exc)}), 503
    except SettingsRefused as exc:
        return jsonify({"status": "database settings refused", "error": str(exc)}), 503
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics():
    return Response(runtime().metrics.render(), mimetype="text/plain; version=0.0.4")
