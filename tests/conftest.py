pytest_plugins = ["tests.support.db", "tests.support.kube", "tests.support.aws", "tests.support.api",
                  "tests.support.images",
                  "tests.support.uploads", "tests.support.infra"]

import signal

import pytest

from tests.support.world import insert_world


@pytest.fixture
def world(conn):
    """This test's database with the hand-built region tree and ports of support/world.py."""
    insert_world(conn)
    return conn


def pytest_configure(config):
    # A cancelled CI job or `timeout` sends SIGTERM, which ends Python without fixture
    # teardown, leaving PostgreSQL, moto and the control plane running. As an interrupt,
    # pytest stops and tears the session's servers down.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")
