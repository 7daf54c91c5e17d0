"""gunicorn's gthread worker, with a deadline for each request's line and headers.

The gthread worker gives a connection to one of its threads as soon as its first bytes
arrive (or, for a new connection, for up to 5 s before any), and the thread then reads the
request line and headers blocking, without a limit. A client that sent part of its headers
and then nothing held that thread for good: a few such connections held every thread of a
worker, and the worker answered nothing while every check read fine, since they never
reach the app (the hung-request watchdog, rates_api_requests_in_progress, /readyz).

Here a connection has HEADER_TIMEOUT_S, from when a thread takes it, to send its request
line and headers. One thread per worker looks every second for connections past their
deadline, shuts them down (the reading thread sees the end of the connection and the
worker closes it), logs a warning with the client's address and counts it
(rates_api_header_timeouts_total). The clock stops once the headers are read: the app's
time, a request's body, and an idle kept-alive connection, which waits in the worker's
poller without a thread, are not bounded here.

This bounds how long one connection holds a thread; it does not make the worker immune:
a client that keeps opening such connections still holds threads, each for
HEADER_TIMEOUT_S at most, and every one is logged and counted.

Imported by gunicorn's master (gunicorn.conf.py's worker_class) before it has set
PROMETHEUS_MULTIPROC_DIR: this module must import neither the app nor prometheus_client
(tests/api/test_header_deadline.py checks). The counter comes from post_worker_init.
"""

import socket
import threading
import time
from collections.abc import Callable

from gunicorn.workers.gthread import ThreadWorker

# A constant, not a setting: the load balancer forwards a request's headers whole, and any
# client in the cluster sends them at once, so every legitimate request is far below it.
# It includes the up to 5 s that gthread waits for a new connection's first bytes.
HEADER_TIMEOUT_S = 10
# How often the worker looks for connections past their deadline.
CHECK_EVERY_S = 1.0


def _address(client) -> str:
    if isinstance(client, tuple) and len(client) >= 2:
        host, port = client[0], client[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(client) or "(unix socket)"


class HeaderDeadlineWorker(ThreadWorker):
    """gthread, with HEADER_TIMEOUT_S for a request's line and headers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The connections whose request a thread is reading, and each one's deadline (None:
        # cut). At most one per thread.
        self._reading: dict = {}
        self._reading_lock = threading.Lock()
        self._stopped = threading.Event()
        # Called once for each connection cut (post_worker_init sets the app's counter).
        self.on_header_timeout: Callable[[], None] | None = None

    def run(self):
        threading.Thread(target=self._cut_overdue, name="header-deadline", daemon=True).start()
        try:
            super().run()
        finally:
            self._stopped.set()

    def handle(self, conn):
        with self._reading_lock:
            self._reading[conn] = time.monotonic() + HEADER_TIMEOUT_S
        try:
            return super().handle(conn)
        finally:
            with self._reading_lock:
                self._reading.pop(conn, None)

    def _headers_read(self, conn) -> bool:
        """Stop the connection's clock; False if it has been cut already."""
        with self._reading_lock:
            return self._reading.pop(conn, 0) is not None

    def handle_request(self, req, conn):
        # Cut just as its headers came: the socket is shut, so no answer could be written.
        if not self._headers_read(conn):
            return False
        return super().handle_request(req, conn)

    # HTTP/2 is off (no TLS, and gunicorn's http2_cleartext is off), but its connections
    # would live on past the deadline in this thread: their clocks stop too.
    def handle_h2c_upgrade(self, conn, req, settings):
        if not self._headers_read(conn):
            return False
        return super().handle_h2c_upgrade(conn, req, settings)

    def handle_http2(self, conn):
        if not self._headers_read(conn):
            return False
        return super().handle_http2(conn)

    def _cut_overdue(self) -> None:
        # Until run() ends: a stopping worker waits for its connections, these included.
        while not self._stopped.wait(CHECK_EVERY_S):
            try:
                self._cut(time.monotonic())
            except Exception:  # the next round tries again
                self.log.exception("checking the request header deadlines failed")

    def _cut(self, now: float) -> None:
        cut = []
        # Under the lock: a request whose headers have been read (handle_request) is never cut.
        with self._reading_lock:
            for conn, deadline in self._reading.items():
                if deadline is not None and deadline <= now:
                    self._reading[conn] = None
                    cut.append(conn)
                    try:
                        # The reading thread's recv returns at once with the end of the data.
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # the client has gone already
        for conn in cut:
            self.log.warning("a connection from %s did not send its request line and headers within %d s: "
                             "closed, to free its thread", _address(conn.client), HEADER_TIMEOUT_S)
            if self.on_header_timeout is not None:
                self.on_header_timeout()
