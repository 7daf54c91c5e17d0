"""tests/support/aws.py's start_moto: the session's S3 and SQS must be moto's."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import aws
from tests.support.net import free_port
from tests.support.poll import wait_for
from tests.support.proc import running, stop_process

REPO = Path(__file__).resolve().parents[2]


def test_a_port_taken_after_it_was_picked_gets_moto_another(monkeypatch):
    # Another process binds the port between free_port() and moto's own bind: moto exits,
    # and a plain connect to the port would still have said "ready".
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    picks = iter([taken])
    monkeypatch.setattr(aws, "free_port", lambda: next(picks, None) or free_port())
    try:
        process, url = aws.start_moto()
        try:
            assert url != f"http://127.0.0.1:{taken}" and aws._is_moto(int(url.rsplit(":", 1)[1]))
        finally:
            aws.stop_moto(process)
    finally:
        squatter.close()


def test_another_sessions_moto_on_the_picked_port_is_not_taken_for_ours(monkeypatch):
    theirs, their_url = aws.start_moto()
    try:
        picks = iter([int(their_url.rsplit(":", 1)[1])])
        monkeypatch.setattr(aws, "free_port", lambda: next(picks, None) or free_port())
        ours, our_url = aws.start_moto()
        try:
            assert our_url != their_url and ours.poll() is None
        finally:
            aws.stop_moto(ours)
    finally:
        aws.stop_moto(theirs)


def test_moto_does_not_outlive_a_session_killed_outright():
    # A CI timeout or the OOM killer sends SIGKILL: no fixture's teardown runs.
    session = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom tests.support import aws\n"
         "process, _ = aws.start_moto()\nprint(process.pid, flush=True)\ntime.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    moto = 0
    try:
        moto = int(session.stdout.readline())
        os.kill(moto, 0)  # running
        session.kill()
        session.wait()
        wait_for(lambda: not running(moto), timeout=10, what="moto to end with its session")
    finally:
        stop_process(session)
        if moto and running(moto):  # the test failed: leave nothing behind
            os.kill(moto, signal.SIGKILL)
