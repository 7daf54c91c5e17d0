import pytest

from rates_api import create_app
from rates_api.settings import Settings


@pytest.fixture
def settings(dsn) -> Settings:
    return Settings.from_env({"DATABASE_URL": dsn, "APP_VERSION": "test-1"})


@pytest.fixture
def client(settings):
    """A Flask test client of an app on this test's database."""
    app = create_app(settings)
    yield app.test_client()
    app.extensions["rates_api"].pool.close()


@pytest.fixture
def rates(client):
    """GET /rates with the given parameters; returns (status, json)."""
    def get(**params):
        response = client.get("/rates", query_string=params)
        return response.status_code, response.get_json()
    return get
