"""GET /rates: average daily price between two ports or regions."""

import json
from urllib.parse import parse_qsl

from flask import Blueprint, Response, request

from rates_core.errors import TemporaryError

from . import params, queries
from .errors import ApiError
from .runtime import runtime

bp = Blueprint("rates", __name__)
# Answers read again when a TRUNCATE or table rewrite committed while they were read.
REWRITES_TOLERATED = 2


@bp.get("/rates")
def get_rates():
    rt = runtime()
    query = params.parse(_args(), rt.settings.max_range_days)
    key = (query.origin, query.destination, query.date_from, query.date_to)
    with rt.connection() as conn, conn.cursor() as cur:
        # An answer not cached at all will be computed: read what that needs first with the
        # version, in the same round trip. A cache hit needs only the version.
        version, files = rt.data_state(conn, cur, files=key not in rt.cache)
        body = rt.cache.get(key, version)
        if body is not None:
            rt.metrics.cache_hits.inc()
        else:
            body = _compute(cur, query, files or queries.table_files(cur))
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


def _compute(cur, query: params.RatesQuery, files: str) -> bytes:
    """The answer, read in one snapshot.

    The pool's connections are in autocommit, where each statement has a snapshot of its
    own: a write committed between resolving the places and reading their totals (a port
    added to a region along with its prices) would give an answer of neither state. The
    transaction begins with the first statement, in the same round trip, so it costs one
    more (the ROLLBACK), on cache misses only. The answer may be newer than the version it
    is cached under, read before; it is then never served again, as every later request
    reads the newer version.

    ``files`` are the tables' storage files read before the snapshot (queries._FILES): if
    they differ after the answer, a TRUNCATE or a table rewrite committed in between, and
    the snapshot may have read a table as empty, so the answer is read again.
    """
    for _attempt in range(REWRITES_TOLERATED + 1):
        origin, destination = queries.resolve(cur, query.origin, query.destination, begin_snapshot=True)
        known = origin.known and destination.known
        rows = queries.daily_averages(cur, origin, destination, query.date_from, query.date_to) if known else []
        # Here only: on an error the pool ends the transaction as it takes the connection back
        # (or closes a broken one), as a ROLLBACK would replace the error that says what happened.
        now = queries.end_snapshot(cur)
        if now == files:
            break
        files = now
    else:
        raise TemporaryError("the tables an answer reads were rewritten while it was read (a migration or "
                             "maintenance in progress)")
    if not known:
        raise ApiError(404, "unknown_location", "; ".join(
            f"{label} '{place.name}' is not a known port code or region slug"
            for label, place in (("origin", origin), ("destination", destination)) if not place.known))
    payload = [{"day": day.isoformat(), "average_price": avg} for day, avg in rows]
    return json.dumps(payload, separators=(",", ":")).encode()
