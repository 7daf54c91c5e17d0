import json
import logging
import os
import subprocess
import sys
import time

import pytest
import structlog

from rates_core import logs


@pytest.fixture(autouse=True)
def default_logging():
    """configure() points logging at this test's captured stdout, which closes with the
    test: a later test that logs would write to a closed file."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.WARNING)


def test_library_lines_are_json_and_never_debug(capsys):
    logs.configure("DEBUG", component="x")

    logging.getLogger("botocore.endpoint").debug("headers with X-Amz-Security-Token: secret")
    logging.getLogger("kubernetes.client.rest").debug("response body with a bearer token")
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    logs.get_logger("ours").debug("our own debug line")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["Found credentials in environment variables.",
                                                 "our own debug line"]
    assert lines[0]["logger"] == "botocore.credentials" and lines[0]["component"] == "x"


_TWO_THREADS = """
import logging, threading
from rates_core import logs
logs.configure("INFO", service="x")
ours, library = logs.get_logger("ours"), logging.getLogger("library")
def write(log, n):
    for i in range(n):
        log.info("a line %d", i) if log is library else log.info("a line", i=i)
threads = [threading.Thread(target=write, args=(log, 20000)) for log in (ours, library)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_lines_from_two_threads_never_mix():
    # Our lines and a library's (the stdlib's handler, another lock) from two threads at
    # once, as the migrator's termination watcher logs while yoyo does: each line whole.
    out = subprocess.run([sys.executable, "-c", _TWO_THREADS], capture_output=True, text=True, timeout=120,
                         check=True).stdout.splitlines()
    assert len(out) == 40000
    assert all(isinstance(json.loads(line), dict) for line in out)


_INTERRUPTED = """
import logging, signal
from rates_core import logs
logs.configure("INFO")
ours, library = logs.get_logger("ours"), logging.getLogger("library")
signal.signal(signal.SIGALRM, lambda *_: None)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)  # a signal every millisecond
for i in range(100):
    ours.info("long", i=i, detail="x" * 100_000)
    library.info("long %d %s", i, "y" * 100_000)
signal.setitimer(signal.ITIMER_REAL, 0)
"""


def test_a_signal_while_a_long_line_waits_for_the_pipe_loses_nothing():
    # A slow reader keeps the pipe full, so writes block; the signals cut them short. As
    # the images run it, unbuffered: there, stdout's own text layer drops a short write's rest.
    child = subprocess.Popen([sys.executable, "-c", _INTERRUPTED], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    chunks = []
    while chunk := child.stdout.read1(16384):
        chunks.append(chunk)
        time.sleep(0.0005)
    assert child.wait(timeout=60) == 0
    lines = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert sorted(line.get("detail", line["event"]) for line in lines) == sorted(
        ["x" * 100_000] * 100 + [f"long {i} {'y' * 100_000}" for i in range(100)])
