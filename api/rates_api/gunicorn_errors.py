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

import json
import re
from collections.abc import Callable

import gunicorn.util


# The statuses gunicorn answers with, in one spelling whatever the Python version
# (http.HTTPStatus renamed 414 in 3.13), and whatever gunicorn's own reason says (it
# sends 501 as "Bad Request").
_REASONS = {400: "Bad Request", 403: "Forbidden", 414: "URI Too Long", 417: "Expectation Failed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}
# repr() writes bytes 0x80-0xA0 and 0xAD of the Latin-1 reading as \xNN (an escaped
# backslash before it is the client's own text).
_REPR_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\x([89a][0-9a-f])")


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    reason = _REASONS.get(status_int, reason)
    if status_int == 500:
        code, mesg = "internal_error", "internal error"  # as the app's own 500s
    else:
        code, mesg = re.sub(r"[^a-z]+", "_", reason.lower()).strip("_") or "error", _explained(mesg)
    body = json.dumps({"error": {"code": code, "message": mesg or reason}}).encode()
    head = (f"HTTP/1.1 {int(status_int)} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


def _explained(mesg: str) -> str:
    # gunicorn's own words name no cause, and raw non-ASCII in the URL is the usual one (a
    # client that sends "Göteborg" as typed): the client is told what to send instead.
    if mesg.startswith("Invalid Request Line") and not _unescaped(mesg).isascii():
        return f"{_as_sent(mesg)}: percent-encode non-ASCII characters (UTF-8)"
    return _as_sent(mesg)


def _unescaped(text: str) -> str:
    """gunicorn's text with repr()'s \\xNN escapes back as the Latin-1 characters they stand for."""
    return _REPR_ESCAPE.sub(lambda m: m[1] + chr(int(m[2], 16)), text)


def _as_sent(text: str) -> str:
    """gunicorn reads the request's bytes as Latin-1 and quotes them with repr(); quoted
    back, UTF-8 reads as sent. Anything else stays as gunicorn wrote it."""
    raw = _unescaped(text)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def install(count: Callable[[int], None] | None = None) -> None:
    """Replace gunicorn's error page; ``count(status)`` is called for each one written."""
    def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
        if count is not None:
            count(status_int)
        write_json_error(sock, status_int, reason, mesg)

    gunicorn.util.write_error = write_error
