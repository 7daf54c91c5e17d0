"""gunicorn's own error responses in the API's JSON shape.

gunicorn answers a request that it cannot parse itself, before the app sees it: raw
non-ASCII bytes in the URL (what curl sends for an unencoded "Göteborg"), a lowercase
method, a request line over 4094 bytes, too many or too large headers. Its page is HTML.
The worker writes it with ``gunicorn.util.write_error``, looked up when called, so
replacing that function gives clients the same ``{"error": {"code", "message"}}`` as
every other error (tested against a real gunicorn in tests/api/test_serve.py).

Installed in each worker (gunicorn.conf.py's post_worker_init), not in the master: this
package imports prometheus_client, which must first be imported after the master has
set PROMETHEUS_MULTIPROC_DIR, or the workers would keep their metrics to themselves.
"""

import http
import json
import re

import gunicorn.util


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    mesg = _as_sent(mesg)
    try:
        # gunicorn's reason does not always match its status (501 "Bad Request").
        reason = http.HTTPStatus(status_int).phrase
    except ValueError:
        pass
    if status_int == 500:
        code, mesg = "internal_error", "internal error"  # as the app's own 500s
    else:
        code = re.sub(r"[^a-z]+", "_", reason.lower()).strip("_") or "error"  # Request-URI Too Long
    body = json.dumps({"error": {"code": code, "message": mesg or reason}}).encode()
    head = (f"HTTP/1.1 {int(status_int)} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


def _as_sent(text: str) -> str:
    """gunicorn reads the request's bytes as Latin-1; quoted back, UTF-8 reads as sent."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def install() -> None:
    gunicorn.util.write_error = write_json_error
