"""`make up` checks its port before starting anything, as gunicorn will bind it."""

import socket

import click
import pytest

from ratesctl import commands


def test_a_port_left_in_time_wait_by_the_last_run_is_free():
    # The last run's server closed its connections first (gunicorn's error replies, the
    # banner's own check): they linger in TIME_WAIT for a minute, which gunicorn ignores.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        client.recv(1)
        client.close()
    commands._check_port_free(port)


def test_a_port_in_use_is_refused_saying_how_to_choose_another():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with pytest.raises(click.ClickException, match='UP_ARGS="--port'):
            commands._check_port_free(server.getsockname()[1])
