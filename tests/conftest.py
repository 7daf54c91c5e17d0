pytest_plugins = ["tests.support.db", "tests.support.kube", "tests.support.aws"]

import pytest

from tests.support.world import insert_world


@pytest.fixture
def world(conn):
    """This test's database with the hand-built region tree and ports of support/world.py."""
    insert_world(conn)
    return conn
