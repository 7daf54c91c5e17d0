"""tests/support/aws.py's start_moto: the session's S3 and SQS must be moto's."""

import socket

from tests.support import aws
from tests.support.net import free_port


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
