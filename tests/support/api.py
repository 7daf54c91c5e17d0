"""pytest fixtures for the API: Flask test clients of apps on the test's database.

* ``settings``     the API settings for this test's database
* ``make_client``  make(settings) -> a test client; the apps' pools close after the test
* ``client``       a test client of an app on this test's database
* ``rates``        GET /rates with the given parameters -> (status, json)
"""

import pytest

from rates_api import create_app
from rates_api.settings import Settings
from tests.support.db import API_USER, as_user


@pytest.fixture
def settings(dsn) -> Settings:
    # As the API's own read-only user, as deployed: a grant it lacks fails the tests.
    return Settings.from_env({"DATABASE_URL": as_user(dsn, API_USER), "APP_VERSION": "test-1"})


@pytest.fixture
def make_client():
    """Make Flask test clients of apps with the given settings; their pools close after the test."""
    apps = []

    def make(settings: Settings):
        apps.append(create_app(settings))
        return apps[-1].test_client()

    yield make
    for app in apps:
        app.extensions["rates_api"].pool.close()


@pytest.fixture
def client(settings, make_client):
    """A Flask test client of an app on this test's database."""
    return make_client(settings)


@pytest.fixture
def rates(client):
    """GET /rates with the given parameters; returns (status, json)."""
    def get(**params):
        response = client.get("/rates", query_string=params)
        return response.status_code, response.get_json()
    return get
