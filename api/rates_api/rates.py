"""GET /rates: average daily price between two ports or regions."""

import json
from urllib.parse import parse_qsl

from flask import Blueprint, Response, request

from . import params, queries
from .errors import ApiError
from .runtime import runtime

bp = Blueprint("rates", __name__)


@bp.get("/rates")
def get_rates():
    rt = runtime()
    query = params.parse(_args(), rt.settings.max_range_days)
    key = (query.origin, query.destination, query.date_from, query.date_to)
    with rt.connection() as conn, conn.cursor() as cur:
        version = rt.data_version(conn, cur)
        body = rt.cache.get(key, version)
        if body is not None:
            rt.metrics.cache_hits.inc()
        else:
            body = _compute(cur, query)
            rt.cache.put(key, version, body)
    return Response(body, mimetype="application/json")


def _args():
    try:
        # Werkzeug keeps a percent-encoded byte that is no UTF-8 (%FF) as the text "%FF",
        # so origin=%FF would mean origin=%25FF: refuse it instead.
        parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True, errors="strict")
        return request.args
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_parameter", "the query string is not valid UTF-8") from None


def _compute(cur, query: params.RatesQuery) -> bytes:
    """The answer, read in one snapshot.

    The pool's connections are in autocommit, where each statement has a snapshot of its
    own: a write committed between resolving the places and reading their totals (a port
    added to a region along with its prices) would give an answer of neither state. The
    transaction begins with the first statement, in the same round trip, so it costs one
    more (the ROLLBACK), on cache misses only. The tables are locked before the snapshot is
    taken (see queries.resolve), so a TRUNCATE or table rewrite that commits meanwhile is
    not read as empty. The answer may be newer than the version it is cached under, read
    before; it is then never served again, as every later request reads the newer version.
    """
    origin, destination = queries.resolve(cur, query.origin, query.destination, begin_snapshot=True)
    unknown = [f"{label} '{place.name}' is not a known port code or region slug"
               for label, place in (("origin", origin), ("destination", destination)) if not place.known]
    if unknown:
        raise ApiError(404, "unknown_location", "; ".join(unknown))
    rows = queries.daily_averages(cur, origin, destination, query.date_from, query.date_to)
    # Here only: on an error the pool ends the transaction as it takes the connection back
    # (or closes a broken one), as a ROLLBACK would replace the error that says what happened.
    cur.execute("ROLLBACK")
    payload = [{"day": day.isoformat(), "average_price": avg} for day, avg in rows]
    return json.dumps(payload, separators=(",", ":")).encode()
